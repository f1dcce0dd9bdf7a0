//! Child processes (the server and the ceiling) and their memory.
//!
//! A child is started with its stdout piped; it prints `listening on ADDR`
//! once bound, which gives us its address. Dropping a [`ChildServer`] kills
//! and reaps it, so an error anywhere in the load generator leaves nothing
//! behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

/// A running child that announced its address.
#[derive(Debug)]
pub struct ChildServer {
    name: String,
    child: Child,
    addr: SocketAddr,
}

/// Reads `ADDR` out of a `listening on ADDR` line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix("listening on ")?.trim().parse().ok()
}

impl ChildServer {
    /// Starts `cmd` (stdout is taken over) and waits up to `limit` for its
    /// `listening on ADDR` line. The address must be on loopback.
    pub fn start(name: &str, mut cmd: Command, limit: Duration) -> anyhow::Result<ChildServer> {
        cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name}: no stdout");
        };
        let (tx, rx) = mpsc::channel();
        // Reads the first line, then drains stdout until the child exits so
        // that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sent {
                    continue;
                }
                if let Some(addr) = parse_listening(&line) {
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = match rx.recv_timeout(limit) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("{name} did not report `listening on ADDR` ({e}); exit status {status:?}");
            }
        };
        let server = ChildServer { name: name.to_owned(), child, addr };
        crate::net::check_target(&server.addr)?;
        Ok(server)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited unexpectedly: {status}", self.name),
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `VmRSS` line of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_vmrss_kib(&text).with_context(|| format!("no VmRSS in {path}"))
}

/// User plus system CPU time in the text of `/proc/<pid>/stat`, in clock
/// ticks (`USER_HZ`, 100 per second on Linux).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces: count from its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time used so far by a process (`None`: this one), in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    parse_stat_cpu_ticks(&text).map(|t| t as f64 / 100.0)
}

/// CPU time used so far by the threads of process `pid` whose name starts
/// with `prefix` (`/proc/<pid>/task/*/comm`), in seconds.
pub fn threads_cpu_seconds(pid: u32, prefix: &str) -> Option<f64> {
    let mut ticks = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            ticks += std::fs::read_to_string(task.path().join("stat")).ok().and_then(|s| parse_stat_cpu_ticks(&s))?;
        }
    }
    Some(ticks as f64 / 100.0)
}

/// Busy CPU time of the whole machine in the text of `/proc/stat` (all
/// CPUs, everything but idle and iowait), in clock ticks.
pub fn parse_proc_stat_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(total.saturating_sub(idle))
}

/// Busy CPU time of the whole machine so far, in seconds.
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat_busy_ticks(&text).map(|t| t as f64 / 100.0)
}

/// `name` next to the running executable (same target folder).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listening_line() {
        assert_eq!(parse_listening("listening on 127.0.0.1:4000\n"), Some("127.0.0.1:4000".parse().unwrap()));
        assert_eq!(parse_listening("ready"), None);
    }

    #[test]
    fn vmrss() {
        let text = "Name:\tbabel-server\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss_kib(text), Some(12345));
        assert_eq!(parse_vmrss_kib("Name: x\n"), None);
    }

    #[test]
    fn stat_cpu() {
        let stat = "4242 (babel server) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 31 0 0 20 0 4 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(281));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert!(cpu_seconds(None).is_some());
        let proc_stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n";
        assert_eq!(parse_proc_stat_busy_ticks(proc_stat), Some(161));
    }
}
