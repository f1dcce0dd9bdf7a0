//! `babel-server` nodes as child processes for the cluster benchmarks
//! (`babel-cluster-load`, `babel-call-setup`, `babel-cluster-fault`,
//! `babel-failover`): one node on a SQLite file, or nodes on one PostgreSQL
//! scratch schema (dropped at the end), with or without the local
//! nats-server as their bus.
//!
//! Every node gets cheap password hashing (setting up a thousand accounts
//! takes seconds), `--log warn` into a file in a temporary folder, and the
//! database address in its environment rather than on its command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use babel_server::store::pg::ScratchSchema;

use crate::child::ChildServer;

/// The tests' PostgreSQL database (`scripts/engines.sh` starts it).
pub const DEFAULT_DB: &str = "postgres://babel:babel@127.0.0.1:5432/babel";
/// The local nats-server (`scripts/engines.sh` starts it).
pub const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";
const START_LIMIT: Duration = Duration::from_secs(30);

/// The engines and the server binary, on the command line of the cluster
/// benchmarks.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// PostgreSQL database (a scratch schema is made in it and dropped).
    #[arg(long, default_value = DEFAULT_DB)]
    pub db: String,
    /// The nodes' nats-server.
    #[arg(long, default_value = DEFAULT_NATS)]
    pub nats: String,
    /// The process of that nats-server, to read its CPU from [default:
    /// every `nats-server` process on the machine].
    #[arg(long)]
    pub nats_pid: Option<u32>,
    /// The babel-server binary [default: next to this executable].
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// The nodes' `relay_challenge_every_ms` (0: no limit per address)
    /// [default: the server's].
    #[arg(long)]
    pub relay_challenge_every_ms: Option<u64>,
}

impl EngineArgs {
    /// The nats-server processes to read CPU from.
    pub fn nats_pids(&self) -> Vec<u32> {
        self.nats_pid.map_or_else(|| pids_named("nats-server"), |p| vec![p])
    }

    /// Nodes of the server binary on the bus; with a PostgreSQL scratch
    /// schema when `postgres`. Blocking.
    pub fn nodes(&self, postgres: bool) -> anyhow::Result<Nodes> {
        let bin = server_binary(self.server_bin.clone())?;
        let extra =
            self.relay_challenge_every_ms.map_or(String::new(), |ms| format!("relay_challenge_every_ms = {ms}"));
        let mut nodes = Nodes::new(bin, &self.nats, &extra)?;
        if postgres {
            nodes.use_postgres(&self.db)?;
        }
        Ok(nodes)
    }
}

/// The babel-server binary: `given`, or the one next to this executable.
pub fn server_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given.map_or_else(|| crate::child::sibling_binary("babel-server"), Ok)
}

/// A free TCP port on 127.0.0.1 (for a node to be started again on the
/// same address).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the nodes' data lives and how they are started.
#[derive(Debug)]
pub struct Nodes {
    bin: PathBuf,
    dir: tempfile::TempDir,
    config: PathBuf,
    schema: Option<ScratchSchema>,
    nats: String,
    cluster: String,
    /// Where the nodes' logs go at `info` instead ([`Nodes::log_into`]).
    logs: Option<PathBuf>,
}

impl Nodes {
    /// Makes a temporary folder and a config file for nodes of `bin`;
    /// `extra_config` is added to the config's top level. Blocking.
    pub fn new(bin: PathBuf, nats: &str, extra_config: &str) -> anyhow::Result<Nodes> {
        let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
        let config = dir.path().join("babel.toml");
        std::fs::write(
            &config,
            format!("max_connections = 1000000\n{extra_config}\n[password]\nmemory_kib = 256\niterations = 1\n"),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let cluster = format!("bench{}", std::process::id());
        Ok(Nodes { bin, dir, config, schema: None, nats: nats.to_owned(), cluster, logs: None })
    }

    /// Makes the PostgreSQL scratch schema the PostgreSQL nodes share (a
    /// new one on each call). Blocking.
    pub fn use_postgres(&mut self, base_url: &str) -> anyhow::Result<()> {
        let schema = ScratchSchema::create(base_url)
            .with_context(|| format!("PostgreSQL at {base_url} (scripts/engines.sh starts it)"))?;
        self.schema = Some(schema);
        Ok(())
    }

    /// Keeps each node's log, at `info`, in `dir` as `<label>.log` (not in
    /// the temporary folder at `warn`).
    pub fn log_into(&mut self, dir: PathBuf) {
        self.logs = Some(dir);
    }

    /// The temporary folder (deleted when `self` is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn start(&self, label: &str, listen: &str, db: &str, extra: &[&str]) -> anyhow::Result<ChildServer> {
        let log = self.logs.as_deref().unwrap_or(self.dir.path()).join(format!("{label}.log"));
        let stderr = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--listen", listen, "--log", if self.logs.is_some() { "info" } else { "warn" }])
            .arg("--config")
            .arg(&self.config)
            .args(extra)
            .env("BABEL_DB", db)
            .stdin(Stdio::null())
            .stderr(stderr);
        ChildServer::start("babel-server", cmd, START_LIMIT).with_context(|| {
            format!(
                "starting {} as {label} (build it with `cargo build --release -p babel-server -p babel-tools`; its log: {})",
                self.bin.display(),
                log.display()
            )
        })
    }

    /// One node on a SQLite file in the temporary folder. Blocking.
    pub fn sqlite(&self, label: &str) -> anyhow::Result<ChildServer> {
        let db = self.dir.path().join(format!("{label}.db"));
        self.start(label, "127.0.0.1:0", &db.to_string_lossy(), &[])
    }

    /// One node on the scratch schema, alone (no bus). Blocking.
    pub fn postgres(&self, label: &str) -> anyhow::Result<ChildServer> {
        self.postgres_on(label, "127.0.0.1:0")
    }

    /// [`Nodes::postgres`] listening on `port` of 127.0.0.1, to be started
    /// again there once killed. Blocking.
    pub fn postgres_at(&self, label: &str, port: u16) -> anyhow::Result<ChildServer> {
        self.postgres_on(label, &format!("127.0.0.1:{port}"))
    }

    fn postgres_on(&self, label: &str, listen: &str) -> anyhow::Result<ChildServer> {
        let schema = self.schema.as_ref().context("no PostgreSQL schema: call use_postgres first")?;
        self.start(label, listen, schema.url(), &[])
    }

    /// Node `label` of the cluster: the scratch schema and nats-server.
    /// Blocking.
    pub fn clustered(&self, label: &str) -> anyhow::Result<ChildServer> {
        let schema = self.schema.as_ref().context("no PostgreSQL schema: call use_postgres first")?;
        let bus = ["--nats", &self.nats, "--cluster", &self.cluster, "--node", label];
        self.start(label, "127.0.0.1:0", schema.url(), &bus)
    }

    /// `n` cluster nodes, `n1` to `n<n>`. Blocking.
    pub fn cluster(&self, n: usize) -> anyhow::Result<Vec<ChildServer>> {
        (1..=n).map(|i| self.clustered(&node_name(i))).collect()
    }
}

/// The name of cluster node `i` (from 1).
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// The processes whose command name (`/proc/<pid>/comm`) is `name`, e.g.
/// `postgres` or `nats-server`: the engines' CPU is read from them.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_its_name() {
        let me = std::process::id();
        let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap_or_default();
        assert!(pids_named(comm.trim_end()).contains(&me));
        assert!(pids_named("no-such-process-name").is_empty());
        assert_eq!(node_name(3), "n3");
    }

    #[test]
    fn the_server_binary_given_wins_and_a_free_port_is_free() {
        let given = PathBuf::from("/opt/babel/babel-server");
        assert_eq!(server_binary(Some(given.clone())).unwrap(), given);
        assert!(server_binary(None).unwrap().ends_with("babel-server"));
        let port = free_port().unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
