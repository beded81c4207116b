//! The only place that knows about flags: clap definitions, value parsers shared by
//! both binaries, and logging set-up. Every flag can also come from `SOCKPOOL_<FLAG>`.

pub mod client;
pub mod server;

use std::net::SocketAddr;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// `--listen`: `127.0.0.1:8080`, `[::1]:8080`, `[::]:0` …
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!(
            "'{value}' is not an address: expected IPv4:PORT or [IPv6]:PORT, e.g. 127.0.0.1:8080"
        )
    })
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
    }
}
