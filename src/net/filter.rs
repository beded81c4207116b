//! Who may talk to the server and how many connections each may hold: the
//! `--allow`/`--deny` address lists (applied to TCP connections before any read and
//! to every UDP datagram) and the connection counts behind `--max-connections` and
//! `--max-per-ip`.
//!
//! Access rules, decided once and order-independent (unlike nginx's first match):
//! a `--deny` match always wins; when at least one `--allow` is given, only
//! addresses matching an `--allow` are admitted; with neither, everyone is.
//! Addresses are matched in canonical form: an IPv4 client of a dual-stack `[::]`
//! listener (`::ffff:a.b.c.d`) matches the IPv4 rules, and an IPv4-mapped rule
//! (`::ffff:10.0.0.0/104`) is read as the IPv4 rule it means.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::{IpNet, Ipv4Net};

/// Parses a `--allow`/`--deny` value: a CIDR (`10.0.0.0/8`, `::1/128`) or a bare
/// address (one host).
pub fn parse_cidr(value: &str) -> Result<IpNet, String> {
    let net = match value.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match value.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err(format!(
                    "'{value}' is not a CIDR: expected ADDR/PREFIX or an address, e.g. 10.0.0.0/8"
                ));
            }
        },
    };
    Ok(canonical_net(net).trunc())
}

/// `::ffff:a.b.c.d/N` with N ≥ 96 is the IPv4 network `a.b.c.d/(N-96)`.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Some(prefix) = v6.prefix_len().checked_sub(96)
        && let Ok(v4net) = Ipv4Net::new(v4, prefix)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// The `--allow` and `--deny` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Filter {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        Filter {
            allow: allow.into_iter().map(canonical_net).collect(),
            deny: deny.into_iter().map(canonical_net).collect(),
        }
    }

    /// No rules: everyone is admitted (the hot path skips the check).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may connect or send: not denied, and allowed if an allow list
    /// exists.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// Why a TCP connection was accepted and closed at once. The names are the words
/// the summary and the metrics use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` were already open.
    MaxConnections,
    /// `--max-per-ip` were already open from this address.
    MaxPerIp,
    /// `--allow`/`--deny` said no.
    Denied,
    /// Out of file descriptors: the spare descriptor was used to accept and close it.
    NoDescriptors,
    /// `--proxy-protocol`: bytes that cannot begin a PROXY header, or no complete
    /// header in time.
    ProxyHeader,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::MaxConnections,
        Refusal::MaxPerIp,
        Refusal::Denied,
        Refusal::NoDescriptors,
        Refusal::ProxyHeader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxPerIp => "max_per_ip",
            Refusal::Denied => "denied",
            Refusal::NoDescriptors => "no_descriptors",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

/// Open TCP connections, in total and per address. The worker that accepts a
/// connection admits (and counts) it; the worker that closes it releases it.
/// Per-address counts are kept only when `--max-per-ip` is set, and are touched only
/// on accept and close, never per message.
#[derive(Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_per_ip: Option<usize>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimits {
    pub fn new(max_connections: usize, max_per_ip: Option<usize>) -> Self {
        ConnLimits {
            max_connections,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Connections admitted and not yet released.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a new connection from `ip` in, or says which limit it is past. Every
    /// worker accepts, so the total is checked and raised in one step, and the
    /// per-address count is taken back when that step fails.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.admit_unnamed()?;
        if let Err(refusal) = self.admit_client(ip) {
            self.release_unnamed();
            return Err(refusal);
        }
        Ok(())
    }

    /// A connection whose client address is not known: a Unix stream (it has none),
    /// or `--proxy-protocol` before its header. Counted against `--max-connections`
    /// only, until [`ConnLimits::admit_client`] names its address.
    pub fn admit_unnamed(&self) -> Result<(), Refusal> {
        let max = self.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| Refusal::MaxConnections)
    }

    /// Counts an [`admit_unnamed`](ConnLimits::admit_unnamed) connection's client
    /// `ip` in against `--max-per-ip`. On a refusal the connection is still to be
    /// released with [`ConnLimits::release_unnamed`]; once admitted, with
    /// [`ConnLimits::release`].
    pub fn admit_client(&self, ip: IpAddr) -> Result<(), Refusal> {
        if let Some(max) = self.max_per_ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip.to_canonical()).or_insert(0);
            if *count >= max {
                return Err(Refusal::MaxPerIp);
            }
            *count += 1;
        }
        Ok(())
    }

    /// A connection admitted by [`ConnLimits::admit_unnamed`] alone has closed.
    pub fn release_unnamed(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// A connection admitted from `ip` (`None`: one with no IP address) has closed.
    pub fn release_peer(&self, ip: Option<IpAddr>) {
        match ip {
            Some(ip) => self.release(ip),
            None => self.release_unnamed(),
        }
    }

    /// A connection admitted from `ip` has closed.
    pub fn release(&self, ip: IpAddr) {
        if self.max_per_ip.is_some() {
            let ip = ip.to_canonical();
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    // Forget the address, so the map holds only addresses with
                    // connections open.
                    per_ip.remove(&ip);
                }
            }
        }
        // Never below zero, even if a release were ever doubled.
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn workers_admitting_at_once_never_pass_the_limits() {
        // Every worker accepts: the check and the count must be one step.
        let limits = std::sync::Arc::new(ConnLimits::new(50, Some(30)));
        let admitted: usize = (0..4)
            .map(|t| {
                let limits = std::sync::Arc::clone(&limits);
                std::thread::spawn(move || {
                    let from = ip(if t % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" });
                    (0..1000).filter(|_| limits.admit(from).is_ok()).count()
                })
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 50);
        assert_eq!(limits.open(), 50);
    }

    fn filter(allow: &[&str], deny: &[&str]) -> Filter {
        let p = |v: &[&str]| v.iter().map(|s| parse_cidr(s).unwrap()).collect();
        Filter::new(p(allow), p(deny))
    }

    #[test]
    fn no_rules_admit_everyone() {
        let f = filter(&[], &[]);
        assert!(f.is_open());
        assert!(f.permits(ip("10.1.2.3")));
        assert!(f.permits(ip("::1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = filter(&["127.0.0.0/8"], &["127.0.0.2"]);
        assert!(f.permits(ip("127.0.0.1")));
        assert!(!f.permits(ip("127.0.0.2")));
        assert!(
            !f.permits(ip("10.0.0.1")),
            "an allow list admits only itself"
        );
        assert!(!f.permits(ip("::1")));
    }

    #[test]
    fn deny_only_admits_the_rest() {
        let f = filter(&[], &["127.0.0.0/24"]);
        assert!(!f.permits(ip("127.0.0.9")));
        assert!(f.permits(ip("127.0.1.1")));
        assert!(f.permits(ip("::1")));
    }

    #[test]
    fn mapped_addresses_match_ipv4_rules() {
        let f = filter(&[], &["127.0.0.2/32"]);
        assert!(!f.permits(ip("::ffff:127.0.0.2")));
        assert!(f.permits(ip("::ffff:127.0.0.1")));
        let mapped_rule = filter(&["::ffff:127.0.0.0/104"], &[]);
        assert!(mapped_rule.permits(ip("127.0.0.5")));
        assert!(!mapped_rule.permits(ip("10.0.0.1")));
    }

    #[test]
    fn cidr_values() {
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn limits_count_and_release() {
        let limits = ConnLimits::new(3, Some(2));
        let a = ip("127.0.0.1");
        let b = ip("::ffff:127.0.0.2");
        assert_eq!(limits.admit(a), Ok(()));
        assert_eq!(limits.admit(a), Ok(()));
        assert_eq!(limits.admit(a), Err(Refusal::MaxPerIp));
        assert_eq!(limits.admit(b), Ok(()));
        assert_eq!(limits.admit(ip("127.0.0.3")), Err(Refusal::MaxConnections));
        assert_eq!(limits.open(), 3);
        limits.release(ip("127.0.0.2"));
        limits.release(a);
        assert_eq!(limits.open(), 1);
        assert_eq!(limits.admit(a), Ok(()));
        assert_eq!(limits.admit(a), Err(Refusal::MaxPerIp));
        limits.release(a);
        limits.release(a);
        limits.release(a);
        assert_eq!(limits.open(), 0);
    }
}
