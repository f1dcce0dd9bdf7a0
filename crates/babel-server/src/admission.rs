//! Admission: how many connections the process holds at once, and what a
//! new one gets when it is full.
//!
//! The cap is the configured `max_connections`, lowered to what the file
//! descriptor limit allows less a reserve: the reserve keeps descriptors for
//! the database, the relay and the listener's own work, so that connections
//! can never take the last ones (`accept` failing with `EMFILE` would leave
//! every new client waiting in the kernel's backlog).
//!
//! Past the cap a new connection is still accepted. While some open
//! connection has not authenticated yet, the oldest such one is closed to
//! make room (idle sockets cannot keep real users out); when none is left
//! to close, or too many new ones already wait, the new one is closed at
//! once: a clean refusal, never a hang. Connections that authenticated are
//! never closed for room.
//!
//! Not here: per-address and per-prefix counts ([`crate::limits`]), or the
//! time a connection gets to authenticate ([`crate::connection`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a new connection waits for the one closed for it to go.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(2);

/// The descriptors kept back from connections for a soft limit of `nofile`:
/// a sixteenth, at least 32.
pub fn reserve_for(nofile: u64) -> u64 {
    (nofile / 16).max(32)
}

/// The connection cap for a configured maximum and a descriptor limit.
pub fn capacity_for(max_connections: usize, nofile: Option<u64>) -> usize {
    let by_fds = nofile.map_or(usize::MAX, |n| usize::try_from(n.saturating_sub(reserve_for(n))).unwrap_or(usize::MAX));
    max_connections.min(by_fds).max(1)
}

/// The connection slots of one server (shared by its listeners).
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    /// Open connections that have not authenticated, oldest first.
    anonymous: Mutex<BTreeMap<u64, CancellationToken>>,
}

/// What to do with a just-accepted connection.
#[derive(Debug)]
pub enum Admit {
    /// Serve it.
    Now(Ticket),
    /// Room is being made; [`Admission::wait`] for it.
    Wait(OwnedSemaphorePermit),
    /// Close it at once.
    Refuse,
}

impl Admission {
    /// Slots for at most `max_connections`, fewer if the process's file
    /// descriptor limit is lower.
    pub fn new(max_connections: usize) -> Arc<Admission> {
        #[cfg(unix)]
        let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft);
        #[cfg(not(unix))]
        let nofile: Option<u64> = None;
        let capacity = capacity_for(max_connections, nofile);
        let waiting = nofile.map_or(64, |n| (reserve_for(n) / 4) as usize).max(1);
        tracing::debug!(capacity, ?nofile, "connection slots");
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(capacity)),
            waiting: Arc::new(Semaphore::new(waiting)),
            anonymous: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        self.anonymous.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ticket(self: &Arc<Self>, id: u64, cancel: &CancellationToken, permit: OwnedSemaphorePermit) -> Ticket {
        self.lock().insert(id, cancel.clone());
        Ticket { admission: Arc::clone(self), id, anonymous: true, _permit: permit }
    }

    /// Decides at once (never waits) for connection `id`, which `cancel`
    /// closes.
    pub fn admit(self: &Arc<Self>, id: u64, cancel: &CancellationToken) -> Admit {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Admit::Now(self.ticket(id, cancel, permit));
        }
        let Ok(waiting) = Arc::clone(&self.waiting).try_acquire_owned() else {
            return Admit::Refuse;
        };
        let oldest = {
            let mut anon = self.lock();
            let first = anon.keys().next().copied();
            first.and_then(|k| anon.remove(&k))
        };
        match oldest {
            Some(victim) => {
                tracing::debug!("connections full; closing the oldest unauthenticated one");
                victim.cancel();
                Admit::Wait(waiting)
            }
            None => Admit::Refuse,
        }
    }

    /// Waits a moment for the room [`Admit::Wait`] made.
    pub async fn wait(
        self: &Arc<Self>,
        id: u64,
        cancel: &CancellationToken,
        _waiting: OwnedSemaphorePermit,
    ) -> Option<Ticket> {
        let permit = tokio::time::timeout(WAIT_FOR_ROOM, Arc::clone(&self.slots).acquire_owned()).await.ok()?.ok()?;
        Some(self.ticket(id, cancel, permit))
    }

    /// Unauthenticated connections open now.
    #[cfg(test)]
    pub fn anonymous(&self) -> usize {
        self.lock().len()
    }
}

/// A connection's slot; it may be closed for room until it authenticates.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    anonymous: bool,
    _permit: OwnedSemaphorePermit,
}

impl Ticket {
    /// The connection proved a session: it is never closed for room.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.anonymous) {
            self.admission.lock().remove(&self.id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.anonymous {
            self.admission.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_a_reserve_of_descriptors() {
        assert_eq!(capacity_for(100_000, Some(128)), 96);
        assert_eq!(capacity_for(usize::MAX, Some(1 << 20)), (1 << 20) - (1 << 16));
        assert_eq!(capacity_for(10, Some(1 << 20)), 10);
        assert_eq!(capacity_for(10, None), 10);
        assert_eq!(capacity_for(10, Some(20)), 1, "never zero");
    }

    #[tokio::test]
    async fn when_full_the_oldest_unauthenticated_connection_makes_room() {
        let adm = Arc::new(Admission {
            slots: Arc::new(Semaphore::new(2)),
            waiting: Arc::new(Semaphore::new(1)),
            anonymous: Mutex::default(),
        });
        let (c1, c2, c3, c4) =
            (CancellationToken::new(), CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
        let Admit::Now(mut t1) = adm.admit(1, &c1) else { panic!("room for the first") };
        let Admit::Now(t2) = adm.admit(2, &c2) else { panic!("room for the second") };
        t1.authenticated();
        // Full: the oldest anonymous one (2, since 1 authenticated) is closed.
        let Admit::Wait(w) = adm.admit(3, &c3) else { panic!("room is made") };
        assert!(c2.is_cancelled() && !c1.is_cancelled());
        // Only one may wait at a time, and nobody anonymous is left anyway.
        assert!(matches!(adm.admit(4, &c4), Admit::Refuse));
        drop(t2);
        let t3 = adm.wait(3, &c3, w).await.expect("the slot freed by 2");
        assert_eq!(adm.anonymous(), 1);
        drop(t3);
        assert_eq!(adm.anonymous(), 0);
        drop(t1);
    }
}
