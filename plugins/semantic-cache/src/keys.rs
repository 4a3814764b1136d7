//! What a chat request is looked up by, and the Redis keys that hold it.
//!
//! - **Exact key**: the canonical JSON (object members sorted, no insignificant white space) of
//!   everything that changes the answer: model, messages, tools, sampling parameters, response
//!   format. Left out: how the answer is delivered (`stream`, `stream_options`) and who asks
//!   (`user`, `metadata`, `store`, `service_tier`), which the namespace covers.
//! - **Semantic scope**: the same, minus the text that is embedded. With `last_user_turn`, the
//!   conversation before the last user message, the system prompt and every parameter must match
//!   exactly, and only the last user message may be a paraphrase; with `conversation`, only the
//!   parameters must match.
//!
//! Every key starts with `sluice:cache:<namespace>:`, so tenants never share entries:
//! `x:<hash>` holds an answer, `e:<hash>` the embedding and question that lead to it, and
//! `b:<scope>:<bucket>` the newest entries of one LSH bucket of a scope.

use serde_json::{Map, Value};
use sluice_shared::digest;
use sluice_shared::openai::Content;

use crate::config::EmbedText;

/// Members that do not change the answer's content.
const DELIVERY_ONLY: &[&str] = &["stream", "stream_options", "user", "metadata", "store", "service_tier"];

/// A chat request as the cache sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a replayed stream ends with a usage chunk.
    pub include_usage: bool,
    /// Hash of the exact request (hex, 32 characters).
    pub exact: String,
    /// What the semantic lookup embeds and the scope it searches; `None` when there is no text
    /// to embed.
    pub semantic: Option<SemanticQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemanticQuery {
    pub text: String,
    /// Hash of everything that must match exactly (hex, 32 characters).
    pub scope: String,
}

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

fn hash(value: &Value) -> String {
    let mut text = String::new();
    canonical(value, &mut text);
    let hex = digest::sha256_hex(text.as_bytes());
    hex.get(..32).unwrap_or(&hex).to_string()
}

/// The text of one message's content (text parts joined by newlines).
fn message_text(message: &Value) -> String {
    let content: Content =
        message.get("content").cloned().and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default();
    content.texts().join("\n")
}

fn semantic_query(kept: &Map<String, Value>, embed: EmbedText, embed_salt: &str) -> Option<SemanticQuery> {
    let messages = kept.get("messages")?.as_array()?;
    let mut scope = kept.clone();
    let text = match embed {
        EmbedText::LastUserTurn => {
            let last = messages.iter().rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
            let text = message_text(messages.get(last)?);
            let mut blanked = messages.clone();
            if let Some(Value::Object(message)) = blanked.get_mut(last) {
                message.insert("content".to_string(), Value::Null);
            }
            scope.insert("messages".to_string(), Value::Array(blanked));
            text
        }
        EmbedText::Conversation => {
            scope.remove("messages");
            let lines: Vec<String> = messages
                .iter()
                .map(|m| format!("{}: {}", m.get("role").and_then(Value::as_str).unwrap_or_default(), message_text(m)))
                .collect();
            lines.join("\n")
        }
    };
    if text.trim().is_empty() {
        return None;
    }
    // The embedding model and the bucketing are part of the scope: vectors of another model or
    // another split are never compared.
    scope.insert("sluice_embedding".to_string(), Value::String(embed_salt.to_string()));
    Some(SemanticQuery { text, scope: hash(&Value::Object(scope)) })
}

impl CacheRequest {
    /// Reads a chat completions body; `None` when it is not a JSON object with a `model` and
    /// `messages` (such requests bypass the cache). `embed` says, by model, which text a semantic
    /// lookup embeds, if any: exact-only routes skip building the semantic query.
    pub fn parse(body: &[u8], embed: impl FnOnce(&str) -> Option<EmbedText>, embed_salt: &str) -> Option<CacheRequest> {
        let value: Value = sluice_shared::json::from_object(body).ok()?;
        let object = value.as_object()?;
        let model = object.get("model")?.as_str()?.to_string();
        object.get("messages")?.as_array()?;
        let stream = object.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = value.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        let mut kept = object.clone();
        for member in DELIVERY_ONLY {
            kept.remove(*member);
        }
        let semantic = embed(&model).and_then(|embed| semantic_query(&kept, embed, embed_salt));
        let exact = hash(&Value::Object(kept));
        Some(CacheRequest { model, stream, include_usage, exact, semantic })
    }
}

/// The Redis keys of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `namespace` is `team:<name>`, `key:<alias>` or `global`.
    pub fn new(namespace: &str) -> Self {
        Keys { prefix: format!("sluice:cache:{namespace}:") }
    }
    pub fn answer(&self, exact: &str) -> String {
        format!("{}x:{exact}", self.prefix)
    }
    /// Prefix of entry keys (the Lua search appends the entry's id).
    pub fn entry_prefix(&self) -> String {
        format!("{}e:", self.prefix)
    }
    pub fn entry(&self, exact: &str) -> String {
        format!("{}e:{exact}", self.prefix)
    }
    pub fn bucket(&self, scope: &str, bucket: u32) -> String {
        format!("{}b:{scope}:{bucket}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: &Value) -> CacheRequest {
        CacheRequest::parse(value.to_string().as_bytes(), |_| Some(EmbedText::LastUserTurn), "m").unwrap()
    }

    #[test]
    fn formatting_order_and_delivery_do_not_matter() {
        let a = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0});
        let b = r#"{ "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
                     "messages": [ {"content": "Hi", "role": "user"} ], "model": "gpt-4o", "user": "u1" }"#;
        let b = CacheRequest::parse(b.as_bytes(), |_| Some(EmbedText::LastUserTurn), "m").unwrap();
        let a = request(&a);
        assert_eq!((a.exact.len(), &a.exact), (32, &b.exact));
        assert_eq!(a.semantic, b.semantic);
        assert!(!a.stream && b.stream && b.include_usage);
    }

    #[test]
    fn what_changes_the_answer_changes_the_exact_key() {
        let base = request(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}));
        for changed in [
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi!"}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1.2}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object"}}),
            json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "Hi"}, {"role": "user", "content": "Hi"}]}),
        ] {
            assert_ne!(request(&changed).exact, base.exact, "{changed}");
        }
    }

    #[test]
    fn the_scope_is_everything_but_the_embedded_text() {
        let ask = |system: &str, question: &str, model: &str| {
            request(&json!({"model": model, "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": [{"type": "text", "text": question}]}
            ]}))
            .semantic
            .unwrap()
        };
        let a = ask("Be brief.", "What is the capital of France?", "gpt-4o");
        assert_eq!(a.text, "What is the capital of France?");
        assert_eq!(a.scope, ask("Be brief.", "Tell me the capital city of France", "gpt-4o").scope);
        assert_ne!(a.scope, ask("Be verbose.", "What is the capital of France?", "gpt-4o").scope);
        assert_ne!(a.scope, ask("Be brief.", "What is the capital of France?", "gpt-4o-mini").scope);
        // Another embedding model or bucketing never compares with these vectors.
        let other = CacheRequest::parse(
            json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}]})
                .to_string()
                .as_bytes(),
            |_| Some(EmbedText::LastUserTurn),
            "other",
        )
        .unwrap();
        assert_ne!(other.semantic.unwrap().scope, a.scope);
    }

    #[test]
    fn conversation_mode_embeds_every_turn() {
        let body = json!({"model": "m", "temperature": 0, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}
        ]});
        let request = CacheRequest::parse(body.to_string().as_bytes(), |_| Some(EmbedText::Conversation), "m").unwrap();
        assert_eq!(request.semantic.unwrap().text, "system: Be brief.\nuser: Hi");
    }

    #[test]
    fn what_cannot_be_cached() {
        for body in
            [&b"[]"[..], b"{\"messages\": []}", b"{\"model\": \"m\"}", b"not json", b"{\"model\": 1, \"messages\": []}"]
        {
            assert_eq!(CacheRequest::parse(body, |_| Some(EmbedText::LastUserTurn), "m"), None, "{body:?}");
        }
        // Exact-only routes: no semantic query is built, the exact key is the same.
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}).to_string();
        let exact_only =
            CacheRequest::parse(body.as_bytes(), |model| (model != "gpt-4o").then_some(EmbedText::Conversation), "m");
        assert_eq!(exact_only.as_ref().map(|r| r.semantic.is_none()), Some(true));
        assert_eq!(exact_only.map(|r| r.exact), CacheRequest::parse(body.as_bytes(), |_| None, "x").map(|r| r.exact));
        // No user text: exact matching only.
        let tool_only = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]});
        assert_eq!(request(&tool_only).semantic, None);
    }

    #[test]
    fn keys_are_namespaced() {
        let (a, b) = (Keys::new("team:blue"), Keys::new("team:red"));
        assert_eq!(a.answer("abc"), "sluice:cache:team:blue:x:abc");
        assert_eq!(a.entry("abc"), format!("{}abc", a.entry_prefix()));
        assert_eq!(a.bucket("s", 3), "sluice:cache:team:blue:b:s:3");
        assert_ne!(a.answer("abc"), b.answer("abc"));
    }
}
