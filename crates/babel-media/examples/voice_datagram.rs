//! Prints PROTOCOL.md's voice datagram example: alice's key pair from the
//! secret bytes 01..01, bob's from 02..02; alice seals sequence 7,
//! timestamp 6720, one 40-byte packet of 0xab for bob.
//!
//! `cargo run -p babel-media --example voice_datagram`

use babel_media::keys::CallKeys;
use babel_media::packet::{KIND_OPUS, VoiceFrame, seal};

fn main() {
    let alice = CallKeys::from_secret([1; 32]);
    let bob = CallKeys::from_secret([2; 32]);
    let pair = alice.pairwise(&bob.public_b64()).expect("valid keys");
    let frame = VoiceFrame { kind: KIND_OPUS, seq: 7, timestamp: 6720, packets: vec![vec![0xab; 40]] };
    let d = seal(&pair.my_sender_key(), &frame).expect("seals");
    println!("alice key {}\nbob key   {}\nsas       {}", alice.public_b64(), bob.public_b64(), pair.sas());
    println!("```hex\n# voice alice-to-bob");
    for c in d.chunks(16) {
        println!("{}", c.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    println!("```");
}
