//! The event hub: delivers events to every `/events` connection of a user,
//! or of one session.
//!
//! Behind a trait so that several server nodes can share one: [`LocalHub`]
//! is the in-process implementation, `crate::cluster::Bus` the one over
//! NATS (which delivers through a `LocalHub` of its own). An event is encoded once
//! and the same bytes go to every subscriber. Each subscriber has a bounded
//! queue; one that falls that far behind is cut off (its connection closes
//! and the client reconnects and re-reads its state) rather than allowed to
//! grow the server's memory or hold up other subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use babel_proto::{ServerEvent, UserId};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::store::SessionId;

/// Events queued per subscriber before it is cut off.
pub const QUEUE: usize = 512;

/// Delivers events.
pub trait Hub: Send + Sync + std::fmt::Debug + 'static {
    /// Opens an event stream for one `/events` connection.
    fn subscribe(&self, user: UserId, session: SessionId) -> Subscription;
    /// Sends to every event connection of the user.
    fn to_user(&self, user: UserId, event: &ServerEvent);
    /// Sends to the event connections of one session.
    fn to_session(&self, user: UserId, session: SessionId, event: &ServerEvent);
    /// Closes every event connection of a session (logout) or, with `None`,
    /// of the user (account deleted).
    fn close(&self, user: UserId, session: Option<SessionId>);
    /// Sends to the user's event connections on this node only: for what
    /// every node works out for itself (presence, which each node publishes
    /// to its own subscribers, so that nobody hears a change twice).
    fn to_user_here(&self, user: UserId, event: &ServerEvent) {
        self.to_user(user, event);
    }
}

/// One connection's event stream: encoded event frames.
#[derive(Debug)]
pub struct Subscription {
    /// Frames to write, in order. `None` once the hub cut this stream off.
    pub rx: mpsc::Receiver<Bytes>,
    _guard: Option<SubGuard>,
}

#[derive(Debug)]
struct SubGuard {
    hub: Arc<LocalInner>,
    user: UserId,
    id: u64,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        let mut subs = self.hub.lock();
        if let Some(list) = subs.get_mut(&self.user) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                subs.remove(&self.user);
            }
        }
    }
}

#[derive(Debug)]
struct Sub {
    id: u64,
    session: SessionId,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Debug, Default)]
struct LocalInner {
    subs: Mutex<HashMap<UserId, Vec<Sub>>>,
    next: AtomicU64,
}

impl LocalInner {
    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, Vec<Sub>>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The in-process hub.
#[derive(Debug, Default, Clone)]
pub struct LocalHub {
    inner: Arc<LocalInner>,
}

impl LocalHub {
    fn send(&self, user: UserId, session: Option<SessionId>, event: &ServerEvent) {
        self.send_with(user, session, || event.to_frame().to_bytes());
    }

    /// Delivers an encoded event frame (one that came over the cluster bus).
    pub(crate) fn send_frame(&self, user: UserId, session: Option<SessionId>, frame: Bytes) {
        self.send_with(user, session, || frame);
    }

    fn send_with(&self, user: UserId, session: Option<SessionId>, encode: impl FnOnce() -> Bytes) {
        let mut subs = self.inner.lock();
        let Some(list) = subs.get_mut(&user) else { return };
        let mut encode = Some(encode);
        let mut bytes: Option<Bytes> = None;
        list.retain(|s| {
            if session.is_some_and(|want| want != s.session) {
                return true;
            }
            if bytes.is_none() {
                bytes = encode.take().map(|f| f());
            }
            let Some(frame) = bytes.clone() else { return true };
            match s.tx.try_send(frame) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%user, "event connection too slow; cutting it off");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if list.is_empty() {
            subs.remove(&user);
        }
    }

    /// Closes every event connection (a node cut off from its cluster).
    pub(crate) fn close_all(&self) {
        self.inner.lock().clear();
    }

    /// Open event connections (for tests and metrics).
    #[cfg(test)]
    pub fn subscriber_count(&self) -> usize {
        self.inner.lock().values().map(Vec::len).sum()
    }
}

impl Hub for LocalHub {
    fn subscribe(&self, user: UserId, session: SessionId) -> Subscription {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.lock().entry(user).or_default().push(Sub { id, session, tx });
        Subscription { rx, _guard: Some(SubGuard { hub: Arc::clone(&self.inner), user, id }) }
    }

    fn to_user(&self, user: UserId, event: &ServerEvent) {
        self.send(user, None, event);
    }

    fn to_session(&self, user: UserId, session: SessionId, event: &ServerEvent) {
        self.send(user, Some(session), event);
    }

    fn close(&self, user: UserId, session: Option<SessionId>) {
        let mut subs = self.inner.lock();
        if let Some(list) = subs.get_mut(&user) {
            list.retain(|s| session.is_some_and(|want| want != s.session));
            if list.is_empty() {
                subs.remove(&user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn user_and_session_delivery() {
        let hub = LocalHub::default();
        let (u, s1, s2) = (UserId(1), SessionId(1), SessionId(2));
        let mut a = hub.subscribe(u, s1);
        let mut b = hub.subscribe(u, s2);
        let mut other = hub.subscribe(UserId(2), SessionId(3));
        hub.to_user(u, &ServerEvent::Ping);
        hub.to_session(u, s2, &ServerEvent::ContactRemoved(UserId(9)));
        assert_eq!(a.rx.recv().await.unwrap(), ServerEvent::Ping.to_frame().to_bytes());
        assert_eq!(b.rx.recv().await.unwrap(), ServerEvent::Ping.to_frame().to_bytes());
        assert_eq!(b.rx.recv().await.unwrap(), ServerEvent::ContactRemoved(UserId(9)).to_frame().to_bytes());
        assert!(a.rx.try_recv().is_err());
        assert!(other.rx.try_recv().is_err());
        drop(a);
        assert_eq!(hub.subscriber_count(), 2);
        hub.close(u, Some(s2));
        assert!(b.rx.recv().await.is_none(), "closed streams end");
        assert_eq!(hub.subscriber_count(), 1);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_cut_off() {
        let hub = LocalHub::default();
        let mut slow = hub.subscribe(UserId(1), SessionId(1));
        for _ in 0..=QUEUE {
            hub.to_user(UserId(1), &ServerEvent::Ping);
        }
        let mut n = 0;
        while slow.rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, QUEUE, "what was queued arrives, then the stream ends");
        assert_eq!(hub.subscriber_count(), 0);
    }
}
