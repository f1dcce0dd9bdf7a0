//! `Fields::parse` on arbitrary bytes: never panics, and whatever it accepts
//! survives `to_json` and a second parse unchanged. The same fields are then
//! read as each message and call-history request's data: never a panic, and
//! whatever is accepted survives `to_fields` and a second reading unchanged.
#![no_main]

use babel_proto::{Fields, HistoryQuery, MessagesQuery, MessagesRead, SendMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = Fields::parse(data) else {
        return;
    };
    let json = f.to_json();
    let back = Fields::parse(&json)
        .unwrap_or_else(|e| panic!("to_json output does not parse: {e}\njson: {}", String::from_utf8_lossy(&json)));
    assert!(
        back == f,
        "round trip changed the fields\nin:   {}\nout:  {}\nback: {}",
        String::from_utf8_lossy(data),
        String::from_utf8_lossy(&json),
        String::from_utf8_lossy(&back.to_json()),
    );
    // Keys are lowercase and `to_json` is stable.
    assert_eq!(back.to_json(), json);
    for key in f.clone().into_map().keys() {
        assert_eq!(&key.to_lowercase(), key, "key not lowercase");
    }

    if let Ok(m) = SendMessage::from_fields(&f) {
        assert_eq!(SendMessage::from_fields(&m.to_fields()), Ok(m));
    }
    if let Ok(q) = MessagesQuery::from_fields(&f) {
        assert!((1..=100).contains(&q.limit));
        assert_eq!(MessagesQuery::from_fields(&q.to_fields()), Ok(q));
    }
    if let Ok(r) = MessagesRead::from_fields(&f) {
        assert_eq!(MessagesRead::from_fields(&r.to_fields()), Ok(r));
    }
    if let Ok(h) = HistoryQuery::from_fields(&f) {
        assert!((1..=100).contains(&h.limit));
        assert_eq!(HistoryQuery::from_fields(&h.to_fields()), Ok(h));
    }
});
