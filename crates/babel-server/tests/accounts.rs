//! Accounts and sessions over real TCP: `/create`, `/login`, `/logout`,
//! `/delete`, token life.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, assert_refused, start, start_with};
use serde_json::{Value, json};

#[tokio::test]
async fn create_answers_201_with_user_and_token() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let (status, v) =
        c.call(Value::Null, "/create", json!({"user_mail": " Ann@Example.org", "pass": "password123"})).await;
    assert_eq!(status, 201);
    assert_eq!(v["email"], "ann@example.org", "emails are kept lowercase");
    assert_eq!(v["name"], "ann", "the name defaults to the local part");
    assert!(v["id"].as_str().unwrap().parse::<i64>().is_ok());
    assert!(v["token"].as_str().unwrap().len() >= 22, "at least 128 bits");
    // The new token works at once.
    let s = common::session(v);
    assert_eq!(c.contacts(&s).await, vec![]);
}

#[tokio::test]
async fn create_refusals_say_why() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    c.create("bo@example.org").await;
    let create = |mail: &str, pass: &str| json!({"user_mail": mail, "pass": pass});
    assert_refused(c.call(Value::Null, "/create", create("BO@example.org", "password123")).await, "already exists");
    assert_refused(c.call(Value::Null, "/create", create("not-an-email", "password123")).await, "not a valid email");
    assert_refused(c.call(Value::Null, "/create", create("cy@example.org", "short")).await, "at least 8");
    let (status, v) = c.call(Value::Null, "/create", json!({"user_mail": "cy@example.org"})).await;
    assert_eq!(status, 400, "missing pass: {v}");
    assert!(v["error"].as_str().unwrap().contains("pass"));
}

#[tokio::test]
async fn names_with_escaped_quotes_survive() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    // Written by hand to be sure of the escaping on the wire.
    let data = br#"{"User_Mail":"q@example.org","PASS":"pass \"word\" 1","name":"Ann \"Q\" Lee"}"#;
    let f = babel_proto::RawRequest::new(Vec::new(), "/create", data.to_vec()).to_bytes();
    c.write(&f).await;
    let (status, v) = c.read().await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], "Ann \"Q\" Lee");
    let (status, _) =
        c.call(Value::Null, "/login", json!({"user_mail": "q@example.org", "pass": "pass \"word\" 1"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn login_gives_a_fresh_token_per_device() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let first = c.create("dee@example.org").await;
    let phone = c.login("DEE@example.org").await;
    let laptop = c.login("dee@example.org").await;
    assert_eq!(phone.id, first.id);
    assert_ne!(phone.token, laptop.token);
    assert_ne!(first.token, phone.token);
    for s in [&first, &phone, &laptop] {
        assert_eq!(c.contacts(s).await, vec![], "every session is live");
    }
    let bad = |mail: &str, pass: &str| json!({"user_mail": mail, "pass": pass});
    assert_eq!(c.call(Value::Null, "/login", bad("dee@example.org", "wrong-password")).await.0, 401);
    assert_eq!(c.call(Value::Null, "/login", bad("nobody@example.org", "password123")).await.0, 401);
    assert_eq!(c.call(Value::Null, "/login", bad("garbage", "password123")).await.0, 401);
    assert_eq!(c.call(Value::Null, "/login", json!({"pass": "x"})).await.0, 400);
}

#[tokio::test]
async fn logout_ends_only_that_session() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let a = c.create("eve@example.org").await;
    let b = c.login("eve@example.org").await;
    // The seed's form: user_mail and token in the data.
    let (status, _) = c.call(Value::Null, "/logout", json!({"user_mail": "eve@example.org", "token": a.token})).await;
    assert_eq!(status, 200);
    assert_eq!(c.call(a.header(), "/contacts", Value::Null).await.0, 401);
    assert_eq!(c.contacts(&b).await, vec![]);
    // A token that is already gone, or another user's email, is 401.
    assert_eq!(c.call(Value::Null, "/logout", json!({"user_mail": "eve@example.org", "token": a.token})).await.0, 401);
    c.create("fay@example.org").await;
    assert_eq!(c.call(Value::Null, "/logout", json!({"user_mail": "fay@example.org", "token": b.token})).await.0, 401);
    // The header form.
    assert_eq!(c.call(b.header(), "/logout", Value::Null).await.0, 200);
    assert_eq!(c.call(b.header(), "/contacts", Value::Null).await.0, 401);
}

#[tokio::test]
async fn delete_removes_the_user_everywhere() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let gus = c.create("gus@example.org").await;
    let gus2 = c.login("gus@example.org").await;
    let hal = c.create("hal@example.org").await;
    let ida = c.create("ida@example.org").await;
    let jo = c.create("jo@example.org").await;
    c.befriend(&gus, &hal).await;
    // Pending requests in both directions.
    assert_eq!(c.call(gus.header(), "/add_contact", json!({"contact_email": ida.email})).await.0, 200);
    assert_eq!(c.call(jo.header(), "/add_contact", json!({"contact_email": gus.email})).await.0, 200);

    // Someone else's id with my token is refused and changes nothing.
    let forged = json!({"id": hal.id, "token": gus.token});
    assert_eq!(c.call(forged, "/delete", Value::Null).await.0, 401);

    assert_eq!(c.call(gus.header(), "/delete", Value::Null).await.0, 200);
    assert_eq!(c.call(gus2.header(), "/contacts", Value::Null).await.0, 401, "every session ends");
    assert_eq!(c.call(gus.header(), "/delete", Value::Null).await.0, 401);
    assert_eq!(c.call(Value::Null, "/login", json!({"user_mail": gus.email, "pass": "password123"})).await.0, 401);
    assert_eq!(c.contacts(&hal).await, vec![]);
    let (_, incoming) = c.call(ida.header(), "/contact_requests", Value::Null).await;
    assert_eq!(incoming, json!([]));
    assert_eq!(c.contacts(&jo).await, vec![], "my pending request to them is gone");
    // The email is free again, under a new id.
    let again = c.create("gus@example.org").await;
    assert_ne!(again.id, gus.id);
}

#[tokio::test]
async fn delete_with_a_password_checks_it() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let kim = c.create("kim@example.org").await;
    // A wrong `pass` is refused (403, not 401: the token is right) and
    // nothing is deleted.
    let (status, v) = c.call(kim.header(), "/delete", json!({"pass": "not-the-password"})).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("wrong password"), "{v}");
    assert_eq!(c.call(kim.header(), "/contacts", Value::Null).await.0, 200, "still there");
    // The right one deletes.
    assert_eq!(c.call(kim.header(), "/delete", json!({"pass": "password123"})).await.0, 200);
    assert_eq!(c.call(Value::Null, "/login", json!({"user_mail": kim.email, "pass": "password123"})).await.0, 401);
    // Without `pass`, the seed's behaviour: the token is enough.
    let lou = c.create("lou@example.org").await;
    assert_eq!(c.call(lou.header(), "/delete", Value::Null).await.0, 200);
}

#[tokio::test]
async fn unused_sessions_expire() {
    let (server, _dir) = start_with(|c| c.session_ttl_secs = 1).await;
    let mut c = Client::connect(server.addr()).await;
    let s = c.create("kim@example.org").await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // The expired session's own connection may already be closed by the
    // server's purge (`/session_ended` `expired`, tests/account.rs): ask on
    // a new one.
    drop(c);
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.call(s.header(), "/contacts", Value::Null).await.0, 401);
    // Logging in again works.
    let s = c.login("kim@example.org").await;
    assert_eq!(c.contacts(&s).await, vec![]);
}

#[tokio::test]
async fn tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(&dir);
    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let mut c = Client::connect(server.addr()).await;
    let s = c.create("lu@example.org").await;
    drop(c);
    server.shutdown().await;
    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.contacts(&s).await, vec![]);
    // The database holds only the token's hash, never the token.
    let db = std::fs::read(dir.path().join("babel.db")).unwrap();
    let wal = std::fs::read(dir.path().join("babel.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(s.token.len()).any(|w| w == s.token.as_bytes()));
        assert!(!bytes.windows(11).any(|w| w == b"password123"));
    }
}
