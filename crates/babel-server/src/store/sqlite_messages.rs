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

#[cfg(test)]
mod tests {
    use babel_proto::{CallId, Direction, EndReason, MessageId, Page, UserId};

    use crate::identity;
    use crate::store::sqlite::{Durability, SqliteStore};
    use crate::store::{CallRecord, SendOutcome, Store};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("t.db"), Durability::Normal).unwrap();
        (dir, s)
    }

    fn user(s: &SqliteStore, email: &str) -> UserId {
        s.create_user(email, &identity::skeleton_of(email), email.split('@').next().unwrap(), "hash", 0).unwrap().id
    }

    fn sent(o: SendOutcome) -> i64 {
        match o {
            SendOutcome::Sent(m) => m.id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_id_makes_a_retry_answer_the_first() {
        let (_d, s) = store();
        let (a, b) = (user(&s, "a@x.org"), user(&s, "b@x.org"));
        let first = sent(s.send_message(a, b, "hi", Some("c1"), 10).unwrap());
        assert_eq!(s.sent_with_client_id(a, "c1").unwrap().map(|m| m.id), Some(first));
        assert_eq!(s.sent_with_client_id(b, "c1").unwrap(), None);
        match s.send_message(a, b, "hi", Some("c1"), 20).unwrap() {
            SendOutcome::Duplicate(m) => assert_eq!((m.id, m.sent_at), (first, 10)),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.send_message(a, b, "other", Some("c1"), 20).unwrap(), SendOutcome::ClientIdReused);
        // Another sender may use the same client_id.
        sent(s.send_message(b, a, "hi", Some("c1"), 20).unwrap());
        assert_eq!(s.messages(b, Some(a), Page::Latest, 50).unwrap().len(), 2);
    }

    #[test]
    fn pages_both_ways_and_across_conversations() {
        let (_d, s) = store();
        let (a, b, c) = (user(&s, "a@x.org"), user(&s, "b@x.org"), user(&s, "c@x.org"));
        let mut ab = Vec::new();
        for i in 0..10 {
            ab.push(sent(
                s.send_message(if i % 2 == 0 { a } else { b }, if i % 2 == 0 { b } else { a }, "m", None, i).unwrap(),
            ));
            sent(s.send_message(c, a, "from c", None, i).unwrap());
        }
        let ids = |v: Vec<crate::store::StoredMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        let newest: Vec<i64> = ab.iter().rev().take(3).copied().collect();
        assert_eq!(ids(s.messages(a, Some(b), Page::Latest, 3).unwrap()), newest);
        assert_eq!(ids(s.messages(b, Some(a), Page::Latest, 3).unwrap()), newest, "the same from both sides");
        let older: Vec<i64> = ab[4..7].iter().rev().copied().collect();
        assert_eq!(ids(s.messages(a, Some(b), Page::Before(MessageId(ab[7])), 3).unwrap()), older);
        assert_eq!(ids(s.messages(a, Some(b), Page::After(MessageId(ab[2])), 3).unwrap()), ab[3..6].to_vec());
        assert!(s.messages(a, Some(b), Page::Before(MessageId(ab[0])), 3).unwrap().is_empty());
        let all = ids(s.messages(a, None, Page::Latest, 100).unwrap());
        assert_eq!(all.len(), 20);
        assert!(all.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(ids(s.messages(b, None, Page::Latest, 100).unwrap()).len(), 10, "c's messages are not b's");
        let after = ids(s.messages(a, None, Page::After(MessageId(ab[8])), 100).unwrap());
        assert!(after.windows(2).all(|w| w[0] < w[1]) && after.len() == 3, "{after:?}");
    }

    #[test]
    fn read_marks_move_forward_only_and_count() {
        let (_d, s) = store();
        let (a, b, c) = (user(&s, "a@x.org"), user(&s, "b@x.org"), user(&s, "c@x.org"));
        let m1 = sent(s.send_message(b, a, "1", None, 0).unwrap());
        let m2 = sent(s.send_message(b, a, "2", None, 0).unwrap());
        let mine = sent(s.send_message(a, b, "mine", None, 0).unwrap());
        sent(s.send_message(c, a, "c", None, 0).unwrap());
        assert_eq!(s.unread(a).unwrap(), vec![(b, 2), (c, 1)]);
        assert_eq!(s.unread(b).unwrap(), vec![(a, 1)]);
        assert_eq!(s.mark_read(a, b, MessageId(m1)).unwrap(), Some(MessageId(m1)));
        assert_eq!(s.unread(a).unwrap(), vec![(b, 1), (c, 1)]);
        assert_eq!(s.mark_read(a, b, MessageId(m1)).unwrap(), None, "the same mark again");
        // Up to an id past everything: only up to the newest b really sent.
        assert_eq!(s.mark_read(a, b, MessageId(i64::MAX)).unwrap(), Some(MessageId(m2)));
        assert_eq!(s.mark_read(a, b, MessageId(m1)).unwrap(), None, "never backwards");
        assert_eq!(s.unread(a).unwrap(), vec![(c, 1)]);
        let page = s.messages(a, Some(b), Page::Latest, 10).unwrap();
        assert!(page.iter().find(|m| m.id == m2).unwrap().read);
        assert!(!page.iter().find(|m| m.id == mine).unwrap().read, "b has not read mine");
        assert_eq!(s.mark_read(b, a, MessageId(m2)).unwrap(), None, "b received nothing up to m2");
        assert_eq!(s.mark_read(a, c, MessageId(0)).unwrap(), None);
    }

    #[test]
    fn call_history_pages_and_outlives_a_deleted_peer() {
        let (_d, s) = store();
        let (a, b) = (user(&s, "a@x.org"), user(&s, "b@x.org"));
        let rec = |user, call: u64, with: Vec<UserId>| CallRecord {
            user,
            call_id: CallId(call),
            direction: if user == a { Direction::Out } else { Direction::In },
            with,
            started_at: 1,
            answered_at: None,
            ended_at: 2,
            reason: EndReason::Timeout,
        };
        let big = u64::MAX >> 1;
        s.record_calls(&[rec(a, big, vec![b]), rec(b, big, vec![a])]).unwrap();
        s.record_calls(&[rec(a, 7, vec![b])]).unwrap();
        let h = s.call_history(a, None, 10).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].record.call_id, h[1].record.call_id), (CallId(7), CallId(big)));
        assert_eq!(h[0].with[0].email, "b@x.org");
        let older = s.call_history(a, Some(h[0].entry_id), 10).unwrap();
        assert_eq!(older.len(), 1);
        assert_eq!(older[0].record, rec(a, big, vec![b]));
        s.delete_user(b).unwrap();
        let h = s.call_history(a, None, 10).unwrap();
        assert!(h[0].with.is_empty(), "a deleted account is not shown");
        // Records of a deleted user are dropped, the others kept.
        s.record_calls(&[rec(b, 9, vec![a]), rec(a, 9, vec![b])]).unwrap();
        assert_eq!(s.call_history(a, None, 10).unwrap().len(), 3);
        assert_eq!(s.messages(a, None, Page::Latest, 10).unwrap().len(), 0);
    }

    #[test]
    fn deleting_an_account_deletes_its_messages() {
        let (_d, s) = store();
        let (a, b) = (user(&s, "a@x.org"), user(&s, "b@x.org"));
        sent(s.send_message(a, b, "x", None, 0).unwrap());
        s.delete_user(a).unwrap();
        assert!(s.messages(b, None, Page::Latest, 10).unwrap().is_empty());
        assert!(s.unread(b).unwrap().is_empty());
    }
}
