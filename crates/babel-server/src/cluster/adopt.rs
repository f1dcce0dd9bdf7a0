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
//!
//! **Runs.** An entry names its home's run as well as its name (the random
//! id a node draws at each start, [`Bus::run`](super::Bus::run)), and every
//! adoption is a compare-and-set from one (node, run) ([`Claim`]): an entry
//! moves once, and only away from a run that is gone. A node that stops
//! cleanly stores its calls' last state, stops answering for them and says
//! `Leaving`: that run is gone, and the survivors adopt its calls at once
//! as above. A node restarted under its name takes back, as it starts, the
//! entries of its earlier run; the others, hearing a new run of a node,
//! count the old run gone too (whoever wins the compare-and-set holds the
//! call). Grace deadlines are stored with the call (wall-clock ms): an
//! adopter keeps only the rest of a member's grace, and lets go at once one
//! whose grace ran out unless they are back somewhere. An ended call's
//! entry is removed by a compare-and-set on the home's last revision
//! ([`remove_entry`]), so an adopter's write is never purged and no late
//! write on an older revision brings the call back.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use babel_proto::{CallId, EndReason, RelayMoved, ServerEvent, UserId};
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
/// How many calls a node adopts at once (each one compare-and-set).
const ADOPT_AT_ONCE: usize = 8;

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
    /// removes its entry when `state` gives `None` (the call ended). `node`
    /// and `run` are this node's name and run: a write or removal is a
    /// compare-and-set on the revision this node wrote last, so an entry
    /// another node adopted meanwhile is never overwritten nor removed, and
    /// an ended call's entry is never brought back by a late write.
    async fn write(&self, node: &str, run: u64, call: CallId, state: impl FnOnce() -> Option<StoredCall>) {
        let cell = self.cell(call);
        let mut rev = cell.lock().await;
        let state = state();
        let Some(kv) = self.store(state.is_some()).await else { return };
        let key = call.0.to_string();
        let mine = |s: &StoredCall| s.home == node && s.run == run;
        let Some(state) = state else {
            // Only the home removes the entry, at the revision it wrote:
            // one adopted meanwhile by another node (this one thought dead)
            // stays.
            let mut at = match *rev {
                Some(r) => Some(r),
                None => self.read(&kv, call).await.filter(|(s, _)| mine(s)).map(|(_, r)| r),
            };
            while let Some(r) = at.take() {
                match remove_entry(&self.js, &kv, call, r).await {
                    Ok(true) => {}
                    // Our own write whose answer was lost came after `r`:
                    // remove at its revision (again a compare-and-set).
                    Ok(false) => match self.read(&kv, call).await {
                        Some((s, later)) if mine(&s) && later > r => at = Some(later),
                        _ => tracing::info!(%call, "an ended call's entry was taken over by another node; left"),
                    },
                    Err(e) => tracing::warn!(%call, error = %e, "cannot remove an ended call's entry"),
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
                    Some((s, r)) if mine(&s) && Some(r) != *rev => *rev = Some(r),
                    Some((s, _)) if !mine(&s) => {
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

    /// The ids of every stored call (`None` if the bucket does not list).
    async fn ids(&self, kv: &kv::Store) -> Option<Vec<CallId>> {
        let listed = tokio::time::timeout(KV_WITHIN * 4, async {
            let mut keys = kv.keys().await.ok()?;
            let mut all = Vec::new();
            while let Some(k) = keys.next().await {
                all.push(k.ok()?);
            }
            Some(all)
        })
        .await;
        let keys = listed.ok().flatten()?;
        Some(keys.iter().filter_map(|k| k.parse::<u64>().ok().map(CallId)).collect())
    }
}

/// Removes a call's entry if its revision is still `revision` (nobody
/// wrote it since): a purge marker sent as a compare-and-set on the
/// revision, then the marker itself purged. Answers whether it was
/// removed; `Ok(false)` when another write (an adopter's) came first, which
/// then stays. Once removed, no compare-and-set on any earlier revision of
/// the call succeeds (an adopter that read it before cannot bring the
/// ended call back).
pub async fn remove_entry(
    js: &jetstream::Context,
    kv: &kv::Store,
    call: CallId,
    revision: u64,
) -> Result<bool, String> {
    let subject = format!("{}{}", kv.put_prefix.as_ref().unwrap_or(&kv.prefix), call.0);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "PURGE");
    headers.insert("Nats-Rollup", "sub");
    headers.insert("Nats-Expected-Last-Subject-Sequence", revision.to_string().as_str());
    let sent = async { js.publish_with_headers(subject.clone(), headers, bytes::Bytes::new()).await?.await };
    let marker = match tokio::time::timeout(KV_WITHIN, sent).await {
        Ok(Ok(ack)) => ack.sequence,
        Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => return Ok(false),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("timed out".into()),
    };
    // The marker alone is left: purge it too, so that ended calls leave
    // nothing behind (a compare-and-set on any revision fails either way).
    match tokio::time::timeout(KV_WITHIN, kv.stream.purge().filter(subject).sequence(marker + 1).into_future()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(%call, error = %e, "cannot purge a removed call's marker"),
        Err(_) => tracing::debug!(%call, "purging a removed call's marker timed out"),
    }
    Ok(true)
}

/// Whose calls a node takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim<'a> {
    /// The calls of one run of a node known gone: dead (no heartbeat), left
    /// (its `Leaving` note), or restarted (heard again as another run).
    Gone {
        /// The node's name.
        node: &'a str,
        /// Its run that is gone.
        run: u64,
    },
    /// Calls whose home is no live node's current run (a node's sweep when
    /// it starts: deaths nobody alive saw).
    Orphan,
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
            bus.calls_kv.write(bus.node(), bus.inc, id, || self.calls.export(id, bus.node(), bus.inc)).await;
        }
    }

    /// A run of a node is gone (dead, left or restarted): adopts, in the
    /// background, the calls it was home to that rendezvous hashing gives
    /// this node.
    pub(crate) fn adopt_calls_of(self: &Arc<Self>, node: String, run: u64) {
        let app = Arc::clone(self);
        tokio::spawn(async move { app.adopt_orphans(Claim::Gone { node: &node, run }).await });
    }

    /// Adopts, in the background, every stored call whose home is no live
    /// node: deaths this node did not see (it started after them, alone).
    /// Run once, when the node has had time to hear every live peer.
    pub(crate) fn sweep_orphans(self: &Arc<Self>) {
        let app = Arc::clone(self);
        tokio::spawn(async move { app.adopt_orphans(Claim::Orphan).await });
    }

    /// A node that starts takes back, at once and in the background, the
    /// calls its own earlier run (same name, killed or stopped) still holds
    /// in the bucket: that run is certainly gone, and nobody else may have
    /// noticed (a restart within `dead_after_ms` looks like no death).
    pub(crate) fn resume_own_calls(self: &Arc<Self>) {
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let Some(bus) = &app.bus else { return };
            let Some(kv) = bus.calls_kv.store(false).await else { return };
            let Some(ids) = bus.calls_kv.ids(&kv).await else {
                tracing::warn!("cannot list the stored calls; an earlier run's calls are not resumed");
                return;
            };
            let mut resumed = 0usize;
            for id in ids {
                let Some((stored, _)) = bus.calls_kv.read(&kv, id).await else { continue };
                if stored.home == bus.node() && stored.run != bus.inc {
                    let claim = Claim::Gone { node: bus.node(), run: stored.run };
                    resumed += usize::from(app.adopt_call(id, claim).await);
                }
            }
            if resumed > 0 {
                tracing::info!(calls = resumed, "resumed the calls of this node's earlier run");
            }
        });
    }

    /// A stored home (node and run) is gone: not this node's run, and not
    /// the run of a node heard from.
    fn home_gone(&self, home: &str, run: u64) -> bool {
        let Some(bus) = &self.bus else { return false };
        if home == bus.node() {
            return run != bus.inc;
        }
        bus.peer_run(home) != Some(run)
    }

    async fn adopt_orphans(&self, claim: Claim<'_>) {
        let Some(bus) = &self.bus else { return };
        let Some(kv) = bus.calls_kv.store(false).await else { return };
        let started = tokio::time::Instant::now();
        let Some(ids) = bus.calls_kv.ids(&kv).await else {
            tracing::warn!(?claim, "cannot list the stored calls; orphaned calls are not adopted");
            return;
        };
        // Read a few at a time: a node that goes hands over all its calls.
        let entries: Vec<(CallId, StoredCall)> = futures::stream::iter(ids)
            .map(|id| {
                let kv = &kv;
                async move { bus.calls_kv.read(kv, id).await.map(|(stored, _)| (id, stored)) }
            })
            .buffer_unordered(16)
            .filter_map(|e| async move { e })
            .collect()
            .await;
        let (mut first, mut later) = (Vec::new(), Vec::new());
        for (id, stored) in entries {
            let Claim::Gone { node, run } = claim else {
                // A sweep: nobody else is looking for these.
                if self.home_gone(&stored.home, stored.run) {
                    self.adopt_call(id, Claim::Orphan).await;
                }
                continue;
            };
            if stored.home != node || stored.run != run {
                continue;
            }
            let mut live = bus.peers();
            live.push(bus.node().to_owned());
            let rank = ranked(id, &live).iter().position(|n| n == bus.node()).unwrap_or(live.len());
            if rank == 0 {
                first.push(id);
            } else {
                later.push((rank, id));
            }
        }
        // Each call's adoption is its own compare-and-set: several at once.
        futures::stream::iter(first)
            .for_each_concurrent(ADOPT_AT_ONCE, |id| async move {
                self.adopt_call(id, claim).await;
            })
            .await;
        later.sort_by_key(|(rank, id)| (*rank, id.0));
        for (rank, id) in later {
            tokio::time::sleep_until(started + RANK_STEP * rank as u32).await;
            self.adopt_call(id, claim).await;
        }
    }

    /// Takes over a call whose home is gone: with [`Claim::Gone`], only if
    /// the stored home is still that run of that node; with
    /// [`Claim::Orphan`], only if the stored home is no live node's
    /// current run. A compare-and-set on the entry's revision makes this
    /// node (this run) its home, so of several nodes trying at once exactly
    /// one succeeds; that one rebuilds the call, lets go at once the
    /// members whose grace ran out (unless they are back somewhere),
    /// answers on the call's subject, grants every other member a leg on
    /// its own relay and tells each by `/call_relay`. Answers whether this
    /// node adopted the call.
    pub async fn adopt_call(&self, id: CallId, claim: Claim<'_>) -> bool {
        let Some(bus) = &self.bus else { return false };
        let Some(kv) = bus.calls_kv.store(false).await else { return false };
        let Some((mut stored, revision)) = bus.calls_kv.read(&kv, id).await else { return false };
        let home_ok = match claim {
            Claim::Gone { node, run } => stored.home == node && stored.run == run,
            Claim::Orphan => self.home_gone(&stored.home, stored.run),
        };
        let mine = stored.home == bus.node() && stored.run == bus.inc;
        if mine || !home_ok || self.calls.contains(id) {
            return false;
        }
        let old_home = std::mem::replace(&mut stored.home, bus.node().to_owned());
        stored.run = bus.inc;
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
        let wall = crate::calls::stored::wall_ms();
        // Members in their grace keep only the rest of it; those whose
        // grace ran out while the home was going are not brought back.
        let in_grace: Vec<(Leg, bool)> = stored
            .members
            .iter()
            .filter_map(|m| {
                let leg = Leg { user: m.user.id, session: SessionId(m.session) };
                m.grace_until_ms.map(|until| (leg, until <= wall))
            })
            .collect();
        let legs: Vec<(UserId, SessionId)> = stored
            .members
            .iter()
            .filter(|m| stored.relay_legs.contains(&m.session))
            .map(|m| (m.user.id, SessionId(m.session)))
            .collect();
        let members: Vec<Leg> = stored
            .members
            .iter()
            .filter(|m| m.grace_until_ms.is_none())
            .map(|m| Leg { user: m.user.id, session: SessionId(m.session) })
            .collect();
        let fx = match self.calls.import(id, stored) {
            Ok(fx) => fx,
            Err(e) => {
                tracing::warn!(call = %id, error = %e, "cannot take over a call");
                return false;
            }
        };
        bus.home_call(id).await;
        for (leg, ran_out) in in_grace {
            if ran_out && !self.connected_anywhere(leg).await {
                tracing::debug!(call = %id, user = %leg.user, "a member's grace ran out while its call's home was going");
                if let Ok(fx) = self.calls.leave(id, leg, EndReason::Disconnected) {
                    self.apply(fx).await;
                }
            }
        }
        for (user, session) in legs {
            if !self.calls.is_member(id, session) {
                continue;
            }
            match self.grant(id, Authed { user, session }) {
                Ok(grant) => {
                    let relay = grant.with_host(self.relay.host());
                    self.hub.to_session(user, session, &ServerEvent::CallRelay(RelayMoved { call_id: id, relay }));
                }
                Err(e) => tracing::warn!(call = %id, error = ?e, "cannot grant a relay leg in an adopted call"),
            }
        }
        self.apply(fx).await;
        // Whoever is not connected here (and was not in their grace
        // already) may have been on the dead node: each keeps their place
        // for the grace, and when it runs out this node asks every node
        // whether they came back (`routes/calls.rs`).
        for leg in members {
            self.connections_gone_elsewhere(leg).await;
        }
        tracing::info!(call = %id, from = %old_home, "adopted a call whose home is gone");
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
