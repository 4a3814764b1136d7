//! OpenAI Responses API ⇄ the canonical form, on the Responses types of [`crate::openai`].
//!
//! Requests: `instructions` and system or developer messages are the system prompt; an
//! assistant's message, reasoning and `function_call` items make one assistant turn, and
//! `function_call_output` items with the user's next message one user turn (tool results
//! first). What lives only at OpenAI cannot go elsewhere and is refused: a conversation kept
//! there (`previous_response_id`, `conversation`), `background` runs, files by id, item
//! references and built-in tools (web search, file search, code interpreter, MCP, ...).
//! Answers: reasoning, message and `function_call` items, in order; `status: incomplete` with
//! its reason for a cut or filtered answer. Streams: the whole event sequence a client's
//! accumulator expects (`response.created`, each item added, its parts and deltas, each done
//! with its full text, `response.completed` with every item), so the writer keeps the answer's
//! items until the end: a stream costs memory for its text, as OpenAI's own event sequence
//! implies. Errors have Chat Completions' shape.

use serde_json::Value;

use super::openai_chat::{error_body, read_error};
use super::{Answer, Chat, Error, ErrorKind, Event, Finish, Image, Output, Part, Role, SseOut, Tool, ToolChoice};
use super::{StreamReader, StreamWriter, Turn, Usage};
use crate::openai::{
    CompletionTokensDetails, IncompleteDetails, PromptTokensDetails, ResponsesAnswer, ResponsesContent, ResponsesEvent,
    ResponsesFormat, ResponsesItem, ResponsesPart, ResponsesReasoning, ResponsesRequest, ResponsesText, ResponsesTool,
    ResponsesToolChoice, ResponsesUsage,
};

pub fn read_request(body: &[u8]) -> Result<Chat, String> {
    let request: ResponsesRequest =
        crate::json::from_object(body).map_err(|e| format!("the body is not a Responses request: {e}"))?;
    let kept = [("previous_response_id", &request.previous_response_id), ("conversation", &request.conversation)];
    if let Some((name, _)) = kept.iter().find(|(_, v)| v.as_ref().is_some_and(|v| !v.is_null())) {
        return Err(format!("`{name}` names state kept by OpenAI; send the whole conversation as `input`"));
    }
    if request.background.as_ref().is_some_and(|b| b.as_bool() != Some(false) && !b.is_null()) {
        return Err("`background` responses are kept by OpenAI and cannot run at this provider".into());
    }
    let mut chat = Chat {
        model: request.model,
        max_tokens: request.max_output_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        stream: request.stream.unwrap_or(false),
        // Responses streams end with their usage.
        stream_usage: true,
        user: request.user,
        effort: request.reasoning.and_then(|r| r.effort),
        ..Chat::default()
    };
    chat.system.extend(request.instructions.filter(|i| !i.is_empty()));
    match request.input {
        Value::String(text) => chat.turns.push(Turn { role: Role::User, parts: vec![Part::Text(text)] }),
        Value::Array(items) => {
            for item in items {
                let item: ResponsesItem =
                    serde_json::from_value(item).map_err(|e| format!("an input item is unreadable: {e}"))?;
                read_item(item, &mut chat)?;
            }
        }
        Value::Null => {}
        _ => return Err("`input` must be text or a list of items".into()),
    }
    for definition in request.tools.into_iter().flatten() {
        let tool: ResponsesTool =
            serde_json::from_value(definition).map_err(|e| format!("a tool is unreadable: {e}"))?;
        if tool.kind != "function" {
            return Err(format!("built-in tools (`{}`) cannot be sent to this provider", tool.kind));
        }
        let parameters = tool.parameters.unwrap_or_else(|| serde_json::json!({"type": "object"}));
        chat.tools.push(Tool { name: tool.name, description: tool.description, parameters });
    }
    chat.tool_choice = request.tool_choice.map(|choice| match choice {
        ResponsesToolChoice::Mode(mode) => match mode.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        },
        ResponsesToolChoice::Function { name } => ToolChoice::Tool(name),
    });
    chat.output = match request.text.and_then(|t| t.format) {
        Some(format) if format.kind == "json_object" => Output::Json,
        Some(format) if format.kind == "json_schema" => Output::Schema {
            name: format.name.unwrap_or_else(|| "output".into()),
            schema: format.schema.unwrap_or_else(|| serde_json::json!({"type": "object"})),
        },
        _ => Output::Text,
    };
    Ok(chat)
}

/// Adds a part to the conversation: to the last turn when it is `role`'s, else to a new one.
fn push(chat: &mut Chat, role: Role, part: Part) {
    match chat.turns.last_mut() {
        Some(turn) if turn.role == role => turn.parts.push(part),
        _ => chat.turns.push(Turn { role, parts: vec![part] }),
    }
}

fn read_item(item: ResponsesItem, chat: &mut Chat) -> Result<(), String> {
    match item.kind.as_deref().unwrap_or("message") {
        "message" => {
            let parts = match item.content {
                Some(ResponsesContent::Text(text)) => vec![Part::Text(text)],
                Some(ResponsesContent::Parts(parts)) => {
                    parts.into_iter().map(read_part).filter_map(Result::transpose).collect::<Result<_, _>>()?
                }
                None => Vec::new(),
            };
            let role = match item.role.as_deref() {
                Some("system" | "developer") => {
                    let text: Vec<String> =
                        parts.into_iter().filter_map(|p| if let Part::Text(t) = p { Some(t) } else { None }).collect();
                    chat.system.push(text.concat());
                    return Ok(());
                }
                Some("assistant") => Role::Assistant,
                _ => Role::User,
            };
            for part in parts {
                push(chat, role, part);
            }
        }
        "function_call" => push(
            chat,
            Role::Assistant,
            Part::ToolCall {
                id: item.call_id.unwrap_or_default(),
                name: item.name.unwrap_or_default(),
                arguments: item.arguments.unwrap_or_else(|| "{}".into()),
            },
        ),
        "function_call_output" => {
            let content = match item.output {
                Some(Value::String(text)) => text,
                Some(Value::Array(parts)) => parts
                    .into_iter()
                    .filter_map(|p| serde_json::from_value::<ResponsesPart>(p).ok()?.text)
                    .collect::<Vec<_>>()
                    .concat(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let result = Part::ToolResult { id: item.call_id.unwrap_or_default(), content, is_error: false };
            push(chat, Role::User, result);
        }
        "reasoning" => {
            let text: Vec<String> = item.summary.unwrap_or_default().into_iter().filter_map(|p| p.text).collect();
            push(chat, Role::Assistant, Part::Thinking { text: text.join("\n\n"), signature: None });
        }
        kind => return Err(format!("input items of type `{kind}` cannot be sent to this provider")),
    }
    Ok(())
}

fn read_part(part: ResponsesPart) -> Result<Option<Part>, String> {
    Ok(Some(match part.kind.as_str() {
        "input_text" | "output_text" | "text" => Part::Text(part.text.unwrap_or_default()),
        "refusal" => Part::Text(part.refusal.unwrap_or_default()),
        "input_image" => match (part.image_url, part.file_id) {
            (Some(url), _) => Part::Image(match url.strip_prefix("data:").and_then(|r| r.split_once(";base64,")) {
                Some((media_type, data)) => Image::Base64 { media_type: media_type.into(), data: data.into() },
                None => Image::Url(url),
            }),
            (None, _) => return Err("images uploaded to OpenAI (`file_id`) cannot be sent to this provider".into()),
        },
        kind => return Err(format!("content parts of type `{kind}` cannot be sent to this provider")),
    }))
}

pub fn write_request(chat: &Chat) -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    for turn in &chat.turns {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let mut content = Vec::new();
        let flush = |content: &mut Vec<ResponsesPart>, input: &mut Vec<ResponsesItem>| {
            if !content.is_empty() {
                input.push(ResponsesItem {
                    kind: Some("message".into()),
                    role: Some(role.into()),
                    content: Some(ResponsesContent::Parts(std::mem::take(content))),
                    ..Default::default()
                });
            }
        };
        let text_kind = if turn.role == Role::User { "input_text" } else { "output_text" };
        for part in &turn.parts {
            match part {
                Part::Text(text) => content.push(text_part(text_kind, text)),
                Part::Image(image) => content.push(ResponsesPart {
                    kind: "input_image".into(),
                    image_url: Some(match image {
                        Image::Url(url) => url.clone(),
                        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
                    }),
                    ..Default::default()
                }),
                Part::ToolCall { id, name, arguments } => {
                    flush(&mut content, &mut input);
                    input.push(ResponsesItem {
                        kind: Some("function_call".into()),
                        call_id: Some(id.clone()),
                        name: Some(name.clone()),
                        arguments: Some(arguments.clone()),
                        ..Default::default()
                    });
                }
                Part::ToolResult { id, content: result, .. } => {
                    flush(&mut content, &mut input);
                    input.push(ResponsesItem {
                        kind: Some("function_call_output".into()),
                        call_id: Some(id.clone()),
                        output: Some(Value::String(result.clone())),
                        ..Default::default()
                    });
                }
                // Reasoning goes back to OpenAI only with its encrypted content, which no other
                // schema carries.
                Part::Thinking { .. } => {}
            }
        }
        flush(&mut content, &mut input);
    }
    let tools: Vec<Value> = chat
        .tools
        .iter()
        .map(|tool| {
            let wire = ResponsesTool {
                kind: "function".into(),
                name: tool.name.clone(),
                description: tool.description.clone(),
                parameters: Some(tool.parameters.clone()),
            };
            serde_json::to_value(wire).unwrap_or_default()
        })
        .collect();
    let format = match &chat.output {
        Output::Text => None,
        Output::Json => Some(ResponsesFormat { kind: "json_object".into(), ..Default::default() }),
        Output::Schema { name, schema } => {
            Some(ResponsesFormat { kind: "json_schema".into(), name: Some(name.clone()), schema: Some(schema.clone()) })
        }
    };
    let request = ResponsesRequest {
        model: chat.model.clone(),
        instructions: (!chat.system.is_empty()).then(|| chat.system.join("\n\n")),
        input: serde_json::to_value(input).map_err(|e| e.to_string())?,
        stream: chat.stream.then_some(true),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice: chat.tool_choice.as_ref().map(|choice| match choice {
            ToolChoice::Auto => ResponsesToolChoice::Mode("auto".into()),
            ToolChoice::None => ResponsesToolChoice::Mode("none".into()),
            ToolChoice::Required => ResponsesToolChoice::Mode("required".into()),
            ToolChoice::Tool(name) => ResponsesToolChoice::Function { name: name.clone() },
        }),
        max_output_tokens: chat.max_tokens,
        temperature: chat.temperature,
        top_p: chat.top_p,
        text: format.map(|format| ResponsesText { format: Some(format) }),
        reasoning: chat.effort.clone().map(|effort| ResponsesReasoning { effort: Some(effort) }),
        user: chat.user.clone(),
        previous_response_id: None,
        conversation: None,
        background: None,
    };
    serde_json::to_vec(&request).map_err(|e| e.to_string())
}

fn text_part(kind: &str, text: &str) -> ResponsesPart {
    let annotations = (kind == "output_text").then(Vec::new);
    ResponsesPart { kind: kind.into(), text: Some(text.into()), annotations, ..Default::default() }
}

fn read_usage(usage: &ResponsesUsage) -> Usage {
    Usage {
        input: usage.input_tokens.unwrap_or(0),
        output: usage.output_tokens.unwrap_or(0),
        cached: usage.input_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
        cache_written: 0,
        reasoning: usage.output_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
    }
}

fn write_usage(usage: &Usage) -> ResponsesUsage {
    ResponsesUsage {
        input_tokens: Some(usage.input),
        output_tokens: Some(usage.output),
        total_tokens: Some(usage.input + usage.output),
        input_tokens_details: Some(PromptTokensDetails { cached_tokens: Some(usage.cached) }),
        output_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: Some(usage.reasoning) }),
    }
}

/// A Response's finish: by its status and reason, tool calls when it made some.
fn finish(answer: &ResponsesAnswer, called: bool) -> Option<Finish> {
    match answer.status.as_deref() {
        Some("incomplete") => match answer.incomplete_details.as_ref().and_then(|d| d.reason.as_deref()) {
            Some("content_filter") => Some(Finish::ContentFilter),
            _ => Some(Finish::Length),
        },
        Some("completed") if called => Some(Finish::ToolCalls),
        Some("completed") => Some(Finish::Stop),
        _ => None,
    }
}

fn read_output(items: Vec<ResponsesItem>) -> Vec<Part> {
    let mut parts = Vec::new();
    for item in items {
        match item.kind.as_deref() {
            Some("message") => {
                if let Some(ResponsesContent::Parts(content)) = item.content {
                    parts.extend(content.into_iter().filter_map(|p| p.text.or(p.refusal)).map(Part::Text));
                }
            }
            Some("function_call") => parts.push(Part::ToolCall {
                id: item.call_id.unwrap_or_default(),
                name: item.name.unwrap_or_default(),
                arguments: item.arguments.unwrap_or_else(|| "{}".into()),
            }),
            Some("reasoning") => {
                let text: Vec<String> = item.summary.unwrap_or_default().into_iter().filter_map(|p| p.text).collect();
                if !text.is_empty() {
                    parts.push(Part::Thinking { text: text.join("\n\n"), signature: None });
                }
            }
            _ => {}
        }
    }
    parts
}

pub fn read_answer(status: u16, body: &[u8]) -> Result<Answer, Error> {
    if !(200..300).contains(&status) {
        return Err(read_error(status, body));
    }
    let wire: ResponsesAnswer = serde_json::from_slice(body)
        .map_err(|e| Error { kind: ErrorKind::Server, message: format!("The provider's answer is unreadable: {e}") })?;
    let parts = read_output(wire.output.clone().unwrap_or_default());
    let called = parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    Ok(Answer {
        id: wire.id.clone().unwrap_or_default(),
        model: wire.model.clone().unwrap_or_default(),
        finish: finish(&wire, called),
        usage: wire.usage.as_ref().map(read_usage).unwrap_or_default(),
        parts,
    })
}

/// The Response the client sees: `in_progress` while streaming, then `completed` or
/// `incomplete`.
fn response(
    id: &str,
    model: &str,
    created: u64,
    output: Vec<ResponsesItem>,
    end: Option<(Finish, Usage)>,
) -> ResponsesAnswer {
    let (status, incomplete) = match end {
        None => ("in_progress", None),
        Some((Finish::Length, _)) => ("incomplete", Some("max_output_tokens")),
        Some((Finish::ContentFilter, _)) => ("incomplete", Some("content_filter")),
        Some(_) => ("completed", None),
    };
    ResponsesAnswer {
        id: Some(response_id(id)),
        object: Some("response".into()),
        created_at: Some(created),
        status: Some(status.into()),
        model: Some(model.into()),
        output: Some(output),
        usage: end.map(|(_, usage)| write_usage(&usage)),
        incomplete_details: incomplete.map(|reason| IncompleteDetails { reason: Some(reason.into()) }),
        error: None,
    }
}

fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else {
        format!("resp_{}", safe_id(id))
    }
}

/// An answer id's letters and digits (some of them), to make item ids unique across answers.
fn safe_id(id: &str) -> String {
    let safe: String = id.trim_start_matches("resp_").chars().filter(char::is_ascii_alphanumeric).take(32).collect();
    if safe.is_empty() {
        "sluice".into()
    } else {
        safe
    }
}

/// Item `index`'s id in answer `answer_id`: `msg_`, `rs_` or `fc_` as OpenAI's.
fn item_id(prefix: &str, answer_id: &str, index: usize) -> String {
    format!("{prefix}_{}_{index}", safe_id(answer_id))
}

fn message_item(id: String, text: String, done: bool) -> ResponsesItem {
    ResponsesItem {
        kind: Some("message".into()),
        id: Some(id),
        status: Some(if done { "completed" } else { "in_progress" }.into()),
        role: Some("assistant".into()),
        content: Some(ResponsesContent::Parts(if done { vec![text_part("output_text", &text)] } else { Vec::new() })),
        ..Default::default()
    }
}

fn reasoning_item(id: String, text: String, done: bool) -> ResponsesItem {
    let summary = if done { vec![text_part("summary_text", &text)] } else { Vec::new() };
    ResponsesItem { kind: Some("reasoning".into()), id: Some(id), summary: Some(summary), ..Default::default() }
}

fn call_item(id: String, call_id: String, name: String, arguments: String, done: bool) -> ResponsesItem {
    ResponsesItem {
        kind: Some("function_call".into()),
        id: Some(id),
        status: Some(if done { "completed" } else { "in_progress" }.into()),
        call_id: Some(call_id),
        name: Some(name),
        arguments: Some(arguments),
        ..Default::default()
    }
}

/// The answer's items: consecutive text parts make one message.
fn output_items(answer_id: &str, parts: &[Part]) -> Vec<ResponsesItem> {
    let mut items: Vec<ResponsesItem> = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, items: &mut Vec<ResponsesItem>| {
        if !text.is_empty() {
            let id = item_id("msg", answer_id, items.len());
            items.push(message_item(id, std::mem::take(text), true));
        }
    };
    for part in parts {
        match part {
            Part::Text(more) => text.push_str(more),
            Part::Thinking { text: thought, .. } => {
                flush(&mut text, &mut items);
                items.push(reasoning_item(item_id("rs", answer_id, items.len()), thought.clone(), true));
            }
            Part::ToolCall { id, name, arguments } => {
                flush(&mut text, &mut items);
                let item_id = item_id("fc", answer_id, items.len());
                let item = call_item(item_id, id.clone(), name.clone(), arguments.clone(), true);
                items.push(item);
            }
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    flush(&mut text, &mut items);
    items
}

pub fn write_answer(answer: &Answer, created: u64) -> Vec<u8> {
    let end = (answer.finish.unwrap_or(Finish::Stop), answer.usage);
    let wire = response(&answer.id, &answer.model, created, output_items(&answer.id, &answer.parts), Some(end));
    serde_json::to_vec(&wire).unwrap_or_default()
}

pub fn write_error(error: &Error) -> (u16, Vec<u8>) {
    super::openai_chat::write_error(error)
}

/// Reads Responses stream events.
#[derive(Debug, Default)]
pub struct Reader {
    /// Item id of each tool call, in order (the canonical index is the position).
    calls: Vec<String>,
}

impl StreamReader for Reader {
    fn read(&mut self, _name: Option<&str>, data: &str) -> Vec<Event> {
        let Ok(event) = serde_json::from_str::<ResponsesEvent>(data) else { return Vec::new() };
        match event.kind.as_str() {
            "response.created" => {
                let response = event.response.unwrap_or_default();
                vec![Event::Start { id: response.id.unwrap_or_default(), model: response.model.unwrap_or_default() }]
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                event.delta.map(Event::Text).into_iter().collect()
            }
            "response.reasoning_summary_text.delta" => event.delta.map(Event::Thinking).into_iter().collect(),
            "response.output_item.added" => match event.item {
                Some(item) if item.kind.as_deref() == Some("function_call") => {
                    self.calls.push(item.id.unwrap_or_default());
                    let index = self.calls.len() - 1;
                    let mut events = vec![Event::ToolStart {
                        index,
                        id: item.call_id.unwrap_or_default(),
                        name: item.name.unwrap_or_default(),
                    }];
                    events.extend(
                        item.arguments.filter(|a| !a.is_empty()).map(|json| Event::ToolArguments { index, json }),
                    );
                    events
                }
                _ => Vec::new(),
            },
            "response.function_call_arguments.delta" => {
                let index = self.calls.iter().position(|id| Some(id) == event.item_id.as_ref());
                match (index, event.delta) {
                    (Some(index), Some(json)) => vec![Event::ToolArguments { index, json }],
                    _ => Vec::new(),
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = event.response.unwrap_or_default();
                if let Some(error) = response.error.clone().filter(|_| event.kind == "response.failed") {
                    let message = error.message.unwrap_or_else(|| "The provider failed.".into());
                    return vec![Event::Error(Error { kind: ErrorKind::Server, message })];
                }
                let mut events = Vec::new();
                if let Some(usage) = &response.usage {
                    events.push(Event::Usage(read_usage(usage)));
                }
                events.extend(finish(&response, !self.calls.is_empty()).map(Event::Finish));
                events.push(Event::End);
                events
            }
            "error" => {
                let message = event.message.unwrap_or_else(|| "The provider failed.".into());
                vec![Event::Error(Error { kind: ErrorKind::Server, message })]
            }
            _ => Vec::new(),
        }
    }
}

/// What the open output item holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    Message {
        text: String,
    },
    Reasoning {
        text: String,
    },
    /// Tool call number n.
    Call(usize),
}

/// A tool call being streamed: its item id, call id, name, arguments so far.
#[derive(Debug, Clone, Default)]
struct Call {
    item: String,
    output_index: usize,
    id: String,
    name: String,
    arguments: String,
}

/// Writes Responses stream events.
#[derive(Debug, Default)]
pub struct Writer {
    created: u64,
    started: bool,
    id: String,
    model: String,
    sequence: u64,
    /// Finished items, for `output_item.done` indices and `response.completed`.
    items: Vec<ResponsesItem>,
    open: Option<Open>,
    calls: Vec<Call>,
    usage: Usage,
    finish: Option<Finish>,
    done: bool,
}

impl Writer {
    pub fn new(created: u64) -> Writer {
        Writer { created, ..Writer::default() }
    }

    fn emit(&mut self, out: &mut Vec<SseOut>, name: &'static str, mut event: ResponsesEvent) {
        event.kind = name.into();
        event.sequence_number = Some(self.sequence);
        self.sequence += 1;
        out.push((Some(name), serde_json::to_string(&event).unwrap_or_default()));
    }

    fn start(&mut self, out: &mut Vec<SseOut>) {
        if self.started {
            return;
        }
        self.started = true;
        for name in ["response.created", "response.in_progress"] {
            let response = response(&self.id, &self.model, self.created, Vec::new(), None);
            self.emit(out, name, ResponsesEvent { response: Some(response), ..Default::default() });
        }
    }

    /// The open item's id and index (the next index while it is open).
    fn open_id(&self, prefix: &str) -> (String, usize) {
        let index = self.items.len();
        (item_id(prefix, &self.id, index), index)
    }

    fn close(&mut self, out: &mut Vec<SseOut>) {
        let Some(open) = self.open.take() else { return };
        let item = match open {
            Open::Message { text } => {
                let (id, index) = self.open_id("msg");
                let at = |e: ResponsesEvent| ResponsesEvent {
                    item_id: Some(id.clone()),
                    output_index: Some(index),
                    content_index: Some(0),
                    ..e
                };
                self.emit(
                    out,
                    "response.output_text.done",
                    at(ResponsesEvent { text: Some(text.clone()), ..Default::default() }),
                );
                let part = Some(text_part("output_text", &text));
                self.emit(out, "response.content_part.done", at(ResponsesEvent { part, ..Default::default() }));
                message_item(id, text, true)
            }
            Open::Reasoning { text } => {
                let (id, index) = self.open_id("rs");
                let at = |e: ResponsesEvent| ResponsesEvent {
                    item_id: Some(id.clone()),
                    output_index: Some(index),
                    summary_index: Some(0),
                    ..e
                };
                let done = ResponsesEvent { text: Some(text.clone()), ..Default::default() };
                self.emit(out, "response.reasoning_summary_text.done", at(done));
                let part = Some(text_part("summary_text", &text));
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    at(ResponsesEvent { part, ..Default::default() }),
                );
                reasoning_item(id, text, true)
            }
            Open::Call(n) => {
                let call = self.calls.get(n).cloned().unwrap_or_default();
                let done = ResponsesEvent {
                    item_id: Some(call.item.clone()),
                    output_index: Some(call.output_index),
                    arguments: Some(call.arguments.clone()),
                    ..Default::default()
                };
                self.emit(out, "response.function_call_arguments.done", done);
                call_item(call.item, call.id, call.name, call.arguments, true)
            }
        };
        let index = self.items.len();
        let done = ResponsesEvent { output_index: Some(index), item: Some(item.clone()), ..Default::default() };
        self.emit(out, "response.output_item.done", done);
        self.items.push(item);
    }

    /// Opens a message or reasoning item for `text`, unless one of that kind is open.
    fn text(&mut self, out: &mut Vec<SseOut>, delta: &str, reasoning: bool) {
        self.start(out);
        let same = matches!(
            (&self.open, reasoning),
            (Some(Open::Message { .. }), false) | (Some(Open::Reasoning { .. }), true)
        );
        if !same {
            self.close(out);
            let (id, index) = self.open_id(if reasoning { "rs" } else { "msg" });
            let item = if reasoning {
                reasoning_item(id.clone(), String::new(), false)
            } else {
                message_item(id.clone(), String::new(), false)
            };
            self.emit(
                out,
                "response.output_item.added",
                ResponsesEvent { output_index: Some(index), item: Some(item), ..Default::default() },
            );
            let added = ResponsesEvent { item_id: Some(id), output_index: Some(index), ..Default::default() };
            if reasoning {
                let part = Some(text_part("summary_text", ""));
                self.emit(
                    out,
                    "response.reasoning_summary_part.added",
                    ResponsesEvent { summary_index: Some(0), part, ..added },
                );
            } else {
                let part = Some(text_part("output_text", ""));
                self.emit(out, "response.content_part.added", ResponsesEvent { content_index: Some(0), part, ..added });
            }
            self.open = Some(if reasoning {
                Open::Reasoning { text: String::new() }
            } else {
                Open::Message { text: String::new() }
            });
        }
        let (id, index) = self.open_id(if reasoning { "rs" } else { "msg" });
        if let Some(Open::Message { text } | Open::Reasoning { text }) = &mut self.open {
            text.push_str(delta);
        }
        let at = ResponsesEvent {
            item_id: Some(id),
            output_index: Some(index),
            delta: Some(delta.into()),
            ..Default::default()
        };
        if reasoning {
            self.emit(out, "response.reasoning_summary_text.delta", ResponsesEvent { summary_index: Some(0), ..at });
        } else {
            self.emit(out, "response.output_text.delta", ResponsesEvent { content_index: Some(0), ..at });
        }
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
            Event::Text(text) if !text.is_empty() => self.text(&mut out, text, false),
            Event::Thinking(text) if !text.is_empty() => self.text(&mut out, text, true),
            Event::Text(_) | Event::Thinking(_) => {}
            Event::ToolStart { index, id, name } => {
                self.start(&mut out);
                self.close(&mut out);
                let (item, output_index) = self.open_id("fc");
                if self.calls.len() <= *index {
                    self.calls.resize(*index + 1, Call::default());
                }
                let call = Call {
                    item: item.clone(),
                    output_index,
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                };
                if let Some(slot) = self.calls.get_mut(*index) {
                    *slot = call;
                }
                let added = call_item(item, id.clone(), name.clone(), String::new(), false);
                self.emit(
                    &mut out,
                    "response.output_item.added",
                    ResponsesEvent { output_index: Some(output_index), item: Some(added), ..Default::default() },
                );
                self.open = Some(Open::Call(*index));
            }
            Event::ToolArguments { index, json } => {
                let Some(call) = self.calls.get_mut(*index) else { return out };
                call.arguments.push_str(json);
                let delta = ResponsesEvent {
                    item_id: Some(call.item.clone()),
                    output_index: Some(call.output_index),
                    delta: Some(json.clone()),
                    ..Default::default()
                };
                self.emit(&mut out, "response.function_call_arguments.delta", delta);
            }
            Event::Usage(usage) => self.usage.merge(*usage),
            Event::Finish(finish) => self.finish = Some(*finish),
            Event::Error(error) => {
                let body = error_body(error).error;
                let failed = ResponsesEvent { message: body.message, code: body.kind, ..Default::default() };
                self.emit(&mut out, "error", failed);
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
        let finish = self.finish.unwrap_or(Finish::Stop);
        let items = std::mem::take(&mut self.items);
        let response = response(&self.id, &self.model, self.created, items, Some((finish, self.usage)));
        let name =
            if response.status.as_deref() == Some("incomplete") { "response.incomplete" } else { "response.completed" };
        self.emit(&mut out, name, ResponsesEvent { response: Some(response), ..Default::default() });
        out
    }
}
