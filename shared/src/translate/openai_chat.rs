//! OpenAI Chat Completions ⇄ the canonical form, on the types of [`crate::openai`].
//!
//! Requests: `system` and `developer` messages are instructions; `tool` messages are tool
//! results; `reasoning_content` (vLLM, DeepSeek) is reasoning. Tool definitions must be
//! functions. Written requests use `max_completion_tokens` (OpenAI's reasoning models refuse
//! `max_tokens`) and, when streaming, always ask for usage, so every stream can be metered.

use serde_json::Value;

use super::{Answer, Chat, Error, ErrorKind, Event, Finish, Image, Output, Part, Role, SseOut, Tool, ToolChoice, Turn};
use super::{StreamReader, StreamWriter, Usage};
use crate::openai::{
    ChatCompletionRequest, ChatMessage, Choice, ChunkChoice, CompletionAnswer, CompletionChunk,
    CompletionTokensDetails, Content, ContentPart, Delta, ErrorAnswer, ErrorBody, FunctionCall, FunctionDefinition,
    FunctionName, FunctionTool, ImageUrl, JsonSchema, NamedFunction, PromptTokensDetails, ResponseFormat, Stop,
    StreamOptions, ToolCall, Usage as WireUsage,
};

pub fn read_request(body: &[u8]) -> Result<Chat, String> {
    let request: ChatCompletionRequest =
        crate::json::from_object(body).map_err(|e| format!("the body is not a chat completions request: {e}"))?;
    let mut chat = Chat {
        model: request.model,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        temperature: request.temperature,
        top_p: request.top_p,
        stop: match request.stop {
            Some(Stop::One(stop)) => vec![stop],
            Some(Stop::Many(stops)) => stops,
            None => Vec::new(),
        },
        stream: request.stream.unwrap_or(false),
        stream_usage: request.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        user: request.user,
        output: match request.response_format {
            Some(ResponseFormat { kind, .. }) if kind == "json_object" => Output::Json,
            Some(ResponseFormat { kind, json_schema: Some(s) }) if kind == "json_schema" => {
                Output::Schema { name: s.name, schema: s.schema.unwrap_or(Value::Null) }
            }
            _ => Output::Text,
        },
        effort: request.reasoning_effort,
        ..Chat::default()
    };
    for message in request.messages {
        read_message(message, &mut chat);
    }
    let definitions = request.tools.into_iter().flatten().chain(request.functions.into_iter().flatten().map(|f| {
        // Legacy `functions` are tools without the wrapper.
        serde_json::json!({"type": "function", "function": f})
    }));
    for definition in definitions {
        let tool: FunctionTool =
            serde_json::from_value(definition).map_err(|e| format!("a tool is unreadable: {e}"))?;
        if tool.kind != "function" {
            return Err(format!("tools of type `{}` cannot be sent to this provider", tool.kind));
        }
        let f = tool.function;
        chat.tools.push(Tool {
            name: f.name,
            description: f.description,
            parameters: f.parameters.unwrap_or_else(|| serde_json::json!({"type": "object"})),
        });
    }
    chat.tool_choice = request.tool_choice.map(|choice| match choice {
        crate::openai::ToolChoice::Mode(mode) => match mode.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        },
        crate::openai::ToolChoice::Function(named) => ToolChoice::Tool(named.function.name),
    });
    Ok(chat)
}

fn read_message(message: ChatMessage, chat: &mut Chat) {
    match message.role.as_str() {
        "system" | "developer" => chat.system.push(message.content.texts().concat()),
        "tool" | "function" => {
            let id = message.tool_call_id.or(message.name).unwrap_or_default();
            let part = Part::ToolResult { id, content: message.content.texts().concat(), is_error: false };
            chat.turns.push(Turn { role: Role::User, parts: vec![part] });
        }
        "assistant" => {
            let mut parts = Vec::new();
            if let Some(text) = message.reasoning_content.filter(|t| !t.is_empty()) {
                parts.push(Part::Thinking { text, signature: None });
            }
            parts.extend(content_parts(message.content));
            for call in message.tool_calls {
                parts.push(Part::ToolCall {
                    id: call.id.unwrap_or_default(),
                    name: call.function.name.unwrap_or_default(),
                    arguments: call.function.arguments.unwrap_or_else(|| "{}".into()),
                });
            }
            chat.turns.push(Turn { role: Role::Assistant, parts });
        }
        _ => chat.turns.push(Turn { role: Role::User, parts: content_parts(message.content) }),
    }
}

fn content_parts(content: Content) -> Vec<Part> {
    match content {
        Content::Text(text) if !text.is_empty() => vec![Part::Text(text)],
        Content::Parts(parts) => parts.into_iter().filter_map(content_part).collect(),
        _ => Vec::new(),
    }
}

fn content_part(part: ContentPart) -> Option<Part> {
    match part.kind.as_str() {
        "text" => part.text.map(Part::Text),
        "image_url" => {
            let url = part.image_url?.url;
            let image = match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
                Some((media_type, data)) => Image::Base64 { media_type: media_type.into(), data: data.into() },
                None => Image::Url(url),
            };
            Some(Part::Image(image))
        }
        _ => None,
    }
}

pub fn write_request(chat: &Chat) -> Result<Vec<u8>, String> {
    let mut messages: Vec<ChatMessage> = chat
        .system
        .iter()
        .map(|text| ChatMessage { role: "system".into(), content: Content::Text(text.clone()), ..Default::default() })
        .collect();
    for turn in &chat.turns {
        write_turn(turn, &mut messages);
    }
    let tools: Vec<Value> = chat
        .tools
        .iter()
        .map(|tool| {
            let function = FunctionDefinition {
                name: tool.name.clone(),
                description: tool.description.clone(),
                parameters: Some(tool.parameters.clone()),
            };
            serde_json::to_value(FunctionTool { kind: "function".into(), function }).unwrap_or_default()
        })
        .collect();
    let request = ChatCompletionRequest {
        model: chat.model.clone(),
        messages,
        stream: chat.stream.then_some(true),
        // Every stream is metered: ask for usage whatever the client asked.
        stream_options: chat.stream.then_some(StreamOptions { include_usage: Some(true) }),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice: chat.tool_choice.as_ref().map(|choice| match choice {
            ToolChoice::Auto => crate::openai::ToolChoice::Mode("auto".into()),
            ToolChoice::None => crate::openai::ToolChoice::Mode("none".into()),
            ToolChoice::Required => crate::openai::ToolChoice::Mode("required".into()),
            ToolChoice::Tool(name) => crate::openai::ToolChoice::Function(NamedFunction {
                kind: "function".into(),
                function: FunctionName { name: name.clone() },
            }),
        }),
        max_completion_tokens: chat.max_tokens,
        temperature: chat.temperature,
        top_p: chat.top_p,
        stop: (!chat.stop.is_empty()).then(|| Stop::Many(chat.stop.clone())),
        user: chat.user.clone(),
        response_format: match &chat.output {
            Output::Text => None,
            Output::Json => Some(ResponseFormat { kind: "json_object".into(), json_schema: None }),
            Output::Schema { name, schema } => Some(ResponseFormat {
                kind: "json_schema".into(),
                json_schema: Some(JsonSchema { name: name.clone(), schema: Some(schema.clone()), strict: None }),
            }),
        },
        reasoning_effort: chat.effort.clone(),
        ..Default::default()
    };
    serde_json::to_vec(&request).map_err(|e| e.to_string())
}

fn write_turn(turn: &Turn, messages: &mut Vec<ChatMessage>) {
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    for part in &turn.parts {
        match part {
            Part::Text(text) => {
                parts.push(ContentPart { kind: "text".into(), text: Some(text.clone()), ..Default::default() })
            }
            Part::Image(image) => {
                let url = match image {
                    Image::Url(url) => url.clone(),
                    Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
                };
                parts.push(ContentPart {
                    kind: "image_url".into(),
                    image_url: Some(ImageUrl { url, detail: None }),
                    ..Default::default()
                });
            }
            Part::ToolCall { id, name, arguments } => tool_calls.push(ToolCall {
                id: Some(id.clone()),
                kind: Some("function".into()),
                function: FunctionCall { name: Some(name.clone()), arguments: Some(arguments.clone()) },
                ..Default::default()
            }),
            // Each result is its own message, in the order the results came.
            Part::ToolResult { id, content, .. } => messages.push(ChatMessage {
                role: "tool".into(),
                content: Content::Text(content.clone()),
                tool_call_id: Some(id.clone()),
                ..Default::default()
            }),
            // Chat Completions takes no reasoning back.
            Part::Thinking { .. } => {}
        }
    }
    if parts.is_empty() && tool_calls.is_empty() {
        return;
    }
    let role = match turn.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let content = match parts.as_slice() {
        [] => Content::Other(Value::Null),
        [ContentPart { kind, text: Some(text), .. }] if kind == "text" => Content::Text(text.clone()),
        _ => Content::Parts(parts),
    };
    messages.push(ChatMessage { role: role.into(), content, tool_calls, ..Default::default() });
}

fn finish(reason: Option<&str>) -> Option<Finish> {
    match reason? {
        "stop" => Some(Finish::Stop),
        "length" => Some(Finish::Length),
        "tool_calls" | "function_call" => Some(Finish::ToolCalls),
        "content_filter" => Some(Finish::ContentFilter),
        _ => None,
    }
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
    }
}

fn read_usage(usage: &WireUsage) -> Usage {
    Usage {
        input: usage.prompt_tokens.unwrap_or(0),
        output: usage.completion_tokens.unwrap_or(0),
        cached: usage.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
        cache_written: 0,
        reasoning: usage.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
    }
}

fn write_usage(usage: &Usage) -> WireUsage {
    WireUsage {
        prompt_tokens: Some(usage.input),
        completion_tokens: Some(usage.output),
        total_tokens: Some(usage.input + usage.output),
        prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: Some(usage.cached) }),
        completion_tokens_details: (usage.reasoning > 0)
            .then_some(CompletionTokensDetails { reasoning_tokens: Some(usage.reasoning) }),
    }
}

pub(super) fn read_error(status: u16, body: &[u8]) -> Error {
    let wire: ErrorAnswer = serde_json::from_slice(body).unwrap_or_default();
    let kind = match wire.error.kind.as_deref() {
        Some("invalid_request_error") if status == 413 => ErrorKind::TooLarge,
        Some("invalid_request_error") => ErrorKind::InvalidRequest,
        Some("authentication_error") => ErrorKind::Authentication,
        Some("permission_error") => ErrorKind::Permission,
        Some("not_found_error") => ErrorKind::NotFound,
        Some("rate_limit_error") => ErrorKind::RateLimit,
        _ => ErrorKind::of_status(status),
    };
    let message = wire.error.message.unwrap_or_else(|| format!("The provider answered with status {status}."));
    Error { kind, message }
}

pub fn read_answer(status: u16, body: &[u8]) -> Result<Answer, Error> {
    if !(200..300).contains(&status) {
        return Err(read_error(status, body));
    }
    let wire: CompletionAnswer = serde_json::from_slice(body)
        .map_err(|e| Error { kind: ErrorKind::Server, message: format!("The provider's answer is unreadable: {e}") })?;
    let mut answer = Answer {
        id: wire.id.unwrap_or_default(),
        model: wire.model.unwrap_or_default(),
        usage: wire.usage.as_ref().map(read_usage).unwrap_or_default(),
        ..Answer::default()
    };
    if let Some(choice) = wire.choices.into_iter().next() {
        answer.finish = finish(choice.finish_reason.as_deref());
        if let Some(message) = choice.message {
            if let Some(text) = message.reasoning_content.filter(|t| !t.is_empty()) {
                answer.parts.push(Part::Thinking { text, signature: None });
            }
            let text = message.content.texts().concat();
            if !text.is_empty() {
                answer.parts.push(Part::Text(text));
            }
            if let Some(refusal) = message.refusal.filter(|t| !t.is_empty()) {
                answer.parts.push(Part::Text(refusal));
            }
            for call in message.tool_calls {
                answer.parts.push(Part::ToolCall {
                    id: call.id.unwrap_or_default(),
                    name: call.function.name.unwrap_or_default(),
                    arguments: call.function.arguments.unwrap_or_else(|| "{}".into()),
                });
            }
        }
    }
    Ok(answer)
}

pub fn write_answer(answer: &Answer, created: u64) -> Vec<u8> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for part in &answer.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::Thinking { text: t, .. } => reasoning.push_str(t),
            Part::ToolCall { id, name, arguments } => tool_calls.push(ToolCall {
                id: Some(id.clone()),
                kind: Some("function".into()),
                function: FunctionCall { name: Some(name.clone()), arguments: Some(arguments.clone()) },
                ..Default::default()
            }),
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    let content =
        if text.is_empty() && !tool_calls.is_empty() { Content::Other(Value::Null) } else { Content::Text(text) };
    let message = ChatMessage {
        role: "assistant".into(),
        content,
        tool_calls,
        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        ..Default::default()
    };
    let wire = CompletionAnswer {
        id: Some(non_empty(&answer.id, "chatcmpl-sluice")),
        object: Some("chat.completion".into()),
        created: Some(created),
        model: Some(answer.model.clone()),
        choices: vec![Choice {
            index: Some(0),
            message: Some(message),
            text: None,
            finish_reason: answer.finish.map(|f| finish_reason(f).to_string()),
        }],
        usage: Some(write_usage(&answer.usage)),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

fn non_empty(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value.to_string()
    }
}

/// The error type and status an OpenAI client expects for each kind (its SDK raises by status).
fn error_type(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => (400, "invalid_request_error"),
        ErrorKind::Authentication => (401, "authentication_error"),
        ErrorKind::Permission => (403, "permission_error"),
        ErrorKind::NotFound => (404, "not_found_error"),
        ErrorKind::TooLarge => (413, "invalid_request_error"),
        ErrorKind::RateLimit => (429, "rate_limit_error"),
        ErrorKind::Overloaded => (503, "server_error"),
        ErrorKind::Timeout => (504, "server_error"),
        ErrorKind::Server => (500, "server_error"),
    }
}

pub(super) fn error_body(error: &Error) -> ErrorAnswer {
    let (_, kind) = error_type(error.kind);
    ErrorAnswer {
        error: ErrorBody { message: Some(error.message.clone()), kind: Some(kind.into()), param: None, code: None },
    }
}

pub fn write_error(error: &Error) -> (u16, Vec<u8>) {
    (error_type(error.kind).0, serde_json::to_vec(&error_body(error)).unwrap_or_default())
}

/// Reads `chat.completion.chunk` events.
#[derive(Debug, Default)]
pub struct Reader {
    started: bool,
}

impl StreamReader for Reader {
    fn read(&mut self, _name: Option<&str>, data: &str) -> Vec<Event> {
        if data.trim() == "[DONE]" {
            return vec![Event::End];
        }
        let Ok(value) = serde_json::from_str::<Value>(data) else { return Vec::new() };
        if value.get("error").is_some() {
            let error = read_error(500, data.as_bytes());
            return vec![Event::Error(error)];
        }
        let Ok(chunk) = serde_json::from_value::<CompletionChunk>(value) else { return Vec::new() };
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            events.push(Event::Start { id: chunk.id.unwrap_or_default(), model: chunk.model.unwrap_or_default() });
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.reasoning_content.filter(|t| !t.is_empty()) {
                    events.push(Event::Thinking(text));
                }
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    events.push(Event::Text(text));
                }
                if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                    events.push(Event::Text(text));
                }
                for call in delta.tool_calls {
                    let index = call.index.unwrap_or(0) as usize;
                    if let Some(id) = call.id {
                        let name = call.function.name.clone().unwrap_or_default();
                        events.push(Event::ToolStart { index, id, name });
                    }
                    if let Some(json) = call.function.arguments.filter(|a| !a.is_empty()) {
                        events.push(Event::ToolArguments { index, json });
                    }
                }
            }
            if let Some(finish) = finish(choice.finish_reason.as_deref()) {
                events.push(Event::Finish(finish));
            }
        }
        if let Some(usage) = &chunk.usage {
            events.push(Event::Usage(read_usage(usage)));
        }
        events
    }
}

/// Writes `chat.completion.chunk` events, a usage chunk when the client asked for one, and
/// `[DONE]`.
#[derive(Debug, Default)]
pub struct Writer {
    id: String,
    model: String,
    created: u64,
    /// The client asked for usage (`stream_options.include_usage`).
    usage_chunk: bool,
    usage: Usage,
    done: bool,
}

impl Writer {
    pub fn new(created: u64, usage_chunk: bool) -> Self {
        Writer { created, usage_chunk, id: "chatcmpl-sluice".into(), ..Default::default() }
    }

    fn chunk(&self, delta: Delta, finish: Option<Finish>) -> SseOut {
        let chunk = CompletionChunk {
            id: Some(self.id.clone()),
            object: Some("chat.completion.chunk".into()),
            created: Some(self.created),
            model: Some(self.model.clone()),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Some(delta),
                text: None,
                finish_reason: finish.map(|f| finish_reason(f).to_string()),
            }],
            usage: None,
        };
        (None, serde_json::to_string(&chunk).unwrap_or_default())
    }
}

impl StreamWriter for Writer {
    fn write(&mut self, event: &Event) -> Vec<SseOut> {
        let delta = match event {
            Event::Start { id, model } => {
                if !id.is_empty() {
                    self.id = id.clone();
                }
                self.model = model.clone();
                Delta { role: Some("assistant".into()), content: Some(String::new()), ..Default::default() }
            }
            Event::Text(text) => Delta { content: Some(text.clone()), ..Default::default() },
            Event::Thinking(text) => Delta { reasoning_content: Some(text.clone()), ..Default::default() },
            Event::ToolStart { index, id, name } => Delta {
                tool_calls: vec![ToolCall {
                    index: Some(*index as u32),
                    id: Some(id.clone()),
                    kind: Some("function".into()),
                    function: FunctionCall { name: Some(name.clone()), arguments: Some(String::new()) },
                }],
                ..Default::default()
            },
            Event::ToolArguments { index, json } => Delta {
                tool_calls: vec![ToolCall {
                    index: Some(*index as u32),
                    function: FunctionCall { name: None, arguments: Some(json.clone()) },
                    ..Default::default()
                }],
                ..Default::default()
            },
            Event::Usage(usage) => {
                self.usage.merge(*usage);
                return Vec::new();
            }
            Event::Finish(finish) => return vec![self.chunk(Delta::default(), Some(*finish))],
            Event::Error(error) => {
                return vec![(None, serde_json::to_string(&error_body(error)).unwrap_or_default())];
            }
            Event::End => return self.finish(),
        };
        vec![self.chunk(delta, None)]
    }

    fn finish(&mut self) -> Vec<SseOut> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if self.usage_chunk {
            let chunk = CompletionChunk {
                id: Some(self.id.clone()),
                object: Some("chat.completion.chunk".into()),
                created: Some(self.created),
                model: Some(self.model.clone()),
                choices: Vec::new(),
                usage: Some(write_usage(&self.usage)),
            };
            out.push((None, serde_json::to_string(&chunk).unwrap_or_default()));
        }
        out.push((None, "[DONE]".into()));
        out
    }
}
