//! Call-channel frames: what flows on a connection after `/connect_call`.
//!
//! Both sides write request-shaped frames and nobody answers them. A client
//! writes `/send`; the server relays it to the other participants' channels
//! unchanged except for the header, which it sets to `{"id": "<sender>"}`,
//! and writes `/call_ended` when the call ends. `/send` data is the seed's
//! JSON: `type`, `nb_packets`, `size_packet`, `packets` (base64 strings, all
//! the same size), carrying the very same sealed bytes the UDP path carries.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::call::{CallId, EndReason};
use crate::fields::Fields;
use crate::frame::RawRequest;
use crate::types::UserId;

/// The seed's `/send` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendData {
    /// What the packets are (Babel's media engine writes `"voice"`).
    #[serde(rename = "type")]
    pub kind: String,
    /// How many packets (decimal string).
    pub nb_packets: String,
    /// Size of each packet in bytes (decimal string).
    pub size_packet: String,
    /// The packets, base64.
    pub packets: Vec<String>,
}

/// `/send` data that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad /send data: {0}")]
pub struct SendDataError(pub String);

impl SendData {
    /// Packs equal-sized packets.
    pub fn new(kind: &str, packets: &[&[u8]]) -> Result<SendData, SendDataError> {
        let size = packets.first().map_or(0, |p| p.len());
        if packets.iter().any(|p| p.len() != size) {
            return Err(SendDataError("every packet must have the same size".into()));
        }
        Ok(SendData {
            kind: kind.to_owned(),
            nb_packets: packets.len().to_string(),
            size_packet: size.to_string(),
            packets: packets.iter().map(|p| STANDARD.encode(p)).collect(),
        })
    }

    /// Reads `/send` data (keys in any case) and checks that the counts and
    /// sizes match the packets.
    pub fn parse(data: &[u8]) -> Result<(SendData, Vec<Vec<u8>>), SendDataError> {
        let fields = Fields::parse(data).map_err(|e| SendDataError(e.to_string()))?;
        let value = serde_json::Value::Object(fields.into_map().into_iter().collect());
        let d: SendData = serde_json::from_value(value).map_err(|e| SendDataError(e.to_string()))?;
        let n: usize = d.nb_packets.trim().parse().map_err(|_| SendDataError("nb_packets is not a number".into()))?;
        let size: usize =
            d.size_packet.trim().parse().map_err(|_| SendDataError("size_packet is not a number".into()))?;
        if n != d.packets.len() {
            return Err(SendDataError(format!("nb_packets says {n} but {} were sent", d.packets.len())));
        }
        let packets = d
            .packets
            .iter()
            .map(|p| STANDARD.decode(p).map_err(|_| SendDataError("a packet is not base64".into())))
            .collect::<Result<Vec<_>, _>>()?;
        if packets.iter().any(|p| p.len() != size) {
            return Err(SendDataError(format!("a packet is not {size} bytes long")));
        }
        Ok((d, packets))
    }

    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A frame on a call channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelFrame {
    /// `/send`: packets, with the sender's id when relayed by the server.
    Send {
        /// Set by the server on relayed frames.
        from: Option<UserId>,
        /// The `/send` data, unchanged.
        data: Bytes,
    },
    /// `/call_ended`: the server closes the channel after this.
    CallEnded(CallId, EndReason),
}

/// A channel frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected call-channel frame: {0}")]
pub struct ChannelError(pub String);

impl ChannelFrame {
    /// The relayed-frame header for a sender: `{"id":"<sender>"}`.
    pub fn sender_header(sender: UserId) -> Bytes {
        Bytes::from(format!(r#"{{"id":"{sender}"}}"#))
    }

    /// The frame's bytes.
    pub fn to_frame(&self) -> RawRequest {
        match self {
            ChannelFrame::Send { from, data } => RawRequest {
                header: from.map(Self::sender_header).unwrap_or_default(),
                route: Bytes::from_static(b"/send"),
                data: data.clone(),
            },
            ChannelFrame::CallEnded(call_id, reason) => {
                crate::event::ServerEvent::CallEnded(*call_id, *reason).to_frame()
            }
        }
    }

    /// Reads a frame from a call channel.
    pub fn parse(frame: &RawRequest) -> Result<ChannelFrame, ChannelError> {
        match &frame.route[..] {
            b"/send" => {
                let from = match Fields::parse(&frame.header) {
                    Ok(h) => h.opt_str("id").ok().flatten().and_then(|s| s.parse().ok()),
                    Err(_) => None,
                };
                Ok(ChannelFrame::Send { from, data: frame.data.clone() })
            }
            b"/call_ended" => match crate::event::ServerEvent::parse(frame) {
                Ok(crate::event::ServerEvent::CallEnded(c, r)) => Ok(ChannelFrame::CallEnded(c, r)),
                _ => Err(ChannelError("bad /call_ended data".into())),
            },
            other => Err(ChannelError(String::from_utf8_lossy(other).into_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_data_round_trip_and_checks() {
        let d = SendData::new("voice", &[b"abc", b"def"]).unwrap();
        assert_eq!(d.nb_packets, "2");
        assert_eq!(d.size_packet, "3");
        let (back, packets) = SendData::parse(&d.to_json()).unwrap();
        assert_eq!(back, d);
        assert_eq!(packets, vec![b"abc".to_vec(), b"def".to_vec()]);
        assert!(SendData::new("voice", &[b"ab", b"c"]).is_err());
        let bad_count = br#"{"type":"voice","nb_packets":"3","size_packet":"3","packets":["YWJj"]}"#;
        assert!(SendData::parse(bad_count).is_err());
        let bad_size = br#"{"TYPE":"voice","nb_packets":"1","size_packet":"2","packets":["YWJj"]}"#;
        assert!(SendData::parse(bad_size).is_err());
    }

    #[test]
    fn channel_frames_round_trip() {
        let data = Bytes::from(SendData::new("voice", &[b"x"]).unwrap().to_json());
        for f in [
            ChannelFrame::Send { from: Some(UserId(8)), data: data.clone() },
            ChannelFrame::Send { from: None, data },
            ChannelFrame::CallEnded(CallId(3), EndReason::Hangup),
        ] {
            assert_eq!(ChannelFrame::parse(&f.to_frame()).unwrap(), f);
        }
        assert_eq!(&ChannelFrame::sender_header(UserId(8))[..], br#"{"id":"8"}"#);
        assert!(ChannelFrame::parse(&RawRequest::new(Vec::new(), "/login", Vec::new())).is_err());
    }
}
