//! The UDP media relay and public-address discovery.
//!
//! Each call participant is granted a handle and a key (see
//! `babel_proto::relay` for the datagrams). A tagged BIND tells the relay the
//! participant's public address, which it reports back (BIND_ACK) and to the
//! call manager, so the other participants learn it as a candidate. DATA from
//! the bound address with a good tag is forwarded, as RELAYED, to every other
//! participant of the call that has bound. Anything else is dropped and
//! counted: a stranger can neither inject nor receive.
//!
//! The forwarding path runs on a thread of its own, takes only a read lock
//! and allocates nothing per datagram.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use babel_proto::relay::{self as wire, BIND, DATA};
use babel_proto::{CallId, UserId};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::SessionId;

/// A participant's relay registration.
#[derive(Debug, Clone)]
struct RelayLeg {
    call: CallId,
    user: UserId,
    session: SessionId,
    key: [u8; 16],
    addr: Option<SocketAddr>,
    last_nonce: u64,
}

#[derive(Debug, Default)]
struct Table {
    legs: HashMap<u32, RelayLeg>,
    calls: HashMap<CallId, Vec<u32>>,
}

/// What the relay counted.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams forwarded (one per receiver).
    pub forwarded: AtomicU64,
    /// BINDs accepted.
    pub binds: AtomicU64,
    /// Datagrams dropped: unknown handle, bad tag, replayed BIND, wrong source.
    pub dropped: AtomicU64,
}

/// A participant's public address changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLearned {
    /// The call.
    pub call: CallId,
    /// Whose.
    pub user: UserId,
    /// Which session.
    pub session: SessionId,
    /// The address the relay saw.
    pub addr: SocketAddr,
}

/// What [`Relay::handle`] decided for one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// A BIND was accepted: send this BIND_ACK back; the address is news
    /// when `Some`.
    Ack(Vec<u8>, Option<AddressLearned>),
    /// Send `out` to every address in `dests`.
    Forward,
    /// Dropped (and counted): unknown handle, bad tag, replayed BIND,
    /// wrong source, unknown kind.
    Dropped,
}

/// Shared relay state; the UDP task is [`Relay::run`].
#[derive(Debug)]
pub struct Relay {
    table: RwLock<Table>,
    port: u16,
    reports: std::sync::OnceLock<mpsc::UnboundedSender<AddressLearned>>,
    /// Counters.
    pub stats: RelayStats,
}

impl Relay {
    /// A relay whose socket is on `port`.
    pub fn new(port: u16) -> Arc<Relay> {
        Arc::new(Relay {
            table: RwLock::default(),
            port,
            reports: std::sync::OnceLock::new(),
            stats: RelayStats::default(),
        })
    }

    /// Where address changes are reported (set once).
    pub fn set_reports(&self, tx: mpsc::UnboundedSender<AddressLearned>) {
        let _ = self.reports.set(tx);
    }

    /// The UDP port clients send to.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants a participant a handle and key (`None` if the OS has no randomness).
    pub fn grant(&self, call: CallId, user: UserId, session: SessionId) -> Option<(u32, [u8; 16])> {
        let mut key = [0u8; 16];
        let mut table = self.write();
        loop {
            let mut raw = [0u8; 20];
            getrandom::fill(&mut raw).ok()?;
            let handle = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            key.copy_from_slice(&raw[4..]);
            if handle == 0 || table.legs.contains_key(&handle) {
                continue;
            }
            table.legs.insert(handle, RelayLeg { call, user, session, key, addr: None, last_nonce: 0 });
            table.calls.entry(call).or_default().push(handle);
            return Some((handle, key));
        }
    }

    /// Forgets one participant (they left).
    pub fn revoke(&self, call: CallId, session: SessionId) {
        let mut guard = self.write();
        let t = &mut *guard;
        let gone: Vec<u32> = t
            .calls
            .get(&call)
            .map(|hs| hs.iter().copied().filter(|h| t.legs.get(h).is_some_and(|l| l.session == session)).collect())
            .unwrap_or_default();
        for h in &gone {
            t.legs.remove(h);
        }
        if let Some(hs) = t.calls.get_mut(&call) {
            hs.retain(|h| !gone.contains(h));
            if hs.is_empty() {
                t.calls.remove(&call);
            }
        }
    }

    /// Forgets a whole call.
    pub fn end_call(&self, call: CallId) {
        let mut table = self.write();
        for h in table.calls.remove(&call).unwrap_or_default() {
            table.legs.remove(&h);
        }
    }

    /// The bound address of a session in a call.
    pub fn address_of(&self, call: CallId, session: SessionId) -> Option<SocketAddr> {
        let table = self.read();
        table.calls.get(&call)?.iter().filter_map(|h| table.legs.get(h)).find(|l| l.session == session)?.addr
    }

    /// Registered participants (for tests: nothing may be left behind).
    pub fn leg_count(&self) -> usize {
        self.read().legs.len()
    }

    fn bind(&self, handle: u32, datagram: &[u8], from: SocketAddr) -> Option<(Vec<u8>, Option<AddressLearned>)> {
        let mut table = self.write();
        let leg = table.legs.get_mut(&handle)?;
        let nonce = wire::verify_bind(datagram, &leg.key)?;
        if nonce <= leg.last_nonce {
            return None;
        }
        leg.last_nonce = nonce;
        let moved = leg.addr != Some(from);
        leg.addr = Some(from);
        let learned =
            moved.then_some(AddressLearned { call: leg.call, user: leg.user, session: leg.session, addr: from });
        Some((wire::encode_bind_ack(handle, nonce, from, &leg.key), learned))
    }

    /// Forwards a DATA datagram; `dests` and `out` are reused buffers.
    fn forward(
        &self,
        handle: u32,
        datagram: &[u8],
        from: SocketAddr,
        dests: &mut Vec<SocketAddr>,
        out: &mut Vec<u8>,
    ) -> bool {
        dests.clear();
        let table = self.read();
        let Some(leg) = table.legs.get(&handle) else { return false };
        if leg.addr != Some(from) {
            return false;
        }
        let Some(payload) = wire::verify_data(datagram, &leg.key) else { return false };
        let Some(handles) = table.calls.get(&leg.call) else { return false };
        dests.extend(handles.iter().filter(|&&h| h != handle).filter_map(|h| table.legs.get(h)).filter_map(|l| l.addr));
        wire::encode_relayed(leg.user, payload, out);
        true
    }

    /// Serves the socket on the calling thread until `stop` is set
    /// (checked at least every 200 ms). Address changes go to the reports
    /// channel.
    ///
    /// A plain blocking loop on a thread of its own, not a task: at 100 000
    /// datagrams/s the async runtime's readiness bookkeeping and scheduling
    /// cost more than the forwarding, and a task can be held up behind others.
    pub fn run(&self, socket: std::net::UdpSocket, stop: &std::sync::atomic::AtomicBool) {
        if let Err(e) =
            socket.set_nonblocking(false).and_then(|()| socket.set_read_timeout(Some(Duration::from_millis(200))))
        {
            tracing::error!(error = %e, "cannot set up the relay socket");
            return;
        }
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::with_capacity(2048);
        let mut dests = Vec::with_capacity(8);
        while !stop.load(Ordering::Relaxed) {
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems.
                    tracing::debug!(error = %e, "relay receive error");
                    continue;
                }
            };
            match self.handle(&buf[..n], from, &mut dests, &mut out) {
                Handled::Ack(ack, moved) => {
                    let _ = socket.send_to(&ack, from);
                    if let (Some(m), Some(tx)) = (moved, self.reports.get()) {
                        let _ = tx.send(m);
                    }
                }
                Handled::Forward => {
                    for d in &dests {
                        // The send buffer is large (see bind_relay_socket), so this
                        // waits only if the machine cannot send at all; a send that
                        // fails drops this datagram for that receiver only.
                        match socket.send_to(&out, d) {
                            Ok(_) => self.stats.forwarded.fetch_add(1, Ordering::Relaxed),
                            Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
                Handled::Dropped => {}
            }
        }
    }

    /// Handles one datagram that arrived from `from`, without IO: the
    /// answer to send back, or the datagram (`out`) to forward to `dests`
    /// (both reused buffers), or nothing. Counts binds and drops.
    pub fn handle(&self, datagram: &[u8], from: SocketAddr, dests: &mut Vec<SocketAddr>, out: &mut Vec<u8>) -> Handled {
        let handled = match wire::peek_client(datagram) {
            Some((BIND, handle)) => match self.bind(handle, datagram, from) {
                Some((ack, moved)) => {
                    self.stats.binds.fetch_add(1, Ordering::Relaxed);
                    Handled::Ack(ack, moved)
                }
                None => Handled::Dropped,
            },
            Some((DATA, handle)) if self.forward(handle, datagram, from, dests, out) => Handled::Forward,
            _ => Handled::Dropped,
        };
        if matches!(handled, Handled::Dropped) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        handled
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_revoke_end() {
        let r = Relay::new(1);
        let (h1, _) = r.grant(CallId(1), UserId(1), SessionId(1)).unwrap();
        let (h2, _) = r.grant(CallId(1), UserId(2), SessionId(2)).unwrap();
        assert_ne!(h1, h2);
        r.grant(CallId(2), UserId(3), SessionId(3)).unwrap();
        assert_eq!(r.leg_count(), 3);
        r.revoke(CallId(1), SessionId(1));
        assert_eq!(r.leg_count(), 2);
        r.end_call(CallId(1));
        r.end_call(CallId(2));
        assert_eq!(r.leg_count(), 0);
    }

    #[test]
    fn bind_then_forward_only_from_the_bound_address() {
        let r = Relay::new(1);
        let (h1, k1) = r.grant(CallId(1), UserId(1), SessionId(1)).unwrap();
        let (h2, k2) = r.grant(CallId(1), UserId(2), SessionId(2)).unwrap();
        let a1: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let a2: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        let (ack, learned) = r.bind(h1, &wire::encode_bind(h1, 5, &k1), a1).unwrap();
        assert_eq!(wire::verify_bind_ack(&ack, &k1), Some((h1, 5, a1)));
        assert_eq!(learned.unwrap().addr, a1);
        assert!(r.bind(h1, &wire::encode_bind(h1, 5, &k1), a1).is_none(), "replayed nonce");
        assert!(r.bind(h1, &wire::encode_bind(h1, 6, &k2), a1).is_none(), "wrong key");
        let (_, again) = r.bind(h1, &wire::encode_bind(h1, 7, &k1), a1).unwrap();
        assert!(again.is_none(), "same address is not news");
        r.bind(h2, &wire::encode_bind(h2, 1, &k2), a2).unwrap();

        let (mut dests, mut out, mut d) = (Vec::new(), Vec::new(), Vec::new());
        wire::encode_data(h1, &k1, b"voice", &mut d);
        assert!(r.forward(h1, &d, a1, &mut dests, &mut out));
        assert_eq!(dests, vec![a2]);
        assert_eq!(wire::decode_relayed(&out), Some((UserId(1), &b"voice"[..])));
        assert!(!r.forward(h1, &d, "10.9.9.9:1".parse().unwrap(), &mut dests, &mut out), "spoofed source");
        wire::encode_data(h1, &k2, b"voice", &mut d);
        assert!(!r.forward(h1, &d, a1, &mut dests, &mut out), "bad tag");
        // A roaming client re-binds from a new address.
        let a1b: SocketAddr = "10.0.0.3:3000".parse().unwrap();
        let (_, moved) = r.bind(h1, &wire::encode_bind(h1, 8, &k1), a1b).unwrap();
        assert_eq!(moved.unwrap().addr, a1b);
        assert_eq!(r.address_of(CallId(1), SessionId(1)), Some(a1b));
    }
}
