//! Shared helpers for the whole-server tests: a real server on 127.0.0.1
//! port 0 and a bare frame client speaking real TCP.
#![allow(dead_code, unused_macros, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
#[macro_use]
pub mod topology;

use std::net::SocketAddr;
use std::time::Duration;

use babel_proto::{Limits, RawRequest, RawResponse, decode_request, decode_response};
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

/// A connection in event mode (`/events`), read frame by frame.
#[allow(dead_code)]
pub struct Events {
    client: Client,
    buf: BytesMut,
}

#[allow(dead_code)]
impl Events {
    /// Opens `/events` for `s`.
    pub async fn open(addr: SocketAddr, s: &Session) -> Events {
        let mut client = Client::connect(addr).await;
        let (status, v) = client.call(s.header(), "/events", Value::Null).await;
        assert_eq!(status, 200, "{v}");
        // The first events may have come in with the answer: keep them,
        // or the stream is read from the middle of a frame.
        let buf = std::mem::take(&mut client.buf);
        Events { client, buf }
    }

    /// The next event, pings included, or `None` once the server closed
    /// the connection.
    pub async fn try_next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(f) = decode_request(&mut self.buf, &Limits::default()).unwrap() {
                let data = if f.data.is_empty() { Value::Null } else { serde_json::from_slice(&f.data).unwrap() };
                return Some((f.route_str().unwrap().to_owned(), data));
            }
            let n = tokio::time::timeout(TIMEOUT, self.client.stream.read_buf(&mut self.buf))
                .await
                .expect("no event in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// The next event that is not a `/ping`; the connection must stay open.
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            match self.try_next().await {
                Some((r, _)) if r == "/ping" => continue,
                Some(e) => return e,
                None => panic!("event connection closed"),
            }
        }
    }

    /// The next event named `route`, skipping others.
    pub async fn next_named(&mut self, route: &str) -> Value {
        loop {
            let (r, v) = self.next().await;
            if r == route {
                return v;
            }
        }
    }

    /// Every event up to and including the first `route` that `pred`
    /// accepts, pings left out.
    pub async fn until(&mut self, route: &str, pred: impl Fn(&Value) -> bool) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.try_next())
                .await
                .unwrap_or_else(|_| panic!("no {route} event in time; saw {seen:?}"));
            let (r, v) = next.unwrap_or_else(|| panic!("closed before {route}; saw {seen:?}"));
            if r == "/ping" {
                continue;
            }
            let done = r == route && pred(&v);
            seen.push((r, v));
            if done {
                return seen;
            }
        }
    }

    /// Asserts the server closes the stream, with no event but pings first.
    pub async fn closes(&mut self) {
        while let Some((r, v)) = self.try_next().await {
            assert_eq!(r, "/ping", "no event before the close, got {r} {v}");
        }
    }
}
