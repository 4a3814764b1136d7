//! One translation layer between every client schema and every provider schema.
//!
//! Each wire schema has one translator file that converts its requests, answers and stream
//! events to and from the canonical form below ([`Chat`], [`Answer`], [`Event`]), so N client
//! schemas and M provider schemas cost N + M translators. A request is translated
//! client → canonical → provider; its answer provider → canonical → client, a stream event by
//! event with bounded state. Adding a schema is one file plus one arm in [`Wire`] (see
//! `docs/adding-a-provider.md`).
//!
//! What the canonical form keeps: system instructions, the turns (text, images, tool calls,
//! tool results, reasoning), tools and the tool choice, sampling (temperature, top_p, max
//! tokens, stop sequences), JSON output, reasoning effort, the user id, and in answers the text, tool calls,
//! reasoning, finish reason, usage (cached, cache-write and reasoning tokens included) and
//! errors. A field no canonical member holds is dropped on translation (never passed in the
//! wrong schema).

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai_chat;
pub mod openai_responses;

use serde_json::Value;

/// A chat request, in no schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chat {
    pub model: String,
    /// System (and developer) instructions, in order.
    pub system: Vec<String>,
    pub turns: Vec<Turn>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The client wants usage at the end of its stream.
    pub stream_usage: bool,
    /// The end user, for the provider's abuse monitoring.
    pub user: Option<String>,
    pub output: Output,
    /// How hard a reasoning model thinks, as the client named it (`low`, `medium`, `high`...).
    pub effort: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
    /// A tool call the assistant made; `arguments` is JSON text.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// A tool's result, for the call `id`.
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
    /// Reasoning the model showed; `signature` lets a provider verify its own.
    Thinking {
        text: String,
        signature: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    Url(String),
    Base64 { media_type: String, data: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    /// No tool may be called.
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Tool(String),
}

/// What shape the answer's text must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Output {
    #[default]
    Text,
    /// Any JSON object.
    Json,
    /// JSON valid against `schema`.
    Schema { name: String, schema: Value },
}

/// A complete answer, in no schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub id: String,
    pub model: String,
    /// Text, tool calls and reasoning, in order.
    pub parts: Vec<Part>,
    pub finish: Option<Finish>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// Token counts. `input` counts every prompt token, cached and cache-written ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Of `input`: read from the provider's prompt cache.
    pub cached: u64,
    /// Of `input`: written to the provider's prompt cache.
    pub cache_written: u64,
    /// Of `output`: reasoning.
    pub reasoning: u64,
}

impl Usage {
    /// Counts from a schema whose input leaves cache reads and writes out (Anthropic, Bedrock).
    pub fn cache_apart(fresh_input: u64, output: u64, cached: u64, cache_written: u64) -> Usage {
        Usage { input: fresh_input + cached + cache_written, output, cached, cache_written, reasoning: 0 }
    }

    /// The input tokens neither read from nor written to a cache.
    pub fn fresh_input(&self) -> u64 {
        self.input.saturating_sub(self.cached + self.cache_written)
    }

    /// Later counts replace earlier ones; a count not given stays.
    pub fn merge(&mut self, later: Usage) {
        let keep = |old: &mut u64, new: u64| {
            if new > 0 {
                *old = new;
            }
        };
        keep(&mut self.input, later.input);
        keep(&mut self.output, later.output);
        keep(&mut self.cached, later.cached);
        keep(&mut self.cache_written, later.cache_written);
        keep(&mut self.reasoning, later.reasoning);
    }
}

/// One step of a streamed answer, in no schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The answer begins.
    Start {
        id: String,
        model: String,
    },
    Text(String),
    Thinking(String),
    /// Tool call number `index` (0, 1, ... within this answer) begins.
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More JSON text of tool call `index`'s arguments.
    ToolArguments {
        index: usize,
        json: String,
    },
    /// Usage so far (merged: later counts replace earlier ones).
    Usage(Usage),
    Finish(Finish),
    /// The provider failed mid-stream.
    Error(Error),
    /// The answer is complete.
    End,
}

/// A provider's error, in no schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

/// Error classes every schema can express, so a client SDK raises the matching exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimit,
    Overloaded,
    Timeout,
    Server,
}

impl ErrorKind {
    /// The kind an HTTP status stands for.
    pub fn of_status(status: u16) -> ErrorKind {
        match status {
            400 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            408 | 504 => ErrorKind::Timeout,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::RateLimit,
            503 | 529 => ErrorKind::Overloaded,
            _ => ErrorKind::Server,
        }
    }
}

/// A wire schema this layer translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions (and every OpenAI-compatible server).
    OpenaiChat,
    /// The OpenAI Responses API.
    OpenaiResponses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent` (Google AI Studio and Vertex AI); the model and streaming are
    /// in the path.
    Gemini,
    /// Amazon Bedrock Converse; the model and streaming are in the path, streams are AWS
    /// event-stream framed (`crate::eventstream`).
    Bedrock,
}

impl Wire {
    /// The schema of a client's API, for the chat APIs the translators read.
    pub fn of_client(api: crate::api::Api) -> Option<Wire> {
        use crate::api::Api;
        match api {
            Api::ChatCompletions => Some(Wire::OpenaiChat),
            Api::Responses => Some(Wire::OpenaiResponses),
            Api::AnthropicMessages => Some(Wire::Anthropic),
            Api::GeminiGenerate => Some(Wire::Gemini),
            Api::Completions | Api::Embeddings | Api::AnthropicCountTokens => None,
        }
    }

    pub fn read_request(self, body: &[u8]) -> Result<Chat, String> {
        match self {
            Wire::OpenaiChat => openai_chat::read_request(body),
            Wire::OpenaiResponses => openai_responses::read_request(body),
            Wire::Anthropic => anthropic::read_request(body),
            Wire::Gemini => gemini::read_request(body),
            Wire::Bedrock => bedrock::read_request(body),
        }
    }

    /// The request in this schema. `default_max_tokens` fills a limit the schema requires.
    pub fn write_request(self, chat: &Chat, default_max_tokens: u64) -> Result<Vec<u8>, String> {
        match self {
            Wire::OpenaiChat => openai_chat::write_request(chat),
            Wire::OpenaiResponses => openai_responses::write_request(chat),
            Wire::Anthropic => anthropic::write_request(chat, default_max_tokens),
            Wire::Gemini => gemini::write_request(chat),
            Wire::Bedrock => bedrock::write_request(chat),
        }
    }

    /// A JSON answer (status 2xx) or error body (any other status).
    pub fn read_answer(self, status: u16, body: &[u8]) -> Result<Answer, Error> {
        match self {
            Wire::OpenaiChat => openai_chat::read_answer(status, body),
            Wire::OpenaiResponses => openai_responses::read_answer(status, body),
            Wire::Anthropic => anthropic::read_answer(status, body),
            Wire::Gemini => gemini::read_answer(status, body),
            Wire::Bedrock => bedrock::read_answer(status, body),
        }
    }

    pub fn write_answer(self, answer: &Answer, created: u64) -> Vec<u8> {
        match self {
            Wire::OpenaiChat => openai_chat::write_answer(answer, created),
            Wire::OpenaiResponses => openai_responses::write_answer(answer, created),
            Wire::Anthropic => anthropic::write_answer(answer),
            Wire::Gemini => gemini::write_answer(answer),
            Wire::Bedrock => bedrock::write_answer(answer),
        }
    }

    /// An error body, and the HTTP status it goes with.
    pub fn write_error(self, error: &Error) -> (u16, Vec<u8>) {
        match self {
            Wire::OpenaiChat => openai_chat::write_error(error),
            Wire::OpenaiResponses => openai_responses::write_error(error),
            Wire::Anthropic => anthropic::write_error(error),
            Wire::Gemini => gemini::write_error(error),
            Wire::Bedrock => bedrock::write_error(error),
        }
    }

    /// Reads a provider's stream in this schema.
    pub fn stream_reader(self) -> Box<dyn StreamReader> {
        match self {
            Wire::OpenaiChat => Box::<openai_chat::Reader>::default(),
            Wire::OpenaiResponses => Box::<openai_responses::Reader>::default(),
            Wire::Anthropic => Box::<anthropic::Reader>::default(),
            Wire::Gemini => Box::<gemini::Reader>::default(),
            Wire::Bedrock => Box::<bedrock::Reader>::default(),
        }
    }

    /// Writes a client's stream in this schema.
    pub fn stream_writer(self, created: u64, usage: bool) -> Box<dyn StreamWriter> {
        match self {
            Wire::OpenaiChat => Box::new(openai_chat::Writer::new(created, usage)),
            Wire::OpenaiResponses => Box::new(openai_responses::Writer::new(created)),
            Wire::Anthropic => Box::<anthropic::Writer>::default(),
            Wire::Gemini => Box::<gemini::Writer>::default(),
            Wire::Bedrock => Box::<bedrock::Writer>::default(),
        }
    }
}

/// Turns one schema's SSE events into canonical events.
pub trait StreamReader {
    /// The events of one SSE event (`name`: its `event:` field).
    fn read(&mut self, name: Option<&str>, data: &str) -> Vec<Event>;
}

/// An SSE event to send: its `event:` name (if the schema uses one) and its data.
pub type SseOut = (Option<&'static str>, String);

/// Turns canonical events into one schema's SSE events.
pub trait StreamWriter {
    fn write(&mut self, event: &Event) -> Vec<SseOut>;
    /// The stream ended (with or without an [`Event::End`]): whatever closes it, once.
    fn finish(&mut self) -> Vec<SseOut>;
}

#[cfg(test)]
mod tests;
