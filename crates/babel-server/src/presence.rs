//! Who is online: which sessions have at least one open, authenticated
//! connection in this process.
//!
//! A connection speaks for at most one session (which one is decided by
//! `App`, PROTOCOL.md §6) and holds a [`PresenceGuard`] for it; releasing the
//! guard (the connection closing, or moving to another session) detaches it and says whether that was the session's
//! last connection and the user's last session. Ending a session (`/logout`)
//! or a user (`/delete`) forgets them at once, whatever guards are alive.
//!
//! Not here: durable state, or what presence is *published* to contacts
//! (see `App::refresh_status`), or other nodes' connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use babel_proto::UserId;
use tokio_util::sync::CancellationToken;

use crate::store::SessionId;

#[derive(Debug)]
struct Live {
    connections: u32,
    /// Cancelled when the session is ended for a reason its connections
    /// must hear (`/session_ended`): they close.
    closed: CancellationToken,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<UserId, HashMap<SessionId, Live>>,
}

/// Live connections per session, per user.
#[derive(Debug, Default)]
pub struct PresenceRegistry {
    inner: Mutex<Inner>,
}

/// What releasing a guard changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Detached {
    /// That was the session's last connection.
    pub session_gone: bool,
    /// That was the user's last live session.
    pub user_offline: bool,
}

/// Keeps a session counted as online while it lives.
#[derive(Debug)]
pub struct PresenceGuard {
    registry: Arc<PresenceRegistry>,
    user: UserId,
    session: SessionId,
    armed: bool,
    closed: CancellationToken,
}

impl PresenceGuard {
    /// The session this guard keeps online.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// Cancelled once the session is closed ([`PresenceRegistry::close_session`]):
    /// the connection holding this guard is to close.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Drops the guard without detaching: for a session the registry has
    /// already forgotten (logged out, deleted), whose count is no longer
    /// this guard's to change.
    pub fn forget(mut self) {
        self.armed = false;
    }

    /// Detaches now and reports what changed.
    pub fn release(mut self) -> Detached {
        self.armed = false;
        self.registry.detach(self.user, self.session)
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        if self.armed {
            self.registry.detach(self.user, self.session);
        }
    }
}

impl PresenceRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent: poison is harmless.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more connection for `session`. Also answers whether the
    /// user was offline until now.
    pub fn attach(self: &Arc<Self>, user: UserId, session: SessionId) -> (PresenceGuard, bool) {
        let mut inner = self.lock();
        let sessions = inner.users.entry(user).or_default();
        let was_offline = sessions.is_empty();
        let live = sessions.entry(session).or_insert_with(|| Live { connections: 0, closed: CancellationToken::new() });
        live.connections += 1;
        let closed = live.closed.clone();
        (PresenceGuard { registry: Arc::clone(self), user, session, armed: true, closed }, was_offline)
    }

    fn detach(&self, user: UserId, session: SessionId) -> Detached {
        let mut inner = self.lock();
        let Some(sessions) = inner.users.get_mut(&user) else { return Detached::default() };
        let mut out = Detached::default();
        if let Some(live) = sessions.get_mut(&session) {
            live.connections -= 1;
            if live.connections == 0 {
                sessions.remove(&session);
                out.session_gone = true;
            }
        }
        if sessions.is_empty() {
            inner.users.remove(&user);
            out.user_offline = out.session_gone;
        }
        out
    }

    /// Forgets a session (logged out), whatever connections it still has.
    pub fn end_session(&self, user: UserId, session: SessionId) {
        let mut inner = self.lock();
        if let Some(sessions) = inner.users.get_mut(&user) {
            sessions.remove(&session);
            if sessions.is_empty() {
                inner.users.remove(&user);
            }
        }
    }

    /// Tells every connection that speaks for the session to close (before
    /// [`Self::end_session`] forgets it).
    pub fn close_session(&self, user: UserId, session: SessionId) {
        if let Some(live) = self.lock().users.get(&user).and_then(|m| m.get(&session)) {
            live.closed.cancel();
        }
    }

    /// Tells every connection that speaks for one of the user's sessions to
    /// close.
    pub fn close_user(&self, user: UserId) {
        if let Some(sessions) = self.lock().users.get(&user) {
            for live in sessions.values() {
                live.closed.cancel();
            }
        }
    }

    /// Forgets a user (deleted).
    pub fn end_user(&self, user: UserId) {
        self.lock().users.remove(&user);
    }

    /// Whether the session is counted (not ended, and attached somewhere).
    pub fn is_attached(&self, user: UserId, session: SessionId) -> bool {
        self.lock().users.get(&user).is_some_and(|m| m.contains_key(&session))
    }

    /// Whether the user has a live session.
    pub fn is_online(&self, user: UserId) -> bool {
        self.lock().users.contains_key(&user)
    }

    /// For each user, whether they are online (one lock for the whole list).
    pub fn online_map(&self, users: impl IntoIterator<Item = UserId>) -> Vec<bool> {
        let inner = self.lock();
        users.into_iter().map(|u| inner.users.contains_key(&u)).collect()
    }

    /// Every user with a live session here.
    pub fn users(&self) -> Vec<UserId> {
        self.lock().users.keys().copied().collect()
    }

    /// The user's live sessions.
    pub fn sessions_of(&self, user: UserId) -> Vec<SessionId> {
        let inner = self.lock();
        let mut s: Vec<SessionId> = inner.users.get(&user).map(|m| m.keys().copied().collect()).unwrap_or_default();
        s.sort();
        s
    }

    /// How many users are online.
    #[cfg(test)]
    pub fn online_users(&self) -> usize {
        self.lock().users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_while_a_guard_lives() {
        let r = Arc::new(PresenceRegistry::default());
        let u = UserId(1);
        assert!(!r.is_online(u));
        let (g1, first) = r.attach(u, SessionId(1));
        assert!(first);
        let (g2, again) = r.attach(u, SessionId(1));
        assert!(!again);
        let (g3, _) = r.attach(u, SessionId(2));
        assert_eq!(r.sessions_of(u), vec![SessionId(1), SessionId(2)]);
        assert_eq!(g1.release(), Detached { session_gone: false, user_offline: false });
        assert_eq!(g3.release(), Detached { session_gone: true, user_offline: false });
        assert!(r.is_online(u));
        assert_eq!(g2.release(), Detached { session_gone: true, user_offline: true });
        assert!(!r.is_online(u));
        assert_eq!(r.online_users(), 0);
    }

    #[test]
    fn a_forgotten_guard_leaves_later_counts_alone() {
        let r = Arc::new(PresenceRegistry::default());
        let u = UserId(1);
        let (old, _) = r.attach(u, SessionId(1));
        assert!(r.is_attached(u, SessionId(1)));
        r.end_session(u, SessionId(1));
        assert!(!r.is_attached(u, SessionId(1)));
        // Whatever attached since is not the old guard's to take away.
        let (late, _) = r.attach(u, SessionId(1));
        old.forget();
        assert!(r.is_attached(u, SessionId(1)));
        drop(late);
        assert!(!r.is_attached(u, SessionId(1)) && !r.is_online(u));
    }

    #[test]
    fn ended_session_is_offline_at_once() {
        let r = Arc::new(PresenceRegistry::default());
        let u = UserId(1);
        let (g, _) = r.attach(u, SessionId(1));
        let (other, _) = r.attach(u, SessionId(2));
        r.end_session(u, SessionId(1));
        assert!(r.is_online(u), "the other device is still there");
        drop(other);
        assert!(!r.is_online(u));
        assert_eq!(g.release(), Detached::default(), "a late release of an ended session changes nothing");
        let (g, _) = r.attach(u, SessionId(3));
        r.end_user(u);
        assert!(!r.is_online(u));
        drop(g);
        assert_eq!(r.online_map([u, UserId(2)]), vec![false, false]);
    }

    #[test]
    fn closing_a_session_signals_its_connections_only() {
        let r = Arc::new(PresenceRegistry::default());
        let u = UserId(1);
        let (a1, _) = r.attach(u, SessionId(1));
        let (a2, _) = r.attach(u, SessionId(1));
        let (b, _) = r.attach(u, SessionId(2));
        r.close_session(u, SessionId(1));
        assert!(a1.closed().is_cancelled() && a2.closed().is_cancelled());
        assert!(!b.closed().is_cancelled());
        r.end_session(u, SessionId(1));
        // A later connection of a session with the same id starts afresh.
        let (late, _) = r.attach(u, SessionId(1));
        assert!(!late.closed().is_cancelled());
        r.close_user(u);
        assert!(late.closed().is_cancelled() && b.closed().is_cancelled());
    }
}
