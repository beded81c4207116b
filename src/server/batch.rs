//! A worker's end of the output: messages are formatted into a batch on the worker's
//! own thread, and the batch goes to the sink at the end of each event-loop turn or
//! once it is full. When the sink's queue is full the batch is kept and the worker
//! is `blocked`: it stops reading TCP (so flow control reaches the senders) until the
//! sink wakes it.

use std::time::Instant;

use crate::message::Message;
use crate::output::text::{LineStart, escape};
use crate::output::{BATCH_BYTES, Clock, Format, SinkHandle};

#[derive(Debug)]
pub struct Batch {
    sink: SinkHandle,
    buf: Vec<u8>,
    clock: Clock,
    format: Format,
    /// Text lines of one read share their start (see [`LineStart`]).
    line_start: LineStart,
    /// The sink refused the last batch; nothing more is read from TCP until it
    /// takes it.
    blocked: bool,
    /// Set while draining at shutdown: sends wait for room until then.
    deadline: Option<Instant>,
    /// The deadline passed with output still queued.
    pub lost_at_deadline: bool,
}

impl Batch {
    pub fn new(sink: SinkHandle, format: Format) -> Self {
        let buf = sink.buffer();
        Batch {
            sink,
            buf,
            clock: Clock::default(),
            format,
            line_start: LineStart::default(),
            blocked: false,
            deadline: None,
            lost_at_deadline: false,
        }
    }

    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// From now on, wait for the sink (until `deadline`) instead of blocking reads.
    pub fn drain_until(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// Formats `message` into the batch.
    #[inline]
    pub fn print(&mut self, message: &Message<'_>) {
        match self.format {
            Format::Text => self
                .line_start
                .write_line(message, &mut self.clock, &mut self.buf),
            Format::Json => self.format.write(message, &mut self.clock, &mut self.buf),
        }
        if self.buf.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Formats every message of `messages` as `template` with its bytes, in order,
    /// and returns how many there were: a run of one read's plain lines
    /// ([`crate::frame::Run`]). In text, the line start they share is looked up once
    /// per batch rather than per message.
    pub fn print_run<'m>(
        &mut self,
        template: &Message<'_>,
        mut messages: impl Iterator<Item = &'m [u8]>,
    ) -> u64 {
        let mut count = 0;
        if self.format != Format::Text || template.conn.is_none() {
            for bytes in messages {
                self.print(&Message { bytes, ..*template });
                count += 1;
            }
            return count;
        }
        loop {
            let start = self.line_start.start(template, &mut self.clock);
            let full = append_lines(&mut self.buf, start, &mut messages, &mut count);
            if !full {
                return count;
            }
            self.flush();
        }
    }

    /// Hands the batch to the sink if it has room (or, draining, waits for room).
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            self.blocked = false;
            return;
        }
        let batch = std::mem::take(&mut self.buf);
        if let Some(deadline) = self.deadline {
            if !self.sink.send_until(batch, deadline) {
                self.lost_at_deadline = true;
            }
            self.buf = self.sink.buffer();
            self.blocked = false;
            return;
        }
        match self.sink.try_send(batch) {
            Ok(()) => {
                self.buf = self.sink.buffer();
                self.blocked = false;
            }
            Err(batch) => {
                self.buf = batch;
                self.blocked = true;
            }
        }
    }
}

/// Appends `start`, the escaped message and a newline for each message until the
/// batch is full (then returns true, with the rest of `messages` left) or they run
/// out (false).
fn append_lines<'m>(
    out: &mut Vec<u8>,
    start: &[u8],
    messages: &mut impl Iterator<Item = &'m [u8]>,
    count: &mut u64,
) -> bool {
    for bytes in messages {
        out.extend_from_slice(start);
        escape(bytes, out);
        out.push(b'\n');
        *count += 1;
        if out.len() >= BATCH_BYTES {
            return true;
        }
    }
    false
}
