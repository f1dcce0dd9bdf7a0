//! Contacts and presence over real TCP.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, assert_refused, start};
use serde_json::{Value, json};

fn pair(email: &str, status: &str) -> (String, String) {
    (email.to_owned(), status.to_owned())
}

#[tokio::test]
async fn request_pending_then_accepted() {
    let (server, _dir) = start().await;
    let mut a_conn = Client::connect(server.addr()).await;
    let mut b_conn = Client::connect(server.addr()).await;
    let a = a_conn.create("amy@example.org").await;
    let b = b_conn.create("ben@example.org").await;

    let (s, _) = a_conn.call(a.header(), "/add_contact", json!({"contact_email": "BEN@example.org"})).await;
    assert_eq!(s, 200);
    assert_eq!(a_conn.contacts(&a).await, vec![pair("ben@example.org", "pending")]);
    assert_eq!(b_conn.contacts(&b).await, vec![], "nothing until accepted");
    let (s, v) = b_conn.call(b.header(), "/contact_requests", Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([{"id": a.id, "name": "amy", "email": "amy@example.org"}]));

    let (s, _) = b_conn.call(b.header(), "/accept_contact", json!({"contact_id": a.id})).await;
    assert_eq!(s, 200);
    assert_eq!(a_conn.contacts(&a).await, vec![pair("ben@example.org", "online")]);
    assert_eq!(b_conn.contacts(&b).await, vec![pair("amy@example.org", "online")]);
    let (_, v) = b_conn.call(b.header(), "/contact_requests", Value::Null).await;
    assert_eq!(v, json!([]));
    // Each row is a user plus status.
    let (_, v) = a_conn.call(a.header(), "/contacts", Value::Null).await;
    assert_eq!(v, json!([{"id": b.id, "name": "ben", "email": "ben@example.org", "status": "online"}]));
}

#[tokio::test]
async fn presence_follows_connections_and_logout() {
    let (server, _dir) = start().await;
    let mut a_conn = Client::connect(server.addr()).await;
    let a = a_conn.create("cat@example.org").await;
    let mut b_conn = Client::connect(server.addr()).await;
    let b = b_conn.create("dan@example.org").await;
    // Befriended on a third connection, which then closes: it must not
    // leave either of them online.
    let mut setup = Client::connect(server.addr()).await;
    setup.befriend(&a, &b).await;
    drop(setup);
    b_conn.contacts(&b).await;
    assert_eq!(a_conn.contacts(&a).await, vec![pair("dan@example.org", "online")]);

    // A second device of Dan's keeps him online when the first leaves.
    let mut b_phone = Client::connect(server.addr()).await;
    let b2 = b_phone.login("dan@example.org").await;
    drop(b_conn);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(a_conn.contacts(&a).await, vec![pair("dan@example.org", "online")]);
    // Logging that session out makes him offline at once, although its
    // connection is still open.
    assert_eq!(b_phone.call(b2.header(), "/logout", Value::Null).await.0, 200);
    assert_eq!(a_conn.contacts(&a).await, vec![pair("dan@example.org", "offline")]);

    // An authenticated request on any connection brings him back.
    let mut b_again = Client::connect(server.addr()).await;
    b_again.contacts(&b).await;
    assert_eq!(a_conn.contacts(&a).await, vec![pair("dan@example.org", "online")]);
    drop(b_again);
    // The close is seen by the server's connection task shortly after.
    let mut offline = false;
    for _ in 0..100 {
        if a_conn.contacts(&a).await == vec![pair("dan@example.org", "offline")] {
            offline = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(offline, "a dropped connection makes its user offline");
}

#[tokio::test]
async fn a_connection_with_a_failed_token_does_not_make_anyone_online() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let a = c.create("eli@example.org").await;
    let b = c.create("flo@example.org").await;
    c.befriend(&a, &b).await;
    drop(c);
    let mut a_conn = Client::connect(server.addr()).await;
    a_conn.contacts(&a).await;
    let mut stranger = Client::connect(server.addr()).await;
    let forged = json!({"id": b.id, "token": "not-the-token"});
    assert_eq!(stranger.call(forged, "/contacts", Value::Null).await.0, 401);
    assert_eq!(a_conn.contacts(&a).await, vec![pair("flo@example.org", "offline")]);
}

#[tokio::test]
async fn add_contact_refusals() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let a = c.create("gil@example.org").await;
    let b = c.create("hana@example.org").await;
    let add = |email: &str| json!({"contact_email": email});
    assert_refused(c.call(a.header(), "/add_contact", add("gil@example.org")).await, "yourself");
    assert_refused(c.call(a.header(), "/add_contact", add("nobody@example.org")).await, "nobody has");
    assert_refused(c.call(a.header(), "/add_contact", add("no email")).await, "not a valid email");
    assert_eq!(c.call(a.header(), "/add_contact", add(&b.email)).await.0, 200);
    assert_refused(c.call(a.header(), "/add_contact", add(&b.email)).await, "already asked");
    assert_eq!(c.call(b.header(), "/accept_contact", json!({"contact_id": a.id})).await.0, 200);
    assert_refused(c.call(a.header(), "/add_contact", add(&b.email)).await, "already in your contacts");
    assert_refused(c.call(b.header(), "/add_contact", add(&a.email)).await, "already in your contacts");
    assert_eq!(c.call(a.header(), "/add_contact", json!({})).await.0, 400);
}

#[tokio::test]
async fn crossed_requests_make_contacts() {
    let (server, _dir) = start().await;
    // One connection each: a connection speaks for one session (§6).
    let mut c = Client::connect(server.addr()).await;
    let mut d = Client::connect(server.addr()).await;
    let a = c.create("ivy@example.org").await;
    let b = d.create("jay@example.org").await;
    assert_eq!(c.call(a.header(), "/add_contact", json!({"contact_email": b.email})).await.0, 200);
    assert_eq!(d.call(b.header(), "/add_contact", json!({"contact_email": a.email})).await.0, 200);
    assert_eq!(c.contacts(&a).await, vec![pair("jay@example.org", "online")]);
    assert_eq!(d.contacts(&b).await, vec![pair("ivy@example.org", "online")]);
}

#[tokio::test]
async fn decline_and_answer_refusals() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let a = c.create("kai@example.org").await;
    let b = c.create("lea@example.org").await;
    assert_eq!(c.call(a.header(), "/add_contact", json!({"contact_email": b.email})).await.0, 200);
    // Only the asked side can answer.
    assert_refused(c.call(a.header(), "/accept_contact", json!({"contact_id": b.id})).await, "no contact request");
    assert_eq!(c.call(b.header(), "/decline_contact", json!({"contact_id": a.id})).await.0, 200);
    assert_eq!(c.contacts(&a).await, vec![]);
    assert_refused(c.call(b.header(), "/decline_contact", json!({"contact_id": a.id})).await, "no contact request");
    assert_refused(c.call(b.header(), "/accept_contact", json!({"contact_id": a.id})).await, "no contact request");
    assert_refused(c.call(b.header(), "/accept_contact", json!({"contact_id": "999999"})).await, "no contact request");
    assert_eq!(c.call(b.header(), "/accept_contact", json!({"contact_id": "abc"})).await.0, 400);
    assert_eq!(c.call(b.header(), "/decline_contact", Value::Null).await.0, 400);
    // After a decline, asking again is allowed.
    assert_eq!(c.call(a.header(), "/add_contact", json!({"contact_email": b.email})).await.0, 200);
}

#[tokio::test]
async fn remove_by_id_by_email_and_cancel() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let a = c.create("max@example.org").await;
    let b = c.create("nia@example.org").await;
    let d = c.create("oz@example.org").await;
    c.befriend(&a, &b).await;
    c.befriend(&a, &d).await;
    assert_eq!(c.call(a.header(), "/remove_contact", json!({"contact_id": b.id})).await.0, 200);
    assert_eq!(c.contacts(&b).await, vec![], "removed on both sides");
    assert_eq!(c.call(d.header(), "/remove_contact", json!({"contact_email": "MAX@example.org"})).await.0, 200);
    assert_eq!(c.contacts(&a).await, vec![]);
    assert_refused(c.call(a.header(), "/remove_contact", json!({"contact_id": b.id})).await, "not in your contacts");
    assert_refused(
        c.call(a.header(), "/remove_contact", json!({"contact_email": "who@example.org"})).await,
        "nobody has",
    );
    // Removing my pending request cancels it.
    assert_eq!(c.call(a.header(), "/add_contact", json!({"contact_email": b.email})).await.0, 200);
    assert_eq!(c.call(a.header(), "/remove_contact", json!({"contact_id": b.id})).await.0, 200);
    let (_, v) = c.call(b.header(), "/contact_requests", Value::Null).await;
    assert_eq!(v, json!([]));
    assert_eq!(c.call(a.header(), "/remove_contact", json!({})).await.0, 400);
}

#[tokio::test]
async fn every_authenticated_route_checks_the_token() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let a = c.create("pia@example.org").await;
    let b = c.create("quin@example.org").await;
    let routes = [
        ("/contacts", Value::Null),
        ("/add_contact", json!({"contact_email": b.email})),
        ("/remove_contact", json!({"contact_id": b.id})),
        ("/contact_requests", Value::Null),
        ("/accept_contact", json!({"contact_id": b.id})),
        ("/decline_contact", json!({"contact_id": b.id})),
        ("/delete", Value::Null),
    ];
    let bad_headers = [
        Value::Null,
        json!({"id": a.id}),
        json!({"id": a.id, "token": "wrong"}),
        json!({"id": b.id, "token": a.token}),
        json!({"id": "not-a-number", "token": a.token}),
        json!({"id": a.id, "token": ""}),
    ];
    for (route, data) in &routes {
        for h in &bad_headers {
            let (status, v) = c.call(h.clone(), route, data.clone()).await;
            assert_eq!(status, 401, "{route} with {h}: {v}");
        }
    }
    // Nothing changed.
    assert_eq!(c.contacts(&a).await, vec![]);
    assert_eq!(c.contacts(&b).await, vec![]);
    // Keys in any case work.
    let (status, _) = c.call(json!({"ID": a.id, "Token": a.token}), "/contacts", Value::Null).await;
    assert_eq!(status, 200);
}
