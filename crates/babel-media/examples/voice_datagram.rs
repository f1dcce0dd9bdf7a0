//! Prints PROTOCOL.md's voice datagram examples: alice's key pair from the
//! secret bytes 01..01, bob's from 02..02; alice seals sequence 7,
//! timestamp 6720, one 40-byte packet of 0xab for bob; her report to bob
//! (sequence 8); voice with copies 1 and 2 frames back (sequence 10).
//!
//! `cargo run -p babel-media --example voice_datagram`

use babel_media::keys::{CallKeys, EpochMember, commitment, encode32, format_code, group_transcript, sas_transcript};
use babel_media::packet::{KIND_OPUS, KIND_OPUS_COPIES, KIND_REPORT, Report, VoiceFrame, seal};
use babel_proto::{CallId, UserId};

fn main() {
    let alice = CallKeys::from_secret([1; 32]);
    let bob = CallKeys::from_secret([2; 32]);
    let pair = alice.pairwise(&bob.public_b64()).expect("valid keys");
    let frame =
        VoiceFrame { kind: KIND_OPUS, seq: 7, timestamp: 6720, packets: vec![vec![0xab; 40]], offsets: Vec::new() };
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
    // Carol (user 3, secret 03..03) joins: epoch 1, alice's nonce 11..11,
    // bob's 22..22, carol's empty.
    let carol = CallKeys::from_secret([3; 32]);
    let m = |id, k: &CallKeys, n: &[u8]| EpochMember { id: UserId(id), key: k.public_bytes(), nonce: n.to_vec() };
    let g = group_transcript(call, 1, &[m(1, &alice, &[0x11; 16]), m(2, &bob, &[0x22; 16]), m(3, &carol, &[])]);
    println!("carol key  {}\ngroup      {}\ngroup code {}", carol.public_b64(), hex(&g), format_code(&g));
    let block = |title: &str, d: &[u8]| {
        println!("```hex\n# voice {title}");
        for c in d.chunks(16) {
            println!("{}", c.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
        println!("```");
    };
    block("alice-to-bob", &d);
    let report = Report {
        rx: [50, 0, 2],
        loss_permille: 12,
        jitter_ms: 4,
        sent_ms: 10_000,
        echo_ms: 9_520,
        hold_ms: 30,
        burst_x10: 11,
    };
    println!("report packet {}", hex(&report.encode()));
    let f = VoiceFrame { kind: KIND_REPORT, seq: 8, timestamp: 0, packets: vec![report.encode()], offsets: Vec::new() };
    block("report-alice-to-bob", &seal(&pair.my_sender_key(), &f).expect("seals"));
    let f = VoiceFrame {
        kind: KIND_OPUS_COPIES,
        seq: 10,
        timestamp: 9600,
        packets: vec![vec![0xab; 40], vec![0xcd; 40], vec![0xef; 40]],
        offsets: vec![1, 2],
    };
    block("copies-alice-to-bob", &seal(&pair.my_sender_key(), &f).expect("seals"));
}
