//! Whole calls between call cores in simulated time, over `babel-netem`
//! links and the server's real (sans-IO) UDP relay: every path, switching,
//! NAT rebinding, a vanished peer, strangers injecting, a bandwidth cap,
//! group calls. No socket, no clock, no thread: each test runs seconds of
//! call in a fraction of that, deterministically, and in parallel with the
//! others. The codec, the jitter buffers, the keys and the relay are the
//! real ones; only the wire and the time are simulated.
//!
//! The harness ([`World`]) is to these tests what quinn's `tests/util.rs`
//! is to its own: a set of nodes (one call core each, with its input and
//! what it played), a relay, the server's call channel, and a directed
//! [`Link`] between every two of them, stepped a millisecond at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use babel_media::call::{CallCore, CallStats, CoreSetup, EndCause, MediaConfig, Path, PeerSetup, RelayInfo, Transmit};
use babel_media::keys::{CallKeys, SenderKey};
use babel_media::packet::{self, VoiceFrame};
use babel_netem::{Impairment, Link, Rng};
use babel_proto::{CallId, UserId};
use babel_server::relay::{Handled, Relay};
use babel_server::store::SessionId;
use common::{assert_heard, codec_reference, per_second, similarity, voice};

const MS: Duration = Duration::from_millis(1);
const FRAME: Duration = Duration::from_millis(20);
/// Where the relay listens (nothing is bound: the addresses only name things).
const RELAY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 3478);
/// Bytes of IP and UDP headers, counted by a bandwidth cap.
const UDP_HEADERS: usize = 28;

/// One end of a simulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ep {
    Node(usize),
    Relay,
    /// The server's call channel.
    Server,
}

/// One participant: a call core, what it says and what it heard.
struct Node {
    core: CallCore,
    /// Its socket's address.
    local: SocketAddr,
    /// Where its datagrams appear to come from (a NAT's outside), if not `local`.
    outside: Option<SocketAddr>,
    input: Vec<f32>,
    pos: usize,
    heard: Vec<f32>,
    /// When its frame clock ticks, within each 20 ms.
    phase: Duration,
    channel: bool,
    /// Gone without a word (its machine disappeared).
    vanished: bool,
    end: Option<EndCause>,
}

impl Node {
    fn public(&self) -> SocketAddr {
        self.outside.unwrap_or(self.local)
    }
}

/// A datagram in flight: who sent it (as the receiver sees it), and the bytes.
struct Flight {
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// Nodes, a relay, the call channel and the links between them.
struct World {
    t0: Instant,
    now: Duration,
    seed: u64,
    nodes: Vec<Node>,
    relay: Arc<Relay>,
    /// Directed links; a missing one (`None`) drops everything.
    links: BTreeMap<(Ep, Ep), Option<Link>>,
    /// Datagrams in flight, by link and push order (the link carries a
    /// ticket; this holds the rest).
    flights: BTreeMap<(Ep, Ep), BTreeMap<u64, Flight>>,
    tickets: u64,
    default_link: Impairment,
    /// Each node's public key, as the others know it.
    publics: Vec<String>,
    /// CPU time spent simulating.
    cpu: Duration,
}

/// How a world is made.
struct Spec {
    /// Each node's input.
    inputs: Vec<Vec<f32>>,
    /// Relay-only nodes.
    relay_only: Vec<usize>,
    /// Nodes with a call channel.
    channel: Vec<usize>,
    cfg: MediaConfig,
    seed: u64,
}

impl Spec {
    fn new(inputs: Vec<Vec<f32>>) -> Spec {
        let n = inputs.len();
        Spec { inputs, relay_only: Vec::new(), channel: (0..n).collect(), cfg: test_config(), seed: 1 }
    }
}

fn test_config() -> MediaConfig {
    MediaConfig { noise_suppression: false, peer_timeout: Duration::from_secs(5), ..MediaConfig::default() }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + i as u16))
}

impl World {
    /// Everyone in one call, each announcing its own address, every link
    /// clean with 10 ms of delay.
    fn new(spec: Spec) -> World {
        let t0 = Instant::now();
        let relay = Relay::new(RELAY.port());
        let n = spec.inputs.len();
        let keys: Vec<CallKeys> = (0..n).map(|_| CallKeys::generate().unwrap()).collect();
        let publics: Vec<String> = keys.iter().map(CallKeys::public_b64).collect();
        let mut nodes = Vec::new();
        for (i, (input, keys)) in spec.inputs.into_iter().zip(keys).enumerate() {
            let user = UserId(i as i64 + 1);
            let (handle, key) = relay.grant(CallId(1), user, SessionId(i as i64 + 1)).unwrap();
            let relay_only = spec.relay_only.contains(&i);
            let peers = (0..n)
                .filter(|&j| j != i)
                .map(|j| PeerSetup {
                    user: UserId(j as i64 + 1),
                    key: publics[j].clone(),
                    candidates: if spec.relay_only.contains(&j) { Vec::new() } else { vec![addr(j)] },
                })
                .collect();
            let setup = CoreSetup {
                keys,
                peers,
                relay: Some(RelayInfo { addr: RELAY, handle, key }),
                channel: spec.channel.contains(&i),
                code: "123 456".into(),
                relay_only,
                hears_the_room: false,
                nonce_base: 1,
            };
            let phase = Duration::from_millis((i as u64 * 7) % 20);
            nodes.push(Node {
                core: CallCore::new(setup, spec.cfg.clone(), t0).unwrap(),
                local: addr(i),
                outside: None,
                input,
                pos: 0,
                heard: Vec::new(),
                phase,
                channel: spec.channel.contains(&i),
                vanished: false,
                end: None,
            });
        }
        World {
            t0,
            now: Duration::ZERO,
            seed: spec.seed,
            nodes,
            relay,
            links: BTreeMap::new(),
            flights: BTreeMap::new(),
            tickets: 0,
            default_link: Impairment { delay: 10 * MS, ..Impairment::default() },
            publics,
            cpu: Duration::ZERO,
        }
    }

    /// Sets the link from `a` to `b` (`None`: it drops everything). What is
    /// in flight on the old one is lost.
    fn set_link(&mut self, a: Ep, b: Ep, imp: Option<Impairment>) {
        let stream = self.links.len() as u64 + 1000 * self.now.as_millis() as u64;
        let link = imp.map(|i| Link::new(i, Rng::with_stream(self.seed, stream)));
        self.links.insert((a, b), link);
        self.flights.remove(&(a, b));
    }

    /// Both directions.
    fn set_both(&mut self, a: Ep, b: Ep, imp: Option<Impairment>) {
        self.set_link(a, b, imp);
        self.set_link(b, a, imp);
    }

    /// No direct UDP between any two nodes.
    fn block_direct(&mut self, blocked: bool) {
        let imp = (!blocked).then_some(self.default_link);
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                if i != j {
                    self.set_link(Ep::Node(i), Ep::Node(j), imp);
                }
            }
        }
    }

    /// Nobody reaches the relay.
    fn block_relay(&mut self) {
        for i in 0..self.nodes.len() {
            self.set_both(Ep::Node(i), Ep::Relay, None);
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    /// Sends `bytes` from `src` (seen as `from`) to the address `to`.
    fn send_udp(&mut self, src: Ep, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let dst = if to == RELAY {
            Ep::Relay
        } else {
            // A node's outside address, or its own when it has none.
            match self.nodes.iter().position(|n| n.public() == to) {
                Some(j) => Ep::Node(j),
                None => return, // nobody there
            }
        };
        self.push(src, dst, from, bytes);
    }

    fn push(&mut self, src: Ep, dst: Ep, from: SocketAddr, bytes: Vec<u8>) {
        let default = self.default_link;
        let stream = self.links.len() as u64;
        let seed = self.seed;
        let link =
            self.links.entry((src, dst)).or_insert_with(|| Some(Link::new(default, Rng::with_stream(seed, stream))));
        let Some(link) = link else { return };
        self.tickets += 1;
        // The link sees the ticket padded to the datagram's size on the wire.
        let mut carried = self.tickets.to_be_bytes().to_vec();
        carried.resize((bytes.len() + UDP_HEADERS).max(8), 0);
        link.push(self.now, carried);
        self.flights.entry((src, dst)).or_default().insert(self.tickets, Flight { from, bytes });
    }

    /// What a node queued to send.
    fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].core.poll_transmit() {
            if self.nodes[i].vanished {
                continue;
            }
            match t {
                Transmit::Udp { to, bytes } => {
                    let from = self.nodes[i].public();
                    self.send_udp(Ep::Node(i), from, to, bytes);
                }
                Transmit::Channel(data) => {
                    if self.nodes[i].channel {
                        self.push(Ep::Node(i), Ep::Server, self.nodes[i].public(), data.to_vec());
                    }
                }
            }
        }
    }

    /// Delivers what is due on every link.
    fn deliver(&mut self) {
        let keys: Vec<(Ep, Ep)> = self.links.keys().copied().collect();
        for key in keys {
            while let Some(carried) = self.links.get_mut(&key).and_then(|l| l.as_mut()?.poll(self.now)) {
                let ticket = u64::from_be_bytes(carried[..8].try_into().unwrap());
                let Some(f) = self.flights.get_mut(&key).and_then(|m| m.remove(&ticket)) else { continue };
                self.arrive(key.0, key.1, f);
            }
        }
    }

    fn arrive(&mut self, src: Ep, dst: Ep, f: Flight) {
        let now = self.instant();
        match dst {
            Ep::Node(j) => {
                if self.nodes[j].vanished || self.nodes[j].end.is_some() {
                    return;
                }
                if src == Ep::Server {
                    self.nodes[j].core.handle_channel_frame(now, &f.bytes);
                } else {
                    self.nodes[j].core.handle_datagram(now, f.from, &f.bytes);
                }
                self.drain(j);
            }
            Ep::Relay => {
                let (mut dests, mut out) = (Vec::new(), Vec::new());
                match self.relay.handle(&f.bytes, f.from, self.now.as_millis() as u64, &mut dests, &mut out) {
                    Handled::Ack(ack, _) => self.send_udp(Ep::Relay, RELAY, f.from, ack),
                    Handled::Forward => {
                        for d in dests {
                            self.send_udp(Ep::Relay, RELAY, d, out.clone());
                        }
                    }
                    Handled::Dropped => {}
                }
            }
            Ep::Server => {
                // The server forwards a `/send` to everyone else on a channel.
                let sender = self.nodes.iter().position(|n| n.public() == f.from);
                for j in 0..self.nodes.len() {
                    if Some(j) != sender && self.nodes[j].channel {
                        self.push(Ep::Server, Ep::Node(j), SERVER, f.bytes.clone());
                    }
                }
            }
        }
    }

    /// One frame of node `i`'s clock.
    fn tick(&mut self, i: usize) {
        let now = self.instant();
        let n = &mut self.nodes[i];
        if n.vanished || n.end.is_some() {
            return;
        }
        let len = FRAME.as_millis() as usize * 48;
        let mut pcm = vec![0.0; len];
        if n.pos + len <= n.input.len() {
            pcm.copy_from_slice(&n.input[n.pos..n.pos + len]);
            n.pos += len;
        } else {
            n.core.handle_input_ended(now);
        }
        n.core.handle_capture(now, &mut pcm).unwrap();
        if let Some(end) = n.core.ended() {
            n.end = Some(end);
            return;
        }
        self.drain(i);
        let out = self.nodes[i].core.poll_playout(now);
        self.nodes[i].heard.extend(out);
    }

    /// Runs until `until` (simulated), or until every node has ended.
    fn run_until(&mut self, until: Duration) {
        let cpu = thread_cpu();
        while self.now < until && self.nodes.iter().any(|n| n.end.is_none() && !n.vanished) {
            self.step();
        }
        self.cpu += thread_cpu().saturating_sub(cpu);
    }

    /// Runs for `d` more.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// One millisecond.
    fn step(&mut self) {
        self.deliver();
        for i in 0..self.nodes.len() {
            let ms = self.now.as_millis() as u64;
            if ms % FRAME.as_millis() as u64 == self.nodes[i].phase.as_millis() as u64 {
                self.tick(i);
            }
        }
        self.now += MS;
    }

    /// Runs the call until every input ended (plus the tail), at most `limit`.
    fn finish(&mut self, limit: Duration) {
        self.run_until(limit);
        for n in &self.nodes {
            assert!(n.vanished || n.end.is_some(), "the call did not end in {limit:?}");
        }
    }

    fn stats(&self, i: usize) -> &CallStats {
        self.nodes[i].core.stats()
    }
}

impl Drop for World {
    /// Says how much call time a test simulated and the CPU time it took
    /// (BENCHMARKS.md adds these up).
    fn drop(&mut self) {
        let (sim, cpu) = (self.now.as_secs_f64(), self.cpu.as_secs_f64());
        eprintln!("simulated {sim:.3} s in {cpu:.3} s of CPU ({:.0}x real time)", sim / cpu.max(1e-9));
    }
}

/// CPU time this thread has used (Linux: `/proc/thread-self/schedstat`;
/// zero elsewhere). The figure is only printed, never asserted.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// The server's address (where call channel frames come from).
const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 7447);

/// Two sides, each speaking its own test voice for `secs`.
fn two(secs: f32) -> Spec {
    Spec::new(vec![voice(secs, 4.0, 1), voice(secs, 3.0, 99)])
}

#[test]
fn the_similarity_measure_tells_speech_from_garbage() {
    common::the_similarity_measure_tells_speech_from_garbage();
}

#[test]
fn direct_path() {
    let mut w = World::new(two(4.0));
    w.finish(Duration::from_secs(10));
    let (a, b) = (w.stats(0), w.stats(1));
    assert_eq!(w.nodes[0].end, Some(EndCause::InputEnded));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    assert_heard(&w.nodes[1].input, &w.nodes[0].heard, 0.1);
    assert_eq!(a.path, Some(Path::Direct), "{:?}", a.path_history);
    assert!(a.path_history.iter().all(|(_, p)| *p == Path::Direct), "{:?}", a.path_history);
    assert!(b.received > 150, "{b:?}");
    assert_eq!(a.sas, b.sas);
    // 10 ms each way on the wire.
    let rtt = a.rtt_ms.expect("an rtt");
    assert!((20..=60).contains(&rtt), "rtt {rtt}");
    assert_eq!((a.rejected, a.seal_failures, a.decode_failures), (0, 0, 0), "{a:?}");
}

#[test]
fn the_same_seed_gives_the_same_call() {
    let run = || {
        let mut spec = two(2.0);
        spec.seed = 7;
        let mut w = World::new(spec);
        let lossy = Impairment { loss: 0.05, jitter: 15 * MS, delay: 10 * MS, ..Impairment::default() };
        w.set_both(Ep::Node(0), Ep::Node(1), Some(lossy));
        w.finish(Duration::from_secs(8));
        let s = w.stats(1);
        (s.received, s.concealed, s.fec_recovered, w.nodes[1].heard.len())
    };
    assert_eq!(run(), run());
}

#[test]
fn relay_path_when_direct_is_blocked() {
    let mut w = World::new(two(4.0));
    w.block_direct(true);
    w.finish(Duration::from_secs(10));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    assert_eq!(w.stats(0).path, Some(Path::Relay), "{:?}", w.stats(0).path_history);
    assert_eq!(w.stats(1).path, Some(Path::Relay));
}

/// A relay-only side sends nothing directly, even to a peer it could reach.
#[test]
fn relay_only_goes_through_the_relay_though_direct_works() {
    let mut spec = two(4.0);
    spec.relay_only = vec![0];
    let mut w = World::new(spec);
    w.finish(Duration::from_secs(10));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    let a = w.stats(0);
    assert_eq!(a.path, Some(Path::Relay), "{:?}", a.path_history);
    assert!(a.path_history.iter().all(|(_, p)| *p != Path::Direct), "{:?}", a.path_history);
    // Nothing left a's address towards b.
    assert!(
        w.links.get(&(Ep::Node(0), Ep::Node(1))).is_none_or(|l| l.as_ref().is_none_or(|l| l.counters().received == 0))
    );
}

#[test]
fn call_channel_when_udp_is_blocked() {
    let mut w = World::new(two(4.0));
    w.block_direct(true);
    w.block_relay();
    w.set_both(Ep::Node(0), Ep::Server, Some(Impairment { delay: 20 * MS, ..Impairment::default() }));
    w.set_both(Ep::Node(1), Ep::Server, Some(Impairment { delay: 20 * MS, ..Impairment::default() }));
    w.finish(Duration::from_secs(10));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    assert_eq!(w.stats(0).path, Some(Path::Channel), "{:?}", w.stats(0).path_history);
    assert_eq!(w.stats(1).path, Some(Path::Channel));
}

#[test]
fn moves_to_the_relay_and_back_when_direct_breaks_and_heals() {
    let mut w = World::new(two(9.0));
    w.run_until(Duration::from_secs(3));
    w.block_direct(true);
    w.run_until(Duration::from_secs(6));
    w.block_direct(false);
    w.finish(Duration::from_secs(15));
    let a = w.stats(0);
    let paths: Vec<Path> = a.path_history.iter().map(|(_, p)| *p).collect();
    assert!(paths.windows(3).any(|x| x == [Path::Direct, Path::Relay, Path::Direct]), "{:?}", a.path_history);
    let sent = &w.nodes[0].input;
    let reference = codec_reference(sent);
    let seconds = per_second(sent, &w.nodes[1].heard, 9);
    eprintln!("per second {seconds:.2?} (codec alone {reference:.3})");
    let mean = seconds.iter().sum::<f32>() / seconds.len() as f32;
    assert!(mean >= reference - 0.15, "mean similarity {mean:.3} vs codec alone {reference:.3}");
    assert!(seconds.iter().filter(|&&x| x < 0.5).count() <= 1, "at most one bad second: {seconds:.2?}");
}

/// a is behind a NAT whose outside port changes after 4 s; the call goes on
/// direct both ways.
#[test]
fn the_call_survives_an_address_change() {
    let mut w = World::new(two(8.0));
    let (old, new) = (addr(100), addr(101));
    w.nodes[0].outside = Some(old);
    // b knows a by its NAT's outside address.
    w.nodes[1].core.handle_command(babel_media::call::Control::Candidates(UserId(1), vec![old])).unwrap();
    w.run_until(Duration::from_secs(4));
    w.nodes[0].outside = Some(new);
    w.finish(Duration::from_secs(15));
    let (a, b) = (w.stats(0), w.stats(1));
    eprintln!("a paths {:?}; b paths {:?}", a.path_history, b.path_history);
    let reference = codec_reference(&w.nodes[0].input);
    let seconds = per_second(&w.nodes[0].input, &w.nodes[1].heard, 8);
    assert!(seconds[5..].iter().all(|&x| x > reference - 0.15), "voice continues after the move: {seconds:.2?}");
    // b kept its voice on the direct path: it found a at the new address.
    assert_eq!(b.path, Some(Path::Direct), "{:?}", b.path_history);
    assert!(b.path_history.iter().all(|(_, p)| *p == Path::Direct), "{:?}", b.path_history);
    let back = per_second(&w.nodes[1].input, &w.nodes[0].heard, 8);
    let reference = codec_reference(&w.nodes[1].input);
    assert!(back[6..].iter().all(|&x| x > reference - 0.15), "b reaches a's new address: {back:.2?}");
}

#[test]
fn strangers_cannot_inject_and_a_vanished_peer_ends_the_call() {
    let mut w = World::new(Spec::new(vec![voice(30.0, 4.0, 1), voice(30.0, 4.0, 1)]));
    w.run_until(Duration::from_secs(2));
    let eve = addr(666);
    let eve_key = SenderKey::generate().unwrap();
    let before = w.stats(0).clone();
    for seq in 0..50u32 {
        let f = VoiceFrame { kind: 1, seq: 100_000 + seq, timestamp: 0, packets: vec![vec![0xAA; 80]] };
        w.send_udp(Ep::Relay, eve, addr(0), packet::seal(&eve_key, &f).unwrap());
        w.send_udp(Ep::Relay, eve, addr(0), b"\x10garbage-garbage-garbage-garbage".to_vec());
        // A stranger's datagram that claims to come from the relay.
        w.send_udp(Ep::Relay, RELAY, addr(0), b"\x04\x00\x00\x00\x09garbage".to_vec());
    }
    w.run_for(Duration::from_millis(500));
    let after = w.stats(0).clone();
    assert_eq!(after.rejected - before.rejected, 150, "every stranger's datagram is refused");
    assert!(after.received > before.received + 15, "b's voice still arrives");
    // b's machine disappears without a word.
    w.nodes[1].vanished = true;
    let gone = w.now;
    w.run_until(Duration::from_secs(20));
    assert_eq!(w.nodes[0].end, Some(EndCause::PeerVanished));
    let took = w.now - gone;
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(6), "ended {took:?} after b went");
}

#[test]
fn group_call_of_three_hears_the_speaker_through_one_sender_key() {
    let speech = voice(5.0, 4.0, 7);
    let quiet = vec![0.0; speech.len()];
    let mut spec = Spec::new(vec![speech.clone(), quiet.clone(), quiet]);
    spec.channel = Vec::new();
    let mut w = World::new(spec);
    w.finish(Duration::from_secs(12));
    assert_eq!(w.stats(0).peers.len(), 2);
    assert_heard(&speech, &w.nodes[1].heard, 0.15);
    assert_heard(&speech, &w.nodes[2].heard, 0.15);
    // a seals each frame once, under its group key, and b opens them all
    // (and c's): the key hand-over came through.
    let (a, b, c) = (w.stats(0), w.stats(1), w.stats(2));
    assert!(b.received + 10 >= a.sent + c.sent, "b got {} of {} + {}", b.received, a.sent, c.sent);
    assert!(a.sent <= (speech.len() / 960) as u64 + 30, "one datagram per frame: {}", a.sent);
    assert!(similarity(&speech, &w.nodes[0].heard) < 0.5, "a does not hear itself");
}

/// A peer that joins a running call (`Control::AddPeer` on both sides)
/// and one that leaves (`RemovePeer`).
#[test]
fn a_third_joins_and_leaves() {
    let mut w = World::new(Spec::new(vec![voice(6.0, 4.0, 7), vec![0.0; 6 * 48_000], vec![0.0; 6 * 48_000]]));
    // c is not in the call at first: a and b do not know it, it knows them.
    for i in [0, 1] {
        w.nodes[i].core.handle_command(babel_media::call::Control::RemovePeer(UserId(3))).unwrap();
    }
    w.run_until(Duration::from_secs(2));
    assert_eq!(w.stats(0).peers.len(), 1);
    assert_eq!(w.stats(2).received, 0, "nobody sends to c yet");
    assert_eq!(w.nodes[0].core.peers(), vec![UserId(2)]);
    let c_key = w.publics[2].clone();
    for i in [0, 1] {
        w.nodes[i]
            .core
            .handle_command(babel_media::call::Control::AddPeer(PeerSetup {
                user: UserId(3),
                key: c_key.clone(),
                candidates: vec![addr(2)],
            }))
            .unwrap();
    }
    w.run_until(Duration::from_secs(4));
    let heard_c = similarity(&w.nodes[0].input[2 * 48_000..4 * 48_000], &w.nodes[2].heard[2 * 48_000..]);
    assert!(heard_c > 0.6, "c hears a once it joined: {heard_c}");
    assert_eq!(w.stats(0).peers.len(), 2);
    w.nodes[0].core.handle_command(babel_media::call::Control::RemovePeer(UserId(3))).unwrap();
    let got = w.stats(2).received;
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.stats(0).peers.len(), 1);
    // b still sends to c (it was not told), a no longer does: a's copy of
    // the group key stops, so nothing new from a opens.
    assert!(w.stats(2).received > got, "b's frames still reach c");
}

#[test]
fn the_bitrate_steps_down_under_a_bandwidth_cap_and_back_up_when_it_lifts() {
    // a → b goes through a 40 kbit/s bottleneck with a 250 ms queue: a
    // 32 kbit/s Opus stream is about 50 kbit/s on the wire. The relay and
    // the call channel are out of the way.
    let (a, b) = (voice(10.0, 4.0, 1), voice(10.0, 3.0, 99));
    let mut spec = Spec::new(vec![a.repeat(9), b.repeat(9)]);
    spec.channel = Vec::new();
    let mut w = World::new(spec);
    w.block_relay();
    let cap = Impairment { delay: 10 * MS, rate_bps: Some(40_000), queue_bytes: 1250, ..Impairment::default() };
    w.set_link(Ep::Node(0), Ep::Node(1), Some(cap));
    let within = |w: &mut World, want: fn(u32) -> bool, secs: u64| {
        let deadline = w.now + Duration::from_secs(secs);
        let mut history = Vec::new();
        while w.now < deadline {
            w.run_for(Duration::from_millis(200));
            let b = w.stats(0).bitrate;
            if history.last() != Some(&b) {
                history.push(b);
            }
            if want(b) {
                return (true, history);
            }
        }
        (false, history)
    };
    let (down, history) = within(&mut w, |b| b < 32_000 && b + 24_000 <= 40_000, 20);
    assert!(down, "the bitrate did not go under the cap: {history:?}");
    w.set_link(Ep::Node(0), Ep::Node(1), Some(w.default_link));
    let (up, history) = within(&mut w, |b| b == 32_000, 45);
    assert!(up, "the bitrate did not come back once the cap lifted: {history:?}");
}
