//! Opus, set up for calls: 48 kHz mono, 20 ms frames (10 ms as an option),
//! constant bitrate so every packet of a bitrate step has the same size, and
//! in-band FEC fed with the loss the receiver measures.

use opus::{Application, Bitrate, Channels, Decoder, Encoder, Signal};

/// The one sample rate inside the engine.
pub const SAMPLE_RATE: u32 = 48_000;
/// The default bitrate: wideband speech with room for FEC.
pub const DEFAULT_BITRATE: u32 = 32_000;
/// The largest Opus packet we make.
pub const MAX_PACKET: usize = 1000;

/// Frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameMs {
    /// 10 ms: lower latency, more packets.
    Ten,
    /// 20 ms (default).
    #[default]
    Twenty,
}

impl FrameMs {
    /// Milliseconds.
    pub fn ms(self) -> u32 {
        match self {
            FrameMs::Ten => 10,
            FrameMs::Twenty => 20,
        }
    }

    /// Samples per frame at 48 kHz.
    pub fn samples(self) -> usize {
        (SAMPLE_RATE / 1000 * self.ms()) as usize
    }
}

/// A codec failure (bad settings or a corrupt packet).
#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct CodecError(String);

impl From<opus::Error> for CodecError {
    fn from(e: opus::Error) -> Self {
        CodecError(e.to_string())
    }
}

/// The sending half.
pub struct VoiceEncoder {
    enc: Encoder,
    frame: FrameMs,
    bitrate: u32,
    out: Vec<u8>,
}

impl std::fmt::Debug for VoiceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceEncoder").field("frame", &self.frame).field("bitrate", &self.bitrate).finish()
    }
}

impl VoiceEncoder {
    /// An encoder at `bitrate` bits/s with `frame` frames, FEC on.
    pub fn new(bitrate: u32, frame: FrameMs) -> Result<VoiceEncoder, CodecError> {
        let mut enc = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        enc.set_vbr(false)?;
        enc.set_bitrate(Bitrate::Bits(bitrate as i32))?;
        enc.set_inband_fec(true)?;
        enc.set_packet_loss_perc(5)?;
        enc.set_signal(Signal::Voice)?;
        enc.set_complexity(8)?;
        Ok(VoiceEncoder { enc, frame, bitrate, out: vec![0; MAX_PACKET] })
    }

    /// The frame length.
    pub fn frame(&self) -> FrameMs {
        self.frame
    }

    /// The bitrate in bits/s.
    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// Changes the bitrate (a new step: packets stay equal-sized within it).
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), CodecError> {
        self.enc.set_bitrate(Bitrate::Bits(bitrate as i32))?;
        self.bitrate = bitrate;
        Ok(())
    }

    /// Tells the encoder how much loss to protect against (0–100 %).
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        self.enc.set_packet_loss_perc(i32::from(percent.min(100)))?;
        Ok(())
    }

    /// Turns in-band FEC on or off.
    pub fn set_fec(&mut self, on: bool) -> Result<(), CodecError> {
        self.enc.set_inband_fec(on)?;
        Ok(())
    }

    /// Encodes one frame (exactly `frame().samples()` samples in -1..1).
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, CodecError> {
        if pcm.len() != self.frame.samples() {
            return Err(CodecError(format!("a frame is {} samples, got {}", self.frame.samples(), pcm.len())));
        }
        let n = self.enc.encode_float(pcm, &mut self.out)?;
        Ok(self.out[..n].to_vec())
    }
}

/// The receiving half.
pub struct VoiceDecoder {
    dec: Decoder,
    frame: FrameMs,
}

impl std::fmt::Debug for VoiceDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceDecoder").field("frame", &self.frame).finish()
    }
}

impl VoiceDecoder {
    /// A decoder for `frame` frames.
    pub fn new(frame: FrameMs) -> Result<VoiceDecoder, CodecError> {
        Ok(VoiceDecoder { dec: Decoder::new(SAMPLE_RATE, Channels::Mono)?, frame })
    }

    fn run(&mut self, packet: &[u8], fec: bool) -> Result<Vec<f32>, CodecError> {
        let mut pcm = vec![0.0; self.frame.samples()];
        let n = self.dec.decode_float(packet, &mut pcm, fec)?;
        pcm.truncate(n);
        pcm.resize(self.frame.samples(), 0.0);
        Ok(pcm)
    }

    /// Decodes a packet.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, CodecError> {
        self.run(packet, false)
    }

    /// Rebuilds the frame before `next` from `next`'s in-band FEC.
    pub fn decode_fec(&mut self, next: &[u8]) -> Result<Vec<f32>, CodecError> {
        self.run(next, true)
    }

    /// Conceals a lost frame (Opus packet loss concealment).
    pub fn conceal(&mut self) -> Result<Vec<f32>, CodecError> {
        self.run(&[], false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, start: usize) -> Vec<f32> {
        (start..start + n).map(|i| 0.3 * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 48_000.0).sin()).collect()
    }

    #[test]
    fn constant_bitrate_packets_are_equal_sized() {
        for frame in [FrameMs::Twenty, FrameMs::Ten] {
            let mut e = VoiceEncoder::new(DEFAULT_BITRATE, frame).unwrap();
            let n = frame.samples();
            let sizes: std::collections::HashSet<usize> = (0..50)
                .map(|k| {
                    // Speech-like changes: tone, silence, noise.
                    let pcm = match k % 3 {
                        0 => tone(n, k * n),
                        1 => vec![0.0; n],
                        _ => (0..n).map(|i| ((i * 7919 + k) % 101) as f32 / 200.0 - 0.25).collect(),
                    };
                    e.encode(&pcm).unwrap().len()
                })
                .collect();
            assert_eq!(sizes.len(), 1, "{frame:?}: sizes {sizes:?}");
            let size = *sizes.iter().next().unwrap();
            assert_eq!(size, (DEFAULT_BITRATE / 8 * frame.ms() / 1000) as usize);
        }
    }

    #[test]
    fn round_trip_keeps_the_tone() {
        let mut e = VoiceEncoder::new(DEFAULT_BITRATE, FrameMs::Twenty).unwrap();
        let mut d = VoiceDecoder::new(FrameMs::Twenty).unwrap();
        let mut energy = 0.0;
        for k in 0..20 {
            let p = e.encode(&tone(960, k * 960)).unwrap();
            let out = d.decode(&p).unwrap();
            assert_eq!(out.len(), 960);
            if k > 5 {
                energy += out.iter().map(|s| s * s).sum::<f32>();
            }
        }
        assert!(energy > 100.0, "decoded energy {energy}");
    }

    #[test]
    fn fec_and_concealment_produce_frames() {
        let mut e = VoiceEncoder::new(DEFAULT_BITRATE, FrameMs::Twenty).unwrap();
        e.set_expected_loss(20).unwrap();
        let mut d = VoiceDecoder::new(FrameMs::Twenty).unwrap();
        let packets: Vec<_> = (0..10).map(|k| e.encode(&tone(960, k * 960)).unwrap()).collect();
        for p in &packets[..5] {
            d.decode(p).unwrap();
        }
        let rebuilt = d.decode_fec(&packets[6]).unwrap();
        assert!(rebuilt.iter().map(|s| s * s).sum::<f32>() > 1.0, "FEC rebuilds sound");
        let concealed = d.conceal().unwrap();
        assert_eq!(concealed.len(), 960);
        // Garbage from the network is an error or noise, never a panic.
        let _ = d.decode(&[0xff, 0xfe, 0xfd]);
    }

    #[test]
    fn wrong_frame_length_is_an_error() {
        let mut e = VoiceEncoder::new(DEFAULT_BITRATE, FrameMs::Twenty).unwrap();
        assert!(e.encode(&[0.0; 100]).is_err());
    }
}
