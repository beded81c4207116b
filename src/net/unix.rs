//! Unix sockets: `unix:PATH` (stream) and `unixgram:PATH` (datagram) addresses,
//! binding them, and who the peer is. Calls that live here: `bind`/`listen` on a
//! path (a stale socket file is replaced, a live one is "address already in use",
//! a file that is not a socket is never touched), `chmod` to `--unix-mode`,
//! SO_PEERCRED, SO_PASSCRED, and `recvmsg` with SCM_CREDENTIALS (the raw calls
//! themselves are in `net::sys`, the one place that calls libc; no FFI crate).
//!
//! A peer is shown by its kernel-vouched credentials, `pid=PID,uid=UID`; a Unix
//! socket has no IP address, so `--allow`/`--deny`/`--max-per-ip` never apply.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::NetError;

/// Which kind of Unix socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnixKind {
    Stream,
    Datagram,
}

impl UnixKind {
    /// The scheme of its address, which is also its proto in the output.
    pub fn scheme(self) -> &'static str {
        match self {
            UnixKind::Stream => "unix",
            UnixKind::Datagram => "unixgram",
        }
    }
}

/// `unix:PATH` or `unixgram:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixPath {
    pub kind: UnixKind,
    pub path: PathBuf,
}

impl UnixPath {
    /// `None` when `value` is not a Unix address at all; an error when it is one
    /// without a path.
    pub fn parse(value: &str) -> Option<Result<UnixPath, String>> {
        let (kind, path) = if let Some(path) = value.strip_prefix("unix:") {
            (UnixKind::Stream, path)
        } else if let Some(path) = value.strip_prefix("unixgram:") {
            (UnixKind::Datagram, path)
        } else {
            return None;
        };
        if path.is_empty() {
            return Some(Err(format!(
                "'{value}' has no path: expected {}:PATH",
                kind.scheme()
            )));
        }
        Some(Ok(UnixPath {
            kind,
            path: PathBuf::from(path),
        }))
    }
}

impl fmt::Display for UnixPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.scheme(), self.path.display())
    }
}

/// A socket file this process created: removed when dropped (at exit), unless
/// something else has taken its path since.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.id
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The socket files this process created, removed when this drops (at the end of
/// `server::start`) or sooner by its [`remover`](Self::remover), for an exit that
/// skips the drops (the second signal's `process::exit`).
#[derive(Debug, Default)]
pub struct SocketFiles(Arc<Mutex<Vec<SocketFile>>>);

impl SocketFiles {
    pub fn new(files: Vec<SocketFile>) -> SocketFiles {
        SocketFiles(Arc::new(Mutex::new(files)))
    }

    /// Removes the files now, from any thread; a second call finds none left.
    pub fn remover(&self) -> impl Fn() + Send + 'static {
        let files = Arc::clone(&self.0);
        move || remove_all(&files)
    }
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        remove_all(&self.0);
    }
}

fn remove_all(files: &Mutex<Vec<SocketFile>>) {
    // A poisoned lock still holds the files: remove them all the same.
    let mut files = files
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    files.clear();
}

/// A bound Unix socket and the file it made.
#[derive(Debug)]
pub enum UnixBound {
    Stream(UnixListener, SocketFile),
    Datagram(UnixDatagram, SocketFile),
}

/// Binds `addr` (and listens, for a stream) with the file's permissions set to
/// `mode`; the socket is non-blocking and close-on-exec.
pub fn bind_unix(addr: &UnixPath, mode: u32, backlog: i32) -> Result<UnixBound, NetError> {
    let fail = |source| NetError::Listen {
        addr: addr.to_string(),
        source,
    };
    clear_stale(addr).map_err(fail)?;
    let path = &addr.path;
    let bound = match addr.kind {
        UnixKind::Stream => {
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
                .map_err(fail)?;
            let sockaddr = socket2::SockAddr::unix(path).map_err(fail)?;
            socket.bind(&sockaddr).map_err(fail)?;
            let file = created(path).map_err(fail)?;
            // Before listen(): nobody can connect while the mode is still the umask's.
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(fail)?;
            socket.listen(backlog).map_err(fail)?;
            socket.set_nonblocking(true).map_err(fail)?;
            UnixBound::Stream(UnixListener::from(std::os::fd::OwnedFd::from(socket)), file)
        }
        UnixKind::Datagram => {
            let socket = UnixDatagram::bind(path).map_err(fail)?;
            let file = created(path).map_err(fail)?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(fail)?;
            socket.set_nonblocking(true).map_err(fail)?;
            // Every datagram then carries its sender's credentials.
            super::sys::setsockopt_int(&socket, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
                .map_err(fail)?;
            UnixBound::Datagram(socket, file)
        }
    };
    Ok(bound)
}

/// The Unix sockets passed by socket activation (`net::activation`), made ready as
/// [`bind_unix`] makes its own: non-blocking, and a datagram socket passing its
/// senders' credentials. Their files belong to systemd and are never removed here.
pub fn from_activated(
    sockets: Vec<super::activation::Activated>,
) -> Result<(Vec<UnixListener>, Vec<UnixDatagram>), NetError> {
    let (mut streams, mut datagrams) = (Vec::new(), Vec::new());
    for activated in sockets {
        let super::activation::Activated::Unix { socket, fd } = activated else {
            continue;
        };
        let fail = |source| NetError::Listen {
            addr: format!("the Unix socket passed as descriptor {fd}"),
            source,
        };
        socket.set_nonblocking(true).map_err(fail)?;
        if socket.r#type().map_err(fail)? == socket2::Type::STREAM {
            streams.push(UnixListener::from(std::os::fd::OwnedFd::from(socket)));
        } else {
            let socket = UnixDatagram::from(std::os::fd::OwnedFd::from(socket));
            super::sys::setsockopt_int(&socket, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
                .map_err(fail)?;
            datagrams.push(socket);
        }
    }
    Ok((streams, datagrams))
}

fn created(path: &Path) -> io::Result<SocketFile> {
    let meta = fs::symlink_metadata(path)?;
    Ok(SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

/// Removes a socket file nobody listens on any more (a server that was killed);
/// a live socket is "address already in use", and anything that is not a socket
/// is left for `bind` to refuse.
fn clear_stale(addr: &UnixPath) -> io::Result<()> {
    let meta = match fs::symlink_metadata(&addr.path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    let probe = match addr.kind {
        UnixKind::Stream => UnixStream::connect(&addr.path).map(drop),
        UnixKind::Datagram => UnixDatagram::unbound().and_then(|s| s.connect(&addr.path)),
    };
    match probe {
        Ok(()) => Err(io::Error::from_raw_os_error(libc::EADDRINUSE)),
        Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => fs::remove_file(&addr.path),
        // A live socket of the other kind.
        Err(err) if err.raw_os_error() == Some(libc::EPROTOTYPE) => {
            Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
        }
        Err(err) => Err(err),
    }
}

/// `pid=PID,uid=UID`: how a Unix peer is shown.
pub fn credentials_text(pid: i32, uid: u32) -> String {
    format!("pid={pid},uid={uid}")
}

/// The credentials of a Unix stream's peer (SO_PEERCRED), as shown; `-` when the
/// kernel does not say.
pub fn peer_credentials<S: AsFd>(stream: &S) -> String {
    match super::sys::peer_credentials(stream) {
        Ok((pid, uid)) => credentials_text(pid, uid),
        Err(_) => "-".to_string(),
    }
}

/// One datagram received on a Unix datagram socket.
#[derive(Debug)]
pub struct UnixDatagramIn {
    /// Bytes in the buffer.
    pub len: usize,
    /// The datagram's full size (more than `len` when it was truncated).
    pub size: usize,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
    /// The sender's pid and uid (SCM_CREDENTIALS).
    pub credentials: Option<(i32, u32)>,
    /// Where replies can go, when the sender's socket has an address.
    pub sender: Option<socket2::SockAddr>,
}

/// Receives one datagram without waiting; `cmsg` is space for the credentials
/// (see [`credentials_space`]), reused from call to call.
pub fn recv_with_credentials<S: AsRawFd>(
    socket: &S,
    buf: &mut [u8],
    cmsg: &mut [u64],
) -> io::Result<UnixDatagramIn> {
    let room = buf.len();
    let (got, from) = super::sys::recv_with_credentials(socket, buf, cmsg)?;
    // An unbound sender's address is only its family: nothing to reply to.
    let sender = (from.is_unix() && !from.is_unnamed()).then_some(from);
    Ok(UnixDatagramIn {
        len: got.size.min(room),
        size: got.size,
        truncated: got.truncated,
        credentials: got.credentials,
        sender,
    })
}

/// Room for one SCM_CREDENTIALS message.
pub fn credentials_space() -> Vec<u64> {
    super::sys::credentials_space()
}

/// Sends `bytes` to `to` without waiting (the socket is non-blocking).
pub fn send_to<S: AsFd>(socket: &S, bytes: &[u8], to: &socket2::SockAddr) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(bytes, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_by_scheme() {
        assert_eq!(UnixPath::parse("127.0.0.1:80"), None);
        let stream = UnixPath::parse("unix:/tmp/s.sock").unwrap().unwrap();
        assert_eq!(stream.kind, UnixKind::Stream);
        assert_eq!(stream.to_string(), "unix:/tmp/s.sock");
        let dgram = UnixPath::parse("unixgram:rel.sock").unwrap().unwrap();
        assert_eq!(dgram.kind, UnixKind::Datagram);
        assert!(UnixPath::parse("unix:").unwrap().is_err());
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_refused_and_a_file_kept() {
        let dir = std::env::temp_dir().join(format!("sockpool-unix-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = UnixPath {
            kind: UnixKind::Stream,
            path: path.clone(),
        };
        // Stale: bound by a socket that is gone.
        drop(UnixListener::bind(&path).unwrap());
        let live = bind_unix(&addr, 0o600, 8).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = bind_unix(&addr, 0o600, 8).unwrap_err();
        assert!(err.to_string().ends_with("address already in use"), "{err}");
        drop(live);
        assert!(!path.exists(), "removed with its socket");
        fs::write(&path, b"not a socket").unwrap();
        let err = bind_unix(&addr, 0o600, 8).unwrap_err();
        assert!(err.to_string().ends_with("address already in use"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
        fs::remove_dir_all(&dir).unwrap();
    }
}
