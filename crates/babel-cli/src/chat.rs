//! `babel message`, `babel messages` (with `--follow`) and `babel history`.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};

use babel_client::{Client, ClientError, Event};
use babel_proto::{
    CallHistoryEntry, ContactEntry, Direction, EndReason, EntryId, Message, MessageId, Page, Presence, ServerEvent,
    SessionEndReason, UserId,
};
use serde_json::json;

use crate::{Done, Failure, Outcome, email_arg, same_email, when, write_stdout};

/// The most characters a message may have (DESIGN.md §5).
const MAX_CHARS: usize = babel_proto::messages::MAX_TEXT_CHARS;

/// The text of `babel message EMAIL [TEXT…]`: the words joined by spaces,
/// or stdin when there are none or the one word is `-` (one final line
/// break dropped). Empty or too long is a usage error: nothing is sent.
pub fn text_arg(words: &[String]) -> Result<String, Failure> {
    let text = if words.is_empty() || (words.len() == 1 && words[0] == "-") {
        if std::io::stdin().is_terminal() {
            crate::term::say("Type the message; Ctrl-D on a line of its own sends it, Ctrl-C gives up.");
        }
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
        let trimmed = s.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t));
        trimmed.map(str::to_owned).unwrap_or(s)
    } else {
        words.join(" ")
    };
    check_text(&text).map_err(Failure::Usage)?;
    Ok(text)
}

/// One line about a message that just arrived: who, and its start.
pub fn message_notice(m: &babel_proto::MessageEvent) -> String {
    let text = printable(&m.message.text).replace('\n', " ");
    let short: String = text.chars().take(60).collect();
    let more = if text.chars().count() > 60 { "…" } else { "" };
    format!(
        "message from {} <{}>: {short}{more} (`babel messages {}` reads it)",
        printable(&m.sender.name),
        m.sender.email,
        m.sender.email
    )
}

/// What to say when the server ends this session (`/session_ended`).
pub fn session_ended_words(reason: SessionEndReason) -> String {
    let why = match reason {
        SessionEndReason::Ended => "it was ended from another session",
        SessionEndReason::PasswordChanged => "the password was changed from another session",
        SessionEndReason::Expired => "it expired",
        SessionEndReason::Deleted => "the account was deleted",
        SessionEndReason::Other => "the server ended it",
    };
    format!("this session is over: {why}; run `babel login EMAIL` to log in again")
}

/// Whether a text can be sent, or what is wrong with it.
fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("the message is empty: nothing was sent (give the text, or pipe it on stdin)".into());
    }
    let n = text.chars().count();
    if n > MAX_CHARS {
        return Err(format!("a message is at most {MAX_CHARS} characters and this one has {n}: nothing was sent"));
    }
    Ok(())
}

/// A text as it may reach a terminal: a peer's escape sequences (which
/// could move the cursor, retitle the window or rewrite what was shown)
/// become visible `^[`-style marks; line breaks and tabs stay.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\n' | '\t' => out.push(ch),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push('\u{fffd}'),
            // Bidirectional overrides could make a line read backwards.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A contact by email (accepted or asked), or exit 1 saying it is none.
async fn contact(c: &mut Client, email: &str) -> Result<ContactEntry, Failure> {
    Scope::new(c, Some(email)).await?.only.ok_or_else(|| Failure::Refused(format!("{email} is not in your contacts")))
}

/// `babel message EMAIL TEXT`.
pub async fn message(c: &mut Client, email: &str, text: &str) -> Outcome {
    let to = contact(c, email).await?;
    // A connection lost while it was sent may have delivered it: sent once
    // more with the same client_id, the server answers the first one
    // instead of storing a second.
    let id = client_id();
    let sent = match c.send_message(to.user.id, text, Some(&id)).await {
        Err(ClientError::Disconnected | ClientError::Timeout(_)) => c.send_message(to.user.id, text, Some(&id)).await?,
        other => other?,
    };
    let json = json!({"message_id": sent.message_id, "sent_at": sent.sent_at, "to": to.user});
    let when = if to.status == Presence::Offline { "; they read it when they come back" } else { "" };
    Ok(Done::new(json, format!("Sent to {} <{}>{when}.", printable(&to.user.name), to.user.email)))
}

/// A fresh id for `/send_message`, so a retry after a dropped connection
/// is not sent twice.
fn client_id() -> String {
    let mut b = [0u8; 16];
    // Without randomness the time and process id still tell runs apart.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whose messages a command shows: one contact's, or every conversation's.
struct Scope {
    /// The one contact, if any.
    only: Option<ContactEntry>,
    /// Names of my contacts (and of whoever sent a message shown).
    names: HashMap<UserId, String>,
    /// Me.
    me: UserId,
}

impl Scope {
    /// The conversation with `email`, or every one when `None` (exit 1 if
    /// `email` is no contact).
    async fn new(c: &mut Client, email: Option<&str>) -> Result<Scope, Failure> {
        let me = c.user_id().ok_or(ClientError::NotLoggedIn)?;
        let list = c.contacts().await?;
        let names = list.iter().map(|e| (e.user.id, e.user.name.clone())).collect();
        let only = match email {
            Some(email) => {
                let want = email_arg(email).unwrap_or_else(|_| email.trim().to_lowercase());
                let found = list.into_iter().find(|e| same_email(&e.user.email, &want));
                Some(found.ok_or_else(|| {
                    Failure::Refused(format!("{want} is not in your contacts (`babel contacts add {want}` asks them)"))
                })?)
            }
            None => None,
        };
        Ok(Scope { only, names, me })
    }

    fn contact_id(&self) -> Option<UserId> {
        self.only.as_ref().map(|e| e.user.id)
    }

    fn includes(&self, m: &Message) -> bool {
        self.contact_id().is_none_or(|id| m.from == id || m.to == id)
    }

    fn name(&self, id: UserId) -> String {
        self.names.get(&id).map_or_else(|| format!("user {id}"), |n| printable(n))
    }

    /// Learns the name of whoever sent an event's message.
    fn learn(&mut self, sender: &babel_proto::User) {
        self.names.entry(sender.id).or_insert_with(|| sender.name.clone());
    }

    /// One message as a person reads it: the time, who wrote it (to whom,
    /// when every conversation shows), the text (later lines indented
    /// under the first), and `new` on one not read before.
    fn line(&self, m: &Message, fresh: bool) -> String {
        let who = match (m.from == self.me, self.only.is_some()) {
            (true, true) => "you".to_owned(),
            (true, false) => format!("you → {}", self.name(m.to)),
            (false, _) => self.name(m.from),
        };
        let mark = if fresh { "new " } else { "    " };
        let head = format!("{} {mark}{who}: ", when::short(&m.sent_at));
        let pad = " ".repeat(head.chars().count());
        let text = printable(&m.text).replace('\n', &format!("\n{pad}"));
        format!("{head}{text}")
    }

    /// Whether `m` is one sent to me and not read before.
    fn fresh(&self, m: &Message) -> bool {
        m.from != self.me && !m.read
    }

    /// Marks read, per sender, every message up to the newest of `page`
    /// that was not read yet (the server never moves a mark backwards).
    async fn mark_read(&self, c: &mut Client, page: &[Message]) -> Result<(), Failure> {
        let mut newest: HashMap<UserId, MessageId> = HashMap::new();
        for m in page.iter().filter(|m| self.fresh(m)) {
            let e = newest.entry(m.from).or_insert(m.message_id);
            *e = (*e).max(m.message_id);
        }
        for (from, up_to) in newest {
            c.mark_read(from, up_to).await?;
        }
        Ok(())
    }
}

/// `babel messages [EMAIL]`: one page, oldest first (newest last on the
/// screen), of one conversation or of all; what it shows is marked read.
pub async fn messages(c: &mut Client, email: Option<&str>, before: Option<MessageId>, limit: u32) -> Outcome {
    let scope = Scope::new(c, email).await?;
    let mut page = c.messages(scope.contact_id(), before.map_or(Page::Latest, Page::Before), limit).await?;
    page.reverse();
    scope.mark_read(c, &page).await?;
    let (with, again) = match &scope.only {
        Some(e) => (format!(" with {} <{}>", printable(&e.user.name), e.user.email), format!(" {}", e.user.email)),
        None => (String::new(), String::new()),
    };
    let mut text = String::new();
    if page.is_empty() {
        text = match (before, &scope.only) {
            (None, Some(e)) => format!("No messages{with} yet: `babel message {} TEXT` sends one.", e.user.email),
            (None, None) => "No messages yet: `babel message EMAIL TEXT` sends one.".to_owned(),
            (Some(_), _) => format!("No older messages{with}."),
        };
    } else if page.len() == limit as usize {
        if let Some(first) = page.first() {
            text.push_str(&format!("(older ones: babel messages{again} --before {})\n", first.message_id));
        }
    }
    for m in &page {
        text.push_str(&scope.line(m, scope.fresh(m)));
        text.push('\n');
    }
    let json = serde_json::to_value(&page).map_err(anyhow::Error::from)?;
    Ok(Done::new(json, text.trim_end()))
}

/// `babel messages [EMAIL] --follow`: the last page, then every new
/// message of the conversation (or of all) as it arrives (to me, or from
/// me on another device), each marked read, until Ctrl-C. Under `--json`
/// one message per line. A lost connection is said on stderr; once back,
/// what arrived meanwhile is shown.
pub async fn follow(mut c: Client, email: Option<&str>, limit: u32, json_mode: bool) -> Outcome {
    let mut interrupts = crate::term::Interrupts::new();
    let mut scope = Scope::new(&mut c, email).await?;
    // Subscribed before the page is read, so nothing falls in between.
    let mut events = c.events().await?;
    let mut page = c.messages(scope.contact_id(), Page::Latest, limit).await?;
    page.reverse();
    let show = |scope: &Scope, m: &Message, fresh: bool| {
        let out = if json_mode { serde_json::to_string(m).unwrap_or_default() } else { scope.line(m, fresh) };
        write_stdout(format!("{out}\n").as_bytes());
    };
    let mut last = MessageId(0);
    for m in &page {
        show(&scope, m, scope.fresh(m));
        last = last.max(m.message_id);
    }
    scope.mark_read(&mut c, &page).await?;
    if !json_mode {
        let what = match &scope.only {
            Some(e) => format!("the conversation with {}", printable(&e.user.name)),
            None => "every conversation".to_owned(),
        };
        crate::term::say(&format!("(following {what}; Ctrl-C stops)"));
    }
    loop {
        let news = tokio::select! {
            _ = interrupts.next() => break,
            ev = events.next() => match ev {
                None => break,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Event::Server(ServerEvent::Message(m)))) => {
                    scope.learn(&m.sender);
                    vec![m.message]
                }
                Some(Ok(Event::Server(ServerEvent::SessionEnded(end)))) => {
                    return Err(Failure::Refused(session_ended_words(end.reason)));
                }
                Some(Ok(Event::Disconnected)) => {
                    crate::term::say("babel: connection to the server lost; reconnecting…");
                    continue;
                }
                Some(Ok(Event::Reconnected)) => {
                    crate::term::say(&crate::term::connected_again(&events));
                    // What arrived meanwhile (oldest first).
                    c.messages(scope.contact_id(), Page::After(last), babel_proto::messages::MAX_LIMIT).await?
                }
                Some(Ok(_)) => continue,
            },
        };
        let news: Vec<Message> = news.into_iter().filter(|m| scope.includes(m) && m.message_id > last).collect();
        for m in &news {
            show(&scope, m, false);
            last = last.max(m.message_id);
        }
        scope.mark_read(&mut c, &news).await?;
    }
    Ok(Done::new(serde_json::Value::Null, ""))
}

/// What became of a call, in a few words.
fn outcome_words(e: &CallHistoryEntry) -> String {
    if !e.answered_at.is_empty() {
        return when::between(&e.answered_at, &e.ended_at).map_or_else(|| "answered".to_owned(), when::length);
    }
    if e.is_missed() {
        return "MISSED".to_owned();
    }
    match e.reason {
        EndReason::AnsweredElsewhere => "answered elsewhere",
        EndReason::Declined => "declined",
        EndReason::Timeout => "no answer",
        EndReason::Hangup if e.direction == Direction::Out => "cancelled",
        _ => "not answered",
    }
    .to_owned()
}

/// `babel history`: calls, newest last, missed ones marked.
pub async fn history(c: &mut Client, before: Option<EntryId>, limit: u32) -> Outcome {
    let mut list = c.call_history(before, limit).await?;
    list.reverse();
    let mut text = String::new();
    if list.is_empty() {
        text.push_str(if before.is_none() { "No calls yet." } else { "No older calls." });
    } else if list.len() == limit as usize {
        if let Some(first) = list.first() {
            text.push_str(&format!("(older ones: babel history --before {})\n", first.entry_id));
        }
    }
    let mut missed_count = 0;
    for e in &list {
        missed_count += usize::from(e.is_missed());
        let who: Vec<String> = e.with.iter().map(|u| format!("{} <{}>", printable(&u.name), u.email)).collect();
        let dir = if e.direction == Direction::In { "from" } else { "to  " };
        text.push_str(&format!("{}  {dir} {:<18} {}\n", when::short(&e.started_at), outcome_words(e), who.join(", ")));
    }
    if missed_count > 0 {
        let n = if missed_count == 1 { "1 missed call".to_owned() } else { format!("{missed_count} missed calls") };
        text.push_str(&format!("{n} above."));
    }
    let json: Vec<serde_json::Value> = list
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("missed".into(), json!(e.is_missed()));
            }
            v
        })
        .collect();
    Ok(Done::new(json!(json), text.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_become_visible_marks() {
        assert_eq!(printable("\x1b]0;owned\x07red"), "^[]0;owned^Gred");
        assert_eq!(printable("a\nb\tc\r"), "a\nb\tc^M");
        assert_eq!(printable("\u{7f}\u{9b}x"), "^?\u{fffd}x");
        assert_eq!(printable("abc\u{202e}def"), "abc\u{fffd}def");
        assert_eq!(printable("héllo 👋"), "héllo 👋");
    }

    #[test]
    fn texts_are_checked_before_sending() {
        assert!(check_text("hi").is_ok());
        assert!(check_text(" \n\t").unwrap_err().contains("empty"));
        assert!(check_text(&"é".repeat(4000)).is_ok(), "characters, not bytes");
        assert!(check_text(&"x".repeat(4001)).unwrap_err().contains("this one has 4001"));
    }

    #[test]
    fn a_message_notice_is_one_short_line() {
        let sender = babel_proto::User { id: UserId(1), name: "Ann\x1b[2J".into(), email: "ann@example.org".into() };
        let message = Message {
            message_id: MessageId(7),
            from: UserId(1),
            to: UserId(2),
            text: format!("first\nsecond {}", "x".repeat(80)),
            sent_at: "2026-11-29T18:20:00Z".into(),
            read: false,
        };
        let n = message_notice(&babel_proto::MessageEvent { message, sender });
        assert!(n.starts_with("message from Ann^[[2J <ann@example.org>: first second xxx"), "{n}");
        assert!(
            n.contains("…") && !n.contains('\n') && n.ends_with("(`babel messages ann@example.org` reads it)"),
            "{n}"
        );
    }

    fn entry(direction: Direction, answered: &str, reason: EndReason) -> CallHistoryEntry {
        CallHistoryEntry {
            entry_id: EntryId(1),
            call_id: babel_proto::CallId(1),
            direction,
            with: Vec::new(),
            started_at: "2026-11-29T18:20:00Z".into(),
            answered_at: answered.into(),
            ended_at: "2026-11-29T18:23:05Z".into(),
            reason,
        }
    }

    #[test]
    fn calls_read_as_their_outcome() {
        let answered = entry(Direction::In, "2026-11-29T18:20:00Z", EndReason::Hangup);
        assert_eq!(outcome_words(&answered), "3 min 05 s");
        assert_eq!(outcome_words(&entry(Direction::In, "", EndReason::Hangup)), "MISSED");
        assert_eq!(outcome_words(&entry(Direction::In, "", EndReason::Timeout)), "MISSED");
        assert_eq!(outcome_words(&entry(Direction::In, "", EndReason::Declined)), "declined");
        assert_eq!(outcome_words(&entry(Direction::Out, "", EndReason::Timeout)), "no answer");
        assert_eq!(outcome_words(&entry(Direction::Out, "", EndReason::Hangup)), "cancelled");
    }
}
