//! `babel-cluster-fault`: `kill -9` one of three nodes while calls run
//! (issue #18, Measure: the fault run).
//!
//! Three `babel-server` nodes on one PostgreSQL schema (a scratch schema,
//! dropped at the end) and `nats-server` with JetStream. Call `i` is placed
//! through node `i % 3` (its home), its caller's event stream is on node
//! `i + 1` and its callee's on node `i + 2` (mod 3); every client lists all
//! three nodes, its own first. So when node 0 dies, a third of the calls
//! lose their home while both their users are on surviving nodes (they must
//! be adopted), and the other two thirds lose one user's node (that user's
//! client fails over; the call's home lives on).
//!
//! Each side of each call sends synthetic voice (`--pps` datagrams a
//! second, not the media engine) both directly to the other side and
//! through its relay leg; on `/call_relay` it binds to the new relay and
//! goes on there. Meanwhile one writer per node sends messages, and every
//! acknowledged one is looked for afterwards. Reported, from the kill:
//! * calls between users of surviving nodes that ended, or whose direct
//!   voice stopped for more than 1 s (goal 0); their relay voice's gap,
//!   which lasts until the adoption (goal: adopted within 10 s);
//! * the dead node's users: back online through another node (their event
//!   stream reconnected; goal ≤ 5 s), and their calls: ended or not, voice
//!   gaps;
//! * acknowledged writes lost (goal 0).
//!
//! With `--sigterm` the node is stopped cleanly instead: it hands its calls
//! over as it leaves, so the relay gap of its calls is the hand-over's,
//! not the death detection's.
//!
//! `cargo build --release -p babel-server -p babel-tools && target/release/babel-cluster-fault`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use babel_client::{Client, Event, EventStream};
use babel_proto::relay as wire;
use babel_proto::{CallId, MediaSetup, MessageId, Page, RelayGrant, ServerEvent, UserId};
use babel_tools::child::ChildServer;
use babel_tools::cluster::{Nodes, server_binary};
use babel_tools::stats::{Latency, ns};
use clap::Parser;
use futures::StreamExt;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Kill -9 one of three nodes while calls run.
#[derive(Debug, Parser)]
struct Args {
    /// Calls in progress when the node dies.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Synthetic voice datagrams per second, per side and path.
    #[arg(long, default_value_t = 10)]
    pps: u32,
    /// Seconds of calls before the kill.
    #[arg(long, default_value_t = 5)]
    before: u64,
    /// Seconds of calls after the kill.
    #[arg(long, default_value_t = 20)]
    after: u64,
    /// PostgreSQL database (a scratch schema is made in it and dropped).
    #[arg(long, default_value = "postgres://babel:babel@127.0.0.1:5432/babel")]
    db: String,
    /// NATS with JetStream.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The babel-server binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Stop the node cleanly (SIGTERM: it hands its calls over as it
    /// leaves) instead of `kill -9`.
    #[arg(long)]
    sigterm: bool,
    /// Keep each node's log (`info`) in this folder as `n<k>.log`.
    #[arg(long)]
    logs: Option<PathBuf>,
}

const PASSWORD: &str = "password123";
const NODES: usize = 3;
const DEAD: usize = 0;
const LIMIT: Duration = Duration::from_secs(30);

/// What one side of a call saw, from the kill on.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// Longest silence of the other side's direct voice (to the end).
    direct_gap: Duration,
    /// Longest silence of the other side's relayed voice.
    relay_gap: Duration,
    /// Relayed voice arrived after the kill.
    relay_after: bool,
    /// The call ended (`/call_ended`).
    ended: bool,
    /// A `/call_relay` came.
    moved: bool,
    /// Its event stream reconnected (after the kill), this long after.
    back: Option<Duration>,
    /// The same-run baseline: the longest silences before the kill (from
    /// one second in), direct and relayed.
    direct_gap_before: Duration,
    relay_gap_before: Duration,
}

struct Side {
    client: Client,
    events: EventStream,
    sock: UdpSocket,
    grant: RelayGrant,
    server_ip: std::net::IpAddr,
}

struct Rig {
    home: usize,
    users: [usize; 2],
    call: CallId,
    sides: [Side; 2],
    /// The caller's connection to the home, kept open (the home ends a call
    /// when its caller's last connection there closes).
    _placer: Client,
}

fn list_from(addrs: &[SocketAddr], first: usize) -> String {
    (0..NODES).map(|k| addrs[(first + k) % NODES].to_string()).collect::<Vec<_>>().join(",")
}

async fn until_event(events: &mut EventStream, what: impl Fn(&ServerEvent) -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(e))) if what(&e) => return Ok(()),
                Some(_) => {}
                None => bail!("the event stream ended"),
            }
        }
    })
    .await
    .context("an event did not come in time")?
}

async fn rig(i: usize, addrs: Arc<Vec<SocketAddr>>) -> anyhow::Result<Rig> {
    let (home, ce, ee) = (i % NODES, (i + 1) % NODES, (i + 2) % NODES);
    let (caller_mail, callee_mail) = (format!("c{i}@example.org"), format!("e{i}@example.org"));
    let mut caller = Client::connect(list_from(&addrs, ce)).await?;
    caller.create(&caller_mail, PASSWORD, None).await?;
    let mut callee = Client::connect(list_from(&addrs, ee)).await?;
    callee.create(&callee_mail, PASSWORD, None).await?;
    let (caller_id, callee_id) = (caller.user_id().context("caller")?, callee.user_id().context("callee")?);
    caller.add_contact(&callee_mail).await?;
    callee.accept_contact(caller_id).await?;
    let (mut caller_events, mut callee_events) = (caller.events().await?, callee.events().await?);
    let mut placer = Client::resume(addrs[home].to_string(), caller.session().context("caller")?.clone()).await?;
    let (caller_sock, callee_sock) = (UdpSocket::bind("127.0.0.1:0").await?, UdpSocket::bind("127.0.0.1:0").await?);
    let media = |s: &UdpSocket| -> anyhow::Result<MediaSetup> {
        Ok(MediaSetup { candidates: vec![s.local_addr()?], ..MediaSetup::default() })
    };
    // The home learns over NATS that the callee is online.
    let mut tries = 0;
    let started = loop {
        match placer.call(callee_id, media(&caller_sock)?).await {
            Ok(s) => break s,
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let call = started.call_id;
    until_event(&mut callee_events, |e| matches!(e, ServerEvent::IncomingCall(c) if c.call_id == call)).await?;
    let joined = callee.accept_call(call, media(&callee_sock)?).await?;
    until_event(&mut caller_events, |e| matches!(e, ServerEvent::CallAccepted(j) if j.call_id == call)).await?;
    let side =
        |client, events, sock, grant, node: usize| Side { client, events, sock, grant, server_ip: addrs[node].ip() };
    Ok(Rig {
        home,
        users: [ce, ee],
        call,
        sides: [
            side(caller, caller_events, caller_sock, started.relay, home),
            side(callee, callee_events, callee_sock, joined.relay, ee),
        ],
        _placer: placer,
    })
}

/// One side's voice and events until `stop`: sends every 1/pps to the
/// peer directly and through its relay leg, follows `/call_relay`, and
/// notes what arrives after `kill` is set.
async fn run_side(
    mut side: Side,
    call: CallId,
    peer: SocketAddr,
    pps: u32,
    kill: watch::Receiver<Option<Instant>>,
    stop: CancellationToken,
) -> Seen {
    let mut seen = Seen::default();
    let relay_of = |g: &RelayGrant, ip| -> Option<(SocketAddr, u32, [u8; 16])> {
        let (_, handle, key) = g.parts()?;
        Some((g.relay_addr(ip)?, handle, key))
    };
    let Some(mut relay) = relay_of(&side.grant, side.server_ip) else { return seen };
    let (mut nonce, mut counter, mut seq, mut bound) = (1u64, 0u64, 0u64, false);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / pps.max(1));
    let mut last_bind = Instant::now() - Duration::from_secs(10);
    let (mut last_direct, mut last_relay) = (None::<Instant>, None::<Instant>);
    let gap = |last: Option<Instant>, now: Instant, kill: Option<Instant>| -> Duration {
        match (last, kill) {
            (_, None) => Duration::ZERO,
            (Some(l), Some(k)) => now.saturating_duration_since(l.max(k)),
            (None, Some(k)) => now.saturating_duration_since(k),
        }
    };
    let settled = Instant::now() + Duration::from_secs(1);
    let before = |last: Option<Instant>, now: Instant| -> Duration {
        last.filter(|l| *l >= settled).map_or(Duration::ZERO, |l| now.saturating_duration_since(l))
    };
    let mut buf = [0u8; 2048];
    let mut events_done = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                seq += 1;
                let mut d = vec![b'V'];
                d.extend_from_slice(&seq.to_be_bytes());
                let _ = side.sock.send_to(&d, peer).await;
                if !bound && last_bind.elapsed() >= Duration::from_millis(300) {
                    nonce += 2;
                    let _ = side.sock.send_to(&wire::encode_bind(relay.1, nonce, &relay.2), relay.0).await;
                    last_bind = Instant::now();
                }
                counter += 1;
                let mut out = Vec::with_capacity(64);
                d[0] = b'R';
                wire::encode_data(relay.1, counter, &relay.2, &d, &mut out);
                let _ = side.sock.send_to(&out, relay.0).await;
            }
            r = side.sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let now = Instant::now();
                let k = *kill.borrow();
                let bytes = &buf[..n];
                if from == peer && bytes.first() == Some(&b'V') {
                    if k.is_none() {
                        seen.direct_gap_before = seen.direct_gap_before.max(before(last_direct, now));
                    }
                    seen.direct_gap = seen.direct_gap.max(gap(last_direct, now, k));
                    last_direct = Some(now);
                } else if from == relay.0 {
                    if let Some((_, payload)) = wire::decode_relayed(bytes) {
                        if payload.first() == Some(&b'R') {
                            if k.is_none() {
                                seen.relay_gap_before = seen.relay_gap_before.max(before(last_relay, now));
                            }
                            seen.relay_gap = seen.relay_gap.max(gap(last_relay, now, k));
                            last_relay = Some(now);
                            seen.relay_after |= k.is_some();
                        }
                    } else if let Some(ack) = wire::verify_bind_ack(bytes, &relay.2) {
                        if ack.state == wire::BOUND {
                            bound = true;
                        } else {
                            nonce += 2;
                            let c = wire::encode_confirm(relay.1, nonce, &ack.cookie, &relay.2);
                            let _ = side.sock.send_to(&c, relay.0).await;
                        }
                    }
                }
            }
            e = side.events.next(), if !events_done => match e {
                Some(Ok(Event::Server(ServerEvent::CallRelay(m)))) if m.call_id == call => {
                    let ip = side.server_ip;
                    if let Some(r) = relay_of(&m.relay, ip) {
                        relay = r;
                        bound = false;
                        last_bind = Instant::now() - Duration::from_secs(10);
                        seen.moved = true;
                    }
                }
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, _)))) if c == call => seen.ended = true,
                Some(Ok(Event::Reconnected)) => {
                    if let Some(k) = *kill.borrow() {
                        seen.back.get_or_insert(k.elapsed());
                    }
                }
                Some(_) => {}
                None => events_done = true,
            },
        }
    }
    let (now, k) = (Instant::now(), *kill.borrow());
    seen.direct_gap = seen.direct_gap.max(gap(last_direct, now, k));
    seen.relay_gap = seen.relay_gap.max(gap(last_relay, now, k));
    drop(side.client);
    seen
}

/// One writer per node: messages to a contact, every acknowledged one kept.
async fn writer(
    node: usize,
    addrs: Arc<Vec<SocketAddr>>,
    stop: CancellationToken,
) -> anyhow::Result<(String, UserId, Vec<(MessageId, String)>)> {
    let (from, to) = (format!("w{node}@example.org"), format!("r{node}@example.org"));
    let mut reader = Client::connect(list_from(&addrs, node)).await?;
    reader.create(&to, PASSWORD, None).await?;
    // Only its own node: its writes stop when the node dies.
    let mut w = Client::connect(addrs[node].to_string()).await?;
    w.create(&from, PASSWORD, None).await?;
    let (wid, rid) = (w.user_id().context("writer")?, reader.user_id().context("reader")?);
    w.add_contact(&to).await?;
    reader.accept_contact(wid).await?;
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let text = format!("message {n} from node {node}");
        if let Ok(Ok(sent)) = tokio::time::timeout(Duration::from_secs(2), w.send_message(rid, &text, None)).await {
            acked.push((sent.message_id, text));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((to, wid, acked))
}

/// Acknowledged messages not found (read through a surviving node).
async fn lost(addr: &str, to: &str, from: UserId, acked: &[(MessageId, String)]) -> anyhow::Result<usize> {
    let mut c = Client::connect(addr).await?;
    c.login(to, PASSWORD).await?;
    let mut found = Vec::new();
    let mut after = MessageId(0);
    loop {
        let page = c.messages(Some(from), Page::After(after), 100).await?;
        let Some(last) = page.iter().map(|m| m.message_id).max_by_key(|m| m.0) else { break };
        after = last;
        found.extend(page.into_iter().map(|m| (m.message_id, m.text)));
    }
    Ok(acked.iter().filter(|a| !found.contains(a)).count())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    rlimit::increase_nofile_limit(1 << 16)?;
    let bin = server_binary(args.server_bin)?;
    let (db, nats, logs) = (args.db.clone(), args.nats.clone(), args.logs.clone());
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = Nodes::new(bin, &nats, "")?;
        cluster.use_postgres(&db)?;
        if let Some(dir) = logs {
            cluster.log_into(dir);
        }
        anyhow::Ok(cluster)
    })
    .await??;
    let mut nodes: Vec<Option<ChildServer>> = Vec::new();
    for k in 0..NODES {
        nodes.push(Some(cluster.clustered(&format!("n{k}"))?));
    }
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(nodes.iter().flatten().map(ChildServer::addr).collect());
    // The nodes hear each other's heartbeats first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let set_up = Instant::now();
    let rigs: Vec<anyhow::Result<Rig>> =
        futures::stream::iter((0..args.calls).map(|i| rig(i, Arc::clone(&addrs)))).buffer_unordered(24).collect().await;
    let rigs: Vec<Rig> = rigs.into_iter().collect::<anyhow::Result<_>>()?;
    eprintln!("{} calls set up in {:.1} s", rigs.len(), set_up.elapsed().as_secs_f64());

    let stop = CancellationToken::new();
    let (kill_tx, kill_rx) = watch::channel(None);
    let writers: Vec<_> = (0..NODES).map(|k| tokio::spawn(writer(k, Arc::clone(&addrs), stop.clone()))).collect();
    let mut calls = Vec::new();
    for r in rigs {
        let [a, b] = r.sides;
        let (pa, pb) = (a.sock.local_addr()?, b.sock.local_addr()?);
        let ta = tokio::spawn(run_side(a, r.call, pb, args.pps, kill_rx.clone(), stop.clone()));
        let tb = tokio::spawn(run_side(b, r.call, pa, args.pps, kill_rx.clone(), stop.clone()));
        calls.push((r.home, r.users, ta, tb, r._placer));
    }
    // How late this program's own timers run: a stall here would show as
    // lost voice that the cluster did not cause.
    let stall = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut worst, step) = (Duration::ZERO, Duration::from_millis(50));
            while !stop.is_cancelled() {
                let t = Instant::now();
                tokio::time::sleep(step).await;
                worst = worst.max(t.elapsed().saturating_sub(step));
            }
            worst
        })
    };
    tokio::time::sleep(Duration::from_secs(args.before)).await;
    kill_tx.send_replace(Some(Instant::now()));
    let dead = nodes[DEAD].take();
    let sigterm = args.sigterm;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let Some(mut dead) = dead else { return Ok(()) };
        if sigterm {
            let sent = Command::new("kill").args(["-TERM", &dead.pid().to_string()]).status()?;
            anyhow::ensure!(sent.success(), "kill -TERM failed");
            let limit = Instant::now() + LIMIT;
            while dead.check_alive().is_ok() && Instant::now() < limit {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        drop(dead);
        Ok(())
    })
    .await??;
    let stopped_after = (*kill_rx.borrow()).map_or(Duration::ZERO, |k| k.elapsed());
    eprintln!("node n{DEAD} {}", if args.sigterm { "stopped (SIGTERM)" } else { "killed" });
    tokio::time::sleep(Duration::from_secs(args.after)).await;
    stop.cancel();

    let stall = stall.await?;
    let mut all_seen: Vec<Seen> = Vec::new();
    let (mut adopted, mut dead_user) = (Vec::new(), Vec::new());
    for (home, users, ta, tb, placer) in calls {
        let seen = [ta.await?, tb.await?];
        all_seen.extend(seen.iter().cloned());
        drop(placer);
        if home == DEAD {
            adopted.push(seen);
        } else {
            dead_user.push((users, seen));
        }
    }
    let count = |v: &[[Seen; 2]], f: &dyn Fn(&Seen) -> bool| v.iter().filter(|s| s.iter().any(f)).count();
    let long = Duration::from_secs(1);
    let mut relay_gaps: Vec<u64> = adopted.iter().map(|s| ns(s[0].relay_gap.max(s[1].relay_gap))).collect();
    let survivors = serde_json::json!({
        "calls": adopted.len(),
        "ended": count(&adopted, &|s| s.ended),
        "direct_voice_lost_over_1s": count(&adopted, &|s| s.direct_gap > long),
        "direct_gap_max_ms": adopted.iter().flatten().map(|s| s.direct_gap).max().unwrap_or_default().as_secs_f64() * 1e3,
        "moved_both_sides": adopted.iter().filter(|s| s[0].moved && s[1].moved).count(),
        "relay_voice_resumed": adopted.iter().filter(|s| s[0].relay_after && s[1].relay_after).count(),
        "relay_gap": Latency::from_ns(&mut relay_gaps),
    });
    let plain: Vec<[Seen; 2]> = dead_user.iter().map(|(_, s)| s.clone()).collect();
    let mut back: Vec<u64> = dead_user
        .iter()
        .flat_map(|(users, s)| users.iter().zip(s).filter(|(u, _)| **u == DEAD).filter_map(|(_, s)| s.back.map(ns)))
        .collect();
    let dead_users = dead_user.len();
    let back_missing = dead_users - back.len();
    let with_dead = serde_json::json!({
        "calls": dead_users,
        "ended": count(&plain, &|s| s.ended),
        "direct_voice_lost_over_1s": count(&plain, &|s| s.direct_gap > long),
        "direct_gap_max_ms": plain.iter().flatten().map(|s| s.direct_gap).max().unwrap_or_default().as_secs_f64() * 1e3,
        "relay_gap_max_ms": plain.iter().flatten().map(|s| s.relay_gap).max().unwrap_or_default().as_secs_f64() * 1e3,
        "relay_voice_lost_over_1s": count(&plain, &|s| s.relay_gap > long),
        "back_online": Latency::from_ns(&mut back),
        "back_online_missing": back_missing,
    });
    let mut lost_writes = 0;
    let mut acked_writes = 0;
    let survivor = list_from(&addrs, 1);
    for w in writers {
        let (to, from, acked) = w.await??;
        acked_writes += acked.len();
        lost_writes += lost(&survivor, &to, from, &acked).await?;
    }
    let worst = |f: &dyn Fn(&Seen) -> Duration| all_seen.iter().map(f).max().unwrap_or_default().as_secs_f64() * 1e3;
    let baseline = serde_json::json!({
        "direct_gap_max_ms_before_the_kill": worst(&|s| s.direct_gap_before),
        "relay_gap_max_ms_before_the_kill": worst(&|s| s.relay_gap_before),
    });
    let report = serde_json::json!({
        "calls": args.calls,
        "same_run_baseline": baseline,
        "pps": args.pps,
        "before_s": args.before,
        "after_s": args.after,
        "killed": format!("n{DEAD}"),
        "signal": if args.sigterm { "TERM" } else { "KILL" },
        "node_gone_after_ms": stopped_after.as_secs_f64() * 1e3,
        "calls_homed_on_the_dead_node": survivors,
        "calls_with_a_user_on_the_dead_node": with_dead,
        "acknowledged_writes": acked_writes,
        "acknowledged_writes_lost": lost_writes,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "load_generator_timer_late_max_ms": stall.as_secs_f64() * 1e3,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    drop(nodes);
    drop(cluster);
    Ok(())
}
