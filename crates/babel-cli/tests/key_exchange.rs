//! The key exchange over real sockets: a real server, the real `babel
//! listen` as the callee, and an attacker speaking the raw protocol as the
//! caller. A caller that reveals a key other than the one it committed to,
//! or that sends no commitment at all, gets no call: the callee ends it and
//! says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use babel_client::{Client, Event, EventStream};
use babel_proto::keys::CallKeys;
use babel_proto::{CallId, EndReason, MediaSetup, ServerEvent, UserId};
use babel_server::auth::PasswordCost;
use babel_server::{Config, RunningServer};

const TIMEOUT: Duration = Duration::from_secs(20);
const PW: &str = "password123";

async fn next_matching<T>(events: &mut EventStream, mut want: impl FnMut(&ServerEvent) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await.expect("no event in time") {
            Some(Ok(Event::Server(ev))) => {
                if let Some(t) = want(&ev) {
                    return t;
                }
            }
            Some(Ok(Event::Reconnected)) => {}
            other => panic!("event stream: {other:?}"),
        }
    }
}

fn ended(call: CallId) -> impl FnMut(&ServerEvent) -> Option<EndReason> {
    move |e| match e {
        ServerEvent::CallEnded(c, r) if *c == call => Some(*r),
        _ => None,
    }
}

/// Rings `ben` until his listener takes the call (it subscribes to events
/// a moment after it starts).
async fn ring(ann: &mut Client, ben: UserId, media: MediaSetup) -> CallId {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match ann.call(ben, media.clone()).await {
            Ok(started) => return started.call_id,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.refusal().is_some_and(|r| r.contains("offline")), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_key_does_not_match_its_commitment_or_who_sends_none_gets_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    };
    let server = RunningServer::start(&config).await.unwrap();
    let addr = server.addr().to_string();

    // Ann is the attacker, on the raw protocol; Ben runs `babel listen`.
    let mut ann = Client::connect(addr.clone()).await.unwrap();
    ann.create("ann@example.org", PW, None).await.unwrap();
    let home = dir.path().join("ben");
    let babel = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_babel"));
        cmd.args(["--server", &addr, "--home"]).arg(&home).arg("--json").args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    };
    let mut register = babel(&["register", "ben@example.org"]).spawn().unwrap();
    std::io::Write::write_all(&mut register.stdin.take().unwrap(), format!("{PW}\n").as_bytes()).unwrap();
    assert!(register.wait().unwrap().success());
    ann.add_contact("ben@example.org").await.unwrap();
    assert!(babel(&["contacts", "accept", "ann@example.org"]).output().unwrap().status.success());
    let ben_id = ann.contacts().await.unwrap()[0].user.id;
    let mut ann_events = ann.events().await.unwrap();

    let out = dir.path().join("heard.wav");
    let listener =
        babel(&["listen", "--auto-answer", "--calls", "2", "--output", out.to_str().unwrap()]).spawn().unwrap();
    let listener = tokio::task::spawn_blocking(move || listener.wait_with_output().unwrap());

    // 1. Commit to one key, reveal another once Ben's key is in.
    let committed = CallKeys::generate().unwrap();
    let revealed = CallKeys::generate().unwrap();
    let media = MediaSetup { key_commit: Some(committed.commit_b64()), ..MediaSetup::default() };
    let call = ring(&mut ann, ben_id, media).await;
    let accepted = next_matching(&mut ann_events, |e| match e {
        ServerEvent::CallAccepted(j) if j.call_id == call => Some(j.clone()),
        _ => None,
    })
    .await;
    assert!(accepted.peer.media.key.is_some(), "Ben answered with his key, having the commitment");
    ann.call_key(call, revealed.public_b64()).await.unwrap();
    assert_eq!(next_matching(&mut ann_events, ended(call)).await, EndReason::Hangup, "Ben hung up");

    // 2. The old exchange: the key in `/call`, no commitment. Not answered.
    let media = MediaSetup { key: Some(revealed.public_b64()), ..MediaSetup::default() };
    let call = ring(&mut ann, ben_id, media).await;
    assert_eq!(next_matching(&mut ann_events, ended(call)).await, EndReason::Declined, "Ben declined");

    let output = tokio::time::timeout(TIMEOUT, listener).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text} {stderr}"));
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{v}");
    assert_eq!(calls[0]["ended"], "key_exchange_failed");
    assert!(calls[0]["error"].as_str().unwrap().contains("does not match its commitment"), "{v}");
    assert!(stderr.contains("does not match its commitment"), "the person is told why: {stderr}");
    assert_eq!(calls[1]["ended"], "key_exchange_failed");
    assert!(calls[1]["error"].as_str().unwrap().contains("no key commitment"), "{v}");
    assert!(!out.exists(), "no voice was played from either call");
    server.shutdown().await;
}
