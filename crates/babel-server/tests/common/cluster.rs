//! Nodes of one cluster on the real engines, for the cluster tests
//! (`cluster.rs`, `cluster_calls.rs`, `cluster_adopt.rs`): PostgreSQL (a
//! scratch schema per test, `BABEL_TEST_POSTGRES`) and `nats-server` on
//! 127.0.0.1:4222 (`BABEL_TEST_NATS` names another), each test under a
//! cluster name of its own. A missing engine fails the test, naming it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use babel_server::cluster::ClusterConfig;
use babel_server::store::pg::{ScratchSchema, scratch_for_tests};
use babel_server::{Config, RunningServer};
use serde_json::{Value, json};

use super::{Client, Session, TIMEOUT, test_config};

/// The NATS the tests use; fails the test if nothing greets there.
pub fn nats_url() -> String {
    let url = std::env::var("BABEL_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url.trim_start_matches("nats://").to_owned();
    assert!(
        nats_greets(&addr),
        "this test needs nats-server at {url}, which is not answering: scripts/engines.sh starts it \
         (scripts/setup.sh installs it), or set BABEL_TEST_NATS"
    );
    url
}

/// Whether a NATS server answers at `addr` (it greets with `INFO`).
pub fn nats_greets(addr: &str) -> bool {
    let Ok(addr) = addr.parse::<SocketAddr>() else { return false };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 4];
    s.read_exact(&mut head).is_ok() && &head == b"INFO"
}

/// One test's cluster: its schema, NATS, name and a folder for files.
pub struct World {
    pub schema: ScratchSchema,
    pub nats: String,
    pub cluster: ClusterConfig,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).unwrap();
        let name = format!("t{}_{}", std::process::id(), r.iter().map(|b| format!("{b:02x}")).collect::<String>());
        World {
            nats: nats_url(),
            schema: scratch_for_tests().unwrap_or_else(|e| panic!("{e}")),
            cluster: ClusterConfig { name, ..ClusterConfig::default() },
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The configuration of node `node`.
    pub fn config(&self, node: &str) -> Config {
        Config {
            db: self.schema.url().into(),
            nats: Some(self.nats.clone()),
            node: Some(node.into()),
            cluster: self.cluster.clone(),
            ..test_config(&self.dir)
        }
    }

    /// A node in this process.
    pub async fn node(&self, name: &str) -> RunningServer {
        self.node_with(name, |_| {}).await
    }

    /// A node in this process, its configuration changed by `f`.
    pub async fn node_with(&self, name: &str, f: impl FnOnce(&mut Config)) -> RunningServer {
        let mut config = self.config(name);
        f(&mut config);
        RunningServer::start(&config).await.unwrap_or_else(|e| panic!("node {name} did not start: {e}"))
    }

    /// A node in a process of its own (the real binary), to kill; its log
    /// goes to [`World::log_of`].
    pub fn process(&self, name: &str) -> Proc {
        self.process_with(name, "")
    }

    /// [`World::process`], with `extra` at the top of its configuration
    /// file (`call_grace_ms = 1000`, say).
    pub fn process_with(&self, name: &str, extra: &str) -> Proc {
        let config = self.dir.path().join(format!("{name}.toml"));
        let text = format!("{extra}\n[password]\nmemory_kib = 256\niterations = 1\n");
        std::fs::File::create(&config).unwrap().write_all(text.as_bytes()).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_babel-server"))
            .args(["--listen", "127.0.0.1:0", "--log", "info", "--db", self.schema.url()])
            .args(["--nats", &self.nats, "--node", name, "--cluster", &self.cluster.name])
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut addr, mut line) = (None, String::new());
        while !line.starts_with("node ") {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("node {name} did not start: {}", self.log_of(name));
            }
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                addr = Some(a.parse().unwrap());
            }
        }
        Proc { child, addr: addr.unwrap() }
    }

    /// What the process node `name` has logged so far.
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// A node in a process of its own; killed when dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
}

impl Proc {
    /// `kill -9`.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// `kill -TERM` (a clean shutdown), and waits until the process is gone.
    pub fn terminate(&mut self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + TIMEOUT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "the node did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the node at `addr` shows `who` to `viewer` as `status`.
pub async fn until_shown(addr: SocketAddr, viewer: &Session, who: &Session, status: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !Client::connect(addr).await.contacts(viewer).await.contains(&(who.email.clone(), status.into())) {
        assert!(tokio::time::Instant::now() < deadline, "{addr} never showed {} {status}", who.email);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two contacts made through `addr`, each on a connection of its own that
/// is closed again, and both shown offline there: whoever shows online
/// later does so through the connections a test opens (not a lingering
/// one that made them, whose close another node may learn of only after
/// it learned of the test's own connections).
pub async fn two_contacts(addr: SocketAddr, first: &str, second: &str) -> (Session, Session) {
    let x = Client::connect(addr).await.create(first).await;
    let y = Client::connect(addr).await.create(second).await;
    Client::connect(addr).await.befriend(&x, &y).await;
    until_shown(addr, &x, &y, "offline").await;
    until_shown(addr, &y, &x, "offline").await;
    (x, y)
}

/// The relay parts of a grant (flattened into `/call`'s or `/answer`'s
/// answer): the relay's address as the grant names it, handle, key.
pub fn grant_of(v: &Value, server: SocketAddr) -> (SocketAddr, u32, [u8; 16]) {
    let grant: babel_proto::RelayGrant = serde_json::from_value(v.clone()).unwrap();
    let (_, handle, key) = grant.parts().unwrap();
    (grant.relay_addr(server.ip()).unwrap(), handle, key)
}

/// Binds a UDP socket to its relay leg (BIND, and CONFIRM if challenged).
pub async fn bind(sock: &tokio::net::UdpSocket, relay: SocketAddr, handle: u32, key: &[u8; 16]) {
    use babel_proto::relay as wire;
    let mut buf = [0u8; 2048];
    for nonce in (1..200u64).step_by(2) {
        sock.send_to(&wire::encode_bind(handle, nonce, key), relay).await.unwrap();
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await else { continue };
        let Some(ack) = wire::verify_bind_ack(&buf[..n], key) else { continue };
        if ack.state == wire::BOUND {
            return;
        }
        sock.send_to(&wire::encode_confirm(handle, nonce + 1, &ack.cookie, key), relay).await.unwrap();
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await else { continue };
        if wire::verify_bind_ack(&buf[..n], key).is_some_and(|a| a.state == wire::BOUND) {
            return;
        }
    }
    panic!("the relay at {relay} never bound handle {handle}");
}

/// A relay leg as a grant gives it: the relay's address, handle and key.
pub type RelayLeg = (SocketAddr, u32, [u8; 16]);

/// Whether voice flows through the relay between two legs: binds a socket
/// to each, then sends `payload` on `speaker`'s (from user `speaker_id`)
/// until `listener`'s hears it relayed, for up to 50 tries.
pub async fn relay_carries(
    listener: RelayLeg,
    speaker: RelayLeg,
    speaker_id: babel_proto::UserId,
    payload: &[u8],
) -> bool {
    use babel_proto::relay as wire;
    let (listener_relay, listener_handle, listener_key) = listener;
    let (speaker_relay, speaker_handle, speaker_key) = speaker;
    let listener_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let speaker_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    bind(&listener_sock, listener_relay, listener_handle, &listener_key).await;
    bind(&speaker_sock, speaker_relay, speaker_handle, &speaker_key).await;
    let mut buf = [0u8; 2048];
    for counter in 1..50u64 {
        let mut d = Vec::new();
        wire::encode_data(speaker_handle, counter, &speaker_key, payload, &mut d);
        speaker_sock.send_to(&d, speaker_relay).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), listener_sock.recv(&mut buf)).await {
            if let Some((from, heard)) = wire::decode_relayed(&buf[..n]) {
                assert_eq!((from, heard), (speaker_id, payload));
                return true;
            }
        }
    }
    false
}

/// A call channel as a test drives it: `/connect_call` answered, then
/// request-shaped frames both ways.
pub struct Channel {
    pub client: Client,
    buf: bytes::BytesMut,
}

impl Channel {
    pub async fn open(addr: SocketAddr, s: &Session, call_id: &str) -> Channel {
        let mut client = Client::connect(addr).await;
        let (status, v) = client.call(s.header(), "/connect_call", json!({"call_id": call_id})).await;
        assert_eq!(status, 200, "/connect_call on {addr}: {v}");
        Channel { client, buf: bytes::BytesMut::new() }
    }

    pub async fn send(&mut self, text: &str) {
        let data = json!({"type": "voice", "nb_packets": "1", "size_packet": "4", "packets": [text]});
        self.client.write(&super::frame(&Value::Null, "/send", &data)).await;
    }

    /// The next frame: route, header, data; `None` once closed.
    pub async fn next(&mut self) -> Option<(String, Value, Value)> {
        use tokio::io::AsyncReadExt;
        let limits = babel_proto::Limits::default();
        loop {
            if let Some(f) = babel_proto::decode_request(&mut self.buf, &limits).unwrap() {
                let json = |b: &[u8]| if b.is_empty() { Value::Null } else { serde_json::from_slice(b).unwrap() };
                return Some((f.route_str().unwrap().to_owned(), json(&f.header), json(&f.data)));
            }
            let read = tokio::time::timeout(TIMEOUT, self.client.stream.read_buf(&mut self.buf));
            match read.await.expect("nothing on the channel in time") {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next `/send`'s sender and first packet.
    pub async fn heard(&mut self) -> (String, String) {
        let (route, header, data) = self.next().await.expect("the channel closed before a /send");
        assert_eq!(route, "/send", "{header} {data}");
        (header["id"].as_str().unwrap().to_owned(), data["packets"][0].as_str().unwrap().to_owned())
    }

    /// Asserts the channel ends with `/call_ended` for `call_id`, then closes.
    pub async fn ends(&mut self, call_id: &str) {
        loop {
            match self.next().await {
                Some((r, _, d)) if r == "/call_ended" => {
                    assert_eq!(d["call_id"], json!(call_id), "{d}");
                    break;
                }
                Some((r, _, _)) if r == "/send" => continue,
                other => panic!("expected /call_ended, got {other:?}"),
            }
        }
        assert!(self.next().await.is_none(), "the channel closes after /call_ended");
    }
}
