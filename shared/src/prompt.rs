//! Estimates the prompt tokens of a request before it is sent, for every API Sluice knows.
//!
//! Chat framing follows OpenAI's published rule (3 tokens per message, 1 per name, 3 to prime
//! the reply). Tools are counted as their JSON text. Non-OpenAI models are estimated with the
//! default encoding: close, not exact.

use crate::anthropic;
use crate::api::Api;
use crate::json::from_object;
use crate::openai::{self, TextOrTokens};
use crate::tokenizer::{Encoding, TokenTally};

const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// What a request says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptFacts {
    pub model: String,
    pub stream: bool,
    pub prompt_tokens: u64,
    /// Part of the count was extrapolated (the prompt exceeded the exact-count budget).
    pub estimated: bool,
    pub encoding: Encoding,
    /// The body mentions `stream_options` (so usage cannot be requested by a plain insertion).
    pub has_stream_options: bool,
    /// The client already asked for usage in the stream.
    pub include_usage: bool,
}

/// Reads a request body of `api` and estimates its prompt tokens, counting at most
/// `exact_budget_bytes` exactly. An error means the body is not the JSON the API expects.
pub fn inspect_request(api: Api, body: &[u8], exact_budget_bytes: usize) -> Result<PromptFacts, serde_json::Error> {
    let mut include_usage = false;
    let (model, stream, tally) = match api {
        Api::ChatCompletions => {
            let req: openai::ChatCompletionRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            for message in &req.messages {
                tally.add_overhead(TOKENS_PER_MESSAGE);
                tally.add_text(&message.role);
                for text in message.content.texts() {
                    tally.add_text(text);
                }
                if let Some(name) = &message.name {
                    tally.add_overhead(TOKENS_PER_NAME);
                    tally.add_text(name);
                }
                for call in &message.tool_calls {
                    tally.add_text(call.function.name.as_deref().unwrap_or_default());
                    tally.add_text(call.function.arguments.as_deref().unwrap_or_default());
                }
            }
            tally.add_overhead(REPLY_PRIMING);
            add_json_list(&mut tally, req.tools.as_deref());
            add_json_list(&mut tally, req.functions.as_deref());
            include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
            (req.model, req.stream.unwrap_or(false), tally)
        }
        Api::Completions => {
            let req: openai::CompletionRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            add_text_or_tokens(&mut tally, &req.prompt);
            include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
            (req.model, req.stream.unwrap_or(false), tally)
        }
        Api::Embeddings => {
            let req: openai::EmbeddingsRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            add_text_or_tokens(&mut tally, &req.input);
            (req.model, false, tally)
        }
        Api::Responses => {
            let req: openai::ResponsesRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            tally.add_text(req.instructions.as_deref().unwrap_or_default());
            add_json_texts(&mut tally, &req.input);
            add_json_list(&mut tally, req.tools.as_deref());
            (req.model, req.stream.unwrap_or(false), tally)
        }
        Api::AnthropicMessages => {
            let req: anthropic::MessagesRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            if let Some(system) = &req.system {
                for text in system.texts() {
                    tally.add_text(&text);
                }
            }
            for message in &req.messages {
                tally.add_overhead(TOKENS_PER_MESSAGE);
                for text in message.content.texts() {
                    tally.add_text(&text);
                }
            }
            add_json_list(&mut tally, req.tools.as_deref());
            (req.model, req.stream.unwrap_or(false), tally)
        }
    };
    Ok(PromptFacts {
        model,
        stream,
        prompt_tokens: tally.total(),
        estimated: tally.is_estimated(),
        encoding: tally.encoding(),
        has_stream_options: contains(body, b"\"stream_options\""),
        include_usage,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn add_json_list(tally: &mut TokenTally, list: Option<&[serde_json::Value]>) {
    for item in list.unwrap_or_default() {
        tally.add_text(&item.to_string());
    }
}

fn add_text_or_tokens(tally: &mut TokenTally, input: &TextOrTokens) {
    match input {
        TextOrTokens::Text(text) => tally.add_text(text),
        TextOrTokens::Texts(texts) => texts.iter().for_each(|t| tally.add_text(t)),
        TextOrTokens::Tokens(tokens) => tally.add_overhead(tokens.len() as u64),
        TextOrTokens::TokenBatches(batches) => batches.iter().for_each(|b| tally.add_overhead(b.len() as u64)),
        TextOrTokens::Other(_) => {}
    }
}

/// Responses `input` is a string or a tree of items: count every string under a `text`,
/// `content`, `arguments`, `output` or `instructions` key.
fn add_json_texts(tally: &mut TokenTally, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => tally.add_text(s),
        Value::Array(items) => items.iter().for_each(|v| add_json_texts(tally, v)),
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("text" | "content" | "arguments" | "output", _) => add_json_texts(tally, v),
                    (_, Value::Array(_) | Value::Object(_)) => add_json_texts(tally, v),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn chat_estimate_matches_openai_rule() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"hello world","name":"bob"}],"stream":true}"#;
        let facts = inspect_request(Api::ChatCompletions, body, 1 << 20).unwrap();
        let e = Encoding::O200kBase;
        let expected = 3
            + e.count("system")
            + e.count("You are terse.")
            + 3
            + e.count("user")
            + e.count("hello world")
            + 1
            + e.count("bob")
            + 3;
        assert_eq!(facts.prompt_tokens, expected);
        assert_eq!(facts.model, "gpt-4o");
        assert!(facts.stream);
        assert!(!facts.estimated);
        assert_eq!(facts.encoding, Encoding::O200kBase);
    }

    #[test]
    fn every_api_is_inspected() {
        let cases: [(Api, &[u8]); 5] = [
            (Api::Completions, br#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say hi"}"#),
            (Api::Embeddings, br#"{"model":"text-embedding-3-small","input":["a b","c"]}"#),
            (Api::Embeddings, br#"{"model":"text-embedding-3-small","input":[1,2,3]}"#),
            (Api::Responses, br#"{"model":"o3","instructions":"be kind","input":[{"role":"user","content":[{"type":"input_text","text":"hello"}]}]}"#),
            (Api::AnthropicMessages, br#"{"model":"claude-sonnet-4","max_tokens":5,"system":"sys","messages":[{"role":"user","content":"hi"}]}"#),
        ];
        for (api, body) in cases {
            let facts = inspect_request(api, body, 1 << 20).unwrap();
            assert!(facts.prompt_tokens >= 2, "{api:?}: {facts:?}");
        }
        let tokens = inspect_request(Api::Embeddings, br#"{"model":"m","input":[1,2,3]}"#, 1 << 20).unwrap();
        assert_eq!(tokens.prompt_tokens, 3);
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        for body in [&b""[..], b"{", b"[]", b"null", br#"{"messages":"x"}"#, b"\xff\xfe"] {
            assert!(inspect_request(Api::ChatCompletions, body, 1024).is_err(), "{body:?}");
        }
        // A missing model is not an error: the provider decides.
        let facts = inspect_request(Api::ChatCompletions, br#"{"messages":[]}"#, 1024).unwrap();
        assert_eq!(facts.model, "");
        assert_eq!(facts.prompt_tokens, REPLY_PRIMING);
    }
}
