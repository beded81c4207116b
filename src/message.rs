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
}

impl Proto {
    /// The word the output formats use: `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The id the server gives each accepted TCP connection, unique for the process.
pub type ConnId = u64;

/// A peer address together with its printed form, formatted once per connection
/// rather than once per message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    addr: SocketAddr,
    text: Box<str>,
}

impl Peer {
    /// IPv4 clients of a dual-stack `[::]` listener arrive as `::ffff:a.b.c.d`; they
    /// are shown (and matched) as the IPv4 address they are.
    pub fn new(addr: SocketAddr) -> Self {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let mut text = String::with_capacity(24);
        let _ = write!(text, "{addr}");
        Peer {
            addr,
            text: text.into_boxed_str(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn as_str(&self) -> &str {
        &self.text
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
