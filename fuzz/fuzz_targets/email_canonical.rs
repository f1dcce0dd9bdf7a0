//! `identity::canonical_email` (and the migration's and the names' checks)
//! on arbitrary text: never panics; whatever it accepts is a fixed point
//! (stored addresses are compared with canonical forms of new input), holds
//! no refused character, and keeps its skeleton.
#![no_main]

use babel_server::identity::{canonical_email, display_name, migrated_email, shown, skeleton_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let _ = display_name(Some(&raw), "a@x.org");
    let _ = migrated_email(&raw);
    let _ = shown(&raw);
    let Ok(c) = canonical_email(&raw) else {
        return;
    };
    assert_eq!(canonical_email(&c.email).as_ref(), Ok(&c), "not a fixed point, from {raw:?}");
    assert_eq!(shown(&c.email), c.email, "a canonical address shows as it is");
    assert!(!c.email.chars().any(char::is_whitespace), "{:?}", c.email);
    assert_eq!(skeleton_of(&c.email), c.skeleton);
    assert_eq!(migrated_email(&c.email).as_ref(), Some(&c));
});
