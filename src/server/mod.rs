//! The server: binds, starts the sink and the worker pool (which accept for
//! themselves), waits for a signal, drains, and writes the summary.

pub mod acceptor;
pub mod batch;
pub mod broker;
pub mod conn;
pub mod idle;
pub mod inbox;
pub mod metrics;
pub mod mode;
pub mod pool;
pub mod proxied;
pub mod ready;
pub mod reload;
pub mod shutdown;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod udp;
pub mod unixgram;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::frame::FrameConfig;
use crate::net::NetError;
use crate::net::fdlimit;
use crate::net::filter::{ConnLimits, Filter};
use crate::net::listen::{ListenConfig, Listeners, bind_all};
use crate::net::unix::{SocketFile, SocketFiles, UnixBound, UnixPath, bind_unix};
use crate::output::{Format, Target};

use self::acceptor::{AcceptPolicy, AcceptShared, Listener};
use self::mode::Mode;
use self::pool::{BeforeExit, PoolConfig, ThreadPool};
use self::reload::Reloads;
use self::stats::Stats;
use self::tls::{TlsError, TlsServer, TlsSettings};

/// A validated server configuration (built by `cli::server`).
#[derive(Clone, Debug)]
pub struct Config {
    /// The IP addresses of `--listen`.
    pub listen: Vec<SocketAddr>,
    /// Its `unix:PATH` and `unixgram:PATH` addresses, served whatever
    /// `--tcp-only`/`--udp-only` say (the scheme says which kind).
    pub unix: Vec<UnixPath>,
    /// `--unix-mode`: permissions of the socket files created.
    pub unix_mode: u32,
    pub tcp: bool,
    pub udp: bool,
    pub workers: usize,
    pub mode: Mode,
    pub frame: FrameConfig,
    pub format: Format,
    /// `--output`: stdout, a file, …
    pub output: Target,
    /// `-q`: echo does not print what it returns.
    pub quiet: bool,
    pub drain_timeout: Duration,
    pub backlog: i32,
    /// Concurrent TCP connections; `None`: derived from the open-files limit.
    pub max_connections: Option<usize>,
    /// Concurrent TCP connections from one address; `None`: unlimited.
    pub max_per_ip: Option<usize>,
    /// Close TCP connections silent this long; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `--allow`/`--deny`.
    pub filter: Filter,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// SO_RCVBUF for UDP sockets and TCP listeners; `None`: the OS default.
    pub recv_buffer: Option<usize>,
    /// TCP keepalive idle time on accepted connections; `None`: off.
    pub keepalive: Option<Duration>,
    /// `--reuse-port`: share the address with other processes (SO_REUSEPORT).
    pub reuse_port: bool,
    /// `--proxy-protocol`: who may connect (`--proxy-from`; an empty list admits
    /// everyone); `None`: connections carry no PROXY header.
    pub proxy_from: Option<Filter>,
    /// `--tls-cert` and friends: TCP and Unix stream connections speak TLS.
    pub tls: Option<TlsSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            unix: Vec::new(),
            unix_mode: 0o660,
            tcp: true,
            udp: true,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            mode: Mode::Print,
            frame: FrameConfig::default(),
            format: Format::Text,
            output: Target::Stdout,
            quiet: false,
            drain_timeout: Duration::from_secs(5),
            backlog: 1024,
            max_connections: None,
            max_per_ip: None,
            idle_timeout: Some(Duration::from_secs(300)),
            filter: Filter::default(),
            metrics: None,
            recv_buffer: None,
            keepalive: None,
            reuse_port: false,
            proxy_from: None,
            tls: None,
        }
    }
}

/// Bytes of formatted output queued for the writer before workers stop reading TCP.
const SINK_CAPACITY: usize = 4 * 1024 * 1024;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot use the sockets passed by socket activation: {0}")]
    Activation(#[from] crate::net::activation::ActivationError),
    #[error("cannot open output {target}: {}", crate::net::describe(.source))]
    Output {
        target: String,
        source: std::io::Error,
    },
    #[error("{}", unacknowledged_text(*.unacknowledged, .timeout))]
    Unacknowledged {
        unacknowledged: u64,
        timeout: Duration,
    },
    #[error("cannot {action}: {}", crate::net::describe(.source))]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    /// A certificate or key that does not load: bad usage, exit 2.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ServerError {
    /// 2 for what the user must fix in the command line or its files, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Tls(_) => 2,
            _ => 1,
        }
    }
}

fn unacknowledged_text(unacknowledged: u64, timeout: &Duration) -> String {
    if unacknowledged == 0 {
        // Everything published was acknowledged, but not everything was published.
        format!("output to NATS not finished within the drain timeout ({timeout:?})")
    } else {
        format!(
            "{unacknowledged} messages not acknowledged by NATS within the drain timeout ({timeout:?})"
        )
    }
}

fn io_err(action: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { action, source }
}

/// The Unix sockets, bound, each announced; the files are removed
/// when the returned [`SocketFile`]s are dropped, at the end of [`start`].
#[allow(clippy::type_complexity)]
fn bind_unix_all(
    config: &Config,
) -> Result<
    (
        Vec<std::os::unix::net::UnixListener>,
        Vec<std::os::unix::net::UnixDatagram>,
        Vec<SocketFile>,
    ),
    ServerError,
> {
    let (mut streams, mut datagrams, mut files) = (Vec::new(), Vec::new(), Vec::new());
    for addr in &config.unix {
        match bind_unix(addr, config.unix_mode, config.backlog)? {
            UnixBound::Stream(listener, file) => {
                streams.push(listener);
                files.push(file);
            }
            UnixBound::Datagram(socket, file) => {
                datagrams.push(socket);
                files.push(file);
            }
        }
        eprintln!("listening {} {}", addr.kind.scheme(), addr.path.display());
    }
    Ok((streams, datagrams, files))
}

/// The teaching project's `start`: serves until SIGINT/SIGTERM, then drains within
/// `drain_timeout` and writes the summary to stderr.
pub fn start(config: Config) -> Result<(), ServerError> {
    let workers = config.workers.max(1);
    // Before anything is bound: a certificate that does not load is bad usage.
    let tls = match config.tls.clone() {
        Some(settings) => Some(Arc::new(TlsServer::load(settings)?)),
        None => None,
    };
    let signals = shutdown::catch().map_err(io_err("watch for signals"))?;
    // Every connection costs a descriptor: take all the system lets us have.
    let nofile = fdlimit::raise_nofile().map_err(io_err("read the open-files limit"))?;
    let stats = Arc::new(Stats::new(workers));
    // A wrong path is a start-up error, before any client is let in.
    let output_error = |source| ServerError::Output {
        target: config.output.to_string(),
        source,
    };
    let output = config.output.open(&stats.output).map_err(output_error)?;
    // The socket files this process created are removed when these drop, at exit.
    let (listeners, unix_streams, unixgram, socket_files) =
        match crate::net::activation::listen_fds()? {
            // systemd's sockets replace --listen.
            Some(passed) => {
                let (listeners, unix) =
                    Listeners::from_activated(passed, |line| eprintln!("{line}"));
                let (streams, datagrams) = crate::net::unix::from_activated(unix)?;
                (listeners, streams, datagrams, SocketFiles::default())
            }
            None => {
                let listeners = bind_all(
                    &ListenConfig {
                        addrs: config.listen.clone(),
                        tcp: config.tcp,
                        udp: config.udp,
                        backlog: config.backlog,
                        udp_sockets: workers,
                        recv_buffer: config.recv_buffer,
                        reuse_port: config.reuse_port,
                    },
                    |line| eprintln!("{line}"),
                )?;
                let (streams, datagrams, files) = bind_unix_all(&config)?;
                (listeners, streams, datagrams, SocketFiles::new(files))
            }
        };
    if config.reuse_port
        && config.tcp
        && crate::net::listen::migrates_queued_connections() == Some(false)
    {
        warn!(
            "--reuse-port: net.ipv4.tcp_migrate_req is 0, so a connection that reaches this process's queue as it stops is reset instead of being handed to another process (docs/deploy.md)"
        );
    }
    // What is open now, plus each worker's poll, waker and spare still to come.
    let in_use = fdlimit::open_descriptors().unwrap_or(16) + 3 * workers as u64;
    let fd_max = fdlimit::default_max_connections(nofile, in_use);
    let max_connections = match config.max_connections {
        None => {
            info!(
                "max connections {fd_max} (open-files limit {nofile} less {} in use and {} reserved)",
                in_use,
                fdlimit::RESERVE
            );
            fd_max
        }
        Some(max) => {
            if config.tcp && max > fd_max {
                warn!(
                    "--max-connections {max} is more than the open-files limit {nofile} allows ({fd_max}); clients past that are closed for want of descriptors"
                );
            }
            max
        }
    };
    let limits = Arc::new(ConnLimits::new(max_connections, config.max_per_ip));
    let filter = Arc::new(config.filter.clone());
    if let Some(addr) = config.metrics {
        let local = metrics::serve(addr, Arc::clone(&stats), Arc::clone(&limits))?;
        eprintln!("listening metrics {local}");
    }
    let policy = AcceptPolicy {
        filter: config.filter.clone(),
        limits: Arc::clone(&limits),
        keepalive: config.keepalive,
        proxy_from: config.proxy_from.clone(),
    };
    // One listener per address, which every worker watches (ARCHITECTURE.md says
    // why not one per worker); Unix stream sockets alike.
    let mut shared: Vec<Listener> = listeners
        .tcp
        .into_iter()
        .map(|l| Listener::Tcp(mio::net::TcpListener::from_std(l)))
        .collect();
    shared.extend(
        unix_streams
            .into_iter()
            .map(|l| Listener::Unix(mio::net::UnixListener::from_std(l))),
    );
    let (pool, sink) = ThreadPool::new(PoolConfig {
        workers,
        listeners: shared,
        accept: Arc::new(AcceptShared::new(policy)),
        udp: listeners.udp,
        unixgram,
        frame: config.frame,
        mode: config.mode,
        format: config.output.format(config.format),
        output,
        quiet: config.quiet,
        stats: Arc::clone(&stats),
        sink_capacity: SINK_CAPACITY,
        limits: Arc::clone(&limits),
        filter: Arc::clone(&filter),
        idle_timeout: config.idle_timeout,
        proxy_protocol: config.proxy_from.is_some(),
        tls: tls.clone(),
        before_exit: BeforeExit(Box::new(socket_files.remover())),
    })
    .map_err(|err| {
        // A destination that cannot start (NATS refusing our credentials) says why.
        if crate::output::dest::is_fatal(&err) {
            output_error(err)
        } else {
            io_err("start the worker threads")(err)
        }
    })?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let mut reloads = Reloads::default();
    if config.output.reopens() {
        let reopener = sink.reopener();
        reloads.add("reopen the output", move || reopener.reopen());
    }
    if let Some(tls) = &tls {
        let tls = Arc::clone(tls);
        reloads.add("reload the TLS certificate and key", move || {
            tls::reload_tls(&tls);
        });
    }
    shutdown::on_signal(
        signals,
        reloads,
        move || {
            let _ = stop_tx.send(());
        },
        socket_files.remover(),
    )
    .map_err(io_err("watch for signals"))?;
    info!(workers, mode = %config.mode, "serving");

    // The workers serve until the signal; each then accepts its listeners'
    // backlog, closes them and drains.
    let _ = stop_rx.recv();

    let deadline = Instant::now() + config.drain_timeout;
    let finished = pool.drain(deadline);
    let mut output_done = false;
    if finished < pool.size() {
        warn!(
            "drain timeout after {}: {} of {} workers still busy",
            crate::human::duration(config.drain_timeout),
            pool.size() - finished,
            pool.size()
        );
    } else {
        drop(pool);
        output_done = sink.finish_until(deadline);
        if !output_done {
            warn!(
                "drain timeout after {}: output not fully written",
                crate::human::duration(config.drain_timeout)
            );
        }
    }
    let totals = stats.totals();
    eprintln!("{totals}");
    // NATS: a message counts as delivered only once acknowledged.
    if let Some(nats) = totals.nats {
        let unacknowledged = nats.unacknowledged();
        if !output_done || unacknowledged > 0 {
            return Err(ServerError::Unacknowledged {
                unacknowledged,
                timeout: config.drain_timeout,
            });
        }
    }
    Ok(())
}
