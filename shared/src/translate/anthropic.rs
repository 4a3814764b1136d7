//! Anthropic Messages ⇄ the canonical form, on the types of [`crate::anthropic`].
//!
//! Requests: consecutive turns of one role are merged (Anthropic wants them alternating), a
//! tool result comes first in its user turn, `max_tokens` is required (a default fills it),
//! reasoning goes back only with Anthropic's signature, JSON output becomes
//! `output_config.format` (any JSON object: the schema `{"type": "object"}`) and the effort
//! `output_config.effort`. The current Messages API takes no `temperature` or `top_p`: they are
//! read from older clients and sent to providers that take them, never to Anthropic. Server
//! tools (`web_search_*`, ...) and content blocks with no canonical part (documents) cannot be
//! translated: such a request is refused, not sent without them.

use serde_json::Value;

use super::Output;
use super::{Answer, Chat, Error, ErrorKind, Event, Finish, Image, Part, Role, SseOut, Tool, ToolChoice, Turn};
use super::{StreamReader, StreamWriter, Usage};
use crate::anthropic::{
    Block, Blocks, ErrorAnswer, ErrorBody, ImageSource, Message, MessagesAnswer, MessagesRequest, Metadata,
    OutputConfig, OutputFormat, StreamDelta, StreamEvent, Tool as WireTool, ToolChoice as WireToolChoice,
    Usage as WireUsage,
};

pub fn read_request(body: &[u8]) -> Result<Chat, String> {
    let request: MessagesRequest =
        crate::json::from_object(body).map_err(|e| format!("the body is not a Messages request: {e}"))?;
    let mut chat = Chat {
        model: request.model,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        stop: request.stop_sequences.unwrap_or_default(),
        stream: request.stream.unwrap_or(false),
        // Anthropic streams always end with their usage.
        stream_usage: true,
        user: request.metadata.and_then(|m| m.user_id),
        ..Chat::default()
    };
    if let Some(config) = request.output_config {
        chat.effort = config.effort;
        if let Some(format) = config.format.filter(|f| f.kind == "json_schema") {
            chat.output = Output::Schema { name: "output".into(), schema: format.schema };
        }
    }
    if let Some(system) = request.system {
        chat.system = system.texts().into_iter().filter(|t| !t.is_empty()).collect();
    }
    for message in request.messages {
        let role = if message.role == "assistant" { Role::Assistant } else { Role::User };
        let parts = match message.content {
            Blocks::Text(text) => vec![Part::Text(text)],
            Blocks::List(blocks) => {
                blocks.into_iter().map(read_block).filter_map(Result::transpose).collect::<Result<_, _>>()?
            }
            Blocks::Other(_) => Vec::new(),
        };
        chat.turns.push(Turn { role, parts });
    }
    for definition in request.tools.into_iter().flatten() {
        let kind = definition.get("type").and_then(Value::as_str).unwrap_or("custom").to_string();
        if kind != "custom" {
            return Err(format!("server tools (`{kind}`) cannot be sent to this provider"));
        }
        let tool: WireTool = serde_json::from_value(definition).map_err(|e| format!("a tool is unreadable: {e}"))?;
        chat.tools.push(Tool { name: tool.name, description: tool.description, parameters: tool.input_schema });
    }
    chat.tool_choice = request.tool_choice.map(|choice| match choice.kind.as_str() {
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Tool(choice.name.unwrap_or_default()),
        _ => ToolChoice::Auto,
    });
    Ok(chat)
}

/// One content block; `None` for blocks that carry nothing to translate (empty, redacted).
fn read_block(block: Block) -> Result<Option<Part>, String> {
    Ok(Some(match block.kind.as_str() {
        "text" => Part::Text(block.text.unwrap_or_default()),
        "image" => {
            let source = block.source.ok_or("an image block has no source")?;
            match (source.kind.as_str(), source.url, source.media_type, source.data) {
                ("url", Some(url), _, _) => Part::Image(Image::Url(url)),
                ("base64", _, Some(media_type), Some(data)) => Part::Image(Image::Base64 { media_type, data }),
                (kind, ..) => return Err(format!("image sources of type `{kind}` cannot be sent to this provider")),
            }
        }
        "tool_use" => Part::ToolCall {
            id: block.id.unwrap_or_default(),
            name: block.name.unwrap_or_default(),
            arguments: block.input.map(|i| i.to_string()).unwrap_or_else(|| "{}".into()),
        },
        "tool_result" => Part::ToolResult {
            id: block.tool_use_id.unwrap_or_default(),
            content: result_text(block.content),
            is_error: block.is_error.unwrap_or(false),
        },
        "thinking" => Part::Thinking { text: block.thinking.unwrap_or_default(), signature: block.signature },
        "redacted_thinking" => return Ok(None),
        kind => return Err(format!("content blocks of type `{kind}` cannot be sent to this provider")),
    }))
}

/// A tool result's text: a string, or its text blocks.
fn result_text(content: Option<Value>) -> String {
    match content {
        Some(Value::String(text)) => text,
        Some(other) => serde_json::from_value::<Blocks>(other).map(|b| b.texts().concat()).unwrap_or_default(),
        None => String::new(),
    }
}

pub fn write_request(chat: &Chat, default_max_tokens: u64) -> Result<Vec<u8>, String> {
    let mut messages: Vec<Message> = Vec::new();
    for turn in &chat.turns {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let mut blocks: Vec<Block> = turn.parts.iter().filter_map(write_part).collect();
        match messages.last_mut() {
            Some(Message { role: last, content: Blocks::List(earlier) }) if last == role => earlier.append(&mut blocks),
            _ => messages.push(Message { role: role.into(), content: Blocks::List(blocks) }),
        }
    }
    for message in &mut messages {
        if let Blocks::List(blocks) = &mut message.content {
            // Tool results first in their turn, as Anthropic requires (the order among them kept).
            blocks.sort_by_key(|b| b.kind != "tool_result");
        }
    }
    messages.retain(|m| !matches!(&m.content, Blocks::List(b) if b.is_empty()));
    let tools: Vec<Value> = chat
        .tools
        .iter()
        .map(|tool| {
            let wire = WireTool {
                name: tool.name.clone(),
                description: tool.description.clone(),
                input_schema: tool.parameters.clone(),
            };
            serde_json::to_value(wire).unwrap_or_default()
        })
        .collect();
    let request = MessagesRequest {
        model: chat.model.clone(),
        system: (!chat.system.is_empty()).then(|| Blocks::Text(chat.system.join("\n\n"))),
        messages,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice: chat.tool_choice.as_ref().map(|choice| {
            let (kind, name) = match choice {
                ToolChoice::Auto => ("auto", None),
                ToolChoice::None => ("none", None),
                ToolChoice::Required => ("any", None),
                ToolChoice::Tool(name) => ("tool", Some(name.clone())),
            };
            WireToolChoice { kind: kind.into(), name }
        }),
        max_tokens: Some(chat.max_tokens.unwrap_or(default_max_tokens)),
        stream: chat.stream.then_some(true),
        temperature: None,
        top_p: None,
        stop_sequences: (!chat.stop.is_empty()).then(|| chat.stop.clone()),
        metadata: chat.user.clone().map(|user| Metadata { user_id: Some(user) }),
        thinking: None,
        output_config: output_config(chat),
    };
    serde_json::to_vec(&request).map_err(|e| e.to_string())
}

fn output_config(chat: &Chat) -> Option<OutputConfig> {
    let format = match &chat.output {
        Output::Text => None,
        Output::Json => Some(serde_json::json!({"type": "object"})),
        Output::Schema { schema, .. } => Some(schema.clone()),
    };
    let format = format.map(|schema| OutputFormat { kind: "json_schema".into(), schema });
    (format.is_some() || chat.effort.is_some()).then(|| OutputConfig { effort: chat.effort.clone(), format })
}

fn write_part(part: &Part) -> Option<Block> {
    let block = |kind: &str| Block { kind: kind.into(), ..Default::default() };
    Some(match part {
        // Anthropic refuses empty text blocks.
        Part::Text(text) if text.is_empty() => return None,
        Part::Text(text) => Block { text: Some(text.clone()), ..block("text") },
        Part::Image(image) => {
            let source = match image {
                Image::Url(url) => ImageSource { kind: "url".into(), url: Some(url.clone()), ..Default::default() },
                Image::Base64 { media_type, data } => ImageSource {
                    kind: "base64".into(),
                    media_type: Some(media_type.clone()),
                    data: Some(data.clone()),
                    url: None,
                },
            };
            Block { source: Some(source), ..block("image") }
        }
        Part::ToolCall { id, name, arguments } => Block {
            id: Some(id.clone()),
            name: Some(name.clone()),
            // Arguments that are not a JSON object (a model's broken JSON) become `{}`.
            input: Some(
                serde_json::from_str::<Value>(arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({})),
            ),
            ..block("tool_use")
        },
        Part::ToolResult { id, content, is_error } => Block {
            tool_use_id: Some(id.clone()),
            content: Some(Value::String(content.clone())),
            is_error: is_error.then_some(true),
            ..block("tool_result")
        },
        // Anthropic verifies reasoning it gets back: unsigned reasoning cannot go.
        Part::Thinking { signature: None, .. } => return None,
        Part::Thinking { text, signature } => {
            Block { thinking: Some(text.clone()), signature: signature.clone(), ..block("thinking") }
        }
    })
}

fn finish(reason: Option<&str>) -> Option<Finish> {
    match reason? {
        "end_turn" | "stop_sequence" | "pause_turn" => Some(Finish::Stop),
        "max_tokens" | "model_context_window_exceeded" => Some(Finish::Length),
        "tool_use" => Some(Finish::ToolCalls),
        "refusal" => Some(Finish::ContentFilter),
        _ => None,
    }
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    }
}

/// Anthropic's `input_tokens` leaves out cache reads and writes; the canonical input has them.
fn read_usage(usage: &WireUsage) -> Usage {
    Usage::cache_apart(
        usage.input_tokens.unwrap_or(0),
        usage.output_tokens.unwrap_or(0),
        usage.cache_read_input_tokens.unwrap_or(0),
        usage.cache_creation_input_tokens.unwrap_or(0),
    )
}

fn write_usage(usage: &Usage) -> WireUsage {
    WireUsage {
        input_tokens: Some(usage.fresh_input()),
        output_tokens: Some(usage.output),
        cache_read_input_tokens: Some(usage.cached),
        cache_creation_input_tokens: Some(usage.cache_written),
    }
}

fn error_kind(kind: &str, status: u16) -> ErrorKind {
    match kind {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::TooLarge,
        "rate_limit_error" => ErrorKind::RateLimit,
        "overloaded_error" => ErrorKind::Overloaded,
        "timeout_error" => ErrorKind::Timeout,
        // A generic type says less than a specific status (a proxy's 429 with `api_error`).
        _ => ErrorKind::of_status(status),
    }
}

/// The error type and status an Anthropic client expects for each kind.
fn error_type(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => (400, "invalid_request_error"),
        ErrorKind::Authentication => (401, "authentication_error"),
        ErrorKind::Permission => (403, "permission_error"),
        ErrorKind::NotFound => (404, "not_found_error"),
        ErrorKind::TooLarge => (413, "request_too_large"),
        ErrorKind::RateLimit => (429, "rate_limit_error"),
        ErrorKind::Overloaded => (529, "overloaded_error"),
        ErrorKind::Timeout => (504, "timeout_error"),
        ErrorKind::Server => (500, "api_error"),
    }
}

fn error_body(error: &Error) -> ErrorAnswer {
    let (_, kind) = error_type(error.kind);
    ErrorAnswer { kind: "error".into(), error: ErrorBody { kind: kind.into(), message: error.message.clone() } }
}

pub fn read_answer(status: u16, body: &[u8]) -> Result<Answer, Error> {
    if !(200..300).contains(&status) {
        let wire: ErrorAnswer = serde_json::from_slice(body).unwrap_or_default();
        let message = if wire.error.message.is_empty() {
            format!("The provider answered with status {status}.")
        } else {
            wire.error.message
        };
        return Err(Error { kind: error_kind(&wire.error.kind, status), message });
    }
    let wire: MessagesAnswer = serde_json::from_slice(body)
        .map_err(|e| Error { kind: ErrorKind::Server, message: format!("The provider's answer is unreadable: {e}") })?;
    let parts = wire.content.into_iter().filter_map(|block| read_block(block).ok().flatten()).collect();
    Ok(Answer {
        id: wire.id.unwrap_or_default(),
        model: wire.model.unwrap_or_default(),
        parts,
        finish: finish(wire.stop_reason.as_deref()),
        usage: wire.usage.as_ref().map(read_usage).unwrap_or_default(),
    })
}

pub fn write_answer(answer: &Answer) -> Vec<u8> {
    let wire = MessagesAnswer {
        id: Some(message_id(&answer.id)),
        kind: Some("message".into()),
        role: Some("assistant".into()),
        model: Some(answer.model.clone()),
        content: answer.parts.iter().filter_map(write_part).collect(),
        stop_reason: answer.finish.map(|f| stop_reason(f).to_string()),
        stop_sequence: None,
        usage: Some(write_usage(&answer.usage)),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

fn message_id(id: &str) -> String {
    if id.is_empty() {
        "msg_sluice".into()
    } else {
        id.to_string()
    }
}

pub fn write_error(error: &Error) -> (u16, Vec<u8>) {
    (error_type(error.kind).0, serde_json::to_vec(&error_body(error)).unwrap_or_default())
}

/// Reads Messages stream events.
#[derive(Debug, Default)]
pub struct Reader {
    /// Anthropic block index of each tool call, in order (the canonical index is the position).
    tools: Vec<usize>,
}

impl StreamReader for Reader {
    fn read(&mut self, _name: Option<&str>, data: &str) -> Vec<Event> {
        let Ok(event) = serde_json::from_str::<StreamEvent>(data) else { return Vec::new() };
        let index = event.index.unwrap_or(0);
        match event.kind.as_str() {
            "message_start" => {
                let message = event.message.unwrap_or_default();
                let mut events =
                    vec![Event::Start { id: message.id.unwrap_or_default(), model: message.model.unwrap_or_default() }];
                if let Some(usage) = &message.usage {
                    events.push(Event::Usage(read_usage(usage)));
                }
                events
            }
            "content_block_start" => match event.content_block {
                Some(Block { kind, id, name, .. }) if kind == "tool_use" => {
                    self.tools.push(index);
                    vec![Event::ToolStart {
                        index: self.tools.len() - 1,
                        id: id.unwrap_or_default(),
                        name: name.unwrap_or_default(),
                    }]
                }
                Some(Block { kind, text: Some(text), .. }) if kind == "text" && !text.is_empty() => {
                    vec![Event::Text(text)]
                }
                _ => Vec::new(),
            },
            "content_block_delta" => {
                let delta = event.delta.unwrap_or_default();
                match delta.kind.as_deref() {
                    Some("text_delta") => delta.text.map(Event::Text).into_iter().collect(),
                    Some("thinking_delta") => delta.thinking.map(Event::Thinking).into_iter().collect(),
                    Some("input_json_delta") => {
                        let Some(tool) = self.tools.iter().position(|b| *b == index) else { return Vec::new() };
                        delta.partial_json.map(|json| Event::ToolArguments { index: tool, json }).into_iter().collect()
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                let mut events = Vec::new();
                if let Some(usage) = &event.usage {
                    events.push(Event::Usage(read_usage(usage)));
                }
                if let Some(finish) = finish(event.delta.and_then(|d| d.stop_reason).as_deref()) {
                    events.push(Event::Finish(finish));
                }
                events
            }
            "message_stop" => vec![Event::End],
            "error" => {
                let error = event.error.unwrap_or_default();
                let message = if error.message.is_empty() { "The provider failed.".into() } else { error.message };
                vec![Event::Error(Error { kind: error_kind(&error.kind, 500), message })]
            }
            _ => Vec::new(),
        }
    }
}

/// What the open content block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// Tool call number n.
    Tool(usize),
}

/// Writes Messages stream events: `message_start`, content blocks opened and closed one at a
/// time, `message_delta` with the stop reason and usage, `message_stop`.
#[derive(Debug, Default)]
pub struct Writer {
    started: bool,
    id: String,
    model: String,
    /// The open block and its index.
    open: Option<(Open, usize)>,
    blocks: usize,
    /// Block index of each tool call.
    tools: Vec<usize>,
    usage: Usage,
    finish: Option<Finish>,
    done: bool,
}

fn sse(name: &'static str, event: &StreamEvent) -> SseOut {
    (Some(name), serde_json::to_string(event).unwrap_or_default())
}

fn event(kind: &str) -> StreamEvent {
    StreamEvent { kind: kind.into(), ..Default::default() }
}

impl Writer {
    fn start(&mut self, out: &mut Vec<SseOut>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = MessagesAnswer {
            id: Some(message_id(&self.id)),
            kind: Some("message".into()),
            role: Some("assistant".into()),
            model: Some(self.model.clone()),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: Some(write_usage(&self.usage)),
        };
        out.push(sse("message_start", &StreamEvent { message: Some(message), ..event("message_start") }));
    }

    fn close(&mut self, out: &mut Vec<SseOut>) {
        if let Some((_, index)) = self.open.take() {
            out.push(sse("content_block_stop", &StreamEvent { index: Some(index), ..event("content_block_stop") }));
        }
    }

    /// The index of an open block holding `what`, opening it (and closing another) if needed.
    fn block(&mut self, what: Open, first: Block, out: &mut Vec<SseOut>) -> usize {
        if let Some((open, index)) = self.open {
            if open == what {
                return index;
            }
        }
        self.start(out);
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((what, index));
        let start = StreamEvent { index: Some(index), content_block: Some(first), ..event("content_block_start") };
        out.push(sse("content_block_start", &start));
        index
    }

    fn delta(index: usize, delta: StreamDelta) -> SseOut {
        sse(
            "content_block_delta",
            &StreamEvent { index: Some(index), delta: Some(delta), ..event("content_block_delta") },
        )
    }
}

impl StreamWriter for Writer {
    fn write(&mut self, event: &Event) -> Vec<SseOut> {
        let mut out = Vec::new();
        match event {
            Event::Start { id, model } => {
                self.id = id.clone();
                self.model = model.clone();
                self.start(&mut out);
            }
            Event::Text(text) => {
                let first = Block { kind: "text".into(), text: Some(String::new()), ..Default::default() };
                let index = self.block(Open::Text, first, &mut out);
                let delta =
                    StreamDelta { kind: Some("text_delta".into()), text: Some(text.clone()), ..Default::default() };
                out.push(Self::delta(index, delta));
            }
            Event::Thinking(text) => {
                let first = Block { kind: "thinking".into(), thinking: Some(String::new()), ..Default::default() };
                let index = self.block(Open::Thinking, first, &mut out);
                let delta = StreamDelta {
                    kind: Some("thinking_delta".into()),
                    thinking: Some(text.clone()),
                    ..Default::default()
                };
                out.push(Self::delta(index, delta));
            }
            Event::ToolStart { index, id, name } => {
                let first = Block {
                    kind: "tool_use".into(),
                    id: Some(id.clone()),
                    name: Some(name.clone()),
                    input: Some(serde_json::json!({})),
                    ..Default::default()
                };
                let block = self.block(Open::Tool(*index), first, &mut out);
                if self.tools.len() <= *index {
                    self.tools.resize(*index + 1, block);
                }
                if let Some(slot) = self.tools.get_mut(*index) {
                    *slot = block;
                }
            }
            Event::ToolArguments { index, json } => {
                // Arguments of an earlier call (interleaved calls) go to that call's block:
                // clients find blocks by index.
                let Some(block) = self.tools.get(*index).copied() else { return out };
                let delta = StreamDelta {
                    kind: Some("input_json_delta".into()),
                    partial_json: Some(json.clone()),
                    ..Default::default()
                };
                out.push(Self::delta(block, delta));
            }
            Event::Usage(usage) => self.usage.merge(*usage),
            Event::Finish(finish) => self.finish = Some(*finish),
            Event::Error(error) => {
                let body = error_body(error);
                let wire = StreamEvent { error: Some(body.error), ..self::event("error") };
                out.push(sse("error", &wire));
                self.done = true;
            }
            Event::End => out.extend(self.finish()),
        }
        out
    }

    fn finish(&mut self) -> Vec<SseOut> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.done = true;
        self.start(&mut out);
        self.close(&mut out);
        let delta = StreamDelta { stop_reason: self.finish.map(|f| stop_reason(f).to_string()), ..Default::default() };
        let usage = write_usage(&self.usage);
        out.push(sse(
            "message_delta",
            &StreamEvent { delta: Some(delta), usage: Some(usage), ..event("message_delta") },
        ));
        out.push(sse("message_stop", &event("message_stop")));
        out
    }
}
