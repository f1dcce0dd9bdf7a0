//! Frame-level behaviour over real TCP: pipelining, partial frames, bad
//! lengths, timeouts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, frame, start, start_with};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn unknown_route_is_404() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.call(Value::Null, "/nope", Value::Null).await, (404, Value::Null));
    assert_eq!(c.call(Value::Null, "/Login", json!({})).await.0, 404, "routes are exact");
    // Malformed JSON on a known route is 400 and the connection stays usable.
    c.write(&babel_proto::RawRequest::new(Vec::new(), "/login", b"{not json".to_vec()).to_bytes()).await;
    assert_eq!(c.read().await.0, 400);
    let dup = br#"{"user_mail":"a@b.co","USER_MAIL":"c@d.co","pass":"x"}"#.to_vec();
    c.write(&babel_proto::RawRequest::new(Vec::new(), "/login", dup).to_bytes()).await;
    let (status, v) = c.read().await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("more than once"));
    assert_eq!(c.call(Value::Null, "/nope", Value::Null).await.0, 404);
}

#[tokio::test]
async fn two_hundred_pipelined_requests_are_answered_in_order() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let s = c.create("pip@example.org").await;
    let bad = json!({"id": s.id, "token": "wrong"});
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let (f, status) = match i % 3 {
            0 => (frame(&s.header(), "/contacts", &Value::Null), 200),
            1 => (frame(&bad, "/contacts", &Value::Null), 401),
            _ => (frame(&Value::Null, &format!("/unknown{i}"), &Value::Null), 404),
        };
        bytes.extend(f);
        expected.push(status);
    }
    c.write(&bytes).await;
    for (i, want) in expected.into_iter().enumerate() {
        assert_eq!(c.read().await.0, want, "answer {i}");
    }
}

#[tokio::test]
async fn a_frame_sent_one_byte_at_a_time() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let bytes = frame(&Value::Null, "/create", &json!({"user_mail": "slow@example.org", "pass": "password123"}));
    for b in bytes {
        c.write(&[b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (status, v) = c.read().await;
    assert_eq!(status, 201, "{v}");
}

async fn assert_bad_length_closes(prefix: &[u8]) {
    let (server, _dir) = start().await;
    let mut other = Client::connect(server.addr()).await;
    let s = other.create("bystander@example.org").await;
    let mut c = Client::connect(server.addr()).await;
    c.write(prefix).await;
    let r = c.try_read().await.expect("a 400 before the close");
    assert_eq!(r.status, 400);
    assert!(c.try_read().await.is_none(), "then the connection is closed");
    // The server goes on serving others, old and new.
    assert_eq!(other.contacts(&s).await, vec![]);
    let mut fresh = Client::connect(server.addr()).await;
    assert_eq!(fresh.contacts(&s).await, vec![]);
}

#[tokio::test]
async fn negative_length_gets_400_and_close() {
    let mut p = Vec::new();
    p.extend((-1i32).to_be_bytes());
    assert_bad_length_closes(&p).await;
    let mut p = Vec::new();
    p.extend(0i32.to_be_bytes());
    p.extend(6i32.to_be_bytes());
    p.extend(i32::MIN.to_be_bytes());
    assert_bad_length_closes(&p).await;
}

#[tokio::test]
async fn two_gigabyte_length_gets_400_and_close() {
    let mut p = Vec::new();
    p.extend(0i32.to_be_bytes());
    p.extend(6i32.to_be_bytes());
    p.extend(i32::MAX.to_be_bytes());
    p.extend(b"/login");
    assert_bad_length_closes(&p).await;
    // Over the header limit (8 KiB) too.
    assert_bad_length_closes(&(8 * 1024 + 1i32).to_be_bytes()).await;
}

#[tokio::test]
async fn largest_allowed_data_is_accepted() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let mut data = br#"{"user_mail":"big@example.org","pass":"password123","pad":""#.to_vec();
    data.resize(1024 * 1024 - 2, b'x');
    data.extend(br#""}"#);
    c.write(&babel_proto::RawRequest::new(Vec::new(), "/create", data).to_bytes()).await;
    assert_eq!(c.read().await.0, 201);
}

#[tokio::test]
async fn half_sent_frame_times_out_but_idle_connection_stays() {
    let (server, _dir) = start_with(|c| c.frame_timeout_secs = 1).await;
    let mut idle = Client::connect(server.addr()).await;
    let s = idle.create("idle@example.org").await;
    let mut stuck = Client::connect(server.addr()).await;
    let bytes = frame(&s.header(), "/contacts", &Value::Null);
    stuck.write(&bytes[..5]).await;
    assert!(stuck.is_closed().await, "a half-sent frame is cut off");
    // A slow-drip sender is cut off too, although each byte is quick.
    let mut drip = Client::connect(server.addr()).await;
    let mut closed = false;
    for b in bytes.iter().take(bytes.len() - 1) {
        if drip.stream.try_write(&[*b]).is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(closed || drip.is_closed().await);
    // The idle one is still served after more than the timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(idle.contacts(&s).await, vec![]);
}

#[tokio::test]
async fn shutdown_answers_what_was_received() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let s = c.create("bye@example.org").await;
    let mut idle = Client::connect(server.addr()).await;
    idle.contacts(&s).await;
    let addr = server.addr();
    c.write(&frame(&s.header(), "/contacts", &Value::Null)).await;
    let answered = c.read();
    let stop = server.shutdown();
    let (r, ()) = tokio::join!(answered, stop);
    assert_eq!(r.0, 200);
    assert!(idle.is_closed().await, "idle connections are closed on shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn a_peer_that_keeps_sending_does_not_keep_a_stopping_server_alive() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let s = c.create("chatty@example.org").await;
    // Requests every 20 ms, one always on its way, each answered, until
    // the server closes the connection (or 15 s pass).
    let chatter = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        let request = frame(&s.header(), "/contacts", &Value::Null);
        let mut answered = 0u32;
        let _ = c.stream.write_all(&request).await;
        while tokio::time::Instant::now() < until {
            if c.stream.write_all(&request).await.is_err() || c.try_read().await.is_none() {
                break;
            }
            answered += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Each connection gets 100 ms for bytes on their way; 3 s is generous.
    let stopped = tokio::time::timeout(Duration::from_secs(3), server.shutdown()).await;
    assert!(stopped.is_ok(), "the server was still answering a chatty peer 3 s after it began to stop");
    assert!(chatter.await.unwrap() > 0);
}
