//! `Fields::parse` on arbitrary bytes: never panics, and whatever it accepts
//! survives `to_json` and a second parse unchanged.
#![no_main]

use babel_proto::Fields;
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
});
