//! `/call`, `/answer`, `/hangup`, `/invite`, `/connect_call`, `/call_key`,
//! `/call_nonce`; in a cluster each is forwarded to the call's home when
//! the call is not here (`cluster/calls.rs`).

use babel_proto::{CallId, CallJoined, CallStarted, EndReason, MediaSetup, RelayGrant, Reply, UserId};

use std::sync::Arc;

use crate::app::{App, Authed, ChannelLink, ChannelMode, ConnState, ServiceError, ServiceResult};
use crate::calls::machine::Leg;
use crate::calls::{Calls, LegInfo, Refusal};
use crate::cluster::{Answered, CallRequest};
use crate::store::Relation;

impl From<Refusal> for ServiceError {
    fn from(r: Refusal) -> Self {
        ServiceError::Refused(r.to_string())
    }
}

/// A forwarded request's answer that is not 200, as the error it stands for.
fn refusal_of(reply: Reply) -> ServiceError {
    match reply {
        Reply::Refused(r) => ServiceError::Refused(r),
        Reply::BadRequest(r) => ServiceError::BadRequest(r),
        Reply::Unauthorized => ServiceError::Unauthorized,
        other => ServiceError::Unavailable(format!("unexpected answer from the call's home: {:?}", other.status())),
    }
}

impl App {
    /// Checks that `other` is one of my accepted contacts.
    async fn require_contact(&self, me: UserId, other: UserId, what: &str) -> ServiceResult<babel_proto::User> {
        if other == me {
            return Err(ServiceError::Refused(format!("you cannot {what} yourself")));
        }
        let contacts = self.cached_contacts(me).await?;
        contacts
            .iter()
            .find(|(u, rel)| u.id == other && *rel == Relation::Contact)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| ServiceError::Refused(format!("you can only {what} your contacts")))
    }

    /// The online sessions of a contact we want to ring, on any node, or
    /// why not.
    async fn ringable(&self, who: &babel_proto::User) -> ServiceResult<Vec<crate::store::SessionId>> {
        let mut sessions = self.presence.sessions_of(who.id);
        if let Some(bus) = &self.bus {
            if bus.remote_online(who.id) {
                sessions.extend(bus.sessions_elsewhere(who.id).await);
                // A session connected to two nodes rings once.
                sessions.sort();
                sessions.dedup();
            }
        }
        let chosen = self.statuses.get(who.id);
        // Invisible is answered exactly as offline: nothing tells them apart.
        if sessions.is_empty() || chosen == babel_proto::ChosenStatus::Invisible {
            return Err(ServiceError::Refused(format!("{} is offline", who.name)));
        }
        if self.busy_anywhere(who.id) {
            return Err(ServiceError::Refused(format!("{} is busy in another call", who.name)));
        }
        if chosen == babel_proto::ChosenStatus::Dnd {
            return Err(ServiceError::Refused(format!("{} does not want to be disturbed right now", who.name)));
        }
        Ok(sessions)
    }

    pub(crate) fn grant(&self, call: CallId, me: Authed) -> ServiceResult<RelayGrant> {
        let (handle, key) = self
            .relay
            .grant(call, me.user, me.session)
            .ok_or_else(|| ServiceError::Unavailable("no randomness for a relay key".into()))?;
        Ok(RelayGrant::new(self.relay.port(), handle, &key))
    }

    pub(crate) async fn call(
        &self,
        conn: &ConnState,
        me: Authed,
        contact: UserId,
        media: MediaSetup,
    ) -> ServiceResult<Reply> {
        let callee = self.require_contact(me.user, contact, "call").await?;
        let sessions = self.ringable(&callee).await?;
        if self.calls.in_a_call(me.session) {
            return Err(Refusal::AlreadyInACall.into());
        }
        // Nobody has answered: the caller learns the relay's address, not
        // the callee's (it comes with `/call_accepted`, unless relay-only).
        let relay_ip = conn.relay_ip();
        let info = LegInfo {
            user: self.user(me.user).await?,
            ip: conn.ip().to_string(),
            media,
            public: None,
            relay_ip: relay_ip.clone(),
            revealed: false,
        };
        let id = Calls::new_id().ok_or_else(|| ServiceError::Unavailable("no randomness for a call id".into()))?;
        let relay = self.grant(id, me)?;
        let leg = Leg { user: me.user, session: me.session };
        let fx = match self.calls.start(id, leg, info, callee.id, sessions) {
            Ok(fx) => fx,
            Err(e) => {
                self.relay.end_call(id);
                return Err(e.into());
            }
        };
        // Other nodes reach the call from now on, before anyone hears of it.
        if let Some(bus) = &self.bus {
            bus.home_call(id).await;
        }
        self.apply(fx).await;
        tracing::info!(call = %id, caller = %me.user, callee = %callee.id, "call ringing");
        Ok(Reply::CallStarted(CallStarted { ip: relay_ip, call_id: id, relay }))
    }

    pub(crate) async fn answer(
        &self,
        conn: &ConnState,
        me: Authed,
        call: CallId,
        accept: bool,
        media: MediaSetup,
    ) -> ServiceResult<Reply> {
        let forwarded = self
            .forward_call(call, || CallRequest::Answer {
                user: me.user.0,
                session: me.session.0,
                accept,
                relay_only: media.relay_only,
                media: media.clone(),
                ip: conn.ip().to_string(),
                relay_ip: conn.relay_ip(),
            })
            .await;
        if let Some(reply) = forwarded {
            return reply;
        }
        let info = LegInfo {
            user: self.user(me.user).await?,
            ip: conn.ip().to_string(),
            media,
            public: None,
            relay_ip: conn.relay_ip(),
            revealed: false,
        };
        self.answer_here(me, call, accept, info, false).await
    }

    /// `/answer` at the call's home; `forwarded` when the client talks to
    /// another node (its grant then names this relay's host).
    pub(crate) async fn answer_here(
        &self,
        me: Authed,
        call: CallId,
        accept: bool,
        info: LegInfo,
        forwarded: bool,
    ) -> ServiceResult<Reply> {
        let leg = Leg { user: me.user, session: me.session };
        let (participants, fx) = self.calls.answer(call, leg, accept, info)?;
        // Granted before anyone is told, so the relay knows the newcomer
        // by the time the others start sending.
        let relay = if accept { Some(self.grant(call, me)?) } else { None };
        let relay = relay.map(|g| if forwarded { g.with_host(self.relay.host()) } else { g });
        self.apply(fx).await;
        tracing::info!(%call, user = %me.user, accept, "call answered");
        Ok(match relay {
            Some(relay) => {
                let epoch = babel_proto::Epoch(self.calls.epoch(call));
                Reply::CallJoined(CallJoined { call_id: call, relay, participants, epoch })
            }
            None => Reply::Ok,
        })
    }

    /// A committed participant reveals its key; the others are told. The
    /// server does not judge the key against the commitment: the clients
    /// do, since the server is who the commitment guards against.
    pub(crate) async fn call_key(&self, me: Authed, call: CallId, key: String) -> ServiceResult<Reply> {
        let forwarded = self
            .forward_call(call, || CallRequest::Key { user: me.user.0, session: me.session.0, key: key.clone() })
            .await;
        if let Some(reply) = forwarded {
            return reply;
        }
        self.call_key_here(me, call, key).await
    }

    /// `/call_key` at the call's home.
    pub(crate) async fn call_key_here(&self, me: Authed, call: CallId, key: String) -> ServiceResult<Reply> {
        let fx = self.calls.reveal(call, Leg { user: me.user, session: me.session }, key)?;
        self.apply(fx).await;
        Ok(Reply::Ok)
    }

    /// A member answers a newcomer's commitment; the others are told.
    pub(crate) async fn call_nonce(&self, me: Authed, call: CallId, nonce: String) -> ServiceResult<Reply> {
        let forwarded = self
            .forward_call(call, || CallRequest::Nonce { user: me.user.0, session: me.session.0, nonce: nonce.clone() })
            .await;
        if let Some(reply) = forwarded {
            return reply;
        }
        self.call_nonce_here(me, call, nonce).await
    }

    /// `/call_nonce` at the call's home.
    pub(crate) async fn call_nonce_here(&self, me: Authed, call: CallId, nonce: String) -> ServiceResult<Reply> {
        let fx = self.calls.nonce(call, Leg { user: me.user, session: me.session }, nonce)?;
        self.apply(fx).await;
        Ok(Reply::Ok)
    }

    pub(crate) async fn hangup(&self, me: Authed, call: CallId) -> ServiceResult<Reply> {
        let forwarded =
            self.forward_call(call, || CallRequest::Hangup { user: me.user.0, session: me.session.0 }).await;
        if let Some(reply) = forwarded {
            return reply;
        }
        self.hangup_here(me, call).await
    }

    /// `/hangup` at the call's home.
    pub(crate) async fn hangup_here(&self, me: Authed, call: CallId) -> ServiceResult<Reply> {
        let fx = self.calls.leave(call, Leg { user: me.user, session: me.session }, EndReason::Hangup)?;
        self.apply(fx).await;
        Ok(Reply::Ok)
    }

    pub(crate) async fn invite(&self, me: Authed, call: CallId, contact: UserId) -> ServiceResult<Reply> {
        let forwarded = self
            .forward_call(call, || CallRequest::Invite { user: me.user.0, session: me.session.0, contact: contact.0 })
            .await;
        if let Some(reply) = forwarded {
            return reply;
        }
        self.invite_here(me, call, contact).await
    }

    /// `/invite` at the call's home.
    pub(crate) async fn invite_here(&self, me: Authed, call: CallId, contact: UserId) -> ServiceResult<Reply> {
        if !self.calls.is_member(call, me.session) {
            return Err(ServiceError::Refused("you are not in this call".into()));
        }
        let invitee = self.require_contact(me.user, contact, "invite").await?;
        self.refuse_blocked_in_call(call, &invitee).await?;
        let sessions = self.ringable(&invitee).await?;
        let fx = self.calls.invite(call, Leg { user: me.user, session: me.session }, invitee.id, sessions)?;
        self.apply(fx).await;
        Ok(Reply::Ok)
    }

    pub(crate) async fn connect_call(&self, me: Authed, call: CallId) -> ServiceResult<ChannelMode> {
        let leg = Leg { user: me.user, session: me.session };
        if let Some(bus) = self.bus.as_ref().filter(|_| !self.calls.contains(call)) {
            // Homed elsewhere (or nowhere): the home admits the channel.
            let (up, queue) = Arc::clone(bus)
                .open_remote_channel(call, me.session, Arc::clone(&self.calls.channel_drops))
                .await
                .map_err(ServiceError::Unavailable)?;
            let req =
                CallRequest::Connect { user: me.user.0, session: me.session.0, node: bus.node().into(), tag: up.tag() };
            let answer = match bus.forward_answered(call, &req).await {
                Some(Ok(Answered::Admitted { node })) => {
                    up.homed_on(node);
                    Ok(())
                }
                Some(Ok(other)) => Err(refusal_of(other.into())),
                Some(Err(e)) => Err(e),
                None => Err(Refusal::NoSuchCall.into()),
            };
            if let Err(e) = answer {
                up.forget();
                return Err(e);
            }
            return Ok(ChannelMode { call, leg, link: ChannelLink::Home(up), queue });
        }
        let room = self.calls.room(call, me.session)?;
        let queue = room.join(me.user, me.session);
        if !self.calls.is_member(call, me.session) {
            // Left between the two checks: no channel for a call we are not in.
            room.leave(&queue);
            return Err(ServiceError::Refused("you are not in this call".into()));
        }
        Ok(ChannelMode { call, leg, link: ChannelLink::Room(room), queue })
    }

    /// A channel on another node asks to join the call's room, here at its
    /// home: only a member may.
    pub(crate) async fn connect_call_here(
        &self,
        me: Authed,
        call: CallId,
        node: String,
        tag: u64,
    ) -> ServiceResult<Reply> {
        let Some(bus) = self.bus.as_ref() else { return Err(Refusal::NoSuchCall.into()) };
        let room = self.calls.room(call, me.session)?;
        bus.home_remote_channel(call, room, me.user, me.session, node, tag).await.map_err(ServiceError::Unavailable)?;
        if !self.calls.is_member(call, me.session) {
            // Left (or the call ended) while the channel was being admitted:
            // no channel for a call we are not in.
            bus.drop_remote_channel(call, me.session, tag);
            if !self.calls.contains(call) {
                bus.home_channels_over(call);
            }
            return Err(ServiceError::Refused("you are not in this call".into()));
        }
        Ok(Reply::Ok)
    }
}

/// The grace of a participant whose connections are all gone (DESIGN.md §2:
/// they leave `call_grace_ms` after the last one closed, and may come back
/// from any node meanwhile).
impl App {
    fn grace_ms(&self) -> u64 {
        self.cfg.call_grace.as_millis() as u64
    }

    /// Every connection of the session on this node is gone: it stops
    /// ringing, and in a call keeps its place for the grace. The other
    /// nodes are told, since its calls may be homed there.
    pub(crate) async fn connections_gone(&self, leg: Leg) {
        let fx = if self.grace_ms() == 0 && self.bus.is_none() {
            self.calls.leave_all(leg, EndReason::Disconnected)
        } else {
            self.calls.suspend(leg, self.grace_ms(), true)
        };
        self.apply(fx).await;
        self.tell_cluster(crate::cluster::Body::SessionGone { user: leg.user.0, session: leg.session.0 });
    }

    /// Another node lost every connection of the session it held, or is
    /// gone itself: the session's calls homed here start its grace, unless
    /// it is connected here.
    pub(crate) async fn connections_gone_elsewhere(&self, leg: Leg) {
        if self.presence.is_attached(leg.user, leg.session) {
            return;
        }
        let fx = self.calls.suspend(leg, self.grace_ms(), false);
        self.apply(fx).await;
    }

    /// The grace of a member ran out: it leaves its calls unless one of its
    /// connections is back, on this node or another.
    pub(crate) async fn grace_over(self: Arc<Self>, leg: Leg) {
        if self.connected_anywhere(leg).await {
            // Back: the stored deadline goes too (an adopter would
            // otherwise let them go at once).
            if let Some(call) = self.calls.member_call_of(leg.session) {
                self.store_calls(&[call]).await;
            }
            return;
        }
        tracing::debug!(user = %leg.user, "a participant's connections stayed gone past the grace");
        let fx = self.calls.leave_all(leg, EndReason::Disconnected);
        self.apply(fx).await;
    }

    pub(crate) async fn connected_anywhere(&self, leg: Leg) -> bool {
        if self.presence.is_attached(leg.user, leg.session) {
            return true;
        }
        match &self.bus {
            Some(bus) if bus.remote_online(leg.user) => bus.sessions_elsewhere(leg.user).await.contains(&leg.session),
            _ => false,
        }
    }
}
