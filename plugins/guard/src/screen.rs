//! A streamed answer under the guards' watch, event by event, in plain Rust.
//!
//! The answer's text (content, reasoning, tool-call arguments, read through the shared
//! translators, so every client schema) is checked at check points: every
//! `check_every_chars`, or at a sentence end past `min_chars`, and at the end. Each check shows
//! the guards the whole answer so far. One check runs at a time; text that arrives meanwhile
//! waits for the next.
//!
//! - **holdback**: events leave (verbatim) only once every text before them passed a check.
//!   Text held past `max_held_bytes` means the guards are too slow for this stream.
//! - **cut**: text leaves at once; a failed check ends the answer there.
//!
//! In both, the events that end the answer (finish, usage, `[DONE]`) wait for the last check,
//! so no answer ends cleanly unchecked. A blocked answer ends with the schema's content-filter
//! stop ([`ending`]) and nothing after it.

use std::collections::VecDeque;

use serde_json::{json, Value};
use sluice_shared::api::Api;
use sluice_shared::sse::{self, SseParser};
use sluice_shared::translate::{Event, Finish, StreamReader, Wire};

use crate::config::{Stream, StreamMode};

/// Longest SSE line read.
const MAX_LINE: usize = 4 << 20;

/// One event, as it came.
struct Held {
    name: Option<String>,
    data: String,
    /// The answer's text length once this event is read.
    text_end: usize,
    /// The event ends the answer, or follows one that did: it waits for the last check.
    terminal: bool,
}

/// What the client was shown, for a proper ending.
#[derive(Debug, Default)]
struct Seen {
    id: String,
    model: String,
    /// Anthropic: the content block left open.
    open_block: Option<u64>,
}

/// Which schema's stream this is: how it is read and how a blocked one ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    Wire(Wire),
    /// The legacy completions API (`choices[].text`), which no translator reads.
    Completions,
}

pub struct Screen {
    schema: Schema,
    settings: Stream,
    parser: SseParser,
    reader: Box<dyn StreamReader>,
    held: VecDeque<Held>,
    /// Every text of the answer so far.
    text: String,
    /// Text covered by the last check asked.
    asked: usize,
    /// Text that passed.
    passed: usize,
    in_flight: bool,
    /// The provider's stream ended.
    ended: bool,
    /// An event that ends the answer was seen: from it on everything waits (cut mode).
    ending_seen: bool,
    blocked: bool,
    /// Done: the ending (or the last events) went out.
    closed: bool,
    seen: Seen,
}

/// What one chunk of the provider's stream gives.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Bytes for the client now.
    pub out: String,
    /// Ask the guards about the answer's first `n` bytes of text.
    pub ask: Option<usize>,
}

impl Screen {
    /// The screen of a stream of `api`; `None` for an API whose answers do not stream text.
    pub fn of(api: Api, settings: Stream) -> Option<Screen> {
        match Wire::of_client(api) {
            Some(wire) => Some(Screen::new(Schema::Wire(wire), wire.stream_reader(), settings)),
            None if api == Api::Completions => {
                Some(Screen::new(Schema::Completions, Box::new(CompletionsReader), settings))
            }
            None => None,
        }
    }

    fn new(schema: Schema, reader: Box<dyn StreamReader>, settings: Stream) -> Screen {
        Screen {
            schema,
            settings,
            parser: SseParser::new(MAX_LINE),
            reader,
            held: VecDeque::new(),
            text: String::new(),
            asked: 0,
            passed: 0,
            in_flight: false,
            ended: false,
            ending_seen: false,
            blocked: false,
            closed: false,
            seen: Seen::default(),
        }
    }

    /// The answer's text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Text waiting for a check, in bytes.
    pub fn held_text(&self) -> usize {
        self.text.len() - self.passed
    }

    /// Past `max_held_bytes` (holdback): the guards are too slow for this stream.
    pub fn overflowing(&self) -> bool {
        self.settings.mode == StreamMode::Holdback && !self.blocked && self.held_text() > self.settings.max_held_bytes
    }

    /// The stream ended and its last check is still to come.
    pub fn waiting(&self) -> bool {
        self.ended && !self.closed
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Reads one chunk of the provider's stream (`end`: its last).
    pub fn push(&mut self, chunk: &[u8], end: bool) -> Step {
        let mut events = self.parser.push(chunk);
        if end {
            events.extend(self.parser.finish());
            self.ended = true;
        }
        if self.closed {
            return Step::default();
        }
        let mut out = String::new();
        for event in events {
            let mut ends = false;
            for e in self.reader.read(event.event.as_deref(), &event.data) {
                match e {
                    Event::Start { id, model } => {
                        self.seen.id = id;
                        self.seen.model = model;
                    }
                    Event::Text(t) | Event::Thinking(t) => self.text.push_str(&t),
                    Event::ToolArguments { json, .. } => self.text.push_str(&json),
                    Event::Finish(_) | Event::End | Event::Error(_) => ends = true,
                    // Usage can come first (Anthropic's `message_start`): it ends nothing.
                    Event::Usage(_) | Event::ToolStart { .. } => {}
                }
            }
            // `[DONE]` and other events no translator reads still close an OpenAI stream.
            ends |= event.data.trim() == "[DONE]";
            self.ending_seen |= ends;
            let held =
                Held { name: event.event, data: event.data, text_end: self.text.len(), terminal: self.ending_seen };
            if self.settings.mode == StreamMode::Cut && !self.ending_seen && !self.blocked {
                self.write(&mut out, &held);
            } else {
                self.held.push_back(held);
            }
        }
        let ask = self.next_check();
        out.push_str(&self.release());
        Step { out, ask }
    }

    /// A check of the first `upto` bytes of text came back. Returns the next check to ask, if
    /// text waits for one, and what the client can have now.
    pub fn settle(&mut self, upto: usize, passed: bool) -> Step {
        self.in_flight = false;
        if passed {
            self.passed = self.passed.max(upto.min(self.text.len()));
        } else {
            self.blocked = true;
        }
        let ask = self.next_check();
        Step { out: self.release(), ask }
    }

    /// Lets everything held so far pass unchecked (a guard too slow with `on_error: open`).
    pub fn pass_unchecked(&mut self) -> String {
        self.passed = self.text.len();
        self.asked = self.asked.max(self.passed);
        self.release()
    }

    /// Ends the answer now with a content-filter stop (a guard too slow, `on_error: closed`).
    pub fn block(&mut self) -> String {
        self.blocked = true;
        self.release()
    }

    fn next_check(&mut self) -> Option<usize> {
        if self.in_flight || self.blocked || self.closed {
            return None;
        }
        let fresh = self.text.get(self.asked..).unwrap_or_default();
        let due = if fresh.is_empty() {
            false
        } else {
            self.ended
                || fresh.len() >= self.settings.check_every_chars
                || (self.settings.sentence_ends && fresh.len() >= self.settings.min_chars && ends_sentence(fresh))
        };
        if !due {
            return None;
        }
        self.in_flight = true;
        self.asked = self.text.len();
        Some(self.asked)
    }

    /// What may leave now: held events whose text passed, or the ending.
    fn release(&mut self) -> String {
        let mut out = String::new();
        if self.closed {
            return out;
        }
        if self.blocked {
            self.held.clear();
            out.push_str(&ending(self.schema, &self.seen));
            self.closed = true;
            return out;
        }
        // The events that end the answer leave only after the last check.
        let everything_passed = self.ended && !self.in_flight && self.passed >= self.text.len();
        let holdback = self.settings.mode == StreamMode::Holdback;
        while let Some(front) = self.held.front() {
            let passed = holdback && !front.terminal && front.text_end <= self.passed;
            if !(everything_passed || passed) {
                break;
            }
            if let Some(event) = self.held.pop_front() {
                self.write(&mut out, &event);
            }
        }
        if everything_passed && self.held.is_empty() {
            self.closed = true;
        }
        out
    }

    fn write(&mut self, out: &mut String, event: &Held) {
        if self.schema == Schema::Wire(Wire::Anthropic) {
            self.track_block(event);
        }
        sse::write_event(out, event.name.as_deref(), &event.data);
    }

    fn track_block(&mut self, event: &Held) {
        match event.name.as_deref() {
            Some("content_block_start") => {
                let value: Value = serde_json::from_str(&event.data).unwrap_or_default();
                self.seen.open_block = value.get("index").and_then(Value::as_u64);
            }
            Some("content_block_stop") => self.seen.open_block = None,
            _ => {}
        }
    }
}

fn ends_sentence(text: &str) -> bool {
    let trimmed = text.trim_end();
    trimmed.ends_with(['.', '!', '?'])
        || text.contains(". ")
        || text.contains("! ")
        || text.contains("? ")
        || text.contains('\n')
}

/// How a blocked stream ends in each schema: OpenAI `finish_reason: content_filter`, Anthropic
/// `stop_reason: refusal`, Responses `incomplete` for `content_filter`, Gemini `SAFETY`.
fn ending(schema: Schema, seen: &Seen) -> String {
    let mut out = String::new();
    let (id, model) = (seen.id.as_str(), seen.model.as_str());
    let Schema::Wire(wire) = schema else {
        let chunk = json!({"id": id, "object": "text_completion", "created": 0, "model": model,
                           "choices": [{"index": 0, "text": "", "finish_reason": "content_filter"}]});
        sse::write_event(&mut out, None, &chunk.to_string());
        sse::write_event(&mut out, None, "[DONE]");
        return out;
    };
    match wire {
        Wire::OpenaiChat => {
            let chunk = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                               "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]});
            sse::write_event(&mut out, None, &chunk.to_string());
            sse::write_event(&mut out, None, "[DONE]");
        }
        Wire::Anthropic => {
            if let Some(index) = seen.open_block {
                let stop = json!({"type": "content_block_stop", "index": index});
                sse::write_event(&mut out, Some("content_block_stop"), &stop.to_string());
            }
            let delta = json!({"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": null},
                               "usage": {"output_tokens": 0}});
            sse::write_event(&mut out, Some("message_delta"), &delta.to_string());
            sse::write_event(&mut out, Some("message_stop"), &json!({"type": "message_stop"}).to_string());
        }
        Wire::OpenaiResponses => {
            let response = json!({"id": id, "object": "response", "created_at": 0, "model": model, "status": "incomplete",
                                  "incomplete_details": {"reason": "content_filter"}, "output": []});
            let event = json!({"type": "response.incomplete", "response": response});
            sse::write_event(&mut out, Some("response.incomplete"), &event.to_string());
        }
        Wire::Gemini | Wire::Bedrock => {
            let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                                               "finishReason": "SAFETY", "index": 0}], "modelVersion": model});
            sse::write_event(&mut out, None, &chunk.to_string());
        }
    }
    out
}

/// Reads a legacy completions stream: `choices[].text`, `finish_reason`, `[DONE]`.
struct CompletionsReader;

impl StreamReader for CompletionsReader {
    fn read(&mut self, _name: Option<&str>, data: &str) -> Vec<Event> {
        if data.trim() == "[DONE]" {
            return vec![Event::End];
        }
        let Ok(value) = serde_json::from_str::<Value>(data) else { return Vec::new() };
        let mut events = Vec::new();
        if let (Some(id), Some(model)) =
            (value.get("id").and_then(Value::as_str), value.get("model").and_then(Value::as_str))
        {
            events.push(Event::Start { id: id.to_string(), model: model.to_string() });
        }
        for choice in value.get("choices").and_then(Value::as_array).into_iter().flatten() {
            if let Some(text) = choice.get("text").and_then(Value::as_str) {
                events.push(Event::Text(text.to_string()));
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                events.push(Event::Finish(Finish::Stop));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: StreamMode) -> Stream {
        Stream { mode, check_every_chars: 20, sentence_ends: true, min_chars: 5, max_held_bytes: 64 }
    }

    fn chat(piece: &str) -> String {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                           "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        format!("data: {chunk}\n\n")
    }

    fn finish() -> String {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        format!("data: {chunk}\n\ndata: [DONE]\n\n")
    }

    fn content(out: &str) -> String {
        out.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn holdback_releases_text_only_after_it_passed() {
        let mut s = Screen::of(Api::ChatCompletions, settings(StreamMode::Holdback)).unwrap();
        let step = s.push(chat("Hello").as_bytes(), false);
        assert_eq!(step, Step { out: String::new(), ask: None });
        let step = s.push(chat(" there. How").as_bytes(), false);
        assert_eq!((step.out.as_str(), step.ask), ("", Some(16)));
        // Text that comes while the check runs waits for the next one.
        assert_eq!(s.push(chat(" are you").as_bytes(), false).ask, None);
        let step = s.settle(16, true);
        assert_eq!(content(&step.out), "Hello there. How");
        assert_eq!(step.ask, None);
        let step = s.push(finish().as_bytes(), true);
        assert_eq!((step.out.as_str(), step.ask), ("", Some(24)));
        assert!(s.waiting());
        let step = s.settle(24, true);
        assert_eq!(content(&step.out), " are you");
        assert!(step.out.ends_with("data: [DONE]\n\n") && step.out.contains("\"stop\""));
        assert!(s.is_closed() && !s.waiting());
    }

    #[test]
    fn holdback_never_shows_blocked_text() {
        let mut s = Screen::of(Api::ChatCompletions, settings(StreamMode::Holdback)).unwrap();
        s.push(chat("Fine words. ").as_bytes(), false);
        assert_eq!(content(&s.settle(12, true).out), "Fine words. ");
        let step = s.push(chat("Bad words here.").as_bytes(), false);
        let step = s.settle(step.ask.unwrap(), false);
        assert!(!step.out.contains("Bad"));
        assert!(step.out.contains("\"content_filter\"") && step.out.ends_with("data: [DONE]\n\n"));
        assert_eq!(s.push(chat("more").as_bytes(), false).out, "");
        assert_eq!(s.push(finish().as_bytes(), true).out, "");
        assert!(!s.waiting());
    }

    #[test]
    fn cut_streams_at_once_and_holds_only_the_end() {
        let mut s = Screen::of(Api::ChatCompletions, settings(StreamMode::Cut)).unwrap();
        let step = s.push(chat("Hello there, friend").as_bytes(), false);
        assert_eq!((content(&step.out).as_str(), step.ask), ("Hello there, friend", None));
        let step = s.push(chat("! Then").as_bytes(), false);
        assert_eq!((content(&step.out).as_str(), step.ask), ("! Then", Some(25)));
        let step = s.push(finish().as_bytes(), true);
        assert_eq!(step, Step::default(), "the finish waits for the checks");
        let step = s.settle(25, true);
        assert_eq!(step.ask, None, "no text came after the last check");
        assert!(step.out.contains("\"stop\"") && step.out.ends_with("data: [DONE]\n\n"));
        assert!(s.is_closed());
    }

    #[test]
    fn cut_ends_the_answer_when_a_check_fails() {
        let mut s = Screen::of(Api::ChatCompletions, settings(StreamMode::Cut)).unwrap();
        let ask = s.push(chat("Some words. ").as_bytes(), false).ask.unwrap();
        s.push(chat("More words").as_bytes(), false);
        let step = s.settle(ask, false);
        assert!(step.out.contains("\"content_filter\""));
        assert_eq!(s.push(chat("after").as_bytes(), false).out, "");
    }

    #[test]
    fn the_last_text_is_checked_before_the_end_leaves() {
        let mut s = Screen::of(Api::ChatCompletions, settings(StreamMode::Holdback)).unwrap();
        let ask = s.push(chat("First sentence.").as_bytes(), false).ask.unwrap();
        let step = s.push(format!("{}{}", chat(" tail"), finish()).as_bytes(), true);
        assert_eq!(step.ask, None, "one check at a time");
        let step = s.settle(ask, true);
        assert_eq!(content(&step.out), "First sentence.");
        assert_eq!(step.ask, Some(20));
        let step = s.settle(20, true);
        assert_eq!(content(&step.out), " tail");
        assert!(s.is_closed());
    }

    #[test]
    fn holdback_overflows_when_guards_are_slow() {
        let mut s = Screen::of(Api::ChatCompletions, settings(StreamMode::Holdback)).unwrap();
        s.push(chat(&"x".repeat(30)).as_bytes(), false);
        assert!(!s.overflowing());
        s.push(chat(&"y".repeat(40)).as_bytes(), false);
        assert!(s.overflowing());
        assert_eq!(content(&s.pass_unchecked()).len(), 70);
        assert!(!s.overflowing());
    }

    #[test]
    fn anthropic_streams_end_with_a_refusal_closing_the_open_block() {
        let mut s = Screen::of(Api::AnthropicMessages, settings(StreamMode::Cut)).unwrap();
        let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude", "content": [], "stop_reason": null, "usage": {"input_tokens": 3, "output_tokens": 0}}});
        let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bad bad words."}});
        let stream = format!(
            "event: message_start\ndata: {start}\n\nevent: content_block_start\ndata: {block}\n\nevent: content_block_delta\ndata: {delta}\n\n"
        );
        let step = s.push(stream.as_bytes(), false);
        let step = s.settle(step.ask.unwrap(), false);
        let events: Vec<&str> = step.out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(events, ["content_block_stop", "message_delta", "message_stop"]);
        assert!(step.out.contains("\"stop_reason\":\"refusal\""));
    }

    #[test]
    fn every_schema_has_a_content_filter_ending() {
        let seen = Seen { id: "r1".into(), model: "m".into(), open_block: None };
        assert!(ending(Schema::Wire(Wire::OpenaiResponses), &seen).contains("\"reason\":\"content_filter\""));
        assert!(ending(Schema::Wire(Wire::Gemini), &seen).contains("\"finishReason\":\"SAFETY\""));
        assert!(ending(Schema::Wire(Wire::OpenaiChat), &seen).contains("\"id\":\"r1\""));
        assert!(ending(Schema::Completions, &seen).contains("\"text_completion\""));
        assert!(Screen::of(Api::Embeddings, Stream::default()).is_none());
    }

    #[test]
    fn completions_streams_are_read_too() {
        let mut s = Screen::of(Api::Completions, settings(StreamMode::Holdback)).unwrap();
        let chunk = |t: &str| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "model": "m", "choices": [{"index": 0, "text": t, "finish_reason": null}]})
            )
        };
        let step = s.push(chunk("Some text. And more").as_bytes(), false);
        assert_eq!(step.ask, Some(19));
        assert!(s.settle(19, true).out.contains("Some text. And more"));
    }
}
