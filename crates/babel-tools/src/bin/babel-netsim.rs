//! `babel-netsim`: a userspace network impairment proxy (UDP or TCP) for
//! loopback tests, since `tc netem` is not available here. See
//! [`babel_tools::netsim`].
//!
//! ```sh
//! babel-netsim --listen 127.0.0.1:9000 --to 127.0.0.1:7447 --loss 5 --jitter 30 --seed 1
//! babel-netsim --tcp --listen 127.0.0.1:9001 --to 127.0.0.1:7447 --delay 50 --stall-every 10 --stall-ms 800
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use babel_tools::netsim::proxy::{start_tcp, start_udp};
use babel_tools::netsim::{GilbertElliott, Impairment, StreamImpairment};
use clap::Parser;

/// Forwards UDP datagrams (default) or TCP connections from `--listen` to
/// `--to`, impairing them on the way, reproducibly from `--seed`. Prints
/// `listening on ADDR`, then its counters every `--report-every` seconds
/// and as JSON on exit (Ctrl-C, or after `--duration`).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0: any free port). 127.0.0.0/8 only.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to forward to. 127.0.0.0/8 only.
    #[arg(long)]
    to: SocketAddr,
    /// Proxy TCP connections instead of UDP datagrams.
    #[arg(long)]
    tcp: bool,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// UDP: random loss, percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// UDP: bursty (Gilbert) loss, mean percent.
    #[arg(long, default_value_t = 0.0)]
    burst: f64,
    /// UDP: mean burst length of `--burst`, in datagrams.
    #[arg(long, default_value_t = 3.0)]
    burst_len: f64,
    /// One-way delay, ms (UDP and TCP).
    #[arg(long, default_value_t = 0)]
    delay: u64,
    /// UDP: extra delay uniform in [0, jitter] ms per datagram.
    #[arg(long, default_value_t = 0)]
    jitter: u64,
    /// UDP: percent of datagrams held back by `--reorder-ms`.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// UDP: how long a reordered datagram is held back, ms.
    #[arg(long, default_value_t = 40)]
    reorder_ms: u64,
    /// UDP: percent of datagrams sent twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Bandwidth cap per direction, bits/s (suffix k or m allowed: 64k, 1m).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u64>,
    /// UDP: the capped link's queue, bytes (drop-tail).
    #[arg(long, default_value_t = 64 * 1024)]
    queue: usize,
    /// UDP: apply the impairment to datagrams going back (target to
    /// client) too, not only to those going to the target.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    both_ways: bool,
    /// TCP: mean seconds between stalls.
    #[arg(long)]
    stall_every: Option<f64>,
    /// TCP: how long a stall lasts, ms.
    #[arg(long, default_value_t = 1000)]
    stall_ms: u64,
    /// TCP: mean seconds a connection lives before it is cut.
    #[arg(long)]
    cut_every: Option<f64>,
    /// Print the counters this often, seconds (0: only at the end).
    #[arg(long, default_value_t = 5)]
    report_every: u64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.strip_suffix('k') {
        Some(n) => (n, 1_000.0),
        None => match s.strip_suffix('m') {
            Some(n) => (n, 1_000_000.0),
            None => (s.as_str(), 1.0),
        },
    };
    let v: f64 = num.parse().map_err(|_| format!("`{s}` is not a rate (e.g. 64000, 64k, 1.5m)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err("a rate must be positive".into());
    }
    Ok((v * mult) as u64)
}

fn pct(p: f64) -> anyhow::Result<f64> {
    anyhow::ensure!((0.0..=100.0).contains(&p), "percentages are 0..100, got {p}");
    Ok(p / 100.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let duration = (a.duration > 0).then(|| Duration::from_secs(a.duration));
    let report_every = (a.report_every > 0).then(|| Duration::from_secs(a.report_every));
    if a.tcp {
        let cfg = StreamImpairment {
            delay: Duration::from_millis(a.delay),
            rate_bps: a.rate,
            stall_every: a.stall_every.map(Duration::from_secs_f64),
            stall_for: Duration::from_millis(a.stall_ms),
            cut_after: a.cut_every.map(Duration::from_secs_f64),
        };
        let p = start_tcp(a.listen, a.to, cfg, a.seed).await.context("cannot start the TCP proxy")?;
        announce(p.addr)?;
        wait(duration, report_every, || serde_json::to_string(&p.snapshot()).unwrap_or_default()).await;
        let c = p.finish().await;
        println!("{}", serde_json::to_string(&c)?);
    } else {
        let burst = (a.burst > 0.0).then(|| GilbertElliott::from_loss_and_burst(a.burst / 100.0, a.burst_len));
        let up = Impairment {
            loss: pct(a.loss)?,
            burst,
            delay: Duration::from_millis(a.delay),
            jitter: Duration::from_millis(a.jitter),
            reorder: pct(a.reorder)?,
            reorder_delay: Duration::from_millis(a.reorder_ms),
            duplicate: pct(a.duplicate)?,
            rate_bps: a.rate,
            queue_bytes: a.queue,
        };
        let down = if a.both_ways { up } else { Impairment::default() };
        let p = start_udp(a.listen, a.to, up, down, a.seed).await.context("cannot start the UDP proxy")?;
        announce(p.addr)?;
        wait(duration, report_every, || serde_json::to_string(&p.snapshot()).unwrap_or_default()).await;
        let c = p.finish().await;
        println!("{}", serde_json::to_string(&c)?);
    }
    Ok(())
}

fn announce(addr: SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    Ok(())
}

/// Runs until Ctrl-C or `duration`, printing `report()` now and then.
async fn wait(duration: Option<Duration>, every: Option<Duration>, report: impl Fn() -> String) {
    let end = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(end);
    let mut tick = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut end => break,
            _ = tick.tick() => if every.is_some() { eprintln!("babel-netsim: {}", report()) },
        }
    }
}
