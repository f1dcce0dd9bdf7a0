//! Who is online: which sessions have at least one open, authenticated
//! connection in this process.
//!
//! A connection that makes an authenticated request attaches itself to that
//! session and holds a [`PresenceGuard`]; dropping the guard (the connection
//! closing) detaches it. Ending a session (`/logout`) or a user (`/delete`)
//! forgets them at once, whatever guards are still alive.
//!
//! Not here: durable state, or other nodes' connections (a multi-node setup
//! puts a shared registry behind the same calls).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use babel_proto::UserId;

use crate::store::SessionId;

/// Live connections per session, per user.
#[derive(Debug, Default)]
pub struct PresenceRegistry {
    users: Mutex<HashMap<UserId, HashMap<SessionId, u32>>>,
}

/// Keeps a session counted as online while it lives.
#[derive(Debug)]
pub struct PresenceGuard {
    registry: Arc<PresenceRegistry>,
    user: UserId,
    session: SessionId,
}

impl PresenceGuard {
    /// The session this guard keeps online.
    pub fn session(&self) -> SessionId {
        self.session
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.registry.detach(self.user, self.session);
    }
}

impl PresenceRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, HashMap<SessionId, u32>>> {
        // Every critical section leaves the map consistent: poison is harmless.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more connection for `session`.
    pub fn attach(self: &Arc<Self>, user: UserId, session: SessionId) -> PresenceGuard {
        *self
            .lock()
            .entry(user)
            .or_default()
            .entry(session)
            .or_insert(0) += 1;
        PresenceGuard {
            registry: Arc::clone(self),
            user,
            session,
        }
    }

    fn detach(&self, user: UserId, session: SessionId) {
        let mut users = self.lock();
        let Some(sessions) = users.get_mut(&user) else {
            return;
        };
        if let Some(n) = sessions.get_mut(&session) {
            *n -= 1;
            if *n == 0 {
                sessions.remove(&session);
            }
        }
        if sessions.is_empty() {
            users.remove(&user);
        }
    }

    /// Forgets a session (logged out), whatever connections it still has.
    pub fn end_session(&self, user: UserId, session: SessionId) {
        let mut users = self.lock();
        if let Some(sessions) = users.get_mut(&user) {
            sessions.remove(&session);
            if sessions.is_empty() {
                users.remove(&user);
            }
        }
    }

    /// Forgets a user (deleted).
    pub fn end_user(&self, user: UserId) {
        self.lock().remove(&user);
    }

    /// Whether the user has a live session.
    pub fn is_online(&self, user: UserId) -> bool {
        self.lock().contains_key(&user)
    }

    /// For each user, whether they are online (one lock for the whole list).
    pub fn online_map(&self, users: impl IntoIterator<Item = UserId>) -> Vec<bool> {
        let map = self.lock();
        users.into_iter().map(|u| map.contains_key(&u)).collect()
    }

    /// How many users are online.
    pub fn online_users(&self) -> usize {
        self.lock().len()
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
        let g1 = r.attach(u, SessionId(1));
        let g2 = r.attach(u, SessionId(1));
        let g3 = r.attach(u, SessionId(2));
        drop(g1);
        drop(g3);
        assert!(r.is_online(u));
        drop(g2);
        assert!(!r.is_online(u));
        assert_eq!(r.online_users(), 0);
    }

    #[test]
    fn ended_session_is_offline_at_once() {
        let r = Arc::new(PresenceRegistry::default());
        let u = UserId(1);
        let g = r.attach(u, SessionId(1));
        let other = r.attach(u, SessionId(2));
        r.end_session(u, SessionId(1));
        assert!(r.is_online(u), "the other device is still there");
        drop(other);
        assert!(!r.is_online(u));
        drop(g); // late drop of an ended session's guard is harmless
        assert!(!r.is_online(u));
        let g = r.attach(u, SessionId(3));
        r.end_user(u);
        assert!(!r.is_online(u));
        drop(g);
        assert_eq!(r.online_map([u, UserId(2)]), vec![false, false]);
    }
}
