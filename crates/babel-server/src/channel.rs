//! Call channels: the TCP relay path for voice (`/connect_call`).
//!
//! Each participant's channel has a queue of frames to write, bounded in
//! frames and in bytes. A `/send` from one participant is pushed onto every
//! other participant's queue, never waited on: when a receiver is slow its
//! queue drops the oldest voice frames (late voice is useless) and counts
//! them, so a slow receiver stalls neither the sender nor the server, and
//! holds at most [`CHANNEL_QUEUE_BYTES`] of it. The final `/call_ended`
//! frame is never dropped. A `/send` whose data is over [`MAX_CHANNEL_SEND`]
//! is not voice: it closes the sender's channel (see `connection.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use babel_proto::UserId;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::store::SessionId;

/// Frames a channel may hold before the oldest voice frame is dropped
/// (about 2.5 s of 20 ms packets).
pub const CHANNEL_QUEUE: usize = 128;

/// Bytes a channel may hold before the oldest voice frames are dropped:
/// seconds of any real voice, and a bound on what a flood can pin per
/// receiver.
pub const CHANNEL_QUEUE_BYTES: usize = 256 * 1024;

/// The largest `/send` data a call channel takes; a larger one closes the
/// channel. Voice frames are a few hundred bytes.
pub const MAX_CHANNEL_SEND: usize = 16 * 1024;

#[derive(Debug, Default)]
struct QueueInner {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`.
    bytes: usize,
    closed: bool,
}

/// One participant's outgoing frames.
#[derive(Debug, Default)]
pub struct ChannelQueue {
    inner: Mutex<QueueInner>,
    notify: Notify,
    /// Voice frames dropped because this receiver was too slow.
    pub dropped: AtomicU64,
    /// The server-wide count the drops are added to.
    total: Arc<AtomicU64>,
}

impl ChannelQueue {
    /// An empty queue whose drops are also added to `total`.
    pub fn new(total: Arc<AtomicU64>) -> ChannelQueue {
        ChannelQueue { total, ..ChannelQueue::default() }
    }

    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, frame: Bytes, last: bool) {
        let mut q = self.lock();
        if q.closed {
            return;
        }
        while q.frames.len() >= CHANNEL_QUEUE || (!q.frames.is_empty() && q.bytes + frame.len() > CHANNEL_QUEUE_BYTES) {
            let Some(old) = q.frames.pop_front() else { break };
            q.bytes -= old.len();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.total.fetch_add(1, Ordering::Relaxed);
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        q.closed |= last;
        drop(q);
        self.notify.notify_one();
    }

    /// Queues a voice frame, dropping the oldest if full.
    pub fn push_voice(&self, frame: Bytes) {
        self.push(frame, false);
    }

    /// Queues the last frame; nothing is queued after it.
    pub fn finish(&self, frame: Bytes) {
        self.push(frame, true);
    }

    /// Closes without a last frame (the participant's channel was replaced).
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// The next frame to write; `None` once closed and drained.
    pub async fn next(&self) -> Option<Bytes> {
        self.next_marked().await.map(|(f, _)| f)
    }

    /// The next frame, and whether it is the last ([`Self::finish`]'s);
    /// `None` once closed and drained.
    pub async fn next_marked(&self) -> Option<(Bytes, bool)> {
        loop {
            {
                let mut q = self.lock();
                if let Some(f) = q.frames.pop_front() {
                    q.bytes -= f.len();
                    let last = q.closed && q.frames.is_empty();
                    return Some((f, last));
                }
                if q.closed {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }
}

#[derive(Debug)]
struct Member {
    session: SessionId,
    header: Bytes,
    queue: Arc<ChannelQueue>,
}

/// The call channels of one call.
#[derive(Debug, Default)]
pub struct Room {
    members: RwLock<Vec<Member>>,
    drops: Arc<AtomicU64>,
}

impl Room {
    /// A room whose drops are also added to `drops`.
    pub fn new(drops: Arc<AtomicU64>) -> Room {
        Room { members: RwLock::default(), drops }
    }

    /// Opens the channel of a participant, replacing (and closing) an older
    /// one of the same session.
    pub fn join(&self, user: UserId, session: SessionId) -> Arc<ChannelQueue> {
        let queue = Arc::new(ChannelQueue { total: Arc::clone(&self.drops), ..ChannelQueue::default() });
        let header = babel_proto::ChannelFrame::sender_header(user);
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        for old in members.iter().filter(|m| m.session == session) {
            old.queue.close();
        }
        members.retain(|m| m.session != session);
        members.push(Member { session, header, queue: Arc::clone(&queue) });
        queue
    }

    /// Removes a channel when its connection closes.
    pub fn leave(&self, queue: &Arc<ChannelQueue>) {
        self.members.write().unwrap_or_else(|p| p.into_inner()).retain(|m| !Arc::ptr_eq(&m.queue, queue));
    }

    /// Relays a `/send` data section from `from` to every other channel,
    /// with the header set to the sender's id.
    pub fn forward(&self, from: SessionId, data: &Bytes) {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = members.iter().find(|m| m.session == from) else { return };
        let frame = babel_proto::RawRequest {
            header: sender.header.clone(),
            route: Bytes::from_static(b"/send"),
            data: data.clone(),
        }
        .to_bytes();
        for m in members.iter().filter(|m| m.session != from) {
            m.queue.push_voice(frame.clone());
        }
    }

    /// Writes a last frame to one session's channel and closes it.
    pub fn finish_for(&self, session: SessionId, frame: &Bytes) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        for m in members.iter().filter(|m| m.session == session) {
            m.queue.finish(frame.clone());
        }
        members.retain(|m| m.session != session);
    }

    /// Open channels.
    pub fn len(&self) -> usize {
        self.members.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no channel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Voice frames dropped across the room's channels.
    pub fn dropped(&self) -> u64 {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| m.queue.dropped.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forward_to_others_with_sender_header() {
        let room = Room::default();
        let a = room.join(UserId(1), SessionId(1));
        let b = room.join(UserId(2), SessionId(2));
        room.forward(SessionId(1), &Bytes::from_static(b"{}"));
        let f = b.next().await.unwrap();
        let mut buf = bytes::BytesMut::from(&f[..]);
        let frame = babel_proto::decode_request(&mut buf, &babel_proto::Limits::default()).unwrap().unwrap();
        assert_eq!(&frame.header[..], br#"{"id":"1"}"#);
        assert_eq!(&frame.route[..], b"/send");
        a.finish(Bytes::from_static(b"end"));
        assert_eq!(a.next().await.unwrap(), Bytes::from_static(b"end"));
        assert!(a.next().await.is_none(), "nothing after the last frame");
    }

    #[tokio::test]
    async fn slow_receiver_drops_oldest_voice_first() {
        let room = Room::default();
        let _a = room.join(UserId(1), SessionId(1));
        let b = room.join(UserId(2), SessionId(2));
        for i in 0..CHANNEL_QUEUE + 10 {
            room.forward(SessionId(1), &Bytes::from(i.to_string()));
        }
        assert_eq!(b.dropped.load(Ordering::Relaxed), 10);
        assert_eq!(room.dropped(), 10);
        let first = b.next().await.unwrap();
        assert!(first.ends_with(b"/send10"), "the oldest ten are gone");
        room.finish_for(SessionId(2), &Bytes::from_static(b"end"));
        let mut last = Bytes::new();
        while let Some(f) = b.next().await {
            last = f;
        }
        assert_eq!(last, Bytes::from_static(b"end"), "the last frame is kept");
    }

    #[tokio::test]
    async fn a_slow_receiver_holds_a_bounded_number_of_bytes() {
        let room = Room::default();
        let _a = room.join(UserId(1), SessionId(1));
        let b = room.join(UserId(2), SessionId(2));
        // 100 frames of 16 KiB: well under the frame bound, far over the byte bound.
        let big = Bytes::from(vec![b'x'; 16 * 1024]);
        for _ in 0..100 {
            room.forward(SessionId(1), &big);
        }
        room.finish_for(SessionId(2), &Bytes::from_static(b"end"));
        let (mut n, mut bytes) = (0, 0);
        while let Some(f) = b.next().await {
            n += 1;
            bytes += f.len();
        }
        assert!(bytes <= 256 * 1024 + 3, "{bytes} bytes queued for one receiver");
        assert_eq!(b.dropped.load(Ordering::Relaxed) as usize, 100 - (n - 1), "every dropped frame is counted");
        assert!(n > 10, "the newest frames are kept ({n})");
    }

    #[tokio::test]
    async fn the_last_frame_is_marked() {
        let q = ChannelQueue::new(Arc::default());
        q.push_voice(Bytes::from_static(b"1"));
        q.finish(Bytes::from_static(b"end"));
        assert_eq!(q.next_marked().await, Some((Bytes::from_static(b"1"), false)));
        assert_eq!(q.next_marked().await, Some((Bytes::from_static(b"end"), true)));
        assert_eq!(q.next_marked().await, None);
        let q = ChannelQueue::new(Arc::default());
        q.push_voice(Bytes::from_static(b"1"));
        q.close();
        assert_eq!(q.next_marked().await, Some((Bytes::from_static(b"1"), true)), "closed: nothing follows");
    }

    #[tokio::test]
    async fn rejoining_replaces_the_old_channel() {
        let room = Room::default();
        let old = room.join(UserId(1), SessionId(1));
        let _new = room.join(UserId(1), SessionId(1));
        assert!(old.next().await.is_none());
        assert_eq!(room.len(), 1);
        room.leave(&_new);
        assert!(room.is_empty());
    }
}
