//! `/send_message`, `/messages`, `/mark_read`, `/unread`, `/call_history`
//! (DESIGN.md §5).
//!
//! Messages go only between contacts and are stored before they are
//! acknowledged (the store commits durably), so an acknowledged message
//! survives `kill -9` and reaches an offline recipient by `/messages` and
//! `/unread`. Events: `/message` to the recipient's sessions and the
//! sender's other sessions; `/messages_read` to the sender (while still a
//! contact) and the reader's other sessions. The server can read messages:
//! they are not end-to-end encrypted (SECURITY.md).

use babel_proto::messages::check_text;
use babel_proto::{
    CallHistoryEntry, ClientRequest, HistoryQuery, Message, MessageEvent, MessageId, MessageSent, MessagesQuery,
    MessagesRead, MessagesReply, Reply, SendMessage, ServerEvent, UnreadCount, UserId,
};

use crate::app::{App, Authed, ConnState, ServiceError, ServiceResult};
use crate::store::{CallRecord, Relation, SendOutcome, StoredMessage, Timestamp};

impl App {
    /// Serves this module's routes.
    pub(crate) async fn messaging(&self, conn: &mut ConnState, req: ClientRequest) -> ServiceResult<Reply> {
        let reply = match req {
            ClientRequest::SendMessage { auth, message } => {
                let me = self.authenticate(conn, &auth).await?;
                MessagesReply::Sent(self.send_message(me, message).await?)
            }
            ClientRequest::Messages { auth, query } => {
                let me = self.authenticate(conn, &auth).await?;
                MessagesReply::Messages(self.message_page(me.user, query).await?)
            }
            ClientRequest::MarkRead { auth, read } => {
                let me = self.authenticate(conn, &auth).await?;
                self.mark_read(me, read).await?;
                return Ok(Reply::Ok);
            }
            ClientRequest::Unread(auth) => {
                let me = self.authenticate(conn, &auth).await?;
                let counts = self.blocking(move |s| s.unread(me.user)).await?;
                MessagesReply::Unread(
                    counts.into_iter().map(|(contact_id, count)| UnreadCount { contact_id, count }).collect(),
                )
            }
            ClientRequest::CallHistory { auth, query } => {
                let me = self.authenticate(conn, &auth).await?;
                MessagesReply::CallHistory(self.call_history(me.user, query).await?)
            }
            _ => return Err(ServiceError::BadRequest("not a message route".into())),
        };
        Ok(Reply::Messages(reply))
    }

    async fn is_contact(&self, me: UserId, other: UserId) -> ServiceResult<bool> {
        let list = self.cached_contacts(me).await?;
        Ok(list.iter().any(|(u, rel)| u.id == other && *rel == Relation::Contact))
    }

    async fn send_message(&self, me: Authed, m: SendMessage) -> ServiceResult<MessageSent> {
        // A retry is answered before any limit is counted: the message was
        // accepted once, whatever happened to the connection or the limits
        // since.
        if let Some(cid) = m.client_id.clone() {
            let first = self.blocking(move |s| s.sent_with_client_id(me.user, &cid)).await?;
            if let Some(first) = first {
                return if first.to == m.contact_id && first.text == m.text {
                    Ok(MessageSent { message_id: MessageId(first.id), sent_at: rfc3339(first.sent_at) })
                } else {
                    Err(ServiceError::Refused("this client_id was already used for another message".into()))
                };
            }
        }
        check_text(&m.text).map_err(|r| ServiceError::Refused(r.into()))?;
        if m.contact_id == me.user {
            return Err(ServiceError::Refused("you cannot send a message to yourself".into()));
        }
        if !self.is_contact(me.user, m.contact_id).await? {
            return Err(ServiceError::Refused("you can send messages only to your contacts".into()));
        }
        self.limiter.check_message(me.user.0).map_err(ServiceError::Refused)?;
        let (to, now) = (m.contact_id, crate::app::now());
        let outcome = self.blocking(move |s| s.send_message(me.user, to, &m.text, m.client_id.as_deref(), now)).await?;
        let stored = match outcome {
            SendOutcome::Sent(stored) => stored,
            // A retry: the first answer again, and nothing sent twice.
            SendOutcome::Duplicate(first) => {
                return Ok(MessageSent { message_id: MessageId(first.id), sent_at: rfc3339(first.sent_at) });
            }
            SendOutcome::ClientIdReused => {
                return Err(ServiceError::Refused("this client_id was already used for another message".into()));
            }
        };
        let sent = MessageSent { message_id: MessageId(stored.id), sent_at: rfc3339(stored.sent_at) };
        let event =
            ServerEvent::Message(MessageEvent { message: wire_message(stored), sender: self.user(me.user).await? });
        self.hub.to_user(to, &event);
        self.to_my_other_sessions(me, &event);
        Ok(sent)
    }

    fn to_my_other_sessions(&self, me: Authed, event: &ServerEvent) {
        for session in self.presence.sessions_of(me.user).into_iter().filter(|s| *s != me.session) {
            self.hub.to_session(me.user, session, event);
        }
    }

    async fn message_page(&self, me: UserId, q: MessagesQuery) -> ServiceResult<Vec<Message>> {
        let rows = self.blocking(move |s| s.messages(me, q.contact_id, q.page, q.limit)).await?;
        Ok(rows.into_iter().map(wire_message).collect())
    }

    async fn mark_read(&self, me: Authed, read: MessagesRead) -> ServiceResult<()> {
        let contact = read.contact_id;
        let moved = self.blocking(move |s| s.mark_read(me.user, contact, read.message_id)).await?;
        let Some(up_to) = moved else { return Ok(()) };
        self.to_my_other_sessions(
            me,
            &ServerEvent::MessagesRead(MessagesRead { contact_id: contact, message_id: up_to }),
        );
        // The sender learns it only while we are contacts.
        if self.is_contact(me.user, contact).await? {
            let event = ServerEvent::MessagesRead(MessagesRead { contact_id: me.user, message_id: up_to });
            self.hub.to_user(contact, &event);
        }
        Ok(())
    }

    async fn call_history(&self, me: UserId, q: HistoryQuery) -> ServiceResult<Vec<CallHistoryEntry>> {
        let before = q.before.map(|b| b.0);
        let rows = self.blocking(move |s| s.call_history(me, before, q.limit)).await?;
        Ok(rows
            .into_iter()
            .map(|row| CallHistoryEntry {
                entry_id: babel_proto::EntryId(row.entry_id),
                call_id: row.record.call_id,
                direction: row.record.direction,
                with: row.with,
                started_at: rfc3339(row.record.started_at),
                answered_at: row.record.answered_at.map(rfc3339).unwrap_or_default(),
                ended_at: rfc3339(row.record.ended_at),
                reason: row.record.reason,
            })
            .collect())
    }

    /// Stores finished call-history entries (from [`crate::calls::Effects`]).
    pub(crate) async fn record_calls(&self, records: Vec<CallRecord>) {
        if let Err(e) = self.blocking(move |s| s.record_calls(&records)).await {
            tracing::warn!(error = %e, "could not record call history");
        }
    }
}

fn wire_message(m: StoredMessage) -> Message {
    Message {
        message_id: MessageId(m.id),
        from: m.from,
        to: m.to,
        text: m.text,
        sent_at: rfc3339(m.sent_at),
        read: m.read,
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-11-29T18:20:00Z`), by the civil
/// calendar (Howard Hinnant's `civil_from_days`).
pub fn rfc3339(ts: Timestamp) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_976_400), "2026-11-29T18:20:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
