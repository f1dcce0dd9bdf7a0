//! Clients that fail over (issue #18, item 4): real `babel-server`
//! processes on one PostgreSQL schema (each test its own), the real client
//! library given a list of them. A node killed with SIGKILL, a first node
//! that is down, every node down, a node whose machine vanishes without a
//! close (a TCP proxy of this test's own that stops forwarding), and TLS
//! nodes whose certificates one cluster authority signed
//! (`scripts/cluster-ca.sh`, the openssl recipe the README gives).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use babel_client::{Client, ClientError, Endpoint, Event, EventStream, ServerAddr, TlsOptions, Trust, Untrusted};
use babel_proto::Presence;
use babel_server::store::pg::{ScratchSchema, scratch_for_tests};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASSWORD: &str = "password123";
/// The spec's bound: online again through another node within 5 s of a
/// node killed.
const BACK_WITHIN: Duration = Duration::from_secs(5);
/// Generous: for things that should happen at once on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(20);

/// One `babel-server` process; dropped (or [`Node::kill`]ed) with SIGKILL.
struct Node {
    child: Child,
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
}

impl Node {
    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn addr(&self) -> String {
        self.plain.unwrap().to_string()
    }

    fn tls_addr(&self) -> String {
        format!("tls://{}", self.tls.unwrap())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn schema() -> ScratchSchema {
    scratch_for_tests().unwrap_or_else(|e| panic!("{e}"))
}

/// Starts a node on `db` with `toml` before the cheap password settings
/// and `args` added; waits for its `listening on` lines.
fn node(db: &str, dir: &Path, toml: &str, args: &[&str]) -> Node {
    let config = dir.join(format!("babel-{}.toml", rand_suffix()));
    std::fs::write(&config, format!("{toml}\n[password]\nmemory_kib = 256\niterations = 1\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_babel-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--db", db])
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tls_wanted = args.contains(&"--tls-listen");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut plain, mut tls) = (None, None);
    while plain.is_none() || (tls_wanted && tls.is_none()) {
        let Some(Ok(line)) = lines.next() else { panic!("the node did not start") };
        if let Some(a) = line.strip_prefix("listening on tls://") {
            tls = Some(a.trim().parse().unwrap());
        } else if let Some(a) = line.strip_prefix("listening on ") {
            plain = Some(a.trim().parse().unwrap());
        }
    }
    // Drained until the node exits, so it never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Node { child, plain, tls }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// An address nothing listens on.
fn dead_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// A user with a client on `servers` (a list) and an account made there.
async fn user(servers: &str, email: &str) -> Client {
    let mut c = Client::connect(servers).await.unwrap().with_timeout(Duration::from_secs(3));
    c.create(email, PASSWORD, None).await.unwrap();
    c
}

async fn befriend(a: &mut Client, b: &mut Client) {
    let email = b.session().unwrap().email.clone();
    a.add_contact(&email).await.unwrap();
    b.accept_contact(a.user_id().unwrap()).await.unwrap();
}

/// Waits for the stream's next `Reconnected` (skipping the rest) and
/// answers when it came.
async fn back(events: &mut EventStream) -> Instant {
    loop {
        match tokio::time::timeout(TIMEOUT, events.next()).await {
            Ok(Some(Ok(Event::Reconnected))) => return Instant::now(),
            Ok(Some(Ok(_))) => {}
            other => panic!("the event stream did not come back: {other:?}"),
        }
    }
}

fn on(events: &EventStream) -> Option<String> {
    events.server().borrow().as_ref().map(ToString::to_string)
}

/// `who`'s presence as `viewer` sees it.
async fn seen(viewer: &mut Client, who: &Client) -> Presence {
    let id = who.user_id().unwrap();
    viewer.contacts().await.unwrap().into_iter().find(|e| e.user.id == id).unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_are_back_online_through_another_within_5_s() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let (a, b, c) = (
        node(schema.url(), dir.path(), "", &[]),
        node(schema.url(), dir.path(), "", &[]),
        node(schema.url(), dir.path(), "", &[]),
    );
    let list = format!("{},{},{}", a.addr(), b.addr(), c.addr());
    let mut ann = user(&list, "ann@example.org").await;
    assert_eq!(ann.addr(), a.addr(), "the first node of the list is used first");
    let mut bob = user(&b.addr(), "bob@example.org").await;
    befriend(&mut ann, &mut bob).await;
    let mut events = ann.events().await.unwrap();
    assert_eq!(on(&events), Some(a.addr()));
    let token = ann.session().unwrap().token.clone();

    let (a_addr, killed) = (a.addr(), Instant::now());
    a.kill();
    let came_back = back(&mut events).await;
    let took = came_back - killed;
    assert!(took < BACK_WITHIN, "the event stream took {took:?} to come back");
    assert_eq!(on(&events), Some(b.addr()), "the next node of the list, not the dead one");
    // Its contact on the surviving node sees it online, and its requests
    // go there, with the same session.
    assert_eq!(seen(&mut bob, &ann).await, Presence::Online);
    assert_eq!(seen(&mut ann, &bob).await, Presence::Online);
    assert_eq!(ann.addr(), b.addr());
    assert_eq!(ann.session().unwrap().token, token);
    assert!(ann.endpoint().servers().addrs().iter().any(|s| s.to_string() == a_addr), "the list is kept whole");

    // Killed again: on to the third node; the list wraps past the dead one.
    let killed = Instant::now();
    drop(b);
    let took = back(&mut events).await - killed;
    assert!(took < BACK_WITHIN, "the event stream took {took:?} to come back");
    assert_eq!(on(&events), Some(c.addr()));
    assert_eq!(ann.contacts().await.unwrap().len(), 1);
    assert_eq!(ann.addr(), c.addr());
}

#[tokio::test]
async fn a_first_node_down_at_start_is_passed_over() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let b = node(schema.url(), dir.path(), "", &[]);
    let list = format!("{},{}", dead_addr(), b.addr());
    let ann = user(&list, "ann@example.org").await;
    assert_eq!(ann.addr(), b.addr());
    assert_eq!(ann.servers(), list);
    let events = ann.events().await.unwrap();
    assert_eq!(on(&events), Some(b.addr()));
    // A session resumed on the list goes there too.
    let mut again = Client::resume(list.as_str(), ann.session().unwrap().clone()).await.unwrap();
    assert!(again.contacts().await.unwrap().is_empty());
    assert_eq!(again.addr(), b.addr());
}

#[tokio::test]
async fn every_node_down_is_one_error_naming_each_address() {
    let (x, y, z) = (dead_addr(), dead_addr(), dead_addr());
    let err = Client::connect(format!("{x},{y},tls://{z}")).await.unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    let text = err.to_string();
    for addr in [x, y, format!("tls://{z}")] {
        assert!(text.contains(&format!("cannot reach the server at {addr}")), "{addr} missing from: {text}");
    }
}

/// A TCP proxy in front of a node that can go silent, as a machine that
/// vanished: nothing more is forwarded either way and no connection is
/// closed or reset; new ones are accepted and held, unanswered.
struct Proxy {
    addr: SocketAddr,
    silent: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (silent, rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    if *rx.borrow() {
                        return hold_forever(vec![down]).await;
                    }
                    let Ok(up) = TcpStream::connect(upstream).await else { return };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::spawn(pump(dr, uw, rx.clone()));
                    tokio::spawn(pump(ur, dw, rx));
                });
            }
        });
        Proxy { addr, silent }
    }

    fn vanish(&self) {
        self.silent.send_replace(true);
    }
}

async fn hold_forever<T>(held: Vec<T>) {
    std::future::pending::<()>().await;
    drop(held);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let gone = silent.clone();
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => n,
            _ = silent.wait_for(|s| *s) => break,
        };
        match n {
            Ok(n) if n > 0 && !*gone.borrow() => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Ok(n) if n > 0 => break,
            _ => return,
        }
    }
    // Silent: both sockets stay open, nothing moves.
    hold_forever(vec![(from, to)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_vanishes_without_a_close_is_left_through_the_pings() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    // Pings every second, and a client that gives up after 3 s of silence:
    // the default (pings every 20 s, 25 s of silence) scaled down so the
    // test is short; the mechanism is the same.
    let fast = "ping_interval_secs = 1";
    let (a, b) = (node(schema.url(), dir.path(), fast, &[]), node(schema.url(), dir.path(), fast, &[]));
    let proxy = Proxy::start(a.plain.unwrap()).await;
    let list = format!("{},{}", proxy.addr, b.addr());
    let mut ann = user(&list, "ann@example.org").await.with_event_silence(Duration::from_secs(3));
    let mut bob = user(&b.addr(), "bob@example.org").await;
    befriend(&mut ann, &mut bob).await;
    let mut events = ann.events().await.unwrap();
    assert_eq!(on(&events), Some(proxy.addr.to_string()));
    // Pings flow through the proxy: the stream stays up meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(on(&events), Some(proxy.addr.to_string()), "a live node's stream was left");

    let vanished = Instant::now();
    proxy.vanish();
    let took = back(&mut events).await - vanished;
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "noticed before the silence allowed: {took:?}");
    assert_eq!(on(&events), Some(b.addr()));
    assert_eq!(seen(&mut bob, &ann).await, Presence::Online);
    // The client's own connection still goes to the silent proxy, but it
    // follows the stream to the live node instead of waiting there.
    assert_eq!(seen(&mut ann, &bob).await, Presence::Online);
    assert_eq!(ann.addr(), b.addr());
    drop(a);
}

/// `scripts/cluster-ca.sh DIR 127.0.0.1`: the authority (made once in
/// DIR) and a new certificate for 127.0.0.1, moved to `NAME.pem/.key`.
fn signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster-ca.sh");
    let out = Command::new("bash").arg(script).arg(dir).arg("127.0.0.1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::rename(dir.join("127.0.0.1.pem"), &cert).unwrap();
    std::fs::rename(dir.join("127.0.0.1.key"), &key).unwrap();
    (cert, key)
}

fn tls_node(db: &str, dir: &Path, (cert, key): (PathBuf, PathBuf)) -> Node {
    let (cert, key) = (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned());
    node(db, dir, "", &["--tls-listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_nodes_of_one_authority_fail_over_without_a_prompt_and_another_ca_is_refused() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let (ca_dir, other_ca) = (dir.path().join("ca"), dir.path().join("other-ca"));
    let (a, b) = (
        tls_node(schema.url(), dir.path(), signed(&ca_dir, "a")),
        tls_node(schema.url(), dir.path(), signed(&ca_dir, "b")),
    );
    let stranger = tls_node(schema.url(), dir.path(), signed(&other_ca, "c"));
    let home = tempfile::tempdir().unwrap();
    let roots = babel_client::tls::read_authority(&ca_dir.join("ca.pem")).unwrap();
    let tls = Arc::new(TlsOptions::in_dir(home.path()).with_authority(roots));
    let endpoint = |list: &str| Endpoint::with_tls(list, Arc::clone(&tls)).unwrap();

    let list = format!("{},{}", a.tls_addr(), b.tls_addr());
    let mut ann = Client::connect_to(endpoint(&list)).await.unwrap().with_timeout(Duration::from_secs(3));
    let Some(Trust::Authority(fp_a)) = ann.trust().cloned() else { panic!("{:?}", ann.trust()) };
    ann.create("ann@example.org", PASSWORD, None).await.unwrap();
    let mut bob = Client::connect_to(endpoint(&b.tls_addr())).await.unwrap();
    bob.create("bob@example.org", PASSWORD, None).await.unwrap();
    befriend(&mut ann, &mut bob).await;
    let mut events = ann.events().await.unwrap();
    assert_eq!(on(&events), Some(a.tls_addr()));

    let killed = Instant::now();
    a.kill();
    let took = back(&mut events).await - killed;
    assert!(took < BACK_WITHIN, "{took:?}");
    assert_eq!(on(&events), Some(b.tls_addr()));
    assert_eq!(seen(&mut ann, &bob).await, Presence::Online);
    let Some(Trust::Authority(fp_b)) = ann.trust().cloned() else { panic!("{:?}", ann.trust()) };
    assert_ne!(fp_a, fp_b, "two nodes, two certificates, one authority");
    assert!(!home.path().join("known_servers").exists(), "nothing was trusted on first use");

    // A node with a certificate from another authority is refused, alone
    // or in a list (where the others are used).
    let err = Client::connect_to(endpoint(&stranger.tls_addr())).await.unwrap_err();
    assert!(err.is_untrusted(), "{err:?}");
    assert!(
        matches!(&err, ClientError::Untrusted { why, .. } if matches!(why.as_ref(), Untrusted::Unknown { .. })),
        "{err:?}"
    );
    let mixed = format!("{},{}", stranger.tls_addr(), b.tls_addr());
    let c = Client::connect_to(endpoint(&mixed)).await.unwrap();
    assert_eq!(c.addr(), b.tls_addr());
    let stranger_addr: ServerAddr = stranger.tls_addr().parse().unwrap();
    assert_ne!(c.endpoint().current(), &stranger_addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_meanwhile_is_refused_on_the_next_node_and_the_stream_ends() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let (a, b) = (node(schema.url(), dir.path(), "", &[]), node(schema.url(), dir.path(), "", &[]));
    let list = format!("{},{}", a.addr(), b.addr());
    let ann = user(&list, "ann@example.org").await;
    let mut events = ann.events().await.unwrap();
    assert_eq!(on(&events), Some(a.addr()));
    // The session ends through the other node; then ann's node dies.
    let mut elsewhere = Client::resume(b.addr(), ann.session().unwrap().clone()).await.unwrap();
    elsewhere.logout().await.unwrap();
    a.kill();
    // The next node answers 401 (a node that answers is not second-guessed
    // on the others): the stream ends with it.
    let end = tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(_) | Event::Disconnected)) => {}
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(end, Some(Err(ClientError::Server(babel_proto::ReplyError::Unauthorized)))), "{end:?}");
    assert!(events.next().await.is_none(), "the stream ended for good");
}
