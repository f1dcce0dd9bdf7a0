//! Values of call set-up: call ids, the media fields peers exchange through
//! the server, the relay grant, end reasons.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fields::{Fields, FieldsError};
use crate::types::User;

/// A call's id: 64 random bits, a decimal string on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for CallId {
    type Err = crate::types::BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(crate::types::BadId);
        }
        s.parse().map(CallId).map_err(|_| crate::types::BadId)
    }
}

impl Serialize for CallId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CallId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A group call's epoch: 0 once the callee answered, one more at every
/// later join and every leave while the call goes on. A decimal string on
/// the wire (`"epoch": "2"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u32);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(serde::de::Error::custom("an epoch is a decimal number"));
        }
        t.parse().map(Epoch).map_err(serde::de::Error::custom)
    }
}

/// Most candidate addresses one participant may announce.
pub const MAX_CANDIDATES: usize = 8;

/// What a participant tells the others so they can reach it and agree keys:
/// its X25519 public key (or first only a commitment to it) and the UDP
/// addresses it can be reached on.
///
/// Sent by the client in `/call` (`key_commit`) and `/answer` (`key`); the
/// server adds the public address it saw (from the relay's bind) to
/// `candidates` and passes the whole to the other participants, and adds a
/// caller's `key` once it is revealed by `/call_key`. The server never sees
/// a private key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaSetup {
    /// X25519 public key, 32 bytes in standard base64 (absent for clients
    /// without Babel's media engine, such as the seed's, and for a caller
    /// until it reveals it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// SHA-256 commitment to the public key (`keys::commitment`), 32 bytes
    /// in standard base64: what a caller sends instead of its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_commit: Option<String>,
    /// UDP candidates, `ip:port`, most preferred first.
    #[serde(default)]
    pub candidates: Vec<SocketAddr>,
    /// `relay_only: "true"` in `/call` or `/answer`: the others never learn
    /// this participant's addresses (its `ip` is the relay's, its
    /// candidates are withheld). Never passed on.
    #[serde(skip)]
    pub relay_only: bool,
}

impl MediaSetup {
    /// Reads `key`, `key_commit` and `candidates` from request data.
    /// `candidates` may be a JSON array of strings or one comma-separated
    /// string.
    pub fn from_fields(data: &Fields) -> Result<MediaSetup, FieldsError> {
        let key = opt_b64_32(data, "key")?;
        let key_commit = opt_b64_32(data, "key_commit")?;
        let texts: Vec<String> = match data.value("candidates") {
            None => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or(FieldsError::Invalid("candidates", "a list of ip:port strings"))?,
            Some(serde_json::Value::String(s)) => {
                s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
            }
            Some(_) => return Err(FieldsError::Invalid("candidates", "a list of ip:port strings")),
        };
        if texts.len() > MAX_CANDIDATES {
            return Err(FieldsError::Invalid("candidates", "at most 8 addresses"));
        }
        let candidates = texts
            .iter()
            .map(|t| t.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| FieldsError::Invalid("candidates", "a list of ip:port strings"))?;
        let relay_only = match data.opt_str("relay_only")?.map(|s| s.trim().to_ascii_lowercase()) {
            None => false,
            Some(s) if s == "true" => true,
            Some(s) if s == "false" || s.is_empty() => false,
            Some(_) => return Err(FieldsError::Invalid("relay_only", "\"true\" or \"false\"")),
        };
        Ok(MediaSetup { key, key_commit, candidates, relay_only })
    }

    /// Writes the fields into a request-data map.
    pub fn to_pairs(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut out = Vec::new();
        if let Some(k) = &self.key {
            out.push(("key", serde_json::Value::String(k.clone())));
        }
        if let Some(c) = &self.key_commit {
            out.push(("key_commit", serde_json::Value::String(c.clone())));
        }
        if !self.candidates.is_empty() {
            out.push((
                "candidates",
                serde_json::Value::Array(
                    self.candidates.iter().map(|c| serde_json::Value::String(c.to_string())).collect(),
                ),
            ));
        }
        if self.relay_only {
            out.push(("relay_only", serde_json::Value::String("true".into())));
        }
        out
    }
}

/// An optional field of 32 bytes in standard base64 (a key or a key
/// commitment), trimmed.
pub fn opt_b64_32(data: &Fields, name: &'static str) -> Result<Option<String>, FieldsError> {
    match data.opt_str(name)? {
        Some(k) => {
            let raw = STANDARD.decode(k.trim()).map_err(|_| FieldsError::Invalid(name, "32 bytes in base64"))?;
            if raw.len() != 32 {
                return Err(FieldsError::Invalid(name, "32 bytes in base64"));
            }
            Ok(Some(k.trim().to_owned()))
        }
        None => Ok(None),
    }
}

/// What a participant needs to use the server's UDP relay: where it is and
/// the per-participant secret that proves membership (see [`crate::relay`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayGrant {
    /// The relay's UDP port on the server's address.
    pub relay_port: String,
    /// This participant's handle in relay datagrams (decimal u32).
    pub relay_handle: String,
    /// This participant's 16-byte relay key, standard base64.
    pub relay_key: String,
    /// The relay's IP address when it is not the server's this client talks
    /// to (in a cluster, the relay of the call's home node); absent: the
    /// server's. Clients that do not know it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_host: Option<String>,
}

impl fmt::Debug for RelayGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayGrant")
            .field("relay_port", &self.relay_port)
            .field("relay_handle", &self.relay_handle)
            .field("relay_host", &self.relay_host)
            .finish_non_exhaustive()
    }
}

impl RelayGrant {
    /// Builds a grant from its parts.
    pub fn new(port: u16, handle: u32, key: &[u8; 16]) -> Self {
        Self {
            relay_port: port.to_string(),
            relay_handle: handle.to_string(),
            relay_key: STANDARD.encode(key),
            relay_host: None,
        }
    }

    /// The grant naming the relay's host (`None`: the server's).
    pub fn with_host(mut self, host: Option<std::net::IpAddr>) -> Self {
        self.relay_host = host.map(|h| h.to_string());
        self
    }

    /// The relay's address: `relay_host` when present and well formed,
    /// otherwise `server_ip`; `None` if the port is malformed.
    pub fn relay_addr(&self, server_ip: std::net::IpAddr) -> Option<std::net::SocketAddr> {
        let port = self.relay_port.parse().ok()?;
        let ip = self.relay_host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(server_ip);
        Some(std::net::SocketAddr::new(ip, port))
    }

    /// The parts, if well formed.
    pub fn parts(&self) -> Option<(u16, u32, [u8; 16])> {
        let port = self.relay_port.parse().ok()?;
        let handle = self.relay_handle.parse().ok()?;
        let key = STANDARD.decode(&self.relay_key).ok()?.try_into().ok()?;
        Some((port, handle, key))
    }
}

/// `/call`'s answer: the callee's IP, the call id and the caller's relay grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStarted {
    /// The callee's IP address as the server sees their latest connection.
    pub ip: String,
    /// The new call.
    pub call_id: CallId,
    /// The caller's relay grant.
    #[serde(flatten)]
    pub relay: RelayGrant,
}

/// Another participant as a newcomer to a call learns it: who, where, and
/// their media set-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Their IP as the server sees it.
    pub ip: String,
    /// Their key and candidates.
    #[serde(flatten)]
    pub media: MediaSetup,
}

/// `/answer`'s answer when accepting: my relay grant and who is in the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallJoined {
    /// The call.
    pub call_id: CallId,
    /// My relay grant.
    #[serde(flatten)]
    pub relay: RelayGrant,
    /// Everyone already in the call.
    pub participants: Vec<Peer>,
    /// The call's epoch with me in it (group calls' code).
    #[serde(default)]
    pub epoch: Epoch,
}

/// Why a call ended for the one who is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Someone hung up.
    Hangup,
    /// The callee declined.
    Declined,
    /// Nobody answered in time.
    Timeout,
    /// A participant's connections all dropped.
    Disconnected,
    /// Another device of the same user answered.
    AnsweredElsewhere,
    /// A participant logged out.
    Logout,
    /// A participant deleted their account.
    Deleted,
}

impl EndReason {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::Declined => "declined",
            EndReason::Timeout => "timeout",
            EndReason::Disconnected => "disconnected",
            EndReason::AnsweredElsewhere => "answered_elsewhere",
            EndReason::Logout => "logout",
            EndReason::Deleted => "deleted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_grants_name_their_host_only_when_elsewhere() {
        let here = RelayGrant::new(7447, 9, &[0; 16]);
        let text = serde_json::to_string(&here).expect("json");
        assert!(!text.contains("relay_host"), "{text}");
        let ip: std::net::IpAddr = [192, 0, 2, 1].into();
        assert_eq!(here.relay_addr(ip), Some(std::net::SocketAddr::new(ip, 7447)));
        let there = here.clone().with_host(Some([198, 51, 100, 7].into()));
        let text = serde_json::to_string(&there).expect("json");
        assert!(text.ends_with(r#","relay_host":"198.51.100.7"}"#), "{text}");
        let back: RelayGrant = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.relay_addr(ip), Some(std::net::SocketAddr::new([198, 51, 100, 7].into(), 7447)));
        // Without the field (an older server) it is the server's address.
        let old: RelayGrant =
            serde_json::from_str(r#"{"relay_port":"1","relay_handle":"2","relay_key":""}"#).expect("parse");
        assert_eq!(old.relay_host, None);
    }

    #[test]
    fn media_setup_from_fields() {
        let key = STANDARD.encode([7u8; 32]);
        let f = Fields::parse(
            format!(r#"{{"key":"{key}","key_commit":"{key}","candidates":["127.0.0.1:5000","[::1]:6000"]}}"#)
                .as_bytes(),
        )
        .unwrap();
        let m = MediaSetup::from_fields(&f).unwrap();
        assert_eq!(m.key.as_deref(), Some(key.as_str()));
        assert_eq!(m.key_commit.as_deref(), Some(key.as_str()));
        assert_eq!(m.candidates.len(), 2);
        let f = Fields::parse(br#"{"candidates":"10.0.0.1:1, 10.0.0.2:2"}"#).unwrap();
        assert_eq!(MediaSetup::from_fields(&f).unwrap().candidates.len(), 2);
        assert!(!MediaSetup::from_fields(&f).unwrap().relay_only);
        let f = Fields::parse(br#"{"relay_only":"true"}"#).unwrap();
        let m = MediaSetup::from_fields(&f).unwrap();
        assert!(m.relay_only);
        assert_eq!(m.to_pairs(), vec![("relay_only", serde_json::Value::String("true".into()))]);
        assert!(!serde_json::to_string(&m).unwrap().contains("relay_only"), "never passed on");
        assert_eq!(MediaSetup::from_fields(&Fields::default()).unwrap(), MediaSetup::default());
        for bad in [
            r#"{"key":"short"}"#.to_owned(),
            r#"{"key_commit":"AAAA"}"#.to_owned(),
            r#"{"candidates":["nope"]}"#.to_owned(),
            r#"{"candidates":[1]}"#.to_owned(),
            format!(r#"{{"candidates":"{}"}}"#, ["1.1.1.1:1"; 9].join(",")),
            r#"{"relay_only":"maybe"}"#.to_owned(),
        ] {
            assert!(MediaSetup::from_fields(&Fields::parse(bad.as_bytes()).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn relay_grant_parts_round_trip() {
        let g = RelayGrant::new(7447, 42, &[9; 16]);
        assert_eq!(g.parts(), Some((7447, 42, [9; 16])));
        assert!(!format!("{g:?}").contains(&g.relay_key));
    }

    #[test]
    fn call_ids_and_reasons_on_the_wire() {
        assert_eq!(serde_json::to_string(&CallId(u64::MAX)).unwrap(), "\"18446744073709551615\"");
        assert_eq!("12".parse::<CallId>(), Ok(CallId(12)));
        assert!("-1".parse::<CallId>().is_err());
        assert_eq!(serde_json::to_string(&EndReason::AnsweredElsewhere).unwrap(), "\"answered_elsewhere\"");
    }
}
