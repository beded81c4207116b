//! `--output nats://[USER:PASS@]HOST:PORT[,HOST:PORT…]/SUBJECT`: the servers of one
//! cluster (comma-separated, each `nats://` or `tls://`, the scheme optional after the
//! first), credentials, and the subject every message is published to. Parsed without
//! the client library, so a malformed URL is a usage error (exit 2) before anything
//! connects.

use std::fmt;

/// Where NATS output goes.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// `nats://host:port` or `tls://host:port`, without credentials.
    pub servers: Vec<String>,
    pub credentials: Option<(String, String)>,
    pub subject: String,
}

/// The password is never printed.
impl fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsTarget({self})")
    }
}

/// The URL as given, the password replaced by `***`.
impl fmt::Display for NatsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, server) in self.servers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (&self.credentials, server.split_once("://")) {
                (Some((user, _)), Some((scheme, host))) if i == 0 => {
                    write!(f, "{scheme}://{user}:***@{host}")?
                }
                _ => f.write_str(server)?,
            }
        }
        write!(f, "/{}", self.subject)
    }
}

const DEFAULT_PORT: u16 = 4222;

impl NatsTarget {
    /// Whether `value` asks for NATS at all (then [`NatsTarget::parse`] judges it).
    pub fn is_nats(value: &str) -> bool {
        value.starts_with("nats://") || value.starts_with("tls://")
    }

    pub fn parse(value: &str) -> Result<NatsTarget, String> {
        let bad = |why: &str| {
            format!(
                "'{}' is not a NATS output: {why} (expected nats://[USER:PASS@]HOST:PORT[,HOST:PORT…]/SUBJECT)",
                redact(value)
            )
        };
        // The subject follows the first `/` after the last server's `scheme://`.
        let last_scheme = value.rfind("://").ok_or_else(|| bad("no nats:// scheme"))?;
        let after = last_scheme + 3;
        let slash = value[after..]
            .find('/')
            .map(|i| after + i)
            .ok_or_else(|| bad("no /SUBJECT"))?;
        let subject = &value[slash + 1..];
        check_subject(subject).map_err(|why| bad(&why))?;
        let mut servers = Vec::new();
        let mut credentials: Option<(String, String)> = None;
        for (i, item) in value[..slash].split(',').enumerate() {
            let (scheme, rest) = match item.split_once("://") {
                Some((scheme @ ("nats" | "tls"), rest)) => (scheme, rest),
                Some((other, _)) => return Err(bad(&format!("unknown scheme {other}://"))),
                None if i > 0 => ("nats", item),
                None => return Err(bad("no nats:// scheme")),
            };
            let host_port = match rest.rsplit_once('@') {
                Some((userinfo, host_port)) => {
                    let (user, pass) = userinfo
                        .split_once(':')
                        .ok_or_else(|| bad("credentials are USER:PASS@"))?;
                    if user.is_empty() {
                        return Err(bad("an empty user name"));
                    }
                    let pair = (user.to_string(), pass.to_string());
                    if credentials.as_ref().is_some_and(|c| *c != pair) {
                        return Err(bad("different credentials for servers of one cluster"));
                    }
                    credentials = Some(pair);
                    host_port
                }
                None => rest,
            };
            let (host, port) = split_host_port(host_port).map_err(|why| bad(&why))?;
            servers.push(format!("{scheme}://{host}:{port}"));
        }
        Ok(NatsTarget {
            servers,
            credentials,
            subject: subject.to_string(),
        })
    }
}

fn split_host_port(value: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = value.strip_prefix('[') {
        let end = v6.find(']').ok_or("an unclosed [IPv6] address")?;
        let host = &value[..end + 2];
        match &v6[end + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':').ok_or("junk after ]")?)),
        }
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(format!("'{host}' is not a host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{p}' is not a port"))?,
    };
    Ok((host, port))
}

/// A subject one publishes to: dot-separated non-empty tokens, no wildcards, no
/// white space.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("an empty subject".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!("subject '{subject}' holds white space"));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!("subject '{subject}' has an empty token"));
        }
        if token == "*" || token == ">" {
            return Err(format!(
                "subject '{subject}' has a wildcard: publish to one subject"
            ));
        }
    }
    Ok(())
}

/// `value` with whatever sits between `:` and `@` in each server replaced by `***`.
fn redact(value: &str) -> String {
    let mut out = String::new();
    for (i, item) in value.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item.rsplit_once('@') {
            Some((userinfo, rest)) => {
                let (scheme, info) = userinfo.split_once("://").unwrap_or(("", userinfo));
                let user = info.split(':').next().unwrap_or("");
                if !scheme.is_empty() {
                    out.push_str(scheme);
                    out.push_str("://");
                }
                out.push_str(user);
                out.push_str(":***@");
                out.push_str(rest);
            }
            None => out.push_str(item),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_many_servers_and_credentials() {
        let t = NatsTarget::parse("nats://127.0.0.1:4222/sockpool.messages").unwrap();
        assert_eq!(t.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(t.subject, "sockpool.messages");
        assert_eq!(t.credentials, None);

        let t = NatsTarget::parse("nats://u:p@a:1,nats://b:2,c:3,tls://[::1]/s").unwrap();
        assert_eq!(
            t.servers,
            ["nats://a:1", "nats://b:2", "nats://c:3", "tls://[::1]:4222"]
        );
        assert_eq!(t.credentials, Some(("u".into(), "p".into())));
        assert_eq!(
            t.to_string(),
            "nats://u:***@a:1,nats://b:2,nats://c:3,tls://[::1]:4222/s"
        );
        assert!(!format!("{t:?}").contains(":p@"));
    }

    #[test]
    fn malformed_urls_are_refused_without_showing_the_password() {
        for bad in [
            "nats://",
            "nats://host:4222",
            "nats://host:4222/",
            "nats://host:0/s",
            "nats://host:99999/s",
            "nats://host:x/s",
            "nats://:4222/s",
            "nats://host:4222/a..b",
            "nats://host:4222/a.*",
            "nats://host:4222/a.>",
            "nats://host:4222/a b",
            "http://host:4222/s",
            "nats://host:1,http://other:2/s",
            "nats://user@host:4222/s",
            "nats://u:secret@a:1,nats://v:secret@b:2/s",
        ] {
            let err = NatsTarget::parse(bad).unwrap_err();
            assert!(!err.contains("secret"), "{err}");
            assert!(err.contains("is not a NATS output"), "{bad}: {err}");
        }
    }
}
