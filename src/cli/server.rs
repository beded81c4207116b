//! `sockpool-server` flags → [`server::Config`](crate::server::Config).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use clap::{ArgAction, Parser};

use super::{parse_delimiter, parse_listen, parse_secs};
use crate::frame::{FrameConfig, Framing, Oversize};
use crate::output::Format;
use crate::server::Config;
use crate::server::mode::Mode;

/// A TCP + UDP message server: prints, echoes or relays what clients send, served by
/// a fixed pool of event-loop worker threads.
#[derive(Debug, Parser)]
#[command(name = "sockpool-server", version)]
pub struct ServerArgs {
    /// Address to listen on for TCP and UDP; repeatable. `127.0.0.1:8080`,
    /// `[::1]:8080`, `[::]:8080` (dual-stack); port 0 picks a free port.
    #[arg(short, long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080",
          value_parser = parse_listen, value_delimiter = ',', env = "SOCKPOOL_LISTEN")]
    pub listen: Vec<SocketAddr>,

    /// Serve TCP only.
    #[arg(long, conflicts_with = "udp_only", env = "SOCKPOOL_TCP_ONLY")]
    pub tcp_only: bool,

    /// Serve UDP only.
    #[arg(long, env = "SOCKPOOL_UDP_ONLY")]
    pub udp_only: bool,

    /// Worker threads [default: the number of cores].
    #[arg(short, long, value_name = "N", env = "SOCKPOOL_WORKERS")]
    pub workers: Option<NonZeroUsize>,

    /// What happens to each message.
    #[arg(long, value_enum, default_value_t = Mode::Print, env = "SOCKPOOL_MODE")]
    pub mode: Mode,

    /// How a TCP byte stream is cut into messages.
    #[arg(long, value_enum, default_value_t = Framing::Line, env = "SOCKPOOL_FRAMING")]
    pub framing: Framing,

    /// Longest message accepted, in bytes (without its terminator).
    #[arg(long, value_name = "BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(1..=64 * 1024 * 1024), env = "SOCKPOOL_MAX_FRAME")]
    pub max_frame: u32,

    /// What happens to a longer message.
    #[arg(long, value_enum, default_value_t = Oversize::Drop, env = "SOCKPOOL_OVERSIZE")]
    pub oversize: Oversize,

    /// The byte that ends a message with line framing: a character, \n, \0, \t, \r or 0xNN.
    #[arg(long, value_name = "BYTE", default_value = "\\n", value_parser = parse_delimiter,
          env = "SOCKPOOL_DELIMITER")]
    pub delimiter: u8,

    /// How `print` writes messages.
    #[arg(long, value_enum, default_value_t = Format::Text, env = "SOCKPOOL_FORMAT")]
    pub format: Format,

    /// Graceful shutdown limit, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs,
          env = "SOCKPOOL_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,

    /// Listen backlog: connections the kernel holds until they are accepted.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(i32).range(1..), env = "SOCKPOOL_BACKLOG")]
    pub backlog: i32,

    /// Fewer diagnostics: -q warnings only, -qq errors only.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// More diagnostics: -v debug, -vv trace (RUST_LOG overrides both).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

impl ServerArgs {
    pub fn into_config(self) -> Config {
        let defaults = Config::default();
        Config {
            listen: self.listen,
            tcp: !self.udp_only,
            udp: !self.tcp_only,
            workers: self.workers.map_or(defaults.workers, NonZeroUsize::get),
            mode: self.mode,
            frame: FrameConfig {
                framing: self.framing,
                delimiter: self.delimiter,
                max_frame: self.max_frame as usize,
                oversize: self.oversize,
            },
            format: self.format,
            quiet: self.quiet > 0,
            drain_timeout: self.drain_timeout,
            backlog: self.backlog,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        ServerArgs::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = ServerArgs::try_parse_from(["sockpool-server"])
            .unwrap()
            .into_config();
        assert_eq!(config.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(config.tcp && config.udp);
        assert_eq!(config.mode, Mode::Print);
        assert_eq!(config.frame.max_frame, 65536);
        assert_eq!(config.format, Format::Text);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.backlog, 1024);
    }
}
