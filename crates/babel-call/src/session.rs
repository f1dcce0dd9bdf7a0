//! One call, from the first ring to the hang-up, as every client program
//! runs it (the `babel` command, the desktop app, its demo, the quality
//! harness).
//!
//! ```text
//!  caller                                   callee
//!  Outgoing::place ── /call (commitment) ──▶ IncomingCall
//!                                           Answering::answer ── /answer (key)
//!  CallAccepted ──▶ Outgoing::accepted
//!                   ── /call_key (reveal) ─▶ Answering::on_event / settle
//!        │                                        │
//!     Settled ─────────── start ───────────── Settled
//!        ▼                                        ▼
//!      Call ◀── joins, leaves, nonces, reveals, moves ──▶ Call
//!            (Call::on_event)     ...   Call::end
//! ```
//!
//! A program keeps its own event loop (a terminal's keys, a window's
//! commands) and hands this module the server events about the call:
//! nothing here reads the event stream except [`Outgoing::wait_answer`]
//! and [`Answering::settle`], for programs with nothing else to do while
//! they wait. Every failure of the key exchange ends the call on the
//! server before it is returned; a program only says so.
//!
//! Invited into a group call, [`Answering::answer`] commits to my key and
//! reveals it once every member answered with a nonce; in a running call,
//! [`Call::on_event`] does the members' side of that (nonces, checking the
//! newcomer's reveal) and says when the code changes. Relay-only
//! ([`crate::setup::Prepared::relay_only`]) is a flag of `place` and
//! `answer`.

use babel_client::{Client, ClientError, Event, EventStream};
use babel_media::audio::{AudioInput, AudioOutput};
use babel_media::engine::{
    CallControl, CallSetup, CallStats, CallTask, Control, EndCause, MediaConfig, MediaError, PeerSetup, spawn_call,
};
use babel_proto::agree::{AgreeError, CalleeAgreement, CallerAgreement, GroupAgreement, Joiner};
use babel_proto::{CallId, EndReason, IncomingCall, Peer, RelayGrant, ServerEvent, User, UserId};
use tokio::time::Instant;

use crate::setup::{
    ExchangeError, KEY_EXCHANGE_WAIT, KeyStep, Prepared, SetupError, agreed_peer, key_steps, peer_setup,
};

/// Why a call could not be placed, answered or settled.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Keys or the socket could not be made.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The client is not signed in.
    #[error("not signed in")]
    NotSignedIn,
    /// A request failed (`/call`, `/answer`, `/call_key`: see
    /// `ClientError::refusal` for the server's word).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Rung into a two-party call whose caller did not commit to its key
    /// (or committed to something unreadable): the call was declined.
    #[error(transparent)]
    Refused(AgreeError),
    /// The key exchange did not finish: the call was hung up.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// My call stopped ringing unanswered (declined, rang out, ...).
    #[error("the call was not answered: {}", .0.as_str())]
    NotAnswered(EndReason),
}

/// A call I placed, ringing.
#[derive(Debug)]
pub struct Outgoing {
    call_id: CallId,
    me: UserId,
    prepared: Prepared,
    relay: RelayGrant,
    agreement: CallerAgreement,
}

impl Outgoing {
    /// Makes my keys and socket and rings `contact` (`/call`), committed
    /// to my key. `relay_only`: my addresses are never shown.
    pub async fn place(client: &mut Client, contact: UserId, relay_only: bool) -> Result<Outgoing, CallError> {
        let prepared = Prepared::new(client.addr()).await?.with_relay_only(relay_only);
        let me = client.user_id().ok_or(CallError::NotSignedIn)?;
        let agreement = CallerAgreement::new(me, &prepared.keys);
        let started = client.call(contact, prepared.call_media()).await?;
        Ok(Outgoing { call_id: started.call_id, me, prepared, relay: started.relay, agreement })
    }

    /// The call's id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// `/call_accepted` came for this call from `peer`: checks their key,
    /// reveals mine (`/call_key`). On failure the call is hung up.
    pub async fn accepted(mut self, client: &mut Client, peer: &Peer) -> Result<Settled, CallError> {
        let call = self.call_id;
        let settled = async {
            let agreed = self
                .agreement
                .on_accepted(call, peer.user.id, peer.media.key.as_deref())
                .map_err(ExchangeError::Agree)?;
            let reveal = self.agreement.reveal().ok_or(ExchangeError::Agree(AgreeError::NoKey))?;
            client.call_key(call, reveal).await?;
            Ok::<_, CallError>(agreed)
        }
        .await;
        let agreed = match settled {
            Ok(a) => a,
            Err(e) => {
                let _ = client.hangup(call).await;
                return Err(e);
            }
        };
        let group = GroupAgreement::two_party(call, self.me, self.me, peer.user.id, &agreed);
        Ok(Settled {
            call_id: call,
            prepared: self.prepared,
            relay: self.relay,
            peers: vec![agreed_peer(peer, &agreed)],
            participants: vec![peer.clone()],
            group,
        })
    }

    /// Waits on `events` until the call is answered (then as
    /// [`Outgoing::accepted`]) or stops ringing ([`CallError::NotAnswered`]).
    /// Other events are passed over.
    pub async fn wait_answer(self, client: &mut Client, events: &mut EventStream) -> Result<Settled, CallError> {
        let call = self.call_id;
        loop {
            match events.next().await {
                Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) if j.call_id == call => {
                    return self.accepted(client, &j.peer).await;
                }
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) if c == call => {
                    return Err(CallError::NotAnswered(r));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ExchangeError::StreamEnded.into()),
            }
        }
    }
}

/// What an answered call still waits for before voice starts.
#[derive(Debug)]
enum Waiting {
    /// The caller's key, to check against its commitment.
    Reveal(CalleeAgreement),
    /// Every member's nonce, before I reveal my key (an invite).
    Nonces(Joiner),
}

/// A call I answered, its key exchange under way.
#[derive(Debug)]
pub struct Answering {
    call_id: CallId,
    me: UserId,
    prepared: Prepared,
    relay: RelayGrant,
    waiting: Waiting,
    participants: Vec<Peer>,
    since: Instant,
}

/// What one event means for an answered call's exchange.
enum Step {
    Wait,
    /// The caller's key matched its commitment.
    Agreed(babel_proto::agree::Agreed),
    /// Every member's nonce came; I revealed my key.
    Revealed,
    Fail(CallError),
}

/// What one event did to an [`Answering`] call.
#[derive(Debug)]
pub enum Answered {
    /// Still waiting.
    Waiting(Answering),
    /// The exchange went through: voice can start.
    Settled(Settled),
    /// The exchange failed; the call was hung up.
    Failed(CallError),
}

impl Answering {
    /// Makes my keys and socket and answers `incoming` (`/answer`). Rung
    /// into a two-party call, the caller must have committed to its key
    /// (else the call is declined: [`CallError::Refused`]) and mine goes out
    /// now; rung into a group call, I commit and reveal once every member
    /// answered with a nonce.
    pub async fn answer(
        client: &mut Client,
        incoming: &IncomingCall,
        relay_only: bool,
    ) -> Result<Answering, CallError> {
        let prepared = Prepared::new(client.addr()).await?.with_relay_only(relay_only);
        let call = incoming.call_id;
        let me = client.user_id().ok_or(CallError::NotSignedIn)?;
        let waiting = if incoming.participants.len() >= 2 {
            Waiting::Nonces(Joiner::new(me, &prepared.keys))
        } else {
            let commit = incoming.media.key_commit.as_deref();
            match CalleeAgreement::on_incoming(call, incoming.caller.id, commit, me, &prepared.keys) {
                Ok(a) => Waiting::Reveal(a),
                Err(e) => {
                    let _ = client.decline_call(call).await;
                    return Err(CallError::Refused(e));
                }
            }
        };
        let media = match &waiting {
            Waiting::Reveal(a) => prepared.answer_media(a),
            Waiting::Nonces(j) => prepared.join_media(j),
        };
        let joined = client.accept_call(call, media).await?;
        let mut waiting = waiting;
        if let Waiting::Nonces(j) = &mut waiting {
            let members: Vec<(UserId, Option<&str>)> =
                joined.participants.iter().map(|p| (p.user.id, p.media.key.as_deref())).collect();
            j.on_joined(call, joined.epoch.0, &members);
        }
        Ok(Answering {
            call_id: call,
            me,
            prepared,
            relay: joined.relay,
            waiting,
            participants: joined.participants,
            since: Instant::now(),
        })
    }

    /// The call's id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// When I answered (the exchange should be over within
    /// [`KEY_EXCHANGE_WAIT`]).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The others in the call, as `/answer` listed them.
    pub fn participants(&self) -> &[Peer] {
        &self.participants
    }

    /// One server event: the caller's reveal, a member's nonce, or the
    /// call's end; other events leave it waiting.
    pub async fn on_event(mut self, client: &mut Client, ev: &ServerEvent) -> Answered {
        let call = self.call_id;
        let step = match (ev, &mut self.waiting) {
            (ServerEvent::CallEnded(c, r), _) if *c == call => {
                return Answered::Failed(ExchangeError::Ended(r.as_str()).into());
            }
            (ServerEvent::CallKey(k), Waiting::Reveal(a)) if k.call_id == call => match a.on_reveal(k.id, &k.key) {
                Ok(agreed) => Step::Agreed(agreed),
                Err(e) => Step::Fail(ExchangeError::Agree(e).into()),
            },
            (ServerEvent::CallNonce(n), Waiting::Nonces(j)) if n.call_id == call => match j.on_nonce(n.id, &n.nonce) {
                Some(key) => match client.call_key(call, key).await {
                    Ok(()) => Step::Revealed,
                    Err(e) => Step::Fail(e.into()),
                },
                None => Step::Wait,
            },
            _ => Step::Wait,
        };
        let Answering { call_id, me, prepared, relay, waiting, participants, since } = self;
        let (peers, group) = match step {
            Step::Wait => {
                return Answered::Waiting(Answering { call_id, me, prepared, relay, waiting, participants, since });
            }
            // The caller's key matched its commitment.
            Step::Agreed(agreed) => {
                let peers = participants.iter().filter(|p| p.user.id == agreed.peer).map(|p| agreed_peer(p, &agreed));
                (peers.collect(), GroupAgreement::two_party(call, me, agreed.peer, me, &agreed))
            }
            // I revealed my key to the group.
            Step::Revealed => {
                let group = match waiting {
                    Waiting::Nonces(j) => j.into_group(),
                    Waiting::Reveal(_) => None,
                };
                match group {
                    Some(g) => (participants.iter().filter_map(peer_setup).collect(), g),
                    None => {
                        let _ = client.hangup(call).await;
                        return Answered::Failed(ExchangeError::NoMembers.into());
                    }
                }
            }
            Step::Fail(e) => {
                let _ = client.hangup(call).await;
                return Answered::Failed(e);
            }
        };
        Answered::Settled(Settled { call_id, prepared, relay, peers, participants, group })
    }

    /// Waits on `events` (at most [`KEY_EXCHANGE_WAIT`]) until the exchange
    /// settles or fails; on failure the call is hung up.
    pub async fn settle(self, client: &mut Client, events: &mut EventStream) -> Result<Settled, CallError> {
        let call = self.call_id;
        let deadline = self.since + KEY_EXCHANGE_WAIT;
        let awaited = match self.waiting {
            Waiting::Reveal(_) => "the caller never revealed its key",
            Waiting::Nonces(_) => "the others never answered my key commitment",
        };
        let mut state = self;
        loop {
            let ev = match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => Err(ExchangeError::TimedOut(awaited)),
                Ok(Some(Ok(Event::Server(ev)))) => Ok(ev),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => Err(ExchangeError::Client(e)),
                Ok(None) => Err(ExchangeError::StreamEnded),
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    let _ = client.hangup(call).await;
                    return Err(e.into());
                }
            };
            match state.on_event(client, &ev).await {
                Answered::Waiting(s) => state = s,
                Answered::Settled(s) => return Ok(s),
                Answered::Failed(e) => return Err(e),
            }
        }
    }
}

/// A call whose key exchange went through: everything voice needs.
#[derive(Debug)]
pub struct Settled {
    call_id: CallId,
    prepared: Prepared,
    relay: RelayGrant,
    peers: Vec<PeerSetup>,
    participants: Vec<Peer>,
    group: GroupAgreement,
}

impl Settled {
    /// The call's id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The code people compare.
    pub fn code(&self) -> &str {
        self.group.code()
    }

    /// The others in the call, as the server listed them.
    pub fn participants(&self) -> &[Peer] {
        &self.participants
    }

    /// The others as people (name, email).
    pub fn users(&self) -> Vec<User> {
        self.participants.iter().map(|p| p.user.clone()).collect()
    }

    /// The others as the engine will reach them (agreed keys, addresses).
    pub fn peers(&self) -> &[PeerSetup] {
        &self.peers
    }

    /// Opens the call channel (`None` if it cannot be opened: voice goes
    /// on over UDP).
    pub async fn open_channel(&self, client: &Client) -> Option<babel_client::CallChannel> {
        client.connect_call(self.call_id).await.ok()
    }

    /// The engine's set-up with `channel`, and the call's keys to follow:
    /// for a program that runs the engine itself (the quality harness).
    pub fn into_setup(self, channel: Option<babel_client::CallChannel>) -> (CallSetup, GroupAgreement) {
        let code = self.group.code().to_owned();
        (self.prepared.into_call(self.peers, &self.relay, channel, code), self.group)
    }

    /// Opens the call channel and starts the media.
    pub async fn start(
        self,
        client: &Client,
        cfg: MediaConfig,
        input: Box<dyn AudioInput>,
        output: Box<dyn AudioOutput>,
    ) -> Call {
        let channel = self.open_channel(client).await;
        self.start_with_channel(channel, cfg, input, output)
    }

    /// Starts the media with a channel opened by [`Settled::open_channel`]
    /// (or none).
    pub fn start_with_channel(
        self,
        channel: Option<babel_client::CallChannel>,
        cfg: MediaConfig,
        input: Box<dyn AudioInput>,
        output: Box<dyn AudioOutput>,
    ) -> Call {
        let (call_id, server_ip) = (self.call_id, self.prepared.server_ip);
        let (setup, group) = self.into_setup(channel);
        let mut call = Call::spawn(call_id, setup, group, cfg, input, output);
        call.server_ip = Some(server_ip);
        call
    }
}

/// How a call's media task ended: its statistics and why, an engine
/// error, or a task that panicked or was cancelled.
pub type MediaResult = Result<Result<(CallStats, EndCause), MediaError>, tokio::task::JoinError>;

/// What a server event changed in a running call.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// Someone joined or left: the code is now this (read it again).
    CodeChanged(String),
    /// The server ended the call; the media is stopping.
    Ended(EndReason),
    /// The key exchange was tampered with (a second answer, a reveal that
    /// does not match, ...): the media is stopping; [`Call::end`] hangs up.
    Broken(AgreeError),
}

/// A call with voice flowing.
#[derive(Debug)]
pub struct Call {
    call_id: CallId,
    control: CallControl,
    task: CallTask,
    result: Option<MediaResult>,
    group: GroupAgreement,
    /// A newcomer between its commitment and its reveal.
    pending: Option<Peer>,
    started: Instant,
    ended_by_server: Option<EndReason>,
    broken: Option<AgreeError>,
    /// The server's address as this client reaches it: where a moved
    /// relay is when its grant names no host.
    server_ip: Option<std::net::IpAddr>,
}

impl Call {
    /// Starts the media of a call whose keys are `group`.
    pub fn spawn(
        call_id: CallId,
        setup: CallSetup,
        group: GroupAgreement,
        cfg: MediaConfig,
        input: Box<dyn AudioInput>,
        output: Box<dyn AudioOutput>,
    ) -> Call {
        let (control, task) = spawn_call(setup, cfg, input, output);
        Call {
            call_id,
            control,
            task,
            result: None,
            group,
            pending: None,
            started: Instant::now(),
            ended_by_server: None,
            broken: None,
            server_ip: None,
        }
    }

    /// The call's id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The code people compare, as it is now.
    pub fn code(&self) -> &str {
        self.group.code()
    }

    /// The engine's handles (statistics, commands, stop).
    pub fn control(&self) -> &CallControl {
        &self.control
    }

    /// The statistics now.
    pub fn snapshot(&self) -> CallStats {
        self.control.snapshot()
    }

    /// A command to the engine (mute, gains, ...).
    pub fn send(&self, c: Control) {
        self.control.send(c);
    }

    /// When voice started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Why the server ended the call, if it did.
    pub fn ended_by_server(&self) -> Option<EndReason> {
        self.ended_by_server
    }

    /// How the key exchange was tampered with, if it was.
    pub fn broken(&self) -> Option<&AgreeError> {
        self.broken.as_ref()
    }

    /// Rings `contact` into this call (`/invite`). Once they answer,
    /// [`Call::on_event`] takes them in: my nonce for their commitment,
    /// their reveal checked, a new code.
    pub async fn invite(&self, client: &mut Client, contact: UserId) -> Result<(), ClientError> {
        client.invite(self.call_id, contact).await
    }

    /// Stops the media (I hang up); [`Call::end`] tells the server.
    pub fn hang_up(&self) {
        self.control.stop.cancel();
    }

    /// One server event: joins and leaves (the keys and the code follow,
    /// the engine adds or drops the peer), a newcomer's commitment (my
    /// nonce goes out) and reveal (checked), moved addresses, the call's
    /// end. Events about other calls change nothing.
    pub async fn on_event(&mut self, client: &mut Client, ev: &ServerEvent) -> Vec<CallEvent> {
        let call = self.call_id;
        if let ServerEvent::CallEnded(c, reason) = ev {
            if *c == call {
                self.ended_by_server = Some(*reason);
                self.control.stop.cancel();
                return vec![CallEvent::Ended(*reason)];
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        for step in key_steps(&mut self.group, &mut self.pending, call, ev) {
            match step {
                KeyStep::SendNonce(n) => {
                    let _ = client.call_nonce(call, n).await;
                }
                KeyStep::Media(c) => self.control.send(c),
                KeyStep::Code(c) => {
                    self.control.send(Control::Code(c.clone()));
                    out.push(CallEvent::CodeChanged(c));
                }
                KeyStep::Relay(grant) => {
                    // A grant that names no host is on the server's address.
                    let ip = grant.relay_host.as_deref().and_then(|h| h.parse().ok()).or(self.server_ip);
                    match ip.and_then(|ip| crate::setup::relay_info(&grant, ip)) {
                        Some(relay) => {
                            tracing::info!(call = %call, relay = %relay.addr, "the call's relay moved");
                            self.control.send(Control::Relay(relay));
                        }
                        None => tracing::warn!(call = %call, "a moved relay's grant does not read"),
                    }
                }
                KeyStep::End(e) => {
                    tracing::warn!(call = %call, error = %e, "key exchange attacked");
                    self.control.stop.cancel();
                    self.broken = Some(e.clone());
                    out.push(CallEvent::Broken(e));
                    break;
                }
            }
        }
        out
    }

    /// Resolves once the media stopped by itself (the input ran out, the
    /// others vanished) or was stopped. Cancel-safe: for `select!`.
    pub async fn media_ended(&mut self) {
        if self.result.is_none() {
            let r = (&mut self.task).await;
            self.result = Some(r);
        }
    }

    /// Ends the call: tells the server (unless it ended the call), stops
    /// the media and waits for it.
    pub async fn end(self, client: &mut Client) -> MediaResult {
        if self.ended_by_server.is_none() {
            let _ = client.hangup(self.call_id).await;
        }
        self.stop().await
    }

    /// Stops the media and waits for it, without a word to the server (one
    /// that is out of reach; [`Call::end`] otherwise).
    pub async fn stop(mut self) -> MediaResult {
        self.control.stop.cancel();
        self.media_ended().await;
        match self.result.take() {
            Some(r) => r,
            None => (&mut self.task).await,
        }
    }
}
