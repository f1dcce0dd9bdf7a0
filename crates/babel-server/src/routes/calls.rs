//! `/call`, `/answer`, `/hangup`, `/invite`, `/connect_call`, `/call_key`.

use babel_proto::{CallId, CallJoined, CallStarted, EndReason, MediaSetup, RelayGrant, Reply, UserId};

use crate::app::{App, Authed, ChannelMode, ConnState, ServiceError, ServiceResult};
use crate::calls::machine::Leg;
use crate::calls::{Calls, LegInfo, Refusal};
use crate::cluster::CallRequest;
use crate::store::Relation;

impl From<Refusal> for ServiceError {
    fn from(r: Refusal) -> Self {
        ServiceError::Refused(r.to_string())
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
        let fx = self.calls.reveal(call, Leg { user: me.user, session: me.session }, key)?;
        self.apply(fx).await;
        Ok(Reply::Ok)
    }

    /// A member answers a newcomer's commitment; the others are told.
    pub(crate) async fn call_nonce(&self, me: Authed, call: CallId, nonce: String) -> ServiceResult<Reply> {
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

    pub(crate) fn connect_call(&self, me: Authed, call: CallId) -> ServiceResult<ChannelMode> {
        let room = self.calls.room(call, me.session)?;
        let queue = room.join(me.user, me.session);
        if !self.calls.is_member(call, me.session) {
            // Left between the two checks: no channel for a call we are not in.
            room.leave(&queue);
            return Err(ServiceError::Refused("you are not in this call".into()));
        }
        Ok(ChannelMode { call, leg: Leg { user: me.user, session: me.session }, room, queue })
    }
}
