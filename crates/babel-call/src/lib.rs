//! A Babel call from the first ring to the hang-up, one API for every
//! client program: the `babel` command, the desktop app and its demo, the
//! quality harness.
//!
//! * [`session`]: placing a call ([`session::Outgoing`]), answering one or
//!   being invited into a group ([`session::Answering`]), the key exchange
//!   with its commitment, the settled call ([`session::Settled`]) and the
//!   running one ([`session::Call`]: joins, leaves, per-epoch codes,
//!   hang-up, statistics).
//! * [`setup`]: the steps those are made of (keys and socket, what goes in
//!   `/call` and `/answer`, the engine's set-up, what an event means for the
//!   keys), public for tests that take a call apart on purpose.
//! * [`channel`]: `babel-client`'s call channel as the engine's
//!   `MediaChannel`.
//!
//! Above `babel-client` (signalling) and `babel-media` (voice), which know
//! nothing of each other.

pub mod channel;
pub mod session;
pub mod setup;

pub use session::{Answered, Answering, Call, CallError, CallEvent, MediaResult, Outgoing, Settled};
