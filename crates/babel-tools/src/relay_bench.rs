//! `babel-relay-bench`: voice through `babel-server`'s UDP relay and call
//! channels, compared with a bare UDP forwarder.
//!
//! 1. Starts a `babel-server` child on 127.0.0.1 with a temporary database
//!    and cheap password hashing, and a `babel-udp-forward` child.
//! 2. Sets up pairs of accounts (bounded concurrency): both create an
//!    account, become contacts, A calls B, B accepts; every signalling
//!    connection stays open so the calls stay up.
//! 3. Sends paced voice datagrams through the relay and through the bare
//!    forwarder ([`crate::udp_load`]), then `/send` frames through call
//!    channels, and optionally searches for the most calls each holds with
//!    no loss ([`Bisect`]).
//!
//! Every wait has a time limit and every loop a count limit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use babel_client::{CallChannel, Client};
use babel_proto::{CallId, ChannelFrame, MediaSetup, SendData};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::child::{ChildServer, cpu_seconds, machine_busy_seconds};
use crate::report::Machine;
use crate::stats::Latency;
use crate::udp_load::{self, Clock, Leg, Pacer, TIMING_LEN, TargetKind, Timing, UdpOptions, UdpRun, UdpTarget, Window};

/// Password of every bench account.
pub const PASSWORD: &str = "babel-relay-bench-password";
/// argon2 memory for the bench accounts (KiB): setup must be quick.
pub const PASSWORD_MEMORY_KIB: u32 = 256;
/// argon2 passes for the bench accounts.
pub const PASSWORD_ITERATIONS: u32 = 1;
/// The issue's goal: this many concurrent relayed calls…
pub const TARGET_CALLS: usize = 1000;
/// …with a p99 added latency under this many ms (and no loss).
pub const TARGET_P99_MS: f64 = 2.0;

const REQUEST_LIMIT: Duration = Duration::from_secs(60);
const SETUP_LIMIT: Duration = Duration::from_secs(900);
const CHANNEL_OPEN_LIMIT: Duration = Duration::from_secs(120);
const START_LIMIT: Duration = Duration::from_secs(30);

/// Everything the bench can be told.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Concurrent calls of the main UDP runs.
    pub calls: usize,
    /// Calls of the call-channel run (0: none).
    pub channel_calls: usize,
    /// UDP traffic shape.
    pub udp: UdpOptions,
    /// Skip the bare forwarder.
    pub no_bare: bool,
    /// Search for the most calls held with no loss.
    pub find_max: bool,
    /// Calls of the search's first run.
    pub find_start: usize,
    /// Most calls the search tries (all are set up first).
    pub max_calls: usize,
    /// Most runs of the search, per target.
    pub find_runs: usize,
    /// Measured seconds of each search run.
    pub find_seconds: Duration,
    /// Search resolution, percent of the calls held.
    pub find_resolution_pct: usize,
    /// Setup requests in flight at once.
    pub setup_concurrency: usize,
    /// A UDP run during which other work took more than this % of a core
    /// is run again…
    pub max_other_pct: f64,
    /// …up to this many times in all.
    pub attempts: u32,
    /// Before each UDP run, wait at most this long for the machine to be
    /// quiet (0: do not wait).
    pub quiet_wait: Duration,
    /// The babel-server binary.
    pub server_bin: PathBuf,
    /// The babel-udp-forward binary.
    pub forward_bin: PathBuf,
    /// Socket buffer of the bare forwarder (0: the system default, as the
    /// server's relay socket has).
    pub forward_buffer_bytes: usize,
    /// The relay's worker counts to measure, one server each (0: the
    /// server's default, one per core). The first serves every other run
    /// (bare comparison, channels, search).
    pub relay_workers: Vec<usize>,
    /// Also offer this many calls to each worker count, to see how many
    /// datagrams a second it forwards when overloaded (0: skip).
    pub saturate_calls: usize,
    /// The server's `relay_gather_us` (`None`: its default).
    pub relay_gather_us: Option<u64>,
    /// coturn side by side (`crate::turn_bench`): uclient clients, and the
    /// relay's runs at the same rate.
    pub coturn: Option<crate::turn_bench::TurnOptions>,
}

/// One worker count of the relay, measured.
#[derive(Debug, Clone, Serialize)]
pub struct WorkersRun {
    /// Workers asked for (0: the server's default, one per core).
    pub workers: usize,
    /// At `--calls`.
    pub relay: UdpRun,
    /// At `--saturate-calls`.
    pub saturated: Option<UdpRun>,
    /// At the coturn run's rate.
    pub at_coturn_rate: Option<UdpRun>,
    /// Relayed datagrams per CPU-second at the coturn run's rate, ÷
    /// coturn's.
    pub versus_coturn: Option<f64>,
}

/// One call, as set up: both clients (their connections keep the call up),
/// the call id and both relay grants.
#[derive(Debug)]
pub struct Pair {
    /// The caller.
    pub a: Client,
    /// The callee.
    pub b: Client,
    /// The call.
    pub call: CallId,
    /// Caller's and callee's relay credentials.
    pub legs: [Leg; 2],
    /// The relay's UDP port.
    pub relay_port: u16,
}

fn grant_leg(g: &babel_proto::RelayGrant) -> anyhow::Result<(u16, Leg)> {
    let (port, handle, key) = g.parts().context("malformed relay grant")?;
    Ok((port, Leg { handle, key }))
}

async fn make_pair(addr: String, i: usize) -> anyhow::Result<Pair> {
    let (ea, eb) = (format!("relay-{i}-a@example.org"), format!("relay-{i}-b@example.org"));
    let mut a = Client::connect(addr.clone()).await?.with_timeout(REQUEST_LIMIT);
    let mut b = Client::connect(addr).await?.with_timeout(REQUEST_LIMIT);
    let sa = a.create(&ea, PASSWORD, None).await.context("/create")?;
    let sb = b.create(&eb, PASSWORD, None).await.context("/create")?;
    a.add_contact(&eb).await.context("/add_contact")?;
    b.accept_contact(sa.id).await.context("/accept_contact")?;
    let started = a.call(sb.id, MediaSetup::default()).await.context("/call")?;
    let joined = b.accept_call(started.call_id, MediaSetup::default()).await.context("/answer")?;
    let (pa, la) = grant_leg(&started.relay)?;
    let (pb, lb) = grant_leg(&joined.relay)?;
    ensure!(pa == pb, "the two grants name different relay ports");
    Ok(Pair { a, b, call: started.call_id, legs: [la, lb], relay_port: pa })
}

/// Sets up `n` calls, `concurrency` at a time.
pub async fn setup_pairs(addr: SocketAddr, n: usize, concurrency: usize) -> anyhow::Result<Vec<Pair>> {
    crate::net::check_target(&addr)?;
    let started = Instant::now();
    let work = futures::stream::iter(0..n)
        .map(|i| async move {
            let p = make_pair(addr.to_string(), i).await.with_context(|| format!("setting up call {i}"))?;
            if (i + 1) % 500 == 0 {
                eprintln!("setup: {} of {n} calls up ({:.0} s)", i + 1, started.elapsed().as_secs_f64());
            }
            anyhow::Ok(p)
        })
        .buffered(concurrency.max(1))
        .try_collect::<Vec<Pair>>();
    match tokio::time::timeout(SETUP_LIMIT, work).await {
        Ok(r) => r,
        Err(_) => bail!("setup took longer than {SETUP_LIMIT:?}"),
    }
}

/// The timing inside a relayed `/send` frame's data: the first packet's
/// first [`TIMING_LEN`] bytes, read from its base64 without parsing the JSON
/// (the packets array is the only `["` in `/send` data).
pub fn channel_timing(data: &[u8]) -> Option<Timing> {
    let at = data.windows(2).position(|w| w == b"[\"")? + 2;
    let b64 = data.get(at..at + TIMING_LEN / 3 * 4)?;
    let mut raw = [0u8; TIMING_LEN];
    let n = STANDARD.decode_slice(b64, &mut raw).ok()?;
    Timing::read(raw.get(..n)?)
}

/// What the call-channel run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelRun {
    /// Calls.
    pub calls: usize,
    /// Participants (two per call), each sending.
    pub participants: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Frames the schedule asks for in the window.
    pub expected: u64,
    /// Frames sent in the window.
    pub sent: u64,
    /// Of those, received.
    pub received: u64,
    /// `sent - received` after the drain.
    pub lost: i64,
    /// Loss in percent of `sent`.
    pub loss_pct: f64,
    /// Received frames per second.
    pub frames_per_s: f64,
    /// Receive time minus send time.
    pub latency: Latency,
    /// Server CPU in the window.
    pub server_cpu_s: Option<f64>,
    /// Server CPU per million relayed frames.
    pub server_cpu_s_per_mframe: Option<f64>,
    /// Server CPU, percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// This process's CPU, percent of one core.
    pub generator_cpu_pct: Option<f64>,
    /// The machine's busy CPU, percent of all cores.
    pub machine_busy_pct: Option<f64>,
    /// Busy CPU of everything else, percent of one core.
    pub other_cpu_pct: Option<f64>,
    /// Sends more than 5 ms behind schedule (tokio's timer has 1 ms ticks).
    pub late_sends: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Frames that were not ours.
    pub bad_frames: u64,
    /// No loss, no send error, the whole schedule sent.
    pub held: bool,
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    late: u64,
    errors: u64,
    received: u64,
    bad: u64,
    latencies: Vec<u64>,
}

/// `/send` frames at `opts.pps` per participant through `calls` calls'
/// channels for `opts.warmup + seconds`, then a drain.
pub async fn run_channel(
    pairs: &[Pair],
    calls: usize,
    opts: &UdpOptions,
    seconds: Duration,
    server_pid: Option<u32>,
) -> anyhow::Result<ChannelRun> {
    ensure!(calls >= 1 && pairs.len() >= calls, "only {} calls set up", pairs.len());
    let participants = 2 * calls;
    let open = futures::stream::iter(0..participants)
        .map(|p| async move {
            let pair = &pairs[p / 2];
            let who = if p % 2 == 0 { &pair.a } else { &pair.b };
            anyhow::Ok(who.connect_call(pair.call).await.context("/connect_call")?)
        })
        .buffered(64)
        .try_collect::<Vec<CallChannel>>();
    let channels = match tokio::time::timeout(CHANNEL_OPEN_LIMIT, open).await {
        Ok(r) => r?,
        Err(_) => bail!("opening call channels took longer than {CHANNEL_OPEN_LIMIT:?}"),
    };

    let pacer = Pacer::new(participants, opts.pps);
    let base = tokio::time::Instant::now();
    let clock = Clock::at(base.into_std());
    let start = 50_000_000u64;
    let warm = opts.warmup.as_nanos() as u64;
    let measured = seconds.as_nanos() as u64;
    let window = Window { start: start + warm, end: start + warm + measured };
    let rounds = pacer.rounds(warm + measured);
    let expected = participants as u64 * (measured as u128 * u128::from(opts.pps) / 1_000_000_000) as u64;
    let stop_receiving = base + Duration::from_nanos(window.end) + opts.drain;
    let at = move |ns: u64| base + Duration::from_nanos(ns);

    let mut senders = tokio::task::JoinSet::new();
    let mut receivers = tokio::task::JoinSet::new();
    for (p, ch) in channels.into_iter().enumerate() {
        let (mut tx, mut rx) = ch.split();
        let payload_len = opts.payload;
        senders.spawn(async move {
            let mut t = Tally::default();
            let mut payload = vec![0x5Au8; payload_len];
            for round in 0..rounds {
                let due = start + pacer.due_ns(round, p);
                if due >= window.end {
                    break;
                }
                tokio::time::sleep_until(at(due)).await;
                let sent_ns = clock.ns();
                if sent_ns.saturating_sub(due) > 5_000_000 {
                    t.late += 1;
                }
                Timing { call: (p / 2) as u32, dir: (p % 2) as u8, seq: round as u32, sent_ns }.write(&mut payload);
                let Ok(data) = SendData::new("voice", &[&payload]) else { break };
                match tokio::time::timeout(Duration::from_secs(1), tx.send_raw(Bytes::from(data.to_json()))).await {
                    Ok(Ok(())) if window.holds(sent_ns) => t.sent += 1,
                    Ok(Ok(())) => {}
                    _ => t.errors += 1,
                }
            }
            (t, tx)
        });
        receivers.spawn(async move {
            let mut t = Tally::default();
            let hard_limit = 10 * rounds + 1000;
            for _ in 0..hard_limit {
                match tokio::time::timeout_at(stop_receiving, rx.recv()).await {
                    Ok(Ok(Some(ChannelFrame::Send { data, .. }))) => {
                        let now = clock.ns();
                        match channel_timing(&data) {
                            Some(tm) if (tm.call as usize) < calls => {
                                if window.holds(tm.sent_ns) {
                                    t.received += 1;
                                    t.latencies.push(now.saturating_sub(tm.sent_ns));
                                }
                            }
                            _ => t.bad += 1,
                        }
                    }
                    Ok(Ok(Some(ChannelFrame::CallEnded(..)))) | Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
                }
            }
            t
        });
    }
    let sample = || (cpu_seconds(server_pid), cpu_seconds(None), machine_busy_seconds(), Instant::now());
    tokio::time::sleep_until(at(window.start)).await;
    let before = sample();
    tokio::time::sleep_until(at(window.end)).await;
    let after = sample();
    let mut total = Tally::default();
    let mut writers = Vec::with_capacity(participants);
    while let Some(r) = senders.join_next().await {
        let (t, tx) = r.context("a channel sender panicked")?;
        total.sent += t.sent;
        total.late += t.late;
        total.errors += t.errors;
        writers.push(tx);
    }
    let mut samples = Vec::new();
    while let Some(r) = receivers.join_next().await {
        let t = r.context("a channel receiver panicked")?;
        total.received += t.received;
        total.bad += t.bad;
        samples.extend_from_slice(&t.latencies);
    }
    drop(writers);
    let latency = Latency::from_ns(&mut samples);
    let wall = after.3.duration_since(before.3).as_secs_f64().max(1e-9);
    let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let server_cpu = d(before.0, after.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let lost = total.sent as i64 - total.received as i64;
    let secs = seconds.as_secs_f64();
    Ok(ChannelRun {
        calls,
        participants,
        seconds: secs,
        expected,
        sent: total.sent,
        received: total.received,
        lost,
        loss_pct: if total.sent > 0 { lost as f64 * 100.0 / total.sent as f64 } else { 0.0 },
        frames_per_s: total.received as f64 / secs,
        latency,
        server_cpu_s: server_cpu,
        server_cpu_s_per_mframe: server_cpu.filter(|_| total.received > 0).map(|c| c * 1e6 / total.received as f64),
        server_cpu_pct: server_cpu.map(|c| c * 100.0 / wall),
        generator_cpu_pct: d(before.1, after.1).map(|c| c * 100.0 / wall),
        machine_busy_pct: d(before.2, after.2).map(|c| c * 100.0 / wall / cores),
        other_cpu_pct: udp_load::other_cpu_pct(d(before.2, after.2), server_cpu, d(before.1, after.1), wall),
        late_sends: total.late,
        send_errors: total.errors,
        bad_frames: total.bad,
        held: lost == 0 && total.errors == 0 && total.received > 0 && total.sent * 100 >= expected * 99,
    })
}

/// Doubling, then bisecting, for the most calls that hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bisect {
    held: usize,
    failed: Option<usize>,
    start: usize,
    max: usize,
    resolution_pct: usize,
}

impl Bisect {
    /// Starts at `start` calls, never tries more than `max`, and stops when
    /// the gap between held and failed is within `resolution_pct` % of held.
    pub fn new(start: usize, max: usize, resolution_pct: usize) -> Bisect {
        Bisect { held: 0, failed: None, start: start.clamp(1, max.max(1)), max: max.max(1), resolution_pct }
    }

    /// The next number of calls to try; `None` when done.
    pub fn next(&self) -> Option<usize> {
        match self.failed {
            None if self.held >= self.max => None,
            None if self.held == 0 => Some(self.start),
            None => Some((self.held * 2).min(self.max)),
            Some(f) => {
                let gap = f.saturating_sub(self.held);
                (gap > 1 && gap * 100 > self.held * self.resolution_pct).then_some((self.held + f) / 2)
            }
        }
    }

    /// Records a run.
    pub fn record(&mut self, calls: usize, held: bool) {
        if held {
            self.held = self.held.max(calls);
        } else {
            self.failed = Some(self.failed.map_or(calls, |f| f.min(calls)));
        }
    }

    /// Most calls held so far (0: none).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Fewest calls that failed so far.
    pub fn failed(&self) -> Option<usize> {
        self.failed
    }
}

/// One run of the search, in short.
#[derive(Debug, Clone, Serialize)]
pub struct SearchRun {
    /// Calls.
    pub calls: usize,
    /// Held?
    pub held: bool,
    /// Datagrams lost.
    pub lost: i64,
    /// Forwarded per second.
    pub forwarded_per_s: f64,
    /// p99 added latency.
    pub p99_ms: f64,
    /// Target CPU, percent of a core.
    pub server_cpu_pct: Option<f64>,
    /// Generator CPU, percent of a core.
    pub generator_cpu_pct: Option<f64>,
    /// Machine busy, percent of all cores.
    pub machine_busy_pct: Option<f64>,
    /// Everything else, percent of one core.
    pub other_cpu_pct: Option<f64>,
    /// Sends > 1 ms late.
    pub late_sends: u64,
    /// Kernel drops at the target's socket.
    pub target_socket_drops: Option<u64>,
    /// Kernel drops at the generator's sockets.
    pub client_socket_drops: Option<u64>,
}

impl From<&UdpRun> for SearchRun {
    fn from(r: &UdpRun) -> Self {
        SearchRun {
            calls: r.calls,
            held: r.held,
            lost: r.lost,
            forwarded_per_s: r.forwarded_per_s,
            p99_ms: r.latency.p99_ms,
            server_cpu_pct: r.server_cpu_pct,
            generator_cpu_pct: r.generator_cpu_pct,
            machine_busy_pct: r.machine_busy_pct,
            other_cpu_pct: r.other_cpu_pct,
            late_sends: r.late_sends,
            target_socket_drops: r.target_socket_drops,
            client_socket_drops: r.client_socket_drops,
        }
    }
}

/// The search's outcome for one target.
#[derive(Debug, Clone, Serialize)]
pub struct MaxCalls {
    /// `relay` or `bare`.
    pub target: TargetKind,
    /// Most calls held with no loss (0: none).
    pub held_calls: usize,
    /// Fewest calls that lost something.
    pub failed_calls: Option<usize>,
    /// Whether the search stopped at `--max-calls` without a failure.
    pub hit_max: bool,
    /// Every run.
    pub runs: Vec<SearchRun>,
}

/// Machine busy below this share of all cores counts as quiet.
const QUIET_BUSY_PCT: f64 = 15.0;

/// Waits, at most `limit`, until the machine has been quiet (under
/// `QUIET_BUSY_PCT` busy) for a second; answers whether it was.
pub fn wait_for_quiet(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut waited = false;
    loop {
        let Some(b0) = machine_busy_seconds() else { return false };
        std::thread::sleep(Duration::from_secs(1));
        let Some(b1) = machine_busy_seconds() else { return false };
        let pct = (b1 - b0) * 100.0 / cores;
        if pct < QUIET_BUSY_PCT {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("the machine is still {pct:.0} % busy; measuring anyway");
            return false;
        }
        if !waited {
            eprintln!("the machine is {pct:.0} % busy with other work; waiting (at most {limit:?})");
            waited = true;
        }
    }
}

/// Whether other work on the machine disturbed a run.
pub fn disturbed(r: &UdpRun, max_other_pct: f64) -> bool {
    r.other_cpu_pct.is_some_and(|o| o > max_other_pct)
}

/// A run, repeated (at most [`BenchOptions::attempts`] times in all) while
/// other work on the machine took more than `max_other_pct` % of a core.
fn undisturbed_run(
    target: &UdpTarget<'_>,
    calls: usize,
    udp: &UdpOptions,
    opts: &BenchOptions,
) -> anyhow::Result<UdpRun> {
    let mut r = udp_load::run(target, calls, udp)?;
    for _ in 1..opts.attempts.max(1) {
        if !disturbed(&r, opts.max_other_pct) {
            break;
        }
        eprintln!(
            "{} at {calls} calls: other work took {:.0} % of a core; running again",
            target.kind.name(),
            r.other_cpu_pct.unwrap_or(0.0)
        );
        std::thread::sleep(Duration::from_secs(1));
        wait_for_quiet(opts.quiet_wait);
        r = udp_load::run(target, calls, udp)?;
    }
    Ok(r)
}

fn search(target: &UdpTarget<'_>, opts: &BenchOptions) -> anyhow::Result<MaxCalls> {
    let mut b = Bisect::new(opts.find_start, opts.max_calls, opts.find_resolution_pct);
    let udp = UdpOptions { seconds: opts.find_seconds, ..opts.udp.clone() };
    let mut runs = Vec::new();
    for _ in 0..opts.find_runs {
        let Some(n) = b.next() else { break };
        let r = undisturbed_run(target, n, &udp, opts)?;
        eprintln!(
            "find-max {}: {n} calls: {} (lost {}, p99 {:.3} ms, machine {:.0} %)",
            target.kind.name(),
            if r.held { "held" } else { "failed" },
            r.lost,
            r.latency.p99_ms,
            r.machine_busy_pct.unwrap_or(0.0)
        );
        b.record(n, r.held);
        runs.push(SearchRun::from(&r));
    }
    Ok(MaxCalls {
        target: target.kind,
        held_calls: b.held(),
        failed_calls: b.failed(),
        hit_max: b.failed().is_none() && b.held() >= opts.max_calls,
        runs,
    })
}

/// relay ÷ bare.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Target CPU per forwarded datagram.
    pub cpu_per_packet: Option<f64>,
    /// p50 added latency.
    pub p50: f64,
    /// p99 added latency.
    pub p99: f64,
    /// Most calls held (when searched).
    pub max_calls: Option<f64>,
}

/// The issue's target, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Whether 1000 relayed calls held with 0 loss and p99 < 2 ms.
    pub holds: Option<bool>,
    /// Why.
    pub reason: String,
}

/// The run's settings, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Calls of the main runs.
    pub calls: usize,
    /// Calls of the channel run.
    pub channel_calls: usize,
    /// Packets a second per participant.
    pub pps: u32,
    /// Payload bytes.
    pub payload: usize,
    /// Client UDP sockets.
    pub sockets: usize,
    /// Sender threads.
    pub send_threads: usize,
    /// Pacing slot, µs.
    pub slot_us: u64,
    /// Receiver pause when polling, µs (0: blocking receivers).
    pub recv_poll_us: u64,
    /// Receiver threads.
    pub recv_threads: usize,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Drain after sending, ms.
    pub drain_ms: u64,
    /// Client socket buffers, bytes.
    pub client_buffer_bytes: usize,
    /// argon2 memory of the bench accounts, KiB.
    pub password_memory_kib: u32,
    /// argon2 passes of the bench accounts.
    pub password_iterations: u32,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where.
    pub machine: Machine,
    /// How.
    pub settings: Settings,
    /// Calls set up.
    pub setup_calls: usize,
    /// Seconds setup took.
    pub setup_seconds: f64,
    /// Through babel-server's relay.
    pub relay: Option<UdpRun>,
    /// Through the bare forwarder.
    pub bare: Option<UdpRun>,
    /// relay ÷ bare.
    pub ratio: Option<Ratio>,
    /// Through call channels.
    pub channel: Option<ChannelRun>,
    /// Most calls held, per target.
    pub max_calls: Vec<MaxCalls>,
    /// The relay per worker count.
    pub workers: Vec<WorkersRun>,
    /// coturn at the same rate.
    pub coturn: Option<crate::turn_bench::TurnRun>,
    /// The issue's target.
    pub target: Verdict,
    /// Remarks.
    pub notes: Vec<String>,
}

/// Removes a directory when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_server(bin: &Path, dir: &Path, workers: usize, gather_us: Option<u64>) -> anyhow::Result<ChildServer> {
    let config = dir.join("babel.toml");
    let gather = gather_us.map_or(String::new(), |g| format!("relay_gather_us = {g}\n"));
    std::fs::write(
        &config,
        format!(
            "max_connections = 1000000\ndurability = \"normal\"\nrelay_challenge_every_ms = 0\n{gather}\n[password]\nmemory_kib = {PASSWORD_MEMORY_KIB}\niterations = {PASSWORD_ITERATIONS}\n"
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .arg("--db")
        .arg(dir.join("babel.db"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null());
    if workers > 0 {
        cmd.arg("--relay-workers").arg(workers.to_string());
    }
    ChildServer::start("babel-server", cmd, START_LIMIT).with_context(|| {
        format!("starting {} (build it with `cargo build --release -p babel-server -p babel-tools`)", bin.display())
    })
}

fn start_forwarder(bin: &Path, buffer_bytes: usize) -> anyhow::Result<ChildServer> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--exit-on-stdin-eof"])
        .arg("--buffer-bytes")
        .arg(buffer_bytes.to_string())
        .stdin(Stdio::piped());
    ChildServer::start("babel-udp-forward", cmd, START_LIMIT).with_context(|| format!("starting {}", bin.display()))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// Runs everything and answers the report.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    ensure!(opts.calls >= 1, "--calls must be at least 1");
    ensure!(opts.udp.pps >= 1 && opts.udp.pps <= 1000, "--pps must be 1 ..= 1000");
    let coturn_calls = opts.coturn.as_ref().map_or(0, |c| c.clients);
    let setup_calls = opts
        .calls
        .max(opts.channel_calls)
        .max(if opts.find_max { opts.max_calls } else { 0 })
        .max(opts.saturate_calls)
        .max(coturn_calls);
    ensure!(setup_calls <= 50_000, "at most 50000 calls");
    if let Err(e) = crate::raise_fd_limit() {
        eprintln!("babel-relay-bench: cannot raise the file descriptor limit: {e}");
    }
    let dir = TempDir(std::env::temp_dir().join(format!("babel-relay-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
    ensure!(!opts.relay_workers.is_empty(), "at least one relay worker count");
    let first_workers = opts.relay_workers[0];
    let mut server = start_server(&opts.server_bin, &dir.0, first_workers, opts.relay_gather_us)?;
    let forwarder =
        if opts.no_bare { None } else { Some(start_forwarder(&opts.forward_bin, opts.forward_buffer_bytes)?) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    eprintln!("babel-relay-bench: server at {}; setting up {setup_calls} calls", server.addr());
    let setup_started = Instant::now();
    let pairs = rt.block_on(setup_pairs(server.addr(), setup_calls, opts.setup_concurrency))?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let result = measure(opts, &rt, &mut server, forwarder.as_ref(), &pairs);
    let more = match &result {
        Ok((Some(relay), ..)) => {
            let target = relay_target(&server, &pairs)?;
            extra_runs(&target, opts, first_workers, relay.clone())
        }
        _ => Ok(None),
    };
    rt.block_on(async move { drop(pairs) });
    drop(server);
    let (relay, bare, channel, max_calls) = result?;
    let mut workers: Vec<WorkersRun> = more?.into_iter().collect();
    for (i, &w) in opts.relay_workers.iter().enumerate().skip(1) {
        let dir = TempDir(std::env::temp_dir().join(format!("babel-relay-bench-{}-{i}", std::process::id())));
        std::fs::create_dir_all(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
        let server = start_server(&opts.server_bin, &dir.0, w, opts.relay_gather_us)?;
        eprintln!("babel-relay-bench: relay with {w} worker(s): setting up {setup_calls} calls");
        let pairs = rt.block_on(setup_pairs(server.addr(), setup_calls, opts.setup_concurrency))?;
        let r = relay_target(&server, &pairs).and_then(|t| {
            eprintln!("babel-relay-bench: relay with {w} worker(s), {} calls", opts.calls);
            let target = UdpTarget { kind: TargetKind::Relay, addr: t.addr, pid: Some(t.pid), legs: &t.legs };
            let first = undisturbed_run(&target, opts.calls, &opts.udp, opts)?;
            extra_runs(&t, opts, w, first)
        });
        rt.block_on(async move { drop(pairs) });
        workers.extend(r?);
    }
    let coturn = match &opts.coturn {
        Some(c) => {
            eprintln!("babel-relay-bench: coturn, {} uclient clients", c.clients);
            wait_for_quiet(opts.quiet_wait);
            let r = crate::turn_bench::run(c)?;
            for w in &mut workers {
                w.versus_coturn = w
                    .at_coturn_rate
                    .as_ref()
                    .and_then(|x| x.server_cpu_s_per_mpkt)
                    .zip(r.server_cpu_s_per_mpkt)
                    .map(|(mine, theirs)| ratio(theirs, mine));
            }
            Some(r)
        }
        None => None,
    };
    let mut notes = vec![
        format!(
            "bench accounts use argon2 memory_kib = {PASSWORD_MEMORY_KIB}, iterations = {PASSWORD_ITERATIONS} and durability = \"normal\" so that setup is quick; neither touches the media path"
        ),
        "the load generator, babel-server and babel-udp-forward share this machine's CPUs".to_owned(),
        match opts.udp.recv_poll {
            Some(p) => format!(
                "latency is receive time minus send time in the generator: both kernel hops, the target, and up to {} µs of the receiver's polling pause",
                p.as_micros()
            ),
            None => "latency is receive time minus send time in the generator: both kernel hops, the target, and the receiver thread's wake-up".to_owned(),
        },
    ];
    notes.push(format!(
        "each UDP run waits (at most {:.0} s) for the machine to be under {QUIET_BUSY_PCT:.0} % busy; a run during which other work took more than {:.0} % of a core (column other%: other processes and interrupt work charged to none) is repeated, {} runs at most",
        opts.quiet_wait.as_secs_f64(), opts.max_other_pct, opts.attempts
    ));
    for r in relay.iter().chain(&bare) {
        if disturbed(r, opts.max_other_pct) {
            notes.push(format!(
                "{}: still disturbed after {} runs (other work {:.0} % of a core)",
                r.target.name(),
                opts.attempts,
                r.other_cpu_pct.unwrap_or(0.0)
            ));
        }
        if r.late_sends * 1000 > r.sent {
            notes.push(format!(
                "{}: {} of {} sends ({:.1} %) were > 1 ms behind schedule (worst {:.1} ms): the generator was not always scheduled",
                r.target.name(),
                r.late_sends,
                r.sent,
                r.late_sends as f64 * 100.0 / r.sent.max(1) as f64,
                r.max_send_lag_ms
            ));
        }
        if let Some(d) = r.target_socket_drops.filter(|&d| d > 0) {
            notes.push(format!(
                "{}: the kernel dropped {d} datagrams at the target's socket (receive buffer full)",
                r.target.name()
            ));
        }
        if let Some(d) = r.client_socket_drops.filter(|&d| d > 0) {
            notes.push(format!(
                "{}: the kernel dropped {d} datagrams at the generator's sockets (receive buffer full)",
                r.target.name()
            ));
        }
        if r.machine_busy_pct.unwrap_or(0.0) >= 90.0 {
            notes.push(format!(
                "{}: the machine was {:.0} % busy: CPU-bound",
                r.target.name(),
                r.machine_busy_pct.unwrap_or(0.0)
            ));
        }
    }
    let ratio = match (&relay, &bare) {
        (Some(r), Some(b)) => Some(Ratio {
            cpu_per_packet: r.server_cpu_s_per_mpkt.zip(b.server_cpu_s_per_mpkt).map(|(x, y)| ratio(x, y)),
            p50: ratio(r.latency.p50_ms, b.latency.p50_ms),
            p99: ratio(r.latency.p99_ms, b.latency.p99_ms),
            max_calls: match (
                max_calls.iter().find(|m| m.target == TargetKind::Relay),
                max_calls.iter().find(|m| m.target == TargetKind::Bare),
            ) {
                (Some(x), Some(y)) => Some(ratio(x.held_calls as f64, y.held_calls as f64)),
                _ => None,
            },
        }),
        _ => None,
    };
    let target = match &relay {
        Some(r) if r.calls >= TARGET_CALLS && opts.udp.pps >= 50 => {
            let holds = r.held && r.latency.p99_ms < TARGET_P99_MS;
            Verdict {
                holds: Some(holds),
                reason: format!(
                    "{} calls, {:.0} datagrams/s forwarded: lost {}, p99 {:.3} ms ({})",
                    r.calls,
                    r.forwarded_per_s,
                    r.lost,
                    r.latency.p99_ms,
                    if holds { "target met" } else { "target missed" }
                ),
            }
        }
        _ => Verdict { holds: None, reason: format!("not measured at {TARGET_CALLS} calls and 50 packets/s") },
    };
    Ok(Report {
        machine: Machine::detect(),
        settings: Settings {
            calls: opts.calls,
            channel_calls: opts.channel_calls,
            pps: opts.udp.pps,
            payload: opts.udp.payload,
            sockets: opts.udp.sockets,
            send_threads: opts.udp.send_threads,
            slot_us: opts.udp.slot.as_micros() as u64,
            recv_poll_us: opts.udp.recv_poll.map_or(0, |d| d.as_micros() as u64),
            recv_threads: match opts.udp.recv_poll {
                None => opts.udp.sockets,
                Some(_) => opts.udp.recv_threads.clamp(1, opts.udp.sockets),
            },
            warmup_s: opts.udp.warmup.as_secs_f64(),
            seconds: opts.udp.seconds.as_secs_f64(),
            drain_ms: opts.udp.drain.as_millis() as u64,
            client_buffer_bytes: opts.udp.buffer_bytes,
            password_memory_kib: PASSWORD_MEMORY_KIB,
            password_iterations: PASSWORD_ITERATIONS,
        },
        setup_calls,
        setup_seconds,
        relay,
        bare,
        ratio,
        channel,
        max_calls,
        workers,
        coturn,
        target,
        notes,
    })
}

fn relay_target(server: &ChildServer, pairs: &[Pair]) -> anyhow::Result<OwnedTarget> {
    let relay_port = pairs.first().map(|p| p.relay_port).context("no calls")?;
    Ok(OwnedTarget {
        addr: SocketAddr::new(server.addr().ip(), relay_port),
        pid: server.pid(),
        legs: pairs.iter().flat_map(|p| p.legs).collect(),
    })
}

/// A relay target that owns its legs.
#[derive(Debug)]
struct OwnedTarget {
    addr: SocketAddr,
    pid: u32,
    legs: Vec<Leg>,
}

/// The runs of one worker count beyond the first: overloaded, and at the
/// coturn run's rate.
fn extra_runs(
    t: &OwnedTarget,
    opts: &BenchOptions,
    workers: usize,
    relay: UdpRun,
) -> anyhow::Result<Option<WorkersRun>> {
    if opts.relay_workers.len() < 2 && opts.saturate_calls == 0 && opts.coturn.is_none() {
        return Ok(None);
    }
    let target = UdpTarget { kind: TargetKind::Relay, addr: t.addr, pid: Some(t.pid), legs: &t.legs };
    let saturated = match opts.saturate_calls {
        0 => None,
        n => {
            eprintln!("babel-relay-bench: relay with {workers} worker(s), {n} calls offered");
            Some(undisturbed_run(&target, n, &opts.udp, opts)?)
        }
    };
    let at_coturn_rate = match &opts.coturn {
        Some(c) => {
            eprintln!("babel-relay-bench: relay with {workers} worker(s), {} calls (coturn's rate)", c.clients);
            Some(undisturbed_run(&target, c.clients, &opts.udp, opts)?)
        }
        None => None,
    };
    Ok(Some(WorkersRun { workers, relay, saturated, at_coturn_rate, versus_coturn: None }))
}

type Measured = (Option<UdpRun>, Option<UdpRun>, Option<ChannelRun>, Vec<MaxCalls>);

fn measure(
    opts: &BenchOptions,
    rt: &tokio::runtime::Runtime,
    server: &mut ChildServer,
    forwarder: Option<&ChildServer>,
    pairs: &[Pair],
) -> anyhow::Result<Measured> {
    let relay_port = pairs.first().map(|p| p.relay_port).context("no calls")?;
    let relay_addr = SocketAddr::new(server.addr().ip(), relay_port);
    let relay_legs: Vec<Leg> = pairs.iter().flat_map(|p| p.legs).collect();
    let relay_target =
        UdpTarget { kind: TargetKind::Relay, addr: relay_addr, pid: Some(server.pid()), legs: &relay_legs };
    let bare_legs: Vec<Leg> = (0..2 * pairs.len() as u32).map(|h| Leg { handle: h, key: [0; 16] }).collect();
    let bare_target =
        forwarder.map(|f| UdpTarget { kind: TargetKind::Bare, addr: f.addr(), pid: Some(f.pid()), legs: &bare_legs });

    eprintln!("babel-relay-bench: relay, {} calls", opts.calls);
    let relay = undisturbed_run(&relay_target, opts.calls, &opts.udp, opts)?;
    server.check_alive()?;
    let bare = match &bare_target {
        Some(t) => {
            eprintln!("babel-relay-bench: bare forwarder, {} calls", opts.calls);
            Some(undisturbed_run(t, opts.calls, &opts.udp, opts)?)
        }
        None => None,
    };
    let channel = if opts.channel_calls > 0 {
        eprintln!("babel-relay-bench: call channels, {} calls", opts.channel_calls);
        let r = rt.block_on(run_channel(pairs, opts.channel_calls, &opts.udp, opts.udp.seconds, Some(server.pid())))?;
        server.check_alive()?;
        Some(r)
    } else {
        None
    };
    let mut max_calls = Vec::new();
    if opts.find_max {
        max_calls.push(search(&relay_target, opts)?);
        server.check_alive()?;
        if let Some(t) = &bare_target {
            max_calls.push(search(t, opts)?);
        }
    }
    Ok((Some(relay), bare, channel, max_calls))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite()).map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn opt_u(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

impl Report {
    /// A plain-text table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let s = &self.settings;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "machine: {} CPUs, {} (shared by generator and targets)",
            self.machine.cpus, self.machine.cpu_model
        );
        let _ = writeln!(
            o,
            "voice: {} pkt/s per participant, {} B payload, {} client sockets, {} sender thread(s), {} µs slots, {} receiver thread(s){}, {:.0} s warm-up + {:.0} s measured, {} ms drain; {} calls set up in {:.1} s",
            s.pps,
            s.payload,
            s.sockets,
            s.send_threads,
            s.slot_us,
            s.recv_threads,
            if s.recv_poll_us > 0 {
                format!(" polling every {} µs", s.recv_poll_us)
            } else {
                " (blocking)".to_owned()
            },
            s.warmup_s,
            s.seconds,
            s.drain_ms,
            self.setup_calls,
            self.setup_seconds
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<7} {:>6} {:>9} {:>9} {:>6} {:>10} {:>7} {:>7} {:>8} {:>7} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>7}",
            "target",
            "calls",
            "sent",
            "received",
            "lost",
            "fwd/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "srv CPU%",
            "s/Mpkt",
            "gen CPU%",
            "other%",
            "mach%",
            "late",
            "drops",
        );
        for r in self.relay.iter().chain(&self.bare) {
            let _ = writeln!(
                o,
                "{:<7} {:>6} {:>9} {:>9} {:>6} {:>10.0} {:>7.3} {:>7.3} {:>8.3} {:>7.2} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>7}",
                r.target.name(),
                r.calls,
                r.sent,
                r.received,
                r.lost,
                r.forwarded_per_s,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.p999_ms,
                r.latency.max_ms,
                opt(r.server_cpu_pct, 0),
                opt(r.server_cpu_s_per_mpkt, 2),
                opt(r.generator_cpu_pct, 0),
                opt(r.other_cpu_pct, 0),
                opt(r.machine_busy_pct, 0),
                r.late_sends,
                opt_u(r.target_socket_drops),
            );
        }
        if let Some(c) = &self.channel {
            let _ = writeln!(
                o,
                "{:<7} {:>6} {:>9} {:>9} {:>6} {:>10.0} {:>7.3} {:>7.3} {:>8.3} {:>7.2} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>7}",
                "channel",
                c.calls,
                c.sent,
                c.received,
                c.lost,
                c.frames_per_s,
                c.latency.p50_ms,
                c.latency.p99_ms,
                c.latency.p999_ms,
                c.latency.max_ms,
                opt(c.server_cpu_pct, 0),
                opt(c.server_cpu_s_per_mframe, 2),
                opt(c.generator_cpu_pct, 0),
                opt(c.other_cpu_pct, 0),
                opt(c.machine_busy_pct, 0),
                c.late_sends,
                "-",
            );
        }
        if let Some(r) = &self.ratio {
            let _ = writeln!(
                o,
                "\nrelay / bare: CPU per packet x{}, p50 x{}, p99 x{}{}",
                opt(r.cpu_per_packet, 2),
                opt(Some(r.p50), 2),
                opt(Some(r.p99), 2),
                r.max_calls.map_or(String::new(), |m| format!(", most calls held x{}", opt(Some(m), 2)))
            );
        }
        for m in &self.max_calls {
            let _ = writeln!(
                o,
                "\nfind-max {}: held {} calls with 0 loss{}{}",
                m.target.name(),
                m.held_calls,
                m.failed_calls.map_or(String::new(), |f| format!(", lost datagrams at {f}")),
                if m.hit_max { " (stopped at --max-calls)" } else { "" }
            );
            for r in &m.runs {
                let _ = writeln!(
                    o,
                    "  {:>6} calls: {:<6} lost {:>6}, {:>8.0} fwd/s, p99 {:>7.3} ms, srv {:>4}%, gen {:>4}%, other {:>4}%, machine {:>3}%, late {}, drops target {} client {}",
                    r.calls,
                    if r.held { "held" } else { "failed" },
                    r.lost,
                    r.forwarded_per_s,
                    r.p99_ms,
                    opt(r.server_cpu_pct, 0),
                    opt(r.generator_cpu_pct, 0),
                    opt(r.other_cpu_pct, 0),
                    opt(r.machine_busy_pct, 0),
                    r.late_sends,
                    opt_u(r.target_socket_drops),
                    opt_u(r.client_socket_drops),
                );
            }
        }
        if !self.workers.is_empty() {
            let _ = writeln!(o, "\nrelay per worker count (0: one per core):");
            let _ = writeln!(
                o,
                "{:>7} {:<10} {:>6} {:>9} {:>9} {:>6} {:>10} {:>7} {:>8} {:>8} {:>10} {:>6} {:>7}",
                "workers",
                "run",
                "calls",
                "sent",
                "received",
                "lost",
                "fwd/s",
                "p99 ms",
                "srv CPU%",
                "s/Mpkt",
                "pkt/CPU-s",
                "other%",
                "drops"
            );
            for w in &self.workers {
                let rows = [
                    ("calls", Some(&w.relay)),
                    ("overloaded", w.saturated.as_ref()),
                    ("coturn rate", w.at_coturn_rate.as_ref()),
                ];
                for (name, r) in rows {
                    let Some(r) = r else { continue };
                    let _ = writeln!(
                        o,
                        "{:>7} {:<10} {:>6} {:>9} {:>9} {:>6} {:>10.0} {:>7.3} {:>8} {:>8} {:>10} {:>6} {:>7}",
                        w.workers,
                        name,
                        r.calls,
                        r.sent,
                        r.received,
                        r.lost,
                        r.forwarded_per_s,
                        r.latency.p99_ms,
                        opt(r.server_cpu_pct, 0),
                        opt(r.server_cpu_s_per_mpkt, 2),
                        opt(r.server_cpu_s_per_mpkt.filter(|c| *c > 0.0).map(|c| 1e6 / c), 0),
                        opt(r.other_cpu_pct, 0),
                        opt_u(r.target_socket_drops),
                    );
                }
            }
            let base = self.workers.iter().find(|w| w.workers == 1).and_then(|w| w.saturated.as_ref());
            for w in self.workers.iter().filter(|w| w.workers != 1) {
                if let (Some(b), Some(s)) = (base, w.saturated.as_ref()) {
                    let _ = writeln!(
                        o,
                        "overloaded: {} worker(s) forwarded x{} the datagrams/s of 1 worker",
                        w.workers,
                        opt(Some(ratio(s.forwarded_per_s, b.forwarded_per_s)), 2)
                    );
                }
            }
        }
        if let Some(c) = &self.coturn {
            let _ = writeln!(
                o,
                "\ncoturn ({} uclient clients, relay threads {}; ramp {:.0} s): {:.1} s measured, sent {}, received {}, lost {}, {:.0} relayed/s, CPU {}% of a core, {} s/Mpkt, {} pkt/CPU-s, uclient {}%, other {}%",
                c.clients,
                if c.relay_threads == 0 { "default".to_owned() } else { c.relay_threads.to_string() },
                c.ramp_seconds,
                c.seconds,
                c.sent,
                c.received,
                c.lost,
                c.relayed_per_s,
                opt(c.server_cpu_pct, 0),
                opt(c.server_cpu_s_per_mpkt, 2),
                opt(c.pkt_per_cpu_s, 0),
                opt(c.generator_cpu_pct, 0),
                opt(c.other_cpu_pct, 0),
            );
            for w in &self.workers {
                let _ = writeln!(
                    o,
                    "relay ({} worker(s)) ÷ coturn, relayed datagrams per CPU-second at the same rate: x{}",
                    w.workers,
                    opt(w.versus_coturn, 2)
                );
            }
        }
        let _ = writeln!(
            o,
            "\ntarget ({TARGET_CALLS} relayed calls, 0 loss, p99 < {TARGET_P99_MS} ms): {} — {}",
            match self.target.holds {
                Some(true) => "HOLDS",
                Some(false) => "NOT MET",
                None => "not measured",
            },
            self.target.reason
        );
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timing_from_send_data() {
        let t = Timing { call: 41, dir: 1, seq: 7, sent_ns: 123_456_789 };
        let mut payload = vec![0x5A; 160];
        t.write(&mut payload);
        let json = SendData::new("voice", &[&payload]).unwrap().to_json();
        assert_eq!(channel_timing(&json), Some(t));
        assert_eq!(channel_timing(br#"{"type":"voice","packets":[]}"#), None);
        assert_eq!(channel_timing(br#"{"packets":["AAAA"]}"#), None);
    }

    #[test]
    fn bisect_doubles_then_halves() {
        let mut b = Bisect::new(250, 4000, 5);
        let mut tried = Vec::new();
        // Holds up to 1300 calls.
        for _ in 0..20 {
            let Some(n) = b.next() else { break };
            tried.push(n);
            b.record(n, n <= 1300);
        }
        assert_eq!(&tried[..4], &[250, 500, 1000, 2000]);
        assert!(b.held() <= 1300 && b.held() * 100 >= 1300 * 94, "{tried:?}");
        assert!(tried.len() < 12, "{tried:?}");
        assert!(b.next().is_none());
    }

    #[test]
    fn bisect_stops_at_max_and_below_start() {
        let mut b = Bisect::new(250, 600, 5);
        while let Some(n) = b.next() {
            b.record(n, true);
        }
        assert_eq!(b.held(), 600);
        assert_eq!(b.failed(), None);
        let mut b = Bisect::new(250, 600, 5);
        let mut runs = 0;
        while let Some(n) = b.next() {
            b.record(n, n <= 10);
            runs += 1;
            assert!(runs < 20);
        }
        assert!((10..=11).contains(&b.held()) || b.held() == 10, "{b:?}");
    }
}
