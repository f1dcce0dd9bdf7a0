//! Keeps PROTOCOL.md honest: every ```hex block in it must decode as the
//! frame its first line names.
//!
//! Block format: a first line `# request ROUTE` (or `# request ROUTE 400`
//! for an example the parser must refuse with that status), `# event ROUTE`,
//! `# response STATUS` or `# bad request frame`; then lines of hex bytes,
//! each optionally followed by `# comment`.
#![allow(clippy::unwrap_used)]

use babel_proto::{ClientRequest, Limits, decode_request, decode_response};
use bytes::BytesMut;

fn blocks(doc: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```hex" {
            continue;
        }
        let title = lines.next().unwrap().trim().trim_start_matches('#').trim().to_owned();
        let mut bytes = Vec::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            for tok in l.split('#').next().unwrap().split_whitespace() {
                assert!(tok.len() % 2 == 0, "odd hex token {tok:?} in block {title:?}");
                for i in (0..tok.len()).step_by(2) {
                    bytes.push(u8::from_str_radix(&tok[i..i + 2], 16).unwrap());
                }
            }
        }
        out.push((title, bytes));
    }
    out
}

/// The relay examples use handle 0x01020304, key 00..0f, nonce
/// 1764000000000000 (the CONFIRM's one more), seen address
/// 203.0.113.7:40000, cookie secret 10..1f and window 58800000, DATA counter
/// 1, payload `sealed`.
fn check_datagram(kind: &str, bytes: &[u8]) {
    use babel_proto::relay;
    let key: [u8; 16] = std::array::from_fn(|i| i as u8);
    let secret: [u8; 16] = std::array::from_fn(|i| 0x10 + i as u8);
    let nonce = 1_764_000_000_000_000;
    let seen = "203.0.113.7:40000".parse().unwrap();
    let cookie = relay::cookie(&secret, 0x0102_0304, seen, 58_800_000);
    match kind {
        "cookie" => assert_eq!(bytes, cookie),
        "bind" => assert_eq!(relay::verify_bind(bytes, &key), Some(nonce)),
        "bind_ack" => assert_eq!(
            relay::verify_bind_ack(bytes, &key),
            Some(relay::BindAck { handle: 0x0102_0304, nonce, state: relay::CHALLENGE, cookie, seen })
        ),
        "confirm" => assert_eq!(relay::verify_confirm(bytes, &key), Some((nonce + 1, cookie))),
        "data" => assert_eq!(relay::verify_data(bytes, &key), Some((1, &b"sealed"[..]))),
        "relayed" => assert_eq!(relay::decode_relayed(bytes), Some((babel_proto::UserId(42), &b"sealed"[..]))),
        other => panic!("unknown datagram example {other}"),
    }
}

/// The voice examples: sealed by alice (secret `01…01`) for bob (`02…02`),
/// opened as bob does.
fn check_voice(name: &str, bytes: &[u8]) {
    use babel_proto::keys::CallKeys;
    use babel_proto::voice::{KIND_KEY, KIND_OPUS, KIND_OPUS_COPIES, KIND_REPORT, KeyHandover, Report, open};
    let alice = CallKeys::from_secret([1; 32]);
    let bob = CallKeys::from_secret([2; 32]);
    let key = bob.pairwise(&alice.public_b64()).unwrap().their_sender_key();
    let f = open(&key, bytes).unwrap_or_else(|e| panic!("voice {name}: {e}"));
    match name {
        "alice-to-bob" => {
            assert_eq!((f.kind, f.seq, f.timestamp), (KIND_OPUS, 7, 6720));
            assert_eq!(f.packets, vec![vec![0xab; 40]]);
        }
        "report-alice-to-bob" => {
            assert_eq!((f.kind, f.seq, f.timestamp, f.packets.len()), (KIND_REPORT, 8, 0, 1));
            let want = Report {
                rx: [50, 0, 2],
                loss_permille: 12,
                jitter_ms: 4,
                sent_ms: 10_000,
                echo_ms: 9_520,
                hold_ms: 30,
                burst_x10: 11,
            };
            assert_eq!(Report::decode(&f.packets[0]), Some(want));
        }
        "copies-alice-to-bob" => {
            assert_eq!((f.kind, f.seq, f.timestamp), (KIND_OPUS_COPIES, 10, 9600));
            assert_eq!(f.packets, vec![vec![0xab; 40], vec![0xcd; 40], vec![0xef; 40]]);
            assert_eq!(f.offsets, [1, 2]);
        }
        "key-alice-to-bob" => {
            assert_eq!((f.kind, f.seq, f.timestamp, f.packets.len()), (KIND_KEY, 9, 0, 1));
            let h = KeyHandover::decode(&f.packets[0]).unwrap();
            assert_eq!((h.id, h.key), (0x0a0b_0c0d, [0x42; 32]));
        }
        other => panic!("unknown voice example {other}"),
    }
}

#[test]
fn every_hex_example_in_protocol_md_decodes_as_labelled() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let blocks = blocks(&doc);
    assert!(blocks.len() >= 20, "expected many examples, found {}", blocks.len());
    let limits = Limits::default();
    for (title, bytes) in blocks {
        let mut buf = BytesMut::from(&bytes[..]);
        let words: Vec<&str> = title.split_whitespace().collect();
        match words.as_slice() {
            ["request", route] | ["request", route, _] => {
                let frame = decode_request(&mut buf, &limits).unwrap().unwrap_or_else(|| panic!("{title}: incomplete"));
                assert_eq!(frame.route_str(), Some(*route), "{title}");
                if babel_proto::Route::from_wire(route.as_bytes()).is_some() {
                    // `# request ROUTE 400` marks an example meant to be refused.
                    match (ClientRequest::parse(&frame), words.get(2)) {
                        (Ok(_), None) => {}
                        (Err(e), Some(want)) => {
                            assert_eq!(e.status().code().to_string(), *want, "{title}")
                        }
                        (got, _) => panic!("{title}: unexpected parse result {got:?}"),
                    }
                }
            }
            ["event", route] => {
                let frame = decode_request(&mut buf, &limits).unwrap().unwrap_or_else(|| panic!("{title}: incomplete"));
                assert_eq!(frame.route_str(), Some(*route), "{title}");
                assert!(frame.header.is_empty(), "{title}: events have no header");
                // Every documented event reads as the typed event it names.
                let event = babel_proto::ServerEvent::parse(&frame).unwrap_or_else(|e| panic!("{title}: {e}"));
                assert_eq!(event.name(), *route, "{title}");
            }
            ["response", status] => {
                let frame =
                    decode_response(&mut buf, &limits).unwrap().unwrap_or_else(|| panic!("{title}: incomplete"));
                assert_eq!(frame.status.to_string(), *status, "{title}");
                if !frame.data.is_empty() {
                    serde_json::from_slice::<serde_json::Value>(&frame.data)
                        .unwrap_or_else(|e| panic!("{title}: data is not JSON: {e}"));
                }
            }
            ["channel", route] => {
                let frame = decode_request(&mut buf, &limits).unwrap().unwrap_or_else(|| panic!("{title}: incomplete"));
                assert_eq!(frame.route_str(), Some(*route), "{title}");
                babel_proto::ChannelFrame::parse(&frame).unwrap_or_else(|e| panic!("{title}: {e}"));
                if *route == "/send" {
                    babel_proto::SendData::parse(&frame.data).unwrap_or_else(|e| panic!("{title}: {e}"));
                }
            }
            ["voice", name] => {
                check_voice(name, &bytes);
                continue;
            }
            ["datagram", kind] => {
                check_datagram(kind, &bytes);
                continue;
            }
            ["bad", "request", "frame"] => {
                assert!(decode_request(&mut buf, &limits).is_err(), "{title}: should be refused");
                continue;
            }
            _ => panic!("unknown hex block title {title:?}"),
        }
        assert!(buf.is_empty(), "{title}: {} bytes left over", buf.len());
    }
}
