//! Text messages and call history as typed methods on [`Client`]
//! (DESIGN.md §5). The events `/message` and `/messages_read` arrive on the
//! [`crate::EventStream`] as [`babel_proto::ServerEvent::Message`] and
//! [`babel_proto::ServerEvent::MessagesRead`].
//!
//! A `/send_message` that fails with [`ClientError::Disconnected`] or
//! [`ClientError::Timeout`] may still have been stored: send it again with
//! the same `client_id` and the server answers the first message instead
//! of storing a second one.

use babel_proto::{
    CallHistoryEntry, ClientRequest, EntryId, HistoryQuery, Message, MessageId, MessageSent, MessagesQuery,
    MessagesRead, Page, SendMessage, UnreadCount, UserId,
};

use crate::{Client, Result};

#[cfg(doc)]
use crate::ClientError;

impl Client {
    /// Sends `text` to a contact. `client_id` (1–128 bytes, unique per
    /// message on this account, e.g. from [`babel_proto::new_client_id`])
    /// makes a retry safe.
    /// The server refuses (403) a non-contact, an empty or over-4000-character
    /// text, and a sender over the rate limit.
    pub async fn send_message(&mut self, contact: UserId, text: &str, client_id: Option<&str>) -> Result<MessageSent> {
        let message =
            SendMessage { contact_id: contact, text: text.to_owned(), client_id: client_id.map(str::to_owned) };
        let req = ClientRequest::SendMessage { auth: self.creds()?, message };
        Ok(self.request(&req).await?.json()?)
    }

    /// A page of messages with `contact` (or of every conversation when
    /// `None`). [`Page::Latest`] and [`Page::Before`] answer newest first,
    /// [`Page::After`] oldest first; `limit` is 1–100 (400 otherwise).
    pub async fn messages(&mut self, contact: Option<UserId>, page: Page, limit: u32) -> Result<Vec<Message>> {
        let req =
            ClientRequest::Messages { auth: self.creds()?, query: MessagesQuery { contact_id: contact, page, limit } };
        Ok(self.request(&req).await?.json()?)
    }

    /// Marks every message `contact` sent me up to `up_to` as read (a mark
    /// never moves backwards).
    pub async fn mark_read(&mut self, contact: UserId, up_to: MessageId) -> Result<()> {
        let req = ClientRequest::MarkRead {
            auth: self.creds()?,
            read: MessagesRead { contact_id: contact, message_id: up_to },
        };
        Ok(self.request(&req).await?.ok()?)
    }

    /// How many unread messages each contact sent me (contacts with none
    /// are left out).
    pub async fn unread(&mut self) -> Result<Vec<UnreadCount>> {
        let req = ClientRequest::Unread(self.creds()?);
        Ok(self.request(&req).await?.json()?)
    }

    /// A page of my call history, newest first: entries older than
    /// `before` (the newest when `None`); `limit` is 1–100.
    pub async fn call_history(&mut self, before: Option<EntryId>, limit: u32) -> Result<Vec<CallHistoryEntry>> {
        let req = ClientRequest::CallHistory { auth: self.creds()?, query: HistoryQuery { before, limit } };
        Ok(self.request(&req).await?.json()?)
    }
}
