//! coturn, side by side with the relay: Debian's `turnserver` driven by its
//! own load generator, `turnutils_uclient`, on 127.0.0.1.
//!
//! `turnutils_uclient -y` makes `clients` TURN allocations and pairs them:
//! each client sends `-l` bytes every `-z` ms to its partner's relayed
//! address, so every message crosses coturn twice (client → coturn →
//! partner's relayed address on coturn → partner): two relayed datagrams,
//! each one received and one sent by coturn, as a datagram forwarded by
//! Babel's relay is one received and one sent. `clients` uclient clients at
//! 50 messages/s thus relay as many datagrams a second as `clients` Babel
//! calls (two participants at 50/s each).
//!
//! uclient starts its clients over several seconds and prints its running
//! totals once a second (`start_mclient: msz=…, tot_send_msgs=…,
//! tot_recv_msgs=…`). The measured window starts after the last client
//! started and the warm-up passed, and runs from one progress line to the
//! one `seconds` lines later; coturn's CPU (utime + stime of every thread,
//! `/proc/<pid>/stat`) is read as each of those two lines arrives, so
//! packets and CPU are counted over the same second marks. Relayed
//! datagrams in the window: twice the messages received in it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Serialize;

use crate::child::{cpu_seconds, machine_busy_seconds};

/// User and password of the bench's long-term credential.
const USER: &str = "bench";
const PASSWORD: &str = "babel-turn-bench";
const START_LIMIT: Duration = Duration::from_secs(20);

/// How to run coturn.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    /// uclient clients (allocations), each sending.
    pub clients: usize,
    /// Messages per second per client.
    pub pps: u32,
    /// Message bytes.
    pub payload: usize,
    /// Seconds after the last client started before measuring.
    pub warmup: Duration,
    /// Measured seconds (progress lines).
    pub seconds: u32,
    /// coturn's relay threads (0: its default, one per core).
    pub relay_threads: usize,
    /// Longest wait for uclient to start every client.
    pub ramp_limit: Duration,
    /// `turnserver`.
    pub turnserver: PathBuf,
    /// `turnutils_uclient`.
    pub uclient: PathBuf,
}

/// What the coturn run measured.
#[derive(Debug, Clone, Serialize)]
pub struct TurnRun {
    /// uclient clients.
    pub clients: usize,
    /// coturn's relay threads (0: its default).
    pub relay_threads: usize,
    /// Seconds from uclient's start until every client was sending.
    pub ramp_seconds: f64,
    /// Measured seconds (between the window's two progress lines).
    pub seconds: f64,
    /// Messages sent in the window.
    pub sent: u64,
    /// Messages received in the window.
    pub received: u64,
    /// `sent - received`.
    pub lost: i64,
    /// Datagrams coturn relayed in the window: 2 × received.
    pub relayed: u64,
    /// Relayed datagrams a second.
    pub relayed_per_s: f64,
    /// coturn CPU in the window.
    pub server_cpu_s: Option<f64>,
    /// coturn CPU, percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// coturn CPU per million relayed datagrams.
    pub server_cpu_s_per_mpkt: Option<f64>,
    /// Relayed datagrams per coturn CPU-second.
    pub pkt_per_cpu_s: Option<f64>,
    /// uclient's CPU, percent of one core.
    pub generator_cpu_pct: Option<f64>,
    /// The machine's busy CPU, percent of all cores.
    pub machine_busy_pct: Option<f64>,
    /// Busy CPU of everything else, percent of one core.
    pub other_cpu_pct: Option<f64>,
}

/// uclient's running totals: (clients, messages sent, messages received).
pub fn parse_progress(line: &str) -> Option<(usize, u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let at = line.find(name)? + name.len();
        let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    if !line.contains("start_mclient: msz=") {
        return None;
    }
    Some((field("msz=")? as usize, field("tot_send_msgs=")?, field("tot_recv_msgs=")?))
}

/// A child killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout and stderr, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    rx
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_turnserver(opts: &TurnOptions, dir: &Path, port: u16) -> anyhow::Result<Reaped> {
    let mut cmd = Command::new(&opts.turnserver);
    cmd.args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
        .args(["--listening-port", &port.to_string(), "--min-port", "40000", "--max-port", "49999"])
        .args(["--lt-cred-mech", "--user", &format!("{USER}:{PASSWORD}"), "--realm", "babel.bench"])
        .args(["--allow-loopback-peers", "--log-file", "stdout", "--simple-log"])
        .arg("--userdb")
        .arg(dir.join("turndb"))
        .arg("--pidfile")
        .arg(dir.join("turnserver.pid"));
    if opts.relay_threads > 0 {
        cmd.args(["--relay-threads", &opts.relay_threads.to_string()]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child =
        Reaped(cmd.spawn().with_context(|| {
            format!("cannot start {} (install coturn: scripts/setup.sh)", opts.turnserver.display())
        })?);
    let lines = lines_of(&mut child.0);
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("Total General servers") || l.contains("Total UDP servers") => break,
            Ok(_) => {}
            Err(_) => bail!("turnserver did not start within {START_LIMIT:?}"),
        }
    }
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

/// Runs coturn and uclient once and measures.
pub fn run(opts: &TurnOptions) -> anyhow::Result<TurnRun> {
    ensure!(opts.clients >= 2 && opts.clients % 2 == 0, "coturn clients must be an even number ≥ 2");
    ensure!((1..=1000).contains(&opts.pps), "pps must be 1 ..= 1000");
    ensure!(opts.seconds >= 1, "at least one measured second");
    let dir = std::env::temp_dir().join(format!("babel-turn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(opts: &TurnOptions, dir: &Path) -> anyhow::Result<TurnRun> {
    let port = free_udp_port()?;
    let server = start_turnserver(opts, dir, port)?;
    let server_pid = server.0.id();
    let interval_ms = (1000 / opts.pps).max(1);
    // Enough messages for the ramp, the warm-up and the window; uclient is
    // stopped once the window closes.
    let total_s = opts.ramp_limit.as_secs() + opts.warmup.as_secs() + u64::from(opts.seconds) + 5;
    let messages = total_s * 1000 / u64::from(interval_ms);
    let started = Instant::now();
    let mut uclient = Reaped(
        Command::new(&opts.uclient)
            .args(["-y", "-c", "-X"])
            .args(["-m", &opts.clients.to_string(), "-n", &messages.to_string()])
            .args(["-l", &opts.payload.to_string(), "-z", &interval_ms.to_string()])
            .args(["-u", USER, "-w", PASSWORD, "-p", &port.to_string(), "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", opts.uclient.display()))?,
    );
    let gen_pid = uclient.0.id();
    let lines = lines_of(&mut uclient.0);
    let full_rate = opts.clients as u64 * u64::from(opts.pps);
    let next_progress = |deadline: Instant| -> anyhow::Result<(usize, u64, u64)> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(p) = parse_progress(&l) {
                        return Ok(p);
                    }
                }
                Err(_) => bail!("turnutils_uclient stopped reporting (or took too long)"),
            }
        }
    };
    // The ramp: every client allocated and sending at its full rate for two
    // progress lines running.
    let ramp_deadline = started + opts.ramp_limit;
    let mut last = next_progress(ramp_deadline)?;
    let mut steady = 0;
    while steady < 2 {
        let p = next_progress(ramp_deadline)?;
        let rate = p.1.saturating_sub(last.1);
        steady = if p.0 == opts.clients && rate * 10 >= full_rate * 9 { steady + 1 } else { 0 };
        last = p;
    }
    let ramp_seconds = started.elapsed().as_secs_f64();
    let warm_until = Instant::now() + opts.warmup;
    let line_limit = Duration::from_secs(5);
    while Instant::now() < warm_until {
        next_progress(Instant::now() + line_limit)?;
    }
    let sample = || (cpu_seconds(Some(server_pid)), cpu_seconds(Some(gen_pid)), machine_busy_seconds(), Instant::now());
    let first = next_progress(Instant::now() + line_limit)?;
    let before = sample();
    let mut end = first;
    for _ in 0..opts.seconds {
        end = next_progress(Instant::now() + line_limit)?;
    }
    let after = sample();
    drop(uclient);
    drop(server);
    let wall = after.3.duration_since(before.3).as_secs_f64().max(1e-9);
    let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let server_cpu = d(before.0, after.0);
    let gen_cpu = d(before.1, after.1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (sent, received) = (end.1.saturating_sub(first.1), end.2.saturating_sub(first.2));
    let relayed = 2 * received;
    Ok(TurnRun {
        clients: opts.clients,
        relay_threads: opts.relay_threads,
        ramp_seconds,
        seconds: wall,
        sent,
        received,
        lost: sent as i64 - received as i64,
        relayed,
        relayed_per_s: relayed as f64 / wall,
        server_cpu_s: server_cpu,
        server_cpu_pct: server_cpu.map(|c| c * 100.0 / wall),
        server_cpu_s_per_mpkt: server_cpu.filter(|_| relayed > 0).map(|c| c * 1e6 / relayed as f64),
        pkt_per_cpu_s: server_cpu.filter(|c| *c > 0.0).map(|c| relayed as f64 / c),
        generator_cpu_pct: gen_cpu.map(|c| c * 100.0 / wall),
        machine_busy_pct: d(before.2, after.2).map(|c| c * 100.0 / wall / cores),
        other_cpu_pct: crate::udp_load::other_cpu_pct(d(before.2, after.2), server_cpu, gen_cpu, wall),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn progress_lines() {
        let l = "7: : start_mclient: msz=100, tot_send_msgs=17145, tot_recv_msgs=17126, tot_send_bytes ~ 2743200, tot_recv_bytes ~ 2740160";
        assert_eq!(parse_progress(l), Some((100, 17145, 17126)));
        assert_eq!(parse_progress("10: : start_mclient: tot_send_msgs=25000, tot_recv_msgs=25000"), None);
        assert_eq!(parse_progress("0: : Total General servers: 2"), None);
    }
}
