//! Several nodes as one service (issue #18 item 2): nodes on one
//! PostgreSQL database and one NATS, users on different nodes. Events,
//! contact changes, logouts and presence cross nodes; a killed node's users
//! go offline elsewhere; a node cut off from NATS drops its clients.
//!
//! Real engines only: PostgreSQL (`scripts/engines.sh` starts it; each test
//! has a schema of its own) and `nats-server` on 127.0.0.1:4222
//! (`BABEL_TEST_NATS` names another; each test has a cluster name of its
//! own, so tests share the server without hearing each other). Without
//! them the tests fail and say so. Nodes run in this process through the
//! library, except where a test kills one: that one is the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use babel_server::cluster::ClusterConfig;
use babel_server::{Config, RunningServer};
use common::cluster::{World, nats_greets, two_contacts};
use common::{Client, Events, Session, TIMEOUT, test_config};
use serde_json::{Value, json};

fn status_is(id: &str, status: &str) -> impl Fn(&Value) -> bool {
    let (id, status) = (id.to_owned(), status.to_owned());
    move |v| v["id"] == id.as_str() && v["status"] == status.as_str()
}

/// The `/status` events among `seen`.
fn statuses(seen: &[(String, Value)]) -> Vec<Value> {
    seen.iter().filter(|(r, _)| r == "/status").map(|(_, v)| v.clone()).collect()
}

/// The events that arrive within `d`, pings left out.
async fn quiet_for(events: &mut Events, d: Duration) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + d;
    while let Ok(Some(e)) = tokio::time::timeout_at(until, events.try_next()).await {
        if e.0 != "/ping" {
            seen.push(e);
        }
    }
    seen
}

#[tokio::test]
async fn events_and_contact_changes_cross_nodes() {
    let world = World::new();
    let (a, b) = (world.node("a").await, world.node("b").await);
    let mut on_a = Client::connect(a.addr()).await;
    let ann = on_a.create("ann@example.org").await;
    let mut on_b = Client::connect(b.addr()).await;
    let bob = on_b.create("bob@example.org").await;
    let mut ann_events = Events::open(a.addr(), &ann).await;
    let mut bob_events = Events::open(b.addr(), &bob).await;
    // Ann's contact list is cached on node a from here on.
    assert_eq!(on_a.contacts(&ann).await, vec![]);

    let (status, v) = on_a.call(ann.header(), "/add_contact", json!({"contact_email": "bob@example.org"})).await;
    assert_eq!(status, 200, "{v}");
    let request = bob_events.next_named("/contact_request").await;
    assert_eq!(request["email"], "ann@example.org");
    assert_eq!(ann_events.next_named("/contact_added").await["status"], "pending");

    let (status, v) = on_b.call(bob.header(), "/accept_contact", json!({"contact_id": ann.id})).await;
    assert_eq!(status, 200, "{v}");
    let added = ann_events.next_named("/contact_added").await;
    assert_eq!((&added["email"], &added["status"]), (&json!("bob@example.org"), &json!("online")), "{added}");
    // The event came after node a dropped its cached list: no waiting.
    assert_eq!(on_a.contacts(&ann).await, vec![("bob@example.org".to_owned(), "online".to_owned())]);
    assert_eq!(on_b.contacts(&bob).await, vec![("ann@example.org".to_owned(), "online".to_owned())]);

    // A removal on node b shows on node a at once, and is told there.
    let (status, v) = on_b.call(bob.header(), "/remove_contact", json!({"contact_id": ann.id})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(ann_events.next_named("/contact_removed").await, json!({"id": bob.id}));
    assert_eq!(on_a.contacts(&ann).await, vec![]);

    // A rename on node a reaches node b's cached lists.
    on_b.befriend(&ann, &bob).await;
    bob_events.next_named("/contact_added").await;
    assert_eq!(on_b.contacts(&bob).await.len(), 1);
    let (status, v) = on_a.call(ann.header(), "/rename", json!({"name": "Annie"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bob_events.next_named("/contact_updated").await["name"], "Annie");
    let (status, v) = on_b.call(bob.header(), "/contacts", Value::Null).await;
    assert_eq!((status, &v[0]["name"]), (200, &json!("Annie")), "{v}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_logout_on_one_node_is_refused_and_closed_on_the_others() {
    let world = World::new();
    let (a, b, c) = (world.node("a").await, world.node("b").await, world.node("c").await);
    let mut on_a = Client::connect(a.addr()).await;
    let ann = on_a.create("ann@example.org").await;
    let mut on_b = Client::connect(b.addr()).await;
    // The token works on b and c, and is cached there.
    assert_eq!(on_b.contacts(&ann).await, vec![]);
    let mut on_c = Client::connect(c.addr()).await;
    assert_eq!(on_c.contacts(&ann).await, vec![]);
    let mut stream_b = Events::open(b.addr(), &ann).await;
    // Another session of Ann's on c, which the logout must leave alone.
    let mut other = Client::connect(c.addr()).await;
    let ann2 = other.login("ann@example.org").await;
    let mut stream_c = Events::open(c.addr(), &ann2).await;

    let (status, v) = on_a.call(ann.header(), "/logout", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    let logged_out = Instant::now();
    // The logout waited for the other nodes: refused there already.
    for node in [b.addr(), c.addr()] {
        let (status, _) = Client::connect(node).await.call(ann.header(), "/contacts", Value::Null).await;
        assert_eq!(status, 401, "{node} took the token after the logout was answered");
    }
    loop {
        // A new connection each time: one the token works on speaks for
        // its session, and closes with it.
        let (status, _) = Client::connect(b.addr()).await.call(ann.header(), "/contacts", Value::Null).await;
        if status == 401 {
            break;
        }
        assert!(logged_out.elapsed() < TIMEOUT, "node b still takes the logged-out token");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The connections that spoke for the session close, on every node.
    assert!(on_b.is_closed().await && on_c.is_closed().await);
    let (status, _) = Client::connect(c.addr()).await.call(ann.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 401, "node c still takes the logged-out token");
    stream_b.closes().await;
    // The other session goes on, on every node.
    assert_eq!(other.contacts(&ann2).await, vec![]);
    let (status, v) = Client::connect(b.addr()).await.call(ann2.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert!(quiet_for(&mut stream_c, Duration::from_millis(300)).await.is_empty());

    // A password change on c ends the first session everywhere, with the
    // reason told.
    let ann3 = Client::connect(b.addr()).await.login("ann@example.org").await;
    let mut stream_b = Events::open(b.addr(), &ann3).await;
    let (status, v) =
        other.call(ann2.header(), "/change_password", json!({"pass": "password123", "new_pass": "password456"})).await;
    assert_eq!(status, 200, "{v}");
    let ended = stream_b.next_named("/session_ended").await;
    assert_eq!(ended["reason"], "password_changed", "{ended}");
    stream_b.closes().await;
    let (status, _) = Client::connect(a.addr()).await.call(ann3.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 401);
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn presence_is_the_union_of_the_nodes_told_once_per_change() {
    let world = World::new();
    let (a, b) = (world.node("a").await, world.node("b").await);
    let (wes, amy) = two_contacts(a.addr(), "wes@example.org", "amy@example.org").await;
    let mut watch = Events::open(a.addr(), &wes).await;
    let mut watcher = Client::connect(a.addr()).await;
    assert_eq!(watcher.contacts(&wes).await, vec![("amy@example.org".to_owned(), "offline".to_owned())]);
    // The befriending's own events (amy's "offline" among them) go out
    // through NATS and may reach this stream after it opened: let them pass,
    // so what follows counts only the changes this test makes.
    quiet_for(&mut watch, Duration::from_millis(500)).await;

    // Amy comes online on b: wes, on a, hears it once.
    let amy_b = Events::open(b.addr(), &amy).await;
    let seen = watch.until("/status", status_is(&amy.id, "online")).await;
    assert_eq!(statuses(&seen).len(), 1, "{seen:?}");
    assert_eq!(watcher.contacts(&wes).await, vec![("amy@example.org".to_owned(), "online".to_owned())]);
    // ... and on a as well: nothing changes for wes.
    let amy_a = Events::open(a.addr(), &amy).await;
    // Leaving b keeps her online through a.
    drop(amy_b);
    assert!(quiet_for(&mut watch, Duration::from_millis(500)).await.is_empty(), "no flapping");
    // Her status choice shows on the other node.
    let mut amy_client = Client::connect(b.addr()).await;
    let (status, v) = amy_client.call(amy.header(), "/set_status", json!({"status": "dnd"})).await;
    assert_eq!(status, 200, "{v}");
    let seen = watch.until("/status", status_is(&amy.id, "dnd")).await;
    assert_eq!(statuses(&seen).len(), 1, "{seen:?}");
    drop(amy_client);
    drop(amy_a);
    let seen = watch.until("/status", status_is(&amy.id, "offline")).await;
    assert_eq!(statuses(&seen).len(), 1, "{seen:?}");
    assert!(quiet_for(&mut watch, Duration::from_millis(300)).await.is_empty());
    assert_eq!(watcher.contacts(&wes).await, vec![("amy@example.org".to_owned(), "offline".to_owned())]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_started_later_learns_who_is_online() {
    let world = World::new();
    let a = world.node("a").await;
    let (wes, amy) = two_contacts(a.addr(), "wes@example.org", "amy@example.org").await;
    let _amy = Events::open(a.addr(), &amy).await;
    let b = world.node("b").await;
    let mut on_b = Client::connect(b.addr()).await;
    let deadline = Instant::now() + TIMEOUT;
    while on_b.contacts(&wes).await != vec![("amy@example.org".to_owned(), "online".to_owned())] {
        assert!(Instant::now() < deadline, "node b never learned that amy is online on a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A node that stops tells the others at once.
    let mut watch = Events::open(b.addr(), &wes).await;
    a.shutdown().await;
    watch.until("/status", status_is(&amy.id, "offline")).await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_users_of_a_killed_node_go_offline_elsewhere_within_ten_seconds() {
    let world = World::new();
    let a = world.node("a").await;
    let doomed = world.process("doomed");
    let (wes, amy) = two_contacts(a.addr(), "wes@example.org", "amy@example.org").await;
    let mut watch = Events::open(a.addr(), &wes).await;
    let _amy = Events::open(doomed.addr, &amy).await;
    watch.until("/status", status_is(&amy.id, "online")).await;

    let mut doomed = doomed;
    doomed.kill();
    let killed = Instant::now();
    watch.until("/status", status_is(&amy.id, "offline")).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "amy showed offline only after {took:?}");
    a.shutdown().await;
}

/// A nats-server of a test's own, on a port of its own.
struct PrivateNats {
    child: Child,
    port: u16,
}

impl PrivateNats {
    fn start(port: u16) -> PrivateNats {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("this test needs nats-server (scripts/setup.sh installs it): {e}"));
        let deadline = Instant::now() + TIMEOUT;
        while !nats_greets(&format!("127.0.0.1:{port}")) {
            assert!(Instant::now() < deadline, "the private nats-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateNats { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_node_cut_off_from_nats_drops_its_clients_and_comes_back() {
    let mut world = World::new();
    let mut nats = PrivateNats::start(free_port());
    world.nats = format!("nats://127.0.0.1:{}", nats.port);
    world.cluster = ClusterConfig { heartbeat_ms: 200, lease_ms: 1000, dead_after_ms: 1500, ..world.cluster };
    let a = world.node("a").await;
    let (wes, amy) = two_contacts(a.addr(), "wes@example.org", "amy@example.org").await;
    let mut amy_events = Events::open(a.addr(), &amy).await;
    let mut wes_client = Client::connect(a.addr()).await;
    assert_eq!(wes_client.contacts(&wes).await, vec![("amy@example.org".to_owned(), "online".to_owned())]);

    nats.kill();
    // Within the lease and a little: the event stream closes, and requests
    // are refused with a reason.
    while amy_events.try_next().await.is_some() {}
    assert!(wes_client.is_closed().await, "a connection that spoke for a session is dropped too");
    let (status, v) = Client::connect(a.addr()).await.call(wes.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().is_some_and(|t| t.contains("cut off")), "{v}");

    // NATS back: the node serves again.
    let _nats = PrivateNats::start(nats.port);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, v) = Client::connect(a.addr()).await.call(wes.header(), "/contacts", Value::Null).await;
        if status == 200 {
            assert_eq!(v[0]["status"], "offline", "amy's stream was dropped: {v}");
            break;
        }
        assert!(Instant::now() < deadline, "the node never served again: {status} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
}

fn user_id(s: &Session) -> babel_proto::UserId {
    babel_proto::UserId(s.id.parse().unwrap())
}

/// Makes two users contacts behind the nodes' backs, straight in the
/// database: only a node that reads the database sees it.
async fn befriend_in_the_database(world: &World, a: &Session, b: &Session) {
    use babel_server::store::Store;
    let (url, a, b) = (world.schema.url().to_owned(), user_id(a), user_id(b));
    // The PostgreSQL driver blocks: off the runtime's thread.
    tokio::task::spawn_blocking(move || {
        let store = babel_server::store::pg::PgStore::open(&url).unwrap();
        store.add_request(a, b, 0).unwrap();
        assert!(store.accept_request(b, a).unwrap());
    })
    .await
    .unwrap();
}

/// Polls `/contacts` (on new connections) until it lists `want`.
async fn until_contacts(addr: SocketAddr, s: &Session, want: usize, why: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut c = Client::connect(addr).await;
        if c.contacts(s).await.len() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_gap_in_a_nodes_notes_makes_the_others_resynchronise() {
    let world = World::new();
    let a = world.node("a").await;
    let mut c = Client::connect(a.addr()).await;
    let ann = c.create("ann@example.org").await;
    let bob = c.create("bob@example.org").await;
    assert_eq!(c.contacts(&ann).await, vec![]);
    befriend_in_the_database(&world, &ann, &bob).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.contacts(&ann).await, vec![], "node a answers from its cache");

    // Another node whose note 2 went missing: a heartbeat says 2 was sent.
    let ghost = async_nats::connect(world.nats.as_str()).await.unwrap();
    let subject = babel_server::cluster::state_subject(&world.cluster.name);
    for seq in [1, 2] {
        let note = babel_server::cluster::Note {
            node: "ghost".into(),
            inc: 7,
            seq,
            body: babel_server::cluster::Body::Heartbeat,
        };
        ghost.publish(subject.clone(), serde_json::to_vec(&note).unwrap().into()).await.unwrap();
    }
    ghost.flush().await.unwrap();
    until_contacts(a.addr(), &ann, 1, "node a never resynchronised after the gap").await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_node_that_lost_nats_reads_the_database_until_the_lease_runs_out() {
    let mut world = World::new();
    let mut nats = PrivateNats::start(free_port());
    world.nats = format!("nats://127.0.0.1:{}", nats.port);
    world.cluster = ClusterConfig { heartbeat_ms: 200, lease_ms: 60_000, dead_after_ms: 90_000, ..world.cluster };
    let a = world.node("a").await;
    let mut c = Client::connect(a.addr()).await;
    let ann = c.create("ann@example.org").await;
    let bob = c.create("bob@example.org").await;
    assert_eq!(c.contacts(&ann).await, vec![]);
    nats.kill();
    // What another node may have changed meanwhile is seen, since the
    // node no longer trusts its caches.
    befriend_in_the_database(&world, &ann, &bob).await;
    until_contacts(a.addr(), &ann, 1, "node a kept answering from its cache without NATS").await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_logout_elsewhere_ends_the_sessions_calls_and_relay_legs() {
    let world = World::new();
    let (a, b) = (world.node("a").await, world.node("b").await);
    let (ann, bob) = two_contacts(a.addr(), "ann@example.org", "bob@example.org").await;
    // Both call through node b.
    let mut bob_events = Events::open(b.addr(), &bob).await;
    let (mut ann_b, mut bob_b) = (Client::connect(b.addr()).await, Client::connect(b.addr()).await);
    let (status, v) = ann_b.call(ann.header(), "/call", json!({"contact_id": bob.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    let (status, v) = bob_b.call(bob.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(b.app().calls_in_progress(), 1);
    assert_eq!(b.app().relay().leg_count(), 2, "both have relay legs on b");

    let (status, v) = Client::connect(a.addr()).await.call(ann.header(), "/logout", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    let ended = bob_events.next_named("/call_ended").await;
    assert_eq!(ended["call_id"], json!(call_id), "{ended}");
    assert_eq!(b.app().calls_in_progress(), 0);
    assert_eq!(b.app().relay().leg_count(), 0, "the legs are revoked");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_session_expired_by_one_node_ends_on_the_others() {
    let world = World::new();
    // Only node a expires sessions this soon, so a is the one that purges.
    let a = RunningServer::start(&Config { session_ttl_secs: 2, ..world.config("a") }).await.unwrap();
    let b = world.node("b").await;
    let ann = Client::connect(a.addr()).await.create("ann@example.org").await;
    let mut stream = Events::open(b.addr(), &ann).await;
    let ended = stream.next_named("/session_ended").await;
    assert_eq!(ended["reason"], "expired", "{ended}");
    stream.closes().await;
    let (status, _) = Client::connect(b.addr()).await.call(ann.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 401);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn embedded_nodes_join_a_cluster() {
    let world = World::new();
    let node = |name: &'static str| {
        let cluster = world.cluster.clone();
        babel_server::Embedded::builder()
            .fast_hashing()
            .cluster(world.schema.url(), &world.nats, name)
            .config(move |c| c.cluster = cluster)
            .start()
    };
    let (a, b) = (node("a").await.unwrap(), node("b").await.unwrap());
    assert_eq!(a.server().node(), Some("a"));
    let (ann, bob) = two_contacts(a.addr(), "ann@example.org", "bob@example.org").await;
    let mut bob_events = Events::open(b.addr(), &bob).await;
    let (status, v) = Client::connect(a.addr())
        .await
        .call(ann.header(), "/send_message", json!({"contact_id": bob.id, "text": "hi"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bob_events.next_named("/message").await["text"], "hi");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_node_whose_nats_does_not_answer_does_not_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = Config { nats: Some(format!("nats://user:secret@127.0.0.1:{port}")), ..test_config(&dir) };
    let err = RunningServer::start(&config).await.expect_err("no NATS there").to_string();
    assert!(err.contains(&format!("cannot reach NATS at nats://127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "the password reached the message: {err}");
}

#[tokio::test]
async fn busy_on_one_node_shows_on_the_others() {
    let world = World::new();
    let (a, b) = (world.node("a").await, world.node("b").await);
    let (ann, bob) = two_contacts(b.addr(), "ann@example.org", "bob@example.org").await;
    let (wes, _) = two_contacts(a.addr(), "wes@example.org", "ann2@example.org").await;
    Client::connect(a.addr()).await.befriend(&wes, &ann).await;
    let mut watch = Events::open(a.addr(), &wes).await;
    // Ann and Bob talk through node b; Wes watches from node a.
    let _bob_events = Events::open(b.addr(), &bob).await;
    let (mut ann_b, mut bob_b) = (Client::connect(b.addr()).await, Client::connect(b.addr()).await);
    let (status, v) = ann_b.call(ann.header(), "/call", json!({"contact_id": bob.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    watch.until("/status", status_is(&ann.id, "online")).await;
    let (status, v) = bob_b.call(bob.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    let seen = watch.until("/status", status_is(&ann.id, "busy")).await;
    assert_eq!(statuses(&seen).iter().filter(|s| s["id"] == ann.id.as_str()).count(), 1, "{seen:?}");
    let (status, v) = Client::connect(a.addr()).await.call(wes.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.as_array().unwrap().iter().any(|c| c["id"] == ann.id.as_str() && c["status"] == "busy"), "{v}");
    let (status, v) = ann_b.call(ann.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    watch.until("/status", status_is(&ann.id, "online")).await;
    a.shutdown().await;
    b.shutdown().await;
}
