//! A whole Babel world on this machine, for `babel-gui --demo-call`, the
//! README's screenshots and the UI tests: a server on loopback with a
//! temporary database, people in every state of the contact list, and Ben,
//! a scripted contact who answers every call and talks (or, in the
//! [`Scene::Incoming`] demo, calls). The demo's window keeps its settings and
//! session in a home folder of its own (see `launch`).

use std::time::Duration;

use babel_call::setup::{
    KeyStep, Prepared, agreed_peer, await_reveal, callee_settled, join_group, key_steps, peer_setup,
};
use babel_client::{Client, Event};
use babel_media::audio::AudioOutput;
use babel_media::engine::{CallSetup, MediaConfig, spawn_call};
use babel_proto::agree::{CalleeAgreement, CallerAgreement, GroupAgreement, Joiner};
use babel_proto::{CallId, Presence, ServerEvent, SessionInfo, UserId};
use babel_server::Embedded;

use crate::ringtone::{Sound, SoundInput};

/// The password of every demo account.
pub const PASSWORD: &str = "demo-password-1";

/// A loudspeaker that plays nothing.
#[derive(Debug)]
struct Discard;

impl AudioOutput for Discard {
    fn write(&mut self, _frame: &[f32]) {}
}

/// A server on loopback (temporary database) for demos and tests.
#[derive(Debug)]
pub struct LocalServer {
    /// The running server.
    pub server: Embedded,
    /// Its address (`127.0.0.1:port`).
    pub addr: String,
}

impl LocalServer {
    /// Starts one on 127.0.0.1, port chosen by the system. `fast_hashing`:
    /// cheap password hashing (tests).
    pub async fn start(fast_hashing: bool) -> anyhow::Result<LocalServer> {
        let mut builder = Embedded::builder();
        if fast_hashing {
            builder = builder.fast_hashing();
        }
        let server = builder.start().await?;
        let addr = server.addr().to_string();
        Ok(LocalServer { server, addr })
    }

    /// Stops the server (its connections close) and removes its database.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// Answers every call that rings for `client`, sending a voice-like signal
/// until the call ends. Runs until the event stream ends.
pub async fn answering_machine(mut client: Client) -> anyhow::Result<()> {
    let mut events = client.events().await?;
    loop {
        let incoming = match events.next().await {
            Some(Ok(Event::Server(ServerEvent::IncomingCall(c)))) => c,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        };
        let prepared = Prepared::new(client.addr()).await?;
        let call_id = incoming.call_id;
        // A two-party call: answer with my key once the caller's commitment
        // is in (refuse one without), start once its key matched. Invited
        // into a group: commit, reveal once every member sent a nonce.
        let me = client.user_id().unwrap_or(UserId(0));
        let settled = if incoming.participants.len() >= 2 {
            let joiner = Joiner::new(me, &prepared.keys);
            let Ok(joined) = client.accept_call(call_id, prepared.join_media(&joiner)).await else { continue };
            join_group(&mut client, &mut events, call_id, &joined, joiner)
                .await
                .ok()
                .map(|group| (joined.participants.iter().filter_map(peer_setup).collect(), group, joined))
        } else {
            let commit = incoming.media.key_commit.as_deref();
            let Ok(mut a) = CalleeAgreement::on_incoming(call_id, incoming.caller.id, commit, me, &prepared.keys)
            else {
                let _ = client.decline_call(call_id).await;
                continue;
            };
            let Ok(joined) = client.accept_call(call_id, prepared.answer_media(&a)).await else { continue };
            await_reveal(&mut events, call_id, &mut a).await.ok().map(|agreed| {
                let (peers, group) = callee_settled(call_id, me, &joined, &agreed);
                (peers, group, joined)
            })
        };
        let Some((peers, group, joined)) = settled else {
            let _ = client.hangup(call_id).await;
            continue;
        };
        let channel = client.connect_call(call_id).await.ok();
        let setup = prepared.into_call(peers, &joined.relay, channel, group.code().to_owned());
        talk(&mut client, call_id, setup, group, &mut events).await;
    }
}

/// What happens in the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scene {
    /// I call Ben as soon as he shows online; he answers and talks.
    #[default]
    Call,
    /// Ben calls me as soon as I am online (and talks if I answer).
    Incoming,
    /// The server stops a few seconds after I am online: the connection is lost.
    LostConnection,
}

/// Calls `callee` once they are online (seen from `client`'s contact list),
/// and talks if they answer, until the call ends. The caller's side of the
/// key exchange: committed in `/call`, revealed once the answer is in.
pub async fn ring_when_online(mut client: Client, callee: UserId) -> anyhow::Result<()> {
    let mut events = client.events().await?;
    wait_online(&mut client, callee).await?;
    let me = client.user_id().unwrap_or(UserId(0));
    let prepared = Prepared::new(client.addr()).await?;
    let mut agreement = CallerAgreement::new(me, &prepared.keys);
    let started = client.call(callee, prepared.call_media()).await?;
    let call_id = started.call_id;
    let accepted = loop {
        match events.next().await {
            Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) if j.call_id == call_id => break j.peer,
            Some(Ok(Event::Server(ServerEvent::CallEnded(c, _)))) if c == call_id => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        }
    };
    let agreed = match agreement.on_accepted(call_id, accepted.user.id, accepted.media.key.as_deref()) {
        Ok(a) => a,
        Err(_) => {
            let _ = client.hangup(call_id).await;
            return Ok(());
        }
    };
    let Some(reveal) = agreement.reveal() else { return Ok(()) };
    client.call_key(call_id, reveal).await?;
    let group = GroupAgreement::two_party(call_id, me, me, accepted.user.id, &agreed);
    let channel = client.connect_call(call_id).await.ok();
    let setup =
        prepared.into_call(vec![agreed_peer(&accepted, &agreed)], &started.relay, channel, group.code().to_owned());
    talk(&mut client, call_id, setup, group, &mut events).await;
    Ok(())
}

/// Waits (up to a minute) until `who` shows online in `client`'s contacts.
async fn wait_online(client: &mut Client, who: UserId) -> anyhow::Result<()> {
    for _ in 0..300 {
        let online = client.contacts().await?.iter().any(|c| c.user.id == who && c.status == Presence::Online);
        if online {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("user {} never came online", who.0)
}

/// Sends a voice-like signal in a call until it ends, whoever ends it (or
/// its keys are tampered with), following joins and leaves.
async fn talk(
    client: &mut Client,
    call_id: CallId,
    setup: CallSetup,
    mut group: GroupAgreement,
    events: &mut babel_client::EventStream,
) {
    let cfg = MediaConfig { noise_suppression: false, ..MediaConfig::default() };
    let (control, task) = spawn_call(setup, cfg, Box::new(SoundInput::endless(Sound::Voice)), Box::new(Discard));
    let mut pending = None;
    'call: loop {
        match events.next().await {
            Some(Ok(Event::Server(ev))) => {
                if let ServerEvent::CallEnded(c, _) = &ev {
                    if *c == call_id {
                        break;
                    }
                }
                for step in key_steps(&mut group, &mut pending, call_id, &ev) {
                    match step {
                        KeyStep::SendNonce(n) => {
                            let _ = client.call_nonce(call_id, n).await;
                        }
                        KeyStep::Media(c) => control.send(c),
                        KeyStep::Code(c) => control.send(babel_media::engine::Control::Code(c)),
                        KeyStep::End(_) => {
                            let _ = client.hangup(call_id).await;
                            break 'call;
                        }
                    }
                }
            }
            Some(Ok(Event::Reconnected | Event::Disconnected)) => {}
            Some(Err(_)) | None => break,
        }
    }
    control.stop.cancel();
    let _ = task.await;
}

/// The demo world.
#[derive(Debug)]
pub struct Demo {
    /// What happens in it.
    pub scene: Scene,
    /// The server's address (`127.0.0.1:port`).
    pub addr: String,
    /// The server, until the scene stops it.
    _local: Option<LocalServer>,
    /// The session of the person at the window (Ann).
    pub me: SessionInfo,
    /// Ben, who answers calls.
    pub ben: UserId,
    /// Clients kept connected so their owners show online.
    _online: Vec<Client>,
    _events: Vec<babel_client::EventStream>,
}

impl Demo {
    /// Sets up the world: Ann (at the window) with contacts Ben (online,
    /// answers calls, or calls her in [`Scene::Incoming`]), Cleo (online),
    /// Dan (offline), a request of hers to Gus (pending), and a request from
    /// Eve waiting for her answer.
    pub async fn start(scene: Scene) -> anyhow::Result<Demo> {
        let local = LocalServer::start(true).await?;
        let addr = local.addr.clone();
        let account = |email: &'static str, name: &'static str| {
            let addr = addr.clone();
            async move {
                let mut c = Client::connect(addr).await?;
                let s = c.create(email, PASSWORD, Some(name)).await?;
                Ok::<_, anyhow::Error>((c, s))
            }
        };
        let (mut ann, me) = account("ann@demo.babel", "Ann").await?;
        let (mut ben, b) = account("ben@demo.babel", "Ben").await?;
        let (mut cleo, c) = account("cleo@demo.babel", "Cleo").await?;
        let (mut dan, d) = account("dan@demo.babel", "Dan").await?;
        let (_gus, _) = account("gus@demo.babel", "Gus").await?;
        let (mut eve, _) = account("eve@demo.babel", "Eve").await?;
        for (who, id) in [(&mut ben, b.id), (&mut cleo, c.id), (&mut dan, d.id)] {
            who.add_contact(&me.email).await?;
            ann.accept_contact(id).await?;
            let _ = id;
        }
        ann.add_contact("gus@demo.babel").await?;
        eve.add_contact(&me.email).await?;
        dan.logout().await?;
        // Ann's own session is the window's: this client goes away.
        drop(ann);
        let cleo_events = cleo.events().await?;
        let ben_id = b.id;
        let ann_id = me.id;
        let mut local = Some(local);
        match scene {
            Scene::Call => {
                tokio::spawn(async move {
                    if let Err(e) = answering_machine(ben).await {
                        tracing::warn!(error = %e, "demo: Ben stopped answering");
                    }
                });
            }
            Scene::Incoming => {
                tokio::spawn(async move {
                    if let Err(e) = ring_when_online(ben, ann_id).await {
                        tracing::warn!(error = %e, "demo: Ben did not call");
                    }
                });
            }
            Scene::LostConnection => {
                // Ben stays online (answering) until the server goes.
                tokio::spawn(async move {
                    let _ = answering_machine(ben).await;
                });
                let Some(server) = local.take() else { anyhow::bail!("no server") };
                let mut watcher = Client::connect(addr.clone()).await?;
                watcher.login("cleo@demo.babel", PASSWORD).await?;
                tokio::spawn(async move {
                    // Once Ann's window is up (Cleo sees her online) and has
                    // shown its contacts for a moment, the server stops.
                    if let Err(e) = wait_online(&mut watcher, ann_id).await {
                        tracing::warn!(error = %e, "demo: Ann never came online");
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    drop(watcher);
                    server.stop().await;
                });
            }
        }
        // Give presence a moment to settle before the window reads it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Demo { scene, addr, _local: local, me, ben: ben_id, _online: vec![cleo], _events: vec![cleo_events] })
    }
}
