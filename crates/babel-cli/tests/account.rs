//! The real `babel` against a real server: the account (rename, password,
//! sessions), status and blocking; `--json` shapes, errors and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

mod common;
use common::blocking;
use common::env::{PW, env, online};
use common::write_voice;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_rename_password_and_sessions_round_trip() {
    let (_server, e) = env().await;
    blocking(move || {
        e.contacts("jo", "kim");
        // Rename: said back, kept in the saved session, seen by contacts.
        let (code, v) = e.json("jo", &["account", "rename", "Jo", "March"], None);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["name"], "Jo March");
        assert_eq!(v["email"], "jo@example.org");
        let (_, out, _) = e.say("jo", &["whoami"], None);
        assert!(out.contains("Jo March <jo@example.org>"), "{out}");
        let (_, v) = e.json("kim", &["contacts"], None);
        assert_eq!(v[0]["name"], "Jo March", "{v}");
        // Sessions: two devices, this one marked.
        assert_eq!(e.json("jo2", &["login", "jo@example.org"], Some(PW)).0, 0);
        assert_eq!(e.json("jo3", &["login", "jo@example.org"], Some(PW)).0, 0);
        let (code, v) = e.json("jo", &["account", "sessions"], None);
        assert_eq!(code, 0, "{v}");
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 3, "{v}");
        for s in list {
            for field in ["session_id", "created_at", "last_used", "address", "current"] {
                assert!(s.get(field).is_some(), "{field} missing: {s}");
            }
        }
        let current = |s: &Value| s["current"] == Value::Bool(true) || s["current"] == "true";
        assert_eq!(list.iter().filter(|s| current(s)).count(), 1, "{v}");
        let (_, out, _) = e.say("jo", &["account", "sessions"], None);
        assert!(out.contains("(this one)") && out.contains("127.0.0.1"), "{out}");
        // End jo2's session from jo: jo2 is refused from then on.
        let (_, v2) = e.json("jo2", &["account", "sessions"], None);
        let jo2 =
            v2.as_array().unwrap().iter().find(|s| current(s)).unwrap()["session_id"].as_str().unwrap().to_owned();
        let (code, v) = e.json("jo", &["account", "end-session", &jo2], None);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["current"], false);
        let (code, v) = e.json("jo2", &["contacts"], None);
        assert_eq!(code, 1, "ended: {v}");
        let (code, v) = e.json("jo", &["account", "end-session", "999999"], None);
        assert_eq!(code, 1, "{v}");
        assert!(v["error"].as_str().unwrap().contains("no session"), "{v}");
        // Password: a wrong current one is refused (exit 1, nothing changed).
        let (code, v) = e.json("jo", &["account", "password"], Some("wrong-password\nnewpass4567\n"));
        assert_eq!(code, 1, "{v}");
        assert!(v["error"].as_str().unwrap().contains("nothing was changed"), "{v}");
        let (code, v) = e.json("jo", &["account", "password"], Some("password123\n"));
        assert_eq!(code, 2, "one line only: {v}");
        let (code, out, err) = e.say("jo", &["account", "password"], Some("password123\nnewpass4567\n"));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("Password changed"), "{out}");
        // This session goes on; the other one (jo3) has ended.
        assert_eq!(e.json("jo", &["contacts"], None).0, 0);
        assert_eq!(e.json("jo3", &["contacts"], None).0, 1);
        assert_eq!(e.json("x", &["login", "jo@example.org"], Some(PW)).0, 1, "the old password");
        assert_eq!(e.json("x", &["login", "jo@example.org"], Some("newpass4567\n")).0, 0, "the new one");
        // Ending this very session forgets it here.
        let (_, v) = e.json("x", &["account", "sessions"], None);
        let me = v.as_array().unwrap().iter().find(|s| current(s)).unwrap()["session_id"].as_str().unwrap().to_owned();
        let (code, v) = e.json("x", &["account", "end-session", &me], None);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["current"], true);
        assert_eq!(e.json("x", &["whoami"], None).0, 2, "logged out here");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_in_contacts_and_dnd_is_not_rung() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || e1.contacts("lea", "max")).await.unwrap();
    // Max is online (an event connection open).
    let (_max, _events) = online(&e, "max").await;
    let input = e.dir.path().join("hello.wav");
    write_voice(&input, 2.0);
    let e2 = e.clone();
    blocking(move || {
        let input = input.to_str().unwrap();
        let status_of_max = || {
            let (_, v) = e2.json("lea", &["contacts"], None);
            v[0]["status"].as_str().unwrap().to_owned()
        };
        assert_eq!(status_of_max(), "online");
        for (chosen, seen) in [("away", "away"), ("dnd", "dnd"), ("invisible", "offline"), ("available", "online")] {
            let (code, v) = e2.json("max", &["status", chosen], None);
            assert_eq!(code, 0, "{v}");
            assert_eq!(v["status"], chosen);
            assert_eq!(status_of_max(), seen, "{chosen}");
            if chosen == "away" {
                let (_, out, _) = e2.say("lea", &["contacts"], None);
                assert!(out.contains("away") && out.contains("Max <max@example.org>"), "{out}");
            }
            if chosen == "dnd" {
                // A call to someone on dnd is refused with a reason.
                let (code, _, err) =
                    e2.say("lea", &["call", "max@example.org", "--input", input, "--output", "/dev/null"], None);
                assert_eq!(code, 1, "{err}");
                assert!(!err.trim().is_empty(), "a reason: {err}");
            }
        }
        let (_, out, _) = e2.say("max", &["status", "dnd"], None);
        assert!(out.contains("calls to you are refused"), "{out}");
        assert_eq!(e2.json("max", &["status", "sleeping"], None).0, 2);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_unblock_and_blocked_round_trip() {
    let (_server, e) = env().await;
    blocking(move || {
        e.contacts("ned", "oli");
        let (code, v) = e.json("ned", &["blocked"], None);
        assert_eq!((code, v), (0, serde_json::json!([])));
        let (code, v) = e.json("ned", &["block", "oli@example.org"], None);
        assert_eq!(code, 0, "{v}");
        // No longer contacts, both ways; the block is listed.
        assert_eq!(e.json("ned", &["contacts"], None).1, serde_json::json!([]));
        assert_eq!(e.json("oli", &["contacts"], None).1, serde_json::json!([]));
        let (_, v) = e.json("ned", &["blocked"], None);
        assert_eq!(v[0]["email"], "oli@example.org", "{v}");
        let (_, out, _) = e.say("ned", &["blocked"], None);
        assert!(out.contains("Oli <oli@example.org>"), "{out}");
        // Oli cannot write any more; asking again is silently dropped.
        assert_eq!(e.json("oli", &["message", "ned@example.org", "hi"], None).0, 1);
        assert_eq!(e.json("oli", &["contacts", "add", "ned@example.org"], None).0, 0);
        assert_eq!(e.json("ned", &["contacts", "requests"], None).1, serde_json::json!([]));
        // Unblock: the list empties; they are not contacts again.
        let (code, v) = e.json("ned", &["unblock", "oli@example.org"], None);
        assert_eq!(code, 0, "{v}");
        assert_eq!(e.json("ned", &["blocked"], None).1, serde_json::json!([]));
        assert_eq!(e.json("ned", &["contacts"], None).1, serde_json::json!([]));
        let (code, v) = e.json("ned", &["unblock", "oli@example.org"], None);
        assert_eq!(code, 1, "{v}");
        assert!(v["error"].as_str().unwrap().contains("not blocked"), "{v}");
        assert_eq!(e.json("ned", &["block", "not-an-email"], None).0, 2);
    })
    .await
    .unwrap();
}

/// `messages --follow` and `listen` of a session ended from another one
/// stop at once and say why (exit 1), not silently nor by a later 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_stops_follow_and_listen_with_the_reason() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.contacts("quin", "rae");
        assert_eq!(e1.json("quin2", &["login", "quin@example.org"], Some(PW)).0, 0);
    })
    .await
    .unwrap();
    let home = e.dir.path().join("quin");
    let spawn = |args: &[&str]| {
        let mut c = common::babel(&e.server, &home).args(args).stdin(std::process::Stdio::null()).spawn().unwrap();
        let err = c.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (c, rx)
    };
    let (follow, follow_err) = spawn(&["messages", "rae@example.org", "--follow"]);
    let (listen, listen_err) = spawn(&["listen"]);
    let wait = |rx: &std::sync::mpsc::Receiver<String>, what: &str| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = Vec::new();
        while std::time::Instant::now() < end {
            if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                if l.contains(what) {
                    return;
                }
                seen.push(l);
            }
        }
        panic!("no `{what}` within 20 s: {seen:?}");
    };
    wait(&follow_err, "following the conversation");
    wait(&listen_err, "waiting for calls");
    // Quin's other device ends this session.
    let e2 = e.clone();
    blocking(move || {
        let (_, v) = e2.json("quin", &["account", "sessions"], None);
        let current = v.as_array().unwrap().iter().find(|s| s["current"] == "true").unwrap()["session_id"].clone();
        let (code, v) = e2.json("quin2", &["account", "end-session", current.as_str().unwrap()], None);
        assert_eq!(code, 0, "{v}");
    })
    .await
    .unwrap();
    for (mut child, rx) in [(follow, follow_err), (listen, listen_err)] {
        wait(&rx, "this session is over: it was ended from another session");
        let status = blocking(move || child.wait().unwrap()).await.unwrap();
        assert_eq!(status.code(), Some(1));
    }
}
