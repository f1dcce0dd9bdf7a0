//! Real servers on 127.0.0.1 port 0 and helpers to drive clients.
//!
//! Every scenario runs in two topologies ([`Topology`]): one node on
//! SQLite, and a cluster of three nodes on PostgreSQL and NATS (issue #18
//! item 3), where each new user is placed on the next node in turn, so a
//! caller and a callee sit on different nodes. The cluster's engines are
//! the real ones, shared by every test: PostgreSQL (a schema per test;
//! `BABEL_TEST_POSTGRES` names another database) and `nats-server` on
//! 127.0.0.1:4222 (`BABEL_TEST_NATS` names another; a cluster name per
//! test). Without them the three-node tests fail and say which is missing.
//! The nodes run in this process.
#![allow(dead_code, unused_macros, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use babel_client::{Client, Event, EventStream};
use babel_proto::{ServerEvent, SessionInfo, UserId};
use babel_server::auth::PasswordCost;
use babel_server::cluster::ClusterConfig;
use babel_server::store::pg::{ScratchSchema, scratch_for_tests};
use babel_server::{Config, RunningServer};

/// Generous: tests assert that things happen, not how fast.
pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const PASSWORD: &str = "password123";

/// Where a test's users live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One node on SQLite, alone (the embedded default).
    OneNode,
    /// Three nodes on PostgreSQL and NATS; users placed round-robin.
    ThreeNodes,
}

/// Makes two tests of each scenario `async fn name(t: Topology)` in this
/// file: `one_node::name` and `three_nodes::name`. A scenario may name the
/// arguments of its `#[tokio::test]` in parentheses after its name. The
/// scenarios after `one node only until:` (each with why, a string) get only
/// the one-node test, while the cluster lacks what they need.
macro_rules! in_both_topologies {
    (
        $($name:ident $(($($test:tt)*))?),* $(,)?
        $(; one node only until: $($solo:ident ($why:literal)),* $(,)?)?
    ) => {
        mod one_node {
            $(
                #[tokio::test $(($($test)*))?]
                async fn $name() {
                    super::$name($crate::common::Topology::OneNode).await
                }
            )*
            $($(
                #[doc = concat!("On one node only until ", $why, ".")]
                #[tokio::test]
                async fn $solo() {
                    super::$solo($crate::common::Topology::OneNode).await
                }
            )*)?
        }
        mod three_nodes {
            $(
                #[tokio::test $(($($test)*))?]
                async fn $name() {
                    super::$name($crate::common::Topology::ThreeNodes).await
                }
            )*
        }
    };
}

/// The engines a cluster shares, and what makes this test's cluster its own.
struct Engines {
    schema: ScratchSchema,
    nats: String,
    cluster: ClusterConfig,
}

fn nats_url() -> String {
    let url = std::env::var("BABEL_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let greets = url.trim_start_matches("nats://").parse::<SocketAddr>().is_ok_and(|addr| {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut head = [0u8; 4];
        s.read_exact(&mut head).is_ok() && &head == b"INFO"
    });
    assert!(
        greets,
        "the three-node tests need nats-server at {url}, which is not answering: scripts/engines.sh starts it \
         (scripts/setup.sh installs it), or set BABEL_TEST_NATS"
    );
    url
}

/// A cluster name no other test (in this process or another) uses.
fn cluster_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("c{}_{}_{nanos:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The server side of a test: one node or three.
pub struct TestServer {
    pub topology: Topology,
    /// The nodes, in placement order (`None` while stopped).
    nodes: Vec<Option<RunningServer>>,
    configs: Vec<Config>,
    next: AtomicUsize,
    engines: Option<Engines>,
    _dir: tempfile::TempDir,
}

fn base_config(dir: &tempfile::TempDir) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    }
}

/// A server on 0.0.0.0 is reached on loopback.
fn reachable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], a.port())) } else { a }
}

/// A free address on loopback whose port lies below the kernel's range for
/// outgoing connections, so that no connection takes it while a node that
/// listened there is stopped (as one on port 0 would risk): for a node to
/// be started again on the same address.
pub fn quiet_addr() -> SocketAddr {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low = range.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    for i in 0..1000u32 {
        let port = 10_000 + ((seed / 7 + i * 7919) % u32::from(span)) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Free for TCP and UDP (the relay takes the same port when it can).
        if std::net::TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port on 127.0.0.1 between 10000 and {low}");
}

/// A test's server in `topology`, every node's configuration changed by `f`.
pub async fn start_in_with(topology: Topology, mut f: impl FnMut(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let (configs, engines) = match topology {
        Topology::OneNode => {
            let mut config = base_config(&dir);
            f(&mut config);
            (vec![config], None)
        }
        Topology::ThreeNodes => {
            let nats = nats_url();
            let schema = scratch_for_tests().unwrap_or_else(|e| panic!("the three-node tests: {e}"));
            let cluster = ClusterConfig { name: cluster_name(), ..ClusterConfig::default() };
            let configs = ["n1", "n2", "n3"]
                .iter()
                .map(|node| {
                    let mut config = Config {
                        db: schema.url().into(),
                        nats: Some(nats.clone()),
                        node: Some((*node).into()),
                        cluster: cluster.clone(),
                        ..base_config(&dir)
                    };
                    f(&mut config);
                    config
                })
                .collect();
            (configs, Some(Engines { schema, nats, cluster }))
        }
    };
    // The first node alone (it makes the schema's tables), then the others.
    let start = |config: &Config| {
        let config = config.clone();
        async move {
            RunningServer::start(&config).await.unwrap_or_else(|e| panic!("node {:?} did not start: {e}", config.node))
        }
    };
    let mut nodes = vec![Some(start(&configs[0]).await)];
    let rest: Vec<_> = configs[1..].iter().map(|c| tokio::spawn(start(c))).collect();
    for node in rest {
        nodes.push(Some(node.await.unwrap()));
    }
    TestServer { topology, nodes, configs, next: AtomicUsize::new(0), engines, _dir: dir }
}

pub async fn start_in(topology: Topology) -> TestServer {
    start_in_with(topology, |_| {}).await
}

/// One node, alone, changed by `f` (for what only one node shows).
pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
    let mut f = Some(f);
    start_in_with(Topology::OneNode, |c| f.take().into_iter().for_each(|f| f(c))).await
}

pub async fn start() -> TestServer {
    start_in(Topology::OneNode).await
}

impl TestServer {
    /// The first node (the only one on one node).
    pub fn server(&self) -> &RunningServer {
        self.node(0)
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &RunningServer {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {i} is stopped"))
    }

    fn running(&self) -> impl Iterator<Item = &RunningServer> {
        self.nodes.iter().flatten()
    }

    /// Where the nodes keep their data: the SQLite file on one node, the
    /// PostgreSQL address (with the test's own schema first on its search
    /// path) on three.
    pub fn db(&self) -> &std::path::Path {
        &self.configs[0].db
    }

    /// The first node's address.
    pub fn addr(&self) -> String {
        self.addr_of(0)
    }

    /// The node the next new user (or device) is placed on: each in turn.
    pub fn place(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()
    }

    /// The address of node `i`.
    pub fn addr_of(&self, i: usize) -> String {
        reachable(self.node(i).addr()).to_string()
    }

    /// The address of the node the next user goes to.
    pub fn next_addr(&self) -> String {
        self.addr_of(self.place())
    }

    /// Calls in progress, over every node (each call counts at its home).
    pub fn calls_in_progress(&self) -> usize {
        self.running().map(|n| n.app().calls_in_progress()).sum()
    }

    /// Relay legs, over every node's relay.
    pub fn leg_count(&self) -> usize {
        self.running().map(|n| n.app().relay().leg_count()).sum()
    }

    /// Call channel frames dropped for slow receivers, over every node.
    pub fn channel_drops(&self) -> u64 {
        self.running().map(|n| n.app().channel_drops()).sum()
    }

    /// Datagrams the relays dropped, over every node.
    pub fn relay_dropped(&self) -> u64 {
        self.running().map(|n| n.app().relay().stats.dropped.load(Ordering::Relaxed)).sum()
    }

    /// Moves of a bound leg to a new address, over every node's relay.
    pub fn relay_moves(&self) -> u64 {
        self.running().map(|n| n.app().relay().stats.moves.load(Ordering::Relaxed)).sum()
    }

    /// Stops node `i`: its connections close.
    pub async fn stop(&mut self, i: usize) {
        let node = self.nodes[i].take().unwrap_or_else(|| panic!("node {i} is stopped already"));
        // Started again on the same address.
        self.configs[i].listen = node.addr();
        node.shutdown().await;
    }

    /// Starts stopped node `i` again: the same address, store and name.
    pub async fn start_again(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let node =
            RunningServer::start(&self.configs[i]).await.unwrap_or_else(|e| panic!("node {i} did not restart: {e}"));
        self.nodes[i] = Some(node);
    }

    pub async fn shutdown(self) {
        for n in self.nodes.into_iter().flatten() {
            n.shutdown().await;
        }
    }
}

/// A logged-in user with an open event stream, and the node it is on.
pub struct User {
    pub client: Client,
    pub events: EventStream,
    pub me: SessionInfo,
    pub node: usize,
}

impl User {
    pub fn id(&self) -> UserId {
        self.me.id
    }

    /// Waits for the first event matching `want`, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut want: impl FnMut(&ServerEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.next()).await;
            match next {
                Err(_) => panic!("{}: no {what} within {TIMEOUT:?}", self.me.email),
                Ok(None) => panic!("{}: event stream ended while waiting for {what}", self.me.email),
                Ok(Some(Err(e))) => panic!("{}: event stream error {e} while waiting for {what}", self.me.email),
                Ok(Some(Ok(Event::Server(ev)))) => {
                    if let Some(t) = want(&ev) {
                        return t;
                    }
                }
                Ok(Some(Ok(Event::Reconnected | Event::Disconnected))) => {}
            }
        }
    }

    /// Asserts that no event matching `bad` arrives within `wait`.
    pub async fn expect_none(&mut self, what: &str, wait: Duration, mut bad: impl FnMut(&ServerEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(Event::Server(ev)))) = tokio::time::timeout_at(deadline, self.events.next()).await {
            assert!(!bad(&ev), "{}: unexpected {what}: {ev:?}", self.me.email);
        }
    }
}

/// A new account on the next node, logged in there with its events open.
pub async fn user(server: &TestServer, email: &str) -> User {
    let node = server.place();
    let mut client = Client::connect(server.addr_of(node)).await.unwrap();
    let me = client.create(email, PASSWORD, None).await.unwrap();
    let events = client.events().await.unwrap();
    User { client, events, me, node }
}

/// Another device of the same account, on the next node.
pub async fn device(server: &TestServer, email: &str) -> User {
    let node = server.place();
    let mut client = Client::connect(server.addr_of(node)).await.unwrap();
    let me = client.login(email, PASSWORD).await.unwrap();
    let events = client.events().await.unwrap();
    User { client, events, me, node }
}
pub async fn befriend(a: &mut User, b: &mut User) {
    a.client.add_contact(&b.me.email).await.unwrap();
    b.client.accept_contact(a.id()).await.unwrap();
    let bid = b.id();
    a.expect("contact_added", |e| matches!(e, ServerEvent::ContactAdded(c) if c.user.id == bid).then_some(())).await;
    let aid = a.id();
    b.expect("contact_added", |e| matches!(e, ServerEvent::ContactAdded(c) if c.user.id == aid).then_some(())).await;
}

/// A two-party call between two new users, answered: both users, the call
/// and each side's relay grant (port, handle, key).
pub async fn answered_call(
    s: &TestServer,
    a: &str,
    b: &str,
) -> (User, User, babel_proto::CallId, [(u16, u32, [u8; 16]); 2]) {
    use babel_proto::MediaSetup;
    let mut a = user(s, a).await;
    let mut b = user(s, b).await;
    befriend(&mut a, &mut b).await;
    let started = a.client.call(b.id(), MediaSetup::default()).await.unwrap();
    b.expect("incoming", |e| matches!(e, ServerEvent::IncomingCall(_)).then_some(())).await;
    let joined = b.client.accept_call(started.call_id, MediaSetup::default()).await.unwrap();
    let grants = [started.relay.parts().unwrap(), joined.relay.parts().unwrap()];
    (a, b, started.call_id, grants)
}

/// BIND from `sock`, and CONFIRM when challenged (with `nonce + 1`): the
/// address the relay saw, once bound there.
pub async fn relay_bind(
    sock: &tokio::net::UdpSocket,
    relay: std::net::SocketAddr,
    handle: u32,
    key: &[u8; 16],
    nonce: u64,
) -> Option<std::net::SocketAddr> {
    use babel_proto::relay as wire;
    sock.send_to(&wire::encode_bind(handle, nonce, key), relay).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await.ok()?.unwrap();
    let ack = wire::verify_bind_ack(&buf[..n], key)?;
    if ack.state == wire::BOUND {
        return Some(ack.seen);
    }
    sock.send_to(&wire::encode_confirm(handle, nonce + 1, &ack.cookie, key), relay).await.unwrap();
    let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await.ok()?.unwrap();
    wire::verify_bind_ack(&buf[..n], key).filter(|a| a.state == wire::BOUND).map(|a| a.seen)
}
