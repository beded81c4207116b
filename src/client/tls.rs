//! The client's TLS (`--tls`): a rustls client connection over a blocking TCP or
//! Unix stream, shared by the thread that sends and the one that prints replies.
//! The handshake is done before either starts, so a certificate that does not
//! verify is one clear error and exit 1. After it, the reply thread reads raw
//! bytes without holding the connection (a blocking read must never stop a
//! send) and feeds them to rustls under a short lock; a send turns plaintext into
//! records under the lock and writes them outside it.
//!
//! Trust: `--tls-ca PATH`, or the system's roots through `rustls-native-certs`
//! (the CA bundle the OS keeps, e.g. /etc/ssl/certs; the platform verifier crate
//! would add little on Linux and pull in more), or none with `--tls-insecure`.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::link::Link;

/// `--tls` and its companions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust this CA instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry [default: the host of `-s`].
    pub server_name: Option<String>,
    /// A client certificate and key, for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Accept any certificate (a warning is printed).
    pub insecure: bool,
}

/// Builds the client configuration; an error is one line naming the file.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?;
    let builder = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Insecure(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &options.ca {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|err| {
                        format!(
                            "cannot load --tls-ca {}: {}",
                            path.display(),
                            pem_error(&err)
                        )
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "cannot load --tls-ca {}: no certificate in it",
                        path.display()
                    ));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|err| {
                    format!(
                        "cannot load --tls-cert {}: {}",
                        cert.display(),
                        pem_error(&err)
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                format!(
                    "cannot load --tls-key {}: {}",
                    key.display(),
                    pem_error(&err)
                )
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|err| match err {
                    rustls::Error::InconsistentKeys(_) => {
                        format!("--tls-cert and --tls-key do not go together: {err}")
                    }
                    // Not the pair: the certificate itself (an X.509 v1 one, say).
                    other => format!("cannot use --tls-cert {}: {other}", cert.display()),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A PEM file's error as one line: `no such file or directory`, not rustls's Debug.
fn pem_error(err: &rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(io) => crate::error::describe(io),
        other => other.to_string(),
    }
}

/// The name to verify: `--tls-server-name`, else the host of `server`
/// (`localhost` for a Unix socket).
pub fn server_name(options: &TlsOptions, server: &str) -> Result<ServerName<'static>, String> {
    let name = match &options.server_name {
        Some(name) => name.clone(),
        None if server.starts_with("unix:") => "localhost".to_string(),
        None => {
            let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        }
    };
    ServerName::try_from(name.clone()).map_err(|_| format!("'{name}' is not a TLS server name"))
}

/// A TLS connection shared by the sending and the reply threads.
#[derive(Debug)]
pub struct TlsLink {
    conn: Arc<Mutex<ClientConnection>>,
    sock: Box<Link>,
}

impl TlsLink {
    /// Does the handshake over `sock` (within `timeout`); a failure names why.
    pub fn handshake(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        mut sock: Link,
        timeout: Duration,
    ) -> io::Result<TlsLink> {
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        sock.set_timeouts(Some(timeout))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|err| {
                io::Error::new(err.kind(), format!("the TLS handshake failed: {err}"))
            })?;
        }
        sock.set_timeouts(None)?;
        Ok(TlsLink {
            conn: Arc::new(Mutex::new(conn)),
            sock: Box::new(sock),
        })
    }

    pub fn try_clone(&self) -> io::Result<TlsLink> {
        Ok(TlsLink {
            conn: Arc::clone(&self.conn),
            sock: Box::new(self.sock.try_clone()?),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClientConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records rustls wants sent, taken out under the lock.
    fn records(conn: &mut ClientConnection) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        Ok(out)
    }

    /// close_notify, then the end of our side of the stream. The server closes
    /// as soon as it has handled `!Disconnect`, which may be before these reach
    /// it: a connection it has already closed is not an error here.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        let records = {
            let mut conn = self.lock();
            conn.send_close_notify();
            Self::records(&mut conn)?
        };
        let sent = self
            .sock
            .write_all(&records)
            .and_then(|()| self.sock.shutdown_write());
        match sent {
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::BrokenPipe
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }
}

impl Read for TlsLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut raw = [0u8; 16 * 1024];
        loop {
            {
                let mut conn = self.lock();
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(err) => return Err(err),
                }
            }
            let n = self.sock.read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut conn = self.lock();
            let mut input = raw.get(..n).unwrap_or_default();
            while !input.is_empty() {
                conn.read_tls(&mut input)?;
                conn.process_new_packets()
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            }
        }
    }
}

impl Write for TlsLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (n, records) = {
            let mut conn = self.lock();
            let n = conn.writer().write(buf)?;
            (n, Self::records(&mut conn)?)
        };
        self.sock.write_all(&records)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `--tls-insecure`: any certificate is accepted; the handshake's signatures are
/// still checked, so the connection is at least consistent.
#[derive(Debug)]
struct Insecure(Arc<CryptoProvider>);

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
