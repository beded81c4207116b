//! What a bench connection streams over: TCP, or a Unix stream socket
//! (`-s unix:PATH`), either with TLS (`--tls`). All are non-blocking mio sockets,
//! watched by the load thread's poll; the load code never learns which one it has.
//! A TLS connection counts as connected once its handshake is done; the handshake
//! advances each time the connect check runs on a readiness event.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// Where the bench connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Ip(SocketAddr),
    /// A Unix stream socket's path.
    Unix(PathBuf),
}

/// `--tls`: the client configuration and the name to verify.
#[derive(Clone, Debug)]
pub struct BenchTls {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// A connection's socket.
#[derive(Debug)]
pub enum BenchStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsClient>),
}

/// A non-blocking rustls client over a plain stream.
#[derive(Debug)]
pub struct TlsClient {
    conn: ClientConnection,
    sock: BenchStream,
}

impl TlsClient {
    /// Sends what rustls holds until it holds none or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// Reads records until the socket is empty, and answers them.
    fn receive(&mut self) -> io::Result<()> {
        loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    self.conn
                        .process_new_packets()
                        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                other => return other,
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    self.conn
                        .process_new_packets()
                        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.flush() {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
            _ => {}
        }
        let n = self.conn.writer().write(buf)?;
        match self.flush() {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
            _ => {}
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl BenchStream {
    /// Starts connecting without waiting (and, with `tls`, the handshake once
    /// connected).
    pub fn connect(target: &Target, tls: Option<&BenchTls>) -> io::Result<BenchStream> {
        let plain = match target {
            Target::Ip(addr) => TcpStream::connect(*addr).map(BenchStream::Tcp)?,
            Target::Unix(path) => UnixStream::connect(path).map(BenchStream::Unix)?,
        };
        let Some(tls) = tls else {
            return Ok(plain);
        };
        let conn = ClientConnection::new(Arc::clone(&tls.config), tls.name.clone())
            .map_err(io::Error::other)?;
        Ok(BenchStream::Tls(Box::new(TlsClient { conn, sock: plain })))
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            BenchStream::Tcp(s) => s.take_error(),
            BenchStream::Unix(s) => s.take_error(),
            BenchStream::Tls(t) => t.sock.take_error(),
        }
    }

    /// Whether the connect (and a TLS handshake) has completed; an error if it
    /// failed. For TLS, each call moves the handshake on as far as it can.
    pub fn connected(&mut self) -> io::Result<bool> {
        let peer = match self {
            BenchStream::Tcp(s) => s.peer_addr().map(drop),
            BenchStream::Unix(s) => s.peer_addr().map(drop),
            BenchStream::Tls(t) => {
                if !t.sock.connected()? {
                    return Ok(false);
                }
                match t.flush() {
                    Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
                    _ => {}
                }
                t.receive()?;
                match t.flush() {
                    Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
                    _ => {}
                }
                return Ok(!t.conn.is_handshaking());
            }
        };
        match peer {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Nagle off, on TCP.
    pub fn set_nodelay(&self) {
        match self {
            BenchStream::Tcp(s) => {
                let _ = s.set_nodelay(true);
            }
            BenchStream::Tls(t) => t.sock.set_nodelay(),
            BenchStream::Unix(_) => {}
        }
    }

    /// Ends our side (after close_notify, with TLS).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.shutdown(Shutdown::Write),
            BenchStream::Unix(s) => s.shutdown(Shutdown::Write),
            BenchStream::Tls(t) => {
                t.conn.send_close_notify();
                let _ = t.flush();
                t.sock.shutdown_write()
            }
        }
    }
}

impl Read for BenchStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BenchStream::Tcp(s) => s.read(buf),
            BenchStream::Unix(s) => s.read(buf),
            BenchStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for BenchStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BenchStream::Tcp(s) => s.write(buf),
            BenchStream::Unix(s) => s.write(buf),
            BenchStream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for BenchStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.register(registry, token, interest),
            BenchStream::Unix(s) => s.register(registry, token, interest),
            BenchStream::Tls(t) => t.sock.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.reregister(registry, token, interest),
            BenchStream::Unix(s) => s.reregister(registry, token, interest),
            BenchStream::Tls(t) => t.sock.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.deregister(registry),
            BenchStream::Unix(s) => s.deregister(registry),
            BenchStream::Tls(t) => t.sock.deregister(registry),
        }
    }
}
