//! The services behind the routes: state shared by every connection, the
//! token check, and the one place that maps service errors to statuses.
//!
//! Route handlers live in [`crate::routes`], one file per route family; this
//! module holds what they share. Nothing here touches a socket: a connection
//! hands in a parsed frame and gets a [`Reply`] back.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use babel_proto::{ClientRequest, Credentials, RawRequest, Reply, RequestError, User, UserId};

use crate::auth::{self, PasswordCost};
use crate::cache::EpochCache;
use crate::config::Config;
use crate::presence::{PresenceGuard, PresenceRegistry};
use crate::store::{
    Relation, SessionId, SessionRecord, Store, StoreError, StoreResult, Timestamp, TokenHash,
};

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
                Reply::Refused(
                    "the server could not complete this request right now; please try again".into(),
                )
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
}

impl From<&Config> for AppConfig {
    fn from(c: &Config) -> Self {
        Self {
            session_ttl: c.session_ttl(),
            password_cost: c.password,
        }
    }
}

/// Per-connection state the services keep: the sessions this connection has
/// proven, each keeping its user online while the connection lives.
#[derive(Debug, Default)]
pub struct ConnState {
    attached: Vec<PresenceGuard>,
}

impl ConnState {
    fn attach(&mut self, presence: &Arc<PresenceRegistry>, user: UserId, session: SessionId) {
        if !self.attached.iter().any(|g| g.session() == session) {
            self.attached.push(presence.attach(user, session));
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
    sessions: EpochCache<TokenHash, SessionRecord>,
    contacts: EpochCache<UserId, Arc<Vec<(User, Relation)>>>,
    pub(crate) presence: Arc<PresenceRegistry>,
    pub(crate) dummy_hash: std::sync::OnceLock<String>,
}

/// Seconds since the Unix epoch.
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as Timestamp)
}

impl App {
    /// Builds the services over a store.
    pub fn new(store: Arc<dyn Store>, cfg: AppConfig) -> Arc<App> {
        Arc::new(App {
            store,
            cfg,
            sessions: EpochCache::default(),
            contacts: EpochCache::default(),
            presence: Arc::new(PresenceRegistry::default()),
            dummy_hash: std::sync::OnceLock::new(),
        })
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

    /// Runs CPU-heavy work (password hashing) on the blocking pool.
    pub(crate) async fn cpu<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> ServiceResult<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ServiceError::Unavailable(format!("worker failed: {e}")))
    }

    /// Answers one request frame.
    pub async fn handle(&self, conn: &mut ConnState, frame: &RawRequest) -> Reply {
        let result = match ClientRequest::parse(frame) {
            Ok(req) => self.dispatch(conn, req).await,
            Err(RequestError::UnknownRoute(_)) => return Reply::NotFound,
            Err(e) => Err(e.into()),
        };
        result.unwrap_or_else(ServiceError::into_reply)
    }

    async fn dispatch(&self, conn: &mut ConnState, req: ClientRequest) -> ServiceResult<Reply> {
        match req {
            ClientRequest::Create {
                email,
                password,
                name,
            } => self.create(conn, email, password, name).await,
            ClientRequest::Login { email, password } => self.login(conn, email, password).await,
            ClientRequest::Logout(by) => self.logout(by).await,
            ClientRequest::Delete(c) => self.delete(c).await,
            ClientRequest::Contacts(c) => {
                let me = self.authenticate(conn, &c).await?;
                self.contact_list(me.user).await
            }
            ClientRequest::AddContact { auth, email } => {
                let me = self.authenticate(conn, &auth).await?;
                self.add_contact(me.user, email).await
            }
            ClientRequest::RemoveContact { auth, target } => {
                let me = self.authenticate(conn, &auth).await?;
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
        }
    }

    /// The session a token belongs to, if it is live (not checked against a
    /// claimed id). Refreshes `last_used` every so often.
    pub(crate) async fn session_for_token(&self, token: &str) -> ServiceResult<SessionRecord> {
        let hash = auth::hash_token(token);
        let rec = match self.sessions.get(&hash) {
            Ok(rec) => rec,
            Err(epoch) => {
                let rec = self
                    .blocking(move |s| s.session(&hash))
                    .await?
                    .ok_or(ServiceError::Unauthorized)?;
                self.sessions.fill(hash, rec, epoch);
                rec
            }
        };
        let now = now();
        let ttl = self.cfg.session_ttl.as_secs() as Timestamp;
        if now - rec.last_used > ttl {
            self.forget_session(rec).await?;
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

    /// Checks `{id, token}` and marks this connection as the session's.
    pub(crate) async fn authenticate(
        &self,
        conn: &mut ConnState,
        creds: &Credentials,
    ) -> ServiceResult<Authed> {
        let rec = self.session_for_token(creds.token.expose()).await?;
        if rec.user != creds.id {
            return Err(ServiceError::Unauthorized);
        }
        conn.attach(&self.presence, rec.user, rec.id);
        Ok(Authed {
            user: rec.user,
            session: rec.id,
        })
    }

    /// Starts a session for a user who proved their password.
    pub(crate) async fn open_session(
        &self,
        conn: &mut ConnState,
        user: UserId,
    ) -> ServiceResult<String> {
        let token = self
            .cpu(auth::new_token)
            .await?
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let hash = token.hash;
        let id = self
            .blocking(move |s| s.create_session(user, &hash, now()))
            .await?;
        conn.attach(&self.presence, user, id);
        Ok(token.text)
    }

    /// Ends a session everywhere.
    pub(crate) async fn forget_session(&self, rec: SessionRecord) -> ServiceResult<()> {
        let id = rec.id;
        self.blocking(move |s| s.delete_session(id)).await?;
        self.sessions.invalidate_where(|r| r.id == id);
        self.presence.end_session(rec.user, rec.id);
        Ok(())
    }

    /// Forgets every cached session of a user (after `/delete`).
    pub(crate) fn forget_user_sessions(&self, user: UserId) {
        self.sessions.invalidate_where(|r| r.user == user);
        self.presence.end_user(user);
    }

    /// A user's contacts and outgoing requests, cached.
    pub(crate) async fn cached_contacts(
        &self,
        user: UserId,
    ) -> ServiceResult<Arc<Vec<(User, Relation)>>> {
        match self.contacts.get(&user) {
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
    }
}
