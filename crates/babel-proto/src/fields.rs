//! JSON sections of a frame as case-insensitive key/value objects.
//!
//! The seed says "all name fields should be treated in lowercase": `"Token"`
//! and `"token"` are the same key, so keys are lowered on the way in and the
//! same key twice in different case is refused (a client could otherwise make
//! two parsers disagree on which value counts). Scalar values are JSON strings
//! on the wire; numbers and booleans sent by lenient clients are accepted and
//! read as their text.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// What is wrong with a JSON section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    /// Not valid UTF-8 JSON, or not an object.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The same key appeared twice (in any case).
    #[error("key `{0}` appears more than once")]
    DuplicateKey(String),
    /// A required field is absent or null.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field holds the wrong kind of value.
    #[error("field `{0}` must be {1}")]
    Invalid(&'static str, &'static str),
}

/// A JSON object with lowercase keys.
#[derive(Clone, Default, PartialEq)]
pub struct Fields(BTreeMap<String, Value>);

impl fmt::Debug for Fields {
    // Values may be passwords or tokens: show keys only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Reads an object, lowering keys; remembers the first key seen twice. It
/// reads to the end either way so the JSON's own validity is still checked.
struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = (BTreeMap<String, Value>, Option<String>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        let mut duplicate = None;
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            let lower = key.to_lowercase();
            match out.entry(lower) {
                Entry::Occupied(e) => {
                    duplicate.get_or_insert_with(|| e.key().clone());
                }
                Entry::Vacant(e) => {
                    e.insert(value);
                }
            }
        }
        Ok((out, duplicate))
    }
}

impl Fields {
    /// Parses a JSON object section. An empty section is an empty object.
    pub fn parse(bytes: &[u8]) -> Result<Fields, FieldsError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let (map, duplicate) =
            (&mut de).deserialize_map(FieldsVisitor).map_err(|e| FieldsError::Json(e.to_string()))?;
        de.end().map_err(|e| FieldsError::Json(e.to_string()))?;
        match duplicate {
            Some(key) => Err(FieldsError::DuplicateKey(key)),
            None => Ok(Fields(map)),
        }
    }

    /// Builds fields from pairs (keys are lowered).
    pub fn from_pairs<K: AsRef<str>, V: Into<Value>>(pairs: impl IntoIterator<Item = (K, V)>) -> Fields {
        Fields(pairs.into_iter().map(|(k, v)| (k.as_ref().to_lowercase(), v.into())).collect())
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `key` (lowercase) is present and not null.
    pub fn contains(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| !v.is_null())
    }

    /// The raw value of `key` (lowercase).
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A scalar field as text: strings as they are, numbers and booleans as
    /// their JSON text; absent or null is `None`.
    pub fn opt_str(&self, key: &'static str) -> Result<Option<String>, FieldsError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(FieldsError::Invalid(key, "a string")),
        }
    }

    /// A required scalar field as text.
    pub fn str(&self, key: &'static str) -> Result<String, FieldsError> {
        self.opt_str(key)?.ok_or(FieldsError::Missing(key))
    }

    /// The object as JSON bytes (keys in lowercase, sorted).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    /// Consumes into the underlying map.
    pub fn into_map(self) -> BTreeMap<String, Value> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_lowered() {
        let f = Fields::parse(br#"{"Token": "abc", "ID": "4"}"#).unwrap();
        assert_eq!(f.str("token").unwrap(), "abc");
        assert_eq!(f.str("id").unwrap(), "4");
    }

    #[test]
    fn same_key_in_two_cases_is_refused() {
        assert_eq!(Fields::parse(br#"{"token": "a", "TOKEN": "b"}"#), Err(FieldsError::DuplicateKey("token".into())));
    }

    #[test]
    fn escaped_quotes_survive() {
        let f = Fields::parse(br#"{"name": "Ann \"the\" Great"}"#).unwrap();
        assert_eq!(f.str("name").unwrap(), r#"Ann "the" Great"#);
    }

    #[test]
    fn empty_is_empty_object() {
        assert!(Fields::parse(b"").unwrap().is_empty());
        assert!(Fields::parse(b"  ").unwrap().is_empty());
        assert!(Fields::parse(b"{}").unwrap().is_empty());
    }

    #[test]
    fn non_objects_and_garbage_are_refused() {
        for bad in [&b"[]"[..], b"\"x\"", b"42", b"{", b"{\"a\":1}x", b"\xff\xfe", b"null"] {
            assert!(matches!(Fields::parse(bad), Err(FieldsError::Json(_))), "{bad:?}");
        }
    }

    #[test]
    fn numbers_read_as_text_objects_refused() {
        let f = Fields::parse(br#"{"id": 42, "ok": true, "o": {}, "n": null}"#).unwrap();
        assert_eq!(f.str("id").unwrap(), "42");
        assert_eq!(f.str("ok").unwrap(), "true");
        assert_eq!(f.opt_str("o"), Err(FieldsError::Invalid("o", "a string")));
        assert_eq!(f.str("n"), Err(FieldsError::Missing("n")));
        assert_eq!(f.str("absent"), Err(FieldsError::Missing("absent")));
    }

    #[test]
    fn floats_survive_a_round_trip() {
        // Found by the fields_parse fuzz target: needs serde_json's float_roundtrip.
        let f = Fields::parse(br#"{"f":7e134}"#).unwrap();
        assert_eq!(Fields::parse(&f.to_json()).unwrap(), f);
        assert_eq!(f.str("f").unwrap().parse::<f64>().unwrap(), 7e134);
    }

    proptest! {
        #[test]
        fn prop_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Fields::parse(&bytes);
        }

        #[test]
        fn prop_round_trip(map in proptest::collection::btree_map("[a-z_]{1,8}", ".{0,16}", 0..6)) {
            let f = Fields::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let back = Fields::parse(&f.to_json()).unwrap();
            prop_assert_eq!(back, f);
        }
    }
}
