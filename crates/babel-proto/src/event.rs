//! Events: what the server pushes on a connection in event mode.
//!
//! An event frame has the request shape: route = the event's name, an empty
//! header, JSON data. [`ServerEvent::to_frame`] is the server's side,
//! [`ServerEvent::parse`] the client's.

use serde::{Deserialize, Serialize};

use crate::account::SessionEnded;
use crate::call::{CallId, EndReason, Epoch, MediaSetup, Peer, RelayGrant};
use crate::frame::RawRequest;
use crate::messages::{MessageEvent, MessagesRead};
use crate::types::{ContactEntry, Presence, User, UserId};

/// `/incoming_call`: a call rings on this session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingCall {
    /// The call.
    pub call_id: CallId,
    /// The caller's IP as the server sees it.
    pub ip: String,
    /// The caller (`id`, `name`, `email`).
    #[serde(flatten)]
    pub caller: User,
    /// The caller's key and candidates.
    #[serde(flatten)]
    pub media: MediaSetup,
    /// Everyone already in the call, the caller included, with their media.
    pub participants: Vec<Peer>,
}

/// `/call_accepted` and `/participant_joined`: someone answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerJoined {
    /// The call.
    pub call_id: CallId,
    /// Who joined, where, with what key (or, for a newcomer to a group
    /// call, the commitment to it).
    #[serde(flatten)]
    pub peer: Peer,
    /// In `/participant_joined`: the call's new epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
}

/// `/call_candidates`: a participant's addresses changed (the relay learned
/// its public address, or it moved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidatesUpdate {
    /// The call.
    pub call_id: CallId,
    /// Whose addresses.
    pub id: UserId,
    /// All their candidates now, most preferred first.
    pub candidates: Vec<std::net::SocketAddr>,
}

/// `/call_nonce`: a member's fresh nonce for a newcomer's join (group calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceSent {
    /// The call.
    pub call_id: CallId,
    /// Whose nonce.
    pub id: UserId,
    /// 16 bytes in standard base64.
    pub nonce: String,
}

/// `/call_key`: a participant who committed to its key reveals it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRevealed {
    /// The call.
    pub call_id: CallId,
    /// Whose key.
    pub id: UserId,
    /// Their public key, 32 bytes in standard base64.
    pub key: String,
}

/// `/call_relay`: the call moved to another node (its home died and another
/// node adopted it), and with it the relay: this participant's new grant.
/// Voice through the old relay stops; peer-to-peer voice goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayMoved {
    /// The call.
    pub call_id: CallId,
    /// The new grant (on the adopting node's relay, which it names by
    /// `relay_host` when it knows its address).
    #[serde(flatten)]
    pub relay: RelayGrant,
}

#[derive(Serialize, Deserialize)]
struct IdOnly {
    id: UserId,
}

#[derive(Serialize, Deserialize)]
struct StatusData {
    id: UserId,
    status: Presence,
}

#[derive(Serialize, Deserialize)]
struct CallAndId {
    call_id: CallId,
    id: UserId,
}

#[derive(Serialize, Deserialize)]
struct Left {
    call_id: CallId,
    id: UserId,
    #[serde(default)]
    epoch: Epoch,
}

#[derive(Serialize, Deserialize)]
struct Ended {
    call_id: CallId,
    reason: EndReason,
}

/// Every event the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// `/ping` every 20 s, so both sides notice a dead connection.
    Ping,
    /// `/contact_request`: someone asks me to be their contact.
    ContactRequest(User),
    /// `/contact_added`: we are now contacts (with their presence).
    ContactAdded(ContactEntry),
    /// `/contact_removed`: a contact, or a pending request, is gone.
    ContactRemoved(UserId),
    /// `/status`: a contact's presence changed.
    Status(UserId, Presence),
    /// `/incoming_call`.
    IncomingCall(IncomingCall),
    /// `/call_accepted`: the callee answered my call.
    CallAccepted(PeerJoined),
    /// `/call_declined`: someone rung declined (or did not answer in a group call).
    CallDeclined(CallId, UserId),
    /// `/participant_joined`: someone joined a call with two or more in it already.
    ParticipantJoined(PeerJoined),
    /// `/participant_left`: someone left a call that goes on (with the
    /// call's new epoch).
    ParticipantLeft(CallId, UserId, Epoch),
    /// `/call_ended`.
    CallEnded(CallId, EndReason),
    /// `/call_candidates` (Babel's addition to DESIGN.md's list).
    CallCandidates(CandidatesUpdate),
    /// `/call_key`: the caller (or a newcomer) reveals the key it committed to.
    CallKey(KeyRevealed),
    /// `/call_nonce`: a member answers a newcomer's commitment (group calls).
    CallNonce(NonceSent),
    /// `/call_relay`: the call's relay moved (a cluster node adopted the
    /// call of a node that died): this participant's new relay grant.
    CallRelay(RelayMoved),
    /// `/message`: a message to me, or one I sent from another session.
    Message(MessageEvent),
    /// `/messages_read`: a conversation's messages are read up to an id.
    MessagesRead(MessagesRead),
    /// `/contact_updated`: a contact renamed or chose another status (user +
    /// `status`, as others see it).
    ContactUpdated(ContactEntry),
    /// `/session_ended`: this session is over; the connection closes next.
    SessionEnded(SessionEnded),
}

/// An event frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The route is not an event this client knows.
    #[error("unknown event `{0}`")]
    Unknown(String),
    /// The data did not match the event.
    #[error("bad data for {0}: {1}")]
    BadData(&'static str, String),
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl ServerEvent {
    /// The event's route name.
    pub fn name(&self) -> &'static str {
        match self {
            ServerEvent::Ping => "/ping",
            ServerEvent::ContactRequest(_) => "/contact_request",
            ServerEvent::ContactAdded(_) => "/contact_added",
            ServerEvent::ContactRemoved(_) => "/contact_removed",
            ServerEvent::Status(..) => "/status",
            ServerEvent::IncomingCall(_) => "/incoming_call",
            ServerEvent::CallAccepted(_) => "/call_accepted",
            ServerEvent::CallDeclined(..) => "/call_declined",
            ServerEvent::ParticipantJoined(_) => "/participant_joined",
            ServerEvent::ParticipantLeft(..) => "/participant_left",
            ServerEvent::CallEnded(..) => "/call_ended",
            ServerEvent::CallCandidates(_) => "/call_candidates",
            ServerEvent::CallKey(_) => "/call_key",
            ServerEvent::CallNonce(_) => "/call_nonce",
            ServerEvent::CallRelay(_) => "/call_relay",
            ServerEvent::Message(_) => "/message",
            ServerEvent::MessagesRead(_) => "/messages_read",
            ServerEvent::ContactUpdated(_) => "/contact_updated",
            ServerEvent::SessionEnded(_) => "/session_ended",
        }
    }

    /// The event's JSON data.
    pub fn data(&self) -> Vec<u8> {
        match self {
            ServerEvent::Ping => b"{}".to_vec(),
            ServerEvent::ContactRequest(u) => json(u),
            ServerEvent::ContactAdded(c) => json(c),
            ServerEvent::ContactRemoved(id) => json(&IdOnly { id: *id }),
            ServerEvent::Status(id, status) => json(&StatusData { id: *id, status: *status }),
            ServerEvent::IncomingCall(c) => json(c),
            ServerEvent::CallAccepted(p) | ServerEvent::ParticipantJoined(p) => json(p),
            ServerEvent::CallDeclined(call_id, id) => json(&CallAndId { call_id: *call_id, id: *id }),
            ServerEvent::ParticipantLeft(call_id, id, epoch) => {
                json(&Left { call_id: *call_id, id: *id, epoch: *epoch })
            }
            ServerEvent::CallEnded(call_id, reason) => json(&Ended { call_id: *call_id, reason: *reason }),
            ServerEvent::CallCandidates(c) => json(c),
            ServerEvent::CallKey(k) => json(k),
            ServerEvent::CallNonce(n) => json(n),
            ServerEvent::CallRelay(r) => json(r),
            ServerEvent::Message(m) => json(m),
            ServerEvent::MessagesRead(r) => json(r),
            ServerEvent::ContactUpdated(c) => json(c),
            ServerEvent::SessionEnded(e) => json(e),
        }
    }

    /// The event as a frame.
    pub fn to_frame(&self) -> RawRequest {
        RawRequest::new(Vec::new(), self.name(), self.data())
    }

    /// Reads an event frame (the client's side). Keys are matched in lowercase.
    pub fn parse(frame: &RawRequest) -> Result<ServerEvent, EventError> {
        let route = String::from_utf8_lossy(&frame.route).into_owned();
        let fields =
            crate::fields::Fields::parse(&frame.data).map_err(|e| EventError::BadData("event", e.to_string()))?;
        let value = serde_json::Value::Object(fields.into_map().into_iter().collect());
        fn de<T: serde::de::DeserializeOwned>(name: &'static str, v: serde_json::Value) -> Result<T, EventError> {
            serde_json::from_value(v).map_err(|e| EventError::BadData(name, e.to_string()))
        }
        Ok(match route.as_str() {
            "/ping" => ServerEvent::Ping,
            "/contact_request" => ServerEvent::ContactRequest(de("/contact_request", value)?),
            "/contact_added" => ServerEvent::ContactAdded(de("/contact_added", value)?),
            "/contact_removed" => ServerEvent::ContactRemoved(de::<IdOnly>("/contact_removed", value)?.id),
            "/status" => {
                let s: StatusData = de("/status", value)?;
                ServerEvent::Status(s.id, s.status)
            }
            "/incoming_call" => ServerEvent::IncomingCall(de("/incoming_call", value)?),
            "/call_accepted" => ServerEvent::CallAccepted(de("/call_accepted", value)?),
            "/call_declined" => {
                let c: CallAndId = de("/call_declined", value)?;
                ServerEvent::CallDeclined(c.call_id, c.id)
            }
            "/participant_joined" => ServerEvent::ParticipantJoined(de("/participant_joined", value)?),
            "/participant_left" => {
                let c: Left = de("/participant_left", value)?;
                ServerEvent::ParticipantLeft(c.call_id, c.id, c.epoch)
            }
            "/call_ended" => {
                let e: Ended = de("/call_ended", value)?;
                ServerEvent::CallEnded(e.call_id, e.reason)
            }
            "/call_candidates" => ServerEvent::CallCandidates(de("/call_candidates", value)?),
            "/call_key" => ServerEvent::CallKey(de("/call_key", value)?),
            "/call_nonce" => ServerEvent::CallNonce(de("/call_nonce", value)?),
            "/call_relay" => ServerEvent::CallRelay(de("/call_relay", value)?),
            "/message" => ServerEvent::Message(de("/message", value)?),
            "/messages_read" => ServerEvent::MessagesRead(de("/messages_read", value)?),
            "/contact_updated" => ServerEvent::ContactUpdated(de("/contact_updated", value)?),
            "/session_ended" => ServerEvent::SessionEnded(de("/session_ended", value)?),
            _ => return Err(EventError::Unknown(route)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> User {
        User { id: UserId(id), name: format!("u{id}"), email: format!("u{id}@x.org") }
    }

    fn peer(id: i64) -> Peer {
        Peer {
            user: user(id),
            ip: "10.0.0.1".into(),
            media: MediaSetup {
                key: Some("k".into()),
                key_commit: Some("c".into()),
                candidates: vec!["10.0.0.1:4000".parse().unwrap()],
                ..MediaSetup::default()
            },
        }
    }

    pub(crate) fn every_event() -> Vec<ServerEvent> {
        let c = CallId(77);
        vec![
            ServerEvent::Ping,
            ServerEvent::ContactRequest(user(1)),
            ServerEvent::ContactAdded(ContactEntry { user: user(2), status: Presence::Online }),
            ServerEvent::ContactRemoved(UserId(3)),
            ServerEvent::Status(UserId(4), Presence::Busy),
            ServerEvent::IncomingCall(IncomingCall {
                call_id: c,
                ip: "10.0.0.1".into(),
                caller: user(1),
                media: peer(1).media,
                participants: vec![peer(1)],
            }),
            ServerEvent::CallAccepted(PeerJoined { call_id: c, peer: peer(2), epoch: None }),
            ServerEvent::CallDeclined(c, UserId(2)),
            ServerEvent::ParticipantJoined(PeerJoined { call_id: c, peer: peer(5), epoch: Some(Epoch(3)) }),
            ServerEvent::ParticipantLeft(c, UserId(5), Epoch(4)),
            ServerEvent::CallEnded(c, EndReason::AnsweredElsewhere),
            ServerEvent::CallCandidates(CandidatesUpdate {
                call_id: c,
                id: UserId(2),
                candidates: vec!["1.2.3.4:5".parse().unwrap()],
            }),
            ServerEvent::CallKey(KeyRevealed { call_id: c, id: UserId(1), key: "k".into() }),
            ServerEvent::CallNonce(NonceSent { call_id: c, id: UserId(2), nonce: "n".into() }),
            ServerEvent::CallRelay(RelayMoved {
                call_id: c,
                relay: RelayGrant::new(40000, 7, &[3; 16]).with_host(Some([192, 0, 2, 9].into())),
            }),
            ServerEvent::Message(MessageEvent {
                message: crate::messages::Message {
                    message_id: crate::messages::MessageId(8),
                    from: UserId(1),
                    to: UserId(2),
                    text: "hello".into(),
                    sent_at: "2026-11-29T18:20:00Z".into(),
                    read: false,
                },
                sender: user(1),
            }),
            ServerEvent::MessagesRead(MessagesRead {
                contact_id: UserId(2),
                message_id: crate::messages::MessageId(8),
            }),
            ServerEvent::ContactUpdated(ContactEntry { user: user(6), status: Presence::Dnd }),
            ServerEvent::SessionEnded(SessionEnded {
                session_id: crate::account::SessionId(8),
                reason: crate::account::SessionEndReason::PasswordChanged,
            }),
        ]
    }

    #[test]
    fn every_event_round_trips() {
        let events = every_event();
        let names: std::collections::HashSet<_> = events.iter().map(ServerEvent::name).collect();
        assert_eq!(names.len(), events.len());
        for e in events {
            let f = e.to_frame();
            assert!(f.header.is_empty());
            assert_eq!(ServerEvent::parse(&f).unwrap(), e);
        }
    }

    #[test]
    fn event_data_shapes() {
        assert_eq!(ServerEvent::Status(UserId(4), Presence::Busy).data(), br#"{"id":"4","status":"busy"}"#);
        assert_eq!(
            ServerEvent::CallEnded(CallId(9), EndReason::Timeout).data(),
            br#"{"call_id":"9","reason":"timeout"}"#
        );
        assert_eq!(ServerEvent::Ping.data(), b"{}");
        assert_eq!(
            ServerEvent::ContactUpdated(ContactEntry { user: user(6), status: Presence::Away }).data(),
            br#"{"id":"6","name":"u6","email":"u6@x.org","status":"away"}"#
        );
        let ended = SessionEnded {
            session_id: crate::account::SessionId(8),
            reason: crate::account::SessionEndReason::Expired,
        };
        assert_eq!(ServerEvent::SessionEnded(ended).data(), br#"{"session_id":"8","reason":"expired"}"#);
        let moved = RelayMoved { call_id: CallId(9), relay: RelayGrant::new(40000, 7, &[0; 16]) };
        assert_eq!(
            ServerEvent::CallRelay(moved).data(),
            br#"{"call_id":"9","relay_port":"40000","relay_handle":"7","relay_key":"AAAAAAAAAAAAAAAAAAAAAA=="}"#
        );
    }

    #[test]
    fn new_statuses_in_events_do_not_break_old_readers() {
        let f = RawRequest::new(Vec::new(), "/status", br#"{"id":"4","status":"in_a_meeting"}"#.to_vec());
        assert_eq!(ServerEvent::parse(&f).unwrap(), ServerEvent::Status(UserId(4), Presence::Unknown));
    }

    #[test]
    fn unknown_and_bad_events() {
        assert!(matches!(
            ServerEvent::parse(&RawRequest::new(Vec::new(), "/what", b"{}".to_vec())),
            Err(EventError::Unknown(_))
        ));
        assert!(matches!(
            ServerEvent::parse(&RawRequest::new(Vec::new(), "/status", b"{}".to_vec())),
            Err(EventError::BadData(..))
        ));
    }
}
