//! OpenAI wire types: chat completions, completions, embeddings and responses, requests and
//! answers, JSON and stream chunks. Unknown fields are ignored and absent ones default, so newer
//! provider versions and OpenAI-compatible servers (vLLM, NIM, Groq, Azure) parse; an optional
//! setting of the wrong type reads as absent ([`lenient`]). Fields that are `None` are not
//! written, so a request or answer written from these types has only what it was given.

use serde::de::DeserializeOwned;
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
    /// `image_url` parts: a URL or a `data:<media type>;base64,<data>` URL.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub image_url: Option<ImageUrl>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageUrl {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
    /// `tool` messages: the call this is the result of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Reasoning text some OpenAI-compatible servers return (vLLM, DeepSeek).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolCall {
    /// Stream deltas: which tool call of the answer this piece belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Tool definitions, kept as sent (their size counts as prompt); [`FunctionTool`] reads one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub stop: Option<Stop>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub response_format: Option<ResponseFormat>,
    /// Reasoning models: `minimal`, `low`, `medium`, `high`, ...
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub reasoning_effort: Option<String>,
}

/// A tool definition: `{"type": "function", "function": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// `tool_choice`: `"auto"`, `"none"`, `"required"`, or one function by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Function(NamedFunction),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedFunction {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionName,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionName {
    pub name: String,
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `response_format`: `text`, `json_object`, or `json_schema` with its schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchema>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JsonSchema {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
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

/// `POST /v1/responses` request. `input` is a string or a list of items of many kinds, kept as
/// sent ([`ResponsesItem`] reads one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub instructions: Option<String>,
    pub input: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Tool definitions, kept as sent; [`ResponsesTool`] reads one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_choice: Option<ResponsesToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub text: Option<ResponsesText>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub reasoning: Option<ResponsesReasoning>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub user: Option<String>,
    /// State kept by OpenAI: a conversation to continue, or a response to run later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<Value>,
}

/// One `input` item: a message (`role`, `content`), a `function_call` or a
/// `function_call_output`, or `reasoning`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesItem {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A message's text, or its parts.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub content: Option<ResponsesContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// A `function_call_output`'s result: text, or parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// A `reasoning` item's summary parts.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub summary: Option<Vec<ResponsesPart>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResponsesContent {
    Text(String),
    Parts(Vec<ResponsesPart>),
}

/// `input_text`, `input_image`, `output_text`, `summary_text`, `refusal` parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// `input_image`: a URL or a data URL.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub image_url: Option<String>,
    /// `input_image`, `input_file`: a file uploaded to OpenAI.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub file_id: Option<String>,
    /// `output_text`: always a list when written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Value>>,
}

/// A tool definition: `{"type": "function", "name", "description", "parameters"}` (or a
/// built-in tool, which has no function).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// `tool_choice`: `"auto"`, `"none"`, `"required"`, or `{"type": "function", "name"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResponsesToolChoice {
    Mode(String),
    Function { name: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesText {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<ResponsesFormat>,
}

/// `{"type": "text" | "json_object" | "json_schema", "name", "schema"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesReasoning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
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
    #[serde(deserialize_with = "lenient_count", skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    pub input_tokens_details: Option<PromptTokensDetails>,
    pub output_tokens_details: Option<CompletionTokensDetails>,
}

/// A chat completion, completion or embeddings answer: the fields Sluice reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompletionAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub created: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Choice {
    pub index: Option<u32>,
    /// Chat completions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatMessage>,
    /// Legacy completions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub finish_reason: Option<String>,
}

/// One `chat.completion.chunk` (or legacy completion chunk) of a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompletionChunk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub created: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkChoice {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// Legacy completions stream text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Reasoning text streamed by some OpenAI-compatible servers (vLLM, DeepSeek).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// An error answer: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorAnswer {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(deserialize_with = "lenient")]
    pub message: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub param: Option<String>,
    /// A string from OpenAI, a number from some compatible servers.
    pub code: Option<Value>,
}

/// A Responses API answer (`object: "response"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub created_at: Option<u64>,
    /// `in_progress`, `completed`, `incomplete`, `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub model: Option<String>,
    /// Always a list when written (clients index into it). Unreadable items read as none: the
    /// usage beside them still counts.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub output: Option<Vec<ResponsesItem>>,
    pub usage: Option<ResponsesUsage>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub incomplete_details: Option<IncompleteDetails>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: Option<String>,
}

/// A Responses API stream event (`response.output_text.delta`, `response.completed`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub sequence_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponsesAnswer>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub output_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub content_index: Option<usize>,
    /// Reasoning summary events: which part of the summary.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub summary_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub item: Option<ResponsesItem>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub part: Option<ResponsesPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// `*.done` events: the whole text or arguments.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub arguments: Option<String>,
    /// `error` events.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub code: Option<String>,
}

/// An optional field of the wrong type reads as absent instead of failing the document.
pub fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
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
