//! What a request says about itself, cheaply ([`summarize`]), and its prompt tokens
//! ([`estimate_prompt`]), for every API Sluice knows.
//!
//! Chat framing follows OpenAI's published rule (3 tokens per message, 1 per name, 3 to prime
//! the reply). Tools are counted as their JSON text. Non-OpenAI models are estimated with the
//! default encoding: close, not exact. Estimating costs about 1 ms per 8k tokens, so modules
//! estimate once per request: the first one that needs it publishes `sluice.usage.prompt_estimate`
//! and the others read it.

use serde::Deserialize;

use crate::anthropic;
use crate::api::{Api, GeminiCall, Schema};
use crate::gemini;
use crate::json::from_object;
use crate::openai::{self, StreamOptions, TextOrTokens};
use crate::tokenizer::{Encoding, TokenTally};

const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// The top-level fields of a request that decide how it is handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSummary {
    pub model: String,
    pub stream: bool,
    /// The body mentions `stream_options` (so usage cannot be requested by a plain insertion).
    pub has_stream_options: bool,
    /// The client already asked for usage in the stream.
    pub include_usage: bool,
}

/// A prompt's token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptEstimate {
    pub tokens: u64,
    /// Part of the count was extrapolated (the prompt exceeded the exact-count budget).
    pub extrapolated: bool,
    pub encoding: Encoding,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TopLevel {
    model: String,
    stream: Option<bool>,
    /// `Some` whenever the key is present, even as `null`.
    #[serde(deserialize_with = "present")]
    stream_options: Option<Option<StreamOptions>>,
}

/// Runs only for keys that are present, so `Some(None)` records a present `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<StreamOptions>>, D::Error> {
    Option::<StreamOptions>::deserialize(d).map(Some)
}

/// Reads only a request's top-level fields (the rest is skipped, not allocated). An error means
/// the body is not a JSON object of the expected shape.
///
/// A Gemini call names its model and streaming in its `path`: the body's `model`, which only the
/// gateway's own modules write (a downgrade, a route), wins over the path's.
pub fn summarize(api: Api, path: &str, body: &[u8]) -> Result<RequestSummary, serde_json::Error> {
    let mut summary = summarize_body(body)?;
    if api.schema() == Schema::Gemini {
        let call = GeminiCall::of(path);
        if summary.model.is_empty() {
            summary.model = call.map(|c| c.model.to_string()).unwrap_or_default();
        }
        summary.stream = call.is_some_and(|c| c.stream);
    }
    Ok(summary)
}

fn summarize_body(body: &[u8]) -> Result<RequestSummary, serde_json::Error> {
    let top: TopLevel = from_object(body)?;
    Ok(RequestSummary {
        model: top.model,
        stream: top.stream.unwrap_or(false),
        has_stream_options: top.stream_options.is_some(),
        include_usage: top.stream_options.flatten().and_then(|o| o.include_usage).unwrap_or(false),
    })
}

/// Estimates the prompt tokens of a request body of `api`, counting at most
/// `exact_budget_bytes` of text exactly and extrapolating the rest. An error means the body is not
/// the JSON the API expects.
pub fn estimate_prompt(api: Api, body: &[u8], exact_budget_bytes: usize) -> Result<PromptEstimate, serde_json::Error> {
    let tally = match api {
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
            tally
        }
        Api::Completions => {
            let req: openai::CompletionRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            add_text_or_tokens(&mut tally, &req.prompt);
            tally
        }
        Api::Embeddings => {
            let req: openai::EmbeddingsRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            add_text_or_tokens(&mut tally, &req.input);
            tally
        }
        Api::Responses => {
            let req: openai::ResponsesRequest = from_object(body)?;
            let mut tally = TokenTally::new(Encoding::for_model(&req.model), exact_budget_bytes);
            tally.add_text(req.instructions.as_deref().unwrap_or_default());
            add_json_texts(&mut tally, &req.input);
            add_json_list(&mut tally, req.tools.as_deref());
            tally
        }
        Api::AnthropicMessages | Api::AnthropicCountTokens => {
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
            tally
        }
        Api::GeminiGenerate => {
            let req: gemini::GenerateRequest = from_object(body)?;
            // The model is in the path: Gemini's own tokenizer is not public, so the default
            // encoding estimates it.
            let mut tally = TokenTally::new(Encoding::for_model(""), exact_budget_bytes);
            for content in req.system_instruction.iter().chain(&req.contents) {
                tally.add_overhead(TOKENS_PER_MESSAGE);
                for part in &content.parts {
                    tally.add_text(part.text.as_deref().unwrap_or_default());
                    if let Some(call) = &part.function_call {
                        tally.add_text(&call.name);
                        tally.add_text(&call.args.to_string());
                    }
                    if let Some(response) = &part.function_response {
                        tally.add_text(&response.response.to_string());
                    }
                }
            }
            add_json_list(&mut tally, req.tools.as_deref());
            tally
        }
    };
    Ok(PromptEstimate { tokens: tally.total(), extrapolated: tally.is_estimated(), encoding: tally.encoding() })
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
        let estimate = estimate_prompt(Api::ChatCompletions, body, 1 << 20).unwrap();
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
        assert_eq!(estimate.tokens, expected);
        assert!(!estimate.extrapolated);
        assert_eq!(estimate.encoding, Encoding::O200kBase);
    }

    #[test]
    fn summary_reads_only_the_top_level() {
        let body =
            br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":"not checked"}"#;
        let summary = summarize_body(body).unwrap();
        assert_eq!(
            summary,
            RequestSummary { model: "gpt-4o".into(), stream: true, has_stream_options: true, include_usage: true }
        );
        assert_eq!(summarize_body(b"{}").unwrap(), RequestSummary::default());
        let null_options = summarize_body(br#"{"stream_options":null}"#).unwrap();
        assert!(null_options.has_stream_options && !null_options.include_usage);
        let nested = summarize_body(br#"{"messages":[{"content":"\"stream_options\""}]}"#).unwrap();
        assert!(!nested.has_stream_options, "only the top-level key counts");
        for bad in [&b""[..], b"{", b"[]", b"null", br#"{"model":5}"#, br#"{"stream":"yes"}"#, b"\xff\xfe"] {
            assert!(summarize_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_gemini_summary_reads_the_path() {
        let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
        let summary = summarize(Api::GeminiGenerate, path, br#"{"contents":[]}"#).unwrap();
        assert_eq!((summary.model.as_str(), summary.stream), ("gemini-2.5-flash", true));
        // The gateway's own rewrite of the model wins; a body cannot ask for a stream.
        let summary = summarize(Api::GeminiGenerate, path, br#"{"model":"chat-fast","stream":false}"#).unwrap();
        assert_eq!((summary.model.as_str(), summary.stream), ("chat-fast", true));
        let json = summarize(Api::GeminiGenerate, "/v1beta/models/m:generateContent", br#"{"stream":true}"#).unwrap();
        assert!(!json.stream);
        // Other APIs ignore the path.
        let chat = summarize(Api::ChatCompletions, path, br#"{"model":"gpt-4o"}"#).unwrap();
        assert_eq!((chat.model.as_str(), chat.stream), ("gpt-4o", false));
        assert!(summarize(Api::GeminiGenerate, path, b"[]").is_err());
    }

    #[test]
    fn every_api_is_estimated() {
        let cases: [(Api, &[u8]); 6] = [
            (Api::Completions, br#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say hi"}"#),
            (Api::Embeddings, br#"{"model":"text-embedding-3-small","input":["a b","c"]}"#),
            (Api::Embeddings, br#"{"model":"text-embedding-3-small","input":[1,2,3]}"#),
            (
                Api::Responses,
                br#"{"model":"o3","instructions":"be kind","input":[{"role":"user","content":[{"type":"input_text","text":"hello"}]}]}"#,
            ),
            (
                Api::AnthropicMessages,
                br#"{"model":"claude-sonnet-4","max_tokens":5,"system":"sys","messages":[{"role":"user","content":"hi"}]}"#,
            ),
            (
                Api::GeminiGenerate,
                br#"{"systemInstruction":{"parts":[{"text":"sys"}]},"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
            ),
        ];
        for (api, body) in cases {
            let estimate = estimate_prompt(api, body, 1 << 20).unwrap();
            assert!(estimate.tokens >= 2, "{api:?}: {estimate:?}");
        }
        let tokens = estimate_prompt(Api::Embeddings, br#"{"model":"m","input":[1,2,3]}"#, 1 << 20).unwrap();
        assert_eq!(tokens.tokens, 3);
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        for body in [&b""[..], b"{", b"[]", b"null", br#"{"messages":"x"}"#, b"\xff\xfe"] {
            assert!(estimate_prompt(Api::ChatCompletions, body, 1024).is_err(), "{body:?}");
        }
        // A missing model is not an error: the provider decides.
        let estimate = estimate_prompt(Api::ChatCompletions, br#"{"messages":[]}"#, 1024).unwrap();
        assert_eq!(estimate.tokens, REPLY_PRIMING);
    }
}
