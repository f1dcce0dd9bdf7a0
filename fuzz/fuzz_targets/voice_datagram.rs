//! The voice datagram on arbitrary bytes: opening never panics, and what
//! opens re-seals to the same bytes; what is sealed opens back to the same
//! frame; the replay window accepts each sequence number once. (The key is
//! known here, so forgery is not what this target can test.)
#![no_main]

use babel_proto::keys::SenderKey;
use babel_proto::voice::{KIND_OPUS, KIND_OPUS_COPIES, ReplayWindow, VoiceFrame, key_id, open, seal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SenderKey::from_parts(0x0102_0304, [7; 32]);
    let _ = key_id(data);
    if let Ok(f) = open(&key, data) {
        assert_eq!(seal(&key, &f).ok().as_deref(), Some(data));
    }
    // Use the bytes as a frame's contents too.
    if let Some((&nb, rest)) = data.split_first() {
        let nb = usize::from(nb % 4);
        let size = if nb == 0 { 0 } else { rest.len() / nb };
        let packets: Vec<Vec<u8>> = (0..nb).map(|i| rest[i * size..(i + 1) * size].to_vec()).collect();
        // Odd lengths carry copies, at offsets from the first bytes.
        let (kind, offsets) = if rest.len() % 2 == 1 {
            (KIND_OPUS_COPIES, rest.iter().take(nb.saturating_sub(1)).map(|o| o | 1).collect())
        } else {
            (KIND_OPUS, Vec::new())
        };
        let frame = VoiceFrame { kind, seq: u32::from(nb as u8), timestamp: rest.len() as u32, packets, offsets };
        if let Ok(d) = seal(&key, &frame) {
            assert_eq!(open(&key, &d).ok(), Some(frame));
        }
    }
    let mut w = ReplayWindow::default();
    let mut seen = std::collections::HashSet::new();
    for c in data.chunks(2) {
        let seq = u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
        if w.accept(seq) {
            assert!(seen.insert(seq), "sequence {seq} accepted twice");
        }
    }
});
