//! What the message and account tests share: a server, `babel` run in a
//! home of its own with `--json` or for a person, users registered and
//! made contacts, a user kept online.
#![allow(dead_code)]

use std::io::Write;
use std::process::Output;
use std::sync::Arc;

use babel_client::Client;
use babel_server::RunningServer;
use serde_json::Value;

pub const PW: &str = "password123\n";

pub struct Env {
    pub server: String,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn babel(&self, home: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = super::babel(&self.server, &self.dir.path().join(home)).args(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.unwrap_or("").as_bytes());
        drop(input);
        child.wait_with_output().unwrap()
    }

    pub fn json(&self, home: &str, args: &[&str], stdin: Option<&str>) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.babel(home, &all, stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!("{args:?}: not JSON ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap_or(-1), v)
    }

    /// `babel ARGS` for a person: exit code, stdout, stderr.
    pub fn say(&self, home: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let out = self.babel(home, args, stdin);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn register(&self, who: &str, name: &str) {
        let (code, v) = self.json(who, &["register", &format!("{who}@example.org"), "--name", name], Some(PW));
        assert_eq!(code, 0, "{v}");
    }

    /// `a` and `b` registered (names capitalised) and contacts.
    pub fn contacts(&self, a: &str, b: &str) {
        self.register(a, &cap(a));
        self.register(b, &cap(b));
        assert_eq!(self.json(a, &["contacts", "add", &format!("{b}@example.org")], None).0, 0);
        assert_eq!(self.json(b, &["contacts", "accept", &format!("{a}@example.org")], None).0, 0);
    }
}

pub fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

pub async fn env() -> (RunningServer, Arc<Env>) {
    let dir = tempfile::tempdir().unwrap();
    let server = super::server(dir.path()).await;
    let e = Env { server: server.addr().to_string(), dir };
    (server, Arc::new(e))
}

/// `read` as the server says it (`"true"`/`"false"`), or a JSON bool.
pub fn is_read(m: &Value) -> bool {
    m["read"] == Value::Bool(true) || m["read"] == "true"
}

/// Ctrl-C, as a terminal would send it.
pub fn interrupt(pid: u32) {
    let ok = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

/// A user online (an event connection held open) for as long as it lives.
pub async fn online(e: &Env, who: &str) -> (Client, babel_client::EventStream) {
    let mut c = Client::connect(e.server.clone()).await.unwrap();
    c.login(&format!("{who}@example.org"), PW.trim()).await.unwrap();
    let events = c.events().await.unwrap();
    (c, events)
}
