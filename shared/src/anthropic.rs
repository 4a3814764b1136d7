//! Anthropic Messages wire types: request, answer and stream events, tolerant of unknown fields
//! (and of optional settings of the wrong type, which read as absent). Fields that are `None`
//! are not written.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::openai::{lenient, lenient_count};

/// A string, or an array of content blocks (`text`, `image`, `tool_use`, `tool_result`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Blocks {
    Text(String),
    List(Vec<Block>),
    Other(Value),
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks::Other(Value::Null)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Block {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `tool_use`: the call's id and tool.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub name: Option<String>,
    /// `tool_use` input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `tool_result`: the call it answers, and whether the tool failed.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_use_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub is_error: Option<bool>,
    /// `tool_result` content (a string or blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// `image`: where its bytes are.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub source: Option<ImageSource>,
    /// `thinking`: the reasoning text and Anthropic's signature of it.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub thinking: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub signature: Option<String>,
}

/// An image's `source`: `{"type": "base64", "media_type", "data"}` or `{"type": "url", "url"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageSource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Blocks {
    /// Text that a tokenizer should see: text blocks, tool inputs (as JSON) and tool results.
    pub fn texts(&self) -> Vec<String> {
        match self {
            Blocks::Text(text) => vec![text.clone()],
            Blocks::List(blocks) => blocks.iter().flat_map(Block::texts).collect(),
            Blocks::Other(_) => Vec::new(),
        }
    }
}

impl Block {
    fn texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(text) = &self.text {
            out.push(text.clone());
        }
        if let Some(input) = &self.input {
            out.push(input.to_string());
        }
        match &self.content {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(other @ Value::Array(_)) => {
                if let Ok(blocks) = serde_json::from_value::<Blocks>(other.clone()) {
                    out.extend(blocks.texts());
                }
            }
            _ => {}
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Message {
    pub role: String,
    pub content: Blocks,
}

/// `POST /v1/messages` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessagesRequest {
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Blocks>,
    pub messages: Vec<Message>,
    /// Tool definitions, kept as sent (their size counts as prompt); [`Tool`] reads one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub metadata: Option<Metadata>,
    /// Extended thinking: `{"type": "enabled", "budget_tokens": N}`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub thinking: Option<Thinking>,
    /// Effort and structured output.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub output_config: Option<OutputConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputConfig {
    /// `low`, `medium`, `high`, `xhigh`, `max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
}

/// `{"type": "json_schema", "schema": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: Value,
}

/// A tool definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tool {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: Value,
}

/// `tool_choice`: `{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
}

/// Anthropic `usage`. `input_tokens` excludes cache reads and cache writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    #[serde(deserialize_with = "lenient_count", skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count", skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count", skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count", skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
}

/// A Messages answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessagesAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `message`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub content: Vec<Block>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One stream event's data (`message_start`, `content_block_delta`, `message_delta`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessagesAnswer>,
    /// `content_block_*`: which block of the answer.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub content_block: Option<Block>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<StreamDelta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `error` events.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamDelta {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
}

/// An error answer: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorAnswer {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn request_with_system_blocks_and_tool_results() {
        let req: MessagesRequest = serde_json::from_str(
            r#"{"model":"claude-sonnet-4","max_tokens":64,"system":[{"type":"text","text":"sys"}],
               "messages":[{"role":"user","content":"hello"},
                 {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"q":1}}]},
                 {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"42"}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(req.system.unwrap().texts(), vec!["sys"]);
        assert_eq!(req.messages[0].content.texts(), vec!["hello"]);
        assert_eq!(req.messages[1].content.texts(), vec![r#"{"q":1}"#]);
        assert_eq!(req.messages[2].content.texts(), vec!["42"]);
    }

    #[test]
    fn stream_events() {
        let start: StreamEvent = serde_json::from_str(
            r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":10,"cache_read_input_tokens":3,"output_tokens":1}}}"#,
        )
        .unwrap();
        assert_eq!(start.message.unwrap().usage.unwrap().cache_read_input_tokens, Some(3));
        let delta: StreamEvent = serde_json::from_str(
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        )
        .unwrap();
        assert_eq!(delta.delta.unwrap().text.as_deref(), Some("Hi"));
    }
}
