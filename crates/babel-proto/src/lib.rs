//! The Babel wire format, pure and sans-IO: bytes in, values out.
//!
//! * [`frame`]: the length-prefixed request and response frames, with an
//!   incremental decoder (`Ok(None)` means "need more bytes").
//! * [`fields`]: the JSON sections, with case-insensitive keys.
//! * [`request`]: typed client requests ([`ClientRequest`]) and the status a
//!   bad one is answered with.
//! * [`response`]: typed server answers ([`Reply`]) and the client's reading
//!   of them ([`Answer`]).
//! * [`event`]: what the server pushes in event mode ([`ServerEvent`]).
//! * [`channel`]: call-channel frames ([`ChannelFrame`], the seed's `/send`).
//! * [`call`]: call ids, media set-up fields, relay grants, end reasons.
//! * [`relay`]: the UDP relay's datagrams.
//! * [`keys`]: end-to-end call keys (X25519, HKDF), commitments, the
//!   transcript codes people compare, sender keys.
//! * [`agree`]: the two-party key exchange with its commitment, as a pure
//!   state machine.
//! * [`voice`]: the sealed voice datagram and the replay window.
//! * [`messages`]: text messages and call history (data, answers, events).
//! * [`types`]: ids, users, presence, secrets.
//! * [`account`]: the account and privacy routes (rename, password,
//!   sessions, status, blocking) and their answers and events.
//! * [`fingerprint`]: TLS certificate fingerprints as printed and pinned.
//!
//! Nothing here opens a socket, reads a clock or spawns a task (the only
//! outside input is the OS random generator, for fresh keys); see
//! `PROTOCOL.md` at the repository root for the byte-level description.

pub mod account;
pub mod agree;
pub mod call;
pub mod channel;
pub mod event;
pub mod fields;
pub mod fingerprint;
pub mod frame;
pub mod keys;
pub mod messages;
pub mod relay;
pub mod request;
pub mod response;
pub mod types;
pub mod voice;

pub use account::{
    AccountRequest, AccountRoute, ChosenStatus, SessionEndReason, SessionEnded, SessionEntry, SessionId,
};
pub use call::{CallId, CallJoined, CallStarted, EndReason, Epoch, MediaSetup, Peer, RelayGrant};
pub use channel::{ChannelFrame, SendData};
pub use event::{CandidatesUpdate, IncomingCall, KeyRevealed, NonceSent, PeerJoined, RelayMoved, ServerEvent};
pub use fields::{Fields, FieldsError};
pub use fingerprint::Fingerprint;
pub use frame::{FrameError, Limits, RawRequest, RawResponse, decode_request, decode_response};
pub use messages::{
    CallHistoryEntry, Direction, EntryId, HistoryQuery, Message, MessageEvent, MessageId, MessageSent, MessagesQuery,
    MessagesRead, MessagesReply, Page, SendMessage, UnreadCount, new_client_id,
};
pub use request::{ClientRequest, ContactRef, LogoutBy, RequestError, Route};
pub use response::{Answer, Reply, ReplyError, Status};
pub use types::{ContactEntry, Credentials, ErrorBody, Presence, Secret, SessionInfo, User, UserId};
