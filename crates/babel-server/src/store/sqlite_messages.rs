//! The SQLite side of messages and call history: the queries behind the
//! [`super::Store`] methods of the same names, on a connection the
//! [`super::sqlite::SqliteStore`] lends.
//!
//! Every page is one index range: a conversation by `(pair_lo, pair_hi)`,
//! all of a user's messages by `from_id` and `to_id` (two ranges merged),
//! history by `user_id`; the `rowid` that ends every index entry gives the
//! order. Read marks are one row per (reader, sender), so `/mark_read`
//! writes one row whatever the number of messages it covers.

use babel_proto::{CallId, Direction, EndReason, MessageId, Page, User, UserId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{CallRecord, HistoryRow, SendOutcome, StoredMessage, Timestamp};

/// Schema 3: messages, read marks, call history.
pub(super) const SCHEMA: &str = "
    CREATE TABLE messages (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        from_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        to_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        -- The conversation: min and max of the two ids.
        pair_lo    INTEGER NOT NULL,
        pair_hi    INTEGER NOT NULL,
        text       TEXT NOT NULL,
        sent_at    INTEGER NOT NULL,
        client_id  TEXT
    );
    CREATE INDEX messages_pair ON messages(pair_lo, pair_hi);
    CREATE INDEX messages_from ON messages(from_id);
    CREATE INDEX messages_to ON messages(to_id);
    CREATE INDEX messages_to_from ON messages(to_id, from_id);
    CREATE UNIQUE INDEX messages_client ON messages(from_id, client_id) WHERE client_id IS NOT NULL;
    -- What user_id has read of what contact_id sent: every id up to up_to.
    -- A row exists (up_to 0) from the first message contact_id sends, so
    -- the rows are also the list of everyone who ever wrote to user_id.
    CREATE TABLE read_marks (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        contact_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        up_to      INTEGER NOT NULL,
        PRIMARY KEY (user_id, contact_id)
    ) WITHOUT ROWID;
    CREATE TABLE call_history (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        call_id     INTEGER NOT NULL,
        direction   TEXT NOT NULL,
        -- The other users' ids, comma-separated, in order.
        with_ids    TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        answered_at INTEGER,
        ended_at    INTEGER NOT NULL,
        reason      TEXT NOT NULL
    );
    CREATE INDEX call_history_user ON call_history(user_id);";

const MESSAGE_COLUMNS: &str = "m.id, m.from_id, m.to_id, m.text, m.sent_at, m.id <= coalesce(r.up_to, 0)";
const READ_JOIN: &str = "LEFT JOIN read_marks r ON r.user_id = m.to_id AND r.contact_id = m.from_id";

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: r.get(0)?,
        from: UserId(r.get(1)?),
        to: UserId(r.get(2)?),
        text: r.get(3)?,
        sent_at: r.get(4)?,
        read: r.get(5)?,
    })
}

fn pair(a: UserId, b: UserId) -> (i64, i64) {
    (a.0.min(b.0), a.0.max(b.0))
}

fn message_by_id(c: &Connection, id: i64) -> rusqlite::Result<StoredMessage> {
    c.query_row(
        &format!("SELECT {MESSAGE_COLUMNS} FROM messages m {READ_JOIN} WHERE m.id = ?1"),
        [id],
        message_from_row,
    )
}

pub(super) fn sent_with_client_id(
    c: &Connection,
    from: UserId,
    client_id: &str,
) -> rusqlite::Result<Option<StoredMessage>> {
    let id: Option<i64> = c
        .query_row("SELECT id FROM messages WHERE from_id = ?1 AND client_id = ?2", params![from.0, client_id], |r| {
            r.get(0)
        })
        .optional()?;
    id.map(|id| message_by_id(c, id)).transpose()
}

pub(super) fn send_message(
    c: &mut Connection,
    from: UserId,
    to: UserId,
    text: &str,
    client_id: Option<&str>,
    now: Timestamp,
) -> rusqlite::Result<SendOutcome> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(cid) = client_id {
        let first: Option<i64> = tx
            .query_row("SELECT id FROM messages WHERE from_id = ?1 AND client_id = ?2", params![from.0, cid], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(id) = first {
            let m = message_by_id(&tx, id)?;
            return Ok(if m.to == to && m.text == text {
                SendOutcome::Duplicate(m)
            } else {
                SendOutcome::ClientIdReused
            });
        }
    }
    let (lo, hi) = pair(from, to);
    tx.execute(
        "INSERT INTO messages (from_id, to_id, pair_lo, pair_hi, text, sent_at, client_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![from.0, to.0, lo, hi, text, now, client_id],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT OR IGNORE INTO read_marks (user_id, contact_id, up_to) VALUES (?1, ?2, 0)",
        params![to.0, from.0],
    )?;
    tx.commit()?;
    Ok(SendOutcome::Sent(StoredMessage { id, from, to, text: text.to_owned(), sent_at: now, read: false }))
}

pub(super) fn messages(
    c: &Connection,
    me: UserId,
    with: Option<UserId>,
    page: Page,
    limit: u32,
) -> rusqlite::Result<Vec<StoredMessage>> {
    // Newest first below a bound, or oldest first above one.
    let (bound, cmp, order) = match page {
        Page::Latest => (i64::MAX, "<", "DESC"),
        Page::Before(b) => (b.0, "<", "DESC"),
        Page::After(a) => (a.0, ">", "ASC"),
    };
    let limit = i64::from(limit);
    match with {
        Some(other) => {
            let (lo, hi) = pair(me, other);
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m {READ_JOIN}
                  WHERE m.pair_lo = ?1 AND m.pair_hi = ?2 AND m.id {cmp} ?3 ORDER BY m.id {order} LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            stmt.query_map(params![lo, hi, bound, limit], message_from_row)?.collect()
        }
        None => {
            // Two index ranges (sent, received), each cut to the page, then
            // merged: nobody messages themselves, so no id is in both.
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM (
                    SELECT id FROM (SELECT id FROM messages WHERE from_id = ?1 AND id {cmp} ?2 ORDER BY id {order} LIMIT ?3)
                    UNION ALL
                    SELECT id FROM (SELECT id FROM messages WHERE to_id = ?1 AND id {cmp} ?2 ORDER BY id {order} LIMIT ?3)
                 ) AS p JOIN messages m ON m.id = p.id {READ_JOIN}
                 ORDER BY m.id {order} LIMIT ?3"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            stmt.query_map(params![me.0, bound, limit], message_from_row)?.collect()
        }
    }
}

pub(super) fn mark_read(
    c: &mut Connection,
    me: UserId,
    contact: UserId,
    up_to: MessageId,
) -> rusqlite::Result<Option<MessageId>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The newest message the contact really sent me at or below `up_to`:
    // a mark never claims messages that do not exist yet.
    let newest: Option<i64> = tx.query_row(
        "SELECT max(id) FROM messages WHERE to_id = ?1 AND from_id = ?2 AND id <= ?3",
        params![me.0, contact.0, up_to.0],
        |r| r.get(0),
    )?;
    let Some(newest) = newest else { return Ok(None) };
    let current: i64 = tx
        .query_row(
            "SELECT up_to FROM read_marks WHERE user_id = ?1 AND contact_id = ?2",
            params![me.0, contact.0],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    if newest <= current {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO read_marks (user_id, contact_id, up_to) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, contact_id) DO UPDATE SET up_to = max(up_to, excluded.up_to)",
        params![me.0, contact.0, newest],
    )?;
    tx.commit()?;
    Ok(Some(MessageId(newest)))
}

pub(super) fn unread(c: &Connection, me: UserId) -> rusqlite::Result<Vec<(UserId, u32)>> {
    // One index range per sender, from their read mark up: the cost is the
    // unread messages, not the conversation's length.
    let mut stmt = c.prepare_cached(
        "SELECT contact_id, n FROM (
            SELECT r.contact_id, (SELECT count(*) FROM messages m
                                   WHERE m.to_id = r.user_id AND m.from_id = r.contact_id AND m.id > r.up_to) AS n
              FROM read_marks r WHERE r.user_id = ?1)
          WHERE n > 0 ORDER BY contact_id",
    )?;
    stmt.query_map([me.0], |r| Ok((UserId(r.get(0)?), u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX))))?
        .collect()
}

fn reason_text(r: EndReason) -> &'static str {
    r.as_str()
}

fn reason_from(text: &str) -> Option<EndReason> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

pub(super) fn record_calls(c: &mut Connection, records: &[CallRecord]) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        // A user deleted meanwhile has no history to keep.
        let mut stmt = tx.prepare_cached(
            "INSERT INTO call_history
               (user_id, call_id, direction, with_ids, started_at, answered_at, ended_at, reason)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1)",
        )?;
        for r in records {
            let with: Vec<String> = r.with.iter().map(|u| u.0.to_string()).collect();
            stmt.execute(params![
                r.user.0,
                r.call_id.0 as i64,
                r.direction.as_str(),
                with.join(","),
                r.started_at,
                r.answered_at,
                r.ended_at,
                reason_text(r.reason),
            ])?;
        }
    }
    tx.commit()
}

pub(super) fn call_history(
    c: &Connection,
    me: UserId,
    before: Option<i64>,
    limit: u32,
) -> rusqlite::Result<Vec<HistoryRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, call_id, direction, with_ids, started_at, answered_at, ended_at, reason FROM call_history
          WHERE user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
    )?;
    type Raw = (i64, i64, String, String, Timestamp, Option<Timestamp>, Timestamp, String);
    let raw: Vec<Raw> = stmt
        .query_map(params![me.0, before.unwrap_or(i64::MAX), i64::from(limit)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut user_stmt = c.prepare_cached("SELECT id, name, email FROM users WHERE id = ?1")?;
    let mut rows = Vec::with_capacity(raw.len());
    for (entry_id, call_id, direction, with_ids, started_at, answered_at, ended_at, reason) in raw {
        let direction = if direction == "out" { Direction::Out } else { Direction::In };
        let Some(reason) = reason_from(&reason) else {
            tracing::warn!(entry_id, "call history entry with an unknown reason skipped");
            continue;
        };
        let ids: Vec<UserId> = with_ids.split(',').filter_map(|s| s.parse().ok()).collect();
        let mut with = Vec::with_capacity(ids.len());
        for id in &ids {
            let u = user_stmt
                .query_row([id.0], |r| Ok(User { id: UserId(r.get(0)?), name: r.get(1)?, email: r.get(2)? }))
                .optional()?;
            with.extend(u);
        }
        let record = CallRecord {
            user: me,
            call_id: CallId(call_id as u64),
            direction,
            with: ids,
            started_at,
            answered_at,
            ended_at,
            reason,
        };
        rows.push(HistoryRow { entry_id, record, with });
    }
    Ok(rows)
}
