//! sockpool: a TCP + UDP message server and client on Berkeley sockets, served by a
//! fixed pool of worker threads that each run their own event loop.
//!
//! Modules, in the order bytes flow through them:
//!
//! ```text
//!  cli ──► server::start
//!             │ net::listen (bind TCP + UDP, print "listening …")
//!             ▼
//!       server::pool ──► server::worker × N (mio::Poll, Slab<Conn>), each accepting
//!             │            for itself (server::acceptor, EPOLLEXCLUSIVE)
//!             │ (UDP: server::udp, one SO_REUSEPORT socket per worker)   │ read until WouldBlock
//!             │                                                  ▼      (per-turn budget)
//!             │                                          server::conn ─► frame::Decoder
//!             │                                                  │ Frame::Message
//!             ▼                                                  ▼
//!       server::shutdown, stats                           server::mode
//!                                                                │
//!                                                                ▼
//!                    server::batch (formats on the worker) ─► output::Sink (bounded) ─► writer thread
//!                                                              ─► output::Destination: stdout | file (SIGHUP reopen) | NATS
//! ```
//!
//! The client side: `cli` ──► `client::run` (one session: `client::session`, and
//! `client::interactive` on a terminal) or `bench::run` (`bench::load` threads, one
//! `mio::Poll` each, paced by `bench::pace`, reported by `bench::report`).
//!
//! `message`, `frame`, `output` and `net` import nothing from `server`, `client`,
//! `bench` or `cli`; `frame` and `output` are pure (bytes and values in, bytes and values out).

// Peer input must never reach a panic: unwrap/expect only in tests (clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod cli;
pub mod client;
pub mod error;
pub mod frame;
pub mod human;
pub mod message;
pub mod net;
pub mod output;
pub mod server;
