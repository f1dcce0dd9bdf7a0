//! Calls across nodes (issue #18 item 3, first steps): the caller on node
//! `a`, the callee on node `b`. The call's home is `a` (it received the
//! `/call`); `b` forwards the callee's `/answer` and `/hangup` there.
//!
//! Real engines, as in `tests/cluster.rs`: PostgreSQL (a schema per test)
//! and `nats-server` on 127.0.0.1:4222 (`BABEL_TEST_NATS` names another; a
//! cluster name per test). Without them the tests fail and say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use babel_server::{Config, RunningServer};
use common::cluster::{Channel, World, bind, grant_of, relay_carries, two_contacts, until_shown};
use common::{Client, Events, Session, TIMEOUT, assert_refused};
use serde_json::{Value, json};

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
    pair_with(|c| c.ring_timeout_secs = ring_timeout_secs).await
}

async fn pair_with(f: impl Fn(&mut Config)) -> Pair {
    let world = World::new();
    let (a, b) = (world.node_with("a", &f).await, world.node_with("b", &f).await);
    let (ann, bob) = two_contacts(a.addr(), "ann@example.org", "bob@example.org").await;
    let ann_events = Events::open(a.addr(), &ann).await;
    let bob_events = Events::open(b.addr(), &bob).await;
    until_shown(a.addr(), &ann, &bob, "online").await;
    Pair { a, b, ann, bob, ann_events, bob_events, _world: world }
}

impl Pair {
    /// Ann calls bob through `a`, `/call` carrying `extra`'s fields too:
    /// the answer and the call id.
    async fn call(&self, extra: Value) -> (Value, String) {
        let mut data = json!({"contact_id": self.bob.id});
        if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
        let (status, v) = Client::connect(self.a.addr()).await.call(self.ann.header(), "/call", data).await;
        assert_eq!(status, 200, "{v}");
        let call_id = v["call_id"].as_str().unwrap().to_owned();
        (v, call_id)
    }

    /// Bob answers `call_id` through `b`, accepting: the answer.
    async fn answer(&self, call_id: &str) -> Value {
        let (status, v) = self.on_b("/answer", json!({"call_id": call_id, "accept": "true"})).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Ann calls bob through `a`; bob's events on `b` ring. The call id.
    async fn ring(&mut self) -> String {
        let (_, call_id) = self.call(Value::Null).await;
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

    let v = p.answer(&call_id).await;
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

#[tokio::test]
async fn voice_from_a_callee_on_another_node_flows_through_the_homes_relay() {
    let mut p = pair(30).await;
    let (v, call_id) = p.call(Value::Null).await;
    assert!(v.get("relay_host").is_none(), "ann talks to the home: no host named: {v}");
    let ann_leg = grant_of(&v, p.a.addr());
    p.bob_events.next_named("/incoming_call").await;
    let v = p.answer(&call_id).await;
    let home_relay = p.a.app().relay().port();
    assert_eq!(v["relay_host"], json!("127.0.0.1"), "bob talks to b; his grant names the home's relay: {v}");
    let bob_leg = grant_of(&v, p.b.addr());
    assert_eq!((ann_leg.0.port(), bob_leg.0.port()), (home_relay, home_relay), "both on the home's relay");
    assert_ne!(bob_leg.0.port(), p.b.app().relay().port());
    let bob_id = babel_proto::UserId(p.bob.id.parse().unwrap());
    assert!(
        relay_carries(ann_leg, bob_leg, bob_id, b"bob's voice").await,
        "bob's voice never reached ann through the home's relay"
    );
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
    p.answer(&call_id).await;

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

/// A commitment and the key behind it (PROTOCOL.md's example values; the
/// server does not judge one against the other).
const KEY_COMMIT: &str = "a0oliH9TZTQoY1DC5F9jGBa2+AbGO5yPxM4B2Brpk7U=";
const KEY: &str = "pOCSkrZRwni5dyxWn1+puxPZBrRqtoyd+dwrRAn4ogk=";

#[tokio::test]
async fn call_key_sent_to_another_node_reaches_the_home_with_one_node_statuses() {
    let mut p = pair(30).await;
    let (_, call_id) = p.call(json!({"key_commit": KEY_COMMIT})).await;
    let rung = p.bob_events.next_named("/incoming_call").await;
    assert_eq!(rung["key_commit"], json!(KEY_COMMIT), "{rung}");
    // Ann's client moved to node b: her /call_key goes through b.
    let ann_on_b = |data: Value| {
        let (addr, header) = (p.b.addr(), p.ann.header());
        async move { Client::connect(addr).await.call(header, "/call_key", data).await }
    };
    let reveal = json!({"call_id": call_id, "key": KEY});
    assert_refused(ann_on_b(reveal.clone()).await, "not been answered");
    p.answer(&call_id).await;
    p.ann_events.next_named("/call_accepted").await;
    // Bob committed to nothing.
    assert_refused(p.on_b("/call_key", reveal.clone()).await, "committed to no key");
    let (status, v) = ann_on_b(reveal.clone()).await;
    assert_eq!(status, 200, "{v}");
    let told = p.bob_events.next_named("/call_key").await;
    assert_eq!(told, json!({"call_id": call_id, "id": p.ann.id, "key": KEY}));
    assert_refused(ann_on_b(reveal.clone()).await, "already revealed");
    // A malformed key is refused where it arrives, as on one node.
    let (status, v) = ann_on_b(json!({"call_id": call_id, "key": "short"})).await;
    assert_eq!(status, 400, "{v}");
    // Someone not in the call, and a call that exists nowhere.
    let mut c = Client::connect(p.b.addr()).await;
    let cal = c.create("cal@example.org").await;
    let (status, v) = c.call(cal.header(), "/call_key", reveal.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert_refused(p.on_b("/call_key", json!({"call_id": "12345", "key": KEY})).await, "no such call");
    p.shutdown().await;
}

#[tokio::test]
async fn call_nonce_from_a_member_on_another_node_reaches_members_on_both_nodes() {
    let mut p = pair(30).await;
    let world_c = p.a.addr();
    let mut c = Client::connect(world_c).await;
    let cal = c.create("cal@example.org").await;
    c.befriend(&p.ann, &cal).await;
    let mut cal_events = Events::open(p.a.addr(), &cal).await;
    let call_id = p.ring().await;
    p.answer(&call_id).await;
    let (status, v) = c.call(p.ann.header(), "/invite", json!({"call_id": call_id, "contact_id": cal.id})).await;
    assert_eq!(status, 200, "{v}");
    cal_events.next_named("/incoming_call").await;
    // Cal is rung, not yet a member: his nonce is refused, through b too.
    let nonce = json!({"call_id": call_id, "nonce": "AAAAAAAAAAAAAAAAAAAAAA=="});
    let (status, v) = Client::connect(p.b.addr()).await.call(cal.header(), "/call_nonce", nonce.clone()).await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = c.call(cal.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    // Bob, a member talking to b, answers cal's commitment: both others hear it.
    let (status, v) = p.on_b("/call_nonce", nonce).await;
    assert_eq!(status, 200, "{v}");
    let want = json!({"call_id": call_id, "id": p.bob.id, "nonce": "AAAAAAAAAAAAAAAAAAAAAA=="});
    assert_eq!(p.ann_events.next_named("/call_nonce").await, want);
    assert_eq!(cal_events.next_named("/call_nonce").await, want);
    p.shutdown().await;
}

/// The home's relay learns each side's public address from its BIND; each
/// other participant hears of it by `/call_candidates`, on whatever node
/// its events are.
#[tokio::test]
async fn call_candidates_learned_at_the_homes_relay_reach_participants_on_both_nodes() {
    let mut p = pair(30).await;
    let (v, call_id) = p.call(Value::Null).await;
    let (ann_relay, ann_handle, ann_key) = grant_of(&v, p.a.addr());
    p.bob_events.next_named("/incoming_call").await;
    let v = p.answer(&call_id).await;
    let (bob_relay, bob_handle, bob_key) = grant_of(&v, p.b.addr());
    p.ann_events.next_named("/call_accepted").await;

    let bob_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    bind(&bob_sock, bob_relay, bob_handle, &bob_key).await;
    let bob_public = bob_sock.local_addr().unwrap().to_string();
    let seen = p.ann_events.until("/call_candidates", |v| v["id"] == json!(p.bob.id)).await;
    let update = &seen.last().unwrap().1;
    assert_eq!(update["call_id"], json!(call_id), "{update}");
    assert!(update["candidates"].as_array().unwrap().contains(&json!(bob_public)), "{update}");

    let ann_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    bind(&ann_sock, ann_relay, ann_handle, &ann_key).await;
    let ann_public = ann_sock.local_addr().unwrap().to_string();
    let seen = p.bob_events.until("/call_candidates", |v| v["id"] == json!(p.ann.id)).await;
    let update = &seen.last().unwrap().1;
    assert!(update["candidates"].as_array().unwrap().contains(&json!(ann_public)), "bob, on b: {update}");
    p.shutdown().await;
}

/// Ann (events on a, the home) calls bob (events on b), who answers on b.
async fn answered_pair() -> (Pair, String) {
    let mut p = pair(30).await;
    let call_id = p.ring().await;
    p.answer(&call_id).await;
    p.ann_events.next_named("/call_accepted").await;
    (p, call_id)
}

#[tokio::test]
async fn a_call_channel_on_another_node_relays_both_ways_in_order_and_ends_with_the_call() {
    let (p, call_id) = answered_pair().await;
    let mut ann = Channel::open(p.a.addr(), &p.ann, &call_id).await;
    let mut bob = Channel::open(p.b.addr(), &p.bob, &call_id).await;
    for i in 0..40 {
        bob.send(&format!("b{i}")).await;
    }
    for i in 0..40 {
        assert_eq!(ann.heard().await, (p.bob.id.clone(), format!("b{i}")), "bob's frames reach ann in order");
    }
    for i in 0..40 {
        ann.send(&format!("a{i}")).await;
    }
    for i in 0..40 {
        assert_eq!(bob.heard().await, (p.ann.id.clone(), format!("a{i}")), "ann's frames reach bob, on b, in order");
    }
    let (status, v) =
        Client::connect(p.a.addr()).await.call(p.ann.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    bob.ends(&call_id).await;
    ann.ends(&call_id).await;
    p.shutdown().await;
}

#[tokio::test]
async fn only_members_open_a_channel_on_another_node_and_its_limits_hold() {
    let (p, call_id) = answered_pair().await;
    let mut c = Client::connect(p.b.addr()).await;
    let cal = c.create("cal@example.org").await;
    let (status, v) = c.call(cal.header(), "/connect_call", json!({"call_id": call_id})).await;
    assert_eq!(status, 403, "cal is not in the call: {v}");
    let (status, v) =
        Client::connect(p.b.addr()).await.call(p.bob.header(), "/connect_call", json!({"call_id": "12345"})).await;
    assert_eq!(status, 403, "no such call: {v}");

    let mut ann = Channel::open(p.a.addr(), &p.ann, &call_id).await;
    let mut bob = Channel::open(p.b.addr(), &p.bob, &call_id).await;
    // A /send over 16 KiB closes bob's channel on b, unread; the call goes on.
    let big = json!({"type": "voice", "nb_packets": "1", "size_packet": "0", "packets": ["A".repeat(17_000)]});
    bob.client.write(&common::frame(&Value::Null, "/send", &big)).await;
    assert!(bob.next().await.is_none(), "the oversized frame closed bob's channel");
    let mut bob = Channel::open(p.b.addr(), &p.bob, &call_id).await;
    bob.send("after").await;
    assert_eq!(ann.heard().await, (p.bob.id.clone(), "after".to_owned()), "never the oversized frame");
    // Replaced on the same node while open: the older one closes, and its
    // goodbye (which reaches the home after the newer one was admitted)
    // does not close the newer one.
    let mut newer = Channel::open(p.b.addr(), &p.bob, &call_id).await;
    assert!(bob.next().await.is_none(), "the older channel on b is closed");
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        newer.send(&format!("n{i}")).await;
        assert_eq!(ann.heard().await, (p.bob.id.clone(), format!("n{i}")));
        ann.send(&format!("to n{i}")).await;
        assert_eq!(newer.heard().await, (p.ann.id.clone(), format!("to n{i}")));
    }
    drop(newer);
    let mut bob = Channel::open(p.b.addr(), &p.bob, &call_id).await;
    // Connecting again elsewhere replaces the older channel: b's closes.
    let mut again = Channel::open(p.a.addr(), &p.bob, &call_id).await;
    assert!(bob.next().await.is_none(), "the older channel, on b, is closed");
    again.send("moved").await;
    assert_eq!(ann.heard().await, (p.bob.id.clone(), "moved".to_owned()));
    ann.send("to the new one").await;
    assert_eq!(again.heard().await, (p.ann.id.clone(), "to the new one".to_owned()));
    p.shutdown().await;
}

#[tokio::test]
async fn a_group_call_channel_spans_three_nodes() {
    let (p, call_id) = answered_pair().await;
    let c_node = p._world.node_with("c", |c| c.ring_timeout_secs = 30).await;
    let mut c = Client::connect(c_node.addr()).await;
    let cal = c.create("cal@example.org").await;
    c.befriend(&p.ann, &cal).await;
    let mut cal_events = Events::open(c_node.addr(), &cal).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !Client::connect(p.a.addr())
        .await
        .contacts(&p.ann)
        .await
        .contains(&("cal@example.org".into(), "online".into()))
    {
        assert!(tokio::time::Instant::now() < deadline, "node a never saw cal online on node c");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = Client::connect(p.a.addr())
        .await
        .call(p.ann.header(), "/invite", json!({"call_id": call_id, "contact_id": cal.id}))
        .await;
    assert_eq!(status, 200, "{v}");
    cal_events.next_named("/incoming_call").await;
    let (status, v) = c.call(cal.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");

    let mut ann = Channel::open(p.a.addr(), &p.ann, &call_id).await;
    let mut bob = Channel::open(p.b.addr(), &p.bob, &call_id).await;
    let mut cal_ch = Channel::open(c_node.addr(), &cal, &call_id).await;
    for i in 0..10 {
        cal_ch.send(&format!("c{i}")).await;
    }
    for i in 0..10 {
        assert_eq!(ann.heard().await, (cal.id.clone(), format!("c{i}")));
        assert_eq!(bob.heard().await, (cal.id.clone(), format!("c{i}")), "c to b, through the home");
    }
    bob.send("from b").await;
    assert_eq!(cal_ch.heard().await, (p.bob.id.clone(), "from b".to_owned()));
    assert_eq!(ann.heard().await, (p.bob.id.clone(), "from b".to_owned()));
    // Bob hangs up on b: only his channel ends; the others still talk.
    assert_eq!(p.on_b("/hangup", json!({"call_id": call_id})).await.0, 200);
    bob.ends(&call_id).await;
    ann.send("still here").await;
    assert_eq!(cal_ch.heard().await, (p.ann.id.clone(), "still here".to_owned()));
    c_node.shutdown().await;
    p.shutdown().await;
}

/// The grace the tests give a participant whose connections are all gone.
const GRACE_MS: u64 = 2_000;

/// Waits past the grace, then checks the call is still at its home.
async fn still_in_call_past_the_grace(home: &RunningServer) {
    tokio::time::sleep(Duration::from_millis(GRACE_MS + 1_000)).await;
    assert_eq!(home.app().calls_in_progress(), 1, "the call ended although its participant came back");
}

#[tokio::test]
async fn on_one_node_a_participant_whose_connections_drop_keeps_their_place_for_the_grace() {
    let (server, _dir) = common::start_with(|c| c.call_grace_ms = GRACE_MS).await;
    let addr = server.addr();
    let ann = Client::connect(addr).await.create("ann@example.org").await;
    let bob = Client::connect(addr).await.create("bob@example.org").await;
    Client::connect(addr).await.befriend(&ann, &bob).await;
    let mut ann_events = Events::open(addr, &ann).await;
    let mut bob_events = Events::open(addr, &bob).await;
    let (status, v) = Client::connect(addr).await.call(ann.header(), "/call", json!({"contact_id": bob.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    bob_events.next_named("/incoming_call").await;
    let (status, v) =
        Client::connect(addr).await.call(bob.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    let mut ann_ch = Channel::open(addr, &ann, &call_id).await;
    let bob_ch = Channel::open(addr, &bob, &call_id).await;

    // Every connection of bob's goes; he comes back within the grace.
    drop((bob_events, bob_ch));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bob_ch = Channel::open(addr, &bob, &call_id).await;
    ann_ch.send("welcome back").await;
    assert_eq!(bob_ch.heard().await, (ann.id.clone(), "welcome back".to_owned()));
    still_in_call_past_the_grace(&server).await;

    // Gone for good: he leaves after the grace, and ann hears why.
    drop(bob_ch);
    let seen = ann_events.until("/call_ended", |v| v["call_id"] == json!(call_id)).await;
    assert_eq!(seen.last().unwrap().1["reason"], json!("disconnected"), "{seen:?}");
    ann_ch.ends(&call_id).await;
    assert_eq!(server.app().calls_in_progress(), 0);
    assert_eq!(server.app().relay().leg_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_participant_dropped_on_one_node_comes_back_on_another_within_the_grace_and_leaves_after_it() {
    let mut p = pair_with(|c| c.call_grace_ms = GRACE_MS).await;
    let (_, call_id) = p.call(json!({"key_commit": KEY_COMMIT})).await;
    p.bob_events.next_named("/incoming_call").await;
    p.answer(&call_id).await;
    let Pair { a, b, ann, bob, mut ann_events, bob_events, _world: world } = p;
    let mut ann_ch = Channel::open(a.addr(), &ann, &call_id).await;
    let bob_ch = Channel::open(b.addr(), &bob, &call_id).await;

    // Bob's connections to b all drop; he is back through a third node.
    let c = world.node_with("c", |c| c.call_grace_ms = GRACE_MS).await;
    drop((bob_events, bob_ch));
    let mut bob_ch = Channel::open(c.addr(), &bob, &call_id).await;
    let mut bob_events = Events::open(c.addr(), &bob).await;
    ann_ch.send("on c").await;
    assert_eq!(bob_ch.heard().await, (ann.id.clone(), "on c".to_owned()));
    // His events reach him on c too.
    let reveal = json!({"call_id": call_id, "key": KEY});
    assert_eq!(Client::connect(a.addr()).await.call(ann.header(), "/call_key", reveal).await.0, 200);
    assert_eq!(bob_events.next_named("/call_key").await["key"], json!(KEY));
    // The home asked the nodes when the grace ran out, and found him on c.
    still_in_call_past_the_grace(&a).await;

    // Gone from c for good: the home hears it and, after the grace, ends the call.
    drop((bob_ch, bob_events));
    let seen = ann_events.until("/call_ended", |v| v["call_id"] == json!(call_id)).await;
    assert_eq!(seen.last().unwrap().1["reason"], json!("disconnected"), "{seen:?}");
    ann_ch.ends(&call_id).await;
    until_no_call(&a).await;
    assert_eq!(a.app().relay().leg_count(), 0, "his relay leg went with him");
    c.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn when_a_participants_node_is_killed_the_home_lets_them_go_after_the_grace() {
    let world = World::new();
    let a = world.node_with("a", |c| c.call_grace_ms = GRACE_MS).await;
    let mut doomed = world.process("doomed");
    let (ann, bob) = two_contacts(a.addr(), "ann@example.org", "bob@example.org").await;
    let mut ann_events = Events::open(a.addr(), &ann).await;
    let mut bob_events = Events::open(doomed.addr, &bob).await;
    until_shown(a.addr(), &ann, &bob, "online").await;
    let (status, v) = Client::connect(a.addr()).await.call(ann.header(), "/call", json!({"contact_id": bob.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    bob_events.next_named("/incoming_call").await;
    let (status, v) = Client::connect(doomed.addr)
        .await
        .call(bob.header(), "/answer", json!({"call_id": call_id, "accept": "true"}))
        .await;
    assert_eq!(status, 200, "{v}");
    ann_events.next_named("/call_accepted").await;

    // Bob's node dies without a word: the home notices (heartbeats), and
    // after the grace, with bob connected nowhere, he leaves.
    doomed.kill();
    let seen = ann_events.until("/call_ended", |v| v["call_id"] == json!(call_id)).await;
    assert_eq!(seen.last().unwrap().1["reason"], json!("disconnected"), "{seen:?}");
    until_no_call(&a).await;
    a.shutdown().await;
}

#[tokio::test]
async fn when_the_home_is_killed_its_channels_on_other_nodes_close() {
    let world = World::new();
    let b = world.node_with("b", |c| c.ring_timeout_secs = 30).await;
    let mut home = world.process("home");
    let (ann, bob) = two_contacts(b.addr(), "ann@example.org", "bob@example.org").await;
    let _ann_events = Events::open(home.addr, &ann).await;
    let mut bob_events = Events::open(b.addr(), &bob).await;
    until_shown(home.addr, &ann, &bob, "online").await;
    let (status, v) = Client::connect(home.addr).await.call(ann.header(), "/call", json!({"contact_id": bob.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    bob_events.next_named("/incoming_call").await;
    let (status, v) = Client::connect(b.addr())
        .await
        .call(bob.header(), "/answer", json!({"call_id": call_id, "accept": "true"}))
        .await;
    assert_eq!(status, 200, "{v}");
    let mut ann_ch = Channel::open(home.addr, &ann, &call_id).await;
    let mut bob_ch = Channel::open(b.addr(), &bob, &call_id).await;
    ann_ch.send("hello").await;
    assert_eq!(bob_ch.heard().await, (ann.id.clone(), "hello".to_owned()));

    // The home dies: b notices and closes bob's channel (he may connect
    // again once another node holds the call), rather than keep it open
    // with nothing behind it.
    home.kill();
    assert!(bob_ch.next().await.is_none(), "bob's channel on b closes");
    b.shutdown().await;
}
