//! A whole Babel world on this machine, for `babel-gui --demo-call`, the
//! README's screenshots and the UI tests: a server on loopback with a
//! temporary database, people in every state of the contact list, and Ben,
//! a scripted contact who answers every call and talks (or, in the
//! [`Scene::Incoming`] demo, calls). The demo's window keeps its settings and
//! session in a home folder of its own (see `launch`).

use std::time::Duration;

use babel_call::{Answering, Call, CallError, CallEvent, Outgoing};
use babel_client::{Client, Event};
use babel_media::audio::AudioOutput;
use babel_media::engine::MediaConfig;
use babel_proto::{Presence, ServerEvent, SessionInfo, UserId};
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
        // A two-party call: answered with my key once the caller's
        // commitment is in (one without is declined), started once its key
        // matched. Invited into a group: commit, reveal once every member
        // sent a nonce. A failed exchange hangs up.
        let answering = match Answering::answer(&mut client, &incoming, false).await {
            Ok(a) => a,
            Err(CallError::Setup(e)) => return Err(e.into()),
            Err(_) => continue,
        };
        let Ok(settled) = answering.settle(&mut client, &mut events).await else { continue };
        let call = settled
            .start(&client, voice_config(), Box::new(SoundInput::endless(Sound::Voice)), Box::new(Discard))
            .await;
        talk(&mut client, call, &mut events).await;
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
    /// A conversation with Ben (read marks on mine), and unread messages
    /// from Cleo.
    Conversation,
}

/// Calls `callee` once they are online (seen from `client`'s contact list),
/// and talks if they answer, until the call ends. The caller's side of the
/// key exchange: committed in `/call`, revealed once the answer is in.
pub async fn ring_when_online(mut client: Client, callee: UserId) -> anyhow::Result<()> {
    let mut events = client.events().await?;
    wait_online(&mut client, callee).await?;
    let settled = match Outgoing::place(&mut client, callee, false).await?.wait_answer(&mut client, &mut events).await {
        Ok(s) => s,
        Err(CallError::Client(e)) => return Err(e.into()),
        // Not answered, or the exchange failed (the call was hung up).
        Err(_) => return Ok(()),
    };
    let call =
        settled.start(&client, voice_config(), Box::new(SoundInput::endless(Sound::Voice)), Box::new(Discard)).await;
    talk(&mut client, call, &mut events).await;
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

/// The media settings of a scripted person (a synthesized voice needs no
/// noise suppression).
fn voice_config() -> MediaConfig {
    MediaConfig { noise_suppression: false, ..MediaConfig::default() }
}

/// Follows a call until it ends, whoever ends it (or its keys are tampered
/// with), through joins and leaves; then hangs up if the server did not
/// end it.
async fn talk(client: &mut Client, mut call: Call, events: &mut babel_client::EventStream) {
    loop {
        match events.next().await {
            Some(Ok(Event::Server(ev))) => {
                let what = call.on_event(client, &ev).await;
                if what.iter().any(|e| matches!(e, CallEvent::Ended(_) | CallEvent::Broken(_))) {
                    break;
                }
            }
            Some(Ok(Event::Reconnected | Event::Disconnected)) => {}
            Some(Err(_)) | None => break,
        }
    }
    let _ = call.end(client).await;
}

/// The conversation scene's messages: Ann and Ben plan a call (Ben read
/// hers), and Cleo wrote twice (unread).
async fn converse(ann: &mut Client, ben: &mut Client, cleo: &mut Client) -> anyhow::Result<()> {
    let (ann_id, ben_id) = (ann.user_id().unwrap_or(UserId(0)), ben.user_id().unwrap_or(UserId(0)));
    let lines: [(bool, &str); 6] = [
        (false, "Hi Ann! Did the new microphone arrive?"),
        (true, "It did, this morning. Want to try it on a call?"),
        (false, "Sure. I'm free after lunch."),
        (true, "Perfect. 14:00?"),
        (false, "14:00 it is. I'll send you the slides first."),
        (true, "Thanks! Talk soon."),
    ];
    let mut last_ann = None;
    for (from_ann, text) in lines {
        if from_ann {
            last_ann = Some(ann.send_message(ben_id, text, None).await?.message_id);
        } else {
            ben.send_message(ann_id, text, None).await?;
        }
    }
    if let Some(id) = last_ann {
        ben.mark_read(ann_id, id).await?;
    }
    cleo.send_message(ann_id, "Are you coming on Friday?", None).await?;
    cleo.send_message(ann_id, "Bring the cable if you can.", None).await?;
    Ok(())
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
        if scene == Scene::Conversation {
            converse(&mut ann, &mut ben, &mut cleo).await?;
        }
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
            Scene::Conversation => {
                // Ben stays online (and answers a call).
                tokio::spawn(async move {
                    let _ = answering_machine(ben).await;
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
