//! One session with the server, over TCP or UDP: the teaching project's `connect`
//! and `send_message`, plus a thread that prints replies (echo, broker) as they
//! arrive. Replies are printed one per line, escaped like the server's `text`
//! output, so a server cannot drive the user's terminal.

use super::link::{DatagramLink, Link};
use std::io::{self, BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::frame::{self, DISCONNECT, Decoder, Frame, FrameConfig};
use crate::net;
use crate::output::text::escape;

use super::{ClientError, Config};

/// How long to wait, after `!Disconnect`, for the server to close its side.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Takes escaped reply lines.
pub type PrintFn = Box<dyn FnMut(&[u8]) + Send>;

/// Where replies go: `print` gets escaped lines (each ending in `\n`) as they
/// arrive; `ended` is called once when the server's side of a TCP connection ends,
/// with the error if it broke, and whether this client had asked for the end
/// (`!Disconnect` sent).
pub struct Replies {
    pub print: PrintFn,
    pub ended: Box<dyn FnOnce(Option<io::Error>, bool) + Send>,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replies")
    }
}

impl Replies {
    /// Replies to standard output; the end of the stream is not reported (a broken
    /// connection shows when the next message cannot be sent).
    pub fn stdout() -> Self {
        Replies {
            print: Box::new(|lines| {
                let mut stdout = io::stdout().lock();
                let _ = stdout.write_all(lines).and_then(|()| stdout.flush());
            }),
            ended: Box::new(|_, _| {}),
        }
    }
}

/// A connected session.
#[derive(Debug)]
pub enum Session {
    Tcp {
        writer: BufWriter<Link>,
        frame: FrameConfig,
        framed: Vec<u8>,
        /// What ended the server's side, when it refused the session (see
        /// [`refusal`]).
        reader_done: Receiver<Option<io::Error>>,
        /// Set once `!Disconnect` is on its way, so the server's close is expected.
        closing: Arc<AtomicBool>,
    },
    Udp {
        socket: Arc<DatagramLink>,
        server: String,
    },
}

impl Session {
    /// Connects (TCP within the connect timeout) and starts printing replies to
    /// standard output.
    pub fn open(config: &Config) -> Result<Session, ClientError> {
        Self::open_with(config, Replies::stdout())
    }

    /// Connects and starts handing replies to `replies`.
    pub fn open_with(config: &Config, replies: Replies) -> Result<Session, ClientError> {
        if config.udp || DatagramLink::is_unixgram(&config.server) {
            let socket = Arc::new(DatagramLink::connect(&config.server)?);
            let reader = Arc::clone(&socket);
            let print = replies.print;
            thread::Builder::new()
                .name("replies".into())
                .spawn(move || print_datagrams(&reader, print))
                .map_err(|source| ClientError::Broken {
                    server: config.server.clone(),
                    source,
                })?;
            return Ok(Session::Udp {
                socket,
                server: config.server.clone(),
            });
        }
        let stream = Link::open(&config.server, config.connect_timeout, config.tls.as_ref())?;
        let broken = |source| ClientError::Broken {
            server: config.server.clone(),
            source,
        };
        let reader = stream.try_clone().map_err(broken)?;
        let (done_tx, reader_done) = crossbeam_channel::bounded(1);
        let frame = config.frame;
        let closing = Arc::new(AtomicBool::new(false));
        let expected = Arc::clone(&closing);
        thread::Builder::new()
            .name("replies".into())
            .spawn(move || {
                let Replies { print, ended } = replies;
                let outcome = print_stream(reader, &frame, print);
                let refused = outcome.as_ref().and_then(refusal);
                ended(outcome, expected.load(Ordering::SeqCst));
                let _ = done_tx.send(refused);
            })
            .map_err(broken)?;
        Ok(Session::Tcp {
            writer: BufWriter::with_capacity(64 * 1024, stream),
            frame,
            framed: Vec::new(),
            reader_done,
            closing,
        })
    }

    /// Sends one message (framed for TCP, one datagram for UDP).
    pub fn send_message(&mut self, message: &[u8]) -> io::Result<()> {
        match self {
            Session::Tcp {
                writer,
                frame,
                framed,
                ..
            } => {
                framed.clear();
                frame::encode(frame, message, framed);
                net::send_message(writer, framed)
            }
            Session::Udp { socket, .. } => socket.send(message).map(drop),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Session::Tcp { writer, .. } => writer.flush(),
            Session::Udp { .. } => Ok(()),
        }
    }

    /// Prints replies for `wait`, then sends `!Disconnect` and closes; over TCP, waits
    /// (briefly) for the server to close its side, which it does once everything
    /// sent before has been handled.
    pub fn finish(mut self, wait: Duration) -> io::Result<()> {
        self.flush()?;
        if !wait.is_zero() {
            thread::sleep(wait);
        }
        if let Session::Tcp { closing, .. } = &self {
            closing.store(true, Ordering::SeqCst);
        }
        self.send_message(DISCONNECT)?;
        match self {
            Session::Tcp {
                mut writer,
                reader_done,
                ..
            } => {
                writer.flush()?;
                writer.get_mut().shutdown_write()?;
                match reader_done.recv_deadline(Instant::now() + CLOSE_WAIT) {
                    Ok(Some(refused)) => Err(refused),
                    _ => Ok(()),
                }
            }
            Session::Udp { server, .. } => {
                tracing::debug!("udp session with {server} ended");
                Ok(())
            }
        }
    }
}

/// The end of a stream that says the server refused what was sent: a TLS alert
/// (a mutual-TLS server turning away a client without a good certificate, which
/// over TLS 1.3 arrives after the messages were written). A reset or a broken pipe
/// is not one: the server may close as soon as it has handled `!Disconnect`.
fn refusal(err: &io::Error) -> Option<io::Error> {
    (err.kind() == io::ErrorKind::InvalidData).then(|| io::Error::new(err.kind(), err.to_string()))
}

fn print_line(out: &mut Vec<u8>, message: &[u8]) {
    escape(message, out);
    out.push(b'\n');
}

/// Prints each reply message of a TCP stream until the server closes it; returns
/// the error that broke it, if one did.
fn print_stream(mut stream: Link, frame: &FrameConfig, mut print: PrintFn) -> Option<io::Error> {
    let mut decoder = Decoder::new(frame);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let mut broken = None;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                broken = Some(err);
                break;
            }
        };
        out.clear();
        let _ = decoder.decode(buf.get(..n).unwrap_or_default(), |f| {
            if let Frame::Message(m) = f {
                print_line(&mut out, m);
            }
            ControlFlow::Continue(())
        });
        if !out.is_empty() {
            print(&out);
        }
    }
    out.clear();
    let _ = decoder.finish(|f| {
        if let Frame::Message(m) = f {
            print_line(&mut out, m);
        }
        ControlFlow::Continue(())
    });
    if !out.is_empty() {
        print(&out);
    }
    broken
}

/// Prints each reply datagram as one line, for as long as the process lives.
fn print_datagrams(socket: &DatagramLink, mut print: PrintFn) {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                out.clear();
                print_line(&mut out, buf.get(..n).unwrap_or_default());
                print(&out);
            }
            // ICMP "port unreachable" from an earlier datagram: nothing to print.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
