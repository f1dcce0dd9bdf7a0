//! From signalling to media, step by step: what happens around `/call` and
//! `/answer` so the engine can start. [`crate::session`] puts these steps
//! together into one call flow; they stay public for the tests and tools
//! that take a call apart on purpose.
//!
//! Before calling or answering, [`Prepared::new`] makes the call's key pair
//! and binds the UDP socket whose address goes out as a candidate. A caller
//! sends only a commitment to its key ([`Prepared::call_media`]) and
//! reveals the key after `/call_accepted`; a callee answers with its key
//! ([`Prepared::answer_media`]) only once it holds the caller's commitment,
//! and starts its media once the revealed key matched it
//! (`babel_proto::agree` is that exchange; [`agreed_peer`] turns its outcome
//! into the engine's peer). [`Prepared::into_call`] makes the engine's
//! [`CallSetup`].
//! While the call runs, [`key_steps`] says what a server event means for
//! the call's keys and the engine.
//!
//! Not here: the signalling itself (`babel-client`) or audio devices.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use babel_client::{CallChannel, ClientError};
use babel_media::engine::{CallSetup, Control, PeerSetup, RelayInfo};
use babel_media::keys::{CallKeys, KeyError};
use babel_proto::agree::{AgreeError, Agreed, CalleeAgreement, GroupAgreement, Joiner};
use babel_proto::{CallId, MediaSetup, Peer, RelayGrant, ServerEvent};
use tokio::net::UdpSocket;

use crate::channel::ClientChannel;

/// Why a call's media could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The server's address does not resolve.
    #[error("the server address {0} does not resolve")]
    Resolve(String),
    /// A socket could not be made.
    #[error("cannot open a UDP socket: {0}")]
    Io(#[from] std::io::Error),
    /// No key pair could be made.
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// The `host:port` part of a server address that may carry a scheme
/// (`tls://host:port`): media goes to the same host over UDP either way.
pub fn host_port(server: &str) -> String {
    server.parse::<babel_client::ServerAddr>().map_or_else(|_| server.to_owned(), |a| a.host_port())
}

/// The IP this machine reaches `server` from (the interface to announce),
/// and the server's IP (where its relay listens).
pub async fn local_ip_towards(server: &str) -> Result<(IpAddr, IpAddr), SetupError> {
    let hp = host_port(server);
    let addr = tokio::net::lookup_host(hp.as_str())
        .await
        .map_err(|_| SetupError::Resolve(hp.to_owned()))?
        .next()
        .ok_or_else(|| SetupError::Resolve(hp.to_owned()))?;
    let probe = UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
    probe.connect(addr).await?;
    Ok((probe.local_addr()?.ip(), addr.ip()))
}

/// A call's media resources, made before the call so its set-up can carry
/// the key and the candidate.
#[derive(Debug)]
pub struct Prepared {
    /// My key pair for this call.
    pub keys: CallKeys,
    /// My UDP socket.
    pub socket: UdpSocket,
    /// Its address, announced as my candidate.
    pub candidate: SocketAddr,
    /// The server's IP (its relay's host).
    pub server_ip: IpAddr,
    /// Relay-only: my addresses are never announced nor shown to the
    /// others; voice goes through the relay and the call channel only.
    pub relay_only: bool,
}

impl Prepared {
    /// Makes keys and binds a socket on the interface that reaches `server`.
    pub async fn new(server: &str) -> Result<Prepared, SetupError> {
        let (local, server_ip) = local_ip_towards(server).await?;
        let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
        let candidate = socket.local_addr()?;
        Ok(Prepared { keys: CallKeys::generate()?, socket, candidate, server_ip, relay_only: false })
    }

    /// Asks for relay-only (see [`Prepared::relay_only`]).
    pub fn with_relay_only(mut self, on: bool) -> Self {
        self.relay_only = on;
        self
    }

    /// The addresses I announce: none when relay-only (the server then
    /// withholds the address it sees, too).
    fn announced(&self) -> Vec<SocketAddr> {
        if self.relay_only { Vec::new() } else { vec![self.candidate] }
    }

    /// What goes out in `/call`: a commitment to my key, not the key.
    pub fn call_media(&self) -> MediaSetup {
        MediaSetup {
            key: None,
            key_commit: Some(self.keys.commit_b64()),
            candidates: self.announced(),
            relay_only: self.relay_only,
        }
    }

    /// What goes out in an accepting `/answer` of a two-party call: my key,
    /// which the agreement only gives once it holds the caller's commitment.
    pub fn answer_media(&self, agreement: &CalleeAgreement) -> MediaSetup {
        MediaSetup {
            key: Some(agreement.key()),
            key_commit: None,
            candidates: self.announced(),
            relay_only: self.relay_only,
        }
    }

    /// What goes out in an accepting `/answer` of a group call (an
    /// invite): a commitment to my key, which I reveal once every member
    /// answered it with a nonce.
    pub fn join_media(&self, joiner: &Joiner) -> MediaSetup {
        MediaSetup {
            key: None,
            key_commit: Some(joiner.key_commit()),
            candidates: self.announced(),
            relay_only: self.relay_only,
        }
    }

    /// The engine's set-up, once the other participants, my relay grant and
    /// the code are known.
    pub fn into_call(
        self,
        peers: Vec<PeerSetup>,
        relay: &RelayGrant,
        channel: Option<CallChannel>,
        code: String,
    ) -> CallSetup {
        let relay = relay_info(relay, self.server_ip);
        let channel = channel.map(ClientChannel::boxed);
        CallSetup { keys: self.keys, peers, relay, channel, socket: self.socket, code, relay_only: self.relay_only }
    }
}

/// A participant as the engine needs them; `None` for one without a voice
/// key (a client without Babel's media engine).
pub fn peer_setup(p: &Peer) -> Option<PeerSetup> {
    Some(PeerSetup { user: p.user.id, key: p.media.key.clone()?, candidates: p.media.candidates.clone() })
}

/// The other side of a two-party call as the engine needs them: where the
/// server said they are, with the key the exchange agreed on.
pub fn agreed_peer(p: &Peer, agreed: &Agreed) -> PeerSetup {
    PeerSetup { user: agreed.peer, key: agreed.peer_key.clone(), candidates: p.media.candidates.clone() }
}

/// My relay grant as the engine needs it (`None` if malformed).
pub fn relay_info(grant: &RelayGrant, server_ip: IpAddr) -> Option<RelayInfo> {
    let (_, handle, key) = grant.parts()?;
    Some(RelayInfo { addr: grant.relay_addr(server_ip)?, handle, key })
}

/// How long an answered call waits for the other side's part of the key
/// exchange (the caller's reveal, the members' nonces).
pub const KEY_EXCHANGE_WAIT: Duration = Duration::from_secs(20);

/// Why a key exchange did not finish: the call must end.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The other side's part did not agree (a key that does not match its
    /// commitment, a second reveal, ...).
    #[error(transparent)]
    Agree(#[from] AgreeError),
    /// The call ended while waiting (its reason).
    #[error("the call ended: {0}")]
    Ended(&'static str),
    /// The server could not be told my part, or the event stream failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The event stream ended.
    #[error("the event stream ended")]
    StreamEnded,
    /// Nothing came within [`KEY_EXCHANGE_WAIT`] (what was awaited).
    #[error("{0}")]
    TimedOut(&'static str),
    /// A newcomer's exchange finished without knowing the call's members.
    #[error("the call's members are unknown")]
    NoMembers,
}

/// What a server event means for a running call's keys and media.
#[derive(Debug, Clone)]
pub enum KeyStep {
    /// A newcomer committed to its key: send this nonce with `/call_nonce`.
    SendNonce(String),
    /// For the engine: a verified newcomer to add, someone gone, addresses.
    Media(Control),
    /// The call's code changed (a join or a leave): show it, say so.
    Code(String),
    /// The key exchange was tampered with: hang up and say why.
    End(AgreeError),
    /// The call's relay moved (`/call_relay`): the engine binds to this
    /// grant's relay (see [`relay_info`]).
    Relay(RelayGrant),
}

/// Follows a running call's keys through the server's events (see
/// `babel_proto::agree::GroupAgreement`): `pending` holds the newcomer
/// between its commitment and its reveal. Any further `/call_accepted`, a
/// newcomer that shows a key without a commitment, a reveal that does not
/// match, or one nobody is waiting for, ends the call.
pub fn key_steps(
    group: &mut GroupAgreement,
    pending: &mut Option<Peer>,
    call: CallId,
    ev: &ServerEvent,
) -> Vec<KeyStep> {
    match ev {
        ServerEvent::CallAccepted(j) if j.call_id == call => vec![KeyStep::End(AgreeError::Twice)],
        ServerEvent::ParticipantJoined(j) if j.call_id == call => {
            let media = &j.peer.media;
            if media.key_commit.is_none() && media.key.is_none() {
                // A client without Babel's media engine: nothing to agree.
                return Vec::new();
            }
            let epoch = j.epoch.map_or(group.epoch() + 1, |e| e.0);
            match group.on_joining(j.peer.user.id, media.key_commit.as_deref(), epoch) {
                Ok(nonce) => {
                    *pending = Some(j.peer.clone());
                    vec![KeyStep::SendNonce(nonce)]
                }
                Err(e) => vec![KeyStep::End(e)],
            }
        }
        ServerEvent::CallNonce(n) if n.call_id == call => {
            group.on_nonce(n.id, &n.nonce);
            Vec::new()
        }
        ServerEvent::CallKey(k) if k.call_id == call => match group.on_reveal(k.id, &k.key) {
            Ok(key) => {
                let candidates = pending.take().map(|p| p.media.candidates).unwrap_or_default();
                vec![
                    KeyStep::Media(Control::AddPeer(PeerSetup { user: k.id, key, candidates })),
                    KeyStep::Code(group.code().to_owned()),
                ]
            }
            Err(e) => vec![KeyStep::End(e)],
        },
        ServerEvent::ParticipantLeft(c, id, epoch) if *c == call => {
            if pending.as_ref().is_some_and(|p| p.user.id == *id) {
                *pending = None;
            }
            let code = group.on_left(*id, epoch.0).to_owned();
            vec![KeyStep::Media(Control::RemovePeer(*id)), KeyStep::Code(code)]
        }
        ServerEvent::CallCandidates(u) if u.call_id == call => {
            vec![KeyStep::Media(Control::Candidates(u.id, u.candidates.clone()))]
        }
        ServerEvent::CallRelay(m) if m.call_id == call => vec![KeyStep::Relay(m.relay.clone())],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use babel_proto::{CandidatesUpdate, PeerJoined, User, UserId};

    use super::*;

    fn peer(key: Option<&str>) -> Peer {
        Peer {
            user: User { id: UserId(7), name: "Ben".into(), email: "ben@x.org".into() },
            ip: "127.0.0.1".into(),
            media: MediaSetup {
                key: key.map(str::to_owned),
                key_commit: None,
                candidates: vec!["127.0.0.1:4000".parse().expect("addr")],
                ..MediaSetup::default()
            },
        }
    }

    #[test]
    fn schemes_are_stripped() {
        assert_eq!(host_port("tls://example.org:7447"), "example.org:7447");
        assert_eq!(host_port("127.0.0.1:7447"), "127.0.0.1:7447");
    }

    #[tokio::test]
    async fn prepares_on_loopback_even_with_a_scheme() {
        let p = Prepared::new("tls://127.0.0.1:7447").await.expect("prepare");
        assert!(p.candidate.ip().is_loopback());
        assert_eq!(p.server_ip, IpAddr::from([127, 0, 0, 1]));
        let m = p.call_media();
        assert_eq!(m.candidates, vec![p.candidate]);
        assert_eq!((m.key, m.key_commit), (None, Some(p.keys.commit_b64())), "a caller shows only its commitment");
        let m = p.join_media(&Joiner::new(UserId(1), &p.keys));
        assert_eq!((m.key, m.key_commit), (None, Some(p.keys.commit_b64())), "a newcomer too");
        let hidden = Prepared::new("127.0.0.1:7447").await.expect("prepare").with_relay_only(true).call_media();
        assert!(hidden.relay_only && hidden.candidates.is_empty(), "relay-only announces no address");
        assert!(matches!(Prepared::new("no-such-host.invalid:1").await, Err(SetupError::Resolve(_))));
    }

    #[test]
    fn peers_without_a_key_are_skipped() {
        assert!(peer_setup(&peer(None)).is_none());
        let s = peer_setup(&peer(Some("k"))).expect("setup");
        assert_eq!((s.user, s.key.as_str(), s.candidates.len()), (UserId(7), "k", 1));
    }

    #[test]
    fn relay_grants() {
        let g = RelayGrant::new(9000, 5, &[1; 16]);
        let r = relay_info(&g, IpAddr::from([10, 0, 0, 1])).expect("grant");
        assert_eq!((r.addr.port(), r.handle, r.key), (9000, 5, [1; 16]));
        let bad =
            RelayGrant { relay_port: "x".into(), relay_handle: "1".into(), relay_key: String::new(), relay_host: None };
        assert!(relay_info(&bad, IpAddr::from([10, 0, 0, 1])).is_none());
        // A grant from another node's relay names its host; that wins.
        let elsewhere = RelayGrant::new(9000, 5, &[1; 16]).with_host(Some(IpAddr::from([10, 0, 0, 2])));
        let r = relay_info(&elsewhere, IpAddr::from([10, 0, 0, 1])).expect("grant");
        assert_eq!(r.addr, SocketAddr::new(IpAddr::from([10, 0, 0, 2]), 9000));
    }

    #[test]
    fn events_for_this_call_only() {
        // A two-party call between Ann (1, me) and Ben (2), agreed.
        let (ann, ben) = (UserId(1), UserId(2));
        let call = CallId(1);
        let (ka, kb) = (CallKeys::generate().expect("keys"), CallKeys::generate().expect("keys"));
        let mut caller = babel_proto::agree::CallerAgreement::new(ann, &ka);
        let mut callee =
            CalleeAgreement::on_incoming(call, ann, Some(&caller.key_commit()), ben, &kb).expect("committed");
        let agreed = caller.on_accepted(call, ben, Some(&callee.key())).expect("answer");
        callee.on_reveal(ann, &caller.reveal().expect("reveal")).expect("reveal matches");
        let mut group = GroupAgreement::two_party(call, ann, ann, ben, &agreed);
        let mut pending = None;
        let mut steps = |ev: &ServerEvent| key_steps(&mut group, &mut pending, call, ev);
        // A newcomer that shows a key and no commitment is not taken in.
        let joined = ServerEvent::ParticipantJoined(PeerJoined { call_id: call, peer: peer(Some("k")), epoch: None });
        assert!(matches!(steps(&joined)[..], [KeyStep::End(_)]));
        let other =
            ServerEvent::ParticipantJoined(PeerJoined { call_id: CallId(2), peer: peer(Some("k")), epoch: None });
        assert!(steps(&other).is_empty());
        let left = ServerEvent::ParticipantLeft(call, UserId(7), babel_proto::Epoch(2));
        assert!(matches!(steps(&left)[..], [KeyStep::Media(Control::RemovePeer(UserId(7))), KeyStep::Code(_)]));
        let moved = ServerEvent::CallCandidates(CandidatesUpdate { call_id: call, id: UserId(7), candidates: vec![] });
        assert!(matches!(steps(&moved)[..], [KeyStep::Media(Control::Candidates(UserId(7), _))]));
        let grant = RelayGrant::new(9000, 5, &[1; 16]);
        let relay = ServerEvent::CallRelay(babel_proto::RelayMoved { call_id: call, relay: grant.clone() });
        assert!(matches!(&steps(&relay)[..], [KeyStep::Relay(g)] if *g == grant));
        let elsewhere = ServerEvent::CallRelay(babel_proto::RelayMoved { call_id: CallId(2), relay: grant });
        assert!(steps(&elsewhere).is_empty());
        assert!(steps(&ServerEvent::Ping).is_empty());
    }
}
