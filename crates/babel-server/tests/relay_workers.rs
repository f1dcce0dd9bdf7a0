//! The relay with several workers (`relay_workers`, issue #18 item 5): real
//! `SO_REUSEPORT` sockets on 127.0.0.1 and real threads. Which worker a
//! client socket's datagrams reach is the kernel's choice (a hash of the
//! 4-tuple); each test finds it by sending a datagram and watching the
//! workers' counters, then puts the legs it needs on different workers.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use babel_proto::relay as wire;
use babel_proto::{CallId, UserId};
use babel_server::relay::{AddressLearned, CHALLENGE_EVERY_MS, Relay};
use babel_server::relay_io::{GATHER_US, WorkerStats, bind_sockets, spawn_workers};
use babel_server::store::SessionId;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

/// A relay with `workers` worker threads, stopped when dropped.
struct Rig {
    relay: Arc<Relay>,
    addr: SocketAddr,
    stats: Vec<Arc<WorkerStats>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    learned: tokio::sync::mpsc::UnboundedReceiver<AddressLearned>,
    nonce: u64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Rig {
    fn start(workers: usize) -> Rig {
        let sockets = bind_sockets("127.0.0.1:0".parse().unwrap(), workers, 1 << 20).unwrap();
        assert_eq!(sockets.len(), workers);
        let addr = sockets[0].local_addr().unwrap();
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), addr, "every worker's socket is on the one relay address");
        }
        let relay = Relay::with_challenge_every(addr.port(), CHALLENGE_EVERY_MS);
        let (tx, learned) = tokio::sync::mpsc::unbounded_channel();
        relay.set_reports(tx);
        let stop = Arc::new(AtomicBool::new(false));
        let (stats, threads) = spawn_workers(&relay, sockets, Duration::from_micros(GATHER_US), &stop)
            .into_iter()
            .map(|(s, t)| (s, t.unwrap()))
            .unzip();
        Rig { relay, addr, stats, stop, threads, learned, nonce: 0 }
    }

    fn received(&self) -> Vec<u64> {
        self.stats.iter().map(|s| s.received.load(Ordering::Relaxed)).collect()
    }

    /// Which worker receives what `sock` sends (a junk datagram, dropped).
    fn worker_of(&self, sock: &UdpSocket) -> usize {
        let before = self.received();
        sock.send_to(b"which worker?", self.addr).unwrap();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let now = self.received();
            if let Some(w) = (0..now.len()).find(|&w| now[w] > before[w]) {
                return w;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no worker received the probe");
    }

    /// A client socket whose datagrams reach worker `w`.
    fn socket_on(&self, w: usize) -> UdpSocket {
        for _ in 0..200 {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            if self.worker_of(&s) == w {
                return s;
            }
        }
        panic!("no socket of 200 reached worker {w}");
    }

    fn grant(&self, user: i64) -> (u32, [u8; 16]) {
        self.relay.grant(CallId(1), UserId(user), SessionId(user)).unwrap()
    }

    /// BIND, then CONFIRM when challenged; whether the relay says bound.
    fn bind(&mut self, sock: &UdpSocket, (h, k): (u32, [u8; 16])) -> bool {
        self.nonce += 2;
        sock.send_to(&wire::encode_bind(h, self.nonce - 1, &k), self.addr).unwrap();
        let Some(ack) = recv(sock, WAIT).and_then(|d| wire::verify_bind_ack(&d, &k)) else { return false };
        if ack.state == wire::BOUND {
            return true;
        }
        sock.send_to(&wire::encode_confirm(h, self.nonce, &ack.cookie, &k), self.addr).unwrap();
        recv(sock, WAIT).and_then(|d| wire::verify_bind_ack(&d, &k)).is_some_and(|a| a.state == wire::BOUND)
    }
}

fn recv(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn data((h, k): (u32, [u8; 16]), counter: u64, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    wire::encode_data(h, counter, &k, payload, &mut d);
    d
}

/// The two legs of a call sit on different workers: each worker forwards
/// what it receives to a leg another worker serves, both ways, from the one
/// relay address.
#[test]
fn legs_on_different_workers_forward_both_ways() {
    let mut g = Rig::start(2);
    let (la, lb) = (g.grant(1), g.grant(2));
    let (ua, ub) = (g.socket_on(0), g.socket_on(1));
    assert!(g.bind(&ua, la));
    assert!(g.bind(&ub, lb));
    let before = g.received();
    for i in 1..=20u64 {
        ua.send_to(&data(la, i, b"from a"), g.addr).unwrap();
        let mut buf = [0u8; 2048];
        ub.set_read_timeout(Some(WAIT)).unwrap();
        let (n, from) = ub.recv_from(&mut buf).unwrap();
        assert_eq!(from, g.addr, "forwarded from the relay's address");
        assert_eq!(wire::decode_relayed(&buf[..n]), Some((UserId(1), &b"from a"[..])));
        ub.send_to(&data(lb, i, b"from b"), g.addr).unwrap();
        let (n, from) = ua.recv_from(&mut buf).unwrap();
        assert_eq!(from, g.addr);
        assert_eq!(wire::decode_relayed(&buf[..n]), Some((UserId(2), &b"from b"[..])));
    }
    let after = g.received();
    assert_eq!((after[0] - before[0], after[1] - before[1]), (20, 20), "a's DATA on worker 0, b's on worker 1");
    // Counted after the batch went out: wait for the count, then for a
    // while longer that nothing more is counted.
    let deadline = Instant::now() + WAIT;
    while g.relay.stats.forwarded.load(Ordering::Relaxed) < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(g.relay.stats.forwarded.load(Ordering::Relaxed), 40);
}

/// A participant's address changes (NAT rebinding) to one that the kernel
/// hashes to another worker: the CONFIRM is handled there, the move is
/// reported, the other leg's voice follows it, and the old address neither
/// sends nor receives.
#[test]
fn a_leg_rebinds_to_an_address_on_another_worker() {
    let mut g = Rig::start(2);
    let (la, lb) = (g.grant(1), g.grant(2));
    let (old, ub) = (g.socket_on(0), g.socket_on(0));
    let new = g.socket_on(1);
    assert!(g.bind(&old, la));
    assert!(g.bind(&ub, lb));
    assert_eq!(g.learned.try_recv().unwrap().addr, old.local_addr().unwrap());
    assert_eq!(g.learned.try_recv().unwrap().addr, ub.local_addr().unwrap());
    assert!(g.bind(&new, la), "the move is confirmed by worker 1");
    let moved = g.learned.try_recv().unwrap();
    assert_eq!((moved.user, moved.addr), (UserId(1), new.local_addr().unwrap()));
    assert_eq!(g.relay.address_of(CallId(1), SessionId(1)), Some(new.local_addr().unwrap()));

    ub.send_to(&data(lb, 1, b"to the new place"), g.addr).unwrap();
    assert_eq!(wire::decode_relayed(&recv(&new, WAIT).unwrap()), Some((UserId(2), &b"to the new place"[..])));
    assert_eq!(recv(&old, QUIET), None, "nothing goes to the old address");
    new.send_to(&data(la, 1, b"from the new place"), g.addr).unwrap();
    assert_eq!(wire::decode_relayed(&recv(&ub, WAIT).unwrap()), Some((UserId(1), &b"from the new place"[..])));
    old.send_to(&data(la, 2, b"from the old place"), g.addr).unwrap();
    assert_eq!(recv(&ub, QUIET), None, "the old address is no longer the leg's");
}

/// Issue #14's finding 3 with workers: BINDs with a victim's address as
/// source (on loopback: a socket standing for the victim, which never
/// answers), the victim on another worker than the call's other leg, while
/// that leg's voice flows. The victim gets at most one challenge, no bigger
/// than the BIND, and none of the voice; the leg stays unbound.
#[test]
fn a_spoofed_bind_aims_nothing_at_the_victim_with_workers() {
    let mut g = Rig::start(2);
    let (attacker, other) = (g.grant(1), g.grant(2));
    let (victim, ub) = (g.socket_on(0), g.socket_on(1));
    assert!(g.bind(&ub, other));
    let bind_len = wire::encode_bind(attacker.0, 1, &attacker.1).len();
    for i in 1..=100u64 {
        victim.send_to(&wire::encode_bind(attacker.0, 1000 + i, &attacker.1), g.addr).unwrap();
        // Without the cookie (it went to the victim) the attacker guesses.
        victim.send_to(&wire::encode_confirm(attacker.0, 2000 + i, &i.to_be_bytes(), &attacker.1), g.addr).unwrap();
        ub.send_to(&data(other, i, b"the call's voice"), g.addr).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut got = Vec::new();
    while let Some(d) = recv(&victim, QUIET) {
        got.push(d);
    }
    assert!(got.len() <= 1, "the victim got {} datagrams", got.len());
    for d in &got {
        assert!(d.len() <= bind_len, "a {}-byte answer to a {bind_len}-byte BIND", d.len());
        assert_eq!(wire::verify_bind_ack(d, &attacker.1).map(|a| a.state), Some(wire::CHALLENGE));
    }
    assert_eq!(g.relay.address_of(CallId(1), SessionId(1)), None);
    assert_eq!(recv(&ub, QUIET), None, "and the other leg hears nothing of it");
}

/// SO_REUSEPORT must not let a second relay share a port that is in use:
/// binding the group is refused like a plain bind.
#[test]
fn a_taken_relay_port_is_refused_with_workers() {
    let g = Rig::start(2);
    let err = bind_sockets(g.addr, 2, 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = bind_sockets(plain.local_addr().unwrap(), 2, 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}
