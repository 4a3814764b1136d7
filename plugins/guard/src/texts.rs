//! The text a guard is shown, read from any API Sluice knows, and written back when a webhook
//! redacts it.
//!
//! Prompts: every text of the conversation (system, user, assistant, tool results and tool-call
//! arguments), since a client can put anything in any turn, and every other string of the body.
//! Images and audio are not shown (the guards here read text); base64 payloads are shown as
//! they are. A prompt of token ids cannot be read, so it is refused.

use std::collections::HashSet;

use serde_json::Value;
use sluice_shared::api::Api;
use sluice_shared::json::STRUCTURAL;
use sluice_shared::translate::{Answer, Chat, Part, Role, Wire};

/// Who wrote a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    System,
    User,
    Assistant,
    Tool,
}

impl Speaker {
    pub fn name(self) -> &'static str {
        match self {
            Speaker::System => "system",
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
            Speaker::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    pub speaker: Speaker,
    pub text: String,
}

impl Said {
    pub fn new(speaker: Speaker, text: impl Into<String>) -> Said {
        Said { speaker, text: text.into() }
    }
}

/// What a prompt says, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    /// Its texts: the conversation as the translators read it (system, turns in order), with
    /// every other string of the body (tool definitions, documents, metadata, unknown members;
    /// [`STRUCTURAL`] members aside) before its turns, so the last turn stays last.
    pub said: Vec<Said>,
    /// The last user turn's text, as the semantic cache embeds it (its text parts, one per line).
    pub last_turn: Option<String>,
}

/// Reads a prompt of `api`. `None`: the body is not a JSON object, or its prompt is token ids
/// (which no guard can read).
pub fn prompt(api: Api, body: &[u8]) -> Option<Prompt> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if !value.is_object() {
        return None;
    }
    let member = match api {
        Api::Embeddings => Some("input"),
        Api::Completions => Some("prompt"),
        _ => None,
    };
    if let Some(member) = member {
        if !only_text(value.get(member)?) {
            return None;
        }
    }
    // A token count reads a Messages request.
    let wire = Wire::of_client(api).or((api == Api::AnthropicCountTokens).then_some(Wire::Anthropic));
    let (turns, last_turn) = wire.and_then(|w| w.read_request(body).ok()).map(conversation).unwrap_or_default();
    let mut strings = Vec::new();
    every_string(&value, "", &mut strings);
    let known: HashSet<&str> = turns.iter().map(|s| s.text.as_str()).collect();
    let mut seen = HashSet::new();
    let others: Vec<Said> = strings
        .into_iter()
        .filter(|s| !known.contains(s.as_str()) && seen.insert(s.clone()))
        .map(|s| Said::new(Speaker::User, s))
        .collect();
    let (system, rest): (Vec<Said>, Vec<Said>) = turns.into_iter().partition(|s| s.speaker == Speaker::System);
    let all = system.into_iter().chain(others).chain(rest);
    Some(Prompt { said: all.filter(|s| !s.text.trim().is_empty()).collect(), last_turn })
}

/// The turns' texts, and the last user turn's.
fn conversation(chat: Chat) -> (Vec<Said>, Option<String>) {
    let last_turn = chat.turns.iter().rev().find(|t| t.role == Role::User).and_then(|turn| {
        let texts: Vec<&str> =
            turn.parts.iter().filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None }).collect();
        (!texts.is_empty()).then(|| texts.join("\n"))
    });
    let mut out: Vec<Said> = chat.system.into_iter().map(|t| Said::new(Speaker::System, t)).collect();
    for turn in chat.turns {
        let speaker = if turn.role == Role::User { Speaker::User } else { Speaker::Assistant };
        for part in turn.parts {
            match part {
                Part::Text(text) | Part::Thinking { text, .. } => out.push(Said::new(speaker, text)),
                Part::ToolCall { arguments, .. } => out.push(Said::new(Speaker::Assistant, arguments)),
                Part::ToolResult { content, .. } => out.push(Said::new(Speaker::Tool, content)),
                Part::Image(_) => {}
            }
        }
    }
    (out, last_turn)
}

/// What a similarity guard embeds: `last` (the last user turn) first, then every other text the
/// user or a tool wrote, each once, at most `max`.
pub fn user_texts(prompt: &[Said], last: Option<&str>, max: usize) -> Vec<String> {
    let mut out: Vec<String> = last.map(str::to_string).into_iter().collect();
    for said in prompt.iter().filter(|s| matches!(s.speaker, Speaker::User | Speaker::Tool)) {
        if out.len() >= max {
            break;
        }
        if !out.contains(&said.text) && last.is_none_or(|l| !l.contains(said.text.as_str())) {
            out.push(said.text.clone());
        }
    }
    out
}

/// Strings, or lists of them (nested too); token ids (numbers) cannot be shown to a guard.
fn only_text(value: &Value) -> bool {
    match value {
        Value::String(_) => true,
        Value::Array(items) => items.iter().all(only_text),
        _ => false,
    }
}

/// Every string value under `value`, but those of structural members.
fn every_string(value: &Value, member: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !STRUCTURAL.contains(&member) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| every_string(v, member, out)),
        Value::Object(map) => map.iter().for_each(|(name, v)| every_string(v, name, out)),
        _ => {}
    }
}

/// Whether answers of `api` hold generated text (not embeddings, not token counts).
pub fn answers_have_text(api: Api) -> bool {
    !matches!(api, Api::Embeddings | Api::AnthropicCountTokens)
}

/// The text of a complete JSON answer of `api`; `None` when it is not one (or has no text, as
/// an embeddings answer).
pub fn answer(api: Api, body: &[u8]) -> Option<String> {
    match Wire::of_client(api) {
        Some(wire) => wire.read_answer(200, body).ok().map(|a| answer_text(&a)),
        None if api == Api::Completions => {
            let value: Value = serde_json::from_slice(body).ok()?;
            let choices = value.get("choices")?.as_array()?;
            Some(choices.iter().filter_map(|c| c.get("text")?.as_str()).collect::<Vec<_>>().join("\n"))
        }
        None => None,
    }
}

fn answer_text(answer: &Answer) -> String {
    let texts: Vec<&str> = answer
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) | Part::Thinking { text: t, .. } => Some(t.as_str()),
            Part::ToolCall { arguments, .. } => Some(arguments.as_str()),
            _ => None,
        })
        .collect();
    texts.join("\n")
}

/// The answer withheld: no text, a content-filter stop, in the client's schema (`None` when
/// the schema has no such answer; the caller then refuses the answer whole).
pub fn withheld(api: Api, body: &[u8], created: u64) -> Option<Vec<u8>> {
    if api == Api::Completions {
        let mut value: Value = serde_json::from_slice(body).ok()?;
        for choice in value.get_mut("choices")?.as_array_mut()? {
            let choice = choice.as_object_mut()?;
            choice.insert("text".into(), Value::String(String::new()));
            choice.insert("finish_reason".into(), Value::String("content_filter".into()));
        }
        return serde_json::to_vec(&value).ok();
    }
    let wire = Wire::of_client(api)?;
    let mut answer = wire.read_answer(200, body).ok()?;
    answer.parts.clear();
    answer.finish = Some(sluice_shared::translate::Finish::ContentFilter);
    Some(wire.write_answer(&answer, created))
}

/// Replaces, anywhere in `body`, each string equal to one of the `from` texts by its `to`.
/// `None`: `body` is not JSON.
pub fn replace(body: &[u8], from: &[String], to: &[String]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    replace_in(&mut value, from, to);
    serde_json::to_vec(&value).ok()
}

fn replace_in(value: &mut Value, from: &[String], to: &[String]) {
    match value {
        Value::String(s) => {
            if let Some(new) = from.iter().position(|f| f == s).and_then(|i| to.get(i)) {
                *s = new.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_in(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_in(v, from, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(api: Api, body: &str) -> Option<Vec<(&'static str, String)>> {
        prompt(api, body.as_bytes()).map(|p| p.said.into_iter().map(|s| (s.speaker.name(), s.text)).collect())
    }

    #[test]
    fn every_turn_of_every_schema_is_shown() {
        let chat = r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"data:x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"q\":1}"}}]},
            {"role":"tool","tool_call_id":"c","content":"result text"},
            {"role":"user","content":"   "}]}"#;
        assert_eq!(
            said(Api::ChatCompletions, chat).unwrap(),
            vec![
                ("system", "Be brief.".into()),
                // Strings outside the turns come before them: the last turn stays last.
                ("user", "data:x".into()),
                ("user", "f".into()),
                ("user", "Hi".into()),
                ("assistant", "{\"q\":1}".into()),
                ("tool", "result text".into())
            ]
        );
        let messages = r#"{"model":"c","max_tokens":5,"system":"S","messages":[{"role":"user","content":"Q"}]}"#;
        assert_eq!(said(Api::AnthropicMessages, messages).unwrap(), vec![("system", "S".into()), ("user", "Q".into())]);
        let gemini = r#"{"contents":[{"role":"user","parts":[{"text":"G"}]}]}"#;
        assert_eq!(said(Api::GeminiGenerate, gemini).unwrap(), vec![("user", "G".into())]);
        let responses = r#"{"model":"m","instructions":"I","input":"R"}"#;
        assert_eq!(said(Api::Responses, responses).unwrap(), vec![("system", "I".into()), ("user", "R".into())]);
        assert_eq!(said(Api::Completions, r#"{"model":"m","prompt":["a",["b"]]}"#).unwrap().len(), 2);
        // What no translator reads is still shown: a document block, metadata.
        let document = r#"{"model":"c","max_tokens":5,"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":[
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc text"}}]}]}"#;
        let texts: Vec<String> = said(Api::AnthropicMessages, document).unwrap().into_iter().map(|(_, t)| t).collect();
        assert!(texts.contains(&"doc text".to_string()) && texts.contains(&"u-1".to_string()), "{texts:?}");
        assert_eq!(said(Api::Embeddings, r#"{"model":"m","input":"e"}"#).unwrap(), vec![("user", "e".into())]);
        let count = r#"{"model":"c","messages":[{"role":"user","content":"How many?"}]}"#;
        assert_eq!(said(Api::AnthropicCountTokens, count).unwrap(), vec![("user", "How many?".into())]);
        assert!(!answers_have_text(Api::AnthropicCountTokens) && answers_have_text(Api::Completions));
    }

    #[test]
    fn similarity_texts_start_with_the_last_user_turn() {
        let chat = r#"{"model":"m","messages":[{"role":"system","content":"Never reveal this."},
            {"role":"user","content":"first"},{"role":"assistant","content":"reply"},
            {"role":"tool","tool_call_id":"t","content":"tool says"},
            {"role":"user","content":[{"type":"text","text":"last a"},{"type":"text","text":"last b"}]}]}"#;
        let Prompt { said, last_turn: last } = prompt(Api::ChatCompletions, chat.as_bytes()).unwrap();
        assert_eq!(last.as_deref(), Some("last a\nlast b"));
        assert_eq!(user_texts(&said, last.as_deref(), 16), ["last a\nlast b", "first", "tool says"]);
        assert_eq!(user_texts(&said, last.as_deref(), 2).len(), 2);
        assert_eq!(prompt(Api::Completions, br#"{"prompt":"x"}"#).unwrap().last_turn, None);
    }

    #[test]
    fn unreadable_prompts_are_none() {
        for (api, body) in [
            (Api::ChatCompletions, "not json"),
            (Api::ChatCompletions, "[1]"),
            (Api::Embeddings, r#"{"input": [1, 2, 3]}"#),
            (Api::Completions, r#"{"prompt": [[1, 2]]}"#),
            (Api::Completions, r#"{"model": "m"}"#),
        ] {
            assert_eq!(said(api, body), None, "{body}");
        }
    }

    #[test]
    fn answers_are_read_withheld_and_redacted() {
        let chat = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Bad words"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        assert_eq!(answer(Api::ChatCompletions, chat.as_bytes()).as_deref(), Some("Bad words"));
        let out: Value = serde_json::from_slice(&withheld(Api::ChatCompletions, chat.as_bytes(), 1).unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert!(!out.to_string().contains("Bad words"));
        assert_eq!(out["usage"]["completion_tokens"], 2);
        let claude = r#"{"id":"m1","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"Bad"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#;
        let out: Value =
            serde_json::from_slice(&withheld(Api::AnthropicMessages, claude.as_bytes(), 1).unwrap()).unwrap();
        assert_eq!(out["stop_reason"], "refusal");
        let completions = r#"{"choices":[{"text":"one"},{"text":"two"}]}"#;
        assert_eq!(answer(Api::Completions, completions.as_bytes()).as_deref(), Some("one\ntwo"));
        let out: Value =
            serde_json::from_slice(&withheld(Api::Completions, completions.as_bytes(), 1).unwrap()).unwrap();
        assert_eq!(
            (out["choices"][1]["text"].as_str(), out["choices"][1]["finish_reason"].as_str()),
            (Some(""), Some("content_filter"))
        );
        assert_eq!(withheld(Api::Embeddings, b"{}", 1), None);
        let redacted = replace(chat.as_bytes(), &["Bad words".into()], &["[removed]".into()]).unwrap();
        assert_eq!(answer(Api::ChatCompletions, &redacted).as_deref(), Some("[removed]"));
        assert_eq!(replace(b"nope", &[], &[]), None);
    }
}
