//! The real `babel` on a real terminal (tmux, which `scripts/setup.sh`
//! installs) against a real server on 127.0.0.1: the keys, the prompts and
//! the status line a person sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use babel_server::RunningServer;
use serde_json::Value;

mod common;
use common::{blocking, write_voice};

/// The binary under test: this build's, or `BABEL_TEST_BIN` (another
/// build, e.g. one from before a fix, to see these tests fail on it).
fn bin() -> String {
    std::env::var("BABEL_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_babel").to_owned())
}
const PW: &str = "password123\n";

/// A tmux server of this test's own; every window is a session in it.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        let ok = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
        assert!(ok, "tmux is missing: run scripts/setup.sh");
        Tmux { socket: format!("babel-test-{}-{name}", std::process::id()) }
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux").args(["-L", &self.socket]).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `args` (babel's) in a new 80×24 window; the shell prints its
    /// exit code and keeps the window open.
    fn run(&self, window: &str, width: u16, args: &[String]) {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
        let cmd = format!("'{}' {}; echo EXIT=$?; sleep 120", bin(), quoted.join(" "));
        let out = self.tmux(&["new-session", "-d", "-s", window, "-x", &width.to_string(), "-y", "24", &cmd]);
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn keys(&self, window: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", window];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    fn screen(&self, window: &str) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", window]).stdout).into_owned()
    }

    /// Waits until the window shows `what`; answers the screen.
    fn wait(&self, window: &str, what: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen(window);
            if s.contains(what) {
                return s;
            }
            assert!(Instant::now() < end, "{window}: no `{what}` within 30 s; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

struct Env {
    server: String,
    dir: tempfile::TempDir,
}

impl Env {
    fn home(&self, who: &str) -> PathBuf {
        self.dir.path().join(who)
    }

    /// `babel ARGS` for `who`, as a terminal window's argument list.
    fn args(&self, who: &str, args: &[&str]) -> Vec<String> {
        let mut all = vec!["--server".to_owned(), self.server.clone(), "--home".to_owned()];
        all.push(self.home(who).to_string_lossy().into_owned());
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// `babel ARGS` for `who` without a terminal.
    fn babel(&self, who: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin())
            .args(self.args(who, args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, who: &str, args: &[&str], stdin: &str) {
        let out = self.babel(who, args, stdin);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Registers everyone and makes the first a contact of each other.
    fn people(&self, names: &[&str]) {
        for n in names {
            self.ok(n, &["register", &format!("{n}@example.org"), "--name", n], PW);
        }
        for other in &names[1..] {
            self.ok(names[0], &["contacts", "add", &format!("{other}@example.org")], "");
            self.ok(other, &["contacts", "accept", &format!("{}@example.org", names[0])], "");
        }
    }
}

async fn env() -> (RunningServer, Arc<Env>) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::server(dir.path()).await;
    let e = Env { server: server.addr().to_string(), dir };
    (server, Arc::new(e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_hangs_up_and_q_or_ctrl_c_stop_listen_after_an_answered_call() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.people(&["cal", "dee"]);
        let t = Tmux::new("listen");
        let long = e1.dir.path().join("long.wav");
        write_voice(&long, 20.0);
        let rec = e1.dir.path().join("dee.wav");
        t.run("dee", 100, &e1.args("dee", &["listen", "--auto-answer", "--output", rec.to_str().unwrap()]));
        t.wait("dee", "waiting for calls… (q: quit)");
        let caller = {
            let e = e1.clone();
            let long = long.clone();
            std::thread::spawn(move || {
                e.babel("cal", &["--json", "call", "dee@example.org", "--input", long.to_str().unwrap()], "")
            })
        };
        t.wait("dee", "q: hang up");
        // q in a call hangs up, and listen goes on.
        t.keys("dee", &["q"]);
        t.wait("dee", "you hung up");
        let out = caller.join().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ended"], "hangup", "{v}");
        t.wait("dee", "waiting for calls… (q: quit)");
        // After the call, Ctrl-C stops it.
        t.keys("dee", &["C-c"]);
        let s = t.wait("dee", "EXIT=");
        assert!(s.contains("EXIT=0") && s.contains("1 call answered"), "{s}");

        // And q, after a call that the other side ended.
        let short = e1.dir.path().join("short.wav");
        write_voice(&short, 1.5);
        t.run("dee2", 100, &e1.args("dee", &["listen", "--auto-answer", "--output", rec.to_str().unwrap()]));
        t.wait("dee2", "waiting for calls… (q: quit)");
        e1.ok("cal", &["call", "dee@example.org", "--input", short.to_str().unwrap()], "");
        t.wait("dee2", "Call with cal ended");
        t.keys("dee2", &["q"]);
        let s = t.wait("dee2", "EXIT=");
        assert!(s.contains("EXIT=0"), "{s}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_cancels_a_ringing_call_and_the_question_goes_with_a_missed_call() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.people(&["cal", "dee"]);
        let t = Tmux::new("ring");
        t.run("dee", 100, &e1.args("dee", &["listen"]));
        t.wait("dee", "waiting for calls");
        t.run("cal", 100, &e1.args("cal", &["call", "dee@example.org"]));
        t.wait("cal", "ringing dee@example.org… (q: cancel)");
        t.wait("dee", "Answer cal <cal@example.org>? [y/N]");
        t.keys("cal", &["q"]);
        let s = t.wait("cal", "EXIT=");
        assert!(s.contains("Cancelled the call to dee@example.org"), "{s}");
        let s = t.wait("dee", "missed call from cal <cal@example.org>");
        // The question is gone: the last words on the screen are not it.
        let last = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().to_owned();
        assert!(!last.contains("[y/N]"), "{s}");
        // Answering now answers nothing.
        t.keys("dee", &["y"]);
        std::thread::sleep(Duration::from_millis(500));
        let s = t.screen("dee");
        assert!(!s.contains("no such call") && !s.contains("could not answer"), "{s}");
        // And the next call is asked about and can be declined.
        t.run("cal2", 100, &e1.args("cal", &["call", "dee@example.org"]));
        t.wait("dee", "[y/N]");
        t.keys("dee", &["n"]);
        let s = t.wait("cal2", "EXIT=");
        assert!(s.contains("dee@example.org declined the call") && s.contains("EXIT=1"), "{s}");
        t.keys("dee", &["q"]);
        t.wait("dee", "EXIT=0");
    })
    .await
    .unwrap();
}

/// The security code on a line: "code 123 456".
fn code_on(line: &str) -> Option<String> {
    let at = line.find("code ")? + 5;
    let code: String = line[at..].chars().take(7).collect();
    let b = code.as_bytes();
    (b.len() == 7 && b[3] == b' ' && b.iter().enumerate().all(|(i, c)| i == 3 || c.is_ascii_digit())).then_some(code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_line_fits_80_columns_and_keeps_the_code_whole() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.people(&["cal", "dee"]);
        let t = Tmux::new("status");
        let voice = e1.dir.path().join("voice.wav");
        write_voice(&voice, 6.0);
        let callee = {
            let e = e1.clone();
            std::thread::spawn(move || {
                let rec = e.dir.path().join("dee.wav");
                e.babel(
                    "dee",
                    &["--json", "listen", "--auto-answer", "--calls", "1", "--output", rec.to_str().unwrap()],
                    "",
                )
            })
        };
        std::thread::sleep(Duration::from_millis(800));
        let rec = e1.dir.path().join("cal.wav");
        t.run(
            "cal",
            80,
            &e1.args(
                "cal",
                &["call", "dee@example.org", "--input", voice.to_str().unwrap(), "--output", rec.to_str().unwrap()],
            ),
        );
        t.wait("cal", "connected to dee");
        // Let the line be redrawn a few times.
        std::thread::sleep(Duration::from_millis(3500));
        let s = t.screen("cal");
        let status: Vec<&str> = s.lines().filter(|l| l.contains("code") && l.contains("path")).collect();
        assert_eq!(status.len(), 1, "one status line, redrawn in place:\n{s}");
        assert!(status[0].trim_end().chars().count() < 80, "{s}");
        let code = code_on(status[0]).unwrap_or_else(|| panic!("a whole code on the line:\n{s}"));
        let s = t.wait("cal", "EXIT=");
        assert!(s.contains("EXIT=0"), "{s}");
        let out = callee.join().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["calls"][0]["sas"], code.as_str(), "the code both sides see: {v}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_asks_for_the_password_on_a_terminal() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.people(&["eve"]);
        let t = Tmux::new("delete");
        t.run("eve", 100, &e1.args("eve", &["delete-account"]));
        t.wait("eve", "This deletes eve@example.org everywhere, for good. Password:");
        t.keys("eve", &["not-the-password", "Enter"]);
        let s = t.wait("eve", "EXIT=");
        assert!(s.contains("wrong password: nothing was deleted") && s.contains("EXIT=1"), "{s}");
        t.run("eve2", 100, &e1.args("eve", &["delete-account"]));
        t.wait("eve2", "Password:");
        t.keys("eve2", &[PW.trim(), "Enter"]);
        let s = t.wait("eve2", "EXIT=");
        assert!(s.contains("Deleted the account eve@example.org") && s.contains("EXIT=0"), "{s}");
        let out = e1.babel("x", &["login", "eve@example.org"], PW);
        assert_eq!(out.status.code(), Some(1), "deleted");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_password_asks_without_echo_and_twice_for_the_new_one() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.people(&["pat"]);
        let t = Tmux::new("password");
        // The two new ones differ: nothing changes, exit 2.
        t.run("pat", 100, &e1.args("pat", &["account", "password"]));
        t.wait("pat", "Current password:");
        t.keys("pat", &[PW.trim(), "Enter"]);
        t.wait("pat", "New password:");
        t.keys("pat", &["first-new-one", "Enter"]);
        t.wait("pat", "New password again:");
        t.keys("pat", &["second-new-one", "Enter"]);
        let s = t.wait("pat", "EXIT=");
        assert!(s.contains("the two new passwords differ") && s.contains("EXIT=2"), "{s}");
        assert!(!s.contains(PW.trim()) && !s.contains("first-new-one"), "echoed: {s}");
        // The same one twice: changed.
        t.run("pat2", 100, &e1.args("pat", &["account", "password"]));
        t.wait("pat2", "Current password:");
        t.keys("pat2", &[PW.trim(), "Enter"]);
        t.wait("pat2", "New password:");
        t.keys("pat2", &["brand-new-one", "Enter"]);
        t.wait("pat2", "New password again:");
        t.keys("pat2", &["brand-new-one", "Enter"]);
        let s = t.wait("pat2", "EXIT=");
        assert!(s.contains("Password changed") && s.contains("EXIT=0"), "{s}");
        assert!(!s.contains("brand-new-one"), "echoed: {s}");
        let out = e1.babel("x", &["login", "pat@example.org"], "brand-new-one\n");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_typed_on_the_terminal_is_sent_at_ctrl_d() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.people(&["una", "vic"]);
        let t = Tmux::new("message");
        t.run("una", 100, &e1.args("una", &["message", "vic@example.org"]));
        t.wait("una", "Ctrl-D on a line of its own sends it");
        t.keys("una", &["first line", "Enter", "second line", "Enter", "C-d"]);
        let s = t.wait("una", "EXIT=");
        assert!(s.contains("Sent to vic <vic@example.org>") && s.contains("EXIT=0"), "{s}");
        let out = e1.babel("vic", &["--json", "messages", "una@example.org"], "");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["text"], "first line\nsecond line", "{v}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_invites_a_third_contact_into_the_call() {
    let (_server, e) = env().await;
    let e1 = e.clone();
    blocking(move || {
        e1.people(&["ann", "ben", "cyd"]);
        let t = Tmux::new("invite");
        let voice = e1.dir.path().join("voice.wav");
        write_voice(&voice, 8.0);
        let answering = |who: &'static str, secs: &'static str| {
            let e = e1.clone();
            std::thread::spawn(move || {
                let rec = e.dir.path().join(format!("{who}.wav"));
                let rec = rec.to_str().unwrap();
                let args = ["--json", "listen", "--auto-answer", "--calls", "1", "--duration", secs, "--output", rec];
                e.babel(who, &args, "")
            })
        };
        let ben = answering("ben", "10");
        let cyd = answering("cyd", "5");
        std::thread::sleep(Duration::from_millis(800));
        let rec = e1.dir.path().join("ann.wav");
        t.run(
            "ann",
            120,
            &e1.args(
                "ann",
                &["call", "ben@example.org", "--input", voice.to_str().unwrap(), "--output", rec.to_str().unwrap()],
            ),
        );
        t.wait("ann", "i: invite");
        t.keys("ann", &["i"]);
        t.wait("ann", "invite (email");
        t.keys("ann", &["cyd@example.org", "Enter"]);
        t.wait("ann", "ringing cyd@example.org into the call");
        t.wait("ann", "cyd joined the call");
        let out = cyd.join().unwrap();
        let v: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["calls"].as_array().map(Vec::len), Some(1), "{v}");
        assert!(v["calls"][0]["received"].as_u64().unwrap() > 50, "cyd heard the call: {v}");
        let out = ben.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        t.wait("ann", "EXIT=0");
    })
    .await
    .unwrap();
}
