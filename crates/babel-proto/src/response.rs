//! Typed answers: what the server sends back for each request.
//!
//! [`Reply`] is the server's side (typed value to frame); [`Answer`] is the
//! client's side (frame to typed value or a [`ReplyError`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::account::SessionEntry;
use crate::call::{CallJoined, CallStarted};
use crate::frame::RawResponse;
use crate::messages::MessagesReply;
use crate::types::{ContactEntry, ErrorBody, SessionInfo, User};

/// The statuses Babel uses (HTTP meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 200: done.
    Ok,
    /// 201: account created.
    Created,
    /// 400: malformed frame, JSON or field.
    BadRequest,
    /// 401: bad credentials or token.
    Unauthorized,
    /// 403: refused, with a reason.
    Forbidden,
    /// 404: unknown route.
    NotFound,
}

impl Status {
    /// The numeric code on the wire.
    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 200,
            Status::Created => 201,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
        }
    }

    /// The status for a code, if it is one of ours.
    pub fn from_code(code: i32) -> Option<Status> {
        Some(match code {
            200 => Status::Ok,
            201 => Status::Created,
            400 => Status::BadRequest,
            401 => Status::Unauthorized,
            403 => Status::Forbidden,
            404 => Status::NotFound,
            _ => return None,
        })
    }

    /// Whether this is a success (2xx).
    pub fn is_success(self) -> bool {
        matches!(self, Status::Ok | Status::Created)
    }
}

/// An answer the server sends in request mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 200 with no data.
    Ok,
    /// 200 with a session (`/login`).
    Session(SessionInfo),
    /// 201 with a session (`/create`).
    Created(SessionInfo),
    /// 200 with contacts and their presence (`/contacts`).
    Contacts(Vec<ContactEntry>),
    /// 200 with a list of users (`/contact_requests`).
    Users(Vec<User>),
    /// 200 for `/call`: the callee's IP, the call id, my relay grant.
    CallStarted(CallStarted),
    /// 200 for an accepting `/answer`: my relay grant and the participants.
    CallJoined(CallJoined),
    /// 200 for the message and call-history routes.
    Messages(MessagesReply),
    /// 200 with one user (`/rename`).
    User(User),
    /// 200 with my sessions (`/sessions`).
    Sessions(Vec<SessionEntry>),
    /// 403 with a reason a person can read.
    Refused(String),
    /// 400 with what was wrong, as a hint to the client's developer.
    BadRequest(String),
    /// 401, no data.
    Unauthorized,
    /// 404, no data.
    NotFound,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Reply {
    /// The status this reply is sent with.
    pub fn status(&self) -> Status {
        match self {
            Reply::Ok
            | Reply::Session(_)
            | Reply::Contacts(_)
            | Reply::Users(_)
            | Reply::CallStarted(_)
            | Reply::CallJoined(_)
            | Reply::Messages(_)
            | Reply::User(_)
            | Reply::Sessions(_) => Status::Ok,
            Reply::Created(_) => Status::Created,
            Reply::Refused(_) => Status::Forbidden,
            Reply::BadRequest(_) => Status::BadRequest,
            Reply::Unauthorized => Status::Unauthorized,
            Reply::NotFound => Status::NotFound,
        }
    }

    /// Encodes the reply as a response frame.
    pub fn to_frame(&self) -> RawResponse {
        let data = match self {
            Reply::Ok | Reply::Unauthorized | Reply::NotFound => Vec::new(),
            Reply::Session(s) | Reply::Created(s) => json(s),
            Reply::Contacts(c) => json(c),
            Reply::Users(u) => json(u),
            Reply::CallStarted(c) => json(c),
            Reply::CallJoined(c) => json(c),
            Reply::Messages(m) => m.data(),
            Reply::User(u) => json(u),
            Reply::Sessions(s) => json(s),
            Reply::Refused(reason) | Reply::BadRequest(reason) => json(&ErrorBody { error: reason.clone() }),
        };
        RawResponse::new(self.status().code(), data)
    }
}

/// Why an answer was not the success a client hoped for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// 400: the server found the request malformed.
    #[error("the server found the request malformed{}", fmt_reason(.0))]
    BadRequest(Option<String>),
    /// 401: wrong credentials or token.
    #[error("wrong credentials or expired session")]
    Unauthorized,
    /// 403: refused, with the server's reason.
    #[error("refused: {0}")]
    Refused(String),
    /// 404: the server does not know the route.
    #[error("the server does not know this route")]
    NotFound,
    /// A status this client does not know, or a success it did not expect.
    #[error("unexpected status {0}")]
    UnexpectedStatus(i32),
    /// The data did not have the expected shape.
    #[error("unexpected answer data: {0}")]
    BadData(String),
}

fn fmt_reason(r: &Option<String>) -> String {
    r.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
}

/// Client-side reading of a response frame.
#[derive(Debug, Clone)]
pub struct Answer(pub RawResponse);

impl Answer {
    /// Turns an error status into a [`ReplyError`]; passes successes through.
    pub fn check(&self) -> Result<Status, ReplyError> {
        let reason = || serde_json::from_slice::<ErrorBody>(&self.0.data).ok().map(|b| b.error);
        match Status::from_code(self.0.status) {
            Some(s) if s.is_success() => Ok(s),
            Some(Status::BadRequest) => Err(ReplyError::BadRequest(reason())),
            Some(Status::Unauthorized) => Err(ReplyError::Unauthorized),
            Some(Status::Forbidden) => {
                Err(ReplyError::Refused(reason().unwrap_or_else(|| "no reason given".to_owned())))
            }
            Some(Status::NotFound) => Err(ReplyError::NotFound),
            _ => Err(ReplyError::UnexpectedStatus(self.0.status)),
        }
    }

    /// Expects a success and decodes its data as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ReplyError> {
        self.check()?;
        serde_json::from_slice(&self.0.data).map_err(|e| ReplyError::BadData(e.to_string()))
    }

    /// Expects a success; ignores any data.
    pub fn ok(&self) -> Result<(), ReplyError> {
        self.check().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Presence, Secret, UserId};

    fn user() -> User {
        User { id: UserId(3), name: "bo".into(), email: "bo@x.org".into() }
    }

    #[test]
    fn replies_encode_and_read_back() {
        let s = SessionInfo { id: UserId(3), name: "bo".into(), email: "bo@x.org".into(), token: Secret::new("t") };
        let f = Reply::Created(s.clone()).to_frame();
        assert_eq!(f.status, 201);
        assert_eq!(Answer(f).json::<SessionInfo>().unwrap(), s);

        let c = vec![ContactEntry { user: user(), status: Presence::Online }];
        assert_eq!(Answer(Reply::Contacts(c.clone()).to_frame()).json::<Vec<ContactEntry>>().unwrap(), c);
        assert_eq!(Answer(Reply::Users(vec![user()]).to_frame()).json::<Vec<User>>().unwrap(), vec![user()]);
    }

    #[test]
    fn errors_read_back() {
        let f = Reply::Refused("you cannot add yourself".into()).to_frame();
        assert_eq!(f.status, 403);
        assert_eq!(&f.data[..], br#"{"error":"you cannot add yourself"}"#);
        assert_eq!(Answer(f).ok(), Err(ReplyError::Refused("you cannot add yourself".into())));
        assert_eq!(Answer(Reply::Unauthorized.to_frame()).ok(), Err(ReplyError::Unauthorized));
        assert_eq!(Answer(Reply::NotFound.to_frame()).ok(), Err(ReplyError::NotFound));
        assert_eq!(Answer(RawResponse::new(500, "")).ok(), Err(ReplyError::UnexpectedStatus(500)));
        assert!(matches!(Answer(Reply::Ok.to_frame()).json::<User>(), Err(ReplyError::BadData(_))));
    }

    #[test]
    fn codes_round_trip() {
        for s in
            [Status::Ok, Status::Created, Status::BadRequest, Status::Unauthorized, Status::Forbidden, Status::NotFound]
        {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
    }
}
