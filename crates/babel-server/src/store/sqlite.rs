//! The embedded SQLite store: one file, WAL journal, foreign keys, versioned
//! migrations (`PRAGMA user_version`).
//!
//! One writer connection behind a mutex (SQLite allows one writer at a time
//! anyway) and a small pool of reader connections, which WAL lets run beside
//! the writer. `synchronous` is FULL by default, so a commit is on disk before
//! the call returns; NORMAL still survives a killed process (the WAL is in the
//! OS page cache) but not a power cut.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use babel_proto::{ChosenStatus, MessageId, Page, User, UserId};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::identity;

use super::sqlite_messages as msg;
use super::{
    Account, AddOutcome, CallRecord, HistoryRow, Relation, RemoveOutcome, SendOutcome, SessionDetail, SessionId,
    SessionRecord, Store, StoreError, StoreResult, StoredMessage, Timestamp, TokenHash,
};

/// One step of the schema: SQL, or Rust for what SQL cannot compute.
enum Migration {
    Sql(&'static str),
    Rust(fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>),
}

/// Each entry moves the schema one version up; never edit a released one.
const MIGRATIONS: &[Migration] = &[
    // 1: accounts, sessions, contacts, requests.
    Migration::Sql(
        "CREATE TABLE users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        email         TEXT NOT NULL UNIQUE,
        name          TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash  BLOB NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        last_used   INTEGER NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE INDEX sessions_last_used ON sessions(last_used);
    -- Stored both ways, so each user's list is one index range.
    CREATE TABLE contacts (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        contact_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, contact_id)
    ) WITHOUT ROWID;
    CREATE INDEX contacts_contact ON contacts(contact_id);
    CREATE TABLE requests (
        from_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        to_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (from_id, to_id)
    ) WITHOUT ROWID;
    CREATE INDEX requests_to ON requests(to_id);",
    ),
    // 2: canonical addresses, confusable skeletons, look-alikes flagged.
    Migration::Rust(migrate_email_identity),
    // 3: messages, read marks, call history.
    Migration::Sql(super::sqlite_messages::SCHEMA),
    // 4: account and privacy (issue #17): chosen status, where a session
    // was opened from, blocks, and the requests a blocked user sent (kept
    // where only their sender sees them, so nothing tells them of the block).
    Migration::Sql(
        "ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'available';
    ALTER TABLE sessions ADD COLUMN address TEXT NOT NULL DEFAULT '';
    CREATE TABLE blocks (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        blocked_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, blocked_id)
    ) WITHOUT ROWID;
    CREATE INDEX blocks_blocked ON blocks(blocked_id);
    CREATE TABLE withheld_requests (
        from_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        to_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (from_id, to_id)
    ) WITHOUT ROWID;
    CREATE INDEX withheld_requests_to ON withheld_requests(to_id);",
    ),
];

/// Schema 2 (issue #14, finding 9): addresses become canonical
/// ([`identity::canonical_email`]) and each account reserves its address's
/// confusable skeleton. Nothing is lost where old accounts now collide:
///
/// * accounts whose stored address is already canonical are settled first,
///   then the others, each group oldest first; the first to claim a
///   canonical address or a skeleton keeps it;
/// * an account that needs rewriting and whose canonical form is free takes
///   it, and keeps its old address in `legacy_email` (it still logs in);
/// * an account that collides keeps its exact stored address (its password,
///   contacts and sessions too), reserves no skeleton, and is flagged with
///   `lookalike_of` = the account it resembles;
/// * an address that is no longer valid at all (say, a domain IDNA refuses)
///   stays as it is;
/// * display names lose the characters now refused ([`identity::migrated_name`]).
fn migrate_email_identity(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE users ADD COLUMN email_skeleton TEXT;
         ALTER TABLE users ADD COLUMN legacy_email TEXT;
         ALTER TABLE users ADD COLUMN lookalike_of INTEGER;",
    )?;
    // Names first: they are display only, so they just lose what is now
    // refused (a right-to-left override, a zero-width space).
    let names: Vec<(i64, String, String)> = {
        let mut stmt = tx.prepare("SELECT id, name, email FROM users")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?
    };
    for (id, name, email) in names {
        let cleaned = identity::migrated_name(&name, &email);
        if cleaned != name {
            tx.execute("UPDATE users SET name = ?2 WHERE id = ?1", params![id, cleaned])?;
        }
    }
    let rows: Vec<(i64, String)> = {
        let mut stmt = tx.prepare("SELECT id, email FROM users ORDER BY id")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
    };
    let planned: Vec<(i64, String, Option<identity::CanonicalEmail>)> =
        rows.into_iter().map(|(id, stored)| (id, stored.clone(), identity::migrated_email(&stored))).collect();
    let (already, others): (Vec<_>, Vec<_>) =
        planned.into_iter().partition(|(_, stored, c)| c.as_ref().is_some_and(|c| &c.email == stored));
    let owner = |sql: &str, value: &str, me: i64| -> rusqlite::Result<Option<i64>> {
        tx.query_row(sql, params![value, me], |r| r.get(0)).optional()
    };
    let (mut rewritten, mut flagged) = (0usize, 0usize);
    for (id, stored, canonical) in already.into_iter().chain(others) {
        let (email, skeleton) = match canonical {
            Some(c) => (c.email, c.skeleton),
            None => (stored.clone(), identity::skeleton_of(&stored)),
        };
        let email_owner = owner("SELECT id FROM users WHERE email = ?1 AND id != ?2", &email, id)?;
        let skeleton_owner = owner("SELECT id FROM users WHERE email_skeleton = ?1 AND id != ?2", &skeleton, id)?;
        let email = if email_owner.is_some() { stored.clone() } else { email };
        let lookalike_of = email_owner.or(skeleton_owner);
        let skeleton = lookalike_of.is_none().then_some(skeleton);
        let legacy = (email != stored).then_some(&stored);
        rewritten += usize::from(legacy.is_some());
        flagged += usize::from(lookalike_of.is_some());
        tx.execute(
            "UPDATE users SET email = ?2, email_skeleton = ?3, legacy_email = ?4, lookalike_of = ?5 WHERE id = ?1",
            params![id, email, skeleton, legacy, lookalike_of],
        )?;
    }
    tx.execute_batch(
        "CREATE UNIQUE INDEX users_email_skeleton ON users(email_skeleton);
         CREATE UNIQUE INDEX users_legacy_email ON users(legacy_email);",
    )?;
    if rewritten + flagged > 0 {
        tracing::warn!(
            rewritten,
            flagged,
            "accounts migrated to canonical addresses; look-alikes are flagged in users.lookalike_of"
        );
    }
    Ok(())
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync on every commit: survives a power cut.
    #[default]
    Full,
    /// fsync at checkpoints: survives a killed process, not a power cut.
    Normal,
}

/// The SQLite implementation of [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    durability: Durability,
}

const MAX_IDLE_READERS: usize = 8;

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    Ok(())
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User { id: UserId(row.get(0)?), name: row.get(1)?, email: row.get(2)? })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema
    /// up to date.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(&path).map_err(backend)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!("cannot switch {} to WAL (got {mode})", path.display())));
        }
        configure(&conn, durability).map_err(backend)?;
        migrate(&mut conn)?;
        Ok(SqliteStore { path, writer: Mutex::new(conn), readers: Mutex::new(Vec::new()), durability })
    }

    /// The schema version the file is at.
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        // A panic while holding the lock cannot leave a half transaction behind
        // (rusqlite rolls back on drop), so a poisoned lock is safe to reuse.
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(backend)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(backend)?;
                configure(&c, self.durability).map_err(backend)?;
                c
            }
        };
        let out = f(&conn).map_err(backend);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Read-only connections cannot fold the WAL back into the database:
        // close them first so the writer is the last one and does.
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writer.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!(error = %e, "could not checkpoint the database on close");
        }
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(backend)?;
    let target = MIGRATIONS.len() as i64;
    if current > target {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this server knows ({target}); upgrade the server"
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive).map_err(backend)?;
        match step {
            Migration::Sql(sql) => tx.execute_batch(sql).map_err(backend)?,
            Migration::Rust(f) => f(&tx).map_err(backend)?,
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

fn linked(tx: &Connection, a: UserId, b: UserId) -> rusqlite::Result<(bool, bool, bool)> {
    let contact = tx
        .query_row("SELECT 1 FROM contacts WHERE user_id = ?1 AND contact_id = ?2", params![a.0, b.0], |_| Ok(()))
        .optional()?
        .is_some();
    let req = |x: UserId, y: UserId| -> rusqlite::Result<bool> {
        Ok(tx
            .query_row("SELECT 1 FROM requests WHERE from_id = ?1 AND to_id = ?2", params![x.0, y.0], |_| Ok(()))
            .optional()?
            .is_some())
    };
    Ok((contact, req(a, b)?, req(b, a)?))
}

fn exists(tx: &Connection, sql: &str, a: UserId, b: UserId) -> rusqlite::Result<bool> {
    Ok(tx.query_row(sql, params![a.0, b.0], |_| Ok(())).optional()?.is_some())
}

/// Whether `a` blocks `b`.
fn blocks(tx: &Connection, a: UserId, b: UserId) -> rusqlite::Result<bool> {
    exists(tx, "SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked_id = ?2", a, b)
}

/// Whether `a` has a withheld request to `b`.
fn withheld(tx: &Connection, a: UserId, b: UserId) -> rusqlite::Result<bool> {
    exists(tx, "SELECT 1 FROM withheld_requests WHERE from_id = ?1 AND to_id = ?2", a, b)
}

fn make_contacts(tx: &Connection, a: UserId, b: UserId) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM requests WHERE (from_id = ?1 AND to_id = ?2) OR (from_id = ?2 AND to_id = ?1)",
        params![a.0, b.0],
    )?;
    tx.execute(
        "DELETE FROM withheld_requests WHERE (from_id = ?1 AND to_id = ?2) OR (from_id = ?2 AND to_id = ?1)",
        params![a.0, b.0],
    )?;
    tx.execute("INSERT OR IGNORE INTO contacts (user_id, contact_id) VALUES (?1, ?2), (?2, ?1)", params![a.0, b.0])?;
    Ok(())
}

impl Store for SqliteStore {
    fn create_user(
        &self,
        email: &str,
        skeleton: &str,
        name: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> StoreResult<User> {
        let res = self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken = |sql: &str, v: &str| -> rusqlite::Result<bool> {
                Ok(tx.query_row(sql, params![v], |_| Ok(())).optional()?.is_some())
            };
            if taken("SELECT 1 FROM users WHERE email = ?1", email)? {
                return Ok(Err(StoreError::EmailTaken));
            }
            if taken("SELECT 1 FROM users WHERE email_skeleton = ?1", skeleton)? {
                return Ok(Err(StoreError::LookAlike));
            }
            tx.execute(
                "INSERT INTO users (email, email_skeleton, name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![email, skeleton, name, password_hash, now],
            )?;
            let id = UserId(tx.last_insert_rowid());
            tx.commit()?;
            Ok(Ok(id))
        })?;
        res.map(|id| User { id, name: name.to_owned(), email: email.to_owned() })
    }

    fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        self.read(|c| {
            c.query_row("SELECT id, name, email, password_hash FROM users WHERE email = ?1", params![email], |r| {
                Ok(Account { user: user_from_row(r)?, password_hash: r.get(3)? })
            })
            .optional()
        })
    }

    fn account_for_login(&self, exact: &str, canonical: Option<&str>) -> StoreResult<Option<Account>> {
        self.read(|c| {
            c.query_row(
                "SELECT id, name, email, password_hash FROM users
                  WHERE email = ?1 OR legacy_email = ?1 OR email = ?2
                  ORDER BY coalesce(email = ?1 OR legacy_email = ?1, 0) DESC LIMIT 1",
                params![exact, canonical],
                |r| Ok(Account { user: user_from_row(r)?, password_hash: r.get(3)? }),
            )
            .optional()
        })
    }

    fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read(|c| {
            c.query_row("SELECT id, name, email FROM users WHERE id = ?1", params![id.0], user_from_row).optional()
        })
    }

    fn delete_user(&self, id: UserId) -> StoreResult<Option<Vec<UserId>>> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists =
                tx.query_row("SELECT 1 FROM users WHERE id = ?1", params![id.0], |_| Ok(())).optional()?.is_some();
            if !exists {
                return Ok(None);
            }
            let linked: Vec<UserId> = {
                let mut stmt = tx.prepare(
                    "SELECT contact_id FROM contacts WHERE user_id = ?1
                     UNION SELECT to_id FROM requests WHERE from_id = ?1
                     UNION SELECT from_id FROM requests WHERE to_id = ?1
                     UNION SELECT from_id FROM withheld_requests WHERE to_id = ?1",
                )?;
                stmt.query_map(params![id.0], |r| r.get(0).map(UserId))?.collect::<rusqlite::Result<_>>()?
            };
            // ON DELETE CASCADE removes sessions, contacts and requests.
            tx.execute("DELETE FROM users WHERE id = ?1", params![id.0])?;
            tx.commit()?;
            Ok(Some(linked))
        })
    }

    fn create_session(&self, user: UserId, token: &TokenHash, now: Timestamp) -> StoreResult<SessionId> {
        self.write(|c| {
            c.execute(
                "INSERT INTO sessions (user_id, token_hash, created_at, last_used) VALUES (?1, ?2, ?3, ?3)",
                params![user.0, &token[..], now],
            )?;
            Ok(SessionId(c.last_insert_rowid()))
        })
    }

    fn session(&self, token: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.read(|c| {
            c.query_row("SELECT id, user_id, last_used FROM sessions WHERE token_hash = ?1", params![&token[..]], |r| {
                Ok(SessionRecord { id: SessionId(r.get(0)?), user: UserId(r.get(1)?), last_used: r.get(2)? })
            })
            .optional()
        })
    }

    fn touch_session(&self, id: SessionId, now: Timestamp) -> StoreResult<()> {
        self.write(|c| {
            c.execute("UPDATE sessions SET last_used = max(last_used, ?2) WHERE id = ?1", params![id.0, now])
                .map(|_| ())
        })
    }

    fn delete_session(&self, id: SessionId) -> StoreResult<bool> {
        self.write(|c| c.execute("DELETE FROM sessions WHERE id = ?1", params![id.0]).map(|n| n > 0))
    }

    fn purge_sessions(&self, cutoff: Timestamp) -> StoreResult<Vec<SessionRecord>> {
        self.write(|c| {
            let mut stmt =
                c.prepare_cached("DELETE FROM sessions WHERE last_used < ?1 RETURNING id, user_id, last_used")?;
            let rows = stmt.query_map(params![cutoff], |r| {
                Ok(SessionRecord { id: SessionId(r.get(0)?), user: UserId(r.get(1)?), last_used: r.get(2)? })
            })?;
            rows.collect()
        })
    }

    fn user_sessions(&self, user: UserId) -> StoreResult<Vec<SessionRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id, last_used FROM sessions WHERE user_id = ?1 ORDER BY id")?;
            let rows = stmt.query_map(params![user.0], |r| {
                Ok(SessionRecord { id: SessionId(r.get(0)?), user, last_used: r.get(1)? })
            })?;
            rows.collect()
        })
    }

    fn contacts(&self, user: UserId) -> StoreResult<Vec<(User, Relation)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.name, u.email, 0 FROM contacts k JOIN users u ON u.id = k.contact_id
                   WHERE k.user_id = ?1
                 UNION ALL
                 SELECT u.id, u.name, u.email, 1 FROM requests q JOIN users u ON u.id = q.to_id
                   WHERE q.from_id = ?1
                 UNION ALL
                 SELECT u.id, u.name, u.email, 1 FROM withheld_requests q JOIN users u ON u.id = q.to_id
                   WHERE q.from_id = ?1
                 ORDER BY 2 COLLATE NOCASE, 1",
            )?;
            stmt.query_map(params![user.0], |r| {
                let rel = if r.get::<_, i64>(3)? == 0 { Relation::Contact } else { Relation::Outgoing };
                Ok((user_from_row(r)?, rel))
            })?
            .collect()
        })
    }

    fn incoming_requests(&self, user: UserId) -> StoreResult<Vec<User>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.name, u.email FROM requests q JOIN users u ON u.id = q.from_id
                  WHERE q.to_id = ?1 ORDER BY q.created_at, u.id",
            )?;
            stmt.query_map(params![user.0], user_from_row)?.collect()
        })
    }

    fn add_request(&self, from: UserId, to: UserId, now: Timestamp) -> StoreResult<AddOutcome> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if blocks(&tx, from, to)? {
                return Ok(AddOutcome::YouBlock);
            }
            let mine_withheld = withheld(&tx, from, to)?;
            if blocks(&tx, to, from)? {
                // Answered like any request; kept where only I see it.
                let outcome = if mine_withheld {
                    AddOutcome::AlreadyRequested
                } else {
                    tx.execute(
                        "INSERT INTO withheld_requests (from_id, to_id, created_at) VALUES (?1, ?2, ?3)",
                        params![from.0, to.0, now],
                    )?;
                    AddOutcome::Withheld
                };
                tx.commit()?;
                return Ok(outcome);
            }
            // A request withheld while one blocked the other counts as
            // asked: it is still pending for its sender.
            let theirs_withheld = withheld(&tx, to, from)?;
            let outcome = match linked(&tx, from, to)? {
                (true, _, _) => AddOutcome::AlreadyContacts,
                (false, _, true) => {
                    make_contacts(&tx, from, to)?;
                    AddOutcome::BecameContacts
                }
                (false, false, false) if theirs_withheld => {
                    make_contacts(&tx, from, to)?;
                    AddOutcome::BecameContacts
                }
                (false, true, false) => AddOutcome::AlreadyRequested,
                (false, false, false) if mine_withheld => AddOutcome::AlreadyRequested,
                (false, false, false) => {
                    tx.execute(
                        "INSERT INTO requests (from_id, to_id, created_at) VALUES (?1, ?2, ?3)",
                        params![from.0, to.0, now],
                    )?;
                    AddOutcome::Requested
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    fn accept_request(&self, me: UserId, from: UserId) -> StoreResult<bool> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (_, _, asked) = linked(&tx, me, from)?;
            if asked {
                make_contacts(&tx, me, from)?;
            }
            tx.commit()?;
            Ok(asked)
        })
    }

    fn decline_request(&self, me: UserId, from: UserId) -> StoreResult<bool> {
        self.write(|c| {
            c.execute("DELETE FROM requests WHERE from_id = ?1 AND to_id = ?2", params![from.0, me.0]).map(|n| n > 0)
        })
    }

    fn remove_link(&self, me: UserId, other: UserId) -> StoreResult<RemoveOutcome> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mine_withheld = withheld(&tx, me, other)?;
            let outcome = match linked(&tx, me, other)? {
                (true, _, _) => RemoveOutcome::Contact,
                (false, true, _) => RemoveOutcome::CancelledRequest,
                (false, false, _) if mine_withheld => RemoveOutcome::CancelledWithheld,
                (false, false, true) => RemoveOutcome::DroppedIncoming,
                (false, false, false) => RemoveOutcome::NotFound,
            };
            tx.execute("DELETE FROM withheld_requests WHERE from_id = ?1 AND to_id = ?2", params![me.0, other.0])?;
            tx.execute(
                "DELETE FROM contacts WHERE (user_id = ?1 AND contact_id = ?2) OR (user_id = ?2 AND contact_id = ?1)",
                params![me.0, other.0],
            )?;
            tx.execute(
                "DELETE FROM requests WHERE (from_id = ?1 AND to_id = ?2) OR (from_id = ?2 AND to_id = ?1)",
                params![me.0, other.0],
            )?;
            tx.commit()?;
            Ok(outcome)
        })
    }

    fn send_message(
        &self,
        from: UserId,
        to: UserId,
        text: &str,
        client_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<SendOutcome> {
        self.write(|c| msg::send_message(c, from, to, text, client_id, now))
    }

    fn sent_with_client_id(&self, from: UserId, client_id: &str) -> StoreResult<Option<StoredMessage>> {
        self.read(|c| msg::sent_with_client_id(c, from, client_id))
    }

    fn messages(&self, me: UserId, with: Option<UserId>, page: Page, limit: u32) -> StoreResult<Vec<StoredMessage>> {
        self.read(|c| msg::messages(c, me, with, page, limit))
    }

    fn mark_read(&self, me: UserId, contact: UserId, up_to: MessageId) -> StoreResult<Option<MessageId>> {
        self.write(|c| msg::mark_read(c, me, contact, up_to))
    }

    fn unread(&self, me: UserId) -> StoreResult<Vec<(UserId, u32)>> {
        self.read(|c| msg::unread(c, me))
    }

    fn record_calls(&self, records: &[CallRecord]) -> StoreResult<()> {
        self.write(|c| msg::record_calls(c, records))
    }

    fn call_history(&self, me: UserId, before: Option<i64>, limit: u32) -> StoreResult<Vec<HistoryRow>> {
        self.read(|c| msg::call_history(c, me, before, limit))
    }

    fn set_session_address(&self, id: SessionId, address: &str) -> StoreResult<()> {
        self.write(|c| c.execute("UPDATE sessions SET address = ?2 WHERE id = ?1", params![id.0, address]).map(|_| ()))
    }

    fn session_details(&self, user: UserId) -> StoreResult<Vec<SessionDetail>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, created_at, last_used, address FROM sessions WHERE user_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![user.0], |r| {
                Ok(SessionDetail {
                    id: SessionId(r.get(0)?),
                    created_at: r.get(1)?,
                    last_used: r.get(2)?,
                    address: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    fn rename(&self, user: UserId, name: &str) -> StoreResult<bool> {
        self.write(|c| c.execute("UPDATE users SET name = ?2 WHERE id = ?1", params![user.0, name]).map(|n| n > 0))
    }

    fn set_password(&self, user: UserId, password_hash: &str, keep: SessionId) -> StoreResult<Vec<SessionRecord>> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![user.0, password_hash])?;
            let ended = {
                let mut stmt = tx
                    .prepare("DELETE FROM sessions WHERE user_id = ?1 AND id != ?2 RETURNING id, user_id, last_used")?;
                let rows = stmt.query_map(params![user.0, keep.0], |r| {
                    Ok(SessionRecord { id: SessionId(r.get(0)?), user: UserId(r.get(1)?), last_used: r.get(2)? })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            Ok(ended)
        })
    }

    fn chosen_status(&self, user: UserId) -> StoreResult<ChosenStatus> {
        let text: Option<String> = self.read(|c| {
            c.query_row("SELECT status FROM users WHERE id = ?1", params![user.0], |r| r.get(0)).optional()
        })?;
        // A value this server does not know (written by a newer one) reads
        // as the default rather than failing every login.
        Ok(text.and_then(|t| t.parse().ok()).unwrap_or_default())
    }

    fn set_chosen_status(&self, user: UserId, status: ChosenStatus) -> StoreResult<()> {
        self.write(|c| {
            c.execute("UPDATE users SET status = ?2 WHERE id = ?1", params![user.0, status.as_str()]).map(|_| ())
        })
    }

    fn block(&self, me: UserId, other: UserId, now: Timestamp) -> StoreResult<Option<RemoveOutcome>> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if blocks(&tx, me, other)? {
                return Ok(None);
            }
            let outcome = match linked(&tx, me, other)? {
                (true, _, _) => RemoveOutcome::Contact,
                (false, true, _) => RemoveOutcome::CancelledRequest,
                (false, false, true) => RemoveOutcome::DroppedIncoming,
                (false, false, false) if withheld(&tx, me, other)? => RemoveOutcome::CancelledWithheld,
                (false, false, false) => RemoveOutcome::NotFound,
            };
            tx.execute(
                "DELETE FROM contacts WHERE (user_id = ?1 AND contact_id = ?2) OR (user_id = ?2 AND contact_id = ?1)",
                params![me.0, other.0],
            )?;
            tx.execute(
                "DELETE FROM requests WHERE (from_id = ?1 AND to_id = ?2) OR (from_id = ?2 AND to_id = ?1)",
                params![me.0, other.0],
            )?;
            // Mine to them goes. Theirs to me, withheld while I blocked
            // them before, stays pending for them: I never see it.
            tx.execute("DELETE FROM withheld_requests WHERE from_id = ?1 AND to_id = ?2", params![me.0, other.0])?;
            tx.execute(
                "INSERT INTO blocks (user_id, blocked_id, created_at) VALUES (?1, ?2, ?3)",
                params![me.0, other.0, now],
            )?;
            tx.commit()?;
            Ok(Some(outcome))
        })
    }

    fn unblock(&self, me: UserId, other: UserId) -> StoreResult<bool> {
        self.write(|c| {
            c.execute("DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2", params![me.0, other.0])
                .map(|n| n > 0)
        })
    }

    fn blocked(&self, me: UserId) -> StoreResult<Vec<User>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.name, u.email FROM blocks b JOIN users u ON u.id = b.blocked_id
                  WHERE b.user_id = ?1 ORDER BY u.name COLLATE NOCASE, u.id",
            )?;
            stmt.query_map(params![me.0], user_from_row)?.collect()
        })
    }

    fn block_links(&self, me: UserId) -> StoreResult<Vec<UserId>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT blocked_id FROM blocks WHERE user_id = ?1 UNION SELECT user_id FROM blocks WHERE blocked_id = ?1",
            )?;
            stmt.query_map(params![me.0], |r| r.get(0).map(UserId))?.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The cases every backend shares are in `super::super::suite`.

    fn user(s: &SqliteStore, email: &str) -> UserId {
        s.create_user(email, &identity::skeleton_of(email), email.split('@').next().unwrap(), "hash", 0).unwrap().id
    }

    #[test]
    fn migrations_are_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.db");
        let s = SqliteStore::open(&p, Durability::Full).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        user(&s, "a@x.org");
        drop(s);
        let s = SqliteStore::open(&p, Durability::Full).unwrap();
        assert!(s.account_by_email("a@x.org").unwrap().is_some());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.db");
        drop(SqliteStore::open(&p, Durability::Full).unwrap());
        Connection::open(&p).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = SqliteStore::open(&p, Durability::Full).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn chosen_status_and_name_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let s = SqliteStore::open(&p, Durability::Full).unwrap();
        let a = user(&s, "a@x.org");
        assert_eq!(s.chosen_status(a).unwrap(), ChosenStatus::Available);
        s.set_chosen_status(a, ChosenStatus::Dnd).unwrap();
        assert!(s.rename(a, "Ann Lee").unwrap());
        assert!(!s.rename(UserId(999), "x").unwrap());
        drop(s);
        let s = SqliteStore::open(&p, Durability::Full).unwrap();
        assert_eq!(s.chosen_status(a).unwrap(), ChosenStatus::Dnd);
        assert_eq!(s.user(a).unwrap().unwrap().name, "Ann Lee");
        // A status a newer server wrote reads as the default.
        s.write(|c| c.execute("UPDATE users SET status = 'on_the_moon'", []).map(|_| ())).unwrap();
        assert_eq!(s.chosen_status(a).unwrap(), ChosenStatus::Available);
    }
}
