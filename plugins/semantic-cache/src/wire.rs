//! Client schemas other than Chat Completions (the Responses API, Anthropic Messages, Gemini),
//! seen through the chat form the cache keys and keeps, by the shared translators.
//!
//! - **Keys**: the request is translated to a chat request, which [`crate::keys`] reads as it
//!   reads any other. What the chat form does not carry (`top_k`, Gemini's safety settings, ...)
//!   is kept beside it, verbatim, with the client's API (`sluice_client`), so two requests that
//!   differ in it never share an entry, and no schema shares entries with another.
//! - **Storing**: the client's answer (JSON or stream, event by event) is turned into a chat
//!   completion, so [`crate::record`] checks and keeps it as it keeps a chat answer.
//! - **Serving**: the stored chat completion is written in the client's schema, JSON or a
//!   stream its SDK reads.

use serde_json::{Map, Value};
use sluice_shared::api::Api;
use sluice_shared::prompt;
use sluice_shared::sse::{self, SseParser};
use sluice_shared::translate::{StreamReader, StreamWriter, Wire};

/// Members a chat-form key leaves out: delivery, identity, and what the chat form carries
/// (the conversation, the model).
const CARRIED: [&str; 13] = [
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    // Responses
    "input",
    "instructions",
    // Anthropic
    "messages",
    "system",
    // Gemini
    "contents",
    "systemInstruction",
];

/// A client schema the cache reads through its chat form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Foreign {
    api: Api,
    wire: Wire,
}

impl Foreign {
    /// The schema of `api`, when it is a chat schema other than Chat Completions.
    pub fn of(api: Api) -> Option<Foreign> {
        let wire = Wire::of_client(api).filter(|w| *w != Wire::OpenaiChat)?;
        Some(Foreign { api, wire })
    }

    /// The request in chat form, with what that form does not carry; `None` when the body is not
    /// a request of the schema (it bypasses the cache).
    pub fn chat_request(self, path: &str, body: &[u8]) -> Option<Vec<u8>> {
        let summary = prompt::summarize(self.api, path, body).ok()?;
        let mut chat = self.wire.read_request(body).ok()?;
        chat.model = summary.model;
        chat.stream = summary.stream;
        let mut value: Value = serde_json::from_slice(&Wire::OpenaiChat.write_request(&chat, 0).ok()?).ok()?;
        let original: Map<String, Value> = sluice_shared::json::from_object(body).ok()?;
        // An empty member says nothing (`generationConfig: {}` is what no config sends).
        let empty = |v: &Value| {
            v.is_null() || v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
        };
        let rest: Map<String, Value> =
            original.into_iter().filter(|(name, v)| !CARRIED.contains(&name.as_str()) && !empty(v)).collect();
        let client = serde_json::json!({ "api": self.api.name(), "rest": rest });
        value.as_object_mut()?.insert("sluice_client".into(), client);
        serde_json::to_vec(&value).ok()
    }

    /// A JSON answer of the client's schema as a chat completion.
    pub fn chat_answer(self, body: &[u8], created: u64) -> Option<Vec<u8>> {
        let answer = self.wire.read_answer(200, body).ok()?;
        Some(Wire::OpenaiChat.write_answer(&answer, created))
    }

    /// Turns the client's stream into chat completion chunks as it passes.
    pub fn chat_stream(self, created: u64) -> ChatStream {
        ChatStream { reader: self.wire.stream_reader(), writer: Wire::OpenaiChat.stream_writer(created, true) }
    }

    /// A stored chat completion (`chat`, JSON) as the client's JSON answer.
    pub fn json(self, chat: &[u8], created: u64) -> Option<Vec<u8>> {
        let answer = Wire::OpenaiChat.read_answer(200, chat).ok()?;
        Some(self.wire.write_answer(&answer, created))
    }

    /// A stored chat completion replayed as a chat stream (`chat_sse`) as the client's stream.
    pub fn sse(self, chat_sse: &[u8], created: u64) -> Vec<u8> {
        let mut reader = Wire::OpenaiChat.stream_reader();
        let mut writer = self.wire.stream_writer(created, true);
        let mut parser = SseParser::new(chat_sse.len().saturating_add(1));
        let mut events = parser.push(chat_sse);
        events.extend(parser.finish());
        let mut out = String::new();
        for event in events {
            for canonical in reader.read(event.event.as_deref(), &event.data) {
                for (name, data) in writer.write(&canonical) {
                    sse::write_event(&mut out, name, &data);
                }
            }
        }
        for (name, data) in writer.finish() {
            sse::write_event(&mut out, name, &data);
        }
        out.into_bytes()
    }
}

/// A client's stream, turned into chat completion chunks event by event.
pub struct ChatStream {
    reader: Box<dyn StreamReader>,
    writer: Box<dyn StreamWriter>,
}

impl ChatStream {
    /// The chat chunks (SSE data) one event of the client's stream makes.
    pub fn push(&mut self, name: Option<&str>, data: &str) -> Vec<String> {
        let events = self.reader.read(name, data);
        events.iter().flat_map(|event| self.writer.write(event)).map(|(_, data)| data).collect()
    }

    /// The chunks that close the chat stream.
    pub fn finish(&mut self) -> Vec<String> {
        self.writer.finish().into_iter().map(|(_, data)| data).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::CacheRequest;
    use crate::record::{Record, StreamAnswer};
    use serde_json::json;

    const MESSAGES: Foreign = Foreign { api: Api::AnthropicMessages, wire: Wire::Anthropic };
    const GEMINI: Foreign = Foreign { api: Api::GeminiGenerate, wire: Wire::Gemini };

    fn key(foreign: Foreign, path: &str, body: &Value) -> CacheRequest {
        let chat = foreign.chat_request(path, body.to_string().as_bytes()).unwrap();
        CacheRequest::parse(&chat, |_| Some(crate::config::EmbedText::LastUserTurn), "salt").unwrap()
    }

    #[test]
    fn only_the_other_chat_schemas_are_foreign() {
        assert_eq!(Foreign::of(Api::ChatCompletions), None);
        assert_eq!(Foreign::of(Api::Embeddings), None);
        assert_eq!(Foreign::of(Api::AnthropicCountTokens), None);
        for api in [Api::Responses, Api::AnthropicMessages, Api::GeminiGenerate] {
            assert!(Foreign::of(api).is_some(), "{api:?}");
        }
    }

    #[test]
    fn keys_read_the_conversation_and_keep_what_the_chat_form_drops() {
        let ask = |extra: Value| {
            let mut body = json!({"model": "claude-haiku-4-5", "max_tokens": 50, "system": "Be brief.",
                                  "messages": [{"role": "user", "content": "Capital of France?"}]});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            key(MESSAGES, "/v1/messages", &body)
        };
        let plain = ask(json!({}));
        assert_eq!((plain.model.as_str(), plain.stream), ("claude-haiku-4-5", false));
        // Delivery and identity do not matter; the stream flag is read.
        let streamed = ask(json!({"stream": true, "metadata": {"user_id": "u-1"}}));
        assert_eq!((streamed.exact.as_str(), streamed.stream), (plain.exact.as_str(), true));
        // What the chat form cannot carry still tells requests apart.
        assert_ne!(ask(json!({"top_k": 5})).exact, plain.exact);
        assert_ne!(ask(json!({"max_tokens": 60})).exact, plain.exact);
        // The semantic lookup embeds the last user turn, as for chat.
        assert_eq!(plain.semantic.map(|s| s.text).as_deref(), Some("Capital of France?"));
        // The same conversation in another schema is another entry.
        let chat = CacheRequest::parse(
            json!({"model": "claude-haiku-4-5", "max_completion_tokens": 50, "messages": [
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]})
            .to_string()
            .as_bytes(),
            |_| None,
            "salt",
        )
        .unwrap();
        assert_ne!(chat.exact, plain.exact);
        assert!(MESSAGES.chat_request("/v1/messages", b"[]").is_none());
        assert!(MESSAGES.chat_request("/v1/messages", br#"{"messages": 5}"#).is_none());
    }

    #[test]
    fn a_gemini_key_reads_the_model_and_the_stream_from_the_path() {
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}],
                          "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]});
        let json = key(GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent", &body);
        let stream = key(GEMINI, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", &body);
        assert_eq!((json.model.as_str(), json.stream, stream.stream), ("gemini-2.5-flash", false, true));
        assert_eq!(json.exact, stream.exact);
        assert_ne!(key(GEMINI, "/v1beta/models/gemini-2.5-pro:generateContent", &body).exact, json.exact);
        let mut bare = body.clone();
        bare["generationConfig"] = json!({});
        assert_eq!(key(GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent", &bare).exact, json.exact);
        let mut safe = body.clone();
        safe["safetySettings"][0]["threshold"] = json!("BLOCK_ALL");
        assert_ne!(key(GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent", &safe).exact, json.exact);
    }

    fn anthropic_answer(text: &str) -> Vec<u8> {
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 12, "output_tokens": 5}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_answer_is_kept_as_chat_and_served_in_the_clients_schema() {
        let chat = MESSAGES.chat_answer(&anthropic_answer("Paris."), 7).unwrap();
        let record = Record::from_json(&chat, false).unwrap();
        assert_eq!(record.original_tokens(), Some((12, 5)));
        let served: Value = serde_json::from_slice(&MESSAGES.json(&record.json("c-1", 7), 7).unwrap()).unwrap();
        assert_eq!((served["type"].as_str(), served["content"][0]["text"].as_str()), (Some("message"), Some("Paris.")));
        assert_eq!(
            (served["stop_reason"].as_str(), served["usage"]["output_tokens"].as_u64()),
            (Some("end_turn"), Some(0))
        );
        // A stream of the client's own events.
        let sse = String::from_utf8(MESSAGES.sse(&record.sse("c-1", 7, true), 7)).unwrap();
        let names: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert!(sse.contains("Paris."));
        // Gemini: JSON and server-sent chunks.
        let gemini: Value = serde_json::from_slice(&GEMINI.json(&record.json("c-1", 7), 7).unwrap()).unwrap();
        assert_eq!(gemini["candidates"][0]["content"]["parts"][0]["text"], "Paris.");
        assert!(String::from_utf8(GEMINI.sse(&record.sse("c-1", 7, true), 7))
            .unwrap()
            .contains("\"finishReason\":\"STOP\""));
    }

    #[test]
    fn a_clients_stream_is_kept_as_chat_event_by_event() {
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-haiku-4-5",
                "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Par"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "is."}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let mut stream = MESSAGES.chat_stream(7);
        let mut answer = StreamAnswer::new(1 << 20);
        for (name, data) in &events {
            stream.push(Some(name), &data.to_string()).iter().for_each(|chunk| answer.push(chunk));
        }
        stream.finish().iter().for_each(|chunk| answer.push(chunk));
        let record = answer.finish(false).unwrap();
        let served: Value = serde_json::from_slice(&record.json("c", 7)).unwrap();
        assert_eq!(served["choices"][0]["message"]["content"], "Paris.");
        assert_eq!(record.original_tokens(), Some((12, 5)));
        // Cut before its end: not kept.
        let mut cut = MESSAGES.chat_stream(7);
        let mut partial = StreamAnswer::new(1 << 20);
        for (name, data) in events.iter().take(3) {
            cut.push(Some(name), &data.to_string()).iter().for_each(|chunk| partial.push(chunk));
        }
        cut.finish().iter().for_each(|chunk| partial.push(chunk));
        assert!(partial.finish(false).is_err());
    }
}
