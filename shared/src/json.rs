//! Whole-body JSON helpers.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

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
/// different copies would let one guard check what the provider never reads.
pub fn unique_members(body: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    de::Deserialize::deserialize(&mut deserializer).map(|Unique| ())?;
    deserializer.end()
}

/// Parses a body that must be a JSON object whose objects all have unique member names, in one
/// pass (a module that needs the whole value checks and parses at once).
pub fn from_unique_object(body: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        _ => return Err(serde_json::Error::custom("expected a JSON object")),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let UniqueValue(value) = de::Deserialize::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A JSON value built while checking that member names are unique.
struct UniqueValue(serde_json::Value);

impl<'de> de::Deserialize<'de> for UniqueValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueValueVisitor)
    }
}

struct UniqueValueVisitor;

impl<'de> Visitor<'de> for UniqueValueVisitor {
    type Value = UniqueValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<UniqueValue, E> {
        Ok(UniqueValue(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<UniqueValue, E> {
        Ok(UniqueValue(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<UniqueValue, E> {
        Ok(UniqueValue(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<UniqueValue, E> {
        Ok(UniqueValue(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)))
    }
    fn visit_str<E>(self, v: &str) -> Result<UniqueValue, E> {
        Ok(UniqueValue(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<UniqueValue, E> {
        Ok(UniqueValue(v.into()))
    }
    fn visit_unit<E>(self) -> Result<UniqueValue, E> {
        Ok(UniqueValue(serde_json::Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueValue, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(UniqueValue(serde_json::Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueValue, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(A::Error::custom(format!("duplicate member `{name}`")));
            }
            let UniqueValue(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(UniqueValue(serde_json::Value::Object(members)))
    }
}

/// Any JSON value whose objects have unique member names.
struct Unique;

impl<'de> de::Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut names = HashSet::new();
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !names.insert(name.to_string()) {
                return Err(A::Error::custom(format!("duplicate member `{name}`")));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
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
