//! The real `babel` binary against a real server: accounts, contacts,
//! `--json`, exit codes, the password from stdin, a WAV-to-WAV call between
//! `call` and `listen --auto-answer`, and `demo`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use babel_server::auth::PasswordCost;
use babel_server::{Config, RunningServer};
use serde_json::Value;

struct Env {
    server: String,
    dir: tempfile::TempDir,
}

impl Env {
    fn babel(&self, home: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_babel"));
        cmd.args(["--server", &self.server, "--home"])
            .arg(self.dir.path().join(home))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn json(&self, home: &str, args: &[&str], stdin: Option<&str>) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.babel(home, &all, stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!("{args:?}: not JSON ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap_or(-1), v)
    }
}

async fn env() -> (RunningServer, Env) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    };
    let server = RunningServer::start(&config).await.unwrap();
    let e = Env { server: server.addr().to_string(), dir };
    (server, e)
}

const PW: &str = "password123\n";

fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_contacts_json_and_exit_codes() {
    let (_server, e) = env().await;
    let e = std::sync::Arc::new(e);
    let e2 = e.clone();
    blocking(move || {
        let e = e2;
        let (code, v) = e.json("ann", &["register", "ann@example.org"], Some(PW));
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["email"], "ann@example.org");
        // Refused by the server: exit 1 with the reason.
        let out = e.babel("x", &["register", "ann@example.org"], Some(PW));
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
        let (code, v) = e.json("x", &["register", "ann@example.org"], Some(PW));
        assert_eq!(code, 1);
        assert!(v["error"].as_str().unwrap().contains("already exists"));
        // Wrong password.
        let (code, _) = e.json("x", &["login", "ann@example.org"], Some("nope-nope\n"));
        assert_eq!(code, 1);
        // Usage errors are 2.
        assert_eq!(e.babel("x", &["contacts", "frobnicate"], None).status.code(), Some(2));
        assert_eq!(e.babel("x", &["call", "a@b.c", "--frame-ms", "15"], None).status.code(), Some(2));
        // Not logged in.
        let (code, v) = e.json("nobody", &["contacts"], None);
        assert_eq!(code, 1);
        assert!(v["error"].as_str().unwrap().contains("not logged in"));

        let (code, _) = e.json("ben", &["register", "ben@example.org", "--name", "Ben"], Some(PW));
        assert_eq!(code, 0);
        let (code, _) = e.json("ann", &["contacts", "add", "ben@example.org"], None);
        assert_eq!(code, 0);
        let (_, v) = e.json("ann", &["contacts"], None);
        assert_eq!(v[0]["status"], "pending");
        let (_, v) = e.json("ben", &["contacts", "requests"], None);
        assert_eq!(v[0]["email"], "ann@example.org");
        let (code, _) = e.json("ben", &["contacts", "accept", "ann@example.org"], None);
        assert_eq!(code, 0);
        let (_, v) = e.json("ann", &["contacts"], None);
        assert_eq!(v[0]["email"], "ben@example.org");
        assert_eq!(v[0]["name"], "Ben");
        // Plain output for people.
        let out = e.babel("ann", &["contacts"], None);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Ben <ben@example.org>"));
        let (code, _) = e.json("ann", &["contacts", "remove", "ben@example.org"], None);
        assert_eq!(code, 0);
        let (_, v) = e.json("ann", &["contacts"], None);
        assert_eq!(v, serde_json::json!([]));
        // A second login keeps its own session; logout and delete end them.
        let (code, _) = e.json("ann2", &["login", "ann@example.org"], Some(PW));
        assert_eq!(code, 0);
        let (code, _) = e.json("ann2", &["logout"], None);
        assert_eq!(code, 0);
        let (code, _) = e.json("ann2", &["contacts"], None);
        assert_eq!(code, 1, "logged out");
        let (code, _) = e.json("ann", &["delete-account"], None);
        assert_eq!(code, 0);
        let (code, _) = e.json("x", &["login", "ann@example.org"], Some(PW));
        assert_eq!(code, 1, "deleted");
    })
    .await
    .unwrap();
}

#[test]
fn unreachable_server_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_babel"))
        .args(["--server", "127.0.0.1:1", "--home"])
        .arg(dir.path())
        .args(["register", "a@example.org"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn completions_are_printed() {
    let out = Command::new(env!("CARGO_BIN_EXE_babel")).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("babel"));
}

fn write_voice(path: &Path, secs: f32) {
    let spec = hound_spec();
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(16_000.0 * secs) as usize {
        let t = i as f32 / 16_000.0;
        let env = (std::f32::consts::PI * (t * 4.0).fract()).sin();
        let s: f32 = (1..5).map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32).sum();
        w.write_sample((0.25 * env * s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

fn hound_spec() -> hound::WavSpec {
    hound::WavSpec { channels: 1, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_wav_to_wav_between_call_and_listen() {
    let (_server, e) = env().await;
    let e = std::sync::Arc::new(e);
    let input = e.dir.path().join("hello.wav");
    let output = e.dir.path().join("heard.wav");
    write_voice(&input, 3.0);
    let e1 = e.clone();
    blocking(move || {
        assert_eq!(e1.json("cal", &["register", "cal@example.org"], Some(PW)).0, 0);
        assert_eq!(e1.json("dee", &["register", "dee@example.org"], Some(PW)).0, 0);
        assert_eq!(e1.json("cal", &["contacts", "add", "dee@example.org"], None).0, 0);
        assert_eq!(e1.json("dee", &["contacts", "accept", "cal@example.org"], None).0, 0);
    })
    .await
    .unwrap();
    let e2 = e.clone();
    let out2 = output.clone();
    let listener = blocking(move || {
        e2.json(
            "dee",
            &["listen", "--auto-answer", "--calls", "1", "--output", out2.to_str().unwrap(), "--no-noise-suppression"],
            None,
        )
    });
    // Give the listener a moment to subscribe to events.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let e3 = e.clone();
    let inp = input.clone();
    let caller = blocking(move || {
        e3.json(
            "cal",
            &[
                "call",
                "dee@example.org",
                "--input",
                inp.to_str().unwrap(),
                "--output",
                "/dev/null",
                "--no-noise-suppression",
            ],
            None,
        )
    });
    let (code, v) = caller.await.unwrap();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ended"], "input_ended");
    assert_eq!(v["path"], "direct");
    let (code, lv) = listener.await.unwrap();
    assert_eq!(code, 0, "{lv}");
    assert_eq!(lv["calls"].as_array().unwrap().len(), 1);
    assert_eq!(lv["calls"][0]["sas"], v["sas"], "both ends show the same code");
    // The recording holds the voice: about three seconds, and not silence.
    let mut r = hound::WavReader::open(&output).unwrap();
    assert_eq!(r.spec().sample_rate, 48_000);
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    assert!(samples.len() > 48_000 * 2, "{} samples", samples.len());
    let loud = samples.iter().filter(|s| s.abs() > 1000).count();
    assert!(loud > 48_000 / 2, "mostly silence: {loud} loud samples");
}

/// `--relay-only` on both ends: the voice goes by the server's relay though
/// the two could reach each other directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_calls_go_through_the_relay() {
    let (_server, e) = env().await;
    let e = std::sync::Arc::new(e);
    let input = e.dir.path().join("hello.wav");
    write_voice(&input, 2.0);
    let e1 = e.clone();
    blocking(move || {
        assert_eq!(e1.json("ro1", &["register", "ro1@example.org"], Some(PW)).0, 0);
        assert_eq!(e1.json("ro2", &["register", "ro2@example.org"], Some(PW)).0, 0);
        assert_eq!(e1.json("ro1", &["contacts", "add", "ro2@example.org"], None).0, 0);
        assert_eq!(e1.json("ro2", &["contacts", "accept", "ro1@example.org"], None).0, 0);
    })
    .await
    .unwrap();
    let e2 = e.clone();
    let listener = blocking(move || {
        let args = ["listen", "--auto-answer", "--calls", "1", "--output", "/dev/null", "--relay-only"];
        e2.json("ro2", &[&args[..], &["--no-noise-suppression"]].concat(), None)
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let e3 = e.clone();
    let caller = blocking(move || {
        let inp = input.to_str().unwrap().to_owned();
        let args = ["call", "ro2@example.org", "--input", &inp, "--output", "/dev/null", "--relay-only"];
        e3.json("ro1", &[&args[..], &["--no-noise-suppression"]].concat(), None)
    });
    let (code, v) = caller.await.unwrap();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["path"], "relay", "{v}");
    let (code, lv) = listener.await.unwrap();
    assert_eq!(code, 0, "{lv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_end_to_end() {
    let out = blocking(|| Command::new(env!("CARGO_BIN_EXE_babel")).args(["--json", "demo"]).output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["caller"]["sas"], v["callee"]["sas"]);
    assert!(v["callee"]["received"].as_u64().unwrap() > 100, "{v}");
    let rec = v["recording"].as_str().unwrap();
    assert!(Path::new(rec).exists());
    std::fs::remove_file(rec).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_is_trusted_on_first_use_pinned_and_a_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    };
    let server = RunningServer::start(&config).await.unwrap();
    let fp = server.tls().unwrap().fingerprint.to_string();
    let tls_addr = server.tls_addr().unwrap();
    let e = Env { server: format!("tls://{tls_addr}"), dir };
    blocking(move || {
        // First use: accepted, said so on stderr, recorded.
        let out = e.babel("tia", &["register", "tia@example.org"], Some(PW));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("first connection") && err.contains(&fp), "{err}");
        let known = e.dir.path().join("tia").join("known_servers");
        assert!(std::fs::read_to_string(&known).unwrap().contains(&format!("{tls_addr} {fp}")));
        // The saved session keeps the tls:// address; no more notices.
        let out = e.babel("tia", &["contacts"], None);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stderr).is_empty());
        // The certificate "changes": refused, exit 3, a message that says what to do.
        std::fs::write(&known, format!("{tls_addr} SHA256:{}\n", ["00"; 32].join(":"))).unwrap();
        let out = e.babel("tia", &["contacts"], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("certificate changed") && err.contains("delete that line"), "{err}");
        // An explicit pin: the right one works without a notice, a wrong one is refused.
        let out = e.babel("pin", &["--tls-fingerprint", &fp, "login", "tia@example.org"], Some(PW));
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("first connection"));
        let wrong = format!("SHA256:{}", ["AB"; 32].join(":"));
        let out = e.babel("pin2", &["--tls-fingerprint", &wrong, "login", "tia@example.org"], Some(PW));
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not the pinned"));
        // A malformed fingerprint is a usage error.
        let out = e.babel("pin3", &["--tls-fingerprint", "xyz", "contacts"], None);
        assert_eq!(out.status.code(), Some(2));
    })
    .await
    .unwrap();
    server.shutdown().await;
}
