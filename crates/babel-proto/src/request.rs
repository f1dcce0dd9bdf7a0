//! Typed requests: what a client may send to the server in request mode.
//!
//! [`ClientRequest::parse`] is the server's side (frame in, typed value or a
//! status-carrying [`RequestError`] out); [`ClientRequest::to_frame`] is the
//! client's side. Field rules (DESIGN.md §1–2, the seed):
//!
//! * `/create` and `/login` carry no header; a header that is sent is
//!   checked for valid JSON and otherwise ignored.
//! * Authenticated routes take `{"id", "token"}` in the header. Absent
//!   credentials or an id that is not a number answer 401, like a wrong token.
//! * A missing data field answers 400.

use crate::account::{AccountRequest, AccountRoute};
use crate::call::{CallId, MediaSetup};
use crate::fields::{Fields, FieldsError};
use crate::frame::RawRequest;
use crate::messages::{HistoryQuery, MessagesQuery, MessagesRead, SendMessage};
use crate::response::Status;
use crate::types::{Credentials, Secret, UserId};

/// Every route a client may send in request mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/create`
    Create,
    /// `/login`
    Login,
    /// `/logout`
    Logout,
    /// `/delete`
    Delete,
    /// `/contacts`
    Contacts,
    /// `/add_contact`
    AddContact,
    /// `/remove_contact`
    RemoveContact,
    /// `/contact_requests`
    ContactRequests,
    /// `/accept_contact`
    AcceptContact,
    /// `/decline_contact`
    DeclineContact,
    /// `/events`
    Events,
    /// `/call`
    Call,
    /// `/answer`
    Answer,
    /// `/hangup`
    Hangup,
    /// `/invite`
    Invite,
    /// `/connect_call`
    ConnectCall,
    /// `/send` (only meaningful on a call channel)
    Send,
    /// `/call_key` (a committed participant reveals its key)
    CallKey,
    /// `/call_nonce` (a member answers a newcomer's commitment)
    CallNonce,
    /// `/send_message`
    SendMessage,
    /// `/messages`
    Messages,
    /// `/mark_read`
    MarkRead,
    /// `/unread`
    Unread,
    /// `/call_history`
    CallHistory,
    /// The account and privacy routes (`/rename`, `/block`, ...).
    Account(AccountRoute),
}

impl Route {
    /// All routes, in documentation order.
    pub const ALL: [Route; 32] = [
        Route::Create,
        Route::Login,
        Route::Logout,
        Route::Delete,
        Route::Contacts,
        Route::AddContact,
        Route::RemoveContact,
        Route::ContactRequests,
        Route::AcceptContact,
        Route::DeclineContact,
        Route::Events,
        Route::Call,
        Route::Answer,
        Route::Hangup,
        Route::Invite,
        Route::ConnectCall,
        Route::Send,
        Route::CallKey,
        Route::CallNonce,
        Route::SendMessage,
        Route::Messages,
        Route::MarkRead,
        Route::Unread,
        Route::CallHistory,
        Route::Account(AccountRoute::Rename),
        Route::Account(AccountRoute::ChangePassword),
        Route::Account(AccountRoute::Sessions),
        Route::Account(AccountRoute::EndSession),
        Route::Account(AccountRoute::SetStatus),
        Route::Account(AccountRoute::Block),
        Route::Account(AccountRoute::Unblock),
        Route::Account(AccountRoute::Blocked),
    ];

    /// The route's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Create => "/create",
            Route::Login => "/login",
            Route::Logout => "/logout",
            Route::Delete => "/delete",
            Route::Contacts => "/contacts",
            Route::AddContact => "/add_contact",
            Route::RemoveContact => "/remove_contact",
            Route::ContactRequests => "/contact_requests",
            Route::AcceptContact => "/accept_contact",
            Route::DeclineContact => "/decline_contact",
            Route::Events => "/events",
            Route::Call => "/call",
            Route::Answer => "/answer",
            Route::Hangup => "/hangup",
            Route::Invite => "/invite",
            Route::ConnectCall => "/connect_call",
            Route::Send => "/send",
            Route::CallKey => "/call_key",
            Route::CallNonce => "/call_nonce",
            Route::SendMessage => "/send_message",
            Route::Messages => "/messages",
            Route::MarkRead => "/mark_read",
            Route::Unread => "/unread",
            Route::CallHistory => "/call_history",
            Route::Account(a) => a.as_str(),
        }
    }

    /// Looks a route up by its wire spelling (exact, as in the seed).
    pub fn from_wire(route: &[u8]) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.as_str().as_bytes() == route)
    }
}

/// Who a `/remove_contact` is about: the seed's table says `contact_id`, its
/// prose says "with email"; both are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactRef {
    /// By id.
    Id(UserId),
    /// By email (compared in lowercase).
    Email(String),
}

impl ContactRef {
    /// Reads `contact_id` or, without it, `contact_email`.
    pub fn from_data(data: &Fields) -> Result<ContactRef, RequestError> {
        if data.contains("contact_id") {
            Ok(ContactRef::Id(parse_user_id(data, "contact_id")?))
        } else if let Some(email) = data.opt_str("contact_email")? {
            Ok(ContactRef::Email(email))
        } else {
            Err(RequestError::Malformed("missing field `contact_id` (or `contact_email`)".into()))
        }
    }

    /// The data fields naming it.
    pub fn to_fields(&self) -> Fields {
        match self {
            ContactRef::Id(id) => Fields::from_pairs([("contact_id", id.to_string())]),
            ContactRef::Email(e) => Fields::from_pairs([("contact_email", e.clone())]),
        }
    }
}

/// How `/logout` names the session to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutBy {
    /// The seed's form: `user_mail` and `token` in the data.
    Email {
        /// The account's email.
        email: String,
        /// The session's token.
        token: Secret,
    },
    /// The `{id, token}` header every other route uses.
    Header(Credentials),
}

/// A request a client sends in request mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// Create an account and a first session.
    Create {
        /// Email address (the account's login).
        email: String,
        /// Password in clear, over the (ideally TLS) connection.
        password: Secret,
        /// Display name; the email's local part when absent.
        name: Option<String>,
    },
    /// Open a new session.
    Login {
        /// Email address.
        email: String,
        /// Password.
        password: Secret,
    },
    /// End one session.
    Logout(LogoutBy),
    /// Delete the account everywhere.
    Delete {
        /// Whose.
        auth: Credentials,
        /// The password (`pass`), optional: when given it must match (403
        /// otherwise); without it the seed's token-only deletion stands.
        password: Option<Secret>,
    },
    /// List contacts with presence and my pending requests.
    Contacts(Credentials),
    /// Ask someone to become a contact.
    AddContact {
        /// Who asks.
        auth: Credentials,
        /// Email of the person asked.
        email: String,
    },
    /// Remove a contact, cancel my request or drop theirs.
    RemoveContact {
        /// Who asks.
        auth: Credentials,
        /// The other user.
        target: ContactRef,
    },
    /// Requests waiting for my answer.
    ContactRequests(Credentials),
    /// Accept a request from `contact_id`.
    AcceptContact {
        /// Who answers.
        auth: Credentials,
        /// Who asked.
        contact_id: UserId,
    },
    /// Decline a request from `contact_id`.
    DeclineContact {
        /// Who answers.
        auth: Credentials,
        /// Who asked.
        contact_id: UserId,
    },
    /// Turn this connection into my event channel.
    Events(Credentials),
    /// Call a contact.
    Call {
        /// The caller.
        auth: Credentials,
        /// The callee.
        contact_id: UserId,
        /// The caller's key and candidates.
        media: MediaSetup,
    },
    /// Answer a call that rings on this session.
    Answer {
        /// The callee.
        auth: Credentials,
        /// The call.
        call_id: CallId,
        /// Take it (`true`) or decline it (`false`).
        accept: bool,
        /// The callee's key and candidates (when accepting).
        media: MediaSetup,
    },
    /// Leave a call (or decline it while it rings).
    Hangup {
        /// Who leaves.
        auth: Credentials,
        /// The call.
        call_id: CallId,
    },
    /// Ring another contact into an ongoing call.
    Invite {
        /// A participant.
        auth: Credentials,
        /// The call.
        call_id: CallId,
        /// The contact to ring.
        contact_id: UserId,
    },
    /// Turn this connection into my call channel for a call.
    ConnectCall {
        /// A participant.
        auth: Credentials,
        /// The call.
        call_id: CallId,
    },
    /// `/send` in request mode: refused with a pointer to the call channel.
    Send(Credentials),
    /// Reveal the key I committed to (`key_commit`) in a call.
    CallKey {
        /// A participant who committed.
        auth: Credentials,
        /// The call.
        call_id: CallId,
        /// My public key, 32 bytes in standard base64.
        key: String,
    },
    /// Answer a newcomer's key commitment with a fresh nonce (group calls).
    CallNonce {
        /// A member.
        auth: Credentials,
        /// The call.
        call_id: CallId,
        /// 16 random bytes in standard base64.
        nonce: String,
    },
    /// Send a text message to a contact.
    SendMessage {
        /// The sender.
        auth: Credentials,
        /// Recipient, text, optional `client_id`.
        message: SendMessage,
    },
    /// A page of my messages (one conversation or all).
    Messages {
        /// Whose.
        auth: Credentials,
        /// Which conversation, which page.
        query: MessagesQuery,
    },
    /// Mark every message received from a contact up to an id as read.
    MarkRead {
        /// The reader.
        auth: Credentials,
        /// The conversation and the newest message read.
        read: MessagesRead,
    },
    /// How many unread messages each contact sent me.
    Unread(Credentials),
    /// A page of my call history.
    CallHistory {
        /// Whose.
        auth: Credentials,
        /// Which page.
        query: HistoryQuery,
    },
    /// An account or privacy route (`/rename`, `/sessions`, `/block`, ...).
    Account {
        /// Whose account.
        auth: Credentials,
        /// What is asked.
        request: AccountRequest,
    },
}

/// Why a request frame could not be turned into a [`ClientRequest`]. Each maps
/// to one status via [`RequestError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The route is not one we serve (404).
    #[error("unknown route `{0}`")]
    UnknownRoute(String),
    /// Bad JSON, a missing field or a field of the wrong form (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// No usable credentials in the header (401).
    #[error("missing or invalid credentials")]
    BadCredentials,
}

impl RequestError {
    /// The status this error is answered with.
    pub fn status(&self) -> Status {
        match self {
            RequestError::UnknownRoute(_) => Status::NotFound,
            RequestError::Malformed(_) => Status::BadRequest,
            RequestError::BadCredentials => Status::Unauthorized,
        }
    }
}

impl From<FieldsError> for RequestError {
    fn from(e: FieldsError) -> Self {
        RequestError::Malformed(e.to_string())
    }
}

fn parse_credentials(header: &Fields) -> Result<Credentials, RequestError> {
    let id = header.opt_str("id")?.ok_or(RequestError::BadCredentials)?;
    let token = header.opt_str("token")?.ok_or(RequestError::BadCredentials)?;
    let id = id.parse().map_err(|_| RequestError::BadCredentials)?;
    Ok(Credentials { id, token: Secret::new(token) })
}

fn parse_user_id(data: &Fields, key: &'static str) -> Result<UserId, RequestError> {
    data.str(key)?.parse().map_err(|_| RequestError::Malformed(format!("field `{key}` must be a user id")))
}

fn parse_call_id(data: &Fields) -> Result<CallId, RequestError> {
    data.str("call_id")?.parse().map_err(|_| RequestError::Malformed("field `call_id` must be a call id".into()))
}

impl ClientRequest {
    /// The route this request travels on.
    pub fn route(&self) -> Route {
        match self {
            ClientRequest::Create { .. } => Route::Create,
            ClientRequest::Login { .. } => Route::Login,
            ClientRequest::Logout(_) => Route::Logout,
            ClientRequest::Delete { .. } => Route::Delete,
            ClientRequest::Contacts(_) => Route::Contacts,
            ClientRequest::AddContact { .. } => Route::AddContact,
            ClientRequest::RemoveContact { .. } => Route::RemoveContact,
            ClientRequest::ContactRequests(_) => Route::ContactRequests,
            ClientRequest::AcceptContact { .. } => Route::AcceptContact,
            ClientRequest::DeclineContact { .. } => Route::DeclineContact,
            ClientRequest::Events(_) => Route::Events,
            ClientRequest::Call { .. } => Route::Call,
            ClientRequest::Answer { .. } => Route::Answer,
            ClientRequest::Hangup { .. } => Route::Hangup,
            ClientRequest::Invite { .. } => Route::Invite,
            ClientRequest::ConnectCall { .. } => Route::ConnectCall,
            ClientRequest::Send(_) => Route::Send,
            ClientRequest::CallKey { .. } => Route::CallKey,
            ClientRequest::CallNonce { .. } => Route::CallNonce,
            ClientRequest::SendMessage { .. } => Route::SendMessage,
            ClientRequest::Messages { .. } => Route::Messages,
            ClientRequest::MarkRead { .. } => Route::MarkRead,
            ClientRequest::Unread(_) => Route::Unread,
            ClientRequest::CallHistory { .. } => Route::CallHistory,
            ClientRequest::Account { request, .. } => Route::Account(request.route()),
        }
    }

    /// Parses a request frame (the server's side).
    pub fn parse(raw: &RawRequest) -> Result<ClientRequest, RequestError> {
        let route = Route::from_wire(&raw.route)
            .ok_or_else(|| RequestError::UnknownRoute(String::from_utf8_lossy(&raw.route).into_owned()))?;
        let header = Fields::parse(&raw.header)?;
        let data = Fields::parse(&raw.data)?;
        let auth = || parse_credentials(&header);
        Ok(match route {
            Route::Create => ClientRequest::Create {
                email: data.str("user_mail")?,
                password: Secret::new(data.str("pass")?),
                name: data.opt_str("name")?,
            },
            Route::Login => {
                ClientRequest::Login { email: data.str("user_mail")?, password: Secret::new(data.str("pass")?) }
            }
            Route::Logout => match (data.opt_str("user_mail")?, data.opt_str("token")?) {
                (Some(email), Some(token)) => {
                    ClientRequest::Logout(LogoutBy::Email { email, token: Secret::new(token) })
                }
                (None, None) if header.contains("id") || header.contains("token") => {
                    ClientRequest::Logout(LogoutBy::Header(auth()?))
                }
                (None, None) => return Err(RequestError::BadCredentials),
                (None, Some(_)) => return Err(FieldsError::Missing("user_mail").into()),
                (Some(_), None) => return Err(FieldsError::Missing("token").into()),
            },
            Route::Delete => ClientRequest::Delete { auth: auth()?, password: data.opt_str("pass")?.map(Secret::new) },
            Route::Contacts => ClientRequest::Contacts(auth()?),
            Route::AddContact => ClientRequest::AddContact { auth: auth()?, email: data.str("contact_email")? },
            Route::RemoveContact => {
                let auth = auth()?;
                ClientRequest::RemoveContact { auth, target: ContactRef::from_data(&data)? }
            }
            Route::ContactRequests => ClientRequest::ContactRequests(auth()?),
            Route::AcceptContact => {
                ClientRequest::AcceptContact { auth: auth()?, contact_id: parse_user_id(&data, "contact_id")? }
            }
            Route::DeclineContact => {
                ClientRequest::DeclineContact { auth: auth()?, contact_id: parse_user_id(&data, "contact_id")? }
            }
            Route::Events => ClientRequest::Events(auth()?),
            Route::Call => ClientRequest::Call {
                auth: auth()?,
                contact_id: parse_user_id(&data, "contact_id")?,
                media: MediaSetup::from_fields(&data)?,
            },
            Route::Answer => {
                let auth = auth()?;
                let accept = match data.str("accept")?.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(RequestError::Malformed("field `accept` must be \"true\" or \"false\"".into())),
                };
                ClientRequest::Answer {
                    auth,
                    call_id: parse_call_id(&data)?,
                    accept,
                    media: MediaSetup::from_fields(&data)?,
                }
            }
            Route::Hangup => ClientRequest::Hangup { auth: auth()?, call_id: parse_call_id(&data)? },
            Route::Invite => ClientRequest::Invite {
                auth: auth()?,
                call_id: parse_call_id(&data)?,
                contact_id: parse_user_id(&data, "contact_id")?,
            },
            Route::ConnectCall => ClientRequest::ConnectCall { auth: auth()?, call_id: parse_call_id(&data)? },
            Route::Send => ClientRequest::Send(auth()?),
            Route::CallKey => {
                let auth = auth()?;
                let call_id = parse_call_id(&data)?;
                let key = crate::call::opt_b64_32(&data, "key")?.ok_or(FieldsError::Missing("key"))?;
                ClientRequest::CallKey { auth, call_id, key }
            }
            Route::CallNonce => {
                let auth = auth()?;
                let call_id = parse_call_id(&data)?;
                let nonce = data.str("nonce")?;
                let ok = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, nonce.trim())
                    .is_ok_and(|b| b.len() == crate::keys::NONCE_LEN);
                if !ok {
                    return Err(FieldsError::Invalid("nonce", "16 bytes in base64").into());
                }
                ClientRequest::CallNonce { auth, call_id, nonce: nonce.trim().to_owned() }
            }
            Route::SendMessage => {
                ClientRequest::SendMessage { auth: auth()?, message: SendMessage::from_fields(&data)? }
            }
            Route::Messages => ClientRequest::Messages { auth: auth()?, query: MessagesQuery::from_fields(&data)? },
            Route::MarkRead => ClientRequest::MarkRead { auth: auth()?, read: MessagesRead::from_fields(&data)? },
            Route::Unread => ClientRequest::Unread(auth()?),
            Route::CallHistory => {
                ClientRequest::CallHistory { auth: auth()?, query: HistoryQuery::from_fields(&data)? }
            }
            Route::Account(route) => {
                let auth = auth()?;
                ClientRequest::Account { auth, request: AccountRequest::parse(route, &data)? }
            }
        })
    }

    /// Encodes the request as a frame (the client's side).
    pub fn to_frame(&self) -> RawRequest {
        fn header(c: &Credentials) -> Fields {
            Fields::from_pairs([("id", c.id.to_string()), ("token", c.token.expose().to_owned())])
        }
        let none = Fields::default;
        let (h, d) = match self {
            ClientRequest::Create { email, password, name } => {
                let mut pairs = vec![("user_mail", email.clone()), ("pass", password.expose().to_owned())];
                if let Some(n) = name {
                    pairs.push(("name", n.clone()));
                }
                (none(), Fields::from_pairs(pairs))
            }
            ClientRequest::Login { email, password } => {
                (none(), Fields::from_pairs([("user_mail", email.clone()), ("pass", password.expose().to_owned())]))
            }
            ClientRequest::Logout(LogoutBy::Email { email, token }) => {
                (none(), Fields::from_pairs([("user_mail", email.clone()), ("token", token.expose().to_owned())]))
            }
            ClientRequest::Delete { auth, password } => {
                let d = password.as_ref().map_or_else(none, |p| Fields::from_pairs([("pass", p.expose().to_owned())]));
                (header(auth), d)
            }
            ClientRequest::Logout(LogoutBy::Header(c))
            | ClientRequest::Contacts(c)
            | ClientRequest::ContactRequests(c)
            | ClientRequest::Unread(c) => (header(c), none()),
            ClientRequest::AddContact { auth, email } => {
                (header(auth), Fields::from_pairs([("contact_email", email.clone())]))
            }
            ClientRequest::RemoveContact { auth, target } => (header(auth), target.to_fields()),
            ClientRequest::AcceptContact { auth, contact_id } | ClientRequest::DeclineContact { auth, contact_id } => {
                (header(auth), Fields::from_pairs([("contact_id", contact_id.to_string())]))
            }
            ClientRequest::Events(c) | ClientRequest::Send(c) => (header(c), none()),
            ClientRequest::Call { auth, contact_id, media } => {
                let mut pairs = vec![("contact_id", serde_json::Value::String(contact_id.to_string()))];
                pairs.extend(media.to_pairs());
                (header(auth), Fields::from_pairs(pairs))
            }
            ClientRequest::Answer { auth, call_id, accept, media } => {
                let mut pairs = vec![
                    ("call_id", serde_json::Value::String(call_id.to_string())),
                    ("accept", serde_json::Value::String(accept.to_string())),
                ];
                pairs.extend(media.to_pairs());
                (header(auth), Fields::from_pairs(pairs))
            }
            ClientRequest::Hangup { auth, call_id } | ClientRequest::ConnectCall { auth, call_id } => {
                (header(auth), Fields::from_pairs([("call_id", call_id.to_string())]))
            }
            ClientRequest::Invite { auth, call_id, contact_id } => (
                header(auth),
                Fields::from_pairs([("call_id", call_id.to_string()), ("contact_id", contact_id.to_string())]),
            ),
            ClientRequest::CallKey { auth, call_id, key } => {
                (header(auth), Fields::from_pairs([("call_id", call_id.to_string()), ("key", key.clone())]))
            }
            ClientRequest::CallNonce { auth, call_id, nonce } => {
                (header(auth), Fields::from_pairs([("call_id", call_id.to_string()), ("nonce", nonce.clone())]))
            }
            ClientRequest::SendMessage { auth, message } => (header(auth), message.to_fields()),
            ClientRequest::Messages { auth, query } => (header(auth), query.to_fields()),
            ClientRequest::MarkRead { auth, read } => (header(auth), read.to_fields()),
            ClientRequest::CallHistory { auth, query } => (header(auth), query.to_fields()),
            ClientRequest::Account { auth, request } => (header(auth), request.to_fields()),
        };
        let section = |f: Fields| {
            if f.is_empty() { Vec::new() } else { f.to_json() }
        };
        RawRequest::new(section(h), self.route().as_str(), section(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{ChosenStatus, SessionId};
    use proptest::prelude::*;

    fn creds() -> Credentials {
        Credentials { id: UserId(7), token: Secret::new("tok") }
    }

    fn frame(h: &str, r: &str, d: &str) -> RawRequest {
        RawRequest::new(h.to_owned(), r.to_owned(), d.to_owned())
    }

    fn every_request() -> Vec<ClientRequest> {
        vec![
            ClientRequest::Create { email: "a@b.c".into(), password: Secret::new("pw"), name: None },
            ClientRequest::Create { email: "a@b.c".into(), password: Secret::new("pw"), name: Some("Ann".into()) },
            ClientRequest::Login { email: "a@b.c".into(), password: Secret::new("p\"w") },
            ClientRequest::Logout(LogoutBy::Email { email: "a@b.c".into(), token: Secret::new("t") }),
            ClientRequest::Logout(LogoutBy::Header(creds())),
            ClientRequest::Delete { auth: creds(), password: None },
            ClientRequest::Delete { auth: creds(), password: Some(Secret::new("p\"w")) },
            ClientRequest::Contacts(creds()),
            ClientRequest::AddContact { auth: creds(), email: "x@y.z".into() },
            ClientRequest::RemoveContact { auth: creds(), target: ContactRef::Id(UserId(3)) },
            ClientRequest::RemoveContact { auth: creds(), target: ContactRef::Email("x@y.z".into()) },
            ClientRequest::ContactRequests(creds()),
            ClientRequest::AcceptContact { auth: creds(), contact_id: UserId(9) },
            ClientRequest::DeclineContact { auth: creds(), contact_id: UserId(9) },
            ClientRequest::Events(creds()),
            ClientRequest::Call { auth: creds(), contact_id: UserId(2), media: MediaSetup::default() },
            ClientRequest::Call {
                auth: creds(),
                contact_id: UserId(2),
                media: MediaSetup {
                    key: None,
                    key_commit: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
                    candidates: vec!["192.168.1.2:5000".parse().unwrap()],
                    ..MediaSetup::default()
                },
            },
            ClientRequest::CallKey {
                auth: creds(),
                call_id: CallId(5),
                key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            },
            ClientRequest::CallNonce { auth: creds(), call_id: CallId(5), nonce: "AAAAAAAAAAAAAAAAAAAAAA==".into() },
            ClientRequest::Answer { auth: creds(), call_id: CallId(5), accept: true, media: MediaSetup::default() },
            ClientRequest::Answer { auth: creds(), call_id: CallId(5), accept: false, media: MediaSetup::default() },
            ClientRequest::Hangup { auth: creds(), call_id: CallId(5) },
            ClientRequest::Invite { auth: creds(), call_id: CallId(5), contact_id: UserId(4) },
            ClientRequest::ConnectCall { auth: creds(), call_id: CallId(u64::MAX) },
            ClientRequest::Send(creds()),
            ClientRequest::SendMessage {
                auth: creds(),
                message: SendMessage { contact_id: UserId(2), text: "hi \"x\"".into(), client_id: Some("c1".into()) },
            },
            ClientRequest::SendMessage {
                auth: creds(),
                message: SendMessage { contact_id: UserId(2), text: "hi".into(), client_id: None },
            },
            ClientRequest::Messages { auth: creds(), query: MessagesQuery::default() },
            ClientRequest::Messages {
                auth: creds(),
                query: MessagesQuery {
                    contact_id: Some(UserId(2)),
                    page: crate::messages::Page::Before(crate::messages::MessageId(40)),
                    limit: 10,
                },
            },
            ClientRequest::MarkRead {
                auth: creds(),
                read: MessagesRead { contact_id: UserId(2), message_id: crate::messages::MessageId(40) },
            },
            ClientRequest::Unread(creds()),
            ClientRequest::CallHistory { auth: creds(), query: HistoryQuery::default() },
            acct(AccountRequest::Rename { name: "Ann \"A\" Lee".into() }),
            acct(AccountRequest::ChangePassword { password: Secret::new("old"), new_password: Secret::new("n\"ew") }),
            acct(AccountRequest::Sessions),
            acct(AccountRequest::EndSession { session_id: SessionId(12) }),
            acct(AccountRequest::SetStatus { status: ChosenStatus::Dnd }),
            acct(AccountRequest::SetStatus { status: ChosenStatus::Invisible }),
            acct(AccountRequest::Block { target: ContactRef::Id(UserId(3)) }),
            acct(AccountRequest::Block { target: ContactRef::Email("x@y.z".into()) }),
            acct(AccountRequest::Unblock { contact_id: UserId(3) }),
            acct(AccountRequest::Blocked),
        ]
    }

    fn acct(request: AccountRequest) -> ClientRequest {
        ClientRequest::Account { auth: creds(), request }
    }

    #[test]
    fn account_routes_parse_their_data() {
        let h = r#"{"id":"7","token":"tok"}"#;
        let ok = [
            ("/set_status", r#"{"Status":"Away"}"#, AccountRequest::SetStatus { status: ChosenStatus::Away }),
            (
                "/block",
                r#"{"contact_email":"x@y.z"}"#,
                AccountRequest::Block { target: ContactRef::Email("x@y.z".into()) },
            ),
            ("/end_session", r#"{"session_id":"5"}"#, AccountRequest::EndSession { session_id: SessionId(5) }),
            ("/sessions", "", AccountRequest::Sessions),
        ];
        for (route, data, want) in ok {
            assert_eq!(ClientRequest::parse(&frame(h, route, data)).unwrap(), acct(want), "{route}");
        }
        let bad = [
            (h, "/set_status", r#"{"status":"online"}"#, Status::BadRequest),
            (h, "/set_status", "{}", Status::BadRequest),
            (h, "/rename", "{}", Status::BadRequest),
            (h, "/change_password", r#"{"pass":"a"}"#, Status::BadRequest),
            (h, "/end_session", r#"{"session_id":"-1"}"#, Status::BadRequest),
            (h, "/block", "{}", Status::BadRequest),
            (h, "/unblock", r#"{"contact_email":"x@y.z"}"#, Status::BadRequest),
            ("", "/blocked", "", Status::Unauthorized),
            (r#"{"id":"7"}"#, "/sessions", "", Status::Unauthorized),
            ("", "/change_password", r#"{"pass":"a","new_pass":"b"}"#, Status::Unauthorized),
        ];
        for (h, route, data, status) in bad {
            assert_eq!(ClientRequest::parse(&frame(h, route, data)).unwrap_err().status(), status, "{route} {data}");
        }
    }

    #[test]
    fn every_request_round_trips() {
        for r in every_request() {
            assert_eq!(ClientRequest::parse(&r.to_frame()).unwrap(), r);
        }
    }

    #[test]
    fn every_route_is_covered() {
        let covered: std::collections::HashSet<_> = every_request().iter().map(ClientRequest::route).collect();
        assert_eq!(covered.len(), Route::ALL.len());
    }

    #[test]
    fn unknown_route_is_404_even_with_bad_json() {
        let e = ClientRequest::parse(&frame("{", "/nope", "")).unwrap_err();
        assert_eq!(e.status(), Status::NotFound);
        // Routes are exact, as in the seed.
        let e = ClientRequest::parse(&frame("", "/LOGIN", "")).unwrap_err();
        assert_eq!(e.status(), Status::NotFound);
    }

    #[test]
    fn keys_in_any_case() {
        let r =
            ClientRequest::parse(&frame(r#"{"ID":"7","Token":"tok"}"#, "/add_contact", r#"{"Contact_Email":"x@y.z"}"#))
                .unwrap();
        assert_eq!(r, ClientRequest::AddContact { auth: creds(), email: "x@y.z".into() });
    }

    #[test]
    fn statuses_of_bad_requests() {
        let cases = [
            (frame("", "/login", r#"{"user_mail":"a@b.c"}"#), Status::BadRequest),
            (frame("", "/login", "not json"), Status::BadRequest),
            (frame("", "/contacts", ""), Status::Unauthorized),
            (frame(r#"{"id":"x","token":"t"}"#, "/contacts", ""), Status::Unauthorized),
            (frame(r#"{"id":"1"}"#, "/contacts", ""), Status::Unauthorized),
            (frame(r#"{"id":"1","token":"t"}"#, "/add_contact", ""), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/remove_contact", "{}"), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/accept_contact", r#"{"contact_id":"z"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","id":"2","token":"t"}"#, "/contacts", ""), Status::BadRequest),
            (frame("", "/logout", r#"{"token":"t"}"#), Status::BadRequest),
            (frame("", "/logout", ""), Status::Unauthorized),
            (frame(r#"{"id":"1","token":"t"}"#, "/answer", r#"{"call_id":"1","accept":"maybe"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/answer", r#"{"call_id":"x","accept":"true"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/call", r#"{"contact_id":"2","key":"!!"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/hangup", "{}"), Status::BadRequest),
            (frame("", "/events", ""), Status::Unauthorized),
            (frame(r#"{"id":"1","token":"t"}"#, "/answer", r#"{"call_id":"1","accept":"maybe"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/answer", r#"{"call_id":"x","accept":"true"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/call", r#"{"contact_id":"2","key":"!!"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/hangup", "{}"), Status::BadRequest),
            (frame("", "/events", ""), Status::Unauthorized),
            (frame("", "/unread", ""), Status::Unauthorized),
            (frame("", "/send_message", r#"{"contact_id":"2","text":"x"}"#), Status::Unauthorized),
            (frame(r#"{"id":"1","token":"t"}"#, "/send_message", r#"{"contact_id":"2"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/messages", r#"{"limit":"0"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/mark_read", r#"{"contact_id":"2"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/call_history", r#"{"before":"-3"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/call_key", r#"{"call_id":"1"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/call_key", r#"{"call_id":"1","key":"AAAA"}"#), Status::BadRequest),
            (frame(r#"{"id":"1","token":"t"}"#, "/call", r#"{"contact_id":"2","key_commit":"!"}"#), Status::BadRequest),
            (frame("", "/call_key", r#"{"call_id":"1","key":"AAAA"}"#), Status::Unauthorized),
            (
                frame(r#"{"id":"1","token":"t"}"#, "/call_nonce", r#"{"call_id":"1","nonce":"AAAA"}"#),
                Status::BadRequest,
            ),
        ];
        for (f, status) in cases {
            assert_eq!(ClientRequest::parse(&f).unwrap_err().status(), status, "{f:?}");
        }
    }

    #[test]
    fn seed_logout_form() {
        let r = ClientRequest::parse(&frame("", "/logout", r#"{"user_mail":"a@b.c","token":"t"}"#)).unwrap();
        assert_eq!(r, ClientRequest::Logout(LogoutBy::Email { email: "a@b.c".into(), token: Secret::new("t") }));
    }

    proptest! {
        #[test]
        fn prop_parse_never_panics(
            h in proptest::collection::vec(any::<u8>(), 0..64),
            ri in 0usize..36,
            d in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let route = Route::ALL.get(ri).map_or("/other", |r| r.as_str());
            let _ = ClientRequest::parse(&RawRequest::new(h, route, d));
        }

        #[test]
        fn prop_strings_round_trip(email in ".{0,40}", pw in ".{0,40}") {
            let r = ClientRequest::Login { email, password: Secret::new(pw) };
            prop_assert_eq!(ClientRequest::parse(&r.to_frame()).unwrap(), r);
        }
    }
}
