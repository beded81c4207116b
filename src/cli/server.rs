//! `sockpool-server` flags → [`server::Config`](crate::server::Config).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use ipnet::IpNet;

use super::generate::Generate;
use super::{
    ListenAddr, boolish, parse_addr, parse_count, parse_delimiter, parse_listen_addr, parse_mode,
    parse_secs,
};
use crate::frame::{FrameConfig, Framing, Oversize};
use crate::net::filter::{Filter, parse_cidr};
use crate::output::nats::NatsTarget;
use crate::output::{Format, Target};
use crate::server::Config;
use crate::server::mode::Mode;
use crate::server::tls::TlsSettings;

/// A TCP + UDP message server: prints, echoes or relays what clients send, served by
/// a fixed pool of event-loop worker threads.
#[derive(Debug, Parser)]
#[command(
    name = "sockpool-server",
    version = super::VERSION,
    override_usage = "sockpool-server [OPTIONS]"
)]
pub struct ServerArgs {
    /// Address to listen on for TCP and UDP; repeatable. `127.0.0.1:8080`,
    /// `[::1]:8080`, `[::]:8080` (dual-stack), `HOST:PORT` (all its addresses); port 0
    /// picks a free port.
    /// `unix:PATH` is a Unix stream socket, `unixgram:PATH` a Unix datagram socket.
    #[arg(short, long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080",
          value_parser = parse_listen_addr, value_delimiter = ',', env = "SOCKPOOL_LISTEN")]
    pub listen: Vec<ListenAddr>,

    /// Permissions of the Unix socket files the server creates, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "0660", value_parser = parse_mode,
          env = "SOCKPOOL_UNIX_MODE")]
    pub unix_mode: u32,

    /// Serve TCP only.
    #[arg(long, conflicts_with = "udp_only", env = "SOCKPOOL_TCP_ONLY", value_parser = boolish())]
    pub tcp_only: bool,

    /// Serve UDP only.
    #[arg(long, env = "SOCKPOOL_UDP_ONLY", value_parser = boolish())]
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

    /// Write messages to this file instead of stdout: appended to, created with mode
    /// 0640 if new, reopened on SIGHUP (log rotation); `-` is stdout;
    /// `nats://[USER:PASS@]HOST:PORT[,HOST:PORT…]/SUBJECT` publishes each message to
    /// NATS JetStream, acknowledged.
    #[arg(long, value_name = "PATH", default_value = "-", value_parser = parse_output,
          env = "SOCKPOOL_OUTPUT")]
    pub output: Target,

    /// Graceful shutdown limit, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs,
          env = "SOCKPOOL_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,

    /// Listen backlog: connections the kernel holds until they are accepted.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(i32).range(1..), env = "SOCKPOOL_BACKLOG")]
    pub backlog: i32,

    /// Concurrent TCP connections; one past it is accepted and closed at once
    /// [default: the open-files limit (raised to its hard maximum) less a reserve].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKPOOL_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,

    /// Concurrent TCP connections from one address; one past it is accepted and
    /// closed at once [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKPOOL_MAX_PER_IP")]
    pub max_per_ip: Option<u64>,

    /// Close TCP connections that nothing was read from or written to for this
    /// long, in seconds; 0 = never.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_secs,
          env = "SOCKPOOL_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,

    /// Admit only these addresses (CIDR or address; repeatable). With any --allow,
    /// everyone else is turned away. Applies to TCP connections and UDP datagrams.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',',
          env = "SOCKPOOL_ALLOW")]
    pub allow: Vec<IpNet>,

    /// Turn away these addresses (CIDR or address; repeatable); --deny wins over
    /// --allow. A denied TCP connection is closed before any read, a denied
    /// datagram dropped and counted.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',',
          env = "SOCKPOOL_DENY")]
    pub deny: Vec<IpNet>,

    /// Serve Prometheus metrics on HTTP `GET /metrics` at this address (port 0
    /// picks a free port).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, env = "SOCKPOOL_METRICS")]
    pub metrics: Option<SocketAddr>,

    /// SO_RCVBUF for the UDP sockets and the TCP listeners (accepted connections
    /// inherit it), in bytes [default: the OS's].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64),
          env = "SOCKPOOL_RECV_BUFFER")]
    pub recv_buffer: Option<u64>,

    /// TCP keepalive on accepted connections: probe after this many seconds of
    /// silence [default: off].
    #[arg(long, value_name = "SECS", value_parser = parse_secs, env = "SOCKPOOL_KEEPALIVE")]
    pub keepalive: Option<Duration>,

    /// Bind TCP and UDP with SO_REUSEPORT, so several processes share the address
    /// (the kernel spreads connections and datagrams over them); without it a taken
    /// port is an error.
    #[arg(long, env = "SOCKPOOL_REUSE_PORT", value_parser = boolish())]
    pub reuse_port: bool,

    /// Each TCP connection starts with a PROXY protocol header (v1 or v2, as
    /// HAProxy's send-proxy and send-proxy-v2 send it): the client it names is the
    /// printed peer and the address --allow/--deny and --max-per-ip see.
    #[arg(long, env = "SOCKPOOL_PROXY_PROTOCOL", value_parser = boolish())]
    pub proxy_protocol: bool,

    /// With --proxy-protocol, only these proxies may connect (CIDR or address;
    /// repeatable) [default: any].
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',',
          requires = "proxy_protocol", env = "SOCKPOOL_PROXY_FROM")]
    pub proxy_from: Vec<IpNet>,

    /// TLS: the server's certificate chain (PEM, the server's certificate first).
    /// TCP and Unix stream connections then speak TLS.
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls_key",
        env = "SOCKPOOL_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS: the private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls_cert",
        env = "SOCKPOOL_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: require a client certificate signed by a CA in this PEM file.
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls_cert",
        env = "SOCKPOOL_TLS_CLIENT_CA"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Close a connection whose TLS handshake is not done after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs,
          env = "SOCKPOOL_TLS_HANDSHAKE_TIMEOUT")]
    pub tls_handshake_timeout: Duration,

    /// Fewer diagnostics: -q warnings only, -qq errors only.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose",
          env = "SOCKPOOL_QUIET", value_parser = parse_count)]
    pub quiet: u8,

    /// More diagnostics: -v debug, -vv trace (RUST_LOG overrides both).
    #[arg(short, long, action = ArgAction::Count, env = "SOCKPOOL_VERBOSE",
          value_parser = parse_count)]
    pub verbose: u8,

    /// Print a man page or a shell completion script on stdout and exit (other
    /// flags are ignored).
    #[arg(long, value_enum, value_name = "KIND")]
    pub generate: Option<Generate>,
}

impl ServerArgs {
    pub fn into_config(self) -> Config {
        let defaults = Config::default();
        let (mut listen, mut unix) = (Vec::new(), Vec::new());
        for addr in self.listen {
            match addr {
                ListenAddr::Ip(addrs) => listen.extend(addrs),
                ListenAddr::Unix(path) => unix.push(path),
            }
        }
        Config {
            listen,
            unix,
            unix_mode: self.unix_mode,
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
            output: self.output,
            quiet: self.quiet > 0,
            drain_timeout: self.drain_timeout,
            backlog: self.backlog,
            max_connections: self.max_connections.map(saturating_usize),
            max_per_ip: self.max_per_ip.map(saturating_usize),
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            filter: Filter::new(self.allow, self.deny),
            metrics: self.metrics,
            recv_buffer: self.recv_buffer.map(saturating_usize),
            // Keepalive works in whole seconds; less than one means one.
            keepalive: self.keepalive.map(|d| d.max(Duration::from_secs(1))),
            reuse_port: self.reuse_port,
            proxy_from: self
                .proxy_protocol
                .then(|| Filter::new(self.proxy_from, Vec::new())),
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsSettings {
                    cert,
                    key,
                    client_ca: self.tls_client_ca,
                    handshake_timeout: self.tls_handshake_timeout,
                }),
                _ => None,
            },
        }
    }
}

/// `--output`: `-` for stdout, `nats://…/SUBJECT` for NATS, else a file path.
fn parse_output(value: &str) -> Result<Target, String> {
    match value {
        "" => Err("an empty path: use - for stdout".into()),
        "-" => Ok(Target::Stdout),
        nats if NatsTarget::is_nats(nats) => NatsTarget::parse(nats).map(Target::Nats),
        path => Ok(Target::File(path.into())),
    }
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
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
        assert_eq!(config.output, Target::Stdout);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.backlog, 1024);
        assert_eq!(config.max_connections, None);
        assert_eq!(config.max_per_ip, None);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(300)));
        assert!(config.filter.is_open());
        assert_eq!(config.metrics, None);
        assert_eq!(config.recv_buffer, None);
        assert_eq!(config.keepalive, None);
    }

    #[test]
    fn limit_flags() {
        let config = ServerArgs::try_parse_from([
            "sockpool-server",
            "--max-connections",
            "10",
            "--max-per-ip",
            "2",
            "--idle-timeout",
            "0",
            "--allow",
            "127.0.0.0/8",
            "--deny",
            "127.0.0.2,127.0.0.3",
            "--metrics",
            "127.0.0.1:0",
            "--keepalive",
            "30",
        ])
        .unwrap()
        .into_config();
        assert_eq!(config.max_connections, Some(10));
        assert_eq!(config.max_per_ip, Some(2));
        assert_eq!(config.idle_timeout, None);
        assert!(config.filter.permits("127.0.0.1".parse().unwrap()));
        assert!(!config.filter.permits("127.0.0.3".parse().unwrap()));
        assert!(!config.filter.permits("10.0.0.1".parse().unwrap()));
        assert_eq!(config.keepalive, Some(Duration::from_secs(30)));
        for bad in [
            ["--allow", "10.0.0.0/40"],
            ["--max-connections", "0"],
            ["--metrics", "nowhere"],
        ] {
            let err = ServerArgs::try_parse_from(["sockpool-server", bad[0], bad[1]]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
