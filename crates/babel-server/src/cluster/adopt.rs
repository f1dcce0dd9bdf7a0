//! A call outlives its home (issue #18 item 3, DESIGN.md §4).
//!
//! **State.** Each call's state ([`StoredCall`]: home node, members and
//! their sessions, rings, relay legs, phase, epoch, open history) lives in a
//! JetStream key-value bucket, `<cluster>_calls`, under the call id. The
//! home writes it whenever the call changes (never on a timer) and before
//! anyone is told of the change, each write a compare-and-set on the
//! revision it wrote last; an ended call's entry is removed. The home's
//! liveness is not per call: it is the node's own heartbeat, which every
//! node already watches (`Peers`), so the bus carries no per-call lease
//! traffic at all (SCALING.md explains why).
//!
//! **Adoption.** When a node is counted dead (`dead_after_ms` without a
//! heartbeat), every survivor lists the bucket and, for each call whose
//! home was the dead node, ranks the live nodes by rendezvous hash of
//! (call, node) ([`ranked`]). The first adopts at once; the k-th waits
//! k × [`RANK_STEP`] and adopts only if the entry still names the dead
//! home (so a survivor that sees the cluster differently, or a winner that
//! died too, leaves no call orphaned); a node that starts sweeps the
//! bucket once, `dead_after_ms` in, for calls whose home is no live node
//! (a death nobody alive saw). Adopting is a compare-and-set of the
//! entry's revision, home ← this node: of several nodes trying at once
//! exactly one succeeds. The adopter rebuilds the call from the entry,
//! answers on the call's subject, grants every member a leg on its own
//! relay and tells each by `/call_relay`. Voice sent directly between
//! clients never touched the home, so it never stopped. Every member not
//! connected to the adopter starts its grace (`call_grace_ms`): one whose
//! node died with the home leaves when it runs out, unless it came back on
//! some node. Call channels on other nodes closed with the home
//! (`cluster/channels.rs`); `/connect_call` again reaches the adopter.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use babel_proto::{CallId, RelayMoved, ServerEvent, UserId};
use futures::StreamExt;

use super::lock;
use crate::app::{App, Authed};
use crate::calls::machine::Leg;
use crate::calls::stored::StoredCall;
use crate::store::SessionId;

/// How long one key-value operation may take.
const KV_WITHIN: Duration = Duration::from_secs(3);
/// How long the node ranked k-th for a call waits (k times this) before it
/// adopts the call in place of those ranked before it.
pub const RANK_STEP: Duration = Duration::from_secs(2);

/// The bucket of a cluster's calls.
pub fn bucket_name(cluster: &str) -> String {
    format!("{cluster}_calls")
}

/// The weight of `node` for `call` in rendezvous hashing: FNV-1a over the
/// name and the id, then a 64-bit finaliser (stable across builds, unlike
/// `std`'s hasher).
pub fn score(call: CallId, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(call.0.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The nodes in the order they should adopt `call`: the highest weight
/// first (ties, all but impossible, by name).
pub fn ranked(call: CallId, nodes: &[String]) -> Vec<String> {
    let mut v: Vec<(u64, &String)> = nodes.iter().map(|n| (score(call, n), n)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    v.dedup_by(|a, b| a.1 == b.1);
    v.into_iter().map(|(_, n)| n.clone()).collect()
}

/// The calls' bucket as one node uses it.
pub(crate) struct CallStore {
    js: jetstream::Context,
    bucket: String,
    kv: tokio::sync::Mutex<Option<kv::Store>>,
    /// Per call homed here: the revision of its entry last written (held
    /// while a write is under way, so writes of one call go in order and
    /// each carries the call's latest state).
    revisions: Mutex<HashMap<CallId, Arc<tokio::sync::Mutex<Option<u64>>>>>,
}

impl std::fmt::Debug for CallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStore").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl CallStore {
    pub(crate) fn new(client: async_nats::Client, cluster: &str) -> CallStore {
        CallStore {
            js: jetstream::new(client),
            bucket: bucket_name(cluster),
            kv: tokio::sync::Mutex::new(None),
            revisions: Mutex::default(),
        }
    }

    /// The bucket, made when `create` and it does not exist yet.
    async fn store(&self, create: bool) -> Option<kv::Store> {
        let mut held = self.kv.lock().await;
        if let Some(s) = held.as_ref() {
            return Some(s.clone());
        }
        let found = match tokio::time::timeout(KV_WITHIN, self.js.get_key_value(self.bucket.clone())).await {
            Ok(Ok(s)) => Some(s),
            _ if !create => None,
            _ => {
                let config = kv::Config { bucket: self.bucket.clone(), history: 1, ..kv::Config::default() };
                match tokio::time::timeout(KV_WITHIN, self.js.create_key_value(config)).await {
                    Ok(Ok(s)) => Some(s),
                    Ok(Err(e)) => {
                        tracing::warn!(bucket = %self.bucket, error = %e, "cannot make the calls' bucket (is JetStream on?); calls will not outlive their node");
                        None
                    }
                    Err(_) => None,
                }
            }
        };
        held.clone_from(&found);
        found
    }

    fn cell(&self, call: CallId) -> Arc<tokio::sync::Mutex<Option<u64>>> {
        Arc::clone(lock(&self.revisions).entry(call).or_default())
    }

    /// The stored state of a call, with its revision.
    async fn read(&self, kv: &kv::Store, call: CallId) -> Option<(StoredCall, u64)> {
        match tokio::time::timeout(KV_WITHIN, kv.entry(call.0.to_string())).await {
            Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => match serde_json::from_slice(&e.value) {
                Ok(s) => Some((s, e.revision)),
                Err(err) => {
                    tracing::warn!(%call, error = %err, "a stored call does not read");
                    None
                }
            },
            _ => None,
        }
    }

    /// Writes a call's state (`state` is taken while the call's writes are
    /// held, so the last write always carries the latest state), or
    /// removes its entry when `state` gives `None` (the call ended).
    async fn write(&self, node: &str, call: CallId, state: impl FnOnce() -> Option<StoredCall>) {
        let cell = self.cell(call);
        let mut rev = cell.lock().await;
        let state = state();
        let Some(kv) = self.store(state.is_some()).await else { return };
        let key = call.0.to_string();
        let Some(state) = state else {
            // Only the home removes the entry: one adopted meanwhile by
            // another node (this one thought dead) stays.
            if self.read(&kv, call).await.is_some_and(|(s, _)| s.home == node) {
                let subject = format!("{}{}", kv.prefix, key);
                if let Ok(Err(e)) =
                    tokio::time::timeout(KV_WITHIN, kv.stream.purge().filter(subject).into_future()).await
                {
                    tracing::warn!(%call, error = %e, "cannot remove an ended call's entry");
                }
            }
            drop(rev);
            lock(&self.revisions).remove(&call);
            return;
        };
        let Ok(bytes) = serde_json::to_vec(&state) else { return };
        for _ in 0..2 {
            match tokio::time::timeout(KV_WITHIN, kv.update(&key, bytes.clone().into(), rev.unwrap_or(0))).await {
                Ok(Ok(r)) => {
                    *rev = Some(r);
                    return;
                }
                Ok(Err(e)) => match self.read(&kv, call).await {
                    // Our own earlier write whose answer was lost: go on from it.
                    Some((s, r)) if s.home == node && Some(r) != *rev => *rev = Some(r),
                    Some((s, _)) if s.home != node => {
                        tracing::warn!(%call, home = %s.home, "another node adopted a call this node holds");
                        return;
                    }
                    _ => {
                        tracing::warn!(%call, error = %e, "cannot store a call's state");
                        return;
                    }
                },
                Err(_) => {
                    tracing::warn!(%call, "storing a call's state timed out");
                    return;
                }
            }
        }
    }
}

impl App {
    /// Stores the state of the calls that changed (this node is their
    /// home), before anyone is told: a change a client saw survives the
    /// home's death.
    pub(crate) async fn store_calls(&self, changed: &[CallId]) {
        let Some(bus) = &self.bus else { return };
        if changed.is_empty()
            || bus.fenced()
            || bus.client.connection_state() != async_nats::connection::State::Connected
        {
            return;
        }
        let mut ids = changed.to_vec();
        ids.sort_by_key(|c| c.0);
        ids.dedup();
        for id in ids {
            bus.calls_kv.write(bus.node(), id, || self.calls.export(id, bus.node())).await;
        }
    }

    /// A node died: adopts, in the background, the calls it was home to
    /// that rendezvous hashing gives this node.
    pub(crate) fn adopt_calls_of(self: &Arc<Self>, dead: String) {
        let app = Arc::clone(self);
        tokio::spawn(async move { app.adopt_orphans(Some(&dead)).await });
    }

    /// Adopts, in the background, every stored call whose home is no live
    /// node: deaths this node did not see (it started after them, alone).
    /// Run once, when the node has had time to hear every live peer.
    pub(crate) fn sweep_orphans(self: &Arc<Self>) {
        let app = Arc::clone(self);
        tokio::spawn(async move { app.adopt_orphans(None).await });
    }

    /// A stored home is gone: not this node, and not heard from.
    fn home_gone(&self, home: &str) -> bool {
        self.bus.as_ref().is_some_and(|bus| home != bus.node() && !bus.peers().iter().any(|p| p == home))
    }

    async fn adopt_orphans(&self, dead: Option<&str>) {
        let Some(bus) = &self.bus else { return };
        let Some(kv) = bus.calls_kv.store(false).await else { return };
        let started = tokio::time::Instant::now();
        let listed = tokio::time::timeout(KV_WITHIN * 4, async {
            let mut keys = kv.keys().await.ok()?;
            let mut all = Vec::new();
            while let Some(k) = keys.next().await {
                all.push(k.ok()?);
            }
            Some(all)
        })
        .await;
        let Ok(Some(keys)) = listed else {
            tracing::warn!(node = ?dead, "cannot list the stored calls; orphaned calls are not adopted");
            return;
        };
        let mut later = Vec::new();
        for key in keys {
            let Ok(id) = key.parse::<u64>().map(CallId) else { continue };
            let Some((stored, _)) = bus.calls_kv.read(&kv, id).await else { continue };
            let Some(dead) = dead else {
                // A sweep: nobody else is looking for these.
                if self.home_gone(&stored.home) {
                    self.adopt_call(id, None).await;
                }
                continue;
            };
            if stored.home != dead {
                continue;
            }
            let mut live = bus.peers();
            live.push(bus.node().to_owned());
            let rank = ranked(id, &live).iter().position(|n| n == bus.node()).unwrap_or(live.len());
            if rank == 0 {
                self.adopt_call(id, Some(dead)).await;
            } else {
                later.push((rank, id));
            }
        }
        later.sort_by_key(|(rank, id)| (*rank, id.0));
        for (rank, id) in later {
            tokio::time::sleep_until(started + RANK_STEP * rank as u32).await;
            self.adopt_call(id, dead).await;
        }
    }

    /// Takes over a call whose home died: with `from`, only if the stored
    /// home is still that node (one known dead); without, only if the
    /// stored home is not a live node. A compare-and-set on the entry's revision
    /// makes this node its home, so of several nodes trying at once exactly
    /// one succeeds; that one rebuilds the call, answers on its subject,
    /// grants every member a leg on its own relay and tells each by
    /// `/call_relay`. Answers whether this node adopted the call.
    pub async fn adopt_call(&self, id: CallId, from: Option<&str>) -> bool {
        let Some(bus) = &self.bus else { return false };
        let Some(kv) = bus.calls_kv.store(false).await else { return false };
        let Some((mut stored, revision)) = bus.calls_kv.read(&kv, id).await else { return false };
        let home_ok = match from {
            Some(dead) => stored.home == dead,
            None => self.home_gone(&stored.home),
        };
        if stored.home == bus.node() || !home_ok || self.calls.contains(id) {
            return false;
        }
        let old_home = std::mem::replace(&mut stored.home, bus.node().to_owned());
        if let Some(host) = self.relay.host() {
            // Withheld addresses show as this relay's from now on.
            for m in &mut stored.members {
                m.relay_ip = host.to_string();
            }
        }
        let Ok(bytes) = serde_json::to_vec(&stored) else { return false };
        let cell = bus.calls_kv.cell(id);
        let mut rev = cell.lock().await;
        match tokio::time::timeout(KV_WITHIN, kv.update(id.0.to_string(), bytes.into(), revision)).await {
            Ok(Ok(r)) => *rev = Some(r),
            Ok(Err(e)) => {
                tracing::debug!(call = %id, error = %e, "another node adopted the call first");
                return false;
            }
            Err(_) => return false,
        }
        drop(rev);
        let legs: Vec<(UserId, SessionId)> = stored
            .members
            .iter()
            .filter(|m| stored.relay_legs.contains(&m.session))
            .map(|m| (m.user.id, SessionId(m.session)))
            .collect();
        let members: Vec<Leg> =
            stored.members.iter().map(|m| Leg { user: m.user.id, session: SessionId(m.session) }).collect();
        let fx = match self.calls.import(id, stored) {
            Ok(fx) => fx,
            Err(e) => {
                tracing::warn!(call = %id, error = %e, "cannot take over a call");
                return false;
            }
        };
        bus.home_call(id).await;
        for (user, session) in legs {
            match self.grant(id, Authed { user, session }) {
                Ok(grant) => {
                    let relay = grant.with_host(self.relay.host());
                    self.hub.to_session(user, session, &ServerEvent::CallRelay(RelayMoved { call_id: id, relay }));
                }
                Err(e) => tracing::warn!(call = %id, error = ?e, "cannot grant a relay leg in an adopted call"),
            }
        }
        self.apply(fx).await;
        // Whoever is not connected here may have been on the dead node:
        // each keeps their place for the grace, and when it runs out this
        // node asks every node whether they came back (`routes/calls.rs`).
        for leg in members {
            self.connections_gone_elsewhere(leg).await;
        }
        tracing::info!(call = %id, from = %old_home, "adopted a call whose home died");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_ranks_every_live_node_once_and_spreads_calls() {
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut firsts = HashMap::new();
        for id in 0..3000u64 {
            let r = ranked(CallId(id), &nodes);
            assert_eq!(r.len(), 3);
            let mut sorted = r.clone();
            sorted.sort();
            assert_eq!(sorted, nodes);
            *firsts.entry(r[0].clone()).or_insert(0) += 1;
        }
        for n in &nodes {
            let got = firsts[n];
            assert!((800..1200).contains(&got), "{n} first for {got} of 3000 calls");
        }
    }

    #[test]
    fn a_dead_node_moves_only_its_own_calls_and_everyone_agrees() {
        let all: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let without_c: Vec<String> = all[..2].to_vec();
        for id in 0..500u64 {
            let (full, less) = (ranked(CallId(id), &all), ranked(CallId(id), &without_c));
            let kept: Vec<&String> = full.iter().filter(|n| *n != "c").collect();
            assert_eq!(kept, less.iter().collect::<Vec<_>>(), "losing c changes nothing else's order");
            // The order does not depend on how a node lists its peers.
            let mut shuffled = all.clone();
            shuffled.reverse();
            assert_eq!(ranked(CallId(id), &shuffled), full);
        }
        assert_ne!(score(CallId(1), "a"), score(CallId(1), "b"));
        assert_ne!(score(CallId(1), "a"), score(CallId(2), "a"));
        assert_eq!(score(CallId(7), "node-1"), score(CallId(7), "node-1"));
        assert_eq!(bucket_name("babel"), "babel_calls");
    }
}
