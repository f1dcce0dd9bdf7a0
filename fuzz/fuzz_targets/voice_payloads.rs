//! What travels inside a sealed voice datagram besides Opus: a report
//! (kind 2, with its burst length) and a group key hand-over (kind 3), on
//! arbitrary bytes.
//! Decoding never panics, takes only its exact length, and what decodes
//! encodes back to the same bytes.
#![no_main]

use babel_proto::voice::{KeyHandover, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Report::decode(data) {
        Some(r) => assert_eq!(r.encode(), data),
        None => assert_ne!(data.len(), Report::LEN),
    }
    match KeyHandover::decode(data) {
        Some(h) => {
            assert_eq!(h.encode(), data);
            assert_eq!(KeyHandover::of(&h.sender_key()), h);
        }
        None => assert_ne!(data.len(), KeyHandover::LEN),
    }
});
