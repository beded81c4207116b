//! A worker's end of the output: messages are formatted into a batch on the worker's
//! own thread, and the batch goes to the sink at the end of each event-loop turn or
//! once it is full. When the sink's queue is full the batch is kept and the worker
//! is `blocked`: it stops reading TCP (so flow control reaches the senders) until the
//! sink wakes it.

use std::time::Instant;

use crate::frame::Run;
use crate::message::Message;
use crate::output::text::{LineStart, escape, is_plain_lines};
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
            Format::Json | Format::Record => {
                self.format.write(message, &mut self.clock, &mut self.buf)
            }
        }
        if self.buf.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Formats every message of `run` (one read's plain lines, from
    /// [`crate::frame::Decoder::decode_run`]) as `template` with its bytes, in order,
    /// and returns how many there were. In text, the line start they share is looked
    /// up once per batch rather than per message; and when the run holds nothing to
    /// escape, each `\n`-terminated line as received is already its own text, so a
    /// line costs two copies (start, then line and newline) and no escaping.
    pub fn print_run(&mut self, template: &Message<'_>, run: Run<'_>) -> u64 {
        if self.format != Format::Text || template.conn.is_none() {
            let mut count = 0;
            for bytes in run.messages() {
                self.print(&Message { bytes, ..*template });
                count += 1;
            }
            return count;
        }
        if run.delimiter() == b'\n' && is_plain_lines(run.bytes()) {
            self.append_lines(template, run.lines(), |line, out| {
                out.extend_from_slice(line)
            })
        } else {
            self.append_lines(template, run.messages(), |message, out| {
                escape(message, out);
                out.push(b'\n');
            })
        }
    }

    /// Appends the line start `template` shares, then `rest` of each line, for every
    /// item; flushes whenever the batch fills. Returns how many lines.
    fn append_lines<'m>(
        &mut self,
        template: &Message<'_>,
        mut items: impl Iterator<Item = &'m [u8]>,
        rest: impl Fn(&[u8], &mut Vec<u8>),
    ) -> u64 {
        let mut count = 0;
        loop {
            let start = self.line_start.start(template, &mut self.clock);
            if !append(&mut self.buf, start, &mut items, &mut count, &rest) {
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

/// Appends `start` and then `rest` (which writes the rest of a line) for each item
/// until the batch is full (then returns true, with the rest of `items` left) or
/// they run out (false).
fn append<'m>(
    out: &mut Vec<u8>,
    start: &[u8],
    items: &mut impl Iterator<Item = &'m [u8]>,
    count: &mut u64,
    rest: impl Fn(&[u8], &mut Vec<u8>),
) -> bool {
    for item in items {
        out.extend_from_slice(start);
        rest(item, out);
        *count += 1;
        if out.len() >= BATCH_BYTES {
            return true;
        }
    }
    false
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::{self, Write};
    use std::ops::ControlFlow;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::frame::{Decoder, FrameConfig};
    use crate::message::{Peer, Proto};
    use crate::output::Sink;

    /// A writer whose bytes the test reads back: what the sink's thread wrote.
    #[derive(Clone, Default)]
    pub(in crate::server) struct Shared(pub(in crate::server) Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What a batch in `format` writes for `stream`'s lines: through `print_run`
    /// when `run` is set, else message by message through `print`.
    fn printed(stream: &[u8], format: Format, run: bool) -> Vec<u8> {
        let out = Shared::default();
        let (sink, mut handles) = Sink::start(out.clone(), 1 << 30, vec![Box::new(|| {})], |err| {
            panic!("{err}")
        })
        .unwrap();
        let mut batch = Batch::new(handles.pop().unwrap(), format);
        let peer = Peer::new(([127, 0, 0, 1], 4000).into());
        let template = Message {
            proto: Proto::Tcp,
            peer: &peer,
            conn: Some(7),
            received_at: UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
            bytes: &[],
        };
        let mut decoder = Decoder::new(&FrameConfig::default());
        let found = decoder.decode_run(stream, |_| panic!("no frame outside the run"));
        let ControlFlow::Continue(Some(lines)) = found else {
            panic!("a run")
        };
        if run {
            batch.print_run(&template, lines);
        } else {
            for bytes in lines.messages() {
                batch.print(&Message { bytes, ..template });
            }
        }
        batch.flush();
        drop(batch);
        assert!(sink.finish_until(Instant::now() + Duration::from_secs(10)));
        out.0.lock().unwrap().clone()
    }

    /// Up to 400 lines of up to 200 bytes from `byte`, never a newline or `!` (so
    /// never `!Disconnect`).
    fn lines_of(byte: impl Strategy<Value = u8>) -> impl Strategy<Value = Vec<Vec<u8>>> {
        let byte = byte.prop_filter("no newline or !", |b| *b != b'\n' && *b != b'!');
        proptest::collection::vec(proptest::collection::vec(byte, 0..200), 1..400)
    }

    proptest! {
        /// A run prints exactly what its messages print one by one, whether it is
        /// copied verbatim (nothing to escape) or escaped message by message, in
        /// both formats and across batch boundaries.
        #[test]
        fn a_run_prints_what_its_messages_print(
            lines in prop_oneof![
                // Mostly runs with nothing to escape, or only a `\r` here and there,
                // so both ways of printing a run are taken.
                lines_of(prop_oneof![b' '..=b'~'].prop_filter("no escape", |b| *b != b'\\')),
                lines_of(prop_oneof![40 => b'a'..=b'z', 1 => Just(b'\r')]),
                lines_of(prop_oneof![8 => b'a'..=b'z', 1 => Just(b'\r'), 1 => Just(b'\\'), 1 => any::<u8>()]),
            ],
            json in any::<bool>(),
        ) {
            let mut stream = Vec::new();
            for l in &lines {
                stream.extend_from_slice(l);
                stream.push(b'\n');
            }
            let format = if json { Format::Json } else { Format::Text };
            prop_assert_eq!(printed(&stream, format, true), printed(&stream, format, false));
        }
    }

    #[test]
    fn plain_lines_are_copied_verbatim_and_others_escaped() {
        let out = printed(b"plain\nwith\\slash\r\nlast\n", Format::Text, true);
        let text = String::from_utf8(out).unwrap();
        let msgs: Vec<&str> = text
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap())
            .collect();
        assert_eq!(msgs, ["plain", "with\\\\slash", "last"]);
        // A `\r` before the newline is not part of the message, so it is not copied.
        let out = printed(b"plain\r\nlines\n", Format::Text, true);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains(" tcp 127.0.0.1:4000 plain\n")
        );
        let out = printed(b"plain\nlines\n", Format::Text, true);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with(" tcp 127.0.0.1:4000 lines\n")
        );
    }
}
