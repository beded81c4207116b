//! `sockpool-client` flags → [`client::Config`](crate::client::Config).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::{parse_delimiter, parse_secs};
use crate::client::{Config, Source};
use crate::frame::{FrameConfig, Framing};

/// Sends messages to a sockpool server (or any TCP/UDP line server) and prints its
/// replies. Each MESSAGE is one message; with none, each line of standard input is.
#[derive(Debug, Parser)]
#[command(name = "sockpool-client", version)]
pub struct ClientArgs {
    /// The server's address (a host name is resolved).
    #[arg(
        short,
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "SOCKPOOL_SERVER"
    )]
    pub server: String,

    /// Send UDP datagrams instead of a TCP stream.
    #[arg(short, long, env = "SOCKPOOL_UDP")]
    pub udp: bool,

    /// Send a file, one message per line.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "messages",
        env = "SOCKPOOL_FILE"
    )]
    pub file: Option<PathBuf>,

    /// Give up connecting after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs,
          env = "SOCKPOOL_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,

    /// After the last message, keep printing replies this long before closing.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs, env = "SOCKPOOL_WAIT")]
    pub wait: Duration,

    /// How messages are framed on TCP; must match the server's.
    #[arg(long, value_enum, default_value_t = Framing::Line, env = "SOCKPOOL_FRAMING")]
    pub framing: Framing,

    /// The byte that ends a message with line framing.
    #[arg(long, value_name = "BYTE", default_value = "\\n", value_parser = parse_delimiter,
          env = "SOCKPOOL_DELIMITER")]
    pub delimiter: u8,

    /// The messages to send.
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<OsString>,
}

impl ClientArgs {
    pub fn into_config(self) -> Config {
        let source = if let Some(path) = self.file {
            Source::File(path)
        } else if self.messages.is_empty() {
            Source::Stdin
        } else {
            Source::Args(
                self.messages
                    .into_iter()
                    .map(OsStringExt::into_vec)
                    .collect(),
            )
        };
        Config {
            server: self.server,
            udp: self.udp,
            source,
            connect_timeout: self.connect_timeout,
            wait: self.wait,
            frame: FrameConfig {
                framing: self.framing,
                delimiter: self.delimiter,
                ..FrameConfig::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        ClientArgs::command().debug_assert();
    }
}
