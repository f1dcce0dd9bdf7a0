//! The real `babel` against a real server: messages (to someone offline,
//! `--follow`), call history with a missed call, the account (rename,
//! password, sessions), status, blocking; `--json` shapes, errors and exit
//! codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use babel_client::Event;
use babel_proto::ServerEvent;
use serde_json::Value;

mod common;
use common::env::{PW, env, interrupt, is_read, online};
use common::{blocking, write_voice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_someone_offline_is_read_when_they_log_in_elsewhere() {
    let (_server, e) = env().await;
    blocking(move || {
        e.contacts("ann", "ben");
        // Ben is offline (nothing of his runs). Ann writes, from the
        // arguments and from stdin.
        let (code, v) = e.json("ann", &["message", "ben@example.org", "are", "you", "there?"], None);
        assert_eq!(code, 0, "{v}");
        assert!(v["message_id"].as_str().is_some_and(|id| id.parse::<u64>().is_ok()), "{v}");
        assert!(v["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        assert_eq!(v["to"]["email"], "ben@example.org");
        let (code, out, err) = e.say("ann", &["message", "ben@example.org", "-"], Some("line one\nline two\n"));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("Sent to Ben <ben@example.org>") && out.contains("when they come back"), "{out}");
        let (code, _, err) = e.say("ann", &["message", "BEN@example.org"], Some("from a pipe\n"));
        assert_eq!(code, 0, "{err}");

        // Ben logs in on another device: the contact list says 3 unread.
        assert_eq!(e.json("ben2", &["login", "ben@example.org"], Some(PW)).0, 0);
        let (_, v) = e.json("ben2", &["contacts"], None);
        assert_eq!(v[0]["email"], "ann@example.org", "{v}");
        assert_eq!(v[0]["unread"], 3, "{v}");
        let (_, out, _) = e.say("ben2", &["contacts"], None);
        assert!(out.contains("Ann <ann@example.org>") && out.contains("3 unread"), "{out}");

        // He reads them: oldest first, newest last; new ones marked.
        let (code, out, err) = e.say("ben2", &["messages", "ann@example.org"], None);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].contains("new Ann: are you there?"), "{out}");
        assert!(lines[1].contains("new Ann: line one"), "{out}");
        assert!(lines[2].trim() == "line two", "the second line is indented under the first: {out}");
        assert!(lines[3].contains("new Ann: from a pipe"), "{out}");
        // Reading marked them read: nothing new, no unread left.
        let (_, out, _) = e.say("ben2", &["messages", "ann@example.org"], None);
        assert!(!out.contains("new Ann"), "{out}");
        let (_, v) = e.json("ben2", &["contacts"], None);
        assert_eq!(v[0]["unread"], 0, "{v}");
        // Ann sees them read; JSON is oldest first with the wire fields.
        let (code, v) = e.json("ann", &["messages", "ben@example.org"], None);
        assert_eq!(code, 0, "{v}");
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 3, "{v}");
        assert_eq!(list[0]["text"], "are you there?");
        assert_eq!(list[1]["text"], "line one\nline two");
        assert_eq!(list[2]["text"], "from a pipe");
        for m in list {
            for field in ["message_id", "from", "to", "text", "sent_at", "read"] {
                assert!(m.get(field).is_some(), "{field} missing: {m}");
            }
            assert!(is_read(m), "{m}");
        }
        let ids: Vec<u64> = list.iter().map(|m| m["message_id"].as_str().unwrap().parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        // Paging: one at a time, then the one before it.
        let (_, out, _) = e.say("ann", &["messages", "ben@example.org", "--limit", "1"], None);
        assert!(out.contains("from a pipe") && !out.contains("line one"), "{out}");
        assert!(out.contains(&format!("--before {}", ids[2])), "{out}");
        let before = ids[2].to_string();
        let (_, v) = e.json("ann", &["messages", "ben@example.org", "--limit", "1", "--before", &before], None);
        assert_eq!(v[0]["text"], "line one\nline two", "{v}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_mistakes_are_said_with_the_right_exit_code() {
    let (_server, e) = env().await;
    blocking(move || {
        e.contacts("cat", "dan");
        e.register("eve", "Eve");
        // Unknown email, and someone who is not a contact: refused, exit 1.
        let (code, v) = e.json("cat", &["message", "nobody@example.org", "hi"], None);
        assert_eq!(code, 1, "{v}");
        assert!(v["error"].as_str().unwrap().contains("not in your contacts"), "{v}");
        let (code, _, err) = e.say("cat", &["message", "eve@example.org", "hi"], None);
        assert_eq!(code, 1);
        assert!(err.contains("eve@example.org is not in your contacts"), "{err}");
        // Asked but not accepted yet: the server refuses, exit 1 with its reason.
        assert_eq!(e.json("cat", &["contacts", "add", "eve@example.org"], None).0, 0);
        let (code, v) = e.json("cat", &["message", "eve@example.org", "hi"], None);
        assert_eq!(code, 1, "{v}");
        assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
        // Too long, empty: mistakes on this side, exit 2, nothing sent.
        let long = "x".repeat(4001);
        let (code, v) = e.json("cat", &["message", "dan@example.org", &long], None);
        assert_eq!(code, 2, "{v}");
        assert!(v["error"].as_str().unwrap().contains("at most 4000 characters"), "{v}");
        let exactly = "é".repeat(4000);
        assert_eq!(e.json("cat", &["message", "dan@example.org", &exactly], None).0, 0, "4000 characters go");
        let (code, v) = e.json("cat", &["message", "dan@example.org"], Some("\n"));
        assert_eq!(code, 2, "{v}");
        assert!(v["error"].as_str().unwrap().contains("empty"), "{v}");
        let (code, _) = e.json("cat", &["message", "not-an-email", "hi"], None);
        assert_eq!(code, 2);
        let (code, _) = e.json("cat", &["messages", "dan@example.org", "--limit", "0"], None);
        assert_eq!(code, 2);
        let (code, v) = e.json("nobody", &["messages", "dan@example.org"], None);
        assert_eq!(code, 2, "not logged in: {v}");
        let (_, v) = e.json("dan", &["messages", "cat@example.org"], None);
        assert_eq!(v.as_array().unwrap().len(), 1, "only the one that fit: {v}");
        // A peer's escape sequences do not reach the terminal as such.
        assert_eq!(e.json("cat", &["message", "dan@example.org", "\x1b]0;owned\x07red"], None).0, 0);
        let (_, out, _) = e.say("dan", &["messages", "cat@example.org"], None);
        assert!(!out.contains('\x1b') && out.contains("^[]0;owned^Gred"), "{out:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_a_live_message_and_marks_it_read() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.contacts("fay", "gus");
        assert_eq!(e1.json("fay", &["message", "gus@example.org", "before"], None).0, 0);
    })
    .await
    .unwrap();
    let mut child = common::babel(&e.server, &e.dir.path().join("gus"))
        .args(["--json", "messages", "fay@example.org", "--follow"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| -> Value {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                return serde_json::from_str(&l).unwrap_or_else(|err| panic!("not JSON ({err}): {l}"));
            }
        }
        panic!("no {what} within 20 s");
    };
    // The page first (the stream is subscribed before it is read).
    let first = next("history");
    assert_eq!(first["text"], "before", "{first}");
    let e2 = e.clone();
    blocking(move || assert_eq!(e2.json("fay", &["message", "gus@example.org", "live"], None).0, 0)).await.unwrap();
    let live = next("live message");
    assert_eq!(live["text"], "live", "{live}");
    // Shown means read: Fay sees both read soon after.
    let e3 = e.clone();
    let read = blocking(move || {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = e3.json("fay", &["messages", "gus@example.org"], None);
            if v.as_array().unwrap().iter().all(is_read) || Instant::now() > end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    assert!(read.as_array().unwrap().iter().all(is_read), "{read}");
    // Another conversation stays out; what Gus writes to Fay from another
    // device shows.
    let e4 = e.clone();
    blocking(move || {
        e4.register("hub", "Hub");
        assert_eq!(e4.json("hub", &["contacts", "add", "gus@example.org"], None).0, 0);
        assert_eq!(e4.json("gus", &["contacts", "accept", "hub@example.org"], None).0, 0);
        assert_eq!(e4.json("hub", &["message", "gus@example.org", "not for this one"], None).0, 0);
        assert_eq!(e4.json("gus2", &["login", "gus@example.org"], Some(PW)).0, 0);
        assert_eq!(e4.json("gus2", &["message", "fay@example.org", "from my phone"], None).0, 0);
    })
    .await
    .unwrap();
    let mine = next("Gus's own message from another device");
    assert_eq!(mine["text"], "from my phone", "{mine}");
    assert_eq!(mine["to"], first["from"], "to Fay: {mine}");
    // Ctrl-C ends it cleanly.
    interrupt(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_marks_a_missed_call() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || e1.contacts("hal", "ida")).await.unwrap();
    // Ida is online but answers nothing; Hal calls, then gives up (Ctrl-C)
    // while it rings.
    let (_ida, mut events) = online(&e, "ida").await;
    let input = e.dir.path().join("hello.wav");
    write_voice(&input, 30.0);
    let caller = common::babel(&e.server, &e.dir.path().join("hal"))
        .args(["call", "ida@example.org", "--input", input.to_str().unwrap(), "--output", "/dev/null"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let rung = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(Ok(Event::Server(ServerEvent::IncomingCall(_)))) = events.next().await {
                return;
            }
        }
    })
    .await;
    assert!(rung.is_ok(), "ida was never rung");
    interrupt(caller.id());
    let out = blocking(move || caller.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
    let e2 = e.clone();
    blocking(move || {
        let (code, v) = e2.json("ida", &["history"], None);
        assert_eq!(code, 0, "{v}");
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 1, "{v}");
        assert_eq!(list[0]["direction"], "in");
        assert_eq!(list[0]["missed"], true, "{v}");
        assert_eq!(list[0]["answered_at"], "");
        assert_eq!(list[0]["with"][0]["email"], "hal@example.org", "{v}");
        let (_, out, _) = e2.say("ida", &["history"], None);
        assert!(out.contains("MISSED") && out.contains("Hal <hal@example.org>"), "{out}");
        assert!(out.contains("1 missed call"), "{out}");
        // The caller's side: not missed.
        let (_, v) = e2.json("hal", &["history"], None);
        assert_eq!(v[0]["direction"], "out", "{v}");
        assert_eq!(v[0]["missed"], false, "{v}");
        let (_, out, _) = e2.say("hal", &["history"], None);
        assert!(!out.contains("MISSED") && out.contains("cancelled") && out.contains("Ida <ida@example.org>"), "{out}");
    })
    .await
    .unwrap();
    // Then a call Ida answers: it shows with its length, and pages.
    let short = e.dir.path().join("short.wav");
    write_voice(&short, 1.5);
    let e3 = e.clone();
    let listener =
        blocking(move || e3.json("ida", &["listen", "--auto-answer", "--calls", "1", "--output", "/dev/null"], None));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e4 = e.clone();
    blocking(move || {
        let (code, v) = e4.json(
            "hal",
            &["call", "ida@example.org", "--input", short.to_str().unwrap(), "--output", "/dev/null"],
            None,
        );
        assert_eq!(code, 0, "{v}");
    })
    .await
    .unwrap();
    assert_eq!(listener.await.unwrap().0, 0);
    let e5 = e.clone();
    blocking(move || {
        let (_, v) = e5.json("ida", &["history"], None);
        assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v[1]["missed"], false, "newest last: {v}");
        assert_ne!(v[1]["answered_at"], "", "{v}");
        let (_, out, _) = e5.say("ida", &["history", "--limit", "1"], None);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let older = v[0]["entry_id"].as_str().unwrap().to_owned();
        assert!(lines[0].contains(&format!("babel history --before {}", v[1]["entry_id"].as_str().unwrap())), "{out}");
        assert!(lines[1].contains(" s ") && lines[1].contains("Hal <hal@example.org>"), "a length: {out}");
        let (_, out, _) = e5.say("ida", &["history", "--before", v[1]["entry_id"].as_str().unwrap()], None);
        assert!(out.contains("MISSED") && out.lines().count() == 2, "{out}");
        let (_, v) = e5.json("ida", &["history", "--before", &older], None);
        assert_eq!(v, serde_json::json!([]));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_what_arrived_while_the_server_was_away_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let addr = server.addr();
    let e = std::sync::Arc::new(common::env::Env { server: addr.to_string(), dir });
    let e1 = e.clone();
    blocking(move || e1.contacts("ivy", "jay")).await.unwrap();
    let mut child = common::babel(&e.server, &e.dir.path().join("jay"))
        .args(["--json", "messages", "ivy@example.org", "--follow"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (etx, erx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let wait_err = |what: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if erx.recv_timeout(Duration::from_millis(100)).is_ok_and(|l| l.contains(what)) {
                return;
            }
        }
        panic!("no `{what}` on stderr within 20 s");
    };
    // Nothing yet; then the server goes away and comes back, and Ivy
    // writes at once, before (or while) Jay's stream is back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.shutdown().await;
    wait_err("connection to the server lost");
    config.listen = addr;
    let _server = babel_server::RunningServer::start(&config).await.unwrap();
    let e2 = e.clone();
    blocking(move || assert_eq!(e2.json("ivy", &["message", "jay@example.org", "while you were away"], None).0, 0))
        .await
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while Instant::now() < end && lines.is_empty() {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    // Shown, and only once (by the event or by the catch-up, not both).
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(1500)) {
        lines.push(l);
    }
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("while you were away"), "{lines:?}");
    interrupt(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_an_email_shows_every_conversation() {
    let (_server, e) = env().await;
    blocking(move || {
        e.contacts("kai", "lou");
        e.register("mia", "Mia");
        assert_eq!(e.json("kai", &["contacts", "add", "mia@example.org"], None).0, 0);
        assert_eq!(e.json("mia", &["contacts", "accept", "kai@example.org"], None).0, 0);
        let (code, out, _) = e.say("kai", &["messages"], None);
        assert_eq!(code, 0);
        assert!(out.contains("No messages yet"), "{out}");
        assert_eq!(e.json("lou", &["message", "kai@example.org", "hi from Lou"], None).0, 0);
        assert_eq!(e.json("mia", &["message", "kai@example.org", "hi from Mia"], None).0, 0);
        assert_eq!(e.json("kai", &["message", "lou@example.org", "hello Lou"], None).0, 0);
        let (code, out, err) = e.say("kai", &["messages"], None);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains("new Lou: hi from Lou"), "{out}");
        assert!(lines[1].contains("new Mia: hi from Mia"), "{out}");
        assert!(lines[2].contains("you → Lou: hello Lou") && !lines[2].contains("new"), "{out}");
        // Shown means read, in both conversations.
        let (_, v) = e.json("kai", &["contacts"], None);
        assert!(v.as_array().unwrap().iter().all(|c| c["unread"] == 0), "{v}");
        let (_, v) = e.json("kai", &["messages", "--limit", "2"], None);
        assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v[1]["text"], "hello Lou", "newest last: {v}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_rate_limit_is_said_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.abuse.messages_per_account = 3;
    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let e = common::env::Env { server: server.addr().to_string(), dir };
    blocking(move || {
        e.contacts("pia", "rex");
        for n in 0..3 {
            let (code, v) = e.json("pia", &["message", "rex@example.org", &format!("number {n}")], None);
            assert_eq!(code, 0, "{v}");
        }
        let (code, v) = e.json("pia", &["message", "rex@example.org", "one too many"], None);
        assert_eq!(code, 1, "{v}");
        assert!(v["error"].as_str().unwrap().contains("too fast"), "{v}");
        let (_, v) = e.json("rex", &["messages", "pia@example.org"], None);
        assert_eq!(v.as_array().unwrap().len(), 3, "not sent: {v}");
    })
    .await
    .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_says_when_a_message_arrives_and_leaves_it_unread() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || e1.contacts("sam", "tia")).await.unwrap();
    let mut child =
        common::babel(&e.server, &e.dir.path().join("tia")).arg("listen").stdin(Stdio::null()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait = |what: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < end {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                if l.contains(what) {
                    return l;
                }
                seen.push(l);
            }
        }
        panic!("no `{what}` within 20 s: {seen:?}");
    };
    wait("waiting for calls");
    let e2 = e.clone();
    blocking(move || assert_eq!(e2.json("sam", &["message", "tia@example.org", "call me back"], None).0, 0))
        .await
        .unwrap();
    let l = wait("message from Sam <sam@example.org>");
    assert!(l.contains("call me back"), "{l}");
    interrupt(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let e3 = e.clone();
    blocking(move || {
        let (_, v) = e3.json("tia", &["contacts"], None);
        assert_eq!(v[0]["unread"], 1, "still unread: {v}");
    })
    .await
    .unwrap();
}

/// A fake on purpose: a proxy to the real server that, on the first
/// connection only, closes it instead of passing on the answer numbered
/// `drop_answer` (1-based), after the server has acted on the request.
fn dropping_proxy(server: String, drop_answer: usize) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            let Ok(mut upstream) = TcpStream::connect(&server) else { return };
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
                let _ = u2.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut answers = 0;
                loop {
                    let mut head = [0u8; 8];
                    if upstream.read_exact(&mut head).is_err() {
                        break;
                    }
                    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
                    let mut data = vec![0u8; len];
                    if upstream.read_exact(&mut data).is_err() {
                        break;
                    }
                    answers += 1;
                    if n == 0 && answers == drop_answer {
                        break;
                    }
                    if client.write_all(&head).and_then(|()| client.write_all(&data)).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_answer_is_lost_is_sent_again_and_stored_once() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || e1.contacts("uma", "val")).await.unwrap();
    // `babel message` asks for the contacts (answer 1), then sends (answer
    // 2, lost with its connection).
    let proxy = dropping_proxy(e.server.clone(), 2);
    let home = e.dir.path().join("uma");
    let out = blocking(move || {
        common::babel(&proxy, &home).args(["--json", "message", "val@example.org", "only once"]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let sent: Value = serde_json::from_str(stdout.trim()).unwrap();
    let e2 = e.clone();
    blocking(move || {
        let (_, v) = e2.json("val", &["messages", "uma@example.org"], None);
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 1, "stored once: {v}");
        assert_eq!(list[0]["text"], "only once");
        assert_eq!(list[0]["message_id"], sent["message_id"], "the first one's id came back: {v}");
    })
    .await
    .unwrap();
}
