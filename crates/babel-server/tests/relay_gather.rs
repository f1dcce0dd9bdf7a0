//! The relay worker's gathering pause (`relay_gather_us`, issue #18 item 5):
//! a busy worker pauses so that batches gather, an idle one never does.
//! Real sockets on 127.0.0.1, a real worker thread.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use babel_proto::relay as wire;
use babel_proto::{CallId, UserId};
use babel_server::relay::Relay;
use babel_server::relay_io::{GATHER_US, WorkerStats, bind_sockets, spawn_workers};
use babel_server::store::SessionId;

const WAIT: Duration = Duration::from_secs(5);

/// A relay with one worker whose longest pause is `gather`, and a call of
/// two bound legs, each on a socket of its own; stopped when dropped.
struct Rig {
    relay: Arc<Relay>,
    addr: SocketAddr,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    legs: [((u32, [u8; 16]), UdpSocket); 2],
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn recv(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// A client socket with a receive buffer large enough for a burst.
fn client() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).unwrap();
    s.set_recv_buffer_size(4 << 20).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s.into()
}

fn data((h, k): (u32, [u8; 16]), counter: u64, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    wire::encode_data(h, counter, &k, payload, &mut d);
    d
}

impl Rig {
    fn start(gather: Duration) -> Rig {
        let sockets = bind_sockets("127.0.0.1:0".parse().unwrap(), 1, 4 << 20).unwrap();
        let addr = sockets[0].local_addr().unwrap();
        // No limit per address: the two legs bind back to back.
        let relay = Relay::with_challenge_every(addr.port(), 0);
        let stop = Arc::new(AtomicBool::new(false));
        let (stats, thread) = spawn_workers(&relay, sockets, gather, &stop).pop().unwrap();
        let legs = [1, 2].map(|u| (relay.grant(CallId(1), UserId(u), SessionId(u)).unwrap(), client()));
        let g = Rig { relay, addr, stats, stop, thread: Some(thread.unwrap()), legs };
        for (i, ((h, k), sock)) in g.legs.iter().enumerate() {
            let n = 10 * (i as u64 + 1);
            sock.send_to(&wire::encode_bind(*h, n, k), addr).unwrap();
            let ack = wire::verify_bind_ack(&recv(sock, WAIT).unwrap(), k).unwrap();
            sock.send_to(&wire::encode_confirm(*h, n + 1, &ack.cookie, k), addr).unwrap();
            let ack = wire::verify_bind_ack(&recv(sock, WAIT).unwrap(), k).unwrap();
            assert_eq!(ack.state, wire::BOUND);
        }
        g
    }
}

/// A lone datagram, and the answer it gets, are forwarded as they come,
/// not after a pause: the most is 2 s here, and each of ten exchanges must
/// be done well within it (a worker that paused after every batch, as one
/// that looked only at how long its last wait was, takes 2 s each).
#[test]
fn an_idle_worker_forwards_each_datagram_as_it_comes() {
    let g = Rig::start(Duration::from_secs(2));
    let [(a, ua), (b, ub)] = &g.legs;
    let started = Instant::now();
    for i in 1..=10u64 {
        ua.send_to(&data(*a, i, b"ping"), g.addr).unwrap();
        let got = recv(ub, Duration::from_secs(1)).expect("the ping within 1 s");
        assert_eq!(wire::decode_relayed(&got), Some((UserId(1), &b"ping"[..])));
        ub.send_to(&data(*b, i, b"pong"), g.addr).unwrap();
        let got = recv(ua, Duration::from_secs(1)).expect("the pong within 1 s");
        assert_eq!(wire::decode_relayed(&got), Some((UserId(2), &b"pong"[..])));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(g.stats.pauses.load(Ordering::Relaxed), 0, "an idle worker never pauses");
}

/// Sends `count` DATA from leg 0 at about `per_ms` datagrams a millisecond
/// (in small bursts) and answers the counters leg 1 received.
fn stream(g: &Rig, count: u64, per_ms: u64) -> HashSet<u64> {
    let [(a, ua), (_, ub)] = &g.legs;
    let reader = ub.try_clone().unwrap();
    let receiving = std::thread::spawn(move || {
        let mut got = HashSet::new();
        while got.len() < count as usize {
            let Some(d) = recv(&reader, WAIT) else { break };
            if let Some((UserId(1), p)) = wire::decode_relayed(&d) {
                got.insert(u64::from_be_bytes(p.try_into().unwrap()));
            }
        }
        got
    });
    let started = Instant::now();
    for i in 1..=count {
        ua.send_to(&data(*a, i, &i.to_be_bytes()), g.addr).unwrap();
        // Keep to the rate: sleep whenever ahead of it.
        let due = Duration::from_micros(i * 1000 / per_ms);
        if let Some(ahead) = due.checked_sub(started.elapsed()).filter(|d| *d > Duration::from_micros(200)) {
            std::thread::sleep(ahead);
        }
    }
    receiving.join().unwrap()
}

/// A steady stream of about 20 000 datagrams/s: the worker pauses to let
/// batches gather, takes several datagrams per wake-up, and forwards every
/// one.
#[test]
fn a_busy_worker_lets_batches_gather_and_forwards_everything() {
    let g = Rig::start(Duration::from_micros(GATHER_US));
    let batches = g.stats.batches.load(Ordering::Relaxed);
    let received = g.stats.received.load(Ordering::Relaxed);
    let got = stream(&g, 4000, 20);
    assert_eq!(got.len(), 4000, "every datagram forwarded once");
    assert!(g.stats.pauses.load(Ordering::Relaxed) > 0, "the busy worker paused");
    let batches = g.stats.batches.load(Ordering::Relaxed) - batches;
    let received = g.stats.received.load(Ordering::Relaxed) - received;
    assert_eq!(received, 4000);
    assert!(received >= 3 * batches, "{received} datagrams in {batches} receives");
    // Counted once a batch went out: wait for the count.
    let deadline = Instant::now() + WAIT;
    while g.relay.stats.forwarded.load(Ordering::Relaxed) < 4000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(g.relay.stats.forwarded.load(Ordering::Relaxed), 4000);
}

/// With `relay_gather_us = 0` the worker never pauses, however busy.
#[test]
fn a_zero_gather_never_pauses() {
    let g = Rig::start(Duration::ZERO);
    let got = stream(&g, 2000, 20);
    assert_eq!(got.len(), 2000);
    assert_eq!(g.stats.pauses.load(Ordering::Relaxed), 0);
}
