//! The listener: accept, one task per connection, graceful shutdown.
//!
//! On shutdown the listener stops accepting, every connection answers what it
//! has already received and closes, and [`run`] returns once all of them are
//! gone, so the caller can then drop the store and close the database cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::{App, AppConfig};
use crate::config::Config;
use crate::connection::{ConnSettings, serve};
use crate::hub::LocalHub;
use crate::relay::{AddressLearned, Relay};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

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

/// The relay's UDP socket, with large kernel buffers: at 100 000 datagrams/s
/// the default (about 200 KiB) holds only 2–3 ms, so any pause of the relay
/// task would drop voice. The kernel may grant less (`net.core.rmem_max`);
/// what it granted is logged.
fn bind_relay_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(buffer) {
        tracing::warn!(error = %e, "cannot enlarge the relay's receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(buffer) {
        tracing::warn!(error = %e, "cannot enlarge the relay's send buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    tracing::info!(
        recv = sock.recv_buffer_size().unwrap_or(0),
        send = sock.send_buffer_size().unwrap_or(0),
        "relay socket buffers"
    );
    Ok(sock.into())
}

/// Accepts and serves connections until `shutdown` completes, then waits for
/// every connection task to finish.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    settings: ConnSettings,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let settings = Arc::new(settings);
    let accept_loop = async {
        let mut next_id: u64 = 0;
        loop {
            // Past the cap, new connections wait in the kernel's backlog.
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            configure_socket(&stream, settings.dead_peer);
            next_id += 1;
            let span = tracing::debug_span!("conn", id = next_id);
            tracing::trace!(parent: &span, %peer, "accepted");
            let (app, settings, cancel) = (Arc::clone(&app), Arc::clone(&settings), cancel.clone());
            tracker.spawn(
                async move {
                    serve(stream, peer.ip(), app, settings, cancel).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    };
    tokio::select! {
        _ = accept_loop => {}
        _ = shutdown => tracing::info!("shutting down: no new connections"),
    }
    drop(listener);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("all connections closed");
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error("cannot open the database {path}: {source}")]
    Store {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: StoreError,
    },
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
    listener: TcpListener,
    udp: std::net::UdpSocket,
    app: Arc<App>,
    learned: mpsc::UnboundedReceiver<AddressLearned>,
    settings: ConnSettings,
    max_connections: usize,
}

impl Server {
    /// Binds the TCP listener and the UDP relay socket and builds the
    /// services over `store`.
    pub async fn bind(config: &Config, store: Arc<dyn Store>) -> Result<Server, StartError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        // The relay shares the signalling port by default; with an ephemeral
        // port (tests) it takes its own, since the TCP port's number may be
        // taken on UDP.
        let udp_addr = config.udp_listen.unwrap_or(if config.listen.port() == 0 { config.listen } else { addr });
        let udp = bind_relay_socket(udp_addr, config.relay_buffer_bytes)
            .map_err(|source| StartError::Bind { addr: udp_addr, source })?;
        let udp_port = udp.local_addr().map_err(|source| StartError::Bind { addr: udp_addr, source })?.port();
        let (tx, learned) = mpsc::unbounded_channel();
        let relay = Relay::new(udp_port);
        relay.set_reports(tx);
        let app = App::new(store, Arc::new(LocalHub::default()), relay, AppConfig::from(config));
        let settings = ConnSettings {
            limits: config.limits(),
            frame_timeout: config.frame_timeout(),
            dead_peer: Duration::from_secs(config.dead_peer_timeout_secs.max(2)),
        };
        Ok(Server { listener, udp, app, learned, settings, max_connections: config.max_connections })
    }

    /// The signalling address.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The relay's UDP address.
    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The services.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `shutdown` completes and every connection has finished.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let cancel = CancellationToken::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let relay = {
            let (relay, stop) = (Arc::clone(self.app.relay()), Arc::clone(&stop));
            let udp = self.udp;
            std::thread::Builder::new().name("babel-relay".into()).spawn(move || relay.run(udp, &stop))
        };
        let background = self.app.spawn_background(self.learned, cancel.clone());
        run(self.listener, Arc::clone(&self.app), self.settings, self.max_connections, shutdown).await;
        cancel.cancel();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(handle) = relay {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let _ = background.await;
    }
}

/// A server running on the current tokio runtime (tests, embedding, `babel
/// demo`).
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    udp_addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Opens the store, binds the listeners and starts serving.
    pub async fn start(config: &Config) -> Result<RunningServer, StartError> {
        let store = SqliteStore::open(&config.db, config.durability)
            .map_err(|source| StartError::Store { path: config.db.clone(), source })?;
        Self::start_with_store(config, Arc::new(store)).await
    }

    /// Starts serving over a given store.
    pub async fn start_with_store(config: &Config, store: Arc<dyn Store>) -> Result<RunningServer, StartError> {
        let server = Server::bind(config, store).await?;
        let addr = server.addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let udp_addr = server.udp_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let app = Arc::clone(server.app());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Ok(RunningServer { addr, udp_addr, app, stop: Some(tx), task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay's UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The shared state (for tests and metrics).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, lets connections finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
