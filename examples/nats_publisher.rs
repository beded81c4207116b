//! The baseline for sockpool's NATS output (BENCHMARKS.md, P6): a tight async-nats
//! JetStream publisher that publishes the messages sockpool would, with the same
//! number of publishes in flight, and waits for every acknowledgement.
//!
//! Same work per message as sockpool's NATS output: the payload, the headers
//! `Sockpool-Ts`, `Sockpool-Proto`, `Sockpool-Peer`, `Sockpool-Conn` and a unique
//! `Nats-Msg-Id`, published to JetStream and acknowledged; the same client library
//! on the same kind of runtime (tokio, current thread); the same window
//! (`sockpool::output::nats::MAX_IN_FLIGHT`). What it does not do is what sockpool
//! does besides: read the messages from TCP sockets, frame them, and pass them from
//! the workers to the output thread.
//!
//! `nats_publisher URL SUBJECT MESSAGES SIZE` (the subject must be captured by a
//! stream); prints `published N in S s: R msgs/s` on stdout.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::process::ExitCode;
use std::time::Instant;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use sockpool::output::nats::MAX_IN_FLIGHT;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, subject, messages, size] = args.as_slice() else {
        eprintln!("usage: nats_publisher URL SUBJECT MESSAGES SIZE");
        return ExitCode::from(2);
    };
    let (Ok(messages), Ok(size)) = (messages.parse::<usize>(), size.parse::<usize>()) else {
        eprintln!("MESSAGES and SIZE are numbers");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(publish(url, subject, messages, size)) {
        Ok(secs) => {
            println!(
                "published {messages} in {secs:.3} s: {:.0} msgs/s",
                messages as f64 / secs
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn publish(
    url: &str,
    subject: &str,
    messages: usize,
    size: usize,
) -> Result<f64, async_nats::Error> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(2 * MAX_IN_FLIGHT)
        .build(client);
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let prefix = format!("{:032x}", std::process::id());
    let started = Instant::now();
    let mut acks = FuturesOrdered::new();
    let mut kept = VecDeque::new();
    for seq in 0..messages {
        if acks.len() >= MAX_IN_FLIGHT
            && let Some(ack) = acks.next().await
        {
            ack?;
            kept.pop_front();
        }
        let mut headers = HeaderMap::new();
        headers.insert("Sockpool-Ts", "2026-11-27T17:42:41.903789Z");
        headers.insert("Sockpool-Proto", "tcp");
        headers.insert("Sockpool-Peer", "127.0.0.1:54321");
        headers.insert("Sockpool-Conn", "17");
        headers.insert("Nats-Msg-Id", format!("{prefix}-{seq}").as_str());
        // Kept until acknowledged, as sockpool keeps what it needs to republish a
        // message (its payload; the headers follow from the sequence number).
        kept.push_back((seq, payload.clone()));
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers);
        let ack = js.send_publish(subject.to_string(), message).await?;
        acks.push_back(ack.into_future());
    }
    while let Some(ack) = acks.next().await {
        ack?;
        kept.pop_front();
    }
    Ok(started.elapsed().as_secs_f64())
}
