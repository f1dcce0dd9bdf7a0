//! Shared helpers for the whole-server tests: a real server on 127.0.0.1
//! port 0 and a bare frame client speaking real TCP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use babel_proto::{Limits, RawRequest, RawResponse, decode_response};
use babel_server::auth::PasswordCost;
use babel_server::{Config, RunningServer};
use bytes::BytesMut;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: a test asserts that a thing happens, not how fast.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Settings for tests: loopback, port 0, a temporary database and a cheap
/// password hash (argon2's real cost is for production, not for CI).
pub fn test_config(dir: &tempfile::TempDir) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        ..Config::default()
    }
}

pub async fn start() -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(&test_config(&dir)).await.unwrap();
    (server, dir)
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    f(&mut config);
    let server = RunningServer::start(&config).await.unwrap();
    (server, dir)
}

/// A client that writes frames and reads responses, nothing more.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// What a test needs of a logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub email: String,
    pub token: String,
}

impl Session {
    pub fn header(&self) -> Value {
        json!({"id": self.id, "token": self.token})
    }
}

fn section(v: &Value) -> Vec<u8> {
    if v.is_null() { Vec::new() } else { serde_json::to_vec(v).unwrap() }
}

pub fn frame(header: &Value, route: &str, data: &Value) -> Vec<u8> {
    RawRequest::new(section(header), route.to_owned(), section(data)).to_bytes().to_vec()
}

impl Client {
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: BytesMut::new() }
    }

    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await.unwrap().unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: BytesMut::new() }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response, or `None` if the server closed the connection.
    pub async fn try_read(&mut self) -> Option<RawResponse> {
        let limits = Limits { max_data: 64 << 20, ..Limits::default() };
        loop {
            if let Some(r) = decode_response(&mut self.buf, &limits).unwrap() {
                return Some(r);
            }
            let n = tokio::time::timeout(TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("server did not answer in time")
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    pub async fn read(&mut self) -> (i32, Value) {
        let r = self.try_read().await.expect("connection closed");
        let v = if r.data.is_empty() { Value::Null } else { serde_json::from_slice(&r.data).unwrap() };
        (r.status, v)
    }

    pub async fn call(&mut self, header: Value, route: &str, data: Value) -> (i32, Value) {
        self.write(&frame(&header, route, &data)).await;
        self.read().await
    }

    /// True once the server has closed the connection (EOF or reset).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(tokio::time::timeout(TIMEOUT, self.stream.read(&mut b)).await, Ok(Ok(0) | Err(_)))
    }

    pub async fn create(&mut self, email: &str) -> Session {
        let (status, v) = self.call(Value::Null, "/create", json!({"user_mail": email, "pass": "password123"})).await;
        assert_eq!(status, 201, "{v}");
        session(v)
    }

    pub async fn login(&mut self, email: &str) -> Session {
        let (status, v) = self.call(Value::Null, "/login", json!({"user_mail": email, "pass": "password123"})).await;
        assert_eq!(status, 200, "{v}");
        session(v)
    }

    pub async fn contacts(&mut self, s: &Session) -> Vec<(String, String)> {
        let (status, v) = self.call(s.header(), "/contacts", Value::Null).await;
        assert_eq!(status, 200, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| (c["email"].as_str().unwrap().to_owned(), c["status"].as_str().unwrap().to_owned()))
            .collect()
    }

    pub async fn befriend(&mut self, a: &Session, b: &Session) {
        let (s, v) = self.call(a.header(), "/add_contact", json!({"contact_email": b.email})).await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = self.call(b.header(), "/accept_contact", json!({"contact_id": a.id})).await;
        assert_eq!(s, 200, "{v}");
    }
}

pub fn session(v: Value) -> Session {
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}")).to_owned();
    Session { id: s("id"), name: s("name"), email: s("email"), token: s("token") }
}

/// Asserts a 403 whose `error` contains `needle`.
pub fn assert_refused((status, v): (i32, Value), needle: &str) {
    assert_eq!(status, 403, "{v}");
    let reason = v["error"].as_str().unwrap_or_default();
    assert!(reason.contains(needle), "reason {reason:?} should mention {needle:?}");
}
