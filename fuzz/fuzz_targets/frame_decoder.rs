//! Feeds arbitrary bytes to the incremental frame decoders.
//!
//! Input: byte 0 picks the split point (scaled over the rest) and the limits;
//! the rest is the byte stream. For both `decode_request` and
//! `decode_response` the target checks that
//! * the decoders never panic, and `Ok(None)` leaves the buffer untouched;
//! * every decoded frame re-encodes to exactly the bytes it was taken from
//!   and respects the limits;
//! * feeding the stream in two parts (drain, append, drain) gives the same
//!   frames, the same error and the same leftover as feeding it at once.
#![no_main]

use babel_proto::frame::{RawRequest, RawResponse};
use babel_proto::{FrameError, Limits, decode_request, decode_response};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

type Decoder<T> = fn(&mut BytesMut, &Limits) -> Result<Option<T>, FrameError>;

trait Frame: PartialEq + std::fmt::Debug {
    fn bytes(&self) -> Bytes;
    fn within(&self, limits: &Limits) -> bool;
}

impl Frame for RawRequest {
    fn bytes(&self) -> Bytes {
        self.to_bytes()
    }
    fn within(&self, l: &Limits) -> bool {
        self.header.len() <= l.max_header && self.route.len() <= l.max_route && self.data.len() <= l.max_data
    }
}

impl Frame for RawResponse {
    fn bytes(&self) -> Bytes {
        self.to_bytes()
    }
    fn within(&self, l: &Limits) -> bool {
        self.data.len() <= l.max_data
    }
}

/// Takes frames off `buf` until it needs more bytes or fails. Each frame must
/// re-encode to the bytes it was cut from, and what is left in `buf` at the
/// end must be exactly the unconsumed rest (so `Ok(None)` and errors leave the
/// buffer untouched). Linear in the buffer size: no per-frame copies.
fn drain<T: Frame>(
    decode: Decoder<T>,
    buf: &mut BytesMut,
    limits: &Limits,
    frames: &mut Vec<T>,
) -> Result<(), FrameError> {
    let start = buf.to_vec();
    let mut off = 0;
    let res = loop {
        let len = buf.len();
        match decode(buf, limits) {
            Err(e) => break Err(e),
            Ok(None) => break Ok(()),
            Ok(Some(frame)) => {
                let used = len - buf.len();
                assert!(used > 0, "a frame must consume bytes");
                assert_eq!(&frame.bytes()[..], &start[off..off + used], "re-encoding must give the same bytes");
                assert!(frame.within(limits), "frame exceeds limits: {frame:?}");
                off += used;
                frames.push(frame);
            }
        }
    };
    assert_eq!(&buf[..], &start[off..], "only whole frames may be taken");
    res
}

fn check<T: Frame>(decode: Decoder<T>, stream: &[u8], split: usize, limits: &Limits) {
    // At once.
    let mut whole = BytesMut::from(stream);
    let mut whole_frames = Vec::new();
    let whole_res = drain(decode, &mut whole, limits, &mut whole_frames);
    if whole_res.is_err() {
        // An error is final: asking again gives the same error.
        let mut again = whole.clone();
        assert_eq!(decode(&mut again, limits), whole_res.clone().map(|()| None));
        assert_eq!(again, whole);
    }

    // In two parts.
    let (a, b) = stream.split_at(split);
    let mut part = BytesMut::from(a);
    let mut part_frames = Vec::new();
    let mut part_res = drain(decode, &mut part, limits, &mut part_frames);
    if part_res.is_ok() {
        part.extend_from_slice(b);
        part_res = drain(decode, &mut part, limits, &mut part_frames);
        assert_eq!(&part[..], &whole[..], "leftover differs when split at {split}");
    } else {
        // Failed before the second part arrived: what is left must be the
        // start of what the whole-stream decoder was left with.
        assert!(whole.starts_with(&part), "leftover differs when split at {split}");
    }
    assert_eq!(part_frames, whole_frames, "frames differ when split at {split}");
    assert_eq!(part_res, whole_res, "outcome differs when split at {split}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    // Low 7 bits: split point scaled over the stream; high bit: tiny limits,
    // so the TooLarge paths are reached with small inputs.
    let split = (usize::from(sel & 0x7f) * stream.len()) / 0x7f;
    let limits =
        if sel & 0x80 == 0 { Limits::default() } else { Limits { max_header: 64, max_route: 16, max_data: 128 } };
    check::<RawRequest>(decode_request, stream, split, &limits);
    check::<RawResponse>(decode_response, stream, split, &limits);
});
