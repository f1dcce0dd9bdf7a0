//! What the store keeps for messages and call history (DESIGN.md §5), in
//! store terms: Unix seconds, ids as integers. The routes turn these into
//! the wire's types ([`babel_proto::Message`], [`babel_proto::CallHistoryEntry`]).

use babel_proto::{CallId, Direction, EndReason, User, UserId};

use super::Timestamp;

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id (strictly increasing across the server).
    pub id: i64,
    /// Sender.
    pub from: UserId,
    /// Recipient.
    pub to: UserId,
    /// Text.
    pub text: String,
    /// When it was accepted.
    pub sent_at: Timestamp,
    /// Whether the recipient's read mark covers it.
    pub read: bool,
}

/// What storing a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// A new message.
    Sent(StoredMessage),
    /// The sender had already sent this `client_id` (same recipient, same
    /// text): the first message, nothing stored.
    Duplicate(StoredMessage),
    /// The sender used this `client_id` for a different message.
    ClientIdReused,
}

/// One user's record of one call, written when their part of it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Whose history.
    pub user: UserId,
    /// The call.
    pub call_id: CallId,
    /// Placed or received.
    pub direction: Direction,
    /// The other people (who rang me first, for `in`).
    pub with: Vec<UserId>,
    /// When I was rung, or placed the call.
    pub started_at: Timestamp,
    /// When the call was answered with me in it; `None` if never.
    pub answered_at: Option<Timestamp>,
    /// When my part ended.
    pub ended_at: Timestamp,
    /// Why.
    pub reason: EndReason,
}

/// A stored call record with the users it names (those whose accounts
/// still exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The entry's id.
    pub entry_id: i64,
    /// The record.
    pub record: CallRecord,
    /// `record.with` as users, in the same order, deleted accounts left out.
    pub with: Vec<User>,
}
