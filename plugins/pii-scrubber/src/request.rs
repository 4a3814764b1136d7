//! Where a request carries text: everywhere. Every string value anywhere in the body is scanned
//! (message contents and parts, names, tool definitions and calls, schemas, `stop`, `user`,
//! `metadata`, unknown members, nested arrays), except
//! - the string values of the few [`STRUCTURAL`] members that carry no user data (`model`,
//!   `role`, `type`, ids, enum-valued settings), and
//! - messages whose role the configuration leaves out (`roles`; compared case-insensitively,
//!   and a role Sluice does not know is always scanned).
//!
//! Embedded payloads: a base64 payload (`data:` URLs, `data`, `file_data`) is decoded; text is
//! scanned and re-encoded, and a recognised media file (image, audio, video, PDF, ZIP-based
//! document: [`is_media`]) is passed as it is. Anything else is scanned as the string it is.
//! Member names
//! must be unique in every object ([`sluice_shared::json::unique_members`]): a provider and the
//! scrubber must not read different copies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use crate::scrub::{Scrubber, Tally, Vault};

pub use sluice_shared::json::STRUCTURAL;

/// The roles the configuration may leave out; any other role is scanned.
const KNOWN_ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];
/// Members that may hold a bare base64 payload.
const PAYLOADS: [&str; 2] = ["data", "file_data"];

/// What scanning a request found and changed.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The rewritten body; `None` when nothing changed.
    pub body: Option<Vec<u8>>,
    pub vault: Vault,
    pub tally: Tally,
    /// The text of user-controlled messages, for the injection guard (before scrubbing).
    pub user_texts: Vec<String>,
    /// The same texts as they leave (scrubbed), for `log_prompt`.
    pub sent_user_texts: Vec<String>,
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
    /// Whether a message with this role is scanned (`function` is the legacy `tool`).
    fn scans(&self, role: &str) -> bool {
        let role = match role.to_ascii_lowercase() {
            legacy if legacy == "function" => "tool".to_string(),
            // Gemini's name for the assistant.
            gemini if gemini == "model" => "assistant".to_string(),
            role => role,
        };
        !KNOWN_ROLES.contains(&role.as_str()) || self.roles.contains(&role)
    }

    /// Scrubs text; `user` texts are also kept for the injection guard.
    fn scrub(&mut self, text: &str, user: bool) -> Option<String> {
        let clean = self.scrubber.scrub(text, &mut self.scanned.vault, &mut self.scanned.tally);
        if user {
            self.scanned.user_texts.push(text.to_string());
            self.scanned.sent_user_texts.push(clean.clone().unwrap_or_else(|| text.to_string()));
        }
        clean
    }

    /// Scrubs a string value in place (decoding an embedded payload first).
    fn text(&mut self, value: &mut Value, member: &str, user: bool) {
        let Value::String(text) = value else { return };
        let new = match payload(text, PAYLOADS.contains(&member)) {
            Some(Payload::Text { prefix, text }) => {
                self.scrub(&text, user).map(|clean| format!("{prefix}{}", STANDARD.encode(clean)))
            }
            Some(Payload::Media) => None,
            None => self.scrub(text, user),
        };
        if let Some(new) = new {
            *text = new;
            self.changed = true;
        }
    }

    /// Every string inside a value; `member` is the name the value sits under.
    fn value(&mut self, value: &mut Value, member: &str, user: bool) {
        match value {
            Value::String(_) if STRUCTURAL.contains(&member) => {}
            Value::String(_) => self.text(value, member, user),
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v, member, user)),
            Value::Object(map) => {
                let role = map.get("role").and_then(Value::as_str).map(str::to_ascii_lowercase);
                if role.as_deref().is_some_and(|r| !self.scans(r)) {
                    return;
                }
                let user = match role.as_deref() {
                    Some("user" | "tool" | "function") => true,
                    // Gemini's assistant.
                    Some("model") => false,
                    Some(r) if !KNOWN_ROLES.contains(&r) => true,
                    Some(_) => false,
                    None => user,
                };
                for (name, v) in map.iter_mut() {
                    self.value(v, name, user);
                }
            }
            _ => {}
        }
    }
}

/// An embedded base64 payload.
enum Payload {
    /// UTF-8 text, and what precedes it in the string (`data:text/plain;base64,`).
    Text { prefix: String, text: String },
    /// A media file of a recognised format.
    Media,
}

/// A `data:` URL with a base64 payload, or (under a payload member) a bare base64 string, that
/// decodes to text or to a media file. `None`: scan the string as it is.
fn payload(text: &str, bare_allowed: bool) -> Option<Payload> {
    let (prefix, encoded) = if let Some(rest) = text.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        if !meta.ends_with(";base64") {
            return None; // percent-encoded text: scanned as it is
        }
        (text.get(..5 + meta.len() + 1)?, data)
    } else if bare_allowed && text.len() >= 8 {
        ("", text)
    } else {
        return None;
    };
    let bytes = STANDARD.decode(encoded).ok()?;
    if is_media(&bytes) {
        return Some(Payload::Media);
    }
    String::from_utf8(bytes).ok().map(|text| Payload::Text { prefix: prefix.to_string(), text })
}

/// Whether bytes start like an image, audio or video file, a PDF or a ZIP-based document.
pub fn is_media(bytes: &[u8]) -> bool {
    const MAGIC: [&[u8]; 12] = [
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF87a",
        b"GIF89a",
        b"%PDF-",
        b"ID3",
        b"OggS",
        b"fLaC",
        b"PK\x03\x04",
        b"\x1a\x45\xdf\xa3",
        b"\xff\xfb",
        b"\xff\xf3",
    ];
    let riff = bytes.starts_with(b"RIFF") && matches!(bytes.get(8..12), Some(b"WEBP" | b"WAVE" | b"AVI "));
    let iso = bytes.get(4..8) == Some(b"ftyp"); // MP4, M4A, MOV, HEIC, AVIF
    riff || iso || MAGIC.iter().any(|m| bytes.starts_with(m))
}

/// Scans and scrubs a request body, parsed once. Not a JSON object, or a duplicate member name
/// anywhere: an error (the caller decides).
pub fn scan(body: &[u8], scrubber: &Scrubber, roles: &[String]) -> Result<Scanned, String> {
    let mut value = sluice_shared::json::from_unique_object(body).map_err(|e| e.to_string())?;
    let mut walk = Walk { scrubber, roles, scanned: Scanned::default(), changed: false };
    if let Some(object) = value.as_object_mut() {
        let format = object.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str);
        let gemini_format =
            object.get("generationConfig").and_then(|c| c.get("responseMimeType")).and_then(Value::as_str);
        walk.scanned.wants_json =
            matches!(format, Some("json_object" | "json_schema")) || gemini_format == Some("application/json");
        for (name, v) in object.iter_mut() {
            match name.as_str() {
                // The prompt: user text for the injection guard.
                "messages" | "prompt" | "input" | "contents" => walk.value(v, name, true),
                // Anthropic's system prompt; the Responses API's instructions; Gemini's.
                "system" | "instructions" | "systemInstruction" if !walk.scans("system") => {}
                _ => walk.value(v, name, false),
            }
        }
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
        assert_eq!(scanned.user_texts, ["I am jane@x.com", "data:...", "sent to jane@x.com"]);
        assert_eq!(scanned.sent_user_texts, ["I am <EMAIL_2>", "data:...", "sent to <EMAIL_2>"]);
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
        // Members are walked in name order: `input` before `prompt`.
        assert_eq!((v["prompt"][0].as_str(), v["input"].as_str()), (Some("<EMAIL_2>"), Some("<EMAIL_1>")));
        // Shapes no API has are scanned string by string, not passed unseen.
        let (v, _) =
            scanned_json(r#"{"messages": {"x": ["a@x.com"]}, "prompt": {"y": "b@x.com"}}"#, &Config::default().roles);
        assert_eq!((v["messages"]["x"][0].as_str(), v["prompt"]["y"].as_str()), (Some("<EMAIL_1>"), Some("<EMAIL_2>")));
    }

    /// Every place a probe found raw PII reaching the provider, in every API schema.
    #[test]
    fn every_string_anywhere_is_scanned() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let bodies = [
            // OpenAI chat
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f", "description": "mail jane@x.com", "parameters": {"type": "object", "properties": {"to": {"type": "string", "description": "like jane@x.com"}}}}}]}"#.to_string(),
            r#"{"model": "m", "messages": [], "functions": [{"name": "f", "description": "jane@x.com"}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "user", "name": "jane@x.com", "content": "hi"}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.com/?u=jane@x.com"}}]}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "assistant", "content": [{"type": "refusal", "refusal": "jane@x.com"}]}]}"#.into(),
            format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": [{{"type": "file", "file": {{"filename": "jane@x.com.txt", "file_data": "data:text/plain;base64,{}"}}}}]}}]}}"#, b64("write to jane@x.com")),
            r#"{"model": "m", "messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{\"to\": \"jane@x.com\"}"}}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "function", "name": "f", "content": "jane@x.com"}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "User", "content": "jane@x.com"}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "ADMIN", "content": "jane@x.com"}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "jane@x.com"}"#.into(),
            r#"{"model": "m", "messages": [], "prediction": {"type": "content", "content": "jane@x.com"}}"#.into(),
            r#"{"model": "m", "messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"description": "jane@x.com"}}}}"#.into(),
            r#"{"model": "m", "messages": [], "stop": ["jane@x.com"]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "jane@x.com", "arguments": "{}"}}]}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": {"note": "jane@x.com"}}]}]}"#.into(),
            r#"{"model": "m", "messages": [{"role": "user", "content": [[["jane@x.com"]]]}]}"#.into(),
            r#"{"model": "m", "messages": [], "metadata": {"who": "jane@x.com"}}"#.into(),
            // Responses API
            r#"{"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "jane@x.com"}]}"#.into(),
            r#"{"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\": \"jane@x.com\"}"}]}"#.into(),
            r#"{"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f", "description": "jane@x.com"}]}"#.into(),
            format!(r#"{{"model": "m", "input": [{{"role": "user", "content": [{{"type": "input_file", "filename": "a.txt", "file_data": "{}"}}]}}]}}"#, b64("jane@x.com")),
            // Anthropic Messages
            r#"{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "jane@x.com"}}]}]}"#.into(),
            format!(r#"{{"model": "m", "max_tokens": 1, "messages": [{{"role": "user", "content": [{{"type": "document", "source": {{"type": "base64", "media_type": "text/plain", "data": "{}"}}}}]}}]}}"#, b64("to jane@x.com")),
            r#"{"model": "m", "max_tokens": 1, "messages": [], "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"description": "jane@x.com"}}}}]}"#.into(),
            r#"{"model": "m", "max_tokens": 1, "messages": [], "metadata": {"user_id": "jane@x.com"}}"#.into(),
            // Gemini generateContent
            r#"{"contents": [{"role": "user", "parts": [{"text": "mail jane@x.com"}]}]}"#.into(),
            r#"{"systemInstruction": {"parts": [{"text": "ops is jane@x.com"}]}, "contents": []}"#.into(),
            r#"{"contents": [{"role": "model", "parts": [{"functionCall": {"name": "send", "args": {"to": "jane@x.com"}}}]}]}"#.into(),
            r#"{"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "send", "response": {"output": "sent to jane@x.com"}}}]}]}"#.into(),
            format!(r#"{{"contents": [{{"role": "user", "parts": [{{"inlineData": {{"mimeType": "text/plain", "data": "{}"}}}}]}}]}}"#, b64("write to jane@x.com")),
            r#"{"contents": [], "tools": [{"functionDeclarations": [{"name": "f", "description": "jane@x.com"}]}]}"#.into(),
            r#"{"contents": [], "generationConfig": {"stopSequences": ["jane@x.com"]}}"#.into(),
            // Detection: a card number that is also valid base64 is not mistaken for a payload.
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "4111111111111111", "format": "wav"}}]}]}"#.into(),
        ];
        for body in &bodies {
            let scanned = scan(body.as_bytes(), &scrubber(), &Config::default().roles).expect(body);
            let out = String::from_utf8(scanned.body.clone().unwrap_or_default()).unwrap();
            assert!(!out.is_empty(), "nothing found in {body}");
            assert!(!out.contains("jane@x.com") && !out.contains("4111111111111111"), "{out}");
            for encoded in ["d3JpdGUgdG8gamFuZUB4LmNvbQ==", "amFuZUB4LmNvbQ==", "dG8gamFuZUB4LmNvbQ=="] {
                assert!(!out.contains(encoded), "{out}");
            }
        }
        // Structural members stay as they are; media payloads are passed unread.
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\n jane@x.com");
        let body = format!(
            r#"{{"model": "jane@x.com", "messages": [{{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": "data:image/png;base64,{png}"}}}}]}}]}}"#
        );
        assert!(scan(body.as_bytes(), &scrubber(), &Config::default().roles).unwrap().body.is_none());
    }

    #[test]
    fn gemini_roles_and_json_requests() {
        let roles = parse_config::<Config>(Some(br#"{"roles": ["user"]}"#)).unwrap().roles;
        let body = r#"{"systemInstruction": {"parts": [{"text": "ops@corp.com"}]},
            "contents": [{"role": "model", "parts": [{"text": "bot@corp.com"}]}, {"role": "user", "parts": [{"text": "me@x.com"}]}],
            "generationConfig": {"responseMimeType": "application/json"}}"#;
        let scanned = scan(body.as_bytes(), &scrubber(), &roles).unwrap();
        let out = String::from_utf8(scanned.body.unwrap()).unwrap();
        // `model` is the assistant: left out with the system prompt; the user's turn is scrubbed.
        assert!(out.contains("ops@corp.com") && out.contains("bot@corp.com") && !out.contains("me@x.com"), "{out}");
        assert_eq!(scanned.user_texts, vec!["me@x.com".to_string()]);
        assert!(scanned.wants_json);
        // A thought signature is opaque state, never rewritten.
        let signed =
            r#"{"contents": [{"role": "model", "parts": [{"text": "ok", "thoughtSignature": "4111111111111111"}]}]}"#;
        assert!(scan(signed.as_bytes(), &scrubber(), &Config::default().roles).unwrap().body.is_none());
    }

    #[test]
    fn duplicate_members_anywhere_are_refused() {
        let body = br#"{"model": "m", "messages": [{"role": "user", "content": "jane@x.com", "content": "hi"}]}"#;
        assert!(scan(body, &scrubber(), &Config::default().roles).is_err());
        let body = br#"{"model": "m", "messages": [], "messages": [{"role": "user", "content": "jane@x.com"}]}"#;
        assert!(scan(body, &scrubber(), &Config::default().roles).is_err());
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
        // Roles compare case-insensitively; an unknown role is always scanned.
        let (v, _) = scanned_json(
            r#"{"messages": [{"role": "SYSTEM", "content": "ops@corp.com"}, {"role": "wizard", "content": "me@x.com"}]}"#,
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
