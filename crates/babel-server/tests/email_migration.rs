//! A database written by the previous schema (version 1, which compared
//! addresses by lowercase only) holds look-alike accounts; opening it with
//! this server migrates it without losing anybody (PROTOCOL.md §5).
#![allow(clippy::unwrap_used)]

mod common;

use babel_server::RunningServer;
use common::{Client, assert_refused};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

/// Schema version 1 as released (`store/sqlite.rs`, MIGRATIONS[0]).
const SCHEMA_V1: &str = "CREATE TABLE users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        email         TEXT NOT NULL UNIQUE,
        name          TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash  BLOB NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        last_used   INTEGER NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE INDEX sessions_last_used ON sessions(last_used);
    CREATE TABLE contacts (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        contact_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, contact_id)
    ) WITHOUT ROWID;
    CREATE INDEX contacts_contact ON contacts(contact_id);
    CREATE TABLE requests (
        from_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        to_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (from_id, to_id)
    ) WITHOUT ROWID;
    CREATE INDEX requests_to ON requests(to_id);";

/// Addresses as version 1 stored them (trimmed, lowercase), oldest first.
const OLD: &[&str] = &[
    "ann@example.org",         // 1: the real Ann
    "an\u{200B}n@example.org", // 2: Ann with a zero-width space: same address once it is dropped
    "\u{0430}nn@example.org",  // 3: Cyrillic а: its own address, but it looks like Ann's
    "ｂｏｂ@example.org",      // 4: full-width, collides with nobody
    "ｃｙ@example.org",        // 5: older full-width spelling of ...
    "cy@example.org",          // 6: ... an address already in canonical form
    "dee@ex--ample.org",       // 7: a domain IDNA now refuses
    "eve@example.org",         // 8: a contact of 2, to show links survive
];

fn old_database(path: &std::path::Path) {
    let db = Connection::open(path).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.execute_batch(SCHEMA_V1).unwrap();
    db.pragma_update(None, "user_version", 1).unwrap();
    let cost = babel_server::auth::PasswordCost { memory_kib: 256, iterations: 1 };
    let hash = babel_server::auth::hash_password("password123", cost).unwrap();
    for (i, email) in OLD.iter().enumerate() {
        db.execute(
            "INSERT INTO users (email, name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![email, format!("user{}", i + 1), hash, i as i64],
        )
        .unwrap();
    }
    db.execute("INSERT INTO contacts (user_id, contact_id) VALUES (2, 8), (8, 2)", []).unwrap();
    db.execute("UPDATE users SET name = ?1 WHERE id = 8", ["eve\u{202E}gnp.exe"]).unwrap();
}

async fn login(c: &mut Client, mail: &str) -> (i32, Value) {
    c.call(Value::Null, "/login", json!({"user_mail": mail, "pass": "password123"})).await
}

#[tokio::test]
async fn version_1_database_is_migrated_without_losing_anybody() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(&dir);
    old_database(&config.db);
    let server = RunningServer::start(&config).await.unwrap();
    let mut c = Client::connect(server.addr()).await;

    // Everybody still logs in with the exact address they always used.
    for (i, email) in OLD.iter().enumerate() {
        let (status, v) = login(&mut c, email).await;
        assert_eq!(status, 200, "{email:?}: {v}");
        assert_eq!(v["id"], (i + 1).to_string(), "{email:?} is still account {}", i + 1);
    }
    // Accounts that collided with nobody now answer their canonical form,
    // and are found by it too.
    let (_, v) = login(&mut c, "bob@example.org").await;
    assert_eq!((v["id"].as_str(), v["email"].as_str()), (Some("4"), Some("bob@example.org")));
    // The canonical address belongs to the account that held it first; a
    // look-alike keeps its exact stored address.
    for (mail, id) in [("ANN@example.org", "1"), ("ａｎｎ@example.org", "1"), ("CY@example.org", "6")] {
        let (status, v) = login(&mut c, mail).await;
        assert_eq!((status, v["id"].as_str()), (200, Some(id)), "{mail}: {v}");
    }
    let (_, v) = login(&mut c, OLD[1]).await;
    assert_eq!(v["email"], OLD[1], "the look-alike keeps its exact address");
    let (_, v) = login(&mut c, OLD[4]).await;
    assert_eq!(v["email"], OLD[4]);

    // Their links survive.
    let (_, v) = login(&mut c, OLD[1]).await;
    let two = common::session(v);
    let contacts: Vec<String> = c.contacts(&two).await.into_iter().map(|(email, _)| email).collect();
    assert_eq!(contacts, vec!["eve@example.org".to_owned()]);
    // A name that reversed the text after it lost the override.
    let (_, v) = c.call(two.header(), "/contacts", Value::Null).await;
    assert_eq!(v[0]["name"], "evegnp.exe");

    // Looking up an address by /add_contact finds the owner of its
    // canonical form, never a look-alike.
    let (_, v) = login(&mut c, "eve@example.org").await;
    let eve = common::session(v);
    let (status, v) = c.call(eve.header(), "/add_contact", json!({"contact_email": "ANN@example.org"})).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = login(&mut c, "ann@example.org").await;
    let ann = common::session(v);
    let (_, asked) = c.call(ann.header(), "/contact_requests", Value::Null).await;
    assert_eq!(asked[0]["id"], "8");

    // New look-alikes of any of them are refused.
    let create = |mail: &str| json!({"user_mail": mail, "pass": "password123"});
    assert_refused(c.call(Value::Null, "/create", create("ann@example.org")).await, "already exists");
    assert_refused(c.call(Value::Null, "/create", create("\u{0430}nn@example.org")).await, "already exists");
    assert_refused(c.call(Value::Null, "/create", create("ann@ex\u{0430}mple.org")).await, "looks like");
    assert_refused(c.call(Value::Null, "/create", create("b0b@example.org")).await, "looks like");
    drop(c);
    server.shutdown().await;

    // What the migration wrote down, for an operator to see.
    let db = Connection::open(&config.db).unwrap();
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert!(version >= 2);
    let row = |id: i64| -> (String, Option<String>, Option<i64>, bool) {
        db.query_row(
            "SELECT email, legacy_email, lookalike_of, email_skeleton IS NOT NULL FROM users WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
    };
    assert_eq!(row(1), ("ann@example.org".into(), None, None, true));
    assert_eq!(row(2), (OLD[1].into(), None, Some(1), false));
    assert_eq!(row(3), (OLD[2].into(), None, Some(1), false));
    assert_eq!(row(4), ("bob@example.org".into(), Some(OLD[3].into()), None, true));
    assert_eq!(row(5), (OLD[4].into(), None, Some(6), false));
    assert_eq!(row(6), ("cy@example.org".into(), None, None, true));
    assert_eq!(row(7), (OLD[6].into(), None, None, true));
}
