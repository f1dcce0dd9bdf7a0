//! Calls across nodes (issue #18 item 3, first steps): the caller on node
//! `a`, the callee on node `b`. The call's home is `a` (it received the
//! `/call`); `b` forwards the callee's `/answer` and `/hangup` there.
//!
//! Real engines, as in `tests/cluster.rs`: PostgreSQL (a schema per test)
//! and `nats-server` on 127.0.0.1:4222 (`BABEL_TEST_NATS` names another; a
//! cluster name per test). Without them the tests fail and say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use babel_server::cluster::ClusterConfig;
use babel_server::store::pg::{ScratchSchema, scratch_for_tests};
use babel_server::{Config, RunningServer};
use common::{Client, Events, Session, TIMEOUT, assert_refused, test_config};
use serde_json::{Value, json};

fn nats_url() -> String {
    let url = std::env::var("BABEL_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr: SocketAddr = url.trim_start_matches("nats://").parse().unwrap();
    let mut head = [0u8; 4];
    let greets = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            s.read_exact(&mut head).is_ok() && &head == b"INFO"
        })
        .unwrap_or(false);
    assert!(greets, "this test needs nats-server at {url}: scripts/engines.sh starts it, or set BABEL_TEST_NATS");
    url
}

struct World {
    schema: ScratchSchema,
    nats: String,
    cluster: ClusterConfig,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).unwrap();
        let name = format!("x{}_{}", std::process::id(), r.iter().map(|b| format!("{b:02x}")).collect::<String>());
        World {
            nats: nats_url(),
            schema: scratch_for_tests().unwrap_or_else(|e| panic!("{e}")),
            cluster: ClusterConfig { name, ..ClusterConfig::default() },
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn node(&self, name: &str, ring_timeout_secs: u64) -> RunningServer {
        let config = Config {
            db: self.schema.url().into(),
            nats: Some(self.nats.clone()),
            node: Some(name.into()),
            cluster: self.cluster.clone(),
            ring_timeout_secs,
            ..test_config(&self.dir)
        };
        RunningServer::start(&config).await.unwrap_or_else(|e| panic!("node {name} did not start: {e}"))
    }
}

/// Two nodes; ann (events on `a`) and bob (events on `b`) are contacts, and
/// `a` knows bob is online.
struct Pair {
    a: RunningServer,
    b: RunningServer,
    ann: Session,
    bob: Session,
    ann_events: Events,
    bob_events: Events,
    _world: World,
}

async fn pair(ring_timeout_secs: u64) -> Pair {
    let world = World::new();
    let (a, b) = (world.node("a", ring_timeout_secs).await, world.node("b", ring_timeout_secs).await);
    let mut c = Client::connect(a.addr()).await;
    let ann = c.create("ann@example.org").await;
    let bob = c.create("bob@example.org").await;
    c.befriend(&ann, &bob).await;
    let ann_events = Events::open(a.addr(), &ann).await;
    let bob_events = Events::open(b.addr(), &bob).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while c.contacts(&ann).await != vec![("bob@example.org".to_owned(), "online".to_owned())] {
        assert!(tokio::time::Instant::now() < deadline, "node a never saw bob online on node b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Pair { a, b, ann, bob, ann_events, bob_events, _world: world }
}

impl Pair {
    /// Ann calls bob through `a`; bob's events on `b` ring. The call id.
    async fn ring(&mut self) -> String {
        let (status, v) = Client::connect(self.a.addr())
            .await
            .call(self.ann.header(), "/call", json!({"contact_id": self.bob.id}))
            .await;
        assert_eq!(status, 200, "{v}");
        let call_id = v["call_id"].as_str().unwrap().to_owned();
        let rung = self.bob_events.next_named("/incoming_call").await;
        assert_eq!(rung["call_id"], json!(call_id), "{rung}");
        assert_eq!(rung["id"], json!(self.ann.id), "{rung}");
        assert_eq!(self.a.app().calls_in_progress(), 1, "a is the call's home");
        assert_eq!(self.b.app().calls_in_progress(), 0);
        call_id
    }

    async fn on_b(&self, route: &str, data: Value) -> (i32, Value) {
        Client::connect(self.b.addr()).await.call(self.bob.header(), route, data).await
    }

    async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

/// Waits until node `a` holds no call.
async fn until_no_call(server: &RunningServer) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while server.app().calls_in_progress() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call never ended at its home");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_call_rings_on_another_node_and_is_answered_and_hung_up_there() {
    let mut p = pair(30).await;
    let call_id = p.ring().await;

    let (status, v) = p.on_b("/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["call_id"], json!(call_id), "{v}");
    let home_relay = p.a.app().relay().port().to_string();
    assert_eq!(v["relay_port"], json!(home_relay), "bob's relay grant is for the home's relay: {v}");
    let accepted = p.ann_events.next_named("/call_accepted").await;
    assert_eq!(accepted["call_id"], json!(call_id), "{accepted}");
    assert_eq!(p.a.app().relay().leg_count(), 2, "both relay legs are on the home");

    // A second answer from b reaches the home too, which refuses it.
    assert_refused(p.on_b("/answer", json!({"call_id": call_id, "accept": "true"})).await, "");

    let (status, v) = p.on_b("/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    let ended = p.ann_events.next_named("/call_ended").await;
    assert_eq!(ended["call_id"], json!(call_id), "{ended}");
    until_no_call(&p.a).await;
    assert_eq!(p.a.app().relay().leg_count(), 0);
    // Over: nobody answers for it any more, so b refuses it at once.
    assert_refused(p.on_b("/hangup", json!({"call_id": call_id})).await, "no such call");
    p.shutdown().await;
}

#[tokio::test]
async fn relay_only_is_kept_when_the_answer_is_forwarded() {
    let mut p = pair(30).await;
    let call_id = p.ring().await;
    let answer = json!({"call_id": call_id, "accept": "true", "relay_only": "true", "candidates": ["127.0.0.1:5555"]});
    let (status, v) = p.on_b("/answer", answer).await;
    assert_eq!(status, 200, "{v}");
    let accepted = p.ann_events.next_named("/call_accepted").await;
    assert_eq!(accepted["call_id"], json!(call_id), "{accepted}");
    assert!(!accepted.to_string().contains("5555"), "bob asked for relay-only: {accepted}");
    p.shutdown().await;
}

#[tokio::test]
async fn a_decline_on_another_node_reaches_the_caller() {
    let mut p = pair(30).await;
    let call_id = p.ring().await;
    let (status, v) = p.on_b("/answer", json!({"call_id": call_id, "accept": "false"})).await;
    assert_eq!(status, 200, "{v}");
    let declined = p.ann_events.next_named("/call_declined").await;
    assert_eq!(declined["call_id"], json!(call_id), "{declined}");
    until_no_call(&p.a).await;
    p.shutdown().await;
}

#[tokio::test]
async fn the_caller_hanging_up_at_home_stops_the_ringing_on_another_node() {
    let mut p = pair(30).await;
    let call_id = p.ring().await;
    let (status, v) =
        Client::connect(p.a.addr()).await.call(p.ann.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    let ended = p.bob_events.next_named("/call_ended").await;
    assert_eq!(ended["call_id"], json!(call_id), "{ended}");
    until_no_call(&p.a).await;
    assert_refused(p.on_b("/answer", json!({"call_id": call_id, "accept": "true"})).await, "no such call");
    p.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_call_times_out_on_both_nodes() {
    let mut p = pair(1).await;
    let call_id = p.ring().await;
    let ended = p.bob_events.next_named("/call_ended").await;
    assert_eq!(ended["call_id"], json!(call_id), "{ended}");
    let ann_saw = p.ann_events.until("/call_ended", |v| v["call_id"] == json!(call_id)).await;
    assert!(!ann_saw.is_empty());
    until_no_call(&p.a).await;
    assert_refused(p.on_b("/answer", json!({"call_id": call_id, "accept": "true"})).await, "no such call");
    p.shutdown().await;
}

#[tokio::test]
async fn a_call_nobody_holds_is_refused_on_any_node() {
    let p = pair(30).await;
    assert_refused(p.on_b("/answer", json!({"call_id": "12345", "accept": "true"})).await, "no such call");
    assert_refused(p.on_b("/hangup", json!({"call_id": "12345"})).await, "no such call");
    p.shutdown().await;
}

/// The relay parts of a grant (flattened into `/call`'s or `/answer`'s
/// answer): the relay's address as the grant names it, handle, key.
fn grant_of(v: &Value, server: SocketAddr) -> (SocketAddr, u32, [u8; 16]) {
    let grant: babel_proto::RelayGrant = serde_json::from_value(v.clone()).unwrap();
    let (_, handle, key) = grant.parts().unwrap();
    (grant.relay_addr(server.ip()).unwrap(), handle, key)
}

/// Binds a UDP socket to its relay leg (BIND, and CONFIRM if challenged).
async fn bind(sock: &tokio::net::UdpSocket, relay: SocketAddr, handle: u32, key: &[u8; 16]) {
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

#[tokio::test]
async fn voice_from_a_callee_on_another_node_flows_through_the_homes_relay() {
    use babel_proto::relay as wire;
    let mut p = pair(30).await;
    let (status, v) =
        Client::connect(p.a.addr()).await.call(p.ann.header(), "/call", json!({"contact_id": p.bob.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    assert!(v.get("relay_host").is_none(), "ann talks to the home: no host named: {v}");
    let (ann_relay, ann_handle, ann_key) = grant_of(&v, p.a.addr());
    p.bob_events.next_named("/incoming_call").await;
    let (status, v) = p.on_b("/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    let home_relay = p.a.app().relay().port();
    assert_eq!(v["relay_host"], json!("127.0.0.1"), "bob talks to b; his grant names the home's relay: {v}");
    let (bob_relay, bob_handle, bob_key) = grant_of(&v, p.b.addr());
    assert_eq!((ann_relay.port(), bob_relay.port()), (home_relay, home_relay), "both on the home's relay");
    assert_ne!(bob_relay.port(), p.b.app().relay().port());

    let ann_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bob_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    bind(&ann_sock, ann_relay, ann_handle, &ann_key).await;
    bind(&bob_sock, bob_relay, bob_handle, &bob_key).await;
    let bob_id = babel_proto::UserId(p.bob.id.parse().unwrap());
    let mut buf = [0u8; 2048];
    let mut heard = false;
    for counter in 1..50u64 {
        let mut d = Vec::new();
        wire::encode_data(bob_handle, counter, &bob_key, b"bob's voice", &mut d);
        bob_sock.send_to(&d, bob_relay).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), ann_sock.recv(&mut buf)).await {
            if let Some((from, payload)) = wire::decode_relayed(&buf[..n]) {
                assert_eq!((from, payload), (bob_id, &b"bob's voice"[..]));
                heard = true;
                break;
            }
        }
    }
    assert!(heard, "bob's voice never reached ann through the home's relay");
    p.shutdown().await;
}

#[tokio::test]
async fn a_member_on_another_node_invites_a_contact_on_that_node() {
    let mut p = pair(30).await;
    let mut c = Client::connect(p.a.addr()).await;
    let cal = c.create("cal@example.org").await;
    c.befriend(&p.bob, &cal).await;
    let mut cal_events = Events::open(p.b.addr(), &cal).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !c.contacts(&p.bob).await.contains(&("cal@example.org".to_owned(), "online".to_owned())) {
        assert!(tokio::time::Instant::now() < deadline, "node a never saw cal online on node b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call_id = p.ring().await;
    let (status, v) = p.on_b("/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");

    // Bob, on b, invites cal; the home (a) rings cal's session on b.
    let (status, v) = p.on_b("/invite", json!({"call_id": call_id, "contact_id": cal.id})).await;
    assert_eq!(status, 200, "{v}");
    let rung = cal_events.next_named("/incoming_call").await;
    assert_eq!(rung["call_id"], json!(call_id), "{rung}");
    let (status, v) = Client::connect(p.b.addr())
        .await
        .call(cal.header(), "/answer", json!({"call_id": call_id, "accept": "true"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["participants"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(p.a.app().relay().leg_count(), 3, "three legs on the home's relay");
    // The home judges invitations sent through b: ann is in the call already.
    let (status, v) = Client::connect(p.b.addr())
        .await
        .call(p.bob.header(), "/invite", json!({"call_id": call_id, "contact_id": p.ann.id}))
        .await;
    assert_eq!(status, 403, "ann is already in the call: {v}");
    p.shutdown().await;
}
