//! A cached answer: what is kept of a chat completion (JSON or reassembled from its stream), and
//! how it is served again, as a JSON answer or as a replayed stream, whichever the client asks.
//!
//! Only complete answers are kept: every choice finished with `stop` or `length` (not a content
//! filter, not a cut stream), and without tool calls unless `cache_tool_calls` is set.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_shared::sse;

/// Why an answer is not stored (also a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Unreadable,
    Unfinished,
    ToolCalls,
    TooLarge,
}

impl Skip {
    pub fn name(self) -> &'static str {
        match self {
            Skip::Unreadable => "unreadable",
            Skip::Unfinished => "unfinished",
            Skip::ToolCalls => "tool_calls",
            Skip::TooLarge => "too_large",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub model: String,
    /// `{index, message, finish_reason}` per choice.
    pub choices: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

fn has_tool_calls(message: &Value) -> bool {
    message.get("tool_calls").and_then(Value::as_array).is_some_and(|calls| !calls.is_empty())
        || message.get("function_call").is_some_and(|f| !f.is_null())
}

impl Record {
    /// Checks that every choice is finished (and free of tool calls unless allowed).
    fn checked(self, tool_calls_allowed: bool) -> Result<Record, Skip> {
        if self.choices.is_empty() {
            return Err(Skip::Unreadable);
        }
        for choice in &self.choices {
            let finish = choice.get("finish_reason").and_then(Value::as_str);
            let message = choice.get("message").unwrap_or(&Value::Null);
            if !message.is_object() {
                return Err(Skip::Unreadable);
            }
            if has_tool_calls(message) {
                if !tool_calls_allowed {
                    return Err(Skip::ToolCalls);
                }
            } else if !matches!(finish, Some("stop" | "length")) {
                return Err(Skip::Unfinished);
            }
        }
        Ok(self)
    }

    /// Keeps a JSON chat completion.
    pub fn from_json(body: &[u8], tool_calls_allowed: bool) -> Result<Record, Skip> {
        let answer: Value = serde_json::from_slice(body).map_err(|_| Skip::Unreadable)?;
        if answer.get("object").and_then(Value::as_str).is_some_and(|o| o != "chat.completion") {
            return Err(Skip::Unreadable);
        }
        let choices: Vec<Value> = answer
            .get("choices")
            .and_then(Value::as_array)
            .ok_or(Skip::Unreadable)?
            .iter()
            .map(|c| {
                json!({
                    "index": c.get("index").cloned().unwrap_or(json!(0)),
                    "message": c.get("message").cloned().unwrap_or(Value::Null),
                    "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        Record {
            model: answer.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
            choices,
            usage: answer.get("usage").filter(|u| u.is_object()).cloned(),
            system_fingerprint: answer.get("system_fingerprint").and_then(Value::as_str).map(str::to_string),
        }
        .checked(tool_calls_allowed)
    }

    pub fn from_text(text: &str) -> Option<Record> {
        serde_json::from_str(text).ok()
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The answer as a `chat.completion`.
    pub fn json(&self, id: &str, created: u64) -> Vec<u8> {
        let mut answer = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": self.model,
            "choices": self.choices,
        });
        if let Value::Object(map) = &mut answer {
            self.add_optional(map);
        }
        answer.to_string().into_bytes()
    }

    /// The usage a hit reports: the stored answer's members, every count zero. Nothing was
    /// generated or billed, so a client that bills from `usage` does not bill twice; what the
    /// original answer cost is in [`Record::original_tokens`] (headers of the hit).
    pub fn served_usage(&self) -> Option<Value> {
        fn zeroed(value: &Value) -> Value {
            match value {
                Value::Number(_) => Value::from(0),
                Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), zeroed(v))).collect()),
                other => other.clone(),
            }
        }
        self.usage.as_ref().map(zeroed)
    }

    /// The stored answer's prompt and completion tokens (OpenAI or Anthropic names).
    pub fn original_tokens(&self) -> Option<(u64, u64)> {
        let usage = self.usage.as_ref()?;
        let count = |names: [&str; 2]| names.iter().find_map(|n| usage.get(*n).and_then(Value::as_u64)).unwrap_or(0);
        Some((count(["prompt_tokens", "input_tokens"]), count(["completion_tokens", "output_tokens"])))
    }

    fn add_optional(&self, map: &mut Map<String, Value>) {
        if let Some(usage) = self.served_usage() {
            map.insert("usage".to_string(), usage);
        }
        if let Some(fingerprint) = &self.system_fingerprint {
            map.insert("system_fingerprint".to_string(), Value::String(fingerprint.clone()));
        }
    }

    /// The answer as a `chat.completion.chunk` stream: per choice its role, its text (one
    /// delta), its tool calls, its finish; the usage when the client asked for it; `[DONE]`.
    pub fn sse(&self, id: &str, created: u64, include_usage: bool) -> Vec<u8> {
        let mut out = String::new();
        let mut emit = |choices: Value, usage: Option<&Value>| {
            let mut chunk = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": self.model, "choices": choices,
            });
            if let Value::Object(map) = &mut chunk {
                if let Some(fingerprint) = &self.system_fingerprint {
                    map.insert("system_fingerprint".to_string(), Value::String(fingerprint.clone()));
                }
                if let Some(usage) = usage {
                    map.insert("usage".to_string(), usage.clone());
                }
            }
            sse::write_event(&mut out, None, &chunk.to_string());
        };
        for choice in &self.choices {
            let index = choice.get("index").cloned().unwrap_or(json!(0));
            let message = choice.get("message").cloned().unwrap_or(Value::Null);
            let delta = |delta: Value, finish: Value| json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
            emit(delta(json!({"role": "assistant", "content": ""}), Value::Null), None);
            for field in ["content", "refusal", "reasoning_content"] {
                if let Some(text) = message.get(field).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    emit(delta(json!({ field: text }), Value::Null), None);
                }
            }
            if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                let indexed: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| {
                        let mut call = call.clone();
                        if let Value::Object(map) = &mut call {
                            map.insert("index".to_string(), json!(i));
                        }
                        call
                    })
                    .collect();
                emit(delta(json!({ "tool_calls": indexed }), Value::Null), None);
            }
            let finish = choice.get("finish_reason").cloned().unwrap_or(json!("stop"));
            emit(delta(json!({}), finish), None);
        }
        if include_usage {
            if let Some(usage) = self.served_usage() {
                emit(json!([]), Some(&usage));
            }
        }
        sse::write_event(&mut out, None, "[DONE]");
        out.into_bytes()
    }
}

/// One choice being reassembled from stream deltas.
#[derive(Debug, Default)]
struct Partial {
    index: u64,
    content: String,
    refusal: String,
    reasoning: String,
    /// `(id, type, name, arguments)` per tool-call index.
    tool_calls: Vec<(Value, Value, String, String)>,
    finish_reason: Option<String>,
}

/// Reassembles a streamed chat completion from its events.
#[derive(Debug)]
pub struct StreamAnswer {
    model: String,
    system_fingerprint: Option<String>,
    usage: Option<Value>,
    choices: Vec<Partial>,
    bytes: usize,
    max_bytes: usize,
    failed: Option<Skip>,
}

impl StreamAnswer {
    pub fn new(max_bytes: usize) -> Self {
        StreamAnswer {
            model: String::new(),
            system_fingerprint: None,
            usage: None,
            choices: Vec::new(),
            bytes: 0,
            max_bytes,
            failed: None,
        }
    }

    /// Feeds one event's data.
    pub fn push(&mut self, data: &str) {
        if self.failed.is_some() || data.trim() == "[DONE]" {
            return;
        }
        self.bytes += data.len();
        if self.bytes > self.max_bytes {
            self.failed = Some(Skip::TooLarge);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            self.failed = Some(Skip::Unreadable);
            return;
        };
        if chunk.get("error").is_some() {
            self.failed = Some(Skip::Unfinished);
            return;
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.model = model.to_string();
        }
        if let Some(fingerprint) = chunk.get("system_fingerprint").and_then(Value::as_str) {
            self.system_fingerprint = Some(fingerprint.to_string());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        for choice in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let position = match self.choices.iter().position(|p| p.index == index) {
                Some(position) => position,
                None => {
                    self.choices.push(Partial { index, ..Partial::default() });
                    self.choices.len() - 1
                }
            };
            let Some(partial) = self.choices.get_mut(position) else { continue };
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            let text = |field: &str| delta.get(field).and_then(Value::as_str).unwrap_or_default();
            partial.content.push_str(text("content"));
            partial.refusal.push_str(text("refusal"));
            partial.reasoning.push_str(text("reasoning_content"));
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let at = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                if at > 128 {
                    continue;
                }
                while partial.tool_calls.len() <= at {
                    partial.tool_calls.push((Value::Null, json!("function"), String::new(), String::new()));
                }
                if let Some(slot) = partial.tool_calls.get_mut(at) {
                    if let Some(id) = call.get("id").filter(|v| v.is_string()) {
                        slot.0 = id.clone();
                    }
                    if let Some(kind) = call.get("type").filter(|v| v.is_string()) {
                        slot.1 = kind.clone();
                    }
                    if let Some(f) = call.get("function") {
                        slot.2.push_str(f.get("name").and_then(Value::as_str).unwrap_or_default());
                        slot.3.push_str(f.get("arguments").and_then(Value::as_str).unwrap_or_default());
                    }
                }
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                partial.finish_reason = Some(finish.to_string());
            }
        }
    }

    /// The complete answer, or why it is not kept.
    pub fn finish(self, tool_calls_allowed: bool) -> Result<Record, Skip> {
        if let Some(skip) = self.failed {
            return Err(skip);
        }
        let mut choices = self.choices;
        choices.sort_by_key(|p| p.index);
        let choices = choices
            .into_iter()
            .map(|p| {
                let mut message = json!({"role": "assistant", "content": p.content});
                if let Value::Object(map) = &mut message {
                    if !p.refusal.is_empty() {
                        map.insert("refusal".to_string(), Value::String(p.refusal));
                    }
                    if !p.reasoning.is_empty() {
                        map.insert("reasoning_content".to_string(), Value::String(p.reasoning));
                    }
                    if !p.tool_calls.is_empty() {
                        let calls: Vec<Value> = p
                            .tool_calls
                            .into_iter()
                            .map(|(id, kind, name, arguments)| {
                                json!({"id": id, "type": kind, "function": {"name": name, "arguments": arguments}})
                            })
                            .collect();
                        map.insert("tool_calls".to_string(), Value::Array(calls));
                    }
                }
                json!({"index": p.index, "message": message, "finish_reason": p.finish_reason})
            })
            .collect();
        Record { model: self.model, choices, usage: self.usage, system_fingerprint: self.system_fingerprint }
            .checked(tool_calls_allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::sse::SseParser;

    const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14},"system_fingerprint":"fp_1"}"#;

    fn replay(record: &Record, include_usage: bool) -> StreamAnswer {
        let mut parser = SseParser::new(1 << 20);
        let mut again = StreamAnswer::new(1 << 20);
        for event in parser.push(&record.sse("chatcmpl-cache", 7, include_usage)) {
            again.push(&event.data);
        }
        again
    }

    #[test]
    fn json_answers_round_trip_as_json_and_as_a_stream() {
        let record = Record::from_json(ANSWER.as_bytes(), false).unwrap();
        let served: Value = serde_json::from_slice(&record.json("chatcmpl-cache", 7)).unwrap();
        assert_eq!(served["choices"][0]["message"]["content"], "Paris.");
        assert_eq!((served["id"].as_str(), served["created"].as_u64()), (Some("chatcmpl-cache"), Some(7)));
        // A hit reports zero usage; the original counts go to headers.
        assert_eq!(served["usage"], json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
        assert_eq!(record.original_tokens(), Some((12, 2)));
        assert_eq!(served["system_fingerprint"], "fp_1");
        assert_eq!(Record::from_text(&record.to_text()), Some(record.clone()));
        // The replayed stream reassembles into the same answer, with zero usage.
        let streamed = replay(&record, true).finish(false).unwrap();
        assert_eq!(streamed, Record { usage: record.served_usage(), ..record.clone() });
        let text = String::from_utf8(record.sse("c", 7, false)).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("usage"), "{text}");
    }

    #[test]
    fn streams_are_reassembled() {
        let mut stream = StreamAnswer::new(1 << 20);
        for data in [
            r#"{"model":"m1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"model":"m1","choices":[{"index":0,"delta":{"content":"Hel"}},{"index":1,"delta":{"content":"A"}}]}"#,
            r#"{"model":"m1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"model":"m1","choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#,
            r#"{"model":"m1","choices":[],"usage":{"total_tokens":9}}"#,
            "[DONE]",
        ] {
            stream.push(data);
        }
        let record = stream.finish(false).unwrap();
        assert_eq!(record.choices.len(), 2);
        assert_eq!(record.choices[0]["message"]["content"], "Hello");
        assert_eq!(record.choices[1]["finish_reason"], "length");
        assert_eq!(record.usage, Some(json!({"total_tokens": 9})));
    }

    #[test]
    fn tool_calls_are_kept_only_when_allowed() {
        let mut stream = StreamAnswer::new(1 << 20);
        for data in [
            r#"{"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#,
        ] {
            stream.push(data);
        }
        let record = stream.finish(true).unwrap();
        let call = &record.choices[0]["message"]["tool_calls"][0];
        assert_eq!(
            (call["id"].as_str(), call["function"]["arguments"].as_str()),
            (Some("call_1"), Some("{\"city\":\"Paris\"}"))
        );
        assert_eq!(replay(&record, false).finish(true).unwrap(), record);
        assert_eq!(record.clone().checked(false), Err(Skip::ToolCalls));
        let json_call = r#"{"model":"m","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#;
        assert_eq!(Record::from_json(json_call.as_bytes(), false), Err(Skip::ToolCalls));
        assert!(Record::from_json(json_call.as_bytes(), true).is_ok());
    }

    #[test]
    fn incomplete_or_odd_answers_are_not_kept() {
        let filtered = ANSWER.replace("\"stop\"", "\"content_filter\"");
        assert_eq!(Record::from_json(filtered.as_bytes(), false), Err(Skip::Unfinished));
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"choices\":[]}",
            b"{\"object\":\"list\",\"choices\":[{}]}",
            b"{\"choices\":[{\"message\":1}]}",
        ] {
            assert_eq!(Record::from_json(bad, false), Err(Skip::Unreadable), "{bad:?}");
        }
        let mut cut = StreamAnswer::new(1 << 20);
        cut.push(r#"{"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#);
        assert_eq!(cut.finish(false), Err(Skip::Unfinished));
        let mut broken = StreamAnswer::new(1 << 20);
        broken.push("{oops");
        assert_eq!(broken.finish(false), Err(Skip::Unreadable));
        let mut errored = StreamAnswer::new(1 << 20);
        errored.push(r#"{"error":{"message":"overloaded"}}"#);
        assert_eq!(errored.finish(false), Err(Skip::Unfinished));
        let mut big = StreamAnswer::new(10);
        big.push(r#"{"model":"m","choices":[{"index":0,"delta":{"content":"Hello there"}}]}"#);
        assert_eq!(big.finish(false), Err(Skip::TooLarge));
    }
}
