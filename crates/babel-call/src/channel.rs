//! `babel-client`'s call channel as the media engine's
//! [`MediaChannel`]: the engine sends and receives `/send` data sections;
//! the channel's other frames (the call's end) are the signalling's
//! business and are passed over here.
//!
//! A wrapper rather than a bare `impl`, since neither the trait
//! (`babel-media`) nor the channel (`babel-client`) belongs to this crate.

use babel_client::CallChannel;
use babel_client::channel::{Receiver, Sender};
use babel_media::channel::{ChannelError, ChannelFuture, ChannelSink, ChannelSource, MediaChannel};
use babel_proto::ChannelFrame;
use bytes::Bytes;

/// A `babel-client` call channel carrying the engine's voice.
#[derive(Debug)]
pub struct ClientChannel(pub CallChannel);

impl ClientChannel {
    /// The channel as `CallSetup::channel` takes it.
    pub fn boxed(channel: CallChannel) -> Box<dyn MediaChannel> {
        Box::new(ClientChannel(channel))
    }
}

impl MediaChannel for ClientChannel {
    fn split(self: Box<Self>) -> (Box<dyn ChannelSink>, Box<dyn ChannelSource>) {
        let (w, r) = self.0.split();
        (Box::new(Sink(w)), Box::new(Source(r)))
    }
}

struct Sink(Sender);

impl ChannelSink for Sink {
    fn send(&mut self, data: Bytes) -> ChannelFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move { self.0.send_raw(data).await.map_err(|e| ChannelError(e.to_string())) })
    }
}

struct Source(Receiver);

impl ChannelSource for Source {
    fn recv(&mut self) -> ChannelFuture<'_, Result<Option<Bytes>, ChannelError>> {
        Box::pin(async move {
            loop {
                match self.0.recv().await {
                    Ok(Some(ChannelFrame::Send { data, .. })) => return Ok(Some(data)),
                    // Other frames (the call's end) are the signalling's business.
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(ChannelError(e.to_string())),
                }
            }
        })
    }
}
