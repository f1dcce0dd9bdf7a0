//! The listener: accept, one task per connection, graceful shutdown.
//!
//! On shutdown the listener stops accepting, every connection answers what it
//! has already received and closes, and [`run`] returns once all of them are
//! gone, so the caller can then drop the store and close the database cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::{Admission, Admit};
use crate::app::{App, AppConfig};
use crate::config::Config;
use crate::connection::{ConnSettings, serve};
use crate::hub::LocalHub;
use crate::relay::{AddressLearned, Relay};
use crate::store::{Store, StoreError};
use crate::tls::{Tls, TlsError};

/// Finds a peer that vanished without closing TCP within `dead_peer`:
/// keepalive probes an idle connection (first after 2/5 of it, then every
/// 1/5, given up after 3), and data left unacknowledged for 9/10 of it (pings
/// to a vanished peer on an event connection) aborts the connection too.
fn configure_socket(stream: &TcpStream, dead_peer: Duration) {
    let sock = SockRef::from(stream);
    let ka = TcpKeepalive::new()
        .with_time((dead_peer * 2 / 5).max(Duration::from_secs(1)))
        .with_interval((dead_peer / 5).max(Duration::from_secs(1)))
        .with_retries(3);
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set keepalive");
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(dead_peer * 9 / 10)) {
        tracing::debug!(error = %e, "cannot set the TCP user timeout");
    }
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set nodelay");
    }
}

/// A listening socket and, for a TLS listener, its handshake acceptor.
pub struct Listener {
    /// The socket.
    pub tcp: TcpListener,
    /// Present on a TLS listener.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("tcp", &self.tcp).field("tls", &self.tls.is_some()).finish()
    }
}

/// What every accept loop shares.
struct Shared {
    app: Arc<App>,
    settings: Arc<ConnSettings>,
    admission: Arc<Admission>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    next_id: AtomicU64,
}

/// Accepts and serves connections on every listener until `shutdown`
/// completes, then waits for every connection task to finish. The
/// connection cap (see `admission::Admission`) is shared by all listeners.
pub async fn run(
    listeners: Vec<Listener>,
    app: Arc<App>,
    settings: ConnSettings,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Shared {
        app,
        settings: Arc::new(settings),
        admission: Admission::new(max_connections),
        cancel: CancellationToken::new(),
        tracker: TaskTracker::new(),
        next_id: AtomicU64::new(0),
    };
    let loops = futures::future::join_all(listeners.iter().map(|l| accept_loop(l, &shared)));
    tokio::select! {
        _ = loops => {}
        _ = shutdown => tracing::info!("shutting down: no new connections"),
    }
    drop(listeners);
    shared.cancel.cancel();
    shared.tracker.close();
    shared.tracker.wait().await;
    tracing::info!("all connections closed");
}

async fn accept_loop(listener: &Listener, shared: &Shared) {
    loop {
        let (stream, peer) = match listener.tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like (the reserve makes
                // this rare): back off, don't spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The address the client reached us on: where our relay is, for it.
        let local = stream.local_addr().ok().map(|a| a.ip());
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        // Its own token, so that it can be closed to make room.
        let cancel = shared.cancel.child_token();
        let admit = shared.admission.admit(id, &cancel);
        if matches!(admit, Admit::Refuse) {
            tracing::debug!("connections full; refusing one");
            drop(stream);
            continue;
        }
        configure_socket(&stream, shared.settings.dead_peer);
        let span = tracing::debug_span!("conn", id, tls = listener.tls.is_some());
        tracing::trace!(parent: &span, %peer, "accepted");
        let (app, settings) = (Arc::clone(&shared.app), Arc::clone(&shared.settings));
        let admission = Arc::clone(&shared.admission);
        let tls = listener.tls.clone();
        shared.tracker.spawn(
            async move {
                let ticket = match admit {
                    Admit::Now(ticket) => ticket,
                    Admit::Wait(waiting) => match admission.wait(id, &cancel, waiting).await {
                        Some(ticket) => ticket,
                        None => return,
                    },
                    Admit::Refuse => return,
                };
                match tls {
                    None => serve(stream, peer.ip(), local, app, settings, cancel, ticket).await,
                    Some(acceptor) => {
                        // A handshake gets as long as a frame: a client that
                        // stalls in it holds nothing for longer than that.
                        let handshake = tokio::time::timeout(settings.frame_timeout, acceptor.accept(stream));
                        let stream = tokio::select! {
                            r = handshake => r,
                            _ = cancel.cancelled() => return,
                        };
                        match stream {
                            Ok(Ok(stream)) => serve(stream, peer.ip(), local, app, settings, cancel, ticket).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error("cannot open the database {path}: {source}")]
    Store {
        /// The file, or the PostgreSQL address without its password.
        path: std::path::PathBuf,
        /// Why.
        source: StoreError,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The database's folder could not be made (an embedded server).
    #[error("cannot make the folder {path}: {source}")]
    Folder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node could not join its cluster (`--nats`).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::BusError),
    /// Neither listener is on.
    #[error("no listener: the plain listener is off and no TLS listener is configured")]
    NoListener,
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound server, ready to [`Server::serve`].
#[derive(Debug)]
pub struct Server {
    plain: Option<TcpListener>,
    tls: Option<(TcpListener, Tls)>,
    /// The relay's sockets, one per worker (see [`crate::relay_io`]).
    udp: Vec<std::net::UdpSocket>,
    relay_gather_us: u64,
    app: Arc<App>,
    learned: mpsc::UnboundedReceiver<AddressLearned>,
    settings: ConnSettings,
    max_connections: usize,
}

async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, bound))
}

impl Server {
    /// Binds the TCP listeners (plain and/or TLS) and the UDP relay socket,
    /// loads or generates the TLS certificate, and builds the services over
    /// `store`.
    pub async fn bind(config: &Config, store: Arc<dyn Store>) -> Result<Server, StartError> {
        let tls = match config.tls_source()? {
            Some(source) => Some(Tls::load(&source)?),
            None => None,
        };
        let plain = match config.plain {
            true => Some(bind_tcp(config.listen).await?),
            false => None,
        };
        let tls = match (tls, config.tls_listen) {
            (Some(tls), Some(addr)) => Some((bind_tcp(addr).await?, addr, tls)),
            _ => None,
        };
        // The relay shares the signalling port by default (the plain one,
        // or the TLS one when plain is off); with an ephemeral port (tests)
        // it takes its own, since the TCP port's number may be taken on UDP.
        let (wanted, bound) = match (&plain, &tls) {
            (Some((_, bound)), _) => (config.listen, *bound),
            (None, Some(((_, bound), wanted, _))) => (*wanted, *bound),
            (None, None) => return Err(StartError::NoListener),
        };
        let udp_addr = config.udp_listen.unwrap_or(if wanted.port() == 0 { wanted } else { bound });
        // Large kernel buffers: at 100 000 datagrams/s the default (about
        // 200 KiB) holds only 2–3 ms, so any pause of a worker would drop voice.
        let workers = crate::relay_io::worker_count(config.relay_workers);
        let udp = crate::relay_io::bind_sockets(udp_addr, workers, config.relay_buffer_bytes)
            .map_err(|source| StartError::Bind { addr: udp_addr, source })?;
        let udp_port = udp
            .first()
            .ok_or_else(|| std::io::Error::other("no relay socket"))
            .and_then(|s| s.local_addr())
            .map_err(|source| StartError::Bind { addr: udp_addr, source })?
            .port();
        let (tx, learned) = mpsc::unbounded_channel();
        let relay = Relay::with_challenge_every(udp_port, config.relay_challenge_every_ms);
        relay.set_reports(tx);
        // Clients of other nodes reach this relay at the address it is
        // bound to, when that is one address (grants name it).
        if !udp_addr.ip().is_unspecified() {
            relay.set_host(udp_addr.ip());
        }
        let bus = match &config.nats {
            Some(url) => {
                let port = plain.as_ref().or(tls.as_ref().map(|(l, _, _)| l)).map_or(0, |(_, bound)| bound.port());
                let node = config.node.clone().unwrap_or_else(|| crate::cluster::default_node_name(port));
                Some(crate::cluster::Bus::connect(url, &node, &config.cluster).await?)
            }
            None => None,
        };
        let hub: Arc<dyn crate::hub::Hub> = match &bus {
            Some(bus) => Arc::clone(bus) as Arc<dyn crate::hub::Hub>,
            None => Arc::new(LocalHub::default()),
        };
        let app = App::new(store, hub, relay, AppConfig::from(config), bus);
        let settings = ConnSettings {
            limits: config.limits(),
            frame_timeout: config.frame_timeout(),
            dead_peer: Duration::from_secs(config.dead_peer_timeout_secs.max(2)),
            auth_timeout: Duration::from_secs(config.auth_timeout_secs.max(1)),
        };
        Ok(Server {
            plain: plain.map(|(l, _)| l),
            tls: tls.map(|((l, _), _, tls)| (l, tls)),
            udp,
            relay_gather_us: config.relay_gather_us,
            app,
            learned,
            settings,
            max_connections: config.max_connections,
        })
    }

    /// The signalling address: the plain listener's, or the TLS one's when
    /// plain is off.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        match (&self.plain, &self.tls) {
            (Some(l), _) | (None, Some((l, _))) => l.local_addr(),
            (None, None) => Err(std::io::Error::other("no listener")),
        }
    }

    /// The plain listener's address, when it is on.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The TLS listener's address, when it is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The TLS certificate in use, when the TLS listener is on.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref().map(|(_, t)| t)
    }

    /// The relay's UDP address.
    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.first().ok_or_else(|| std::io::Error::other("no relay socket"))?.local_addr()
    }

    /// This node's name in its cluster (`None` on a node alone).
    pub fn node(&self) -> Option<&str> {
        self.app.bus.as_ref().map(|b| b.node())
    }

    /// This run of the node in its cluster (random per start; `None` on a
    /// node alone).
    pub fn run(&self) -> Option<u64> {
        self.app.bus.as_ref().map(|b| b.run())
    }

    /// The services.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `shutdown` completes and every connection has finished.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let cancel = CancellationToken::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gather = Duration::from_micros(self.relay_gather_us);
        let workers = crate::relay_io::spawn_workers(self.app.relay(), self.udp, gather, &stop);
        let background = self.app.spawn_background(self.learned, cancel.clone());
        let mut listeners = Vec::new();
        if let Some(tcp) = self.plain {
            listeners.push(Listener { tcp, tls: None });
        }
        if let Some((tcp, tls)) = self.tls {
            listeners.push(Listener { tcp, tls: Some(tls.acceptor) });
        }
        run(listeners, Arc::clone(&self.app), self.settings, self.max_connections, shutdown).await;
        cancel.cancel();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (_, thread) in workers {
            match thread {
                Ok(handle) => {
                    let _ = tokio::task::spawn_blocking(move || handle.join()).await;
                }
                Err(e) => tracing::error!(error = %e, "a relay worker could not start"),
            }
        }
        let _ = background.await;
    }
}

/// A server running on the current tokio runtime (tests, embedding, `babel
/// demo`).
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tls: Option<Tls>,
    udp_addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Opens the store, binds the listeners and starts serving.
    pub async fn start(config: &Config) -> Result<RunningServer, StartError> {
        let (db, durability) = (config.db.clone(), config.durability);
        let store = tokio::task::spawn_blocking(move || crate::store::open(&db, durability))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(format!("opening the store failed: {e}"))))
            .map_err(|source| StartError::Store { path: crate::store::describe(&config.db).into(), source })?;
        Self::start_with_store(config, store).await
    }

    /// Starts serving over a given store.
    pub async fn start_with_store(config: &Config, store: Arc<dyn Store>) -> Result<RunningServer, StartError> {
        let server = Server::bind(config, store).await?;
        let addr = server.addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let udp_addr = server.udp_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let (tls_addr, tls) = (server.tls_addr(), server.tls().cloned());
        let app = Arc::clone(server.app());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Ok(RunningServer { addr, tls_addr, tls, udp_addr, app, stop: Some(tx), task })
    }

    /// The address it listens on (the plain listener's, or the TLS one's
    /// when plain is off).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener's address, when it is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The TLS certificate in use (with its fingerprint), when TLS is on.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The relay's UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The shared state (for tests and metrics).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// This node's name in its cluster (`None` on a node alone).
    pub fn node(&self) -> Option<&str> {
        self.app.bus.as_ref().map(|b| b.node())
    }

    /// This run of the node in its cluster (random per start; `None` on a
    /// node alone).
    pub fn run(&self) -> Option<u64> {
        self.app.bus.as_ref().map(|b| b.run())
    }

    /// Stops accepting, lets connections finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
