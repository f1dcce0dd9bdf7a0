//! Abuse limits: failed logins per address and per account, account creation
//! per address, requests per connection, connections per address, and a
//! bounded queue for password hashing.
//!
//! A guesser is cut off by address; an account under attack from many
//! addresses only slows to one attempt per pause, so its owner still gets in
//! at once from elsewhere, or after a short pause, and is never locked out.
//! Every number is configurable; loopback sources are exempt unless
//! `limit_loopback` is set (tests and local load runs).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The limits, as configured (`[limits]` in the TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Failed logins from one address per window before it is refused.
    pub login_failures_per_address: usize,
    /// That window, seconds.
    pub login_window_secs: u64,
    /// Failed logins on one account per window before it slows down.
    pub login_failures_per_account: usize,
    /// That window, seconds.
    pub account_window_secs: u64,
    /// Once slowed down, one attempt on the account per this many seconds.
    pub account_pause_secs: u64,
    /// Accounts created from one address per window.
    pub creates_per_address: usize,
    /// That window, seconds.
    pub create_window_secs: u64,
    /// Requests per second one connection may make (sustained).
    pub requests_per_sec: u32,
    /// Requests one connection may make in a burst.
    pub request_burst: u32,
    /// Most connections from one address.
    pub max_connections_per_address: usize,
    /// Most connections from one network: a /24 for IPv4, a /64 for IPv6
    /// (room for several carrier-grade NAT addresses).
    pub max_connections_per_prefix: usize,
    /// Most contacts per user.
    pub max_contacts: usize,
    /// Most of my own requests waiting for answers.
    pub max_pending_requests: usize,
    /// Look-ups of other people's emails (`/add_contact`, `/remove_contact`
    /// by email) one account may make per window.
    pub lookups_per_account: usize,
    /// The same from one address, whatever the accounts.
    pub lookups_per_address: usize,
    /// That window, seconds.
    pub lookup_window_secs: u64,
    /// Most sessions per user; a login past it ends the least recently used
    /// (0: no cap).
    pub max_sessions_per_user: usize,
    /// Password hashes computed at once (0: one per core).
    pub hash_workers: usize,
    /// Password hashes waiting for a worker before more are refused.
    pub hash_queue: usize,
    /// Apply the per-address limits to loopback addresses too.
    pub limit_loopback: bool,
    /// Messages one account may send per window (`/send_message`; per
    /// account, so loopback is not exempt).
    pub messages_per_account: usize,
    /// That window, seconds.
    pub message_window_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            login_failures_per_address: 5,
            login_window_secs: 60,
            login_failures_per_account: 20,
            account_window_secs: 600,
            account_pause_secs: 5,
            creates_per_address: 10,
            create_window_secs: 3600,
            requests_per_sec: 100,
            request_burst: 200,
            max_connections_per_address: 1000,
            max_connections_per_prefix: 4000,
            max_contacts: 2000,
            max_pending_requests: 200,
            max_sessions_per_user: 50,
            lookups_per_account: 30,
            lookups_per_address: 100,
            lookup_window_secs: 3600,
            hash_workers: 0,
            hash_queue: 1024,
            limit_loopback: false,
            messages_per_account: 120,
            message_window_secs: 60,
        }
    }
}

/// Events per key inside a sliding window.
#[derive(Debug)]
struct Window<K> {
    events: Mutex<HashMap<K, VecDeque<Instant>>>,
    span: Duration,
}

/// Keys tracked at most; past this the oldest-looking state is forgotten.
const MAX_KEYS: usize = 100_000;

impl<K: Eq + Hash + Clone> Window<K> {
    fn new(span: Duration) -> Self {
        Self { events: Mutex::new(HashMap::new()), span }
    }

    /// Events of `key` still in the window, and when the oldest leaves it.
    fn count(&self, key: &K, now: Instant) -> (usize, Duration) {
        let mut map = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = map.get_mut(key) else { return (0, Duration::ZERO) };
        while q.front().is_some_and(|t| now.duration_since(*t) >= self.span) {
            q.pop_front();
        }
        let wait = q.front().map_or(Duration::ZERO, |t| self.span.saturating_sub(now.duration_since(*t)));
        let n = q.len();
        if n == 0 {
            map.remove(key);
        }
        (n, wait)
    }

    fn last(&self, key: &K) -> Option<Instant> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).get(key).and_then(|q| q.back().copied())
    }

    fn record(&self, key: K, now: Instant) {
        let mut map = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < self.span));
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        map.entry(key).or_default().push_back(now);
    }

    fn clear(&self, key: &K) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Why a limit refused: the words for the person.
pub type Refusal = String;

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// All the limits' state.
#[derive(Debug)]
pub struct Limiter {
    cfg: LimitsConfig,
    login_by_address: Window<IpAddr>,
    login_by_account: Window<String>,
    creates: Window<IpAddr>,
    lookups_by_account: Window<i64>,
    lookups_by_address: Window<IpAddr>,
    messages: Window<i64>,
    connections: Mutex<HashMap<IpAddr, usize>>,
    prefixes: Mutex<HashMap<IpAddr, usize>>,
    hash_slots: tokio::sync::Semaphore,
    hash_waiting: AtomicUsize,
}

impl Limiter {
    /// State for the given limits.
    pub fn new(cfg: LimitsConfig) -> Limiter {
        let workers = if cfg.hash_workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.hash_workers
        };
        Limiter {
            login_by_address: Window::new(Duration::from_secs(cfg.login_window_secs.max(1))),
            login_by_account: Window::new(Duration::from_secs(cfg.account_window_secs.max(1))),
            creates: Window::new(Duration::from_secs(cfg.create_window_secs.max(1))),
            lookups_by_account: Window::new(Duration::from_secs(cfg.lookup_window_secs.max(1))),
            lookups_by_address: Window::new(Duration::from_secs(cfg.lookup_window_secs.max(1))),
            messages: Window::new(Duration::from_secs(cfg.message_window_secs.max(1))),
            connections: Mutex::default(),
            prefixes: Mutex::default(),
            hash_slots: tokio::sync::Semaphore::new(workers),
            hash_waiting: AtomicUsize::new(0),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    fn applies(&self, ip: IpAddr) -> bool {
        self.cfg.limit_loopback || !ip.is_loopback()
    }

    /// Before a login attempt.
    pub fn check_login(&self, ip: IpAddr, account: &str) -> Result<(), Refusal> {
        let now = Instant::now();
        if self.applies(ip) {
            let (n, wait) = self.login_by_address.count(&ip, now);
            if n >= self.cfg.login_failures_per_address {
                return Err(format!("too many failed logins from your address; try again in {} s", secs(wait)));
            }
        }
        let (n, _) = self.login_by_account.count(&account.to_owned(), now);
        if n >= self.cfg.login_failures_per_account {
            let pause = Duration::from_secs(self.cfg.account_pause_secs);
            if let Some(last) = self.login_by_account.last(&account.to_owned()) {
                let since = now.duration_since(last);
                if since < pause {
                    return Err(format!(
                        "too many failed logins on this account; try again in {} s",
                        secs(pause - since)
                    ));
                }
            }
        }
        Ok(())
    }

    /// After a login attempt.
    pub fn login_result(&self, ip: IpAddr, account: &str, ok: bool) {
        let now = Instant::now();
        if ok {
            // The owner is in: the account's slow-down ends. The address's
            // count stays, or a guesser could reset it with an account of
            // their own.
            self.login_by_account.clear(&account.to_owned());
            return;
        }
        if self.applies(ip) {
            self.login_by_address.record(ip, now);
        }
        self.login_by_account.record(account.to_owned(), now);
    }

    /// Before creating an account; counts it.
    pub fn check_create(&self, ip: IpAddr) -> Result<(), Refusal> {
        if !self.applies(ip) {
            return Ok(());
        }
        let now = Instant::now();
        let (n, wait) = self.creates.count(&ip, now);
        if n >= self.cfg.creates_per_address {
            return Err(format!("too many accounts created from your address; try again in {} s", secs(wait)));
        }
        self.creates.record(ip, now);
        Ok(())
    }

    /// Before looking up someone by email for `account` (a user id) from
    /// `ip`; counts it. Whether an email has an account is what these
    /// answers reveal, so they are rationed per account and per address.
    pub fn check_lookup(&self, ip: IpAddr, account: i64) -> Result<(), Refusal> {
        if !self.applies(ip) {
            return Ok(());
        }
        let now = Instant::now();
        let (n, wait) = self.lookups_by_account.count(&account, now);
        if n >= self.cfg.lookups_per_account {
            return Err(format!(
                "too many look-ups of email addresses from this account; try again in {} s",
                secs(wait)
            ));
        }
        let (n, wait) = self.lookups_by_address.count(&ip, now);
        if n >= self.cfg.lookups_per_address {
            return Err(format!(
                "too many look-ups of email addresses from your address; try again in {} s",
                secs(wait)
            ));
        }
        self.lookups_by_account.record(account, now);
        self.lookups_by_address.record(ip, now);
        Ok(())
    }

    /// Before `account` (a user id) sends a message; counts it.
    pub fn check_message(&self, account: i64) -> Result<(), Refusal> {
        let now = Instant::now();
        let (n, wait) = self.messages.count(&account, now);
        if n >= self.cfg.messages_per_account {
            return Err(format!("you are sending messages too fast; try again in {} s", secs(wait)));
        }
        self.messages.record(account, now);
        Ok(())
    }

    /// A new connection from `ip`: `None` if that address, or its network
    /// (see [`prefix_of`]), has too many.
    pub fn connection(&self, ip: IpAddr) -> Option<ConnectionSlot<'_>> {
        let ip = ip.to_canonical();
        if !self.applies(ip) {
            return Some(ConnectionSlot { limiter: self, ip: None });
        }
        let prefix = prefix_of(ip);
        // Address first, then network; both under the first lock, so two
        // connections cannot pass the checks together.
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let mut nets = self.prefixes.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&ip).copied().unwrap_or(0) >= self.cfg.max_connections_per_address
            || nets.get(&prefix).copied().unwrap_or(0) >= self.cfg.max_connections_per_prefix
        {
            return None;
        }
        *map.entry(ip).or_default() += 1;
        *nets.entry(prefix).or_default() += 1;
        Some(ConnectionSlot { limiter: self, ip: Some(ip) })
    }

    /// Takes a password-hashing slot, waiting in a bounded queue.
    pub async fn hash_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Refusal> {
        let busy = || "the server is busy; try again in a moment".to_owned();
        if let Ok(p) = self.hash_slots.try_acquire() {
            return Ok(p);
        }
        if self.hash_waiting.fetch_add(1, Ordering::SeqCst) >= self.cfg.hash_queue {
            self.hash_waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy());
        }
        let permit = self.hash_slots.acquire().await;
        self.hash_waiting.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| busy())
    }
}

/// The network an address is counted in: its /24 for IPv4, its /64 for
/// IPv6 (the first address of it stands for the whole).
pub fn prefix_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

/// Holds a connection's place in the per-address and per-network counts.
#[derive(Debug)]
pub struct ConnectionSlot<'a> {
    limiter: &'a Limiter,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut map = self.limiter.connections.lock().unwrap_or_else(|p| p.into_inner());
            let mut nets = self.limiter.prefixes.lock().unwrap_or_else(|p| p.into_inner());
            for (map, key) in [(&mut *map, ip), (&mut *nets, prefix_of(ip))] {
                if let Some(n) = map.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&key);
                    }
                }
            }
        }
    }
}

/// A connection's request budget (token bucket).
#[derive(Debug)]
pub struct RequestBudget {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl RequestBudget {
    /// A full bucket.
    pub fn new(cfg: &LimitsConfig) -> Self {
        let burst = f64::from(cfg.request_burst.max(1));
        Self { tokens: burst, rate: f64::from(cfg.requests_per_sec.max(1)), burst, at: Instant::now() }
    }

    /// Spends one request; false when the connection is going too fast.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> LimitsConfig {
        LimitsConfig {
            login_failures_per_address: 3,
            login_failures_per_account: 5,
            account_pause_secs: 60,
            creates_per_address: 2,
            max_connections_per_address: 2,
            limit_loopback: true,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_guessing_address_is_cut_off_but_the_owner_elsewhere_is_not() {
        let l = Limiter::new(strict());
        let guesser: IpAddr = "203.0.113.9".parse().unwrap();
        let owner: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..3 {
            l.check_login(guesser, "ann@x.org").unwrap();
            l.login_result(guesser, "ann@x.org", false);
        }
        let e = l.check_login(guesser, "ann@x.org").unwrap_err();
        assert!(e.contains("from your address") && e.contains("try again in"), "{e}");
        assert!(l.check_login(guesser, "other@x.org").is_err(), "any account, from that address");
        l.check_login(owner, "ann@x.org").unwrap();
    }

    #[test]
    fn an_account_under_attack_slows_down_and_the_owner_resets_it() {
        let l = Limiter::new(strict());
        for i in 0..5 {
            let ip: IpAddr = format!("203.0.113.{i}").parse().unwrap();
            l.login_result(ip, "ann@x.org", false);
        }
        let owner: IpAddr = "198.51.100.1".parse().unwrap();
        let e = l.check_login(owner, "ann@x.org").unwrap_err();
        assert!(e.contains("on this account"), "{e}");
        // A success resets the slow-down.
        l.login_result(owner, "ann@x.org", true);
        l.check_login(owner, "ann@x.org").unwrap();
    }

    #[test]
    fn creates_and_connections_per_address() {
        let l = Limiter::new(strict());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        l.check_create(ip).unwrap();
        l.check_create(ip).unwrap();
        assert!(l.check_create(ip).unwrap_err().contains("accounts created"));
        let a = l.connection(ip).unwrap();
        let _b = l.connection(ip).unwrap();
        assert!(l.connection(ip).is_none());
        drop(a);
        assert!(l.connection(ip).is_some());
    }

    #[test]
    fn connections_are_counted_per_network_too() {
        let l = Limiter::new(LimitsConfig { max_connections_per_prefix: 3, ..strict() });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = l.connection(ip("203.0.113.1")).unwrap();
        let _b = l.connection(ip("203.0.113.2")).unwrap();
        let _c = l.connection(ip("::ffff:203.0.113.3")).unwrap();
        assert!(l.connection(ip("203.0.113.4")).is_none(), "a fourth address of the same /24");
        assert!(l.connection(ip("203.0.114.1")).is_some(), "another /24");
        drop(a);
        assert!(l.connection(ip("203.0.113.4")).is_some());
        let _d = l.connection(ip("2001:db8::1")).unwrap();
        let _e = l.connection(ip("2001:db8::2:1")).unwrap();
        let _f = l.connection(ip("2001:db8::ffff:1")).unwrap();
        assert!(l.connection(ip("2001:db8::9")).is_none(), "the same /64");
        assert!(l.connection(ip("2001:db8:0:1::1")).is_some(), "another /64");
        assert_eq!(prefix_of(ip("198.51.100.77")), ip("198.51.100.0"));
    }

    #[test]
    fn email_look_ups_are_rationed_per_account_and_per_address() {
        let l = Limiter::new(LimitsConfig { lookups_per_account: 2, lookups_per_address: 3, ..strict() });
        let (here, there): (IpAddr, IpAddr) = ("203.0.113.9".parse().unwrap(), "198.51.100.1".parse().unwrap());
        l.check_lookup(here, 1).unwrap();
        l.check_lookup(here, 1).unwrap();
        let e = l.check_lookup(there, 1).unwrap_err();
        assert!(e.contains("from this account") && e.contains("try again in"), "{e}");
        // Another account from the same address, up to the address's share.
        l.check_lookup(here, 2).unwrap();
        let e = l.check_lookup(here, 2).unwrap_err();
        assert!(e.contains("from your address"), "{e}");
        l.check_lookup(there, 2).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let exempt = Limiter::new(LimitsConfig { lookups_per_account: 1, ..LimitsConfig::default() });
        for _ in 0..5 {
            exempt.check_lookup(lo, 1).unwrap();
        }
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let l = Limiter::new(LimitsConfig { creates_per_address: 1, ..LimitsConfig::default() });
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..5 {
            l.check_create(lo).unwrap();
        }
    }

    #[test]
    fn request_budget() {
        let mut b =
            RequestBudget::new(&LimitsConfig { requests_per_sec: 1, request_burst: 3, ..LimitsConfig::default() });
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
    }

    #[tokio::test]
    async fn the_hash_queue_is_bounded() {
        let l = Limiter::new(LimitsConfig { hash_workers: 1, hash_queue: 0, ..LimitsConfig::default() });
        let held = l.hash_slot().await.unwrap();
        assert!(l.hash_slot().await.unwrap_err().contains("busy"));
        drop(held);
        assert!(l.hash_slot().await.is_ok());
    }
}
