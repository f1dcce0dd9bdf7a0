//! One call as a pure state machine: who is in it, who is being rung, and
//! what each input means for everybody. No clock (time is passed in as
//! milliseconds), no IO, no user details: the manager turns the [`Note`]s it
//! returns into events.
//!
//! Rules (DESIGN.md §2):
//! * A call is between sessions. The caller's session is a member from the
//!   start; every online session of a callee rings, and the first to answer
//!   joins while the others are told `answered_elsewhere`.
//! * A decline (or a hang-up while ringing) stops the ringing on all of that
//!   user's sessions; a call that had never been answered then ends.
//! * A participant leaves by hanging up, logging out, deleting their account
//!   or losing every connection (after the grace, see `Calls::suspend`). A
//!   call ends when fewer than two members are left, except while the first
//!   callee is still being rung.
//! * Ringing stops after the ring timeout (`timeout`).
//! * Invites add a ring to an answered call, up to `max_participants` in all.

use babel_proto::{CallId, EndReason, UserId};

use crate::store::SessionId;

/// Milliseconds on the manager's monotonic clock.
pub type Millis = u64;

/// One session of one user: the unit that joins calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Leg {
    /// The user.
    pub user: UserId,
    /// Their session.
    pub session: SessionId,
}

/// What a leg must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// This session rings (`/incoming_call`), called by this leg.
    Incoming(Leg),
    /// The callee answered the call I started (`/call_accepted`).
    Accepted(Leg),
    /// Someone joined a call that already had two or more (`/participant_joined`).
    Joined(Leg),
    /// A user rung declined or did not answer (`/call_declined`).
    Declined(UserId),
    /// A user left a call that goes on (`/participant_left`).
    Left(UserId),
    /// The call is over for this session (`/call_ended`).
    Ended(EndReason),
}

/// What an input produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Who must be told what, in order.
    pub notes: Vec<(Leg, Note)>,
    /// Set when the call ended with this input.
    pub over: Option<EndReason>,
}

/// An input that the call refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call is not ringing on this session.
    #[error("this call is not ringing for you")]
    NotRinging,
    /// The session is not in the call.
    #[error("you are not in this call")]
    NotMember,
    /// Invites need an answered call.
    #[error("the call has not been answered yet")]
    NotAnswered,
    /// The user is already in the call or being rung.
    #[error("this contact is already in the call")]
    AlreadyIn,
    /// No room for one more.
    #[error("the call is full")]
    Full,
    /// The call is over.
    #[error("the call has ended")]
    Ended,
}

#[derive(Debug, Clone)]
struct Ring {
    /// Who rang.
    by: Leg,
    user: UserId,
    sessions: Vec<SessionId>,
    since: Millis,
}

/// One ring as a call's stored state carries it (see [`CallMachine::restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPart {
    /// Who rang.
    pub by: Leg,
    /// Whom.
    pub user: UserId,
    /// The sessions it rings on.
    pub sessions: Vec<SessionId>,
}

/// Limits that shape a call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// How long a ring lasts unanswered.
    pub ring_timeout: Millis,
    /// Members plus rings, at most.
    pub max_participants: usize,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CallMachine {
    /// The call's id, for its `Debug` form in logs.
    #[expect(dead_code, reason = "read only through Debug")]
    id: CallId,
    limits: CallLimits,
    members: Vec<Leg>,
    rings: Vec<Ring>,
    answered: bool,
    ended: Option<EndReason>,
    /// 0 once the callee answered; one more at every later join and every
    /// leave that the call outlives (the group code changes with it).
    epoch: u32,
}

impl CallMachine {
    /// `caller` rings every session of `callee`. `callee_sessions` must not be empty.
    pub fn start(
        id: CallId,
        caller: Leg,
        callee: UserId,
        callee_sessions: Vec<SessionId>,
        now: Millis,
        limits: CallLimits,
    ) -> (CallMachine, Output) {
        let mut call = CallMachine {
            id,
            limits,
            members: vec![caller],
            rings: Vec::new(),
            answered: false,
            ended: None,
            epoch: 0,
        };
        let out = call.add_ring(caller, callee, callee_sessions, now);
        (call, out)
    }

    /// A call as another node stored it (its home died, this node adopts
    /// it): the same members, rings, epoch and answered state. Rings start
    /// their timeout afresh at `now`.
    pub fn restore(
        id: CallId,
        limits: CallLimits,
        members: Vec<Leg>,
        rings: Vec<RingPart>,
        answered: bool,
        epoch: u32,
        now: Millis,
    ) -> CallMachine {
        let rings =
            rings.into_iter().map(|r| Ring { by: r.by, user: r.user, sessions: r.sessions, since: now }).collect();
        CallMachine { id, limits, members, rings, answered, ended: None, epoch }
    }

    /// The rings, as [`CallMachine::restore`] takes them.
    pub fn ring_parts(&self) -> Vec<RingPart> {
        self.rings.iter().map(|r| RingPart { by: r.by, user: r.user, sessions: r.sessions.clone() }).collect()
    }

    /// Whether the callee ever answered (stored with the call).
    pub fn was_answered(&self) -> bool {
        self.answered
    }

    fn add_ring(&mut self, by: Leg, user: UserId, sessions: Vec<SessionId>, now: Millis) -> Output {
        let notes = sessions.iter().map(|&session| (Leg { user, session }, Note::Incoming(by))).collect();
        self.rings.push(Ring { by, user, sessions, since: now });
        Output { notes, over: None }
    }

    /// Members, in the order they joined.
    pub fn members(&self) -> &[Leg] {
        &self.members
    }

    /// Whether the session is a member.
    pub fn is_member(&self, session: SessionId) -> bool {
        self.members.iter().any(|m| m.session == session)
    }

    /// Whether the call rings on this session.
    pub fn rings_on(&self, session: SessionId) -> bool {
        self.rings.iter().any(|r| r.sessions.contains(&session))
    }

    /// Who rang this session (the caller, or the member who invited).
    #[cfg(test)]
    pub fn rung_by(&self, session: SessionId) -> Option<Leg> {
        self.rings.iter().find(|r| r.sessions.contains(&session)).map(|r| r.by)
    }

    /// Every session the call rings on.
    pub fn ringing_legs(&self) -> impl Iterator<Item = Leg> + '_ {
        self.rings.iter().flat_map(|r| r.sessions.iter().map(|&session| Leg { user: r.user, session }))
    }

    /// Whether two or more members are talking (members count as busy).
    pub fn is_answered(&self) -> bool {
        self.answered && self.ended.is_none()
    }

    /// The call's epoch (see the field).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// When the next ring times out, if any rings.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.rings.iter().map(|r| r.since + self.limits.ring_timeout).min()
    }

    fn others(&self, except: Option<SessionId>) -> Vec<Leg> {
        self.members.iter().copied().filter(|m| Some(m.session) != except).collect()
    }

    fn end(&mut self, reason: EndReason, out: &mut Output) {
        for leg in self.members.drain(..) {
            out.notes.push((leg, Note::Ended(reason)));
        }
        for ring in self.rings.drain(..) {
            for session in ring.sessions {
                out.notes.push((Leg { user: ring.user, session }, Note::Ended(reason)));
            }
        }
        self.ended = Some(reason);
        out.over = Some(reason);
    }

    /// Ends the call if too few are left in it.
    fn settle(&mut self, reason: EndReason, out: &mut Output) {
        let first_ring_pending = !self.answered && !self.rings.is_empty() && !self.members.is_empty();
        if self.members.len() < 2 && !first_ring_pending {
            self.end(reason, out);
        }
    }

    fn take_ring(&mut self, leg: Leg) -> Result<Ring, CallError> {
        let i = self
            .rings
            .iter()
            .position(|r| r.user == leg.user && r.sessions.contains(&leg.session))
            .ok_or(CallError::NotRinging)?;
        Ok(self.rings.remove(i))
    }

    /// The session `leg` answers the ring.
    pub fn answer(&mut self, leg: Leg, accept: bool) -> Result<Output, CallError> {
        if self.ended.is_some() {
            return Err(CallError::Ended);
        }
        let ring = self.take_ring(leg)?;
        let mut out = Output::default();
        let elsewhere = if accept { EndReason::AnsweredElsewhere } else { EndReason::Declined };
        for &session in ring.sessions.iter().filter(|&&s| s != leg.session) {
            out.notes.push((Leg { user: leg.user, session }, Note::Ended(elsewhere)));
        }
        if accept {
            let note = if self.answered { Note::Joined(leg) } else { Note::Accepted(leg) };
            if self.answered {
                self.epoch += 1;
            }
            for m in self.others(None) {
                out.notes.push((m, note));
            }
            self.members.push(leg);
            self.answered = self.members.len() >= 2;
        } else {
            for m in self.others(None) {
                out.notes.push((m, Note::Declined(leg.user)));
            }
            self.settle(EndReason::Declined, &mut out);
        }
        Ok(out)
    }

    /// The session leaves: `/hangup` (`reason` hangup), logout, account
    /// deletion, or all its connections gone. A ringing session that hangs
    /// up declines; one that merely goes away stops ringing.
    pub fn leave(&mut self, leg: Leg, reason: EndReason) -> Result<Output, CallError> {
        if self.ended.is_some() {
            return Err(CallError::Ended);
        }
        if let Some(i) = self.members.iter().position(|m| m.session == leg.session) {
            self.members.remove(i);
            let mut out = Output::default();
            self.settle(reason, &mut out);
            if out.over.is_none() {
                self.epoch += 1;
                for m in self.others(None) {
                    out.notes.push((m, Note::Left(leg.user)));
                }
            }
            return Ok(out);
        }
        if reason == EndReason::Hangup && self.rings_on(leg.session) {
            return self.answer(leg, false);
        }
        let i = self
            .rings
            .iter()
            .position(|r| r.user == leg.user && r.sessions.contains(&leg.session))
            .ok_or(CallError::NotMember)?;
        let mut out = Output::default();
        self.rings[i].sessions.retain(|&s| s != leg.session);
        if self.rings[i].sessions.is_empty() {
            let ring = self.rings.remove(i);
            for m in self.others(None) {
                out.notes.push((m, Note::Declined(ring.user)));
            }
            self.settle(reason, &mut out);
        }
        Ok(out)
    }

    /// A member rings another user into an answered call.
    pub fn invite(
        &mut self,
        by: Leg,
        invitee: UserId,
        sessions: Vec<SessionId>,
        now: Millis,
    ) -> Result<Output, CallError> {
        if self.ended.is_some() {
            return Err(CallError::Ended);
        }
        if !self.is_member(by.session) {
            return Err(CallError::NotMember);
        }
        if !self.answered {
            return Err(CallError::NotAnswered);
        }
        if self.members.iter().any(|m| m.user == invitee) || self.rings.iter().any(|r| r.user == invitee) {
            return Err(CallError::AlreadyIn);
        }
        if self.members.len() + self.rings.len() >= self.limits.max_participants {
            return Err(CallError::Full);
        }
        Ok(self.add_ring(by, invitee, sessions, now))
    }

    /// Ends the rings that have lasted too long.
    pub fn tick(&mut self, now: Millis) -> Output {
        let mut out = Output::default();
        if self.ended.is_some() {
            return out;
        }
        let timeout = self.limits.ring_timeout;
        let (expired, kept): (Vec<Ring>, Vec<Ring>) =
            std::mem::take(&mut self.rings).into_iter().partition(|r| now >= r.since + timeout);
        self.rings = kept;
        if expired.is_empty() {
            return out;
        }
        for ring in &expired {
            for &session in &ring.sessions {
                out.notes.push((Leg { user: ring.user, session }, Note::Ended(EndReason::Timeout)));
            }
            if self.answered {
                for m in self.others(None) {
                    out.notes.push((m, Note::Declined(ring.user)));
                }
            }
        }
        self.settle(EndReason::Timeout, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_call_goes_on_as_the_stored_one_would() {
        let limits = CallLimits { ring_timeout: 1000, max_participants: 8 };
        let (a, b, c) = (
            Leg { user: UserId(1), session: SessionId(10) },
            Leg { user: UserId(2), session: SessionId(20) },
            Leg { user: UserId(3), session: SessionId(30) },
        );
        let (mut m, _) = CallMachine::start(CallId(1), a, UserId(2), vec![SessionId(20)], 0, limits);
        m.answer(b, true).unwrap();
        m.invite(a, UserId(3), vec![SessionId(30)], 500).unwrap();
        let rings = m.ring_parts();
        assert_eq!(rings, vec![RingPart { by: a, user: UserId(3), sessions: vec![SessionId(30)] }]);
        let mut r =
            CallMachine::restore(CallId(1), limits, m.members().to_vec(), rings, m.was_answered(), m.epoch(), 5000);
        assert!(r.is_answered() && r.rings_on(SessionId(30)));
        assert_eq!(r.next_deadline(), Some(6000), "the ring restarts at the adoption");
        let out = r.answer(c, true).unwrap();
        assert_eq!(out.notes, vec![(a, Note::Joined(c)), (b, Note::Joined(c))]);
        assert_eq!(r.epoch(), 1);
        let out = r.leave(a, EndReason::Hangup).unwrap();
        assert_eq!(out.over, None, "two are left");
        let out = r.leave(b, EndReason::Hangup).unwrap();
        assert_eq!(out.over, Some(EndReason::Hangup));
    }

    const LIMITS: CallLimits = CallLimits { ring_timeout: 30_000, max_participants: 8 };

    fn leg(user: i64, session: i64) -> Leg {
        Leg { user: UserId(user), session: SessionId(session) }
    }

    /// Alice (1, session 10) calls Bob (2), who has sessions 20 and 21.
    fn ringing() -> CallMachine {
        let (call, out) =
            CallMachine::start(CallId(1), leg(1, 10), UserId(2), vec![SessionId(20), SessionId(21)], 0, LIMITS);
        assert_eq!(out.notes, vec![(leg(2, 20), Note::Incoming(leg(1, 10))), (leg(2, 21), Note::Incoming(leg(1, 10)))]);
        assert_eq!(call.rung_by(SessionId(20)), Some(leg(1, 10)));
        assert!(!call.is_answered());
        assert!(call.rings_on(SessionId(21)));
        assert_eq!(call.next_deadline(), Some(30_000));
        call
    }

    fn answered() -> CallMachine {
        let mut call = ringing();
        call.answer(leg(2, 20), true).unwrap();
        call
    }

    #[test]
    fn first_answer_takes_the_call() {
        let mut call = ringing();
        let out = call.answer(leg(2, 21), true).unwrap();
        assert_eq!(
            out.notes,
            vec![(leg(2, 20), Note::Ended(EndReason::AnsweredElsewhere)), (leg(1, 10), Note::Accepted(leg(2, 21)))]
        );
        assert!(call.is_answered());
        assert_eq!(call.members(), &[leg(1, 10), leg(2, 21)]);
        assert_eq!(call.next_deadline(), None);
        // The other device can no longer answer.
        assert_eq!(call.answer(leg(2, 20), true), Err(CallError::NotRinging));
    }

    #[test]
    fn decline_ends_a_two_party_call() {
        let mut call = ringing();
        let out = call.answer(leg(2, 20), false).unwrap();
        assert_eq!(
            out.notes,
            vec![
                (leg(2, 21), Note::Ended(EndReason::Declined)),
                (leg(1, 10), Note::Declined(UserId(2))),
                (leg(1, 10), Note::Ended(EndReason::Declined)),
            ]
        );
        assert_eq!(out.over, Some(EndReason::Declined));
        assert_eq!(call.answer(leg(2, 21), true), Err(CallError::Ended));
    }

    #[test]
    fn only_rung_sessions_answer() {
        let mut call = ringing();
        assert_eq!(call.answer(leg(3, 30), true), Err(CallError::NotRinging));
        assert_eq!(call.answer(leg(1, 10), true), Err(CallError::NotRinging), "the caller cannot answer");
        assert_eq!(call.answer(leg(2, 99), true), Err(CallError::NotRinging), "another session of the callee");
    }

    #[test]
    fn caller_hangs_up_while_ringing() {
        let mut call = ringing();
        let out = call.leave(leg(1, 10), EndReason::Hangup).unwrap();
        assert_eq!(
            out.notes,
            vec![(leg(2, 20), Note::Ended(EndReason::Hangup)), (leg(2, 21), Note::Ended(EndReason::Hangup))]
        );
        assert_eq!(out.over, Some(EndReason::Hangup));
    }

    #[test]
    fn callee_hangs_up_while_ringing_declines() {
        let mut call = ringing();
        let out = call.leave(leg(2, 21), EndReason::Hangup).unwrap();
        assert_eq!(out.over, Some(EndReason::Declined));
        assert!(out.notes.contains(&(leg(1, 10), Note::Declined(UserId(2)))));
    }

    #[test]
    fn a_ringing_session_that_goes_away_stops_ringing_only_there() {
        let mut call = ringing();
        let out = call.leave(leg(2, 20), EndReason::Disconnected).unwrap();
        assert_eq!(out, Output::default());
        assert!(call.rings_on(SessionId(21)));
        let out = call.leave(leg(2, 21), EndReason::Logout).unwrap();
        assert_eq!(
            out.notes,
            vec![(leg(1, 10), Note::Declined(UserId(2))), (leg(1, 10), Note::Ended(EndReason::Logout))]
        );
    }

    #[test]
    fn either_side_hangs_up_an_answered_call() {
        for (leaver, stayer) in [(leg(1, 10), leg(2, 20)), (leg(2, 20), leg(1, 10))] {
            let mut call = answered();
            let out = call.leave(leaver, EndReason::Hangup).unwrap();
            assert_eq!(out.notes, vec![(stayer, Note::Ended(EndReason::Hangup))]);
            assert_eq!(out.over, Some(EndReason::Hangup));
            assert!(!call.is_answered());
            assert_eq!(call.leave(stayer, EndReason::Hangup), Err(CallError::Ended));
        }
    }

    #[test]
    fn drop_mid_call_ends_with_the_reason() {
        let mut call = answered();
        let out = call.leave(leg(2, 20), EndReason::Disconnected).unwrap();
        assert_eq!(out.notes, vec![(leg(1, 10), Note::Ended(EndReason::Disconnected))]);
    }

    #[test]
    fn strangers_cannot_leave() {
        let mut call = answered();
        assert_eq!(call.leave(leg(3, 30), EndReason::Hangup), Err(CallError::NotMember));
        assert_eq!(call.leave(leg(3, 30), EndReason::Disconnected), Err(CallError::NotMember));
    }

    #[test]
    fn ring_timeout() {
        let mut call = ringing();
        assert_eq!(call.tick(29_999), Output::default());
        let out = call.tick(30_000);
        assert_eq!(
            out.notes,
            vec![
                (leg(2, 20), Note::Ended(EndReason::Timeout)),
                (leg(2, 21), Note::Ended(EndReason::Timeout)),
                (leg(1, 10), Note::Ended(EndReason::Timeout)),
            ]
        );
        assert_eq!(out.over, Some(EndReason::Timeout));
        assert_eq!(call.tick(40_000), Output::default());
    }

    #[test]
    fn group_call_invite_join_leave() {
        let mut call = answered();
        // Carol (3) is invited by Bob and answers on session 30.
        let out = call.invite(leg(2, 20), UserId(3), vec![SessionId(30)], 5_000).unwrap();
        assert_eq!(out.notes, vec![(leg(3, 30), Note::Incoming(leg(2, 20)))]);
        assert_eq!(call.epoch(), 0);
        let out = call.answer(leg(3, 30), true).unwrap();
        assert_eq!(out.notes, vec![(leg(1, 10), Note::Joined(leg(3, 30))), (leg(2, 20), Note::Joined(leg(3, 30)))]);
        assert_eq!(call.epoch(), 1, "a join starts an epoch");
        // Alice leaves: the call goes on for Bob and Carol.
        let out = call.leave(leg(1, 10), EndReason::Hangup).unwrap();
        assert_eq!(out.notes, vec![(leg(2, 20), Note::Left(UserId(1))), (leg(3, 30), Note::Left(UserId(1)))]);
        assert_eq!(out.over, None);
        assert_eq!(call.epoch(), 2, "so does a leave");
        assert!(call.is_answered());
        // Bob leaves: one participant is left, the call ends.
        let out = call.leave(leg(2, 20), EndReason::Hangup).unwrap();
        assert_eq!(out.notes, vec![(leg(3, 30), Note::Ended(EndReason::Hangup))]);
        assert_eq!(out.over, Some(EndReason::Hangup));
    }

    #[test]
    fn invite_refusals() {
        let mut call = ringing();
        assert_eq!(call.invite(leg(1, 10), UserId(3), vec![SessionId(30)], 0), Err(CallError::NotAnswered));
        let mut call = answered();
        assert_eq!(call.invite(leg(9, 90), UserId(3), vec![SessionId(30)], 0), Err(CallError::NotMember));
        assert_eq!(call.invite(leg(1, 10), UserId(2), vec![SessionId(21)], 0), Err(CallError::AlreadyIn));
        call.invite(leg(1, 10), UserId(3), vec![SessionId(30)], 0).unwrap();
        assert_eq!(call.invite(leg(2, 20), UserId(3), vec![SessionId(31)], 0), Err(CallError::AlreadyIn));
        // Two members and six rings make eight.
        for u in 4..9 {
            call.invite(leg(1, 10), UserId(u), vec![SessionId(u * 10)], 0).unwrap();
        }
        assert_eq!(call.invite(leg(1, 10), UserId(9), vec![SessionId(90)], 0), Err(CallError::Full));
    }

    #[test]
    fn unanswered_invite_times_out_without_ending_the_call() {
        let mut call = answered();
        call.invite(leg(1, 10), UserId(3), vec![SessionId(30)], 1_000).unwrap();
        let out = call.tick(31_000);
        assert_eq!(
            out.notes,
            vec![
                (leg(3, 30), Note::Ended(EndReason::Timeout)),
                (leg(1, 10), Note::Declined(UserId(3))),
                (leg(2, 20), Note::Declined(UserId(3))),
            ]
        );
        assert_eq!(out.over, None);
        assert!(call.is_answered());
    }

    #[test]
    fn invitee_declines_group_call_goes_on() {
        let mut call = answered();
        call.invite(leg(1, 10), UserId(3), vec![SessionId(30)], 0).unwrap();
        let out = call.answer(leg(3, 30), false).unwrap();
        assert_eq!(out.notes, vec![(leg(1, 10), Note::Declined(UserId(3))), (leg(2, 20), Note::Declined(UserId(3)))]);
        assert_eq!(out.over, None);
    }

    #[test]
    fn last_member_leaving_ends_pending_invites_too() {
        let mut call = answered();
        call.invite(leg(1, 10), UserId(3), vec![SessionId(30)], 0).unwrap();
        let out = call.leave(leg(2, 20), EndReason::Logout).unwrap();
        assert_eq!(
            out.notes,
            vec![(leg(1, 10), Note::Ended(EndReason::Logout)), (leg(3, 30), Note::Ended(EndReason::Logout))]
        );
    }
}
