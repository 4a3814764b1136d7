//! Anthropic Messages wire types: request, answer and stream events, tolerant of unknown fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::openai::lenient_count;

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
    /// `tool_use` input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `tool_result` content (a string or blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
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
    pub system: Option<Blocks>,
    pub messages: Vec<Message>,
    pub tools: Option<Vec<Value>>,
    pub max_tokens: Option<u64>,
    pub stream: Option<bool>,
}

/// Anthropic `usage`. `input_tokens` excludes cache reads and cache writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    #[serde(deserialize_with = "lenient_count")]
    pub input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    pub output_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    pub cache_creation_input_tokens: Option<u64>,
}

/// A Messages answer: the fields Sluice reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessagesAnswer {
    pub id: Option<String>,
    pub model: Option<String>,
    pub content: Vec<Block>,
    pub stop_reason: Option<String>,
    pub usage: Option<Usage>,
}

/// One stream event's data (`message_start`, `content_block_delta`, `message_delta`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: Option<MessagesAnswer>,
    pub delta: Option<StreamDelta>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamDelta {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
    pub partial_json: Option<String>,
    pub thinking: Option<String>,
    pub stop_reason: Option<String>,
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
