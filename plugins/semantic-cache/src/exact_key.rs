//! The exact cache key: the same key for requests that must get the same answer, whatever
//! their formatting, member order or streaming choice.
//!
//! The key covers the model and every member that changes the answer (messages, tools,
//! sampling parameters, response format, ...), canonicalised: object members sorted, no
//! insignificant white space. Left out: how the answer is delivered (`stream`,
//! `stream_options`), and who asks (`user`, `metadata`, `store`), which tenant namespaces cover.
//! The namespace (team, key or global) is part of the key, so tenants never share entries.

use serde_json::Value;
use sluice_shared::digest;

/// Members that do not change the answer's content.
const DELIVERY_ONLY: &[&str] = &["stream", "stream_options", "user", "metadata", "store", "service_tier"];

/// Writes `value` as canonical JSON: object members sorted by name.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The cache key of a request body in `namespace`; `None` when the body is not a JSON object
/// with a `model`.
pub fn exact_key(namespace: &str, body: &Value) -> Option<String> {
    let object = body.as_object()?;
    object.get("model")?.as_str()?;
    let mut kept = object.clone();
    for member in DELIVERY_ONLY {
        kept.remove(*member);
    }
    let mut text = String::new();
    canonical(&Value::Object(kept), &mut text);
    let hash = digest::sha256_hex(text.as_bytes());
    Some(format!("sluice:cache:{namespace}:{}", hash.get(..32).unwrap_or(&hash)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formatting_order_and_delivery_do_not_matter() {
        let a = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0});
        let b: Value = serde_json::from_str(
            r#"{ "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
                 "messages": [ {"content": "Hi", "role": "user"} ], "model": "gpt-4o", "user": "u1" }"#,
        )
        .unwrap();
        assert_eq!(exact_key("team:blue", &a), exact_key("team:blue", &b));
        assert!(exact_key("team:blue", &a).unwrap().starts_with("sluice:cache:team:blue:"));
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
        let key = exact_key("g", &base);
        for changed in [
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi!"}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1.2}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object"}}),
            json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "Hi"}]}),
        ] {
            assert_ne!(exact_key("g", &changed), key, "{changed}");
        }
        // Tenants never share entries; bodies without a model have no key.
        assert_ne!(exact_key("key:a", &base), exact_key("key:b", &base));
        assert_eq!(exact_key("g", &json!({"messages": []})), None);
        assert_eq!(exact_key("g", &json!([1, 2])), None);
    }
}
