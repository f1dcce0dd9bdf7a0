//! A call's state as a cluster keeps it (issue #18 item 3): everything
//! another node needs to take the call over when its home dies. The home
//! writes it whenever the call changes (`cluster/adopt.rs`); the adopter
//! reads it back into its own [`Calls`]. Pure: no IO here.

use std::net::SocketAddr;
use std::sync::Arc;

use babel_proto::{CallId, EndReason, MediaSetup, User, UserId};
use serde::{Deserialize, Serialize};

use super::machine::{CallMachine, Leg, Output, RingPart};
use super::{Calls, Effects, Entry, LegInfo, Refusal, history};
use crate::channel::Room;
use crate::store::SessionId;

/// Whether anyone answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The first callee is still being rung.
    Ringing,
    /// Two or more talk (or did).
    Answered,
}

/// A member of the call: its session and what the home knew of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLeg {
    /// The session.
    pub session: i64,
    /// The user.
    pub user: User,
    /// The IP of its connection.
    pub ip: String,
    /// The relay's address as it reached the server.
    pub relay_ip: String,
    /// Key and candidates.
    pub media: MediaSetup,
    /// It asked for relay-only (`MediaSetup` does not carry it in JSON).
    pub relay_only: bool,
    /// The public address the relay saw.
    pub public: Option<SocketAddr>,
    /// It revealed its key.
    pub revealed: bool,
    /// In its grace (every connection gone): when the grace runs out, in
    /// wall-clock milliseconds since 1970, so that an adopter keeps only
    /// the rest of it (`Calls::suspend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until_ms: Option<u64>,
}

/// A ring in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRing {
    /// Who rang (user).
    pub by_user: i64,
    /// Who rang (session).
    pub by_session: i64,
    /// Whom.
    pub user: i64,
    /// On which sessions.
    pub sessions: Vec<i64>,
}

/// One call's stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCall {
    /// The node that holds the call (its home); its liveness is the node's
    /// own heartbeat, not anything per call.
    pub home: String,
    /// Which run of the home (its random id per start, as in its notes):
    /// a node restarted under the same name is another run, and adopts
    /// the calls of its earlier one (`cluster/adopt.rs`).
    #[serde(default)]
    pub run: u64,
    /// Ringing or answered.
    pub state: Phase,
    /// The call's epoch.
    pub epoch: u32,
    /// Members, in the order they joined.
    pub members: Vec<StoredLeg>,
    /// Rings in progress.
    pub rings: Vec<StoredRing>,
    /// The sessions holding a leg on the home's relay.
    pub relay_legs: Vec<i64>,
    /// Everyone's open call-history entry.
    pub history: Vec<history::Open>,
}

impl Calls {
    /// The call's state to store, as held by `home` in its run `run`;
    /// `None` when there is no such call (it ended).
    pub fn export(&self, id: CallId, home: &str, run: u64) -> Option<StoredCall> {
        self.export_at(id, home, run, wall_ms())
    }

    /// [`Self::export`], the wall clock reading `wall` (ms since 1970).
    pub fn export_at(&self, id: CallId, home: &str, run: u64, wall: u64) -> Option<StoredCall> {
        let now = self.now();
        let inner = self.lock();
        let entry = inner.calls.get(&id)?;
        let m = &entry.machine;
        let members: Vec<StoredLeg> = m
            .members()
            .iter()
            .filter_map(|leg| {
                let info = entry.legs.get(&leg.session)?;
                Some(StoredLeg {
                    session: leg.session.0,
                    user: info.user.clone(),
                    ip: info.ip.clone(),
                    relay_ip: info.relay_ip.clone(),
                    // The flag travels beside it (JSON never carries it).
                    media: MediaSetup { relay_only: false, ..info.media.clone() },
                    relay_only: info.media.relay_only,
                    public: info.public,
                    revealed: info.revealed,
                    grace_until_ms: inner.grace.get(&leg.session).map(|(_, until)| {
                        if *until >= now { wall.saturating_add(until - now) } else { wall.saturating_sub(now - until) }
                    }),
                })
            })
            .collect();
        let rings = m
            .ring_parts()
            .into_iter()
            .map(|r| StoredRing {
                by_user: r.by.user.0,
                by_session: r.by.session.0,
                user: r.user.0,
                sessions: r.sessions.iter().map(|s| s.0).collect(),
            })
            .collect();
        Some(StoredCall {
            home: home.to_owned(),
            run,
            state: if m.was_answered() { Phase::Answered } else { Phase::Ringing },
            epoch: m.epoch(),
            relay_legs: members.iter().map(|l| l.session).collect(),
            members,
            rings,
            history: entry.book.export(),
        })
    }

    /// Takes over a stored call (its home died): it goes on here from the
    /// state stored. Refused if this process holds the call already. A
    /// member in its grace keeps the rest of it (due at once if it ran
    /// out), not a fresh one.
    pub fn import(&self, id: CallId, stored: StoredCall) -> Result<Effects, Refusal> {
        self.import_at(id, stored, wall_ms())
    }

    /// [`Self::import`], the wall clock reading `wall` (ms since 1970).
    pub fn import_at(&self, id: CallId, stored: StoredCall, wall: u64) -> Result<Effects, Refusal> {
        let now = self.now();
        let mut inner = self.lock();
        if inner.calls.contains_key(&id) {
            return Err(Refusal::IdTaken);
        }
        let members: Vec<Leg> =
            stored.members.iter().map(|l| Leg { user: l.user.id, session: SessionId(l.session) }).collect();
        let rings = stored
            .rings
            .iter()
            .map(|r| RingPart {
                by: Leg { user: UserId(r.by_user), session: SessionId(r.by_session) },
                user: UserId(r.user),
                sessions: r.sessions.iter().copied().map(SessionId).collect(),
            })
            .collect();
        let machine =
            CallMachine::restore(id, self.limits, members, rings, stored.state == Phase::Answered, stored.epoch, now);
        for l in &stored.members {
            if let Some(until) = l.grace_until_ms {
                inner.grace.insert(SessionId(l.session), (l.user.id, now + until.saturating_sub(wall)));
            }
        }
        let legs = stored
            .members
            .into_iter()
            .map(|l| {
                let mut media = l.media;
                media.relay_only = l.relay_only;
                let info = LegInfo {
                    user: l.user,
                    ip: l.ip,
                    media,
                    public: l.public,
                    revealed: l.revealed,
                    relay_ip: l.relay_ip,
                };
                (SessionId(l.session), info)
            })
            .collect();
        let room = Arc::new(Room::new(Arc::clone(&self.channel_drops)));
        let book = history::Book::resume(stored.history);
        inner.calls.insert(id, Entry { machine, legs, room, busy: Vec::new(), book });
        Ok(Self::settle(&mut inner, id, Output::default(), EndReason::Disconnected))
    }
}

/// The wall clock in milliseconds since 1970 (0 if it reads earlier).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use babel_proto::ServerEvent;

    use super::super::tests::{calls, leg};
    use super::*;

    /// `calls/mod.rs`' fixture, with a media key to carry through the store.
    fn info(id: i64) -> LegInfo {
        LegInfo {
            media: MediaSetup { key: Some(format!("k{id}")), ..MediaSetup::default() },
            ..super::super::tests::info(id)
        }
    }

    #[test]
    fn a_call_stored_by_one_node_goes_on_at_another() {
        let home = calls();
        home.start(CallId(1), leg(1, 10), info(1), UserId(2), vec![SessionId(20)]).unwrap();
        let mut b = info(2);
        b.media.relay_only = true;
        home.answer(CallId(1), leg(2, 20), true, b).unwrap();
        home.address_learned(CallId(1), leg(1, 10), "198.51.100.1:4000".parse().unwrap());
        home.invite(CallId(1), leg(1, 10), UserId(3), vec![SessionId(30), SessionId(31)]).unwrap();

        let stored = home.export(CallId(1), "a", 7).unwrap();
        assert_eq!(
            (stored.home.as_str(), stored.state, stored.relay_legs.clone()),
            ("a", Phase::Answered, vec![10, 20])
        );
        assert_eq!(stored.rings.len(), 1);
        assert!(stored.members[1].relay_only);
        let text = serde_json::to_string(&stored).unwrap();
        let back: StoredCall = serde_json::from_str(&text).unwrap();
        assert_eq!(back, stored);

        let adopter = calls();
        let fx = adopter.import(CallId(1), back.clone()).unwrap();
        assert_eq!(fx.users, vec![UserId(1), UserId(2)], "busy again, here");
        assert!(adopter.is_busy(UserId(1)) && adopter.is_member(CallId(1), SessionId(20)));
        assert_eq!(adopter.export(CallId(1), "a", 7), Some(stored), "nothing lost on the way");
        assert_eq!(adopter.import(CallId(1), back).unwrap_err(), Refusal::IdTaken);

        // The invitee answers at the adopter: the others learn of it, and
        // the relay-only member's addresses stay withheld.
        let (peers, fx) = adopter.answer(CallId(1), leg(3, 31), true, info(3)).unwrap();
        let bob = peers.iter().find(|p| p.user.id == UserId(2)).unwrap();
        assert!(bob.media.candidates.is_empty() && bob.ip == "192.0.2.1", "{bob:?}");
        let ann = peers.iter().find(|p| p.user.id == UserId(1)).unwrap();
        assert_eq!(ann.media.candidates, vec!["198.51.100.1:4000".parse().unwrap()]);
        assert!(fx.events.iter().any(|(l, e)| *l == leg(3, 30) && matches!(e, ServerEvent::CallEnded(..))));
        assert_eq!(fx.changed, vec![CallId(1)]);

        // Ended: nothing left to store.
        adopter.leave(CallId(1), leg(1, 10), EndReason::Hangup).unwrap();
        adopter.leave(CallId(1), leg(2, 20), EndReason::Hangup).unwrap();
        assert_eq!(adopter.export(CallId(1), "b", 8), None);
    }

    #[test]
    fn a_member_in_its_grace_keeps_only_the_rest_of_it_at_the_adopter() {
        let home = calls();
        home.start(CallId(1), leg(1, 10), info(1), UserId(2), vec![SessionId(20)]).unwrap();
        home.answer(CallId(1), leg(2, 20), true, info(2)).unwrap();
        let fx = home.suspend(leg(2, 20), 10_000, true);
        assert_eq!(fx.changed, vec![CallId(1)], "the grace's start is stored");
        let wall = 1_000_000_000;
        let stored = home.export_at(CallId(1), "a", 7, wall).unwrap();
        assert_eq!((stored.home.as_str(), stored.run), ("a", 7));
        assert_eq!(stored.members[0].grace_until_ms, None);
        let until = stored.members[1].grace_until_ms.expect("the deadline is stored");
        assert!((wall + 9_000..=wall + 10_000).contains(&until), "{until}");
        let text = serde_json::to_string(&stored).unwrap();
        assert_eq!(serde_json::from_str::<StoredCall>(&text).unwrap(), stored);

        // 9.5 s later by the wall clock the adopter gives at most the 0.5 s
        // left, not a fresh grace.
        let adopter = calls();
        adopter.import_at(CallId(1), stored.clone(), wall + 9_500).unwrap();
        assert!(adopter.due().is_empty() || until < wall + 9_500);
        let back = adopter.export_at(CallId(1), "b", 8, wall + 9_500).unwrap();
        let left = back.members[1].grace_until_ms.unwrap().saturating_sub(wall + 9_500);
        assert!(left <= 500, "{left} ms of grace left");
        assert_eq!(back.members[0].grace_until_ms, None);

        // One whose grace ran out while the home was dying is due at once.
        let late = calls();
        late.import_at(CallId(1), stored, wall + 20_000).unwrap();
        assert_eq!(late.due(), vec![leg(2, 20)]);
    }
}
