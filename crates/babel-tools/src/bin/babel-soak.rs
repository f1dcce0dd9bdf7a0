//! `babel-soak`: a long soak with many clients (memory must stay flat), and
//! thousands of silent connections beside a hundred busy ones.
//!
//! `cargo build --release -p babel-server -p babel-tools && target/release/babel-soak`

use std::sync::atomic::Ordering;
use std::time::Duration;

use babel_tools::soak::{half_open, soak, start_server};
use clap::Parser;

/// Soak and half-open runs against a real babel-server.
#[derive(Debug, Parser)]
struct Args {
    /// Pairs of clients in the soak (two clients each).
    #[arg(long, default_value_t = 500)]
    pairs: usize,
    /// Soak length, seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seconds of warm-up before memory growth is measured.
    #[arg(long, default_value_t = 60)]
    warmup: u64,
    /// Silent connections in the half-open run.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Busy clients beside them.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Half-open run length, seconds.
    #[arg(long, default_value_t = 30)]
    half_open_seconds: u64,
    /// Skip the soak (half-open only).
    #[arg(long)]
    no_soak: bool,
    /// The babel-server binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = babel_tools::raise_fd_limit()?;
    let bin = match args.server_bin {
        Some(p) => p,
        None => babel_tools::child::sibling_binary("babel-server")?,
    };
    let dir = std::env::temp_dir().join(format!("babel-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "machine: {} CPUs; file descriptors: {limit}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let server = start_server(&bin, &dir)?;
    let (lat, counts, held) =
        half_open(&server, args.idle, args.clients, Duration::from_secs(args.half_open_seconds)).await?;
    let mut lat = lat;
    lat.sort_unstable();
    let p = |q: f64| babel_tools::stats::percentile(&lat, q).map_or(0.0, |ns| ns as f64 / 1e6);
    println!(
        "half-open: {held} silent connections held open; {} clients made {} requests, {} errors; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.clients,
        counts.ok.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        p(0.5),
        p(0.99),
        lat.last().map_or(0.0, |ns| *ns as f64 / 1e6)
    );
    drop(server);

    if !args.no_soak {
        let server = start_server(&bin, &dir)?;
        let (samples, counts) =
            soak(&server, args.pairs, Duration::from_secs(args.seconds), Duration::from_secs(10)).await?;
        let after_warmup: Vec<_> = samples.iter().filter(|s| s.at_s >= args.warmup).collect();
        let first = after_warmup.first().map_or(0, |s| s.rss_kib);
        let last = after_warmup.last().map_or(0, |s| s.rss_kib);
        let peak = after_warmup.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let growth = if first > 0 { 100.0 * (last as f64 - first as f64) / first as f64 } else { 0.0 };
        println!(
            "soak: {} clients for {} s: {} requests ok, {} refused as expected, {} errors",
            args.pairs * 2,
            args.seconds,
            counts.ok.load(Ordering::Relaxed),
            counts.expected_refusals.load(Ordering::Relaxed),
            counts.errors.load(Ordering::Relaxed)
        );
        println!(
            "soak: server RSS after warm-up {first} KiB -> {last} KiB ({growth:+.1} %), peak {peak} KiB; samples: {}",
            samples.iter().map(|s| format!("{}s:{}", s.at_s, s.rss_kib)).collect::<Vec<_>>().join(" ")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
