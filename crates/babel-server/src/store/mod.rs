//! Durable storage behind one trait, so the services do not care whether it
//! is the embedded SQLite file ([`sqlite::SqliteStore`]) or a shared
//! PostgreSQL ([`pg::PgStore`]). [`open`] picks one from `--db`.
//!
//! The trait is synchronous: every call is short, and the services run it on
//! tokio's blocking pool (see `App::blocking`), which suits both
//! rusqlite and a synchronous PostgreSQL driver. Every method that returns
//! `Ok` has committed durably: an acknowledged write survives `kill -9`.
//!
//! Not here: caching, presence and anything that lives only while connections
//! are open.

pub mod pg;
mod pg_messages;
pub mod records;
pub mod sqlite;
mod sqlite_messages;
#[cfg(test)]
mod suite;

use babel_proto::{ChosenStatus, MessageId, Page, User, UserId};

pub use records::{CallRecord, HistoryRow, SendOutcome, StoredMessage};

/// Opens the store `db` names: a `postgres://` (or `postgresql://`) URL
/// is a PostgreSQL database, anything else a SQLite file (opened with
/// `durability`). Blocks: call it off the async worker threads.
pub fn open(db: &std::path::Path, durability: sqlite::Durability) -> StoreResult<std::sync::Arc<dyn Store>> {
    match db.to_str().filter(|s| pg::is_postgres_url(s)) {
        Some(url) => Ok(std::sync::Arc::new(pg::PgStore::open(url)?)),
        None => Ok(std::sync::Arc::new(sqlite::SqliteStore::open(db, durability)?)),
    }
}

/// `db` as logs may show it: a file's path, or a PostgreSQL address
/// without its password.
pub fn describe(db: &std::path::Path) -> String {
    match db.to_str().filter(|s| pg::is_postgres_url(s)) {
        Some(url) => match url.parse::<postgres::Config>() {
            Ok(c) => pg::describe(&c),
            Err(_) => "postgres://(invalid address)".to_owned(),
        },
        None => db.display().to_string(),
    }
}

/// Unix time in seconds.
pub type Timestamp = i64;

/// A session's id (one per login per device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub i64);

/// The SHA-256 of a session token. Tokens themselves are never stored.
pub type TokenHash = [u8; 32];

/// A stored account, with its password hash (PHC string).
#[derive(Clone)]
pub struct Account {
    /// The public part.
    pub user: User,
    /// argon2id PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("user", &self.user).finish_non_exhaustive()
    }
}

/// A stored session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session.
    pub id: SessionId,
    /// Its owner.
    pub user: UserId,
    /// Last time it was used (coarse: updated at most every few minutes).
    pub last_used: Timestamp,
}

/// How a user relates to another in their contact list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Both accepted.
    Contact,
    /// I asked, they have not answered.
    Outgoing,
}

/// What `/add_contact` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new pending request.
    Requested,
    /// They had asked me already: both are now contacts.
    BecameContacts,
    /// We are contacts already.
    AlreadyContacts,
    /// My request is already pending.
    AlreadyRequested,
    /// They block me: the request is kept where only I see it (pending,
    /// never answered), so nothing tells me about the block.
    Withheld,
    /// I block them: unblock first.
    YouBlock,
}

/// What `/remove_contact` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// An accepted contact (both sides).
    Contact,
    /// My pending request.
    CancelledRequest,
    /// Their pending request to me.
    DroppedIncoming,
    /// My request they never saw (withheld because they block me).
    CancelledWithheld,
    /// Nothing linked us.
    NotFound,
}

/// A session as `/sessions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDetail {
    /// The session.
    pub id: SessionId,
    /// When it was opened.
    pub created_at: Timestamp,
    /// Last time it was used (coarse).
    pub last_used: Timestamp,
    /// The IP address it was opened from ("" if unknown).
    pub address: String,
}

/// A storage failure. Nothing a client sends causes one; a full disk or a
/// broken file does.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The email is already registered.
    #[error("email already registered")]
    EmailTaken,
    /// Another account's address has the same confusable skeleton.
    #[error("email looks like a registered one")]
    LookAlike,
    /// The backend failed.
    #[error("storage failure: {0}")]
    Backend(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// The durable state: accounts, sessions, contacts and contact requests.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Creates an account with a canonical email and its confusable
    /// skeleton ([`crate::identity`]). [`StoreError::EmailTaken`] if the
    /// email exists, [`StoreError::LookAlike`] if the skeleton does.
    fn create_user(
        &self,
        email: &str,
        skeleton: &str,
        name: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> StoreResult<User>;
    /// The account with this canonical email.
    fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>>;
    /// The account a login names: one whose stored address, or address
    /// before the canonical-address migration, is exactly `exact` (the
    /// trimmed, lowercased input: how migrated look-alikes still log in);
    /// else the one with the `canonical` email.
    fn account_for_login(&self, exact: &str, canonical: Option<&str>) -> StoreResult<Option<Account>>;
    /// The user with this id.
    fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// Deletes a user with their sessions, contacts and requests in both
    /// directions. Answers everyone who was linked to them (to refresh their
    /// views), or `None` if there was no such user.
    fn delete_user(&self, id: UserId) -> StoreResult<Option<Vec<UserId>>>;

    /// Records a new session.
    fn create_session(&self, user: UserId, token: &TokenHash, now: Timestamp) -> StoreResult<SessionId>;
    /// The session with this token hash.
    fn session(&self, token: &TokenHash) -> StoreResult<Option<SessionRecord>>;
    /// Marks a session used at `now`.
    fn touch_session(&self, id: SessionId, now: Timestamp) -> StoreResult<()>;
    /// Ends a session. Answers whether it existed.
    fn delete_session(&self, id: SessionId) -> StoreResult<bool>;
    /// Ends every session unused since before `cutoff`. Answers them.
    fn purge_sessions(&self, cutoff: Timestamp) -> StoreResult<Vec<SessionRecord>>;
    /// Every session of a user, oldest first.
    fn user_sessions(&self, user: UserId) -> StoreResult<Vec<SessionRecord>>;

    /// My contacts and my outgoing requests, ordered by name.
    fn contacts(&self, user: UserId) -> StoreResult<Vec<(User, Relation)>>;
    /// Requests waiting for my answer, oldest first.
    fn incoming_requests(&self, user: UserId) -> StoreResult<Vec<User>>;
    /// `from` asks `to`; accepts both ways if `to` had asked `from`.
    fn add_request(&self, from: UserId, to: UserId, now: Timestamp) -> StoreResult<AddOutcome>;
    /// `me` accepts the request from `from`. Answers false if there is none.
    fn accept_request(&self, me: UserId, from: UserId) -> StoreResult<bool>;
    /// `me` declines the request from `from`. Answers false if there is none.
    fn decline_request(&self, me: UserId, from: UserId) -> StoreResult<bool>;
    /// Removes whatever links `me` and `other`.
    fn remove_link(&self, me: UserId, other: UserId) -> StoreResult<RemoveOutcome>;

    /// Stores a message from `from` to `to`, unless `from` already sent one
    /// with this `client_id` (see [`SendOutcome`]).
    fn send_message(
        &self,
        from: UserId,
        to: UserId,
        text: &str,
        client_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<SendOutcome>;
    /// The message `from` sent with this `client_id`, if any.
    fn sent_with_client_id(&self, from: UserId, client_id: &str) -> StoreResult<Option<StoredMessage>>;
    /// A page of `me`'s messages with `with` (or with everyone): `Latest`
    /// and `Before` newest first, `After` oldest first, at most `limit`.
    fn messages(&self, me: UserId, with: Option<UserId>, page: Page, limit: u32) -> StoreResult<Vec<StoredMessage>>;
    /// `me` has read what `contact` sent up to `up_to`: the mark moves to
    /// the newest such message, never backwards. Answers the new mark if
    /// it moved.
    fn mark_read(&self, me: UserId, contact: UserId, up_to: MessageId) -> StoreResult<Option<MessageId>>;
    /// For each sender, how many of their messages to `me` are unread.
    fn unread(&self, me: UserId) -> StoreResult<Vec<(UserId, u32)>>;
    /// Appends call records (those of deleted users are dropped), in one
    /// transaction.
    fn record_calls(&self, records: &[CallRecord]) -> StoreResult<()>;
    /// A page of `me`'s call history, newest first.
    fn call_history(&self, me: UserId, before: Option<i64>, limit: u32) -> StoreResult<Vec<HistoryRow>>;

    // Account and privacy (DESIGN.md §5).

    /// Records where a session was opened from.
    fn set_session_address(&self, id: SessionId, address: &str) -> StoreResult<()>;
    /// Every session of a user with its details, oldest first.
    fn session_details(&self, user: UserId) -> StoreResult<Vec<SessionDetail>>;
    /// Changes a user's display name. Answers whether the user exists.
    fn rename(&self, user: UserId, name: &str) -> StoreResult<bool>;
    /// Replaces a user's password hash and, in the same transaction, ends
    /// every session of theirs but `keep`. Answers the sessions ended.
    fn set_password(&self, user: UserId, password_hash: &str, keep: SessionId) -> StoreResult<Vec<SessionRecord>>;
    /// The status a user chose (`available` if never set).
    fn chosen_status(&self, user: UserId) -> StoreResult<ChosenStatus>;
    /// Records the status a user chose.
    fn set_chosen_status(&self, user: UserId, status: ChosenStatus) -> StoreResult<()>;
    /// `me` blocks `other`: whatever linked them (contacts, requests either
    /// way) goes, atomically with the block. `None` if `me` blocked `other`
    /// already (nothing changes then).
    fn block(&self, me: UserId, other: UserId, now: Timestamp) -> StoreResult<Option<RemoveOutcome>>;
    /// `me` unblocks `other`. Answers whether there was a block.
    fn unblock(&self, me: UserId, other: UserId) -> StoreResult<bool>;
    /// The users `me` blocks, by name.
    fn blocked(&self, me: UserId) -> StoreResult<Vec<User>>;
    /// Everyone `me` blocks or is blocked by.
    fn block_links(&self, me: UserId) -> StoreResult<Vec<UserId>>;
}
