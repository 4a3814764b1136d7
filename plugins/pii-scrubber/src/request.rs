//! Where a request carries text, for every API the gateway serves: chat and Anthropic messages
//! (string content and content parts, tool calls and results, the system prompt), the legacy
//! `prompt`, the Responses API's `input` and `instructions`, and embeddings' `input`.

use serde_json::Value;

use crate::scrub::{Scrubber, Tally, Vault};

/// What scanning a request found and changed.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The rewritten body; `None` when nothing changed.
    pub body: Option<Vec<u8>>,
    pub vault: Vault,
    pub tally: Tally,
    /// The text of user-controlled messages, for the injection guard (before scrubbing).
    pub user_texts: Vec<String>,
    /// The client asked for a JSON answer (`response_format` `json_object` or `json_schema`).
    pub wants_json: bool,
}

struct Walk<'a> {
    scrubber: &'a Scrubber,
    roles: &'a [String],
    scanned: Scanned,
    changed: bool,
}

impl Walk<'_> {
    fn scans(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Scrubs a string in place; `user` texts are also kept for the injection guard.
    fn text(&mut self, value: &mut Value, user: bool) {
        let Value::String(text) = value else { return };
        if user {
            self.scanned.user_texts.push(text.clone());
        }
        if let Some(new) = self.scrubber.scrub(text, &mut self.scanned.vault, &mut self.scanned.tally) {
            *text = new;
            self.changed = true;
        }
    }

    /// Every string inside a value (tool inputs, tool results).
    fn all_strings(&mut self, value: &mut Value, user: bool) {
        match value {
            Value::String(_) => self.text(value, user),
            Value::Array(items) => items.iter_mut().for_each(|v| self.all_strings(v, user)),
            Value::Object(map) => map.values_mut().for_each(|v| self.all_strings(v, user)),
            _ => {}
        }
    }

    /// A message's content: a string, or parts whose text fields are scanned.
    fn content(&mut self, content: &mut Value, user: bool) {
        match content {
            Value::String(_) => self.text(content, user),
            Value::Array(parts) => {
                for part in parts {
                    match part {
                        Value::String(_) => self.text(part, user),
                        Value::Object(map) => {
                            for key in ["text", "input", "content", "arguments"] {
                                if let Some(v) = map.get_mut(key) {
                                    self.all_strings(v, user);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn message(&mut self, message: &mut Value, default_role: &str) {
        let role = message.get("role").and_then(Value::as_str).unwrap_or(default_role).to_string();
        if !self.scans(&role) {
            return;
        }
        let user = role == "user" || role == "tool";
        if let Some(content) = message.get_mut("content") {
            self.content(content, user);
        }
        // OpenAI assistant tool calls: arguments are a JSON string.
        for call in message.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(arguments) = call.pointer_mut("/function/arguments") {
                self.text(arguments, false);
            }
        }
    }

    fn messages(&mut self, messages: &mut Value) {
        // A shape no API has: every string in it is scanned rather than passed unseen.
        if !messages.is_array() {
            if self.scans("user") {
                self.all_strings(messages, true);
            }
            return;
        }
        for message in messages.as_array_mut().into_iter().flatten() {
            match message {
                Value::String(_) => {
                    if self.scans("user") {
                        self.text(message, true);
                    }
                }
                _ => self.message(message, "user"),
            }
        }
    }
}

/// Scans and scrubs a request body. Not a JSON object: an error (the caller decides).
pub fn scan(body: &[u8], scrubber: &Scrubber, roles: &[String]) -> Result<Scanned, String> {
    let mut value: Value = sluice_shared::json::from_object(body).map_err(|e| e.to_string())?;
    let mut walk = Walk { scrubber, roles, scanned: Scanned::default(), changed: false };
    if let Some(object) = value.as_object_mut() {
        if let Some(messages) = object.get_mut("messages") {
            walk.messages(messages);
        }
        // Anthropic's system prompt; the Responses API's instructions.
        for key in ["system", "instructions"] {
            if let (Some(system), true) = (object.get_mut(key), walk.scans("system")) {
                walk.content(system, false);
            }
        }
        // Legacy completions' prompt; embeddings' and the Responses API's input.
        for key in ["prompt", "input"] {
            if let Some(input) = object.get_mut(key) {
                walk.messages(input);
            }
        }
        let format = object.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str);
        walk.scanned.wants_json = matches!(format, Some("json_object" | "json_schema"));
    }
    let mut scanned = walk.scanned;
    if walk.changed {
        scanned.body = Some(serde_json::to_vec(&value).map_err(|e| e.to_string())?);
    }
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use sluice_shared::config::parse_config;

    fn scrubber() -> Scrubber {
        Scrubber::new(&Config::default()).unwrap()
    }

    fn scanned_json(body: &str, roles: &[String]) -> (Value, Scanned) {
        let scanned = scan(body.as_bytes(), &scrubber(), roles).unwrap();
        let value = serde_json::from_slice(scanned.body.as_deref().unwrap_or(body.as_bytes())).unwrap();
        (value, scanned)
    }

    #[test]
    fn chat_messages_parts_and_tool_calls() {
        let body = r#"{"model": "m", "response_format": {"type": "json_object"}, "messages": [
            {"role": "system", "content": "Operator is ops@corp.com"},
            {"role": "user", "content": [{"type": "text", "text": "I am jane@x.com"}, {"type": "image_url", "image_url": {"url": "data:..."}}]},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "mail", "arguments": "{\"to\": \"jane@x.com\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sent to jane@x.com"}]}"#;
        let (v, scanned) = scanned_json(body, &Config::default().roles);
        assert_eq!(v["messages"][0]["content"], "Operator is <EMAIL_1>");
        assert_eq!(v["messages"][1]["content"][0]["text"], "I am <EMAIL_2>");
        assert_eq!(v["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"to\": \"<EMAIL_2>\"}");
        assert_eq!(v["messages"][3]["content"], "sent to <EMAIL_2>");
        assert!(scanned.wants_json);
        assert_eq!(scanned.user_texts, ["I am jane@x.com", "sent to jane@x.com"]);
    }

    #[test]
    fn anthropic_system_legacy_prompt_and_input() {
        let (v, _) = scanned_json(
            r#"{"system": [{"type": "text", "text": "call +44 20 7946 0958"}], "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "ip 10.1.2.3"}]}]}]}"#,
            &Config::default().roles,
        );
        assert_eq!(v["system"][0]["text"], "call <PHONE_1>");
        assert_eq!(v["messages"][0]["content"][0]["content"][0]["text"], "ip <IP_ADDRESS_1>");
        let (v, _) = scanned_json(r#"{"prompt": ["a@x.com", "b"], "input": "c@x.com"}"#, &Config::default().roles);
        assert_eq!((v["prompt"][0].as_str(), v["input"].as_str()), (Some("<EMAIL_1>"), Some("<EMAIL_2>")));
        // Shapes no API has are scanned string by string, not passed unseen.
        let (v, _) =
            scanned_json(r#"{"messages": {"x": ["a@x.com"]}, "prompt": {"y": "b@x.com"}}"#, &Config::default().roles);
        assert_eq!((v["messages"]["x"][0].as_str(), v["prompt"]["y"].as_str()), (Some("<EMAIL_1>"), Some("<EMAIL_2>")));
    }

    #[test]
    fn roles_limit_the_scan_and_clean_bodies_stay_untouched() {
        let roles = parse_config::<Config>(Some(br#"{"roles": ["user"]}"#)).unwrap().roles;
        let (v, _) = scanned_json(
            r#"{"messages": [{"role": "system", "content": "ops@corp.com"}, {"role": "user", "content": "me@x.com"}]}"#,
            &roles,
        );
        assert_eq!(
            (v["messages"][0]["content"].as_str(), v["messages"][1]["content"].as_str()),
            (Some("ops@corp.com"), Some("<EMAIL_1>"))
        );
        let clean = scan(br#"{"messages": [{"role": "user", "content": "hello"}]}"#, &scrubber(), &roles).unwrap();
        assert!(clean.body.is_none());
        for bad in [&b"not json"[..], b"[1,2]", b"\xff\xfe", b""] {
            assert!(scan(bad, &scrubber(), &roles).is_err());
        }
    }
}
