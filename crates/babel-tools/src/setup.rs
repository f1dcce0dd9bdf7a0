//! Accounts for the load, set up once and remembered in a state file.
//!
//! User `i` is `load-<i>@example.org` with a fixed password. Each user `i` is
//! befriended with `i±1 … i±⌈K/2⌉` (mod N), so everyone has the same number
//! of contacts. Creating accounts is slow on purpose (argon2), so the ids and
//! session tokens are kept in a JSON state file and reused by later runs;
//! setup is a reconciliation: tokens that no longer work are replaced by a
//! `/login` (or `/create` if the account is missing), and contact links are
//! (re)made only if some user's `/contacts` does not show exactly K
//! contacts. Every step tolerates what an earlier, interrupted run left.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use babel_proto::{
    Answer, ClientRequest, ContactEntry, Credentials, Presence, RawResponse, Secret, SessionInfo, UserId,
};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::net::{ResponseReader, connect_timeout, source_ip};

/// The password of every load account.
pub const PASSWORD: &str = "babel-load-password";
/// Bump when the state file's meaning changes.
const STATE_VERSION: u32 = 1;
/// One setup request may wait this long (argon2 under load is slow).
const CALL_LIMIT: Duration = Duration::from_secs(60);
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// Parallel `/create` or `/login` calls (each costs ~19 MiB and a core).
const ACCOUNT_WORKERS: usize = 4;
/// Parallel contact-link calls (each is one SQLite write).
const CONTACT_WORKERS: usize = 8;
/// Connections opened at once while checking accounts.
const CHECK_CONCURRENCY: usize = 64;

/// One account's credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// User id.
    pub id: i64,
    /// Session token from `/create` or `/login`.
    pub token: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Account {
    /// The `{id, token}` header.
    pub fn credentials(&self) -> Credentials {
        Credentials { id: UserId(self.id), token: Secret::new(self.token.clone()) }
    }

    /// A pre-encoded `/contacts` request frame for this account.
    pub fn contacts_request(&self) -> Bytes {
        ClientRequest::Contacts(self.credentials()).to_frame().to_bytes()
    }
}

/// What the state file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Which server the accounts live on (`db:<path>` or `server:<addr>`).
    pub target: String,
    /// Number of users.
    pub users: usize,
    /// Contacts per user asked for.
    pub contacts: usize,
    /// Account `i` is `load-<i>@example.org`.
    pub accounts: Vec<Account>,
}

/// The email of load user `i`.
pub fn email(i: usize) -> String {
    format!("load-{i}@example.org")
}

/// Contacts each user really gets for `contacts` asked (rounded up to even).
pub fn effective_contacts(contacts: usize) -> usize {
    contacts.div_ceil(2) * 2
}

/// The `(asker, asked)` pairs that give every one of `users` users
/// [`effective_contacts`] contacts: `i` asks `i+1 … i+⌈K/2⌉` (mod N).
pub fn contact_pairs(users: usize, contacts: usize) -> anyhow::Result<Vec<(usize, usize)>> {
    let half = contacts.div_ceil(2);
    ensure!(2 * half < users, "{users} users cannot each have {} distinct contacts", 2 * half);
    Ok((0..users).flat_map(|i| (1..=half).map(move |d| (i, (i + d) % users))).collect())
}

/// Reads a state file; `None` if absent, unreadable or for other settings.
pub fn load_state(path: &Path, target: &str, users: usize, contacts: usize) -> Option<State> {
    let text = std::fs::read(path).ok()?;
    let state: State = serde_json::from_slice(&text).ok()?;
    (state.version == STATE_VERSION
        && state.target == target
        && state.users == users
        && state.contacts == contacts
        && state.accounts.len() == users)
        .then_some(state)
}

/// Writes a state file atomically (it holds tokens: owner-only on Unix).
pub fn save_state(path: &Path, state: &State) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A setup connection.
struct Conn {
    stream: TcpStream,
    reader: ResponseReader,
}

impl Conn {
    async fn open(addr: SocketAddr, i: usize, source_ips: usize) -> anyhow::Result<Conn> {
        let stream = connect_timeout(addr, source_ip(i, source_ips), CONNECT_LIMIT)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        Ok(Conn { stream, reader: ResponseReader::new() })
    }

    async fn send(&mut self, frame: &[u8]) -> anyhow::Result<RawResponse> {
        let work = async {
            self.stream.write_all(frame).await?;
            self.reader.read_full(&mut self.stream).await
        };
        match tokio::time::timeout(CALL_LIMIT, work).await {
            Ok(r) => Ok(r?),
            Err(_) => bail!("no answer within {CALL_LIMIT:?}"),
        }
    }

    async fn call(&mut self, req: &ClientRequest) -> anyhow::Result<RawResponse> {
        let route = req.route().as_str();
        self.send(&req.to_frame().to_bytes()).await.with_context(|| format!("{route} failed"))
    }
}

/// What one user's `/contacts` showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// 200 with this many accepted contacts.
    Contacts(usize),
    /// 401: the token is no longer valid.
    Unauthorized,
}

/// Asks every known account for its contacts, each on its own connection
/// held open until all have answered (so all are online), then asks once
/// more on each: the median data length of these answers is the size of a
/// typical `/contacts` answer with everyone online.
async fn check_all(
    addr: SocketAddr,
    accounts: &[Option<Account>],
    source_ips: usize,
) -> anyhow::Result<(Vec<Option<Check>>, Option<usize>)> {
    let jobs = accounts.iter().enumerate().filter_map(|(i, a)| a.as_ref().map(|a| (i, a.contacts_request())));
    let results: Vec<anyhow::Result<(usize, Check, Conn, Bytes)>> = futures::stream::iter(jobs)
        .map(|(i, frame)| async move {
            let mut conn = Conn::open(addr, i, source_ips).await?;
            let resp = conn.send(&frame).await.context("/contacts failed")?;
            let check = match resp.status {
                200 => {
                    let list: Vec<ContactEntry> =
                        Answer(resp).json().with_context(|| format!("bad /contacts answer for {}", email(i)))?;
                    Check::Contacts(list.iter().filter(|c| c.status != Presence::Pending).count())
                }
                401 => Check::Unauthorized,
                s => bail!("/contacts for {} answered {s}", email(i)),
            };
            Ok((i, check, conn, frame))
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let mut checks = vec![None; accounts.len()];
    let mut conns = Vec::with_capacity(results.len());
    for r in results {
        let (i, check, conn, frame) = r?;
        checks[i] = Some(check);
        conns.push((check, conn, frame));
    }
    // Everyone is online now: the median answer size over all users.
    let mut sizes = Vec::with_capacity(conns.len());
    for (check, conn, frame) in &mut conns {
        if matches!(check, Check::Contacts(_)) {
            let resp = conn.send(frame).await.context("/contacts failed")?;
            sizes.push(resp.data.len() as u64);
        }
    }
    sizes.sort_unstable();
    let reply_bytes = crate::stats::percentile(&sizes, 50.0).map(|n| n as usize);
    Ok((checks, reply_bytes))
}

/// `/create`, or `/login` when the account exists already.
async fn create_or_login(conn: &mut Conn, i: usize) -> anyhow::Result<(Account, bool)> {
    let session = |resp: RawResponse| -> anyhow::Result<Account> {
        let s: SessionInfo = Answer(resp).json()?;
        Ok(Account { id: s.id.0, token: s.token.expose().to_owned() })
    };
    let create = ClientRequest::Create { email: email(i), password: Secret::new(PASSWORD), name: None };
    let resp = conn.call(&create).await?;
    if resp.status == 201 {
        return Ok((session(resp).context("/create")?, true));
    }
    if resp.status != 403 {
        bail!("/create {} answered {}", email(i), resp.status);
    }
    let login = ClientRequest::Login { email: email(i), password: Secret::new(PASSWORD) };
    let resp = conn.call(&login).await?;
    let account =
        session(resp).with_context(|| format!("{} exists but /login with the load password failed", email(i)))?;
    Ok((account, false))
}

/// Gets a working token for each of `users` (indices).
async fn make_accounts(
    addr: SocketAddr,
    users: Vec<usize>,
    source_ips: usize,
) -> anyhow::Result<Vec<(usize, Account, bool)>> {
    let users = Arc::new(users);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..ACCOUNT_WORKERS.min(users.len()) {
        let (users, next) = (Arc::clone(&users), Arc::clone(&next));
        tasks.spawn(async move {
            let mut conn = Conn::open(addr, w, source_ips).await?;
            let mut out = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = users.get(n) else { break };
                let (account, created) = create_or_login(&mut conn, i).await?;
                out.push((i, account, created));
                if (n + 1) % 100 == 0 {
                    eprintln!("setup: {} of {} accounts ready", n + 1, users.len());
                }
            }
            anyhow::Ok(out)
        });
    }
    let mut all = Vec::with_capacity(users.len());
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("setup task failed")??);
    }
    Ok(all)
}

/// Makes every pair contacts (`/add_contact` then `/accept_contact`); a 403
/// (already asked, already contacts, nothing to accept) is fine here, the
/// check afterwards decides.
async fn link_pairs(
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    pairs: Vec<(usize, usize)>,
    source_ips: usize,
) -> anyhow::Result<()> {
    let pairs = Arc::new(pairs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..CONTACT_WORKERS.min(pairs.len()) {
        let (pairs, next, accounts) = (Arc::clone(&pairs), Arc::clone(&next), Arc::clone(&accounts));
        tasks.spawn(async move {
            let mut conn = Conn::open(addr, w, source_ips).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(a, b)) = pairs.get(n) else { break };
                let (Some(acc_a), Some(acc_b)) = (accounts.get(a), accounts.get(b)) else {
                    bail!("pair ({a}, {b}) out of range");
                };
                let add = ClientRequest::AddContact { auth: acc_a.credentials(), email: email(b) };
                let s = conn.call(&add).await?.status;
                ensure!(s == 200 || s == 403, "/add_contact answered {s}");
                let accept = ClientRequest::AcceptContact { auth: acc_b.credentials(), contact_id: UserId(acc_a.id) };
                let s = conn.call(&accept).await?.status;
                ensure!(s == 200 || s == 403, "/accept_contact answered {s}");
                if (n + 1) % 1000 == 0 {
                    eprintln!("setup: {} of {} contact links made", n + 1, pairs.len());
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("setup task failed")??;
    }
    Ok(())
}

/// What to set up, and where.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The server.
    pub addr: SocketAddr,
    /// The state file.
    pub state_path: std::path::PathBuf,
    /// Which server the accounts live on (see [`State::target`]).
    pub target: String,
    /// Number of users.
    pub users: usize,
    /// Contacts per user (rounded up to even).
    pub contacts: usize,
    /// Source addresses to spread connections over.
    pub source_ips: usize,
}

/// The result of setup.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Account `i` is `load-<i>@example.org`.
    pub accounts: Vec<Account>,
    /// Data length of a `/contacts` answer with everyone online.
    pub reply_bytes: usize,
    /// Accounts whose stored token still worked.
    pub reused: usize,
    /// Accounts created now.
    pub created: usize,
    /// Accounts that had to log in again.
    pub logged_in: usize,
    /// Whether contact links had to be made.
    pub linked: bool,
    /// Time taken.
    pub seconds: f64,
}

/// Makes sure `users` accounts exist on the server with working tokens and
/// `contacts` contacts each; see the module docs.
pub async fn prepare(opts: &SetupOptions) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let expected = effective_contacts(opts.contacts);
    let pairs = contact_pairs(opts.users, opts.contacts)?;
    let mut accounts: Vec<Option<Account>> = match load_state(&opts.state_path, &opts.target, opts.users, opts.contacts)
    {
        Some(s) => s.accounts.into_iter().map(Some).collect(),
        None => vec![None; opts.users],
    };
    let (checks, mut reply_bytes) = check_all(opts.addr, &accounts, opts.source_ips).await?;
    let mut missing = Vec::new();
    let mut contacts_ok = true;
    for (i, c) in checks.iter().enumerate() {
        match c {
            Some(Check::Contacts(n)) => contacts_ok &= *n == expected,
            Some(Check::Unauthorized) | None => {
                accounts[i] = None;
                missing.push(i);
            }
        }
    }
    let reused = opts.users - missing.len();
    let (mut created, mut logged_in) = (0, 0);
    if !missing.is_empty() {
        eprintln!(
            "setup: {} of {} accounts need /create or /login (argon2: this takes a while)",
            missing.len(),
            opts.users
        );
        for (i, account, was_created) in make_accounts(opts.addr, missing, opts.source_ips).await? {
            accounts[i] = Some(account);
            if was_created {
                created += 1;
            } else {
                logged_in += 1;
            }
        }
        contacts_ok = false;
    }
    let accounts: Vec<Account> = accounts
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.with_context(|| format!("no account for {}", email(i))))
        .collect::<anyhow::Result<_>>()?;
    save_state(
        &opts.state_path,
        &State {
            version: STATE_VERSION,
            target: opts.target.clone(),
            users: opts.users,
            contacts: opts.contacts,
            accounts: accounts.clone(),
        },
    )?;
    let known: Vec<Option<Account>> = accounts.iter().cloned().map(Some).collect();
    let mut linked = false;
    if !contacts_ok {
        let (checks, bytes) = check_all(opts.addr, &known, opts.source_ips).await?;
        reply_bytes = bytes;
        if !checks.iter().all(|c| *c == Some(Check::Contacts(expected))) {
            eprintln!("setup: making {} contact links", pairs.len());
            link_pairs(opts.addr, Arc::new(accounts.clone()), pairs, opts.source_ips).await?;
            linked = true;
            let (checks, bytes) = check_all(opts.addr, &known, opts.source_ips).await?;
            reply_bytes = bytes;
            if let Some((i, c)) = checks.iter().enumerate().find(|(_, c)| **c != Some(Check::Contacts(expected))) {
                bail!(
                    "after setup {} has {c:?} instead of {expected} contacts; \
                     the server holds other links for load users (use --fresh)",
                    email(i)
                );
            }
        }
    }
    Ok(Prepared {
        accounts,
        reply_bytes: reply_bytes.context("no /contacts answer to measure")?,
        reused,
        created,
        logged_in,
        linked,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn everyone_gets_k_distinct_contacts() {
        for (n, k) in [(1000, 10), (5, 4), (4, 1), (7, 3)] {
            let pairs = contact_pairs(n, k).unwrap();
            let mut sets = vec![std::collections::BTreeSet::new(); n];
            for &(a, b) in &pairs {
                assert_ne!(a, b);
                assert!(sets[a].insert(b), "duplicate pair ({a},{b})");
                assert!(sets[b].insert(a), "duplicate pair ({a},{b})");
            }
            assert!(sets.iter().all(|s| s.len() == effective_contacts(k)));
        }
        assert!(contact_pairs(10, 10).is_err());
        assert!(contact_pairs(11, 10).is_ok());
    }

    #[test]
    fn state_round_trip_and_mismatch() {
        let dir = std::env::temp_dir().join(format!("babel-tools-test-{}", std::process::id()));
        let path = dir.join("state.json");
        let state = State {
            version: STATE_VERSION,
            target: "db:/x".into(),
            users: 1,
            contacts: 0,
            accounts: vec![Account { id: 4, token: "t".into() }],
        };
        save_state(&path, &state).unwrap();
        let back = load_state(&path, "db:/x", 1, 0).unwrap();
        assert_eq!(back.accounts, state.accounts);
        assert!(load_state(&path, "db:/y", 1, 0).is_none());
        assert!(load_state(&path, "db:/x", 2, 0).is_none());
        assert!(!format!("{:?}", state.accounts[0]).contains("token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
