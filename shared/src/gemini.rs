//! The Gemini API's `generateContent` schema (Google AI Studio and Vertex AI): only the parts
//! Sluice reads or writes, leniently (a member of the wrong type reads as absent; unknown
//! members are ignored). Members are camelCase on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::openai::{lenient, lenient_count};

/// `POST .../models/{model}:generateContent` (and `:streamGenerateContent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GenerateRequest {
    pub contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub generation_config: Option<GenerationConfig>,
}

/// One turn (`role`: `user` or `model`) or the system instruction (no role).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Content {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub role: Option<String>,
    pub parts: Vec<WirePart>,
}

/// One part: exactly one of its data members is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WirePart {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub text: Option<String>,
    /// The text is the model's reasoning (a thought summary).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub thought: Option<bool>,
    /// Opaque, base64: the model's reasoning state, to be sent back with its part.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub thought_signature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub inline_data: Option<Blob>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub file_data: Option<FileData>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub function_call: Option<FunctionCall>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub function_response: Option<FunctionResponse>,
    /// Parts Sluice has no canonical form for (executable code, code results, video metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable_code: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_execution_result: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    /// Base64.
    pub data: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FileData {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub mime_type: Option<String>,
    pub file_uri: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FunctionCall {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub id: Option<String>,
    pub name: String,
    /// The arguments, a JSON object.
    pub args: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FunctionResponse {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub id: Option<String>,
    pub name: String,
    /// A JSON object: `{"output": ...}` or `{"error": ...}` by Google's convention.
    pub response: Value,
}

/// One member of `tools`: function declarations (other tools, such as Google Search, are
/// other members).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Tools {
    pub function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub description: Option<String>,
    /// Google's OpenAPI subset of JSON Schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Full JSON Schema (what Sluice sends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// `AUTO`, `ANY`, `NONE` (or `VALIDATED`).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub candidate_count: Option<u64>,
    /// `application/json` for JSON output.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub response_mime_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub thinking_config: Option<ThinkingConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub include_thoughts: Option<bool>,
    /// `MINIMAL`, `LOW`, `MEDIUM`, `HIGH` (Gemini 3 models).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub thinking_level: Option<String>,
    /// Tokens (Gemini 2.5 models).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub thinking_budget: Option<i64>,
}

/// An answer, or one chunk of a streamed answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GenerateAnswer {
    #[serde(deserialize_with = "lenient_list")]
    pub candidates: Vec<Candidate>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub model_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub response_id: Option<String>,
    /// Why the prompt itself was blocked, when it was (`blockReason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<Value>,
}

fn lenient_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Candidate>, D::Error> {
    lenient(d).map(Option::unwrap_or_default)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Candidate {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub content: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub index: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Every prompt token, cached ones included.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub prompt_token_count: Option<u64>,
    /// Answer tokens, reasoning excluded.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub candidates_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub cached_content_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub thoughts_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub tool_use_prompt_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient_count")]
    pub total_token_count: Option<u64>,
}

/// `{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorAnswer {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(deserialize_with = "lenient_code")]
    pub code: u16,
    pub message: String,
    pub status: String,
}

fn lenient_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    lenient_count(d).map(|c| c.and_then(|c| u16::try_from(c).ok()).unwrap_or(0))
}
