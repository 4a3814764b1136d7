//! OpenAI Chat Completions ⇄ Anthropic Messages: the request translated for an Anthropic
//! target, its answer (JSON or SSE) translated back, so the client sees OpenAI whatever served it.
//!
//! Mapped: system and developer messages, text and image parts (data URLs and URLs), tools,
//! tool choice, tool calls and tool results, stop sequences, temperature, top_p, the user id,
//! max tokens (a default when the client gives none), usage (cache reads included) and stop
//! reasons. Fields Anthropic has no equivalent for (`n`, `logprobs`, `presence_penalty`, ...)
//! are dropped.

use serde_json::{json, Map, Value};

/// The Anthropic request for an OpenAI chat request sent to `model`.
pub fn request(openai: &Value, model: &str, default_max_tokens: u64) -> Result<Value, String> {
    let object = openai.as_object().ok_or("the request is not a JSON object")?;
    let messages = object.get("messages").and_then(Value::as_array).ok_or("`messages` must be an array")?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        match role {
            "system" | "developer" => system.push(text_of(message.get("content"))),
            "tool" => {
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default(),
                    "content": text_of(message.get("content")),
                });
                push_turn(&mut turns, "user", vec![result]);
            }
            "assistant" => {
                let mut blocks = content_blocks(message.get("content"));
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let function = call.get("function").cloned().unwrap_or_default();
                    let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
                        "input": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({})),
                    }));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            _ => push_turn(&mut turns, "user", content_blocks(message.get("content"))),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let max_tokens = object
        .get("max_completion_tokens")
        .or_else(|| object.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    let messages: Vec<Value> =
        turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    out.insert("messages".into(), Value::Array(messages));
    for field in ["temperature", "top_p", "stream"] {
        if let Some(value) = object.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), value.clone());
        }
    }
    match object.get("stop") {
        Some(Value::String(stop)) => {
            out.insert("stop_sequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) => {
            out.insert("stop_sequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if let Some(user) = object.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = object.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|tool| {
                let function = tool.get("function")?;
                Some(json!({
                    "name": function.get("name")?,
                    "description": function.get("description").cloned().unwrap_or(json!("")),
                    "input_schema": function.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                }))
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = object.get("tool_choice") {
        let mapped = match choice {
            Value::String(s) if s == "required" => Some(json!({"type": "any"})),
            Value::String(s) if s == "none" => Some(json!({"type": "none"})),
            Value::String(_) => Some(json!({"type": "auto"})),
            Value::Object(o) => {
                o.get("function").and_then(|f| f.get("name")).map(|name| json!({"type": "tool", "name": name}))
            }
            _ => None,
        };
        if let Some(mapped) = mapped {
            out.insert("tool_choice".into(), mapped);
        }
    }
    Ok(Value::Object(out))
}

/// Anthropic wants alternating roles: consecutive messages of one role are merged.
fn push_turn(turns: &mut Vec<(String, Vec<Value>)>, role: &str, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some((last, content)) if last == role => content.extend(blocks),
        _ => turns.push((role.to_string(), blocks)),
    }
}

/// The text of an OpenAI content (a string, or the text parts of a list).
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

/// OpenAI content as Anthropic content blocks.
fn content_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(parts)) => parts.iter().filter_map(part_block).collect(),
        _ => Vec::new(),
    }
}

fn part_block(part: &Value) -> Option<Value> {
    match part.get("type").and_then(Value::as_str)? {
        "text" => Some(json!({"type": "text", "text": part.get("text")?.as_str()?})),
        "image_url" => {
            let url = part.get("image_url")?.get("url")?.as_str()?;
            let source = match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
                Some((media_type, data)) => json!({"type": "base64", "media_type": media_type, "data": data}),
                None => json!({"type": "url", "url": url}),
            };
            Some(json!({"type": "image", "source": source}))
        }
        _ => None,
    }
}

fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        Some("end_turn" | "stop_sequence" | "pause_turn") => json!("stop"),
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
        _ => Value::Null,
    }
}

/// OpenAI usage from Anthropic usage: cache reads and writes are prompt tokens too.
fn usage(anthropic: Option<&Value>) -> Value {
    let n = |field: &str| anthropic.and_then(|u| u.get(field)).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + cached + n("cache_creation_input_tokens");
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// An Anthropic JSON answer (or error) as OpenAI's.
pub fn answer(anthropic: &Value, created: u64) -> Value {
    if anthropic.get("type").and_then(Value::as_str) == Some("error") {
        let error = anthropic.get("error").cloned().unwrap_or_default();
        return json!({"error": {
            "message": error.get("message").cloned().unwrap_or(json!("upstream error")),
            "type": error.get("type").cloned().unwrap_or(json!("api_error")),
            "param": null,
            "code": null,
        }});
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in anthropic.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) };
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), content);
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    json!({
        "id": anthropic.get("id").cloned().unwrap_or(json!("chatcmpl-sluice")),
        "object": "chat.completion",
        "created": created,
        "model": anthropic.get("model").cloned().unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(anthropic.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage(anthropic.get("usage")),
    })
}

/// Turns an Anthropic event stream into OpenAI chat completion chunks, event by event.
#[derive(Debug, Default)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    /// Send a final usage chunk (the client asked with `stream_options.include_usage`).
    include_usage: bool,
    /// Anthropic content block index to OpenAI tool call index.
    tool_calls: Vec<(u64, usize)>,
    usage: Value,
    done: bool,
}

impl StreamTranslator {
    pub fn new(created: u64, include_usage: bool) -> Self {
        StreamTranslator { created, include_usage, usage: json!({}), ..Default::default() }
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
        .to_string()
    }

    /// The SSE `data:` payloads (without the prefix) for one Anthropic event's data.
    pub fn event(&mut self, data: &str) -> Vec<String> {
        let Ok(event) = serde_json::from_str::<Value>(data) else { return Vec::new() };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "message_start" => {
                let message = event.get("message").cloned().unwrap_or_default();
                self.id = message.get("id").and_then(Value::as_str).unwrap_or("chatcmpl-sluice").to_string();
                self.model = message.get("model").and_then(Value::as_str).unwrap_or_default().to_string();
                self.merge_usage(message.get("usage"));
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            "content_block_start" => {
                let block = event.get("content_block").cloned().unwrap_or_default();
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Vec::new();
                }
                let index = self.tool_calls.len();
                self.tool_calls.push((event.get("index").and_then(Value::as_u64).unwrap_or(0), index));
                vec![self.chunk(
                    json!({"tool_calls": [{"index": index, "id": block.get("id"), "type": "function",
                                            "function": {"name": block.get("name"), "arguments": ""}}]}),
                    Value::Null,
                )]
            }
            "content_block_delta" => {
                let delta = event.get("delta").cloned().unwrap_or_default();
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => vec![self.chunk(json!({"content": delta.get("text")}), Value::Null)],
                    Some("input_json_delta") => {
                        let block = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let index = self.tool_calls.iter().find(|(b, _)| *b == block).map_or(0, |(_, i)| *i);
                        vec![self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json")}}]}),
                            Value::Null,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                self.merge_usage(event.get("usage"));
                let stop = event.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                vec![self.chunk(json!({}), finish_reason(stop))]
            }
            "message_stop" => self.finish(),
            "error" => {
                let error = event.get("error").cloned().unwrap_or_default();
                vec![json!({"error": {"message": error.get("message"), "type": error.get("type")}}).to_string()]
            }
            _ => Vec::new(),
        }
    }

    /// The end of the stream: the usage chunk (when asked for) and `[DONE]`, once.
    pub fn finish(&mut self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if self.include_usage {
            out.push(
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.model, "choices": [], "usage": usage(Some(&self.usage))})
                .to_string(),
            );
        }
        out.push("[DONE]".to_string());
        out
    }

    /// Anthropic sends input counts at the start and output counts at the end.
    fn merge_usage(&mut self, usage: Option<&Value>) {
        let (Some(Value::Object(new)), Value::Object(total)) = (usage, &mut self.usage) else { return };
        for (key, value) in new {
            if value.as_u64().is_some_and(|v| v > 0) || !total.contains_key(key) {
                total.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_every_field() {
        let openai = json!({
            "model": "chat-claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": "END",
            "temperature": 0.2,
            "max_completion_tokens": 300,
            "stream": true,
            "user": "u-1",
            "n": 1
        });
        let out = request(&openai, "claude-3-5-haiku-latest", 4096).unwrap();
        assert_eq!(out["model"], "claude-3-5-haiku-latest");
        assert_eq!(out["system"], "Be brief.\n\nUse metric units.");
        assert_eq!(out["max_tokens"], 300);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["tool_choice"], json!({"type": "any"}));
        assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(out["metadata"]["user_id"], "u-1");
        assert_eq!(out["stream"], true);
        assert!(out.get("n").is_none());
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(
            messages.iter().map(|m| m["role"].as_str().unwrap()).collect::<Vec<_>>(),
            ["user", "assistant", "user"]
        );
        assert_eq!(
            messages[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBOR"})
        );
        assert_eq!(messages[0]["content"][2]["source"], json!({"type": "url", "url": "https://x/cat.jpg"}));
        assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Paris"}));
        // The tool result and the next user text share one user turn.
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][1]["text"], "Thanks");
    }

    #[test]
    fn defaults_and_bad_requests() {
        let out = request(&json!({"messages": [{"role": "user", "content": "hi"}]}), "m", 1024).unwrap();
        assert_eq!(out["max_tokens"], 1024);
        assert!(out.get("system").is_none());
        assert!(request(&json!([1]), "m", 1).is_err());
        assert!(request(&json!({"messages": "hi"}), "m", 1).is_err());
    }

    #[test]
    fn answers_come_back_as_openai() {
        let anthropic = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku",
            "content": [{"type": "text", "text": "Calling."}, {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 5}
        });
        let out = answer(&anthropic, 9);
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], "Calling.");
        assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 25, "completion_tokens": 7, "total_tokens": 32,
                                        "prompt_tokens_details": {"cached_tokens": 5}})
        );
        let error =
            answer(&json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), 0);
        assert_eq!(error["error"]["type"], "overloaded_error");
        assert_eq!(error["error"]["message"], "Overloaded");
    }

    #[test]
    fn streams_come_back_as_openai_chunks() {
        let mut t = StreamTranslator::new(9, true);
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "tu_1", "name": "f"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}}),
            json!({"type": "message_stop"}),
        ];
        let out: Vec<String> = events.iter().flat_map(|e| t.event(&e.to_string())).collect();
        let chunks: Vec<Value> =
            out.iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Hello");
        assert_eq!(chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"a\":");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
        let last = chunks.last().unwrap();
        assert_eq!(last["usage"]["prompt_tokens"], 12);
        assert_eq!(last["usage"]["completion_tokens"], 6);
        assert_eq!(out.last().map(String::as_str), Some("[DONE]"));
        assert!(t.finish().is_empty(), "[DONE] only once");
        assert!(t.event("not json").is_empty());
    }
}
