//! Prints PROTOCOL.md's voice datagram example: alice's key pair from the
//! secret bytes 01..01, bob's from 02..02; alice seals sequence 7,
//! timestamp 6720, one 40-byte packet of 0xab for bob.
//!
//! `cargo run -p babel-media --example voice_datagram`

use babel_media::keys::{CallKeys, commitment, encode32, format_code, sas_transcript};
use babel_media::packet::{KIND_OPUS, VoiceFrame, seal};
use babel_proto::{CallId, UserId};

fn main() {
    let alice = CallKeys::from_secret([1; 32]);
    let bob = CallKeys::from_secret([2; 32]);
    let pair = alice.pairwise(&bob.public_b64()).expect("valid keys");
    let frame = VoiceFrame { kind: KIND_OPUS, seq: 7, timestamp: 6720, packets: vec![vec![0xab; 40]] };
    let d = seal(&pair.my_sender_key(), &frame).expect("seals");
    println!("alice key {}\nbob key   {}", alice.public_b64(), bob.public_b64());
    // The key exchange's test vectors: alice (user 1) calls bob (user 2) in
    // call 5293720152043412811.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let commit = commitment(&alice.public_bytes());
    let call = CallId(5_293_720_152_043_412_811);
    let t = sas_transcript(call, UserId(1), UserId(2), &commit, &alice.public_bytes(), &bob.public_bytes());
    println!(
        "key_commit {} ({})\ntranscript {}\ncode       {}",
        hex(&commit),
        encode32(&commit),
        hex(&t),
        format_code(&t)
    );
    println!("```hex\n# voice alice-to-bob");
    for c in d.chunks(16) {
        println!("{}", c.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    println!("```");
}
