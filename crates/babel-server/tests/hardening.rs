//! Cheap attacks on the server's resources and state (issue #14, findings 6,
//! 7, 8, 10 and 12), each played over real sockets against a real server.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, frame, start_with};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// Reads what is left on an event connection until the server closes it.
/// `false` if it is still open after `limit`.
async fn closes_within(client: &mut Client, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, client.stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One race: a fresh session, then `/events` and `/logout` with its token
/// written at the same moment on two new connections. Answers whether the
/// event stream outlived the logout.
async fn events_logout_race(addr: SocketAddr, email: &str) -> bool {
    let s = {
        // Logged in on a connection of its own, closed before the race, so
        // that `/events` finds the user offline and has presence to publish.
        let mut l = Client::connect(addr).await;
        l.login(email).await
    };
    let mut events = Client::connect(addr).await;
    let mut logout = Client::connect(addr).await;
    let ev = frame(&s.header(), "/events", &Value::Null);
    let out = frame(&Value::Null, "/logout", &json!({"user_mail": s.email, "token": s.token}));
    tokio::join!(events.write(&ev), logout.write(&out));
    let (status, v) = logout.read().await;
    assert_eq!(status, 200, "logout: {v}");
    match events.try_read().await {
        // Refused: the session was gone when /events looked.
        Some(r) if r.status == 401 => false,
        Some(r) => {
            assert_eq!(r.status, 200, "events");
            !closes_within(&mut events, Duration::from_secs(5)).await
        }
        // Closed before answering (shutdown only).
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_stream_outlives_a_logout_sent_at_the_same_moment() {
    let (server, _dir) = start_with(|c| c.durability = babel_server::store::sqlite::Durability::Normal).await;
    let addr = server.addr();
    const RACES: usize = 10_000;
    const LANES: usize = 8;
    let mut setup = Client::connect(addr).await;
    let mut emails = Vec::new();
    for lane in 0..LANES {
        let email = format!("race{lane}@example.org");
        setup.create(&email).await;
        emails.push(email);
    }
    drop(setup);
    let lanes = emails.into_iter().map(|email| {
        tokio::spawn(async move {
            let mut survived = 0;
            for _ in 0..RACES / LANES {
                survived += usize::from(events_logout_race(addr, &email).await);
            }
            survived
        })
    });
    let survived: usize = futures::future::join_all(lanes).await.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(survived, 0, "{survived} of {RACES} event streams outlived their logout");
}

/// One race of `/connect_call` against `/logout` of the caller's fresh
/// session, in a ringing call. Answers whether the channel outlived the
/// logout.
async fn channel_logout_race(addr: SocketAddr, me: &mut Client, email: &str, callee: &str) -> bool {
    let s = me.login(email).await;
    let (status, v) = me.call(s.header(), "/call", json!({"contact_id": callee})).await;
    assert_eq!(status, 200, "/call: {v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    let mut channel = Client::connect(addr).await;
    let mut logout = Client::connect(addr).await;
    let connect = frame(&s.header(), "/connect_call", &json!({"call_id": call_id}));
    let out = frame(&Value::Null, "/logout", &json!({"user_mail": s.email, "token": s.token}));
    tokio::join!(channel.write(&connect), logout.write(&out));
    assert_eq!(logout.read().await.0, 200);
    match channel.try_read().await {
        Some(r) if r.status == 200 => !closes_within(&mut channel, Duration::from_secs(5)).await,
        Some(r) => {
            assert!(r.status == 401 || r.status == 403, "/connect_call answered {}", r.status);
            false
        }
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_channel_outlives_a_logout_sent_at_the_same_moment() {
    let (server, _dir) = start_with(|c| c.durability = babel_server::store::sqlite::Durability::Normal).await;
    let addr = server.addr();
    const RACES: usize = 2_000;
    const LANES: usize = 4;
    let lanes = (0..LANES).map(|lane| {
        tokio::spawn(async move {
            let mut me = Client::connect(addr).await;
            let mut callee = Client::connect(addr).await;
            let a = me.create(&format!("chan-a{lane}@example.org")).await;
            let b = callee.create(&format!("chan-b{lane}@example.org")).await;
            me.befriend(&a, &b).await;
            let mut survived = 0;
            for _ in 0..RACES / LANES {
                survived += usize::from(channel_logout_race(addr, &mut me, &a.email, &b.id).await);
            }
            drop(callee);
            survived
        })
    });
    let survived: usize = futures::future::join_all(lanes).await.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(survived, 0, "{survived} of {RACES} call channels outlived their logout");
}

/// The next request-shaped frame the server writes on a call channel, or
/// `None` once it closed the channel.
async fn channel_frame(c: &mut Client, buf: &mut bytes::BytesMut) -> Option<babel_proto::RawRequest> {
    let limits = babel_proto::Limits { max_data: 64 << 20, ..babel_proto::Limits::default() };
    loop {
        if let Some(f) = babel_proto::decode_request(buf, &limits).unwrap() {
            return Some(f);
        }
        match tokio::time::timeout(common::TIMEOUT, c.stream.read_buf(buf)).await.expect("nothing within the timeout") {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// `/send` data of exactly `len` bytes, shaped like the seed's.
fn send_data(len: usize) -> Vec<u8> {
    let head = br#"{"type":"voice","nb_packets":"1","size_packet":"0","packets":[""#;
    let tail = br#""]}"#;
    let mut d = head.to_vec();
    d.resize(len - tail.len(), b'A');
    d.extend_from_slice(tail);
    assert_eq!(d.len(), len);
    d
}

fn raw_frame(header: &Value, route: &str, data: Vec<u8>) -> Vec<u8> {
    let header = if header.is_null() { Vec::new() } else { serde_json::to_vec(header).unwrap() };
    babel_proto::RawRequest::new(header, route.to_owned(), data).to_bytes().to_vec()
}

#[tokio::test]
async fn a_channel_send_over_16_kib_closes_that_channel() {
    let (server, _dir) = start_with(|_| {}).await;
    let addr = server.addr();
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    let sa = a.create("flood-a@example.org").await;
    let sb = b.create("flood-b@example.org").await;
    a.befriend(&sa, &sb).await;
    let (status, v) = a.call(sa.header(), "/call", json!({"contact_id": sb.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    let (status, v) = b.call(sb.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    let mut ca = Client::connect(addr).await;
    let mut cb = Client::connect(addr).await;
    assert_eq!(ca.call(sa.header(), "/connect_call", json!({"call_id": call_id})).await.0, 200);
    assert_eq!(cb.call(sb.header(), "/connect_call", json!({"call_id": call_id})).await.0, 200);

    // 16 KiB exactly is relayed.
    ca.write(&raw_frame(&Value::Null, "/send", send_data(16 * 1024))).await;
    let mut bbuf = bytes::BytesMut::new();
    let f = channel_frame(&mut cb, &mut bbuf).await.expect("relayed");
    assert_eq!(&f.route[..], b"/send");
    assert_eq!(f.data.len(), 16 * 1024);
    // One byte more closes the sender's channel, without reading the rest.
    let mut over = raw_frame(&Value::Null, "/send", send_data(16 * 1024 + 1));
    over.truncate(over.len() - 100);
    ca.write(&over).await;
    let mut abuf = bytes::BytesMut::new();
    assert!(channel_frame(&mut ca, &mut abuf).await.is_none(), "the sender's channel is closed");
    // The call goes on: the sender may open a channel again.
    let mut ca2 = Client::connect(addr).await;
    assert_eq!(ca2.call(sa.header(), "/connect_call", json!({"call_id": call_id})).await.0, 200);
    ca2.write(&raw_frame(&Value::Null, "/send", send_data(100))).await;
    let f = channel_frame(&mut cb, &mut bbuf).await.expect("relayed");
    assert_eq!(f.data.len(), 100, "the oversized frame was never relayed");
}

/// The number of session rows in the server's database.
fn session_rows(dir: &tempfile::TempDir) -> i64 {
    let db = rusqlite::Connection::open(dir.path().join("babel.db")).unwrap();
    db.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn sessions_are_capped_per_user_and_the_least_recently_used_ends() {
    let (server, dir) = start_with(|c| c.durability = babel_server::store::sqlite::Durability::Normal).await;
    let addr = server.addr();
    let mut first = Client::connect(addr).await;
    let s0 = first.create("many@example.org").await;
    // The first session's connection turns into its event stream.
    let (status, _) = first.call(s0.header(), "/events", Value::Null).await;
    assert_eq!(status, 200);
    let mut sessions = vec![s0];
    let mut conns = Vec::new();
    for _ in 1..60 {
        let mut c = Client::connect(addr).await;
        sessions.push(c.login("many@example.org").await);
        conns.push(c);
    }
    assert!(closes_within(&mut first, common::TIMEOUT).await, "the oldest session's event stream was closed");
    assert_eq!(session_rows(&dir), 50, "50 sessions per user by default");
    let mut probe = Client::connect(addr).await;
    for (i, s) in sessions.iter().enumerate() {
        let (status, _) = probe.call(s.header(), "/contacts", Value::Null).await;
        assert_eq!(status, if i < 10 { 401 } else { 200 }, "session {i}");
    }
}

#[tokio::test]
async fn expired_sessions_are_purged() {
    let (server, dir) = start_with(|c| c.session_ttl_secs = 1).await;
    let addr = server.addr();
    let mut c = Client::connect(addr).await;
    let first = c.create("old@example.org").await;
    // Its event stream outlives its use, but not its expiry.
    assert_eq!(c.call(first.header(), "/events", Value::Null).await.0, 200);
    for _ in 0..4 {
        Client::connect(addr).await.login("old@example.org").await;
    }
    assert_eq!(session_rows(&dir), 5);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(closes_within(&mut c, common::TIMEOUT).await, "the expired session's event stream was closed");
    let fresh = Client::connect(addr).await.login("old@example.org").await;
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    while session_rows(&dir) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} session rows, expected only the fresh one",
            session_rows(&dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = Client::connect(addr).await.call(fresh.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn looking_up_emails_is_rate_limited_per_account() {
    let (server, _dir) = start_with(|c| c.abuse.limit_loopback = true).await;
    let mut c = Client::connect(server.addr()).await;
    let known = c.create("known@example.org").await;
    let me = c.create("prober@example.org").await;
    let _ = known;
    let mut limited = None;
    for i in 0..100 {
        let (status, v) =
            c.call(me.header(), "/add_contact", json!({"contact_email": format!("n{i}@example.org")})).await;
        assert_eq!(status, 403, "{v}");
        let reason = v["error"].as_str().unwrap().to_owned();
        if reason.contains("try again in") {
            limited = Some(i);
            break;
        }
        assert!(reason.contains("nobody has"), "{reason}");
    }
    let limited = limited.expect("100 look-ups were never limited");
    assert!(limited >= 20, "a person adding a few contacts is not limited ({limited})");
    // Once limited, an existing email gets the same answer: nothing is learnt.
    let (status, v) = c.call(me.header(), "/add_contact", json!({"contact_email": "known@example.org"})).await;
    assert_eq!(status, 403);
    assert!(v["error"].as_str().unwrap().contains("try again in"), "{v}");
}

/// Login over a blocking socket: `Some(status)`, or `None` when the server
/// refused the connection cleanly (closed or reset it) or said nothing in
/// `wait`.
fn blocking_login(addr: SocketAddr, email: &str, wait: Duration) -> Option<i32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, wait).ok()?;
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(&frame(&Value::Null, "/login", &json!({"user_mail": email, "pass": "password123"}))).ok()?;
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(r) = babel_proto::decode_response(&mut buf, &babel_proto::Limits::default()).unwrap() {
            return Some(r.status);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The real binary under a low descriptor limit (128), flooded with twice as
/// many silent connections as it has descriptors: a normal client still logs
/// in, at worst after a clean refusal or two.
#[test]
fn a_flood_of_silent_connections_cannot_take_the_last_descriptors() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("babel.toml");
    std::fs::write(&toml, "[password]\nmemory_kib = 256\niterations = 1\n").unwrap();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 128 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_babel-server")])
        .args(["--listen", "127.0.0.1:0", "--log", "error", "--config"])
        .arg(&toml)
        .arg("--db")
        .arg(dir.path().join("babel.db"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    let result = std::panic::catch_unwind(|| {
        // The account, made before the flood.
        {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&frame(
                &Value::Null,
                "/create",
                &json!({"user_mail": "fd@example.org", "pass": "password123"}),
            ))
            .unwrap();
            let mut b = [0u8; 512];
            let _ = std::io::Read::read(&mut s, &mut b).unwrap();
        }
        let mut flood = Vec::new();
        for i in 0..256 {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let src: SocketAddr = format!("127.0.{}.{}:0", 1 + i / 200, 2 + i % 200).parse().unwrap();
            sock.bind(&src.into()).unwrap();
            if sock.connect_timeout(&addr.into(), Duration::from_secs(5)).is_ok() {
                flood.push(sock);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut tries = 0;
        loop {
            tries += 1;
            match blocking_login(addr, "fd@example.org", Duration::from_secs(5)) {
                Some(status) => {
                    assert_eq!(status, 200, "after {tries} tries");
                    break;
                }
                None => assert!(std::time::Instant::now() < deadline, "no login in 20 s ({tries} tries)"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(flood);
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[tokio::test]
async fn connections_that_never_authenticate_are_closed() {
    let (server, _dir) = start_with(|c| c.auth_timeout_secs = 1).await;
    let addr = server.addr();
    let mut silent = Client::connect(addr).await;
    let mut guesser = Client::connect(addr).await;
    let mut user = Client::connect(addr).await;
    let s = user.create("patient@example.org").await;
    let (status, _) =
        guesser.call(Value::Null, "/login", json!({"user_mail": "patient@example.org", "pass": "wrong-wrong"})).await;
    assert_eq!(status, 401);
    assert!(silent.is_closed().await, "a silent connection is closed");
    assert!(guesser.is_closed().await, "failed logins do not count as authenticating");
    // The authenticated one stays, idle, past the timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = user.call(s.header(), "/contacts", Value::Null).await;
    assert_eq!(status, 200);
}

async fn from(source: &str, server: SocketAddr) -> Client {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    Client::from_stream(sock.connect(server).await.unwrap())
}

#[tokio::test]
async fn connections_are_counted_per_network_as_well_as_per_address() {
    let (server, _dir) = start_with(|c| {
        c.abuse.limit_loopback = true;
        c.abuse.max_connections_per_address = 2;
        c.abuse.max_connections_per_prefix = 3;
    })
    .await;
    let addr = server.addr();
    let mut held = Vec::new();
    for src in ["127.0.0.2", "127.0.0.3", "127.0.0.3"] {
        held.push(from(src, addr).await);
    }
    for c in &mut held {
        assert_eq!(c.call(Value::Null, "/nope", Value::Null).await.0, 404, "served");
    }
    assert!(from("127.0.0.4", addr).await.is_closed().await, "a fourth connection from the same /24");
    let mut other = from("127.0.1.4", addr).await;
    assert_eq!(other.call(Value::Null, "/nope", Value::Null).await.0, 404, "another /24 is served");
    drop(held.pop());
    // The count goes down when one closes.
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    loop {
        let mut c = from("127.0.0.4", addr).await;
        c.write(&frame(&Value::Null, "/nope", &Value::Null)).await;
        if c.try_read().await.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the network's count never went down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
