//! `sockpool-client bench`: the load generator. Opens `--connections` TCP
//! connections (or UDP sockets) spread over a few threads, each running one
//! non-blocking event loop ([`load`]), sends `--size`-byte messages carrying the
//! connection id and a sequence number ([`payload`]) for `--duration` or until
//! `--messages`, paced by [`pace`] when `--rate` is set, and reports throughput,
//! latency percentiles ([`histogram`]) and errors ([`report`]).
//!
//! Errors (refused, reset, timeouts) are counted and reported, never fatal; only a
//! run in which no connection could be made ends with an error line.

pub mod histogram;
mod load;
pub mod pace;
pub mod payload;
pub mod report;
pub mod stream;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::frame::FrameConfig;
use crate::net::unix::UnixKind;
use crate::net::{self, NetError};

pub use load::{Counts, ErrorKind};

use self::histogram::Latency;
use self::load::{Event, Plan, Progress};
use self::report::{Interval, Report, Reporter};
use self::stream::Target;

/// When the run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long (after the warmup).
    Duration(Duration),
    /// After this many messages in total (after the warmup).
    Messages(u64),
}

/// A validated bench configuration (built by `cli::client`).
#[derive(Clone, Debug)]
pub struct Config {
    pub server: String,
    pub udp: bool,
    pub connections: usize,
    pub stop: Stop,
    /// Bytes per message, without framing; at least [`payload::HEADER`].
    pub size: usize,
    /// Messages per second over all connections; 0 = closed loop.
    pub rate: u64,
    pub echo: bool,
    pub warmup: Duration,
    pub interval: Option<Duration>,
    pub json: bool,
    pub threads: usize,
    pub connect_timeout: Duration,
    /// How long a reply (and, at the end, the server's close) is awaited.
    pub timeout: Duration,
    /// `--tls`: connections speak TLS (made in [`run`] from the options).
    pub tls_options: Option<crate::client::tls::TlsOptions>,
    pub tls: Option<stream::BenchTls>,
    pub frame: FrameConfig,
    /// Where to write the latency distribution in HdrHistogram's text format.
    pub hgrm: Option<PathBuf>,
}

/// Why a bench run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot bench {connections} connections: the open-file limit is {limit}")]
    TooManyConnections { connections: usize, limit: u64 },
    #[error("cannot start a load thread: {}", net::describe(.0))]
    Thread(io::Error),
    #[error("cannot write the latency distribution to {}: {}", .path.display(), net::describe(.source))]
    Hgrm { path: PathBuf, source: io::Error },
    #[error("no connection to {server} could be made ({errors})")]
    Unreachable { server: String, errors: String },
}

/// File descriptors kept free besides one per connection (stdio, pollers, pipes).
const SPARE_FDS: u64 = 64;

/// Runs the benchmark and prints its report (stdout) and progress (stderr).
pub fn run(mut config: Config) -> Result<(), BenchError> {
    if let Some(options) = &config.tls_options {
        let fail = |why: String| {
            BenchError::Net(NetError::Connect {
                addr: config.server.clone(),
                source: io::Error::other(why),
            })
        };
        let client = crate::client::tls::client_config(options).map_err(fail)?;
        let name = crate::client::tls::server_name(options, &config.server).map_err(fail)?;
        if options.insecure {
            eprintln!("warning: --tls-insecure: the server's certificate is not verified");
        }
        config.tls = Some(stream::BenchTls {
            config: client,
            name,
        });
    }
    let target = match crate::net::unix::UnixPath::parse(&config.server) {
        Some(Ok(unix)) if unix.kind == UnixKind::Stream && !config.udp => Target::Unix(unix.path),
        Some(Ok(_)) => {
            return Err(BenchError::Net(NetError::Connect {
                addr: config.server.clone(),
                source: io::Error::other("bench takes unix:PATH (a stream socket) without -u"),
            }));
        }
        Some(Err(why)) => {
            return Err(BenchError::Net(NetError::Connect {
                addr: config.server.clone(),
                source: io::Error::other(why),
            }));
        }
        None => Target::Ip(first_address(&config.server)?),
    };
    // 10,000 connections need 10,000 descriptors.
    let limit = crate::net::fdlimit::raise_nofile().unwrap_or(1024);
    let needed = config.connections as u64 + SPARE_FDS;
    if needed > limit {
        return Err(BenchError::TooManyConnections {
            connections: config.connections,
            limit,
        });
    }
    let config = Arc::new(config);
    let threads = config.threads.clamp(1, config.connections.max(1));
    let progress = Arc::new(Progress::default());
    let (events_tx, events) = crossbeam_channel::unbounded();
    let mut starts = Vec::new();
    let mut handles = Vec::new();
    for thread in 0..threads {
        let plan = plan(&config, thread, threads, target.clone());
        let (start_tx, start) = crossbeam_channel::bounded(1);
        starts.push(start_tx);
        let (progress, events_tx) = (Arc::clone(&progress), events_tx.clone());
        let handle = thread::Builder::new()
            .name(format!("load-{thread}"))
            .spawn(move || load::run(plan, progress, events_tx, start))
            .map_err(BenchError::Thread)?;
        handles.push(handle);
    }
    drop(events_tx);

    let mut reporter = Reporter::new(&config, threads);
    let mut connected = 0;
    let mut ready = 0;
    let mut results = Vec::new();
    // Every thread reports once its connections are set up (bounded by
    // --connect-timeout), then all start together.
    while ready < threads {
        match events.recv() {
            Ok(Event::Connected { connected: n, .. }) => {
                connected += n;
                ready += 1;
            }
            Ok(Event::Done { result, .. }) => {
                results.push(result);
                ready += 1;
            }
            Ok(Event::Interval { .. }) => {}
            Err(_) => break,
        }
    }
    let t0 = Instant::now();
    if connected > 0 {
        for start in &starts {
            let _ = start.send(t0);
        }
    }
    drop(starts);
    reporter.start(t0);
    let mut done = vec![false; threads];
    let mut intervals: Vec<Vec<Option<Interval>>> = Vec::new();
    let mut printed = 0usize;
    while results.len() < threads {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Done { thread, result }) => {
                if let Some(d) = done.get_mut(thread) {
                    *d = true;
                }
                results.push(result);
            }
            Ok(Event::Interval {
                thread,
                index,
                counts,
                latency,
            }) => {
                let slot = usize::try_from(index.saturating_sub(1)).unwrap_or(usize::MAX);
                if slot < 1_000_000 {
                    if intervals.len() <= slot {
                        intervals.resize_with(slot + 1, || vec![None; threads]);
                    }
                    if let Some(cell) = intervals.get_mut(slot).and_then(|v| v.get_mut(thread)) {
                        *cell = Some(Interval { counts, latency });
                    }
                }
            }
            Ok(Event::Connected { .. }) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        // An interval is complete once every thread still running has reported it.
        while let Some(row) = intervals.get(printed) {
            let complete = row
                .iter()
                .zip(&done)
                .all(|(cell, done)| cell.is_some() || *done);
            if !complete {
                break;
            }
            printed += 1;
            reporter.interval(printed as u64, row);
        }
        reporter.tick(&progress);
    }
    for handle in handles {
        let _ = handle.join();
    }

    let mut counts = Counts::default();
    let mut latency = Latency::new();
    let mut last_send = None;
    for r in &results {
        counts.add(&r.counts);
        latency.add(&r.latency);
        last_send = last_send.max(r.last_send);
        // With --messages the run is timed until the server has handled the last
        // message (closed after !Disconnect), not until it sat in a socket buffer.
        if matches!(config.stop, Stop::Messages(_)) {
            last_send = last_send.max(r.last_close);
        }
    }
    let report = Report::new(&config, threads, &counts, &latency, last_send);
    reporter.finish(&report, &config);
    if let Some(path) = &config.hgrm {
        write_hgrm(path, &latency).map_err(|source| BenchError::Hgrm {
            path: path.clone(),
            source,
        })?;
    }
    if counts.connected == 0 {
        return Err(BenchError::Unreachable {
            server: config.server.clone(),
            errors: report.errors_line(),
        });
    }
    Ok(())
}

/// Thread `thread`'s share: connections `c` with `c % threads == thread`, and with
/// `--messages M` each connection's part of `M` (the first `M % connections`
/// connections send one more).
fn plan(config: &Arc<Config>, thread: usize, threads: usize, target: Target) -> Plan {
    let n = config.connections as u64;
    let ids: Vec<u32> = (thread..config.connections)
        .step_by(threads)
        .filter_map(|c| u32::try_from(c).ok())
        .collect();
    let quotas = ids
        .iter()
        .map(|&id| match config.stop {
            Stop::Messages(m) => m / n + u64::from(u64::from(id) < m % n),
            Stop::Duration(_) => u64::MAX,
        })
        .collect();
    Plan {
        thread,
        ids,
        quotas,
        target,
        config: Arc::clone(config),
    }
}

/// Writes the run's latencies (empty without `--echo`) as a `.hgrm` file.
fn write_hgrm(path: &std::path::Path, latency: &Latency) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    latency.write_hgrm(&mut out)?;
    io::Write::flush(&mut out)
}

fn first_address(server: &str) -> Result<SocketAddr, NetError> {
    net::resolve(server)?
        .into_iter()
        .next()
        .ok_or_else(|| NetError::Resolve {
            addr: server.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(connections: usize, stop: Stop) -> Arc<Config> {
        Arc::new(Config {
            server: "127.0.0.1:1".into(),
            udp: false,
            connections,
            stop,
            size: 64,
            rate: 0,
            echo: false,
            warmup: Duration::ZERO,
            interval: None,
            json: false,
            threads: 2,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            tls_options: None,
            tls: None,
            frame: FrameConfig::default(),
            hgrm: None,
        })
    }

    #[test]
    fn messages_are_shared_out_exactly() {
        let target = Target::Ip("127.0.0.1:1".parse().unwrap());
        for (conns, m, threads) in [(10, 5000, 2), (3, 10, 2), (7, 5, 3), (1, 1, 1)] {
            let c = config(conns, Stop::Messages(m));
            let mut total = 0;
            let mut seen = Vec::new();
            for t in 0..threads {
                let p = plan(&c, t, threads, target.clone());
                total += p.quotas.iter().sum::<u64>();
                seen.extend(p.ids);
            }
            seen.sort_unstable();
            assert_eq!(total, m);
            assert_eq!(seen, (0..conns as u32).collect::<Vec<_>>());
        }
    }
}
