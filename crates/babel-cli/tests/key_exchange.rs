//! The key exchange over real sockets: a real server, the real `babel
//! listen` as the callee, and an attacker speaking the raw protocol as the
//! caller. A caller that reveals a key other than the one it committed to,
//! or that sends no commitment at all, gets no call: the callee ends it and
//! says why. And the real `babel call` behind a proxy that plays a server
//! retrying the exchange (every `/call_accepted` twice) ends its call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use babel_client::{Client, Event, EventStream};
use babel_proto::keys::CallKeys;
use babel_proto::{CallId, EndReason, MediaSetup, ServerEvent, UserId};

mod common;

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

/// `babel --json ARGS` for the person whose home is `home`.
fn babel_json(server: &str, home: &Path, args: &[&str]) -> Command {
    let mut cmd = common::babel(server, home);
    cmd.arg("--json").args(args);
    cmd
}

/// Runs `babel register`, the password on its stdin, and sees it succeed.
fn register(mut cmd: Command) {
    let mut register = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut register.stdin.take().unwrap(), format!("{PW}\n").as_bytes()).unwrap();
    assert!(register.wait().unwrap().success());
}

/// A `babel --json` run's JSON (its stdout) and its stderr.
fn json_and_stderr(out: &Output) -> (serde_json::Value, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text} {stderr}"));
    (v, stderr)
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
    let server = common::server(dir.path()).await;
    let addr = server.addr().to_string();

    // Ann is the attacker, on the raw protocol; Ben runs `babel listen`.
    let mut ann = Client::connect(addr.clone()).await.unwrap();
    ann.create("ann@example.org", PW, None).await.unwrap();
    let home = dir.path().join("ben");
    let babel = |args: &[&str]| babel_json(&addr, &home, args);
    register(babel(&["register", "ben@example.org"]));
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
    let (v, stderr) = json_and_stderr(&output);
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

/// Reads one frame of `prefix` 4-byte lengths (3 for requests and events,
/// 2 for responses, whose first word is the status) from `r`.
async fn read_frame(r: &mut (impl tokio::io::AsyncRead + Unpin), words: usize) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = vec![0u8; 4 * words];
    r.read_exact(&mut head).await.ok()?;
    let lens: Vec<usize> = head
        .chunks(4)
        .skip(if words == 2 { 1 } else { 0 })
        .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]).max(0) as usize)
        .collect();
    let mut body = vec![0u8; lens.iter().sum()];
    r.read_exact(&mut body).await.ok()?;
    head.extend(body);
    Some(head)
}

/// The route of a request or event frame.
fn route_of(frame: &[u8]) -> &[u8] {
    let len = |i: usize| i32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]) as usize;
    let (h, r) = (len(0), len(4));
    &frame[12 + h..12 + h + r]
}

/// A proxy in front of the real server that passes everything through,
/// except that on an event connection it delivers every `/call_accepted`
/// twice: a server trying the key exchange again.
async fn doubling_proxy(server: String) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(&server).await else { continue };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = upstream.into_split();
            let events = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = events.clone();
            tokio::spawn(async move {
                // Client to server: requests (then, on a call channel, frames of the same shape).
                while let Some(f) = read_frame(&mut cr, 3).await {
                    if route_of(&f) == b"/events" {
                        seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    if sw.write_all(&f).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                // Server to client: responses, or one response and then events.
                let mut in_events = false;
                loop {
                    let f = if in_events { read_frame(&mut sr, 3).await } else { read_frame(&mut sr, 2).await };
                    let Some(f) = f else { break };
                    let twice = in_events && route_of(&f) == b"/call_accepted";
                    if cw.write_all(&f).await.is_err() || (twice && cw.write_all(&f).await.is_err()) {
                        break;
                    }
                    if !in_events && events.load(std::sync::atomic::Ordering::SeqCst) {
                        in_events = true;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_accepted_ends_the_call_of_the_real_babel_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::server(dir.path()).await;
    let addr = server.addr().to_string();
    let proxy = doubling_proxy(addr.clone()).await;

    // Ben answers honestly, straight to the server; Ann runs `babel call`
    // through the proxy.
    let mut ben = Client::connect(addr.clone()).await.unwrap();
    let ben_id = ben.create("ben@example.org", PW, None).await.unwrap().id;
    let home = dir.path().join("ann");
    let babel = |args: &[&str]| babel_json(&proxy, &home, args);
    register(babel(&["register", "ann@example.org"]));
    assert!(babel(&["contacts", "add", "ben@example.org"]).output().unwrap().status.success());
    let ann_id = ben.contact_requests().await.unwrap()[0].id;
    ben.accept_contact(ann_id).await.unwrap();
    let mut ben_events = ben.events().await.unwrap();

    let caller = babel(&["call", "ben@example.org", "--duration", "20", "--output", "/dev/null"]).spawn().unwrap();
    let caller = tokio::task::spawn_blocking(move || caller.wait_with_output().unwrap());
    let inc = next_matching(&mut ben_events, |e| match e {
        ServerEvent::IncomingCall(c) => Some(c.clone()),
        _ => None,
    })
    .await;
    let keys = CallKeys::generate().unwrap();
    let commit = inc.media.key_commit.as_deref();
    let mut agreement =
        babel_proto::agree::CalleeAgreement::on_incoming(inc.call_id, ann_id, commit, ben_id, &keys).unwrap();
    let media = MediaSetup { key: Some(agreement.key()), ..MediaSetup::default() };
    ben.accept_call(inc.call_id, media).await.unwrap();
    let revealed = next_matching(&mut ben_events, |e| match e {
        ServerEvent::CallKey(k) => Some(k.clone()),
        _ => None,
    })
    .await;
    agreement.on_reveal(revealed.id, &revealed.key).expect("Ann revealed what she committed to");
    // Ann saw the answer twice: she hangs up.
    assert_eq!(next_matching(&mut ben_events, ended(inc.call_id)).await, EndReason::Hangup);
    let out = tokio::time::timeout(TIMEOUT, caller).await.unwrap().unwrap();
    let (v, stderr) = json_and_stderr(&out);
    assert_eq!(v["ended"], "key_exchange_failed", "{v} {stderr}");
    assert!(stderr.contains("attempted twice"), "Ann is told why: {stderr}");
    server.shutdown().await;
}
