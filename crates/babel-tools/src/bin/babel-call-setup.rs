//! `babel-call-setup`: how long a call takes to set up when caller and
//! callee sit on different nodes, against both on one node, in one run
//! (issue #18's measurements).
//!
//! `--nodes` nodes (default 3) on a PostgreSQL scratch schema and the local
//! nats-server. On each node `n<i>` a caller; a callee on the same node and
//! one on the next node (`n<i+1>`), every one with its event stream on its
//! own node, all through the client library. Calls go one at a time,
//! same-node and cross-node alternately, the node pair rotating; each is
//! timed from the moment `/call` is sent:
//! * `ring`: the callee's `/incoming_call` arrives;
//! * `answered`: the callee accepts at once (`/answer`); the caller's
//!   `/call_accepted` arrives;
//! * `voice`: both bind their relay legs (the caller while it rings, the
//!   callee after its `/answer`; the grants name the call's home relay),
//!   the callee sends a voice datagram every 20 ms, and the first one
//!   reaches the caller through the relay.
//!
//! Then the caller hangs up and the callee's `/call_ended` is awaited. The
//! end-to-end media key (`/call_key`) is not exchanged: the datagrams are
//! the relay's own (authenticated per leg), so the figure is the
//! signalling and relay path alone.
//!
//! `cargo build --release -p babel-server -p babel-tools && target/release/babel-call-setup`

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use babel_client::{Client, Event, EventStream};
use babel_proto::relay as wire;
use babel_proto::{CallId, MediaSetup, Presence, RelayGrant, ServerEvent, UserId};
use babel_tools::bench::{pids_cpu, used_between};
use babel_tools::child::ChildServer;
use babel_tools::cluster::{EngineArgs, pids_named};
use babel_tools::report::{Machine, loadavg};
use babel_tools::stats::{Latency, ns};
use babel_tools::udp_load::{Leg, TargetKind, bind_all, bound_socket};
use clap::Parser;
use serde::Serialize;

/// Call set-up (ring, answered, first voice) across nodes against on one node.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Calls of each kind (same-node, cross-node).
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Nodes (at least 2).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// PostgreSQL, nats-server and the server binary.
    #[command(flatten)]
    engines: EngineArgs,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

const PASSWORD: &str = "babel-call-setup-password";
/// The longest wait for any one step.
const LIMIT: Duration = Duration::from_secs(10);
/// Voice frames every 20 ms, as the media engine sends them.
const FRAME: Duration = Duration::from_millis(20);
/// An Opus frame's size at about 24 kbit/s.
const VOICE: [u8; 60] = [0x5a; 60];
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A user: signalling connection and event stream, both on `node`.
struct Party {
    client: Client,
    events: EventStream,
    id: UserId,
}

async fn party(addr: SocketAddr, email: &str) -> anyhow::Result<Party> {
    let mut client = Client::connect(addr.to_string()).await?.with_timeout(LIMIT);
    let session = client.create(email, PASSWORD, None).await.with_context(|| format!("/create {email}"))?;
    let events = client.events().await?;
    Ok(Party { client, events, id: session.id })
}

/// Waits for the first server event `pick` accepts; answers what it gave.
async fn wait_for<T>(
    events: &mut EventStream,
    what: &str,
    pick: impl Fn(&ServerEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let wait = async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(e))) => {
                    if let Some(t) = pick(&e) {
                        return Ok(t);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("event stream failed: {e}"),
                None => bail!("event stream closed"),
            }
        }
    };
    tokio::time::timeout(LIMIT, wait).await.with_context(|| format!("no {what} within {LIMIT:?}"))?
}

fn leg(grant: &RelayGrant) -> anyhow::Result<(SocketAddr, Leg)> {
    let (_, handle, key) = grant.parts().context("malformed relay grant")?;
    let relay = grant.relay_addr(LOOPBACK).context("malformed relay grant")?;
    babel_tools::net::check_target(&relay)?;
    Ok((relay, Leg { handle, key }))
}

/// A UDP socket connected to `relay`, its leg bound (blocking).
fn bound_leg(relay: SocketAddr, leg: Leg) -> anyhow::Result<UdpSocket> {
    let sock = bound_socket(SocketAddr::new(LOOPBACK, 0), 0)?;
    sock.connect(relay)?;
    bind_all(TargetKind::Relay, std::slice::from_ref(&sock), &[leg])?;
    Ok(sock)
}

/// Waits (blocking) for the first datagram relayed from `from`; when.
fn first_voice(sock: &UdpSocket, from: UserId) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if wire::decode_relayed(&buf[..n]).is_some_and(|(who, _)| who == from) {
            return Ok(Instant::now());
        }
    }
    bail!("no voice through the relay within {LIMIT:?}")
}

/// Sends a voice datagram every 20 ms (blocking) until `stop`, at most for
/// [`LIMIT`].
fn speak(sock: &UdpSocket, leg: &Leg, stop: &AtomicBool) {
    let mut out = Vec::with_capacity(128);
    let frames = (LIMIT.as_millis() / FRAME.as_millis()) as u64;
    for counter in 1..=frames {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        out.clear();
        wire::encode_data(leg.handle, counter, &leg.key, &VOICE, &mut out);
        let _ = sock.send(&out);
        std::thread::sleep(FRAME);
    }
}

/// One call's times from `/call`'s send, in ns.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ring: u64,
    answered: u64,
    voice: u64,
}

async fn one_call(caller: &mut Party, callee: &mut Party) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let started = caller.client.call(callee.id, MediaSetup::default()).await.context("/call")?;
    let call = started.call_id;
    let (relay, caller_leg) = leg(&started.relay)?;
    let callee_id = callee.id;
    // The caller binds while it rings, then listens for the callee's voice.
    let listening = tokio::task::spawn_blocking(move || first_voice(&bound_leg(relay, caller_leg)?, callee_id));
    let is_call = |c: CallId| c == call;
    wait_for(&mut callee.events, "/incoming_call", |e| match e {
        ServerEvent::IncomingCall(i) if is_call(i.call_id) => Some(()),
        _ => None,
    })
    .await?;
    let ring = t0.elapsed();
    let joined = callee.client.accept_call(call, MediaSetup::default()).await.context("/answer")?;
    let (relay, callee_leg) = leg(&joined.relay)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_speaking = Arc::clone(&stop);
    let speaking = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let sock = bound_leg(relay, callee_leg)?;
        speak(&sock, &callee_leg, &stop_speaking);
        Ok(())
    });
    let accepted = wait_for(&mut caller.events, "/call_accepted", |e| match e {
        ServerEvent::CallAccepted(p) if is_call(p.call_id) => Some(Instant::now()),
        _ => None,
    })
    .await;
    let heard = listening.await.context("listener failed");
    stop.store(true, Ordering::Relaxed);
    let spoke = speaking.await.context("speaker failed");
    caller.client.hangup(call).await.context("/hangup")?;
    wait_for(&mut callee.events, "/call_ended", |e| match e {
        ServerEvent::CallEnded(c, _) if is_call(*c) => Some(()),
        _ => None,
    })
    .await?;
    spoke??;
    Ok(Sample { ring: ns(ring), answered: ns(accepted? - t0), voice: ns(heard?? - t0) })
}

#[derive(Debug, Default, Serialize)]
struct Kind {
    calls: usize,
    ring: Latency,
    answered: Latency,
    voice: Latency,
}

impl Kind {
    fn from(samples: &[Sample]) -> Kind {
        let pick = |f: fn(&Sample) -> u64| Latency::from_ns(&mut samples.iter().map(f).collect::<Vec<_>>());
        Kind { calls: samples.len(), ring: pick(|s| s.ring), answered: pick(|s| s.answered), voice: pick(|s| s.voice) }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    machine: Machine,
    /// Load average (1, 5, 15 minutes) at the start and at the end.
    loadavg: [String; 2],
    nodes: usize,
    same_node: Kind,
    cross_node: Kind,
    /// Cross-node ÷ same-node, p50 and p99 of each step.
    ratios: serde_json::Value,
    /// CPU milliseconds per call (both kinds; set-up, the few voice
    /// datagrams, hang-up) of the nodes together, PostgreSQL (every
    /// `postgres` process on the machine) and nats-server.
    cpu_ms_per_call: Vec<(String, f64)>,
}

/// The same-node and cross-node parties of every node, contacts, each
/// caller seeing both callees online.
async fn parties(nodes: &[ChildServer]) -> anyhow::Result<Vec<[Party; 3]>> {
    let n = nodes.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let here = nodes[i].addr();
        let next = nodes[(i + 1) % n].addr();
        let mut caller = party(here, &format!("caller-{i}@example.org")).await?;
        let mut same = party(here, &format!("same-{i}@example.org")).await?;
        let mut cross = party(next, &format!("cross-{i}@example.org")).await?;
        for (callee, who) in [(&mut same, "same"), (&mut cross, "cross")] {
            caller.client.add_contact(&format!("{who}-{i}@example.org")).await?;
            callee.client.accept_contact(caller.id).await?;
        }
        out.push([caller, same, cross]);
    }
    // Presence crosses nodes over NATS: wait until every caller sees both.
    let deadline = Instant::now() + LIMIT;
    for [caller, ..] in &mut out {
        loop {
            let contacts = caller.client.contacts().await?;
            if contacts.len() == 2 && contacts.iter().all(|c| c.status == Presence::Online) {
                break;
            }
            ensure!(Instant::now() < deadline, "a caller never saw both callees online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(out)
}

async fn run(args: Args) -> anyhow::Result<Report> {
    ensure!((2..=16).contains(&args.nodes), "--nodes must be between 2 and 16");
    ensure!((1..=100_000).contains(&args.calls), "--calls must be between 1 and 100000");
    let loadavg_start = loadavg();
    let (nodes, children) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let nodes = args.engines.nodes(true)?;
        let children = nodes.cluster(args.nodes)?;
        Ok((nodes, children))
    })?;
    let mut parties = parties(&children).await?;
    let watched = [
        ("nodes".to_owned(), children.iter().map(ChildServer::pid).collect::<Vec<_>>()),
        ("postgres".to_owned(), pids_named("postgres")),
        ("nats-server".to_owned(), args.engines.nats_pids()),
    ];
    let cpu_before: Vec<_> = watched.iter().map(|(_, p)| pids_cpu(p)).collect();
    let (mut same, mut cross) = (Vec::with_capacity(args.calls), Vec::with_capacity(args.calls));
    for k in 0..args.calls {
        let i = k % parties.len();
        let [caller, same_callee, cross_callee] = &mut parties[i];
        same.push(one_call(caller, same_callee).await.with_context(|| format!("same-node call {k}"))?);
        cross.push(one_call(caller, cross_callee).await.with_context(|| format!("cross-node call {k}"))?);
        if (k + 1) % 50 == 0 {
            eprintln!("babel-call-setup: {} calls of each kind", k + 1);
        }
    }
    let cpu_ms_per_call = watched
        .iter()
        .zip(&cpu_before)
        .filter_map(|((name, p), before)| {
            let used = used_between(before, &pids_cpu(p))?;
            Some((name.clone(), used * 1e3 / (2 * args.calls) as f64))
        })
        .collect();
    let (same, cross) = (Kind::from(&same), Kind::from(&cross));
    let r = |a: &Latency, b: &Latency| serde_json::json!({"p50": a.p50_ms / b.p50_ms.max(f64::MIN_POSITIVE), "p99": a.p99_ms / b.p99_ms.max(f64::MIN_POSITIVE)});
    let ratios = serde_json::json!({
        "ring": r(&cross.ring, &same.ring),
        "answered": r(&cross.answered, &same.answered),
        "voice": r(&cross.voice, &same.voice),
    });
    drop(parties);
    drop(children);
    drop(nodes);
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::detect(),
        loadavg: [loadavg_start, loadavg()],
        nodes: args.nodes,
        same_node: same,
        cross_node: cross,
        ratios,
        cpu_ms_per_call,
    })
}

fn table(r: &Report) -> String {
    let mut s = format!("{}\n{} nodes; load average {} → {}\n\n", r.command, r.nodes, r.loadavg[0], r.loadavg[1]);
    s += "| from /call's send | same node p50 / p99 / max | cross node p50 / p99 / max | cross ÷ same p50 / p99 |\n";
    s += "| --- | ---: | ---: | ---: |\n";
    for (step, a, b) in [
        ("ring", &r.same_node.ring, &r.cross_node.ring),
        ("answered", &r.same_node.answered, &r.cross_node.answered),
        ("first voice", &r.same_node.voice, &r.cross_node.voice),
    ] {
        s += &format!(
            "| {step} | {:.2} / {:.2} / {:.2} ms | {:.2} / {:.2} / {:.2} ms | {:.2} / {:.2} |\n",
            a.p50_ms,
            a.p99_ms,
            a.max_ms,
            b.p50_ms,
            b.p99_ms,
            b.max_ms,
            b.p50_ms / a.p50_ms.max(f64::MIN_POSITIVE),
            b.p99_ms / a.p99_ms.max(f64::MIN_POSITIVE),
        );
    }
    s += &format!("{} calls of each kind\n", r.same_node.calls);
    let cpu: Vec<String> = r.cpu_ms_per_call.iter().map(|(n, ms)| format!("{n} {ms:.2} ms")).collect();
    s += &format!("CPU per call: {}\n", cpu.join(", "));
    s
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = args.json;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(args))?;
    babel_tools::report::print(&report, json, table)
}
