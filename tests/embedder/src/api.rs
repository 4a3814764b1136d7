//! OpenAI's embeddings API: `POST /v1/embeddings` with `input` (a string or a list of strings)
//! and `encoding_format` (`float`, the default, or `base64`: little-endian f32, as OpenAI sends).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::Embedding;

pub const MODEL: &str = "all-MiniLM-L6-v2";

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Request {
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
}

pub struct Parsed {
    pub texts: Vec<String>,
    base64: bool,
}

/// A client error: status and an OpenAI-style error body.
pub struct Refusal(pub u16, pub Value);

fn refuse(status: u16, message: &str) -> Refusal {
    Refusal(status, json!({"error": {"message": message, "type": "invalid_request_error"}}))
}

pub fn parse(body: &[u8]) -> Result<Parsed, Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|_| refuse(400, "invalid JSON"))?;
    let request: Request =
        serde_json::from_value(value).map_err(|_| refuse(400, "`input` must be a string or a list of strings"))?;
    let texts = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) if !texts.is_empty() => texts,
        Input::Many(_) => return Err(refuse(400, "`input` must not be empty")),
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(refuse(400, "`encoding_format` must be `float` or `base64`")),
    };
    Ok(Parsed { texts, base64 })
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Datum {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// The answer's body. Typed, so vectors are written as f32 (shortest round-trip form), not
/// widened to f64 digits.
#[derive(Serialize)]
pub struct Answer {
    object: &'static str,
    model: &'static str,
    data: Vec<Datum>,
    usage: Usage,
}

pub fn answer(parsed: &Parsed, embeddings: Vec<Embedding>) -> Answer {
    let tokens: usize = embeddings.iter().map(|e| e.tokens).sum();
    let data = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if parsed.base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(e.vector)
            };
            Datum { object: "embedding", index, embedding }
        })
        .collect();
    Answer { object: "list", model: MODEL, data, usage: Usage { prompt_tokens: tokens, total_tokens: tokens } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> u16 {
        match parse(body.as_bytes()) {
            Ok(_) => 200,
            Err(Refusal(status, _)) => status,
        }
    }

    #[test]
    fn one_text_or_many() {
        assert_eq!(parse(br#"{"input": "a"}"#).map(|p| p.texts).ok(), Some(vec!["a".to_string()]));
        let many = parse(br#"{"input": ["a", "b"], "model": "x", "encoding_format": "base64"}"#);
        assert!(many.as_ref().is_ok_and(|p| p.texts.len() == 2 && p.base64));
    }

    #[test]
    fn everything_else_is_a_400() {
        for body in [
            "",
            "{",
            "[]",
            r#"{"input": 3}"#,
            r#"{"input": []}"#,
            r#"{"input": [1, 2]}"#,
            r#"{"input": ["a", null]}"#,
            r#"{"text": "a"}"#,
            r#"{"input": "a", "encoding_format": "int8"}"#,
        ] {
            assert_eq!(refused(body), 400, "{body}");
        }
    }

    #[test]
    fn answers_follow_openai_shape() {
        let parsed = Parsed { texts: vec!["a".into()], base64: false };
        let floats = answer(&parsed, vec![Embedding { vector: vec![0.5, -0.25], tokens: 3 }]);
        let text = serde_json::to_string(&floats).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"object":"list","model":"all-MiniLM-L6-v2","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#
        );
        let parsed = Parsed { texts: vec!["a".into()], base64: true };
        let packed = answer(&parsed, vec![Embedding { vector: vec![1.0], tokens: 1 }]);
        assert!(serde_json::to_string(&packed).unwrap_or_default().contains(r#""embedding":"AACAPw==""#));
    }
}
