//! Whole-body JSON helpers.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Members whose string values are structure, not user data (`model`, `role`, `type`, ids,
/// enum-valued settings): the modules that read every text of a request (the PII scrubber, the
/// guard) skip them. Objects and arrays under them are read (`response_format`, ...).
pub const STRUCTURAL: [&str; 18] = [
    "model",
    "role",
    "type",
    "id",
    "object",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "previous_response_id",
    "media_type",
    "detail",
    "encoding_format",
    "reasoning_effort",
    "service_tier",
    "truncation",
    "status",
    // Gemini: a part's media type and the model's opaque reasoning state.
    "mimeType",
    "thoughtSignature",
];

/// Parses a body that must be a JSON object. Serde would also accept an array for a struct
/// (`[]` as "all fields default"), which no LLM API sends.
pub fn from_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(body),
        _ => Err(serde_json::Error::custom("expected a JSON object")),
    }
}

/// Checks that no object anywhere in the body has the same member name twice. JSON parsers
/// disagree on duplicates (first wins, last wins, error): a module and a provider reading
/// different copies would let one guard check what the provider never reads. Builds nothing.
pub fn unique_members(body: &[u8]) -> Result<(), serde_json::Error> {
    checked(body, false).map(|_| ())
}

/// Parses a body that must be a JSON object whose objects all have unique member names, in one
/// pass (a module that needs the whole value checks and parses at once).
pub fn from_unique_object(body: &[u8]) -> Result<Value, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => checked(body, true),
        _ => Err(serde_json::Error::custom("expected a JSON object")),
    }
}

fn checked(body: &[u8], keep: bool) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Checked { keep }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Reads any JSON value, refusing an object with a repeated member name; builds the value only
/// when `keep` (otherwise every value reads as `null`, and nothing but member names is kept).
#[derive(Clone, Copy)]
struct Checked {
    keep: bool,
}

impl Checked {
    fn value(self, value: impl Into<Value>) -> Value {
        if self.keep {
            value.into()
        } else {
            Value::Null
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(self.value(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(self.value(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(self.value(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, |n| self.value(n)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(if self.keep { Value::String(v.to_string()) } else { Value::Null })
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(self.value(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            if self.keep {
                items.push(item);
            }
        }
        Ok(self.value(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut names = HashSet::new();
        let mut members = Map::new();
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if !names.insert(name.to_string()) {
                return Err(A::Error::custom(format!("duplicate member `{name}`")));
            }
            let value = map.next_value_seed(self)?;
            if self.keep {
                members.insert(name.into_owned(), value);
            }
        }
        Ok(self.value(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default)]
    struct Any {
        #[allow(dead_code)]
        a: u32,
    }

    #[test]
    fn duplicate_members_anywhere_are_errors() {
        assert!(unique_members(br#"{"a": [{"b": 1, "c": {"b": 2}}], "b": "x"}"#).is_ok());
        for bad in [
            &br#"{"model": "a", "model": "b"}"#[..],
            br#"{"messages": [{"role": "user", "content": "x", "content": "y"}]}"#,
            br#"{"a": {"b": [[{"c": 1, "c": 1}]]}}"#,
            br#"{"a": 1, "\u0061": 2}"#,
            br#"{"a": 1} trailing"#,
        ] {
            assert!(unique_members(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn one_pass_parse_refuses_what_the_check_refuses() {
        let good = br#"{"a": [{"b": 1.5, "c": {"b": null}}], "b": "x", "d": [true, -3]}"#;
        let parsed = from_unique_object(good).unwrap();
        assert_eq!(parsed, serde_json::from_slice::<serde_json::Value>(good).unwrap());
        for bad in [&br#"{"a": 1, "a": 2}"#[..], br#"{"a": [{"b": 1, "b": 1}]}"#, b"[1]", b"{} x", b""] {
            assert!(from_unique_object(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_objects() {
        assert!(from_object::<Any>(b" {\"a\":1}").is_ok());
        for bad in [&b"[]"[..], b"", b"null", b"  ", b"1"] {
            assert!(from_object::<Any>(bad).is_err(), "{bad:?}");
        }
    }
}
