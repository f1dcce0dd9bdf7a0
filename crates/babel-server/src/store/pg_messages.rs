//! The PostgreSQL side of messages and call history: the same queries as
//! [`super::sqlite_messages`], on a connection or transaction the
//! [`super::pg::PgStore`] lends. Every page is one index range, as there;
//! the indexes end with `id`, which gives the order.

use babel_proto::{CallId, Direction, EndReason, MessageId, Page, User, UserId};
use postgres::{GenericClient, Row};

use super::pg::Db;
use super::{CallRecord, HistoryRow, SendOutcome, StoredMessage, Timestamp};

const MESSAGE_COLUMNS: &str = "m.id, m.from_id, m.to_id, m.text, m.sent_at, m.id <= coalesce(r.up_to, 0)";
const READ_JOIN: &str = "LEFT JOIN read_marks r ON r.user_id = m.to_id AND r.contact_id = m.from_id";

type PgResult<T> = Result<T, postgres::Error>;

fn message_from_row(r: &Row) -> PgResult<StoredMessage> {
    Ok(StoredMessage {
        id: r.try_get(0)?,
        from: UserId(r.try_get(1)?),
        to: UserId(r.try_get(2)?),
        text: r.try_get(3)?,
        sent_at: r.try_get(4)?,
        read: r.try_get(5)?,
    })
}

fn pair(a: UserId, b: UserId) -> (i64, i64) {
    (a.0.min(b.0), a.0.max(b.0))
}

fn message_by_id<C: GenericClient>(db: &mut Db<'_, C>, id: i64) -> PgResult<StoredMessage> {
    let row = db.one(&format!("SELECT {MESSAGE_COLUMNS} FROM messages m {READ_JOIN} WHERE m.id = $1"), &[&id])?;
    message_from_row(&row)
}

fn id_with_client_id<C: GenericClient>(db: &mut Db<'_, C>, from: UserId, client_id: &str) -> PgResult<Option<i64>> {
    db.opt("SELECT id FROM messages WHERE from_id = $1 AND client_id = $2", &[&from.0, &client_id])?
        .map(|r| r.try_get(0))
        .transpose()
}

pub(super) fn sent_with_client_id<C: GenericClient>(
    db: &mut Db<'_, C>,
    from: UserId,
    client_id: &str,
) -> PgResult<Option<StoredMessage>> {
    id_with_client_id(db, from, client_id)?.map(|id| message_by_id(db, id)).transpose()
}

/// Runs in a transaction holding both users' locks, so the new id is
/// larger than every message either of them can already see.
pub(super) fn send_message<C: GenericClient>(
    db: &mut Db<'_, C>,
    from: UserId,
    to: UserId,
    text: &str,
    client_id: Option<&str>,
    now: Timestamp,
) -> PgResult<SendOutcome> {
    if let Some(cid) = client_id
        && let Some(id) = id_with_client_id(db, from, cid)?
    {
        let m = message_by_id(db, id)?;
        return Ok(if m.to == to && m.text == text { SendOutcome::Duplicate(m) } else { SendOutcome::ClientIdReused });
    }
    let (lo, hi) = pair(from, to);
    let row = db.one(
        "INSERT INTO messages (from_id, to_id, pair_lo, pair_hi, text, sent_at, client_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[&from.0, &to.0, &lo, &hi, &text, &now, &client_id],
    )?;
    let id: i64 = row.try_get(0)?;
    db.exec(
        "INSERT INTO read_marks (user_id, contact_id, up_to) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
        &[&to.0, &from.0],
    )?;
    Ok(SendOutcome::Sent(StoredMessage { id, from, to, text: text.to_owned(), sent_at: now, read: false }))
}

pub(super) fn messages<C: GenericClient>(
    db: &mut Db<'_, C>,
    me: UserId,
    with: Option<UserId>,
    page: Page,
    limit: u32,
) -> PgResult<Vec<StoredMessage>> {
    // Newest first below a bound, or oldest first above one.
    let (bound, cmp, order) = match page {
        Page::Latest => (i64::MAX, "<", "DESC"),
        Page::Before(b) => (b.0, "<", "DESC"),
        Page::After(a) => (a.0, ">", "ASC"),
    };
    let limit = i64::from(limit);
    let rows = match with {
        Some(other) => {
            let (lo, hi) = pair(me, other);
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m {READ_JOIN}
                  WHERE m.pair_lo = $1 AND m.pair_hi = $2 AND m.id {cmp} $3 ORDER BY m.id {order} LIMIT $4"
            );
            db.query(&sql, &[&lo, &hi, &bound, &limit])?
        }
        None => {
            // Two index ranges (sent, received), each cut to the page, then
            // merged: nobody messages themselves, so no id is in both.
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM (
                    (SELECT id FROM messages WHERE from_id = $1 AND id {cmp} $2 ORDER BY id {order} LIMIT $3)
                    UNION ALL
                    (SELECT id FROM messages WHERE to_id = $1 AND id {cmp} $2 ORDER BY id {order} LIMIT $3)
                 ) AS p JOIN messages m ON m.id = p.id {READ_JOIN}
                 ORDER BY m.id {order} LIMIT $3"
            );
            db.query(&sql, &[&me.0, &bound, &limit])?
        }
    };
    rows.iter().map(message_from_row).collect()
}

/// Runs in a transaction holding `me`'s lock.
pub(super) fn mark_read<C: GenericClient>(
    db: &mut Db<'_, C>,
    me: UserId,
    contact: UserId,
    up_to: MessageId,
) -> PgResult<Option<MessageId>> {
    // The newest message the contact really sent me at or below `up_to`:
    // a mark never claims messages that do not exist yet.
    let newest: Option<i64> = db
        .one(
            "SELECT max(id) FROM messages WHERE to_id = $1 AND from_id = $2 AND id <= $3",
            &[&me.0, &contact.0, &up_to.0],
        )?
        .try_get(0)?;
    let Some(newest) = newest else { return Ok(None) };
    let current: i64 = db
        .opt("SELECT up_to FROM read_marks WHERE user_id = $1 AND contact_id = $2", &[&me.0, &contact.0])?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
    if newest <= current {
        return Ok(None);
    }
    db.exec(
        "INSERT INTO read_marks (user_id, contact_id, up_to) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, contact_id) DO UPDATE SET up_to = greatest(read_marks.up_to, excluded.up_to)",
        &[&me.0, &contact.0, &newest],
    )?;
    Ok(Some(MessageId(newest)))
}

pub(super) fn unread<C: GenericClient>(db: &mut Db<'_, C>, me: UserId) -> PgResult<Vec<(UserId, u32)>> {
    // One index range per sender, from their read mark up.
    db.query(
        "SELECT contact_id, n FROM (
            SELECT r.contact_id, (SELECT count(*) FROM messages m
                                   WHERE m.to_id = r.user_id AND m.from_id = r.contact_id AND m.id > r.up_to) AS n
              FROM read_marks r WHERE r.user_id = $1) AS c
          WHERE n > 0 ORDER BY contact_id",
        &[&me.0],
    )?
    .iter()
    .map(|r| Ok((UserId(r.try_get(0)?), u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(u32::MAX))))
    .collect()
}

fn reason_from(text: &str) -> Option<EndReason> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

pub(super) fn record_calls<C: GenericClient>(db: &mut Db<'_, C>, records: &[CallRecord]) -> PgResult<()> {
    for r in records {
        let with: Vec<String> = r.with.iter().map(|u| u.0.to_string()).collect();
        // A user deleted meanwhile has no history to keep.
        db.exec(
            "INSERT INTO call_history
               (user_id, call_id, direction, with_ids, started_at, answered_at, ended_at, reason)
             SELECT $1::bigint, $2::bigint, $3::text, $4::text, $5::bigint, $6::bigint, $7::bigint, $8::text
              WHERE EXISTS (SELECT 1 FROM users WHERE id = $1::bigint)",
            &[
                &r.user.0,
                &(r.call_id.0 as i64),
                &r.direction.as_str(),
                &with.join(","),
                &r.started_at,
                &r.answered_at,
                &r.ended_at,
                &r.reason.as_str(),
            ],
        )?;
    }
    Ok(())
}

pub(super) fn call_history<C: GenericClient>(
    db: &mut Db<'_, C>,
    me: UserId,
    before: Option<i64>,
    limit: u32,
) -> PgResult<Vec<HistoryRow>> {
    let raw = db.query(
        "SELECT id, call_id, direction, with_ids, started_at, answered_at, ended_at, reason FROM call_history
          WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        &[&me.0, &before.unwrap_or(i64::MAX), &i64::from(limit)],
    )?;
    let mut rows = Vec::with_capacity(raw.len());
    for r in raw {
        let entry_id: i64 = r.try_get(0)?;
        let direction = if r.try_get::<_, &str>(2)? == "out" { Direction::Out } else { Direction::In };
        let Some(reason) = reason_from(r.try_get(7)?) else {
            tracing::warn!(entry_id, "call history entry with an unknown reason skipped");
            continue;
        };
        let ids: Vec<UserId> = r.try_get::<_, &str>(3)?.split(',').filter_map(|s| s.parse().ok()).collect();
        let mut with = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(u) = db.opt("SELECT id, name, email FROM users WHERE id = $1", &[&id.0])? {
                with.push(User { id: UserId(u.try_get(0)?), name: u.try_get(1)?, email: u.try_get(2)? });
            }
        }
        let record = CallRecord {
            user: me,
            call_id: CallId(r.try_get::<_, i64>(1)? as u64),
            direction,
            with: ids,
            started_at: r.try_get(4)?,
            answered_at: r.try_get(5)?,
            ended_at: r.try_get(6)?,
            reason,
        };
        rows.push(HistoryRow { entry_id, record, with });
    }
    Ok(rows)
}
