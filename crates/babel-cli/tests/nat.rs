//! Calls through real NATs (Linux masquerade in network namespaces made by
//! this test). A person on a public address and one behind a NAT talk
//! directly: the NAT opens when the one behind it sends first, and the
//! public side answers to wherever the packets come from. Two people each
//! behind a Linux NAT usually cannot be punched through (each NAT's
//! connection tracking remembers the other's early packets and moves the
//! port), and the call goes through the server's relay instead.
//!
//! ```text
//!  lan a 10.31.1.2 ── nat a ──10.21.0.2 ┐            ┌ 10.22.0.2── nat b ── lan b 10.32.1.2
//!                                        └── inet ───┘
//!                                     10.21.0.1 / 10.22.0.1: the server
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    sh(&all)
}

struct Topology {
    id: u32,
    namespaces: Vec<String>,
}

impl Topology {
    fn ns(&self, role: &str) -> String {
        format!("babel-{role}-{}", self.id)
    }

    fn create() -> Result<Topology, String> {
        let id = std::process::id() % 100_000;
        let mut t = Topology { id, namespaces: Vec::new() };
        for role in ["inet", "nata", "lana", "natb", "lanb"] {
            let ns = t.ns(role);
            sh(&["ip", "netns", "add", &ns])?;
            t.namespaces.push(ns.clone());
            in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        let inet = t.ns("inet");
        in_ns(&inet, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for (x, n) in [("a", 1), ("b", 2)] {
            let (nat, lan) = (t.ns(&format!("nat{x}")), t.ns(&format!("lan{x}")));
            let (iw, nw, nl, ll) =
                (format!("iw{x}{id}"), format!("nw{x}{id}"), format!("nl{x}{id}"), format!("ll{x}{id}"));
            // The NAT's public side, towards the "internet".
            sh(&["ip", "link", "add", &iw, "netns", &inet, "type", "veth", "peer", "name", &nw, "netns", &nat])?;
            in_ns(&inet, &["ip", "addr", "add", &format!("10.2{n}.0.1/24"), "dev", &iw])?;
            in_ns(&inet, &["ip", "link", "set", &iw, "up"])?;
            in_ns(&nat, &["ip", "addr", "add", &format!("10.2{n}.0.2/24"), "dev", &nw])?;
            in_ns(&nat, &["ip", "link", "set", &nw, "up"])?;
            in_ns(&nat, &["ip", "route", "add", "default", "via", &format!("10.2{n}.0.1")])?;
            // The private side.
            sh(&["ip", "link", "add", &nl, "netns", &nat, "type", "veth", "peer", "name", &ll, "netns", &lan])?;
            in_ns(&nat, &["ip", "addr", "add", &format!("10.3{n}.1.1/24"), "dev", &nl])?;
            in_ns(&nat, &["ip", "link", "set", &nl, "up"])?;
            in_ns(&lan, &["ip", "addr", "add", &format!("10.3{n}.1.2/24"), "dev", &ll])?;
            in_ns(&lan, &["ip", "link", "set", &ll, "up"])?;
            in_ns(&lan, &["ip", "route", "add", "default", "via", &format!("10.3{n}.1.1")])?;
            in_ns(&nat, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            in_ns(&nat, &["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", &nw, "-j", "MASQUERADE"])?;
        }
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it.
        for ns in self.namespaces.iter().rev() {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// Runs a server inside `ns` on a thread of its own; answers its port and a
/// handle that stops it.
fn server_in(ns: &str, dir: &std::path::Path) -> (u16, mpsc::Sender<()>) {
    let (port_tx, port_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let ns_file = format!("/var/run/netns/{ns}");
    let db = dir.join("babel.db");
    std::thread::spawn(move || {
        let f = File::open(ns_file).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // A current-thread runtime: every socket is made on this thread, so
        // in this namespace.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let config = babel_server::Config {
                listen: "0.0.0.0:0".parse().unwrap(),
                db,
                password: babel_server::auth::PasswordCost { memory_kib: 256, iterations: 1 },
                ..babel_server::Config::default()
            };
            let server = babel_server::RunningServer::start(&config).await.unwrap();
            port_tx.send(server.addr().port()).unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            server.shutdown().await;
        });
    });
    (port_rx.recv().unwrap(), stop_tx)
}

fn babel(ns: &str, server: &str, home: &std::path::Path, args: &[&str], stdin: &str) -> (i32, Value) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_babel"), "--json", "--server", server, "--home"])
        .arg(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {text} / {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

fn write_tone(path: &std::path::Path, secs: usize) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..48_000 * secs {
        let t = i as f32 / 48_000.0;
        w.write_sample((8000.0 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// `caller` (in `ns_a`, via `sa`) calls `callee` (in `ns_b`, via `sb`), who
/// answers with `listen`; answers both sides' JSON.
fn call_through(
    (ns_a, sa, ha): (&str, &str, &std::path::Path),
    (ns_b, sb, hb): (&str, &str, &std::path::Path),
    callee: &str,
    wav: &std::path::Path,
) -> (Value, Value) {
    let listener = {
        let (ns_b, sb, hb) = (ns_b.to_owned(), sb.to_owned(), hb.to_owned());
        std::thread::spawn(move || {
            babel(&ns_b, &sb, &hb, &["listen", "--auto-answer", "--calls", "1", "--output", "/dev/null"], "")
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, call) =
        babel(ns_a, sa, ha, &["call", callee, "--input", wav.to_str().unwrap(), "--output", "/dev/null"], "");
    assert_eq!(code, 0, "{call}");
    let (code, listened) = listener.join().unwrap();
    assert_eq!(code, 0, "{listened}");
    eprintln!("caller: {call}\ncallee: {listened}");
    assert!(listened["calls"][0]["received"].as_u64().unwrap() > 150, "voice arrived: {listened}");
    assert_eq!(call["sas"], listened["calls"][0]["sas"]);
    (call, listened["calls"][0].clone())
}

#[test]
fn calls_through_real_nats() {
    let topo = match Topology::create() {
        Ok(t) => t,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: cannot build the NAT topology here ({e})");
            return;
        }
        Err(e) => panic!("CI must be able to build the NAT topology: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let (port, stop) = server_in(&topo.ns("inet"), dir.path());
    let (sa, sb) = (format!("10.21.0.1:{port}"), format!("10.22.0.1:{port}"));
    let (inet, lana, lanb) = (topo.ns("inet"), topo.ns("lana"), topo.ns("lanb"));
    let (hp, ha, hb) = (dir.path().join("pub"), dir.path().join("a"), dir.path().join("b"));
    assert_eq!(babel(&inet, &sa, &hp, &["register", "pat@example.org"], "password123\n").0, 0);
    assert_eq!(babel(&lana, &sa, &ha, &["register", "ann@example.org"], "password123\n").0, 0);
    assert_eq!(babel(&lanb, &sb, &hb, &["register", "ben@example.org"], "password123\n").0, 0);
    for (ns, s, h, other) in [(&inet, &sa, &hp, "ben@example.org"), (&lana, &sa, &ha, "ben@example.org")] {
        assert_eq!(babel(ns, s, h, &["contacts", "add", other], "").0, 0);
    }
    assert_eq!(babel(&lanb, &sb, &hb, &["contacts", "accept", "pat@example.org"], "").0, 0);
    assert_eq!(babel(&lanb, &sb, &hb, &["contacts", "accept", "ann@example.org"], "").0, 0);
    let wav = dir.path().join("tone.wav");
    write_tone(&wav, 5);

    // A public host and one behind a NAT: direct.
    let (call, answered) = call_through((&inet, &sa, &hp), (&lanb, &sb, &hb), "ben@example.org", &wav);
    assert_eq!(call["path"], "direct", "{call}");
    assert_eq!(answered["path"], "direct", "{answered}");

    // Both behind NATs: the call works all the same.
    let (call, answered) = call_through((&lana, &sa, &ha), (&lanb, &sb, &hb), "ben@example.org", &wav);
    assert!(call["path"] == "direct" || call["path"] == "relay", "{call}");
    assert!(answered["path"] == "direct" || answered["path"] == "relay", "{answered}");
    let _ = stop.send(());
}
