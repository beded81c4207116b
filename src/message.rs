//! What a message is once it has been cut from the wire: its bytes, where they came
//! from and when. Borrowed, so the hot path formats straight from the read buffer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

/// The transport a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    /// TLS over TCP (TLS over a Unix socket stays `Unix`).
    Tls,
    /// A Unix stream socket.
    Unix,
    /// A Unix datagram socket.
    Unixgram,
}

impl Proto {
    pub const ALL: [Proto; 5] = [
        Proto::Tcp,
        Proto::Udp,
        Proto::Tls,
        Proto::Unix,
        Proto::Unixgram,
    ];

    /// The word the output formats use: `tcp`, `udp`, `tls`, `unix`, `unixgram`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Tls => "tls",
            Proto::Unix => "unix",
            Proto::Unixgram => "unixgram",
        }
    }
}

/// The id the server gives each accepted TCP connection, unique for the process.
pub type ConnId = u64;

/// A peer address together with its printed form, formatted once per connection
/// rather than once per message. A Unix socket's peer has no address, only the
/// credentials the kernel gave (`pid=PID,uid=UID`, or `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    addr: Option<SocketAddr>,
    text: Box<str>,
    /// With mutual TLS: the subject of the client's certificate.
    tls_client: Option<Box<str>>,
}

impl Peer {
    /// IPv4 clients of a dual-stack `[::]` listener arrive as `::ffff:a.b.c.d`; they
    /// are shown (and matched) as the IPv4 address they are.
    pub fn new(addr: SocketAddr) -> Self {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let mut text = String::with_capacity(24);
        let _ = write!(text, "{addr}");
        Peer {
            addr: Some(addr),
            text: text.into_boxed_str(),
            tls_client: None,
        }
    }

    /// A peer with no IP address (a Unix socket's), shown as `text`.
    pub fn local(text: &str) -> Self {
        Peer {
            addr: None,
            text: text.into(),
            tls_client: None,
        }
    }

    /// The IP address and port; `None` for a Unix socket's peer.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The subject of the client's TLS certificate (mutual TLS), once verified.
    pub fn tls_client(&self) -> Option<&str> {
        self.tls_client.as_deref()
    }

    pub fn set_tls_client(&mut self, subject: String) {
        self.tls_client = Some(subject.into_boxed_str());
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One message, borrowed from the buffer it was cut from.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub proto: Proto,
    pub peer: &'a Peer,
    /// The TCP connection's id; `None` for UDP.
    pub conn: Option<ConnId>,
    /// When the bytes were read; messages cut from one read share it.
    pub received_at: SystemTime,
    pub bytes: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_shown_as_ipv4() {
        let addr: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert_eq!(Peer::new(addr).as_str(), "127.0.0.1:4000");
        let v6: SocketAddr = "[::1]:4000".parse().unwrap();
        assert_eq!(Peer::new(v6).as_str(), "[::1]:4000");
    }
}
