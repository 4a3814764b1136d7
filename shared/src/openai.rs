//! OpenAI wire types: chat completions, completions, embeddings and responses, requests and
//! answers, JSON and stream chunks. Unknown fields are ignored and absent ones default, so newer
//! provider versions and OpenAI-compatible servers (vLLM, NIM, Groq, Azure) parse.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Text, or an array of content parts (`{"type":"text","text":...}`, images, audio, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
    /// Anything else (null, numbers): kept, contributes no text.
    Other(Value),
}

impl Default for Content {
    fn default() -> Self {
        Content::Other(Value::Null)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Content {
    /// The text pieces of this content, in order (non-text parts contribute nothing).
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Content::Text(text) => vec![text.as_str()],
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_deref()).collect(),
            Content::Other(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatMessage {
    pub role: String,
    pub content: Content,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// `POST /v1/chat/completions` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Tool and legacy function definitions: only their size matters to Sluice so far.
    pub tools: Option<Vec<Value>>,
    pub functions: Option<Vec<Value>>,
}

/// A legacy prompt or an embeddings input: a string, strings, or token arrays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextOrTokens {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
    Other(Value),
}

impl Default for TextOrTokens {
    fn default() -> Self {
        TextOrTokens::Other(Value::Null)
    }
}

/// `POST /v1/completions` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: TextOrTokens,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

/// `POST /v1/embeddings` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: TextOrTokens,
}

/// `POST /v1/responses` request. `input` is a string or a list of items of many kinds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesRequest {
    pub model: String,
    pub instructions: Option<String>,
    pub input: Value,
    pub stream: Option<bool>,
    pub tools: Option<Vec<Value>>,
}

/// OpenAI `usage`, as in chat completions, completions and embeddings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    #[serde(deserialize_with = "lenient_count")]
    pub prompt_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    pub completion_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    pub total_tokens: Option<u64>,
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptTokensDetails {
    #[serde(deserialize_with = "lenient_count")]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompletionTokensDetails {
    #[serde(deserialize_with = "lenient_count")]
    pub reasoning_tokens: Option<u64>,
}

/// The Responses API's `usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesUsage {
    #[serde(deserialize_with = "lenient_count")]
    pub input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    pub output_tokens: Option<u64>,
    pub input_tokens_details: Option<PromptTokensDetails>,
    pub output_tokens_details: Option<CompletionTokensDetails>,
}

/// A chat completion, completion or embeddings answer: the fields Sluice reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompletionAnswer {
    pub id: Option<String>,
    pub model: Option<String>,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Choice {
    pub index: Option<u32>,
    /// Chat completions.
    pub message: Option<ChatMessage>,
    /// Legacy completions.
    pub text: Option<String>,
    pub finish_reason: Option<String>,
}

/// One `chat.completion.chunk` (or legacy completion chunk) of a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompletionChunk {
    pub model: Option<String>,
    pub choices: Vec<ChunkChoice>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Option<Delta>,
    /// Legacy completions stream text.
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delta {
    pub content: Option<String>,
    /// Reasoning text streamed by some OpenAI-compatible servers (vLLM, DeepSeek).
    pub reasoning_content: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

/// A Responses API answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesAnswer {
    pub model: Option<String>,
    pub usage: Option<ResponsesUsage>,
}

/// A Responses API stream event (`response.output_text.delta`, `response.completed`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub delta: Option<String>,
    pub response: Option<ResponsesAnswer>,
}

/// Token counts arrive as integers, but some servers send floats or numeric strings; a count
/// that cannot be read is treated as absent rather than failing the whole document.
pub fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn chat_request_with_parts_tools_and_unknown_fields() {
        let body = r#"{"model":"gpt-4o","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}
        ],"stream":true,"tools":[{"type":"function"}],"brand_new_field":{"x":1}}"#;
        let req: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.model, "gpt-4o");
        assert_eq!(req.messages.len(), 3);
        assert_eq!(req.messages[1].content.texts(), vec!["hi"]);
        assert!(req.messages[2].content.texts().is_empty());
        assert_eq!(req.messages[2].tool_calls[0].function.arguments.as_deref(), Some("{}"));
        assert_eq!(req.stream, Some(true));
        assert_eq!(req.tools.map(|t| t.len()), Some(1));
    }

    #[test]
    fn prompt_shapes() {
        let c: CompletionRequest = serde_json::from_str(r#"{"model":"m","prompt":["a","b"]}"#).unwrap();
        assert_eq!(c.prompt, TextOrTokens::Texts(vec!["a".into(), "b".into()]));
        let e: EmbeddingsRequest = serde_json::from_str(r#"{"model":"m","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!(e.input, TextOrTokens::TokenBatches(vec![vec![1, 2], vec![3]]));
    }

    #[test]
    fn usage_counts_are_lenient() {
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":12.0,"completion_tokens":"7","total_tokens":null,
                "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":-1}}"#,
        )
        .unwrap();
        assert_eq!(u.prompt_tokens, Some(12));
        assert_eq!(u.completion_tokens, Some(7));
        assert_eq!(u.total_tokens, None);
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(4));
        assert_eq!(u.completion_tokens_details.unwrap().reasoning_tokens, None);
    }

    #[test]
    fn chunk_with_tool_call_delta() {
        let c: CompletionChunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#,
        )
        .unwrap();
        let delta = c.choices[0].delta.as_ref().unwrap();
        assert_eq!(delta.tool_calls[0].function.arguments.as_deref(), Some("{\"a\""));
    }
}
