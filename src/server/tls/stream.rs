//! One TLS connection over a plain stream, driven without blocking, on rustls's
//! unbuffered API: the connection owns no buffer while it is idle, and a read
//! costs one receive for up to the caller's whole buffer (rustls's buffered
//! `ServerConnection` receives at most 4 KiB at a time and keeps a 4 KiB buffer
//! for every connection, idle or not).
//!
//! Reading: ciphertext is received into the caller's buffer behind a gap of one
//! record's plaintext, rustls decrypts each record, and its plaintext is copied to
//! the front of the buffer. A record's plaintext is shorter than the record, so the
//! front never reaches the ciphertext still to be read. Only an incomplete record at
//! the end is kept (`incoming`), and that is freed once it has been completed.
//! Buffers too small for that (a drain's last bytes) take the same records through
//! `incoming` instead, one record's worth at a time.
//!
//! Writing: plaintext is encrypted into `outgoing` only while it cannot be sent,
//! bounded by [`TLS_BUFFER`] (a peer that does not read still cannot grow the
//! server's memory), and `outgoing` is freed once written.
//!
//! A short read no longer says by itself that the socket is empty: the transport's
//! `wants().read` says when a read should follow without a new edge.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};

use super::{TlsFailure, subject};
use crate::server::transport::Stream;

/// Ciphertext sent but not yet taken by the socket, past which writes return
/// `WouldBlock`: the outbox bounds stay the connection's, not rustls's.
const TLS_BUFFER: usize = 64 * 1024;
/// The largest TLS record on the wire: header, 2^14 bytes and the most expansion
/// either TLS version allows.
const MAX_RECORD: usize = 5 + 16 * 1024 + 256;
/// Room kept at the front of the caller's buffer for plaintext: more than one
/// record's, so the plaintext written there never overtakes the ciphertext behind.
const GAP: usize = 16 * 1024 + 256;
/// Ciphertext held between reads: a record, or a handshake message of up to
/// 64 KiB spread over records (what rustls's buffered API allows too). More is a
/// peer's error, not something to buffer.
const MAX_INCOMING: usize = 64 * 1024 + MAX_RECORD;

/// What one step of rustls over the received records came to.
#[derive(Debug, Default)]
struct Step {
    /// Bytes at the front of the records that are done with.
    discard: usize,
    /// Plaintext copied out.
    produced: usize,
    /// Nothing more can happen without more bytes from the peer.
    blocked: bool,
}

/// A server-side TLS connection over `S` (a socket; an in-memory pair in tests).
pub struct TlsStream<S = Stream> {
    conn: UnbufferedServerConnection,
    sock: S,
    /// Received ciphertext not yet done with: an incomplete record (or handshake
    /// message). Freed, not only cleared, once empty.
    incoming: Vec<u8>,
    /// Plaintext of a record that did not fit a small read, returned first by the
    /// next one. Freed once empty.
    spill: Vec<u8>,
    /// Records to send; `outgoing[sent..]` is not yet written. Freed once written.
    outgoing: Vec<u8>,
    sent: usize,
    /// The last receive filled the room it was given, so the socket may hold more
    /// without a new edge.
    more: bool,
    /// The stream has ended (the socket's end or the peer's close_notify): reads
    /// return 0 once what came before is returned.
    eof: bool,
    /// The kernel reported the peer's close: the socket holds its end even after a
    /// short receive, and no further edge will come, so reads go on until they see it
    /// (a ChangeCipherSpec and a FIN in one segment would otherwise leave a failed
    /// handshake open until its timeout).
    hung_up: bool,
    /// Kept in step with rustls, which only says so through its state.
    handshaking: bool,
    /// Why the handshake failed, once it has.
    failure: Option<(TlsFailure, String)>,
    /// The handshake just completed and the client's certificate subject has not
    /// been collected yet.
    subject_pending: bool,
}

impl<S: std::fmt::Debug> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // rustls's unbuffered connection has no `Debug`.
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("handshaking", &self.handshaking)
            .field("incoming", &self.incoming.len())
            .field("spill", &self.spill.len())
            .field("outgoing", &(self.outgoing.len() - self.sent))
            .field("more", &self.more)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl TlsStream<Stream> {
    pub fn socket(&mut self) -> &mut Stream {
        &mut self.sock
    }

    pub fn socket_ref(&self) -> &Stream {
        &self.sock
    }

    /// Bytes that can be read at once: what the socket holds (records not yet
    /// decrypted count as their size, near enough for a drain) and plaintext held
    /// back from a small read.
    pub fn pending_bytes(&self) -> io::Result<usize> {
        Ok(self.sock.pending_bytes()? + self.spill.len())
    }
}

impl<S: Read + Write> TlsStream<S> {
    pub fn new(config: Arc<ServerConfig>, sock: S) -> io::Result<TlsStream<S>> {
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream {
            conn,
            sock,
            incoming: Vec::new(),
            spill: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            more: false,
            eof: false,
            hung_up: false,
            handshaking: true,
            failure: None,
            subject_pending: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// Whether a read should follow without a new edge even after a short one:
    /// the socket may hold more, plaintext is held back, or the end has been seen
    /// but not yet returned.
    pub fn wants_read(&self) -> bool {
        self.more || self.eof || !self.spill.is_empty()
    }

    /// An event said the peer closed: read on past short receives until the end.
    pub fn set_hung_up(&mut self) {
        self.hung_up = true;
        self.more = true;
    }

    /// Whether records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.sent < self.outgoing.len()
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
    pub fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.incoming.extend_from_slice(bytes);
        self.process_incoming(&mut [])?;
        // What it held may be all the socket had: the first read looks anyway.
        self.more = true;
        self.send_now()
    }

    /// Plaintext from one receive (up to `buf`'s size, less the gap). `Ok(0)` is
    /// the end of the stream (with or without the peer's close_notify); a short
    /// read has emptied the socket unless [`wants_read`](Self::wants_read) says otherwise.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.spill.is_empty() {
            return Ok(self.take_spill(buf));
        }
        if self.eof {
            return Ok(0);
        }
        let n = if buf.len() >= GAP + self.incoming.len() + MAX_RECORD {
            self.read_direct(buf)
        } else {
            self.read_small(buf)
        }?;
        self.send_now()?;
        if n == 0 && !self.eof {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// The read path: one receive into `buf` behind the gap, records decrypted and
    /// their plaintext gathered at the front. Returns 0 when nothing came of it
    /// (the caller tells the end from `WouldBlock` by `eof`).
    fn read_direct(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let kept = std::mem::take(&mut self.incoming);
            let start = GAP;
            let mut end = GAP + kept.len();
            if let Some(slot) = buf.get_mut(start..end) {
                slot.copy_from_slice(&kept);
            }
            drop(kept);
            let room = buf.get_mut(end..).unwrap_or_default();
            let offered = room.len();
            let mut ended = false;
            match self.sock.read(room) {
                Ok(0) => ended = true,
                Ok(n) => {
                    end += n;
                    self.more = n == offered || self.hung_up;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.more = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => self.more = true,
                Err(err) => return Err(err),
            }
            let produced = self.decrypt_in_place(buf, start, end)?;
            if ended {
                // After the records before it, which may finish the handshake.
                self.socket_ended();
            }
            if produced > 0 || self.eof || !self.more {
                return Ok(produced);
            }
            // The receive filled the buffer with records that held no plaintext
            // (empty records, key updates): read on.
        }
    }

    /// Runs the records in `buf[start..end]` through rustls, the plaintext of
    /// each copied to the front of `buf`; what is left of an incomplete record is
    /// kept in `incoming`.
    fn decrypt_in_place(
        &mut self,
        buf: &mut [u8],
        mut start: usize,
        end: usize,
    ) -> io::Result<usize> {
        let mut produced = 0;
        // Until rustls is blocked, not merely until the records are used up: it may
        // still have handshake records to encode.
        while !self.eof {
            let (front, records) = buf.split_at_mut(start);
            let records = records
                .get_mut(..end.saturating_sub(start))
                .unwrap_or_default();
            let out = front.get_mut(produced..).unwrap_or_default();
            let step = self.step(records, out)?;
            start += step.discard;
            produced += step.produced;
            if step.blocked {
                break;
            }
        }
        if start < end && !self.eof {
            self.keep(buf.get(start..end).unwrap_or_default())?;
        }
        Ok(produced)
    }

    /// The read path for a buffer too small to receive into (a drain's last
    /// bytes): records go through `incoming`, one record's worth at a time.
    fn read_small(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (produced, full) = self.process_incoming(buf)?;
            if produced > 0 || self.eof {
                self.more |= full;
                return Ok(produced);
            }
            let len = self.incoming.len();
            self.incoming.resize(len + MAX_RECORD, 0);
            let got = self
                .sock
                .read(self.incoming.get_mut(len..).unwrap_or_default());
            self.incoming.truncate(len + *got.as_ref().unwrap_or(&0));
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            match got {
                Ok(0) => self.socket_ended(),
                Ok(n) => self.more = n == MAX_RECORD || self.hung_up,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.more = false;
                    return Ok(0);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs the records in `incoming` through rustls, their plaintext into `out`
    /// (what does not fit into `spill`), until they are used up or `out` is full.
    /// Returns the plaintext written and whether it stopped because `out` was full.
    fn process_incoming(&mut self, out: &mut [u8]) -> io::Result<(usize, bool)> {
        let mut records = std::mem::take(&mut self.incoming);
        let mut start = 0;
        let mut produced = 0;
        let mut full = false;
        while !self.eof {
            if produced == out.len() && !out.is_empty() {
                full = true;
                break;
            }
            let step = self.step(
                records.get_mut(start..).unwrap_or_default(),
                out.get_mut(produced..).unwrap_or_default(),
            )?;
            start += step.discard;
            produced += step.produced;
            if step.blocked {
                break;
            }
        }
        if !self.eof {
            records.drain(..start.min(records.len()));
            self.incoming = records;
            self.check_incoming()?;
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
        }
        Ok((produced, full))
    }

    /// Keeps the bytes of an incomplete record (or handshake message) for the
    /// next read, in a buffer of their size.
    fn keep(&mut self, rest: &[u8]) -> io::Result<()> {
        self.incoming = rest.to_vec();
        self.check_incoming()
    }

    fn check_incoming(&mut self) -> io::Result<()> {
        if self.incoming.len() <= MAX_INCOMING {
            return Ok(());
        }
        let why = format!(
            "more than {MAX_INCOMING} bytes without a complete TLS record or handshake message"
        );
        if self.handshaking && self.failure.is_none() {
            self.failure = Some((TlsFailure::ProtocolError, why.clone()));
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, why))
    }

    /// One call into rustls over `records` (the front of what was received and not
    /// yet discarded), acting on the state it reaches: application data is copied
    /// into `out` (the rest of a record that does not fit goes to `spill`),
    /// handshake records are encoded into `outgoing`, the peer's close_notify ends
    /// the stream.
    fn step(&mut self, records: &mut [u8], out: &mut [u8]) -> io::Result<Step> {
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(records);
        let mut step = Step {
            discard,
            ..Step::default()
        };
        match state {
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                while let Some(record) = traffic.next_record() {
                    let record =
                        record.map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
                    step.discard += record.discard;
                    let payload = record.payload;
                    let fit = payload.len().min(out.len().saturating_sub(step.produced));
                    let (now, later) = payload.split_at(fit);
                    if let Some(slot) = out.get_mut(step.produced..step.produced + fit) {
                        slot.copy_from_slice(now);
                    }
                    step.produced += fit;
                    self.spill.extend_from_slice(later);
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                append(&mut self.outgoing, 1024, |room| {
                    encode_into(&mut encode, room)
                })?;
            }
            // What was encoded is in `outgoing`, sent by `send_now` or on WRITABLE.
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                step.blocked = true;
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                self.eof = true;
                step.blocked = true;
            }
            Ok(other) => {
                // Early data is not enabled, so nothing else can come.
                let why = format!("unexpected TLS state {other:?}");
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
            Err(err) => {
                let rest = records.get_mut(discard..).unwrap_or_default();
                return Err(self.fail(err, rest));
            }
        }
        if self.handshaking && !self.conn.is_handshaking() {
            self.handshaking = false;
            self.subject_pending = true;
        }
        Ok(step)
    }

    /// rustls refused what the peer sent: a failed handshake is recorded, and
    /// the alert rustls queued is sent if the socket takes it. `rest` is what
    /// follows the bytes rustls is done with: its handshake deframer may still
    /// point into them, so they are what it is shown again (an empty slice would
    /// not match what it expects, and rustls would panic).
    fn fail(&mut self, err: rustls::Error, rest: &mut [u8]) -> io::Error {
        if self.handshaking && self.failure.is_none() {
            self.failure = Some((TlsFailure::of(&err), err.to_string()));
        }
        // rustls hands out a queued record (the alert, queued alone: everything
        // before it was taken) before it looks at any input again. Once only: a
        // second call would read the offending bytes again, and alert again.
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) =
            self.conn.process_tls_records(rest).state
        {
            let _ = append(&mut self.outgoing, 256, |room| {
                encode_into(&mut encode, room)
            });
        }
        let _ = self.flush();
        io::Error::new(io::ErrorKind::InvalidData, err)
    }

    /// The socket's end: the stream's too. During the handshake that is a failure.
    fn socket_ended(&mut self) {
        self.eof = true;
        self.more = false;
        if self.handshaking && self.failure.is_none() {
            self.failure = Some((
                TlsFailure::Closed,
                "closed by the peer during the handshake".into(),
            ));
        }
    }

    /// Plaintext held back from a small read.
    fn take_spill(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.spill.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..n), self.spill.get(..n)) {
            to.copy_from_slice(from);
        }
        self.spill.drain(..n);
        if self.spill.is_empty() {
            self.spill = Vec::new();
        }
        n
    }

    /// Encrypts up to what the outgoing bound allows and sends what the socket
    /// takes; `WouldBlock` once the bound is reached and the socket is full.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_now()?;
        let pending = self.outgoing.len() - self.sent;
        if pending >= TLS_BUFFER && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let take = buf
            .get(..buf.len().min(TLS_BUFFER - pending))
            .unwrap_or_default();
        if self.sent > 0 {
            // Only what is still to be written stays: the bound holds for the buffer.
            self.outgoing.drain(..self.sent);
            self.sent = 0;
        }
        self.encrypt(take)?;
        self.send_now()?;
        Ok(take.len())
    }

    /// Appends `plaintext`, encrypted, to `outgoing`.
    fn encrypt(&mut self, plaintext: &[u8]) -> io::Result<()> {
        // Records of up to 2^14 bytes, each with at most 29 bytes of overhead.
        let guess = plaintext.len() + (plaintext.len() / (16 * 1024) + 1) * 64;
        // A few states at most come first (a handshake record to encode, the
        // peer's close_notify seen once more).
        for _ in 0..8 {
            let state = self.conn.process_tls_records(&mut []).state;
            match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    return append(&mut self.outgoing, guess, |room| {
                        traffic.encrypt(plaintext, room).map_err(|err| match err {
                            EncryptError::InsufficientSize(size) => Short::Need(size.required_size),
                            other => Short::Failed(other.to_string()),
                        })
                    })
                    .map(drop);
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    append(&mut self.outgoing, 1024, |room| {
                        encode_into(&mut encode, room)
                    })?;
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::PeerClosed) => {}
                Ok(other) => {
                    let why = format!("cannot send in TLS state {other:?}");
                    return Err(io::Error::other(why));
                }
                Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
            }
        }
        Err(io::Error::other("TLS connection did not become writable"))
    }

    /// Sends what the socket takes now; a full socket sends the rest on WRITABLE.
    fn send_now(&mut self) -> io::Result<()> {
        match self.flush() {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => Err(err),
            _ => Ok(()),
        }
    }

    /// Writes the records waiting until none is left or the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        while let Some(rest) = self.outgoing.get(self.sent..).filter(|r| !r.is_empty()) {
            match self.sock.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if self.sent > 0 || self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Ok(())
    }
}

/// Why an encoder wrote nothing into the room it was given.
enum Short {
    /// It needs this much room.
    Need(usize),
    Failed(String),
}

/// Lets `fill` write at the end of `out` into new room of `guess` bytes, or of
/// what it then asks for. Returns what it wrote.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, Short>,
) -> io::Result<usize> {
    let mut room = guess;
    for _ in 0..2 {
        let len = out.len();
        out.resize(len + room, 0);
        let filled = fill(out.get_mut(len..).unwrap_or_default());
        match filled {
            Ok(n) => {
                out.truncate(len + n);
                return Ok(n);
            }
            Err(Short::Need(needed)) => {
                out.truncate(len);
                room = needed;
            }
            Err(Short::Failed(why)) => {
                out.truncate(len);
                return Err(io::Error::other(why));
            }
        }
    }
    Err(io::Error::other("TLS record larger than rustls said"))
}

/// A handshake record into `room`.
fn encode_into(
    encode: &mut EncodeTlsData<'_, ServerConnectionData>,
    room: &mut [u8],
) -> Result<usize, Short> {
    match encode.encode(room) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Err(Short::Need(required_size))
        }
        // Encoded already: nothing more to write.
        Err(EncodeError::AlreadyEncoded) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::{Arc, OnceLock};

    use proptest::prelude::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    use super::{MAX_RECORD, TLS_BUFFER, TlsStream};
    use crate::server::tls::TlsFailure;
    use crate::server::transport::memory::Memory;

    /// The worker's read buffer: big enough for the direct path.
    const BIG: usize = 256 * 1024;

    /// The server's configuration, and a client's for TLS 1.3 and for TLS 1.2.
    fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>, Arc<ClientConfig>) {
        type Configs = (Arc<ServerConfig>, Arc<ClientConfig>, Arc<ClientConfig>);
        static CONFIGS: OnceLock<Configs> = OnceLock::new();
        CONFIGS.get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            let der = CertificateDer::from(cert.der().to_vec());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![der.clone()],
                    PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap();
            server.send_tls13_tickets = 0;
            let mut roots = RootCertStore::empty();
            roots.add(der).unwrap();
            let client = |version: &'static rustls::SupportedProtocolVersion| {
                let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_protocol_versions(&[version])
                    .unwrap()
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth();
                Arc::new(config)
            };
            (
                Arc::new(server),
                client(&rustls::version::TLS13),
                client(&rustls::version::TLS12),
            )
        })
    }

    /// A server over memory and a rustls client, through their handshake.
    fn pair() -> (TlsStream<Memory>, ClientConnection) {
        pair_over(false)
    }

    /// The same, over TLS 1.2 if `tls12`.
    fn pair_over(tls12: bool) -> (TlsStream<Memory>, ClientConnection) {
        let (server, tls13, older) = configs();
        let client = if tls12 { older } else { tls13 };
        let mut tls = TlsStream::new(Arc::clone(server), Memory::new(b"")).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(Arc::clone(client), name).unwrap();
        let mut buf = vec![0; BIG];
        for _ in 0..10 {
            if !client.is_handshaking() && !tls.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            tls.sock.input.extend(wire);
            let err = tls.read(&mut buf).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
            let out = std::mem::take(&mut tls.sock.output);
            let mut out = &out[..];
            while !out.is_empty() {
                client.read_tls(&mut out).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        assert!(!tls.is_handshaking() && !client.is_handshaking());
        (tls, client)
    }

    /// What the client sends for `plaintext`, as records on the wire.
    fn records(client: &mut ClientConnection, plaintext: &[u8]) -> Vec<u8> {
        client.writer().write_all(plaintext).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// Reads with `size`-byte buffers until the stream ends or would block with
    /// its input used up (a socket's input that arrives in pieces raises an edge
    /// for each, which is another read).
    fn read_all(tls: &mut TlsStream<Memory>, size: usize, into: &mut Vec<u8>) -> bool {
        let mut buf = vec![0; size];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if tls.sock.input.is_empty() {
                        return false;
                    }
                }
                Err(err) => panic!("read failed: {err}"),
            }
        }
    }

    /// The connection holds no buffer of its own.
    fn holds_nothing(tls: &TlsStream<Memory>) {
        assert_eq!(tls.incoming.capacity(), 0, "incoming kept");
        assert_eq!(tls.spill.capacity(), 0, "spill kept");
        assert_eq!(tls.outgoing.capacity(), 0, "outgoing kept");
    }

    #[test]
    fn an_idle_connection_holds_no_buffer() {
        let (mut tls, mut client) = pair();
        holds_nothing(&tls);
        tls.sock.input.extend(records(&mut client, b"hello\n"));
        let mut got = Vec::new();
        assert!(!read_all(&mut tls, BIG, &mut got));
        assert_eq!(got, b"hello\n");
        holds_nothing(&tls);
    }

    #[test]
    fn a_partial_record_is_kept_and_completed() {
        for (size, tls12) in [(BIG, false), (100, false), (BIG, true), (100, true)] {
            let (mut tls, mut client) = pair_over(tls12);
            let wire = records(&mut client, b"one line\n");
            let (head, last) = wire.split_at(wire.len() - 1);
            tls.sock.input.extend(head);
            let mut got = Vec::new();
            assert!(!read_all(&mut tls, size, &mut got));
            assert!(got.is_empty());
            assert_eq!(tls.incoming.len(), head.len());
            tls.sock.input.extend(last);
            assert!(!read_all(&mut tls, size, &mut got));
            assert_eq!(got, b"one line\n");
            holds_nothing(&tls);
        }
    }

    #[test]
    fn records_split_at_every_byte_give_the_same_plaintext() {
        let (_, mut client) = pair();
        let mut plaintext = Vec::new();
        let mut wire = Vec::new();
        for line in [&b"first\n"[..], b"second line\n", b"third"] {
            plaintext.extend_from_slice(line);
            wire.extend(records(&mut client, line));
        }
        // Each split needs a connection at the same point of its key stream.
        for cut in 0..=wire.len() {
            for size in [BIG, 7] {
                let (mut tls, mut client) = pair();
                let wire = [b"first\n".as_slice(), b"second line\n", b"third"]
                    .iter()
                    .flat_map(|line| records(&mut client, line))
                    .collect::<Vec<u8>>();
                let mut got = Vec::new();
                tls.sock.input.extend(&wire[..cut]);
                read_all(&mut tls, size, &mut got);
                tls.sock.input.extend(&wire[cut..]);
                read_all(&mut tls, size, &mut got);
                assert_eq!(got, plaintext, "cut at {cut}, reads of {size}");
                holds_nothing(&tls);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Records of any size, arriving in pieces of any size, read with buffers
        /// of any size, give the plaintext sent, in order.
        #[test]
        fn any_split_gives_the_same_plaintext(
            writes in proptest::collection::vec(1usize..40_000, 1..5),
            pieces in proptest::collection::vec(1usize..50_000, 1..20),
            size in prop_oneof![Just(BIG), 1usize..40_000],
            chunk in prop_oneof![Just(usize::MAX), 1usize..20_000],
            tls12 in any::<bool>(),
        ) {
            let (mut tls, mut client) = pair_over(tls12);
            tls.sock.chunk = chunk;
            let mut plaintext = Vec::new();
            let mut wire = Vec::new();
            for (i, len) in writes.iter().enumerate() {
                let part: Vec<u8> = (0..*len).map(|j| (i * 7 + j) as u8).collect();
                wire.extend(records(&mut client, &part));
                plaintext.extend(part);
            }
            client.send_close_notify();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut ended = false;
            for piece in pieces.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*piece).min(rest.len()));
                tls.sock.input.extend(now);
                rest = later;
                ended = read_all(&mut tls, size, &mut got);
            }
            prop_assert!(ended, "close_notify not seen");
            prop_assert_eq!(got, plaintext);
        }
    }

    #[test]
    fn the_end_of_the_socket_ends_the_stream() {
        let (mut tls, mut client) = pair();
        tls.sock.input.extend(records(&mut client, b"last\n"));
        tls.sock.eof = true;
        let mut got = Vec::new();
        assert!(read_all(&mut tls, BIG, &mut got));
        assert_eq!(got, b"last\n");
    }

    #[test]
    fn a_cleartext_client_fails_the_handshake() {
        let (server, _, _) = configs();
        let mut tls = TlsStream::new(Arc::clone(server), Memory::new(b"hello there\n")).unwrap();
        let mut buf = vec![0; BIG];
        let err = tls.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(tls.failure().map(|f| f.0), Some(TlsFailure::NotTls));
        // Its alert went out: a record of type alert (21).
        assert_eq!(tls.sock.output.first(), Some(&21));
    }

    #[test]
    fn closed_during_the_handshake_is_a_failure() {
        let (server, _, _) = configs();
        let mut tls = TlsStream::new(Arc::clone(server), Memory::new(b"")).unwrap();
        tls.sock.eof = true;
        assert_eq!(tls.read(&mut [0; 100]).unwrap(), 0);
        assert_eq!(tls.failure().map(|f| f.0), Some(TlsFailure::Closed));
    }

    #[test]
    fn writes_reach_the_client_and_stop_at_the_bound() {
        let (mut tls, mut client) = pair();
        assert_eq!(tls.write(b"reply\n").unwrap(), 6);
        holds_nothing(&tls);
        let out = std::mem::take(&mut tls.sock.output);
        client.read_tls(&mut &out[..]).unwrap();
        client.process_new_packets().unwrap();
        let mut got = [0; 6];
        client.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"reply\n");

        // A client that reads nothing: the socket takes nothing, writes stop.
        tls.sock.room = 0;
        let data = vec![b'x'; 10_000];
        let mut taken = 0;
        while let Ok(n) = tls.write(&data) {
            taken += n;
            assert!(taken <= 2 * TLS_BUFFER, "writes never stopped");
        }
        assert!(tls.outgoing.len() <= TLS_BUFFER + MAX_RECORD);
        assert!(tls.wants_write());
        tls.sock.room = usize::MAX;
        tls.flush().unwrap();
        holds_nothing(&tls);
    }
}
