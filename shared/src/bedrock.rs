//! Amazon Bedrock's Converse API (`/model/{modelId}/converse`, `/converse-stream`): only the
//! parts Sluice reads or writes, leniently. Members are camelCase on the wire; a content block
//! is an object with exactly one member set.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::openai::{lenient, lenient_count};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConverseRequest {
    pub messages: Vec<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Vec<SystemBlock>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub inference_config: Option<InferenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_config: Option<ToolConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    pub content: Vec<Block>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemBlock {
    pub text: String,
}

/// A content block: text, an image, a tool use, a tool result or reasoning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Block {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub image: Option<ImageBlock>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_use: Option<ToolUse>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_result: Option<ToolResult>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub reasoning_content: Option<ReasoningContent>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageBlock {
    /// `png`, `jpeg`, `gif` or `webp`.
    pub format: String,
    pub source: ImageSource,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageSource {
    /// Base64 in JSON.
    pub bytes: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ToolUse {
    pub tool_use_id: String,
    pub name: String,
    /// Absent when a stream's block starts (the input follows in deltas).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub input: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ToolResult {
    pub tool_use_id: String,
    /// `[{"text": ...}]` or `[{"json": ...}]`.
    pub content: Vec<Value>,
    /// `success` or `error`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReasoningContent {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub reasoning_text: Option<ReasoningText>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReasoningText {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InferenceConfig {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub stop_sequences: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ToolConfig {
    pub tools: Vec<ToolEntry>,
    /// `{"auto": {}}`, `{"any": {}}` or `{"tool": {"name": ...}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ToolEntry {
    pub tool_spec: ToolSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ToolSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub description: Option<String>,
    /// `{"json": <JSON Schema>}`.
    pub input_schema: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConverseAnswer {
    pub output: Output,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub stop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Output {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub message: Option<Message>,
}

/// Bedrock's `inputTokens` leaves out cache reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Usage {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub total_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub cache_write_input_tokens: Option<u64>,
}

/// One `ConverseStream` event's payload (its type is the message's `:event-type`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StreamEvent {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub content_block_index: Option<usize>,
    /// `contentBlockStart`: `{"toolUse": {"toolUseId", "name"}}`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub start: Option<BlockStart>,
    /// `contentBlockDelta`: `{"text"}`, `{"toolUse": {"input"}}` or `{"reasoningContent"}`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub delta: Option<BlockDelta>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub stop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub usage: Option<Usage>,
    /// Exceptions' text.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BlockStart {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_use: Option<ToolUse>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BlockDelta {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_use: Option<ToolUseDelta>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub reasoning_content: Option<ReasoningDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolUseDelta {
    /// More JSON text of the arguments.
    pub input: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReasoningDelta {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub signature: Option<String>,
}

/// An error answer: `{"message": "..."}` (its type is in the `x-amzn-ErrorType` header).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorAnswer {
    #[serde(alias = "Message")]
    pub message: String,
}
