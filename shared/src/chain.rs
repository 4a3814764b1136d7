//! Fallback chains: how the model rewriter tells the provider adapter which model each provider
//! of a chain serves.
//!
//! Envoy retries a request across the member clusters of an aggregate cluster, and only the
//! provider adapter (an upstream filter) runs per attempt. Each attempt receives a fresh copy of
//! the body the rewriter wrote, so the rewriter adds one private member, `sluice_models`
//! (`{"<provider>": "<model>", ...}`), and the adapter removes it on every attempt, setting
//! `model` to the entry of the provider this attempt reaches. No provider ever sees the member.

use serde_json::{Map, Value};

/// Response header naming the provider that answered (set by the provider adapter per attempt;
/// the token counter attributes the answer's tokens to it).
pub const ANSWERED_BY: &str = "x-sluice-provider";

/// The private body member carrying a chain's models by provider.
pub const MODELS_MEMBER: &str = "sluice_models";

/// The body with `model` set, and with the chain's models by provider when there is a chain
/// (a client's own `sluice_models` is always dropped). `None` when the body is not a JSON object.
pub fn with_route(body: &[u8], model: &str, chain: &[(&str, &str)]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    object.insert("model".into(), Value::String(model.to_string()));
    object.remove(MODELS_MEMBER);
    if !chain.is_empty() {
        object.insert(MODELS_MEMBER.into(), Value::Object(by_provider(chain)));
    }
    serde_json::to_vec(&value).ok()
}

/// A route's models by provider as JSON text (the fact `sluice.route.models`), entry for entry
/// what [`with_route`] writes in the body.
pub fn models_text(models: &[(&str, &str)]) -> String {
    Value::Object(by_provider(models)).to_string()
}

fn by_provider(models: &[(&str, &str)]) -> Map<String, Value> {
    models.iter().map(|(provider, model)| (provider.to_string(), Value::String(model.to_string()))).collect()
}

/// The model `provider` serves in a route's models text.
pub fn model_in(models_text: &str, provider: &str) -> Option<String> {
    let models: Value = serde_json::from_str(models_text).ok()?;
    models.get(provider)?.as_str().map(str::to_string)
}

/// Removes the chain from a parsed body and returns the model it names for `provider`.
/// `None` when the body carries no chain or the chain does not name the provider.
pub fn take_model_for(body: &mut Value, provider: &str) -> Option<String> {
    let models = body.as_object_mut()?.remove(MODELS_MEMBER)?;
    models.get(provider)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    #[test]
    fn models_by_provider_round_trip_as_the_body_names_them() {
        let chain = [("gemini", "gemini-2.5-flash"), ("openai", "gpt-4o")];
        let text = models_text(&chain);
        let body = parse(&with_route(br#"{"model":"x"}"#, "gemini-2.5-flash", &chain).unwrap_or_default());
        assert_eq!(serde_json::from_str::<Value>(&text).ok().as_ref(), body.get(MODELS_MEMBER));
        assert_eq!(model_in(&text, "gemini").as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(model_in(&text, "openai").as_deref(), Some("gpt-4o"));
        assert_eq!(model_in(&text, "anthropic"), None);
        assert_eq!(model_in("not json", "openai"), None);
    }

    #[test]
    fn route_without_chain_drops_a_clients_member() {
        let body = with_route(br#"{"model":"x","sluice_models":{"openai":"evil"},"n":1}"#, "gpt-4o", &[]);
        let value = parse(&body.unwrap_or_default());
        assert_eq!(value, serde_json::json!({"model": "gpt-4o", "n": 1}));
        let body = with_route(br#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#, "b", &[]);
        let value = parse(&body.unwrap_or_default());
        assert_eq!((value["model"].as_str(), value["messages"][0]["content"].as_str()), (Some("b"), Some("hi")));
    }

    #[test]
    fn chain_round_trip() {
        let chain = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")];
        let body = with_route(br#"{"model":"chat-quality","messages":[]}"#, "gpt-4o", &chain).unwrap_or_default();
        let mut value = parse(&body);
        assert_eq!(take_model_for(&mut value, "anthropic").as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(value, serde_json::json!({"model": "gpt-4o", "messages": []}));
        // Taken once: a second look finds nothing, and unknown providers get nothing.
        assert_eq!(take_model_for(&mut value, "anthropic"), None);
        let mut again = parse(&body);
        assert_eq!(take_model_for(&mut again, "gemini"), None);
        assert!(again.get(MODELS_MEMBER).is_none());
    }

    #[test]
    fn not_an_object() {
        assert_eq!(with_route(b"[1]", "m", &[]), None);
        assert_eq!(with_route(b"not json", "m", &[]), None);
        assert_eq!(take_model_for(&mut Value::Null, "openai"), None);
        assert_eq!(take_model_for(&mut serde_json::json!({"sluice_models": 3}), "openai"), None);
    }
}
