//! A connection speaks for at most one session (issue #13 item 16,
//! PROTOCOL.md §6), as a contact sees it through `/contacts` and `/status`
//! events.
//!
//! Every scenario runs on one node and on three (issue #18 item 3): there
//! the watcher is on node 0, the connection that speaks for others on node
//! 1, and the accounts are made through node 2, so what a connection
//! does shows on another node through NATS.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::topology::{Nodes, Topology};
use common::{Client, Events, Session, TIMEOUT};
use serde_json::{Value, json};

/// Where the watcher is, where the connection that speaks for others is,
/// and where accounts are made (one node: all the same).
const WATCHER: usize = 0;
const SPEAKER: usize = 1;
const SETUP: usize = 2;

fn status_of(id: &str, status: &str) -> impl Fn(&Value) -> bool {
    let (id, status) = (id.to_owned(), status.to_owned());
    move |v| v["id"] == id.as_str() && v["status"] == status.as_str()
}

fn pair(email: &str, status: &str) -> (String, String) {
    (email.to_owned(), status.to_owned())
}

/// Polls `/contacts` (a test may; clients never need to) until it shows `want`.
async fn wait_contacts(c: &mut Client, s: &Session, want: Vec<(String, String)>) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = c.contacts(s).await;
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "contacts stayed {now:?}, expected {want:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `/status` events among `seen`.
fn statuses(seen: &[(String, Value)]) -> Vec<&Value> {
    seen.iter().filter(|(r, _)| r == "/status").map(|(_, v)| v).collect()
}

/// Opens `/events` for `s` on `addr`. On three nodes, the events of what
/// came before (made on other nodes) go through NATS and may reach the
/// stream after it opened, although `/contacts` already shows their
/// outcome: they are let pass for half a second, so that what the test
/// reads next is what it does next.
async fn events_from_now(nodes: &Nodes, addr: std::net::SocketAddr, s: &Session) -> Events {
    let mut events = Events::open(addr, s).await;
    if nodes.topology == Topology::ThreeNodes {
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(_)) = tokio::time::timeout_at(until, events.try_next()).await {}
    }
    events
}

/// On three nodes, asserts that no `/status` event comes within 300 ms:
/// where one node's order of events proves there was no flapping, events
/// from several nodes are not in one order, so a late one is waited for.
async fn no_more_statuses(nodes: &Nodes, events: &mut Events) {
    if nodes.topology == Topology::ThreeNodes {
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some((route, v))) = tokio::time::timeout_at(until, events.try_next()).await {
            assert_ne!(route, "/status", "a late status change (flapping): {v}");
        }
    }
}

/// Wes's client (on the watcher's node) and session, watching Amy and Bea
/// (whose sessions come after, made on the set-up node), both his contacts
/// and both offline.
async fn wes_watching_amy_and_bea(nodes: &Nodes) -> (Client, Session, Session, Session) {
    let mut watcher = Client::connect(nodes.addr(WATCHER)).await;
    let w = watcher.create("wes@example.org").await;
    let mut setup = Client::connect(nodes.addr(SETUP)).await;
    let a = setup.create("amy@example.org").await;
    let b = Client::connect(nodes.addr(SETUP)).await.create("bea@example.org").await;
    setup.befriend(&w, &a).await;
    setup.befriend(&w, &b).await;
    drop(setup);
    wait_contacts(&mut watcher, &w, vec![pair("amy@example.org", "offline"), pair("bea@example.org", "offline")]).await;
    (watcher, w, a, b)
}

async fn create_login_logout_on_one_connection_ends_presence(t: Topology) {
    let nodes = Nodes::start(t).await;
    let mut watcher = Client::connect(nodes.addr(WATCHER)).await;
    let w = watcher.create("wes@example.org").await;
    // A seed client: everything on one connection.
    let mut seed = Client::connect(nodes.addr(SPEAKER)).await;
    let x1 = seed.create("xia@example.org").await;
    let mut setup = Client::connect(nodes.addr(SETUP)).await;
    setup.befriend(&w, &x1).await;
    drop(setup);
    wait_contacts(&mut watcher, &w, vec![pair("xia@example.org", "online")]).await;
    let mut events = events_from_now(&nodes, nodes.addr(WATCHER), &w).await;
    assert_eq!(watcher.contacts(&w).await, vec![pair("xia@example.org", "online")]);

    let x2 = seed.login("xia@example.org").await;
    let (status, _) =
        seed.call(Value::Null, "/logout", json!({"user_mail": "xia@example.org", "token": x2.token})).await;
    assert_eq!(status, 200);
    // The session /create made is still valid, but this connection no
    // longer speaks for it: /login replaced it.
    let seen = events.until("/status", status_of(&x1.id, "offline")).await;
    let statuses = statuses(&seen);
    assert_eq!(statuses, vec![&json!({"id": x1.id, "status": "offline"})], "no flapping on the way: {seen:?}");
    no_more_statuses(&nodes, &mut events).await;
    assert_eq!(watcher.contacts(&w).await, vec![pair("xia@example.org", "offline")]);

    // The connection is anonymous again: the next login on it counts.
    seed.login("xia@example.org").await;
    events.until("/status", status_of(&x1.id, "online")).await;
    assert_eq!(watcher.contacts(&w).await, vec![pair("xia@example.org", "online")]);
    nodes.shutdown().await;
}

async fn a_connection_serving_two_users_speaks_for_the_first_and_does_not_flap(t: Topology) {
    let nodes = Nodes::start(t).await;
    let (mut watcher, w, a, b) = wes_watching_amy_and_bea(&nodes).await;
    let mut events = events_from_now(&nodes, nodes.addr(WATCHER), &w).await;

    // One connection (a proxy, a test harness) serves both users, in turns.
    let mut shared = Client::connect(nodes.addr(SPEAKER)).await;
    for _ in 0..5 {
        shared.contacts(&a).await;
        shared.contacts(&b).await;
    }
    let mut seen = events.until("/status", status_of(&a.id, "online")).await;
    assert_eq!(
        watcher.contacts(&w).await,
        vec![pair("amy@example.org", "online"), pair("bea@example.org", "offline")],
        "the connection speaks for the session it met first"
    );
    // A marker, to know every status change caused so far has arrived
    // (made on the shared connection's node, whose events keep their order).
    let mut zed = Client::connect(nodes.addr(SPEAKER)).await;
    let z = zed.create("zed@example.org").await;
    zed.call(z.header(), "/add_contact", json!({"contact_email": "wes@example.org"})).await;
    seen.extend(events.until("/contact_request", |v| v["email"] == "zed@example.org").await);
    assert_eq!(statuses(&seen), vec![&json!({"id": a.id, "status": "online"})], "no flapping: {seen:?}");
    no_more_statuses(&nodes, &mut events).await;

    // Logging Amy's session out leaves the connection anonymous; Bea's next
    // request there makes it hers.
    assert_eq!(shared.call(a.header(), "/logout", Value::Null).await.0, 200);
    events.until("/status", status_of(&a.id, "offline")).await;
    shared.contacts(&b).await;
    events.until("/status", status_of(&b.id, "online")).await;
    assert_eq!(watcher.contacts(&w).await, vec![pair("amy@example.org", "offline"), pair("bea@example.org", "online")]);
    nodes.shutdown().await;
}

async fn a_later_login_replaces_the_earlier_on_the_same_connection(t: Topology) {
    let nodes = Nodes::start(t).await;
    let (mut watcher, w, _, _) = wes_watching_amy_and_bea(&nodes).await;
    let mut kiosk = Client::connect(nodes.addr(SPEAKER)).await;
    kiosk.login("amy@example.org").await;
    wait_contacts(&mut watcher, &w, vec![pair("amy@example.org", "online"), pair("bea@example.org", "offline")]).await;
    kiosk.login("bea@example.org").await;
    wait_contacts(&mut watcher, &w, vec![pair("amy@example.org", "offline"), pair("bea@example.org", "online")]).await;
    nodes.shutdown().await;
}

async fn delete_leaves_the_connection_anonymous_and_events_take_their_session(t: Topology) {
    let nodes = Nodes::start(t).await;
    let (mut watcher, w, a, b) = wes_watching_amy_and_bea(&nodes).await;

    // Speaking for Amy; Bea's request does not move it; Amy's account goes.
    let mut shared = Client::connect(nodes.addr(SPEAKER)).await;
    shared.contacts(&a).await;
    shared.contacts(&b).await;
    assert_eq!(shared.call(a.header(), "/delete", Value::Null).await.0, 200);
    wait_contacts(&mut watcher, &w, vec![pair("bea@example.org", "offline")]).await;
    // Anonymous again: Bea's next request takes the connection.
    shared.contacts(&b).await;
    wait_contacts(&mut watcher, &w, vec![pair("bea@example.org", "online")]).await;

    // /events always takes its session, even on a connection that spoke
    // for another: the one that spoke for Cy (on another node than the
    // one that spoke for Bea) becomes Bea's event stream.
    let mut other = Client::connect(nodes.addr(SETUP)).await;
    let c = other.create("cy@example.org").await;
    other.befriend(&w, &c).await;
    other.contacts(&c).await;
    let (status, _) = other.call(b.header(), "/events", Value::Null).await;
    assert_eq!(status, 200);
    drop(shared);
    wait_contacts(&mut watcher, &w, vec![pair("bea@example.org", "online"), pair("cy@example.org", "offline")]).await;
    nodes.shutdown().await;
}

in_both_topologies! {
    create_login_logout_on_one_connection_ends_presence,
    a_connection_serving_two_users_speaks_for_the_first_and_does_not_flap,
    a_later_login_replaces_the_earlier_on_the_same_connection,
    delete_leaves_the_connection_anonymous_and_events_take_their_session,
}
