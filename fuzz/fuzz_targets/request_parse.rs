//! `ClientRequest::parse` on frames with arbitrary sections.
//!
//! Input layout (see `fuzz/gen_corpus.py`):
//! * byte 0: route selector, `b % (Route::ALL.len() + 1)`: below the length
//!   it is `Route::ALL[i]` (so every new route is fuzzed as it lands), the
//!   length itself means the route bytes come from the input;
//! * bytes 1..3: header length (big-endian `u16`, clamped to what is left),
//!   then the header;
//! * with an input route: one length byte (clamped), then the route;
//! * the rest is the data section.
//!
//! Checks: no panic; unknown routes (and only they) answer `UnknownRoute`; an
//! accepted request has the frame's route and survives `to_frame` + `parse`
//! unchanged; `to_frame` is stable and its wire bytes decode back to it.
#![no_main]

use babel_proto::{ClientRequest, Limits, RawRequest, RequestError, Route, decode_request};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = input.split_at(n.min(input.len()));
    *input = b;
    a
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let Some(&sel) = take(&mut input, 1).first() else {
        return;
    };
    let hlen = match take(&mut input, 2) {
        [a, b] => usize::from(u16::from_be_bytes([*a, *b])),
        [a] => usize::from(*a),
        _ => 0,
    };
    let header = take(&mut input, hlen);
    let route: &[u8] = match Route::ALL.get(usize::from(sel) % (Route::ALL.len() + 1)) {
        Some(r) => r.as_str().as_bytes(),
        None => {
            let rlen = take(&mut input, 1).first().copied().unwrap_or(0);
            take(&mut input, usize::from(rlen))
        }
    };
    let raw = RawRequest::new(header.to_vec(), route.to_vec(), input.to_vec());

    let known = Route::from_wire(route);
    let req = match ClientRequest::parse(&raw) {
        Ok(req) => req,
        Err(e) => {
            let _ = e.status();
            let _ = e.to_string();
            assert_eq!(
                matches!(e, RequestError::UnknownRoute(_)),
                known.is_none(),
                "UnknownRoute iff the route is unknown: {e:?}"
            );
            return;
        }
    };
    assert_eq!(Some(req.route()), known, "request on the wrong route");

    let frame = req.to_frame();
    assert_eq!(frame.route_str(), Some(req.route().as_str()));
    match ClientRequest::parse(&frame) {
        Ok(back) => assert_eq!(back, req, "round trip changed the request"),
        Err(e) => panic!("to_frame output does not parse: {e:?} (from {req:?})"),
    }
    assert_eq!(ClientRequest::parse(&frame).map(|r| r.to_frame()), Ok(frame.clone()));

    // The frame's wire bytes decode back to it.
    let mut buf = BytesMut::from(&frame.to_bytes()[..]);
    let limits = Limits { max_header: usize::MAX, max_route: usize::MAX, max_data: usize::MAX };
    assert_eq!(decode_request(&mut buf, &limits), Ok(Some(frame)));
    assert!(buf.is_empty());
});
