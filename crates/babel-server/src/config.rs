//! Server settings with documented defaults.
//!
//! Sources, strongest first: command-line flags, `BABEL_*` environment
//! variables (both handled by the binary), a TOML file (`--config`), then the
//! defaults below. Every limit is here so that a load test can lift it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::PasswordCost;
use crate::store::sqlite::Durability;
use crate::tls::{CertSource, TlsError};

/// The TCP port Babel listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7447;

/// Everything the server can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Plain (unencrypted) signalling listener (default `0.0.0.0:7447`),
    /// for the seed's third-party clients.
    pub listen: SocketAddr,
    /// Whether the plain listener is on (default true).
    pub plain: bool,
    /// TLS signalling listener (default: off).
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS (leaf first). Without it (and
    /// `tls_key`), a self-signed certificate is generated on first start and
    /// kept next to the database as `tls-cert.pem` / `tls-key.pem`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// SQLite database file (default: `babel/babel.db` in the user's data
    /// directory, e.g. `~/.local/share/babel/babel.db`), or a PostgreSQL
    /// database: `postgres://USER:PASS@HOST:PORT/DB` ([`crate::store::open`]).
    pub db: PathBuf,
    /// Most connections open at once (default 100 000), lowered to the
    /// file-descriptor limit less a reserve; past it a new connection
    /// displaces the oldest unauthenticated one or is closed at once.
    pub max_connections: usize,
    /// How long a half-received frame may take to complete before the
    /// connection is closed, in seconds (default 30). Idle connections
    /// (nothing buffered) that have authenticated never time out.
    pub frame_timeout_secs: u64,
    /// Seconds a connection may stay open without authenticating (`/create`,
    /// `/login` or a request with a valid token) before it is closed
    /// (default 120: seed clients connect before their user types a
    /// password).
    pub auth_timeout_secs: u64,
    /// How long an unused session stays valid, in seconds (default 30 days).
    pub session_ttl_secs: u64,
    /// `full` (fsync every commit, default) or `normal`.
    pub durability: Durability,
    /// argon2id cost.
    pub password: PasswordCost,
    /// Largest header, in bytes (default 8 KiB).
    pub max_header_bytes: usize,
    /// Largest route, in bytes (default 256).
    pub max_route_bytes: usize,
    /// Largest data section, in bytes (default 1 MiB).
    pub max_data_bytes: usize,
    /// UDP media relay address (default: the signalling listener's address
    /// and port, on UDP; a port of its own when the listener's is 0).
    pub udp_listen: Option<SocketAddr>,
    /// Seconds a call rings unanswered (default 30).
    pub ring_timeout_secs: u64,
    /// Milliseconds a call participant whose connections are all gone
    /// keeps their place, free to `/connect_call` again from any node,
    /// before they leave the call with reason `disconnected` (default
    /// 15 000; 0: at once).
    pub call_grace_ms: u64,
    /// Seconds between `/ping` events on event connections (default 20).
    pub ping_interval_secs: u64,
    /// Most participants in one call, those being rung included (default 8).
    pub max_call_participants: usize,
    /// Seconds within which a peer that vanished without closing TCP is
    /// dropped, through TCP keepalive and a TCP user timeout (default 50).
    pub dead_peer_timeout_secs: u64,
    /// Kernel buffer asked for the relay's UDP socket, each way, in bytes
    /// (default 8 MiB; the kernel may cap it).
    pub relay_buffer_bytes: usize,
    /// The relay challenges one address (ip and port) at most once per this
    /// many milliseconds (default 1000; 0: no limit, for load tests whose
    /// participants share a few sockets).
    pub relay_challenge_every_ms: u64,
    /// Relay worker threads, each with its own `SO_REUSEPORT` socket on the
    /// relay's address (default 0: one per core; see `relay_io`).
    pub relay_workers: usize,
    /// A busy relay worker lets each batch of datagrams gather this many
    /// microseconds before taking it (default 100; 0: never pause; see
    /// `relay_io`).
    pub relay_gather_us: u64,
    /// Abuse limits (`[limits]` in the file).
    #[serde(rename = "limits")]
    pub abuse: crate::limits::LimitsConfig,
    /// NATS server that joins this node to a cluster (`nats://HOST:PORT`;
    /// default: none, a node on its own). Nodes of one cluster share the
    /// database (PostgreSQL) and this NATS.
    pub nats: Option<String>,
    /// This node's name in the cluster (default: host name and port).
    /// Unique per cluster.
    pub node: Option<String>,
    /// Cluster settings (`[cluster]` in the file): its name (the NATS
    /// subject prefix) and timings.
    pub cluster: crate::cluster::ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        let limits = babel_proto::Limits::default();
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            plain: true,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            db: default_db_path(),
            max_connections: 100_000,
            frame_timeout_secs: 30,
            auth_timeout_secs: 120,
            session_ttl_secs: 30 * 24 * 3600,
            durability: Durability::default(),
            password: PasswordCost::default(),
            max_header_bytes: limits.max_header,
            max_route_bytes: limits.max_route,
            max_data_bytes: limits.max_data,
            udp_listen: None,
            ring_timeout_secs: 30,
            call_grace_ms: 15_000,
            ping_interval_secs: 20,
            max_call_participants: 8,
            dead_peer_timeout_secs: 50,
            relay_buffer_bytes: 8 << 20,
            relay_challenge_every_ms: crate::relay::CHALLENGE_EVERY_MS,
            relay_workers: 0,
            relay_gather_us: crate::relay_io::GATHER_US,
            abuse: crate::limits::LimitsConfig::default(),
            nats: None,
            node: None,
            cluster: crate::cluster::ClusterConfig::default(),
        }
    }
}

/// `babel/babel.db` under the platform's data directory, or the working
/// directory when there is none.
pub fn default_db_path() -> PathBuf {
    dirs::data_dir().map(|d| d.join("babel")).unwrap_or_default().join("babel.db")
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML was wrong.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
}

impl Config {
    /// Reads a TOML file; keys left out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// The frame size limits.
    pub fn limits(&self) -> babel_proto::Limits {
        babel_proto::Limits {
            max_header: self.max_header_bytes,
            max_route: self.max_route_bytes,
            max_data: self.max_data_bytes,
        }
    }

    /// The half-frame timeout.
    pub fn frame_timeout(&self) -> Duration {
        Duration::from_secs(self.frame_timeout_secs.max(1))
    }

    /// Where the TLS certificate comes from; `None` when TLS is off.
    pub fn tls_source(&self) -> Result<Option<CertSource>, TlsError> {
        if self.tls_listen.is_none() {
            return Ok(None);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(CertSource::Files { cert: cert.clone(), key: key.clone() })),
            (None, None) => Ok(Some(CertSource::SelfSigned { dir: self.data_dir() })),
            (Some(_), None) => Err(TlsError::Incomplete("tls_cert is set but tls_key is not")),
            (None, Some(_)) => Err(TlsError::Incomplete("tls_key is set but tls_cert is not")),
        }
    }

    /// The folder of the server's own files (a generated TLS certificate):
    /// the SQLite file's, or with PostgreSQL the default data folder.
    pub fn data_dir(&self) -> PathBuf {
        let on_postgres = self.db.to_str().is_some_and(crate::store::pg::is_postgres_url);
        let db = if on_postgres { default_db_path() } else { self.db.clone() };
        db.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// The session lifetime.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_some_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("babel.toml");
        std::fs::write(
            &p,
            "listen = \"127.0.0.1:9000\"\nmax_connections = 5\ndurability = \"normal\"\n[password]\nmemory_kib = 1024\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.max_connections, 5);
        assert_eq!(c.durability, Durability::Normal);
        assert_eq!(c.password.memory_kib, 1024);
        assert_eq!(c.password.iterations, PasswordCost::default().iterations);
        assert_eq!(c.session_ttl_secs, 30 * 24 * 3600);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("babel.toml");
        std::fs::write(&p, "lissten = \"x\"\n").unwrap();
        assert!(matches!(Config::from_file(&p), Err(ConfigError::Parse { .. })));
        assert!(matches!(Config::from_file(&dir.path().join("none")), Err(ConfigError::Read { .. })));
    }
}
