//! Every call in this process: the pure [`machine::CallMachine`] of each,
//! what the server knows of each leg (user, IP, media set-up, public
//! address), and who is busy.
//!
//! Methods take the lock briefly, run the machine, and return [`Effects`]
//! for the caller to carry out after unlocking (send events, close call
//! channels, revoke relay grants, republish presence). Nothing here does IO.

pub mod history;
pub mod machine;
pub mod stored;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use babel_proto::{
    CallId, CandidatesUpdate, ChannelFrame, EndReason, Epoch, IncomingCall, KeyRevealed, MediaSetup, NonceSent, Peer,
    PeerJoined, ServerEvent, User, UserId,
};
use bytes::Bytes;

use crate::channel::Room;
use crate::store::SessionId;
use machine::{CallError, CallLimits, CallMachine, Leg, Millis, Note, Output};

/// What the server knows of one leg.
#[derive(Debug, Clone)]
pub struct LegInfo {
    /// The user.
    pub user: User,
    /// The IP of the session's connection.
    pub ip: String,
    /// Key and candidates the client announced.
    pub media: MediaSetup,
    /// The public address the relay saw.
    pub public: Option<SocketAddr>,
    /// Whether it revealed the key it committed to (`/call_key`).
    pub revealed: bool,
    /// The relay's address as this participant reaches the server (no
    /// port): the `ip` it is given for participants whose addresses are
    /// withheld.
    pub relay_ip: String,
}

impl LegInfo {
    /// This leg as the others see it: its addresses (IP, candidates, the
    /// public address the relay saw) only when `shown` (both it and the
    /// viewer have answered) and it did not ask for relay-only; otherwise
    /// `ip` is the relay's (`relay_ip`, the viewer's) and no candidates.
    fn peer_for(&self, shown: bool, relay_ip: &str) -> Peer {
        let mut media = self.media.clone();
        if !shown || media.relay_only {
            media.candidates.clear();
            return Peer { user: self.user.clone(), ip: relay_ip.to_owned(), media };
        }
        if let Some(p) = self.public.filter(|p| !media.candidates.contains(p)) {
            media.candidates.push(p);
        }
        Peer { user: self.user.clone(), ip: self.ip.clone(), media }
    }
}

#[derive(Debug)]
struct Entry {
    machine: CallMachine,
    legs: HashMap<SessionId, LegInfo>,
    room: Arc<Room>,
    /// Users counted busy because of this call.
    busy: Vec<UserId>,
    /// Everyone's call-history entry while their part lasts.
    book: history::Book,
}

#[derive(Debug, Default)]
struct Inner {
    calls: HashMap<CallId, Entry>,
    /// Calls each session is a member of or rung by.
    by_session: HashMap<SessionId, Vec<CallId>>,
    busy: HashMap<UserId, u32>,
    /// Members whose connections are all gone, and when they leave their
    /// call unless they are back (the grace, `call_grace_ms`).
    grace: HashMap<SessionId, (UserId, Millis)>,
}

/// What the caller of a [`Calls`] method must do once the lock is released.
#[derive(Debug, Default)]
pub struct Effects {
    /// Events for one session's event connections.
    pub events: Vec<(Leg, ServerEvent)>,
    /// Call channels to close with a last frame.
    pub finish: Vec<(Arc<Room>, SessionId, Bytes)>,
    /// Relay grants to revoke.
    pub revoke: Vec<(CallId, SessionId)>,
    /// Calls that are over (relay state to drop).
    pub ended: Vec<CallId>,
    /// Users whose presence may have changed (busy).
    pub users: Vec<UserId>,
    /// Call-history entries that finished, to store.
    pub history: Vec<crate::store::CallRecord>,
    /// Calls whose state changed (in a cluster, stored again; see
    /// [`stored`]).
    pub changed: Vec<CallId>,
}

impl Effects {
    fn merge(&mut self, other: Effects) {
        self.events.extend(other.events);
        self.finish.extend(other.finish);
        self.revoke.extend(other.revoke);
        self.ended.extend(other.ended);
        self.users.extend(other.users);
        self.history.extend(other.history);
        self.changed.extend(other.changed);
    }
}

/// Why a call request is refused (all 403s with these words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such call, or over.
    #[error("there is no such call")]
    NoSuchCall,
    /// The machine refused.
    #[error("{0}")]
    Call(#[from] CallError),
    /// A session takes part in one call at a time.
    #[error("you are already in a call")]
    AlreadyInACall,
    /// The random call id is in use; try again.
    #[error("the server could not start the call; please try again")]
    IdTaken,
    /// `/call_key` from a session that sent no `key_commit`.
    #[error("you committed to no key in this call")]
    NothingCommitted,
    /// `/call_key` a second time.
    #[error("you already revealed your key")]
    AlreadyRevealed,
}

/// All calls.
#[derive(Debug)]
pub struct Calls {
    inner: Mutex<Inner>,
    limits: CallLimits,
    start: tokio::time::Instant,
    /// Voice frames dropped on slow call channels, all calls together.
    pub channel_drops: Arc<AtomicU64>,
}

impl Calls {
    /// An empty registry.
    pub fn new(limits: CallLimits) -> Calls {
        Calls { inner: Mutex::default(), limits, start: tokio::time::Instant::now(), channel_drops: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    /// A fresh random call id (`None` if the OS has no randomness).
    pub fn new_id() -> Option<CallId> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).ok()?;
        // Keep ids in i64 range so every client's JSON number parser copes.
        Some(CallId(u64::from_be_bytes(b) >> 1))
    }

    /// Whether the user is talking in an answered call.
    pub fn is_busy(&self, user: UserId) -> bool {
        self.lock().busy.contains_key(&user)
    }

    /// For each user, whether they are busy (one lock for the whole list).
    pub fn busy_map(&self, users: impl IntoIterator<Item = UserId>) -> Vec<bool> {
        let inner = self.lock();
        users.into_iter().map(|u| inner.busy.contains_key(&u)).collect()
    }

    /// Whether the session is a member of some call.
    pub fn in_a_call(&self, session: SessionId) -> bool {
        let inner = self.lock();
        Self::member_call(&inner, session).is_some()
    }

    fn member_call(inner: &Inner, session: SessionId) -> Option<CallId> {
        inner
            .by_session
            .get(&session)?
            .iter()
            .copied()
            .find(|c| inner.calls.get(c).is_some_and(|e| e.machine.is_member(session)))
    }

    /// Whether this process holds the call.
    pub fn contains(&self, id: CallId) -> bool {
        self.lock().calls.contains_key(&id)
    }

    /// Calls in progress (ringing or answered).
    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    /// Whether no call is in progress.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a call from `caller` to every listed session of `callee`.
    pub fn start(
        &self,
        id: CallId,
        caller: Leg,
        info: LegInfo,
        callee: UserId,
        callee_sessions: Vec<SessionId>,
    ) -> Result<Effects, Refusal> {
        let now = self.now();
        let mut inner = self.lock();
        if Self::member_call(&inner, caller.session).is_some() {
            return Err(Refusal::AlreadyInACall);
        }
        if inner.calls.contains_key(&id) {
            // 63 random bits make this all but impossible; never overwrite a call.
            return Err(Refusal::IdTaken);
        }
        let (machine, out) = CallMachine::start(id, caller, callee, callee_sessions, now, self.limits);
        let mut legs = HashMap::new();
        legs.insert(caller.session, info);
        let room = Arc::new(Room::new(Arc::clone(&self.channel_drops)));
        let book = history::Book::new(caller.user, callee, crate::app::now());
        inner.calls.insert(id, Entry { machine, legs, room, busy: Vec::new(), book });
        Ok(Self::settle(&mut inner, id, out, EndReason::Hangup))
    }

    /// A member answers a newcomer's commitment with a nonce
    /// (`/call_nonce`): the other members are told.
    pub fn nonce(&self, id: CallId, leg: Leg, nonce: String) -> Result<Effects, Refusal> {
        let inner = self.lock();
        let entry = inner.calls.get(&id).ok_or(Refusal::NoSuchCall)?;
        if !entry.machine.is_member(leg.session) {
            return Err(CallError::NotMember.into());
        }
        let mut fx = Effects::default();
        for m in entry.machine.members().iter().filter(|m| m.session != leg.session) {
            let event = ServerEvent::CallNonce(NonceSent { call_id: id, id: leg.user, nonce: nonce.clone() });
            fx.events.push((*m, event));
        }
        Ok(fx)
    }

    /// The call's epoch (0 if there is no such call).
    pub fn epoch(&self, id: CallId) -> u32 {
        self.lock().calls.get(&id).map_or(0, |e| e.machine.epoch())
    }

    /// The session answers. On accept, answers the others in the call.
    pub fn answer(&self, id: CallId, leg: Leg, accept: bool, info: LegInfo) -> Result<(Vec<Peer>, Effects), Refusal> {
        let mut inner = self.lock();
        if accept && Self::member_call(&inner, leg.session).is_some_and(|c| c != id) {
            return Err(Refusal::AlreadyInACall);
        }
        let entry = inner.calls.get_mut(&id).ok_or(Refusal::NoSuchCall)?;
        let out = entry.machine.answer(leg, accept)?;
        let mut peers = Vec::new();
        if accept {
            // Members have all answered, and so has this one now.
            peers = entry
                .machine
                .members()
                .iter()
                .filter(|m| m.session != leg.session)
                .filter_map(|m| entry.legs.get(&m.session).map(|l| l.peer_for(true, &info.relay_ip)))
                .collect();
            entry.legs.insert(leg.session, info);
        }
        Ok((peers, Self::settle(&mut inner, id, out, EndReason::Declined)))
    }

    /// A member that committed to its key reveals it (`/call_key`): the
    /// other members are told, and later newcomers see it as its `key`.
    /// Refused before anyone else is in the call, from a session that sent
    /// no commitment, and a second time.
    pub fn reveal(&self, id: CallId, leg: Leg, key: String) -> Result<Effects, Refusal> {
        let mut inner = self.lock();
        let entry = inner.calls.get_mut(&id).ok_or(Refusal::NoSuchCall)?;
        if !entry.machine.is_member(leg.session) {
            return Err(CallError::NotMember.into());
        }
        if !entry.machine.is_answered() {
            return Err(CallError::NotAnswered.into());
        }
        let info = entry.legs.get_mut(&leg.session).ok_or(Refusal::NoSuchCall)?;
        if info.media.key_commit.is_none() {
            return Err(Refusal::NothingCommitted);
        }
        if std::mem::replace(&mut info.revealed, true) {
            return Err(Refusal::AlreadyRevealed);
        }
        info.media.key = Some(key.clone());
        let mut fx = Effects { changed: vec![id], ..Effects::default() };
        for m in entry.machine.members().iter().filter(|m| m.session != leg.session) {
            let event = ServerEvent::CallKey(KeyRevealed { call_id: id, id: leg.user, key: key.clone() });
            fx.events.push((*m, event));
        }
        Ok(fx)
    }

    /// The session leaves one call.
    pub fn leave(&self, id: CallId, leg: Leg, reason: EndReason) -> Result<Effects, Refusal> {
        let mut inner = self.lock();
        let entry = inner.calls.get_mut(&id).ok_or(Refusal::NoSuchCall)?;
        let was_member = entry.machine.is_member(leg.session);
        let out = entry.machine.leave(leg, reason)?;
        let room = Arc::clone(&entry.room);
        let mut fx = Self::settle(&mut inner, id, out, reason);
        if was_member {
            // The leaver's own channel ends too (they asked for it).
            fx.finish.push((room, leg.session, ChannelFrame::CallEnded(id, reason).to_frame().to_bytes()));
            fx.revoke.push((id, leg.session));
        }
        Ok(fx)
    }

    /// The session leaves every call it is in or rung by (logout, account
    /// deleted, all connections gone).
    pub fn leave_all(&self, leg: Leg, reason: EndReason) -> Effects {
        let ids = self.lock().by_session.get(&leg.session).cloned().unwrap_or_default();
        let mut fx = Effects::default();
        for id in ids {
            if let Ok(more) = self.leave(id, leg, reason) {
                fx.merge(more);
            }
        }
        fx
    }

    /// Every connection of the session is gone (here, or on the node that
    /// says so): it stops ringing at once when `end_rings`, and as a member
    /// keeps its place for `grace_ms` more, each such word starting the
    /// grace afresh. [`Self::due`] then names it; the caller checks it is
    /// still gone before it leaves.
    pub fn suspend(&self, leg: Leg, grace_ms: Millis, end_rings: bool) -> Effects {
        let mut fx = Effects::default();
        if end_rings {
            let rung: Vec<CallId> = {
                let inner = self.lock();
                let ids = inner.by_session.get(&leg.session).cloned().unwrap_or_default();
                ids.into_iter()
                    .filter(|c| inner.calls.get(c).is_some_and(|e| !e.machine.is_member(leg.session)))
                    .collect()
            };
            for id in rung {
                if let Ok(more) = self.leave(id, leg, EndReason::Disconnected) {
                    fx.merge(more);
                }
            }
        }
        let now = self.now();
        let mut inner = self.lock();
        if let Some(call) = Self::member_call(&inner, leg.session) {
            inner.grace.insert(leg.session, (leg.user, now + grace_ms));
            // In a cluster the deadline is stored with the call.
            fx.changed.push(call);
        }
        fx
    }

    /// The call the session is a member of, if any.
    pub fn member_call_of(&self, session: SessionId) -> Option<CallId> {
        Self::member_call(&self.lock(), session)
    }

    /// The members whose grace ran out (each named once).
    pub fn due(&self) -> Vec<Leg> {
        let now = self.now();
        let mut inner = self.lock();
        let due: Vec<Leg> = inner
            .grace
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(session, (user, _))| Leg { user: *user, session: *session })
            .collect();
        for leg in &due {
            inner.grace.remove(&leg.session);
        }
        due
    }

    /// The user's sessions that are members of calls here.
    pub fn member_legs_of(&self, user: UserId) -> Vec<Leg> {
        let inner = self.lock();
        let mut legs: Vec<Leg> =
            inner.calls.values().flat_map(|e| e.machine.members().iter().copied().filter(|m| m.user == user)).collect();
        legs.sort_by_key(|l| l.session.0);
        legs.dedup();
        legs
    }

    /// A member rings another user into the call.
    pub fn invite(&self, id: CallId, by: Leg, invitee: UserId, sessions: Vec<SessionId>) -> Result<Effects, Refusal> {
        let now = self.now();
        let mut inner = self.lock();
        let entry = inner.calls.get_mut(&id).ok_or(Refusal::NoSuchCall)?;
        let out = entry.machine.invite(by, invitee, sessions, now)?;
        Ok(Self::settle(&mut inner, id, out, EndReason::Hangup))
    }

    /// Ends rings that lasted too long, in every call.
    pub fn tick(&self) -> Effects {
        let now = self.now();
        let mut inner = self.lock();
        let due: Vec<CallId> = inner
            .calls
            .iter()
            .filter(|(_, e)| e.machine.next_deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        let mut fx = Effects::default();
        for id in due {
            if let Some(entry) = inner.calls.get_mut(&id) {
                let out = entry.machine.tick(now);
                fx.merge(Self::settle(&mut inner, id, out, EndReason::Timeout));
            }
        }
        fx
    }

    /// The call channels of a call the session is a member of.
    pub fn room(&self, id: CallId, session: SessionId) -> Result<Arc<Room>, Refusal> {
        let inner = self.lock();
        let entry = inner.calls.get(&id).ok_or(Refusal::NoSuchCall)?;
        if !entry.machine.is_member(session) {
            return Err(CallError::NotMember.into());
        }
        Ok(Arc::clone(&entry.room))
    }

    /// Every user in a call: its members and those it rings.
    pub fn users_in(&self, id: CallId) -> Vec<UserId> {
        let inner = self.lock();
        let Some(e) = inner.calls.get(&id) else { return Vec::new() };
        e.machine.members().iter().copied().chain(e.machine.ringing_legs()).map(|l| l.user).collect()
    }

    /// The calls `a` and `b` are both in (as members or rung), each with
    /// `a`'s legs in it.
    pub fn shared(&self, a: UserId, b: UserId) -> Vec<(CallId, Vec<Leg>)> {
        let inner = self.lock();
        inner
            .calls
            .iter()
            .filter_map(|(id, e)| {
                let legs: Vec<Leg> = e.machine.members().iter().copied().chain(e.machine.ringing_legs()).collect();
                let mine: Vec<Leg> = legs.iter().copied().filter(|l| l.user == a).collect();
                (!mine.is_empty() && legs.iter().any(|l| l.user == b)).then_some((*id, mine))
            })
            .collect()
    }

    /// Whether the session is a member of that call.
    pub fn is_member(&self, id: CallId, session: SessionId) -> bool {
        self.lock().calls.get(&id).is_some_and(|e| e.machine.is_member(session))
    }

    /// The relay saw a leg's public address: tell the other members.
    pub fn address_learned(&self, id: CallId, leg: Leg, addr: SocketAddr) -> Effects {
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let Some(entry) = inner.calls.get_mut(&id) else { return fx };
        let Some(info) = entry.legs.get_mut(&leg.session) else { return fx };
        info.public = Some(addr);
        fx.changed.push(id);
        if info.media.relay_only {
            // Nothing the others may learn.
            return fx;
        }
        let candidates = info.peer_for(true, "").media.candidates;
        for m in entry.machine.members().iter().filter(|m| m.session != leg.session) {
            fx.events.push((
                *m,
                ServerEvent::CallCandidates(CandidatesUpdate {
                    call_id: id,
                    id: leg.user,
                    candidates: candidates.clone(),
                }),
            ));
        }
        fx
    }

    /// Turns a machine's output into effects and keeps the indexes right;
    /// `reason` is the input's, for the call history ([`history::Book::observe`]).
    fn settle(inner: &mut Inner, id: CallId, out: Output, reason: EndReason) -> Effects {
        let mut fx = Effects { changed: vec![id], ..Effects::default() };
        let Some(entry) = inner.calls.get_mut(&id) else { return fx };
        fx.history = entry.book.observe(id, &entry.machine, &out, reason, crate::app::now());
        for (leg, note) in out.notes {
            let event = match note {
                Note::Incoming(by) => {
                    // The rung session has not answered: it learns nobody's
                    // address, only the relay's.
                    let Some(from) = entry.legs.get(&by.session) else { continue };
                    let relay_ip = &from.relay_ip;
                    let participants = entry
                        .machine
                        .members()
                        .iter()
                        .filter_map(|m| entry.legs.get(&m.session).map(|l| l.peer_for(false, relay_ip)))
                        .collect();
                    let peer = from.peer_for(false, relay_ip);
                    ServerEvent::IncomingCall(IncomingCall {
                        call_id: id,
                        ip: peer.ip,
                        caller: peer.user,
                        media: peer.media,
                        participants,
                    })
                }
                Note::Accepted(joiner) | Note::Joined(joiner) => {
                    // Told to members (who have answered) about one who just did.
                    let Some(info) = entry.legs.get(&joiner.session) else { continue };
                    let relay_ip = entry.legs.get(&leg.session).map_or(info.relay_ip.as_str(), |v| v.relay_ip.as_str());
                    let peer = info.peer_for(true, relay_ip);
                    if matches!(note, Note::Accepted(_)) {
                        ServerEvent::CallAccepted(PeerJoined { call_id: id, peer, epoch: None })
                    } else {
                        let epoch = Some(Epoch(entry.machine.epoch()));
                        ServerEvent::ParticipantJoined(PeerJoined { call_id: id, peer, epoch })
                    }
                }
                Note::Declined(user) => ServerEvent::CallDeclined(id, user),
                Note::Left(user) => ServerEvent::ParticipantLeft(id, user, Epoch(entry.machine.epoch())),
                Note::Ended(reason) => {
                    let frame = ChannelFrame::CallEnded(id, reason).to_frame().to_bytes();
                    fx.finish.push((Arc::clone(&entry.room), leg.session, frame));
                    fx.revoke.push((id, leg.session));
                    ServerEvent::CallEnded(id, reason)
                }
            };
            fx.events.push((leg, event));
        }

        // Re-derive who is busy because of this call, and the session index.
        let now_busy: Vec<UserId> = if entry.machine.is_answered() {
            entry.machine.members().iter().map(|m| m.user).collect()
        } else {
            Vec::new()
        };
        let before = std::mem::replace(&mut entry.busy, now_busy.clone());
        let sessions: Vec<SessionId> =
            entry.machine.members().iter().copied().chain(entry.machine.ringing_legs()).map(|l| l.session).collect();
        entry.legs.retain(|s, _| sessions.contains(s));
        let over = out.over.is_some() || sessions.is_empty();
        for u in &before {
            if let Some(n) = inner.busy.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    inner.busy.remove(u);
                }
            }
        }
        for u in &now_busy {
            *inner.busy.entry(*u).or_default() += 1;
        }
        fx.users.extend(before.iter().chain(&now_busy).copied());
        fx.users.sort();
        fx.users.dedup();

        inner.by_session.retain(|s, calls| {
            if !sessions.contains(s) || over {
                calls.retain(|c| *c != id);
            }
            !calls.is_empty()
        });
        if over {
            inner.calls.remove(&id);
            fx.ended.push(id);
        } else {
            for s in sessions {
                let list = inner.by_session.entry(s).or_default();
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The fixtures `stored.rs`' tests share.

    pub(super) fn calls() -> Calls {
        Calls::new(CallLimits { ring_timeout: 30_000, max_participants: 8 })
    }

    pub(super) fn info(id: i64) -> LegInfo {
        LegInfo {
            user: User { id: UserId(id), name: format!("u{id}"), email: format!("u{id}@x.org") },
            ip: format!("203.0.113.{id}"),
            media: MediaSetup::default(),
            public: None,
            revealed: false,
            relay_ip: "192.0.2.1".into(),
        }
    }

    pub(super) fn leg(user: i64, session: i64) -> Leg {
        Leg { user: UserId(user), session: SessionId(session) }
    }

    #[test]
    fn busy_follows_answered_calls_and_nothing_is_left_behind() {
        let c = calls();
        let fx = c.start(CallId(1), leg(1, 10), info(1), UserId(2), vec![SessionId(20)]).unwrap();
        assert!(matches!(fx.events[0].1, ServerEvent::IncomingCall(_)));
        assert!(!c.is_busy(UserId(1)), "ringing is not busy");
        assert!(c.in_a_call(SessionId(10)));
        assert!(!c.in_a_call(SessionId(20)), "being rung is not being in a call");
        let (peers, fx) = c.answer(CallId(1), leg(2, 20), true, info(2)).unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].user.id, UserId(1));
        assert!(matches!(fx.events[0].1, ServerEvent::CallAccepted(_)));
        assert_eq!(fx.users, vec![UserId(1), UserId(2)]);
        assert!(c.is_busy(UserId(1)) && c.is_busy(UserId(2)));
        let fx = c.leave(CallId(1), leg(1, 10), EndReason::Hangup).unwrap();
        assert_eq!(fx.ended, vec![CallId(1)]);
        assert_eq!(fx.revoke.len(), 2);
        assert!(!c.is_busy(UserId(1)) && !c.is_busy(UserId(2)));
        assert!(c.is_empty());
        assert!(c.lock().by_session.is_empty());
        assert!(c.lock().busy.is_empty());
    }

    #[test]
    fn one_call_per_session() {
        let c = calls();
        c.start(CallId(1), leg(1, 10), info(1), UserId(2), vec![SessionId(20)]).unwrap();
        assert_eq!(
            c.start(CallId(1), leg(3, 30), info(3), UserId(2), vec![SessionId(20)]).unwrap_err(),
            Refusal::IdTaken
        );
        assert_eq!(
            c.start(CallId(2), leg(1, 10), info(1), UserId(3), vec![SessionId(30)]).unwrap_err(),
            Refusal::AlreadyInACall
        );
        assert_eq!(c.answer(CallId(9), leg(2, 20), true, info(2)).unwrap_err(), Refusal::NoSuchCall);
    }

    #[test]
    fn public_address_is_announced_to_the_others() {
        let c = calls();
        c.start(CallId(1), leg(1, 10), info(1), UserId(2), vec![SessionId(20)]).unwrap();
        c.answer(CallId(1), leg(2, 20), true, info(2)).unwrap();
        let addr: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let fx = c.address_learned(CallId(1), leg(1, 10), addr);
        assert_eq!(fx.events.len(), 1);
        assert_eq!(fx.events[0].0, leg(2, 20));
        match &fx.events[0].1 {
            ServerEvent::CallCandidates(u) => assert_eq!(u.candidates, vec![addr]),
            other => panic!("{other:?}"),
        }
    }

    /// Finding 11 of issue #14: `/call` and `/invite` gave out addresses
    /// before anyone answered.
    #[test]
    fn addresses_are_withheld_until_answered_and_from_relay_only() {
        let c = calls();
        let cand = |p: u16| -> SocketAddr { SocketAddr::from(([198, 51, 100, 1], p)) };
        let withheld = |p: &Peer| p.ip == "192.0.2.1" && p.media.candidates.is_empty();
        let mut a = info(1);
        a.media.candidates = vec![cand(1)];
        let fx = c.start(CallId(1), leg(1, 10), a, UserId(2), vec![SessionId(20)]).unwrap();
        match &fx.events[0].1 {
            ServerEvent::IncomingCall(i) => {
                assert_eq!((i.ip.as_str(), i.media.candidates.len()), ("192.0.2.1", 0), "rung: the relay's only");
                assert!(i.participants.iter().all(withheld));
            }
            other => panic!("{other:?}"),
        }
        let mut b = info(2);
        b.media.candidates = vec![cand(2)];
        b.media.relay_only = true;
        let (peers, fx) = c.answer(CallId(1), leg(2, 20), true, b).unwrap();
        assert_eq!((peers[0].ip.as_str(), &peers[0].media.candidates), ("203.0.113.1", &vec![cand(1)]), "answered");
        match &fx.events[0].1 {
            ServerEvent::CallAccepted(j) => assert!(withheld(&j.peer), "relay-only: {:?}", j.peer),
            other => panic!("{other:?}"),
        }
        assert!(c.address_learned(CallId(1), leg(2, 20), cand(9)).events.is_empty(), "relay-only: never told");
        assert_eq!(c.address_learned(CallId(1), leg(1, 10), cand(8)).events.len(), 1);

        let fx = c.invite(CallId(1), leg(1, 10), UserId(3), vec![SessionId(30)]).unwrap();
        match &fx.events[0].1 {
            ServerEvent::IncomingCall(i) => {
                assert!(i.media.candidates.is_empty() && i.ip == "192.0.2.1");
                assert_eq!(i.participants.len(), 2);
                assert!(i.participants.iter().all(withheld), "invited: {:?}", i.participants);
            }
            other => panic!("{other:?}"),
        }
        let (peers, _) = c.answer(CallId(1), leg(3, 30), true, info(3)).unwrap();
        let a_seen = peers.iter().find(|p| p.user.id == UserId(1)).unwrap();
        assert_eq!(a_seen.media.candidates, vec![cand(1), cand(8)], "answered: the caller's, with its public one");
        assert!(withheld(peers.iter().find(|p| p.user.id == UserId(2)).unwrap()));
    }

    #[test]
    fn a_member_whose_connections_are_gone_keeps_its_place_until_its_grace_is_due() {
        let c = calls();
        c.start(CallId(1), leg(1, 10), info(1), UserId(2), vec![SessionId(20), SessionId(21)]).unwrap();
        c.answer(CallId(1), leg(2, 20), true, info(2)).unwrap();
        c.start(CallId(2), leg(3, 30), info(3), UserId(2), vec![SessionId(21)]).unwrap();
        // Session 21 only rings (call 2): it stops at once, and has no grace.
        let fx = c.suspend(leg(2, 21), 60_000, true);
        assert!(fx.events.iter().any(|(l, e)| *l == leg(3, 30) && matches!(e, ServerEvent::CallDeclined(..))));
        assert!(!c.contains(CallId(2)));
        // Session 20 is a member: nothing happens yet.
        let fx = c.suspend(leg(2, 20), 60_000, true);
        assert!(fx.events.is_empty() && c.is_member(CallId(1), SessionId(20)));
        assert!(c.due().is_empty());
        // A grace of 0 is due at once, and named once.
        c.suspend(leg(2, 20), 0, true);
        assert_eq!(c.due(), vec![leg(2, 20)]);
        assert!(c.due().is_empty());
        assert!(c.is_member(CallId(1), SessionId(20)), "the caller decides whether it leaves");
        assert_eq!(c.member_legs_of(UserId(2)), vec![leg(2, 20)]);
        assert!(c.member_legs_of(UserId(3)).is_empty());
    }

    #[test]
    fn leave_all_ends_ringing_and_member_calls() {
        let c = calls();
        c.start(CallId(1), leg(1, 10), info(1), UserId(2), vec![SessionId(20)]).unwrap();
        let fx = c.leave_all(leg(2, 20), EndReason::Logout);
        assert_eq!(fx.ended, vec![CallId(1)]);
        assert!(c.is_empty());
    }
}
