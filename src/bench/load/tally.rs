//! What a load thread reports: its totals, its latencies, one interval at a time
//! to the main thread, and running counts for the progress bar.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::bench::histogram::Latency;

use super::counts::{Counts, ErrorKind, Progress};
use super::{Event, ThreadResult};

#[derive(Debug)]
pub(super) struct Tally {
    thread: usize,
    progress: Arc<Progress>,
    events: Sender<Event>,
    pub total: Counts,
    latency: Latency,
    interval_mark: Counts,
    interval_latency: Latency,
    interval_index: u64,
    /// When the last measured message was written, from the start.
    pub last_send: Option<Duration>,
    /// When the server last closed a connection after its `!Disconnect`.
    pub last_close: Option<Duration>,
}

impl Tally {
    pub(super) fn new(thread: usize, progress: Arc<Progress>, events: Sender<Event>) -> Self {
        Tally {
            thread,
            progress,
            events,
            total: Counts::default(),
            latency: Latency::new(),
            interval_mark: Counts::default(),
            interval_latency: Latency::new(),
            interval_index: 0,
            last_send: None,
            last_close: None,
        }
    }

    pub(super) fn error(&mut self, kind: ErrorKind) {
        self.total.error(kind);
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// `measured` messages of `bytes` each were written at `at` (and `warmup` more
    /// before the warmup ended).
    pub(super) fn sent(&mut self, measured: u64, warmup: u64, bytes: u64, at: Duration) {
        self.total.sent += measured;
        self.total.bytes_sent += measured * bytes;
        self.total.warmup_sent += warmup;
        if measured > 0 {
            self.last_send = Some(at);
            self.progress.sent.fetch_add(measured, Ordering::Relaxed);
        }
    }

    /// A measured reply, with its latency when it has one.
    pub(super) fn received(&mut self, latency: Option<Duration>) {
        self.total.received += 1;
        self.progress.received.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = latency {
            self.latency.record(l);
            self.interval_latency.record(l);
        }
    }

    /// Whether anything happened since the last interval was sent.
    pub(super) fn has_unreported(&self) -> bool {
        self.total.since(&self.interval_mark) != Counts::default()
    }

    pub(super) fn send_interval(&mut self) {
        self.interval_index += 1;
        let counts = self.total.since(&self.interval_mark);
        self.interval_mark = self.total;
        let latency = self.interval_latency.clone();
        self.interval_latency.clear();
        let _ = self.events.send(Event::Interval {
            thread: self.thread,
            index: self.interval_index,
            counts,
            latency,
        });
    }

    pub(super) fn finish(self) -> ThreadResult {
        ThreadResult {
            counts: self.total,
            latency: self.latency,
            last_send: self.last_send,
            last_close: self.last_close,
        }
    }
}
