//! The real `babel-server` binary on PostgreSQL (`--db postgres://…`), over
//! real sockets: accounts, contacts and messages work, outlive the node, and
//! are shared by two nodes on one database. Each test has a schema of its
//! own in the database `scripts/setup.sh` makes (`BABEL_TEST_POSTGRES`
//! names another); without PostgreSQL the tests fail and say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use babel_server::store::pg::{ScratchSchema, scratch_for_tests};
use common::Client;
use serde_json::json;

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// Stops the node with SIGKILL and answers what it logged.
    fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut log = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        log
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn schema() -> ScratchSchema {
    scratch_for_tests().unwrap_or_else(|e| panic!("{e}"))
}

fn node(db: &str, dir: &tempfile::TempDir) -> Node {
    let config = dir.path().join("babel.toml");
    std::fs::write(&config, "[password]\nmemory_kib = 256\niterations = 1\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_babel-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "info", "--db", db])
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        panic!("the node did not start: {line}{log}");
    };
    Node { addr: addr.parse().unwrap(), child }
}

#[tokio::test]
async fn accounts_contacts_and_messages_live_in_postgres() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let first = node(schema.url(), &dir);
    let mut c = Client::connect(first.addr).await;
    let a = c.create("ann@example.org").await;
    let b = c.create("bob@example.org").await;
    c.befriend(&a, &b).await;
    let (status, v) = c.call(a.header(), "/send_message", json!({"contact_id": b.id, "text": "hello from pg"})).await;
    assert_eq!(status, 200, "{v}");
    let message_id = v["message_id"].clone();
    let (status, v) = c.call(b.header(), "/messages", json!({"contact_id": a.id})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((&v[0]["message_id"], &v[0]["text"]), (&message_id, &json!("hello from pg")));

    // Everything outlives the node: another one on the same database finds
    // the accounts, the contact, the message and the session.
    let log = first.kill();
    assert!(log.contains("postgres://babel@127.0.0.1:5432/babel"), "{log}");
    assert!(!log.contains(":babel@"), "the password reached the log: {log}");
    let second = node(schema.url(), &dir);
    let mut c = Client::connect(second.addr).await;
    assert_eq!(c.contacts(&a).await, vec![("bob@example.org".to_owned(), "offline".to_owned())]);
    let b = c.login("bob@example.org").await;
    let (status, v) = c.call(b.header(), "/unread", json!(null)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!([{"contact_id": a.id, "count": "1"}]));
    let (status, v) = c.call(b.header(), "/messages", json!({"contact_id": a.id})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["message_id"], message_id);
}

#[tokio::test]
async fn two_nodes_share_one_database() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let (one, two) = (node(schema.url(), &dir), node(schema.url(), &dir));
    let (mut c1, mut c2) = (Client::connect(one.addr).await, Client::connect(two.addr).await);
    let a = c1.create("ann@example.org").await;
    // The address is taken on every node, and a token made on one works
    // on the other.
    let (status, v) =
        c2.call(json!(null), "/create", json!({"user_mail": "ann@example.org", "pass": "password123"})).await;
    assert_eq!(status, 403, "{v}");
    let b = c2.create("bob@example.org").await;
    let (status, v) = c2.call(a.header(), "/add_contact", json!({"contact_email": "bob@example.org"})).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = c1.call(b.header(), "/accept_contact", json!({"contact_id": a.id})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c1.contacts(&b).await.len(), 1);
    assert_eq!(c2.contacts(&a).await.len(), 1);
    let (status, v) = c1.call(a.header(), "/send_message", json!({"contact_id": b.id, "text": "across"})).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = c2.call(b.header(), "/messages", json!({"contact_id": a.id})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["text"], json!("across"));
}

#[tokio::test]
async fn sigterm_on_postgres_exits_cleanly() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let node = node(schema.url(), &dir);
    let mut c = Client::connect(node.addr).await;
    c.create("term@example.org").await;
    let status = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut node = node;
    let exit = tokio::task::spawn_blocking(move || {
        let exit = node.child.wait().unwrap();
        let mut log = String::new();
        node.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (exit, log)
    });
    let (exit, log) = tokio::time::timeout(common::TIMEOUT, exit).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}: {log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// In-process, as tests and `babel demo` start servers: the store is opened
/// and closed from inside a tokio runtime without upsetting its driver.
#[tokio::test]
async fn running_server_opens_and_closes_postgres_inside_a_runtime() {
    let (schema, dir) = (schema(), tempfile::tempdir().unwrap());
    let mut config = common::test_config(&dir);
    config.db = schema.url().into();
    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let mut c = Client::connect(server.addr()).await;
    c.create("ann@example.org").await;
    server.shutdown().await;
    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let mut c = Client::connect(server.addr()).await;
    c.login("ann@example.org").await;
    drop(server);
}
