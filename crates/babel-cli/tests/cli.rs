//! The real `babel` binary against a real server: accounts, contacts,
//! `--json`, exit codes, the password from stdin, a WAV-to-WAV call between
//! `call` and `listen --auto-answer`, and `demo`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use babel_server::{Config, RunningServer};
use serde_json::Value;

mod common;
use common::{blocking, write_voice};

struct Env {
    server: String,
    dir: tempfile::TempDir,
}

impl Env {
    fn babel(&self, home: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.babel_env(home, args, stdin, &[])
    }

    fn babel_env(&self, home: &str, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Output {
        let mut cmd = common::babel(&self.server, &self.dir.path().join(home));
        cmd.envs(envs.iter().copied()).args(args);
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        // (babel may exit before reading it: a usage error.)
        let _ = input.write_all(stdin.unwrap_or("").as_bytes());
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Registers `a` and `b` (as `a@example.org` and `b@example.org`, each
    /// in the home of that name) and makes them contacts.
    fn contacts(&self, a: &str, b: &str) {
        assert_eq!(self.json(a, &["register", &format!("{a}@example.org")], Some(PW)).0, 0);
        assert_eq!(self.json(b, &["register", &format!("{b}@example.org")], Some(PW)).0, 0);
        assert_eq!(self.json(a, &["contacts", "add", &format!("{b}@example.org")], None).0, 0);
        assert_eq!(self.json(b, &["contacts", "accept", &format!("{a}@example.org")], None).0, 0);
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
    let server = common::server(dir.path()).await;
    let e = Env { server: server.addr().to_string(), dir };
    (server, e)
}

const PW: &str = "password123\n";

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
        // Not logged in: a usage error.
        let (code, v) = e.json("nobody", &["contacts"], None);
        assert_eq!(code, 2);
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
        assert_eq!(code, 2, "logged out");
        let (code, _) = e.json("ann", &["delete-account", "--yes"], Some(PW));
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
    let out = common::babel("127.0.0.1:1", dir.path()).args(["register", "a@example.org"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn completions_are_printed() {
    let out = Command::new(env!("CARGO_BIN_EXE_babel")).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("babel"));
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
        e1.contacts("cal", "dee");
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
    // The caller heard only silence, and its --output was /dev/null: that
    // is not a recording to tidy away.
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null survives");
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
        e1.contacts("ro1", "ro2");
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
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("bob.wav");
    let k = keep.clone();
    let out = blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_babel")).args(["--json", "demo", "--output"]).arg(&k).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["caller"]["sas"], v["callee"]["sas"]);
    assert!(v["callee"]["received"].as_u64().unwrap() > 100, "{v}");
    assert_eq!(v["recording"].as_str().unwrap(), keep.to_str().unwrap());
    assert!(hound::WavReader::open(&keep).unwrap().duration() > 48_000, "the phrase was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_leaves_nothing_behind_and_speaks_in_sentences() {
    // Its own temporary folder, to see what it leaves in it.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_owned();
    let out =
        blocking(move || Command::new(env!("CARGO_BIN_EXE_babel")).arg("demo").env("TMPDIR", &t).output().unwrap())
            .await
            .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("security code") && !text.contains('{'), "{text}");
    // `--server` does not apply to the demo: said, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_babel")).args(["demo", "--server", "127.0.0.1:7447"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("own server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_is_trusted_on_first_use_pinned_and_a_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { tls_listen: Some("127.0.0.1:0".parse().unwrap()), ..common::config(dir.path()) };
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

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_mistakes_are_exit_2_and_json_under_json() {
    let (_server, e) = env().await;
    blocking(move || {
        let out = e.babel("x", &["login", "not-an-email"], Some(PW));
        assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
        let (code, v) = e.json("x", &["login", "not-an-email"], Some(PW));
        assert_eq!(code, 2);
        assert!(v["error"].as_str().unwrap().contains("not an email address"), "{v}");
        // Clap's own usage errors are JSON under --json too.
        let (code, v) = e.json("x", &["frobnicate"], None);
        assert_eq!(code, 2);
        assert!(v["error"].as_str().unwrap().contains("frobnicate"), "{v}");
        // A port that cannot be.
        let out = common::babel("127.0.0.1:99999", &e.dir.path().join("x"))
            .args(["login", "a@example.org"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
        // A bitrate Opus cannot use.
        let out = e.babel("x", &["call", "a@example.org", "--bitrate", "1"], None);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out).1.contains("6000"), "{:?}", text(&out));
        // delete-account: not without the password, and not by accident.
        assert_eq!(e.json("del", &["register", "del@example.org"], Some(PW)).0, 0);
        let (code, v) = e.json("del", &["delete-account"], Some(PW));
        assert_eq!(code, 2, "no terminal and no --yes: {v}");
        let (code, v) = e.json("del", &["delete-account", "--yes"], Some("not-the-password\n"));
        assert_eq!(code, 1, "{v}");
        assert!(v["error"].as_str().unwrap().contains("wrong password"), "{v}");
        assert_eq!(e.json("del", &["contacts"], None).0, 0, "still there");
        assert_eq!(e.json("del", &["delete-account", "--yes"], Some(PW)).0, 0);
        assert_eq!(e.json("x", &["login", "del@example.org"], Some(PW)).0, 1, "deleted");
    })
    .await
    .unwrap();
}

/// A TCP server that is not Babel: an HTTP server that answers at once,
/// or one that waits for a request line that never comes.
fn not_babel(answer: bool) -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                if answer {
                    let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                }
                std::thread::sleep(std::time::Duration::from_secs(30));
            });
        }
    });
    addr
}

#[test]
fn a_server_that_is_not_babel_is_exit_3_and_said_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |server: &str| {
        let start = std::time::Instant::now();
        let out =
            common::babel(server, dir.path()).args(["login", "a@example.org"]).stdin(Stdio::null()).output().unwrap();
        (out, start.elapsed())
    };
    let (out, _) = run(&not_babel(true));
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    assert!(text(&out).1.contains("this is not a Babel server"), "{:?}", text(&out));
    // A server that never answers is given up on, not waited on for 30 s.
    let (out, took) = run(&not_babel(false));
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

#[test]
fn completions_into_a_closed_pipe_do_not_panic() {
    // `babel completions bash | head -1`: the reader is gone before babel
    // writes.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_babel"))
        .args(["completions", "bash"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_read_sentences_and_scripts_read_json() {
    let (_server, e) = env().await;
    let server = e.server.clone();
    blocking(move || {
        assert_eq!(e.json("ann", &["register", "ann@example.org", "--name", "Ann"], Some(PW)).0, 0);
        assert_eq!(e.json("ben", &["register", "ben@example.org", "--name", "Ben"], Some(PW)).0, 0);
        // The address as stored, not as typed.
        let out = e.babel("ann", &["contacts", "add", "BEN@Example.ORG"], None);
        let (stdout, _) = text(&out);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout.contains("ben@example.org") && !stdout.contains("BEN@"), "{stdout}");
        // The list says who waits for an answer.
        let (stdout, _) = text(&e.babel("ben", &["contacts"], None));
        assert!(stdout.contains("1 request is waiting for your answer: Ann <ann@example.org>"), "{stdout}");
        let (stdout, _) = text(&e.babel("ann", &["contacts"], None));
        assert!(stdout.contains("asked") && stdout.contains("Ben <ben@example.org>"), "{stdout}");
        // whoami: the account, the server, the presence.
        let (stdout, _) = text(&e.babel("ben", &["whoami"], None));
        assert!(stdout.contains("Ben <ben@example.org>") && stdout.contains(&server), "{stdout}");
        assert!(stdout.contains("online while `babel listen`"), "{stdout}");
        let (code, v) = e.json("ben", &["whoami"], None);
        assert_eq!(code, 0);
        assert_eq!(
            (v["email"].as_str(), v["server"].as_str(), v["session"].as_str()),
            (Some("ben@example.org"), Some(server.as_str()), Some("valid"))
        );
        // Sentences, not data.
        let (stdout, _) = text(&e.babel("ann", &["logout"], None));
        assert!(stdout.starts_with("Logged out") && !stdout.contains("logged_out"), "{stdout}");
        let out = e.babel("ann", &["whoami"], None);
        assert_eq!(out.status.code(), Some(2), "not logged in: {:?}", text(&out));
    })
    .await
    .unwrap();
}

async fn two_contacts(e: &std::sync::Arc<Env>) {
    let e1 = e.clone();
    blocking(move || {
        e1.contacts("cal", "dee");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mistakes_are_found_before_anyone_is_rung() {
    let (_server, e) = env().await;
    let e = std::sync::Arc::new(e);
    two_contacts(&e).await;
    // Dee watches for calls.
    let mut dee = babel_client::Client::connect(e.server.clone()).await.unwrap();
    dee.login("dee@example.org", PW.trim()).await.unwrap();
    let mut events = dee.events().await.unwrap();
    let not_wav = e.dir.path().join("notes.txt");
    std::fs::write(&not_wav, "not a sound").unwrap();
    let missing = e.dir.path().join("missing.wav");
    let e1 = e.clone();
    blocking(move || {
        let (nw, mi) = (not_wav.to_str().unwrap(), missing.to_str().unwrap());
        for (args, says) in [
            (vec!["--input", mi], "--input"),
            (vec!["--input", nw], "not a WAV file"),
            (vec!["--output", "/nonexistent-dir/heard.wav"], "cannot write"),
            (vec!["--input-device", "no such microphone"], "no microphone named"),
            (vec!["--output-device", "no such speaker"], "no speaker named"),
        ] {
            let mut all = vec!["call", "dee@example.org"];
            all.extend(args.iter().copied());
            let out = e1.babel("cal", &all, None);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", text(&out));
            assert!(text(&out).1.contains(says), "{args:?}: {:?}", text(&out));
        }
    })
    .await
    .unwrap();
    // Nobody was rung.
    let rung = tokio::time::timeout(std::time::Duration::from_millis(1500), async {
        loop {
            if let Some(Ok(babel_client::Event::Server(babel_proto::ServerEvent::IncomingCall(_)))) =
                events.next().await
            {
                return;
            }
        }
    })
    .await;
    assert!(rung.is_err(), "dee was rung");
}

fn write_silence(path: &Path, samples: usize) {
    let mut w = hound::WavWriter::create(path, common::hound_spec()).unwrap();
    for _ in 0..samples {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_names_each_recording_and_keeps_no_empty_one() {
    let (_server, e) = env().await;
    let e = std::sync::Arc::new(e);
    two_contacts(&e).await;
    let (hello, empty) = (e.dir.path().join("hello.wav"), e.dir.path().join("empty.wav"));
    write_voice(&hello, 2.0);
    write_silence(&empty, 0);
    let out = e.dir.path().join("heard.wav");
    let e2 = e.clone();
    let o = out.clone();
    let listener = blocking(move || {
        e2.babel(
            "dee",
            &["listen", "--auto-answer", "--calls", "2", "--output", o.to_str().unwrap(), "--no-noise-suppression"],
            None,
        )
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let e3 = e.clone();
    blocking(move || {
        for input in [hello, empty] {
            let out = e3.babel(
                "cal",
                &["call", "dee@example.org", "--input", input.to_str().unwrap(), "--output", "/dev/null"],
                None,
            );
            assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        }
    })
    .await
    .unwrap();
    let heard = listener.await.unwrap();
    let (stdout, stderr) = text(&heard);
    assert_eq!(heard.status.code(), Some(0), "{stdout}\n{stderr}");
    let second = e.dir.path().join("heard-2.wav");
    assert!(stderr.contains(&format!("recording to {}", out.display())), "{stderr}");
    assert!(stderr.contains(&format!("recording to {}", second.display())), "{stderr}");
    assert!(out.exists());
    // The call in which nothing was heard leaves no file, and says so.
    assert!(!second.exists(), "{stderr}");
    assert!(stderr.contains("was not kept"), "{stderr}");
    assert!(stdout.contains("2 calls answered"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_speaker_never_ends_a_call_and_alsa_keeps_quiet() {
    let (_server, e) = env().await;
    let e = std::sync::Arc::new(e);
    two_contacts(&e).await;
    // A machine whose sound card is not there (ALSA's own configuration,
    // pointing at a card that does not exist: alsa-lib complains on stderr).
    let conf = e.dir.path().join("asound.conf");
    std::fs::write(&conf, "</usr/share/alsa/alsa.conf>\ndefaults.pcm.card 99\ndefaults.ctl.card 99\n").unwrap();
    let hello = e.dir.path().join("hello.wav");
    write_voice(&hello, 2.0);
    let e2 = e.clone();
    let listener = blocking(move || {
        let c = conf.to_str().unwrap();
        e2.babel_env("dee", &["listen", "--auto-answer", "--calls", "1"], None, &[("ALSA_CONFIG_PATH", c)])
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let e3 = e.clone();
    let caller = blocking(move || {
        e3.json("cal", &["call", "dee@example.org", "--input", hello.to_str().unwrap(), "--output", "/dev/null"], None)
    });
    let (code, v) = caller.await.unwrap();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ended"], "input_ended", "{v}");
    let heard = listener.await.unwrap();
    let (stdout, stderr) = text(&heard);
    assert_eq!(heard.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stderr.matches("no speaker").count(), 1, "said once: {stderr}");
    assert!(!stderr.contains("ALSA lib"), "{stderr}");
    assert!(stdout.contains("1 call answered"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_says_when_the_connection_is_lost_and_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    let server = RunningServer::start(&config).await.unwrap();
    let addr = server.addr();
    let e = std::sync::Arc::new(Env { server: addr.to_string(), dir });
    let home = e.dir.path().join("dee");
    let s = e.server.clone();
    let e1 = e.clone();
    blocking(move || assert_eq!(e1.json("dee", &["register", "dee@example.org"], Some(PW)).0, 0)).await.unwrap();
    let mut child = common::babel(&s, &home)
        .arg("listen")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str| {
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
        panic!("no `{what}` within 20 s; stderr: {seen:?}");
    };
    wait_for("waiting for calls");
    server.shutdown().await;
    wait_for("connection to the server lost; reconnecting");
    config.listen = addr;
    let _server = RunningServer::start(&config).await.unwrap();
    wait_for("connected to the server again");
    let _ = child.kill();
    let _ = child.wait();
}
