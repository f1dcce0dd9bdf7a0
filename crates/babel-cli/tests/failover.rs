//! `babel` given a cluster's nodes: `--server a,b` and `BABEL_SERVER=a,b`
//! pass over a node that is down and follow a lost one; every node down is
//! exit 3 naming each; a malformed list is exit 2; `--tls-ca` trusts the
//! nodes a cluster authority signed, without first use, and refuses
//! others. The servers are real ones in this process, two on one
//! PostgreSQL schema (the library's own failover tests kill real
//! processes).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use babel_server::store::pg::scratch_for_tests;
use babel_server::{Config, RunningServer};
use serde_json::Value;

mod common;
use common::blocking;

const PW: &str = "password123\n";

/// `babel ARGS` with `home` and the environment given; `--server` only
/// when the caller passes it.
fn babel(home: &Path, args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_babel"))
        .env_remove("BABEL_SERVER")
        .envs(envs.iter().copied())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}; stderr: {}", String::from_utf8_lossy(&out.stderr)))
}

fn ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

fn dead_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_list_passes_a_dead_node_and_listen_follows_a_lost_one() {
    let schema = scratch_for_tests().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let config = Config { db: PathBuf::from(schema.url()), ..common::config(dir.path()) };
    let (a, b) = (RunningServer::start(&config).await.unwrap(), RunningServer::start(&config).await.unwrap());
    let (a_addr, b_addr, dead) = (a.addr().to_string(), b.addr().to_string(), dead_addr());
    let (ann, bob) = (dir.path().join("ann"), dir.path().join("bob"));

    let (ann2, bob2, list) = (ann.clone(), bob.clone(), format!("{dead},{a_addr}"));
    let (b2, lb) = (b_addr.clone(), format!("{a_addr},{b_addr}"));
    blocking(move || {
        // --server with a dead first node: the next one is used, and the
        // list is what the session keeps.
        ok(&babel(&ann2, &["--json", "--server", &list, "register", "ann@example.org"], PW, &[]));
        let saved: Value = serde_json::from_slice(&std::fs::read(ann2.join("session.json")).unwrap()).unwrap();
        assert_eq!(saved["server"], Value::from(list.as_str()));
        // BABEL_SERVER takes the same list.
        ok(&babel(&bob2, &["--json", "register", "bob@example.org"], PW, &[("BABEL_SERVER", &lb)]));
        let out = babel(&bob2, &["--json", "whoami"], "", &[("BABEL_SERVER", &lb)]);
        ok(&out);
        assert_eq!(json(&out)["server"], Value::from(lb.as_str()));
        ok(&babel(&ann2, &["--json", "contacts", "add", "bob@example.org"], "", &[]));
        ok(&babel(&bob2, &["--json", "--server", &b2, "contacts", "accept", "ann@example.org"], "", &[]));
        // `--help` says so.
        let help = String::from_utf8_lossy(&babel(&ann2, &["--help"], "", &[]).stdout).into_owned();
        assert!(help.contains("a:7447,b:7447") && help.contains("--tls-ca"), "{help}");
    })
    .await
    .unwrap();

    // `listen` on A then B: A goes away, listen says it is back through B,
    // where bob sees ann online.
    let mut child = Command::new(env!("CARGO_BIN_EXE_babel"))
        .env_remove("BABEL_SERVER")
        .args(["--server", &format!("{a_addr},{b_addr}"), "--home"])
        .arg(&ann)
        .arg("listen")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = move |what: String| {
        let end = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < end {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                if l.contains(&what) {
                    return rx;
                }
                seen.push(l);
            }
        }
        panic!("no `{what}` within 20 s; stderr: {seen:?}");
    };
    let rx = blocking(move || wait_for("waiting for calls".into())).await.unwrap();
    a.shutdown().await;
    let back = format!("connected to the server again ({b_addr})");
    blocking(move || {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok_and(|l| l.contains(&back)) {
                return;
            }
        }
        panic!("listen did not say `{back}`");
    })
    .await
    .unwrap();
    let bob2 = bob.clone();
    let b2 = b_addr.clone();
    let contacts = blocking(move || babel(&bob2, &["--json", "--server", &b2, "contacts"], "", &[])).await.unwrap();
    ok(&contacts);
    assert_eq!(json(&contacts)[0]["status"], "online", "{}", json(&contacts));
    let _ = child.kill();
    let _ = child.wait();
    b.shutdown().await;
}

#[test]
fn every_node_down_is_exit_3_naming_each_and_a_bad_list_is_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let (x, y) = (dead_addr(), dead_addr());
    let list = format!("{x},tls://{y}");
    let out = babel(home.path(), &["--server", &list, "login", "ann@example.org"], PW, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&x) && err.contains(&format!("tls://{y}")), "{err}");
    let out = babel(home.path(), &["--json", "register", "ann@example.org"], PW, &[("BABEL_SERVER", &list)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(json(&out)["error"].as_str().unwrap().contains(&x));

    for bad in ["a:1,,b:2", "a:1,", "a:1,http://b:2"] {
        let out = babel(home.path(), &["--server", bad, "login", "ann@example.org"], PW, &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `scripts/cluster-ca.sh DIR 127.0.0.1`: DIR/ca.pem and a node certificate.
fn cluster_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster-ca.sh");
    let out = Command::new("bash").arg(script).arg(dir).arg("127.0.0.1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir.join("ca.pem"), dir.join("127.0.0.1.pem"), dir.join("127.0.0.1.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ca_trusts_the_cluster_s_nodes_without_first_use_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = cluster_ca(&dir.path().join("ca"));
    let (_, other_cert, other_key) = cluster_ca(&dir.path().join("other"));
    let tls = |cert: PathBuf, key: PathBuf| Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..common::config(dir.path())
    };
    let node = RunningServer::start(&tls(cert, key)).await.unwrap();
    let stranger =
        RunningServer::start(&Config { db: dir.path().join("other.db"), ..tls(other_cert, other_key) }).await.unwrap();
    let (good, bad) =
        (format!("tls://{}", node.tls_addr().unwrap()), format!("tls://{}", stranger.tls_addr().unwrap()));
    let home = dir.path().join("home");
    let ca = ca.to_str().unwrap().to_owned();
    blocking(move || {
        let out = babel(&home, &["--server", &good, "--tls-ca", &ca, "register", "ann@example.org"], PW, &[]);
        ok(&out);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("first connection"));
        assert!(!home.join("known_servers").exists(), "nothing trusted on first use");
        // BABEL_TLS_CA does the same; another authority's node is refused.
        let out = babel(&home, &["--server", &bad, "login", "ann@example.org"], PW, &[("BABEL_TLS_CA", &ca)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("not vouched for by a trusted authority"), "{err}");
        // In a list, the stranger is passed over.
        let list = format!("{bad},{good}");
        ok(&babel(&home, &["--server", &list, "--tls-ca", &ca, "login", "ann@example.org"], PW, &[]));
        // A file that is not an authority is the user's mistake.
        let out = babel(&home, &["--server", &good, "--tls-ca", "/nonexistent/ca.pem", "contacts"], "", &[]);
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    })
    .await
    .unwrap();
    node.shutdown().await;
    stranger.shutdown().await;
}
