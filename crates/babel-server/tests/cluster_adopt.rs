//! A call outlives its home node (issue #18 item 3): its state is in a
//! JetStream key-value bucket, and when the home is killed (`kill -9`)
//! another node adopts it, grants relay legs on its own relay and tells the
//! participants by `/call_relay`.
//!
//! Real engines, as in `tests/cluster.rs`: PostgreSQL (a schema per test)
//! and `nats-server` with JetStream on 127.0.0.1:4222 (`BABEL_TEST_NATS`
//! names another; a cluster name, so a bucket, per test). The home that
//! dies is the real binary in a process of its own; the survivors run in
//! this process.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use babel_proto::CallId;
use babel_server::RunningServer;
use babel_server::cluster::{Claim, ClusterConfig, bucket_name};
use common::cluster::{Channel, Proc, World, grant_of, relay_carries};
use common::{Client, Events, Session, TIMEOUT};
use serde_json::{Value, json};

/// The stored state of a call, if any.
async fn stored(world: &World, call: &str) -> Option<Value> {
    let client = async_nats::connect(&world.nats).await.unwrap();
    let kv = async_nats::jetstream::new(client).get_key_value(bucket_name(&world.cluster.name)).await.ok()?;
    let entry = kv.entry(call).await.unwrap()?;
    (entry.operation == async_nats::jetstream::kv::Operation::Put)
        .then(|| serde_json::from_slice(&entry.value).unwrap())
}

/// A survivor, in this process: `dead_after_ms` as given, and `grace_ms`
/// of grace for a participant if given.
async fn survivor(world: &World, name: &str, dead_after_ms: u64, grace_ms: Option<u64>) -> RunningServer {
    world
        .node_with(name, |c| {
            c.cluster.dead_after_ms = dead_after_ms;
            c.call_grace_ms = grace_ms.unwrap_or(c.call_grace_ms);
        })
        .await
}

/// Survivors `b` and `c` and the doomed home; ann (events on `b`) and bob
/// (events on `c`) are contacts, in a call that ann placed through the
/// doomed node and bob answered through `c`.
struct Scene {
    b: RunningServer,
    c: RunningServer,
    doomed: Proc,
    ann: Session,
    bob: Session,
    ann_events: Events,
    bob_events: Events,
    /// Ann's connection to the doomed node, open until it dies: the home
    /// ends a call when its caller's last connection there closes.
    ann_on_doomed: Client,
    world: World,
}

async fn scene(dead_after_ms: u64) -> Scene {
    scene_with(dead_after_ms, None).await
}

/// [`scene`], the survivors giving a participant `grace_ms` of grace.
async fn scene_with(dead_after_ms: u64, grace_ms: Option<u64>) -> Scene {
    scene_full(dead_after_ms, grace_ms, "").await
}

/// [`scene_with`], `doomed_config` at the top of the doomed node's
/// configuration file.
async fn scene_full(dead_after_ms: u64, grace_ms: Option<u64>, doomed_config: &str) -> Scene {
    let world = World::new();
    let doomed = world.process_with("doomed", doomed_config);
    let (b, c) =
        (survivor(&world, "b", dead_after_ms, grace_ms).await, survivor(&world, "c", dead_after_ms, grace_ms).await);
    let mut client = Client::connect(b.addr()).await;
    let ann = client.create("ann@example.org").await;
    let bob = client.create("bob@example.org").await;
    client.befriend(&ann, &bob).await;
    let ann_events = Events::open(b.addr(), &ann).await;
    let bob_events = Events::open(c.addr(), &bob).await;
    let mut on_doomed = Client::connect(doomed.addr).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while on_doomed.contacts(&ann).await != vec![("bob@example.org".to_owned(), "online".to_owned())] {
        assert!(tokio::time::Instant::now() < deadline, "the doomed node never saw bob online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Scene { b, c, doomed, ann, bob, ann_events, bob_events, ann_on_doomed: on_doomed, world }
}

impl Scene {
    /// Ann calls bob through the doomed node; bob answers through `c`.
    async fn answered_call(&mut self) -> String {
        let (status, v) = self
            .ann_on_doomed
            .call(self.ann.header(), "/call", json!({"contact_id": self.bob.id, "key_commit": KEY_COMMIT}))
            .await;
        assert_eq!(status, 200, "{v}");
        let call_id = v["call_id"].as_str().unwrap().to_owned();
        let rung = self.bob_events.until("/incoming_call", |e| e["call_id"] == json!(call_id)).await;
        assert!(!rung.is_empty());
        let (status, v) = Client::connect(self.c.addr())
            .await
            .call(self.bob.header(), "/answer", json!({"call_id": call_id, "accept": "true"}))
            .await;
        if status != 200 {
            panic!("{v}; the doomed node's log:\n{}", self.world.log_of("doomed"));
        }
        self.ann_events.until("/call_accepted", |e| e["call_id"] == json!(call_id)).await;
        call_id
    }

    fn held(&self) -> (usize, usize) {
        (self.b.app().calls_in_progress(), self.c.app().calls_in_progress())
    }
}

/// Ann's key commitment in every call she places, and the key.
const KEY_COMMIT: &str = "a0oliH9TZTQoY1DC5F9jGBa2+AbGO5yPxM4B2Brpk7U=";
const KEY: &str = "pOCSkrZRwni5dyxWn1+puxPZBrRqtoyd+dwrRAn4ogk=";

#[tokio::test]
async fn a_call_whose_home_is_killed_is_adopted_and_goes_on() {
    let mut s = scene(ClusterConfig::default().dead_after_ms).await;
    let call_id = s.answered_call().await;
    let entry = stored(&s.world, &call_id).await.expect("the answered call is stored");
    assert_eq!(entry["home"], json!("doomed"), "{entry}");
    assert_eq!(entry["state"], json!("answered"), "{entry}");
    assert_eq!(entry["members"].as_array().unwrap().len(), 2, "{entry}");
    assert_eq!(s.held(), (0, 0), "the doomed node is the call's home");

    s.doomed.kill();
    let killed = Instant::now();
    let ann_moved = s.ann_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let bob_moved = s.bob_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "adopted only {took:?} after the kill");
    let (ann_grant, bob_grant) = (ann_moved.last().unwrap().1.clone(), bob_moved.last().unwrap().1.clone());

    // One survivor adopted it, and stays the only one (the other's turn,
    // by rank, comes and goes without taking it).
    let adopter = match s.held() {
        (1, 0) => &s.b,
        (0, 1) => &s.c,
        other => panic!("held by b and c: {other:?}"),
    };
    tokio::time::sleep(babel_server::cluster::RANK_STEP + Duration::from_millis(500)).await;
    assert_eq!(s.held().0 + s.held().1, 1, "two nodes adopted the call");
    let node = if std::ptr::eq(adopter, &s.b) { "b" } else { "c" };
    assert_eq!(stored(&s.world, &call_id).await.unwrap()["home"], json!(node));

    // The killed node starts again under its name after the others noticed:
    // the call is the adopter's now, and stays so.
    s.doomed = s.world.process("doomed");
    // Up, and has heard the others (ann shows online or busy there).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let shown = Client::connect(s.doomed.addr).await.contacts(&s.bob).await;
        if shown.iter().any(|(email, status)| *email == s.ann.email && status != "offline") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the restarted node never saw ann: {shown:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entry = stored(&s.world, &call_id).await.unwrap();
    assert_eq!((&entry["home"], entry["run"].as_u64()), (&json!(node), adopter.run()), "{entry}");
    assert_eq!(s.held().0 + s.held().1, 1);

    // Relay voice resumes through the adopter's relay.
    let port = adopter.app().relay().port();
    let (ann_relay, ann_handle, ann_key) = grant_of(&ann_grant, s.b.addr());
    let (bob_relay, bob_handle, bob_key) = grant_of(&bob_grant, s.c.addr());
    assert_eq!((ann_relay.port(), bob_relay.port()), (port, port), "{ann_grant} {bob_grant}");
    assert_eq!(ann_grant["relay_host"], json!("127.0.0.1"), "{ann_grant}");
    let bob_id = babel_proto::UserId(s.bob.id.parse().unwrap());
    let (ann_leg, bob_leg) = ((ann_relay, ann_handle, ann_key), (bob_relay, bob_handle, bob_key));
    assert!(
        relay_carries(ann_leg, bob_leg, bob_id, b"bob again").await,
        "bob's voice never reached ann through the adopter's relay"
    );

    // A hang-up through either survivor reaches the adopter and ends it.
    let (status, v) =
        Client::connect(s.b.addr()).await.call(s.ann.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    let ended = s.bob_events.until("/call_ended", |e| e["call_id"] == json!(call_id)).await;
    assert_eq!(ended.last().unwrap().1["reason"], json!("hangup"));
    until_forgotten(&s, &call_id).await;
    assert_eq!(adopter.app().relay().leg_count(), 0, "the adopter's relay legs are gone");
    s.b.shutdown().await;
    s.c.shutdown().await;
}

#[tokio::test]
async fn two_survivors_adopting_at_once_never_both_take_a_call() {
    // The survivors never count the home dead on their own here: the test
    // makes both try at the same moment, several times.
    let mut s = scene(3_600_000).await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let id = s.answered_call().await;
        let (status, v) =
            Client::connect(s.b.addr()).await.call(s.ann.header(), "/hangup", json!({"call_id": id})).await;
        assert_eq!(status, 200, "{v}");
        s.bob_events.until("/call_ended", |e| e["call_id"] == json!(id)).await;
        assert!(stored(&s.world, &id).await.is_none(), "an ended call's entry is removed");
        calls.push(id);
    }
    let live = s.answered_call().await;
    s.doomed.kill();
    let id = CallId(live.parse().unwrap());
    let run = stored(&s.world, &live).await.unwrap()["run"].as_u64().unwrap();
    // Neither counts the doomed node dead yet: without being told, neither
    // takes a call from a node it believes alive.
    let orphan = Claim::Orphan;
    assert!(!s.b.app().adopt_call(id, orphan).await && !s.c.app().adopt_call(id, orphan).await);
    // Nor one of another run of the node than the one stored.
    let other_run = Claim::Gone { node: "doomed", run: run ^ 1 };
    assert!(!s.b.app().adopt_call(id, other_run).await);
    let dead = Claim::Gone { node: "doomed", run };
    let (by_b, by_c) = tokio::join!(s.b.app().adopt_call(id, dead), s.c.app().adopt_call(id, dead));
    assert!(by_b ^ by_c, "adopted by b: {by_b}, by c: {by_c}");
    assert_eq!(s.held(), if by_b { (1, 0) } else { (0, 1) });
    // Trying again changes nothing, and a live adopter keeps its call.
    assert!(!s.b.app().adopt_call(id, dead).await && !s.c.app().adopt_call(id, dead).await);
    assert!(!s.b.app().adopt_call(id, orphan).await && !s.c.app().adopt_call(id, orphan).await);
    assert_eq!(s.held(), if by_b { (1, 0) } else { (0, 1) });
    // Ended calls are not brought back.
    for ended in calls {
        assert!(!s.b.app().adopt_call(CallId(ended.parse().unwrap()), dead).await);
    }
    s.ann_events.until("/call_relay", |e| e["call_id"] == json!(live)).await;
    s.b.shutdown().await;
    s.c.shutdown().await;
}

/// The grace the survivors give a participant whose connections are gone.
const GRACE_MS: u64 = 1_500;

#[tokio::test]
async fn after_adoption_channels_open_again_on_any_node_and_requests_reach_the_adopter() {
    let mut s = scene_with(ClusterConfig::default().dead_after_ms, Some(GRACE_MS)).await;
    let call_id = s.answered_call().await;
    // Both channels are on other nodes than the home.
    let mut ann_ch = Channel::open(s.b.addr(), &s.ann, &call_id).await;
    let mut bob_ch = Channel::open(s.c.addr(), &s.bob, &call_id).await;
    ann_ch.send("before").await;
    assert_eq!(bob_ch.heard().await, (s.ann.id.clone(), "before".to_owned()));

    s.doomed.kill();
    assert!(ann_ch.next().await.is_none(), "ann's channel on b closes with the home");
    assert!(bob_ch.next().await.is_none(), "bob's channel on c closes with the home");
    s.ann_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    s.bob_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let (adopter, other) = match s.held() {
        (1, 0) => (&s.b, &s.c),
        (0, 1) => (&s.c, &s.b),
        held => panic!("held by b and c: {held:?}"),
    };

    // Each connects again on its own node: one channel is at the adopter,
    // the other reaches it across nodes; both relay.
    let mut ann_ch = Channel::open(s.b.addr(), &s.ann, &call_id).await;
    let mut bob_ch = Channel::open(s.c.addr(), &s.bob, &call_id).await;
    ann_ch.send("a1").await;
    assert_eq!(bob_ch.heard().await, (s.ann.id.clone(), "a1".to_owned()));
    bob_ch.send("b1").await;
    assert_eq!(ann_ch.heard().await, (s.bob.id.clone(), "b1".to_owned()));

    // The adopter started the grace of the member not connected to it;
    // that member is connected on the other survivor, so stays past it.
    tokio::time::sleep(Duration::from_millis(2 * GRACE_MS + 1_000)).await;
    assert_eq!(adopter.app().calls_in_progress(), 1, "a member connected elsewhere was let go");
    bob_ch.send("b2").await;
    assert_eq!(ann_ch.heard().await, (s.bob.id.clone(), "b2".to_owned()));

    // /call_key through the node that is not the home reaches the adopter,
    // which kept ann's commitment.
    let (status, v) = Client::connect(other.addr())
        .await
        .call(s.ann.header(), "/call_key", json!({"call_id": call_id, "key": KEY}))
        .await;
    assert_eq!(status, 200, "{v}");
    let told = s.bob_events.until("/call_key", |e| e["call_id"] == json!(call_id)).await;
    assert_eq!(told.last().unwrap().1, json!({"call_id": call_id, "id": s.ann.id, "key": KEY}));
    let again = Client::connect(other.addr())
        .await
        .call(s.ann.header(), "/call_key", json!({"call_id": call_id, "key": KEY}))
        .await;
    common::assert_refused(again, "already revealed");

    // A hang-up through the node that is not the home ends it everywhere.
    let (status, v) =
        Client::connect(other.addr()).await.call(s.bob.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    ann_ch.ends(&call_id).await;
    bob_ch.ends(&call_id).await;
    until_forgotten(&s, &call_id).await;
    s.b.shutdown().await;
    s.c.shutdown().await;
}

#[tokio::test]
async fn a_member_whose_node_died_with_the_home_is_let_go_after_the_grace() {
    let mut s = scene_with(ClusterConfig::default().dead_after_ms, Some(GRACE_MS)).await;
    let call_id = s.answered_call().await;
    // Ann's only connection left is to the doomed node (her event stream
    // on b closes; the stand-in is a second stream of bob's).
    drop(std::mem::replace(&mut s.ann_events, Events::open(s.b.addr(), &s.bob).await));
    s.doomed.kill();
    s.bob_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let adopter = match s.held() {
        (1, 0) => &s.b,
        (0, 1) => &s.c,
        held => panic!("held by b and c: {held:?}"),
    };
    // She does not come back: the adopter lets her go when her grace runs
    // out, and bob hears why.
    let ended = s.bob_events.until("/call_ended", |e| e["call_id"] == json!(call_id)).await;
    assert_eq!(ended.last().unwrap().1["reason"], json!("disconnected"), "{ended:?}");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while adopter.app().calls_in_progress() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the adopter still holds the call");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.b.shutdown().await;
    s.c.shutdown().await;
}

#[tokio::test]
async fn a_node_that_starts_after_a_death_nobody_saw_adopts_the_orphaned_call() {
    // Ann and bob on `b`; their call's home is the doomed node.
    let world = World::new();
    let doomed = world.process("doomed");
    let b = world.node("b").await;
    let mut client = Client::connect(b.addr()).await;
    let ann = client.create("ann@example.org").await;
    let bob = client.create("bob@example.org").await;
    client.befriend(&ann, &bob).await;
    let _ann_events = Events::open(b.addr(), &ann).await;
    let mut bob_events = Events::open(b.addr(), &bob).await;
    let mut on_doomed = Client::connect(doomed.addr).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while on_doomed.contacts(&ann).await != vec![("bob@example.org".to_owned(), "online".to_owned())] {
        assert!(tokio::time::Instant::now() < deadline, "the doomed node never saw bob online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = on_doomed.call(ann.header(), "/call", json!({"contact_id": bob.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    bob_events.until("/incoming_call", |e| e["call_id"] == json!(call_id)).await;
    let (status, v) = client.call(bob.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(stored(&world, &call_id).await.unwrap()["home"], json!("doomed"));

    // Nobody is left to see the home die; a node started afterwards finds
    // the call orphaned and takes it.
    b.shutdown().await;
    let mut doomed = doomed;
    doomed.kill();
    let c = world.node("c").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while c.app().calls_in_progress() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the orphaned call was never adopted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored(&world, &call_id).await.unwrap()["home"], json!("c"));
    let (status, v) = Client::connect(c.addr()).await.call(ann.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.app().calls_in_progress(), 0);
    assert!(stored(&world, &call_id).await.is_none(), "the ended call's entry is removed");
    c.shutdown().await;
}

#[tokio::test]
async fn a_member_whose_node_died_with_the_home_and_who_comes_back_elsewhere_stays() {
    let mut s = scene_with(ClusterConfig::default().dead_after_ms, Some(GRACE_MS)).await;
    let call_id = s.answered_call().await;
    // Ann's only connection left is to the doomed node, as above.
    drop(std::mem::replace(&mut s.ann_events, Events::open(s.b.addr(), &s.bob).await));
    s.doomed.kill();
    // Her client comes back through c, well within the grace.
    let mut ann_events = Events::open(s.c.addr(), &s.ann).await;
    ann_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    s.bob_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let adopter = match s.held() {
        (1, 0) => &s.b,
        (0, 1) => &s.c,
        held => panic!("held by b and c: {held:?}"),
    };
    tokio::time::sleep(Duration::from_millis(2 * GRACE_MS + 1_000)).await;
    assert_eq!(adopter.app().calls_in_progress(), 1, "ann came back, yet was let go");
    let (status, v) =
        Client::connect(s.c.addr()).await.call(s.ann.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    let ended = s.bob_events.until("/call_ended", |e| e["call_id"] == json!(call_id)).await;
    assert_eq!(ended.last().unwrap().1["reason"], json!("hangup"), "{ended:?}");
    s.b.shutdown().await;
    s.c.shutdown().await;
}

/// Which survivor holds the call (and so adopted it): its index, 0 for b.
fn adopter_of(s: &Scene) -> &RunningServer {
    match s.held() {
        (1, 0) => &s.b,
        (0, 1) => &s.c,
        held => panic!("held by b and c: {held:?}"),
    }
}

/// Relay voice flows from bob to ann through the relay named by their
/// `/call_relay` grants.
async fn relay_voice_flows(s: &Scene, ann_grant: &Value, bob_grant: &Value) {
    let ann_leg = grant_of(ann_grant, s.b.addr());
    let bob_leg = grant_of(bob_grant, s.c.addr());
    assert_eq!(ann_leg.0, bob_leg.0, "{ann_grant} {bob_grant}");
    let bob_id = babel_proto::UserId(s.bob.id.parse().unwrap());
    assert!(
        relay_carries(ann_leg, bob_leg, bob_id, b"bob again").await,
        "bob's voice never reached ann through the relay of {bob_grant}"
    );
}

/// Waits until no node holds or stores the ended call.
async fn until_forgotten(s: &Scene, call_id: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while s.held() != (0, 0) || stored(&s.world, call_id).await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the ended call is still held or stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Hangs the call up through `b` and waits until no node holds or stores it.
async fn hang_up_and_forget(s: &mut Scene, call_id: &str) {
    let (status, v) =
        Client::connect(s.b.addr()).await.call(s.ann.header(), "/hangup", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{v}");
    let ended = s.bob_events.until("/call_ended", |e| e["call_id"] == json!(call_id)).await;
    assert_eq!(ended.last().unwrap().1["reason"], json!("hangup"));
    until_forgotten(s, call_id).await;
}

#[tokio::test]
async fn a_home_that_leaves_cleanly_hands_its_calls_over_at_once() {
    // The survivors never count a node dead here: only the hand-over can
    // move the call.
    let mut s = scene(3_600_000).await;
    let call_id = s.answered_call().await;
    assert_eq!(stored(&s.world, &call_id).await.unwrap()["home"], json!("doomed"));

    s.doomed.terminate();
    let stopped = Instant::now();
    let ann_moved = s.ann_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let bob_moved = s.bob_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(3), "handed over only {took:?} after the node stopped");
    let adopter = adopter_of(&s);
    let node = adopter.node().unwrap().to_owned();
    let entry = stored(&s.world, &call_id).await.unwrap();
    assert_eq!((entry["home"].clone(), entry["run"].as_u64()), (json!(node), adopter.run()));
    // The one the rendezvous hash ranks first among the survivors.
    let first = babel_server::cluster::ranked(CallId(call_id.parse().unwrap()), &["b".into(), "c".into()]);
    assert_eq!(first[0], node);
    // Never two homes: the other survivor's turn comes and goes.
    tokio::time::sleep(babel_server::cluster::RANK_STEP + Duration::from_millis(500)).await;
    assert_eq!(s.held().0 + s.held().1, 1, "two nodes took the call");

    let (ann_grant, bob_grant) = (ann_moved.last().unwrap().1.clone(), bob_moved.last().unwrap().1.clone());
    assert_eq!(grant_of(&ann_grant, s.b.addr()).0.port(), adopter.app().relay().port());
    relay_voice_flows(&s, &ann_grant, &bob_grant).await;
    hang_up_and_forget(&mut s, &call_id).await;
    s.b.shutdown().await;
    s.c.shutdown().await;
}

#[tokio::test]
async fn a_node_restarted_under_its_name_takes_back_its_earlier_runs_calls() {
    // Killed and started again before anyone counts it dead: the survivors
    // only see a new run of it.
    let mut s = scene(3_600_000).await;
    let call_id = s.answered_call().await;
    let before = stored(&s.world, &call_id).await.unwrap();
    assert_eq!(before["home"], json!("doomed"));
    s.doomed.kill();
    s.doomed = s.world.process("doomed");

    // Resumed (or adopted, should a survivor win the compare-and-set):
    // either way both members get a new relay grant, and the call has one
    // home, a live run.
    let ann_moved = s.ann_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let bob_moved = s.bob_events.until("/call_relay", |e| e["call_id"] == json!(call_id)).await;
    let entry = stored(&s.world, &call_id).await.unwrap();
    assert_ne!(entry["run"], before["run"], "{entry}");
    match entry["home"].as_str().unwrap() {
        "doomed" => assert_eq!(s.held(), (0, 0)),
        _ => {
            let adopter = adopter_of(&s);
            assert_eq!(entry["home"], json!(adopter.node().unwrap()));
        }
    }
    tokio::time::sleep(babel_server::cluster::RANK_STEP + Duration::from_millis(500)).await;
    let later = stored(&s.world, &call_id).await.unwrap();
    assert_eq!((&later["home"], &later["run"]), (&entry["home"], &entry["run"]), "taken twice");
    let (ann_grant, bob_grant) = (ann_moved.last().unwrap().1.clone(), bob_moved.last().unwrap().1.clone());
    relay_voice_flows(&s, &ann_grant, &bob_grant).await;
    // The home answers for it: a hang-up through b ends it.
    hang_up_and_forget(&mut s, &call_id).await;
    s.b.shutdown().await;
    s.c.shutdown().await;
}

/// Closes every connection of ann's (her events on b and her connection to
/// the doomed home), so the home starts her grace; answers its deadline
/// as stored with the call (wall-clock ms).
async fn ann_goes(s: &mut Scene, call_id: &str) -> u64 {
    drop(std::mem::replace(&mut s.ann_events, Events::open(s.b.addr(), &s.bob).await));
    drop(std::mem::replace(&mut s.ann_on_doomed, Client::connect(s.c.addr()).await));
    let is_ann = |m: &&Value| m["user"]["id"].to_string().trim_matches('"') == s.ann.id;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let entry = stored(&s.world, call_id)
            .await
            .unwrap_or_else(|| panic!("the call ended; the doomed node's log:\n{}", s.world.log_of("doomed")));
        let member = entry["members"].as_array().unwrap().iter().find(is_ann).cloned();
        if let Some(until) = member.and_then(|m| m["grace_until_ms"].as_u64()) {
            return until;
        }
        assert!(tokio::time::Instant::now() < deadline, "ann's grace was never stored: {entry}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn a_member_in_their_grace_when_the_home_dies_keeps_only_the_rest_of_it() {
    const GRACE: u64 = 6_000;
    let mut s = scene_full(2_000, Some(GRACE), &format!("call_grace_ms = {GRACE}")).await;
    let call_id = s.answered_call().await;
    let until = ann_goes(&mut s, &call_id).await;
    // Two seconds into her grace the home dies; it is adopted one to three
    // seconds later, with one to two seconds of her grace left.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    s.doomed.kill();
    let ended = s.bob_events.until("/call_ended", |e| e["call_id"] == json!(call_id)).await;
    let at = wall_ms();
    assert_eq!(ended.last().unwrap().1["reason"], json!("disconnected"), "{ended:?}");
    assert!(ended.iter().any(|(r, _)| r == "/call_relay"), "the call was adopted before she went: {ended:?}");
    // A fresh grace at the adopter would end it at least 3 s after `until`.
    assert!(at + 300 >= until, "let go {} ms before her grace ran out", until - at);
    assert!(at < until + 1_500, "let go {} ms after her grace ran out: given a fresh grace", at - until);
    s.b.shutdown().await;
    s.c.shutdown().await;
}

#[tokio::test]
async fn a_member_whose_grace_ran_out_while_the_home_was_dying_is_not_brought_back() {
    const GRACE: u64 = 1_000;
    let mut s = scene_full(3_000, Some(GRACE), &format!("call_grace_ms = {GRACE}")).await;
    let call_id = s.answered_call().await;
    ann_goes(&mut s, &call_id).await;
    // The home dies before it can let her go; the adoption comes after her
    // grace ran out.
    s.doomed.kill();
    let ended = s.bob_events.until("/call_ended", |e| e["call_id"] == json!(call_id)).await;
    assert_eq!(ended.last().unwrap().1["reason"], json!("disconnected"), "{ended:?}");
    assert!(
        !ended.iter().any(|(r, _)| r == "/call_relay"),
        "the adopter brought the call back (new relay legs) for a member already gone: {ended:?}"
    );
    until_forgotten(&s, &call_id).await;
    s.b.shutdown().await;
    s.c.shutdown().await;
}

#[tokio::test]
async fn an_ended_calls_entry_is_removed_only_at_the_revision_its_home_wrote() {
    use async_nats::jetstream::{self, kv};
    use babel_server::cluster::remove_entry;
    let world = World::new();
    let js = jetstream::new(async_nats::connect(&world.nats).await.unwrap());
    let config = kv::Config { bucket: bucket_name(&world.cluster.name), history: 1, ..kv::Config::default() };
    let kv = js.create_key_value(config).await.unwrap();
    let id = CallId(7);
    // The home wrote revision r1, and its call ends; before the home's
    // removal lands, an adopter's compare-and-set on r1 does (the home
    // looked at the entry before the adopter wrote: it still named it).
    let r1 = kv.update("7", r#"{"home":"a"}"#.into(), 0).await.unwrap();
    let r2 = kv.update("7", r#"{"home":"b"}"#.into(), r1).await.unwrap();
    assert!(!remove_entry(&js, &kv, id, r1).await.unwrap(), "removed an entry another node had adopted");
    let e = kv.entry("7").await.unwrap().unwrap();
    assert_eq!((e.operation, e.revision, &e.value[..]), (kv::Operation::Put, r2, &br#"{"home":"b"}"#[..]));

    // The adopter's own removal, at its revision, works; then a
    // compare-and-set on any revision read before (a late adopter, a late
    // write) cannot bring the ended call back.
    assert!(remove_entry(&js, &kv, id, r2).await.unwrap());
    assert!(kv.entry("7").await.unwrap().is_none_or(|e| e.operation != kv::Operation::Put));
    for stale in [r1, r2] {
        assert!(kv.update("7", r#"{"home":"c"}"#.into(), stale).await.is_err(), "revision {stale} wrote again");
    }
    assert!(kv.entry("7").await.unwrap().is_none_or(|e| e.operation != kv::Operation::Put));
    // Nothing is left of it in the stream (ended calls leave no markers).
    let mut stream = kv.stream.clone();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 0, "{:?}", info.state);
}
