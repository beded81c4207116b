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
    let mut session = Session::open(&config)?;
    let broken = |source| ClientError::Broken {
        server: config.server.clone(),
        source,
    };
    match &config.source {
        Source::Args(messages) => {
            for message in messages {
                session.send_message(message).map_err(broken)?;
            }
        }
        Source::File(path) => {
            let what = path.display().to_string();
            let file = File::open(path).map_err(|source| ClientError::Input {
                what: what.clone(),
                source,
            })?;
            send_lines(&mut session, BufReader::new(file), &what, &broken)?;
        }
        Source::Stdin => {
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
        session.send_message(message).map_err(broken)?;
    }
}
