//! Small value types shared by requests, answers and events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A user's id. On the wire it is a JSON string of decimal digits (`"42"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The text was not a decimal id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct BadId;

impl FromStr for UserId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadId);
        }
        s.parse().map(UserId).map_err(|_| BadId)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(i64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::N(n) => Ok(UserId(n)),
        }
    }
}

/// A password or token: kept out of `Debug` output so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for hashing or sending.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The `{"id", "token"}` header of an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Who claims to speak.
    pub id: UserId,
    /// The session token they got from `/login` or `/create`.
    pub token: Secret,
}

/// A user as it appears in answers and events: `{"id", "name", "email"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Email address, lowercase.
    pub email: String,
}

/// What `/login` and `/create` answer: the user and a fresh session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The user's id.
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Email address, lowercase.
    pub email: String,
    /// The new session's token.
    pub token: Secret,
}

/// A contact's presence as `/contacts` and events show it.
///
/// A value this client does not know (a newer server's status) reads as
/// [`Presence::Unknown`] instead of failing the whole list or event, so
/// clients built before a new status keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// At least one live, authenticated connection.
    Online,
    /// No live connection (or the user chose `invisible`).
    Offline,
    /// Online and in an answered call.
    Busy,
    /// My own request, not yet accepted.
    Pending,
    /// Online, and chose `away`.
    Away,
    /// Online, and chose "do not disturb": calls are refused.
    Dnd,
    /// A status this client does not know (never sent by this server).
    #[serde(other)]
    Unknown,
}

impl Presence {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
            Presence::Busy => "busy",
            Presence::Pending => "pending",
            Presence::Away => "away",
            Presence::Dnd => "dnd",
            Presence::Unknown => "unknown",
        }
    }

    /// Whether the user is reachable at all (online, away, dnd or busy).
    pub fn is_online(self) -> bool {
        matches!(self, Presence::Online | Presence::Away | Presence::Dnd | Presence::Busy)
    }
}

/// One row of `/contacts`: a user plus their status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEntry {
    /// The contact.
    #[serde(flatten)]
    pub user: User,
    /// Their presence, or `pending` for my outgoing request.
    pub status: Presence,
}

/// The data of every 403: a reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The reason.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strings_on_the_wire() {
        let u = User { id: UserId(42), name: "ann".into(), email: "ann@x.org".into() };
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, r#"{"id":"42","name":"ann","email":"ann@x.org"}"#);
        assert_eq!(serde_json::from_str::<User>(&json).unwrap(), u);
        assert_eq!(serde_json::from_str::<UserId>("42").unwrap(), UserId(42));
    }

    #[test]
    fn id_parsing_refuses_junk() {
        assert_eq!("17".parse::<UserId>(), Ok(UserId(17)));
        for bad in ["", "-1", "1e3", "abc", "99999999999999999999"] {
            assert_eq!(bad.parse::<UserId>(), Err(BadId), "{bad}");
        }
    }

    #[test]
    fn contact_entry_is_flat() {
        let c = ContactEntry {
            user: User { id: UserId(1), name: "a".into(), email: "a@b.c".into() },
            status: Presence::Busy,
        };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"id":"1","name":"a","email":"a@b.c","status":"busy"}"#);
    }

    #[test]
    fn unknown_presence_values_parse() {
        let c: ContactEntry =
            serde_json::from_str(r#"{"id":"1","name":"a","email":"a@b.c","status":"on_the_moon"}"#).unwrap();
        assert_eq!(c.status, Presence::Unknown);
        let list: Vec<ContactEntry> = serde_json::from_str(
            r#"[{"id":"1","name":"a","email":"a@b.c","status":"dnd"},{"id":"2","name":"b","email":"b@b.c","status":"brb"}]"#,
        )
        .unwrap();
        assert_eq!(list.iter().map(|c| c.status).collect::<Vec<_>>(), [Presence::Dnd, Presence::Unknown]);
        for p in [Presence::Online, Presence::Offline, Presence::Busy, Presence::Pending, Presence::Away, Presence::Dnd]
        {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Presence>(&json).unwrap(), p);
        }
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
