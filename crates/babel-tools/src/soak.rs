//! `babel-soak`: long runs against a real server.
//!
//! * **soak**: many clients log in, list contacts, call each other and hang
//!   up, for minutes; the server's memory is sampled, and every answer but
//!   the expected ones counts as an error.
//! * **half-open**: thousands of connections that connect and then say
//!   nothing, while a hundred real clients keep asking; their answers must
//!   all come, and fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use babel_client::Client;
use babel_proto::{CallId, MediaSetup};
use tokio::sync::Mutex;

use crate::child::{ChildServer, rss_kib};

/// Counters of a run.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests answered as expected.
    pub ok: AtomicU64,
    /// Requests refused in an expected way (the other side busy, a call
    /// already over).
    pub expected_refusals: AtomicU64,
    /// Anything else: unexpected statuses, lost connections.
    pub errors: AtomicU64,
}

/// One memory sample.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Seconds into the run.
    pub at_s: u64,
    /// Server RSS, KiB.
    pub rss_kib: u64,
}

/// Starts a server with cheap hashing and no limits on loopback.
pub fn start_server(bin: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<ChildServer> {
    let config = dir.join("soak.toml");
    std::fs::write(&config, "durability = \"normal\"\n[password]\nmemory_kib = 256\niterations = 1\n")?;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--log", "error", "--max-connections", "1000000", "--db"])
        .arg(dir.join("soak.db"))
        .arg("--config")
        .arg(&config);
    ChildServer::start("babel-server", cmd, Duration::from_secs(20))
}

async fn pair_loop(addr: String, i: usize, until: Instant, counts: Arc<Counts>) -> anyhow::Result<()> {
    let pw = "password123";
    let (ea, eb) = (format!("soak-{i}a@example.org"), format!("soak-{i}b@example.org"));
    let mut a = Client::connect(addr.clone()).await?;
    let mut b = Client::connect(addr).await?;
    let sa = match a.create(&ea, pw, None).await {
        Ok(s) => s,
        Err(_) => a.login(&ea, pw).await?,
    };
    let sb = match b.create(&eb, pw, None).await {
        Ok(s) => s,
        Err(_) => b.login(&eb, pw).await?,
    };
    if a.add_contact(&eb).await.is_ok() {
        b.accept_contact(sa.id).await.ok();
    }
    let b = Arc::new(Mutex::new(b));
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let tally = |r: Result<(), babel_client::ClientError>| match r {
            Ok(()) => counts.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.refusal().is_some() => counts.expected_refusals.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
        };
        tally(a.contacts().await.map(|_| ()));
        tally(b.lock().await.contacts().await.map(|_| ()));
        if n % 3 == 0 {
            // A short call: ring, answer, hang up.
            match a.call(sb.id, MediaSetup::default()).await {
                Ok(started) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                    let call: CallId = started.call_id;
                    tally(b.lock().await.accept_call(call, MediaSetup::default()).await.map(|_| ()));
                    tally(a.hangup(call).await);
                }
                Err(e) => {
                    tally(Err(e));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(900 + (i as u64 % 200))).await;
    }
    Ok(())
}

/// The soak: `pairs` pairs of clients for `duration`; memory sampled every
/// `every`.
pub async fn soak(
    server: &ChildServer,
    pairs: usize,
    duration: Duration,
    every: Duration,
) -> anyhow::Result<(Vec<Sample>, Arc<Counts>)> {
    let addr = server.addr().to_string();
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let until = start + duration;
    let mut tasks = Vec::new();
    for i in 0..pairs {
        tasks.push(tokio::spawn(pair_loop(addr.clone(), i, until, Arc::clone(&counts))));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut samples = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(every.min(until.saturating_duration_since(Instant::now()))).await;
        samples.push(Sample { at_s: start.elapsed().as_secs(), rss_kib: rss_kib(server.pid())? });
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("babel-soak: a client stopped: {e:#}");
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok((samples, counts))
}

/// Half-open connections: `idle` connections that say nothing, while
/// `clients` real ones keep asking for `duration`. Answers the real
/// clients' latencies (ns) and the counters.
pub async fn half_open(
    server: &ChildServer,
    idle: usize,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<u64>, Arc<Counts>, usize)> {
    let addr = server.addr();
    let mut silent = Vec::with_capacity(idle);
    for _ in 0..idle {
        silent.push(tokio::net::TcpStream::connect(addr).await.context("opening an idle connection")?);
    }
    let counts = Arc::new(Counts::default());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (counts, latencies, addr) = (Arc::clone(&counts), Arc::clone(&latencies), addr.to_string());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await?;
            let email = format!("half-{i}@example.org");
            if c.create(&email, "password123", None).await.is_err() {
                c.login(&email, "password123").await?;
            }
            let mut mine = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                match c.contacts().await {
                    Ok(_) => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        mine.push(t.elapsed().as_nanos() as u64);
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            latencies.lock().await.extend(mine);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let held = silent.len();
    drop(silent);
    let l = std::mem::take(&mut *latencies.lock().await);
    Ok((l, counts, held))
}
