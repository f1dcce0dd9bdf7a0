//! `babel-relay-bench`: voice through babel-server's UDP relay and call
//! channels, compared with a bare UDP forwarder. See
//! [`babel_tools::relay_bench`] and BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use babel_tools::child::sibling_binary;
use babel_tools::relay_bench::{self, BenchOptions};
use babel_tools::turn_bench::TurnOptions;
use babel_tools::udp_load::{TIMING_LEN, UdpOptions};
use clap::Parser;

/// UDP relay and call-channel benchmark.
///
/// Starts babel-server (temporary database) and babel-udp-forward on
/// 127.0.0.1, sets up calls, and measures forwarded packets/s, loss,
/// added latency and CPU. Build first: `cargo build --release -p
/// babel-server -p babel-tools`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Concurrent calls (two participants each, both sending).
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Client UDP sockets (participants share them).
    #[arg(long, default_value_t = 16)]
    sockets: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds before each measured run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Packets per second per participant.
    #[arg(long, default_value_t = 50)]
    pps: u32,
    /// Payload bytes (an Opus packet: 160).
    #[arg(long, default_value_t = 160)]
    payload: usize,
    /// Pacing slot in µs: a sender sleeps at least this long, then sends
    /// everything due.
    #[arg(long, default_value_t = 250)]
    slot_us: u64,
    /// Sender threads.
    #[arg(long, default_value_t = 2)]
    send_threads: usize,
    /// Wait after the last send before counting stops, ms.
    #[arg(long, default_value_t = 500)]
    drain_ms: u64,
    /// Receivers drain their sockets without blocking and sleep this many
    /// µs when all are empty (0: one blocking thread per socket). Fewer
    /// wake-ups for the generator; measured latency gains up to the pause.
    #[arg(long, default_value_t = 100)]
    recv_poll_us: u64,
    /// Receiver threads when polling.
    #[arg(long, default_value_t = 1)]
    recv_threads: usize,
    /// Client socket buffers asked for, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    buffer_bytes: usize,
    /// Calls of the call-channel run (0: skip it).
    #[arg(long, default_value_t = 200)]
    channel_calls: usize,
    /// Skip the bare forwarder.
    #[arg(long)]
    no_bare: bool,
    /// Socket buffer of the bare forwarder, bytes (0: system default, like
    /// the relay's socket).
    #[arg(long, default_value_t = 0)]
    forward_buffer_bytes: usize,
    /// Search for the most calls held with 0 loss (relay and bare).
    #[arg(long)]
    find_max: bool,
    /// First number of calls the search tries.
    #[arg(long, default_value_t = 250)]
    find_start: usize,
    /// Most calls the search tries (all are set up first).
    #[arg(long, default_value_t = 4000)]
    max_calls: usize,
    /// Most runs of the search per target.
    #[arg(long, default_value_t = 10)]
    find_runs: usize,
    /// Measured seconds of each search run.
    #[arg(long, default_value_t = 3.0)]
    find_seconds: f64,
    /// Search resolution, percent.
    #[arg(long, default_value_t = 5)]
    find_resolution_pct: usize,
    /// Run a UDP measurement again when other work on the machine took more
    /// than this many % of one core during it…
    #[arg(long, default_value_t = 25.0)]
    max_other_pct: f64,
    /// …up to this many runs in all.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Before each UDP run, wait at most this many seconds for the machine
    /// to be quiet (other benchmarks, compilers) (0: do not wait).
    #[arg(long, default_value_t = 120.0)]
    quiet_wait: f64,
    /// Setup calls in flight at once.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
    /// The babel-server binary [default: next to this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The babel-udp-forward binary [default: next to this executable].
    #[arg(long)]
    forward_bin: Option<PathBuf>,
    /// The relay's worker counts to measure, comma-separated (0: the
    /// server's default, one per core); one server each, the first serves
    /// the other runs.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    relay_workers: Vec<usize>,
    /// Also offer this many calls to each worker count (overload: how many
    /// datagrams/s it forwards) (0: skip).
    #[arg(long, default_value_t = 0)]
    saturate_calls: usize,
    /// The server's relay_gather_us [default: the server's].
    #[arg(long)]
    relay_gather_us: Option<u64>,
    /// Run coturn side by side with this many turnutils_uclient clients
    /// (even; as many datagrams/s as that many relayed calls), and the relay
    /// at the same rate (0: skip).
    #[arg(long, default_value_t = 0)]
    coturn_clients: usize,
    /// coturn's relay threads (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    coturn_threads: usize,
    /// Longest wait for uclient to start all its clients, seconds.
    #[arg(long, default_value_t = 180)]
    coturn_ramp_limit: u64,
    /// The turnserver binary.
    #[arg(long, default_value = "turnserver")]
    turnserver_bin: PathBuf,
    /// The turnutils_uclient binary.
    #[arg(long, default_value = "turnutils_uclient")]
    uclient_bin: PathBuf,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

fn secs(what: &str, s: f64) -> anyhow::Result<Duration> {
    ensure!((0.0..=600.0).contains(&s), "--{what} must be between 0 and 600");
    Ok(Duration::from_secs_f64(s))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    ensure!(a.seconds > 0.0 && a.find_seconds > 0.0, "measured seconds must be positive");
    ensure!(
        (TIMING_LEN..=babel_proto::relay::MAX_PAYLOAD).contains(&a.payload),
        "--payload must be {TIMING_LEN} ..= {}",
        babel_proto::relay::MAX_PAYLOAD
    );
    ensure!((1..=256).contains(&a.sockets), "--sockets must be 1 ..= 256");
    ensure!((1..=16).contains(&a.send_threads), "--send-threads must be 1 ..= 16");
    ensure!((10..=20_000).contains(&a.slot_us), "--slot-us must be 10 ..= 20000");
    ensure!(
        a.recv_poll_us <= 10_000 && (1..=64).contains(&a.recv_threads),
        "--recv-poll-us must be at most 10000 and --recv-threads 1 ..= 64"
    );
    ensure!(a.drain_ms <= 10_000, "--drain-ms must be at most 10000");
    ensure!((1..=5).contains(&a.attempts), "--attempts must be 1 ..= 5");
    ensure!(a.find_runs <= 30, "--find-runs must be at most 30");
    ensure!(
        !a.relay_workers.is_empty() && a.relay_workers.iter().all(|&w| w <= 64),
        "--relay-workers: counts of 0 ..= 64"
    );
    ensure!(a.coturn_clients % 2 == 0 && a.coturn_clients <= 10_000, "--coturn-clients must be even, at most 10000");
    let opts = BenchOptions {
        calls: a.calls,
        channel_calls: a.channel_calls,
        udp: UdpOptions {
            sockets: a.sockets,
            pps: a.pps,
            payload: a.payload,
            warmup: secs("warmup", a.warmup)?,
            seconds: secs("seconds", a.seconds)?,
            drain: Duration::from_millis(a.drain_ms),
            slot: Duration::from_micros(a.slot_us),
            send_threads: a.send_threads,
            buffer_bytes: a.buffer_bytes,
            recv_poll: (a.recv_poll_us > 0).then(|| Duration::from_micros(a.recv_poll_us)),
            recv_threads: a.recv_threads,
        },
        no_bare: a.no_bare,
        find_max: a.find_max,
        find_start: a.find_start,
        max_calls: a.max_calls,
        find_runs: a.find_runs,
        find_seconds: secs("find-seconds", a.find_seconds)?,
        find_resolution_pct: a.find_resolution_pct,
        setup_concurrency: a.setup_concurrency,
        max_other_pct: a.max_other_pct,
        attempts: a.attempts,
        quiet_wait: secs("quiet-wait", a.quiet_wait)?,
        server_bin: match a.server_bin {
            Some(p) => p,
            None => sibling_binary("babel-server")?,
        },
        forward_bin: match a.forward_bin {
            Some(p) => p,
            None => sibling_binary("babel-udp-forward")?,
        },
        forward_buffer_bytes: a.forward_buffer_bytes,
        relay_workers: a.relay_workers,
        saturate_calls: a.saturate_calls,
        relay_gather_us: a.relay_gather_us,
        coturn: (a.coturn_clients > 0).then(|| TurnOptions {
            clients: a.coturn_clients,
            pps: a.pps,
            payload: a.payload,
            warmup: Duration::from_secs_f64(a.warmup.max(1.0)),
            seconds: a.seconds.round().max(1.0) as u32,
            relay_threads: a.coturn_threads,
            ramp_limit: Duration::from_secs(a.coturn_ramp_limit),
            turnserver: a.turnserver_bin,
            uclient: a.uclient_bin,
        }),
    };
    let report = relay_bench::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
