//! Everything beyond calls, as plain data: conversations (messages, unread
//! counts, read marks, scroll back), the call history, the account page
//! (name, password, sessions, deleting the account), my status and the
//! blocked list. Like [`crate::model`], no IO: [`Model::social`] takes what
//! the person does, [`Model::apply_social`] what the backend reports, and
//! both answer through the model's commands.

use std::collections::{BTreeMap, HashMap};

use babel_proto::{CallId, Presence, User, UserId};

use crate::model::{Model, NoticeKind, Phase};
use crate::msg::Command;

/// How many messages one `/messages` page asks for.
pub const PAGE: u32 = 50;
/// How many call-history entries one page asks for.
pub const HISTORY_PAGE: u32 = 50;
/// The longest message the server takes (DESIGN.md §5).
pub const MAX_TEXT: usize = 4000;

/// One message, as the window shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The server's id (increasing).
    pub id: i64,
    /// Who wrote it.
    pub from: UserId,
    /// To whom.
    pub to: UserId,
    /// What it says.
    pub text: String,
    /// When the server took it (RFC 3339).
    pub sent_at: String,
    /// Whether its recipient has read it.
    pub read: bool,
}

/// A message of mine on its way to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Makes a retry harmless (`client_id`).
    pub client_id: String,
    /// What it says.
    pub text: String,
    /// Why it could not be sent, if it could not.
    pub failed: Option<String>,
}

/// One conversation with a contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Messages loaded so far, oldest first (by id).
    pub messages: Vec<ChatMessage>,
    /// Mine, sent but not yet acknowledged (or failed).
    pub outgoing: Vec<Outgoing>,
    /// The first page was asked for.
    pub opened: bool,
    /// An older page is on its way.
    pub loading: bool,
    /// Every older message is loaded.
    pub complete: bool,
    /// Received messages I have not read.
    pub unread: u32,
    /// What I am typing.
    pub draft: String,
    /// The newest received message I marked read.
    pub marked: i64,
    /// The newest message that arrived live (a repeat counts once).
    seen: i64,
    /// Opened by the person while the window had no focus reported (a
    /// click, a demo): read all the same until the focus goes.
    looked: bool,
    /// After an older page: the message that was on top, for the view to
    /// keep in place (taken by the view).
    pub anchor: Option<i64>,
}

impl From<babel_proto::Message> for ChatMessage {
    fn from(m: babel_proto::Message) -> Self {
        ChatMessage { id: m.message_id.0, from: m.from, to: m.to, text: m.text, sent_at: m.sent_at, read: m.read }
    }
}

impl From<babel_proto::CallHistoryEntry> for HistoryEntry {
    fn from(e: babel_proto::CallHistoryEntry) -> Self {
        HistoryEntry {
            entry_id: e.entry_id.0,
            call_id: e.call_id,
            direction: e.direction,
            with: e.with,
            started_at: e.started_at,
            answered_at: Some(e.answered_at).filter(|a| !a.is_empty()),
            ended_at: e.ended_at,
            reason: crate::model::end_reason_text(e.reason).to_owned(),
        }
    }
}

impl Conversation {
    /// The oldest loaded message's id.
    pub fn oldest(&self) -> Option<i64> {
        self.messages.first().map(|m| m.id)
    }

    /// Adds messages (any order, duplicates ignored), keeping id order.
    fn insert(&mut self, msgs: impl IntoIterator<Item = ChatMessage>) {
        for m in msgs {
            match self.messages.binary_search_by_key(&m.id, |x| x.id) {
                Ok(i) => self.messages[i].read |= m.read,
                Err(i) => self.messages.insert(i, m),
            }
        }
    }

    /// The newest message received from `contact`.
    fn newest_from(&self, contact: UserId) -> Option<i64> {
        self.messages.iter().rev().find(|m| m.from == contact).map(|m| m.id)
    }
}

pub use babel_proto::Direction;

/// One row of the call history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The server's id (increasing).
    pub entry_id: i64,
    /// The call.
    pub call_id: CallId,
    /// Which way.
    pub direction: Direction,
    /// The others in it.
    pub with: Vec<User>,
    /// When it started ringing (RFC 3339).
    pub started_at: String,
    /// When it was answered (`None`: never).
    pub answered_at: Option<String>,
    /// When it ended.
    pub ended_at: String,
    /// Why it ended.
    pub reason: String,
}

impl HistoryEntry {
    /// A call that rang for me and was never answered.
    pub fn missed(&self) -> bool {
        self.direction == Direction::In && self.answered_at.is_none()
    }

    /// Whom it was with, as a title.
    pub fn title(&self) -> String {
        if self.with.is_empty() {
            return "nobody".into();
        }
        self.with.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// The call history as loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallHistory {
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
    /// A page is on its way.
    pub loading: bool,
    /// Every older entry is loaded.
    pub complete: bool,
    /// The first page was asked for.
    pub opened: bool,
}

/// One session of mine (`/sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Its id.
    pub session_id: i64,
    /// When it signed in.
    pub created_at: String,
    /// When it was last used.
    pub last_used: String,
    /// Where from.
    pub address: String,
    /// This window's own session.
    pub current: bool,
}

/// The account page's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountPage {
    /// The name being edited.
    pub name: String,
    /// The current password (to change it).
    pub password: String,
    /// The new password.
    pub new_password: String,
    /// The new password again.
    pub repeat: String,
    /// My sessions (`None`: not loaded yet).
    pub sessions: Option<Vec<SessionRow>>,
    /// The password to delete the account with.
    pub delete_password: String,
    /// Deleting asked for its confirmation.
    pub confirm_delete: bool,
    /// What the page says under its forms (the last result).
    pub error: Option<String>,
}

/// My own status, as I choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MyStatus {
    /// Reachable.
    #[default]
    Available,
    /// Reachable, but away.
    Away,
    /// Not rung.
    Dnd,
    /// Shown offline.
    Invisible,
}

impl From<MyStatus> for babel_proto::ChosenStatus {
    fn from(s: MyStatus) -> Self {
        match s {
            MyStatus::Available => babel_proto::ChosenStatus::Available,
            MyStatus::Away => babel_proto::ChosenStatus::Away,
            MyStatus::Dnd => babel_proto::ChosenStatus::Dnd,
            MyStatus::Invisible => babel_proto::ChosenStatus::Invisible,
        }
    }
}

impl MyStatus {
    /// Every choice, in the chooser's order.
    pub const ALL: [MyStatus; 4] = [MyStatus::Available, MyStatus::Away, MyStatus::Dnd, MyStatus::Invisible];

    /// The wire spelling (`/set_status`).
    pub fn as_str(self) -> &'static str {
        match self {
            MyStatus::Available => "available",
            MyStatus::Away => "away",
            MyStatus::Dnd => "dnd",
            MyStatus::Invisible => "invisible",
        }
    }

    /// From its wire spelling (anything else: available).
    pub fn parse(s: &str) -> MyStatus {
        MyStatus::ALL.into_iter().find(|m| m.as_str() == s).unwrap_or_default()
    }

    /// In words.
    pub fn label(self) -> &'static str {
        match self {
            MyStatus::Available => "Available",
            MyStatus::Away => "Away",
            MyStatus::Dnd => "Do not disturb",
            MyStatus::Invisible => "Invisible",
        }
    }
}

/// What fills the middle of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Page {
    /// The call, or "no call".
    #[default]
    Home,
    /// A conversation.
    Chat(UserId),
    /// The call history.
    History,
    /// The account page.
    Account,
}

/// Everything here, in the model.
#[derive(Debug, Clone, Default)]
pub struct Social {
    /// What the middle shows.
    pub page: Page,
    /// Conversations by contact.
    pub chats: HashMap<UserId, Conversation>,
    /// The call history.
    pub history: CallHistory,
    /// The account page.
    pub account: AccountPage,
    /// My chosen status.
    pub status: MyStatus,
    /// People I blocked (`None`: not loaded yet).
    pub blocked: Option<Vec<User>>,
    /// A block waiting for its confirmation.
    pub confirm_block: Option<UserId>,
    /// Whether the window has the keyboard focus (unread messages and
    /// notifications depend on it).
    pub focused: bool,
    /// For `client_id`s.
    next_client_id: i64,
    /// Names of people met in messages and history who are not contacts.
    names: BTreeMap<i64, String>,
}

/// What the person did (beyond calls).
#[derive(Debug, Clone, PartialEq)]
pub enum SocialIntent {
    /// Opened a contact's conversation.
    OpenChat(UserId),
    /// Scrolled to the top of the conversation: older messages, please.
    LoadOlder(UserId),
    /// Pressed Enter (or Send) in a conversation.
    Send(UserId),
    /// Tried a failed message again.
    Retry(UserId, String),
    /// Opened the call history.
    OpenHistory,
    /// Asked for older history.
    MoreHistory,
    /// Called back from the history.
    CallBack(UserId),
    /// Opened the account page.
    OpenAccount,
    /// Back to the call (or "no call").
    Home,
    /// Saved a new name.
    Rename,
    /// Changed the password.
    ChangePassword,
    /// Ended one of my other sessions.
    EndSession(i64),
    /// Asked to delete the account (a confirmation follows).
    AskDelete,
    /// Confirmed the deletion.
    ConfirmDelete,
    /// Changed their mind.
    CancelDelete,
    /// Chose a status.
    SetStatus(MyStatus),
    /// Asked to block a contact (a confirmation follows).
    AskBlock(UserId),
    /// Confirmed the block.
    ConfirmBlock,
    /// Changed their mind.
    CancelBlock,
    /// Unblocked someone.
    Unblock(UserId),
    /// The window gained or lost the keyboard focus.
    Focus(bool),
}

/// What the backend reports (beyond calls).
#[derive(Debug, Clone)]
pub enum SocialUpdate {
    /// A page of a conversation (`before`: the page asked for older ones
    /// than it; `None`: the newest).
    Messages {
        /// The contact.
        contact: UserId,
        /// What the page was asked before.
        before: Option<i64>,
        /// The messages, any order.
        messages: Vec<ChatMessage>,
    },
    /// Loading a conversation failed.
    MessagesFailed(UserId, String),
    /// Unread counts per contact, as the server has them.
    Unread(Vec<(UserId, u32)>),
    /// A message arrived (from a contact, or mine from another session).
    Message {
        /// The message.
        message: ChatMessage,
        /// Who wrote it.
        sender: User,
    },
    /// My message was stored.
    Sent {
        /// The contact.
        contact: UserId,
        /// The `client_id` it went with.
        client_id: String,
        /// As stored.
        message: ChatMessage,
    },
    /// My message could not be sent.
    SendFailed {
        /// The contact.
        contact: UserId,
        /// The `client_id` it went with.
        client_id: String,
        /// Why, in words.
        reason: String,
    },
    /// `/messages_read`: messages up to `message_id` in the conversation
    /// with `contact` were read (by them: mine; by me elsewhere: theirs).
    Read {
        /// The other party.
        contact: UserId,
        /// Up to this one.
        message_id: i64,
    },
    /// A page of call history (`before`: asked older than it).
    History {
        /// What the page was asked before.
        before: Option<i64>,
        /// Newest first.
        entries: Vec<HistoryEntry>,
    },
    /// My name changed (here or elsewhere).
    Renamed(User),
    /// The password was changed.
    PasswordChanged,
    /// Something on the account page failed; in words.
    AccountFailed(String),
    /// My sessions.
    Sessions(Vec<SessionRow>),
    /// My status was set.
    StatusSet(MyStatus),
    /// The people I blocked.
    Blocked(Vec<User>),
    /// This session was ended (`/session_ended`); the server's reason.
    SessionEnded(String),
    /// The account was deleted.
    AccountDeleted,
}

/// A `/session_ended` reason in words.
pub fn session_end_text(reason: &str) -> String {
    match reason {
        "ended" => "This session was ended from another of your devices. Sign in again to continue.".into(),
        "password_changed" => "Your password was changed on another device: sign in with the new one.".into(),
        "expired" => "Your session has expired: sign in again.".into(),
        "deleted" => "This account was deleted.".into(),
        _ => "Your session has ended: sign in again.".into(),
    }
}

/// The day and time of an RFC 3339 stamp, short ("2026-11-29 18:20").
pub fn short_time(stamp: &str) -> String {
    let s = stamp.trim_end_matches('Z');
    match s.split_once('T') {
        Some((day, time)) => format!("{day} {}", time.get(..5).unwrap_or(time)),
        None => stamp.to_owned(),
    }
}

impl Model {
    /// The conversation with a contact (an empty one if none yet).
    pub fn chat(&self, id: UserId) -> Option<&Conversation> {
        self.social.chats.get(&id)
    }

    /// Whether a contact can be rung now: online or away (not "do not
    /// disturb", busy or offline), known to be so, and no call of mine on.
    pub fn callable(&self, id: UserId) -> bool {
        self.call.is_none()
            && self
                .contact(id)
                .is_some_and(|c| matches!(self.known_presence(c), Some(Presence::Online | Presence::Away)))
    }

    /// Unread messages from a contact.
    pub fn unread(&self, id: UserId) -> u32 {
        self.social.chats.get(&id).map_or(0, |c| c.unread)
    }

    /// A person's name: a contact's, one seen in messages, or their id.
    pub fn someone(&self, id: UserId) -> String {
        if let Some(c) = self.contact(id) {
            return c.user.name.clone();
        }
        if self.me.as_ref().is_some_and(|m| m.id == id) {
            return "You".into();
        }
        self.social.names.get(&id.0).cloned().unwrap_or_else(|| format!("user {}", id.0))
    }

    fn my_id(&self) -> UserId {
        self.me.as_ref().map_or(UserId(0), |m| m.id)
    }

    /// Whether a conversation is in front of the person now.
    fn reading(&self, contact: UserId) -> bool {
        let looked = self.social.chats.get(&contact).is_some_and(|c| c.looked);
        (self.social.focused || looked) && self.social.page == Page::Chat(contact) && self.editing.is_none()
    }

    /// Marks everything received in the open conversation as read, if it
    /// is being read and something new came.
    fn mark_if_reading(&mut self, contact: UserId) {
        if !self.reading(contact) || self.connection_lost {
            return;
        }
        let Some(chat) = self.social.chats.get_mut(&contact) else { return };
        chat.unread = 0;
        if let Some(newest) = chat.newest_from(contact).filter(|n| *n > chat.marked) {
            chat.marked = newest;
            self.outbox.push(Command::MarkRead { contact, message_id: newest });
        }
    }

    /// Signing in as `me`: my status is the one this window last set for
    /// this account (the server keeps it, but cannot be asked for it).
    pub(crate) fn status_on_sign_in(&mut self, me: &User) {
        let same = self.settings.email.eq_ignore_ascii_case(&me.email);
        self.social.status = if same { MyStatus::parse(&self.settings.status) } else { MyStatus::Available };
        if !same {
            self.settings.status.clear();
        }
    }

    /// Takes in what the person did here; answers the commands.
    pub fn social(&mut self, intent: SocialIntent) -> Vec<Command> {
        let mut out = Vec::new();
        match intent {
            SocialIntent::OpenChat(id) => {
                // The name stays if they stop being a contact meanwhile.
                if let Some(c) = self.contact(id) {
                    self.social.names.insert(id.0, c.user.name.clone());
                }
                self.social.page = Page::Chat(id);
                self.editing = None;
                let chat = self.social.chats.entry(id).or_default();
                // Opening it is looking at it.
                chat.looked = true;
                if !chat.opened {
                    chat.opened = true;
                    chat.loading = true;
                    out.push(Command::LoadMessages { contact: id, before: None });
                }
                self.mark_if_reading(id);
            }
            SocialIntent::LoadOlder(id) => {
                let chat = self.social.chats.entry(id).or_default();
                if chat.opened && !chat.loading && !chat.complete {
                    chat.loading = true;
                    out.push(Command::LoadMessages { contact: id, before: chat.oldest() });
                }
            }
            SocialIntent::Send(id) => {
                let chat = self.social.chats.entry(id).or_default();
                let text = chat.draft.trim().to_owned();
                if text.is_empty() {
                    return out;
                }
                if text.chars().count() > MAX_TEXT {
                    self.notify(NoticeKind::Error, format!("A message holds at most {MAX_TEXT} characters."));
                    return out;
                }
                chat.draft.clear();
                self.social.next_client_id += 1;
                let client_id = format!("{}-{}", self.my_id().0, self.social.next_client_id);
                let chat = self.social.chats.entry(id).or_default();
                chat.outgoing.push(Outgoing { client_id: client_id.clone(), text: text.clone(), failed: None });
                out.push(Command::SendMessage { contact: id, text, client_id });
            }
            SocialIntent::Retry(id, client_id) => {
                if let Some(o) = self
                    .social
                    .chats
                    .get_mut(&id)
                    .and_then(|c| c.outgoing.iter_mut().find(|o| o.client_id == client_id))
                {
                    o.failed = None;
                    out.push(Command::SendMessage { contact: id, text: o.text.clone(), client_id });
                }
            }
            SocialIntent::OpenHistory => {
                self.social.page = Page::History;
                self.editing = None;
                // Always fresh: calls happened since.
                self.social.history.opened = true;
                self.social.history.loading = true;
                out.push(Command::LoadHistory { before: None });
            }
            SocialIntent::MoreHistory => {
                let h = &mut self.social.history;
                if !h.loading && !h.complete {
                    h.loading = true;
                    out.push(Command::LoadHistory { before: h.entries.last().map(|e| e.entry_id) });
                }
            }
            SocialIntent::CallBack(id) => {
                let cmds = self.intent(crate::model::Intent::Call(id));
                if self.call.is_some() {
                    self.social.page = Page::Home;
                }
                out.extend(cmds);
            }
            SocialIntent::OpenAccount => {
                self.social.page = Page::Account;
                self.editing = None;
                let name = self.me.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                self.social.account = AccountPage { name, ..AccountPage::default() };
                out.push(Command::LoadSessions);
                out.push(Command::LoadBlocked);
            }
            SocialIntent::Home => self.social.page = Page::Home,
            SocialIntent::Rename => {
                let name = self.social.account.name.trim().to_owned();
                if name.is_empty() {
                    self.social.account.error = Some("Enter a name.".into());
                } else if self.me.as_ref().is_some_and(|m| m.name == name) {
                    self.social.account.error = Some("That is already your name.".into());
                } else {
                    self.social.account.error = None;
                    out.push(Command::Rename(name));
                }
            }
            SocialIntent::ChangePassword => {
                let a = &mut self.social.account;
                if a.password.is_empty() || a.new_password.is_empty() {
                    a.error = Some("Enter your current password and the new one.".into());
                } else if a.new_password != a.repeat {
                    a.error = Some("The new password and its repetition differ.".into());
                } else {
                    a.error = None;
                    out.push(Command::ChangePassword {
                        password: a.password.clone(),
                        new_password: a.new_password.clone(),
                    });
                }
            }
            SocialIntent::EndSession(id) => out.push(Command::EndSession(id)),
            SocialIntent::AskDelete => {
                if self.social.account.delete_password.is_empty() {
                    self.social.account.error = Some("Enter your password to delete the account.".into());
                } else {
                    self.social.account.confirm_delete = true;
                }
            }
            SocialIntent::ConfirmDelete => {
                let a = &mut self.social.account;
                if a.confirm_delete {
                    a.confirm_delete = false;
                    out.push(Command::DeleteAccount { password: std::mem::take(&mut a.delete_password) });
                }
            }
            SocialIntent::CancelDelete => self.social.account.confirm_delete = false,
            SocialIntent::SetStatus(s) => {
                if s != self.social.status {
                    out.push(Command::SetStatus(s));
                }
            }
            SocialIntent::AskBlock(id) => self.social.confirm_block = Some(id),
            SocialIntent::ConfirmBlock => {
                if let Some(id) = self.social.confirm_block.take() {
                    out.push(Command::Block(id));
                }
            }
            SocialIntent::CancelBlock => self.social.confirm_block = None,
            SocialIntent::Unblock(id) => out.push(Command::Unblock(id)),
            SocialIntent::Focus(f) => {
                self.social.focused = f;
                if !f {
                    for c in self.social.chats.values_mut() {
                        c.looked = false;
                    }
                }
                if let Page::Chat(id) = self.social.page {
                    self.mark_if_reading(id);
                }
            }
        }
        out
    }

    /// Takes in what the backend reports here.
    pub fn apply_social(&mut self, update: SocialUpdate) {
        match update {
            SocialUpdate::Messages { contact, before, messages } => {
                let full = messages.len() as u32 >= PAGE;
                let chat = self.social.chats.entry(contact).or_default();
                chat.loading = false;
                chat.opened = true;
                // Only a page of older ones tells whether more are left.
                if before.is_some() || chat.messages.is_empty() {
                    chat.complete |= !full;
                }
                if before.is_some() && !messages.is_empty() {
                    chat.anchor = before;
                }
                chat.insert(messages);
                self.mark_if_reading(contact);
            }
            SocialUpdate::MessagesFailed(contact, reason) => {
                if let Some(c) = self.social.chats.get_mut(&contact) {
                    c.loading = false;
                }
                self.notify(NoticeKind::Error, reason);
            }
            SocialUpdate::Unread(counts) => {
                for chat in self.social.chats.values_mut() {
                    chat.unread = 0;
                }
                for (id, n) in counts {
                    self.social.chats.entry(id).or_default().unread = n;
                }
                // Counts come after signing in and after a reconnection:
                // the open conversation catches up on what it missed.
                if let Page::Chat(id) = self.social.page {
                    if self.social.chats.get(&id).is_some_and(|c| c.opened && !c.loading) {
                        self.outbox.push(Command::LoadMessages { contact: id, before: None });
                    }
                    self.mark_if_reading(id);
                }
            }
            SocialUpdate::Message { message, sender } => {
                let me = self.my_id();
                let contact = if message.from == me { message.to } else { message.from };
                if message.from != me {
                    self.social.names.insert(sender.id.0, sender.name.clone());
                }
                let mine = message.from == me;
                let text = message.text.clone();
                let chat = self.social.chats.entry(contact).or_default();
                let known = chat.seen >= message.id || chat.messages.iter().any(|m| m.id == message.id);
                chat.seen = chat.seen.max(message.id);
                // A conversation never opened loads from the server when
                // opened; until then it only counts.
                if chat.opened {
                    chat.insert([message]);
                }
                if mine || known {
                    return;
                }
                if self.reading(contact) {
                    self.mark_if_reading(contact);
                } else {
                    let chat = self.social.chats.entry(contact).or_default();
                    chat.unread += 1;
                    if !self.social.focused {
                        self.outbox.push(Command::NotifyMessage { from: sender.name, text });
                    }
                }
            }
            SocialUpdate::Sent { contact, client_id, message } => {
                let chat = self.social.chats.entry(contact).or_default();
                chat.outgoing.retain(|o| o.client_id != client_id);
                chat.insert([message]);
            }
            SocialUpdate::SendFailed { contact, client_id, reason } => {
                let chat = self.social.chats.entry(contact).or_default();
                if let Some(o) = chat.outgoing.iter_mut().find(|o| o.client_id == client_id) {
                    o.failed = Some(reason);
                }
            }
            SocialUpdate::Read { contact, message_id } => {
                let me = self.my_id();
                let chat = self.social.chats.entry(contact).or_default();
                let mut theirs_read = false;
                for m in chat.messages.iter_mut().filter(|m| m.id <= message_id) {
                    if m.from == me && m.to == contact {
                        m.read = true;
                    } else if m.from == contact {
                        m.read = true;
                        theirs_read = true;
                    }
                }
                // Read on another device of mine: no longer unread here.
                if theirs_read || chat.messages.iter().all(|m| m.from == me) {
                    if chat.newest_from(contact).is_none_or(|n| n <= message_id) {
                        chat.unread = 0;
                    }
                    chat.marked = chat.marked.max(message_id);
                }
            }
            SocialUpdate::History { before, entries } => {
                let h = &mut self.social.history;
                h.loading = false;
                h.complete = (entries.len() as u32) < HISTORY_PAGE;
                if before.is_none() {
                    h.entries.clear();
                }
                for e in entries {
                    for u in &e.with {
                        self.social.names.insert(u.id.0, u.name.clone());
                    }
                    if !h.entries.iter().any(|x| x.entry_id == e.entry_id) {
                        h.entries.push(e);
                    }
                }
                h.entries.sort_by_key(|e| std::cmp::Reverse(e.entry_id));
            }
            SocialUpdate::Renamed(user) => {
                if self.me.as_ref().is_some_and(|m| m.id == user.id) {
                    self.social.account.name = user.name.clone();
                    self.notify(NoticeKind::Info, format!("You are now called {}.", user.name));
                    self.me = Some(user);
                }
            }
            SocialUpdate::PasswordChanged => {
                let a = &mut self.social.account;
                a.password.clear();
                a.new_password.clear();
                a.repeat.clear();
                a.error = None;
                self.notify(NoticeKind::Info, "Password changed. Your other sessions were signed out.");
                self.outbox.push(Command::LoadSessions);
            }
            SocialUpdate::AccountFailed(reason) => {
                self.social.account.error = Some(reason.clone());
                self.notify(NoticeKind::Error, reason);
            }
            SocialUpdate::Sessions(list) => self.social.account.sessions = Some(list),
            SocialUpdate::StatusSet(s) => {
                self.social.status = s;
                self.settings.status = s.as_str().to_owned();
            }
            SocialUpdate::Blocked(list) => {
                // Whoever is blocked is no contact (the server removed them).
                self.contacts.retain(|c| !list.iter().any(|b| b.id == c.user.id));
                self.requests.retain(|r| !list.iter().any(|b| b.id == r.id));
                if let Page::Chat(id) = self.social.page {
                    if list.iter().any(|b| b.id == id) {
                        self.social.page = Page::Home;
                    }
                }
                self.social.blocked = Some(list);
            }
            SocialUpdate::SessionEnded(reason) => {
                if self.phase == Phase::SignedOut {
                    return;
                }
                self.sign_out_locally();
                self.form.error = Some(session_end_text(&reason));
            }
            SocialUpdate::AccountDeleted => {
                self.sign_out_locally();
                self.form.email.clear();
                self.notify(NoticeKind::Info, "Your account was deleted.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use babel_proto::ContactEntry;

    use super::*;
    use crate::msg::Update;
    use crate::settings::Settings;

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
            ],
            requests: vec![],
        });
        m.social(SocialIntent::Focus(true));
        m
    }

    fn msg(id: i64, from: i64, to: i64, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            from: UserId(from),
            to: UserId(to),
            text: text.into(),
            sent_at: "2026-11-29T18:20:00Z".into(),
            read: false,
        }
    }

    fn live(m: &mut Model, message: ChatMessage) {
        let sender = user(message.from.0, if message.from.0 == 2 { "Ben" } else { "Cleo" });
        m.apply(Update::Social(SocialUpdate::Message { message, sender }));
    }

    #[test]
    fn opening_a_conversation_loads_its_newest_page_once_and_marks_it_read() {
        let mut m = signed_in();
        m.apply(Update::Social(SocialUpdate::Unread(vec![(UserId(2), 2)])));
        assert_eq!(m.unread(UserId(2)), 2);
        let c = m.social(SocialIntent::OpenChat(UserId(2)));
        assert!(matches!(&c[..], [Command::LoadMessages { contact: UserId(2), before: None }]));
        assert_eq!(m.social.page, Page::Chat(UserId(2)));
        m.apply(Update::Social(SocialUpdate::Messages {
            contact: UserId(2),
            before: None,
            messages: vec![msg(5, 2, 1, "b"), msg(4, 1, 2, "a"), msg(3, 2, 1, "c")],
        }));
        let chat = m.chat(UserId(2)).unwrap();
        assert_eq!(chat.messages.iter().map(|m| m.id).collect::<Vec<_>>(), [3, 4, 5], "oldest first");
        assert!(chat.complete, "a short first page is everything");
        assert_eq!(chat.unread, 0);
        assert!(matches!(&m.take_outbox()[..], [Command::MarkRead { contact: UserId(2), message_id: 5 }]));
        // Opening again asks nothing; nothing new to mark.
        m.social(SocialIntent::Home);
        assert!(m.social(SocialIntent::OpenChat(UserId(2))).is_empty());
        assert!(m.take_outbox().is_empty());
        // Back after a lost connection (the counts are re-read): the open
        // conversation catches up on what it missed.
        m.apply(Update::Social(SocialUpdate::Unread(vec![(UserId(2), 1), (UserId(3), 4)])));
        assert!(matches!(&m.take_outbox()[..], [Command::LoadMessages { contact: UserId(2), before: None }]));
        assert_eq!((m.unread(UserId(2)), m.unread(UserId(3))), (0, 4), "the open one is being read");
    }

    #[test]
    fn scrolling_back_asks_older_pages_until_none_are_left() {
        let mut m = signed_in();
        m.social(SocialIntent::OpenChat(UserId(2)));
        assert!(m.social(SocialIntent::LoadOlder(UserId(2))).is_empty(), "not while the first page loads");
        let page: Vec<_> = (100..100 + i64::from(PAGE)).map(|i| msg(i, 2, 1, "x")).collect();
        m.apply(Update::Social(SocialUpdate::Messages { contact: UserId(2), before: None, messages: page }));
        assert!(!m.chat(UserId(2)).unwrap().complete);
        let c = m.social(SocialIntent::LoadOlder(UserId(2)));
        assert!(matches!(&c[..], [Command::LoadMessages { contact: UserId(2), before: Some(100) }]));
        assert!(m.social(SocialIntent::LoadOlder(UserId(2))).is_empty(), "one page at a time");
        m.apply(Update::Social(SocialUpdate::Messages {
            contact: UserId(2),
            before: Some(100),
            messages: vec![msg(7, 1, 2, "first")],
        }));
        let chat = m.chat(UserId(2)).unwrap();
        assert!(chat.complete);
        assert_eq!(chat.messages.first().unwrap().text, "first");
        assert_eq!(chat.messages.len(), PAGE as usize + 1);
        assert!(m.social(SocialIntent::LoadOlder(UserId(2))).is_empty(), "nothing older is left");
    }

    #[test]
    fn sending_goes_out_with_a_client_id_and_becomes_the_stored_message() {
        let mut m = signed_in();
        m.social(SocialIntent::OpenChat(UserId(3)));
        m.social.chats.get_mut(&UserId(3)).unwrap().draft = "   ".into();
        assert!(m.social(SocialIntent::Send(UserId(3))).is_empty(), "nothing to send");
        m.social.chats.get_mut(&UserId(3)).unwrap().draft = " hello ".into();
        let c = m.social(SocialIntent::Send(UserId(3)));
        let Some(Command::SendMessage { contact: UserId(3), text, client_id }) = c.first() else { panic!("{c:?}") };
        assert_eq!(text, "hello");
        let chat = m.chat(UserId(3)).unwrap();
        assert!(chat.draft.is_empty());
        assert_eq!(chat.outgoing.len(), 1);
        // Two sends have two ids.
        m.social.chats.get_mut(&UserId(3)).unwrap().draft = "again".into();
        let c2 = m.social(SocialIntent::Send(UserId(3)));
        assert!(matches!(&c2[..], [Command::SendMessage { client_id: other, .. }] if other != client_id));
        m.apply(Update::Social(SocialUpdate::SendFailed {
            contact: UserId(3),
            client_id: client_id.clone(),
            reason: "Too many messages.".into(),
        }));
        assert!(m.chat(UserId(3)).unwrap().outgoing[0].failed.is_some());
        let r = m.social(SocialIntent::Retry(UserId(3), client_id.clone()));
        assert!(matches!(&r[..], [Command::SendMessage { client_id: same, .. }] if same == client_id), "same id");
        m.apply(Update::Social(SocialUpdate::Sent {
            contact: UserId(3),
            client_id: client_id.clone(),
            message: msg(9, 1, 3, "hello"),
        }));
        let chat = m.chat(UserId(3)).unwrap();
        assert_eq!(chat.outgoing.len(), 1, "the second is still on its way");
        assert_eq!(chat.messages.last().unwrap().text, "hello");
        // Too long is refused here, the draft kept.
        m.social.chats.get_mut(&UserId(3)).unwrap().draft = "x".repeat(MAX_TEXT + 1);
        assert!(m.social(SocialIntent::Send(UserId(3))).is_empty());
        assert_eq!(m.chat(UserId(3)).unwrap().draft.len(), MAX_TEXT + 1);
    }

    #[test]
    fn live_messages_count_as_unread_unless_read_and_notify_when_unfocused() {
        let mut m = signed_in();
        m.social(SocialIntent::OpenChat(UserId(3)));
        m.apply(Update::Social(SocialUpdate::Messages { contact: UserId(3), before: None, messages: vec![] }));
        // From Ben, whose conversation is not open: counted, no notification
        // (the window has the focus).
        live(&mut m, msg(1, 2, 1, "hi Ann"));
        assert_eq!(m.unread(UserId(2)), 1);
        assert!(m.take_outbox().is_empty());
        // The same message again (reconnection) counts once.
        live(&mut m, msg(1, 2, 1, "hi Ann"));
        // From Cleo, whose conversation is open and read: shown and marked.
        live(&mut m, msg(2, 3, 1, "hey"));
        assert_eq!(m.unread(UserId(3)), 0);
        assert_eq!(m.chat(UserId(3)).unwrap().messages.len(), 1);
        assert!(matches!(&m.take_outbox()[..], [Command::MarkRead { contact: UserId(3), message_id: 2 }]));
        // The window loses the focus: counted, and the desktop is told.
        m.social(SocialIntent::Focus(false));
        live(&mut m, msg(3, 3, 1, "still there?"));
        assert_eq!(m.unread(UserId(3)), 1);
        let out = m.take_outbox();
        assert!(
            matches!(&out[..], [Command::NotifyMessage { from, text }] if from == "Cleo" && text == "still there?")
        );
        // Back: marked read.
        m.social(SocialIntent::Focus(true));
        assert_eq!(m.unread(UserId(3)), 0);
        assert!(matches!(&m.take_outbox()[..], [Command::MarkRead { message_id: 3, .. }]));
        // Opening a conversation is reading it, focus reported or not.
        m.social(SocialIntent::Focus(false));
        live(&mut m, msg(5, 3, 1, "ping"));
        assert_eq!(m.unread(UserId(3)), 1);
        m.take_outbox();
        m.social(SocialIntent::OpenChat(UserId(3)));
        assert_eq!(m.unread(UserId(3)), 0);
        assert!(matches!(&m.take_outbox()[..], [Command::MarkRead { message_id: 5, .. }]));
        m.social(SocialIntent::Focus(true));
        // Mine from another session: shown, never unread.
        live(&mut m, msg(6, 1, 3, "from my phone"));
        assert_eq!(m.unread(UserId(3)), 0);
        assert_eq!(m.chat(UserId(3)).unwrap().messages.last().unwrap().text, "from my phone");
        assert_eq!(m.unread(UserId(2)), 1);
    }

    #[test]
    fn read_marks_go_on_my_messages_and_clear_what_i_read_elsewhere() {
        let mut m = signed_in();
        m.social(SocialIntent::OpenChat(UserId(2)));
        m.apply(Update::Social(SocialUpdate::Messages {
            contact: UserId(2),
            before: None,
            messages: vec![msg(1, 1, 2, "a"), msg(2, 1, 2, "b"), msg(3, 1, 2, "c")],
        }));
        m.apply(Update::Social(SocialUpdate::Read { contact: UserId(2), message_id: 2 }));
        let read: Vec<bool> = m.chat(UserId(2)).unwrap().messages.iter().map(|m| m.read).collect();
        assert_eq!(read, [true, true, false]);
        // Ben's messages read on my other device: not unread here.
        m.social(SocialIntent::Home);
        live(&mut m, msg(4, 2, 1, "x"));
        assert_eq!(m.unread(UserId(2)), 1);
        m.apply(Update::Social(SocialUpdate::Read { contact: UserId(2), message_id: 4 }));
        assert_eq!(m.unread(UserId(2)), 0);
    }

    #[test]
    fn history_marks_missed_calls_and_calls_back() {
        let mut m = signed_in();
        assert!(matches!(&m.social(SocialIntent::OpenHistory)[..], [Command::LoadHistory { before: None }]));
        let entry = |id: i64, dir: Direction, answered: Option<&str>| HistoryEntry {
            entry_id: id,
            call_id: CallId(id.unsigned_abs()),
            direction: dir,
            with: vec![user(3, "Cleo")],
            started_at: "2026-11-29T18:20:00Z".into(),
            answered_at: answered.map(Into::into),
            ended_at: "2026-11-29T18:21:00Z".into(),
            reason: "hangup".into(),
        };
        m.apply(Update::Social(SocialUpdate::History {
            before: None,
            entries: vec![
                entry(3, Direction::In, None),
                entry(2, Direction::Out, None),
                entry(1, Direction::In, Some("x")),
            ],
        }));
        let h = &m.social.history;
        assert_eq!(h.entries.iter().map(HistoryEntry::missed).collect::<Vec<_>>(), [true, false, false]);
        assert!(h.complete && !h.loading);
        assert_eq!(h.entries[0].title(), "Cleo");
        assert!(m.social(SocialIntent::MoreHistory).is_empty(), "a short page is everything");
        // A full page: older ones are asked before its last entry.
        m.social(SocialIntent::OpenHistory);
        let full: Vec<_> = (0..i64::from(HISTORY_PAGE)).map(|i| entry(1000 - i, Direction::Out, Some("x"))).collect();
        m.apply(Update::Social(SocialUpdate::History { before: None, entries: full }));
        let last = 1000 - i64::from(HISTORY_PAGE) + 1;
        assert!(
            matches!(&m.social(SocialIntent::MoreHistory)[..], [Command::LoadHistory { before: Some(b) }] if *b == last)
        );
        assert!(m.social(SocialIntent::MoreHistory).is_empty(), "one page at a time");
        m.apply(Update::Social(SocialUpdate::History {
            before: Some(last),
            entries: vec![entry(3, Direction::In, None)],
        }));
        let h = &m.social.history;
        assert_eq!(h.entries.len(), HISTORY_PAGE as usize + 1);
        assert!(h.complete && h.entries.last().unwrap().missed());
        let c = m.social(SocialIntent::CallBack(UserId(3)));
        assert!(matches!(&c[..], [Command::Call(UserId(3))]));
        assert_eq!(m.social.page, Page::Home, "the call shows");
        assert_eq!(short_time("2026-11-29T18:20:00Z"), "2026-11-29 18:20");
    }

    #[test]
    fn the_account_page_checks_before_asking() {
        let mut m = signed_in();
        let c = m.social(SocialIntent::OpenAccount);
        assert!(matches!(&c[..], [Command::LoadSessions, Command::LoadBlocked]));
        assert_eq!(m.social.account.name, "Ann");
        assert!(m.social(SocialIntent::Rename).is_empty(), "the same name");
        m.social.account.name = " Annie ".into();
        assert!(matches!(&m.social(SocialIntent::Rename)[..], [Command::Rename(n)] if n == "Annie"));
        m.apply(Update::Social(SocialUpdate::Renamed(user(1, "Annie"))));
        assert_eq!(m.me.as_ref().unwrap().name, "Annie");
        // Passwords: both, and the repetition equal.
        m.social.account.password = "old".into();
        m.social.account.new_password = "new-one".into();
        m.social.account.repeat = "new-on".into();
        assert!(m.social(SocialIntent::ChangePassword).is_empty());
        assert!(m.social.account.error.as_deref().unwrap().contains("differ"));
        m.social.account.repeat = "new-one".into();
        let c = m.social(SocialIntent::ChangePassword);
        assert!(
            matches!(&c[..], [Command::ChangePassword { password, new_password }] if password == "old" && new_password == "new-one")
        );
        m.apply(Update::Social(SocialUpdate::PasswordChanged));
        assert!(m.social.account.password.is_empty() && m.social.account.new_password.is_empty());
        assert!(matches!(&m.take_outbox()[..], [Command::LoadSessions]), "sessions re-read");
        // Deleting: a password, then a confirmation.
        assert!(m.social(SocialIntent::AskDelete).is_empty());
        assert!(!m.social.account.confirm_delete);
        m.social.account.delete_password = "pw".into();
        m.social(SocialIntent::AskDelete);
        assert!(m.social.account.confirm_delete);
        let c = m.social(SocialIntent::ConfirmDelete);
        assert!(matches!(&c[..], [Command::DeleteAccount { password }] if password == "pw"));
        assert!(m.social(SocialIntent::ConfirmDelete).is_empty(), "once");
        m.apply(Update::Social(SocialUpdate::AccountDeleted));
        assert_eq!(m.phase, Phase::SignedOut);
    }

    #[test]
    fn status_block_and_session_end() {
        let mut m = signed_in();
        assert!(m.social(SocialIntent::SetStatus(MyStatus::Available)).is_empty(), "already");
        assert!(matches!(&m.social(SocialIntent::SetStatus(MyStatus::Dnd))[..], [Command::SetStatus(MyStatus::Dnd)]));
        m.apply(Update::Social(SocialUpdate::StatusSet(MyStatus::Dnd)));
        assert_eq!(m.social.status, MyStatus::Dnd);
        // Remembered for this account's next sign-in, not for another's.
        m.apply(Update::SignedOut);
        m.apply(Update::SignedIn { server: "s".into(), me: user(1, "Ann") });
        assert_eq!(m.social.status, MyStatus::Dnd);
        m.apply(Update::SignedOut);
        m.apply(Update::SignedIn { server: "s".into(), me: user(9, "Zed") });
        assert_eq!(m.social.status, MyStatus::Available);
        m.apply(Update::SignedOut);
        m.apply(Update::SignedIn { server: "s".into(), me: user(1, "Ann") });
        assert_eq!(m.social.status, MyStatus::Available);
        m.apply(Update::Contacts {
            contacts: vec![
                ContactEntry { user: user(2, "Ben"), status: Presence::Offline },
                ContactEntry { user: user(3, "Cleo"), status: Presence::Online },
            ],
            requests: vec![],
        });
        // Blocking asks first.
        m.social(SocialIntent::OpenChat(UserId(2)));
        assert!(m.social(SocialIntent::AskBlock(UserId(2))).is_empty());
        assert!(matches!(&m.social(SocialIntent::ConfirmBlock)[..], [Command::Block(UserId(2))]));
        assert!(m.social(SocialIntent::ConfirmBlock).is_empty());
        m.apply(Update::Social(SocialUpdate::Blocked(vec![user(2, "Ben")])));
        assert!(m.contact(UserId(2)).is_none());
        assert_eq!(m.someone(UserId(2)), "Ben", "a conversation once opened keeps the name");
        assert_eq!(m.social.page, Page::Home);
        assert!(matches!(&m.social(SocialIntent::Unblock(UserId(2)))[..], [Command::Unblock(UserId(2))]));
        // A contact renamed.
        assert!(m.callable(UserId(3)) && !m.callable(UserId(2)), "Cleo online, Ben blocked");
        m.apply(Update::Server(babel_proto::ServerEvent::ContactUpdated(ContactEntry {
            user: user(3, "Cleo"),
            status: Presence::Away,
        })));
        assert!(m.callable(UserId(3)), "away people can be rung");
        m.apply(Update::Server(babel_proto::ServerEvent::ContactUpdated(ContactEntry {
            user: user(3, "Cleopatra"),
            status: Presence::Dnd,
        })));
        assert!(!m.callable(UserId(3)), "do not disturb is not rung");
        assert_eq!(m.contact(UserId(3)).unwrap().user.name, "Cleopatra");
        assert_eq!(m.contact(UserId(3)).unwrap().presence, Presence::Dnd);
        // This session ended elsewhere: back to signing in, the reason said.
        m.apply(Update::Server(babel_proto::ServerEvent::SessionEnded(babel_proto::SessionEnded {
            session_id: babel_proto::SessionId(4),
            reason: babel_proto::SessionEndReason::PasswordChanged,
        })));
        assert_eq!(m.phase, Phase::SignedOut);
        assert!(m.form.error.as_deref().unwrap().contains("password was changed"));
        assert!(m.social.chats.is_empty());
        assert!(session_end_text("ended").contains("another of your devices"));
    }
}
