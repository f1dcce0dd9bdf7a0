//! UDP voice load: paced DATA datagrams through the server's relay or the
//! bare forwarder, with loss and latency measured on receipt.
//!
//! Plain std threads and `std::net::UdpSocket`s (connected to the target,
//! with large buffers): one or more sender threads follow a [`Pacer`]
//! schedule; receiver threads count what comes back, either one blocking
//! thread per socket or a few threads that drain their sockets and pause
//! briefly when all are empty (far fewer wake-ups, so the generator and the
//! target spend less CPU on them; a real relay's clients are on other
//! machines and cost it no wake-ups).
//! Every payload starts with a [`Timing`] (call, direction, sequence, send
//! time in ns since the run's shared epoch), so a receiver needs no state to
//! attribute and time a datagram. Several participants share one socket: the
//! relay keys on the handle and sends to each participant's bound address.
//!
//! A run: BIND every participant (retrying), warm up, measure for a fixed
//! time, stop sending, drain, stop receiving. Only datagrams *sent* inside the
//! measured window count, on both sides, so `sent - received` is the loss.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use babel_proto::relay as wire;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::child::{cpu_seconds, machine_busy_seconds, threads_cpu_seconds};
use crate::stats::Latency;
use crate::udp_forward;

/// First byte of every benchmark payload.
pub const MAGIC: u8 = 0xB7;
/// Bytes a [`Timing`] takes at the start of a payload (also the smallest
/// payload the benchmark sends).
pub const TIMING_LEN: usize = 18;

/// What each payload carries so that its receiver can time it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Call index.
    pub call: u32,
    /// 0: caller to callee, 1: callee to caller.
    pub dir: u8,
    /// Sequence number (the sender's round).
    pub seq: u32,
    /// Send time, ns since the run's epoch.
    pub sent_ns: u64,
}

impl Timing {
    /// Writes the timing at the start of `payload`; false if it is too short.
    pub fn write(&self, payload: &mut [u8]) -> bool {
        let Some(head) = payload.get_mut(..TIMING_LEN) else { return false };
        head[0] = MAGIC;
        head[1..5].copy_from_slice(&self.call.to_be_bytes());
        head[5] = self.dir;
        head[6..10].copy_from_slice(&self.seq.to_be_bytes());
        head[10..18].copy_from_slice(&self.sent_ns.to_be_bytes());
        true
    }

    /// Reads the timing at the start of `payload`.
    pub fn read(payload: &[u8]) -> Option<Timing> {
        let head = payload.get(..TIMING_LEN)?;
        if head[0] != MAGIC || head[5] > 1 {
            return None;
        }
        Some(Timing {
            call: u32::from_be_bytes(head[1..5].try_into().ok()?),
            dir: head[5],
            seq: u32::from_be_bytes(head[6..10].try_into().ok()?),
            sent_ns: u64::from_be_bytes(head[10..18].try_into().ok()?),
        })
    }
}

/// When each participant sends: every participant once per period, the
/// participants spread evenly over the period (participant `p` at
/// `p * period / P`), so the aggregate stream is smooth rather than one
/// burst per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    /// Participants, all senders together.
    pub participants: usize,
    /// Time between two packets of one participant, ns.
    pub period_ns: u64,
}

impl Pacer {
    /// A schedule for `participants` each sending `pps` packets a second.
    pub fn new(participants: usize, pps: u32) -> Pacer {
        Pacer { participants: participants.max(1), period_ns: 1_000_000_000 / u64::from(pps.max(1)) }
    }

    /// Participant `p`'s offset within every period.
    pub fn offset_ns(&self, p: usize) -> u64 {
        (p as u128 * self.period_ns as u128 / self.participants as u128) as u64
    }

    /// When participant `p` sends its packet of `round`, from the start.
    pub fn due_ns(&self, round: u64, p: usize) -> u64 {
        round * self.period_ns + self.offset_ns(p)
    }

    /// Rounds that start within `total_ns`.
    pub fn rounds(&self, total_ns: u64) -> u64 {
        total_ns.div_ceil(self.period_ns)
    }
}

/// One sender's share of a [`Pacer`] schedule: `members` (ascending
/// participant indices), in time order.
#[derive(Debug, Clone)]
pub struct Schedule {
    pacer: Pacer,
    members: Vec<usize>,
    next: u64,
    total: u64,
}

impl Schedule {
    /// Sender `t` of `threads` takes participants `t, t + threads, …`, for
    /// `rounds` rounds.
    pub fn for_thread(pacer: Pacer, t: usize, threads: usize, rounds: u64) -> Schedule {
        let members: Vec<usize> = (t..pacer.participants).step_by(threads.max(1)).collect();
        let total = rounds * members.len() as u64;
        Schedule { pacer, members, next: 0, total }
    }

    /// The next send: `(due_ns, participant, round)`; `None` when done.
    pub fn peek(&self) -> Option<(u64, usize, u64)> {
        if self.next >= self.total || self.members.is_empty() {
            return None;
        }
        let n = self.members.len() as u64;
        let (round, j) = (self.next / n, (self.next % n) as usize);
        let p = self.members[j];
        Some((self.pacer.due_ns(round, p), p, round))
    }

    /// The catch-up limit of a sender that wakes every `slot_ns`: a token
    /// bucket of [`Schedule::max_batch`] sends refilled at twice the
    /// schedule's rate. A sender that fell behind (it was not scheduled)
    /// catches up at about twice its rate instead of in one burst that no
    /// real population of independent clients would send.
    pub fn catch_up(&self, slot_ns: u64) -> TokenBucket {
        let members = self.members.len().max(1) as f64;
        TokenBucket::new(self.max_batch(slot_ns) as f64, self.pacer.period_ns as f64 / (2.0 * members))
    }

    /// Twice what falls due in a slot, plus a few.
    pub fn max_batch(&self, slot_ns: u64) -> usize {
        let per_slot = self.members.len() as u128 * u128::from(slot_ns) / u128::from(self.pacer.period_ns);
        (2 * per_slot as usize).saturating_add(4)
    }

    /// Moves past the send [`Schedule::peek`] showed.
    pub fn advance(&mut self) {
        self.next += 1;
    }
}

/// A token bucket over ns timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    cap: f64,
    ns_per_token: f64,
    last: Option<u64>,
}

impl TokenBucket {
    /// Full, holding `cap` tokens, one more every `ns_per_token`.
    pub fn new(cap: f64, ns_per_token: f64) -> TokenBucket {
        TokenBucket { tokens: cap, cap, ns_per_token: ns_per_token.max(1e-3), last: None }
    }

    /// Takes a token at `now_ns` if there is one.
    pub fn take(&mut self, now_ns: u64) -> bool {
        if let Some(last) = self.last {
            let refill = now_ns.saturating_sub(last) as f64 / self.ns_per_token;
            self.tokens = (self.tokens + refill).min(self.cap);
        }
        self.last = Some(now_ns);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// ns since a shared epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Starts a clock now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// A clock whose epoch is `epoch`.
    pub fn at(epoch: Instant) -> Clock {
        Clock(epoch)
    }

    /// ns since the epoch.
    pub fn ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }

    /// Sleeps until `ns` since the epoch (returns at once if past).
    pub fn sleep_until(&self, ns: u64) {
        let now = self.ns();
        if ns > now {
            std::thread::sleep(Duration::from_nanos(ns - now));
        }
    }
}

/// `drops` per socket in the text of `/proc/net/udp`, summed over the
/// sockets whose local port is in `ports`.
pub fn parse_udp_drops(text: &str, ports: &[u16]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let drops: u64 = f.last()?.parse().ok()?;
            ports.contains(&port).then_some(drops)
        })
        .sum()
}

/// Datagrams the kernel dropped (full receive buffer) on the IPv4 UDP
/// sockets bound to `ports`, so far.
pub fn udp_drops(ports: &[u16]) -> Option<u64> {
    std::fs::read_to_string("/proc/net/udp").ok().map(|t| parse_udp_drops(&t, ports))
}

/// A UDP socket bound to `addr` with `buffer_bytes` of receive and send
/// buffer asked for (the kernel caps it at `net.core.rmem_max`/`wmem_max`).
pub fn bound_socket(addr: SocketAddr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(buffer_bytes)?;
    s.set_send_buffer_size(buffer_bytes)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Microseconds since the Unix epoch, strictly growing across calls: BIND
/// nonces must grow for each handle, run after run.
pub fn next_nonce() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let n = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, n, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return n,
            Err(p) => prev = p,
        }
    }
}

/// Which forwarder the datagrams go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// babel-server's relay: tagged BIND/DATA, RELAYED back.
    Relay,
    /// babel-udp-forward: `[type][handle]` headers, no checks.
    Bare,
}

impl TargetKind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Relay => "relay",
            TargetKind::Bare => "bare",
        }
    }
}

/// One participant's relay credentials (for the bare forwarder the handle
/// is the participant index and the key is unused).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    /// Relay handle.
    pub handle: u32,
    /// Relay key.
    pub key: [u8; 16],
}

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leg").field("handle", &self.handle).finish_non_exhaustive()
    }
}

/// Where a run sends.
#[derive(Debug, Clone, Copy)]
pub struct UdpTarget<'a> {
    /// Relay or bare forwarder.
    pub kind: TargetKind,
    /// Its UDP address (127.0.0.0/8).
    pub addr: SocketAddr,
    /// Its process, for CPU time.
    pub pid: Option<u32>,
    /// Participant `2c + d` is direction `d` of call `c`; at least
    /// `2 * calls` of them.
    pub legs: &'a [Leg],
}

/// How a run sends.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Client sockets.
    pub sockets: usize,
    /// Packets per second per participant.
    pub pps: u32,
    /// Payload bytes (at least [`TIMING_LEN`]).
    pub payload: usize,
    /// Unmeasured seconds first.
    pub warmup: Duration,
    /// Measured seconds.
    pub seconds: Duration,
    /// Wait after the last send before counting stops.
    pub drain: Duration,
    /// Shortest sleep of a sender: sends due within one slot go out together.
    pub slot: Duration,
    /// Sender threads.
    pub send_threads: usize,
    /// Socket buffer size asked for, bytes.
    pub buffer_bytes: usize,
    /// `None`: one receiver thread per socket, blocking. `Some(pause)`:
    /// `recv_threads` threads drain their sockets and sleep `pause` when
    /// all are empty (fewer wake-ups; latency gains up to `pause`).
    pub recv_poll: Option<Duration>,
    /// Receiver threads when polling.
    pub recv_threads: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct UdpRun {
    /// `relay` or `bare`.
    pub target: TargetKind,
    /// Concurrent calls.
    pub calls: usize,
    /// Participants (two per call), each sending.
    pub participants: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Datagrams the schedule asks for in the window.
    pub expected: u64,
    /// Datagrams sent in the window.
    pub sent: u64,
    /// Of those, received back.
    pub received: u64,
    /// `sent - received`, after the drain.
    pub lost: i64,
    /// Loss in percent of `sent`.
    pub loss_pct: f64,
    /// Received datagrams per second: what the target forwarded.
    pub forwarded_per_s: f64,
    /// Receive time minus send time.
    pub latency: Latency,
    /// Target's user+system CPU in the window.
    pub server_cpu_s: Option<f64>,
    /// The same, per million forwarded datagrams.
    pub server_cpu_s_per_mpkt: Option<f64>,
    /// CPU of the server's relay threads alone (named `babel-relay*`; none
    /// in the bare forwarder) per million forwarded datagrams.
    pub relay_threads_cpu_s_per_mpkt: Option<f64>,
    /// Target's CPU in percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// This process's CPU in percent of one core.
    pub generator_cpu_pct: Option<f64>,
    /// The whole machine's busy CPU in percent of all cores.
    pub machine_busy_pct: Option<f64>,
    /// Busy CPU of everything else on the machine (other processes, and
    /// interrupt work not charged to a process), percent of one core.
    pub other_cpu_pct: Option<f64>,
    /// Failed sends.
    pub send_errors: u64,
    /// Sends more than 1 ms behind schedule (the generator falling behind).
    pub late_sends: u64,
    /// Worst lag behind schedule, ms.
    pub max_send_lag_ms: f64,
    /// Datagrams received that were not ours.
    pub bad_datagrams: u64,
    /// Kernel drops on the target's socket during the run.
    pub target_socket_drops: Option<u64>,
    /// Kernel drops on the generator's sockets during the run.
    pub client_socket_drops: Option<u64>,
    /// BIND rounds needed until every participant was bound.
    pub bind_rounds: u32,
    /// No loss, no send error and the whole schedule sent.
    pub held: bool,
}

#[derive(Debug, Default)]
struct SendTally {
    sent: u64,
    errors: u64,
    late: u64,
    max_lag_ns: u64,
}

#[derive(Debug, Default)]
struct RecvTally {
    received: u64,
    bad: u64,
    latencies: Vec<u64>,
}

/// Most latency samples kept per run, all receivers together.
const MAX_SAMPLES: usize = 20_000_000;
const BIND_ROUNDS: u32 = 8;
const BIND_WAIT: Duration = Duration::from_millis(500);

fn open_sockets(target: SocketAddr, n: usize, buffer_bytes: usize) -> anyhow::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            let s = bound_socket("127.0.0.1:0".parse()?, buffer_bytes).context("cannot open a UDP socket")?;
            s.connect(target).with_context(|| format!("cannot connect a UDP socket to {target}"))?;
            Ok(s)
        })
        .collect()
}

fn bind_datagram(kind: TargetKind, leg: &Leg) -> Vec<u8> {
    match kind {
        TargetKind::Relay => wire::encode_bind(leg.handle, next_nonce(), &leg.key),
        TargetKind::Bare => udp_forward::header(udp_forward::REGISTER, leg.handle).to_vec(),
    }
}

/// What an acknowledgement says.
enum Ack {
    /// Participant `p` is bound.
    Bound(usize),
    /// The relay challenged a participant: send it this CONFIRM.
    Confirm(Vec<u8>),
}

/// The participant an acknowledgement is for, and what it says.
fn ack_for(kind: TargetKind, datagram: &[u8], by_handle: &HashMap<u32, usize>, legs: &[Leg]) -> Option<Ack> {
    let handle = udp_forward::handle_of(datagram)?;
    let &p = by_handle.get(&handle)?;
    match kind {
        TargetKind::Relay => {
            let leg = &legs[p];
            let ack = wire::verify_bind_ack(datagram, &leg.key).filter(|a| a.handle == handle)?;
            Some(match ack.state {
                wire::BOUND => Ack::Bound(p),
                _ => Ack::Confirm(wire::encode_confirm(leg.handle, next_nonce(), &ack.cookie, &leg.key)),
            })
        }
        TargetKind::Bare => (datagram.first() == Some(&udp_forward::REGISTERED)).then_some(Ack::Bound(p)),
    }
}

/// BINDs every participant, re-sending to those not acknowledged; answers
/// the rounds it took.
fn bind_all(kind: TargetKind, sockets: &[UdpSocket], legs: &[Leg]) -> anyhow::Result<u32> {
    let by_handle: HashMap<u32, usize> = legs.iter().enumerate().map(|(p, l)| (l.handle, p)).collect();
    ensure!(by_handle.len() == legs.len(), "two participants share a handle");
    let mut bound = vec![false; legs.len()];
    let mut left = legs.len();
    for s in sockets {
        s.set_nonblocking(true)?;
    }
    let mut buf = vec![0u8; 2048];
    let mut rounds = 0;
    while left > 0 && rounds < BIND_ROUNDS {
        rounds += 1;
        for (p, leg) in legs.iter().enumerate().filter(|(p, _)| !bound[*p]) {
            let _ = sockets[p % sockets.len()].send(&bind_datagram(kind, leg));
            if p % 128 == 127 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + BIND_WAIT;
        while left > 0 && Instant::now() < deadline {
            let mut any = false;
            for s in sockets {
                for _ in 0..10_000 {
                    let Ok(n) = s.recv(&mut buf) else { break };
                    any = true;
                    match ack_for(kind, &buf[..n], &by_handle, legs) {
                        Some(Ack::Bound(p)) if !bound[p] => {
                            bound[p] = true;
                            left -= 1;
                        }
                        // The challenge came to this socket: the cookie goes back from it.
                        Some(Ack::Confirm(confirm)) => {
                            let _ = s.send(&confirm);
                        }
                        _ => {}
                    }
                }
            }
            if !any {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    for s in sockets {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
    }
    if left > 0 {
        bail!("{left} of {} participants got no BIND acknowledgement after {rounds} rounds", legs.len());
    }
    Ok(rounds)
}

/// The payload of a datagram the target sent back.
fn payload_of(datagram: &[u8]) -> Option<&[u8]> {
    match *datagram.first()? {
        wire::RELAYED => wire::decode_relayed(datagram).map(|(_, p)| p),
        udp_forward::DATA => datagram.get(udp_forward::HEADER..),
        _ => None,
    }
}

/// The measured part of a run, ns since the run's epoch.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// First ns measured.
    pub start: u64,
    /// First ns not measured.
    pub end: u64,
}

impl Window {
    /// Whether `ns` falls in the window.
    pub fn holds(&self, ns: u64) -> bool {
        (self.start..self.end).contains(&ns)
    }
}

#[allow(clippy::too_many_arguments)]
fn sender(
    kind: TargetKind,
    sockets: &[UdpSocket],
    legs: &[Leg],
    mut schedule: Schedule,
    clock: Clock,
    start: u64,
    window: &Window,
    opts: &UdpOptions,
) -> SendTally {
    let mut tally = SendTally::default();
    let mut payload = vec![0x5Au8; opts.payload];
    let mut out = Vec::with_capacity(opts.payload + 32);
    let slot = opts.slot.as_nanos() as u64;
    let hard_end = window.end + 1_000_000_000;
    let mut bucket = schedule.catch_up(slot);
    // DATA counters must grow for each participant run after run: this
    // run's start in µs since the epoch (far above the last run's rounds),
    // plus the round.
    let base = next_nonce();
    while let Some((due, p, round)) = schedule.peek() {
        let due = start + due;
        if due >= window.end {
            break;
        }
        let now = clock.ns();
        if now > hard_end {
            break;
        }
        if due > now || !bucket.take(now) {
            std::thread::sleep(Duration::from_nanos(due.saturating_sub(now).max(slot)));
            continue;
        }
        let lag = now - due;
        tally.max_lag_ns = tally.max_lag_ns.max(lag);
        if lag > 1_000_000 {
            tally.late += 1;
        }
        let sent_ns = clock.ns();
        let timing = Timing { call: (p / 2) as u32, dir: (p % 2) as u8, seq: round as u32, sent_ns };
        timing.write(&mut payload);
        let leg = &legs[p];
        match kind {
            TargetKind::Relay => wire::encode_data(leg.handle, base + round + 1, &leg.key, &payload, &mut out),
            TargetKind::Bare => {
                out.clear();
                out.extend_from_slice(&udp_forward::header(udp_forward::DATA, leg.handle));
                out.extend_from_slice(&payload);
            }
        }
        match sockets[p % sockets.len()].send(&out) {
            Ok(_) if window.holds(sent_ns) => tally.sent += 1,
            Ok(_) => {}
            Err(_) => tally.errors += 1,
        }
        schedule.advance();
    }
    tally
}

fn record(tally: &mut RecvTally, datagram: &[u8], now: u64, calls: usize, window: &Window) {
    match payload_of(datagram).and_then(Timing::read) {
        Some(t) if (t.call as usize) < calls => {
            if window.holds(t.sent_ns) {
                tally.received += 1;
                if tally.latencies.len() < MAX_SAMPLES {
                    tally.latencies.push(now.saturating_sub(t.sent_ns));
                }
            }
        }
        _ => tally.bad += 1,
    }
}

/// Receives on `sockets`: blocking on the one socket when `poll` is
/// `None`, else draining every (non-blocking) socket and sleeping `poll`
/// whenever all were empty.
fn receiver(
    sockets: &[&UdpSocket],
    poll: Option<Duration>,
    calls: usize,
    clock: Clock,
    window: &Window,
    stop: &AtomicBool,
    cap: usize,
) -> RecvTally {
    let mut tally = RecvTally { latencies: Vec::with_capacity(cap), ..RecvTally::default() };
    let mut buf = vec![0u8; 2048];
    let hard_end = window.end + 10_000_000_000;
    while !stop.load(Ordering::Relaxed) {
        match poll {
            None => {
                let Some(socket) = sockets.first() else { break };
                match socket.recv(&mut buf) {
                    Ok(n) => record(&mut tally, &buf[..n], clock.ns(), calls, window),
                    Err(_) if clock.ns() > hard_end => break,
                    Err(_) => {}
                }
            }
            Some(pause) => {
                let mut any = false;
                for socket in sockets {
                    // Bounded: a socket holds at most its buffer's worth.
                    for _ in 0..100_000 {
                        let Ok(n) = socket.recv(&mut buf) else { break };
                        any = true;
                        record(&mut tally, &buf[..n], clock.ns(), calls, window);
                    }
                }
                if !any {
                    if clock.ns() > hard_end {
                        break;
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }
    tally
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

/// Machine busy time not spent by the target or the generator, percent of
/// one core over `wall` seconds.
pub fn other_cpu_pct(machine: Option<f64>, target: Option<f64>, generator: Option<f64>, wall: f64) -> Option<f64> {
    Some(((machine? - target.unwrap_or(0.0) - generator?) * 100.0 / wall).max(0.0))
}

/// Runs `calls` calls' worth of voice through `target`.
pub fn run(target: &UdpTarget<'_>, calls: usize, opts: &UdpOptions) -> anyhow::Result<UdpRun> {
    crate::net::check_target(&target.addr)?;
    ensure!(calls >= 1, "at least one call");
    ensure!(target.legs.len() >= 2 * calls, "only {} participants set up for {calls} calls", target.legs.len());
    ensure!(opts.payload >= TIMING_LEN && opts.payload <= wire::MAX_PAYLOAD, "bad payload size");
    ensure!(opts.sockets >= 1 && opts.send_threads >= 1, "at least one socket and one sender");
    let participants = 2 * calls;
    let legs = &target.legs[..participants];
    let sockets = open_sockets(target.addr, opts.sockets, opts.buffer_bytes)?;
    let bind_rounds = bind_all(target.kind, &sockets, legs)?;
    if opts.recv_poll.is_some() {
        for s in &sockets {
            s.set_nonblocking(true)?;
        }
    }
    let mut client_ports = Vec::with_capacity(sockets.len());
    for s in &sockets {
        client_ports.push(s.local_addr()?.port());
    }
    let target_port = [target.addr.port()];
    let drops_before = (udp_drops(&target_port), udp_drops(&client_ports));

    let pacer = Pacer::new(participants, opts.pps);
    let clock = Clock::start();
    let start = 20_000_000; // 20 ms for the threads to start
    let warm = opts.warmup.as_nanos() as u64;
    let measured = opts.seconds.as_nanos() as u64;
    let window = Window { start: start + warm, end: start + warm + measured };
    let rounds = pacer.rounds(warm + measured);
    let expected = participants as u64 * (measured as u128 * u128::from(opts.pps) / 1_000_000_000) as u64;
    let cap = ((expected as usize).min(MAX_SAMPLES) / sockets.len()) * 21 / 20 + 1024;
    let stop = AtomicBool::new(false);

    let (sends, recvs, cpu) = std::thread::scope(|scope| {
        let groups: Vec<Vec<&UdpSocket>> = match opts.recv_poll {
            None => sockets.iter().map(|s| vec![s]).collect(),
            Some(_) => {
                let n = opts.recv_threads.clamp(1, sockets.len());
                (0..n).map(|t| sockets.iter().skip(t).step_by(n).collect()).collect()
            }
        };
        let receivers: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let (window, stop) = (&window, &stop);
                let cap = cap * group.len();
                scope.spawn(move || receiver(&group, opts.recv_poll, calls, clock, window, stop, cap))
            })
            .collect();
        let senders: Vec<_> = (0..opts.send_threads)
            .map(|t| {
                let schedule = Schedule::for_thread(pacer, t, opts.send_threads, rounds);
                let (sockets, window) = (&sockets, &window);
                scope.spawn(move || sender(target.kind, sockets, legs, schedule, clock, start, window, opts))
            })
            .collect();
        let sample = || {
            let relay_threads = target.pid.and_then(|p| threads_cpu_seconds(p, "babel-relay"));
            (cpu_seconds(target.pid), cpu_seconds(None), machine_busy_seconds(), Instant::now(), relay_threads)
        };
        clock.sleep_until(window.start);
        let before = sample();
        clock.sleep_until(window.end);
        let after = sample();
        let sends: Vec<SendTally> = senders.into_iter().filter_map(|h| h.join().ok()).collect();
        std::thread::sleep(opts.drain);
        stop.store(true, Ordering::Relaxed);
        let recvs: Vec<RecvTally> = receivers.into_iter().filter_map(|h| h.join().ok()).collect();
        (sends, recvs, (before, after))
    });
    ensure!(sends.len() == opts.send_threads && !recvs.is_empty(), "a load thread panicked");
    let drops_after = (udp_drops(&target_port), udp_drops(&client_ports));

    let sent: u64 = sends.iter().map(|s| s.sent).sum();
    let received: u64 = recvs.iter().map(|r| r.received).sum();
    let mut samples: Vec<u64> = Vec::with_capacity(recvs.iter().map(|r| r.latencies.len()).sum());
    for r in &recvs {
        samples.extend_from_slice(&r.latencies);
    }
    let latency = Latency::from_ns(&mut samples);
    let ((s0, g0, m0, t0, r0), (s1, g1, m1, t1, r1)) = cpu;
    let wall = t1.duration_since(t0).as_secs_f64().max(1e-9);
    let seconds = opts.seconds.as_secs_f64();
    let server_cpu = delta(s0, s1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let lost = sent as i64 - received as i64;
    let send_errors = sends.iter().map(|s| s.errors).sum();
    Ok(UdpRun {
        target: target.kind,
        calls,
        participants,
        seconds,
        expected,
        sent,
        received,
        lost,
        loss_pct: if sent > 0 { lost as f64 * 100.0 / sent as f64 } else { 0.0 },
        forwarded_per_s: received as f64 / seconds,
        latency,
        server_cpu_s: server_cpu,
        server_cpu_s_per_mpkt: server_cpu.filter(|_| received > 0).map(|c| c * 1e6 / received as f64),
        relay_threads_cpu_s_per_mpkt: delta(r0, r1)
            .filter(|c| received > 0 && *c > 0.0)
            .map(|c| c * 1e6 / received as f64),
        server_cpu_pct: server_cpu.map(|c| c * 100.0 / wall),
        generator_cpu_pct: delta(g0, g1).map(|c| c * 100.0 / wall),
        machine_busy_pct: delta(m0, m1).map(|c| c * 100.0 / wall / cores),
        other_cpu_pct: other_cpu_pct(delta(m0, m1), server_cpu, delta(g0, g1), wall),
        send_errors,
        late_sends: sends.iter().map(|s| s.late).sum(),
        max_send_lag_ms: sends.iter().map(|s| s.max_lag_ns).max().unwrap_or(0) as f64 / 1e6,
        bad_datagrams: recvs.iter().map(|r| r.bad).sum(),
        target_socket_drops: drops_after.0.zip(drops_before.0).map(|(a, b)| a.saturating_sub(b)),
        client_socket_drops: drops_after.1.zip(drops_before.1).map(|(a, b)| a.saturating_sub(b)),
        bind_rounds,
        held: lost == 0 && send_errors == 0 && received > 0 && sent * 100 >= expected * 99,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timing_round_trip() {
        let t = Timing { call: 999, dir: 1, seq: 12345, sent_ns: 0x0102_0304_0506_0708 };
        let mut payload = vec![0u8; 160];
        assert!(t.write(&mut payload));
        assert_eq!(Timing::read(&payload), Some(t));
        assert_eq!(Timing::read(&payload[..TIMING_LEN]), Some(t));
        assert_eq!(Timing::read(&payload[..TIMING_LEN - 1]), None);
        assert!(!t.write(&mut [0u8; 10]));
        payload[0] = 0;
        assert_eq!(Timing::read(&payload), None, "no magic");
    }

    #[test]
    fn payload_inside_both_datagram_kinds() {
        let t = Timing { call: 3, dir: 0, seq: 1, sent_ns: 77 };
        let mut payload = vec![0u8; 40];
        t.write(&mut payload);
        let mut relayed = Vec::new();
        wire::encode_relayed(babel_proto::UserId(5), &payload, &mut relayed);
        assert_eq!(payload_of(&relayed).and_then(Timing::read), Some(t));
        let mut bare = udp_forward::header(udp_forward::DATA, 6).to_vec();
        bare.extend_from_slice(&payload);
        assert_eq!(payload_of(&bare).and_then(Timing::read), Some(t));
        assert_eq!(payload_of(&[0x09, 1, 2]), None);
    }

    #[test]
    fn pacer_spreads_participants_evenly() {
        let p = Pacer::new(2000, 50);
        assert_eq!(p.period_ns, 20_000_000);
        assert_eq!(p.offset_ns(0), 0);
        assert_eq!(p.offset_ns(1000), 10_000_000);
        assert_eq!(p.due_ns(3, 1000), 70_000_000);
        assert_eq!(p.rounds(1_000_000_000), 50);
        assert_eq!(p.rounds(1_000_000_001), 51);
        // 100 000 sends a second in 250 µs slots: 25 in every slot.
        let mut per_slot = vec![0u32; 80];
        for part in 0..2000 {
            per_slot[(p.offset_ns(part) / 250_000) as usize] += 1;
        }
        assert!(per_slot.iter().all(|&n| n == 25), "{per_slot:?}");
    }

    #[test]
    fn schedules_are_in_time_order_and_cover_everyone() {
        let pacer = Pacer::new(10, 50);
        let mut seen = vec![0u32; 10];
        for t in 0..3 {
            let mut s = Schedule::for_thread(pacer, t, 3, 4);
            let mut last = 0;
            let mut count = 0;
            while let Some((due, p, round)) = s.peek() {
                assert!(due >= last, "time order");
                assert_eq!(p % 3, t);
                assert_eq!(due, pacer.due_ns(round, p));
                last = due;
                seen[p] += 1;
                count += 1;
                s.advance();
                assert!(count <= 16, "bounded");
            }
        }
        assert!(seen.iter().all(|&n| n == 4), "{seen:?}");
        // 2000 participants at 50/s over one sender: 25 due per 250 µs slot.
        let one = Schedule::for_thread(Pacer::new(2000, 50), 0, 1, 1);
        assert_eq!(one.max_batch(250_000), 54);
        assert_eq!(Schedule::for_thread(Pacer::new(2, 50), 0, 1, 1).max_batch(250_000), 4);
    }

    #[test]
    fn token_bucket_limits_catch_up() {
        // 2000 participants at 50/s: 100 000/s, so 200 000/s when catching
        // up, one token every 5 µs, at most 54 at once.
        let mut b = Schedule::for_thread(Pacer::new(2000, 50), 0, 1, 1).catch_up(250_000);
        let burst = (0..1000).take_while(|_| b.take(1_000_000)).count();
        assert_eq!(burst, 54);
        assert!(!b.take(1_004_000));
        assert!(b.take(1_006_000));
        // A long pause refills to the cap only.
        let again = (0..1000).take_while(|_| b.take(9_000_000_000)).count();
        assert_eq!(again, 54);
    }

    #[test]
    fn nonces_grow() {
        let a = next_nonce();
        let b = next_nonce();
        assert!(b > a);
    }

    #[test]
    fn proc_net_udp_drops() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0000000000000000 17\n\
  124: 0100007F:A000 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4243 2 0000000000000000 3\n";
        assert_eq!(parse_udp_drops(text, &[8080]), 17);
        assert_eq!(parse_udp_drops(text, &[0xA000, 8080]), 20);
        assert_eq!(parse_udp_drops(text, &[1]), 0);
    }

    #[test]
    fn bare_forwarder_run_loses_nothing() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || udp_forward::serve(&server, Duration::from_secs(3)).unwrap());
        let legs: Vec<Leg> = (0..20).map(|h| Leg { handle: h, key: [0; 16] }).collect();
        let target = UdpTarget { kind: TargetKind::Bare, addr, pid: None, legs: &legs };
        let opts = UdpOptions {
            sockets: 2,
            pps: 50,
            payload: 64,
            warmup: Duration::from_millis(100),
            seconds: Duration::from_millis(400),
            drain: Duration::from_millis(200),
            slot: Duration::from_micros(250),
            send_threads: 2,
            buffer_bytes: 1 << 20,
            recv_poll: None,
            recv_threads: 1,
        };
        let r = run(&target, 10, &opts).unwrap();
        assert_eq!(r.lost, 0, "{r:?}");
        let opts = UdpOptions { recv_poll: Some(Duration::from_micros(100)), ..opts };
        let r = run(&target, 10, &opts).unwrap();
        assert_eq!(r.expected, 400);
        assert!(r.sent >= 390 && r.sent <= 410, "{r:?}");
        assert_eq!(r.lost, 0, "{r:?}");
        assert!(r.held);
        assert_eq!(r.latency.count, r.received);
        t.join().unwrap();
    }
}
