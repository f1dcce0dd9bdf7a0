//! Voice datagrams: the seed's `/send` fields in a compact binary layout,
//! sealed end to end.
//!
//! ```text
//! header (clear, authenticated):  10 | key id u32 | seq u32
//! body (ChaCha20-Poly1305):       kind u8 | timestamp u32 | nb_packets u8 | size_packet u16 | [offsets] | packets | tag[16]
//! ```
//! All integers big-endian. `kind` is the seed's `type` (1 = Opus voice),
//! `timestamp` counts 48 kHz samples, and the packets are all
//! `size_packet` bytes long (Opus in constant-bitrate mode makes them so,
//! which also keeps sizes from leaking what is said). The nonce is the
//! sender key's salt with `seq` XORed in, so each (key, seq) seals once; the
//! receiver's [`ReplayWindow`] refuses a sequence number seen before. The
//! same sealed bytes travel directly over UDP, inside the relay's DATA, or
//! base64-encoded in a call channel's `/send`, so a client can change paths
//! without re-encrypting. Type bytes 0x01–0x0f belong to the relay.
//!
//! Four kinds travel in this datagram: Opus voice ([`KIND_OPUS`]), a
//! [`Report`] ([`KIND_REPORT`]), a group sender key handed over to one
//! peer ([`KeyHandover`], [`KIND_KEY`]), and Opus voice with copies of
//! earlier frames ([`KIND_OPUS_COPIES`]), the only kind with `offsets`:
//! one byte per copy (`nb_packets − 1` bytes), how many frames before the
//! first packet's frame each copy is.

use chacha20poly1305::Nonce;
use chacha20poly1305::aead::{Aead, Payload};

use crate::keys::SenderKey;

/// The datagram type byte of voice.
pub const VOICE: u8 = 0x10;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 9;
/// Bytes the AEAD adds.
pub const TAG_LEN: usize = 16;
/// Bytes of the sealed body before the packets.
const BODY_HEADER: usize = 8;
/// The seed's `type` for Opus voice.
pub const KIND_OPUS: u8 = 1;
/// The largest datagram we make or accept (fits any path MTU we meet).
pub const MAX_DATAGRAM: usize = 1200;
/// The seed's `type` for a report (one packet: a [`Report`]), sealed under
/// the sender's two-party key towards the one it reports to.
pub const KIND_REPORT: u8 = 2;
/// The seed's `type` for a group sender key handed over to one peer (one
/// packet: a [`KeyHandover`]), sealed under the two-party key towards it.
pub const KIND_KEY: u8 = 3;
/// The seed's `type` for Opus voice with copies of earlier frames: the
/// first packet is the frame at `timestamp`, the others copies of earlier
/// frames, each as many frames back as its byte in
/// [`VoiceFrame::offsets`] says (the sender picks them from the loss
/// pattern the receiver reports).
pub const KIND_OPUS_COPIES: u8 = 4;

/// What one side tells another, twice a second, about the datagrams it got
/// from it: 24 bytes, all big-endian.
///
/// ```text
/// rx_direct u16 | rx_relay u16 | rx_channel u16 | loss_permille u16 | jitter_ms u16
/// | sent_ms u32 | echo_ms u32 | hold_ms u32 | burst_x10 u16
/// ```
/// `rx_*` count the authenticated datagrams (copies included) that came on
/// each path since the last report; `loss_permille` and `jitter_ms` are
/// measured on the stream; `sent_ms` is the sender's call clock when it
/// sent this report (never 0), `echo_ms` the `sent_ms` of the last report it
/// got from the other side (0: none yet) and `hold_ms` how long it held
/// that one, so the other side can tell the round-trip time; `burst_x10`
/// is the mean length of the runs of lost frames measured on the stream
/// lately, in tenths of a frame (0: no loss seen), so the other side can
/// tell random loss (about 10) from bursts and place its copies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Datagrams received per path: direct, relay, call channel.
    pub rx: [u16; 3],
    /// Loss measured on the stream, permille.
    pub loss_permille: u16,
    /// Jitter measured on the stream, ms.
    pub jitter_ms: u16,
    /// The sender's call clock at sending, ms.
    pub sent_ms: u32,
    /// The `sent_ms` of the last report received from the other side.
    pub echo_ms: u32,
    /// How long that report was held before this one went, ms.
    pub hold_ms: u32,
    /// Mean length of the runs of lost frames lately, tenths of a frame
    /// (0: none).
    pub burst_x10: u16,
}

impl Report {
    /// The encoded length.
    pub const LEN: usize = 24;

    /// The 24 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        for r in self.rx {
            b.extend(r.to_be_bytes());
        }
        b.extend(self.loss_permille.to_be_bytes());
        b.extend(self.jitter_ms.to_be_bytes());
        b.extend(self.sent_ms.to_be_bytes());
        b.extend(self.echo_ms.to_be_bytes());
        b.extend(self.hold_ms.to_be_bytes());
        b.extend(self.burst_x10.to_be_bytes());
        b
    }

    /// Reads 24 bytes; anything else is `None`.
    pub fn decode(b: &[u8]) -> Option<Report> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let u16at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Report {
            rx: [u16at(0), u16at(2), u16at(4)],
            loss_permille: u16at(6),
            jitter_ms: u16at(8),
            sent_ms: u32at(10),
            echo_ms: u32at(14),
            hold_ms: u32at(18),
            burst_x10: u16at(22),
        })
    }
}

/// A group call's sender key handed to one peer: `key id u32 | key[32]`
/// (36 bytes), the one packet of a [`KIND_KEY`] frame. The frame is sealed
/// under the two-party key towards that peer, so only it can read the key,
/// and only a frame under that peer's two-party key is taken as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHandover {
    /// The group key's id (in the header of every datagram it seals).
    pub id: u32,
    /// The key.
    pub key: [u8; 32],
}

impl KeyHandover {
    /// The encoded length.
    pub const LEN: usize = 36;

    /// The hand-over of `key`.
    pub fn of(key: &SenderKey) -> KeyHandover {
        KeyHandover { id: key.id, key: *key.key_bytes() }
    }

    /// The 36 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.id.to_be_bytes().to_vec();
        b.extend_from_slice(&self.key);
        b
    }

    /// Reads 36 bytes; anything else is `None`.
    pub fn decode(b: &[u8]) -> Option<KeyHandover> {
        if b.len() != Self::LEN {
            return None;
        }
        let id = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&b[4..]);
        Some(KeyHandover { id, key })
    }

    /// The sender key handed over.
    pub fn sender_key(&self) -> SenderKey {
        SenderKey::from_parts(self.id, self.key)
    }
}

/// The clear contents of a voice datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceFrame {
    /// The seed's `type`.
    pub kind: u8,
    /// Sequence number (per sender key, from 0, never reused).
    pub seq: u32,
    /// Capture time of the first sample, in 48 kHz samples.
    pub timestamp: u32,
    /// The packets, all the same size.
    pub packets: Vec<Vec<u8>>,
    /// [`KIND_OPUS_COPIES`] only (empty for every other kind): for each
    /// packet after the first, how many frames before the first packet's
    /// frame it is (1–255).
    pub offsets: Vec<u8>,
}

/// A datagram that could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not a voice datagram, or cut short.
    #[error("not a voice datagram")]
    NotVoice,
    /// Sealed under a key we do not have.
    #[error("unknown sender key {0}")]
    UnknownKey(u32),
    /// The tag did not check out: forged, damaged, or the wrong key.
    #[error("the datagram does not authenticate")]
    Forged,
    /// The sequence number was seen before or is too old.
    #[error("replayed or too old")]
    Replayed,
    /// The packets do not fit the layout (sizes differ, too many, too big).
    #[error("bad packet layout: {0}")]
    Layout(&'static str),
}

/// The key id of a datagram, to find the key before opening it.
pub fn key_id(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < HEADER_LEN + TAG_LEN || datagram[0] != VOICE {
        return None;
    }
    Some(u32::from_be_bytes([datagram[1], datagram[2], datagram[3], datagram[4]]))
}

/// Seals a frame under the sender's key.
pub fn seal(key: &SenderKey, frame: &VoiceFrame) -> Result<Vec<u8>, PacketError> {
    let size = frame.packets.first().map_or(0, Vec::len);
    if frame.packets.iter().any(|p| p.len() != size) {
        return Err(PacketError::Layout("packets differ in size"));
    }
    let nb = u8::try_from(frame.packets.len()).map_err(|_| PacketError::Layout("more than 255 packets"))?;
    let size16 = u16::try_from(size).map_err(|_| PacketError::Layout("packet too big"))?;
    if HEADER_LEN + BODY_HEADER + frame.offsets.len() + size * frame.packets.len() + TAG_LEN > MAX_DATAGRAM {
        return Err(PacketError::Layout("datagram too big"));
    }
    let mut header = [0u8; HEADER_LEN];
    header[0] = VOICE;
    header[1..5].copy_from_slice(&key.id.to_be_bytes());
    header[5..9].copy_from_slice(&frame.seq.to_be_bytes());
    let want_offsets = if frame.kind == KIND_OPUS_COPIES { frame.packets.len().saturating_sub(1) } else { 0 };
    if frame.offsets.len() != want_offsets {
        return Err(PacketError::Layout("one offset per copy, and only with copies"));
    }
    if frame.offsets.contains(&0) {
        return Err(PacketError::Layout("a copy of the frame itself"));
    }
    let mut body = Vec::with_capacity(BODY_HEADER + want_offsets + size * frame.packets.len());
    body.push(frame.kind);
    body.extend_from_slice(&frame.timestamp.to_be_bytes());
    body.push(nb);
    body.extend_from_slice(&size16.to_be_bytes());
    body.extend_from_slice(&frame.offsets);
    for p in &frame.packets {
        body.extend_from_slice(p);
    }
    let nonce = key.nonce(frame.seq);
    let sealed = key
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &body, aad: &header })
        .map_err(|_| PacketError::Layout("cannot seal"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&header);
    out.extend(sealed);
    Ok(out)
}

/// Opens a datagram sealed under `key` (not checking replays; see
/// [`ReplayWindow`]).
pub fn open(key: &SenderKey, datagram: &[u8]) -> Result<VoiceFrame, PacketError> {
    let id = key_id(datagram).ok_or(PacketError::NotVoice)?;
    if id != key.id {
        return Err(PacketError::UnknownKey(id));
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(PacketError::NotVoice);
    }
    let (header, sealed) = datagram.split_at(HEADER_LEN);
    let seq = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let nonce = key.nonce(seq);
    let body = key
        .cipher()
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: sealed, aad: header })
        .map_err(|_| PacketError::Forged)?;
    if body.len() < BODY_HEADER {
        return Err(PacketError::Layout("body too short"));
    }
    let kind = body[0];
    let timestamp = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    let nb = usize::from(body[5]);
    let size = usize::from(u16::from_be_bytes([body[6], body[7]]));
    let n_offsets = if kind == KIND_OPUS_COPIES { nb.saturating_sub(1) } else { 0 };
    let Some((offsets, rest)) = body[BODY_HEADER..].split_at_checked(n_offsets) else {
        return Err(PacketError::Layout("body too short for its offsets"));
    };
    if offsets.contains(&0) {
        return Err(PacketError::Layout("a copy of the frame itself"));
    }
    if rest.len() != nb * size {
        return Err(PacketError::Layout("packet count and size do not match the body"));
    }
    if nb == 0 && size != 0 {
        // Only one way to say "no packets", so that sealing what was opened
        // gives back the same bytes.
        return Err(PacketError::Layout("a size for no packets"));
    }
    let packets = if size == 0 { vec![Vec::new(); nb] } else { rest.chunks(size).map(<[u8]>::to_vec).collect() };
    Ok(VoiceFrame { kind, seq, timestamp, packets, offsets: offsets.to_vec() })
}

/// Refuses sequence numbers already seen, or older than the window
/// (64 behind the newest), as SRTP does.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    newest: Option<u32>,
    /// Bit i set: `newest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `seq` may be accepted; call [`ReplayWindow::accept`] once it
    /// authenticated.
    pub fn check(&self, seq: u32) -> bool {
        match self.newest {
            None => true,
            Some(n) if seq > n => true,
            Some(n) => {
                let age = n - seq;
                age < 64 && self.seen & (1 << age) == 0
            }
        }
    }

    /// Records `seq` as seen. Answers false (and records nothing) if it was
    /// a replay.
    pub fn accept(&mut self, seq: u32) -> bool {
        if !self.check(seq) {
            return false;
        }
        match self.newest {
            Some(n) if seq <= n => self.seen |= 1 << (n - seq),
            Some(n) => {
                let shift = seq - n;
                self.seen = if shift >= 64 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.newest = Some(seq);
            }
            None => {
                self.seen = 1;
                self.newest = Some(seq);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SenderKey {
        SenderKey::from_parts(0xabcd, [5; 32])
    }

    fn frame(seq: u32) -> VoiceFrame {
        VoiceFrame {
            kind: KIND_OPUS,
            seq,
            timestamp: seq * 960,
            packets: vec![vec![seq as u8; 80], vec![7; 80]],
            offsets: Vec::new(),
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let d = seal(&key(), &frame(3)).unwrap();
        assert_eq!(d.len(), HEADER_LEN + BODY_HEADER + 160 + TAG_LEN);
        assert_eq!(key_id(&d), Some(0xabcd));
        assert_eq!(open(&key(), &d).unwrap(), frame(3));
    }

    #[test]
    fn every_changed_bit_is_caught() {
        let d = seal(&key(), &frame(3)).unwrap();
        for i in 5..d.len() {
            let mut t = d.clone();
            t[i] ^= 0x01;
            assert!(open(&key(), &t).is_err(), "byte {i}");
        }
        let other = SenderKey::from_parts(0xabcd, [6; 32]);
        assert_eq!(open(&other, &d), Err(PacketError::Forged));
        let wrong_id = SenderKey::from_parts(1, [5; 32]);
        assert_eq!(open(&wrong_id, &d), Err(PacketError::UnknownKey(0xabcd)));
    }

    #[test]
    fn same_size_packets_only() {
        let mut f = frame(1);
        f.packets[1].pop();
        assert!(matches!(seal(&key(), &f), Err(PacketError::Layout(_))));
        let big = VoiceFrame { kind: 1, seq: 0, timestamp: 0, packets: vec![vec![0; 1200]], offsets: Vec::new() };
        assert!(matches!(seal(&key(), &big), Err(PacketError::Layout(_))));
    }

    #[test]
    fn copies_carry_their_offsets() {
        let f = VoiceFrame {
            kind: KIND_OPUS_COPIES,
            seq: 9,
            timestamp: 9 * 960,
            packets: vec![vec![1; 80], vec![2; 80], vec![3; 80]],
            offsets: vec![2, 5],
        };
        let d = seal(&key(), &f).unwrap();
        assert_eq!(d.len(), HEADER_LEN + BODY_HEADER + 2 + 240 + TAG_LEN);
        assert_eq!(open(&key(), &d).unwrap(), f);
        // One offset per copy, none of 0, and only on this kind.
        for (kind, offsets) in [(KIND_OPUS_COPIES, vec![2]), (KIND_OPUS_COPIES, vec![0, 5]), (KIND_OPUS, vec![2, 5])] {
            let bad = VoiceFrame { kind, offsets, ..f.clone() };
            assert!(matches!(seal(&key(), &bad), Err(PacketError::Layout(_))), "{bad:?}");
        }
        let alone = VoiceFrame { packets: vec![vec![1; 80]], offsets: vec![], ..f };
        assert_eq!(open(&key(), &seal(&key(), &alone).unwrap()).unwrap(), alone);
    }

    #[test]
    fn constant_bitrate_means_constant_datagram_size() {
        let a = seal(
            &key(),
            &VoiceFrame { kind: 1, seq: 0, timestamp: 0, packets: vec![vec![0; 120]], offsets: Vec::new() },
        )
        .unwrap();
        let b = seal(
            &key(),
            &VoiceFrame { kind: 1, seq: 1, timestamp: 960, packets: vec![vec![9; 120]], offsets: Vec::new() },
        )
        .unwrap();
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn report_round_trip() {
        let r = Report {
            rx: [1, 2, 3],
            loss_permille: 45,
            jitter_ms: 12,
            sent_ms: 1000,
            echo_ms: 900,
            hold_ms: 50,
            burst_x10: 27,
        };
        let b = r.encode();
        assert_eq!(b.len(), Report::LEN);
        assert_eq!(&b[..6], &[0, 1, 0, 2, 0, 3]);
        assert_eq!(&b[10..14], &1000u32.to_be_bytes());
        assert_eq!(&b[22..], &[0, 27]);
        assert_eq!(Report::decode(&b), Some(r));
        assert_eq!(Report::decode(&[0; 5]), None);
        assert_eq!(Report::decode(&[0; 22]), None, "the layout before burst_x10");
        assert_eq!(Report::decode(&[0; 25]), None);
    }

    #[test]
    fn key_handover_round_trip() {
        let k = SenderKey::from_parts(0x0102_0304, [9; 32]);
        let h = KeyHandover::of(&k);
        let b = h.encode();
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
        assert_eq!(b.len(), KeyHandover::LEN);
        assert_eq!(KeyHandover::decode(&b), Some(h.clone()));
        assert_eq!(h.sender_key(), k);
        assert_eq!(KeyHandover::decode(&b[1..]), None);
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10));
        assert!(!w.accept(10), "duplicate");
        assert!(w.accept(8), "late but new");
        assert!(!w.accept(8));
        assert!(w.accept(100));
        assert!(!w.check(36), "too old");
        assert!(w.accept(37), "the oldest still in the window");
        assert!(!w.accept(37));
        assert!(w.accept(99));
        assert!(w.accept(1000));
        assert!(!w.check(100));
    }

    proptest! {
        #[test]
        fn prop_arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = key_id(&bytes);
            prop_assert!(open(&key(), &bytes).is_err());
        }

        #[test]
        fn prop_round_trip(seq in any::<u32>(), ts in any::<u32>(), nb in 0usize..4, size in 0usize..200, fill in any::<u8>()) {
            let f = VoiceFrame { kind: KIND_OPUS, seq, timestamp: ts, packets: vec![vec![fill; size]; nb], offsets: Vec::new() };
            let d = seal(&key(), &f).unwrap();
            prop_assert_eq!(open(&key(), &d).unwrap(), f);
        }

        #[test]
        fn prop_replay_window_accepts_each_seq_once(seqs in proptest::collection::vec(0u32..200, 1..300)) {
            let mut w = ReplayWindow::default();
            let mut accepted = std::collections::HashSet::new();
            for s in seqs {
                if w.accept(s) {
                    prop_assert!(accepted.insert(s), "seq {} accepted twice", s);
                }
            }
        }
    }
}
