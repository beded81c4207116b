//! One TLS connection over a plain stream, driven without blocking: reads fill the
//! caller's buffer with plaintext until it is full or the socket is empty (so a
//! short read still means "the socket is drained", as `handle_tcp` assumes), and
//! writes hand plaintext to rustls (bounded by its buffer limit, so a peer that
//! does not read still cannot grow the server's memory) and push records out.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use super::{TlsFailure, subject};
use crate::server::transport::Stream;

/// Plaintext rustls holds for sending before writes return `WouldBlock`: the
/// outbox bounds stay the connection's, not rustls's.
const TLS_BUFFER: usize = 64 * 1024;

/// A server-side TLS connection.
#[derive(Debug)]
pub struct TlsStream {
    conn: ServerConnection,
    sock: Stream,
    /// The socket's end was read.
    eof: bool,
    /// Why the handshake failed, once it has.
    failure: Option<(TlsFailure, String)>,
    /// The handshake just completed and the client's certificate subject has not
    /// been collected yet.
    subject_pending: bool,
}

impl TlsStream {
    pub fn new(config: Arc<ServerConfig>, sock: Stream) -> io::Result<TlsStream> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Ok(TlsStream {
            conn,
            sock,
            eof: false,
            failure: None,
            subject_pending: false,
        })
    }

    pub fn socket(&mut self) -> &mut Stream {
        &mut self.sock
    }

    pub fn socket_ref(&self) -> &Stream {
        &self.sock
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the end of the stream has been seen but not yet returned: a short
    /// read then does not mean "wait for the next edge".
    pub fn at_end(&self) -> bool {
        self.eof
    }

    /// Whether rustls has records to send.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Why the handshake failed, if it did.
    pub fn failure(&self) -> Option<&(TlsFailure, String)> {
        self.failure.as_ref()
    }

    /// Once, after the handshake: the subject of the client's certificate.
    pub fn take_client_subject(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.subject_pending) {
            return None;
        }
        let cert = self.conn.peer_certificates()?.first()?;
        subject::subject(cert.as_ref())
    }

    /// Takes bytes of the TLS stream that were read from the socket before it
    /// (what followed a PROXY header) and acts on them as a read would: the
    /// handshake's replies are sent, a failure is recorded.
    pub fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.conn.read_tls(&mut bytes)? == 0 {
                break;
            }
            let handshaking = self.conn.is_handshaking();
            if let Err(err) = self.conn.process_new_packets() {
                if handshaking {
                    self.failure = Some((TlsFailure::of(&err), err.to_string()));
                }
                let _ = self.conn.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
            if handshaking && !self.conn.is_handshaking() {
                self.subject_pending = true;
            }
        }
        match self.flush() {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => Err(err),
            _ => Ok(()),
        }
    }

    /// Plaintext, as much as fits in `buf` or the socket has. `Ok(0)` is the end
    /// of the stream (with or without the peer's close_notify).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            let Some(space) = buf.get_mut(filled..) else {
                return Ok(filled);
            };
            if space.is_empty() {
                return Ok(filled);
            }
            match self.conn.reader().read(space) {
                // The peer's close_notify.
                Ok(0) => {
                    self.eof = true;
                    return Ok(filled);
                }
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: an end of stream like any other.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    return Ok(filled);
                }
                Err(err) => return Err(err),
            }
            if self.eof {
                return Ok(filled);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => {
                    self.eof = true;
                    if self.conn.is_handshaking() && self.failure.is_none() {
                        self.failure = Some((
                            TlsFailure::Closed,
                            "closed by the peer during the handshake".into(),
                        ));
                    }
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return if filled > 0 { Ok(filled) } else { Err(err) };
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            let handshaking = self.conn.is_handshaking();
            if let Err(err) = self.conn.process_new_packets() {
                if handshaking {
                    self.failure = Some((TlsFailure::of(&err), err.to_string()));
                }
                // The alert rustls queued for the peer, if the socket takes it.
                let _ = self.conn.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
            if handshaking && !self.conn.is_handshaking() {
                self.subject_pending = true;
            }
            // Handshake replies go out now; a full socket sends them on WRITABLE.
            match self.flush() {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Hands plaintext to rustls and sends what it can; `WouldBlock` once rustls
    /// holds its limit and the socket is full.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.flush() {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        let n = self.conn.writer().write(buf)?;
        match self.flush() {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Writes the records rustls holds until it holds none or the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Bytes that can be read at once: what the socket holds (records not yet
    /// decrypted count as their size, near enough for a drain).
    pub fn pending_bytes(&self) -> io::Result<usize> {
        self.sock.pending_bytes()
    }
}
