//! Amazon Bedrock Converse ⇄ the canonical form, on the types of [`crate::bedrock`].
//!
//! The model and streaming are in the path (`/model/{modelId}/converse`, `/converse-stream`);
//! a stream is AWS event-stream framed (`crate::eventstream` decodes it; this reader gets each
//! message's event type and JSON payload). Turns alternate (consecutive turns of one role are
//! merged, tool results first in theirs), reasoning goes back only with its signature. What
//! Converse has no member for is refused, not dropped: image URLs (Bedrock takes images
//! inline only), JSON output, and `tool_choice: none` with tools in the conversation. The
//! reasoning effort has no model-independent member and is not sent.

use serde_json::Value;

use super::{Answer, Chat, Error, ErrorKind, Event, Finish, Image, Output, Part, Role, SseOut, Tool, ToolChoice};
use super::{StreamReader, StreamWriter, Turn, Usage};
use crate::bedrock::{
    Block, BlockDelta, BlockStart, ConverseAnswer, ConverseRequest, ErrorAnswer, ImageBlock, ImageSource,
    InferenceConfig, Message, Output as WireOutput, ReasoningContent, ReasoningDelta, ReasoningText, StreamEvent,
    SystemBlock, ToolConfig, ToolEntry, ToolResult, ToolSpec, ToolUse, ToolUseDelta, Usage as WireUsage,
};

pub fn read_request(body: &[u8]) -> Result<Chat, String> {
    let request: ConverseRequest =
        crate::json::from_object(body).map_err(|e| format!("the body is not a Converse request: {e}"))?;
    let mut chat = Chat { stream_usage: true, ..Chat::default() };
    chat.system = request.system.unwrap_or_default().into_iter().map(|b| b.text).filter(|t| !t.is_empty()).collect();
    for message in request.messages {
        let role = if message.role == "assistant" { Role::Assistant } else { Role::User };
        let parts =
            message.content.into_iter().map(read_block).filter_map(Result::transpose).collect::<Result<_, _>>()?;
        chat.turns.push(Turn { role, parts });
    }
    if let Some(config) = request.inference_config {
        chat.max_tokens = config.max_tokens;
        chat.temperature = config.temperature;
        chat.top_p = config.top_p;
        chat.stop = config.stop_sequences.unwrap_or_default();
    }
    if let Some(config) = request.tool_config {
        for entry in config.tools {
            let spec = entry.tool_spec;
            let parameters =
                spec.input_schema.get("json").cloned().unwrap_or_else(|| serde_json::json!({"type": "object"}));
            chat.tools.push(Tool { name: spec.name, description: spec.description, parameters });
        }
        chat.tool_choice = config.tool_choice.map(|choice| {
            if choice.get("any").is_some() {
                ToolChoice::Required
            } else if let Some(name) = choice.get("tool").and_then(|t| t.get("name")).and_then(Value::as_str) {
                ToolChoice::Tool(name.into())
            } else {
                ToolChoice::Auto
            }
        });
    }
    Ok(chat)
}

fn read_block(block: Block) -> Result<Option<Part>, String> {
    if let Some(text) = block.text {
        return Ok((!text.is_empty()).then_some(Part::Text(text)));
    }
    if let Some(image) = block.image {
        let media_type = format!("image/{}", image.format);
        return Ok(Some(Part::Image(Image::Base64 { media_type, data: image.source.bytes })));
    }
    if let Some(tool) = block.tool_use {
        return Ok(Some(Part::ToolCall {
            id: tool.tool_use_id,
            name: tool.name,
            arguments: arguments_text(&tool.input),
        }));
    }
    if let Some(result) = block.tool_result {
        let content = result
            .content
            .iter()
            .map(|c| match (c.get("text").and_then(Value::as_str), c.get("json")) {
                (Some(text), _) => text.to_string(),
                (None, Some(json)) => json.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .concat();
        let is_error = result.status.as_deref() == Some("error");
        return Ok(Some(Part::ToolResult { id: result.tool_use_id, content, is_error }));
    }
    if let Some(reasoning) = block.reasoning_content.and_then(|r| r.reasoning_text) {
        return Ok(Some(Part::Thinking { text: reasoning.text, signature: reasoning.signature }));
    }
    Err("a content block of a kind Sluice does not translate (documents, videos, guard content) cannot be sent to this provider".into())
}

fn arguments_text(input: &Value) -> String {
    if input.is_null() {
        "{}".into()
    } else {
        input.to_string()
    }
}

pub fn write_request(chat: &Chat) -> Result<Vec<u8>, String> {
    if chat.output != Output::Text {
        return Err("Bedrock's Converse API takes no JSON output format".into());
    }
    let mut messages: Vec<Message> = Vec::new();
    for turn in &chat.turns {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let mut blocks = Vec::new();
        for part in &turn.parts {
            blocks.extend(write_part(part)?);
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.append(&mut blocks),
            _ => messages.push(Message { role: role.into(), content: blocks }),
        }
    }
    for message in &mut messages {
        // Tool results first in their turn (the order among them kept).
        message.content.sort_by_key(|b| b.tool_result.is_none());
    }
    messages.retain(|m| !m.content.is_empty());
    let in_history =
        chat.turns.iter().flat_map(|t| &t.parts).any(|p| matches!(p, Part::ToolCall { .. } | Part::ToolResult { .. }));
    let tool_config = match &chat.tool_choice {
        _ if chat.tools.is_empty() => None,
        Some(ToolChoice::None) if in_history => {
            return Err("Bedrock's Converse API cannot forbid tools in a conversation that used them".into())
        }
        // No tool may be called: none is offered.
        Some(ToolChoice::None) => None,
        choice => Some(ToolConfig {
            tools: chat
                .tools
                .iter()
                .map(|tool| ToolEntry {
                    tool_spec: ToolSpec {
                        name: tool.name.clone(),
                        description: tool.description.clone(),
                        input_schema: serde_json::json!({ "json": tool.parameters }),
                    },
                })
                .collect(),
            tool_choice: choice.as_ref().map(|choice| match choice {
                ToolChoice::Required => serde_json::json!({"any": {}}),
                ToolChoice::Tool(name) => serde_json::json!({"tool": {"name": name}}),
                ToolChoice::Auto | ToolChoice::None => serde_json::json!({"auto": {}}),
            }),
        }),
    };
    let config = InferenceConfig {
        max_tokens: chat.max_tokens,
        temperature: chat.temperature,
        top_p: chat.top_p,
        stop_sequences: (!chat.stop.is_empty()).then(|| chat.stop.clone()),
    };
    let request = ConverseRequest {
        messages,
        system: (!chat.system.is_empty())
            .then(|| chat.system.iter().map(|t| SystemBlock { text: t.clone() }).collect()),
        inference_config: (config != InferenceConfig::default()).then_some(config),
        tool_config,
    };
    serde_json::to_vec(&request).map_err(|e| e.to_string())
}

fn write_part(part: &Part) -> Result<Option<Block>, String> {
    let empty = Block::default();
    Ok(Some(match part {
        Part::Text(text) if text.is_empty() => return Ok(None),
        Part::Text(text) => Block { text: Some(text.clone()), ..empty },
        Part::Image(Image::Base64 { media_type, data }) => {
            let format = media_type.strip_prefix("image/").unwrap_or(media_type);
            if !matches!(format, "png" | "jpeg" | "gif" | "webp") {
                return Err(format!("images of type `{media_type}` cannot be sent to Bedrock"));
            }
            Block {
                image: Some(ImageBlock { format: format.into(), source: ImageSource { bytes: data.clone() } }),
                ..empty
            }
        }
        Part::Image(Image::Url(_)) => {
            return Err("Bedrock takes images inline only: send the image as base64 data, not a URL".into())
        }
        Part::ToolCall { id, name, arguments } => Block {
            tool_use: Some(ToolUse {
                tool_use_id: id.clone(),
                name: name.clone(),
                input: serde_json::from_str::<Value>(arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({})),
            }),
            ..empty
        },
        Part::ToolResult { id, content, is_error } => Block {
            tool_result: Some(ToolResult {
                tool_use_id: id.clone(),
                content: vec![serde_json::json!({ "text": content })],
                status: is_error.then(|| "error".to_string()),
            }),
            ..empty
        },
        // Bedrock verifies reasoning it gets back: unsigned reasoning cannot go.
        Part::Thinking { signature: None, .. } => return Ok(None),
        Part::Thinking { text, signature } => Block {
            reasoning_content: Some(ReasoningContent {
                reasoning_text: Some(ReasoningText { text: text.clone(), signature: signature.clone() }),
            }),
            ..empty
        },
    }))
}

fn finish(reason: &str) -> Finish {
    match reason {
        "tool_use" => Finish::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => Finish::Length,
        "guardrail_intervened" | "content_filtered" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "content_filtered",
    }
}

fn read_usage(usage: &WireUsage) -> Usage {
    Usage::cache_apart(
        usage.input_tokens.unwrap_or(0),
        usage.output_tokens.unwrap_or(0),
        usage.cache_read_input_tokens.unwrap_or(0),
        usage.cache_write_input_tokens.unwrap_or(0),
    )
}

fn write_usage(usage: &Usage) -> WireUsage {
    let nonzero = |n: u64| (n > 0).then_some(n);
    WireUsage {
        input_tokens: Some(usage.fresh_input()),
        output_tokens: Some(usage.output),
        total_tokens: Some(usage.input + usage.output),
        cache_read_input_tokens: nonzero(usage.cached),
        cache_write_input_tokens: nonzero(usage.cache_written),
    }
}

/// Bedrock's status for each kind (its SDKs raise by the error type; HTTP clients by status).
fn error_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::TooLarge => 400,
        ErrorKind::Authentication => 401,
        ErrorKind::Permission => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::Timeout => 408,
        ErrorKind::RateLimit => 429,
        ErrorKind::Overloaded => 503,
        ErrorKind::Server => 500,
    }
}

/// The kind of an event-stream exception (`throttlingException`, ...).
fn exception_kind(kind: &str) -> ErrorKind {
    match kind {
        "throttlingException" => ErrorKind::RateLimit,
        "validationException" => ErrorKind::InvalidRequest,
        "serviceUnavailableException" => ErrorKind::Overloaded,
        "modelTimeoutException" => ErrorKind::Timeout,
        "accessDeniedException" => ErrorKind::Permission,
        _ => ErrorKind::Server,
    }
}

pub fn read_answer(status: u16, body: &[u8]) -> Result<Answer, Error> {
    if !(200..300).contains(&status) {
        let wire: ErrorAnswer = serde_json::from_slice(body).unwrap_or_default();
        let message =
            if wire.message.is_empty() { format!("The provider answered with status {status}.") } else { wire.message };
        // Bedrock refuses a bad key with 403; its other 403s are permissions.
        return Err(Error { kind: ErrorKind::of_status(status), message });
    }
    let wire: ConverseAnswer = serde_json::from_slice(body)
        .map_err(|e| Error { kind: ErrorKind::Server, message: format!("The provider's answer is unreadable: {e}") })?;
    let blocks = wire.output.message.map(|m| m.content).unwrap_or_default();
    Ok(Answer {
        id: String::new(),
        model: String::new(),
        parts: blocks.into_iter().filter_map(|b| read_block(b).ok().flatten()).collect(),
        finish: wire.stop_reason.as_deref().map(finish),
        usage: wire.usage.as_ref().map(read_usage).unwrap_or_default(),
    })
}

pub fn write_answer(answer: &Answer) -> Vec<u8> {
    let content = answer.parts.iter().filter_map(|p| write_part(p).ok().flatten()).collect();
    let wire = ConverseAnswer {
        output: WireOutput { message: Some(Message { role: "assistant".into(), content }) },
        stop_reason: Some(stop_reason(answer.finish.unwrap_or(Finish::Stop)).into()),
        usage: Some(write_usage(&answer.usage)),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

pub fn write_error(error: &Error) -> (u16, Vec<u8>) {
    let body = ErrorAnswer { message: error.message.clone() };
    (error_status(error.kind), serde_json::to_vec(&body).unwrap_or_default())
}

/// Reads `ConverseStream` events: the event type (`name`) and its JSON payload.
#[derive(Debug, Default)]
pub struct Reader {
    /// Block index of each tool call, in order (the canonical index is the position).
    tools: Vec<usize>,
}

impl StreamReader for Reader {
    fn read(&mut self, name: Option<&str>, data: &str) -> Vec<Event> {
        let name = name.unwrap_or_default();
        let event: StreamEvent = serde_json::from_str(data).unwrap_or_default();
        if name.ends_with("Exception") {
            let message = event.message.unwrap_or_else(|| format!("The provider failed ({name})."));
            return vec![Event::Error(Error { kind: exception_kind(name), message })];
        }
        let block = event.content_block_index.unwrap_or(0);
        match name {
            "messageStart" => vec![Event::Start { id: String::new(), model: String::new() }],
            "contentBlockStart" => match event.start.and_then(|s| s.tool_use) {
                Some(tool) => {
                    self.tools.push(block);
                    vec![Event::ToolStart { index: self.tools.len() - 1, id: tool.tool_use_id, name: tool.name }]
                }
                None => Vec::new(),
            },
            "contentBlockDelta" => {
                let delta = event.delta.unwrap_or_default();
                if let Some(text) = delta.text {
                    vec![Event::Text(text)]
                } else if let Some(tool) = delta.tool_use {
                    let Some(index) = self.tools.iter().position(|b| *b == block) else { return Vec::new() };
                    vec![Event::ToolArguments { index, json: tool.input }]
                } else {
                    delta.reasoning_content.and_then(|r| r.text).map(Event::Thinking).into_iter().collect()
                }
            }
            "messageStop" => event.stop_reason.as_deref().map(finish).map(Event::Finish).into_iter().collect(),
            // The last event: usage and metrics.
            "metadata" => {
                let mut events: Vec<Event> =
                    event.usage.as_ref().map(read_usage).map(Event::Usage).into_iter().collect();
                events.push(Event::End);
                events
            }
            _ => Vec::new(),
        }
    }
}

/// What the open content block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Reasoning,
    Tool(usize),
}

/// Writes `ConverseStream` events as (event type, JSON payload); the caller frames them
/// (`crate::eventstream::encode`).
#[derive(Debug, Default)]
pub struct Writer {
    started: bool,
    open: Option<(Open, usize)>,
    blocks: usize,
    /// Block index of each tool call.
    tools: Vec<usize>,
    usage: Usage,
    finish: Option<Finish>,
    done: bool,
}

fn out(name: &'static str, event: &StreamEvent) -> SseOut {
    (Some(name), serde_json::to_string(event).unwrap_or_default())
}

impl Writer {
    fn start(&mut self, sink: &mut Vec<SseOut>) {
        if !self.started {
            self.started = true;
            sink.push((Some("messageStart"), r#"{"role":"assistant"}"#.into()));
        }
    }

    fn close(&mut self, sink: &mut Vec<SseOut>) {
        if let Some((_, index)) = self.open.take() {
            sink.push(out("contentBlockStop", &StreamEvent { content_block_index: Some(index), ..Default::default() }));
        }
    }

    /// The index of the open block holding `what`, opening it (and closing another) if needed.
    fn block(&mut self, what: Open, sink: &mut Vec<SseOut>) -> usize {
        self.start(sink);
        match self.open {
            Some((open, index)) if open == what => index,
            _ => {
                self.close(sink);
                let index = self.blocks;
                self.blocks += 1;
                self.open = Some((what, index));
                index
            }
        }
    }

    fn delta(index: usize, delta: BlockDelta) -> SseOut {
        out(
            "contentBlockDelta",
            &StreamEvent { content_block_index: Some(index), delta: Some(delta), ..Default::default() },
        )
    }
}

impl StreamWriter for Writer {
    fn write(&mut self, event: &Event) -> Vec<SseOut> {
        let mut sink = Vec::new();
        match event {
            Event::Start { .. } => self.start(&mut sink),
            Event::Text(text) => {
                let index = self.block(Open::Text, &mut sink);
                sink.push(Self::delta(index, BlockDelta { text: Some(text.clone()), ..Default::default() }));
            }
            Event::Thinking(text) => {
                let index = self.block(Open::Reasoning, &mut sink);
                let reasoning = ReasoningDelta { text: Some(text.clone()), signature: None };
                sink.push(Self::delta(index, BlockDelta { reasoning_content: Some(reasoning), ..Default::default() }));
            }
            Event::ToolStart { index, id, name } => {
                let block = self.block(Open::Tool(*index), &mut sink);
                if self.tools.len() <= *index {
                    self.tools.resize(*index + 1, block);
                }
                if let Some(slot) = self.tools.get_mut(*index) {
                    *slot = block;
                }
                let tool = ToolUse { tool_use_id: id.clone(), name: name.clone(), input: Value::Null };
                let start = StreamEvent {
                    content_block_index: Some(block),
                    start: Some(BlockStart { tool_use: Some(tool) }),
                    ..Default::default()
                };
                sink.push(out("contentBlockStart", &start));
            }
            Event::ToolArguments { index, json } => {
                let Some(block) = self.tools.get(*index).copied() else { return sink };
                let tool = ToolUseDelta { input: json.clone() };
                sink.push(Self::delta(block, BlockDelta { tool_use: Some(tool), ..Default::default() }));
            }
            Event::Usage(usage) => self.usage.merge(*usage),
            Event::Finish(finish) => self.finish = Some(*finish),
            Event::Error(error) => {
                let exception = match error.kind {
                    ErrorKind::RateLimit => "throttlingException",
                    ErrorKind::InvalidRequest | ErrorKind::TooLarge => "validationException",
                    ErrorKind::Overloaded => "serviceUnavailableException",
                    ErrorKind::Timeout => "modelTimeoutException",
                    _ => "internalServerException",
                };
                let body = StreamEvent { message: Some(error.message.clone()), ..Default::default() };
                sink.push(out(exception, &body));
                self.done = true;
            }
            Event::End => sink.extend(self.finish()),
        }
        sink
    }

    fn finish(&mut self) -> Vec<SseOut> {
        let mut sink = Vec::new();
        if self.done {
            return sink;
        }
        self.done = true;
        self.start(&mut sink);
        self.close(&mut sink);
        let stop = StreamEvent {
            stop_reason: Some(stop_reason(self.finish.unwrap_or(Finish::Stop)).into()),
            ..Default::default()
        };
        sink.push(out("messageStop", &stop));
        sink.push(out("metadata", &StreamEvent { usage: Some(write_usage(&self.usage)), ..Default::default() }));
        sink
    }
}
