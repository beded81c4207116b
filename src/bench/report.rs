//! What the bench prints: a progress bar on stderr while it runs (hidden when stderr
//! is not a terminal), one line per `--interval`, and the final report on stdout, as
//! a readable table or, with `--json`, one JSON object per line.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::histogram::{Latency, Percentiles};
use super::load::{Counts, ErrorKind, Progress};
use super::{Config, Stop};

/// One thread's share of one interval.
#[derive(Clone, Debug)]
pub struct Interval {
    pub counts: Counts,
    pub latency: Latency,
}

/// Errors by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub closed: u64,
    pub other: u64,
}

impl Errors {
    fn from_counts(c: &Counts) -> Self {
        let get = |k: ErrorKind| c.errors.get(k as usize).copied().unwrap_or(0);
        Errors {
            refused: get(ErrorKind::Refused),
            reset: get(ErrorKind::Reset),
            timeout: get(ErrorKind::Timeout),
            closed: get(ErrorKind::Closed),
            other: get(ErrorKind::Other),
        }
    }

    fn pairs(&self) -> [(&'static str, u64); 5] {
        [
            ("refused", self.refused),
            ("reset", self.reset),
            ("timeout", self.timeout),
            ("closed", self.closed),
            ("other", self.other),
        ]
    }
}

/// UDP delivery, known only with `--echo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Udp {
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
}

/// The final report; its JSON form is one object with these fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Always `"final"` (interval lines say `"interval"`).
    pub report: &'static str,
    /// `"closed loop"` (`--rate 0`) or `"open loop"`.
    pub mode: &'static str,
    /// Messages per second asked for (0 in a closed loop).
    pub rate: u64,
    pub proto: &'static str,
    pub server: String,
    pub connections: usize,
    /// Connections that were set up.
    pub connected: u64,
    pub threads: usize,
    /// Bytes per message, without framing.
    pub size: usize,
    /// Seconds left out of the results at the start.
    pub warmup: f64,
    /// Seconds measured: `--duration`, or with `--messages` until the server had
    /// handled the last message (its close after `!Disconnect`, or the last reply).
    pub duration: f64,
    /// Messages sent after the warmup.
    pub sent: u64,
    /// Messages sent during the warmup.
    pub warmup_sent: u64,
    /// Replies received (`--echo`; 0 otherwise).
    pub received: u64,
    pub errors: Errors,
    /// Messages sent per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6 bytes) sent per second.
    pub mb_per_sec: f64,
    /// Round-trip latency in microseconds; null without `--echo` or without replies.
    pub latency: Option<Percentiles>,
    /// Null for TCP and without `--echo`.
    pub udp: Option<Udp>,
}

impl Report {
    pub fn new(
        config: &Config,
        threads: usize,
        counts: &Counts,
        latency: &Latency,
        last_send: Option<Duration>,
    ) -> Self {
        let duration = match config.stop {
            // A sender that fell behind its schedule wrote the last messages late:
            // the rate is what it achieved, over the time it took.
            Stop::Duration(d) => last_send
                .map(|t| t.saturating_sub(config.warmup))
                .unwrap_or_default()
                .max(d),
            Stop::Messages(_) => last_send
                .map(|t| t.saturating_sub(config.warmup))
                .unwrap_or_default(),
        };
        let secs = duration.as_secs_f64();
        let per_sec = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        Report {
            report: "final",
            mode: if config.rate == 0 {
                "closed loop"
            } else {
                "open loop"
            },
            rate: config.rate,
            proto: if config.udp {
                "udp"
            } else if config.tls_options.is_some() {
                "tls"
            } else {
                "tcp"
            },
            server: config.server.clone(),
            connections: config.connections,
            connected: counts.connected,
            threads,
            size: config.size,
            warmup: config.warmup.as_secs_f64(),
            duration: secs,
            sent: counts.sent,
            warmup_sent: counts.warmup_sent,
            received: counts.received,
            errors: Errors::from_counts(counts),
            msgs_per_sec: per_sec(counts.sent as f64),
            mb_per_sec: per_sec(counts.bytes_sent as f64 / 1e6),
            latency: if config.echo {
                latency.percentiles()
            } else {
                None
            },
            udp: (config.udp && config.echo).then_some(Udp {
                lost: counts.lost,
                reordered: counts.reordered,
                duplicated: counts.duplicated,
            }),
        }
    }

    /// `none`, or `refused 3, timeout 1`.
    pub fn errors_line(&self) -> String {
        let parts: Vec<String> = self
            .errors
            .pairs()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// The readable form.
    pub fn text(&self, config: &Config) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{:<10}{value}\n", format!("{label}:")));
        };
        line(
            "bench",
            format!(
                "{} {}, {} connections ({} connected), {} threads, {}-byte messages",
                self.proto, self.server, self.connections, self.connected, self.threads, self.size
            ),
        );
        line(
            "mode",
            if config.rate == 0 {
                "closed loop (--rate 0): each connection sends as fast as it can; \
                 throughput is what the server allowed"
                    .to_string()
            } else {
                format!(
                    "open loop at {} msg/s; latency counts from each message's scheduled send time",
                    self.rate
                )
            },
        );
        let warm = if self.warmup > 0.0 {
            format!(
                " (after {:.2} s warmup, {} messages left out)",
                self.warmup, self.warmup_sent
            )
        } else {
            String::new()
        };
        line("duration", format!("{:.2} s{warm}", self.duration));
        line(
            "sent",
            format!(
                "{} messages, {:.1} msg/s, {:.2} MB/s",
                self.sent, self.msgs_per_sec, self.mb_per_sec
            ),
        );
        if config.echo {
            line("received", format!("{} replies", self.received));
            line(
                "latency",
                match &self.latency {
                    Some(p) => percentiles_text(p),
                    None => "no replies".to_string(),
                },
            );
        } else {
            line(
                "latency",
                "not measured (no --echo); throughput is what was sent".to_string(),
            );
        }
        if let Some(u) = &self.udp {
            let pct = if self.sent > 0 {
                100.0 * u.lost as f64 / self.sent as f64
            } else {
                0.0
            };
            line(
                "udp",
                format!(
                    "lost {} ({pct:.2}%), reordered {}, duplicated {}",
                    u.lost, u.reordered, u.duplicated
                ),
            );
        } else if config.udp {
            line(
                "udp",
                "loss not measured (no --echo): sent datagrams are not known to arrive".to_string(),
            );
        }
        line("errors", self.errors_line());
        out
    }
}

fn micros_text(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} us")
    }
}

fn percentiles_text(p: &Percentiles) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
        micros_text(p.p50),
        micros_text(p.p90),
        micros_text(p.p99),
        micros_text(p.p999),
        micros_text(p.max)
    )
}

/// One `--interval` line.
#[derive(Debug, Serialize)]
struct IntervalLine {
    report: &'static str,
    /// Seconds since the start (warmup included) at the end of the interval.
    t: f64,
    warmup: bool,
    sent: u64,
    received: u64,
    errors: u64,
    msgs_per_sec: f64,
    latency: Option<Percentiles>,
}

/// Prints progress, intervals and the final report.
#[derive(Debug)]
pub struct Reporter {
    bar: ProgressBar,
    json: bool,
    echo: bool,
    interval: Duration,
    warmup: Duration,
    stop: Stop,
    start: Option<Instant>,
}

impl Reporter {
    pub fn new(config: &Config, _threads: usize) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let (len, template) = match config.stop {
            Stop::Duration(d) => (
                u64::try_from((config.warmup + d).as_millis()).unwrap_or(u64::MAX),
                "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
            ),
            Stop::Messages(m) => (
                m,
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            ),
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message("connecting");
        Reporter {
            bar,
            json: config.json,
            echo: config.echo,
            interval: config.interval.unwrap_or_default(),
            warmup: config.warmup,
            stop: config.stop,
            start: None,
        }
    }

    pub fn start(&mut self, t0: Instant) {
        self.start = Some(t0);
    }

    /// Refreshes the bar from the running totals.
    pub fn tick(&self, progress: &Progress) {
        let sent = progress.sent.load(Ordering::Relaxed);
        let received = progress.received.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let elapsed = self.start.map(|t| t.elapsed()).unwrap_or_default();
        match self.stop {
            Stop::Duration(_) => self
                .bar
                .set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
            Stop::Messages(_) => self.bar.set_position(sent),
        }
        let phase = if elapsed < self.warmup {
            "warmup, "
        } else {
            ""
        };
        let received = if self.echo {
            format!(", received {received}")
        } else {
            String::new()
        };
        self.bar
            .set_message(format!("{phase}sent {sent}{received}, errors {errors}"));
    }

    /// Prints interval `index` (1-based), summed over the threads that reported it.
    pub fn interval(&self, index: u64, row: &[Option<Interval>]) {
        let mut counts = Counts::default();
        let mut latency = Latency::new();
        for cell in row.iter().flatten() {
            counts.add(&cell.counts);
            latency.add(&cell.latency);
        }
        let t = self.interval.as_secs_f64() * index as f64;
        let secs = self.interval.as_secs_f64();
        let line = IntervalLine {
            report: "interval",
            t,
            warmup: Duration::from_secs_f64(t) <= self.warmup && !self.warmup.is_zero(),
            // Everything written in the interval, warmup included: the interval
            // lines show the load as it was applied.
            sent: counts.sent + counts.warmup_sent,
            received: counts.received + counts.warmup_received,
            errors: counts.errors_total(),
            msgs_per_sec: if secs > 0.0 {
                (counts.sent + counts.warmup_sent) as f64 / secs
            } else {
                0.0
            },
            latency: if self.echo {
                latency.percentiles()
            } else {
                None
            },
        };
        let text = if self.json {
            serde_json::to_string(&line).unwrap_or_default()
        } else {
            let warm = if line.warmup { " (warmup)" } else { "" };
            let lat = match &line.latency {
                Some(p) => format!(", {}", percentiles_text(p)),
                None => String::new(),
            };
            format!(
                "[{:>7.2} s]{warm} sent {} ({:.1} msg/s), received {}, errors {}{lat}",
                line.t, line.sent, line.msgs_per_sec, line.received, line.errors
            )
        };
        self.bar.suspend(|| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        });
    }

    /// Clears the bar and prints the final report.
    pub fn finish(&self, report: &Report, config: &Config) {
        self.bar.finish_and_clear();
        let text = if self.json {
            serde_json::to_string(report).unwrap_or_default() + "\n"
        } else {
            report.text(config)
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}
