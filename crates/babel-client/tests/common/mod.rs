//! A real server on 127.0.0.1 port 0 and helpers to drive clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use babel_client::{Client, Event, EventStream};
use babel_proto::{ServerEvent, SessionInfo, UserId};
use babel_server::auth::PasswordCost;
use babel_server::{Config, RunningServer};

/// Generous: tests assert that things happen, not how fast.
pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const PASSWORD: &str = "password123";

pub struct TestServer {
    pub server: RunningServer,
    pub addr: String,
    _dir: tempfile::TempDir,
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    };
    f(&mut config);
    let server = RunningServer::start(&config).await.unwrap();
    // A server on 0.0.0.0 is reached on loopback.
    let a = server.addr();
    let addr = if a.ip().is_unspecified() { format!("127.0.0.1:{}", a.port()) } else { a.to_string() };
    TestServer { server, addr, _dir: dir }
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// A logged-in user with an open event stream.
pub struct User {
    pub client: Client,
    pub events: EventStream,
    pub me: SessionInfo,
}

impl User {
    pub fn id(&self) -> UserId {
        self.me.id
    }

    /// Waits for the first event matching `want`, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut want: impl FnMut(&ServerEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.next()).await;
            match next {
                Err(_) => panic!("{}: no {what} within {TIMEOUT:?}", self.me.email),
                Ok(None) => panic!("{}: event stream ended while waiting for {what}", self.me.email),
                Ok(Some(Err(e))) => panic!("{}: event stream error {e} while waiting for {what}", self.me.email),
                Ok(Some(Ok(Event::Server(ev)))) => {
                    if let Some(t) = want(&ev) {
                        return t;
                    }
                }
                Ok(Some(Ok(Event::Reconnected | Event::Disconnected))) => {}
            }
        }
    }

    /// Asserts that no event matching `bad` arrives within `wait`.
    pub async fn expect_none(&mut self, what: &str, wait: Duration, mut bad: impl FnMut(&ServerEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(Event::Server(ev)))) = tokio::time::timeout_at(deadline, self.events.next()).await {
            assert!(!bad(&ev), "{}: unexpected {what}: {ev:?}", self.me.email);
        }
    }
}

pub async fn user(server: &TestServer, email: &str) -> User {
    let mut client = Client::connect(server.addr.clone()).await.unwrap();
    let me = client.create(email, PASSWORD, None).await.unwrap();
    let events = client.events().await.unwrap();
    User { client, events, me }
}

/// Another device of the same account.
pub async fn device(server: &TestServer, email: &str) -> User {
    let mut client = Client::connect(server.addr.clone()).await.unwrap();
    let me = client.login(email, PASSWORD).await.unwrap();
    let events = client.events().await.unwrap();
    User { client, events, me }
}

pub async fn befriend(a: &mut User, b: &mut User) {
    a.client.add_contact(&b.me.email).await.unwrap();
    b.client.accept_contact(a.id()).await.unwrap();
    let bid = b.id();
    a.expect("contact_added", |e| matches!(e, ServerEvent::ContactAdded(c) if c.user.id == bid).then_some(())).await;
    let aid = a.id();
    b.expect("contact_added", |e| matches!(e, ServerEvent::ContactAdded(c) if c.user.id == aid).then_some(())).await;
}

/// A two-party call between two new users, answered: both users, the call
/// and each side's relay grant (port, handle, key).
pub async fn answered_call(
    s: &TestServer,
    a: &str,
    b: &str,
) -> (User, User, babel_proto::CallId, [(u16, u32, [u8; 16]); 2]) {
    use babel_proto::MediaSetup;
    let mut a = user(s, a).await;
    let mut b = user(s, b).await;
    befriend(&mut a, &mut b).await;
    let started = a.client.call(b.id(), MediaSetup::default()).await.unwrap();
    b.expect("incoming", |e| matches!(e, ServerEvent::IncomingCall(_)).then_some(())).await;
    let joined = b.client.accept_call(started.call_id, MediaSetup::default()).await.unwrap();
    let grants = [started.relay.parts().unwrap(), joined.relay.parts().unwrap()];
    (a, b, started.call_id, grants)
}

/// BIND from `sock`, and CONFIRM when challenged (with `nonce + 1`): the
/// address the relay saw, once bound there.
pub async fn relay_bind(
    sock: &tokio::net::UdpSocket,
    relay: std::net::SocketAddr,
    handle: u32,
    key: &[u8; 16],
    nonce: u64,
) -> Option<std::net::SocketAddr> {
    use babel_proto::relay as wire;
    sock.send_to(&wire::encode_bind(handle, nonce, key), relay).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await.ok()?.unwrap();
    let ack = wire::verify_bind_ack(&buf[..n], key)?;
    if ack.state == wire::BOUND {
        return Some(ack.seen);
    }
    sock.send_to(&wire::encode_confirm(handle, nonce + 1, &ack.cookie, key), relay).await.unwrap();
    let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await.ok()?.unwrap();
    wire::verify_bind_ack(&buf[..n], key).filter(|a| a.state == wire::BOUND).map(|a| a.seen)
}
