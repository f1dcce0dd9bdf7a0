//! PROTOCOL.md §13's examples read as the types they document: each `200`
//! answer after a request example decodes as that route's answer type, and
//! each request as its typed data (the generic checks are in
//! `protocol_doc.rs`).
#![allow(clippy::unwrap_used)]

use babel_proto::{
    Answer, CallHistoryEntry, ClientRequest, Limits, Message, MessageSent, UnreadCount, decode_request, decode_response,
};
use bytes::BytesMut;

fn hex_blocks(section: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = section.lines();
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
                for i in (0..tok.len()).step_by(2) {
                    bytes.push(u8::from_str_radix(&tok[i..i + 2], 16).unwrap());
                }
            }
        }
        out.push((title, bytes));
    }
    out
}

#[test]
fn section_13_examples_decode_as_their_types() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../PROTOCOL.md")).unwrap();
    let start = doc.find("## 13. Messages and call history").expect("§13 exists");
    let section = &doc[start..];
    let section = section[3..].find("\n## ").map_or(section, |end| &section[..end + 3]);
    let limits = Limits::default();
    let mut last_route = String::new();
    let mut checked = 0;
    for (title, bytes) in hex_blocks(section) {
        let mut buf = BytesMut::from(&bytes[..]);
        let words: Vec<&str> = title.split_whitespace().collect();
        match words.as_slice() {
            ["request", route] => {
                let frame = decode_request(&mut buf, &limits).unwrap().unwrap();
                let req = ClientRequest::parse(&frame).unwrap();
                assert_eq!(req.route().as_str(), *route);
                last_route = (*route).to_owned();
            }
            ["response", "200"] => {
                let answer = Answer(decode_response(&mut buf, &limits).unwrap().unwrap());
                match last_route.as_str() {
                    "/send_message" => drop(answer.json::<MessageSent>().unwrap()),
                    "/messages" => assert!(!answer.json::<Vec<Message>>().unwrap().is_empty()),
                    "/unread" => assert!(!answer.json::<Vec<UnreadCount>>().unwrap().is_empty()),
                    "/call_history" => assert!(!answer.json::<Vec<CallHistoryEntry>>().unwrap().is_empty()),
                    other => panic!("a 200 example after {other}"),
                }
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, 4, "one 200 example per route that answers data");
}
