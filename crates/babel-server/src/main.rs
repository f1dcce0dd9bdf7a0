//! `babel-server`: the Babel signalling server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use babel_server::config::Config;
use babel_server::server::Server;
use babel_server::store;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Babel signalling server: accounts, contacts, presence, calls.
///
/// Settings come from flags, then BABEL_* environment variables, then the
/// TOML file given with --config, then built-in defaults.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (keys as in the README).
    #[arg(long, env = "BABEL_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:7447].
    #[arg(long, env = "BABEL_LISTEN")]
    listen: Option<SocketAddr>,
    /// SQLite database file, or a PostgreSQL database as
    /// postgres://USER:PASS@HOST:PORT/DB [default: <data dir>/babel/babel.db].
    #[arg(long, env = "BABEL_DB")]
    db: Option<PathBuf>,
    /// Most connections served at once [default: 100000].
    #[arg(long, env = "BABEL_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a half-received frame may take [default: 30].
    #[arg(long, env = "BABEL_FRAME_TIMEOUT")]
    frame_timeout: Option<u64>,
    /// Also listen with TLS on this address, e.g. 0.0.0.0:7448.
    #[arg(long, env = "BABEL_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS [default: a self-signed certificate
    /// generated on first start next to the database].
    #[arg(long, env = "BABEL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "BABEL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Switch the plain (unencrypted) listener off; needs --tls-listen.
    #[arg(long, env = "BABEL_NO_PLAIN")]
    no_plain: bool,
    /// UDP address of the media relay [default: the --listen address, on UDP].
    #[arg(long, env = "BABEL_UDP_LISTEN")]
    udp_listen: Option<SocketAddr>,
    /// Join a cluster over this NATS server, e.g. nats://127.0.0.1:4222
    /// (with --db postgres://… shared by every node).
    #[arg(long, env = "BABEL_NATS")]
    nats: Option<String>,
    /// This node's name in the cluster [default: host name and port].
    #[arg(long, env = "BABEL_NODE")]
    node: Option<String>,
    /// The cluster's name: its NATS subjects' prefix [default: babel].
    #[arg(long, env = "BABEL_CLUSTER")]
    cluster: Option<String>,
    /// UDP relay worker threads, each with its own socket on the relay's
    /// port (SO_REUSEPORT) [default: one per core].
    #[arg(long, env = "BABEL_RELAY_WORKERS")]
    relay_workers: Option<usize>,
    /// Log filter, e.g. `info` or `babel_server=debug` [default: info].
    #[arg(long, env = "BABEL_LOG", default_value = "info")]
    log: String,
}

/// mimalloc gives freed memory back to the system within milliseconds. With
/// glibc's allocator a burst of large frames (1 MiB requests on many
/// connections) left tens of MB resident for good after the connections
/// closed: freeing large blocks raises glibc's mmap threshold, so later ones
/// come from arenas it does not return (SECURITY.md has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.db {
        config.db = v;
    }
    if let Some(v) = args.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = args.frame_timeout {
        config.frame_timeout_secs = v;
    }
    if let Some(v) = args.tls_listen {
        config.tls_listen = Some(v);
    }
    if let Some(v) = args.tls_cert {
        config.tls_cert = Some(v);
    }
    if let Some(v) = args.tls_key {
        config.tls_key = Some(v);
    }
    if args.no_plain {
        config.plain = false;
    }
    if let Some(v) = args.udp_listen {
        config.udp_listen = Some(v);
    }
    if let Some(v) = args.nats {
        config.nats = Some(v);
    }
    if let Some(v) = args.node {
        config.node = Some(v);
    }
    if let Some(v) = args.cluster {
        config.cluster.name = v;
    }
    if let Some(v) = args.relay_workers {
        config.relay_workers = v;
    }
    raise_fd_limit();
    // Opened before the runtime starts: the PostgreSQL driver blocks, and
    // must not on the runtime's threads.
    let db = store::describe(&config.db);
    let store = store::open(&config.db, config.durability).with_context(|| format!("cannot open the database {db}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = Server::bind(&config, store).await?;
        let udp = server.udp_addr()?;
        tracing::info!(%udp, %db, "babel-server ready");
        // Scripts wait for these lines on stdout to know the ports.
        if let Some(addr) = server.plain_addr() {
            println!("listening on {addr}");
        }
        if let Some(tls) = server.tls() {
            if tls.generated {
                tracing::info!(dir = %config.data_dir().display(), "generated a self-signed TLS certificate");
            }
            println!("tls certificate {}", tls.fingerprint);
        }
        if let Some(addr) = server.tls_addr() {
            println!("listening on tls://{addr}");
        }
        if let Some(node) = server.node() {
            println!("node {node}");
        }
        server.serve(shutdown_signal()).await;
        tracing::info!("database closed; bye");
        anyhow::Ok(())
    })
}
