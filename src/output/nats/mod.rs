//! `--output nats://…/SUBJECT`: every message published to NATS JetStream as its own
//! NATS message, waiting for JetStream's acknowledgements with a bounded number in
//! flight.
//!
//! The client library (async-nats) runs here, on the sink's writer thread, on a
//! current-thread tokio runtime that this thread drives: while it publishes a batch,
//! and while it idles between batches (reading acknowledgements, answering pings).
//! No other thread runs async code.
//!
//! Delivery: each message carries `Nats-Msg-Id: <process id>-<sequence>`. A message
//! counts as delivered when JetStream acknowledges it. When an acknowledgement fails
//! (timeout, lost connection, no stream), every message in flight is waited for,
//! those not acknowledged are published again with the same ids, in their order,
//! and JetStream's duplicate window discards any copy it already stored. While
//! messages wait for room in the window, the writer takes nothing off the queue, so
//! the queue fills and TCP reading stops: a NATS that is slow or away slows the
//! senders.

pub mod url;

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{
    Context, CreateStreamErrorKind, GetStreamByNameErrorKind, PublishError,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::{ConnectErrorKind, ConnectOptions, Event, HeaderMap, HeaderName, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::OutputStats;
use super::dest::{Destination, WriterWake, fatal};
use super::record::{self, records};

pub use url::NatsTarget;

/// Most messages published and not yet acknowledged. Enough to keep a JetStream
/// server on loopback busy; bounded so that the memory kept for republishing is too.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How long an acknowledgement may take before the message is published again.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The window after a failed round: small enough that a NATS which is slow (an
/// overloaded machine, a cluster still catching up) acknowledges a whole round
/// within [`ACK_TIMEOUT`], instead of every round timing out and being
/// republished again. It grows back by one per acknowledgement.
const MIN_IN_FLIGHT: usize = 16;

/// Pause between rounds of retries, and how often a lasting failure is warned about.
const RETRY_EVERY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The stream created when none captures the subject.
const STREAM: &str = "SOCKPOOL";

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// The NATS destination: the runtime, and the publisher it drives.
#[derive(Debug)]
pub struct NatsOutput {
    runtime: Option<Runtime>,
    publisher: Publisher,
    wake: Arc<Notify>,
}

/// One message, kept until JetStream acknowledges it: its record as the worker
/// encoded it (a slice of the batch, shared, not copied) and its sequence number.
/// The NATS message is built from it at each publish, so keeping it for a
/// republish costs no copy of its headers.
struct Pending {
    record: Bytes,
    sequence: u64,
}

/// Header names, built once.
const TS: HeaderName = HeaderName::from_static("Sockpool-Ts");
const PROTO: HeaderName = HeaderName::from_static("Sockpool-Proto");
const PEER: HeaderName = HeaderName::from_static("Sockpool-Peer");
const CONN: HeaderName = HeaderName::from_static("Sockpool-Conn");

struct Publisher {
    target: NatsTarget,
    js: Option<Context>,
    /// The stream that captures the subject is known (found or created).
    stream_ready: bool,
    /// Waiting to be published (again, after a failure, ahead of new ones).
    unsent: VecDeque<Pending>,
    /// Published, in order, with their acknowledgements in the same order.
    in_flight: VecDeque<Pending>,
    acks: FuturesOrdered<AckFuture>,
    /// Publishes allowed in flight now: [`MAX_IN_FLIGHT`], less after a failure.
    window: usize,
    /// `Nats-Msg-Id` is `<id_prefix>-<sequence>`.
    id_prefix: String,
    sequence: u64,
    stats: Arc<OutputStats>,
    failure: Option<Failure>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("target", &self.target)
            .field("in_flight", &self.in_flight.len())
            .field("unsent", &self.unsent.len())
            .finish_non_exhaustive()
    }
}

struct Failure {
    since: Instant,
    rounds: u64,
    warned: Instant,
}

impl NatsOutput {
    /// Nothing connects yet: that happens in [`Destination::start`], on the writer's
    /// thread.
    pub fn new(target: NatsTarget, stats: Arc<OutputStats>) -> NatsOutput {
        stats.nats.store(true, Ordering::Relaxed);
        NatsOutput {
            runtime: None,
            publisher: Publisher {
                target,
                js: None,
                stream_ready: false,
                unsent: VecDeque::new(),
                in_flight: VecDeque::new(),
                acks: FuturesOrdered::new(),
                window: MAX_IN_FLIGHT,
                id_prefix: process_id(),
                sequence: 0,
                stats,
                failure: None,
            },
            wake: Arc::new(Notify::new()),
        }
    }
}

fn not_started() -> io::Error {
    io::Error::other("the NATS output was not started")
}

impl Destination for NatsOutput {
    fn start(&mut self) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.publisher.connect())?;
        self.runtime = Some(runtime);
        Ok(())
    }

    fn waker(&self) -> Option<WriterWake> {
        let wake = Arc::clone(&self.wake);
        Some(Arc::new(move || wake.notify_one()))
    }

    fn idle(&mut self, timeout: Duration) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let publisher = &mut self.publisher;
        let wake = &self.wake;
        runtime.block_on(async {
            // Settle acknowledgements as they come until woken (a batch is queued)
            // or the timeout passes; a failure's republishing is not cut short.
            let until = tokio::time::Instant::now() + timeout;
            loop {
                let ack = tokio::select! {
                    _ = wake.notified() => return,
                    _ = tokio::time::sleep_until(until) => return,
                    Some(ack) = publisher.acks.next(), if !publisher.acks.is_empty() => ack,
                };
                publisher.settle(ack).await;
                publisher.pump().await;
            }
        });
    }

    fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Workers hand over whole batches of whole records; the writer passes them
        // from the first not yet taken, so the first slice starts at a record.
        let Some(batch) = bufs.iter().find(|b| !b.is_empty()) else {
            return Ok(0);
        };
        let runtime = self.runtime.as_ref().ok_or_else(not_started)?;
        runtime.block_on(self.publisher.publish_batch(batch))?;
        Ok(batch.len())
    }

    fn finish(&mut self) -> io::Result<()> {
        let runtime = self.runtime.as_ref().ok_or_else(not_started)?;
        runtime.block_on(self.publisher.finish())
    }

    fn name(&self) -> String {
        self.publisher.target.to_string()
    }
}

impl Publisher {
    fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .name("sockpool-server")
            .connection_timeout(Duration::from_secs(2))
            // Reconnect for ever: messages wait (and TCP with them) meanwhile.
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    Event::Disconnected => warn!("NATS: disconnected; reconnecting"),
                    Event::Connected => info!("NATS: connected"),
                    Event::LameDuckMode => warn!("NATS: the server is going away (lame duck)"),
                    Event::ServerError(err) => warn!("NATS: server error: {err}"),
                    Event::ClientError(err) => warn!("NATS: {err}"),
                    _ => {}
                }
            });
        if let Some((user, pass)) = &self.target.credentials {
            options = options.user_and_password(user.clone(), pass.clone());
        }
        if self.target.servers.iter().any(|s| s.starts_with("tls://")) {
            options = options.require_tls(true);
        }
        options
    }

    fn servers(&self) -> io::Result<Vec<ServerAddr>> {
        self.target
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|err| fatal(format!("{s} is not a NATS server address: {err}")))
            })
            .collect()
    }

    /// Connects; a server that refuses our credentials ends the start-up, one that
    /// cannot be reached is warned about and retried in the background.
    async fn connect(&mut self) -> io::Result<()> {
        let servers = self.servers()?;
        let client = match self.options().connect(servers.clone()).await {
            Ok(client) => client,
            Err(err)
                if matches!(
                    err.kind(),
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
                ) =>
            {
                return Err(fatal(err.kind().to_string()));
            }
            Err(err) if err.kind() == ConnectErrorKind::Tls => {
                return Err(fatal(format!("TLS: {err}")));
            }
            Err(err) => {
                warn!(
                    "NATS {} cannot be reached ({err}); retrying in the background: messages wait, and TCP reading pauses once the output queue is full",
                    self.target
                );
                self.options()
                    .retry_on_initial_connect()
                    .connect(servers)
                    .await
                    .map_err(|err| fatal(err.to_string()))?
            }
        };
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(2 * MAX_IN_FLIGHT)
            .build(client.clone());
        self.js = Some(js);
        if client.connection_state() == async_nats::connection::State::Connected {
            // A stream that cannot take our messages is a start-up error.
            match self.find_or_create_stream().await {
                Ok(()) => {}
                Err(err) if super::dest::is_fatal(&err) => return Err(err),
                Err(err) => warn!("NATS: cannot set up the stream yet: {err}; retrying"),
            }
        }
        Ok(())
    }

    fn js(&self) -> io::Result<&Context> {
        self.js
            .as_ref()
            .ok_or_else(|| io::Error::other("NATS is not connected"))
    }

    /// Finds the stream that captures the subject, or creates `SOCKPOOL` over it.
    /// A stream that would lose the guarantees (no acknowledgements, no duplicate
    /// window) is a fatal error; anything else is retried.
    async fn find_or_create_stream(&mut self) -> io::Result<()> {
        let js = self.js()?.clone();
        let subject = self.target.subject.clone();
        match js.stream_by_subject(subject.clone()).await {
            Ok(name) => {
                let stream = js
                    .get_stream(&name)
                    .await
                    .map_err(|err| io::Error::other(format!("stream {name}: {err}")))?;
                let config = &stream.cached_info().config;
                if config.no_ack {
                    return Err(fatal(format!(
                        "stream {name} captures {subject} but does not acknowledge publishes (no_ack): messages could be lost unseen"
                    )));
                }
                if config.duplicate_window.is_zero() {
                    return Err(fatal(format!(
                        "stream {name} captures {subject} but has no duplicate window: Nats-Msg-Id could not discard a republished message"
                    )));
                }
                info!(
                    "NATS: publishing {subject} to stream {name} (duplicate window {:?})",
                    config.duplicate_window
                );
            }
            Err(err) if err.kind() == GetStreamByNameErrorKind::NotFound => {
                let created = js
                    .create_stream(StreamConfig {
                        name: STREAM.into(),
                        subjects: vec![subject.clone()],
                        storage: StorageType::File,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(_) => info!("NATS: created stream {STREAM} over {subject} (file storage)"),
                    Err(err) => {
                        if let CreateStreamErrorKind::JetStream(js_err) = err.kind() {
                            return Err(fatal(format!(
                                "no stream captures {subject}, and creating {STREAM} over it failed: {js_err}"
                            )));
                        }
                        return Err(io::Error::other(format!("creating stream {STREAM}: {err}")));
                    }
                }
            }
            Err(err) => return Err(io::Error::other(format!("looking up the stream: {err}"))),
        }
        self.stream_ready = true;
        Ok(())
    }

    async fn publish_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        while !self.stream_ready {
            match self.find_or_create_stream().await {
                Ok(()) => self.recovered(),
                Err(err) if super::dest::is_fatal(&err) => return Err(err),
                Err(err) => self.failed(&err.to_string()).await,
            }
        }
        // One copy of the batch; each message shares it.
        let batch = Bytes::copy_from_slice(batch);
        let mut encoded = records(&batch);
        while let Some(one) = encoded.next_encoded() {
            self.sequence += 1;
            self.unsent.push_back(Pending {
                record: batch.slice_ref(one),
                sequence: self.sequence,
            });
            self.stats.nats_published.fetch_add(1, Ordering::Relaxed);
            self.pump().await;
        }
        Ok(())
    }

    /// The NATS message for `pending`: its payload (shared) and its headers.
    fn message(&self, pending: &Pending) -> PublishMessage {
        let Some(r) = record::parse(&pending.record) else {
            // Never: the record was parsed when it was taken from its batch.
            return PublishMessage::build();
        };
        // The fields were formatted by the worker: ASCII.
        fn text(b: &[u8]) -> &str {
            std::str::from_utf8(b).unwrap_or("-")
        }
        let mut headers = HeaderMap::new();
        headers.insert(TS, text(r.ts));
        headers.insert(PROTO, text(r.proto));
        headers.insert(PEER, text(r.peer));
        if !r.conn.is_empty() {
            headers.insert(CONN, text(r.conn));
        }
        let id = format!("{}-{}", self.id_prefix, pending.sequence);
        headers.insert("Nats-Msg-Id", id.as_str());
        PublishMessage::build()
            .payload(pending.record.slice_ref(r.payload))
            .headers(headers)
    }

    /// Publishes what is waiting while the window has room, settling
    /// acknowledgements when it has none.
    async fn pump(&mut self) {
        while let Some(next) = self.unsent.pop_front() {
            if self.in_flight.len() >= self.window {
                self.unsent.push_front(next);
                if let Some(ack) = self.acks.next().await {
                    self.settle(ack).await;
                }
                continue;
            }
            let Some(js) = &self.js else {
                self.unsent.push_front(next);
                return;
            };
            let message = self.message(&next);
            match js.send_publish(self.target.subject.clone(), message).await {
                Ok(ack) => {
                    self.acks.push_back(ack.into_future());
                    self.in_flight.push_back(next);
                }
                Err(err) => {
                    self.unsent.push_front(next);
                    // What is in flight goes first, in order, before this one.
                    self.collect_in_flight().await;
                    self.failed(&err.to_string()).await;
                }
            }
        }
    }

    /// Handles the acknowledgement of the oldest message in flight. On a failure,
    /// waits for all the others and puts every one not acknowledged back in front
    /// of the unsent, in order, then pauses a second.
    async fn settle(&mut self, ack: Result<PublishAck, PublishError>) {
        let Some(front) = self.in_flight.pop_front() else {
            return;
        };
        match ack {
            Ok(_) => {
                self.stats.nats_acked.fetch_add(1, Ordering::Relaxed);
                self.window = (self.window + 1).min(MAX_IN_FLIGHT);
                self.recovered();
            }
            Err(err) => {
                let mut failed = VecDeque::from([front]);
                failed.extend(self.collect_in_flight_failed().await);
                while let Some(p) = failed.pop_back() {
                    self.unsent.push_front(p);
                }
                self.failed(&format!("no acknowledgement: {err}")).await;
            }
        }
    }

    /// Waits for every acknowledgement in flight; those that fail go back in front
    /// of the unsent, in order.
    async fn collect_in_flight(&mut self) {
        let failed = self.collect_in_flight_failed().await;
        for p in failed.into_iter().rev() {
            self.unsent.push_front(p);
        }
    }

    async fn collect_in_flight_failed(&mut self) -> Vec<Pending> {
        let mut failed = Vec::new();
        while let Some(ack) = self.acks.next().await {
            let Some(p) = self.in_flight.pop_front() else {
                break;
            };
            match ack {
                Ok(_) => {
                    self.stats.nats_acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => failed.push(p),
            }
        }
        failed
    }

    /// Publishes everything still waiting and waits for every acknowledgement
    /// (retrying, each second, for as long as the server's drain lets it).
    async fn finish(&mut self) -> io::Result<()> {
        loop {
            self.pump().await;
            match self.acks.next().await {
                Some(ack) => self.settle(ack).await,
                None if self.unsent.is_empty() => return Ok(()),
                None => {}
            }
        }
    }

    async fn failed(&mut self, error: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.window = (self.window / 4).max(MIN_IN_FLIGHT);
        let now = Instant::now();
        let waiting = self.unsent.len() + self.in_flight.len();
        match &mut self.failure {
            None => {
                warn!(
                    "NATS {}: {error}; {waiting} messages wait to be published again, TCP reading pauses once the output queue is full; retrying each second",
                    self.target
                );
                self.failure = Some(Failure {
                    since: now,
                    rounds: 1,
                    warned: now,
                });
            }
            Some(failure) => {
                failure.rounds += 1;
                if now - failure.warned >= WARN_EVERY {
                    warn!(
                        "NATS {}: still failing ({error}; {} attempts in {} s, {waiting} messages waiting)",
                        self.target,
                        failure.rounds,
                        (now - failure.since).as_secs()
                    );
                    failure.warned = now;
                }
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }

    fn recovered(&mut self) {
        if let Some(failure) = self.failure.take() {
            warn!(
                "NATS {}: publishing again after {} failed attempts in {} s",
                self.target,
                failure.rounds,
                failure.since.elapsed().as_secs()
            );
        }
    }
}

/// An id unique to this process among every process that publishes to the stream
/// (other instances, earlier runs): 128 random bits, in hex.
fn process_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Never expected on Linux; the pid and the time still make a fair id.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..8].copy_from_slice(&now.as_nanos().to_le_bytes()[..8]);
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
