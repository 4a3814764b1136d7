//! Golden fixtures: every translation pair's request, JSON answer, error and stream, each an
//! input and the exact output expected (`shared/fixtures/translate/*.json`). To refresh the
//! outputs after a deliberate change, run the native tests with `SLUICE_BLESS=1` and review the
//! diff.

use serde_json::{json, Value};

use super::{Event, Wire};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// A fixture's file name and text.
macro_rules! fixture {
    ($name:literal) => {
        ($name, include_str!(concat!("../../../fixtures/translate/", $name)))
    };
}

/// Every fixture's file name and text.
const FIXTURES: &[(&str, &str)] = &[
    fixture!("chat-to-anthropic.request.json"),
    fixture!("anthropic-to-chat.request.json"),
    fixture!("anthropic-to-chat.answer.json"),
    fixture!("chat-to-anthropic.answer.json"),
    fixture!("anthropic-to-chat.error.json"),
    fixture!("chat-to-anthropic.error.json"),
    fixture!("anthropic-to-chat.stream.json"),
    fixture!("chat-to-anthropic.stream.json"),
    fixture!("chat-to-anthropic.tool-stream.json"),
    fixture!("chat-to-gemini.request.json"),
    fixture!("anthropic-to-gemini.request.json"),
    fixture!("gemini-to-chat.request.json"),
    fixture!("gemini-to-anthropic.request.json"),
    fixture!("gemini-to-chat.answer.json"),
    fixture!("gemini-to-anthropic.answer.json"),
    fixture!("chat-to-gemini.answer.json"),
    fixture!("gemini-to-chat.error.json"),
    fixture!("chat-to-gemini.error.json"),
    fixture!("gemini-to-chat.stream.json"),
    fixture!("gemini-to-chat.tool-stream.json"),
    fixture!("gemini-to-anthropic.tool-stream.json"),
    fixture!("chat-to-gemini.tool-stream.json"),
    fixture!("responses-to-anthropic.request.json"),
    fixture!("responses-to-gemini.request.json"),
    fixture!("responses-to-chat.request.json"),
    fixture!("chat-to-responses.request.json"),
    fixture!("anthropic-to-responses.answer.json"),
    fixture!("gemini-to-responses.answer.json"),
    fixture!("anthropic-to-responses.error.json"),
    fixture!("anthropic-to-responses.stream.json"),
    fixture!("gemini-to-responses.tool-stream.json"),
    fixture!("responses-to-chat.answer.json"),
    fixture!("responses-to-chat.stream.json"),
    fixture!("chat-to-bedrock.request.json"),
    fixture!("bedrock-to-anthropic.request.json"),
    fixture!("bedrock-to-chat.answer.json"),
    fixture!("bedrock-to-anthropic.answer.json"),
    fixture!("bedrock-to-chat.error.json"),
    fixture!("chat-to-bedrock.answer.json"),
    fixture!("bedrock-to-chat.stream.json"),
    fixture!("bedrock-to-responses.stream.json"),
    fixture!("bedrock-to-anthropic.stream.json"),
    fixture!("bedrock-to-anthropic.exception-stream.json"),
    fixture!("chat-to-bedrock.stream.json"),
];

fn wire(name: &str) -> Wire {
    match name {
        "openai_chat" => Wire::OpenaiChat,
        "openai_responses" => Wire::OpenaiResponses,
        "anthropic" => Wire::Anthropic,
        "gemini" => Wire::Gemini,
        "bedrock" => Wire::Bedrock,
        other => panic!("unknown wire {other}"),
    }
}

/// What the translation of a fixture's input gives.
fn translate(case: &Value) -> Value {
    let (from, to) = (wire(case["from"].as_str().unwrap()), wire(case["to"].as_str().unwrap()));
    let input = &case["in"];
    match case["kind"].as_str().unwrap() {
        "request" => {
            let chat = from.read_request(input.to_string().as_bytes()).unwrap();
            serde_json::from_slice(&to.write_request(&chat, 4096).unwrap()).unwrap()
        }
        "answer" => {
            let status = case["status"].as_u64().unwrap_or(200) as u16;
            match from.read_answer(status, input.to_string().as_bytes()) {
                Ok(answer) => serde_json::from_slice(&to.write_answer(&answer, 1_700_000_000)).unwrap(),
                Err(error) => {
                    let (status, body) = to.write_error(&error);
                    json!({"status": status, "body": serde_json::from_slice::<Value>(&body).unwrap()})
                }
            }
        }
        "stream" => {
            let mut reader = from.stream_reader();
            let usage = case["usage"].as_bool().unwrap_or(false);
            let mut writer = to.stream_writer(1_700_000_000, usage);
            let mut out = Vec::new();
            for event in input.as_array().unwrap() {
                let name = event[0].as_str();
                let data = match &event[1] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                for canonical in reader.read(name, &data) {
                    out.extend(writer.write(&canonical));
                }
            }
            out.extend(writer.finish());
            Value::Array(
                out.into_iter()
                    .map(|(name, data)| {
                        json!([name, serde_json::from_str::<Value>(&data).unwrap_or(Value::String(data))])
                    })
                    .collect(),
            )
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn every_fixture_translates_to_its_golden_output() {
    let mut failed = Vec::new();
    for (file, text) in FIXTURES {
        let mut case: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = translate(&case);
        if got != case["out"] {
            failed.push(format!("{file}:\n  want {}\n  got  {}", case["out"], got));
            #[cfg(not(target_arch = "wasm32"))]
            if std::env::var_os("SLUICE_BLESS").is_some() {
                case["out"] = got;
                let path = format!("{}/fixtures/translate/{file}", env!("CARGO_MANIFEST_DIR"));
                std::fs::write(path, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn streams_split_anywhere_give_the_same_events() {
    // The SSE parser hands whole events to readers; a reader must not depend on how many
    // events arrive per chunk, so feeding them one by one or all at once is the same.
    let data = [
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ];
    let mut one = Wire::OpenaiChat.stream_reader();
    let events: Vec<Event> = data.iter().flat_map(|d| one.read(None, d)).collect();
    assert_eq!(events.first(), Some(&Event::Start { id: "c1".into(), model: "m".into() }));
    assert!(events.contains(&Event::Text("Hi".into())));
    assert_eq!(events.last(), Some(&Event::End));
}

#[test]
fn unreadable_requests_and_untranslatable_members_are_refused() {
    assert!(Wire::OpenaiChat.read_request(b"[1]").is_err());
    assert!(Wire::Anthropic.read_request(b"{\"messages\": \"hi\"}").is_err());
    let server_tool = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                             "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
    let error = Wire::Anthropic.read_request(server_tool.to_string().as_bytes()).unwrap_err();
    assert!(error.contains("web_search_20250305"), "{error}");
    let document = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x", "media_type": "text/plain"}}]}]});
    let error = Wire::Anthropic.read_request(document.to_string().as_bytes()).unwrap_err();
    assert!(error.contains("document"), "{error}");
    let builtin = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         "tools": [{"type": "web_search_preview"}]});
    assert!(Wire::OpenaiChat.read_request(builtin.to_string().as_bytes()).is_err());
}

#[test]
fn a_required_limit_is_filled_and_a_given_one_kept() {
    let chat = Wire::OpenaiChat.read_request(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let out: Value = serde_json::from_slice(&Wire::Anthropic.write_request(&chat, 1234).unwrap()).unwrap();
    assert_eq!(out["max_tokens"], 1234);
    let chat = Wire::OpenaiChat
        .read_request(br#"{"model":"m","max_tokens":7,"messages":[{"role":"user","content":"hi"}]}"#)
        .unwrap();
    let out: Value = serde_json::from_slice(&Wire::Anthropic.write_request(&chat, 1234).unwrap()).unwrap();
    assert_eq!(out["max_tokens"], 7);
}

#[test]
fn a_stream_cut_before_its_end_is_still_closed_once() {
    let mut writer = Wire::Anthropic.stream_writer(0, true);
    let mut out = writer.write(&Event::Start { id: "m1".into(), model: "x".into() });
    out.extend(writer.write(&Event::Text("partial".into())));
    out.extend(writer.finish());
    let names: Vec<_> = out.iter().map(|(n, _)| n.unwrap_or("-")).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(writer.finish().is_empty());
    let mut writer = Wire::OpenaiChat.stream_writer(0, false);
    assert_eq!(writer.finish(), vec![(None, "[DONE]".to_string())]);
    assert!(writer.finish().is_empty());
}

#[test]
fn a_gemini_thought_signature_survives_a_round_trip_through_an_openai_client() {
    let answer = json!({"responseId": "r1", "candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "ab+/cd=="}]},
        "finishReason": "STOP"}]});
    let canonical = Wire::Gemini.read_answer(200, answer.to_string().as_bytes()).unwrap();
    let chat: Value = serde_json::from_slice(&Wire::OpenaiChat.write_answer(&canonical, 0)).unwrap();
    let call = &chat["choices"][0]["message"]["tool_calls"][0];
    let id = call["id"].as_str().unwrap();
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{id}");
    // The client sends the conversation back, with the call's result.
    let next = json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "21C"}]});
    let chat = Wire::OpenaiChat.read_request(next.to_string().as_bytes()).unwrap();
    let request: Value = serde_json::from_slice(&Wire::Gemini.write_request(&chat, 0).unwrap()).unwrap();
    let model_turn = &request["contents"][1];
    assert_eq!(model_turn["parts"][0]["thoughtSignature"], "ab+/cd==");
    assert_eq!(model_turn["parts"][0]["functionCall"], json!({"name": "weather", "args": {"city": "Paris"}}));
    assert_eq!(
        request["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "weather", "response": {"output": "21C"}})
    );
}

#[test]
fn gemini_tool_results_name_the_call_they_answer_even_when_ids_repeat_across_turns() {
    let history = json!({"model": "m", "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "1"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "2"}]});
    let chat = Wire::OpenaiChat.read_request(history.to_string().as_bytes()).unwrap();
    let request: Value = serde_json::from_slice(&Wire::Gemini.write_request(&chat, 0).unwrap()).unwrap();
    assert_eq!(request["contents"][2]["parts"][0]["functionResponse"]["name"], "weather");
    assert_eq!(request["contents"][4]["parts"][0]["functionResponse"]["name"], "clock");
    let orphan = json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nowhere", "content": "1"}]});
    let chat = Wire::OpenaiChat.read_request(orphan.to_string().as_bytes()).unwrap();
    let error = Wire::Gemini.write_request(&chat, 0).unwrap_err();
    assert!(error.contains("nowhere"), "{error}");
}

#[test]
fn gemini_members_with_no_canonical_form_are_refused_and_errors_read_in_every_shape() {
    let search = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}]});
    let error = Wire::Gemini.read_request(search.to_string().as_bytes()).unwrap_err();
    assert!(error.contains("googleSearch"), "{error}");
    let code = json!({"contents": [{"role": "model", "parts": [{"executableCode": {"code": "1"}}]}]});
    assert!(Wire::Gemini.read_request(code.to_string().as_bytes()).is_err());
    let two = json!({"contents": [], "generationConfig": {"candidateCount": 2}});
    assert!(Wire::Gemini.read_request(two.to_string().as_bytes()).is_err());
    // A stream request's error comes as an array; a proxy's as no JSON at all.
    let array = json!([{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}]);
    let error = Wire::Gemini.read_answer(429, array.to_string().as_bytes()).unwrap_err();
    assert_eq!((error.kind, error.message.as_str()), (super::ErrorKind::RateLimit, "quota"));
    let error = Wire::Gemini.read_answer(503, b"<html>busy</html>").unwrap_err();
    assert_eq!(error.kind, super::ErrorKind::Overloaded);
    // A generic error type or status yields to a specific HTTP status, in every schema that has one.
    let internal = json!({"error": {"code": 429, "message": "m", "status": "INTERNAL"}});
    assert_eq!(
        Wire::Gemini.read_answer(429, internal.to_string().as_bytes()).unwrap_err().kind,
        super::ErrorKind::RateLimit
    );
    let api_error = json!({"type": "error", "error": {"type": "api_error", "message": "m"}});
    assert_eq!(
        Wire::Anthropic.read_answer(429, api_error.to_string().as_bytes()).unwrap_err().kind,
        super::ErrorKind::RateLimit
    );
    assert_eq!(
        Wire::Anthropic.read_answer(500, api_error.to_string().as_bytes()).unwrap_err().kind,
        super::ErrorKind::Server
    );
    // A prompt Gemini blocked has no candidate: a filtered, empty answer.
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}});
    let answer = Wire::Gemini.read_answer(200, blocked.to_string().as_bytes()).unwrap();
    assert_eq!((answer.finish, answer.usage.input), (Some(super::Finish::ContentFilter), 3));
}
