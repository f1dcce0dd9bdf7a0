//! Everything the window shows, as plain data, and the two ways it changes:
//! [`Model::apply`] for what the backend reports ([`Update`]) and
//! [`Model::intent`] for what the person does ([`Intent`]), which answers
//! the [`Command`]s to send to the backend.
//!
//! No IO, no clock, no egui: the call timer comes with the statistics, so
//! every behaviour here is a unit test away.

use std::collections::VecDeque;
use std::time::Duration;

use babel_proto::{CallId, ContactEntry, EndReason, Presence, ServerEvent, User, UserId};

use crate::msg::{Command, StatsSnapshot, Update};
use crate::settings::{SavedSession, Settings};
use crate::social::{Page, Social, SocialIntent};

/// How many statistics samples the live plot keeps (a minute at 4 a second).
pub const HISTORY: usize = 240;
/// Above this level (dBFS) someone counts as speaking.
pub const SPEAKING_DB: f32 = -45.0;
/// How many notices stay on screen.
const MAX_NOTICES: usize = 5;

/// Where the application is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The sign-in form.
    SignedOut,
    /// Taking up a saved session.
    Resuming,
    /// Signed in: contacts, calls, settings.
    Main,
}

/// The sign-in form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignInForm {
    /// Server address.
    pub server: String,
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
    /// Name (registering only).
    pub name: String,
    /// Registering a new account rather than logging in.
    pub register: bool,
    /// Waiting for the server.
    pub busy: bool,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// One row of the contact list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Who.
    pub user: User,
    /// Their presence (`Pending`: my request, not yet accepted).
    pub presence: Presence,
}

/// Where a call of mine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    /// Asking the server to ring them.
    Dialing,
    /// Their devices ring.
    Ringing,
    /// I answered; voice is being set up.
    Connecting,
    /// Voice flows.
    Active,
}

/// Someone else in my call.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// Who.
    pub id: UserId,
    /// Their name.
    pub name: String,
    /// Their voice level now, dBFS.
    pub level_db: f32,
}

impl Participant {
    /// Whether they are speaking now.
    pub fn speaking(&self) -> bool {
        self.level_db > SPEAKING_DB
    }
}

/// One point of the live plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Loss I see, percent.
    pub loss_pct: f32,
    /// Jitter I see, ms.
    pub jitter_ms: f32,
}

/// My call, as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct CallView {
    /// The call, once the server gave it an id.
    pub call_id: Option<CallId>,
    /// Whom it is with, as a title ("Ben", "Ben, Cleo").
    pub title: String,
    /// Where it is.
    pub phase: CallPhase,
    /// The others (filled once voice flows, and as people join or leave).
    pub participants: Vec<Participant>,
    /// My microphone is muted.
    pub muted: bool,
    /// The latest figures.
    pub stats: StatsSnapshot,
    /// Loss and jitter over the last minute.
    pub history: VecDeque<Sample>,
}

impl CallView {
    fn new(call_id: Option<CallId>, title: String, phase: CallPhase) -> Self {
        Self {
            call_id,
            title,
            phase,
            participants: Vec::new(),
            muted: false,
            stats: StatsSnapshot::default(),
            history: VecDeque::new(),
        }
    }

    /// Whether I am speaking now.
    pub fn me_speaking(&self) -> bool {
        !self.muted && self.stats.input_level_db > SPEAKING_DB
    }

    fn retitle(&mut self) {
        if !self.participants.is_empty() {
            self.title = self.participants.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
        }
    }
}

/// A call ringing for me.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The call.
    pub call_id: CallId,
    /// Who calls.
    pub caller: User,
    /// How many others are already in it (a group call).
    pub others: usize,
}

/// How serious a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// Something failed.
    Error,
    /// Something to know.
    Info,
}

/// A line at the bottom of the window, until dismissed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// For dismissing.
    pub id: u64,
    /// Error or info.
    pub kind: NoticeKind,
    /// In words.
    pub text: String,
    /// The contact request it announces: it goes once the request is
    /// answered (here or elsewhere).
    pub request_from: Option<UserId>,
}

/// The audio devices as the settings show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// Microphones.
    pub inputs: Vec<String>,
    /// Loudspeakers.
    pub outputs: Vec<String>,
    /// Why they could not be listed.
    pub error: Option<String>,
    /// Whether a list arrived.
    pub loaded: bool,
}

/// What the person did.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Pressed "Sign in" (or "Create account").
    SubmitSignIn,
    /// Switched between logging in and registering.
    ToggleRegister,
    /// Signed out.
    SignOut,
    /// Pressed "Add" next to the email field.
    AddContact,
    /// Accepted a contact request.
    AcceptRequest(UserId),
    /// Declined a contact request.
    DeclineRequest(UserId),
    /// Asked to remove a contact (a confirmation follows).
    AskRemove(UserId),
    /// Withdrew my own request that was not yet accepted.
    CancelRequest(UserId),
    /// Confirmed the removal.
    ConfirmRemove,
    /// Changed their mind.
    CancelRemove,
    /// Called a contact.
    Call(UserId),
    /// Answered the ringing call.
    AcceptCall,
    /// Declined the ringing call.
    DeclineCall,
    /// Hung up.
    Hangup,
    /// Muted or unmuted.
    ToggleMute,
    /// Moved the microphone volume.
    SetInputGain(f32),
    /// Moved the loudspeaker volume.
    SetOutputGain(f32),
    /// Rang a contact into the call.
    Invite(UserId),
    /// Opened the settings.
    OpenSettings,
    /// Closed the settings (without saving).
    CloseSettings,
    /// Saved the settings being edited.
    SaveSettings,
    /// Played the test tone.
    TestTone,
    /// Started or stopped the microphone check.
    MicCheck(bool),
    /// Dismissed a notice.
    Dismiss(u64),
    /// Messages, history, account, status, blocking.
    Social(SocialIntent),
}

/// Everything the window shows.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where the application is.
    pub phase: Phase,
    /// The sign-in form.
    pub form: SignInForm,
    /// Me, once signed in.
    pub me: Option<User>,
    /// The server signed in to.
    pub server: String,
    /// Contacts, sorted: online, busy, offline, pending; then by name.
    pub contacts: Vec<Contact>,
    /// Requests waiting for my answer.
    pub requests: Vec<User>,
    /// The search box over the contact list.
    pub filter: String,
    /// The "add by email" field.
    pub add_email: String,
    /// A removal waiting for confirmation.
    pub confirm_remove: Option<UserId>,
    /// A call ringing for me.
    pub incoming: Option<Incoming>,
    /// My call.
    pub call: Option<CallView>,
    /// How my last call ended ("Call with Ben ended: Ben hung up · 01:23").
    pub last_call: Option<String>,
    /// Saved settings (what is in force).
    pub settings: Settings,
    /// Settings being edited, while the settings page is open.
    pub editing: Option<Settings>,
    /// Audio devices.
    pub devices: Devices,
    /// The microphone check's level, while it runs.
    pub mic_level: Option<f32>,
    /// Lines at the bottom of the window.
    pub notices: Vec<Notice>,
    next_notice: u64,
    /// The connection to the server is lost (the backend is reconnecting):
    /// presence is unknown, and what needs the server cannot be done.
    pub connection_lost: bool,
    /// Messages, history, account, status, blocking.
    pub social: Social,
    /// Commands updates gave rise to ([`Model::take_outbox`]).
    pub(crate) outbox: Vec<Command>,
}

fn rank(p: Presence) -> u8 {
    match p {
        Presence::Online => 0,
        Presence::Busy | Presence::Away | Presence::Dnd => 1,
        Presence::Offline | Presence::Unknown => 2,
        Presence::Pending => 3,
    }
}

/// `mm:ss`, or `h:mm:ss` past an hour.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// Why a call ended, in words, for the one told.
pub fn end_reason_text(r: EndReason) -> &'static str {
    match r {
        EndReason::Hangup => "hung up",
        EndReason::Declined => "declined",
        EndReason::Timeout => "no answer",
        EndReason::Disconnected => "the connection was lost",
        EndReason::AnsweredElsewhere => "answered on another device",
        EndReason::Logout => "signed out",
        EndReason::Deleted => "the account was deleted",
    }
}

impl Model {
    /// A fresh window with these settings; signed out, the form filled with
    /// the last server and email.
    pub fn new(settings: Settings) -> Self {
        let form =
            SignInForm { server: settings.server.clone(), email: settings.email.clone(), ..SignInForm::default() };
        Self {
            phase: Phase::SignedOut,
            form,
            me: None,
            server: String::new(),
            contacts: Vec::new(),
            requests: Vec::new(),
            filter: String::new(),
            add_email: String::new(),
            confirm_remove: None,
            incoming: None,
            call: None,
            last_call: None,
            settings,
            editing: None,
            devices: Devices::default(),
            mic_level: None,
            notices: Vec::new(),
            next_notice: 0,
            connection_lost: false,
            social: Social::default(),
            outbox: Vec::new(),
        }
    }

    /// Commands that updates gave rise to (a read mark, a notification),
    /// for the window to send.
    pub fn take_outbox(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.outbox)
    }

    /// Starts taking up a saved session: answers the command to send.
    pub fn resume(&mut self, saved: SavedSession) -> Command {
        self.phase = Phase::Resuming;
        self.form.server = saved.server.clone();
        self.form.email = saved.info.email.clone();
        Command::Resume(saved)
    }

    /// Contacts matching the search box (name or email, any case).
    pub fn visible_contacts(&self) -> impl Iterator<Item = &Contact> {
        let f = self.filter.trim().to_lowercase();
        self.contacts.iter().filter(move |c| {
            f.is_empty() || c.user.name.to_lowercase().contains(&f) || c.user.email.to_lowercase().contains(&f)
        })
    }

    /// A contact by id.
    pub fn contact(&self, id: UserId) -> Option<&Contact> {
        self.contacts.iter().find(|c| c.user.id == id)
    }

    /// Online contacts who could be rung into my call now.
    pub fn invitable(&self) -> Vec<&Contact> {
        let Some(call) = &self.call else { return Vec::new() };
        if call.phase != CallPhase::Active || self.connection_lost {
            return Vec::new();
        }
        self.contacts
            .iter()
            .filter(|c| matches!(c.presence, Presence::Online | Presence::Away))
            .filter(|c| !call.participants.iter().any(|p| p.id == c.user.id))
            .collect()
    }

    /// Adds a notice.
    pub fn notify(&mut self, kind: NoticeKind, text: impl Into<String>) {
        self.push_notice(kind, text.into(), None);
    }

    fn push_notice(&mut self, kind: NoticeKind, text: String, request_from: Option<UserId>) {
        self.next_notice += 1;
        self.notices.push(Notice { id: self.next_notice, kind, text, request_from });
        if self.notices.len() > MAX_NOTICES {
            self.notices.remove(0);
        }
    }

    /// A contact request was answered (or withdrawn): its row and its
    /// notice go.
    fn request_settled(&mut self, id: UserId) {
        self.requests.retain(|r| r.id != id);
        self.notices.retain(|n| n.request_from != Some(id));
    }

    /// What a contact's presence is as far as I can tell: unknown
    /// (`None`) while the connection to the server is lost.
    pub fn known_presence(&self, c: &Contact) -> Option<Presence> {
        if self.connection_lost && c.presence != Presence::Pending { None } else { Some(c.presence) }
    }

    fn name_of(&self, id: UserId) -> String {
        self.contact(id).map_or_else(|| format!("user {}", id.0), |c| c.user.name.clone())
    }

    fn sort_contacts(&mut self) {
        self.contacts.sort_by(|a, b| {
            rank(a.presence)
                .cmp(&rank(b.presence))
                .then_with(|| a.user.name.to_lowercase().cmp(&b.user.name.to_lowercase()))
        });
    }

    fn upsert(&mut self, user: User, presence: Presence) {
        self.request_settled(user.id);
        match self.contacts.iter_mut().find(|c| c.user.id == user.id) {
            Some(c) => {
                c.user = user;
                c.presence = presence;
            }
            None => self.contacts.push(Contact { user, presence }),
        }
        self.sort_contacts();
    }

    fn end_call(&mut self, call_id: CallId, reason: &str) {
        if self.call.as_ref().is_some_and(|c| c.call_id == Some(call_id)) {
            self.finish_call(reason);
        }
    }

    fn finish_call(&mut self, reason: &str) {
        if let Some(c) = self.call.take() {
            let time =
                if c.phase == CallPhase::Active { format!(" · {}", clock(c.stats.elapsed)) } else { String::new() };
            self.last_call = Some(format!("Call with {} ended: {reason}{time}", c.title));
        }
    }

    /// Takes in what the backend reports.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::SignedIn { server, me } => {
                self.status_on_sign_in(&me);
                self.phase = Phase::Main;
                self.form.busy = false;
                self.form.error = None;
                self.form.password.clear();
                self.form.server = server.clone();
                self.form.email = me.email.clone();
                self.settings.server = server.clone();
                self.settings.email = me.email.clone();
                self.server = server;
                self.me = Some(me);
                self.connection_lost = false;
            }
            Update::SignInFailed(reason) => {
                self.phase = Phase::SignedOut;
                self.form.busy = false;
                self.form.error = Some(reason);
            }
            Update::SessionExpired => {
                self.sign_out_locally();
                self.form.error = Some("Your session has ended: sign in again.".into());
            }
            Update::SignedOut => self.sign_out_locally(),
            Update::Contacts { contacts, requests } => {
                self.contacts = contacts.into_iter().map(|e| Contact { user: e.user, presence: e.status }).collect();
                self.sort_contacts();
                self.requests = requests;
                // Notices of requests answered meanwhile (elsewhere) go.
                let waiting: Vec<UserId> = self.requests.iter().map(|r| r.id).collect();
                self.notices.retain(|n| n.request_from.is_none_or(|id| waiting.contains(&id)));
            }
            Update::Server(ev) => self.apply_event(ev),
            Update::ConnectionLost => self.connection_lost = true,
            Update::Reconnected => {
                self.connection_lost = false;
                self.notify(NoticeKind::Info, "Reconnected to the server.");
            }
            Update::ContactRequestSent(email) => {
                if self.add_email.trim().eq_ignore_ascii_case(&email) {
                    self.add_email.clear();
                }
                self.notify(NoticeKind::Info, format!("Contact request sent to {email}."));
            }
            Update::Ringing { call_id } => {
                if let Some(c) = self.call.as_mut().filter(|c| c.phase == CallPhase::Dialing) {
                    c.call_id = Some(call_id);
                    c.phase = CallPhase::Ringing;
                }
            }
            Update::CallFailed(reason) => {
                if self.call.as_ref().is_some_and(|c| c.phase != CallPhase::Active) {
                    self.call = None;
                }
                self.notify(NoticeKind::Error, reason);
            }
            Update::CallStarted { call_id, participants } => {
                // A call hung up while it was being set up stays hung up
                // (the backend has the hang-up queued behind it).
                let Some(call) = self.call.as_mut().filter(|c| c.call_id.is_none_or(|id| id == call_id)) else {
                    return;
                };
                call.call_id = Some(call_id);
                call.phase = CallPhase::Active;
                call.participants = participants
                    .into_iter()
                    .map(|u| Participant { id: u.id, name: u.name, level_db: -100.0 })
                    .collect();
                call.retitle();
            }
            Update::Stats(s) => {
                if let Some(call) = self.call.as_mut().filter(|c| c.phase == CallPhase::Active) {
                    for p in &mut call.participants {
                        p.level_db = s.peers.iter().find(|l| l.id == p.id).map_or(-100.0, |l| l.level_db);
                    }
                    call.history.push_back(Sample { loss_pct: s.rx_loss_pct, jitter_ms: s.jitter_ms as f32 });
                    while call.history.len() > HISTORY {
                        call.history.pop_front();
                    }
                    // Someone joined or left: the code is a new one, to read again.
                    let changed = !call.stats.sas.is_empty() && call.stats.sas != s.sas && !s.sas.is_empty();
                    let code = s.sas.clone();
                    call.stats = s;
                    if changed {
                        self.notify(
                            NoticeKind::Info,
                            format!("The security code changed: {code}. Read it to each other again."),
                        );
                    }
                }
            }
            Update::CallOver { call_id, reason } => self.end_call(call_id, &reason),
            Update::Devices { inputs, outputs, error } => {
                self.devices = Devices { inputs, outputs, error, loaded: true };
            }
            Update::MicLevel(l) => self.mic_level = l,
            Update::Error(e) => self.notify(NoticeKind::Error, e),
            Update::Info(i) => self.notify(NoticeKind::Info, i),
            Update::Social(u) => self.apply_social(u),
        }
    }

    pub(crate) fn sign_out_locally(&mut self) {
        let settings = self.settings.clone();
        let focused = self.social.focused;
        let notices = std::mem::take(&mut self.notices);
        let next = self.next_notice;
        let mut form = std::mem::take(&mut self.form);
        form.busy = false;
        form.password.clear();
        *self = Model::new(settings);
        self.form = form;
        self.notices = notices;
        self.next_notice = next;
        self.social.focused = focused;
    }

    fn apply_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Ping
            | ServerEvent::CallCandidates(_)
            | ServerEvent::CallAccepted(_)
            | ServerEvent::CallKey(_)
            | ServerEvent::CallNonce(_)
            | ServerEvent::CallRelay(_) => {}
            ServerEvent::Message(m) => {
                self.apply_social(crate::social::SocialUpdate::Message { message: m.message.into(), sender: m.sender })
            }
            ServerEvent::MessagesRead(r) => self
                .apply_social(crate::social::SocialUpdate::Read { contact: r.contact_id, message_id: r.message_id.0 }),
            ServerEvent::SessionEnded(e) => {
                self.apply_social(crate::social::SocialUpdate::SessionEnded(e.reason.as_str().to_owned()))
            }
            ServerEvent::ContactUpdated(ContactEntry { user, status }) => {
                if let Some(c) = self.contacts.iter_mut().find(|c| c.user.id == user.id) {
                    c.user = user;
                    c.presence = status;
                    self.sort_contacts();
                }
            }
            ServerEvent::ContactRequest(u) => {
                if !self.requests.iter().any(|r| r.id == u.id) {
                    let text = format!("{} <{}> wants to add you as a contact.", u.name, u.email);
                    self.push_notice(NoticeKind::Info, text, Some(u.id));
                    self.requests.push(u);
                }
            }
            ServerEvent::ContactAdded(ContactEntry { user, status }) => self.upsert(user, status),
            ServerEvent::ContactRemoved(id) => {
                self.contacts.retain(|c| c.user.id != id);
                self.request_settled(id);
            }
            ServerEvent::Status(id, p) => {
                if let Some(c) = self.contacts.iter_mut().find(|c| c.user.id == id) {
                    c.presence = p;
                    self.sort_contacts();
                }
            }
            ServerEvent::IncomingCall(c) => {
                self.incoming = Some(Incoming {
                    call_id: c.call_id,
                    others: c.participants.iter().filter(|p| p.user.id != c.caller.id).count(),
                    caller: c.caller,
                });
            }
            ServerEvent::CallDeclined(call_id, id) => {
                if self.call.as_ref().is_some_and(|c| c.call_id == Some(call_id)) {
                    let name = self.name_of(id);
                    self.notify(NoticeKind::Info, format!("{name} did not join the call."));
                }
            }
            ServerEvent::ParticipantJoined(j) => {
                if let Some(call) = self.call.as_mut().filter(|c| c.call_id == Some(j.call_id)) {
                    if !call.participants.iter().any(|p| p.id == j.peer.user.id) {
                        call.participants.push(Participant {
                            id: j.peer.user.id,
                            name: j.peer.user.name,
                            level_db: -100.0,
                        });
                        call.retitle();
                    }
                }
            }
            ServerEvent::ParticipantLeft(call_id, id, _) => {
                if let Some(call) = self.call.as_mut().filter(|c| c.call_id == Some(call_id)) {
                    call.participants.retain(|p| p.id != id);
                    call.retitle();
                }
            }
            ServerEvent::CallEnded(call_id, reason) => {
                if let Some(inc) = self.incoming.take_if(|i| i.call_id == call_id) {
                    if matches!(reason, EndReason::Hangup | EndReason::Timeout | EndReason::Disconnected) {
                        self.notify(NoticeKind::Info, format!("Missed call from {}.", inc.caller.name));
                    }
                }
                // Who hung up: the others (I would have said "you").
                let reason = match (reason, &self.call) {
                    (EndReason::Hangup, Some(c)) => format!("{} hung up", c.title),
                    _ => end_reason_text(reason).to_owned(),
                };
                self.end_call(call_id, &reason);
            }
        }
    }

    /// Takes in what the person did; answers what the backend must do.
    pub fn intent(&mut self, intent: Intent) -> Vec<Command> {
        match intent {
            Intent::SubmitSignIn => {
                let f = &mut self.form;
                let (server, email) = (f.server.trim().to_owned(), f.email.trim().to_owned());
                if f.busy {
                    return vec![];
                }
                if server.is_empty() {
                    f.error = Some("Enter the server's address (host:port).".into());
                    return vec![];
                }
                if email.is_empty() || f.password.is_empty() {
                    f.error = Some("Enter your email and password.".into());
                    return vec![];
                }
                if !email.contains('@') {
                    f.error = Some("That email address does not look right.".into());
                    return vec![];
                }
                f.busy = true;
                f.error = None;
                let password = f.password.clone();
                if f.register {
                    let name = Some(f.name.trim().to_owned()).filter(|n| !n.is_empty());
                    vec![Command::Register { server, email, password, name }]
                } else {
                    vec![Command::SignIn { server, email, password }]
                }
            }
            Intent::ToggleRegister => {
                self.form.register = !self.form.register;
                self.form.error = None;
                vec![]
            }
            Intent::SignOut => vec![Command::SignOut],
            Intent::AddContact => {
                let email = self.add_email.trim().to_owned();
                if self.connection_lost {
                    self.notify(NoticeKind::Error, "Not connected to the server: try again once it is back.");
                    return vec![];
                }
                if !email.contains('@') {
                    self.notify(NoticeKind::Error, "Enter the email address of the person to add.");
                    return vec![];
                }
                // The box keeps the address until the request is sent (a
                // mistake is corrected, not retyped).
                vec![Command::AddContact(email)]
            }
            Intent::AcceptRequest(id) => {
                self.notices.retain(|n| n.request_from != Some(id));
                vec![Command::AcceptContact(id)]
            }
            Intent::DeclineRequest(id) => {
                self.request_settled(id);
                vec![Command::DeclineContact(id)]
            }
            Intent::CancelRequest(id) => vec![Command::RemoveContact(id)],
            Intent::AskRemove(id) => {
                self.confirm_remove = Some(id);
                vec![]
            }
            Intent::ConfirmRemove => match self.confirm_remove.take() {
                Some(id) => vec![Command::RemoveContact(id)],
                None => vec![],
            },
            Intent::CancelRemove => {
                self.confirm_remove = None;
                vec![]
            }
            Intent::Call(id) => {
                if self.connection_lost {
                    self.notify(NoticeKind::Error, "Not connected to the server: calls wait until it is back.");
                    return vec![];
                }
                if self.call.is_some() {
                    self.notify(NoticeKind::Error, "You are already in a call: hang up first.");
                    return vec![];
                }
                self.last_call = None;
                self.social.page = Page::Home;
                self.call = Some(CallView::new(None, self.name_of(id), CallPhase::Dialing));
                vec![Command::Call(id)]
            }
            Intent::AcceptCall => {
                let Some(inc) = self.incoming.take() else { return vec![] };
                self.last_call = None;
                self.social.page = Page::Home;
                // Answering while in a call leaves that call first.
                let mut out = Vec::new();
                if self.call.take().is_some() {
                    out.push(Command::Hangup);
                }
                self.call = Some(CallView::new(Some(inc.call_id), inc.caller.name.clone(), CallPhase::Connecting));
                out.push(Command::AcceptCall(inc.call_id));
                out
            }
            Intent::DeclineCall => match self.incoming.take() {
                Some(inc) => vec![Command::DeclineCall(inc.call_id)],
                None => vec![],
            },
            Intent::Hangup => {
                if self.call.is_none() {
                    return vec![];
                }
                self.finish_call("you hung up");
                vec![Command::Hangup]
            }
            Intent::ToggleMute => match self.call.as_mut() {
                Some(c) => {
                    c.muted = !c.muted;
                    vec![Command::Mute(c.muted)]
                }
                None => vec![],
            },
            Intent::SetInputGain(g) => {
                let g = g.clamp(0.0, 2.0);
                self.settings.input_gain = g;
                vec![Command::InputGain(g)]
            }
            Intent::SetOutputGain(g) => {
                let g = g.clamp(0.0, 2.0);
                self.settings.output_gain = g;
                vec![Command::OutputGain(g)]
            }
            Intent::Invite(id) => match self.call.as_ref().and_then(|c| c.call_id) {
                Some(_) => {
                    let name = self.name_of(id);
                    self.notify(NoticeKind::Info, format!("Ringing {name}…"));
                    vec![Command::Invite(id)]
                }
                None => vec![],
            },
            Intent::OpenSettings => {
                self.editing = Some(self.settings.clone());
                if self.devices.loaded { vec![] } else { vec![Command::ListDevices] }
            }
            Intent::CloseSettings => {
                self.editing = None;
                if self.mic_level.take().is_some() { vec![Command::MicCheck(false)] } else { vec![] }
            }
            Intent::SaveSettings => match self.editing.take() {
                Some(s) => {
                    let s = s.sanitized();
                    self.settings = s.clone();
                    let mut out = vec![Command::SaveSettings(s)];
                    if self.mic_level.take().is_some() {
                        out.push(Command::MicCheck(false));
                    }
                    out
                }
                None => vec![],
            },
            Intent::TestTone => vec![Command::TestTone],
            Intent::MicCheck(on) => {
                if !on {
                    self.mic_level = None;
                }
                vec![Command::MicCheck(on)]
            }
            Intent::Dismiss(id) => {
                self.notices.retain(|n| n.id != id);
                vec![]
            }
            Intent::Social(i) => self.social(i),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use babel_proto::{IncomingCall, MediaSetup, Peer, PeerJoined, Secret, SessionInfo};

    use super::*;
    use crate::msg::PeerLevel;

    fn user(id: i64, name: &str) -> User {
        User { id: UserId(id), name: name.into(), email: format!("{}@x.org", name.to_lowercase()) }
    }

    fn signed_in() -> Model {
        let mut m = Model::new(Settings::default());
        m.apply(Update::SignedIn { server: "127.0.0.1:7447".into(), me: user(1, "Ann") });
        m.apply(Update::Contacts {
            contacts: vec![
                ContactEntry { user: user(2, "Ben"), status: Presence::Offline },
                ContactEntry { user: user(3, "Cleo"), status: Presence::Online },
                ContactEntry { user: user(4, "Dan"), status: Presence::Pending },
                ContactEntry { user: user(5, "eve"), status: Presence::Busy },
            ],
            requests: vec![user(6, "Fay")],
        });
        m
    }

    fn peer(u: User) -> Peer {
        Peer { user: u, ip: "127.0.0.1".into(), media: MediaSetup::default() }
    }

    fn names(m: &Model) -> Vec<&str> {
        m.contacts.iter().map(|c| c.user.name.as_str()).collect()
    }

    #[test]
    fn sign_in_validates_then_sends() {
        let mut m = Model::new(Settings::default());
        assert_eq!(m.form.server, crate::settings::DEFAULT_SERVER);
        assert!(m.intent(Intent::SubmitSignIn).is_empty());
        assert_eq!(m.form.error.as_deref(), Some("Enter your email and password."));
        m.form.email = "ann".into();
        m.form.password = "pw".into();
        assert!(m.intent(Intent::SubmitSignIn).is_empty());
        assert!(m.form.error.as_deref().unwrap().contains("does not look right"));
        m.form.email = " ann@x.org ".into();
        let c = m.intent(Intent::SubmitSignIn);
        assert!(matches!(&c[..], [Command::SignIn { email, .. }] if email == "ann@x.org"));
        assert!(m.form.busy && m.form.error.is_none());
        // A second press while waiting sends nothing.
        assert!(m.intent(Intent::SubmitSignIn).is_empty());
        m.apply(Update::SignInFailed("Wrong email or password.".into()));
        assert!(!m.form.busy);
        assert_eq!(m.form.error.as_deref(), Some("Wrong email or password."));
        assert_eq!(m.phase, Phase::SignedOut);
    }

    #[test]
    fn registering_sends_the_name() {
        let mut m = Model::new(Settings::default());
        m.intent(Intent::ToggleRegister);
        m.form.email = "ann@x.org".into();
        m.form.password = "pw".into();
        m.form.name = "  ".into();
        assert!(matches!(&m.intent(Intent::SubmitSignIn)[..], [Command::Register { name: None, .. }]));
        m.form.busy = false;
        m.form.name = "Ann".into();
        assert!(matches!(&m.intent(Intent::SubmitSignIn)[..], [Command::Register { name: Some(n), .. }] if n == "Ann"));
    }

    #[test]
    fn signing_in_and_out_keeps_the_form_and_settings() {
        let mut m = signed_in();
        assert_eq!(m.phase, Phase::Main);
        assert_eq!(m.settings.email, "ann@x.org");
        m.apply(Update::SignedOut);
        assert_eq!(m.phase, Phase::SignedOut);
        assert!(m.contacts.is_empty() && m.me.is_none());
        assert_eq!(m.form.email, "ann@x.org");
        assert_eq!(m.form.server, "127.0.0.1:7447");
        let mut m = signed_in();
        m.apply(Update::SessionExpired);
        assert!(m.form.error.as_deref().unwrap().contains("sign in again"));
    }

    #[test]
    fn resuming_a_saved_session() {
        let mut m = Model::new(Settings::default());
        let saved = SavedSession {
            server: "tls://h:1".into(),
            info: SessionInfo { id: UserId(1), name: "Ann".into(), email: "ann@x.org".into(), token: Secret::new("t") },
        };
        assert!(matches!(m.resume(saved), Command::Resume(_)));
        assert_eq!(m.phase, Phase::Resuming);
        assert_eq!(m.form.server, "tls://h:1");
    }

    #[test]
    fn contacts_sort_by_presence_then_name_and_filter() {
        let mut m = signed_in();
        assert_eq!(names(&m), ["Cleo", "eve", "Ben", "Dan"]);
        m.filter = "BE".into();
        assert_eq!(m.visible_contacts().map(|c| c.user.name.as_str()).collect::<Vec<_>>(), ["Ben"]);
        m.filter = "x.org".into();
        assert_eq!(m.visible_contacts().count(), 4);
        m.filter = "zzz".into();
        assert_eq!(m.visible_contacts().count(), 0);
    }

    #[test]
    fn presence_and_contact_events() {
        let mut m = signed_in();
        m.apply(Update::Server(ServerEvent::Status(UserId(2), Presence::Online)));
        assert_eq!(names(&m), ["Ben", "Cleo", "eve", "Dan"]);
        // An accepted request becomes a contact and leaves the requests.
        m.apply(Update::Server(ServerEvent::ContactAdded(ContactEntry {
            user: user(6, "Fay"),
            status: Presence::Online,
        })));
        assert!(m.requests.is_empty());
        assert_eq!(m.contact(UserId(6)).unwrap().presence, Presence::Online);
        // My pending request accepted: the same row, now with presence.
        m.apply(Update::Server(ServerEvent::ContactAdded(ContactEntry {
            user: user(4, "Dan"),
            status: Presence::Offline,
        })));
        assert_eq!(m.contacts.len(), 5);
        m.apply(Update::Server(ServerEvent::ContactRemoved(UserId(2))));
        assert!(m.contact(UserId(2)).is_none());
        m.apply(Update::Server(ServerEvent::ContactRequest(user(7, "Gus"))));
        m.apply(Update::Server(ServerEvent::ContactRequest(user(7, "Gus"))));
        assert_eq!(m.requests.len(), 1);
        assert!(m.notices.iter().any(|n| n.text.contains("Gus")));
        // Unknown ids change nothing.
        m.apply(Update::Server(ServerEvent::Status(UserId(99), Presence::Busy)));
        assert_eq!(m.contacts.len(), 4);
    }

    #[test]
    fn requests_and_removal_need_the_right_steps() {
        let mut m = signed_in();
        assert!(matches!(&m.intent(Intent::AcceptRequest(UserId(6)))[..], [Command::AcceptContact(UserId(6))]));
        assert!(matches!(&m.intent(Intent::DeclineRequest(UserId(6)))[..], [Command::DeclineContact(UserId(6))]));
        assert!(m.requests.is_empty());
        assert!(m.intent(Intent::AskRemove(UserId(2))).is_empty());
        assert_eq!(m.confirm_remove, Some(UserId(2)));
        assert!(m.intent(Intent::CancelRemove).is_empty());
        assert!(m.intent(Intent::ConfirmRemove).is_empty(), "nothing to confirm after cancelling");
        m.intent(Intent::AskRemove(UserId(2)));
        assert!(matches!(&m.intent(Intent::ConfirmRemove)[..], [Command::RemoveContact(UserId(2))]));
        assert_eq!(m.confirm_remove, None);
    }

    #[test]
    fn adding_needs_an_email() {
        let mut m = signed_in();
        m.add_email = "nobody".into();
        assert!(m.intent(Intent::AddContact).is_empty());
        assert_eq!(m.notices.last().unwrap().kind, NoticeKind::Error);
        m.add_email = " gus@x.org ".into();
        assert!(matches!(&m.intent(Intent::AddContact)[..], [Command::AddContact(e)] if e == "gus@x.org"));
        // Refused: the text stays to be corrected.
        m.apply(Update::Error("Nobody has the email gus@x.org.".into()));
        assert_eq!(m.add_email, " gus@x.org ");
        // Sent: the box is cleared (unless something else was typed meanwhile).
        m.apply(Update::ContactRequestSent("gus@x.org".into()));
        assert!(m.add_email.is_empty());
        assert!(m.notices.last().unwrap().text.contains("sent to gus@x.org"));
        m.add_email = "hal@x.org".into();
        m.apply(Update::ContactRequestSent("gus@x.org".into()));
        assert_eq!(m.add_email, "hal@x.org");
    }

    #[test]
    fn a_request_notice_goes_once_the_request_is_answered() {
        let mut m = signed_in();
        m.apply(Update::Server(ServerEvent::ContactRequest(user(7, "Gus"))));
        m.apply(Update::Server(ServerEvent::ContactRequest(user(8, "Hal"))));
        m.notify(NoticeKind::Info, "something else");
        let wants = |m: &Model, who: &str| m.notices.iter().any(|n| n.text.contains(&format!("{who} <")));
        assert!(wants(&m, "Gus") && wants(&m, "Hal"));
        m.intent(Intent::AcceptRequest(UserId(7)));
        assert!(!wants(&m, "Gus"), "accepted: its notice goes at once");
        m.intent(Intent::DeclineRequest(UserId(8)));
        assert!(!wants(&m, "Hal"));
        assert!(m.notices.iter().any(|n| n.text == "something else"));
        // Answered on another device: the re-read list takes it away.
        m.apply(Update::Server(ServerEvent::ContactRequest(user(9, "Ivy"))));
        m.apply(Update::Contacts { contacts: vec![], requests: vec![] });
        assert!(!wants(&m, "Ivy"));
    }

    #[test]
    fn my_pending_request_is_withdrawn_without_a_confirmation() {
        let mut m = signed_in();
        assert!(matches!(&m.intent(Intent::CancelRequest(UserId(4)))[..], [Command::RemoveContact(UserId(4))]));
        assert_eq!(m.confirm_remove, None);
    }

    #[test]
    fn a_lost_connection_greys_presence_and_stops_what_needs_the_server() {
        let mut m = signed_in();
        let cleo = m.contact(UserId(3)).unwrap().clone();
        assert_eq!(m.known_presence(&cleo), Some(Presence::Online));
        m.apply(Update::ConnectionLost);
        assert!(m.connection_lost);
        assert_eq!(m.known_presence(&cleo), None, "presence is unknown, not online");
        let dan = m.contact(UserId(4)).unwrap().clone();
        assert_eq!(m.known_presence(&dan), Some(Presence::Pending), "my own request is still mine");
        assert!(m.intent(Intent::Call(UserId(3))).is_empty());
        assert!(m.call.is_none());
        m.call = Some(CallView::new(Some(CallId(1)), "Ben".into(), CallPhase::Active));
        assert!(m.invitable().is_empty(), "nobody to ring without the server");
        m.call = None;
        m.add_email = "gus@x.org".into();
        assert!(m.intent(Intent::AddContact).is_empty());
        assert_eq!(m.add_email, "gus@x.org");
        m.apply(Update::Reconnected);
        assert!(!m.connection_lost);
        assert_eq!(m.known_presence(&cleo), Some(Presence::Online));
        assert!(matches!(&m.intent(Intent::Call(UserId(3)))[..], [Command::Call(UserId(3))]));
        // Signing out (or in again) starts connected.
        m.apply(Update::ConnectionLost);
        m.apply(Update::SignedOut);
        assert!(!m.connection_lost);
    }

    #[test]
    fn an_outgoing_call_from_dialing_to_the_end() {
        let mut m = signed_in();
        assert!(matches!(&m.intent(Intent::Call(UserId(3)))[..], [Command::Call(UserId(3))]));
        let c = m.call.as_ref().unwrap();
        assert_eq!((c.phase, c.title.as_str(), c.call_id), (CallPhase::Dialing, "Cleo", None));
        // A second call while one is on is refused in words.
        assert!(m.intent(Intent::Call(UserId(2))).is_empty());
        assert!(m.notices.last().unwrap().text.contains("already in a call"));
        m.apply(Update::Ringing { call_id: CallId(9) });
        assert_eq!(m.call.as_ref().unwrap().phase, CallPhase::Ringing);
        m.apply(Update::CallStarted { call_id: CallId(9), participants: vec![user(3, "Cleo")] });
        let c = m.call.as_ref().unwrap();
        assert_eq!(c.phase, CallPhase::Active);
        assert_eq!(c.participants.len(), 1);
        m.apply(Update::Stats(StatsSnapshot {
            elapsed: Duration::from_secs(83),
            path: Some("direct"),
            rx_loss_pct: 1.5,
            jitter_ms: 4,
            input_level_db: -20.0,
            sas: "123456".into(),
            peers: vec![PeerLevel { id: UserId(3), level_db: -30.0 }],
            ..StatsSnapshot::default()
        }));
        let c = m.call.as_ref().unwrap();
        assert!(c.participants[0].speaking());
        assert!(c.me_speaking());
        assert_eq!(c.history.len(), 1);
        assert_eq!(c.history[0], Sample { loss_pct: 1.5, jitter_ms: 4.0 });
        // Someone joined or left: a new code, and a notice to read it again.
        let notices = m.notices.len();
        m.apply(Update::Stats(StatsSnapshot { sas: "123456".into(), ..StatsSnapshot::default() }));
        assert_eq!(m.notices.len(), notices, "the same code says nothing");
        m.apply(Update::Stats(StatsSnapshot { sas: "654321".into(), ..StatsSnapshot::default() }));
        assert!(m.notices.last().unwrap().text.contains("security code changed: 654321"));
        m.apply(Update::Stats(StatsSnapshot {
            elapsed: Duration::from_secs(83),
            path: Some("direct"),
            rx_loss_pct: 1.5,
            jitter_ms: 4,
            input_level_db: -20.0,
            sas: "654321".into(),
            peers: vec![PeerLevel { id: UserId(3), level_db: -30.0 }],
            ..StatsSnapshot::default()
        }));
        assert!(matches!(&m.intent(Intent::ToggleMute)[..], [Command::Mute(true)]));
        assert!(!m.call.as_ref().unwrap().me_speaking(), "muted: not speaking");
        assert!(matches!(&m.intent(Intent::Hangup)[..], [Command::Hangup]));
        assert!(m.call.is_none());
        assert_eq!(m.last_call.as_deref(), Some("Call with Cleo ended: you hung up · 01:23"));
        // The backend's own report of the end changes nothing more.
        m.apply(Update::CallOver { call_id: CallId(9), reason: "x".into() });
        assert!(m.last_call.unwrap().contains("you hung up"));
    }

    #[test]
    fn a_call_hung_up_while_connecting_stays_hung_up() {
        let mut m = signed_in();
        ring(&mut m, 3, user(3, "Cleo"));
        m.intent(Intent::AcceptCall);
        m.intent(Intent::Hangup);
        m.apply(Update::CallStarted { call_id: CallId(3), participants: vec![user(3, "Cleo")] });
        assert!(m.call.is_none());
        assert_eq!(m.last_call.as_deref(), Some("Call with Cleo ended: you hung up"));
    }

    #[test]
    fn the_plot_keeps_a_minute() {
        let mut m = signed_in();
        m.intent(Intent::Call(UserId(3)));
        m.apply(Update::CallStarted { call_id: CallId(1), participants: vec![user(3, "Cleo")] });
        for _ in 0..HISTORY + 10 {
            m.apply(Update::Stats(StatsSnapshot::default()));
        }
        assert_eq!(m.call.unwrap().history.len(), HISTORY);
    }

    #[test]
    fn a_refused_call_says_why() {
        let mut m = signed_in();
        m.intent(Intent::Call(UserId(2)));
        m.apply(Update::CallFailed("Ben is offline.".into()));
        assert!(m.call.is_none());
        assert_eq!(m.notices.last().unwrap().text, "Ben is offline.");
    }

    #[test]
    fn the_other_side_ends_the_call() {
        let mut m = signed_in();
        m.intent(Intent::Call(UserId(3)));
        m.apply(Update::Ringing { call_id: CallId(4) });
        m.apply(Update::Server(ServerEvent::CallEnded(CallId(5), EndReason::Declined)));
        assert!(m.call.is_some(), "another call's end changes nothing");
        m.apply(Update::Server(ServerEvent::CallEnded(CallId(4), EndReason::Declined)));
        assert!(m.call.is_none());
        assert_eq!(m.last_call.as_deref(), Some("Call with Cleo ended: declined"));
        // Who hung up is said.
        m.intent(Intent::Call(UserId(3)));
        m.apply(Update::Ringing { call_id: CallId(6) });
        m.apply(Update::CallStarted { call_id: CallId(6), participants: vec![user(3, "Cleo")] });
        m.apply(Update::Server(ServerEvent::CallEnded(CallId(6), EndReason::Hangup)));
        assert_eq!(m.last_call.as_deref(), Some("Call with Cleo ended: Cleo hung up · 00:00"));
    }

    fn ring(m: &mut Model, call: u64, from: User) {
        m.apply(Update::Server(ServerEvent::IncomingCall(IncomingCall {
            call_id: CallId(call),
            ip: "127.0.0.1".into(),
            caller: from.clone(),
            media: MediaSetup::default(),
            participants: vec![peer(from)],
        })));
    }

    #[test]
    fn incoming_calls_accept_decline_and_missed() {
        let mut m = signed_in();
        ring(&mut m, 7, user(3, "Cleo"));
        let inc = m.incoming.clone().unwrap();
        assert_eq!((inc.caller.name.as_str(), inc.others), ("Cleo", 0));
        assert!(matches!(&m.intent(Intent::DeclineCall)[..], [Command::DeclineCall(CallId(7))]));
        assert!(m.incoming.is_none());
        ring(&mut m, 8, user(3, "Cleo"));
        m.apply(Update::Server(ServerEvent::CallEnded(CallId(8), EndReason::Timeout)));
        assert!(m.incoming.is_none());
        assert!(m.notices.last().unwrap().text.contains("Missed call from Cleo"));
        ring(&mut m, 9, user(3, "Cleo"));
        assert!(matches!(&m.intent(Intent::AcceptCall)[..], [Command::AcceptCall(CallId(9))]));
        assert_eq!(m.call.as_ref().unwrap().phase, CallPhase::Connecting);
        m.apply(Update::CallStarted { call_id: CallId(9), participants: vec![user(3, "Cleo")] });
        assert_eq!(m.call.as_ref().unwrap().phase, CallPhase::Active);
        // Answering a second call leaves the first.
        ring(&mut m, 10, user(2, "Ben"));
        assert!(matches!(&m.intent(Intent::AcceptCall)[..], [Command::Hangup, Command::AcceptCall(CallId(10))]));
        assert_eq!(m.call.as_ref().unwrap().title, "Ben");
    }

    #[test]
    fn group_calls_track_participants() {
        let mut m = signed_in();
        m.intent(Intent::Call(UserId(3)));
        m.apply(Update::Ringing { call_id: CallId(1) });
        assert!(m.invitable().is_empty(), "no invitations before the call is answered");
        m.apply(Update::CallStarted { call_id: CallId(1), participants: vec![user(3, "Cleo")] });
        m.apply(Update::Server(ServerEvent::Status(UserId(2), Presence::Online)));
        let inv: Vec<_> = m.invitable().iter().map(|c| c.user.id).collect();
        assert_eq!(inv, [UserId(2)]);
        assert!(matches!(&m.intent(Intent::Invite(UserId(2)))[..], [Command::Invite(UserId(2))]));
        m.apply(Update::Server(ServerEvent::ParticipantJoined(PeerJoined {
            call_id: CallId(1),
            peer: peer(user(2, "Ben")),
            epoch: None,
        })));
        let c = m.call.as_ref().unwrap();
        assert_eq!(c.title, "Cleo, Ben");
        assert!(m.invitable().is_empty());
        m.apply(Update::Server(ServerEvent::CallDeclined(CallId(1), UserId(5))));
        assert!(m.notices.last().unwrap().text.contains("eve did not join"));
        m.apply(Update::Server(ServerEvent::ParticipantLeft(CallId(1), UserId(3), babel_proto::Epoch(2))));
        assert_eq!(m.call.as_ref().unwrap().title, "Ben");
    }

    #[test]
    fn settings_are_edited_then_saved_or_dropped() {
        let mut m = signed_in();
        assert!(matches!(&m.intent(Intent::OpenSettings)[..], [Command::ListDevices]));
        m.apply(Update::Devices { inputs: vec!["Mic".into()], outputs: vec![], error: None });
        m.editing.as_mut().unwrap().noise_suppression = false;
        assert!(m.intent(Intent::CloseSettings).is_empty());
        assert!(m.settings.noise_suppression, "closing drops the edit");
        assert!(m.intent(Intent::OpenSettings).is_empty(), "devices are listed once");
        m.editing.as_mut().unwrap().frame_ms = 10;
        m.intent(Intent::MicCheck(true));
        m.apply(Update::MicLevel(Some(-30.0)));
        let c = m.intent(Intent::SaveSettings);
        assert!(matches!(&c[..], [Command::SaveSettings(s), Command::MicCheck(false)] if s.frame_ms == 10));
        assert_eq!(m.settings.frame_ms, 10);
        assert!(m.editing.is_none() && m.mic_level.is_none());
        assert!(matches!(&m.intent(Intent::SetOutputGain(5.0))[..], [Command::OutputGain(g)] if *g == 2.0));
    }

    #[test]
    fn notices_are_capped_and_dismissed() {
        let mut m = signed_in();
        for i in 0..8 {
            m.apply(Update::Error(format!("e{i}")));
        }
        assert_eq!(m.notices.len(), MAX_NOTICES);
        assert_eq!(m.notices[0].text, "e3");
        let id = m.notices[0].id;
        m.intent(Intent::Dismiss(id));
        assert_eq!(m.notices.len(), MAX_NOTICES - 1);
    }

    #[test]
    fn clocks() {
        assert_eq!(clock(Duration::from_secs(5)), "00:05");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }
}
