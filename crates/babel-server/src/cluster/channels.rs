//! Call channels whose participants sit on different nodes (issue #18
//! item 3).
//!
//! A call's channels meet in one [`Room`], at the call's home. A
//! participant who opens `/connect_call` on another node (say `x`) gets a
//! channel there whose frames travel over the call's subjects:
//!
//! - `<cluster>.call.<id>.up`: from `x` to the home, [`UP_SEND`] (a `/send`
//!   data section from one channel) and [`UP_LEAVE`] (that channel closed).
//!   The home takes them in a subscription it opens at the call's first
//!   remote channel.
//! - `<cluster>.call.<id>.down.<x>`: from the home to `x`, the frames for one
//!   channel there ([`DOWN_FRAME`], [`DOWN_LAST`]: the `/call_ended` it ends
//!   with) or its end without a frame ([`DOWN_END`]: replaced by a newer
//!   channel, or left). `x` subscribes while it holds a channel of the call.
//!
//! Every message names the session and a random tag for that one channel,
//! so a message about a channel that was replaced meanwhile is told apart
//! from its successor's. Each node publishes through one NATS connection in
//! order, so each sender's frames keep their order. The channel's own rules
//! hold on both sides: `x` reads the client's frames under the channel's
//! limits (a `/send` over 16 KiB closes it), the home admits only members
//! (it answers the forwarded `/connect_call`) and relays as for a local
//! channel, and each side's queue drops the oldest voice first when its
//! receiver is slow, never the last frame.
//!
//! The binary layout (big-endian): a kind byte, the session id (i64), the
//! channel's tag (u64), then the data or frame.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use babel_proto::CallId;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Bus, lock, token};
use crate::channel::{ChannelQueue, MAX_CHANNEL_SEND, Room};
use crate::store::SessionId;

/// Up: a `/send` data section from a channel.
pub const UP_SEND: u8 = 0;
/// Up: the channel closed.
pub const UP_LEAVE: u8 = 1;
/// Down: a frame for a channel.
pub const DOWN_FRAME: u8 = 0;
/// Down: the channel's last frame; it closes after it.
pub const DOWN_LAST: u8 = 1;
/// Down: the channel closes, with no last frame.
pub const DOWN_END: u8 = 2;

const HEAD: usize = 17;

/// The subject channel frames take to a call's home.
pub fn up_subject(cluster: &str, call: CallId) -> String {
    format!("{cluster}.call.{}.up", call.0)
}

/// The subject channel frames take from a call's home to one node.
pub fn down_subject(cluster: &str, call: CallId, node: &str) -> String {
    format!("{cluster}.call.{}.down.{}", call.0, token(node))
}

/// One message on a call's channel subjects.
pub fn encode(kind: u8, session: SessionId, tag: u64, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEAD + body.len());
    b.put_u8(kind);
    b.put_i64(session.0);
    b.put_u64(tag);
    b.put_slice(body);
    b.freeze()
}

/// Kind, session, tag and body of a message; `None` if it is too short.
pub fn decode(payload: &Bytes) -> Option<(u8, SessionId, u64, Bytes)> {
    let kind = *payload.first()?;
    let session = i64::from_be_bytes(payload.get(1..9)?.try_into().ok()?);
    let tag = u64::from_be_bytes(payload.get(9..HEAD)?.try_into().ok()?);
    Some((kind, SessionId(session), tag, payload.slice(HEAD..)))
}

/// A channel's queue with its tag.
type Tagged = (u64, Arc<ChannelQueue>);

/// At a call's home: the call's room and its channels on other nodes.
#[derive(Debug)]
pub(crate) struct HomeChannels {
    room: Arc<Room>,
    remote: Mutex<HashMap<SessionId, Tagged>>,
    stop: CancellationToken,
}

impl HomeChannels {
    fn on_up(&self, payload: &Bytes) {
        let Some((kind, session, tag, data)) = decode(payload) else {
            tracing::debug!("malformed call channel message");
            return;
        };
        let current = lock(&self.remote).get(&session).filter(|(t, _)| *t == tag).map(|(_, q)| Arc::clone(q));
        let Some(queue) = current else { return };
        match kind {
            UP_SEND if data.len() <= MAX_CHANNEL_SEND => self.room.forward(session, &data),
            UP_SEND => {
                tracing::debug!(bytes = data.len(), "oversized /send from another node's channel; closing it");
                self.drop_channel(session, tag, &queue);
            }
            UP_LEAVE => self.drop_channel(session, tag, &queue),
            _ => tracing::debug!(kind, "unknown call channel message"),
        }
    }

    fn drop_channel(&self, session: SessionId, tag: u64, queue: &Arc<ChannelQueue>) {
        let mut remote = lock(&self.remote);
        if remote.get(&session).is_some_and(|(t, _)| *t == tag) {
            remote.remove(&session);
        }
        drop(remote);
        self.room.leave(queue);
        queue.close();
    }
}

/// On a node that is not the call's home: its channels of that call.
#[derive(Debug, Default)]
pub(crate) struct RemoteCall {
    members: Mutex<HashMap<SessionId, Tagged>>,
    /// The home's node name, once it admitted a channel.
    home: Mutex<Option<String>>,
    stop: CancellationToken,
}

/// What a node holds of call channels across nodes.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    /// Calls homed here with channels on other nodes.
    home: Mutex<HashMap<CallId, Arc<HomeChannels>>>,
    /// Calls homed elsewhere with channels here.
    remote: Mutex<HashMap<CallId, Arc<RemoteCall>>>,
}

/// A channel on this node of a call homed on another: where its `/send`
/// frames go, and how it says it closed.
pub struct Uplink {
    bus: Arc<Bus>,
    call: CallId,
    session: SessionId,
    tag: u64,
    at: Arc<RemoteCall>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink").field("call", &self.call).field("session", &self.session).finish_non_exhaustive()
    }
}

impl Uplink {
    /// Sends a `/send` data section to the call's home.
    pub fn send(&self, data: &Bytes) {
        self.bus.publish(up_subject(&self.bus.prefix, self.call), encode(UP_SEND, self.session, self.tag, data));
    }

    /// The tag that tells this channel from others of its session.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The home (`node`) admitted the channel.
    pub fn homed_on(&self, node: String) {
        *lock(&self.at.home) = Some(node);
    }

    /// The home did not admit the channel: forget it here.
    pub fn forget(&self) {
        self.bus.remote_channel_gone(self.call, &self.at, self.session, self.tag);
    }

    /// The channel's connection closed: the home forgets it, and this node
    /// stops listening for the call once it holds no channel of it.
    pub fn close(&self) {
        self.bus.publish(up_subject(&self.bus.prefix, self.call), encode(UP_LEAVE, self.session, self.tag, &[]));
        self.bus.remote_channel_gone(self.call, &self.at, self.session, self.tag);
    }
}

/// A random tag for a new channel.
fn new_tag() -> u64 {
    let mut b = [0u8; 8];
    // Tags only tell one channel of a session from the next: a clock
    // would do when the OS has no randomness.
    if getrandom::fill(&mut b).is_err() {
        return std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    }
    u64::from_be_bytes(b)
}

impl Bus {
    /// At the call's home: admits a member's channel on `node` into the
    /// call's room. Its frames go down to that node until it leaves, is
    /// replaced or the call ends for it.
    pub(crate) async fn home_remote_channel(
        self: &Arc<Self>,
        call: CallId,
        room: Arc<Room>,
        user: babel_proto::UserId,
        session: SessionId,
        node: String,
        tag: u64,
    ) -> Result<(), String> {
        let home = self.home_channels(call, room).await?;
        let queue = home.room.join(user, session);
        if let Some((_, old)) = lock(&home.remote).insert(session, (tag, Arc::clone(&queue))) {
            old.close();
        }
        let (bus, subject) = (Arc::clone(self), down_subject(&self.prefix, call, &node));
        tokio::spawn(async move {
            let mut ended = false;
            while let Some((frame, last)) = queue.next_marked().await {
                let kind = if last { DOWN_LAST } else { DOWN_FRAME };
                bus.publish(subject.clone(), encode(kind, session, tag, &frame));
                if last {
                    ended = true;
                    break;
                }
            }
            if !ended {
                bus.publish(subject, encode(DOWN_END, session, tag, &[]));
            }
            let mut remote = lock(&home.remote);
            if remote.get(&session).is_some_and(|(t, _)| *t == tag) {
                remote.remove(&session);
            }
        });
        Ok(())
    }

    /// At the call's home: closes the channel on another node that
    /// [`Self::home_remote_channel`] admitted, if it is still that one.
    pub(crate) fn drop_remote_channel(&self, call: CallId, session: SessionId, tag: u64) {
        let Some(home) = lock(&self.channels.home).get(&call).cloned() else { return };
        let current = lock(&home.remote).get(&session).filter(|(t, _)| *t == tag).map(|(_, q)| Arc::clone(q));
        if let Some(queue) = current {
            home.drop_channel(session, tag, &queue);
        }
    }

    /// The call's channels at its home, listening on its up subject from
    /// the first remote channel on.
    async fn home_channels(self: &Arc<Self>, call: CallId, room: Arc<Room>) -> Result<Arc<HomeChannels>, String> {
        if let Some(h) = lock(&self.channels.home).get(&call) {
            return Ok(Arc::clone(h));
        }
        let mut sub = self
            .client
            .subscribe(up_subject(&self.prefix, call))
            .await
            .map_err(|e| format!("cannot take the call channel's subject: {e}"))?;
        let home = Arc::new(HomeChannels { room, remote: Mutex::default(), stop: CancellationToken::new() });
        {
            let mut all = lock(&self.channels.home);
            if let Some(h) = all.get(&call) {
                // Another channel got here first; this subscription goes.
                return Ok(Arc::clone(h));
            }
            all.insert(call, Arc::clone(&home));
        }
        let h = Arc::clone(&home);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => h.on_up(&m.payload),
                        None => return,
                    },
                    _ = h.stop.cancelled() => {
                        let _ = sub.unsubscribe().await;
                        return;
                    }
                }
            }
        });
        Ok(home)
    }

    /// The call ended here: its channels on other nodes have had their last
    /// frame queued; stop listening for more.
    pub(crate) fn home_channels_over(&self, call: CallId) {
        if let Some(h) = lock(&self.channels.home).remove(&call) {
            h.stop.cancel();
        }
    }

    /// On a node that is not the call's home: a channel for `session`,
    /// listening on the call's down subject for this node. The home has not
    /// admitted it yet ([`super::CallRequest::Connect`] with the tag).
    pub(crate) async fn open_remote_channel(
        self: &Arc<Self>,
        call: CallId,
        session: SessionId,
        drops: Arc<AtomicU64>,
    ) -> Result<(Uplink, Arc<ChannelQueue>), String> {
        let tag = new_tag();
        let queue = Arc::new(ChannelQueue::new(drops));
        loop {
            let known = lock(&self.channels.remote).get(&call).cloned();
            let at = match known {
                Some(at) => at,
                None => self.listen_down(call).await?,
            };
            let all = lock(&self.channels.remote);
            if !all.get(&call).is_some_and(|a| Arc::ptr_eq(a, &at)) {
                // It was let go meanwhile (its last channel closed).
                continue;
            }
            if let Some((_, old)) = lock(&at.members).insert(session, (tag, Arc::clone(&queue))) {
                old.close();
            }
            drop(all);
            return Ok((Uplink { bus: Arc::clone(self), call, session, tag, at }, queue));
        }
    }

    /// Subscribes to the call's down subject for this node.
    async fn listen_down(self: &Arc<Self>, call: CallId) -> Result<Arc<RemoteCall>, String> {
        let mut sub = self
            .client
            .subscribe(down_subject(&self.prefix, call, &self.node))
            .await
            .map_err(|e| format!("cannot take the call channel's subject: {e}"))?;
        let at = Arc::new(RemoteCall::default());
        {
            let mut all = lock(&self.channels.remote);
            if let Some(other) = all.get(&call) {
                return Ok(Arc::clone(other));
            }
            all.insert(call, Arc::clone(&at));
        }
        let (bus, a) = (Arc::clone(self), Arc::clone(&at));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => bus.on_down(call, &a, &m.payload),
                        None => return,
                    },
                    _ = a.stop.cancelled() => {
                        let _ = sub.unsubscribe().await;
                        return;
                    }
                }
            }
        });
        Ok(at)
    }

    fn on_down(&self, call: CallId, at: &Arc<RemoteCall>, payload: &Bytes) {
        let Some((kind, session, tag, frame)) = decode(payload) else {
            tracing::debug!("malformed call channel message");
            return;
        };
        let current = lock(&at.members).get(&session).filter(|(t, _)| *t == tag).map(|(_, q)| Arc::clone(q));
        let Some(queue) = current else { return };
        match kind {
            DOWN_FRAME => queue.push_voice(frame),
            DOWN_LAST => {
                queue.finish(frame);
                self.remote_channel_gone(call, at, session, tag);
            }
            DOWN_END => {
                queue.close();
                self.remote_channel_gone(call, at, session, tag);
            }
            _ => tracing::debug!(kind, "unknown call channel message"),
        }
    }

    /// A node left or died: the channels here of calls homed there close
    /// (no last frame: the call may live on, adopted elsewhere, and its
    /// participants may `/connect_call` again).
    pub(crate) fn home_node_gone(&self, node: &str) {
        let gone: Vec<(CallId, Arc<RemoteCall>)> = lock(&self.channels.remote)
            .iter()
            .filter(|(_, at)| lock(&at.home).as_deref() == Some(node))
            .map(|(call, at)| (*call, Arc::clone(at)))
            .collect();
        for (call, at) in gone {
            tracing::info!(%call, %node, "a call's home is gone; closing its channels here");
            let members: Vec<(SessionId, u64)> = lock(&at.members).iter().map(|(s, (t, _))| (*s, *t)).collect();
            for (session, tag) in members {
                self.remote_channel_gone(call, &at, session, tag);
            }
        }
    }

    /// Forgets one channel here of a call homed elsewhere; with the last,
    /// stops listening for the call.
    fn remote_channel_gone(&self, call: CallId, at: &Arc<RemoteCall>, session: SessionId, tag: u64) {
        let mut all = lock(&self.channels.remote);
        let mut members = lock(&at.members);
        if members.get(&session).is_some_and(|(t, _)| *t == tag) {
            if let Some((_, q)) = members.remove(&session) {
                q.close();
            }
        }
        if members.is_empty() && all.get(&call).is_some_and(|a| Arc::ptr_eq(a, at)) {
            all.remove(&call);
            at.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_round_trip_and_short_ones_are_refused() {
        let m = encode(UP_SEND, SessionId(7), 0x0102_0304_0506_0708, b"{\"type\":\"voice\"}");
        assert_eq!(&m[..HEAD], &[0, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]);
        let (kind, session, tag, body) = decode(&m).unwrap();
        assert_eq!((kind, session, tag), (UP_SEND, SessionId(7), 0x0102_0304_0506_0708));
        assert_eq!(&body[..], b"{\"type\":\"voice\"}");
        let end = encode(DOWN_END, SessionId(-1), 9, &[]);
        assert_eq!(decode(&end).map(|(k, s, t, b)| (k, s, t, b.len())), Some((DOWN_END, SessionId(-1), 9, 0)));
        assert_eq!(decode(&Bytes::from_static(&[0; 16])), None);
        assert_eq!(decode(&Bytes::new()), None);
        assert_eq!(up_subject("babel", CallId(42)), "babel.call.42.up");
        assert_eq!(down_subject("babel", CallId(42), "node.b"), "babel.call.42.down.node_b");
    }
}
