//! Abuse limits over real TCP, with loopback counted as an outside address
//! (`limit_loopback`) and client sockets bound to different 127.0.0.x
//! addresses to play different machines.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use babel_server::limits::LimitsConfig;
use bytes::BytesMut;
use common::{Client, frame, start_with};
use serde_json::{Value, json};
use tokio::net::TcpSocket;

async fn from(source: &str, server: SocketAddr) -> Client {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = sock.connect(server).await.unwrap();
    Client::from_stream(stream)
}

fn strict() -> LimitsConfig {
    LimitsConfig {
        login_failures_per_address: 3,
        login_failures_per_account: 6,
        account_pause_secs: 1,
        creates_per_address: 3,
        max_connections_per_address: 4,
        requests_per_sec: 5,
        request_burst: 10,
        max_pending_requests: 2,
        limit_loopback: true,
        ..LimitsConfig::default()
    }
}

fn login(email: &str, pass: &str) -> Value {
    json!({"user_mail": email, "pass": pass})
}

#[tokio::test]
async fn a_password_guesser_is_cut_off_and_the_owner_still_gets_in() {
    let (server, _dir) = start_with(|c| c.abuse = strict()).await;
    let mut owner = from("127.0.0.2", server.addr()).await;
    owner.create("ann@example.org").await;
    let mut guesser = from("127.0.0.3", server.addr()).await;
    for _ in 0..3 {
        assert_eq!(guesser.call(Value::Null, "/login", login("ann@example.org", "guess-guess")).await.0, 401);
    }
    let (status, v) = guesser.call(Value::Null, "/login", login("ann@example.org", "password123")).await;
    assert_eq!(status, 403, "even the right password, from the guessing address");
    assert!(v["error"].as_str().unwrap().contains("try again in"), "{v}");
    // The owner, from elsewhere, at once.
    let mut elsewhere = from("127.0.0.4", server.addr()).await;
    elsewhere.login("ann@example.org").await;
}

#[tokio::test]
async fn an_account_attacked_from_many_addresses_slows_down_but_never_locks() {
    let (server, _dir) = start_with(|c| c.abuse = strict()).await;
    let mut owner = from("127.0.0.2", server.addr()).await;
    owner.create("ben@example.org").await;
    for i in 10..16 {
        let mut g = from(&format!("127.0.0.{i}"), server.addr()).await;
        assert_eq!(g.call(Value::Null, "/login", login("ben@example.org", "nope-nope")).await.0, 401);
    }
    let mut real = from("127.0.0.20", server.addr()).await;
    let (status, v) = real.call(Value::Null, "/login", login("ben@example.org", "password123")).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("on this account"), "{v}");
    // After the short pause the owner gets in.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    real.login("ben@example.org").await;
}

#[tokio::test]
async fn account_creation_connections_and_requests_are_limited() {
    let (server, _dir) = start_with(|c| c.abuse = strict()).await;
    let mut c = from("127.0.0.2", server.addr()).await;
    let a = c.create("c1@example.org").await;
    c.create("c2@example.org").await;
    c.create("c3@example.org").await;
    let (status, v) = c.call(Value::Null, "/create", login("c4@example.org", "password123")).await;
    assert_eq!(status, 403);
    assert!(v["error"].as_str().unwrap().contains("accounts created"), "{v}");

    // Pending requests are capped.
    let mut other = from("127.0.0.3", server.addr()).await;
    let b = other.create("d1@example.org").await;
    other.create("d2@example.org").await;
    other.create("d3@example.org").await;
    for (email, want) in [("d1@example.org", 200), ("d2@example.org", 200), ("d3@example.org", 403)] {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let (status, v) = c.call(a.header(), "/add_contact", json!({"contact_email": email})).await;
        assert_eq!(status, want, "{email}: {v}");
    }
    let _ = b;

    // Connections per address: the fifth from 127.0.0.5 is closed at once.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(from("127.0.0.5", server.addr()).await);
    }
    let mut fifth = from("127.0.0.5", server.addr()).await;
    assert!(fifth.is_closed().await);

    // A connection that pipelines far past its budget is told to slow down.
    let mut fast = from("127.0.0.6", server.addr()).await;
    let mut bytes = BytesMut::new();
    for _ in 0..30 {
        bytes.extend_from_slice(&frame(&Value::Null, "/nope", &Value::Null));
    }
    fast.write(&bytes).await;
    let mut refused = 0;
    for _ in 0..30 {
        if fast.read().await.0 == 403 {
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused} of 30 refused");
}
