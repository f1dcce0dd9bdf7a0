//! Keeps PROTOCOL.md's voice section honest: the example keys, string and
//! datagram are what this code makes and opens.
#![allow(clippy::unwrap_used)]

use babel_media::keys::CallKeys;
use babel_media::packet::{KIND_OPUS, open};

#[test]
fn the_voice_example_in_protocol_md_opens() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../PROTOCOL.md")).unwrap();
    let alice = CallKeys::from_secret([1; 32]);
    let bob = CallKeys::from_secret([2; 32]);
    assert!(doc.contains(&alice.public_b64()), "alice's key");
    assert!(doc.contains(&bob.public_b64()), "bob's key");
    let pair = bob.pairwise(&alice.public_b64()).unwrap();
    assert!(doc.contains(&format!("`{}`", pair.sas())), "the string {}", pair.sas());
    let start = doc.find("# voice alice-to-bob").expect("the voice example");
    let block = &doc[start..];
    let hex: String = block.lines().skip(1).take_while(|l| !l.starts_with("```")).collect();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let frame = open(&pair.their_sender_key(), &bytes).unwrap();
    assert_eq!(frame.kind, KIND_OPUS);
    assert_eq!(frame.seq, 7);
    assert_eq!(frame.timestamp, 6720);
    assert_eq!(frame.packets, vec![vec![0xab; 40]]);
}
