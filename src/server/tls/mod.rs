//! TLS on the worker's own event loop: rustls is sans-IO, so a TLS connection is
//! a `Transport` like a plain one. Its socket is read into rustls (`read_tls`),
//! records are processed and the plaintext handed to `handle_tcp`; what the
//! application writes goes into rustls and out as records. No runtime, no thread:
//! the handshake advances whenever the socket has data, and its replies go out on
//! the same turn (or on the next WRITABLE edge).
//!
//! The configuration (certificate, key, client CA) is loaded at start-up, where a
//! file that does not load is a usage error naming the file, and again on SIGHUP
//! for new handshakes, where one that does not load keeps the old configuration.
//! A failed handshake closes that connection only and is counted by reason
//! (`sockpool_tls_handshake_failures_total{reason}`).

pub mod stream;
pub mod subject;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tracing::{error, info, warn};

use crate::message::Peer;

/// `--tls-cert`, `--tls-key`, `--tls-client-ca`, `--tls-handshake-timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub handshake_timeout: Duration,
}

/// Why the TLS configuration could not be loaded: one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load TLS certificate {}: {why}", .path.display())]
    Cert { path: PathBuf, why: String },
    #[error("cannot load TLS key {}: {why}", .path.display())]
    Key { path: PathBuf, why: String },
    #[error("cannot load TLS client CA {}: {why}", .path.display())]
    ClientCa { path: PathBuf, why: String },
    #[error("TLS key {} does not match certificate {}: {why}", .key.display(), .cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The server's TLS configuration: what new handshakes use, replaced whole by
/// [`reload_tls`].
#[derive(Debug)]
pub struct TlsServer {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    /// Loads the certificate chain, key and client CA.
    pub fn load(settings: TlsSettings) -> Result<TlsServer, TlsError> {
        let config = build(&settings)?;
        Ok(TlsServer {
            settings,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&current)
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// Whether a client certificate is asked for (`--tls-client-ca`).
    pub fn mutual(&self) -> bool {
        self.settings.client_ca.is_some()
    }
}

/// SIGHUP: loads the certificate and key again for new handshakes; if they do not
/// load, the old ones stay and one error is logged. Connections already
/// established keep the keys they were made with.
pub fn reload_tls(server: &TlsServer) {
    match build(&server.settings) {
        Ok(config) => {
            let mut current = server.current.write().unwrap_or_else(|e| e.into_inner());
            *current = Arc::new(config);
            info!("SIGHUP: TLS certificate and key reloaded");
        }
        Err(err) => error!("SIGHUP: {err}; keeping the TLS certificate and key in use"),
    }
}

fn build(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(&settings.cert).map_err(|why| TlsError::Cert {
        path: settings.cert.clone(),
        why,
    })?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|err| TlsError::Key {
        path: settings.key.clone(),
        why: pem_error(&err),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Cert {
            path: settings.cert.clone(),
            why: err.to_string(),
        })?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let fail = |why: String| TlsError::ClientCa {
                path: path.clone(),
                why,
            };
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path).map_err(fail)? {
                roots.add(cert).map_err(|err| fail(err.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| fail(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|err| TlsError::Mismatch {
            cert: settings.cert.clone(),
            key: settings.key.clone(),
            why: err.to_string(),
        })
}

/// Every certificate in a PEM file (a chain: the server's first).
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| pem_error(&err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(&err))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

fn pem_error(err: &rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(io) => crate::error::describe(io),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of that kind in it".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// Why a handshake failed: the `reason` label of
/// `sockpool_tls_handshake_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not finished within `--tls-handshake-timeout`.
    Timeout,
    /// `--tls-client-ca` is set and the client sent no certificate.
    NoClientCertificate,
    /// A certificate that does not verify (unknown issuer, expired …).
    BadCertificate,
    /// The first bytes were not a TLS record: a cleartext client.
    NotTls,
    /// Anything else the peer got wrong, or an alert it sent.
    ProtocolError,
    /// The peer closed the connection before the handshake was done.
    Closed,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 6] = [
        TlsFailure::Timeout,
        TlsFailure::NoClientCertificate,
        TlsFailure::BadCertificate,
        TlsFailure::NotTls,
        TlsFailure::ProtocolError,
        TlsFailure::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::NoClientCertificate => "no_client_certificate",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::NotTls => "not_tls",
            TlsFailure::ProtocolError => "protocol_error",
            TlsFailure::Closed => "closed",
        }
    }

    /// The reason for a rustls error seen during a handshake.
    pub fn of(err: &rustls::Error) -> TlsFailure {
        use rustls::{AlertDescription, Error, InvalidMessage};
        match err {
            Error::NoCertificatesPresented => TlsFailure::NoClientCertificate,
            Error::InvalidCertificate(_) => TlsFailure::BadCertificate,
            Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateRevoked
                | AlertDescription::UnsupportedCertificate,
            ) => TlsFailure::BadCertificate,
            Error::InvalidMessage(InvalidMessage::InvalidContentType) => TlsFailure::NotTls,
            _ => TlsFailure::ProtocolError,
        }
    }
}

/// Handshake failures are warned about at most once a second (over all workers),
/// with how many were held back.
static LAST_WARNING_MS: AtomicU64 = AtomicU64::new(0);
static HELD_BACK: AtomicU64 = AtomicU64::new(0);

/// Logs a failed handshake, unless one was logged less than a second ago.
pub fn warn_failure(peer: &Peer, failure: TlsFailure, detail: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let last = LAST_WARNING_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 1000
        || LAST_WARNING_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        HELD_BACK.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let held = HELD_BACK.swap(0, Ordering::Relaxed);
    let more = if held == 0 {
        String::new()
    } else {
        format!(" ({held} more since the last warning)")
    };
    warn!(peer = %peer, reason = failure.as_str(), "TLS handshake with {peer} failed: {detail}{more}");
}
