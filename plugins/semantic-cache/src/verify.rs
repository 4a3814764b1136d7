//! The optional verifier: a second opinion on a grey-zone candidate (similar enough, but the
//! guard is [`Verdict::Unsure`](crate::same_question::Verdict) or the pair is only
//! [`Close`](crate::same_question::Verdict) below its margin), from a service the operator runs.
//!
//! - **Rerank** (`kind: rerank`): `POST /rerank` with `{"model", "query", "documents": [the
//!   cached question], "return_documents": false}`, in the shape TEI, vLLM, Jina and Cohere
//!   serve. Scores come back as TEI's `[{"index", "score"}]` or as `{"results": [{"index",
//!   "relevance_score"}]}`; the pair is the same question when the score is at least `min_score`.
//! - **Chat** (`kind: chat`): an OpenAI-compatible chat model asked [`PROMPT`] at temperature 0
//!   for one token; `yes` serves, `no` refuses, anything else counts as a failure.
//!
//! A verdict is kept per pair of questions (in each worker, `cache_entries` pairs; the oldest
//! half is dropped when full), so a popular paraphrase costs one call per worker. A timeout, an
//! error status or an unreadable answer falls back to the guard's answer: a miss.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::config::{Verifier, VerifierKind};

/// The question put to a chat verifier (its system message); the user message is
/// `Question A: …\nQuestion B: …`.
pub const PROMPT: &str = "You decide whether two questions sent to an assistant ask for the same answer. \
Answer yes only if one correct answer fully answers both: same entities, numbers, units, direction, \
time, scope, negation, tense and quantifiers. Answer with one word: yes or no.";

/// The request body for a pair (`question`: the new prompt; `cached`: the stored one).
pub fn request_body(verifier: &Verifier, question: &str, cached: &str) -> Vec<u8> {
    let body = match verifier.kind {
        VerifierKind::Rerank => {
            let mut body = json!({"query": question, "documents": [cached], "return_documents": false});
            if let (Some(model), Some(map)) = (&verifier.model, body.as_object_mut()) {
                map.insert("model".into(), Value::String(model.clone()));
            }
            body
        }
        VerifierKind::Chat => json!({
            "model": verifier.model.clone().unwrap_or_default(),
            "temperature": 0,
            "max_tokens": 1,
            "messages": [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": format!("Question A: {question}\nQuestion B: {cached}")},
            ],
        }),
    };
    body.to_string().into_bytes()
}

/// The verifier's verdict from a successful answer: `None` when it cannot be read.
pub fn read_answer(verifier: &Verifier, body: &[u8]) -> Option<bool> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    match verifier.kind {
        VerifierKind::Rerank => {
            let results = answer.get("results").unwrap_or(&answer).as_array()?;
            let first = results.iter().find(|r| r.get("index").and_then(Value::as_u64) == Some(0))?;
            let score = first.get("relevance_score").or_else(|| first.get("score")).and_then(Value::as_f64)?;
            score.is_finite().then_some(score >= verifier.min_score)
        }
        VerifierKind::Chat => {
            let text = answer.pointer("/choices/0/message/content")?.as_str()?;
            let word: String = text.trim().chars().take_while(|c| c.is_alphabetic()).collect::<String>().to_lowercase();
            match word.as_str() {
                "yes" => Some(true),
                "no" => Some(false),
                _ => None,
            }
        }
    }
}

/// Verdicts by pair, per worker.
#[derive(Debug, Default)]
pub struct Verdicts {
    entries: HashMap<u64, (bool, u64)>,
    next: u64,
}

/// A pair's key: order matters (a new prompt against a stored one).
pub fn pair_key(question: &str, cached: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in question.bytes().chain([0u8]).chain(cached.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Verdicts {
    pub fn get(&self, key: u64) -> Option<bool> {
        self.entries.get(&key).map(|(verdict, _)| *verdict)
    }

    pub fn put(&mut self, key: u64, verdict: bool, capacity: usize) {
        if self.entries.len() >= capacity {
            // Drop the older half: a bounded map without per-entry bookkeeping.
            let cutoff = self.next.saturating_sub((capacity / 2) as u64);
            self.entries.retain(|_, (_, born)| *born >= cutoff);
        }
        self.entries.insert(key, (verdict, self.next));
        self.next += 1;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(kind: VerifierKind) -> Verifier {
        Verifier { kind, model: Some("m".into()), ..Verifier::default() }
    }

    #[test]
    fn rerank_requests_and_both_answer_shapes() {
        let v = verifier(VerifierKind::Rerank);
        let body: Value = serde_json::from_slice(&request_body(&v, "new?", "old?")).unwrap();
        assert_eq!(body, json!({"model": "m", "query": "new?", "documents": ["old?"], "return_documents": false}));
        assert_eq!(read_answer(&v, br#"[{"index":0,"score":0.93}]"#), Some(true));
        assert_eq!(read_answer(&v, br#"{"results":[{"index":0,"relevance_score":0.2}]}"#), Some(false));
        assert_eq!(read_answer(&v, br#"{"results":[{"index":0,"relevance_score":0.5}]}"#), Some(true));
        for garbage in [&b"nope"[..], br#"{"results":[]}"#, br#"[{"index":1,"score":0.9}]"#, br#"[{"index":0}]"#, b"{}"]
        {
            assert_eq!(read_answer(&v, garbage), None, "{}", String::from_utf8_lossy(garbage));
        }
    }

    #[test]
    fn chat_requests_and_strict_yes_no() {
        let v = verifier(VerifierKind::Chat);
        let body: Value = serde_json::from_slice(&request_body(&v, "new?", "old?")).unwrap();
        assert_eq!(body["messages"][0]["content"], PROMPT);
        assert_eq!(body["messages"][1]["content"], "Question A: new?\nQuestion B: old?");
        assert_eq!((body["temperature"].as_u64(), body["max_tokens"].as_u64()), (Some(0), Some(1)));
        let answer = |text: &str| json!({"choices": [{"message": {"content": text}}]}).to_string().into_bytes();
        assert_eq!(read_answer(&v, &answer("Yes")), Some(true));
        assert_eq!(read_answer(&v, &answer(" no.")), Some(false));
        assert_eq!(read_answer(&v, &answer("maybe")), None);
        assert_eq!(read_answer(&v, &answer("yesterday")), None);
        assert_eq!(read_answer(&v, b"{\"choices\":[]}"), None);
    }

    #[test]
    fn verdicts_are_kept_per_ordered_pair_and_bounded() {
        let mut verdicts = Verdicts::default();
        assert_ne!(pair_key("a", "b"), pair_key("b", "a"));
        assert_ne!(pair_key("ab", "c"), pair_key("a", "bc"));
        verdicts.put(pair_key("a", "b"), true, 4);
        assert_eq!(verdicts.get(pair_key("a", "b")), Some(true));
        assert_eq!(verdicts.get(pair_key("b", "a")), None);
        for i in 0..20 {
            verdicts.put(i, i % 2 == 0, 4);
            assert!(verdicts.len() <= 4);
        }
        assert_eq!(verdicts.get(19), Some(false));
    }
}
