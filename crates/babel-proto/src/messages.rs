//! Text messages and call history (DESIGN.md §5): the request data of
//! `/send_message`, `/messages`, `/mark_read`, `/unread` and
//! `/call_history`, their answers, and the events `/message` and
//! `/messages_read`.
//!
//! Parsing is total: every field a client controls is checked here and a bad
//! one is a [`RequestError::Malformed`] (400). What depends on the server's
//! state or policy (is the other user a contact, is the text 1–4000
//! characters, is the sender over the rate limit) is the server's to refuse
//! with 403; [`check_text`] is the shared rule for the text.
//!
//! Times are RFC 3339 UTC strings, kept as text: this crate reads no clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::call::{CallId, EndReason};
use crate::fields::Fields;
use crate::request::RequestError;
use crate::types::{BadId, User, UserId};

/// Longest message text, in characters (Unicode scalar values).
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest `client_id` a sender may attach, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// The page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;

macro_rules! decimal_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                s.parse::<UserId>().map(|u| $name(u.0))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                UserId::deserialize(d).map(|u| $name(u.0))
            }
        }
    };
}

decimal_id!(
    /// A message's id: strictly increasing across the server, a decimal
    /// string on the wire.
    MessageId
);
decimal_id!(
    /// A call-history entry's id: increasing, a decimal string on the wire.
    EntryId
);

/// `"true"`/`"false"` on the wire, like every scalar.
mod str_bool {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *b { "true" } else { "false" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            B(bool),
        }
        match Raw::deserialize(d)? {
            Raw::B(b) => Ok(b),
            Raw::S(s) if s == "true" => Ok(true),
            Raw::S(s) if s == "false" => Ok(false),
            Raw::S(_) => Err(serde::de::Error::custom("expected \"true\" or \"false\"")),
        }
    }
}

/// A count as a decimal string on the wire.
mod str_count {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u32),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A stored message, as `/messages` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
    pub message_id: MessageId,
    /// Who sent it.
    pub from: UserId,
    /// Who it was sent to.
    pub to: UserId,
    /// The text, 1–4000 characters.
    pub text: String,
    /// When the server accepted it (RFC 3339 UTC).
    pub sent_at: String,
    /// Whether the recipient marked it read.
    #[serde(with = "str_bool")]
    pub read: bool,
}

/// `/message`: a message plus its sender's user object, pushed to the
/// recipient's sessions and to the sender's other sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    /// The message.
    #[serde(flatten)]
    pub message: Message,
    /// The sender (`id`, `name`, `email`).
    pub sender: User,
}

/// `/messages_read`: every message up to `message_id` in the conversation
/// with `contact_id` (always the other party) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesRead {
    /// The other party of the conversation.
    pub contact_id: UserId,
    /// The newest message now read.
    pub message_id: MessageId,
}

/// What `/send_message` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSent {
    /// The new (or, for a retry, the first) message's id.
    pub message_id: MessageId,
    /// When the server accepted it.
    pub sent_at: String,
}

/// One row of `/unread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadCount {
    /// Who sent the unread messages.
    pub contact_id: UserId,
    /// How many.
    #[serde(with = "str_count")]
    pub count: u32,
}

/// Whether I placed a call or received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// I was rung.
    In,
    /// I called.
    Out,
}

impl Direction {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One row of `/call_history`: a call I took part in, or was rung for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallHistoryEntry {
    /// The entry's id (increasing; `before` pages by it).
    pub entry_id: EntryId,
    /// The call.
    pub call_id: CallId,
    /// `in` or `out`.
    pub direction: Direction,
    /// The other people in the call (for `in`, the caller first).
    pub with: Vec<User>,
    /// When the call was placed (RFC 3339 UTC).
    pub started_at: String,
    /// When I answered (for `out`: when the first callee answered); `""`
    /// if never. An `in` entry with no answer that I did not decline is a
    /// missed call ([`CallHistoryEntry::is_missed`]).
    pub answered_at: String,
    /// When my part of the call ended.
    pub ended_at: String,
    /// Why it ended for me.
    pub reason: EndReason,
}

impl CallHistoryEntry {
    /// A call I was rung for, never answered and did not decline.
    pub fn is_missed(&self) -> bool {
        self.direction == Direction::In && self.answered_at.is_empty() && self.reason != EndReason::Declined
    }
}

/// Which page of a conversation `/messages` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Page {
    /// The newest messages, newest first.
    #[default]
    Latest,
    /// Messages older than this id, newest first.
    Before(MessageId),
    /// Messages newer than this id, oldest first.
    After(MessageId),
}

/// `/send_message` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessage {
    /// The recipient (a contact).
    pub contact_id: UserId,
    /// The text (the server refuses anything outside 1–4000 characters).
    pub text: String,
    /// The sender's own id for this message: a retry with the same one
    /// answers the first message and sends nothing twice.
    pub client_id: Option<String>,
}

/// `/messages` data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagesQuery {
    /// One conversation, or every conversation when `None`.
    pub contact_id: Option<UserId>,
    /// Which page.
    pub page: Page,
    /// Page size, 1–100.
    pub limit: u32,
}

impl Default for MessagesQuery {
    fn default() -> Self {
        Self { contact_id: None, page: Page::Latest, limit: DEFAULT_LIMIT }
    }
}

/// `/call_history` data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Entries older than this one; the newest when `None`.
    pub before: Option<EntryId>,
    /// Page size, 1–100.
    pub limit: u32,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        Self { before: None, limit: DEFAULT_LIMIT }
    }
}

/// The answers of this module's routes, as the server sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagesReply {
    /// `/send_message`.
    Sent(MessageSent),
    /// `/messages`.
    Messages(Vec<Message>),
    /// `/unread`.
    Unread(Vec<UnreadCount>),
    /// `/call_history`.
    CallHistory(Vec<CallHistoryEntry>),
}

impl MessagesReply {
    /// The answer's JSON data.
    pub fn data(&self) -> Vec<u8> {
        match self {
            MessagesReply::Sent(s) => serde_json::to_vec(s),
            MessagesReply::Messages(m) => serde_json::to_vec(m),
            MessagesReply::Unread(u) => serde_json::to_vec(u),
            MessagesReply::CallHistory(h) => serde_json::to_vec(h),
        }
        .unwrap_or_default()
    }
}

/// A fresh `client_id` for [`SendMessage`]: 128 random bits as 32 hex
/// digits (`None` if the OS has no randomness). Keep it with the message
/// until the server has answered, and send it again with a retry.
pub fn new_client_id() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Why a message text is refused (a 403 reason).
pub fn check_text(text: &str) -> Result<(), &'static str> {
    if text.trim().is_empty() {
        return Err("a message needs some text");
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err("a message is at most 4000 characters");
    }
    Ok(())
}

fn malformed(what: &str) -> RequestError {
    RequestError::Malformed(what.to_owned())
}

fn opt_id<T: FromStr>(data: &Fields, key: &'static str) -> Result<Option<T>, RequestError> {
    match data.opt_str(key)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| malformed(&format!("field `{key}` must be a decimal id"))),
    }
}

fn id<T: FromStr>(data: &Fields, key: &'static str) -> Result<T, RequestError> {
    opt_id(data, key)?.ok_or_else(|| malformed(&format!("missing field `{key}`")))
}

fn limit(data: &Fields) -> Result<u32, RequestError> {
    match data.opt_str("limit")? {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => match s.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(malformed("field `limit` must be a number from 1 to 100")),
        },
    }
}

impl SendMessage {
    /// Reads `/send_message` data.
    pub fn from_fields(data: &Fields) -> Result<SendMessage, RequestError> {
        let contact_id = id(data, "contact_id")?;
        let text = data.str("text")?;
        let client_id = data.opt_str("client_id")?;
        if client_id.as_ref().is_some_and(|c| c.is_empty() || c.len() > MAX_CLIENT_ID_LEN) {
            return Err(malformed("field `client_id` must be 1 to 128 bytes"));
        }
        Ok(SendMessage { contact_id, text, client_id })
    }

    /// The data's fields.
    pub fn to_fields(&self) -> Fields {
        let mut pairs = vec![("contact_id", self.contact_id.to_string()), ("text", self.text.clone())];
        if let Some(c) = &self.client_id {
            pairs.push(("client_id", c.clone()));
        }
        Fields::from_pairs(pairs)
    }
}

impl MessagesQuery {
    /// Reads `/messages` data.
    pub fn from_fields(data: &Fields) -> Result<MessagesQuery, RequestError> {
        let contact_id = opt_id(data, "contact_id")?;
        let page = match (opt_id(data, "before")?, opt_id(data, "after")?) {
            (None, None) => Page::Latest,
            (Some(b), None) => Page::Before(b),
            (None, Some(a)) => Page::After(a),
            (Some(_), Some(_)) => return Err(malformed("give `before` or `after`, not both")),
        };
        Ok(MessagesQuery { contact_id, page, limit: limit(data)? })
    }

    /// The data's fields.
    pub fn to_fields(&self) -> Fields {
        let mut pairs = vec![("limit", self.limit.to_string())];
        if let Some(c) = self.contact_id {
            pairs.push(("contact_id", c.to_string()));
        }
        match self.page {
            Page::Latest => {}
            Page::Before(b) => pairs.push(("before", b.to_string())),
            Page::After(a) => pairs.push(("after", a.to_string())),
        }
        Fields::from_pairs(pairs)
    }
}

impl MessagesRead {
    /// Reads `/mark_read` data (the same two fields as the event).
    pub fn from_fields(data: &Fields) -> Result<MessagesRead, RequestError> {
        Ok(MessagesRead { contact_id: id(data, "contact_id")?, message_id: id(data, "message_id")? })
    }

    /// The data's fields.
    pub fn to_fields(&self) -> Fields {
        Fields::from_pairs([("contact_id", self.contact_id.to_string()), ("message_id", self.message_id.to_string())])
    }
}

impl HistoryQuery {
    /// Reads `/call_history` data.
    pub fn from_fields(data: &Fields) -> Result<HistoryQuery, RequestError> {
        Ok(HistoryQuery { before: opt_id(data, "before")?, limit: limit(data)? })
    }

    /// The data's fields.
    pub fn to_fields(&self) -> Fields {
        let mut pairs = vec![("limit", self.limit.to_string())];
        if let Some(b) = self.before {
            pairs.push(("before", b.to_string()));
        }
        Fields::from_pairs(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(json: &str) -> Fields {
        Fields::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn message_shape_on_the_wire() {
        let m = Message {
            message_id: MessageId(12),
            from: UserId(1),
            to: UserId(2),
            text: "hi \"you\"".into(),
            sent_at: "2026-11-29T18:20:00Z".into(),
            read: false,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"message_id":"12","from":"1","to":"2","text":"hi \"you\"","sent_at":"2026-11-29T18:20:00Z","read":"false"}"#
        );
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Message>(&json.replace(r#""false""#, r#""maybe""#)).is_err());
    }

    #[test]
    fn unread_and_history_shapes() {
        let u = UnreadCount { contact_id: UserId(3), count: 7 };
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"contact_id":"3","count":"7"}"#);
        let h = CallHistoryEntry {
            entry_id: EntryId(4),
            call_id: CallId(99),
            direction: Direction::In,
            with: vec![User { id: UserId(1), name: "a".into(), email: "a@b.c".into() }],
            started_at: "2026-11-29T18:20:00Z".into(),
            answered_at: String::new(),
            ended_at: "2026-11-29T18:20:30Z".into(),
            reason: EndReason::Timeout,
        };
        assert!(h.is_missed());
        assert!(!CallHistoryEntry { reason: EndReason::Declined, ..h.clone() }.is_missed());
        assert!(!CallHistoryEntry { direction: Direction::Out, ..h.clone() }.is_missed());
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(r#""direction":"in""#) && json.contains(r#""answered_at":"""#), "{json}");
        assert_eq!(serde_json::from_str::<CallHistoryEntry>(&json).unwrap(), h);
    }

    #[test]
    fn requests_parse_and_refuse() {
        let s = SendMessage::from_fields(&f(r#"{"contact_id":"2","text":"hey","client_id":"c-1"}"#)).unwrap();
        assert_eq!(s, SendMessage { contact_id: UserId(2), text: "hey".into(), client_id: Some("c-1".into()) });
        for bad in [
            r#"{"text":"hey"}"#,
            r#"{"contact_id":"x","text":"hey"}"#,
            r#"{"contact_id":"2"}"#,
            r#"{"contact_id":"2","text":{}}"#,
            r#"{"contact_id":"2","text":"a","client_id":""}"#,
        ] {
            assert!(SendMessage::from_fields(&f(bad)).is_err(), "{bad}");
        }
        let long_client = format!(r#"{{"contact_id":"2","text":"a","client_id":"{}"}}"#, "x".repeat(129));
        assert!(SendMessage::from_fields(&f(&long_client)).is_err());

        assert_eq!(MessagesQuery::from_fields(&f("{}")).unwrap(), MessagesQuery::default());
        let q = MessagesQuery::from_fields(&f(r#"{"contact_id":"5","after":"9","limit":"100"}"#)).unwrap();
        assert_eq!(q, MessagesQuery { contact_id: Some(UserId(5)), page: Page::After(MessageId(9)), limit: 100 });
        for bad in [r#"{"limit":"0"}"#, r#"{"limit":"101"}"#, r#"{"limit":"-1"}"#, r#"{"before":"1","after":"2"}"#] {
            assert!(MessagesQuery::from_fields(&f(bad)).is_err(), "{bad}");
        }
        assert!(MessagesRead::from_fields(&f(r#"{"contact_id":"5"}"#)).is_err());
        assert!(HistoryQuery::from_fields(&f(r#"{"before":"z"}"#)).is_err());
        assert_eq!(HistoryQuery::from_fields(&f(r#"{"before":"3","limit":"2"}"#)).unwrap().before, Some(EntryId(3)));
    }

    #[test]
    fn client_ids_are_fresh_and_valid() {
        let (a, b) = (new_client_id().unwrap(), new_client_id().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let f = Fields::from_pairs([("contact_id", "2"), ("text", "x"), ("client_id", a.as_str())]);
        assert_eq!(SendMessage::from_fields(&f).unwrap().client_id, Some(a));
    }

    #[test]
    fn text_rule() {
        assert!(check_text("a").is_ok());
        assert!(check_text(&"é".repeat(4000)).is_ok());
        assert!(check_text(&"é".repeat(4001)).is_err());
        assert!(check_text("").is_err());
        assert!(check_text("  \n").is_err());
    }

    proptest! {
        #[test]
        fn prop_send_round_trips(text in ".{0,50}", client in proptest::option::of("[a-z0-9-]{1,20}"), id in 0i64..i64::MAX) {
            let s = SendMessage { contact_id: UserId(id), text, client_id: client };
            prop_assert_eq!(SendMessage::from_fields(&s.to_fields()).unwrap(), s);
        }

        #[test]
        fn prop_query_round_trips(c in proptest::option::of(0i64..1000), p in 0u8..3, id in 0i64..i64::MAX, limit in 1u32..=100) {
            let page = match p { 0 => Page::Latest, 1 => Page::Before(MessageId(id)), _ => Page::After(MessageId(id)) };
            let q = MessagesQuery { contact_id: c.map(UserId), page, limit };
            prop_assert_eq!(MessagesQuery::from_fields(&q.to_fields()).unwrap(), q);
        }
    }
}
