//! Account and privacy routes (DESIGN.md §5): `/rename`, `/change_password`,
//! `/sessions`, `/end_session`, `/set_status`, `/block`, `/unblock`,
//! `/blocked`, and the data of the `/contact_updated` and `/session_ended`
//! events.
//!
//! Every route here is authenticated by the usual `{id, token}` header;
//! [`AccountRequest`] is what travels in the data, carried by
//! [`crate::ClientRequest::Account`]. Not here: messages and call history.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fields::Fields;
use crate::request::{ContactRef, RequestError};
use crate::types::{Secret, UserId};

/// The account routes, as one family of [`crate::Route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountRoute {
    /// `/rename`
    Rename,
    /// `/change_password`
    ChangePassword,
    /// `/sessions`
    Sessions,
    /// `/end_session`
    EndSession,
    /// `/set_status`
    SetStatus,
    /// `/block`
    Block,
    /// `/unblock`
    Unblock,
    /// `/blocked`
    Blocked,
}

impl AccountRoute {
    /// All of them, in documentation order.
    pub const ALL: [AccountRoute; 8] = [
        AccountRoute::Rename,
        AccountRoute::ChangePassword,
        AccountRoute::Sessions,
        AccountRoute::EndSession,
        AccountRoute::SetStatus,
        AccountRoute::Block,
        AccountRoute::Unblock,
        AccountRoute::Blocked,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountRoute::Rename => "/rename",
            AccountRoute::ChangePassword => "/change_password",
            AccountRoute::Sessions => "/sessions",
            AccountRoute::EndSession => "/end_session",
            AccountRoute::SetStatus => "/set_status",
            AccountRoute::Block => "/block",
            AccountRoute::Unblock => "/unblock",
            AccountRoute::Blocked => "/blocked",
        }
    }
}

/// The status a user chooses for themselves (`/set_status`). What others see
/// is a [`crate::Presence`]: `available` shows as `online` (or `busy`),
/// `invisible` as `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChosenStatus {
    /// Shown as online (the default).
    #[default]
    Available,
    /// Shown as `away`.
    Away,
    /// Do not disturb: shown as `dnd`, calls are refused.
    Dnd,
    /// Shown as `offline` to others; calls get the offline refusal.
    Invisible,
}

impl ChosenStatus {
    /// All of them.
    pub const ALL: [ChosenStatus; 4] =
        [ChosenStatus::Available, ChosenStatus::Away, ChosenStatus::Dnd, ChosenStatus::Invisible];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChosenStatus::Available => "available",
            ChosenStatus::Away => "away",
            ChosenStatus::Dnd => "dnd",
            ChosenStatus::Invisible => "invisible",
        }
    }
}

/// The text is not one of the four statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status must be one of available, away, dnd, invisible")]
pub struct BadStatus;

impl FromStr for ChosenStatus {
    type Err = BadStatus;
    fn from_str(s: &str) -> Result<Self, BadStatus> {
        let s = s.trim();
        ChosenStatus::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(s)).ok_or(BadStatus)
    }
}

impl fmt::Display for ChosenStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session's id as `/sessions` shows it and `/end_session` takes it: a
/// decimal string on the wire. It names a session; it is not its token and
/// proves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub i64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SessionId {
    type Err = crate::types::BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<UserId>().map(|u| SessionId(u.0))
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        UserId::deserialize(d).map(|u| SessionId(u.0))
    }
}

/// `"true"` / `"false"` on the wire, like every scalar.
mod bool_str {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *v { "true" } else { "false" })
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
            Raw::S(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Raw::S(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            Raw::S(_) => Err(serde::de::Error::custom("expected \"true\" or \"false\"")),
        }
    }
}

/// One row of `/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The session's id (for `/end_session`).
    pub session_id: SessionId,
    /// When it was opened (RFC 3339 UTC).
    pub created_at: String,
    /// When it was last used (RFC 3339 UTC; the server records this
    /// coarsely, see PROTOCOL.md).
    pub last_used: String,
    /// The IP address it last came from ("" if unknown).
    pub address: String,
    /// Whether it is the session that asked.
    #[serde(with = "bool_str")]
    pub current: bool,
}

/// Why a session ended (`/session_ended`). Unknown reasons from a newer
/// server read as [`SessionEndReason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    /// Ended by `/end_session` from another session.
    Ended,
    /// The password was changed from another session.
    PasswordChanged,
    /// Unused for longer than the session lifetime.
    Expired,
    /// The account was deleted.
    Deleted,
    /// A reason this client does not know.
    #[serde(other)]
    Other,
}

impl SessionEndReason {
    /// The wire spelling (`other` for unknown reasons).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEndReason::Ended => "ended",
            SessionEndReason::PasswordChanged => "password_changed",
            SessionEndReason::Expired => "expired",
            SessionEndReason::Deleted => "deleted",
            SessionEndReason::Other => "other",
        }
    }
}

/// The data of `/session_ended`: this session is over (its connections close
/// right after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    /// Which session.
    pub session_id: SessionId,
    /// Why.
    pub reason: SessionEndReason,
}

/// What an account request asks (the `{id, token}` header is in
/// [`crate::ClientRequest::Account`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRequest {
    /// Change my display name; answers the user.
    Rename {
        /// The new name.
        name: String,
    },
    /// Change my password; every other session ends.
    ChangePassword {
        /// The current password (`pass`).
        password: Secret,
        /// The new one (`new_pass`).
        new_password: Secret,
    },
    /// List my sessions.
    Sessions,
    /// End one of my sessions.
    EndSession {
        /// Which.
        session_id: SessionId,
    },
    /// Choose my status.
    SetStatus {
        /// The status.
        status: ChosenStatus,
    },
    /// Block someone (by `contact_id` or `contact_email`).
    Block {
        /// Who.
        target: ContactRef,
    },
    /// Unblock someone.
    Unblock {
        /// Who.
        contact_id: UserId,
    },
    /// List the users I block.
    Blocked,
}

impl AccountRequest {
    /// The route it travels on.
    pub fn route(&self) -> AccountRoute {
        match self {
            AccountRequest::Rename { .. } => AccountRoute::Rename,
            AccountRequest::ChangePassword { .. } => AccountRoute::ChangePassword,
            AccountRequest::Sessions => AccountRoute::Sessions,
            AccountRequest::EndSession { .. } => AccountRoute::EndSession,
            AccountRequest::SetStatus { .. } => AccountRoute::SetStatus,
            AccountRequest::Block { .. } => AccountRoute::Block,
            AccountRequest::Unblock { .. } => AccountRoute::Unblock,
            AccountRequest::Blocked => AccountRoute::Blocked,
        }
    }

    /// Reads the data section of an account route.
    pub fn parse(route: AccountRoute, data: &Fields) -> Result<AccountRequest, RequestError> {
        Ok(match route {
            AccountRoute::Rename => AccountRequest::Rename { name: data.str("name")? },
            AccountRoute::ChangePassword => AccountRequest::ChangePassword {
                password: Secret::new(data.str("pass")?),
                new_password: Secret::new(data.str("new_pass")?),
            },
            AccountRoute::Sessions => AccountRequest::Sessions,
            AccountRoute::EndSession => AccountRequest::EndSession {
                session_id: data
                    .str("session_id")?
                    .parse()
                    .map_err(|_| RequestError::Malformed("field `session_id` must be a session id".into()))?,
            },
            AccountRoute::SetStatus => AccountRequest::SetStatus {
                status: data.str("status")?.parse().map_err(|e: BadStatus| RequestError::Malformed(e.to_string()))?,
            },
            AccountRoute::Block => AccountRequest::Block { target: ContactRef::from_data(data)? },
            AccountRoute::Unblock => AccountRequest::Unblock {
                contact_id: data
                    .str("contact_id")?
                    .parse()
                    .map_err(|_| RequestError::Malformed("field `contact_id` must be a user id".into()))?,
            },
            AccountRoute::Blocked => AccountRequest::Blocked,
        })
    }

    /// The data section (the client's side).
    pub fn to_fields(&self) -> Fields {
        match self {
            AccountRequest::Rename { name } => Fields::from_pairs([("name", name.clone())]),
            AccountRequest::ChangePassword { password, new_password } => Fields::from_pairs([
                ("pass", password.expose().to_owned()),
                ("new_pass", new_password.expose().to_owned()),
            ]),
            AccountRequest::Sessions | AccountRequest::Blocked => Fields::default(),
            AccountRequest::EndSession { session_id } => Fields::from_pairs([("session_id", session_id.to_string())]),
            AccountRequest::SetStatus { status } => Fields::from_pairs([("status", status.as_str())]),
            AccountRequest::Block { target } => target.to_fields(),
            AccountRequest::Unblock { contact_id } => Fields::from_pairs([("contact_id", contact_id.to_string())]),
        }
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-11-29T18:20:00Z`), the form every
/// time in DESIGN.md §5 takes. Pure arithmetic (proleptic Gregorian).
pub fn rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Howard Hinnant's days-from-civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_in_any_case_and_refuse_others() {
        for s in ChosenStatus::ALL {
            assert_eq!(s.as_str().parse::<ChosenStatus>(), Ok(s));
            assert_eq!(s.as_str().to_uppercase().parse::<ChosenStatus>(), Ok(s));
        }
        for bad in ["", "online", "busy", "offline", "dnd2"] {
            assert_eq!(bad.parse::<ChosenStatus>(), Err(BadStatus), "{bad}");
        }
    }

    #[test]
    fn session_entry_shape() {
        let e = SessionEntry {
            session_id: SessionId(12),
            created_at: rfc3339(0),
            last_used: rfc3339(1_764_440_400),
            address: "127.0.0.1".into(),
            current: true,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"session_id":"12","created_at":"1970-01-01T00:00:00Z","last_used":"2025-11-29T18:20:00Z","address":"127.0.0.1","current":"true"}"#
        );
        assert_eq!(serde_json::from_str::<SessionEntry>(&json).unwrap(), e);
        assert!(serde_json::from_str::<SessionEntry>(&json.replace("\"true\"", "\"maybe\"")).is_err());
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn unknown_end_reasons_read_as_other() {
        let e: SessionEnded = serde_json::from_str(r#"{"session_id":"3","reason":"solar_flare"}"#).unwrap();
        assert_eq!(e.reason, SessionEndReason::Other);
        let e: SessionEnded = serde_json::from_str(r#"{"session_id":"3","reason":"password_changed"}"#).unwrap();
        assert_eq!(e, SessionEnded { session_id: SessionId(3), reason: SessionEndReason::PasswordChanged });
    }
}
