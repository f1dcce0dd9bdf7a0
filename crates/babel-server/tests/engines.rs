//! The engines the cluster runs on are there whenever the test command
//! runs (`scripts/setup.sh` starts them): PostgreSQL with the tests' role
//! and database, and `nats-server` with JetStream. A missing one fails here,
//! named, rather than skipping anything.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// `nats://127.0.0.1:4222`, or the port `BABEL_NATS_PORT` names (as
/// `scripts/engines.sh` reads it).
fn nats_port() -> u16 {
    std::env::var("BABEL_NATS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(4222)
}

#[test]
fn nats_server_runs_with_jetstream() {
    let port = nats_port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| {
        panic!("nats-server is not running on 127.0.0.1:{port} ({e}); scripts/setup.sh installs and starts it")
    });
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A NATS server greets every connection with one `INFO {json}` line.
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while greeting.last() != Some(&b'\n') && greeting.len() < 64 * 1024 {
        let n = s.read(&mut byte).unwrap_or_else(|e| panic!("127.0.0.1:{port} said nothing: {e}"));
        assert!(n == 1, "127.0.0.1:{port} closed the connection: not nats-server?");
        greeting.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&greeting);
    let json = line.trim().strip_prefix("INFO ").unwrap_or_else(|| panic!("not a NATS greeting: {line}"));
    let info: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(info["jetstream"], serde_json::json!(true), "JetStream is off: {info}");
}

#[test]
fn postgres_has_the_tests_database() {
    let schema = babel_server::store::pg::scratch_for_tests().unwrap_or_else(|e| panic!("{e}"));
    babel_server::store::pg::PgStore::open(schema.url()).unwrap();
}
