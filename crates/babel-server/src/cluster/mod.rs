//! Several nodes as one service: the NATS bus (`--nats`), the event hub
//! over it, cache invalidation, presence across nodes, node liveness and
//! fencing (DESIGN.md §4).
//!
//! Subjects, under the cluster's name (`[cluster] name`, default `babel`):
//!
//! - `<name>.bus.user.<id>`: a user's events and closes, encoded once (the
//!   event frame behind a 9-byte envelope, see [`envelope`]); every node
//!   delivers them to its own `/events` connections of that user.
//! - `<name>.bus.state`: what nodes tell each other ([`Note`], JSON): cache
//!   invalidations, presence, heartbeats. Each node numbers its notes; a
//!   receiver that sees a gap (or a heartbeat ahead of the last note it
//!   got) resynchronises: it drops its caches, checks its live sessions
//!   against the database, and asks every node for a presence snapshot.
//!   A node takes both in through one subscription (`<name>.bus.>`), so in
//!   the order they were sent: an event that follows an invalidation is
//!   delivered after the invalidation is done.
//! - `<name>.node.<node>`: requests to one node (the sessions it holds of
//!   a callee, see `cluster/calls.rs`).
//! - `<name>.call.<id>.home`: requests about one call, answered by the
//!   call's home node (`/answer`, `/hangup` sent to another node).
//! - `<name>.call.<id>.up` and `<name>.call.<id>.down.<node>`: the frames of
//!   call channels on other nodes than the call's home
//!   (`cluster/channels.rs`).
//! - the JetStream key-value bucket `<name>_calls`: each call's state,
//!   so that another node adopts it when its home dies (`cluster/adopt.rs`).
//!
//! A node trusts its caches only while its NATS connection is up and has
//! answered a flush within two heartbeats; otherwise it reads the database
//! directly. A node whose NATS has not answered for the lease
//! (`[cluster] lease_ms`) drops its own clients and refuses requests until
//! it is back; its peers count it dead after `dead_after_ms` without a
//! heartbeat, and its users offline. [`Peers`] is the pure bookkeeping of
//! that; [`Bus`] the connection; `App`'s side is in `cluster/app.rs`.

mod adopt;
mod app;
mod calls;
mod channels;

pub use adopt::{Claim, RANK_STEP, bucket_name, ranked, remove_entry};
pub use calls::call_subject;
pub(crate) use calls::{Answered, CallRequest};
pub use channels::{Uplink, down_subject, up_subject};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use babel_proto::{CallId, ChosenStatus, ServerEvent, UserId};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, LocalHub, Subscription};
use crate::store::SessionId;

/// Cluster settings (`[cluster]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name: the prefix of its NATS subjects, so that several
    /// clusters can share one NATS (default `babel`).
    pub name: String,
    /// Milliseconds between heartbeats (default 1000).
    pub heartbeat_ms: u64,
    /// A node whose NATS has not answered for this long drops its own
    /// clients (default 4000). Keep it below `dead_after_ms`.
    pub lease_ms: u64,
    /// A node not heard from for this long is dead: its users show offline
    /// (default 6000).
    pub dead_after_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { name: "babel".into(), heartbeat_ms: 1000, lease_ms: 4000, dead_after_ms: 6000 }
    }
}

/// A node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS did not answer.
    #[error("cannot reach NATS at {url}: {detail}")]
    Connect {
        /// The address, without credentials.
        url: String,
        /// Why.
        detail: String,
    },
}

/// A NATS address as logs may show it: without `user:password@`.
pub fn describe_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &url[..scheme + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A name made safe as one NATS subject token.
pub fn token(name: &str) -> String {
    let t: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if t.is_empty() { "_".into() } else { t }
}

/// The default node name: the host name and the port.
pub fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "babel".into());
    token(&format!("{host}-{port}"))
}

/// The subject of a user's events.
pub fn user_subject(cluster: &str, user: UserId) -> String {
    format!("{cluster}.bus.user.{}", user.0)
}

/// The subject nodes tell each other their state on.
pub fn state_subject(cluster: &str) -> String {
    format!("{cluster}.bus.state")
}

/// The subject of requests to one node (for call control at a call's home).
pub fn node_subject(cluster: &str, node: &str) -> String {
    format!("{cluster}.node.{}", token(node))
}

/// Envelope kinds on a user subject.
const TO_USER: u8 = 0;
const TO_SESSION: u8 = 1;
const CLOSE_SESSION: u8 = 2;
const CLOSE_USER: u8 = 3;

/// What travels on a user subject: a kind byte, a session id (big-endian
/// i64, 0 when none) and the event frame as the client gets it.
pub fn envelope(kind: u8, session: i64, frame: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(9 + frame.len());
    b.put_u8(kind);
    b.put_i64(session);
    b.put_slice(frame);
    b.freeze()
}

/// What an envelope asks of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivery {
    Event(Option<SessionId>, Bytes),
    Close(Option<SessionId>),
}

fn open_envelope(payload: &Bytes) -> Option<Delivery> {
    let kind = *payload.first()?;
    let session = SessionId(i64::from_be_bytes(payload.get(1..9)?.try_into().ok()?));
    let frame = payload.slice(9..);
    match kind {
        TO_USER => Some(Delivery::Event(None, frame)),
        TO_SESSION => Some(Delivery::Event(Some(session), frame)),
        CLOSE_SESSION => Some(Delivery::Close(Some(session))),
        CLOSE_USER => Some(Delivery::Close(None)),
        _ => None,
    }
}

/// A user's presence on one node: they have a live session there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Here {
    /// In an answered call on that node.
    pub busy: bool,
    /// The status they chose.
    #[serde(with = "chosen_text")]
    pub chosen: ChosenStatus,
}

mod chosen_text {
    use babel_proto::ChosenStatus;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(c: &ChosenStatus, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChosenStatus, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| D::Error::custom("unknown status"))
    }
}

/// One node's word to the others on the state subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Who says it.
    pub node: String,
    /// Which run of that node (random per start).
    pub inc: u64,
    /// The number of the node's last sequenced note (this one, if it is).
    pub seq: u64,
    /// What.
    #[serde(flatten)]
    pub body: Body,
}

/// What a [`Note`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Body {
    /// Alive; `seq` is the last sequenced note sent.
    Heartbeat,
    /// Shutting down: its users are no longer here.
    Leaving,
    /// Asks every node for a [`Body::Snapshot`].
    SyncRequest,
    /// A user's presence here changed (`None`: no longer here).
    Presence {
        /// The user.
        user: i64,
        /// Their presence here.
        here: Option<Here>,
    },
    /// Every user present here.
    Snapshot {
        /// Users and their presence.
        users: Vec<(i64, Here)>,
    },
    /// A session was ended (logout, password change, expiry): its token is
    /// refused, its connections close.
    SessionEnded {
        /// The owner.
        user: i64,
        /// The session.
        session: i64,
    },
    /// Every connection of a session on the sending node is gone: the
    /// calls it is in start its grace (`routes/calls.rs`).
    SessionGone {
        /// The owner.
        user: i64,
        /// The session.
        session: i64,
    },
    /// An account was deleted.
    UserDeleted {
        /// The user.
        user: i64,
    },
    /// These users' contact lists changed.
    ContactsChanged {
        /// The users.
        users: Vec<i64>,
    },
    /// A user's public details changed (every list showing them is stale).
    UserChanged {
        /// The user.
        user: i64,
    },
}

impl Body {
    /// Whether the note carries state, and so a sequence number of its own.
    pub fn sequenced(&self) -> bool {
        // A lost `SessionGone` leaves no cache stale: not numbered.
        !matches!(self, Body::Heartbeat | Body::Leaving | Body::SyncRequest | Body::SessionGone { .. })
    }
}

#[derive(Debug)]
struct Peer {
    inc: u64,
    seq: u64,
    seen: Instant,
    users: HashMap<UserId, Here>,
}

/// What a note changed in [`Peers`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Notes from this node were missed: resynchronise.
    pub gap: bool,
    /// A node (or a new run of one) not known until now: ask it for a
    /// snapshot unless this is one.
    pub new_peer: bool,
    /// Users whose presence elsewhere may have changed.
    pub changed: Vec<UserId>,
    /// The node was known as another run, now gone (it restarted): the
    /// run that is gone.
    pub replaced: Option<u64>,
}

/// The other nodes: when each was last heard, its note numbering, its
/// users. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Peers {
    map: HashMap<String, Peer>,
}

impl Peers {
    /// Takes in a note from another node.
    pub fn observe(&mut self, note: &Note, now: Instant) -> Observed {
        let mut out = Observed::default();
        if note.body == Body::Leaving {
            if let Some(p) = self.map.remove(&note.node) {
                out.changed.extend(p.users.into_keys());
            }
            return out;
        }
        let known = self.map.get(&note.node).is_some_and(|p| p.inc == note.inc);
        if !known {
            if let Some(old) = self.map.remove(&note.node) {
                out.changed.extend(old.users.into_keys());
                out.replaced = Some(old.inc);
            }
            out.new_peer = true;
            self.map.insert(note.node.clone(), Peer { inc: note.inc, seq: note.seq, seen: now, users: HashMap::new() });
        }
        let Some(peer) = self.map.get_mut(&note.node) else { return out };
        if known {
            let expected = if note.body.sequenced() { peer.seq + 1 } else { peer.seq };
            out.gap = note.seq != expected;
            peer.seq = note.seq;
        }
        peer.seen = now;
        match &note.body {
            Body::Presence { user, here } => {
                let user = UserId(*user);
                match here {
                    Some(h) => peer.users.insert(user, *h),
                    None => peer.users.remove(&user),
                };
                out.changed.push(user);
            }
            Body::Snapshot { users } => {
                let fresh: HashMap<UserId, Here> = users.iter().map(|(u, h)| (UserId(*u), *h)).collect();
                let old = std::mem::replace(&mut peer.users, fresh);
                out.changed.extend(old.into_keys());
                out.changed.extend(peer.users.keys().copied());
                out.changed.sort();
                out.changed.dedup();
            }
            _ => {}
        }
        out
    }

    /// Forgets the nodes not heard from for `dead_after`; answers their
    /// names, runs and the users they held.
    pub fn expire(&mut self, now: Instant, dead_after: Duration) -> Vec<(String, u64, Vec<UserId>)> {
        let dead: Vec<String> = self
            .map
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.seen) > dead_after)
            .map(|(n, _)| n.clone())
            .collect();
        dead.into_iter()
            .filter_map(|n| self.map.remove(&n).map(|p| (n, p.inc, p.users.into_keys().collect())))
            .collect()
    }

    /// The run of a node known alive.
    pub fn run_of(&self, node: &str) -> Option<u64> {
        self.map.get(node).map(|p| p.inc)
    }

    /// Whether the user has a live session on another node.
    pub fn online(&self, user: UserId) -> bool {
        self.map.values().any(|p| p.users.contains_key(&user))
    }

    /// Whether the user is in an answered call on another node.
    pub fn busy(&self, user: UserId) -> bool {
        self.map.values().any(|p| p.users.get(&user).is_some_and(|h| h.busy))
    }

    /// The nodes that hold a live session of the user.
    pub fn holders(&self, user: UserId) -> Vec<String> {
        let mut n: Vec<String> =
            self.map.iter().filter(|(_, p)| p.users.contains_key(&user)).map(|(n, _)| n.clone()).collect();
        n.sort();
        n
    }

    /// The nodes known alive.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.map.keys().cloned().collect();
        n.sort();
        n
    }
}

/// A message for NATS: subject, reply subject, payload.
type Outgoing = (String, Option<String>, Bytes);

/// What the run loop takes over once.
struct Parts {
    inbox: async_nats::Subscriber,
    out: mpsc::Receiver<Outgoing>,
    events: mpsc::UnboundedReceiver<async_nats::Event>,
    /// Requests to this node.
    node: async_nats::Subscriber,
    /// Requests about the calls homed here.
    requests: mpsc::UnboundedReceiver<(CallId, async_nats::Message)>,
}

/// Messages waiting for the NATS connection before new ones are dropped
/// (NATS itself buffers more; a dropped note shows as a gap elsewhere).
const BACKLOG: usize = 65_536;

/// A node's connection to its cluster, and its event hub.
pub struct Bus {
    client: async_nats::Client,
    prefix: String,
    node: String,
    inc: u64,
    cfg: ClusterConfig,
    local: LocalHub,
    out: mpsc::Sender<Outgoing>,
    /// The last sequenced note's number; held while one is queued, so notes
    /// leave in their numbers' order.
    seq: Mutex<u64>,
    peers: Mutex<Peers>,
    /// The presence this node last told of each of its users.
    told: Mutex<HashMap<UserId, Here>>,
    coherent: AtomicBool,
    fenced: AtomicBool,
    last_ok: Mutex<Instant>,
    parts: Mutex<Option<Parts>>,
    /// The calls homed here that answer on their subject.
    homed: Mutex<HashMap<CallId, CancellationToken>>,
    requests: mpsc::UnboundedSender<(CallId, async_nats::Message)>,
    /// Call channels across nodes.
    channels: channels::Channels,
    /// The calls' state in JetStream, for adoption (`cluster/adopt.rs`).
    calls_kv: adopt::CallStore,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("cluster", &self.prefix).field("node", &self.node).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    /// Connects to NATS and subscribes to the cluster's subjects.
    pub async fn connect(url: &str, node: &str, cfg: &ClusterConfig) -> Result<Arc<Bus>, BusError> {
        let fail = |detail: String| BusError::Connect { url: describe_url(url), detail };
        let (etx, events) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .no_echo()
            .name(node)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)))
            .event_callback(move |e| {
                let etx = etx.clone();
                async move {
                    let _ = etx.send(e);
                }
            })
            .connect(url)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let prefix = token(&cfg.name);
        let inbox = client.subscribe(format!("{prefix}.bus.>")).await.map_err(|e| fail(e.to_string()))?;
        let node_inbox = client.subscribe(node_subject(&prefix, node)).await.map_err(|e| fail(e.to_string()))?;
        client.flush().await.map_err(|e| fail(e.to_string()))?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let mut inc = [0u8; 8];
        getrandom::fill(&mut inc).map_err(|e| fail(e.to_string()))?;
        let (out, rx) = mpsc::channel(BACKLOG);
        tracing::info!(url = %describe_url(url), node, cluster = %prefix, "joined the cluster");
        let calls_kv = adopt::CallStore::new(client.clone(), &prefix);
        Ok(Arc::new(Bus {
            client,
            prefix,
            node: token(node),
            inc: u64::from_le_bytes(inc),
            cfg: cfg.clone(),
            local: LocalHub::default(),
            out,
            seq: Mutex::new(0),
            peers: Mutex::default(),
            told: Mutex::default(),
            coherent: AtomicBool::new(true),
            fenced: AtomicBool::new(false),
            last_ok: Mutex::new(Instant::now()),
            parts: Mutex::new(Some(Parts { inbox, out: rx, events, node: node_inbox, requests: requests_rx })),
            homed: Mutex::default(),
            requests,
            channels: channels::Channels::default(),
            calls_kv,
        }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The other nodes it hears.
    pub fn peers(&self) -> Vec<String> {
        lock(&self.peers).names()
    }

    /// This run of the node (random per start; the `run` of the calls it
    /// stores).
    pub fn run(&self) -> u64 {
        self.inc
    }

    /// The run of another node heard from, if it is alive.
    pub fn peer_run(&self, node: &str) -> Option<u64> {
        lock(&self.peers).run_of(node)
    }

    fn publish(&self, subject: String, payload: Bytes) {
        self.publish_with_reply(subject, None, payload);
    }

    pub(crate) fn publish_with_reply(&self, subject: String, reply: Option<String>, payload: Bytes) {
        if let Err(e) = self.out.try_send((subject, reply, payload)) {
            tracing::warn!(error = %e, "cluster bus backlog full; a message is dropped");
        }
    }

    /// Sends a note to the other nodes.
    pub(crate) fn note(&self, body: Body) {
        self.note_with_reply(body, None);
    }

    /// Sends a note and waits (at most `within`) until every node known
    /// alive has taken it in: for revocations, so that a token refused on
    /// this node is refused on the others by the time the request that
    /// revoked it is answered.
    pub(crate) async fn note_and_wait(&self, body: Body, within: Duration) {
        let expected = lock(&self.peers).names().len();
        if expected == 0 {
            return self.note(body);
        }
        let inbox = self.client.new_inbox();
        let mut acks = match self.client.subscribe(inbox.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::debug!(error = %e, "cannot wait for the other nodes");
                return self.note(body);
            }
        };
        // The subscription is ahead of the note on the connection.
        self.note_with_reply(body, Some(inbox));
        let all = async {
            for _ in 0..expected {
                if futures::StreamExt::next(&mut acks).await.is_none() {
                    return;
                }
            }
        };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::debug!("not every node confirmed a revocation in time");
        }
    }

    fn note_with_reply(&self, body: Body, reply: Option<String>) {
        let mut seq = lock(&self.seq);
        if body.sequenced() {
            *seq += 1;
        }
        let note = Note { node: self.node.clone(), inc: self.inc, seq: *seq, body };
        match serde_json::to_vec(&note) {
            Ok(bytes) => self.publish_with_reply(state_subject(&self.prefix), reply, bytes.into()),
            Err(e) => tracing::error!(error = %e, "cannot encode a cluster note"),
        }
    }

    /// Tells the other nodes the user's presence here, if it changed since
    /// last told.
    pub(crate) fn announce(&self, user: UserId, here: Option<Here>) {
        let mut told = lock(&self.told);
        if told.get(&user).copied() == here {
            return;
        }
        match here {
            Some(h) => told.insert(user, h),
            None => told.remove(&user),
        };
        self.note(Body::Presence { user: user.0, here });
    }

    /// Tells the other nodes every user present here.
    pub(crate) fn snapshot(&self) {
        let told = lock(&self.told);
        let mut users: Vec<(i64, Here)> = told.iter().map(|(u, h)| (u.0, *h)).collect();
        users.sort_by_key(|(u, _)| *u);
        self.note(Body::Snapshot { users });
    }

    /// Whether the user has a live session on another node.
    pub(crate) fn remote_online(&self, user: UserId) -> bool {
        lock(&self.peers).online(user)
    }

    /// Whether the user is in an answered call on another node.
    pub(crate) fn remote_busy(&self, user: UserId) -> bool {
        lock(&self.peers).busy(user)
    }

    /// Whether the caches can be trusted: the connection is up, answered
    /// lately, and nothing was missed since the last resynchronisation.
    pub(crate) fn coherent(&self) -> bool {
        self.coherent.load(Ordering::Acquire)
            && !self.fenced()
            && lock(&self.last_ok).elapsed() < Duration::from_millis(self.cfg.heartbeat_ms.max(1) * 2)
    }

    /// Whether this node has cut itself off (its NATS lease ran out).
    pub(crate) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// A user subject's message, delivered to this node's connections.
    fn deliver(&self, user: &str, msg: &async_nats::Message) {
        let Ok(user) = user.parse::<i64>().map(UserId) else { return };
        match open_envelope(&msg.payload) {
            Some(Delivery::Event(session, frame)) => self.local.send_frame(user, session, frame),
            Some(Delivery::Close(session)) => self.local.close(user, session),
            None => tracing::debug!(subject = %msg.subject, "malformed message on a user subject"),
        }
    }

    fn send_event(&self, user: UserId, session: Option<SessionId>, event: &ServerEvent) {
        let frame = event.to_frame().to_bytes();
        let kind = if session.is_some() { TO_SESSION } else { TO_USER };
        let env = envelope(kind, session.map_or(0, |s| s.0), &frame);
        self.local.send_frame(user, session, frame);
        self.publish(user_subject(&self.prefix, user), env);
    }
}

impl Hub for Bus {
    fn subscribe(&self, user: UserId, session: SessionId) -> Subscription {
        self.local.subscribe(user, session)
    }

    fn to_user(&self, user: UserId, event: &ServerEvent) {
        self.send_event(user, None, event);
    }

    fn to_session(&self, user: UserId, session: SessionId, event: &ServerEvent) {
        self.send_event(user, Some(session), event);
    }

    fn close(&self, user: UserId, session: Option<SessionId>) {
        self.local.close(user, session);
        let kind = if session.is_some() { CLOSE_SESSION } else { CLOSE_USER };
        self.publish(user_subject(&self.prefix, user), envelope(kind, session.map_or(0, |s| s.0), &[]));
    }

    fn to_user_here(&self, user: UserId, event: &ServerEvent) {
        self.local.to_user(user, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(node: &str, inc: u64, seq: u64, body: Body) -> Note {
        Note { node: node.into(), inc, seq, body }
    }

    const AVAILABLE: Here = Here { busy: false, chosen: ChosenStatus::Available };

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let e = envelope(TO_SESSION, 7, b"frame");
        assert_eq!(open_envelope(&e), Some(Delivery::Event(Some(SessionId(7)), Bytes::from_static(b"frame"))));
        let e = envelope(CLOSE_USER, 0, &[]);
        assert_eq!(open_envelope(&e), Some(Delivery::Close(None)));
        assert_eq!(open_envelope(&Bytes::from_static(b"\x00short")), None);
        assert_eq!(open_envelope(&envelope(9, 0, b"x")), None);
        assert_eq!(open_envelope(&Bytes::new()), None);
    }

    #[test]
    fn notes_are_json_with_a_tag() {
        let n = note("a", 1, 2, Body::Presence { user: 5, here: Some(AVAILABLE) });
        let text = serde_json::to_string(&n).unwrap();
        assert_eq!(
            text,
            r#"{"node":"a","inc":1,"seq":2,"t":"presence","user":5,"here":{"busy":false,"chosen":"available"}}"#
        );
        assert_eq!(serde_json::from_str::<Note>(&text).unwrap(), n);
        assert!(serde_json::from_str::<Note>(r#"{"node":"a","inc":1,"seq":2,"t":"nonsense"}"#).is_err());
    }

    #[test]
    fn presence_of_other_nodes_adds_up() {
        let (mut p, t) = (Peers::default(), Instant::now());
        let o = p.observe(&note("a", 1, 1, Body::Presence { user: 5, here: Some(AVAILABLE) }), t);
        assert_eq!(o, Observed { gap: false, new_peer: true, changed: vec![UserId(5)], replaced: None });
        let busy = Here { busy: true, ..AVAILABLE };
        let o = p.observe(&note("b", 9, 1, Body::Presence { user: 5, here: Some(busy) }), t);
        assert!(o.new_peer && !o.gap);
        assert!(p.online(UserId(5)) && p.busy(UserId(5)));
        p.observe(&note("b", 9, 2, Body::Presence { user: 5, here: None }), t);
        assert!(p.online(UserId(5)) && !p.busy(UserId(5)), "still on a");
        let o = p.observe(&note("a", 1, 1, Body::Leaving), t);
        assert_eq!(o.changed, vec![UserId(5)]);
        assert!(!p.online(UserId(5)));
    }

    #[test]
    fn a_missed_note_or_a_heartbeat_ahead_is_a_gap() {
        let (mut p, t) = (Peers::default(), Instant::now());
        p.observe(&note("a", 1, 3, Body::ContactsChanged { users: vec![1] }), t);
        assert!(!p.observe(&note("a", 1, 3, Body::Heartbeat), t).gap);
        assert!(!p.observe(&note("a", 1, 4, Body::UserChanged { user: 1 }), t).gap);
        assert!(p.observe(&note("a", 1, 6, Body::UserChanged { user: 1 }), t).gap, "5 was missed");
        assert!(!p.observe(&note("a", 1, 6, Body::Heartbeat), t).gap);
        assert!(p.observe(&note("a", 1, 7, Body::Heartbeat), t).gap, "note 7 was missed");
        // A restarted node numbers afresh, and what it held is gone.
        p.observe(&note("a", 1, 8, Body::Presence { user: 2, here: Some(AVAILABLE) }), t);
        let o = p.observe(&note("a", 2, 1, Body::Heartbeat), t);
        assert_eq!(o, Observed { gap: false, new_peer: true, changed: vec![UserId(2)], replaced: Some(1) });
        assert!(!p.online(UserId(2)));
    }

    #[test]
    fn snapshots_replace_and_silent_nodes_die() {
        let (mut p, t) = (Peers::default(), Instant::now());
        p.observe(&note("a", 1, 1, Body::Presence { user: 1, here: Some(AVAILABLE) }), t);
        let o = p.observe(&note("a", 1, 2, Body::Snapshot { users: vec![(2, AVAILABLE)] }), t);
        assert_eq!(o.changed, vec![UserId(1), UserId(2)]);
        assert!(!p.online(UserId(1)) && p.online(UserId(2)));
        p.observe(&note("b", 1, 0, Body::Heartbeat), t + Duration::from_secs(5));
        let dead = p.expire(t + Duration::from_secs(7), Duration::from_secs(6));
        assert_eq!(dead, vec![("a".to_owned(), 1, vec![UserId(2)])]);
        assert_eq!(p.names(), vec!["b".to_owned()]);
        assert!(!p.online(UserId(2)));
    }

    #[test]
    fn names_and_addresses_for_logs() {
        assert_eq!(token("host.example:7447"), "host_example_7447");
        assert_eq!(token(""), "_");
        assert_eq!(describe_url("nats://user:secret@127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(describe_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(node_subject("babel", "n.1"), "babel.node.n_1");
    }
}
