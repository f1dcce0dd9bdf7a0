//! Call history: what each user took part in, kept beside a call while it
//! runs and turned into [`CallRecord`]s when their part of it ends.
//!
//! The book watches the call's state after every input rather than
//! interpreting each input: whoever is rung gets an open entry (direction
//! `in`, with who rang them), the caller one from the start (`out`); every
//! member of an answered call is `answered` and counts every other member
//! as someone they talked with; a user who is neither a member nor rung
//! any more is finished, for the reason their own `/call_ended` gave, else
//! the reason the input carried (`hangup` for a `/hangup`, `timeout` for a
//! ring that ran out). Pure: time is passed in.

use std::collections::HashMap;

use babel_proto::{CallId, Direction, EndReason, UserId};

use super::machine::{CallMachine, Note, Output};
use crate::store::{CallRecord, Timestamp};

/// One user's open entry (stored with a call in a cluster, so the node
/// that adopts it keeps the history right).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Open {
    user: UserId,
    direction: Direction,
    with: Vec<UserId>,
    started_at: Timestamp,
    answered_at: Option<Timestamp>,
}

/// The open entries of one call.
#[derive(Debug, Default)]
pub struct Book {
    open: HashMap<UserId, Open>,
}

impl Book {
    /// A call placed by `caller` to `callee` at `now`.
    pub fn new(caller: UserId, callee: UserId, now: Timestamp) -> Book {
        let mut open = HashMap::new();
        let entry =
            Open { user: caller, direction: Direction::Out, with: vec![callee], started_at: now, answered_at: None };
        open.insert(caller, entry);
        Book { open }
    }

    /// The open entries, to store.
    pub fn export(&self) -> Vec<Open> {
        let mut v: Vec<Open> = self.open.values().cloned().collect();
        v.sort_by_key(|o| o.user);
        v
    }

    /// A book from stored entries.
    pub fn resume(entries: Vec<Open>) -> Book {
        Book { open: entries.into_iter().map(|o| (o.user, o)).collect() }
    }

    /// Brings the book up to date after an input to `machine` that produced
    /// `out`; `reason` is the input's own (see the module docs). Answers the
    /// entries that finished.
    pub fn observe(
        &mut self,
        id: CallId,
        machine: &CallMachine,
        out: &Output,
        reason: EndReason,
        now: Timestamp,
    ) -> Vec<CallRecord> {
        let members: Vec<UserId> = machine.members().iter().map(|m| m.user).collect();
        for (leg, note) in &out.notes {
            if let Note::Incoming(by) = note {
                self.open.entry(leg.user).or_insert_with(|| {
                    let mut with = vec![by.user];
                    with.extend(members.iter().copied().filter(|u| *u != by.user && *u != leg.user));
                    Open { user: leg.user, direction: Direction::In, with, started_at: now, answered_at: None }
                });
            }
        }
        if members.len() >= 2 {
            for (i, u) in members.iter().enumerate() {
                let Some(entry) = self.open.get_mut(u) else { continue };
                entry.answered_at.get_or_insert(now);
                for (j, other) in members.iter().enumerate() {
                    if i != j && !entry.with.contains(other) {
                        entry.with.push(*other);
                    }
                }
            }
        }
        let present: Vec<UserId> = members.iter().copied().chain(machine.ringing_legs().map(|l| l.user)).collect();
        let done: Vec<UserId> = self.open.keys().copied().filter(|u| !present.contains(u)).collect();
        let mut records = Vec::with_capacity(done.len());
        for user in done {
            let Some(entry) = self.open.remove(&user) else { continue };
            let told = out.notes.iter().find_map(|(leg, note)| match note {
                Note::Ended(r) if leg.user == user && *r != EndReason::AnsweredElsewhere => Some(*r),
                _ => None,
            });
            records.push(CallRecord {
                user,
                call_id: id,
                direction: entry.direction,
                with: entry.with,
                started_at: entry.started_at,
                answered_at: entry.answered_at,
                ended_at: now,
                reason: told.unwrap_or(reason),
            });
        }
        records.sort_by_key(|r| r.user);
        records
    }
}

#[cfg(test)]
mod tests {
    use super::super::machine::{CallLimits, Leg};
    use super::*;
    use crate::store::SessionId;

    const LIMITS: CallLimits = CallLimits { ring_timeout: 1000, max_participants: 8 };

    fn leg(u: i64) -> Leg {
        Leg { user: UserId(u), session: SessionId(u * 10) }
    }

    fn start(book_now: Timestamp) -> (CallMachine, Book, Vec<CallRecord>) {
        let (m, out) = CallMachine::start(CallId(1), leg(1), UserId(2), vec![SessionId(20), SessionId(21)], 0, LIMITS);
        let mut book = Book::new(UserId(1), UserId(2), book_now);
        let recs = book.observe(CallId(1), &m, &out, EndReason::Hangup, book_now);
        (m, book, recs)
    }

    #[test]
    fn answered_then_hung_up() {
        let (mut m, mut book, recs) = start(100);
        assert!(recs.is_empty());
        let out = m.answer(leg(2), true).unwrap();
        assert!(book.observe(CallId(1), &m, &out, EndReason::Hangup, 105).is_empty());
        let out = m.leave(leg(2), EndReason::Hangup).unwrap();
        let recs = book.observe(CallId(1), &m, &out, EndReason::Hangup, 160);
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].direction, recs[0].answered_at, recs[0].ended_at), (Direction::Out, Some(105), 160));
        assert_eq!(
            (recs[1].direction, recs[1].with.clone(), recs[1].reason),
            (Direction::In, vec![UserId(1)], EndReason::Hangup)
        );
        assert_eq!(recs[1].started_at, 100);
    }

    #[test]
    fn missed_by_timeout_and_declined() {
        let (mut m, mut book, _) = start(0);
        let out = m.tick(1000);
        let recs = book.observe(CallId(1), &m, &out, EndReason::Timeout, 30);
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.answered_at.is_none() && r.reason == EndReason::Timeout));

        let (mut m, mut book, _) = start(0);
        let out = m.answer(Leg { user: UserId(2), session: SessionId(21) }, false).unwrap();
        let recs = book.observe(CallId(1), &m, &out, EndReason::Declined, 5);
        assert_eq!(recs.iter().map(|r| r.reason).collect::<Vec<_>>(), vec![EndReason::Declined; 2]);
    }

    #[test]
    fn group_call_invitee_who_misses_and_one_who_joins() {
        let (mut m, mut book, _) = start(0);
        let out = m.answer(leg(2), true).unwrap();
        book.observe(CallId(1), &m, &out, EndReason::Hangup, 1);
        let out = m.invite(leg(2), UserId(3), vec![SessionId(30)], 2).unwrap();
        book.observe(CallId(1), &m, &out, EndReason::Hangup, 2);
        let out = m.invite(leg(1), UserId(4), vec![SessionId(40)], 2).unwrap();
        book.observe(CallId(1), &m, &out, EndReason::Hangup, 2);
        let out = m.answer(leg(4), true).unwrap();
        book.observe(CallId(1), &m, &out, EndReason::Hangup, 3);
        let out = m.tick(2 + 1000);
        let recs = book.observe(CallId(1), &m, &out, EndReason::Timeout, 40);
        assert_eq!(recs.len(), 1, "only the one who never answered: {recs:?}");
        assert_eq!((recs[0].user, recs[0].answered_at, recs[0].reason), (UserId(3), None, EndReason::Timeout));
        assert_eq!(recs[0].with, vec![UserId(2), UserId(1)], "who rang first");
        let out = m.leave(leg(1), EndReason::Hangup).unwrap();
        let recs = book.observe(CallId(1), &m, &out, EndReason::Hangup, 50);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].with, vec![UserId(2), UserId(4)]);
        let out = m.leave(leg(2), EndReason::Disconnected).unwrap();
        let recs = book.observe(CallId(1), &m, &out, EndReason::Disconnected, 60);
        assert_eq!(recs.iter().map(|r| r.user).collect::<Vec<_>>(), vec![UserId(2), UserId(4)]);
        assert_eq!(recs[1].with, vec![UserId(1), UserId(2)]);
        assert_eq!(recs[1].answered_at, Some(3));
    }
}
