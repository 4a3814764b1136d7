//! Gemini `generateContent` ⇄ the canonical form, on the types of [`crate::gemini`].
//!
//! The model and streaming are in the request's path, not its body (the provider adapter
//! builds the path). Roles are `user` and `model`; tool results are `functionResponse` parts
//! of a user turn, matched to their call by function name. Gemini's function calls have no id
//! of their own, so each gets one here (`call_<n>`); Gemini 3 wants each call's
//! `thoughtSignature` back with it, so the signature travels inside that id (URL-safe, after
//! [`SIGNATURE_MARK`]) through clients that know nothing of it, and a call without one (from
//! another provider's history) is sent with Google's documented skip value. Reasoning text is
//! not sent back (Gemini keeps it in the signature). Tool parameters and JSON output use
//! Gemini's full JSON Schema members (`parametersJsonSchema`, `responseJsonSchema`); the effort
//! becomes `thinkingConfig.thinkingLevel`. Parts with no canonical form (executable code,
//! code results, non-function tools such as Google Search) cannot be translated: such a
//! request is refused.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Answer, Chat, Error, ErrorKind, Event, Finish, Image, Output, Part, Role, SseOut, Tool, ToolChoice};
use super::{StreamReader, StreamWriter, Turn, Usage};
use crate::gemini::{
    Blob, Candidate, Content, ErrorAnswer, ErrorBody, FileData, FunctionCall, FunctionCallingConfig,
    FunctionDeclaration, FunctionResponse, GenerateAnswer, GenerateRequest, GenerationConfig, ThinkingConfig,
    ToolConfig, Tools, UsageMetadata, WirePart,
};

/// Separates a tool call's id from the thought signature it carries.
pub const SIGNATURE_MARK: &str = "__thought__";
/// Google's documented value for a function call whose signature is unknown (history written by
/// another model): Gemini 3 then skips its check instead of refusing the request.
const UNSIGNED: &str = "skip_thought_signature_validator";

pub fn read_request(body: &[u8]) -> Result<Chat, String> {
    let request: GenerateRequest =
        crate::json::from_object(body).map_err(|e| format!("the body is not a generateContent request: {e}"))?;
    let mut chat = Chat { stream_usage: true, ..Chat::default() };
    if let Some(system) = request.system_instruction {
        chat.system = system.parts.into_iter().filter_map(|p| p.text).filter(|t| !t.is_empty()).collect();
    }
    // Calls without an id are answered by name, in order.
    let mut pending: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut calls = 0;
    for content in request.contents {
        let role = if content.role.as_deref() == Some("model") { Role::Assistant } else { Role::User };
        let mut parts = Vec::new();
        for part in content.parts {
            if let Some(part) = read_part(part, &mut pending, &mut calls)? {
                parts.push(part);
            }
        }
        chat.turns.push(Turn { role, parts });
    }
    for tools in request.tools.into_iter().flatten() {
        let known = tools.as_object().is_some_and(|o| o.keys().all(|k| k == "functionDeclarations"));
        if !known {
            let names: Vec<&str> =
                tools.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            return Err(format!(
                "tools other than functions (`{}`) cannot be sent to this provider",
                names.join("`, `")
            ));
        }
        let tools: Tools = serde_json::from_value(tools).map_err(|e| format!("a tool is unreadable: {e}"))?;
        for declaration in tools.function_declarations {
            let parameters = declaration
                .parameters_json_schema
                .or(declaration.parameters)
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            chat.tools.push(Tool { name: declaration.name, description: declaration.description, parameters });
        }
    }
    if let Some(config) = request.tool_config.and_then(|c| c.function_calling_config) {
        let names = config.allowed_function_names.unwrap_or_default();
        chat.tool_choice = Some(match config.mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("NONE") => ToolChoice::None,
            Some("ANY") if names.len() == 1 => ToolChoice::Tool(names.into_iter().next().unwrap_or_default()),
            Some("ANY") => ToolChoice::Required,
            _ => ToolChoice::Auto,
        });
    }
    if let Some(config) = request.generation_config {
        if config.candidate_count.is_some_and(|n| n > 1) {
            return Err("`candidateCount` above 1 cannot be sent to this provider".into());
        }
        chat.max_tokens = config.max_output_tokens;
        chat.temperature = config.temperature;
        chat.top_p = config.top_p;
        chat.stop = config.stop_sequences.unwrap_or_default();
        let schema = config.response_json_schema.or(config.response_schema);
        chat.output = match (config.response_mime_type.as_deref(), schema) {
            (_, Some(schema)) => Output::Schema { name: "output".into(), schema },
            (Some("application/json"), None) => Output::Json,
            _ => Output::Text,
        };
        chat.effort = config.thinking_config.and_then(|t| t.thinking_level).map(|l| l.to_ascii_lowercase());
    }
    Ok(chat)
}

fn read_part(
    part: WirePart,
    pending: &mut BTreeMap<String, Vec<String>>,
    calls: &mut usize,
) -> Result<Option<Part>, String> {
    if part.executable_code.is_some() || part.code_execution_result.is_some() {
        return Err("code execution parts cannot be sent to this provider".into());
    }
    if let Some(call) = part.function_call {
        let id = call.id.unwrap_or_else(|| {
            *calls += 1;
            format!("call_{}", *calls)
        });
        pending.entry(call.name.clone()).or_default().push(id.clone());
        return Ok(Some(Part::ToolCall { id, name: call.name, arguments: arguments_text(&call.args) }));
    }
    if let Some(response) = part.function_response {
        let queued = pending.get_mut(&response.name).filter(|q| !q.is_empty()).map(|q| q.remove(0));
        let id = response.id.or(queued).unwrap_or_else(|| response.name.clone());
        let is_error = response.response.get("error").is_some();
        let content = match response.response.get("output").or_else(|| response.response.get("error")) {
            Some(Value::String(text)) => text.clone(),
            Some(value) => value.to_string(),
            None => response.response.to_string(),
        };
        return Ok(Some(Part::ToolResult { id, content, is_error }));
    }
    if let Some(blob) = part.inline_data {
        return Ok(Some(Part::Image(Image::Base64 { media_type: blob.mime_type, data: blob.data })));
    }
    if let Some(file) = part.file_data {
        return Ok(Some(Part::Image(Image::Url(file.file_uri))));
    }
    Ok(match part.text {
        Some(text) if part.thought == Some(true) => Some(Part::Thinking { text, signature: part.thought_signature }),
        Some(text) if !text.is_empty() => Some(Part::Text(text)),
        _ => None,
    })
}

fn arguments_text(args: &Value) -> String {
    if args.is_null() {
        "{}".into()
    } else {
        args.to_string()
    }
}

pub fn write_request(chat: &Chat) -> Result<Vec<u8>, String> {
    let mut contents: Vec<Content> = Vec::new();
    // Each call's function name, by id, as of this turn: a tool result names its function
    // (and an id a client reused names the latest call).
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for turn in &chat.turns {
        for part in &turn.parts {
            if let Part::ToolCall { id, name, .. } = part {
                names.insert(id, name);
            }
        }
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::new();
        for part in &turn.parts {
            if let Some(part) = write_part(part, &names)? {
                parts.push(part);
            }
        }
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.append(&mut parts),
            _ => contents.push(Content { role: Some(role.into()), parts }),
        }
    }
    contents.retain(|c| !c.parts.is_empty());
    for content in contents.iter_mut().filter(|c| c.role.as_deref() == Some("model")) {
        // Gemini 3 checks the signature of each turn's first call.
        if let Some(first) = content.parts.iter_mut().find(|p| p.function_call.is_some()) {
            first.thought_signature.get_or_insert_with(|| UNSIGNED.into());
        }
    }
    let declarations: Vec<FunctionDeclaration> = chat
        .tools
        .iter()
        .map(|tool| FunctionDeclaration {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: None,
            parameters_json_schema: Some(tool.parameters.clone()),
        })
        .collect();
    let tools = (!declarations.is_empty())
        .then(|| vec![serde_json::to_value(Tools { function_declarations: declarations }).unwrap_or_default()]);
    let tool_config = chat.tool_choice.as_ref().map(|choice| {
        let (mode, names) = match choice {
            ToolChoice::Auto => ("AUTO", None),
            ToolChoice::None => ("NONE", None),
            ToolChoice::Required => ("ANY", None),
            ToolChoice::Tool(name) => ("ANY", Some(vec![name.clone()])),
        };
        ToolConfig {
            function_calling_config: Some(FunctionCallingConfig {
                mode: Some(mode.into()),
                allowed_function_names: names,
            }),
        }
    });
    let (response_mime_type, response_json_schema) = match &chat.output {
        Output::Text => (None, None),
        Output::Json => (Some("application/json".to_string()), None),
        Output::Schema { schema, .. } => (Some("application/json".to_string()), Some(schema.clone())),
    };
    let thinking_config = chat.effort.as_deref().and_then(thinking_level).map(|level| ThinkingConfig {
        include_thoughts: Some(true),
        thinking_level: Some(level.into()),
        thinking_budget: None,
    });
    let config = GenerationConfig {
        max_output_tokens: chat.max_tokens,
        temperature: chat.temperature,
        top_p: chat.top_p,
        stop_sequences: (!chat.stop.is_empty()).then(|| chat.stop.clone()),
        candidate_count: None,
        response_mime_type,
        response_schema: None,
        response_json_schema,
        thinking_config,
    };
    let request = GenerateRequest {
        contents,
        system_instruction: (!chat.system.is_empty()).then(|| Content {
            role: None,
            parts: chat.system.iter().map(|t| WirePart { text: Some(t.clone()), ..Default::default() }).collect(),
        }),
        tools,
        tool_config,
        generation_config: (config != GenerationConfig::default()).then_some(config),
    };
    serde_json::to_vec(&request).map_err(|e| e.to_string())
}

/// Gemini's thinking level for an effort a client named; `None` for one it has no level for.
fn thinking_level(effort: &str) -> Option<&'static str> {
    match effort.to_ascii_lowercase().as_str() {
        "minimal" => Some("MINIMAL"),
        "low" => Some("LOW"),
        "medium" => Some("MEDIUM"),
        "high" => Some("HIGH"),
        "xhigh" | "max" => Some("XHIGH"),
        _ => None,
    }
}

fn write_part(part: &Part, names: &BTreeMap<&str, &str>) -> Result<Option<WirePart>, String> {
    let empty = WirePart::default();
    Ok(Some(match part {
        Part::Text(text) if text.is_empty() => return Ok(None),
        Part::Text(text) => WirePart { text: Some(text.clone()), ..empty },
        Part::Image(Image::Base64 { media_type, data }) => {
            WirePart { inline_data: Some(Blob { mime_type: media_type.clone(), data: data.clone() }), ..empty }
        }
        Part::Image(Image::Url(url)) => WirePart {
            file_data: Some(FileData { mime_type: Some(media_type_of(url).into()), file_uri: url.clone() }),
            ..empty
        },
        Part::ToolCall { id, name, arguments } => WirePart {
            function_call: Some(FunctionCall {
                id: None,
                name: name.clone(),
                args: serde_json::from_str::<Value>(arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({})),
            }),
            thought_signature: signature_in(id),
            ..empty
        },
        Part::ToolResult { id, content, is_error } => {
            let Some(name) = names.get(id.as_str()) else {
                return Err(format!("the tool result for `{id}` answers no tool call in the conversation"));
            };
            // A result that is JSON goes as JSON, other text as a string.
            let value = serde_json::from_str::<Value>(content).unwrap_or_else(|_| Value::String(content.clone()));
            let key = if *is_error { "error" } else { "output" };
            WirePart {
                function_response: Some(FunctionResponse {
                    id: None,
                    name: (*name).to_string(),
                    response: serde_json::json!({ key: value }),
                }),
                ..empty
            }
        }
        // Gemini keeps its reasoning in the signatures; reasoning text is not sent back.
        Part::Thinking { .. } => return Ok(None),
    }))
}

/// An image URL's media type, from its extension (Gemini wants one with every file).
fn media_type_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}

/// The thought signature a tool call id carries, in base64 again.
fn signature_in(id: &str) -> Option<String> {
    let (_, carried) = id.split_once(SIGNATURE_MARK)?;
    let mut signature: String = carried
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while signature.len() % 4 != 0 {
        signature.push('=');
    }
    Some(signature)
}

/// The id of tool call `n` of answer `answer_id`, unique in a conversation, carrying its thought
/// signature (URL-safe, so clients whose ids allow only `[A-Za-z0-9_-]` keep it intact).
fn call_id(answer_id: &str, n: usize, call: &FunctionCall, signature: Option<&str>) -> String {
    let answer: String = answer_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect();
    let base = call.id.clone().unwrap_or_else(|| format!("call_{answer}_{n}"));
    match signature {
        Some(signature) => {
            let safe: String = signature
                .chars()
                .filter(|c| *c != '=')
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            format!("{base}{SIGNATURE_MARK}{safe}")
        }
        None => base,
    }
}

fn finish(reason: &str) -> Finish {
    match reason {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "LANGUAGE" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::ContentFilter => "SAFETY",
    }
}

fn read_usage(usage: &UsageMetadata) -> Usage {
    let reasoning = usage.thoughts_token_count.unwrap_or(0);
    Usage {
        input: usage.prompt_token_count.unwrap_or(0) + usage.tool_use_prompt_token_count.unwrap_or(0),
        output: usage.candidates_token_count.unwrap_or(0) + reasoning,
        cached: usage.cached_content_token_count.unwrap_or(0),
        cache_written: 0,
        reasoning,
    }
}

fn write_usage(usage: &Usage) -> UsageMetadata {
    let nonzero = |n: u64| (n > 0).then_some(n);
    UsageMetadata {
        prompt_token_count: Some(usage.input),
        candidates_token_count: Some(usage.output.saturating_sub(usage.reasoning)),
        cached_content_token_count: nonzero(usage.cached),
        thoughts_token_count: nonzero(usage.reasoning),
        tool_use_prompt_token_count: None,
        total_token_count: Some(usage.input + usage.output),
    }
}

fn error_kind(status: &str, code: u16) -> ErrorKind {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorKind::InvalidRequest,
        "UNAUTHENTICATED" => ErrorKind::Authentication,
        "PERMISSION_DENIED" => ErrorKind::Permission,
        "NOT_FOUND" => ErrorKind::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorKind::RateLimit,
        "UNAVAILABLE" => ErrorKind::Overloaded,
        "DEADLINE_EXCEEDED" => ErrorKind::Timeout,
        // A generic status says less than a specific HTTP code (`INTERNAL` with a 429).
        _ => ErrorKind::of_status(code),
    }
}

/// The status and Google status name a Gemini client expects for each kind.
fn error_status(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => (400, "INVALID_ARGUMENT"),
        ErrorKind::Authentication => (401, "UNAUTHENTICATED"),
        ErrorKind::Permission => (403, "PERMISSION_DENIED"),
        ErrorKind::NotFound => (404, "NOT_FOUND"),
        ErrorKind::TooLarge => (413, "INVALID_ARGUMENT"),
        ErrorKind::RateLimit => (429, "RESOURCE_EXHAUSTED"),
        ErrorKind::Overloaded => (503, "UNAVAILABLE"),
        ErrorKind::Timeout => (504, "DEADLINE_EXCEEDED"),
        ErrorKind::Server => (500, "INTERNAL"),
    }
}

fn read_error(status: u16, body: &[u8]) -> Error {
    // A failed stream request may answer with a JSON array of one error.
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let value = match value {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let wire: ErrorAnswer = serde_json::from_value(value).unwrap_or_default();
    let message = if wire.error.message.is_empty() {
        format!("The provider answered with status {status}.")
    } else {
        wire.error.message
    };
    Error { kind: error_kind(&wire.error.status, status), message }
}

fn error_body(error: &Error) -> ErrorAnswer {
    let (code, status) = error_status(error.kind);
    ErrorAnswer { error: ErrorBody { code, message: error.message.clone(), status: status.into() } }
}

/// The canonical parts of an answer's first candidate; `calls` counts tool calls so far.
fn read_candidate(answer: &GenerateAnswer, answer_id: &str, calls: &mut usize) -> Vec<Part> {
    let candidate = answer.candidates.first();
    let parts = candidate.and_then(|c| c.content.as_ref()).map(|c| c.parts.as_slice()).unwrap_or_default();
    let mut out = Vec::new();
    for part in parts {
        if let Some(call) = &part.function_call {
            let id = call_id(answer_id, *calls, call, part.thought_signature.as_deref());
            *calls += 1;
            out.push(Part::ToolCall { id, name: call.name.clone(), arguments: arguments_text(&call.args) });
        } else if let Some(text) = part.text.clone() {
            if part.thought == Some(true) {
                out.push(Part::Thinking { text, signature: part.thought_signature.clone() });
            } else if !text.is_empty() {
                out.push(Part::Text(text));
            }
        }
    }
    out
}

/// An answer's finish: tool calls, or Gemini's reason; a prompt Gemini blocked is filtered.
fn answer_finish(answer: &GenerateAnswer, called: bool) -> Option<Finish> {
    let reason = answer.candidates.first().and_then(|c| c.finish_reason.as_deref());
    match reason {
        Some(reason) if called && finish(reason) == Finish::Stop => Some(Finish::ToolCalls),
        Some(reason) => Some(finish(reason)),
        None if answer.candidates.is_empty() && answer.prompt_feedback.is_some() => Some(Finish::ContentFilter),
        None => None,
    }
}

pub fn read_answer(status: u16, body: &[u8]) -> Result<Answer, Error> {
    if !(200..300).contains(&status) {
        return Err(read_error(status, body));
    }
    let wire: GenerateAnswer = serde_json::from_slice(body)
        .map_err(|e| Error { kind: ErrorKind::Server, message: format!("The provider's answer is unreadable: {e}") })?;
    let mut calls = 0;
    let parts = read_candidate(&wire, wire.response_id.as_deref().unwrap_or_default(), &mut calls);
    Ok(Answer {
        id: wire.response_id.clone().unwrap_or_default(),
        model: wire.model_version.clone().unwrap_or_default(),
        finish: answer_finish(&wire, calls > 0),
        usage: wire.usage_metadata.as_ref().map(read_usage).unwrap_or_default(),
        parts,
    })
}

fn answer_part(part: &Part) -> Option<WirePart> {
    let empty = WirePart::default();
    Some(match part {
        Part::Text(text) => WirePart { text: Some(text.clone()), ..empty },
        Part::Thinking { text, .. } => WirePart { text: Some(text.clone()), thought: Some(true), ..empty },
        Part::ToolCall { id, name, arguments } => WirePart {
            function_call: Some(FunctionCall {
                id: Some(id.clone()),
                name: name.clone(),
                args: serde_json::from_str(arguments).unwrap_or_else(|_| serde_json::json!({})),
            }),
            ..empty
        },
        Part::Image(_) | Part::ToolResult { .. } => return None,
    })
}

fn candidate(parts: Vec<WirePart>, finish: Option<Finish>) -> Candidate {
    Candidate {
        content: Some(Content { role: Some("model".into()), parts }),
        finish_reason: finish.map(|f| finish_reason(f).to_string()),
        index: Some(0),
    }
}

pub fn write_answer(answer: &Answer) -> Vec<u8> {
    let wire = GenerateAnswer {
        candidates: vec![candidate(answer.parts.iter().filter_map(answer_part).collect(), answer.finish)],
        usage_metadata: Some(write_usage(&answer.usage)),
        model_version: Some(answer.model.clone()),
        response_id: (!answer.id.is_empty()).then(|| answer.id.clone()),
        prompt_feedback: None,
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

pub fn write_error(error: &Error) -> (u16, Vec<u8>) {
    (error_status(error.kind).0, serde_json::to_vec(&error_body(error)).unwrap_or_default())
}

/// Reads `streamGenerateContent?alt=sse` chunks: each a whole `GenerateContentResponse` with
/// the new text, whole function calls, and usage so far; the stream simply ends.
#[derive(Debug, Default)]
pub struct Reader {
    started: bool,
    /// The answer's id, from its first chunk.
    id: String,
    calls: usize,
}

impl StreamReader for Reader {
    fn read(&mut self, _name: Option<&str>, data: &str) -> Vec<Event> {
        let Ok(value) = serde_json::from_str::<Value>(data) else { return Vec::new() };
        if value.get("error").is_some() {
            return vec![Event::Error(read_error(500, data.as_bytes()))];
        }
        let Ok(chunk) = serde_json::from_value::<GenerateAnswer>(value) else { return Vec::new() };
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            self.id = chunk.response_id.clone().unwrap_or_default();
            events.push(Event::Start { id: self.id.clone(), model: chunk.model_version.clone().unwrap_or_default() });
        }
        for part in read_candidate(&chunk, &self.id, &mut self.calls) {
            match part {
                Part::Text(text) => events.push(Event::Text(text)),
                Part::Thinking { text, .. } => events.push(Event::Thinking(text)),
                Part::ToolCall { id, name, arguments } => {
                    let index = self.calls - 1;
                    events.push(Event::ToolStart { index, id, name });
                    events.push(Event::ToolArguments { index, json: arguments });
                }
                Part::Image(_) | Part::ToolResult { .. } => {}
            }
        }
        if let Some(usage) = &chunk.usage_metadata {
            events.push(Event::Usage(read_usage(usage)));
        }
        if let Some(finish) = answer_finish(&chunk, self.calls > 0) {
            events.push(Event::Finish(finish));
        }
        events
    }
}

/// Writes `streamGenerateContent?alt=sse` chunks: text as it comes, each function call whole
/// once its arguments are complete, and the finish reason with the usage in the last chunk.
#[derive(Debug, Default)]
pub struct Writer {
    id: String,
    model: String,
    /// Tool calls whose arguments are still arriving: id, name, arguments so far.
    calls: Vec<(String, String, String)>,
    usage: Usage,
    finish: Option<Finish>,
    done: bool,
}

impl Writer {
    fn chunk(&self, parts: Vec<WirePart>, last: bool) -> SseOut {
        let wire = GenerateAnswer {
            candidates: vec![candidate(parts, if last { self.finish.or(Some(Finish::Stop)) } else { None })],
            usage_metadata: last.then(|| write_usage(&self.usage)),
            model_version: Some(self.model.clone()),
            response_id: (!self.id.is_empty()).then(|| self.id.clone()),
            prompt_feedback: None,
        };
        (None, serde_json::to_string(&wire).unwrap_or_default())
    }

    fn calls(&mut self) -> Vec<WirePart> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .filter_map(|(id, name, arguments)| answer_part(&Part::ToolCall { id, name, arguments }))
            .collect()
    }
}

impl StreamWriter for Writer {
    fn write(&mut self, event: &Event) -> Vec<SseOut> {
        let mut out = Vec::new();
        match event {
            Event::Start { id, model } => {
                self.id = id.clone();
                self.model = model.clone();
            }
            Event::Text(text) | Event::Thinking(text) if !text.is_empty() => {
                let thought = matches!(event, Event::Thinking(_)).then_some(true);
                out.push(self.chunk(vec![WirePart { text: Some(text.clone()), thought, ..Default::default() }], false));
            }
            Event::Text(_) | Event::Thinking(_) => {}
            Event::ToolStart { index, id, name } => {
                if self.calls.len() <= *index {
                    self.calls.resize(*index + 1, Default::default());
                }
                if let Some(call) = self.calls.get_mut(*index) {
                    *call = (id.clone(), name.clone(), String::new());
                }
            }
            Event::ToolArguments { index, json } => {
                if let Some(call) = self.calls.get_mut(*index) {
                    call.2.push_str(json);
                }
            }
            Event::Usage(usage) => self.usage.merge(*usage),
            Event::Finish(finish) => self.finish = Some(*finish),
            Event::Error(error) => {
                out.push((None, serde_json::to_string(&error_body(error)).unwrap_or_default()));
                self.done = true;
            }
            Event::End => out.extend(self.finish()),
        }
        out
    }

    fn finish(&mut self) -> Vec<SseOut> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let calls = self.calls();
        vec![self.chunk(calls, true)]
    }
}
