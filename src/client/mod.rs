//! The client: sends messages from arguments, a file or standard input, prints the
//! server's replies as they arrive, and ends the session cleanly with `!Disconnect`.

pub mod interactive;
pub mod link;
pub mod session;
pub mod tls;

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use crate::frame::FrameConfig;
use crate::net::NetError;

use self::session::Session;

/// Where the messages come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// One message per argument.
    Args(Vec<Vec<u8>>),
    /// One message per line of a file.
    File(PathBuf),
    /// One message per line of standard input.
    Stdin,
}

/// A validated client configuration (built by `cli::client`).
#[derive(Clone, Debug)]
pub struct Config {
    pub server: String,
    pub udp: bool,
    pub source: Source,
    pub connect_timeout: Duration,
    pub wait: Duration,
    pub frame: FrameConfig,
    /// `--tls` and its companions; `None`: plain.
    pub tls: Option<self::tls::TlsOptions>,
}

/// Why the client stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("connection to {server} broken: {}", crate::net::describe(.source))]
    Broken { server: String, source: io::Error },
    #[error("cannot read {what}: {}", crate::net::describe(.source))]
    Input { what: String, source: io::Error },
    /// UDP has no connection to break: a message too long for one datagram says so.
    #[error(
        "a message of {len} bytes is larger than a UDP datagram can carry (at most 65507 bytes over IPv4, 65527 over IPv6)"
    )]
    DatagramTooLarge { len: usize },
    /// Ctrl-C in an interactive session: the binary exits 130 without a message.
    #[error("interrupted")]
    Interrupted,
}

/// Sends every message, then ends the session. With no message and a terminal on
/// standard input and output, the session is interactive.
pub fn run(config: Config) -> Result<(), ClientError> {
    if config.tls.as_ref().is_some_and(|tls| tls.insecure) {
        eprintln!("warning: --tls-insecure: the server's certificate is not verified");
    }
    if matches!(config.source, Source::Stdin)
        && io::stdin().is_terminal()
        && io::stdout().is_terminal()
        && let Some(()) = interactive::run(&config)?
    {
        return Ok(());
    }
    // A file that cannot be read is reported before any connection is made.
    let file = match &config.source {
        Source::File(path) => Some(File::open(path).map_err(|source| ClientError::Input {
            what: path.display().to_string(),
            source,
        })?),
        _ => None,
    };
    let mut session = Session::open(&config)?;
    let broken = |source| ClientError::Broken {
        server: config.server.clone(),
        source,
    };
    match (&config.source, file) {
        (Source::Args(messages), _) => {
            for message in messages {
                send(&mut session, message, &broken)?;
            }
        }
        (Source::File(path), Some(file)) => {
            let what = path.display().to_string();
            send_lines(&mut session, BufReader::new(file), &what, &broken)?;
        }
        (Source::File(_), None) => {}
        (Source::Stdin, _) => {
            send_lines(
                &mut session,
                BufReader::new(io::stdin()),
                "standard input",
                &broken,
            )?;
        }
    }
    session.finish(config.wait).map_err(broken)
}

/// Sends each line (without its `\n`, and without a `\r` before it) as a message.
/// What has been sent is flushed whenever the next line is not already buffered,
/// before waiting for it, so a slow producer (`tail -f | sockpool-client`) is
/// forwarded line by line while a fast one is sent in large writes.
fn send_lines<R: Read>(
    session: &mut Session,
    mut input: BufReader<R>,
    what: &str,
    broken: &dyn Fn(io::Error) -> ClientError,
) -> Result<(), ClientError> {
    let mut line = Vec::new();
    loop {
        if memchr::memchr(b'\n', input.buffer()).is_none() {
            session.flush().map_err(broken)?;
        }
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| ClientError::Input {
                what: what.to_string(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        let message = line.strip_suffix(b"\n").unwrap_or(&line);
        let message = message.strip_suffix(b"\r").unwrap_or(message);
        send(session, message, broken)?;
    }
}

/// Sends one message; a datagram the kernel refuses as too long (EMSGSIZE) is
/// named as such rather than as a broken connection.
fn send(
    session: &mut Session,
    message: &[u8],
    broken: &dyn Fn(io::Error) -> ClientError,
) -> Result<(), ClientError> {
    session.send_message(message).map_err(|err| {
        if matches!(session, Session::Udp { .. }) && err.raw_os_error() == Some(libc::EMSGSIZE) {
            ClientError::DatagramTooLarge { len: message.len() }
        } else {
            broken(err)
        }
    })
}
