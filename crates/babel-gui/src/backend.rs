//! The backend: a thread of its own with a tokio runtime, running
//! `babel-client` (requests, the event stream) and the media engine (calls,
//! the ringtone, device checks). The window sends [`Command`]s and reads
//! [`Update`]s; every update wakes the window. Nothing here ever blocks the
//! window, and the window never waits for the backend.
//!
//! The call flow is `babel-call`'s, as in the `babel` command: an
//! [`Outgoing`] call until it is answered, an [`Answering`] one until its
//! key exchange settles (this loop hands it the reveal and the nonces as
//! they come), then a running [`Call`] that is handed the server's events
//! about it (joins, leaves, codes, tampering).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use babel_call::setup::{ExchangeError, KEY_EXCHANGE_WAIT};
use babel_call::{Answered, Answering, Call, CallError, CallEvent, Outgoing, Settled};
use babel_client::{Client, ClientError, Endpoint, Event, EventStream};
use babel_media::audio::{AudioInput, AudioOutput, SilentInput, level_db};
use babel_media::codec::FrameMs;
use babel_media::engine::{CallStats, Control, EndCause, MediaError, StopFlag};
use babel_proto::agree::AgreeError;
use babel_proto::{CallId, ContactRef, IncomingCall, ReplyError, ServerEvent, SessionInfo, User, UserId};
use tokio::sync::mpsc;

mod social;

use crate::model::end_reason_text;
use crate::msg::{Command, PeerLevel, StatsSnapshot, Update};
use crate::ringtone::{Sound, SoundInput};
use crate::settings::{Home, SavedSession, Settings};

/// Where audio comes from and goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioMode {
    /// The real microphone and loudspeaker (cpal), as people use it.
    Devices,
    /// No devices: a synthesized voice as the microphone and a loudspeaker
    /// that only measures (tests, demos, machines without sound).
    Synthetic,
}

/// How the backend is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where settings and the session are kept.
    pub home: Home,
    /// Audio devices or synthetic audio.
    pub audio: AudioMode,
}

/// A loudspeaker that plays nothing (synthetic audio).
#[derive(Debug, Default)]
struct NullOutput;

impl AudioOutput for NullOutput {
    fn write(&mut self, _frame: &[f32]) {}
}

/// Wakes the window when an update is waiting.
type Waker = Arc<Mutex<Option<Box<dyn Fn() + Send>>>>;

/// The window's side: send commands, take updates.
pub struct BackendHandle {
    commands: mpsc::UnboundedSender<Command>,
    updates: std::sync::mpsc::Receiver<Update>,
    waker: Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle").finish_non_exhaustive()
    }
}

impl BackendHandle {
    /// Starts the backend thread.
    pub fn start(options: Options) -> std::io::Result<BackendHandle> {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let waker: Waker = Arc::default();
        let w = waker.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("babel-gui-backend")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new().name("babel-gui-backend".into()).spawn(move || {
            let out = Out { tx: up_tx, waker: w };
            runtime.block_on(Backend::new(options, out).run(cmd_rx));
            // Media tasks and device threads end with the runtime.
            runtime.shutdown_timeout(Duration::from_secs(2));
        })?;
        Ok(BackendHandle { commands: cmd_tx, updates: up_rx, waker, thread: Some(thread) })
    }

    /// Sets what wakes the window (its `request_repaint`).
    pub fn set_waker(&self, wake: impl Fn() + Send + 'static) {
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(wake));
    }

    /// Sends a command (ignored once the backend has stopped).
    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// The updates waiting, oldest first.
    pub fn drain(&self) -> Vec<Update> {
        self.updates.try_iter().collect()
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The backend's way out to the window.
struct Out {
    tx: std::sync::mpsc::Sender<Update>,
    waker: Waker,
}

impl Out {
    fn send(&self, u: Update) {
        let _ = self.tx.send(u);
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            w();
        }
    }
}

/// A client error in words a person understands. `signing_in`: a 401 means
/// a wrong password rather than an ended session.
pub fn describe(e: &ClientError, server: &str, signing_in: bool) -> String {
    match e {
        ClientError::Connect { .. } => {
            format!("Cannot reach the server at {server}. Check the address and that the server is running.")
        }
        ClientError::NoServer(_) if e.is_unreachable() => format!(
            "Cannot reach any of the servers {}. Check the addresses and that a server is running.",
            server.replace(',', ", ")
        ),
        ClientError::Disconnected => "The connection to the server was lost. Try again.".into(),
        ClientError::Timeout(_) => "The server did not answer in time. Try again.".into(),
        ClientError::Server(ReplyError::Unauthorized) if signing_in => "Wrong email or password.".into(),
        ClientError::Server(ReplyError::Unauthorized) => "Your session has ended: sign in again.".into(),
        ClientError::Server(ReplyError::Refused(r)) => sentence(r),
        ClientError::Server(ReplyError::BadRequest(Some(r))) => sentence(r),
        other => sentence(&other.to_string()),
    }
}

/// "an account … exists" → "An account … exists."
fn sentence(s: &str) -> String {
    let mut c = s.trim().chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => return "Something went wrong.".into(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// My call as the backend tracks it.
enum CallState {
    /// I rang someone; waiting for them to answer.
    Outgoing { callee: User, ringing: Box<Outgoing> },
    /// I answered; waiting for the caller's key (two-party) or for every
    /// member's nonce (joining a group call), at most [`KEY_EXCHANGE_WAIT`].
    Answering(Box<Answering>),
    /// Voice flows.
    Active(Box<Call>),
}

impl CallState {
    fn id(&self) -> CallId {
        match self {
            CallState::Outgoing { ringing, .. } => ringing.call_id(),
            CallState::Answering(a) => a.call_id(),
            CallState::Active(c) => c.call_id(),
        }
    }
}

/// A change to one contact.
#[derive(Debug, Clone, Copy)]
enum ContactOp {
    Accept,
    Decline,
    Remove,
}

/// A sound playing on the loudspeaker until stopped or finished.
struct Player {
    stop: StopFlag,
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How a call's media task ended.
type MediaResult = Result<Result<(CallStats, EndCause), MediaError>, String>;

/// What the backend loop woke up for.
enum Step {
    Command(Option<Command>),
    Event(Option<babel_client::Result<Event>>),
    /// The event connection went down (`Some(false)`) or up; `None`: the
    /// stream has ended.
    Connection(Option<bool>),
    MediaEnded,
    Tick,
}

struct Backend {
    home: Home,
    audio: AudioMode,
    settings: Settings,
    out: Arc<Out>,
    client: Option<Client>,
    events: Option<EventStream>,
    /// Whether the event connection is up, as the stream tells it.
    connection: Option<tokio::sync::watch::Receiver<bool>>,
    call: Option<CallState>,
    ringing: HashMap<CallId, IncomingCall>,
    /// Desktop notifications of ringing calls (`None`: being sent).
    notified: Arc<Mutex<HashMap<CallId, Option<u32>>>>,
    ringer: Option<Player>,
    mic_check: Option<Player>,
    tone: Option<Player>,
}

async fn next_event(events: &mut Option<EventStream>) -> Option<babel_client::Result<Event>> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

async fn connection_change(up: &mut Option<tokio::sync::watch::Receiver<bool>>) -> Option<bool> {
    match up {
        Some(r) => match r.changed().await {
            Ok(()) => Some(*r.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn media_end(call: &mut Option<CallState>) {
    match call {
        Some(CallState::Active(c)) => c.media_ended().await,
        _ => std::future::pending().await,
    }
}

impl Backend {
    fn new(options: Options, out: Out) -> Self {
        let settings = options.home.load_settings().unwrap_or_default();
        Self {
            home: options.home,
            audio: options.audio,
            settings,
            out: Arc::new(out),
            client: None,
            events: None,
            connection: None,
            call: None,
            ringing: HashMap::new(),
            notified: Arc::default(),
            ringer: None,
            mic_check: None,
            tone: None,
        }
    }

    fn send(&self, u: Update) {
        self.out.send(u);
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let step = tokio::select! {
                c = commands.recv() => Step::Command(c),
                e = next_event(&mut self.events) => Step::Event(e),
                c = connection_change(&mut self.connection) => Step::Connection(c),
                () = media_end(&mut self.call) => Step::MediaEnded,
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Command(None | Some(Command::Shutdown)) => break,
                Step::Command(Some(c)) => self.command(c).await,
                Step::Event(e) => self.event(e).await,
                Step::Connection(None) => self.connection = None,
                // Back up: the `Reconnected` event that follows re-reads
                // the contacts and says so.
                Step::Connection(Some(true)) => {}
                Step::Connection(Some(false)) => self.send(Update::ConnectionLost),
                Step::MediaEnded => self.media_ended().await,
                Step::Tick => {
                    self.key_exchange_deadline().await;
                    self.tick();
                }
            }
        }
        // Closing the window hangs up, but never waits long for a server
        // that has gone away.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.leave_call()).await;
    }

    /// The server address (or a cluster's list) with the trust policy for
    /// `tls://`: first-use fingerprints are kept in `known_servers` in the
    /// home folder, unless settings name a cluster authority to trust alone.
    fn endpoint(&self, server: &str) -> Result<Endpoint, ClientError> {
        let tls = self.settings.tls_options(self.home.dir()).map_err(ClientError::Address)?;
        Endpoint::with_tls(server, Arc::new(tls))
    }

    fn addr(&self) -> String {
        self.client.as_ref().map(|c| c.addr().to_owned()).unwrap_or_default()
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::SignIn { server, email, password } => {
                self.reset().await;
                let endpoint = self.endpoint(&server);
                let r = async {
                    let mut c = Client::connect_to(endpoint?).await?;
                    let s = c.login(&email, &password).await?;
                    Ok::<_, ClientError>((c, s))
                }
                .await;
                match r {
                    Ok((c, s)) => self.signed_in(c, s).await,
                    Err(e) => self.send(Update::SignInFailed(describe(&e, &server, true))),
                }
            }
            Command::Register { server, email, password, name } => {
                self.reset().await;
                let endpoint = self.endpoint(&server);
                let r = async {
                    let mut c = Client::connect_to(endpoint?).await?;
                    let s = c.create(&email, &password, name.as_deref()).await?;
                    Ok::<_, ClientError>((c, s))
                }
                .await;
                match r {
                    Ok((c, s)) => self.signed_in(c, s).await,
                    Err(e) => self.send(Update::SignInFailed(describe(&e, &server, true))),
                }
            }
            Command::Resume(saved) => {
                self.reset().await;
                let endpoint = self.endpoint(&saved.server);
                let resumed = match endpoint {
                    Ok(e) => Client::resume_at(e, saved.info.clone()).await,
                    Err(e) => Err(e),
                };
                match resumed {
                    Ok(c) => self.signed_in(c, saved.info).await,
                    Err(e) => self.send(Update::SignInFailed(describe(&e, &saved.server, false))),
                }
            }
            Command::SignOut => {
                self.leave_call().await;
                if let Some(c) = self.client.as_mut() {
                    let _ = c.logout().await;
                }
                self.reset().await;
                if let Err(e) = self.home.forget_session() {
                    self.send(Update::Error(format!("Could not forget the session: {e}")));
                }
                self.send(Update::SignedOut);
            }
            Command::AddContact(email) => {
                let r = match self.client.as_mut() {
                    Some(c) => c.add_contact(&email).await,
                    None => return,
                };
                match r {
                    Ok(()) => {
                        self.send(Update::ContactRequestSent(email));
                        self.refresh().await;
                    }
                    Err(e) => self.request_failed(&e),
                }
            }
            Command::AcceptContact(id) => self.contact_op(ContactOp::Accept, id).await,
            Command::DeclineContact(id) => self.contact_op(ContactOp::Decline, id).await,
            Command::RemoveContact(id) => self.contact_op(ContactOp::Remove, id).await,
            Command::Call(id) => self.call(id).await,
            Command::AcceptCall(id) => self.accept(id).await,
            Command::DeclineCall(id) => {
                self.ringing.remove(&id);
                self.update_ringer();
                if let Some(c) = self.client.as_mut() {
                    let _ = c.decline_call(id).await;
                }
            }
            Command::Hangup => self.leave_call().await,
            Command::Invite(id) => {
                let Some(call_id) = self.call.as_ref().map(CallState::id) else { return };
                let r = match self.client.as_mut() {
                    Some(c) => c.invite(call_id, id).await,
                    None => return,
                };
                if let Err(e) = r {
                    self.request_failed(&e);
                }
            }
            Command::Mute(m) => self.control(Control::Mute(m)),
            Command::InputGain(g) => {
                self.settings.input_gain = g;
                self.control(Control::InputGain(g));
            }
            Command::OutputGain(g) => {
                self.settings.output_gain = g;
                self.control(Control::OutputGain(g));
            }
            Command::SaveSettings(s) => {
                self.control(Control::NoiseSuppression(s.noise_suppression));
                self.control(Control::Bitrate(s.bitrate));
                // Sign-in fields are the model's to set; keep them current.
                self.settings = Settings {
                    server: self.settings.server.clone(),
                    email: self.settings.email.clone(),
                    status: self.settings.status.clone(),
                    ..s
                };
                match self.home.save_settings(&self.settings) {
                    Ok(()) => self.send(Update::Info("Settings saved.".into())),
                    Err(e) => self.send(Update::Error(format!("Could not save the settings: {e}"))),
                }
            }
            Command::ListDevices => self.list_devices().await,
            Command::TestTone => {
                let frame = self.settings.media_config().frame;
                match self.open_output(frame).await {
                    Ok(out) => self.tone = Some(play(SoundInput::timed(Sound::Test, 1.0), out, frame)),
                    Err(e) => self.send(Update::Error(e)),
                }
            }
            Command::MicCheck(false) => {
                self.mic_check = None;
                self.send(Update::MicLevel(None));
            }
            Command::MicCheck(true) => {
                let frame = self.settings.media_config().frame;
                match self.open_input(frame).await {
                    Ok(input) => self.mic_check = Some(meter(input, frame, self.out.clone())),
                    Err(e) => self.send(Update::Error(e)),
                }
            }
            Command::Shutdown => {}
            c => self.social(c).await,
        }
    }

    /// Drops the connection and everything that hangs on it.
    async fn reset(&mut self) {
        self.leave_call().await;
        self.ringing.clear();
        self.close_notifications();
        self.ringer = None;
        self.events = None;
        self.connection = None;
        self.client = None;
    }

    async fn signed_in(&mut self, client: Client, info: SessionInfo) {
        // Of a cluster, every node is kept, not only the one that answered.
        let server = client.servers();
        let events = match client.events().await {
            Ok(e) => e,
            Err(e @ ClientError::Server(ReplyError::Unauthorized)) => {
                tracing::info!(error = %e, "saved session refused");
                let _ = self.home.forget_session();
                self.send(Update::SessionExpired);
                return;
            }
            Err(e) => {
                self.send(Update::SignInFailed(describe(&e, &server, false)));
                return;
            }
        };
        let saved = SavedSession { server: server.clone(), info: info.clone() };
        if let Err(e) = self.home.save_session(&saved) {
            self.send(Update::Error(format!("Could not remember the session: {e}")));
        }
        self.settings.server = server.clone();
        if !self.settings.email.eq_ignore_ascii_case(&info.email) {
            // The remembered status was another account's.
            self.settings.status.clear();
        }
        self.settings.email = info.email.clone();
        if let Err(e) = self.home.save_settings(&self.settings) {
            tracing::warn!(error = %e, "settings not saved");
        }
        self.client = Some(client);
        self.connection = Some(events.connection());
        self.events = Some(events);
        self.send(Update::SignedIn { server, me: User { id: info.id, name: info.name, email: info.email } });
        self.refresh().await;
        self.load_unread().await;
    }

    /// Re-reads contacts and requests.
    async fn refresh(&mut self) {
        let Some(c) = self.client.as_mut() else { return };
        let r = async { Ok::<_, ClientError>((c.contacts().await?, c.contact_requests().await?)) }.await;
        match r {
            Ok((contacts, requests)) => self.send(Update::Contacts { contacts, requests }),
            Err(e) => self.request_failed(&e),
        }
    }

    async fn contact_op(&mut self, op: ContactOp, id: UserId) {
        let Some(c) = self.client.as_mut() else { return };
        let r = match op {
            ContactOp::Accept => c.accept_contact(id).await,
            ContactOp::Decline => c.decline_contact(id).await,
            ContactOp::Remove => c.remove_contact(ContactRef::Id(id)).await,
        };
        match r {
            Ok(()) => self.refresh().await,
            Err(e) => self.request_failed(&e),
        }
    }

    fn request_failed(&mut self, e: &ClientError) {
        let server = self.addr();
        if matches!(e, ClientError::Server(ReplyError::Unauthorized)) {
            let _ = self.home.forget_session();
            self.send(Update::SessionExpired);
            self.client = None;
            self.events = None;
            self.connection = None;
            return;
        }
        self.send(Update::Error(describe(e, &server, false)));
    }

    fn control(&self, c: Control) {
        if let Some(CallState::Active(call)) = &self.call {
            call.send(c);
        }
    }

    async fn call(&mut self, contact: UserId) {
        if self.call.is_some() {
            self.send(Update::CallFailed("You are already in a call.".into()));
            return;
        }
        let relay_only = self.settings.relay_only;
        let Some(client) = self.client.as_mut() else { return };
        let addr = client.addr().to_owned();
        let callee = match client.contacts().await {
            Ok(list) => list.into_iter().find(|c| c.user.id == contact).map(|c| c.user),
            Err(_) => None,
        }
        .unwrap_or_else(|| User { id: contact, name: format!("user {}", contact.0), email: String::new() });
        match Outgoing::place(client, contact, relay_only).await {
            Ok(ringing) => {
                let call_id = ringing.call_id();
                self.call = Some(CallState::Outgoing { callee, ringing: Box::new(ringing) });
                self.send(Update::Ringing { call_id });
            }
            Err(CallError::NotSignedIn) => {}
            Err(CallError::Client(e)) => self.send(Update::CallFailed(describe(&e, &addr, false))),
            Err(e) => self.send(Update::CallFailed(sentence(&e.to_string()))),
        }
    }

    async fn accept(&mut self, call_id: CallId) {
        let incoming = self.ringing.remove(&call_id);
        self.update_ringer();
        self.leave_call().await;
        let relay_only = self.settings.relay_only;
        let Some(client) = self.client.as_mut() else { return };
        let addr = client.addr().to_owned();
        let Some(incoming) = incoming else {
            // Not ringing here: no caller's commitment to answer with.
            let _ = client.decline_call(call_id).await;
            return self.send(Update::CallFailed(format!("The call was refused: {}.", AgreeError::NoCommitment)));
        };
        // A two-party call: the caller must have committed to its key, and
        // mine goes out only now that I hold the commitment. A group call:
        // I commit, and reveal once every member answered. Voice starts
        // when the caller's key came and matched, or when I revealed mine.
        match Answering::answer(client, &incoming, relay_only).await {
            Ok(a) => self.call = Some(CallState::Answering(Box::new(a))),
            Err(CallError::NotSignedIn) => {}
            Err(CallError::Refused(e)) => self.send(Update::CallFailed(format!("The call was refused: {e}."))),
            Err(CallError::Client(e)) => {
                let msg = match e.refusal() {
                    Some(_) => "The call could not be answered: it has ended or was answered elsewhere.".into(),
                    None => describe(&e, &addr, false),
                };
                self.send(Update::CallFailed(msg));
            }
            Err(e) => self.send(Update::CallFailed(sentence(&e.to_string()))),
        }
    }

    /// Gives up an answered call whose key exchange did not finish in time
    /// (a caller that never reveals, members that never send a nonce).
    async fn key_exchange_deadline(&mut self) {
        let late = matches!(&self.call, Some(CallState::Answering(a)) if a.since().elapsed() >= KEY_EXCHANGE_WAIT);
        if !late {
            return;
        }
        if let Some(state) = self.call.take() {
            let call_id = state.id();
            if let Some(c) = self.client.as_mut() {
                let _ = c.hangup(call_id).await;
            }
            self.send(Update::CallFailed("The call was ended: the key exchange did not finish.".into()));
        }
    }

    /// A call's key exchange went through: voice starts.
    async fn settled(&mut self, settled: Settled, users: Vec<User>) {
        let channel = match self.client.as_ref() {
            Some(c) => settled.open_channel(c).await,
            None => None,
        };
        let cfg = self.settings.media_config();
        let input = match self.open_input(cfg.frame).await {
            Ok(i) => i,
            Err(e) => {
                self.send(Update::Error(format!("{e} The others hear silence.")));
                Box::new(SilentInput)
            }
        };
        let output = match self.open_output(cfg.frame).await {
            Ok(o) => o,
            Err(e) => {
                self.send(Update::Error(format!("{e} You will not hear the call.")));
                Box::new(NullOutput)
            }
        };
        let call_id = settled.call_id();
        let call = settled.start_with_channel(channel, cfg, input, output);
        call.send(Control::InputGain(self.settings.input_gain));
        call.send(Control::OutputGain(self.settings.output_gain));
        self.call = Some(CallState::Active(Box::new(call)));
        self.send(Update::CallStarted { call_id, participants: users });
    }

    /// The key exchange failed (the call was hung up): the person is told
    /// why.
    fn exchange_failed(&self, call_id: CallId, e: &CallError) {
        let why = match e {
            CallError::Exchange(ExchangeError::Agree(a)) => a.to_string(),
            // My reveal could not go out.
            _ => AgreeError::NoKey.to_string(),
        };
        tracing::warn!(call = %call_id, error = %e, "key exchange failed");
        self.send(Update::CallFailed(format!("The call was ended: {why}.")));
    }

    /// Stops a running call's media and waits for it; the server is told
    /// (unless it ended the call, or is out of reach).
    async fn finish(&mut self, call: Call) -> MediaResult {
        let r = match self.client.as_mut() {
            Some(c) => call.end(c).await,
            None => call.stop().await,
        };
        r.map_err(|e| e.to_string())
    }

    /// Ends a running call because its key exchange was tampered with.
    async fn end_on_attack(&mut self, e: &AgreeError) {
        let Some(CallState::Active(call)) = self.call.take() else { return };
        let call_id = call.call_id();
        let r = self.finish(*call).await;
        self.report_media_end(call_id, r, Some(format!("the call was ended: {e}")));
    }

    /// Leaves my call, if any: tells the server and stops the media (whose
    /// end is then reported by `media_ended`).
    async fn leave_call(&mut self) {
        let Some(state) = self.call.take() else { return };
        let call_id = state.id();
        match state {
            CallState::Outgoing { .. } | CallState::Answering(_) => {
                if let Some(c) = self.client.as_mut() {
                    let _ = c.hangup(call_id).await;
                }
                self.send(Update::CallOver { call_id, reason: "you hung up".into() });
            }
            CallState::Active(call) => {
                let r = self.finish(*call).await;
                self.report_media_end(call_id, r, Some("you hung up".into()));
            }
        }
    }

    async fn media_ended(&mut self) {
        let Some(CallState::Active(call)) = self.call.take() else { return };
        let (call_id, ended_by_server) = (call.call_id(), call.ended_by_server());
        // Unless the server ended it, it is told.
        let r = self.finish(*call).await;
        let reason = match (ended_by_server, &r) {
            (Some(reason), _) => Some(end_reason_text(reason).to_owned()),
            (None, Ok(Ok((_, EndCause::PeerVanished)))) => Some("nothing arrived from the others".to_owned()),
            _ => None,
        };
        self.report_media_end(call_id, r, reason);
    }

    fn report_media_end(&self, call_id: CallId, r: MediaResult, reason: Option<String>) {
        let reason = match r {
            Ok(Ok(_)) => reason.unwrap_or_else(|| "ended".into()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "media failed");
                format!("the voice engine failed ({e})")
            }
            Err(e) => format!("the voice engine stopped ({e})"),
        };
        self.send(Update::CallOver { call_id, reason });
    }

    async fn event(&mut self, e: Option<babel_client::Result<Event>>) {
        let ev = match e {
            Some(Ok(Event::Server(ev))) => ev,
            Some(Ok(Event::Reconnected)) => {
                self.send(Update::Reconnected);
                self.refresh().await;
                self.load_unread().await;
                return;
            }
            // (The stream reconnects by itself and says so.)
            Some(Ok(Event::Disconnected)) => return,
            Some(Err(e)) => {
                self.events = None;
                self.connection = None;
                self.request_failed(&e);
                return;
            }
            None => {
                self.events = None;
                self.connection = None;
                return;
            }
        };
        match &ev {
            ServerEvent::SessionEnded(_) => self.session_ended().await,
            ServerEvent::IncomingCall(c) => {
                if !self.ringing.contains_key(&c.call_id) {
                    self.notify_desktop(c);
                }
                self.ringing.insert(c.call_id, c.clone());
                self.update_ringer();
            }
            ServerEvent::CallAccepted(j) if matches!(&self.call, Some(CallState::Outgoing { ringing, .. }) if ringing.call_id() == j.call_id) =>
            {
                if let Some(CallState::Outgoing { callee, ringing }) = self.call.take() {
                    self.send(Update::Server(ev.clone()));
                    let call_id = ringing.call_id();
                    let Some(client) = self.client.as_mut() else { return };
                    // Bound to my key before I saw theirs: now I reveal it.
                    let settled = match ringing.accepted(client, &j.peer).await {
                        Ok(s) => s,
                        Err(e) => return self.exchange_failed(call_id, &e),
                    };
                    let mut user = j.peer.user.clone();
                    if user.name.is_empty() {
                        user.name = callee.name;
                    }
                    self.settled(settled, vec![user]).await;
                    return;
                }
            }
            // The caller's reveal, or a member's nonce (an invite).
            ServerEvent::CallKey(_) | ServerEvent::CallNonce(_)
                if matches!(&self.call, Some(CallState::Answering(_))) && self.client.is_some() =>
            {
                if let (Some(CallState::Answering(a)), Some(client)) = (self.call.take(), self.client.as_mut()) {
                    let call_id = a.call_id();
                    match a.on_event(client, &ev).await {
                        Answered::Waiting(a) => self.call = Some(CallState::Answering(Box::new(a))),
                        Answered::Settled(s) => {
                            let users = s.users();
                            self.settled(s, users).await;
                        }
                        Answered::Failed(e) => self.exchange_failed(call_id, &e),
                    }
                }
            }
            ServerEvent::CallEnded(c, _) => {
                if self.ringing.remove(c).is_some() {
                    self.update_ringer();
                }
                match (&mut self.call, self.client.as_mut()) {
                    (Some(state @ (CallState::Outgoing { .. } | CallState::Answering(_))), _) if state.id() == *c => {
                        self.call = None;
                    }
                    (Some(CallState::Active(call)), Some(client)) if call.call_id() == *c => {
                        call.on_event(client, &ev).await;
                    }
                    _ => {}
                }
            }
            other => {
                let mut broken = None;
                if let (Some(CallState::Active(call)), Some(client)) = (&mut self.call, self.client.as_mut()) {
                    for what in call.on_event(client, other).await {
                        if let CallEvent::Broken(e) = what {
                            broken = Some(e);
                        }
                    }
                }
                if let Some(e) = broken {
                    self.end_on_attack(&e).await;
                }
            }
        }
        self.send(Update::Server(ev));
    }

    fn tick(&self) {
        let Some(CallState::Active(call)) = &self.call else { return };
        let s = call.snapshot();
        self.send(Update::Stats(StatsSnapshot {
            elapsed: call.started().elapsed(),
            path: s.path.map(|p| p.as_str()),
            rtt_ms: s.rtt_ms,
            loss_pct: s.loss_pct,
            rx_loss_pct: s.rx_loss_pct,
            jitter_ms: s.jitter_ms,
            bitrate: s.bitrate,
            input_level_db: s.input_level_db,
            sas: s.sas.clone(),
            peers: s.peers.iter().filter_map(|p| p.user.map(|id| PeerLevel { id, level_db: p.level_db })).collect(),
        }));
    }

    /// A desktop notification for a call that starts ringing, taken away
    /// by `close_notifications` once it stops (even if it stopped first).
    fn notify_desktop(&self, c: &IncomingCall) {
        lock(&self.notified).insert(c.call_id, None);
        let (notified, call_id) = (self.notified.clone(), c.call_id);
        let (name, email) = (c.caller.name.clone(), c.caller.email.clone());
        tokio::spawn(async move {
            let Some(id) = crate::notify::incoming_call(name, email).await else { return };
            let ringing = lock(&notified).get_mut(&call_id).map(|slot| *slot = Some(id)).is_some();
            if !ringing {
                crate::notify::close(id).await;
            }
        });
    }

    /// Takes away the notifications of calls no longer ringing.
    fn close_notifications(&self) {
        let mut notified = lock(&self.notified);
        let gone: Vec<CallId> = notified.keys().filter(|k| !self.ringing.contains_key(k)).copied().collect();
        for id in gone.iter().filter_map(|k| notified.remove(k).flatten()) {
            tokio::spawn(crate::notify::close(id));
        }
    }

    /// Rings while any call rings for me.
    fn update_ringer(&mut self) {
        self.close_notifications();
        if self.ringing.is_empty() {
            self.ringer = None;
            return;
        }
        if self.ringer.is_some() {
            return;
        }
        let frame = self.settings.media_config().frame;
        let output: Box<dyn AudioOutput> = match self.audio {
            AudioMode::Synthetic => Box::new(NullOutput),
            AudioMode::Devices => {
                let name = self.settings.output_device.clone();
                // Opening a device takes a moment; the ring can wait that long.
                match tokio::task::block_in_place(|| {
                    babel_media::device::DeviceOutput::open(name.as_deref(), frame.samples())
                }) {
                    Ok(o) => Box::new(o),
                    Err(e) => {
                        tracing::warn!(error = %e, "no loudspeaker for the ringtone");
                        return;
                    }
                }
            }
        };
        self.ringer = Some(play(SoundInput::endless(Sound::Ring), output, frame));
    }

    async fn open_input(&self, frame: FrameMs) -> Result<Box<dyn AudioInput>, String> {
        match self.audio {
            AudioMode::Synthetic => Ok(Box::new(SoundInput::endless(Sound::Voice))),
            AudioMode::Devices => {
                let name = self.settings.input_device.clone();
                tokio::task::spawn_blocking(move || {
                    babel_media::device::DeviceInput::open(name.as_deref(), frame.samples())
                        .map(|d| Box::new(d) as Box<dyn AudioInput>)
                        .map_err(|e| format!("Cannot open the microphone: {e}."))
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }

    async fn open_output(&self, frame: FrameMs) -> Result<Box<dyn AudioOutput>, String> {
        match self.audio {
            AudioMode::Synthetic => Ok(Box::new(NullOutput)),
            AudioMode::Devices => {
                let name = self.settings.output_device.clone();
                tokio::task::spawn_blocking(move || {
                    babel_media::device::DeviceOutput::open(name.as_deref(), frame.samples())
                        .map(|d| Box::new(d) as Box<dyn AudioOutput>)
                        .map_err(|e| format!("Cannot open the loudspeaker: {e}."))
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }

    async fn list_devices(&self) {
        let update = match self.audio {
            AudioMode::Synthetic => Update::Devices {
                inputs: vec!["Synthetic voice".into()],
                outputs: vec!["Silent speaker".into()],
                error: None,
            },
            AudioMode::Devices => tokio::task::spawn_blocking(|| {
                let names = |l: Vec<babel_media::device::DeviceInfo>| l.into_iter().map(|d| d.name).collect();
                match (babel_media::device::list_inputs(), babel_media::device::list_outputs()) {
                    (Ok(i), Ok(o)) => Update::Devices { inputs: names(i), outputs: names(o), error: None },
                    (i, o) => Update::Devices {
                        inputs: i.map(names).unwrap_or_default(),
                        outputs: o.map(names).unwrap_or_default(),
                        error: i_or_o_error(),
                    },
                }
            })
            .await
            .unwrap_or_else(|e| Update::Error(e.to_string())),
        };
        self.send(update);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn i_or_o_error() -> Option<String> {
    Some("The audio devices could not be listed; the system defaults are used.".into())
}

/// Plays `sound` on `output` at the frame clock until it ends or the
/// player is dropped.
fn play(mut sound: SoundInput, mut output: Box<dyn AudioOutput>, frame: FrameMs) -> Player {
    let stop = StopFlag::default();
    let s = stop.clone();
    tokio::spawn(async move {
        let mut buf = vec![0.0f32; frame.samples()];
        let mut clock = tokio::time::interval(Duration::from_millis(u64::from(frame.ms())));
        while !s.is_cancelled() {
            tokio::select! {
                _ = clock.tick() => {}
                _ = s.cancelled() => break,
            }
            if !sound.read(&mut buf) {
                break;
            }
            output.write(&buf);
        }
        let _ = output.finish();
    });
    Player { stop }
}

/// Reads the microphone at the frame clock and reports its level five
/// times a second for up to 30 s.
fn meter(mut input: Box<dyn AudioInput>, frame: FrameMs, out: Arc<Out>) -> Player {
    let stop = StopFlag::default();
    let s = stop.clone();
    tokio::spawn(async move {
        let mut buf = vec![0.0f32; frame.samples()];
        let mut clock = tokio::time::interval(Duration::from_millis(u64::from(frame.ms())));
        let per_report = (200 / frame.ms()).max(1) as usize;
        let mut peak = -100.0f32;
        for n in 1..=(30_000 / frame.ms()) as usize {
            tokio::select! {
                _ = clock.tick() => {}
                _ = s.cancelled() => return,
            }
            input.read(&mut buf);
            peak = peak.max(level_db(&buf));
            if n % per_report == 0 {
                out.send(Update::MicLevel(Some(peak)));
                peak = -100.0;
            }
        }
        out.send(Update::MicLevel(None));
    });
    Player { stop }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Records what is played, shared with the test; knows when the
    /// player let go of it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<f32>>>, Arc<std::sync::atomic::AtomicBool>);

    impl AudioOutput for Shared {
        fn write(&mut self, frame: &[f32]) {
            self.0.lock().unwrap().extend_from_slice(frame);
        }

        fn finish(&mut self) -> Result<(), babel_media::audio::AudioError> {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ringtone_plays_at_the_frame_clock_until_stopped() {
        let out = Shared::default();
        let t0 = std::time::Instant::now();
        let player = play(SoundInput::endless(Sound::Ring), Box::new(out.clone()), FrameMs::Twenty);
        let deadline = t0 + Duration::from_secs(20);
        while out.0.lock().unwrap().len() < 960 * 10 {
            assert!(std::time::Instant::now() < deadline, "the ringtone never played");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let played = out.0.lock().unwrap().clone();
        // Paced by the frame clock: never more than real time's worth.
        let frames_due = t0.elapsed().as_millis() as usize / 20 + 1;
        assert!(played.len() <= frames_due * 960, "{} samples in {:?}", played.len(), t0.elapsed());
        assert!(level_db(&played[..960 * 10]) > -30.0, "the first burst is loud");
        // Dropping the player ends the sound and releases the loudspeaker.
        drop(player);
        while !out.1.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the ringtone never stopped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn errors_in_words() {
        let unreachable = ClientError::Connect {
            addr: "h:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(describe(&unreachable, "h:1", true).starts_with("Cannot reach the server at h:1"));
        let wrong = ClientError::Server(ReplyError::Unauthorized);
        assert_eq!(describe(&wrong, "h:1", true), "Wrong email or password.");
        assert!(describe(&wrong, "h:1", false).contains("sign in again"));
        let taken = ClientError::Server(ReplyError::Refused("an account with the email a@b.c already exists".into()));
        assert_eq!(describe(&taken, "h:1", true), "An account with the email a@b.c already exists.");
        let changed = ClientError::Untrusted {
            server: "tls://h:1".into(),
            why: Box::new(babel_client::Untrusted::NotPinned {
                expected: babel_proto::Fingerprint([1; 32]),
                got: babel_proto::Fingerprint([2; 32]),
            }),
        };
        let text = describe(&changed, "tls://h:1", true);
        assert!(text.starts_with("Refusing the server at tls://h:1") && text.contains("not the pinned"), "{text}");
        let dead = |addr: &str| ClientError::Connect {
            addr: addr.into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let none = ClientError::NoServer(vec![dead("a:1"), dead("b:2")]);
        assert_eq!(
            describe(&none, "a:1,b:2", true),
            "Cannot reach any of the servers a:1, b:2. Check the addresses and that a server is running."
        );
        let bad = ClientError::Address("not a server address".into());
        assert!(describe(&bad, "x", true).starts_with("Not a server address"));
        assert_eq!(sentence(""), "Something went wrong.");
        assert_eq!(sentence("ok!"), "Ok!");
    }
}
