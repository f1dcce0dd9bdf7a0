//! The services' side of the cluster: what a node does with its peers'
//! notes, its own presence as the others are told it, resynchronisation
//! and fencing. The bus itself is in `cluster/mod.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use babel_proto::{CallId, EndReason, UserId};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Body, Bus, Here, Note, lock, state_subject};
use crate::app::App;
use crate::calls::machine::Leg;
use crate::hub::Hub;
use crate::store::SessionId;

impl App {
    /// The user's presence on this node, as the others are told it.
    fn here(&self, user: UserId) -> Option<Here> {
        self.presence.is_online(user).then(|| Here { busy: self.calls.is_busy(user), chosen: self.statuses.get(user) })
    }

    /// Tells the other nodes the user's presence here if it changed.
    pub(crate) fn announce(&self, user: UserId) {
        if let Some(bus) = &self.bus {
            bus.announce(user, self.here(user));
        }
    }

    /// Whether the user has a live session on any node.
    pub(crate) fn online_anywhere(&self, user: UserId) -> bool {
        self.presence.is_online(user) || self.bus.as_ref().is_some_and(|b| b.remote_online(user))
    }

    /// Whether the user is in an answered call on any node.
    pub(crate) fn busy_anywhere(&self, user: UserId) -> bool {
        self.calls.is_busy(user) || self.bus.as_ref().is_some_and(|b| b.remote_busy(user))
    }

    /// Whether the caches may answer: always on a node alone; in a cluster
    /// only while nothing from the others can have been missed.
    pub(crate) fn caches_trusted(&self) -> bool {
        self.bus.as_ref().is_none_or(|b| b.coherent())
    }

    /// Whether this node cut itself off from its clients (NATS lost past
    /// the lease).
    pub(crate) fn fenced(&self) -> bool {
        self.bus.as_ref().is_some_and(|b| b.fenced())
    }

    /// Tells the other nodes about a change to durable state, after it is
    /// committed.
    pub(crate) fn tell_cluster(&self, body: Body) {
        if let Some(bus) = &self.bus {
            bus.note(body);
        }
    }

    /// Tells the other nodes of a revocation (committed already) and waits,
    /// within the promise of 100 ms, until they have taken it in.
    pub(crate) async fn tell_cluster_and_wait(&self, body: Body) {
        if let Some(bus) = &self.bus {
            bus.note_and_wait(body, Duration::from_millis(100)).await;
        }
    }

    /// A session ended on another node: its token is refused here too and
    /// its connections here close.
    async fn session_ended_elsewhere(&self, user: UserId, session: SessionId) {
        self.sessions.invalidate_where(|r| r.id == session);
        self.presence.close_session(user, session);
        self.presence.end_session(user, session);
        self.hub_here_close(user, Some(session));
        let fx = self.calls.leave_all(Leg { user, session }, EndReason::Logout);
        self.apply(fx).await;
        self.refresh_status(user).await;
    }

    /// An account was deleted on another node.
    async fn user_deleted_elsewhere(&self, user: UserId) {
        let live = self.presence.sessions_of(user);
        self.sessions.invalidate_where(|r| r.user == user);
        self.presence.close_user(user);
        self.presence.end_user(user);
        self.hub_here_close(user, None);
        for session in live {
            let fx = self.calls.leave_all(Leg { user, session }, EndReason::Deleted);
            self.apply(fx).await;
        }
        self.refresh_status(user).await;
        self.statuses.forget(user);
    }

    fn hub_here_close(&self, user: UserId, session: Option<SessionId>) {
        if let Some(bus) = &self.bus {
            bus.local.close(user, session);
        } else {
            self.hub.close(user, session);
        }
    }

    /// A node left or died: its users' sessions in calls homed here start
    /// their grace (they may come back through another node).
    async fn node_gone(&self, users: &[UserId]) {
        for user in users {
            for leg in self.calls.member_legs_of(*user) {
                self.connections_gone_elsewhere(leg).await;
            }
        }
    }

    /// Takes in one note from another node.
    async fn on_note(self: &Arc<Self>, bus: &Bus, note: Note) {
        if note.node == bus.node {
            if note.inc != bus.inc {
                tracing::warn!(node = %note.node, "another node uses this node's name; names must be unique");
            }
            return;
        }
        let observed = lock(&bus.peers).observe(&note, Instant::now());
        if observed.new_peer {
            tracing::info!(node = %note.node, "a node joined");
        }
        if let Some(old) = observed.replaced {
            // A restart: its earlier run is gone as if it died (the new
            // run takes back that run's calls itself, `resume_own_calls`;
            // this node adopts its share if that does not happen).
            tracing::info!(node = %note.node, "a node restarted; its earlier run is gone");
            bus.home_node_gone(&note.node);
            if !bus.fenced() {
                self.adopt_calls_of(note.node.clone(), old);
            }
            self.node_gone(&observed.changed).await;
        }
        if observed.gap {
            tracing::warn!(node = %note.node, "missed notes from a node; resynchronising");
            self.resync().await;
        } else if observed.new_peer && !matches!(note.body, Body::Snapshot { .. }) {
            bus.note(Body::SyncRequest);
        }
        match note.body {
            Body::SyncRequest => bus.snapshot(),
            Body::SessionEnded { user, session } => {
                self.session_ended_elsewhere(UserId(user), SessionId(session)).await
            }
            Body::UserDeleted { user } => self.user_deleted_elsewhere(UserId(user)).await,
            Body::SessionGone { user, session } => {
                self.connections_gone_elsewhere(Leg { user: UserId(user), session: SessionId(session) }).await
            }
            Body::ContactsChanged { users } => {
                let users: Vec<UserId> = users.into_iter().map(UserId).collect();
                self.contacts.invalidate(&users);
            }
            Body::UserChanged { user } => {
                self.contacts.invalidate_where(|list| list.iter().any(|(u, _)| u.id.0 == user));
            }
            Body::Presence { user, here: Some(h) } => {
                self.statuses.set(UserId(user), h.chosen);
            }
            Body::Snapshot { ref users } => {
                for (user, h) in users {
                    self.statuses.set(UserId(*user), h.chosen);
                }
            }
            Body::Leaving => {
                // It stored its calls' last state before it said so: the
                // survivor ranked first for each adopts it at once (in the
                // background, not behind the grace of its users below).
                bus.home_node_gone(&note.node);
                if !bus.fenced() {
                    self.adopt_calls_of(note.node.clone(), note.inc);
                }
                self.node_gone(&observed.changed).await;
            }
            Body::Presence { here: None, .. } | Body::Heartbeat => {}
        }
        for user in observed.changed {
            self.refresh_status(user).await;
        }
    }

    /// Catches up after something may have been missed (a gap in a node's
    /// notes, a lost connection): the caches go, every session live here is
    /// checked against the database, and every node is asked for its
    /// presence again. Until this is done the caches are bypassed.
    async fn resync(&self) {
        let Some(bus) = &self.bus else { return };
        bus.coherent.store(false, Ordering::Release);
        self.sessions.invalidate_where(|_| true);
        self.contacts.invalidate_where(|_| true);
        for user in self.presence.users() {
            let live = match self.blocking(move |s| s.user_sessions(user)).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot check sessions while resynchronising; will retry");
                    return;
                }
            };
            for session in self.presence.sessions_of(user) {
                if !live.iter().any(|r| r.id == session) {
                    self.session_ended_elsewhere(user, session).await;
                }
            }
        }
        bus.note(Body::SyncRequest);
        bus.snapshot();
        bus.coherent.store(true, Ordering::Release);
        tracing::info!("resynchronised with the cluster");
    }

    /// The lease ran out: this node can no longer know what the others
    /// decided, so it drops its clients (they move to another node) and
    /// refuses requests until NATS answers again.
    async fn fence(&self, bus: &Bus) {
        if bus.fenced.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(node = %bus.node, "cut off from the cluster past the lease; dropping every client");
        for user in self.presence.users() {
            let sessions = self.presence.sessions_of(user);
            self.presence.close_user(user);
            for session in sessions {
                let fx = self.calls.leave_all(Leg { user, session }, EndReason::Disconnected);
                self.apply(fx).await;
            }
        }
        bus.local.close_all();
    }

    /// Forgets the nodes not heard from, and fences or unfences this one.
    async fn check_cluster(self: &Arc<Self>, bus: &Bus) {
        let dead_after = Duration::from_millis(bus.cfg.dead_after_ms);
        let dead = lock(&bus.peers).expire(Instant::now(), dead_after);
        for (node, run, users) in dead {
            tracing::warn!(%node, users = users.len(), "a node stopped answering; its users are offline");
            // Channels here to calls homed there close first (their
            // clients `/connect_call` again, reaching whoever adopts the
            // call); the dead node's calls are adopted in the background
            // (an adopter starts the grace of every member not connected
            // to it, `cluster/adopt.rs`); the dead node's users in calls
            // homed here start their grace.
            bus.home_node_gone(&node);
            if !bus.fenced() {
                self.adopt_calls_of(node.clone(), run);
            }
            self.node_gone(&users).await;
            for user in users {
                self.refresh_status(user).await;
            }
        }
        let silent = lock(&bus.last_ok).elapsed();
        let lease = Duration::from_millis(bus.cfg.lease_ms);
        if silent > lease {
            self.fence(bus).await;
        } else if bus.fenced() && silent < Duration::from_millis(bus.cfg.heartbeat_ms.max(1) * 2) {
            self.resync().await;
            if bus.coherent.load(Ordering::Acquire) {
                bus.fenced.store(false, Ordering::Release);
                tracing::info!("back in the cluster; serving again");
            }
        }
    }

    /// Leaving cleanly: stops answering for the calls homed here and stores
    /// each one's last state, so that the `Leaving` note sent next hands
    /// them over (the survivor ranked first for each adopts it at once).
    /// Nothing here writes them again (the background work has stopped).
    async fn hand_over(&self, bus: &Bus) {
        let homed: Vec<CallId> = {
            let mut homed = lock(&bus.homed);
            homed
                .drain()
                .map(|(call, stop)| {
                    stop.cancel();
                    call
                })
                .collect()
        };
        if homed.is_empty() || bus.fenced() {
            return;
        }
        self.store_calls(&homed).await;
        tracing::info!(calls = homed.len(), "leaving: the calls homed here are handed over");
    }

    /// Runs the node's side of the bus until `cancel`: delivers other
    /// nodes' events, takes in their notes, heartbeats, watches the lease.
    pub(crate) fn spawn_bus(self: &Arc<Self>, cancel: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let bus = Arc::clone(self.bus.as_ref()?);
        let parts = lock(&bus.parts).take()?;
        let app = Arc::clone(self);
        Some(tokio::spawn(async move {
            let super::Parts { mut inbox, mut out, mut events, node: mut node_inbox, mut requests } = parts;
            let (user_prefix, state) = (format!("{}.bus.user.", bus.prefix), state_subject(&bus.prefix));
            let client = bus.client.clone();
            let publisher = {
                let (client, cancel) = (client.clone(), cancel.clone());
                tokio::spawn(async move {
                    loop {
                        let next = tokio::select! {
                            m = out.recv() => m,
                            _ = cancel.cancelled() => None,
                        };
                        let Some((subject, reply, payload)) = next else { return };
                        let sent = match reply {
                            Some(reply) => client.publish_with_reply(subject, reply, payload).await,
                            None => client.publish(subject, payload).await,
                        };
                        if let Err(e) = sent {
                            tracing::warn!(error = %e, "cannot publish on the cluster bus");
                        }
                    }
                })
            };
            let heartbeat = Duration::from_millis(bus.cfg.heartbeat_ms.max(1));
            let beats = {
                let (bus, cancel) = (Arc::clone(&bus), cancel.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(heartbeat);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = cancel.cancelled() => return,
                        }
                        bus.note(Body::Heartbeat);
                        if let Ok(Ok(())) = tokio::time::timeout(heartbeat, bus.client.flush()).await {
                            *lock(&bus.last_ok) = Instant::now();
                        }
                    }
                })
            };
            // Requests to this node and its calls are served beside the
            // notes, never behind one that waits for the database.
            let serving = {
                let (app, cancel) = (Arc::clone(&app), cancel.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            Some(msg) = node_inbox.next() => app.serve_node_request(msg),
                            Some((call, msg)) = requests.recv() => {
                                tokio::spawn(Arc::clone(&app).serve_call_request(call, msg));
                            }
                            _ = cancel.cancelled() => return,
                            else => return,
                        }
                    }
                })
            };
            let mut check = tokio::time::interval(heartbeat / 4);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Once every live peer has been heard: calls of deaths nobody saw.
            let mut sweep = Box::pin(tokio::time::sleep(Duration::from_millis(bus.cfg.dead_after_ms)));
            let mut swept = false;
            bus.note(Body::SyncRequest);
            // Calls this node's earlier run (same name) left homed here.
            app.resume_own_calls();
            loop {
                tokio::select! {
                    Some(msg) = inbox.next() => {
                        if let Some(user) = msg.subject.strip_prefix(user_prefix.as_str()) {
                            bus.deliver(user, &msg);
                        } else if *msg.subject == *state {
                            match serde_json::from_slice::<Note>(&msg.payload) {
                                Ok(note) => {
                                    app.on_note(&bus, note).await;
                                    // Taken in: the sender may be waiting.
                                    if let Some(reply) = &msg.reply {
                                        bus.publish_with_reply(reply.to_string(), None, Bytes::new());
                                    }
                                }
                                Err(e) => tracing::debug!(error = %e, "malformed cluster note"),
                            }
                        }
                    }
                    Some(event) = events.recv() => match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("lost the NATS connection; reading the database until resynchronised");
                            bus.coherent.store(false, Ordering::Release);
                        }
                        async_nats::Event::Connected => {
                            if !bus.coherent.load(Ordering::Acquire) {
                                app.resync().await;
                            }
                        }
                        other => tracing::debug!(event = %other, "NATS"),
                    },
                    _ = check.tick() => app.check_cluster(&bus).await,
                    _ = &mut sweep, if !swept => {
                        swept = true;
                        if !bus.fenced() {
                            app.sweep_orphans();
                        }
                    }
                    _ = cancel.cancelled() => break,
                }
            }
            beats.abort();
            serving.abort();
            app.hand_over(&bus).await;
            publisher.abort();
            // Others forget this node's users at once instead of waiting,
            // and adopt the calls homed here.
            let leaving = Note { node: bus.node.clone(), inc: bus.inc, seq: *lock(&bus.seq), body: Body::Leaving };
            if let Ok(bytes) = serde_json::to_vec(&leaving) {
                let _ = client.publish(state_subject(&bus.prefix), bytes.into()).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
            }
        }))
    }
}
