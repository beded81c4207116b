//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, v1 text and v2
//! binary) that a balancer sends before a connection's own bytes, naming the client
//! it connected for. Sans-IO like the codecs in `frame/`: bytes in, one of
//! [`Parsed`] out; no sockets, clocks or state, so every split point is tested and
//! fuzzed. The caller keeps what has arrived (at most [`MAX_HEADER`] bytes) and asks
//! again with more.
//!
//! Decisions: bytes that cannot begin a header (neither `PROXY ` nor the v2
//! signature, a v1 line with a character no address or port uses, a v2 version or
//! command that does not exist) are [`Parsed::Invalid`] as soon as they are seen,
//! so a client that is not a proxy is turned away at its first read. v2 TLVs are
//! skipped by the header's length, never read. A v2 `LOCAL` (a balancer's health
//! check), a v1 `UNKNOWN`, and a v2 `PROXY` over a family with no IP address
//! (unspecified, Unix) all say [`Parsed::Local`]: the connection keeps the proxy's
//! own address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, `\r\n` included (the specification's 107).
pub const V1_MAX: usize = 107;
/// The longest header of either version: v2's 16 bytes and a 16-bit length.
pub const MAX_HEADER: usize = 16 + u16::MAX as usize;

const V1_PREFIX: &[u8] = b"PROXY ";

/// What the bytes received so far come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning: more bytes are needed.
    Incomplete,
    /// A header of `len` bytes naming the client (`src`) and the address it
    /// connected to on the proxy (`dst`).
    Header {
        src: SocketAddr,
        dst: SocketAddr,
        len: usize,
    },
    /// A header of `len` bytes that names no client: keep the proxy's address.
    Local { len: usize },
    /// These bytes cannot be (the beginning of) a header.
    Invalid(&'static str),
}

/// Parses the header at the start of `input` (everything received so far; what
/// follows the header is the connection's own data and is left alone).
pub fn parse(input: &[u8]) -> Parsed {
    let Some(&first) = input.first() else {
        return Parsed::Incomplete;
    };
    if first == b'P' {
        parse_v1(input)
    } else if first == b'\r' {
        parse_v2(input)
    } else {
        Parsed::Invalid("not a PROXY protocol header")
    }
}

fn parse_v1(input: &[u8]) -> Parsed {
    let seen = input.len().min(V1_PREFIX.len());
    if input.get(..seen) != V1_PREFIX.get(..seen) {
        return Parsed::Invalid("not a PROXY protocol header");
    }
    let limit = input.len().min(V1_MAX);
    let Some(line) = input.get(..limit) else {
        return Parsed::Invalid("v1 header too long");
    };
    // Every character a v1 line may hold: letters of TCP4/TCP6/UNKNOWN, digits,
    // hex digits, dots and colons of the addresses, spaces between fields.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b':');
    let end = match line.iter().position(|&b| !allowed(b)) {
        None if input.len() >= V1_MAX => return Parsed::Invalid("v1 header too long"),
        None => return Parsed::Incomplete,
        Some(at) => at,
    };
    match (line.get(end), line.get(end + 1)) {
        (Some(b'\r'), Some(b'\n')) => {}
        (Some(b'\r'), None) if end + 1 < V1_MAX => return Parsed::Incomplete,
        _ => return Parsed::Invalid("v1 header: unexpected byte"),
    }
    let len = end + 2;
    // `allowed` holds only ASCII, so this is text.
    let Ok(text) = std::str::from_utf8(line.get(V1_PREFIX.len()..end).unwrap_or_default()) else {
        return Parsed::Invalid("v1 header: unexpected byte");
    };
    let mut fields = text.split(' ');
    match fields.next() {
        Some("UNKNOWN") => Parsed::Local { len },
        Some(proto @ ("TCP4" | "TCP6")) => {
            let v6 = proto == "TCP6";
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Parsed::Invalid("v1 header: expected 4 fields after the protocol");
            };
            let ip = |s: &str| -> Option<IpAddr> {
                if v6 {
                    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
                } else {
                    s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
                }
            };
            let port = |s: &str| -> Option<u16> {
                let canonical = !s.is_empty() && s.len() <= 5 && (s == "0" || !s.starts_with('0'));
                if canonical { s.parse().ok() } else { None }
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(src), Some(dst), Some(sport), Some(dport)) => Parsed::Header {
                    src: SocketAddr::new(src, sport),
                    dst: SocketAddr::new(dst, dport),
                    len,
                },
                _ => Parsed::Invalid("v1 header: bad address or port"),
            }
        }
        _ => Parsed::Invalid("v1 header: unknown protocol"),
    }
}

fn parse_v2(input: &[u8]) -> Parsed {
    let seen = input.len().min(V2_SIGNATURE.len());
    if input.get(..seen) != V2_SIGNATURE.get(..seen) {
        return Parsed::Invalid("not a PROXY protocol header");
    }
    let (Some(&ver_cmd), family) = (input.get(12), input.get(13).copied()) else {
        return Parsed::Incomplete;
    };
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("v2 header: unknown version");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("v2 header: unknown command"),
    };
    let Some(family) = family else {
        return Parsed::Incomplete;
    };
    // Address family (high nibble) and transport (low nibble).
    let addr_len = match (family >> 4, family & 0x0f) {
        (0, 0) => 0,
        (1, 1 | 2) => 12,
        (2, 1 | 2) => 36,
        (3, 1 | 2) => 216,
        _ if local => 0,
        _ => return Parsed::Invalid("v2 header: unknown address family"),
    };
    let (Some(&hi), Some(&lo)) = (input.get(14), input.get(15)) else {
        return Parsed::Incomplete;
    };
    let body_len = usize::from(u16::from_be_bytes([hi, lo]));
    let len = 16 + body_len;
    if !local && body_len < addr_len {
        return Parsed::Invalid("v2 header: address block too short");
    }
    let Some(body) = input.get(16..len) else {
        return Parsed::Incomplete;
    };
    if local {
        return Parsed::Local { len };
    }
    // What follows the addresses (TLVs) is skipped by `len`.
    let at = |i: usize| body.get(i).copied().unwrap_or(0);
    let port = |i: usize| u16::from_be_bytes([at(i), at(i + 1)]);
    let octets16 = |from: usize| {
        let mut out = [0u8; 16];
        for (k, o) in out.iter_mut().enumerate() {
            *o = at(from + k);
        }
        out
    };
    match family >> 4 {
        1 => Parsed::Header {
            src: SocketAddr::new(Ipv4Addr::new(at(0), at(1), at(2), at(3)).into(), port(8)),
            dst: SocketAddr::new(Ipv4Addr::new(at(4), at(5), at(6), at(7)).into(), port(10)),
            len,
        },
        2 => Parsed::Header {
            src: SocketAddr::new(Ipv6Addr::from(octets16(0)).into(), port(32)),
            dst: SocketAddr::new(Ipv6Addr::from(octets16(16)).into(), port(34)),
            len,
        },
        // Unspecified or Unix: no client address to use.
        _ => Parsed::Local { len },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
        let mut body = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x00, 0x50];
        body.extend_from_slice(tlvs);
        v2(1, 0x11, &body)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\nhello\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                src: addr("192.168.0.1:56324"),
                dst: addr("10.0.0.2:443"),
                len: 43
            }
        );
        let h = b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                src: addr("[::1]:1"),
                dst: addr("[2001:db8::2]:65535"),
                len: h.len()
            }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Local { len: 15 });
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\nx"),
            Parsed::Local { len: 39 }
        );
    }

    #[test]
    fn v1_rejects() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXZ",
            b"proxy TCP4",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
        assert!(matches!(parse(&long[..V1_MAX]), Parsed::Invalid(_)));
        assert_eq!(parse(&long[..V1_MAX - 1]), Parsed::Incomplete);
    }

    #[test]
    fn v2_tcp4_with_tlvs_skipped() {
        // A TLV that claims more than the header holds is skipped with the rest.
        let h = v2_tcp4(&[0x05, 0xff, 0xff, 1, 2, 3]);
        let mut input = h.clone();
        input.extend_from_slice(b"hello\n");
        assert_eq!(
            parse(&input),
            Parsed::Header {
                src: addr("10.0.0.1:12345"),
                dst: addr("10.0.0.2:80"),
                len: h.len()
            }
        );
    }

    #[test]
    fn v2_tcp6_local_and_unix() {
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0, 7, 0, 8]);
        let h = v2(1, 0x21, &body);
        assert_eq!(
            parse(&h),
            Parsed::Header {
                src: addr("[2001:db8::1]:7"),
                dst: addr("[::1]:8"),
                len: 52
            }
        );
        assert_eq!(parse(&v2(0, 0x00, &[])), Parsed::Local { len: 16 });
        // LOCAL may carry anything, addresses included: skipped.
        assert_eq!(parse(&v2(0, 0x11, &[1; 20])), Parsed::Local { len: 36 });
        assert_eq!(parse(&v2(1, 0x31, &[0; 216])), Parsed::Local { len: 232 });
        assert_eq!(parse(&v2(1, 0x00, &[])), Parsed::Local { len: 16 });
    }

    #[test]
    fn v2_rejects() {
        let mut bad_version = v2_tcp4(&[]);
        bad_version[12] = 0x11;
        let mut bad_command = v2_tcp4(&[]);
        bad_command[12] = 0x22;
        for bad in [
            bad_version,
            bad_command,
            v2(1, 0x41, &[0; 12]),
            v2(1, 0x11, &[0; 11]),
            v2(1, 0x21, &[0; 12]),
            b"\r\n\r\n\0\r\nQUIX".to_vec(),
            b"\r\r".to_vec(),
        ] {
            assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    /// The headers the tests and HAProxy send, each followed by data.
    fn samples() -> Vec<Vec<u8>> {
        vec![
            b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\nhello\n".to_vec(),
            b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n".to_vec(),
            b"PROXY UNKNOWN\r\nx".to_vec(),
            [v2_tcp4(&[0x03, 0, 4, 1, 2, 3, 4]), b"data".to_vec()].concat(),
            v2(0, 0, &[]),
            v2(1, 0x31, &[7; 216]),
        ]
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        for sample in samples() {
            let whole = parse(&sample);
            let len = match whole {
                Parsed::Header { len, .. } | Parsed::Local { len } => len,
                other => panic!("{other:?}"),
            };
            for cut in 0..len {
                assert_eq!(parse(&sample[..cut]), Parsed::Incomplete, "cut at {cut}");
            }
            for cut in len..=sample.len() {
                assert_eq!(parse(&sample[..cut]), whole, "cut at {cut}");
            }
        }
    }

    proptest! {
        /// Whatever arrives, and however it is split into reads, the answer for
        /// everything received is the same as for the whole; a prefix of a valid
        /// header is never called invalid, and once decided the answer stays.
        #[test]
        fn any_split_gives_the_same_answer(
            sample in prop::sample::select(samples()),
            noise in prop::collection::vec(any::<u8>(), 0..64),
            flip in prop::option::of((0usize..300, any::<u8>())),
        ) {
            let mut input = sample;
            if let Some((at, byte)) = flip && let Some(b) = input.get_mut(at) {
                *b = byte;
            }
            input.extend_from_slice(&noise);
            let whole = parse(&input);
            let mut decided = None;
            for cut in 0..=input.len() {
                let got = parse(&input[..cut]);
                match decided {
                    Some(answer) => prop_assert_eq!(got, answer, "cut at {}", cut),
                    None if got != Parsed::Incomplete => {
                        let len = match got {
                            Parsed::Header { len, .. } | Parsed::Local { len } => Some(len),
                            _ => None,
                        };
                        if let Some(len) = len {
                            prop_assert_eq!(len, cut, "decided as soon as complete");
                        }
                        decided = Some(got);
                    }
                    None => {}
                }
            }
            prop_assert_eq!(decided.unwrap_or(Parsed::Incomplete), whole);
        }

        /// Arbitrary bytes never panic, and a header is never longer than what
        /// was given nor than the protocol allows.
        #[test]
        fn arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..400), v2_start in any::<bool>()) {
            let input = if v2_start { [V2_SIGNATURE.as_slice(), &input].concat() } else { input };
            match parse(&input) {
                Parsed::Header { len, .. } | Parsed::Local { len } => {
                    prop_assert!(len <= input.len() && len <= MAX_HEADER);
                }
                Parsed::Incomplete => prop_assert!(input.len() < MAX_HEADER),
                Parsed::Invalid(_) => {}
            }
        }
    }
}
