//! The two message types between the window and the backend thread: what
//! the window asks for ([`Command`]) and what happened ([`Update`]). Plain
//! data, so the model can be tested with them alone.

use std::time::Duration;

use babel_proto::{CallId, ContactEntry, ServerEvent, User, UserId};

use crate::settings::{SavedSession, Settings};
use crate::social::{MyStatus, SocialUpdate};

/// What the window asks the backend to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Log in with an existing account.
    SignIn {
        /// `host:port` or `tls://host:port`.
        server: String,
        /// The account.
        email: String,
        /// Its password.
        password: String,
    },
    /// Create an account and log in with it.
    Register {
        /// `host:port` or `tls://host:port`.
        server: String,
        /// The new account's email.
        email: String,
        /// Its password.
        password: String,
        /// The name others see (the email's first part when empty).
        name: Option<String>,
    },
    /// Take up a session saved by an earlier run.
    Resume(SavedSession),
    /// End the session and forget it.
    SignOut,
    /// Ask someone (by email) to become a contact.
    AddContact(String),
    /// Accept a contact request.
    AcceptContact(UserId),
    /// Decline a contact request.
    DeclineContact(UserId),
    /// Remove a contact (or withdraw my request).
    RemoveContact(UserId),
    /// Call a contact.
    Call(UserId),
    /// Answer a ringing call.
    AcceptCall(CallId),
    /// Decline a ringing call.
    DeclineCall(CallId),
    /// Leave the current call (or stop ringing someone).
    Hangup,
    /// Ring a contact into the current call.
    Invite(UserId),
    /// Mute or unmute my microphone.
    Mute(bool),
    /// Microphone volume (linear, 0..=2).
    InputGain(f32),
    /// Loudspeaker volume (linear, 0..=2).
    OutputGain(f32),
    /// Save settings (and apply what can change during a call).
    SaveSettings(Settings),
    /// List the audio devices.
    ListDevices,
    /// Play a short tone on the loudspeaker.
    TestTone,
    /// Start or stop showing the microphone's level.
    MicCheck(bool),
    /// Stop everything: the window is closing.
    Shutdown,
    /// Load a page of a conversation (`before`: older than this message).
    LoadMessages {
        /// The contact.
        contact: UserId,
        /// Older than this message id (`None`: the newest page).
        before: Option<i64>,
    },
    /// Send a message.
    SendMessage {
        /// To whom.
        contact: UserId,
        /// What.
        text: String,
        /// Makes a retry harmless.
        client_id: String,
    },
    /// Mark received messages read, up to one.
    MarkRead {
        /// The contact.
        contact: UserId,
        /// Up to this message id.
        message_id: i64,
    },
    /// Tell the desktop a message came (the window has no focus).
    NotifyMessage {
        /// The sender's name.
        from: String,
        /// What it says.
        text: String,
    },
    /// Load a page of the call history.
    LoadHistory {
        /// Older than this entry (`None`: the newest page).
        before: Option<i64>,
    },
    /// Change my name.
    Rename(String),
    /// Change my password.
    ChangePassword {
        /// The current one.
        password: String,
        /// The new one.
        new_password: String,
    },
    /// List my sessions.
    LoadSessions,
    /// End one of my sessions.
    EndSession(i64),
    /// Delete my account.
    DeleteAccount {
        /// Its password.
        password: String,
    },
    /// Set my status.
    SetStatus(MyStatus),
    /// Block someone.
    Block(UserId),
    /// Unblock someone.
    Unblock(UserId),
    /// List the people I blocked.
    LoadBlocked,
}

/// One participant's live figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerLevel {
    /// Who.
    pub id: UserId,
    /// Their voice level, dBFS.
    pub level_db: f32,
}

/// A call's live figures, as the window shows them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsSnapshot {
    /// Time since the media started.
    pub elapsed: Duration,
    /// "direct", "relay" or "channel" (`None` while paths are tried).
    pub path: Option<&'static str>,
    /// Round-trip time, ms.
    pub rtt_ms: Option<u32>,
    /// Loss the others measure on what I send, percent.
    pub loss_pct: f32,
    /// Loss I measure on what I receive, percent.
    pub rx_loss_pct: f32,
    /// Jitter I measure, ms.
    pub jitter_ms: u64,
    /// Opus bitrate, bits/s.
    pub bitrate: u32,
    /// My microphone's level, dBFS.
    pub input_level_db: f32,
    /// The short authentication string to read to each other.
    pub sas: String,
    /// Each other participant's level.
    pub peers: Vec<PeerLevel>,
}

/// What happened, for the window.
#[derive(Debug, Clone)]
pub enum Update {
    /// Signed in (or a saved session was taken up).
    SignedIn {
        /// The server.
        server: String,
        /// Me.
        me: User,
    },
    /// Signing in failed; the reason in words.
    SignInFailed(String),
    /// The saved session is no longer valid.
    SessionExpired,
    /// Signed out.
    SignedOut,
    /// The whole contact list, re-read.
    Contacts {
        /// Contacts with presence, and my pending requests.
        contacts: Vec<ContactEntry>,
        /// Requests waiting for my answer.
        requests: Vec<User>,
    },
    /// A server event (contacts, presence, calls).
    Server(ServerEvent),
    /// The push channel was lost (closed, or silent past the pings): the
    /// backend is reconnecting.
    ConnectionLost,
    /// The push channel was lost and is back.
    Reconnected,
    /// A contact request went out to this email.
    ContactRequestSent(String),
    /// My call rings at the other end.
    Ringing {
        /// The call.
        call_id: CallId,
    },
    /// A call could not be made or answered; the reason in words.
    CallFailed(String),
    /// Voice flows: the call is on, with these people.
    CallStarted {
        /// The call.
        call_id: CallId,
        /// The other participants.
        participants: Vec<User>,
    },
    /// Live figures of the current call.
    Stats(StatsSnapshot),
    /// The call is over for me.
    CallOver {
        /// The call.
        call_id: CallId,
        /// Why, in words ("you hung up").
        reason: String,
    },
    /// The audio devices.
    Devices {
        /// Microphones.
        inputs: Vec<String>,
        /// Loudspeakers.
        outputs: Vec<String>,
        /// Why the list could not be read, if it could not.
        error: Option<String>,
    },
    /// The microphone level during a check (`None`: the check ended).
    MicLevel(Option<f32>),
    /// Something failed; in words.
    Error(String),
    /// Something a person should know; in words.
    Info(String),
    /// Messages, history, account, status, blocking.
    Social(SocialUpdate),
}
