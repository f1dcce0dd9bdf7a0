//! `babel-fault`: the server killed with `kill -9` at random points of a
//! write-heavy load, restarted on the same database, and every acknowledged
//! write looked for. Repeated for a number of rounds; any loss fails the run.
//!
//! The writes: accounts, contacts, and text messages between the new
//! contacts (each with a `client_id`); a message counts as acknowledged once
//! `/send_message` answered its id, and must then be found, with its text,
//! in the recipient's `/messages` after the restart.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use babel_client::Client;
use babel_proto::{MessageId, Page, UserId};

use crate::child::ChildServer;

/// Settings of a fault run.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// The `babel-server` binary.
    pub server_bin: PathBuf,
    /// Rounds of load, kill, restart, check.
    pub rounds: u32,
    /// Concurrent writers.
    pub writers: usize,
    /// Earliest kill after the load starts.
    pub min_kill: Duration,
    /// Latest kill after the load starts.
    pub max_kill: Duration,
    /// Seed for the kill times (printed, so a run can be repeated).
    pub seed: u64,
}

/// What one round did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    /// Round number, from 1.
    pub round: u32,
    /// When the server was killed, ms after the load started.
    pub killed_after_ms: u64,
    /// Accounts created and acknowledged.
    pub accounts: usize,
    /// Contacts made and acknowledged.
    pub contacts: usize,
    /// Messages sent and acknowledged.
    pub messages: usize,
    /// Acknowledged writes missing after the restart.
    pub lost: usize,
}

#[derive(Default)]
struct Acked {
    users: Vec<String>,
    contacts: Vec<(String, String)>,
    messages: Vec<SentMessage>,
}

/// An acknowledged message: who sent it to whom, its id and text.
struct SentMessage {
    from: UserId,
    to_email: String,
    id: MessageId,
    text: String,
}

/// Messages each new pair of contacts exchanges per round of the writer.
const MESSAGES_PER_PAIR: usize = 3;

/// The kill time for a round: a simple generator, so runs repeat by seed.
pub fn kill_time(seed: u64, round: u32, min: Duration, max: Duration) -> Duration {
    let mut x = seed ^ (u64::from(round).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let span = max.saturating_sub(min).as_millis().max(1) as u64;
    min + Duration::from_millis(x % span)
}

async fn writer(addr: String, round: u32, w: usize, acked: Arc<Mutex<Acked>>) {
    let Ok(mut a) = Client::connect(addr.clone()).await else { return };
    let Ok(mut b) = Client::connect(addr).await else { return };
    for i in 0.. {
        let (ea, eb) = (format!("f{round}-{w}-{i}a@example.org"), format!("f{round}-{w}-{i}b@example.org"));
        if a.create(&ea, "password123", None).await.is_err() {
            return;
        }
        acked.lock().unwrap_or_else(|p| p.into_inner()).users.push(ea.clone());
        if b.create(&eb, "password123", None).await.is_err() {
            return;
        }
        acked.lock().unwrap_or_else(|p| p.into_inner()).users.push(eb.clone());
        if a.add_contact(&eb).await.is_err() {
            return;
        }
        let Some(ida) = a.user_id() else { return };
        if b.accept_contact(ida).await.is_err() {
            return;
        }
        acked.lock().unwrap_or_else(|p| p.into_inner()).contacts.push((ea, eb.clone()));
        for m in 0..MESSAGES_PER_PAIR {
            let text = format!("message {m} of pair {round}-{w}-{i}");
            let Some(idb) = b.user_id() else { return };
            let Ok(sent) = a.send_message(idb, &text, Some(&format!("{round}-{w}-{i}-{m}"))).await else { return };
            let acked_msg = SentMessage { from: ida, to_email: eb.clone(), id: sent.message_id, text };
            acked.lock().unwrap_or_else(|p| p.into_inner()).messages.push(acked_msg);
        }
    }
}

fn start(opts: &FaultOptions, dir: &std::path::Path) -> anyhow::Result<ChildServer> {
    let config = dir.join("fault.toml");
    std::fs::write(&config, "[password]\nmemory_kib = 256\niterations = 1\n")?;
    let mut cmd = Command::new(&opts.server_bin);
    cmd.args(["--listen", "127.0.0.1:0", "--log", "error", "--db"])
        .arg(dir.join("fault.db"))
        .arg("--config")
        .arg(&config);
    ChildServer::start("babel-server", cmd, Duration::from_secs(20))
}

/// Runs every round; fails if any acknowledged write was lost.
pub async fn run(opts: &FaultOptions) -> anyhow::Result<Vec<Round>> {
    let dir = tempfile_dir()?;
    let mut rounds = Vec::new();
    for round in 1..=opts.rounds {
        let server = start(opts, &dir)?;
        let addr = server.addr().to_string();
        let acked = Arc::new(Mutex::new(Acked::default()));
        let tasks: Vec<_> =
            (0..opts.writers).map(|w| tokio::spawn(writer(addr.clone(), round, w, Arc::clone(&acked)))).collect();
        let when = kill_time(opts.seed, round, opts.min_kill, opts.max_kill);
        let started = Instant::now();
        tokio::time::sleep(when).await;
        drop(server); // SIGKILL, no warning
        let killed_after_ms = started.elapsed().as_millis() as u64;
        for t in tasks {
            let _ = t.await;
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));

        let server = start(opts, &dir)?;
        let addr = server.addr().to_string();
        let mut lost = 0;
        let mut check = Client::connect(addr.clone()).await?;
        for email in &acked.users {
            if check.login(email, "password123").await.is_err() {
                lost += 1;
            }
        }
        for (a, b) in &acked.contacts {
            let mut c = Client::connect(addr.clone()).await?;
            let found = match c.login(a, "password123").await {
                Ok(_) => c.contacts().await.map(|l| l.iter().any(|e| &e.user.email == b)).unwrap_or(false),
                Err(_) => false,
            };
            if !found {
                lost += 1;
            }
        }
        lost += lost_messages(&addr, &acked.messages).await?;
        drop(server);
        let r = Round {
            round,
            killed_after_ms,
            accounts: acked.users.len(),
            contacts: acked.contacts.len(),
            messages: acked.messages.len(),
            lost,
        };
        eprintln!(
            "round {round}: killed after {killed_after_ms} ms; {} accounts, {} contacts and {} messages acknowledged; {lost} lost",
            r.accounts, r.contacts, r.messages
        );
        rounds.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let lost: usize = rounds.iter().map(|r| r.lost).sum();
    if lost > 0 {
        bail!("{lost} acknowledged writes were lost");
    }
    Ok(rounds)
}

/// How many acknowledged messages the recipients cannot find (with the
/// same text) after the restart: one login per recipient, its conversation
/// with each sender read from the oldest acknowledged id on.
async fn lost_messages(addr: &str, messages: &[SentMessage]) -> anyhow::Result<usize> {
    let mut by_pair: std::collections::BTreeMap<(&str, UserId), Vec<&SentMessage>> = Default::default();
    for m in messages {
        by_pair.entry((m.to_email.as_str(), m.from)).or_default().push(m);
    }
    let mut lost = 0;
    for ((to, from), sent) in by_pair {
        let mut c = Client::connect(addr.to_owned()).await?;
        let found = match c.login(to, "password123").await {
            Ok(_) => {
                let first = sent.iter().map(|m| m.id.0).min().unwrap_or(1);
                c.messages(Some(from), Page::After(MessageId(first - 1)), 100).await.unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        lost += sent.iter().filter(|m| !found.iter().any(|f| f.message_id == m.id && f.text == m.text)).count();
    }
    Ok(lost)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("babel-fault-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_times_repeat_by_seed_and_stay_in_range() {
        let (min, max) = (Duration::from_millis(300), Duration::from_millis(1500));
        for r in 1..50 {
            let t = kill_time(7, r, min, max);
            assert!(t >= min && t < max, "{t:?}");
            assert_eq!(t, kill_time(7, r, min, max));
        }
        assert_ne!(kill_time(7, 1, min, max), kill_time(8, 1, min, max));
    }

    /// The message check finds what is there and counts what is not.
    #[tokio::test]
    async fn the_message_check_counts_missing_and_altered_messages() {
        let dir = tempfile::tempdir().unwrap();
        let config = babel_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: dir.path().join("f.db"),
            password: babel_server::auth::PasswordCost { memory_kib: 256, iterations: 1 },
            ..babel_server::Config::default()
        };
        let server = babel_server::RunningServer::start(&config).await.unwrap();
        let addr = server.addr().to_string();
        let mut a = Client::connect(addr.clone()).await.unwrap();
        let mut b = Client::connect(addr.clone()).await.unwrap();
        let ida = a.create("fa@example.org", "password123", None).await.unwrap().id;
        let idb = b.create("fb@example.org", "password123", None).await.unwrap().id;
        a.add_contact("fb@example.org").await.unwrap();
        b.accept_contact(ida).await.unwrap();
        let sent = a.send_message(idb, "kept", Some("k")).await.unwrap().message_id;
        let m = |id: MessageId, text: &str| SentMessage {
            from: ida,
            to_email: "fb@example.org".into(),
            id,
            text: text.into(),
        };
        assert_eq!(lost_messages(&addr, &[m(sent, "kept")]).await.unwrap(), 0);
        let missing = MessageId(sent.0 + 1000);
        assert_eq!(lost_messages(&addr, &[m(sent, "kept"), m(sent, "altered"), m(missing, "x")]).await.unwrap(), 2);
    }
}
