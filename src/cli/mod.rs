//! The only place that knows about flags: clap definitions, value parsers shared by
//! both binaries, and logging set-up. Every flag can also come from `SOCKPOOL_<FLAG>`.

pub mod client;
pub mod generate;
pub mod server;

/// What `--version` prints after the binary's name: `0.2.0 (abc1234)`, the commit
/// the build script found, or `0.2.0` for a build outside git.
pub const VERSION: &str = env!("SOCKPOOL_VERSION");

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::builder::{BoolishValueParser, TypedValueParser};

use tracing_subscriber::EnvFilter;

/// The addresses one `--listen` (or `--metrics`) value names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved(pub Vec<SocketAddr>);

/// `--listen`: `127.0.0.1:8080`, `[::1]:8080`, `[::]:0`, or `HOST:PORT` with a host
/// name, which stands for all its addresses (as ncat and socat take one); they are
/// looked up once, here, so the `listening` lines show numeric addresses.
pub fn parse_listen(value: &str) -> Result<Resolved, String> {
    if let Ok(addr) = value.parse() {
        return Ok(Resolved(vec![addr]));
    }
    host_port(value)?;
    let mut addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve '{value}': {}", crate::error::describe(&err)))?
        .collect();
    // One entry per address, whatever the resolver repeats.
    let mut seen = Vec::new();
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    if addrs.is_empty() {
        return Err(format!("'{value}' resolves to no address"));
    }
    Ok(Resolved(addrs))
}

/// A single address (`--metrics`): the first one a host name resolves to.
pub fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    parse_listen(value).and_then(|r| {
        r.0.first()
            .copied()
            .ok_or_else(|| format!("'{value}' resolves to no address"))
    })
}

/// Checks the shape `HOST:PORT` (or `[IPv6]:PORT`) without resolving: a missing or
/// bad port is a usage error, not a failed look-up.
pub fn host_port(value: &str) -> Result<(), String> {
    let expected = "expected HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:8080";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("'{value}' has no port: {expected}"));
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return Err(format!("'{value}' has no port: {expected}"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("'{port}' in '{value}' is not a port: {expected}"));
    }
    Ok(())
}

/// On/off values of flags and their variables: `1`/`0`, `true`/`false`, `yes`/`no`,
/// `on`/`off` (`SOCKPOOL_TCP_ONLY=1`), as users of other tools expect.
pub fn boolish() -> impl TypedValueParser<Value = bool> {
    BoolishValueParser::new()
}

/// A level count from a variable (`SOCKPOOL_QUIET=2` is `-qq`): `1`–`3`, or an on/off
/// word meaning 1 or 0.
pub fn parse_count(value: &str) -> Result<u8, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" | "n" | "f" => Ok(0),
        "true" | "yes" | "on" | "y" | "t" => Ok(1),
        n => n
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 3)
            .ok_or_else(|| format!("'{value}' is not a level: use 0 to 3")),
    }
}

/// A `--listen` address: IP and port, or a Unix socket's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// The addresses of `HOST:PORT` (a host name stands for all of them).
    Ip(Vec<SocketAddr>),
    Unix(crate::net::unix::UnixPath),
}

/// `HOST:PORT`, `[v6]:PORT`, `unix:PATH` or `unixgram:PATH`.
pub fn parse_listen_addr(value: &str) -> Result<ListenAddr, String> {
    match crate::net::unix::UnixPath::parse(value) {
        Some(unix) => unix.map(ListenAddr::Unix),
        None => parse_listen(value).map(|resolved| ListenAddr::Ip(resolved.0)),
    }
}

/// File permissions in octal: `0660`, `660`.
pub fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("'{value}' is not an octal file mode, e.g. 0660"))
}

/// A delimiter byte: one character (`;`), an escape (`\n`, `\0`, `\t`, `\r`) or hex
/// (`0x1e`).
pub fn parse_delimiter(value: &str) -> Result<u8, String> {
    let byte = match value {
        "\\n" => Some(b'\n'),
        "\\0" => Some(0),
        "\\t" => Some(b'\t'),
        "\\r" => Some(b'\r'),
        _ => match value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("\\x"))
        {
            Some(hex) => u8::from_str_radix(hex, 16).ok(),
            None if value.len() == 1 => value.bytes().next(),
            None => None,
        },
    };
    byte.ok_or_else(|| {
        format!("'{value}' is not one byte: use a character, \\n, \\0, \\t, \\r or 0xNN")
    })
}

/// Seconds, whole or fractional: `5`, `0.5`.
pub fn parse_secs(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{value}' is not a number of seconds"))
}

/// Diagnostics to stderr: `info` by default, `-q` warnings only (`-qq` errors
/// only), `-v` debug, `-vv` trace; `RUST_LOG` overrides.
pub fn init_logging(quiet: u8, verbose: u8) {
    let level = match (quiet, verbose) {
        (0, 0) => "info",
        (1, _) => "warn",
        (_, 0) => "error",
        (_, 1) => "debug",
        _ => "trace",
    };
    // The NATS client library logs its own connects at info; ours say it once.
    let directives = match level {
        "warn" | "error" => level.to_string(),
        _ => format!("{level},async_nats=warn"),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter("\\0"), Ok(0));
        assert_eq!(parse_delimiter("\\n"), Ok(b'\n'));
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert_eq!(parse_delimiter("0x1e"), Ok(0x1e));
        assert!(parse_delimiter("ab").is_err());
    }

    #[test]
    fn seconds_and_addresses() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_listen("[::]:0").is_ok());
        assert!(parse_listen("localhost").is_err());
        assert!(
            parse_listen("localhost:0").is_ok_and(|r| r.0.iter().all(|a| a.ip().is_loopback()))
        );
        assert!(host_port("127.0.0.1").unwrap_err().contains("has no port"));
        assert!(host_port("::1").unwrap_err().contains("has no port"));
        assert!(
            host_port("example.org:http")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(host_port("[::1]:80").is_ok() && host_port("example.org:80").is_ok());
        assert_eq!(parse_count("2"), Ok(2));
        assert_eq!(parse_count("yes"), Ok(1));
        assert!(parse_count("4").is_err());
    }
}
