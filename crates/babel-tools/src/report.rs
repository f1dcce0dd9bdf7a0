//! The report: one JSON document, or a table for people.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::{ClosedResult, IdleResult, OpenResult};

/// Targets from the issue.
pub const TARGET_CLOSED_RATIO: f64 = 0.5;
/// Open-loop p99 must stay below this, in ms.
pub const TARGET_OPEN_P99_MS: f64 = 5.0;
/// Memory per idle logged-in connection must stay at or below this, in KiB.
pub const TARGET_IDLE_KIB: f64 = 16.0;

/// Prints `report` as one JSON document, or as the text `table` makes.
pub fn print<R: Serialize>(report: &R, json: bool, table: impl FnOnce(&R) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", table(report));
    }
    Ok(())
}

/// The load average over 1, 5 and 15 minutes (`/proc/loadavg`).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Whether the load generator shares the CPUs with the server (always,
    /// here: both run on this machine).
    pub shared_with_load_generator: bool,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine { cpus, cpu_model, shared_with_load_generator: true }
    }
}

/// How setup went.
#[derive(Debug, Clone, Serialize)]
pub struct SetupSummary {
    /// Users.
    pub users: usize,
    /// Contacts each.
    pub contacts: usize,
    /// Accounts whose stored token still worked.
    pub reused: usize,
    /// Accounts created in this run.
    pub created: usize,
    /// Accounts logged in again in this run.
    pub logged_in: usize,
    /// Seconds spent on setup.
    pub seconds: f64,
    /// Data length of a `/contacts` answer (everyone online), bytes.
    pub contacts_reply_bytes: usize,
    /// Bytes of one `/contacts` request frame.
    pub request_bytes: usize,
}

/// Whether a target of the issue was met.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What was measured.
    pub what: String,
    /// The figure.
    pub value: f64,
    /// The limit.
    pub target: String,
    /// Met or not.
    pub met: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Setup.
    pub setup: SetupSummary,
    /// Measurement C, server then ceiling.
    pub idle: Vec<IdleResult>,
    /// Measurement A, server then ceiling.
    pub closed: Vec<ClosedResult>,
    /// Measurement B, server then ceiling.
    pub open: Vec<OpenResult>,
    /// Server closed-loop requests/s over the ceiling's.
    pub closed_ratio: Option<f64>,
    /// Server open-loop p99 over the ceiling's.
    pub open_p99_ratio: Option<f64>,
    /// The targets.
    pub verdicts: Vec<Verdict>,
    /// Anything the reader should know (errors, caveats).
    pub notes: Vec<String>,
}

/// A figure with `decimals` decimals, or `-`.
fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn find<'a, T>(v: &'a [T], name: &str, target: impl Fn(&T) -> &str) -> Option<&'a T> {
    v.iter().find(|r| target(r) == name)
}

impl Report {
    /// Fills in the ratios and verdicts from the results.
    pub fn judge(&mut self) {
        let closed = |n| find(&self.closed, n, |r: &ClosedResult| &r.target);
        let open = |n| find(&self.open, n, |r: &OpenResult| &r.target);
        self.closed_ratio = match (closed("server"), closed("ceiling")) {
            (Some(s), Some(c)) if c.requests_per_sec > 0.0 => Some(s.requests_per_sec / c.requests_per_sec),
            _ => None,
        };
        self.open_p99_ratio = match (open("server"), open("ceiling")) {
            (Some(s), Some(c)) if c.latency.p99_ms > 0.0 => Some(s.latency.p99_ms / c.latency.p99_ms),
            _ => None,
        };
        let mut verdicts = Vec::new();
        if let Some(r) = self.closed_ratio {
            verdicts.push(Verdict {
                what: "closed-loop /contacts requests/s, server / ceiling".into(),
                value: r,
                target: format!(">= {TARGET_CLOSED_RATIO}"),
                met: r >= TARGET_CLOSED_RATIO,
            });
        }
        if let Some(s) = open("server") {
            let rate_ok = s.achieved_per_sec >= 0.99 * s.rate && s.unanswered == 0;
            verdicts.push(Verdict {
                what: format!(
                    "open-loop p99 latency at {:.0} requests/s (ms; achieved {:.0}/s)",
                    s.rate, s.achieved_per_sec
                ),
                value: s.latency.p99_ms,
                target: format!("< {TARGET_OPEN_P99_MS} ms, at the full rate"),
                met: s.latency.p99_ms < TARGET_OPEN_P99_MS && rate_ok && s.bad_status == 0,
            });
        }
        if let Some(s) = find(&self.idle, "server", |r: &IdleResult| &r.target) {
            verdicts.push(Verdict {
                what: "memory per idle logged-in connection (KiB)".into(),
                value: s.kib_per_connection,
                target: format!("<= {TARGET_IDLE_KIB} KiB"),
                met: s.kib_per_connection <= TARGET_IDLE_KIB && s.failed == 0,
            });
        }
        self.verdicts = verdicts;
        for r in &self.closed {
            if r.bad_status > 0 || r.failed_connections > 0 {
                self.notes.push(format!(
                    "closed loop on {}: {} non-200 answers, {} failed connections",
                    r.target, r.bad_status, r.failed_connections
                ));
            }
        }
        let disturbed = self
            .closed
            .iter()
            .map(|r| (&r.target, "closed", r.cpu.other_pct))
            .chain(self.open.iter().map(|r| (&r.target, "open", r.cpu.other_pct)));
        for (target, kind, other) in disturbed {
            if let Some(o) = other.filter(|o| *o > 25.0) {
                self.notes.push(format!(
                    "{kind} loop on {target}: the rest of the machine used {o:.0} % of a core; \
                     another process may have disturbed the run"
                ));
            }
        }
        for r in &self.open {
            if r.bad_status > 0 || r.unanswered > 0 {
                self.notes.push(format!(
                    "open loop on {}: {} non-200 answers, {} requests unanswered",
                    r.target, r.bad_status, r.unanswered
                ));
            }
        }
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let s = &self.setup;
        let _ = writeln!(o, "command: {}", self.command);
        let _ = writeln!(
            o,
            "machine: {} CPUs ({}), shared by the load generator, the server and the ceiling",
            m.cpus, m.cpu_model
        );
        let _ = writeln!(
            o,
            "setup:   {} users x {} contacts ({} reused, {} created, {} logged in; {:.1} s); \
             /contacts request {} B, answer data {} B",
            s.users, s.contacts, s.reused, s.created, s.logged_in, s.seconds, s.request_bytes, s.contacts_reply_bytes
        );
        if !self.idle.is_empty() {
            let _ = writeln!(o, "\nC. memory per idle logged-in connection");
            let _ = writeln!(
                o,
                "  {:<8} {:>8} {:>8} {:>12} {:>12} {:>10}",
                "target", "conns", "failed", "RSS before", "RSS after", "KiB/conn"
            );
            for r in &self.idle {
                let _ = writeln!(
                    o,
                    "  {:<8} {:>8} {:>8} {:>9} KiB {:>9} KiB {:>10.2}",
                    r.target, r.opened, r.failed, r.rss_before_kib, r.rss_after_kib, r.kib_per_connection
                );
            }
        }
        if !self.closed.is_empty() {
            let _ = writeln!(o, "\nA. closed loop (one request in flight per connection)");
            let _ = writeln!(
                o,
                "  {:<8} {:>6} {:>6} {:>12} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8}",
                "target",
                "conns",
                "secs",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "errors",
                "cpu %",
                "us/req",
                "load %",
                "other %"
            );
            for r in &self.closed {
                let _ = writeln!(
                    o,
                    "  {:<8} {:>6} {:>6.1} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>8} {:>8} {:>8} {:>8}",
                    r.target,
                    r.connections,
                    r.seconds,
                    r.requests_per_sec,
                    r.latency.p50_ms,
                    r.latency.p99_ms,
                    r.latency.p999_ms,
                    r.bad_status + r.failed_connections,
                    opt(r.cpu.target_pct, 0),
                    opt(r.cpu.target_us_per_request, 1),
                    opt(r.cpu.load_pct, 0),
                    opt(r.cpu.other_pct, 0),
                );
            }
            if let Some(x) = self.closed_ratio {
                let _ = writeln!(o, "  server / ceiling: {:.1} %", x * 100.0);
            }
        }
        if !self.open.is_empty() {
            let _ = writeln!(o, "\nB. open loop (latency from the scheduled send time)");
            let _ = writeln!(
                o,
                "  {:<8} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>10} {:>6} {:>6} {:>7} {:>6} {:>7}",
                "target",
                "conns",
                "rate/s",
                "sent/s",
                "answered/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "lag p99 ms",
                "lost",
                "cpu %",
                "us/req",
                "load %",
                "other %"
            );
            for r in &self.open {
                let _ = writeln!(
                    o,
                    "  {:<8} {:>6} {:>9.0} {:>9.0} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>10.2} {:>6} {:>6} {:>7} {:>6} {:>7}",
                    r.target,
                    r.connections,
                    r.rate,
                    r.sent_per_sec,
                    r.achieved_per_sec,
                    r.latency.p50_ms,
                    r.latency.p99_ms,
                    r.latency.p999_ms,
                    r.latency.max_ms,
                    r.send_lag.p99_ms,
                    r.unanswered,
                    opt(r.cpu.target_pct, 0),
                    opt(r.cpu.target_us_per_request, 1),
                    opt(r.cpu.load_pct, 0),
                    opt(r.cpu.other_pct, 0),
                );
            }
            if let Some(x) = self.open_p99_ratio {
                let _ = writeln!(o, "  p99 server / ceiling: {x:.2}x");
            }
        }
        if !self.closed.is_empty() || !self.open.is_empty() {
            let _ = writeln!(
                o,
                "\ncpu % = the target process in the measured window, in % of one core ({} = all); \
                 us/req = its CPU time per answer; load % = this load generator; \
                 other % = the rest of the machine (kernel threads, other processes)",
                100 * self.machine.cpus
            );
        }
        if !self.verdicts.is_empty() {
            let _ = writeln!(o, "\ntargets");
            for v in &self.verdicts {
                let _ = writeln!(
                    o,
                    "  [{}] {}: {:.3} (target {})",
                    if v.met { "met" } else { "MISSED" },
                    v.what,
                    v.value,
                    v.target
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }
}
