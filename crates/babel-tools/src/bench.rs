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

/// What the load is sent to.
#[derive(Debug, Clone)]
pub struct Target {
    /// `server` or `ceiling`.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process, to read memory and CPU time from.
    pub pid: Option<u32>,
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

/// Opens `n` connections (in order), failing if any cannot be opened.
pub async fn connect_many(addr: SocketAddr, n: usize, source_ips: usize) -> anyhow::Result<Vec<TcpStream>> {
    let results: Vec<std::io::Result<TcpStream>> = futures::stream::iter(0..n)
        .map(|i| connect_timeout(addr, source_ip(i, source_ips), CONNECT_LIMIT))
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::with_capacity(n);
    for (i, r) in results.into_iter().enumerate() {
        out.push(r.with_context(|| format!("connection {i} of {n} to {addr} failed"))?);
    }
    Ok(out)
}

/// Sends every user's request once over a few connections so that the
/// server's caches hold every token and contact list before measuring.
pub async fn warm_caches(target: &Target, frames: &[Bytes], source_ips: usize) -> anyhow::Result<()> {
    const WARMERS: usize = 8;
    let conns = connect_many(target.addr, WARMERS.min(frames.len()), source_ips).await?;
    let tasks = conns.into_iter().enumerate().map(|(w, mut s)| {
        let mine: Vec<Bytes> = frames.iter().skip(w).step_by(WARMERS).cloned().collect();
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
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    /// The target process, in percent of one core (200 = both of 2 cores).
    pub target_pct: Option<f64>,
    /// This load generator, in percent of one core.
    pub load_pct: Option<f64>,
    /// The target's CPU time per answered request, in microseconds.
    pub target_us_per_request: Option<f64>,
    /// Everything else on the machine (the kernel's own threads, other
    /// processes), in percent of one core: a large figure means the run was
    /// disturbed.
    pub other_pct: Option<f64>,
}

/// CPU seconds used in a window: target, load generator, whole machine.
type CpuSample = (Option<f64>, Option<f64>, Option<f64>);

/// Reads the CPU time of the target and of this process at `from` and `to`.
fn cpu_probe(pid: Option<u32>, from: Instant, to: Instant) -> tokio::task::JoinHandle<CpuSample> {
    use crate::child::{cpu_seconds, machine_busy_seconds};
    let sample = move || (pid.and_then(|p| cpu_seconds(Some(p))), cpu_seconds(None), machine_busy_seconds());
    tokio::spawn(async move {
        tokio::time::sleep_until(from).await;
        let a = sample();
        tokio::time::sleep_until(to).await;
        let b = sample();
        let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        (used(a.0, b.0), used(a.1, b.1), used(a.2, b.2))
    })
}

impl CpuUse {
    fn new(used: CpuSample, window: Duration, requests: u64) -> CpuUse {
        let secs = window.as_secs_f64().max(1e-9);
        let pct = |c: f64| c / secs * 100.0;
        let other = match used {
            (Some(t), Some(l), Some(all)) => Some((all - t - l).max(0.0)),
            (None, Some(l), Some(all)) => Some((all - l).max(0.0)),
            _ => None,
        };
        CpuUse {
            target_pct: used.0.map(pct),
            load_pct: used.1.map(pct),
            target_us_per_request: used.0.filter(|_| requests > 0).map(|c| c * 1e6 / requests as f64),
            other_pct: other.map(pct),
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
    let conns = connect_many(target.addr, opts.connections, opts.source_ips).await?;
    let start = Instant::now() + LEAD;
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let probe = cpu_probe(target.pid, measure_from, end);
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
    let conns = connect_many(target.addr, opts.connections, opts.source_ips).await?;
    let n = conns.len();
    let start = Instant::now() + LEAD;
    let ns = |d: Duration| d.as_nanos() as u64;
    let measure_from_ns = ns(opts.warmup);
    let end_ns = measure_from_ns + ns(opts.duration);
    let end = start + opts.warmup + opts.duration;
    let deadline = end + DRAIN;
    let probe = cpu_probe(target.pid, start + opts.warmup, end);
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
    let pid = target.pid.with_context(|| format!("no process id for {} (see --server-pid)", target.name))?;
    tokio::time::sleep(SETTLE).await;
    let before = crate::child::rss_kib(pid)?;
    let addr = target.addr;
    let source_ips = opts.source_ips;
    let results: Vec<anyhow::Result<TcpStream>> = futures::stream::iter(0..count)
        .map(|i| {
            let frame = opts.frame(i);
            async move {
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
    let after = crate::child::rss_kib(pid)?;
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
