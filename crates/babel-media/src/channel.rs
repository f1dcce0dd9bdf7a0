//! The call channel as the media engine sees it: a pipe of `/send` data
//! sections to and from the other participants, through the server.
//!
//! The engine does not know how the channel is carried (`babel-client`'s
//! `CallChannel` over TCP or TLS, or anything else): it hands a
//! [`MediaChannel`] to its driver, which splits it into a [`ChannelSink`]
//! and a [`ChannelSource`] and runs each on a task of its own, so a slow
//! channel never blocks the frame clock. What travels is the data section
//! of a `/send` frame (`babel_proto::SendData`'s JSON: sealed voice
//! datagrams, all the same size), both ways.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// A boxed future, as the channel's halves return (object safe).
pub type ChannelFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a channel half stopped working (the call goes on without it).
#[derive(Debug, thiserror::Error)]
#[error("call channel: {0}")]
pub struct ChannelError(pub String);

/// My call channel, not yet split.
pub trait MediaChannel: Send + std::fmt::Debug + 'static {
    /// The sending and the receiving half, to be used from two tasks.
    fn split(self: Box<Self>) -> (Box<dyn ChannelSink>, Box<dyn ChannelSource>);
}

/// The sending half: one `/send` data section at a time.
pub trait ChannelSink: Send + 'static {
    /// Sends one data section to the other participants.
    fn send(&mut self, data: Bytes) -> ChannelFuture<'_, Result<(), ChannelError>>;
}

/// The receiving half.
pub trait ChannelSource: Send + 'static {
    /// The next data section from another participant; `Ok(None)` once the
    /// channel closed.
    fn recv(&mut self) -> ChannelFuture<'_, Result<Option<Bytes>, ChannelError>>;
}
