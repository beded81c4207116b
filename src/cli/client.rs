//! `sockpool-client` flags → [`client::Config`](crate::client::Config), and
//! `sockpool-client bench` flags → [`bench::Config`](crate::bench::Config).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use super::generate::Generate;
use super::{boolish, host_port, parse_delimiter, parse_secs};
use crate::bench::{self, Stop, payload};
use crate::client::tls::TlsOptions;
use crate::client::{Config, Source};
use crate::frame::{FrameConfig, Framing};

/// Sends messages to a sockpool server (or any TCP/UDP line server) and prints its
/// replies. Each MESSAGE is one message; with none, each line of standard input is
/// (an interactive session with a prompt when standard input is a terminal).
/// `sockpool-client bench` is the load generator; to send the word "bench" as a
/// message, write `sockpool-client -- bench`.
#[derive(Debug, Parser)]
#[command(
    name = "sockpool-client",
    version = super::VERSION,
    args_conflicts_with_subcommands = true
)]
pub struct ClientArgs {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub target: Target,

    /// Send UDP datagrams instead of a TCP stream.
    #[arg(short, long, env = "SOCKPOOL_UDP", value_parser = boolish())]
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

    #[command(flatten)]
    pub tls: TlsArgs,

    /// The messages to send.
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<OsString>,

    /// Print a man page (covering `bench` too) or a shell completion script on stdout
    /// and exit (other flags are ignored).
    #[arg(long, value_enum, value_name = "KIND")]
    pub generate: Option<Generate>,
}

/// `--tls` and its companions, for sending and for `bench`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Speak TLS, verifying the server against the system's roots (or --tls-ca).
    #[arg(long, conflicts_with = "udp", env = "SOCKPOOL_TLS")]
    pub tls: bool,

    /// TLS: trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "PATH", requires = "tls", env = "SOCKPOOL_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// TLS: the name the server's certificate must carry [default: the host of -s].
    #[arg(
        long,
        value_name = "NAME",
        requires = "tls",
        env = "SOCKPOOL_TLS_SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,

    /// TLS: a client certificate (PEM chain), for servers that ask for one.
    #[arg(long, value_name = "PATH", requires_all = ["tls", "tls_key"], env = "SOCKPOOL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS: the key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", requires_all = ["tls", "tls_cert"], env = "SOCKPOOL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// TLS: accept any server certificate (self-signed test servers); says so on
    /// stderr.
    #[arg(long, requires = "tls", env = "SOCKPOOL_TLS_INSECURE")]
    pub tls_insecure: bool,
}

impl TlsArgs {
    pub fn into_options(self) -> Option<TlsOptions> {
        self.tls.then_some(TlsOptions {
            ca: self.tls_ca,
            server_name: self.tls_server_name,
            cert: self.tls_cert,
            key: self.tls_key,
            insecure: self.tls_insecure,
        })
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive load: many connections, a message rate or a closed loop, latency
    /// percentiles with --echo, UDP loss, a report (or --json).
    Bench(BenchArgs),
}

/// `sockpool-client bench` flags.
/// Where to connect: the same flag for sending and for `bench`.
#[derive(Debug, Args)]
pub struct Target {
    /// The server's address, HOST:PORT (a host name is resolved; each of its
    /// addresses is tried in turn), or `unix:PATH` / `unixgram:PATH` for a Unix
    /// stream or datagram socket (`bench`: `unix:PATH`).
    #[arg(
        short,
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        value_parser = parse_server,
        env = "SOCKPOOL_SERVER"
    )]
    pub server: String,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub target: Target,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Connections (UDP: sockets) to open, spread over --threads event loops.
    #[arg(short, long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,

    /// Run this long after the warmup [default: 10].
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs,
          conflicts_with = "messages")]
    pub duration: Option<Duration>,

    /// Send this many messages in all (after the warmup), shared out over the connections.
    #[arg(short, long, value_name = "M")]
    pub messages: Option<u64>,

    /// Bytes per message, without framing; at least 24 (connection id and sequence number).
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(payload::HEADER as i64..=64 * 1024 * 1024))]
    pub size: u32,

    /// Messages per second over all connections; 0 = as fast as possible (a closed loop).
    #[arg(short, long, value_name = "MSGS_PER_SEC", default_value_t = 0)]
    pub rate: u64,

    /// Send UDP datagrams instead of TCP streams.
    #[arg(short, long, env = "SOCKPOOL_UDP", value_parser = boolish())]
    pub udp: bool,

    /// Measure round-trip latency against a server in echo mode (and, for UDP, loss).
    #[arg(long)]
    pub echo: bool,

    /// Send for this long first and leave it out of the results.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub warmup: Duration,

    /// Print a line of counts and latencies every SECS.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub interval: Option<Duration>,

    /// Print every report (intervals and the final one) as one JSON object per line.
    #[arg(long)]
    pub json: bool,

    /// Load threads, each an event loop over its share of the connections
    /// [default: the number of cores, at most 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: Option<u32>,

    /// Give up connecting after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs,
          env = "SOCKPOOL_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,

    /// Wait this long for a reply, and at the end for the server to close.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub timeout: Duration,

    /// How messages are framed on TCP; must match the server's.
    #[arg(long, value_enum, default_value_t = Framing::Line, env = "SOCKPOOL_FRAMING")]
    pub framing: Framing,

    /// The byte that ends a message with line framing.
    #[arg(long, value_name = "BYTE", default_value = "\\n", value_parser = parse_delimiter,
          env = "SOCKPOOL_DELIMITER")]
    pub delimiter: u8,

    /// Also write the latency percentile distribution to FILE, in HdrHistogram's
    /// text format (milliseconds; what wrk2 prints and scripts/hgrm_plot.py plots).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
}

impl BenchArgs {
    pub fn into_config(self) -> bench::Config {
        let stop = match (self.messages, self.duration) {
            (Some(m), _) => Stop::Messages(m),
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Duration(Duration::from_secs(10)),
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        bench::Config {
            server: self.target.server,
            udp: self.udp,
            connections: self.connections as usize,
            stop,
            size: self.size as usize,
            rate: self.rate,
            echo: self.echo,
            warmup: self.warmup,
            interval: self.interval.filter(|d| !d.is_zero()),
            json: self.json,
            threads: self.threads.map_or(cores.min(2), |t| t as usize),
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            tls_options: self.tls.into_options(),
            tls: None,
            frame: FrameConfig {
                framing: self.framing,
                delimiter: self.delimiter,
                ..FrameConfig::default()
            },
            hgrm: self.hgrm,
        }
    }
}

/// `-s`: the shape is checked here, so a missing port is a usage error (exit 2)
/// rather than a failed look-up; the name is resolved when connecting.
fn parse_server(value: &str) -> Result<String, String> {
    if value.starts_with("unix:") || value.starts_with("unixgram:") {
        return Ok(value.to_string());
    }
    host_port(value).map(|()| value.to_string())
}

impl ClientArgs {
    /// What clap cannot check alone: a MESSAGE that line framing would split into
    /// two (`$'multi\nline'`) is a usage error rather than two messages sent.
    pub fn check(&self) -> Result<(), clap::Error> {
        if self.command.is_some() || self.udp || self.framing != Framing::Line {
            return Ok(());
        }
        let delimiter = self.delimiter;
        if let Some(message) = self
            .messages
            .iter()
            .find(|m| m.as_encoded_bytes().contains(&delimiter))
        {
            let escaped = |bytes: &[u8]| {
                let mut out = Vec::new();
                crate::output::text::escape(bytes, &mut out);
                String::from_utf8_lossy(&out).into_owned()
            };
            let shown = escaped(message.as_encoded_bytes());
            let delimiter = match delimiter {
                b'\n' => "\\n".to_string(),
                b'\0' => "\\0".to_string(),
                other => escaped(&[other]),
            };
            return Err(ClientArgs::command().error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "the message '{shown}' contains the delimiter '{delimiter}', so line framing would send it as two; use --framing length (or octet) to send it as one"
                ),
            ));
        }
        Ok(())
    }

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
            server: self.target.server,
            udp: self.udp,
            source,
            connect_timeout: self.connect_timeout,
            wait: self.wait,
            frame: FrameConfig {
                framing: self.framing,
                delimiter: self.delimiter,
                ..FrameConfig::default()
            },
            tls: self.tls.into_options(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_consistent() {
        ClientArgs::command().debug_assert();
    }

    #[test]
    fn bench_is_a_subcommand_and_messages_still_work() {
        let args = ClientArgs::try_parse_from(["sockpool-client", "hello", "world"]).unwrap();
        assert!(args.command.is_none());
        assert_eq!(args.messages, ["hello", "world"]);
        let args = ClientArgs::try_parse_from(["sockpool-client", "--", "bench"]).unwrap();
        assert_eq!(args.messages, ["bench"]);
        let args = ClientArgs::try_parse_from([
            "sockpool-client",
            "bench",
            "-s",
            "127.0.0.1:9",
            "--messages",
            "5000",
            "--connections",
            "10",
            "--rate",
            "2000",
            "--echo",
            "--json",
        ])
        .unwrap();
        let Some(Command::Bench(b)) = args.command else {
            panic!("not bench");
        };
        let c = b.into_config();
        assert_eq!(c.stop, Stop::Messages(5000));
        assert_eq!(
            (c.connections, c.rate, c.echo, c.json),
            (10, 2000, true, true)
        );
        // After a client flag, "bench" is a message.
        let args = ClientArgs::try_parse_from(["sockpool-client", "-u", "bench"]).unwrap();
        assert!(args.command.is_none() && args.messages == ["bench"]);
        assert!(
            ClientArgs::try_parse_from([
                "sockpool-client",
                "bench",
                "--duration",
                "1",
                "--messages",
                "5"
            ])
            .is_err()
        );
        assert!(ClientArgs::try_parse_from(["sockpool-client", "bench", "--size", "8"]).is_err());
    }
}
