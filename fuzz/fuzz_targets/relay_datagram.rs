//! The relay's datagram parsing on arbitrary bytes: never panics, and
//! whatever checks out is exactly what encoding those values gives. (The
//! key is known here, so the fuzzer can and does solve the tag comparison:
//! "nothing untagged passes" is a property of secret keys, tested in
//! babel-proto's unit tests, not of this target.)
#![no_main]

use babel_proto::relay::{
    ReplayWindow, decode_relayed, encode_bind, encode_bind_ack, encode_confirm, encode_data, encode_relayed,
    peek_client, verify_bind, verify_bind_ack, verify_confirm, verify_data,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = [9u8; 16];
    let _ = peek_client(data);
    if let Some(nonce) = verify_bind(data, &key) {
        let (_, handle) = peek_client(data).expect("a bind has a handle");
        assert_eq!(encode_bind(handle, nonce, &key), data);
    }
    if let Some((nonce, cookie)) = verify_confirm(data, &key) {
        let (_, handle) = peek_client(data).expect("a confirm has a handle");
        assert_eq!(encode_confirm(handle, nonce, &cookie, &key), data);
    }
    if let Some((counter, payload)) = verify_data(data, &key) {
        let (_, handle) = peek_client(data).expect("data has a handle");
        let mut out = Vec::new();
        encode_data(handle, counter, &key, payload, &mut out);
        assert_eq!(out, data);
    }
    if let Some(ack) = verify_bind_ack(data, &key) {
        assert_eq!(encode_bind_ack(&ack, &key), data);
    }
    // The replay window on the bytes read as counters: none taken twice.
    let mut window = ReplayWindow::default();
    let mut taken = std::collections::HashSet::new();
    for c in data.chunks_exact(2).map(|c| u64::from(u16::from_be_bytes([c[0], c[1]]))) {
        if window.accept(c) {
            assert!(taken.insert(c), "counter {c} taken twice");
        }
    }
    if let Some((sender, payload)) = decode_relayed(data) {
        let mut out = Vec::new();
        encode_relayed(sender, payload, &mut out);
        assert_eq!(out, data);
    }
});
