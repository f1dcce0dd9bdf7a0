//! The real `babel-server` binary with TLS: it generates a self-signed
//! certificate next to the database on first start, prints its fingerprint,
//! and keeps the same one across restarts.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use babel_server::tls::{CertSource, Tls};

/// Starts the binary, returns the lines it printed before serving.
fn start(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_babel-server"))
        .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--log", "warn", "--db"])
        .arg(dir.join("babel.db"))
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("listening on tls://")) {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "server exited early: {lines:?}");
        lines.push(line.trim().to_owned());
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

fn printed_fingerprint(lines: &[String]) -> String {
    lines.iter().find_map(|l| l.strip_prefix("tls certificate ")).unwrap().to_owned()
}

#[test]
fn prints_the_fingerprint_of_a_certificate_kept_next_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &[]);
    assert!(first[0].starts_with("listening on 127.0.0.1:"), "{first:?}");
    let printed = printed_fingerprint(&first);
    let on_disk = Tls::load(&CertSource::SelfSigned { dir: dir.path().into() }).unwrap();
    assert!(!on_disk.generated);
    assert_eq!(printed, on_disk.fingerprint.to_string());
    // Restarted: the same certificate, so pinned clients keep working.
    let second = start(dir.path(), &["--no-plain"]);
    assert_eq!(printed_fingerprint(&second), printed);
    assert!(!second.iter().any(|l| l.starts_with("listening on 127.")), "plain is off: {second:?}");
}

#[test]
fn refuses_to_start_without_a_usable_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_babel-server"))
        .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--log", "warn", "--db"])
        .arg(dir.path().join("babel.db"))
        .arg("--tls-cert")
        .arg(dir.path().join("missing.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.pem"), "{err}");
}
