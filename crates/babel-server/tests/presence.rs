//! A connection speaks for at most one session (issue #13 item 16,
//! PROTOCOL.md §6), as a contact sees it through `/contacts` and `/status`
//! events.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{Client, Events, Session, TIMEOUT, start};
use serde_json::{Value, json};

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

/// Wes's client and session, watching Amy and Bea (whose sessions come
/// after), both his contacts and both offline.
async fn wes_watching_amy_and_bea(addr: SocketAddr) -> (Client, Session, Session, Session) {
    let mut watcher = Client::connect(addr).await;
    let w = watcher.create("wes@example.org").await;
    let mut setup = Client::connect(addr).await;
    let a = setup.create("amy@example.org").await;
    let b = Client::connect(addr).await.create("bea@example.org").await;
    setup.befriend(&w, &a).await;
    setup.befriend(&w, &b).await;
    drop(setup);
    wait_contacts(&mut watcher, &w, vec![pair("amy@example.org", "offline"), pair("bea@example.org", "offline")]).await;
    (watcher, w, a, b)
}

#[tokio::test]
async fn create_login_logout_on_one_connection_ends_presence() {
    let (server, _dir) = start().await;
    let mut watcher = Client::connect(server.addr()).await;
    let w = watcher.create("wes@example.org").await;
    // A seed client: everything on one connection.
    let mut seed = Client::connect(server.addr()).await;
    let x1 = seed.create("xia@example.org").await;
    let mut setup = Client::connect(server.addr()).await;
    setup.befriend(&w, &x1).await;
    drop(setup);
    let mut events = Events::open(server.addr(), &w).await;
    assert_eq!(watcher.contacts(&w).await, vec![pair("xia@example.org", "online")]);

    let x2 = seed.login("xia@example.org").await;
    let (status, _) =
        seed.call(Value::Null, "/logout", json!({"user_mail": "xia@example.org", "token": x2.token})).await;
    assert_eq!(status, 200);
    // The session /create made is still valid, but this connection no
    // longer speaks for it: /login replaced it.
    let seen = events.until("/status", status_of(&x1.id, "offline")).await;
    let statuses: Vec<&Value> = seen.iter().filter(|(r, _)| r == "/status").map(|(_, v)| v).collect();
    assert_eq!(statuses, vec![&json!({"id": x1.id, "status": "offline"})], "no flapping on the way: {seen:?}");
    assert_eq!(watcher.contacts(&w).await, vec![pair("xia@example.org", "offline")]);

    // The connection is anonymous again: the next login on it counts.
    seed.login("xia@example.org").await;
    events.until("/status", status_of(&x1.id, "online")).await;
    assert_eq!(watcher.contacts(&w).await, vec![pair("xia@example.org", "online")]);
}

#[tokio::test]
async fn a_connection_serving_two_users_speaks_for_the_first_and_does_not_flap() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut watcher, w, a, b) = wes_watching_amy_and_bea(addr).await;
    let mut events = Events::open(addr, &w).await;

    // One connection (a proxy, a test harness) serves both users, in turns.
    let mut shared = Client::connect(addr).await;
    for _ in 0..5 {
        shared.contacts(&a).await;
        shared.contacts(&b).await;
    }
    assert_eq!(
        watcher.contacts(&w).await,
        vec![pair("amy@example.org", "online"), pair("bea@example.org", "offline")],
        "the connection speaks for the session it met first"
    );
    // A marker, to know every status change caused so far has arrived.
    let mut zed = Client::connect(addr).await;
    let z = zed.create("zed@example.org").await;
    zed.call(z.header(), "/add_contact", json!({"contact_email": "wes@example.org"})).await;
    let seen = events.until("/contact_request", |v| v["email"] == "zed@example.org").await;
    let statuses: Vec<&Value> = seen.iter().filter(|(r, _)| r == "/status").map(|(_, v)| v).collect();
    assert_eq!(statuses, vec![&json!({"id": a.id, "status": "online"})], "no flapping: {seen:?}");

    // Logging Amy's session out leaves the connection anonymous; Bea's next
    // request there makes it hers.
    assert_eq!(shared.call(a.header(), "/logout", Value::Null).await.0, 200);
    events.until("/status", status_of(&a.id, "offline")).await;
    shared.contacts(&b).await;
    events.until("/status", status_of(&b.id, "online")).await;
    assert_eq!(watcher.contacts(&w).await, vec![pair("amy@example.org", "offline"), pair("bea@example.org", "online")]);
}

#[tokio::test]
async fn a_later_login_replaces_the_earlier_on_the_same_connection() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut watcher, w, _, _) = wes_watching_amy_and_bea(addr).await;
    let mut kiosk = Client::connect(addr).await;
    kiosk.login("amy@example.org").await;
    wait_contacts(&mut watcher, &w, vec![pair("amy@example.org", "online"), pair("bea@example.org", "offline")]).await;
    kiosk.login("bea@example.org").await;
    wait_contacts(&mut watcher, &w, vec![pair("amy@example.org", "offline"), pair("bea@example.org", "online")]).await;
}

#[tokio::test]
async fn delete_leaves_the_connection_anonymous_and_events_take_their_session() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut watcher, w, a, b) = wes_watching_amy_and_bea(addr).await;

    // Speaking for Amy; Bea's request does not move it; Amy's account goes.
    let mut shared = Client::connect(addr).await;
    shared.contacts(&a).await;
    shared.contacts(&b).await;
    assert_eq!(shared.call(a.header(), "/delete", Value::Null).await.0, 200);
    wait_contacts(&mut watcher, &w, vec![pair("bea@example.org", "offline")]).await;
    // Anonymous again: Bea's next request takes the connection.
    shared.contacts(&b).await;
    wait_contacts(&mut watcher, &w, vec![pair("bea@example.org", "online")]).await;

    // /events always takes its session, even on a connection that spoke
    // for another: the one that spoke for Cy becomes Bea's event stream.
    let mut other = Client::connect(addr).await;
    let c = other.create("cy@example.org").await;
    other.befriend(&w, &c).await;
    other.contacts(&c).await;
    let (status, _) = other.call(b.header(), "/events", Value::Null).await;
    assert_eq!(status, 200);
    drop(shared);
    wait_contacts(&mut watcher, &w, vec![pair("bea@example.org", "online"), pair("cy@example.org", "offline")]).await;
}
