//! A whole server inside another program, on 127.0.0.1: for `babel demo`,
//! the desktop app's demo world, the quality harness and tests.
//!
//! ```no_run
//! # async fn f() -> Result<(), babel_server::StartError> {
//! use babel_server::embedded::Embedded;
//!
//! // A temporary database (removed on stop), cheap password hashing.
//! let server = Embedded::builder().fast_hashing().start().await?;
//! let addr = server.addr(); // 127.0.0.1:port, chosen by the system
//! # let _ = addr;
//! server.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! What can be chosen is what an embedding program has a reason to choose:
//! where the database lives (a temporary folder by default), how hard a
//! commit waits for the disk ([`Durability`]) and what a password hash
//! costs ([`PasswordCost`]); [`Builder::config`] reaches every other
//! setting of [`Config`] for the tests that need one. The listener is
//! always on 127.0.0.1 with a port the system picks, so nothing embedded is
//! ever reachable from another machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::PasswordCost;
use crate::config::Config;
use crate::server::{RunningServer, StartError};
use crate::store::sqlite::Durability;

/// The database file's name inside the folder.
const DB_FILE: &str = "babel.db";

/// What an [`Embedded`] server is started with.
#[derive(Debug)]
pub struct Builder {
    dir: Option<PathBuf>,
    config: Config,
    /// Set by [`Builder::cluster`]: the database is PostgreSQL, not a file.
    shared_db: Option<PathBuf>,
}

impl Builder {
    /// Keeps the database in `dir` (made if missing, kept after stop)
    /// instead of a temporary folder.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How hard a commit waits for the disk (default for embedding:
    /// [`Durability::Normal`], which survives a killed process).
    pub fn durability(mut self, d: Durability) -> Self {
        self.config.durability = d;
        self
    }

    /// The argon2id cost of a password hash (default: production's).
    pub fn password_cost(mut self, cost: PasswordCost) -> Self {
        self.config.password = cost;
        self
    }

    /// The cheapest password hash ([`PasswordCost::CHEAP`]), for demos and
    /// tests that sign many people up.
    pub fn fast_hashing(self) -> Self {
        self.password_cost(PasswordCost::CHEAP)
    }

    /// Joins a cluster instead of keeping a database of its own: nodes on
    /// the PostgreSQL database `db` (`postgres://…`) and the NATS server
    /// `nats` (`nats://…`) act as one service (README, "A cluster"); `node`
    /// names this one. The cluster's name and timings are in
    /// `Config::cluster`, through [`Builder::config`].
    pub fn cluster(mut self, db: &str, nats: &str, node: &str) -> Self {
        self.shared_db = Some(db.into());
        self.config.nats = Some(nats.into());
        self.config.node = Some(node.into());
        self
    }

    /// Any other setting. The listener and database path set here are
    /// overridden: an embedded server listens on 127.0.0.1 only, on a port
    /// the system picks, with its database in [`Builder::dir`].
    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Opens (or creates) the database and starts serving on the current
    /// tokio runtime.
    pub async fn start(self) -> Result<Embedded, StartError> {
        let Builder { dir, mut config, shared_db } = self;
        let (dir, temp) = match dir {
            Some(d) => {
                std::fs::create_dir_all(&d).map_err(|source| StartError::Folder { path: d.clone(), source })?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("babel-server-")
                    .tempdir()
                    .map_err(|source| StartError::Folder { path: std::env::temp_dir(), source })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        if config.tls_listen.is_some() {
            config.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        config.udp_listen = None;
        config.db = shared_db.unwrap_or_else(|| dir.join(DB_FILE));
        let server = RunningServer::start(&config).await?;
        Ok(Embedded { server, dir, _temp: temp })
    }
}

/// A server running inside this program on 127.0.0.1 (see the module's
/// documentation). Dropping it without [`Embedded::stop`] stops accepting
/// at once but does not wait for the connections to finish.
#[derive(Debug)]
pub struct Embedded {
    server: RunningServer,
    dir: PathBuf,
    /// The temporary folder, removed when this goes.
    _temp: Option<tempfile::TempDir>,
}

impl Embedded {
    /// Settings to start one with: a temporary database,
    /// [`Durability::Normal`], production's password cost.
    pub fn builder() -> Builder {
        Builder { dir: None, config: Config { durability: Durability::Normal, ..Config::default() }, shared_db: None }
    }

    /// Its signalling address (`127.0.0.1:port`; the TLS listener's when
    /// the plain one is off).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The relay's UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.server.udp_addr()
    }

    /// The folder its database lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// The server itself (its TLS certificate, its counters).
    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// Stops accepting, lets connections finish, waits, and removes a
    /// temporary database.
    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listens_on_loopback_and_a_temporary_database_goes_on_stop() {
        let s = Embedded::builder()
            .fast_hashing()
            .config(|c| c.listen = SocketAddr::from(([0, 0, 0, 0], 7447)))
            .start()
            .await
            .expect("start");
        assert!(s.addr().ip().is_loopback(), "{}", s.addr());
        assert_ne!(s.addr().port(), 7447, "the port is the system's choice");
        assert!(s.udp_addr().ip().is_loopback(), "{}", s.udp_addr());
        let db = s.db_path();
        assert!(db.exists(), "{}", db.display());
        let tcp = tokio::net::TcpStream::connect(s.addr()).await;
        assert!(tcp.is_ok(), "it accepts connections");
        drop(tcp);
        s.stop().await;
        assert!(!db.exists(), "the temporary database is removed");
    }

    #[tokio::test]
    async fn a_chosen_folder_is_kept_and_reopened() {
        let dir = tempfile::tempdir().expect("dir");
        let folder = dir.path().join("nested/db");
        let s = Embedded::builder().dir(&folder).durability(Durability::Full).start().await.expect("start");
        assert_eq!(s.db_path(), folder.join(DB_FILE));
        s.stop().await;
        assert!(folder.join(DB_FILE).exists(), "kept after stop");
        let again = Embedded::builder().dir(&folder).start().await.expect("reopen");
        again.stop().await;
    }

    #[tokio::test]
    async fn a_folder_that_cannot_be_made_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let r = Embedded::builder().dir(file.join("below")).start().await;
        assert!(matches!(r, Err(StartError::Folder { .. })), "{r:?}");
    }
}
