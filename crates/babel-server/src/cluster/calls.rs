//! Calls across nodes (issue #18 item 3).
//!
//! A call's home is the node that received its `/call`: the call's machine,
//! its relay legs and its call channel live there. While the call lasts the
//! home answers requests on the call's subject, `<cluster>.call.<id>.home`;
//! a node asked about a call it does not hold (`/answer`, `/invite`,
//! `/hangup`, `/call_key`, `/call_nonce`) forwards the request there and relays the answer back. NATS says at once
//! when nobody listens on a subject, so a call that exists nowhere is
//! refused as quickly as on one node.
//!
//! To ring a callee whose sessions are on other nodes, the home asks each
//! node that holds them (presence notes say which) over its node subject,
//! `<cluster>.node.<node>`. Events to the callee's sessions then travel on
//! their user subject as any event does.
//!
//! Call channels opened on other nodes than the home are in
//! `cluster/channels.rs`. A participant whose connections on some node all
//! close is named to every node (`Body::SessionGone`); the home keeps its
//! place for the grace and, when it runs out, asks the nodes holding the
//! user (`Bus::sessions_elsewhere`) whether the session is back before it
//! lets it go (`routes/calls.rs`).

use std::sync::Arc;
use std::time::Duration;

use babel_proto::{CallId, CallJoined, MediaSetup, Reply, UserId};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Bus, lock, node_subject};
use crate::app::{App, Authed, ServiceError, ServiceResult};
use crate::calls::LegInfo;
use crate::store::SessionId;

/// How long a node waits for another to answer a forwarded request.
const FORWARD_WITHIN: Duration = Duration::from_secs(5);
/// How long the home waits for a node to name a callee's sessions.
const SESSIONS_WITHIN: Duration = Duration::from_secs(2);

/// The subject a call's home answers on.
pub fn call_subject(cluster: &str, call: CallId) -> String {
    format!("{cluster}.call.{}.home", call.0)
}

/// A call request forwarded to the call's home, with what the home cannot
/// see itself (the asking connection's addresses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum CallRequest {
    /// `/answer`, accepting or declining.
    Answer {
        /// Who answers.
        user: i64,
        /// From which session.
        session: i64,
        /// Accepts or declines.
        accept: bool,
        /// Key and candidates.
        media: MediaSetup,
        /// `relay_only` (which `MediaSetup` never passes on in JSON): the
        /// others must not learn this participant's addresses.
        relay_only: bool,
        /// The IP of the asking connection.
        ip: String,
        /// The relay's address as that connection reaches the server.
        relay_ip: String,
    },
    /// `/invite`.
    Invite {
        /// Who invites.
        user: i64,
        /// From which session.
        session: i64,
        /// Whom.
        contact: i64,
    },
    /// `/hangup`.
    Hangup {
        /// Who hangs up.
        user: i64,
        /// From which session.
        session: i64,
    },
    /// `/connect_call` on another node: admit that node's channel into
    /// the call's room (`cluster/channels.rs`).
    Connect {
        /// Whose channel.
        user: i64,
        /// Which session.
        session: i64,
        /// The node holding the channel's connection.
        node: String,
        /// The channel's tag.
        tag: u64,
    },
    /// `/call_key`: a committed participant reveals its key.
    Key {
        /// Who reveals.
        user: i64,
        /// From which session.
        session: i64,
        /// The key, as the client sent it (checked where it arrived).
        key: String,
    },
    /// `/call_nonce`: a member answers a newcomer's commitment.
    Nonce {
        /// Who answers.
        user: i64,
        /// From which session.
        session: i64,
        /// The nonce, as the client sent it (checked where it arrived).
        nonce: String,
    },
}

/// The home's answer to a forwarded request: the reply the client gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub(crate) enum Answered {
    /// 200 with no data.
    Ok,
    /// 200 for an accepting `/answer`.
    Joined {
        /// Grant, participants, epoch.
        joined: CallJoined,
    },
    /// 200 for a forwarded `/connect_call`, naming the home (the channel
    /// closes when that node is gone).
    Admitted {
        /// The home's node name.
        node: String,
    },
    /// 403.
    Refused {
        /// Why.
        reason: String,
    },
    /// 400.
    BadRequest {
        /// What was wrong.
        reason: String,
    },
    /// 401.
    Unauthorized,
}

impl From<Reply> for Answered {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Ok => Answered::Ok,
            Reply::CallJoined(joined) => Answered::Joined { joined },
            Reply::Refused(reason) => Answered::Refused { reason },
            Reply::BadRequest(reason) => Answered::BadRequest { reason },
            Reply::Unauthorized => Answered::Unauthorized,
            other => {
                Answered::BadRequest { reason: format!("unexpected reply at the call's home: {:?}", other.status()) }
            }
        }
    }
}

impl From<Answered> for Reply {
    fn from(a: Answered) -> Self {
        match a {
            Answered::Ok | Answered::Admitted { .. } => Reply::Ok,
            Answered::Joined { joined } => Reply::CallJoined(joined),
            Answered::Refused { reason } => Reply::Refused(reason),
            Answered::BadRequest { reason } => Reply::BadRequest(reason),
            Answered::Unauthorized => Reply::Unauthorized,
        }
    }
}

/// A request to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum NodeRequest {
    /// Which sessions of this user are live on the node (answer: a JSON
    /// list of session ids).
    Sessions {
        /// The user.
        user: i64,
    },
}

impl Bus {
    /// Makes this node the call's home: it answers on the call's subject
    /// until [`Bus::call_over`]. Done before anyone hears of the call.
    pub(crate) async fn home_call(&self, call: CallId) {
        let mut sub = match self.client.subscribe(call_subject(&self.prefix, call)).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(%call, error = %e, "cannot take a call's subject; other nodes cannot reach it");
                return;
            }
        };
        let stop = CancellationToken::new();
        lock(&self.homed).insert(call, stop.clone());
        let tx = self.requests.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => {
                            if tx.send((call, m)).is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    _ = stop.cancelled() => {
                        let _ = sub.unsubscribe().await;
                        return;
                    }
                }
            }
        });
    }

    /// The call ended here: stop answering for it.
    pub(crate) fn call_over(&self, call: CallId) {
        if let Some(stop) = lock(&self.homed).remove(&call) {
            stop.cancel();
        }
        self.home_channels_over(call);
    }

    /// Sends a call request to the call's home; `None` when no node holds
    /// the call.
    pub(crate) async fn forward(&self, call: CallId, req: &CallRequest) -> Option<ServiceResult<Reply>> {
        self.forward_answered(call, req).await.map(|r| r.map(Reply::from))
    }

    /// [`Self::forward`], with the home's answer as it came.
    pub(crate) async fn forward_answered(&self, call: CallId, req: &CallRequest) -> Option<ServiceResult<Answered>> {
        let payload = match serde_json::to_vec(req) {
            Ok(p) => Bytes::from(p),
            Err(e) => return Some(Err(ServiceError::Unavailable(format!("cannot encode a call request: {e}")))),
        };
        let asked = self.client.request(call_subject(&self.prefix, call), payload);
        let msg = match tokio::time::timeout(FORWARD_WITHIN, asked).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => return None,
            Ok(Err(e)) => return Some(Err(ServiceError::Unavailable(format!("the call's home did not answer: {e}")))),
            Err(_) => return Some(Err(ServiceError::Unavailable("the call's home did not answer in time".into()))),
        };
        Some(match serde_json::from_slice::<Answered>(&msg.payload) {
            Ok(a) => Ok(a),
            Err(e) => Err(ServiceError::Unavailable(format!("malformed answer from the call's home: {e}"))),
        })
    }

    /// The user's live sessions on other nodes, as those nodes tell them.
    pub(crate) async fn sessions_elsewhere(&self, user: UserId) -> Vec<SessionId> {
        let nodes = lock(&self.peers).holders(user);
        let Ok(payload) = serde_json::to_vec(&NodeRequest::Sessions { user: user.0 }) else { return Vec::new() };
        let asks = nodes.into_iter().map(|node| {
            let (client, subject, payload) =
                (self.client.clone(), node_subject(&self.prefix, &node), Bytes::from(payload.clone()));
            async move {
                match tokio::time::timeout(SESSIONS_WITHIN, client.request(subject, payload)).await {
                    Ok(Ok(msg)) => serde_json::from_slice::<Vec<i64>>(&msg.payload).unwrap_or_default(),
                    Ok(Err(e)) => {
                        tracing::debug!(%node, error = %e, "a node did not name its sessions");
                        Vec::new()
                    }
                    Err(_) => {
                        tracing::debug!(%node, "a node did not name its sessions in time");
                        Vec::new()
                    }
                }
            }
        });
        let mut all: Vec<SessionId> =
            futures::future::join_all(asks).await.into_iter().flatten().map(SessionId).collect();
        all.sort_by_key(|s| s.0);
        all.dedup();
        all
    }

    fn reply(&self, msg: &async_nats::Message, body: Vec<u8>) {
        if let Some(reply) = &msg.reply {
            self.publish_with_reply(reply.to_string(), None, body.into());
        }
    }
}

impl App {
    /// A request forwarded to this node's call, answered.
    pub(crate) async fn serve_call_request(self: Arc<Self>, call: CallId, msg: async_nats::Message) {
        let Some(bus) = self.bus.clone() else { return };
        let (reply, connect) = match serde_json::from_slice::<CallRequest>(&msg.payload) {
            Ok(req) => {
                let connect = matches!(req, CallRequest::Connect { .. });
                (self.at_home(call, req).await, connect)
            }
            Err(e) => (Err(ServiceError::BadRequest(format!("malformed forwarded call request: {e}"))), false),
        };
        let answered = match Answered::from(reply.unwrap_or_else(ServiceError::into_reply)) {
            Answered::Ok if connect => Answered::Admitted { node: bus.node.clone() },
            other => other,
        };
        match serde_json::to_vec(&answered) {
            Ok(body) => bus.reply(&msg, body),
            Err(e) => tracing::error!(error = %e, "cannot encode a forwarded call's answer"),
        }
    }

    async fn at_home(&self, call: CallId, req: CallRequest) -> ServiceResult<Reply> {
        match req {
            CallRequest::Answer { user, session, accept, mut media, relay_only, ip, relay_ip } => {
                media.relay_only = relay_only;
                let me = Authed { user: UserId(user), session: SessionId(session) };
                let info =
                    LegInfo { user: self.user(me.user).await?, ip, media, public: None, relay_ip, revealed: false };
                self.answer_here(me, call, accept, info, true).await
            }
            CallRequest::Invite { user, session, contact } => {
                self.invite_here(Authed { user: UserId(user), session: SessionId(session) }, call, UserId(contact))
                    .await
            }
            CallRequest::Hangup { user, session } => {
                self.hangup_here(Authed { user: UserId(user), session: SessionId(session) }, call).await
            }
            CallRequest::Connect { user, session, node, tag } => {
                let me = Authed { user: UserId(user), session: SessionId(session) };
                self.connect_call_here(me, call, node, tag).await
            }
            CallRequest::Key { user, session, key } => {
                self.call_key_here(Authed { user: UserId(user), session: SessionId(session) }, call, key).await
            }
            CallRequest::Nonce { user, session, nonce } => {
                self.call_nonce_here(Authed { user: UserId(user), session: SessionId(session) }, call, nonce).await
            }
        }
    }

    /// A request to this node, answered.
    pub(crate) fn serve_node_request(&self, msg: async_nats::Message) {
        let Some(bus) = &self.bus else { return };
        match serde_json::from_slice::<NodeRequest>(&msg.payload) {
            Ok(NodeRequest::Sessions { user }) => {
                let sessions: Vec<i64> = self.presence.sessions_of(UserId(user)).into_iter().map(|s| s.0).collect();
                match serde_json::to_vec(&sessions) {
                    Ok(body) => bus.reply(&msg, body),
                    Err(e) => tracing::error!(error = %e, "cannot encode a session list"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "malformed node request"),
        }
    }

    /// Forwards a call request to the call's home when the call is not
    /// here; `None` when it is here, or nowhere (then the local path
    /// refuses it).
    pub(crate) async fn forward_call(
        &self,
        call: CallId,
        req: impl FnOnce() -> CallRequest,
    ) -> Option<ServiceResult<Reply>> {
        let bus = self.bus.as_ref()?;
        if self.calls.contains(call) {
            return None;
        }
        bus.forward(call, &req()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_requests_and_answers_round_trip_as_tagged_json() {
        let media = MediaSetup { candidates: vec!["127.0.0.1:5555".parse().unwrap()], ..MediaSetup::default() };
        let req = CallRequest::Answer {
            user: 3,
            session: 9,
            accept: true,
            relay_only: true,
            media,
            ip: "127.0.0.1".into(),
            relay_ip: "127.0.0.1".into(),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.starts_with(r#"{"op":"answer","user":3,"session":9,"accept":true"#), "{text}");
        assert_eq!(serde_json::from_str::<CallRequest>(&text).unwrap(), req);
        let hang = CallRequest::Hangup { user: 1, session: 2 };
        assert_eq!(serde_json::to_string(&hang).unwrap(), r#"{"op":"hangup","user":1,"session":2}"#);
        let key = CallRequest::Key { user: 1, session: 2, key: "k".into() };
        assert_eq!(serde_json::to_string(&key).unwrap(), r#"{"op":"key","user":1,"session":2,"key":"k"}"#);
        let nonce = CallRequest::Nonce { user: 1, session: 2, nonce: "n".into() };
        assert_eq!(serde_json::from_str::<CallRequest>(&serde_json::to_string(&nonce).unwrap()).unwrap(), nonce);
        assert!(serde_json::from_str::<CallRequest>(r#"{"op":"explode"}"#).is_err());

        let refused: Answered = Reply::Refused("there is no such call".into()).into();
        let text = serde_json::to_string(&refused).unwrap();
        assert_eq!(text, r#"{"r":"refused","reason":"there is no such call"}"#);
        let back: Reply = serde_json::from_str::<Answered>(&text).unwrap().into();
        assert_eq!(back, Reply::Refused("there is no such call".into()));
        assert_eq!(Reply::from(Answered::from(Reply::Ok)), Reply::Ok);
        assert_eq!(serde_json::to_string(&NodeRequest::Sessions { user: 5 }).unwrap(), r#"{"op":"sessions","user":5}"#);
        assert_eq!(call_subject("babel", CallId(42)), "babel.call.42.home");
    }
}
