//! Whole calls between call cores in simulated time: the harness that
//! `tests/sim.rs` and `babel-quality --simulated` (crate `babel-tools`)
//! share.
//!
//! A [`World`] is a set of nodes (one [`CallCore`] each, with its input and
//! what it played), optionally a relay (anything that implements
//! [`RelayModel`]; the tests plug in the server's real sans-IO relay), the
//! server's call channel, and a directed `babel-netem` [`Link`] between every
//! two of them, stepped a millisecond at a time. No socket, no clock, no
//! thread: the codec, the jitter buffers, the keys and the capture chain are
//! the real ones; only the wire and the time are simulated, so a seed gives
//! the same call every time. This is to Babel what quinn's `tests/util.rs` is
//! to quinn.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use babel_netem::{Impairment, Link, Rng};
use babel_proto::UserId;

use crate::call::{CallCore, CallStats, CoreSetup, EndCause, MediaConfig, MediaError, PeerSetup, RelayInfo, Transmit};
use crate::keys::CallKeys;

/// A millisecond: the simulation's step.
pub const MS: Duration = Duration::from_millis(1);
/// Where the relay listens (nothing is bound: the addresses only name things).
pub const RELAY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 3478);
/// The server's address (where call channel frames come from).
pub const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 7447);
/// Bytes of IP and UDP headers, counted by a bandwidth cap.
pub const UDP_HEADERS: usize = 28;

/// One end of a simulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ep {
    /// A participant.
    Node(usize),
    /// The relay.
    Relay,
    /// The server's call channel.
    Server,
}

/// What a relay does with one datagram.
#[derive(Debug)]
pub enum RelayAction {
    /// Answer the sender with these bytes.
    Ack(Vec<u8>),
    /// Send these bytes to each address.
    Forward(Vec<SocketAddr>, Vec<u8>),
    /// Nothing.
    Dropped,
}

/// A relay in the simulation (the tests use the server's own, which
/// `babel-media` cannot depend on).
pub trait RelayModel {
    /// A grant for node `i` of the call, if it gets one.
    fn grant(&mut self, i: usize, user: UserId) -> Option<RelayInfo>;
    /// One datagram from `from`, `now_ms` into the run.
    fn handle(&mut self, bytes: &[u8], from: SocketAddr, now_ms: u64) -> RelayAction;
}

/// One participant: a call core, what it says and what it heard.
pub struct Node {
    /// Its call core.
    pub core: CallCore,
    /// Its socket's address.
    pub local: SocketAddr,
    /// Where its datagrams appear to come from (a NAT's outside), if not `local`.
    pub outside: Option<SocketAddr>,
    /// What it says (48 kHz mono); the input ends with it.
    pub input: Vec<f32>,
    pos: usize,
    /// What its loudspeaker got (48 kHz mono).
    pub heard: Vec<f32>,
    /// When its frame clock ticks, within each frame (less than a frame).
    pub phase: Duration,
    /// Whether it has a call channel.
    pub channel: bool,
    /// Gone without a word (its machine disappeared).
    pub vanished: bool,
    /// Why its call ended, once it did.
    pub end: Option<EndCause>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("public", &self.public())
            .field("phase", &self.phase)
            .field("heard", &self.heard.len())
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// The address others see it at.
    pub fn public(&self) -> SocketAddr {
        self.outside.unwrap_or(self.local)
    }
}

/// A datagram in flight: who sent it (as the receiver sees it), and the bytes.
struct Flight {
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// How a world is made.
pub struct Spec {
    /// Each node's input.
    pub inputs: Vec<Vec<f32>>,
    /// Relay-only nodes.
    pub relay_only: Vec<usize>,
    /// Nodes with a call channel.
    pub channel: Vec<usize>,
    /// Every node's media settings.
    pub cfg: MediaConfig,
    /// The seed of every link's random stream.
    pub seed: u64,
    /// The relay, if there is one (every node asks it for a grant).
    pub relay: Option<Box<dyn RelayModel>>,
    /// Print the simulated time and the CPU time it took when the world goes.
    pub print_speed: bool,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("nodes", &self.inputs.len())
            .field("relay_only", &self.relay_only)
            .field("channel", &self.channel)
            .field("seed", &self.seed)
            .field("relay", &self.relay.is_some())
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// Everyone on a call channel, no relay, [`Spec::default_config`], seed 1.
    pub fn new(inputs: Vec<Vec<f32>>) -> Spec {
        let n = inputs.len();
        Spec {
            inputs,
            relay_only: Vec::new(),
            channel: (0..n).collect(),
            cfg: Spec::default_config(),
            seed: 1,
            relay: None,
            print_speed: true,
        }
    }

    /// The media settings of a simulated call: as shipped, with noise
    /// suppression off (test inputs are clean) and a 5 s peer timeout.
    pub fn default_config() -> MediaConfig {
        MediaConfig { noise_suppression: false, peer_timeout: Duration::from_secs(5), ..MediaConfig::default() }
    }
}

/// The address node `i`'s socket has.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + i as u16))
}

/// Nodes, a relay, the call channel and the links between them.
pub struct World {
    t0: Instant,
    /// Simulated time since the start.
    pub now: Duration,
    seed: u64,
    frame: Duration,
    /// The participants.
    pub nodes: Vec<Node>,
    relay: Option<Box<dyn RelayModel>>,
    /// Directed links; a missing one (`None`) drops everything.
    pub links: BTreeMap<(Ep, Ep), Option<Link>>,
    /// Datagrams in flight, by link and push order (the link carries a
    /// ticket; this holds the rest).
    flights: BTreeMap<(Ep, Ep), BTreeMap<u64, Flight>>,
    tickets: u64,
    /// The link every pair of ends gets until told otherwise.
    pub default_link: Impairment,
    /// Each node's public key, as the others know it.
    pub publics: Vec<String>,
    /// CPU time spent simulating.
    pub cpu: Duration,
    print_speed: bool,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("seed", &self.seed)
            .field("nodes", &self.nodes)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl World {
    /// Everyone in one call, each announcing its own address, every link
    /// clean with 10 ms of delay. Node `i`'s frame clock ticks `7 i` ms
    /// (modulo a frame) into each frame.
    pub fn new(spec: Spec) -> Result<World, MediaError> {
        let t0 = Instant::now();
        let mut relay = spec.relay;
        let n = spec.inputs.len();
        let keys = (0..n).map(|_| CallKeys::generate()).collect::<Result<Vec<_>, _>>()?;
        let publics: Vec<String> = keys.iter().map(CallKeys::public_b64).collect();
        let frame = Duration::from_millis(u64::from(spec.cfg.frame.ms()));
        let mut nodes = Vec::new();
        for (i, (input, keys)) in spec.inputs.into_iter().zip(keys).enumerate() {
            let user = UserId(i as i64 + 1);
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
                relay: relay.as_mut().and_then(|r| r.grant(i, user)),
                channel: spec.channel.contains(&i),
                code: "123 456".into(),
                relay_only: spec.relay_only.contains(&i),
                hears_the_room: false,
                nonce_base: 1,
            };
            let phase = Duration::from_millis((i as u64 * 7) % frame.as_millis() as u64);
            nodes.push(Node {
                core: CallCore::new(setup, spec.cfg.clone(), t0)?,
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
        Ok(World {
            t0,
            now: Duration::ZERO,
            seed: spec.seed,
            frame,
            nodes,
            relay,
            links: BTreeMap::new(),
            flights: BTreeMap::new(),
            tickets: 0,
            default_link: Impairment { delay: 10 * MS, ..Impairment::default() },
            publics,
            cpu: Duration::ZERO,
            print_speed: spec.print_speed,
        })
    }

    /// Sets the link from `a` to `b` (`None`: it drops everything), with
    /// random stream `stream` of the world's seed. What is in flight on the
    /// old one is lost.
    pub fn set_link_stream(&mut self, a: Ep, b: Ep, imp: Option<Impairment>, stream: u64) {
        let link = imp.map(|i| Link::new(i, Rng::with_stream(self.seed, stream)));
        self.links.insert((a, b), link);
        self.flights.remove(&(a, b));
    }

    /// Sets the link from `a` to `b` (`None`: it drops everything). What is
    /// in flight on the old one is lost.
    pub fn set_link(&mut self, a: Ep, b: Ep, imp: Option<Impairment>) {
        let stream = self.links.len() as u64 + 1000 * self.now.as_millis() as u64;
        self.set_link_stream(a, b, imp, stream);
    }

    /// Both directions.
    pub fn set_both(&mut self, a: Ep, b: Ep, imp: Option<Impairment>) {
        self.set_link(a, b, imp);
        self.set_link(b, a, imp);
    }

    /// No direct UDP between any two nodes.
    pub fn block_direct(&mut self, blocked: bool) {
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
    pub fn block_relay(&mut self) {
        for i in 0..self.nodes.len() {
            self.set_both(Ep::Node(i), Ep::Relay, None);
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    /// Sends `bytes` from `src` (seen as `from`) to the address `to`.
    pub fn send_udp(&mut self, src: Ep, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
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
                let Some(ticket) = carried.get(..8).and_then(|t| t.try_into().ok()).map(u64::from_be_bytes) else {
                    continue;
                };
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
                let now_ms = self.now.as_millis() as u64;
                let Some(action) = self.relay.as_mut().map(|r| r.handle(&f.bytes, f.from, now_ms)) else { return };
                match action {
                    RelayAction::Ack(ack) => self.send_udp(Ep::Relay, RELAY, f.from, ack),
                    RelayAction::Forward(dests, out) => {
                        for d in dests {
                            self.send_udp(Ep::Relay, RELAY, d, out.clone());
                        }
                    }
                    RelayAction::Dropped => {}
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
    fn tick(&mut self, i: usize) -> Result<(), MediaError> {
        let now = self.instant();
        let len = self.frame.as_millis() as usize * 48;
        let n = &mut self.nodes[i];
        if n.vanished || n.end.is_some() {
            return Ok(());
        }
        let mut pcm = vec![0.0; len];
        if n.pos + len <= n.input.len() {
            pcm.copy_from_slice(&n.input[n.pos..n.pos + len]);
            n.pos += len;
        } else {
            n.core.handle_input_ended(now);
        }
        n.core.handle_capture(now, &mut pcm)?;
        if let Some(end) = n.core.ended() {
            n.end = Some(end);
            return Ok(());
        }
        self.drain(i);
        let out = self.nodes[i].core.poll_playout(now);
        self.nodes[i].heard.extend(out);
        Ok(())
    }

    /// Runs until `until` (simulated), or until every node has ended.
    pub fn run_until(&mut self, until: Duration) -> Result<(), MediaError> {
        let cpu = thread_cpu();
        let mut result = Ok(());
        while self.now < until && self.nodes.iter().any(|n| n.end.is_none() && !n.vanished) {
            if let Err(e) = self.step() {
                result = Err(e);
                break;
            }
        }
        self.cpu += thread_cpu().saturating_sub(cpu);
        result
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) -> Result<(), MediaError> {
        let until = self.now + d;
        self.run_until(until)
    }

    /// One millisecond.
    fn step(&mut self) -> Result<(), MediaError> {
        self.deliver();
        let frame_ms = self.frame.as_millis() as u64;
        for i in 0..self.nodes.len() {
            let ms = self.now.as_millis() as u64;
            if ms % frame_ms == self.nodes[i].phase.as_millis() as u64 % frame_ms {
                self.tick(i)?;
            }
        }
        self.now += MS;
        Ok(())
    }

    /// Runs the call until every input ended (plus the tail), at most
    /// `limit`; whether it ended by then.
    pub fn finish(&mut self, limit: Duration) -> Result<bool, MediaError> {
        self.run_until(limit)?;
        Ok(self.nodes.iter().all(|n| n.vanished || n.end.is_some()))
    }

    /// Node `i`'s call figures.
    pub fn stats(&self, i: usize) -> &CallStats {
        self.nodes[i].core.stats()
    }
}

impl Drop for World {
    /// Says how much call time was simulated and the CPU time it took
    /// (BENCHMARKS.md adds these up), when the spec asked for it.
    fn drop(&mut self) {
        if self.print_speed {
            let (sim, cpu) = (self.now.as_secs_f64(), self.cpu.as_secs_f64());
            eprintln!("simulated {sim:.3} s in {cpu:.3} s of CPU ({:.0}x real time)", sim / cpu.max(1e-9));
        }
    }
}

/// CPU time this thread has used (Linux: `/proc/thread-self/schedstat`;
/// zero elsewhere). The figure is only printed, never asserted.
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}
