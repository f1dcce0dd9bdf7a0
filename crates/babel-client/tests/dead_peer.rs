//! A peer that vanishes without closing TCP (its network goes away) is
//! noticed and goes offline. Uses a network namespace of the test's own,
//! joined to this one by a veth pair, and cuts the link.
//!
//! On one node and on three (issue #18 item 3): there the watcher is on one
//! node and the peer that vanishes on another, whose going offline reaches
//! the watcher through NATS. The nodes listen on every address, so the peer
//! in the namespace reaches its node through the veth pair, while the nodes
//! themselves reach PostgreSQL and NATS on 127.0.0.1 of this namespace.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use babel_proto::{Presence, ServerEvent};
use common::{Topology, befriend, user};

struct Netns {
    name: String,
    host_if: String,
    peer_if: String,
    host_ip: String,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// A namespace, interfaces and a /30 no other test of this process
    /// (nor, most likely, of another) uses.
    fn create() -> Result<Netns, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 60;
        let id = std::process::id();
        let name = format!("babeldp{id}_{n}");
        let (host_if, peer_if) = (format!("bh{id}_{n}"), format!("bp{id}_{n}"));
        let net = format!("10.213.{}", id % 250);
        let host_ip = format!("{net}.{}", 4 * n + 1);
        let ns =
            Netns { name: name.clone(), host_if: host_if.clone(), peer_if: peer_if.clone(), host_ip: host_ip.clone() };
        sh(&["ip", "netns", "add", &name])?;
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if])?;
        sh(&["ip", "link", "set", &peer_if, "netns", &name])?;
        sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        let peer_ip = format!("{net}.{}/30", 4 * n + 2);
        sh(&["ip", "netns", "exec", &name, "ip", "addr", "add", &peer_ip, "dev", &peer_if])?;
        sh(&["ip", "netns", "exec", &name, "ip", "link", "set", &peer_if, "up"])?;
        Ok(ns)
    }

    fn cut(&self) {
        sh(&["ip", "netns", "exec", &self.name, "ip", "link", "set", &self.peer_if, "down"]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair, at once, even while sockets of
        // the killed client still hold the namespace.
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A minimal Babel client in Python, run inside the namespace: logs in,
/// opens /events, says "ready", then waits forever.
const CLIENT: &str = r#"
import json, socket, struct, sys, time
host, port, mail, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def frame(header, route, data):
    h = json.dumps(header).encode() if header else b""
    d = json.dumps(data).encode() if data else b""
    r = route.encode()
    return struct.pack(">iii", len(h), len(r), len(d)) + h + r + d
def answer(s):
    pre = b""
    while len(pre) < 8: pre += s.recv(8 - len(pre))
    status, n = struct.unpack(">ii", pre)
    body = b""
    while len(body) < n: body += s.recv(n - len(body))
    return status, (json.loads(body) if body else None)
s = socket.create_connection((host, port))
s.sendall(frame(None, "/login", {"user_mail": mail, "pass": pw}))
st, me = answer(s)
assert st == 200, st
s.sendall(frame({"id": me["id"], "token": me["token"]}, "/events", None))
assert answer(s)[0] == 200
print("ready", flush=True)
time.sleep(600)
"#;

async fn a_peer_that_vanishes_without_closing_tcp_goes_offline(t: Topology) {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: cannot make a network namespace here ({e})");
            return;
        }
        Err(e) => panic!("CI must be able to make a network namespace: {e}"),
    };
    let s = common::start_in_with(t, |c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.ping_interval_secs = 1;
        c.dead_peer_timeout_secs = 5;
    })
    .await;
    let mut a = user(&s, "watcher@example.org").await;
    let mut b = user(&s, "roamer@example.org").await;
    befriend(&mut a, &mut b).await;
    // The roamer comes back (from the namespace) to its own node: on three
    // nodes, not the watcher's.
    let port = s.node(b.node).addr().port();
    assert!(t == Topology::OneNode || a.node != b.node, "the watcher and the roamer share node {}", a.node);
    let bid = b.id();
    drop(b);
    let status = |want: Presence| {
        move |e: &ServerEvent| matches!(e, ServerEvent::Status(id, st) if *id == bid && *st == want).then_some(())
    };
    a.expect("offline", status(Presence::Offline)).await;

    let mut child: Child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", CLIENT, &ns.host_ip, &port.to_string()])
        .args(["roamer@example.org", common::PASSWORD])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = [0u8; 6];
        out.read_exact(&mut buf).map(|_| buf)
    });
    assert_eq!(&tokio::time::timeout(common::TIMEOUT, ready).await.unwrap().unwrap().unwrap(), b"ready\n");
    a.expect("online from the namespace", status(Presence::Online)).await;

    // The peer's network disappears: no FIN, no RST, just silence.
    ns.cut();
    let started = std::time::Instant::now();
    a.expect("offline after the link is cut", status(Presence::Offline)).await;
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(took < Duration::from_secs(20), "noticed after {took:?}");
    eprintln!("vanished peer noticed after {took:?} (dead_peer_timeout_secs = 5)");
}

in_both_topologies! {
    a_peer_that_vanishes_without_closing_tcp_goes_offline(flavor = "multi_thread", worker_threads = 2),
}
