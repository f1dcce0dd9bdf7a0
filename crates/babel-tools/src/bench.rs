//! The three measurements: closed loop, open loop, idle memory.
//!
//! Each runs against one [`Target`] with pre-encoded request frames (one per
//! user; connection `i` speaks as user `i mod N`). The client does as little
//! as it can per request: one `write_all` of shared bytes, then reads that
//! look only at the 8-byte response prefix and skip the body. Every loop is
//! bounded by a deadline, and every wait by a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::net::{ResponseReader, connect_timeout, source_ip};
use crate::schedule::Schedule;
use crate::stats::Latency;

const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// Connections opened at once (the listen backlog is 1024).
const CONNECT_CONCURRENCY: usize = 256;
/// How long after a run's end late answers are still waited for.
const DRAIN: Duration = Duration::from_secs(3);
/// Lead time between "all connected" and the first scheduled send.
const LEAD: Duration = Duration::from_millis(200);
/// Pause for the server to settle before reading its memory.
const SETTLE: Duration = Duration::from_secs(1);

/// What the load is sent to: one server, or several nodes of one cluster
/// sharing the load (connection `i` goes to node `i mod N`).
#[derive(Debug, Clone)]
pub struct Target {
    /// `server`, `ceiling`, or what the cluster benchmark calls it.
    pub name: &'static str,
    /// Where it listens, one address per node (never empty).
    pub addrs: Vec<SocketAddr>,
    /// Its processes (one per node), to read memory and CPU time from; the
    /// target's CPU is their sum.
    pub pids: Vec<u32>,
    /// Processes whose CPU is reported on its own, by name (each node, the
    /// database, the message bus).
    pub watch: Vec<(String, Vec<u32>)>,
}

impl Target {
    /// One server at `addr`.
    pub fn one(name: &'static str, addr: SocketAddr, pid: Option<u32>) -> Target {
        Target { name, addrs: vec![addr], pids: pid.into_iter().collect(), watch: Vec::new() }
    }
}

/// The load's shape on the command line (`babel-load`, `babel-cluster-load`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Load users (`load-<i>@example.org`).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Contacts per user (rounded up to an even number).
    #[arg(long, default_value_t = 10)]
    pub contacts: usize,
    /// Connections for the closed and open loops.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Measured seconds of each closed or open run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Warm-up seconds before each measured run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Total open-loop rate, requests per second.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
}

/// Seconds given on the command line.
fn secs(what: &str, s: f64) -> anyhow::Result<Duration> {
    ensure!(s.is_finite() && (0.0..=3600.0).contains(&s), "--{what} must be between 0 and 3600");
    Ok(Duration::from_secs_f64(s))
}

impl LoadArgs {
    /// Refuses settings the loops cannot run.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.users >= 1, "--users must be at least 1");
        ensure!((1..=200_000).contains(&self.connections), "--connections must be between 1 and 200000");
        ensure!(self.seconds > 0.0, "--seconds must be positive");
        secs("seconds", self.seconds)?;
        secs("warmup", self.warmup)?;
        ensure!(
            self.rate > 0.0 && self.rate.is_finite() && self.rate * (self.seconds + self.warmup) <= 5e7,
            "--rate must be positive and give at most 50 million requests per run"
        );
        Ok(())
    }

    /// The loops' settings with these request frames.
    pub fn options(&self, frames: Vec<Bytes>, source_ips: usize) -> anyhow::Result<LoadOptions> {
        Ok(LoadOptions {
            frames: Arc::new(frames),
            connections: self.connections,
            warmup: secs("warmup", self.warmup)?,
            duration: secs("seconds", self.seconds)?,
            source_ips,
        })
    }
}

/// Load settings shared by the measurements.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// One pre-encoded request per user.
    pub frames: Arc<Vec<Bytes>>,
    /// Connections.
    pub connections: usize,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Source addresses to spread over (0: the kernel's choice).
    pub source_ips: usize,
}

impl LoadOptions {
    fn frame(&self, i: usize) -> Bytes {
        // `frames` is never empty (checked by the callers).
        self.frames.get(i % self.frames.len().max(1)).cloned().unwrap_or_default()
    }
}

/// The address of connection `i` when spreading over `addrs` (round robin).
pub fn addr_for(addrs: &[SocketAddr], i: usize) -> anyhow::Result<SocketAddr> {
    addrs.get(i % addrs.len().max(1)).copied().context("no address to connect to")
}

/// Opens `n` connections (in order, connection `i` to `addrs[i mod
/// len]`), failing if any cannot be opened.
pub async fn connect_many(addrs: &[SocketAddr], n: usize, source_ips: usize) -> anyhow::Result<Vec<TcpStream>> {
    let results: Vec<anyhow::Result<TcpStream>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let addr = addr_for(addrs, i)?;
            connect_timeout(addr, source_ip(i, source_ips), CONNECT_LIMIT).await.with_context(|| format!("to {addr}"))
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::with_capacity(n);
    for (i, r) in results.into_iter().enumerate() {
        out.push(r.with_context(|| format!("connection {i} of {n} failed"))?);
    }
    Ok(out)
}

/// Sends every user's request once to each node over a few connections so
/// that every node's caches hold every token and contact list before
/// measuring.
pub async fn warm_caches(target: &Target, frames: &[Bytes], source_ips: usize) -> anyhow::Result<()> {
    const WARMERS: usize = 8;
    let per_node = WARMERS.min(frames.len()).max(1);
    let nodes = target.addrs.len();
    // Connection `c` goes to node `c mod nodes` and is that node's warmer `c / nodes`.
    let conns = connect_many(&target.addrs, per_node * nodes, source_ips).await?;
    let tasks = conns.into_iter().enumerate().map(|(c, mut s)| {
        let mine: Vec<Bytes> = frames.iter().skip(c / nodes.max(1)).step_by(per_node).cloned().collect();
        async move {
            let mut r = ResponseReader::new();
            for f in mine {
                let resp = crate::net::round_trip(&mut s, &mut r, &f, CONNECT_LIMIT).await?;
                ensure!(resp.status == 200, "warm-up request answered {}", resp.status);
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(tasks).await {
        r.with_context(|| format!("warming {} failed", target.name))?;
    }
    Ok(())
}

/// CPU used during a measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// The target's processes together, in percent of one core (200 =
    /// both of 2 cores).
    pub target_pct: Option<f64>,
    /// This load generator, in percent of one core.
    pub load_pct: Option<f64>,
    /// The target's CPU time per answered request, in microseconds.
    pub target_us_per_request: Option<f64>,
    /// Everything else on the machine (the kernel's own threads, other
    /// processes), in percent of one core: a large figure means the run was
    /// disturbed.
    pub other_pct: Option<f64>,
    /// The target's watched processes ([`Target::watch`]), each on its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessCpu>,
}

/// One watched process (or group of processes) in a measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// What it is (`n1`, `postgres`, `nats-server`).
    pub name: String,
    /// Percent of one core.
    pub pct: f64,
    /// CPU time per answered request, in microseconds.
    pub us_per_request: Option<f64>,
}

/// CPU seconds used in a window: target, load generator, whole machine,
/// each watched group.
#[derive(Debug, Clone, Default)]
struct CpuSample {
    target: Option<f64>,
    load: Option<f64>,
    machine: Option<f64>,
    watched: Vec<(String, f64)>,
}

/// CPU seconds used so far by each of the processes `pids` that exist, as
/// `(pid, seconds)`.
pub fn pids_cpu(pids: &[u32]) -> Vec<(u32, f64)> {
    pids.iter().filter_map(|&p| Some((p, crate::child::cpu_seconds(Some(p))?))).collect()
}

/// CPU used between two [`pids_cpu`] samples by the processes in both
/// (`None` when none is).
pub fn used_between(a: &[(u32, f64)], b: &[(u32, f64)]) -> Option<f64> {
    let both: Vec<f64> = b.iter().filter_map(|(p, t1)| a.iter().find(|(q, _)| q == p).map(|(_, t0)| t1 - t0)).collect();
    (!both.is_empty()).then(|| both.iter().sum())
}

/// Reads the CPU time of the target, of this process, of the machine and of
/// the watched processes at `from` and `to`.
fn cpu_probe(target: &Target, from: Instant, to: Instant) -> tokio::task::JoinHandle<CpuSample> {
    use crate::child::{cpu_seconds, machine_busy_seconds};
    let pids = target.pids.clone();
    let watch = target.watch.clone();
    let sample = move || {
        let groups: Vec<Vec<(u32, f64)>> = watch.iter().map(|(_, p)| pids_cpu(p)).collect();
        (pids_cpu(&pids), cpu_seconds(None), machine_busy_seconds(), groups)
    };
    let names: Vec<String> = target.watch.iter().map(|(n, _)| n.clone()).collect();
    tokio::spawn(async move {
        tokio::time::sleep_until(from).await;
        let a = sample();
        tokio::time::sleep_until(to).await;
        let b = sample();
        let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        CpuSample {
            target: used_between(&a.0, &b.0),
            load: used(a.1, b.1),
            machine: used(a.2, b.2),
            watched: names
                .into_iter()
                .zip(a.3.iter().zip(&b.3))
                .filter_map(|(n, (x, y))| Some((n, used_between(x, y)?)))
                .collect(),
        }
    })
}

impl CpuUse {
    fn new(used: CpuSample, window: Duration, requests: u64) -> CpuUse {
        let secs = window.as_secs_f64().max(1e-9);
        let pct = |c: f64| c / secs * 100.0;
        let per_request = |c: f64| (requests > 0).then(|| c * 1e6 / requests as f64);
        let other = match (used.target, used.load, used.machine) {
            (Some(t), Some(l), Some(all)) => Some((all - t - l).max(0.0)),
            (None, Some(l), Some(all)) => Some((all - l).max(0.0)),
            _ => None,
        };
        CpuUse {
            target_pct: used.target.map(pct),
            load_pct: used.load.map(pct),
            target_us_per_request: used.target.and_then(per_request),
            other_pct: other.map(pct),
            processes: used
                .watched
                .into_iter()
                .map(|(name, c)| ProcessCpu { name, pct: pct(c), us_per_request: per_request(c) })
                .collect(),
        }
    }
}

/// Closed-loop result.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedResult {
    /// `server` or `ceiling`.
    pub target: String,
    /// Connections, one request in flight each.
    pub connections: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Answers received in the measured window.
    pub requests: u64,
    /// Answers per second.
    pub requests_per_sec: f64,
    /// Answers with a status other than 200 (whole run).
    pub bad_status: u64,
    /// Connections that failed (I/O error or timeout).
    pub failed_connections: u64,
    /// Request-to-answer time in the window.
    pub latency: Latency,
    /// CPU used in the window.
    pub cpu: CpuUse,
}

#[derive(Debug, Default)]
struct ClosedConn {
    done: u64,
    bad_status: u64,
    failed: bool,
    latencies: Vec<u64>,
}

/// Measurement A: every connection sends, waits for the answer, sends again.
pub async fn closed_loop(target: &Target, opts: &LoadOptions) -> anyhow::Result<ClosedResult> {
    ensure!(!opts.frames.is_empty(), "no request frames");
    let conns = connect_many(&target.addrs, opts.connections, opts.source_ips).await?;
    let start = Instant::now() + LEAD;
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let probe = cpu_probe(target, measure_from, end);
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, mut stream) in conns.into_iter().enumerate() {
        let frame = opts.frame(i);
        tasks.push(tokio::spawn(async move {
            let mut out = ClosedConn::default();
            let mut reader = ResponseReader::new();
            tokio::time::sleep_until(start).await;
            let run = async {
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        return Ok::<(), std::io::Error>(());
                    }
                    stream.write_all(&frame).await?;
                    let (status, _) = reader.read(&mut stream).await?;
                    let t1 = Instant::now();
                    if status != 200 {
                        out.bad_status += 1;
                    }
                    if t1 >= measure_from && t1 < end {
                        out.done += 1;
                        out.latencies.push((t1 - t0).as_nanos() as u64);
                    }
                }
            };
            match tokio::time::timeout_at(end + DRAIN, run).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => out.failed = true,
            }
            out
        }));
    }
    let mut result = ClosedResult {
        target: target.name.to_owned(),
        connections: opts.connections,
        seconds: opts.duration.as_secs_f64(),
        requests: 0,
        requests_per_sec: 0.0,
        bad_status: 0,
        failed_connections: 0,
        latency: Latency::default(),
        cpu: CpuUse::default(),
    };
    let mut latencies = Vec::new();
    for t in tasks {
        let c = t.await.context("closed-loop task failed")?;
        result.requests += c.done;
        result.bad_status += c.bad_status;
        result.failed_connections += u64::from(c.failed);
        latencies.extend(c.latencies);
    }
    result.requests_per_sec = result.requests as f64 / result.seconds.max(1e-9);
    result.latency = Latency::from_ns(&mut latencies);
    let used = probe.await.context("CPU probe failed")?;
    result.cpu = CpuUse::new(used, opts.duration, result.requests);
    Ok(result)
}

/// Open-loop result.
#[derive(Debug, Clone, Serialize)]
pub struct OpenResult {
    /// `server` or `ceiling`.
    pub target: String,
    /// Connections.
    pub connections: usize,
    /// Total rate asked for, requests per second.
    pub rate: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests actually written during the window, per second.
    pub sent_per_sec: f64,
    /// Answers received during the window, per second.
    pub achieved_per_sec: f64,
    /// From the *scheduled* send time to the answer, for requests due in the
    /// window (unanswered ones count with the time waited).
    pub latency: Latency,
    /// Requests due in the window and never answered.
    pub unanswered: u64,
    /// Answers with a status other than 200 (whole run).
    pub bad_status: u64,
    /// How late the load generator itself wrote requests (actual minus
    /// scheduled), part of the latency above.
    pub send_lag: Latency,
    /// CPU used in the window.
    pub cpu: CpuUse,
}

#[derive(Debug, Default)]
struct OpenConn {
    sent_in_window: u64,
    answered_in_window: u64,
    unanswered: u64,
    bad_status: u64,
    latencies: Vec<u64>,
    lags: Vec<u64>,
}

/// Measurement B: each connection sends on its own fixed schedule, whatever
/// the answers do; latency counts from the scheduled time.
pub async fn open_loop(target: &Target, opts: &LoadOptions, rate: f64) -> anyhow::Result<OpenResult> {
    ensure!(!opts.frames.is_empty(), "no request frames");
    ensure!(rate > 0.0 && rate.is_finite(), "the rate must be positive");
    let conns = connect_many(&target.addrs, opts.connections, opts.source_ips).await?;
    let n = conns.len();
    let start = Instant::now() + LEAD;
    let ns = |d: Duration| d.as_nanos() as u64;
    let measure_from_ns = ns(opts.warmup);
    let end_ns = measure_from_ns + ns(opts.duration);
    let end = start + opts.warmup + opts.duration;
    let deadline = end + DRAIN;
    let probe = cpu_probe(target, start + opts.warmup, end);
    let mut tasks = Vec::with_capacity(n);
    for (i, stream) in conns.into_iter().enumerate() {
        let frame = opts.frame(i);
        let sched = Schedule::for_connection(i, n, rate);
        tasks.push(tokio::spawn(async move {
            let (mut rd, mut wr) = stream.into_split();
            let total = sched.count_before(end_ns);
            let in_window = |t: u64| t >= measure_from_ns && t < end_ns;
            let writer = async {
                let (mut sent, mut lags) = (0u64, Vec::new());
                for k in 0..total {
                    let due_ns = sched.at(k);
                    let due = start + Duration::from_nanos(due_ns);
                    tokio::time::sleep_until(due).await;
                    let now = Instant::now();
                    let write = tokio::time::timeout_at(deadline, wr.write_all(&frame)).await;
                    if !matches!(write, Ok(Ok(()))) {
                        break;
                    }
                    let since = ns(now.saturating_duration_since(start));
                    if in_window(since) {
                        sent += 1;
                    }
                    if in_window(due_ns) {
                        lags.push(ns(now.saturating_duration_since(due)));
                    }
                }
                (sent, lags)
            };
            let reader = async {
                let mut out = OpenConn::default();
                let mut r = ResponseReader::new();
                let mut k = 0;
                while k < total {
                    let Ok(Ok((status, _))) = tokio::time::timeout_at(deadline, r.read(&mut rd)).await else {
                        break;
                    };
                    let now = Instant::now();
                    let due_ns = sched.at(k);
                    if status != 200 {
                        out.bad_status += 1;
                    }
                    if in_window(due_ns) {
                        let due = start + Duration::from_nanos(due_ns);
                        out.latencies.push(ns(now.saturating_duration_since(due)));
                    }
                    if in_window(ns(now.saturating_duration_since(start))) {
                        out.answered_in_window += 1;
                    }
                    k += 1;
                }
                for k in k..total {
                    let due_ns = sched.at(k);
                    if in_window(due_ns) {
                        out.unanswered += 1;
                        let due = start + Duration::from_nanos(due_ns);
                        out.latencies.push(ns(deadline.saturating_duration_since(due)));
                    }
                }
                out
            };
            let ((sent, lags), mut out) = tokio::join!(writer, reader);
            out.sent_in_window = sent;
            out.lags = lags;
            out
        }));
    }
    let (mut sent, mut answered, mut unanswered, mut bad) = (0, 0, 0, 0);
    let (mut latencies, mut lags) = (Vec::new(), Vec::new());
    for t in tasks {
        let c = t.await.context("open-loop task failed")?;
        sent += c.sent_in_window;
        answered += c.answered_in_window;
        unanswered += c.unanswered;
        bad += c.bad_status;
        latencies.extend(c.latencies);
        lags.extend(c.lags);
    }
    let secs = opts.duration.as_secs_f64().max(1e-9);
    let used = probe.await.context("CPU probe failed")?;
    Ok(OpenResult {
        target: target.name.to_owned(),
        connections: n,
        rate,
        seconds: opts.duration.as_secs_f64(),
        sent_per_sec: sent as f64 / secs,
        achieved_per_sec: answered as f64 / secs,
        latency: Latency::from_ns(&mut latencies),
        unanswered,
        bad_status: bad,
        send_lag: Latency::from_ns(&mut lags),
        cpu: CpuUse::new(used, opts.duration, answered),
    })
}

/// Idle-memory result.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// `server` or `ceiling`.
    pub target: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that got their answer and stayed open.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// Resident memory before, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with all connections open and idle, KiB.
    pub rss_after_kib: u64,
    /// Growth per open connection, KiB.
    pub kib_per_connection: f64,
}

/// Measurement C: open `count` connections, each makes one request and then
/// stays open idle; compare the target's resident memory before and after.
pub async fn idle_memory(target: &Target, opts: &LoadOptions, count: usize) -> anyhow::Result<IdleResult> {
    ensure!(!opts.frames.is_empty(), "no request frames");
    ensure!(!target.pids.is_empty(), "no process id for {} (see --server-pid)", target.name);
    let rss = || target.pids.iter().map(|&p| crate::child::rss_kib(p)).sum::<anyhow::Result<u64>>();
    tokio::time::sleep(SETTLE).await;
    let before = rss()?;
    let addrs = &target.addrs;
    let source_ips = opts.source_ips;
    let results: Vec<anyhow::Result<TcpStream>> = futures::stream::iter(0..count)
        .map(|i| {
            let frame = opts.frame(i);
            async move {
                let addr = addr_for(addrs, i)?;
                let mut s = connect_timeout(addr, source_ip(i, source_ips), CONNECT_LIMIT).await?;
                let mut r = ResponseReader::new();
                let resp = crate::net::round_trip(&mut s, &mut r, &frame, CONNECT_LIMIT).await?;
                ensure!(resp.status == 200, "answered {}", resp.status);
                Ok(s)
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(s) => open.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = &first_error {
        eprintln!("{}: {failed} idle connections failed; first: {e:#}", target.name);
    }
    tokio::time::sleep(SETTLE).await;
    let after = rss()?;
    let opened = open.len();
    drop(open);
    Ok(IdleResult {
        target: target.name.to_owned(),
        connections: count,
        opened,
        failed,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: after.saturating_sub(before) as f64 / opened.max(1) as f64,
    })
}
