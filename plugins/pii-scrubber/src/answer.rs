//! The answer side: restoring placeholders, output scanning and the response-format guard, for
//! JSON answers (whole) and SSE streams (event by event).
//!
//! Streams: OpenAI chat chunks (each choice's content and tool-call arguments), Anthropic events
//! (each content block's text or tool input) and Responses API output text are handled as text
//! channels ([`TextStream`]), so a placeholder split across events is restored. Text held back
//! is released with the choice's finishing chunk (chat), or in a delta event inserted before the
//! block's `content_block_stop` (Anthropic) or before `response.output_text.done` /
//! `response.completed` (Responses). Gemini chunks are text channels per candidate (answer text
//! and thoughts apart): what is held is released into the chunk that carries the candidate's
//! `finishReason`, or in a chunk of its own when the stream ends without one. Other event shapes
//! get their complete placeholders restored event by event. Tool arguments that arrive as JSON
//! objects (Gemini's `args`, Anthropic's `input`) have every string in them restored.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::FormatAction;
use crate::scrub::Tally;
use crate::text_stream::{restore, Answering, TextStream};

/// A text channel of a streamed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Channel {
    Content(u64),
    Tool(u64, u64),
    Block(u64),
    /// A Responses API output text: (output index, content index).
    Output(u64, u64),
    /// A Gemini candidate's text (`thought: false`) or thoughts (`true`).
    Candidate(u64, bool),
}

/// Gemini's finish reason for an answer withheld by the gateway (a safety stop, as Gemini's own).
const GEMINI_WITHHELD: &str = "SAFETY";

/// One SSE event out: its `event:` name, if any, and its data.
pub type Event = (Option<String>, String);

#[derive(Debug, Default)]
pub struct Answer {
    channels: BTreeMap<Channel, TextStream>,
    /// The request asked for JSON, and what to do when the answer is not.
    format: Option<FormatAction>,
    /// The answer was not JSON although the request asked for it.
    pub format_violation: bool,
    /// Output scanning blocked the answer.
    pub blocked: bool,
    /// The last OpenAI chunk, to shape an inserted one like it.
    template: Option<Value>,
}

fn is_json(text: &str) -> bool {
    let t = text.trim();
    let t = t.strip_prefix("```json").and_then(|t| t.strip_suffix("```")).unwrap_or(t);
    serde_json::from_str::<Value>(t).is_ok()
}

impl Answer {
    /// `format`: the action when the request asked for JSON (`None`: it did not).
    pub fn new(format: Option<FormatAction>) -> Answer {
        Answer { format: format.filter(|f| *f != FormatAction::Off), ..Answer::default() }
    }

    fn channel(&mut self, channel: Channel) -> &mut TextStream {
        let reject = self.format == Some(FormatAction::Reject);
        let checked = self.format.is_some();
        let content = matches!(channel, Channel::Content(_));
        self.channels.entry(channel).or_insert_with(|| TextStream::new(reject && content, checked && content))
    }

    fn any_blocked(&self) -> bool {
        self.blocked || self.channels.values().any(|c| c.blocked)
    }

    /// A whole JSON answer; `None` when nothing changed.
    pub fn json(&mut self, body: &[u8], a: &Answering<'_>, tally: &mut Tally) -> Option<Vec<u8>> {
        let mut value: Value = serde_json::from_slice(body).ok()?;
        let mut changed = false;
        let mut texts = Vec::new();
        walk_texts(&mut value, &mut |text: &mut String, is_message_content| {
            let mut stream = TextStream::default();
            let out = stream.push(text, true, a, tally);
            if stream.blocked {
                self.blocked = true;
            }
            if is_message_content {
                texts.push(out.clone());
            }
            if out != *text {
                *text = out;
                changed = true;
            }
        });
        if value.get("candidates").is_some() {
            texts = gemini_texts(&value);
        }
        if self.format.is_some() && texts.iter().any(|t| !is_json(t)) {
            self.format_violation = true;
        }
        if self.blocked || (self.format_violation && self.format == Some(FormatAction::Reject)) {
            withhold(&mut value);
            changed = true;
        }
        changed.then(|| serde_json::to_vec(&value).ok()).flatten()
    }

    /// One SSE event in; the events to send instead.
    pub fn event(&mut self, name: Option<&str>, data: &str, a: &Answering<'_>, tally: &mut Tally) -> Vec<Event> {
        let own = |data: String| (name.map(str::to_string), data);
        if data.trim() == "[DONE]" {
            let mut out = self.flush_openai(a, tally);
            out.push(own(data.to_string()));
            return out;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(data) else { return vec![own(data.to_string())] };
        if value.get("choices").is_some() {
            self.openai_chunk(&mut value, a, tally);
            self.template = Some(value.clone());
            return vec![own(value.to_string())];
        }
        if value.get("candidates").is_some() {
            self.gemini_chunk(&mut value, a, tally);
            return vec![own(value.to_string())];
        }
        match value.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                let blocked_before = self.any_blocked();
                if let Some(Value::String(text)) =
                    value.get_mut("delta").and_then(|d| d.get_mut("text").or(None)).or(None)
                {
                    *text = self.channel(Channel::Block(index)).push(text, false, a, tally);
                } else if let Some(Value::String(text)) = value.pointer_mut("/delta/partial_json") {
                    *text = self.channel(Channel::Block(index)).push(text, false, a, tally);
                }
                if blocked_before || self.any_blocked() {
                    self.blocked = true;
                }
                vec![own(value.to_string())]
            }
            Some("content_block_stop") => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                let mut out = Vec::new();
                if let Some(stream) = self.channels.get_mut(&Channel::Block(index)) {
                    let rest = stream.push("", true, a, tally);
                    if !rest.is_empty() {
                        let delta = json!({"type": "content_block_delta", "index": index,
                                           "delta": {"type": "text_delta", "text": rest}});
                        out.push((Some("content_block_delta".to_string()), delta.to_string()));
                    }
                }
                out.push(own(data.to_string()));
                out
            }
            Some("response.output_text.delta") => {
                let at = |k: &str| value.get(k).and_then(Value::as_u64).unwrap_or(0);
                let channel = Channel::Output(at("output_index"), at("content_index"));
                if let Some(Value::String(text)) = value.get_mut("delta") {
                    *text = self.channel(channel).push(text, false, a, tally);
                }
                vec![own(value.to_string())]
            }
            // The end of an output text, or of the whole response: what is held is released
            // in a delta event just before it.
            Some(kind @ ("response.output_text.done" | "response.completed")) => {
                let done = kind == "response.output_text.done";
                let at = |k: &str| value.get(k).and_then(Value::as_u64).unwrap_or(0);
                let only = Channel::Output(at("output_index"), at("content_index"));
                let open: Vec<Channel> = self
                    .channels
                    .keys()
                    .copied()
                    .filter(|c| matches!(c, Channel::Output(..)) && (!done || *c == only))
                    .collect();
                let mut out = Vec::new();
                for channel in open {
                    let rest = self.channel(channel).push("", true, a, tally);
                    if let (false, Channel::Output(o, c)) = (rest.is_empty(), channel) {
                        let delta = json!({"type": "response.output_text.delta", "output_index": o,
                                           "content_index": c, "delta": rest});
                        out.push((Some("response.output_text.delta".to_string()), delta.to_string()));
                    }
                }
                if a.restore && !a.vault.is_empty() {
                    walk_texts(&mut value, &mut |text: &mut String, _| *text = restore(text, a.vault));
                }
                out.push(own(value.to_string()));
                out
            }
            Some("message_delta") if self.any_blocked() => {
                if let Some(delta) = value.get_mut("delta").and_then(Value::as_object_mut) {
                    delta.insert("stop_reason".into(), json!("refusal"));
                }
                vec![own(value.to_string())]
            }
            _ => {
                if a.restore && !a.vault.is_empty() {
                    walk_texts(&mut value, &mut |text: &mut String, _| *text = restore(text, a.vault));
                }
                vec![own(value.to_string())]
            }
        }
    }

    fn openai_chunk(&mut self, chunk: &mut Value, a: &Answering<'_>, tally: &mut Tally) {
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else { return };
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else { continue };
            let text = delta.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
            let has_content = delta.contains_key("content") || finishing;
            if has_content {
                let out = self.channel(Channel::Content(index)).push(&text, finishing, a, tally);
                if delta.contains_key("content") || !out.is_empty() {
                    delta.insert("content".into(), json!(out));
                }
            }
            for call in delta.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
                let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(Value::String(args)) = call.pointer_mut("/function/arguments") {
                    *args = self.channel(Channel::Tool(index, k)).push(args, false, a, tally);
                }
            }
            if finishing {
                let tools: Vec<u64> = self
                    .channels
                    .keys()
                    .filter_map(|c| match c {
                        Channel::Tool(i, k) if *i == index => Some(*k),
                        _ => None,
                    })
                    .collect();
                let mut extra = Vec::new();
                for k in tools {
                    let rest = self.channel(Channel::Tool(index, k)).push("", true, a, tally);
                    if !rest.is_empty() {
                        extra.push(json!({"index": k, "function": {"arguments": rest}}));
                    }
                }
                if !extra.is_empty() {
                    delta.insert("tool_calls".into(), Value::Array(extra));
                }
                let stream = self.channel(Channel::Content(index));
                let violation = stream.keep_released && !stream.released.is_empty() && !is_json(&stream.released);
                let blocked = stream.blocked;
                if violation {
                    self.format_violation = true;
                }
                let rejected = violation && self.format == Some(FormatAction::Reject);
                if rejected {
                    delta.insert("content".into(), json!(""));
                }
                if blocked || rejected || self.blocked {
                    choice.as_object_mut().map(|c| c.insert("finish_reason".into(), json!("content_filter")));
                }
            }
        }
    }

    /// A Gemini chunk: each candidate's text parts through its channels; at its finish reason,
    /// the held text released into the chunk, and a blocked or rejected answer stopped.
    fn gemini_chunk(&mut self, chunk: &mut Value, a: &Answering<'_>, tally: &mut Tally) {
        let Some(candidates) = chunk.get_mut("candidates").and_then(Value::as_array_mut) else { return };
        for (position, candidate) in candidates.iter_mut().enumerate() {
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            let finishing = candidate.get("finishReason").is_some_and(Value::is_string);
            let mut parts = candidate.pointer_mut("/content/parts").and_then(Value::as_array_mut).map(std::mem::take);
            for part in parts.iter_mut().flatten() {
                let thought = part.get("thought").and_then(Value::as_bool).unwrap_or(false);
                if let Some(Value::String(text)) = part.get_mut("text") {
                    *text = self.channel(Channel::Candidate(index, thought)).push(text, false, a, tally);
                }
                if let Some(args) = part.pointer_mut("/functionCall/args") {
                    restore_strings(args, a);
                }
            }
            if finishing {
                for thought in [true, false] {
                    let Some(stream) = self.channels.get_mut(&Channel::Candidate(index, thought)) else { continue };
                    let rest = stream.push("", true, a, tally);
                    if !rest.is_empty() {
                        let parts = parts.get_or_insert_with(Vec::new);
                        parts.push(if thought {
                            json!({"text": rest, "thought": true})
                        } else {
                            json!({"text": rest})
                        });
                    }
                }
            }
            if let Some(parts) = parts {
                let content =
                    candidate.as_object_mut().map(|c| c.entry("content").or_insert_with(|| json!({"role": "model"})));
                if let Some(content) = content.and_then(Value::as_object_mut) {
                    content.insert("parts".into(), Value::Array(parts));
                }
            }
            if finishing {
                let stream = self.channel(Channel::Candidate(index, false));
                let violation = stream.keep_released && !stream.released.is_empty() && !is_json(&stream.released);
                let blocked = stream.blocked;
                if violation {
                    self.format_violation = true;
                }
                let rejected = violation && self.format == Some(FormatAction::Reject);
                if blocked || rejected || self.any_blocked() {
                    self.blocked |= blocked;
                    if let Some(c) = candidate.as_object_mut() {
                        c.insert("finishReason".into(), json!(GEMINI_WITHHELD));
                        if rejected {
                            c.remove("content");
                        }
                    }
                }
            }
        }
    }

    /// Gemini text still held when a stream ends without a finish reason: one chunk per
    /// candidate.
    fn flush_gemini(&mut self, a: &Answering<'_>, tally: &mut Tally) -> Vec<Event> {
        let open: Vec<(u64, bool)> = self
            .channels
            .keys()
            .filter_map(|c| match c {
                Channel::Candidate(i, thought) => Some((*i, *thought)),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for (index, thought) in open {
            let rest = self.channel(Channel::Candidate(index, thought)).push("", true, a, tally);
            if rest.is_empty() {
                continue;
            }
            let part = if thought { json!({"text": rest, "thought": true}) } else { json!({"text": rest}) };
            let chunk = json!({"candidates": [{"index": index, "content": {"role": "model", "parts": [part]}}]});
            out.push((None, chunk.to_string()));
        }
        out
    }

    /// Text still held when a chat stream ends without finishing its choices.
    fn flush_openai(&mut self, a: &Answering<'_>, tally: &mut Tally) -> Vec<Event> {
        let open: Vec<u64> = self
            .channels
            .keys()
            .filter_map(|c| match c {
                Channel::Content(i) => Some(*i),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for index in open {
            let rest = self.channel(Channel::Content(index)).push("", true, a, tally);
            if rest.is_empty() {
                continue;
            }
            let mut chunk = self.template.clone().unwrap_or_else(|| json!({"object": "chat.completion.chunk"}));
            if let Some(object) = chunk.as_object_mut() {
                object.remove("usage");
                object.insert(
                    "choices".into(),
                    json!([{"index": index, "delta": {"content": rest}, "finish_reason": null}]),
                );
            }
            out.push((None, chunk.to_string()));
        }
        out
    }

    /// End of a stream that had no `[DONE]`.
    pub fn finish(&mut self, a: &Answering<'_>, tally: &mut Tally) -> Vec<Event> {
        let mut out = self.flush_openai(a, tally);
        out.extend(self.flush_gemini(a, tally));
        out
    }
}

/// Restores complete placeholders in every string of a JSON value (tool arguments as an object).
fn restore_strings(value: &mut Value, a: &Answering<'_>) {
    if a.restore && !a.vault.is_empty() {
        every_string(value, &mut |text: &mut String| *text = restore(text, a.vault));
    }
}

fn every_string(value: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| every_string(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| every_string(v, f)),
        _ => {}
    }
}

/// A Gemini answer's text per candidate, thoughts left out.
fn gemini_texts(value: &Value) -> Vec<String> {
    let candidates = value.get("candidates").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    candidates
        .iter()
        .map(|c| {
            let parts = c.pointer("/content/parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            parts
                .iter()
                .filter(|p| !p.get("thought").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .collect()
}

/// Calls `f` on every answer text: `content`, `text`, `arguments`, `partial_json` and
/// `output_text` strings, and every string inside tool arguments given as objects (`args`,
/// `input`), at any depth; the flag says whether it is a message's content.
fn walk_texts(value: &mut Value, f: &mut dyn FnMut(&mut String, bool)) {
    match value {
        Value::Object(map) => {
            let is_message = map.contains_key("role");
            for (key, v) in map.iter_mut() {
                match v {
                    Value::Object(_) if matches!(key.as_str(), "args" | "input") => {
                        every_string(v, &mut |s: &mut String| f(s, false));
                    }
                    Value::String(s)
                        if matches!(
                            key.as_str(),
                            "content" | "text" | "arguments" | "partial_json" | "output_text"
                        ) =>
                    {
                        f(s, is_message && key == "content")
                    }
                    _ => walk_texts(v, f),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk_texts(v, f)),
        _ => {}
    }
}

/// Withholds a JSON answer's text: OpenAI choices end with `content_filter`, Anthropic messages
/// with `refusal`, Gemini candidates with `SAFETY`.
fn withhold(value: &mut Value) {
    if let Some(candidates) = value.get_mut("candidates").and_then(Value::as_array_mut) {
        for candidate in candidates.iter_mut().filter_map(Value::as_object_mut) {
            candidate.remove("content");
            candidate.insert("finishReason".into(), json!(GEMINI_WITHHELD));
        }
    } else if let Some(choices) = value.get_mut("choices").and_then(Value::as_array_mut) {
        for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) {
                message.insert("content".into(), json!(""));
                message.remove("tool_calls");
            }
            if choice.contains_key("text") {
                choice.insert("text".into(), json!(""));
            }
            choice.insert("finish_reason".into(), json!("content_filter"));
        }
    } else if let Some(object) = value.as_object_mut() {
        if object.contains_key("content") {
            object.insert("content".into(), Value::Array(Vec::new()));
            object.insert("stop_reason".into(), json!("refusal"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, OutputAction};
    use crate::scrub::{Scrubber, Vault};

    fn vault() -> Vault {
        let mut v = Vault::default();
        v.placeholder("EMAIL", "jane@x.com");
        v
    }

    fn chat_chunks(pieces: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = pieces
            .iter()
            .map(|p| {
                json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
                .to_string()
            })
            .collect();
        out.push(
            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            .to_string(),
        );
        out.push("[DONE]".into());
        out
    }

    fn text_of(events: &[Event]) -> String {
        events
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .flat_map(|v| {
                let mut t = Vec::new();
                for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
                    t.push(c.pointer("/delta/content").and_then(Value::as_str).unwrap_or_default().to_string());
                }
                if let Some(s) = v.pointer("/delta/text").and_then(Value::as_str) {
                    t.push(s.to_string());
                }
                t
            })
            .collect()
    }

    #[test]
    fn chat_stream_restores_split_placeholders() {
        let v = vault();
        let a = Answering { vault: &v, restore: true, scan: None };
        let mut answer = Answer::new(None);
        let mut tally = Tally::default();
        let events: Vec<Event> = chat_chunks(&["Mail <", "EMAIL", "_1", "> now <"])
            .iter()
            .flat_map(|d| answer.event(None, d, &a, &mut tally))
            .collect();
        assert_eq!(text_of(&events), "Mail jane@x.com now <");
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
    }

    #[test]
    fn anthropic_stream_releases_before_the_block_stop() {
        let v = vault();
        let a = Answering { vault: &v, restore: true, scan: None };
        let mut answer = Answer::new(None);
        let mut tally = Tally::default();
        let delta = |t: &str| {
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}).to_string()
        };
        let mut events = Vec::new();
        for d in
            [delta("Hi <EMA"), delta("IL_1> and <EMAIL"), json!({"type": "content_block_stop", "index": 0}).to_string()]
        {
            events.extend(answer.event(Some("x"), &d, &a, &mut tally));
        }
        assert_eq!(text_of(&events), "Hi jane@x.com and <EMAIL");
        assert_eq!(events.last().map(|e| e.0.as_deref()), Some(Some("x")));
    }

    #[test]
    fn responses_stream_restores_split_placeholders() {
        let v = vault();
        let a = Answering { vault: &v, restore: true, scan: None };
        let mut answer = Answer::new(None);
        let mut tally = Tally::default();
        let delta = |t: &str| {
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": t}).to_string()
        };
        let mut text = String::new();
        for d in [
            delta("Hi <EMA"),
            delta("IL_1> and <EMAIL"),
            json!({"type": "response.completed", "response": {}}).to_string(),
        ] {
            for (_, data) in answer.event(None, &d, &a, &mut tally) {
                let v: Value = serde_json::from_str(&data).unwrap();
                text.push_str(v.get("delta").and_then(Value::as_str).unwrap_or_default());
            }
        }
        assert_eq!(text, "Hi jane@x.com and <EMAIL");
    }

    #[test]
    fn json_answers_restore_block_and_check_format() {
        let v = vault();
        let scrubber = Scrubber::new(&Config::default()).unwrap();
        let a = Answering { vault: &v, restore: true, scan: Some((&scrubber, OutputAction::Block)) };
        let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Mail <EMAIL_1>"}, "finish_reason": "stop"}]});
        let out = Answer::new(None).json(body.to_string().as_bytes(), &a, &mut Tally::default()).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], "Mail jane@x.com");
        let leaked = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "bob@y.org"}, "finish_reason": "stop"}]});
        let out: Value = serde_json::from_slice(
            &Answer::new(None).json(leaked.to_string().as_bytes(), &a, &mut Tally::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (out["choices"][0]["message"]["content"].as_str(), out["choices"][0]["finish_reason"].as_str()),
            (Some(""), Some("content_filter"))
        );
        let plain = Answering { vault: &v, restore: true, scan: None };
        let prose = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure! {\"a\": 1}"}}]});
        let mut flagged = Answer::new(Some(FormatAction::Flag));
        assert_eq!(flagged.json(prose.to_string().as_bytes(), &plain, &mut Tally::default()), None);
        assert!(flagged.format_violation);
        let mut rejected = Answer::new(Some(FormatAction::Reject));
        let out: Value = serde_json::from_slice(
            &rejected.json(prose.to_string().as_bytes(), &plain, &mut Tally::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        let fine = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"a\": 1}"}}]});
        let mut ok = Answer::new(Some(FormatAction::Reject));
        assert_eq!(ok.json(fine.to_string().as_bytes(), &plain, &mut Tally::default()), None);
        assert!(!ok.format_violation);
    }

    #[test]
    fn stream_format_reject_holds_the_content() {
        let v = Vault::default();
        let a = Answering { vault: &v, restore: true, scan: None };
        let mut answer = Answer::new(Some(FormatAction::Reject));
        let events: Vec<Event> = chat_chunks(&["Sure: ", "{\"a\": 1}"])
            .iter()
            .flat_map(|d| answer.event(None, d, &a, &mut Tally::default()))
            .collect();
        assert_eq!(text_of(&events), "");
        assert!(answer.format_violation);
        assert!(events.iter().any(|(_, d)| d.contains("content_filter")));
        let mut good = Answer::new(Some(FormatAction::Reject));
        let events: Vec<Event> = chat_chunks(&["{\"a\":", " 1}"])
            .iter()
            .flat_map(|d| good.event(None, d, &a, &mut Tally::default()))
            .collect();
        assert_eq!(text_of(&events), "{\"a\": 1}");
    }

    fn gemini_chunk(text: &str, finish: Option<&str>) -> String {
        let mut candidate = json!({"index": 0, "content": {"role": "model", "parts": [{"text": text}]}});
        if let Some(reason) = finish {
            candidate["finishReason"] = json!(reason);
        }
        json!({"candidates": [candidate], "modelVersion": "gemini-2.5-flash"}).to_string()
    }

    fn gemini_text(events: &[Event]) -> String {
        let values = events.iter().filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok());
        values.map(|v| gemini_texts(&v).concat()).collect()
    }

    #[test]
    fn gemini_stream_restores_split_placeholders_and_releases_at_the_finish() {
        let v = vault();
        let a = Answering { vault: &v, restore: true, scan: None };
        let mut answer = Answer::new(None);
        let mut tally = Tally::default();
        let mut events = Vec::new();
        for d in
            [gemini_chunk("Mail <EMA", None), gemini_chunk("IL_1> or <EMAIL", None), gemini_chunk("", Some("STOP"))]
        {
            events.extend(answer.event(None, &d, &a, &mut tally));
        }
        assert_eq!(gemini_text(&events), "Mail jane@x.com or <EMAIL");
        let last: Value = serde_json::from_str(&events[2].1).unwrap();
        assert_eq!(
            (last["candidates"][0]["finishReason"].as_str(), last["modelVersion"].as_str()),
            (Some("STOP"), Some("gemini-2.5-flash"))
        );
        // Cut before the finish: what is held comes in a chunk of its own.
        let mut cut = Answer::new(None);
        let mut events = cut.event(None, &gemini_chunk("Hi <EMAIL_", None), &a, &mut tally);
        events.extend(cut.finish(&a, &mut tally));
        assert_eq!(gemini_text(&events), "Hi <EMAIL_");
        // Arguments arrive whole, as an object.
        let call = json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "send", "args": {"to": ["<EMAIL_1>"]}}}]}}]});
        let out = cut.event(None, &call.to_string(), &a, &mut tally);
        assert!(out[0].1.contains("jane@x.com"), "{out:?}");
    }

    #[test]
    fn gemini_answers_are_withheld_with_a_safety_stop() {
        let v = vault();
        let scrubber = Scrubber::new(&Config::default()).unwrap();
        let a = Answering { vault: &v, restore: true, scan: Some((&scrubber, OutputAction::Block)) };
        let mut answer = Answer::new(None);
        let mut events = Vec::new();
        for d in [gemini_chunk("Write to bob@", None), gemini_chunk("y.org today", Some("STOP"))] {
            events.extend(answer.event(None, &d, &a, &mut Tally::default()));
        }
        assert!(!gemini_text(&events).contains("bob@"), "{events:?}");
        assert!(events.iter().any(|(_, d)| d.contains("\"finishReason\":\"SAFETY\"")), "{events:?}");
        // JSON: restored (text and arguments), or withheld whole.
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Mail <EMAIL_1>"},
            {"functionCall": {"name": "send", "args": {"to": "<EMAIL_1>"}}}]}, "finishReason": "STOP"}]});
        let out: Value = serde_json::from_slice(
            &Answer::new(None).json(body.to_string().as_bytes(), &a, &mut Tally::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(out["candidates"][0]["content"]["parts"][0]["text"], "Mail jane@x.com");
        assert_eq!(out["candidates"][0]["content"]["parts"][1]["functionCall"]["args"]["to"], "jane@x.com");
        let leaked = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "bob@y.org"}]}, "finishReason": "STOP"}]});
        let out: Value = serde_json::from_slice(
            &Answer::new(None).json(leaked.to_string().as_bytes(), &a, &mut Tally::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (out["candidates"][0].get("content"), out["candidates"][0]["finishReason"].as_str()),
            (None, Some("SAFETY"))
        );
        // The JSON format check reads the candidates' text.
        let plain = Answering { vault: &v, restore: true, scan: None };
        let prose = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Sure! {}"}]}}]});
        let mut flagged = Answer::new(Some(FormatAction::Flag));
        assert_eq!(flagged.json(prose.to_string().as_bytes(), &plain, &mut Tally::default()), None);
        assert!(flagged.format_violation);
    }
}
