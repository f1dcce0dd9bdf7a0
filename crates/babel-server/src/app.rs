//! The services behind the routes: state shared by every connection, the
//! token check, and the one place that maps service errors to statuses.
//!
//! Route handlers live in [`crate::routes`], one file per route family; this
//! module holds what they share. Nothing here touches a socket: a connection
//! hands in a parsed frame and gets a [`Reply`] back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use babel_proto::{
    CallId, ClientRequest, Credentials, EndReason, Presence, RawRequest, Reply, RequestError, ServerEvent, User, UserId,
};

use crate::auth::{self, PasswordCost};
use crate::cache::EpochCache;
use crate::calls::machine::{CallLimits, Leg};
use crate::calls::{Calls, Effects};
use crate::channel::{ChannelQueue, Room};
use crate::config::Config;
use crate::hub::{Hub, Subscription};
use crate::presence::{PresenceGuard, PresenceRegistry};
use crate::relay::Relay;
use crate::store::{Relation, SessionId, SessionRecord, Store, StoreError, StoreResult, Timestamp, TokenHash};

/// Why a request failed, in service terms. [`ServiceError::into_reply`] is
/// the only mapping to statuses.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Wrong credentials, unknown or expired token (401).
    #[error("unauthorized")]
    Unauthorized,
    /// Refused, with a reason for a person (403).
    #[error("refused: {0}")]
    Refused(String),
    /// Malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The server could not do it now (storage failure, overload). Answered
    /// as 403 with a retry hint; the details go to the log only.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ServiceError {
    /// The reply a client gets for this error.
    pub fn into_reply(self) -> Reply {
        match self {
            ServiceError::Unauthorized => Reply::Unauthorized,
            ServiceError::Refused(r) => Reply::Refused(r),
            ServiceError::BadRequest(r) => Reply::BadRequest(r),
            ServiceError::Unavailable(detail) => {
                tracing::error!(%detail, "request failed inside the server");
                Reply::Refused("the server could not complete this request right now; please try again".into())
            }
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

impl From<RequestError> for ServiceError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::UnknownRoute(_) => ServiceError::BadRequest(e.to_string()),
            RequestError::Malformed(m) => ServiceError::BadRequest(m),
            RequestError::BadCredentials => ServiceError::Unauthorized,
        }
    }
}

/// Result of a service call.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// The settings the services need.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// How long an unused session lives.
    pub session_ttl: Duration,
    /// argon2id cost for new hashes.
    pub password_cost: PasswordCost,
    /// How long a call rings unanswered.
    pub ring_timeout: Duration,
    /// Most participants in one call (members and those being rung).
    pub max_call_participants: usize,
    /// How long a participant whose connections are all gone keeps their
    /// place in a call.
    pub call_grace: Duration,
    /// How often event connections get a `/ping`.
    pub ping_interval: Duration,
    /// Abuse limits.
    pub limits: crate::limits::LimitsConfig,
}

impl From<&Config> for AppConfig {
    fn from(c: &Config) -> Self {
        Self {
            session_ttl: c.session_ttl(),
            password_cost: c.password,
            ring_timeout: Duration::from_secs(c.ring_timeout_secs.max(1)),
            max_call_participants: c.max_call_participants.max(2),
            call_grace: Duration::from_millis(c.call_grace_ms),
            ping_interval: Duration::from_secs(c.ping_interval_secs.max(1)),
            limits: c.abuse.clone(),
        }
    }
}

/// Per-connection state the services keep: the peer's IP and the one
/// session this connection speaks for, which keeps its user online while
/// the connection lives (PROTOCOL.md §6).
#[derive(Debug)]
pub struct ConnState {
    ip: IpAddr,
    speaks_for: Option<PresenceGuard>,
    /// The server's address this connection came to (its relay's, for
    /// this client).
    local: Option<IpAddr>,
    /// `None` where limits do not apply (loopback, unless configured).
    budget: Option<crate::limits::RequestBudget>,
    /// Whether it ever proved a session (it then has no time limit).
    authenticated: bool,
}

impl ConnState {
    /// State for a new connection from `ip`, under `limits`.
    pub fn new(ip: IpAddr, limits: &crate::limits::LimitsConfig) -> Self {
        let budget = (limits.limit_loopback || !ip.is_loopback()).then(|| crate::limits::RequestBudget::new(limits));
        Self { ip, local: None, speaks_for: None, budget, authenticated: false }
    }

    /// Whether this connection has proven a session at some point.
    pub fn has_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Records the server address this connection came to.
    pub fn set_local(&mut self, local: Option<IpAddr>) {
        self.local = local;
    }

    /// The relay's address as this client reaches it: the server address
    /// the connection came to (text, no port; empty if unknown).
    pub fn relay_ip(&self) -> String {
        self.local.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// The peer's IP.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Cancelled when the session this connection speaks for is ended for a
    /// reason its connections must hear (`/session_ended`): then it closes.
    pub fn session_closed(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.speaks_for.as_ref().map(|g| g.closed().clone())
    }

    /// Whether the connection speaks for no live session: it never took
    /// one, or the one it took was logged out or deleted since.
    fn is_anonymous(&self, presence: &PresenceRegistry) -> bool {
        self.speaks_for.as_ref().is_none_or(|g| !presence.is_attached(g.user(), g.session()))
    }
}

/// When an authenticated request makes its connection speak for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Always, replacing an earlier session (`/events`, `/connect_call`).
    Always,
    /// Only while the connection is anonymous, so a connection serving
    /// several users' requests keeps speaking for the first.
    IfAnonymous,
}

/// What a connection does after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send the reply and go on in request mode.
    Reply(Reply),
    /// Send 200 and switch to event mode with this stream.
    Events(Subscription),
    /// Send 200 and switch to call-channel mode.
    Channel(ChannelMode),
}

/// A connection's call channel.
#[derive(Debug)]
pub struct ChannelMode {
    /// The call.
    pub call: CallId,
    /// Whose channel.
    pub leg: Leg,
    /// Where its `/send` frames go.
    pub link: ChannelLink,
    /// Frames to write to this channel.
    pub queue: Arc<ChannelQueue>,
}

/// Where a call channel's frames go.
#[derive(Debug)]
pub enum ChannelLink {
    /// The call's room, on this node (its home).
    Room(Arc<Room>),
    /// The call's home on another node (`cluster/channels.rs`).
    Home(crate::cluster::Uplink),
}

impl ChannelMode {
    /// Relays a `/send` data section to the other participants.
    pub fn send(&self, data: &bytes::Bytes) {
        match &self.link {
            ChannelLink::Room(room) => room.forward(self.leg.session, data),
            ChannelLink::Home(up) => up.send(data),
        }
    }

    /// The channel's connection closed.
    pub fn close(&self) {
        match &self.link {
            ChannelLink::Room(room) => room.leave(&self.queue),
            ChannelLink::Home(up) => up.close(),
        }
    }
}

/// A request whose token checked out.
#[derive(Debug, Clone, Copy)]
pub struct Authed {
    /// Who.
    pub user: UserId,
    /// Which of their sessions.
    pub session: SessionId,
}

/// Shared server state. One per process, behind an `Arc`.
#[derive(Debug)]
pub struct App {
    store: Arc<dyn Store>,
    pub(crate) cfg: AppConfig,
    pub(crate) sessions: EpochCache<TokenHash, SessionRecord>,
    pub(crate) contacts: EpochCache<UserId, Arc<Vec<(User, Relation)>>>,
    pub(crate) presence: Arc<PresenceRegistry>,
    pub(crate) dummy_hash: std::sync::OnceLock<String>,
    pub(crate) hub: Arc<dyn Hub>,
    pub(crate) calls: Calls,
    pub(crate) relay: Arc<Relay>,
    pub(crate) limiter: crate::limits::Limiter,
    /// The status each online user chose (`/set_status`).
    pub(crate) statuses: crate::status::StatusBook,
    /// The presence each user's contacts were last told.
    published: Mutex<HashMap<UserId, Presence>>,
    /// When expired sessions were last purged (Unix seconds).
    last_purge: std::sync::atomic::AtomicI64,
    /// The cluster this node is part of (`--nats`); `None` alone.
    pub(crate) bus: Option<Arc<crate::cluster::Bus>>,
}

/// Seconds since the Unix epoch.
pub fn now() -> Timestamp {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as Timestamp)
}

impl App {
    /// Builds the services over a store, an event hub and a relay; in a
    /// cluster the bus is the hub.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        hub: Arc<dyn Hub>,
        relay: Arc<Relay>,
        cfg: AppConfig,
        bus: Option<Arc<crate::cluster::Bus>>,
    ) -> Arc<App> {
        let limits = CallLimits {
            ring_timeout: cfg.ring_timeout.as_millis() as u64,
            max_participants: cfg.max_call_participants,
        };
        let cfg_limits = cfg.limits.clone();
        Arc::new(App {
            store,
            cfg,
            sessions: EpochCache::default(),
            contacts: EpochCache::default(),
            presence: Arc::new(PresenceRegistry::default()),
            dummy_hash: std::sync::OnceLock::new(),
            hub,
            calls: Calls::new(limits),
            relay,
            limiter: crate::limits::Limiter::new(cfg_limits),
            statuses: crate::status::StatusBook::default(),
            published: Mutex::default(),
            last_purge: std::sync::atomic::AtomicI64::new(0),
            bus,
        })
    }

    /// Calls in progress (for tests and metrics).
    pub fn calls_in_progress(&self) -> usize {
        self.calls.len()
    }

    /// Voice frames dropped on slow call channels so far.
    pub fn channel_drops(&self) -> u64 {
        self.calls.channel_drops.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The relay (for tests and metrics).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// The ping interval of event connections.
    pub fn ping_interval(&self) -> Duration {
        self.cfg.ping_interval
    }

    /// Runs a store call on the blocking pool.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> ServiceResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r.map_err(ServiceError::from),
            Err(e) => Err(ServiceError::Unavailable(format!("store task failed: {e}"))),
        }
    }

    /// Runs CPU-heavy work (password hashing) on the blocking pool, a few
    /// at a time: a flood of logins waits in a bounded queue (and is refused
    /// past it) instead of starving every other request.
    pub(crate) async fn cpu<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
        let _slot = self.limiter.hash_slot().await.map_err(ServiceError::Refused)?;
        tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Unavailable(format!("worker failed: {e}")))
    }

    /// The abuse limits in force.
    pub fn limiter(&self) -> &crate::limits::Limiter {
        &self.limiter
    }

    /// Per-connection state for a new connection from `ip`.
    pub fn new_connection(&self, ip: IpAddr) -> ConnState {
        ConnState::new(ip, &self.cfg.limits)
    }

    /// Answers one request frame.
    pub async fn handle(&self, conn: &mut ConnState, frame: &RawRequest) -> Outcome {
        if self.fenced() {
            return Outcome::Reply(Reply::Refused(
                "this server is cut off from its cluster; please use another server".into(),
            ));
        }
        if conn.budget.as_mut().is_some_and(|b| !b.take()) {
            return Outcome::Reply(Reply::Refused("too many requests on this connection; slow down".into()));
        }
        let result = match ClientRequest::parse(frame) {
            Ok(req) => self.dispatch(conn, req).await,
            Err(RequestError::UnknownRoute(_)) => return Outcome::Reply(Reply::NotFound),
            Err(e) => Err(e.into()),
        };
        result.unwrap_or_else(|e| Outcome::Reply(e.into_reply()))
    }

    async fn dispatch(&self, conn: &mut ConnState, req: ClientRequest) -> ServiceResult<Outcome> {
        match req {
            ClientRequest::Events(c) => {
                let me = self.authenticate_as(conn, &c, Take::Always).await?;
                let sub = self.hub.subscribe(me.user, me.session);
                // `/logout` may have ended the session while `authenticate_as`
                // awaited. Its `hub.close` either came after `subscribe`
                // (and ends this stream) or before it, after the session
                // left the store and the cache: then this check fails.
                self.still_live(&c, me).await?;
                Ok(Outcome::Events(sub))
            }
            ClientRequest::ConnectCall { auth, call_id } => {
                let me = self.authenticate_as(conn, &auth, Take::Always).await?;
                self.connect_call(me, call_id).await.map(Outcome::Channel)
            }
            other => self.dispatch_request(conn, other).await.map(Outcome::Reply),
        }
    }

    async fn dispatch_request(&self, conn: &mut ConnState, req: ClientRequest) -> ServiceResult<Reply> {
        match req {
            ClientRequest::Create { email, password, name } => self.create(conn, email, password, name).await,
            ClientRequest::Login { email, password } => self.login(conn, email, password).await,
            ClientRequest::Logout(by) => self.logout(conn, by).await,
            ClientRequest::Delete { auth, password } => self.delete(conn, auth, password).await,
            ClientRequest::Contacts(c) => {
                let me = self.authenticate(conn, &c).await?;
                self.contact_list(me.user).await
            }
            ClientRequest::AddContact { auth, email } => {
                let me = self.authenticate(conn, &auth).await?;
                self.limiter.check_lookup(conn.ip, me.user.0).map_err(ServiceError::Refused)?;
                self.add_contact(me.user, email).await
            }
            ClientRequest::RemoveContact { auth, target } => {
                let me = self.authenticate(conn, &auth).await?;
                if matches!(target, babel_proto::ContactRef::Email(_)) {
                    self.limiter.check_lookup(conn.ip, me.user.0).map_err(ServiceError::Refused)?;
                }
                self.remove_contact(me.user, target).await
            }
            ClientRequest::ContactRequests(c) => {
                let me = self.authenticate(conn, &c).await?;
                let list = self.blocking(move |s| s.incoming_requests(me.user)).await?;
                Ok(Reply::Users(list))
            }
            ClientRequest::AcceptContact { auth, contact_id } => {
                let me = self.authenticate(conn, &auth).await?;
                self.answer_request(me.user, contact_id, true).await
            }
            ClientRequest::DeclineContact { auth, contact_id } => {
                let me = self.authenticate(conn, &auth).await?;
                self.answer_request(me.user, contact_id, false).await
            }
            ClientRequest::Call { auth, contact_id, media } => {
                let me = self.authenticate(conn, &auth).await?;
                self.call(conn, me, contact_id, media).await
            }
            ClientRequest::Answer { auth, call_id, accept, media } => {
                let me = self.authenticate(conn, &auth).await?;
                self.answer(conn, me, call_id, accept, media).await
            }
            ClientRequest::Hangup { auth, call_id } => {
                let me = self.authenticate(conn, &auth).await?;
                self.hangup(me, call_id).await
            }
            ClientRequest::Invite { auth, call_id, contact_id } => {
                let me = self.authenticate(conn, &auth).await?;
                self.invite(me, call_id, contact_id).await
            }
            ClientRequest::CallKey { auth, call_id, key } => {
                let me = self.authenticate(conn, &auth).await?;
                self.call_key(me, call_id, key).await
            }
            ClientRequest::CallNonce { auth, call_id, nonce } => {
                let me = self.authenticate(conn, &auth).await?;
                self.call_nonce(me, call_id, nonce).await
            }
            ClientRequest::Account { auth, request } => {
                let me = self.authenticate(conn, &auth).await?;
                self.account(conn, me, request).await
            }
            ClientRequest::Send(c) => {
                self.authenticate(conn, &c).await?;
                Err(ServiceError::Refused(
                    "voice travels on a call channel: open one with /connect_call on a new connection".into(),
                ))
            }
            req @ (ClientRequest::SendMessage { .. }
            | ClientRequest::Messages { .. }
            | ClientRequest::MarkRead { .. }
            | ClientRequest::Unread(_)
            | ClientRequest::CallHistory { .. }) => self.messaging(conn, req).await,
            ClientRequest::Events(_) | ClientRequest::ConnectCall { .. } => {
                Err(ServiceError::BadRequest("this route changes the connection's mode".into()))
            }
        }
    }

    /// The session a token belongs to, if it is live (not checked against a
    /// claimed id). Refreshes `last_used` every so often.
    pub(crate) async fn session_for_token(&self, token: &str) -> ServiceResult<SessionRecord> {
        let hash = auth::hash_token(token);
        let cached = if self.caches_trusted() { self.sessions.get(&hash) } else { Err(u64::MAX) };
        let rec = match cached {
            Ok(rec) => rec,
            Err(epoch) => {
                let rec = self.blocking(move |s| s.session(&hash)).await?.ok_or(ServiceError::Unauthorized)?;
                self.sessions.fill(hash, rec, epoch);
                rec
            }
        };
        let now = now();
        let ttl = self.cfg.session_ttl.as_secs() as Timestamp;
        if now - rec.last_used > ttl {
            self.end_session_because(rec, babel_proto::SessionEndReason::Expired).await?;
            return Err(ServiceError::Unauthorized);
        }
        // Write the last use through only now and then: the TTL is in days.
        let touch_every = (ttl / 8).clamp(1, 3600);
        if now - rec.last_used >= touch_every {
            self.sessions.update(&hash, |r| r.last_used = now);
            let id = rec.id;
            if let Err(e) = self.blocking(move |s| s.touch_session(id, now)).await {
                tracing::warn!(error = %e, "could not record session use");
            }
        }
        Ok(rec)
    }

    /// Checks `{id, token}`; an anonymous connection starts speaking for
    /// the session.
    pub(crate) async fn authenticate(&self, conn: &mut ConnState, creds: &Credentials) -> ServiceResult<Authed> {
        self.authenticate_as(conn, creds, Take::IfAnonymous).await
    }

    async fn authenticate_as(&self, conn: &mut ConnState, creds: &Credentials, take: Take) -> ServiceResult<Authed> {
        let rec = self.session_for_token(creds.token.expose()).await?;
        if rec.user != creds.id {
            return Err(ServiceError::Unauthorized);
        }
        conn.authenticated = true;
        if take == Take::Always || conn.is_anonymous(&self.presence) {
            self.speak_for(conn, rec.user, rec.id).await;
        }
        Ok(Authed { user: rec.user, session: rec.id })
    }

    /// Checks again, after a connection took a session on (subscribed to
    /// its events), that the session was not ended meanwhile. If it was,
    /// the presence the connection may have added back is forgotten and the
    /// request is refused.
    async fn still_live(&self, creds: &Credentials, me: Authed) -> ServiceResult<()> {
        match self.session_for_token(creds.token.expose()).await {
            Ok(rec) if rec.id == me.session => Ok(()),
            Ok(_) | Err(ServiceError::Unauthorized) => {
                self.presence.end_session(me.user, me.session);
                self.refresh_status(me.user).await;
                Err(ServiceError::Unauthorized)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the connection speak for `session`, replacing the session it
    /// spoke for until now. The new one is counted before the old one is
    /// let go, so a user who stays does not flap offline and back.
    async fn speak_for(&self, conn: &mut ConnState, user: UserId, session: SessionId) {
        conn.authenticated = true;
        if conn.speaks_for.as_ref().is_some_and(|g| g.session() == session) {
            return;
        }
        self.load_chosen_status(user).await;
        let (guard, came_online) = self.presence.attach(user, session);
        let earlier = conn.speaks_for.replace(guard);
        if came_online {
            self.refresh_status(user).await;
        }
        match earlier {
            Some(stale) if !self.presence.is_attached(stale.user(), stale.session()) => stale.forget(),
            Some(earlier) => self.let_go(earlier).await,
            None => {}
        }
    }

    /// A connection stops speaking for a session: the session may have lost
    /// its last connection (leaving its calls), and its user gone offline.
    async fn let_go(&self, guard: PresenceGuard) {
        let leg = Leg { user: guard.user(), session: guard.session() };
        let detached = guard.release();
        if detached.session_gone {
            self.connections_gone(leg).await;
        }
        if detached.user_offline {
            self.refresh_status(leg.user).await;
        }
    }

    /// After `/logout` of `session`: a connection that spoke for it is
    /// anonymous again.
    pub(crate) fn forget_session(&self, conn: &mut ConnState, session: SessionId) {
        if conn.speaks_for.as_ref().is_some_and(|g| g.session() == session) {
            // The registry has forgotten the session already (end_session).
            if let Some(guard) = conn.speaks_for.take() {
                guard.forget();
            }
        }
    }

    /// Starts a session for a user who proved their password; the
    /// connection now speaks for it.
    pub(crate) async fn open_session(&self, conn: &mut ConnState, user: UserId) -> ServiceResult<String> {
        let token = self.cpu(auth::new_token).await?.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let hash = token.hash;
        let id = self.blocking(move |s| s.create_session(user, &hash, now())).await?;
        self.record_session_address(id, conn.ip()).await;
        self.speak_for(conn, user, id).await;
        self.cap_sessions(user, id).await?;
        self.purge_expired().await;
        Ok(token.text)
    }

    /// Ends the least recently used sessions of a user past the cap
    /// (`[limits] max_sessions_per_user`), never `keep` (the one just made).
    /// A session with an open connection counts as used now.
    async fn cap_sessions(&self, user: UserId, keep: SessionId) -> ServiceResult<()> {
        let cap = self.cfg.limits.max_sessions_per_user;
        if cap == 0 {
            return Ok(());
        }
        let mut all = self.blocking(move |s| s.user_sessions(user)).await?;
        if all.len() <= cap {
            return Ok(());
        }
        let live = self.presence.sessions_of(user);
        let excess = all.len() - cap;
        all.retain(|r| r.id != keep);
        all.sort_by_key(|r| (live.contains(&r.id), r.last_used, r.id));
        for rec in all.into_iter().take(excess) {
            tracing::debug!(%user, session = rec.id.0, "too many sessions; ending the least recently used");
            self.end_session(rec, EndReason::Logout).await?;
        }
        Ok(())
    }

    /// Deletes the sessions unused for longer than the session lifetime, at
    /// most once per eighth of it (and at least hourly), from logins and the
    /// background tick. One that still has connections (an event stream
    /// outlives its token's use) is ended as by `/logout`.
    pub(crate) async fn purge_expired(&self) {
        use std::sync::atomic::Ordering;
        let ttl = self.cfg.session_ttl.as_secs() as Timestamp;
        let every = (ttl / 8).clamp(1, 3600);
        let now = now();
        let last = self.last_purge.load(Ordering::Relaxed);
        if now - last < every
            || self.last_purge.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        let cutoff = now - ttl;
        let purged = match self.blocking(move |s| s.purge_sessions(cutoff)).await {
            Ok(purged) => purged,
            Err(e) => {
                tracing::warn!(error = %e, "could not purge expired sessions");
                return;
            }
        };
        if purged.is_empty() {
            return;
        }
        self.sessions.invalidate_where(|r| r.last_used < cutoff);
        tracing::info!(sessions = purged.len(), "purged expired sessions");
        for rec in purged {
            // In a cluster its connections may be on another node.
            if self.bus.is_some() || self.presence.sessions_of(rec.user).contains(&rec.id) {
                if let Err(e) = self.end_session_because(rec, babel_proto::SessionEndReason::Expired).await {
                    tracing::warn!(error = %e, "could not end an expired session");
                }
            }
        }
    }

    /// Ends a session everywhere: its calls, its event connections, its
    /// presence.
    pub(crate) async fn end_session(&self, rec: SessionRecord, reason: EndReason) -> ServiceResult<()> {
        let id = rec.id;
        self.blocking(move |s| s.delete_session(id)).await?;
        self.sessions.invalidate_where(|r| r.id == id);
        self.tell_cluster_and_wait(crate::cluster::Body::SessionEnded { user: rec.user.0, session: id.0 }).await;
        self.presence.end_session(rec.user, rec.id);
        self.hub.close(rec.user, Some(rec.id));
        let fx = self.calls.leave_all(Leg { user: rec.user, session: rec.id }, reason);
        self.apply(fx).await;
        self.refresh_status(rec.user).await;
        Ok(())
    }

    /// Ends every session of a deleted user.
    pub(crate) async fn end_user(&self, user: UserId) {
        let live = self.presence.sessions_of(user);
        self.sessions.invalidate_where(|r| r.user == user);
        self.tell_cluster_and_wait(crate::cluster::Body::UserDeleted { user: user.0 }).await;
        self.presence.close_user(user);
        self.presence.end_user(user);
        for session in &live {
            let ended = babel_proto::SessionEnded {
                session_id: babel_proto::SessionId(session.0),
                reason: babel_proto::SessionEndReason::Deleted,
            };
            self.hub.to_session(user, *session, &ServerEvent::SessionEnded(ended));
        }
        self.hub.close(user, None);
        for session in live {
            let fx = self.calls.leave_all(Leg { user, session }, EndReason::Deleted);
            self.apply(fx).await;
        }
        self.published.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
        self.statuses.forget(user);
    }

    /// Cleans up after a connection closed: its session may have lost its
    /// last connection (leaving its calls) and its user gone offline.
    pub async fn connection_closed(&self, conn: ConnState) {
        if let Some(guard) = conn.speaks_for {
            self.let_go(guard).await;
        }
    }

    /// The presence a user shows now.
    pub(crate) fn status_of(&self, user: UserId) -> Presence {
        let online = self.online_anywhere(user);
        crate::status::shown(online, online && self.busy_anywhere(user), self.statuses.get(user))
    }

    /// Tells the user's contacts if their presence changed since last told.
    pub(crate) async fn refresh_status(&self, user: UserId) {
        self.announce(user);
        let contacts = match self.cached_contacts(user).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read contacts to publish presence");
                return;
            }
        };
        // Decided and sent under one lock, so two refreshes cannot reorder.
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let status = self.status_of(user);
        let before = published.get(&user).copied().unwrap_or(Presence::Offline);
        if before == status {
            return;
        }
        if status == Presence::Offline {
            published.remove(&user);
        } else {
            published.insert(user, status);
        }
        let event = ServerEvent::Status(user, status);
        for (contact, rel) in contacts.iter() {
            // Every node tells its own connections (a change is heard once).
            if *rel == Relation::Contact {
                self.hub.to_user_here(contact.id, &event);
            }
        }
    }

    /// Carries out what a call transition asks for.
    pub(crate) async fn apply(&self, fx: Effects) {
        // In a cluster the calls' new state is stored before anyone hears of it.
        self.store_calls(&fx.changed).await;
        for (leg, event) in &fx.events {
            self.hub.to_session(leg.user, leg.session, event);
        }
        for (room, session, frame) in &fx.finish {
            room.finish_for(*session, frame);
        }
        for (call, session) in &fx.revoke {
            self.relay.revoke(*call, *session);
        }
        for call in &fx.ended {
            self.relay.end_call(*call);
            if let Some(bus) = &self.bus {
                bus.call_over(*call);
            }
        }
        for user in fx.users {
            self.refresh_status(user).await;
        }
        if !fx.history.is_empty() {
            self.record_calls(fx.history).await;
        }
    }

    /// Runs the background work: the ring timer and the relay's address
    /// reports. Both stop with `cancel`.
    pub fn spawn_background(
        self: &Arc<Self>,
        mut learned: tokio::sync::mpsc::UnboundedReceiver<crate::relay::AddressLearned>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let app = Arc::clone(self);
        let bus = self.spawn_bus(cancel.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let fx = app.calls.tick();
                        app.apply(fx).await;
                        for leg in app.calls.due() {
                            tokio::spawn(Arc::clone(&app).grace_over(leg));
                        }
                        app.purge_expired().await;
                    }
                    Some(m) = learned.recv() => {
                        // Coalesced: of the moves queued now, only each
                        // participant's latest is told (the relay already
                        // limits how often one moves).
                        let mut latest = vec![m];
                        while let Ok(m) = learned.try_recv() {
                            latest.retain(|l| (l.call, l.session) != (m.call, m.session));
                            latest.push(m);
                        }
                        for m in latest {
                            let leg = Leg { user: m.user, session: m.session };
                            let fx = app.calls.address_learned(m.call, leg, m.addr);
                            app.apply(fx).await;
                        }
                    }
                    _ = cancel.cancelled() => break,
                }
            }
            // The bus says goodbye to the other nodes.
            if let Some(bus) = bus {
                let _ = bus.await;
            }
        })
    }

    /// A user's contacts and outgoing requests, cached.
    pub(crate) async fn cached_contacts(&self, user: UserId) -> ServiceResult<Arc<Vec<(User, Relation)>>> {
        let cached = if self.caches_trusted() { self.contacts.get(&user) } else { Err(u64::MAX) };
        match cached {
            Ok(list) => Ok(list),
            Err(epoch) => {
                let list = Arc::new(self.blocking(move |s| s.contacts(user)).await?);
                self.contacts.fill(user, Arc::clone(&list), epoch);
                Ok(list)
            }
        }
    }

    /// Drops cached contact lists after a write that changed them.
    pub(crate) fn contacts_changed(&self, users: &[UserId]) {
        self.contacts.invalidate(users);
        self.tell_cluster(crate::cluster::Body::ContactsChanged { users: users.iter().map(|u| u.0).collect() });
    }

    /// Drops every cached contact list that shows `user` (after a rename).
    pub(crate) fn user_changed(&self, user: UserId) {
        self.contacts.invalidate_where(|list| list.iter().any(|(u, _)| u.id == user));
        self.tell_cluster(crate::cluster::Body::UserChanged { user: user.0 });
    }
}
