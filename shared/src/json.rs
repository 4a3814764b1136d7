//! Whole-body JSON helpers.

use serde::de::{DeserializeOwned, Error as _};

/// Parses a body that must be a JSON object. Serde would also accept an array for a struct
/// (`[]` as "all fields default"), which no LLM API sends.
pub fn from_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(body),
        _ => Err(serde_json::Error::custom("expected a JSON object")),
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
    fn only_objects() {
        assert!(from_object::<Any>(b" {\"a\":1}").is_ok());
        for bad in [&b"[]"[..], b"", b"null", b"  ", b"1"] {
            assert!(from_object::<Any>(bad).is_err(), "{bad:?}");
        }
    }
}
