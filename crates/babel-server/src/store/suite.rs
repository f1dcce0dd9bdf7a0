//! One test suite for every backend: each case takes a [`Store`], and
//! [`suite!`] makes a `#[test]` of every case for one backend. What is true
//! of one store is true of the other; backend-only checks (migrations,
//! reopening) stay next to each backend.
//!
//! The PostgreSQL cases run in a schema of their own each
//! ([`ScratchSchema`]) in the database `BABEL_TEST_POSTGRES` names (default
//! [`pg::TEST_DATABASE`], which `scripts/setup.sh` makes); they fail, never
//! skip, when it cannot be reached.

use babel_proto::{CallId, ChosenStatus, Direction, EndReason, MessageId, Page, UserId};

use super::pg::{self, PgStore, ScratchSchema};
use super::sqlite::{Durability, SqliteStore};
use super::*;
use crate::identity;

/// A store to test and what keeps it alive.
pub trait Fixture {
    /// The store.
    fn store(&self) -> &dyn Store;
}

/// A SQLite file in a temporary folder (fields drop in order: the store
/// closes before its folder goes).
pub struct SqliteFixture {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Fixture for SqliteFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

pub fn sqlite() -> SqliteFixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("t.db"), Durability::Normal).unwrap();
    SqliteFixture { store, _dir: dir }
}

/// A PostgreSQL store in a scratch schema (the store closes its
/// connections before the schema is dropped).
pub struct PgFixture {
    store: PgStore,
    _schema: ScratchSchema,
}

impl Fixture for PgFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

pub fn postgres() -> PgFixture {
    let schema = pg::scratch_for_tests().unwrap_or_else(|e| panic!("{e}"));
    let store = PgStore::open(schema.url()).unwrap();
    PgFixture { store, _schema: schema }
}

/// Makes a `#[test]` of each case over the fixture `$make` gives.
macro_rules! suite {
    ($make:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let fixture = $make();
                super::$case(super::Fixture::store(&fixture));
            }
        )*
    };
}

macro_rules! all_cases {
    ($make:path) => {
        suite!($make;
            email_is_unique, ids_are_never_reused, request_accept_remove, crossed_requests_become_contacts,
            decline_and_cancel, delete_removes_everything_and_reports_links, sessions_touch_and_purge,
            blocking_removes_links_and_withholds_requests, password_change_ends_other_sessions_atomically,
            chosen_status_and_name, lists_sort_like_nocase, login_finds_legacy_and_canonical_addresses,
            concurrent_crossed_requests_become_contacts, client_id_makes_a_retry_answer_the_first,
            pages_both_ways_and_across_conversations, read_marks_move_forward_only_and_count,
            call_history_pages_and_outlives_a_deleted_peer, deleting_an_account_deletes_its_messages,
            concurrent_messages_keep_every_reader_in_order,
        );
    };
}

mod sqlite {
    all_cases!(super::sqlite);
}

mod postgres {
    all_cases!(super::postgres);
}

fn user(s: &dyn Store, email: &str) -> UserId {
    s.create_user(email, &identity::skeleton_of(email), email.split('@').next().unwrap(), "hash", 0).unwrap().id
}

fn sent(o: SendOutcome) -> i64 {
    match o {
        SendOutcome::Sent(m) => m.id,
        other => panic!("{other:?}"),
    }
}

pub fn chosen_status_and_name(s: &dyn Store) {
    let a = user(s, "a@x.org");
    assert_eq!(s.chosen_status(a).unwrap(), ChosenStatus::Available);
    s.set_chosen_status(a, ChosenStatus::Dnd).unwrap();
    assert_eq!(s.chosen_status(a).unwrap(), ChosenStatus::Dnd);
    assert!(s.rename(a, "Ann Lee").unwrap());
    assert!(!s.rename(UserId(999_999), "x").unwrap());
    assert_eq!(s.user(a).unwrap().unwrap().name, "Ann Lee");
    assert_eq!(s.chosen_status(UserId(999_999)).unwrap(), ChosenStatus::Available);
}

/// SQLite's NOCASE folds ASCII only and then compares bytes: `Émile`
/// sorts after `zed` (a database collation would put it after `alice`).
pub fn lists_sort_like_nocase(s: &dyn Store) {
    let me = user(s, "me@x.org");
    let names = ["zed", "\u{c9}mile", "Bob", "alice", "bob"];
    let mut ids = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let id = user(s, &format!("u{i}@x.org"));
        s.rename(id, n).unwrap();
        s.add_request(me, id, 1).unwrap();
        ids.push(id);
    }
    let listed: Vec<String> = s.contacts(me).unwrap().into_iter().map(|(u, _)| u.name).collect();
    assert_eq!(listed, ["alice", "Bob", "bob", "zed", "\u{c9}mile"]);
    for id in &ids {
        s.block(me, *id, 2).unwrap();
    }
    let blocked: Vec<String> = s.blocked(me).unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(blocked, ["alice", "Bob", "bob", "zed", "\u{c9}mile"]);
}

pub fn login_finds_legacy_and_canonical_addresses(s: &dyn Store) {
    let a = user(s, "ann@x.org");
    let found = s.account_for_login("ann@x.org", Some("ann@x.org")).unwrap().unwrap();
    assert_eq!((found.user.id, found.password_hash.as_str()), (a, "hash"));
    assert_eq!(s.account_for_login("other@x.org", Some("ann@x.org")).unwrap().unwrap().user.id, a);
    assert!(s.account_for_login("nobody@x.org", None).unwrap().is_none());
    assert!(s.account_by_email("nobody@x.org").unwrap().is_none());
}

/// Two people asking each other at the same moment become contacts, on
/// every pair (PostgreSQL: the advisory locks serialize each pair).
pub fn concurrent_crossed_requests_become_contacts(s: &dyn Store) {
    let pairs: Vec<(UserId, UserId)> =
        (0..6).map(|i| (user(s, &format!("a{i}@x.org")), user(s, &format!("b{i}@x.org")))).collect();
    std::thread::scope(|scope| {
        for &(a, b) in &pairs {
            scope.spawn(move || s.add_request(a, b, 1).unwrap());
            scope.spawn(move || s.add_request(b, a, 1).unwrap());
        }
    });
    for (a, b) in pairs {
        assert_eq!(s.contacts(a).unwrap().len(), 1);
        assert_eq!(s.contacts(a).unwrap()[0].1, Relation::Contact, "{a:?} and {b:?}");
        assert!(s.incoming_requests(a).unwrap().is_empty() && s.incoming_requests(b).unwrap().is_empty());
    }
}

/// Messages sent at once from several threads: each reader's list is in id
/// order and complete, and paging `After` what was seen misses nothing.
pub fn concurrent_messages_keep_every_reader_in_order(s: &dyn Store) {
    let me = user(s, "me@x.org");
    let senders: Vec<UserId> = (0..4).map(|i| user(s, &format!("s{i}@x.org"))).collect();
    let mut seen = Vec::new();
    std::thread::scope(|scope| {
        for &from in &senders {
            scope.spawn(move || {
                for _ in 0..10 {
                    sent(s.send_message(from, me, "x", None, 1).unwrap());
                }
            });
        }
        // Read while they write: each page after the last id seen.
        let mut last = 0;
        for _ in 0..200 {
            for m in s.messages(me, None, Page::After(MessageId(last)), 100).unwrap() {
                assert!(m.id > last);
                last = m.id;
                seen.push(m.id);
            }
        }
    });
    let last = *seen.last().unwrap_or(&0);
    seen.extend(s.messages(me, None, Page::After(MessageId(last)), 100).unwrap().into_iter().map(|m| m.id));
    assert_eq!(seen.len(), 40, "paging after the last seen id missed messages");
}

pub fn email_is_unique(s: &dyn Store) {
    user(s, "a@x.org");
    assert!(matches!(s.create_user("a@x.org", "other", "a", "h", 0), Err(StoreError::EmailTaken)));
    let look_alike = identity::canonical_email("\u{0430}@x.org").unwrap();
    assert!(matches!(s.create_user(&look_alike.email, &look_alike.skeleton, "a", "h", 0), Err(StoreError::LookAlike)));
}

pub fn ids_are_never_reused(s: &dyn Store) {
    let a = user(s, "a@x.org");
    s.delete_user(a).unwrap();
    let b = user(s, "b@x.org");
    assert!(b.0 > a.0);
}

pub fn request_accept_remove(s: &dyn Store) {
    let (a, b) = (user(s, "a@x.org"), user(s, "b@x.org"));
    assert_eq!(s.add_request(a, b, 1).unwrap(), AddOutcome::Requested);
    assert_eq!(s.add_request(a, b, 1).unwrap(), AddOutcome::AlreadyRequested);
    assert_eq!(s.contacts(a).unwrap()[0].1, Relation::Outgoing);
    assert!(s.contacts(b).unwrap().is_empty());
    assert_eq!(s.incoming_requests(b).unwrap()[0].id, a);
    assert!(!s.accept_request(a, b).unwrap(), "only the asked side accepts");
    assert!(s.accept_request(b, a).unwrap());
    assert_eq!(s.contacts(a).unwrap()[0].1, Relation::Contact);
    assert_eq!(s.contacts(b).unwrap()[0].1, Relation::Contact);
    assert_eq!(s.add_request(b, a, 1).unwrap(), AddOutcome::AlreadyContacts);
    assert_eq!(s.remove_link(b, a).unwrap(), RemoveOutcome::Contact);
    assert!(s.contacts(a).unwrap().is_empty() && s.contacts(b).unwrap().is_empty());
    assert_eq!(s.remove_link(b, a).unwrap(), RemoveOutcome::NotFound);
}

pub fn crossed_requests_become_contacts(s: &dyn Store) {
    let (a, b) = (user(s, "a@x.org"), user(s, "b@x.org"));
    s.add_request(a, b, 1).unwrap();
    assert_eq!(s.add_request(b, a, 1).unwrap(), AddOutcome::BecameContacts);
    assert!(s.incoming_requests(a).unwrap().is_empty());
    assert!(s.incoming_requests(b).unwrap().is_empty());
    assert_eq!(s.contacts(b).unwrap().len(), 1);
}

pub fn decline_and_cancel(s: &dyn Store) {
    let (a, b) = (user(s, "a@x.org"), user(s, "b@x.org"));
    s.add_request(a, b, 1).unwrap();
    assert!(s.decline_request(b, a).unwrap());
    assert!(!s.decline_request(b, a).unwrap());
    s.add_request(a, b, 1).unwrap();
    assert_eq!(s.remove_link(a, b).unwrap(), RemoveOutcome::CancelledRequest);
    s.add_request(a, b, 1).unwrap();
    assert_eq!(s.remove_link(b, a).unwrap(), RemoveOutcome::DroppedIncoming);
    assert!(s.incoming_requests(b).unwrap().is_empty());
}

pub fn delete_removes_everything_and_reports_links(s: &dyn Store) {
    let (a, b, c, d) = (user(s, "a@x.org"), user(s, "b@x.org"), user(s, "c@x.org"), user(s, "d@x.org"));
    s.add_request(a, b, 1).unwrap();
    s.accept_request(b, a).unwrap();
    s.add_request(a, c, 1).unwrap();
    s.add_request(d, a, 1).unwrap();
    s.create_session(a, &[1; 32], 0).unwrap();
    let mut linked = s.delete_user(a).unwrap().unwrap();
    linked.sort();
    assert_eq!(linked, vec![b, c, d]);
    assert!(s.contacts(b).unwrap().is_empty());
    assert!(s.incoming_requests(c).unwrap().is_empty());
    assert!(s.contacts(d).unwrap().is_empty());
    assert!(s.session(&[1; 32]).unwrap().is_none());
    assert!(s.delete_user(a).unwrap().is_none());
}

pub fn sessions_touch_and_purge(s: &dyn Store) {
    let a = user(s, "a@x.org");
    let s1 = s.create_session(a, &[1; 32], 10).unwrap();
    let s2 = s.create_session(a, &[2; 32], 10).unwrap();
    s.touch_session(s2, 100).unwrap();
    s.touch_session(s2, 50).unwrap();
    assert_eq!(s.session(&[2; 32]).unwrap().unwrap().last_used, 100);
    assert_eq!(s.user_sessions(a).unwrap().len(), 2);
    assert_eq!(s.purge_sessions(50).unwrap(), vec![SessionRecord { id: s1, user: a, last_used: 10 }]);
    assert_eq!(s.user_sessions(a).unwrap(), vec![SessionRecord { id: s2, user: a, last_used: 100 }]);
    assert!(s.session(&[1; 32]).unwrap().is_none());
    assert!(!s.delete_session(s1).unwrap());
    assert!(s.delete_session(s2).unwrap());
}

pub fn blocking_removes_links_and_withholds_requests(s: &dyn Store) {
    let (a, b, c) = (user(s, "a@x.org"), user(s, "b@x.org"), user(s, "c@x.org"));
    s.add_request(a, b, 1).unwrap();
    s.accept_request(b, a).unwrap();
    s.add_request(c, a, 1).unwrap();
    assert_eq!(s.block(a, b, 2).unwrap(), Some(RemoveOutcome::Contact));
    assert_eq!(s.block(a, b, 2).unwrap(), None, "a second block changes nothing");
    assert_eq!(s.block(a, c, 2).unwrap(), Some(RemoveOutcome::DroppedIncoming));
    assert!(s.contacts(a).unwrap().is_empty() && s.contacts(b).unwrap().is_empty());
    assert!(s.incoming_requests(a).unwrap().is_empty());
    assert_eq!(s.blocked(a).unwrap().iter().map(|u| u.id).collect::<Vec<_>>(), vec![b, c]);
    let mut links = s.block_links(b).unwrap();
    links.sort();
    assert_eq!(links, vec![a]);

    // The blocked user's request is answered like any other, and only
    // its sender sees it.
    assert_eq!(s.add_request(b, a, 3).unwrap(), AddOutcome::Withheld);
    assert_eq!(s.add_request(b, a, 3).unwrap(), AddOutcome::AlreadyRequested);
    assert_eq!(s.contacts(b).unwrap(), vec![(s.user(a).unwrap().unwrap(), Relation::Outgoing)]);
    assert!(s.incoming_requests(a).unwrap().is_empty());
    assert!(!s.accept_request(a, b).unwrap(), "nothing to accept on the blocker's side");
    assert_eq!(s.remove_link(a, b).unwrap(), RemoveOutcome::NotFound);
    assert_eq!(s.contacts(b).unwrap().len(), 1, "the blocker cannot clear it either");
    assert_eq!(s.add_request(a, b, 3).unwrap(), AddOutcome::YouBlock);

    // Unblocking restores nothing; the withheld request stays pending
    // for its sender, and counts as asked if the other asks back.
    assert!(s.unblock(a, b).unwrap());
    assert!(!s.unblock(a, b).unwrap());
    assert!(s.contacts(a).unwrap().is_empty());
    assert!(s.incoming_requests(a).unwrap().is_empty());
    assert_eq!(s.add_request(b, a, 4).unwrap(), AddOutcome::AlreadyRequested);
    assert_eq!(s.add_request(a, b, 4).unwrap(), AddOutcome::BecameContacts);
    assert_eq!(s.contacts(b).unwrap(), vec![(s.user(a).unwrap().unwrap(), Relation::Contact)]);

    // A sender may cancel a withheld request.
    s.block(c, b, 5).unwrap();
    assert_eq!(s.add_request(b, c, 5).unwrap(), AddOutcome::Withheld);
    assert_eq!(s.remove_link(b, c).unwrap(), RemoveOutcome::CancelledWithheld);
    assert!(!s.contacts(b).unwrap().iter().any(|(u, _)| u.id == c));
    // Deleting the blocker reports the withheld sender as linked.
    assert_eq!(s.add_request(b, c, 6).unwrap(), AddOutcome::Withheld);
    assert!(s.delete_user(c).unwrap().unwrap().contains(&b));
    assert!(s.contacts(b).unwrap().iter().all(|(u, _)| u.id == a));
}

pub fn password_change_ends_other_sessions_atomically(s: &dyn Store) {
    let a = user(s, "a@x.org");
    let keep = s.create_session(a, &[1; 32], 1).unwrap();
    let other = s.create_session(a, &[2; 32], 2).unwrap();
    s.set_session_address(keep, "127.0.0.1").unwrap();
    let ended = s.set_password(a, "new-hash", keep).unwrap();
    assert_eq!(ended, vec![SessionRecord { id: other, user: a, last_used: 2 }]);
    assert_eq!(s.account_by_email("a@x.org").unwrap().unwrap().password_hash, "new-hash");
    assert_eq!(
        s.session_details(a).unwrap(),
        vec![SessionDetail { id: keep, created_at: 1, last_used: 1, address: "127.0.0.1".into() }]
    );
}

pub fn client_id_makes_a_retry_answer_the_first(s: &dyn Store) {
    let (a, b) = (user(s, "a@x.org"), user(s, "b@x.org"));
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

pub fn pages_both_ways_and_across_conversations(s: &dyn Store) {
    let (a, b, c) = (user(s, "a@x.org"), user(s, "b@x.org"), user(s, "c@x.org"));
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

pub fn read_marks_move_forward_only_and_count(s: &dyn Store) {
    let (a, b, c) = (user(s, "a@x.org"), user(s, "b@x.org"), user(s, "c@x.org"));
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

pub fn call_history_pages_and_outlives_a_deleted_peer(s: &dyn Store) {
    let (a, b) = (user(s, "a@x.org"), user(s, "b@x.org"));
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

pub fn deleting_an_account_deletes_its_messages(s: &dyn Store) {
    let (a, b) = (user(s, "a@x.org"), user(s, "b@x.org"));
    sent(s.send_message(a, b, "x", None, 0).unwrap());
    s.delete_user(a).unwrap();
    assert!(s.messages(b, None, Page::Latest, 10).unwrap().is_empty());
    assert!(s.unread(b).unwrap().is_empty());
}
