//! Keeps PROTOCOL.md's voice section honest: the example keys, the key
//! exchange's test vectors (commitment, transcript, code) and the datagram
//! are what this code makes and opens.
#![allow(clippy::unwrap_used)]

use babel_media::keys::{CallKeys, commitment, encode32, format_code, sas_transcript};
use babel_media::packet::{KIND_OPUS, open};

#[test]
fn the_voice_example_in_protocol_md_opens() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../PROTOCOL.md")).unwrap();
    let alice = CallKeys::from_secret([1; 32]);
    let bob = CallKeys::from_secret([2; 32]);
    assert!(doc.contains(&alice.public_b64()), "alice's key");
    assert!(doc.contains(&bob.public_b64()), "bob's key");
    let pair = bob.pairwise(&alice.public_b64()).unwrap();
    // Alice (user 1) calls bob (user 2) in call 5293720152043412811.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let commit = commitment(&alice.public_bytes());
    assert!(doc.contains(&hex(&commit)), "the commitment {}", hex(&commit));
    assert!(doc.contains(&encode32(&commit)), "the commitment in base64 {}", encode32(&commit));
    let call = babel_proto::CallId(5_293_720_152_043_412_811);
    let ids = (babel_proto::UserId(1), babel_proto::UserId(2));
    let t = sas_transcript(call, ids.0, ids.1, &commit, &alice.public_bytes(), &bob.public_bytes());
    assert!(doc.contains(&hex(&t)), "the transcript {}", hex(&t));
    assert!(doc.contains(&format!("`{}`", format_code(&t))), "the code {}", format_code(&t));
    // And what the state machines compute from the same keys agrees.
    let mut caller = babel_proto::agree::CallerAgreement::new(ids.0, &alice);
    let agreed = caller.on_accepted(call, ids.1, Some(&bob.public_b64())).unwrap();
    assert_eq!(agreed.code(), format_code(&t));
    // Carol joins (epoch 1); the group code from everyone's key and nonce.
    let carol = CallKeys::from_secret([3; 32]);
    assert!(doc.contains(&carol.public_b64()), "carol's key");
    let m = |id, k: &CallKeys, n: &[u8]| babel_media::keys::EpochMember {
        id: babel_proto::UserId(id),
        key: k.public_bytes(),
        nonce: n.to_vec(),
    };
    let g = babel_media::keys::group_transcript(
        call,
        1,
        &[m(1, &alice, &[0x11; 16]), m(2, &bob, &[0x22; 16]), m(3, &carol, &[])],
    );
    assert!(doc.contains(&hex(&g)), "the group transcript {}", hex(&g));
    assert!(doc.contains(&format!("code       = {}", format_code(&g))), "the group code {}", format_code(&g));
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
