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

/// The same JSON object with its top-level `model` set to `model` (other members kept, in
/// their order of the serializer). `None` when the body is not a JSON object.
pub fn with_model(body: &[u8], model: &str) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.as_object_mut()?.insert("model".into(), serde_json::Value::String(model.to_string()));
    serde_json::to_vec(&value).ok()
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
    fn model_rewrite() {
        let body = with_model(br#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#, "b").unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(value["model"], "b");
        assert_eq!(value["messages"][0]["content"], "hi");
        assert_eq!(with_model(b"[1]", "b"), None);
        assert_eq!(with_model(b"{bad", "b"), None);
    }

    #[test]
    fn only_objects() {
        assert!(from_object::<Any>(b" {\"a\":1}").is_ok());
        for bad in [&b"[]"[..], b"", b"null", b"  ", b"1"] {
            assert!(from_object::<Any>(bad).is_err(), "{bad:?}");
        }
    }
}
