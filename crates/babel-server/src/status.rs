//! What others see of a user: the presence the connections give (online,
//! busy, offline) combined with the status the user chose (`/set_status`).
//!
//! [`shown`] is the pure rule (DESIGN.md §5): `busy` > `dnd` > `away` >
//! `online`, and `invisible` shows `offline`. [`StatusBook`] keeps the
//! chosen status of every user who came online in this process, loaded from
//! the store when their first connection takes a session, so the sync
//! presence paths never wait on the disk.
//!
//! Not here: storing the choice (the store), telling contacts
//! (`App::refresh_status`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use babel_proto::{ChosenStatus, Presence, UserId};

/// What a contact sees of a user who is `online` (or not) and `busy` (in an
/// answered call) and chose `chosen`.
pub fn shown(online: bool, busy: bool, chosen: ChosenStatus) -> Presence {
    match (online, chosen) {
        (false, _) | (true, ChosenStatus::Invisible) => Presence::Offline,
        _ if busy => Presence::Busy,
        (true, ChosenStatus::Dnd) => Presence::Dnd,
        (true, ChosenStatus::Away) => Presence::Away,
        (true, ChosenStatus::Available) => Presence::Online,
    }
}

/// The chosen status of users known to this process.
#[derive(Debug, Default)]
pub struct StatusBook {
    chosen: Mutex<HashMap<UserId, ChosenStatus>>,
}

impl StatusBook {
    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, ChosenStatus>> {
        self.chosen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the user's choice is loaded.
    pub fn knows(&self, user: UserId) -> bool {
        self.lock().contains_key(&user)
    }

    /// Records a choice read from the store, unless a newer one (from
    /// `/set_status`) got here first.
    pub fn fill(&self, user: UserId, status: ChosenStatus) {
        self.lock().entry(user).or_insert(status);
    }

    /// Records a new choice; answers the one before.
    pub fn set(&self, user: UserId, status: ChosenStatus) -> ChosenStatus {
        self.lock().insert(user, status).unwrap_or_default()
    }

    /// The user's choice (`available` if not loaded).
    pub fn get(&self, user: UserId) -> ChosenStatus {
        self.lock().get(&user).copied().unwrap_or_default()
    }

    /// Choices for many users under one lock.
    pub fn get_many(&self, users: impl IntoIterator<Item = UserId>) -> Vec<ChosenStatus> {
        let book = self.lock();
        users.into_iter().map(|u| book.get(&u).copied().unwrap_or_default()).collect()
    }

    /// Forgets a deleted user.
    pub fn forget(&self, user: UserId) {
        self.lock().remove(&user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_busy_dnd_away_online() {
        use ChosenStatus::*;
        let cases = [
            (true, false, Available, Presence::Online),
            (true, false, Away, Presence::Away),
            (true, false, Dnd, Presence::Dnd),
            (true, true, Available, Presence::Busy),
            (true, true, Away, Presence::Busy),
            (true, true, Dnd, Presence::Busy),
            (true, false, Invisible, Presence::Offline),
            (true, true, Invisible, Presence::Offline),
            (false, false, Dnd, Presence::Offline),
            (false, true, Available, Presence::Offline),
        ];
        for (online, busy, chosen, want) in cases {
            assert_eq!(shown(online, busy, chosen), want, "{online} {busy} {chosen}");
        }
    }

    #[test]
    fn a_set_choice_wins_over_a_late_fill() {
        let book = StatusBook::default();
        let u = UserId(1);
        assert!(!book.knows(u));
        assert_eq!(book.get(u), ChosenStatus::Available);
        assert_eq!(book.set(u, ChosenStatus::Dnd), ChosenStatus::Available);
        book.fill(u, ChosenStatus::Away);
        assert_eq!(book.get(u), ChosenStatus::Dnd);
        assert_eq!(book.get_many([u, UserId(2)]), vec![ChosenStatus::Dnd, ChosenStatus::Available]);
        book.forget(u);
        assert!(!book.knows(u));
    }
}
