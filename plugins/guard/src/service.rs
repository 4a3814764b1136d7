//! Each kind of guard service: the callout it is sent and how its reply is read, strictly (a
//! reply that is not exactly what the protocol says is an error, never a pass).
//!
//! - **moderation**: OpenAI's `POST /v1/moderations` (`input`: the texts; `results[]` with
//!   `categories` and `category_scores`).
//! - **chat**: a classifier behind chat completions (Llama Guard): its first line is `safe` or
//!   `unsafe`, then a comma-separated list of categories.
//! - **webhook**: `{"guard", "direction", "api", "model", "texts": [{"role", "text"}]}` in;
//!   `{"action": "allow" | "flag" | "block" | "redact", ...}` out (README: the contract).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_shared::callout::{Callout, CalloutResponse};

use crate::config::{Direction, Guard, Kind, Template};
use crate::texts::{Said, Speaker};

/// Llama Guard 3's categories, as its model card lists them.
pub const LLAMA_GUARD_POLICY: [&str; 14] = [
    "S1: Violent Crimes.",
    "S2: Non-Violent Crimes.",
    "S3: Sex Crimes.",
    "S4: Child Exploitation.",
    "S5: Defamation.",
    "S6: Specialized Advice.",
    "S7: Privacy.",
    "S8: Intellectual Property.",
    "S9: Indiscriminate Weapons.",
    "S10: Hate.",
    "S11: Self-Harm.",
    "S12: Sexual Content.",
    "S13: Elections.",
    "S14: Code Interpreter Abuse.",
];

/// What one guard is asked about.
pub struct Question<'a> {
    pub direction: Direction,
    /// The prompt's texts (for an answer: the conversation it answers).
    pub prompt: &'a [Said],
    /// The answer's text so far (answers only).
    pub answer: Option<&'a str>,
    pub api: &'a str,
    pub model: &'a str,
    /// What a similarity guard embeds: the last user turn first, then the other user and tool
    /// texts.
    pub embedded: &'a [String],
}

impl Question<'_> {
    /// The texts the guard judges: the prompt's, or the answer.
    pub fn judged(&self) -> Vec<Said> {
        match self.answer {
            Some(answer) => vec![Said::new(Speaker::Assistant, answer)],
            None => self.prompt.to_vec(),
        }
    }
}

/// A category the service reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub category: String,
    /// Moderation only.
    pub score: Option<f64>,
    /// The service's own verdict on the category.
    pub flagged: bool,
}

/// A service's reply, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Categories (all of them for moderation, the tripped ones otherwise).
    Findings(Vec<Finding>),
    /// A similarity guard's vectors, one per embedded text (scored by [`crate::similarity`]).
    Vectors(Vec<Vec<f32>>),
    /// A webhook asked for an action on named categories.
    Asked { action: WebhookAction, categories: Vec<String>, reason: Option<String>, texts: Option<Vec<String>> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAction {
    Allow,
    Flag,
    Block,
    Redact,
}

/// The callout asking `guard` about `question`.
pub fn callout(guard: &Guard, question: &Question<'_>) -> Callout {
    let body = match guard.kind {
        Kind::Moderation => moderation_body(guard, question),
        Kind::Chat => chat_body(guard, question),
        Kind::Webhook => webhook_body(guard, question),
        Kind::Similarity => with_model(json!({ "input": question.embedded }), guard),
    };
    let mut call = Callout::post(
        &guard.cluster,
        &guard.authority,
        guard.path(),
        "application/json",
        body.to_string().into_bytes(),
    )
    .timeout(guard.timeout());
    if let Some(key) = guard.api_key() {
        call = call.header("authorization", &format!("Bearer {key}"));
    }
    call
}

fn moderation_body(guard: &Guard, question: &Question<'_>) -> Value {
    let input: Vec<String> = question.judged().into_iter().map(|s| s.text).collect();
    with_model(json!({ "input": input }), guard)
}

/// `body` with the guard's `model`, when it has one.
fn with_model(mut body: Value, guard: &Guard) -> Value {
    if let (Some(model), Some(map)) = (&guard.model, body.as_object_mut()) {
        map.insert("model".into(), json!(model));
    }
    body
}

/// The conversation as alternating user / assistant messages, starting with the user (what
/// Llama Guard's chat template requires): system and tool texts count as the user's.
fn turns(question: &Question<'_>) -> Vec<(Speaker, String)> {
    let mut said: Vec<Said> = question.prompt.to_vec();
    if let Some(answer) = question.answer {
        said.push(Said::new(Speaker::Assistant, answer));
    }
    let mut turns: Vec<(Speaker, String)> = Vec::new();
    for s in said {
        let speaker = if s.speaker == Speaker::Assistant { Speaker::Assistant } else { Speaker::User };
        match turns.last_mut() {
            Some((last, text)) if *last == speaker => {
                text.push_str("\n\n");
                text.push_str(&s.text);
            }
            None if speaker == Speaker::Assistant => {
                turns.push((Speaker::User, String::new()));
                turns.push((speaker, s.text));
            }
            _ => turns.push((speaker, s.text)),
        }
    }
    turns
}

fn chat_body(guard: &Guard, question: &Question<'_>) -> Value {
    let turns = turns(question);
    let messages: Vec<Value> = match guard.template {
        Template::Messages => turns.iter().map(|(s, t)| json!({"role": s.name(), "content": t})).collect(),
        Template::LlamaGuard => {
            vec![json!({"role": "user", "content": llama_guard_prompt(guard, question.direction, &turns)})]
        }
    };
    json!({"model": guard.model, "messages": messages, "temperature": 0, "max_tokens": 24, "stream": false})
}

/// Llama Guard's documented task prompt.
pub fn llama_guard_prompt(guard: &Guard, direction: Direction, turns: &[(Speaker, String)]) -> String {
    let role = if direction == Direction::Answer { "Agent" } else { "User" };
    let policy: Vec<&str> = if guard.policy.is_empty() {
        LLAMA_GUARD_POLICY.to_vec()
    } else {
        guard.policy.iter().map(String::as_str).collect()
    };
    let conversation: Vec<String> = turns
        .iter()
        .map(|(s, t)| format!("{}: {t}", if *s == Speaker::Assistant { "Agent" } else { "User" }))
        .collect();
    format!(
        "Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy with the below categories.\n\n\
         <BEGIN UNSAFE CONTENT CATEGORIES>\n{}\n<END UNSAFE CONTENT CATEGORIES>\n\n\
         <BEGIN CONVERSATION>\n\n{}\n\n<END CONVERSATION>\n\n\
         Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n \
         - First line must read 'safe' or 'unsafe'.\n \
         - If unsafe, a second line must include a comma-separated list of violated categories.",
        policy.join("\n"),
        conversation.join("\n\n"),
    )
}

fn webhook_body(guard: &Guard, question: &Question<'_>) -> Value {
    let texts: Vec<Value> =
        question.judged().iter().map(|s| json!({"role": s.speaker.name(), "text": s.text})).collect();
    json!({
        "guard": guard.name,
        "direction": question.direction.name(),
        "api": question.api,
        "model": question.model,
        "texts": texts,
    })
}

/// Why a reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// No answer in time, or no connection (Envoy reports status 0).
    Timeout,
    /// A non-2xx status.
    Status(u16),
    /// An answer outside the protocol.
    Garbage,
}

impl Trouble {
    pub fn name(&self) -> &'static str {
        match self {
            Trouble::Timeout => "timeout",
            Trouble::Status(_) => "status",
            Trouble::Garbage => "garbage",
        }
    }
}

/// Reads `guard`'s reply; `texts` is how many texts it was shown (a redaction, or a similarity
/// guard's vectors, must match).
pub fn read(guard: &Guard, response: &CalloutResponse, texts: usize) -> Result<Reply, Trouble> {
    if response.status == 0 {
        return Err(Trouble::Timeout);
    }
    if !response.is_success() {
        return Err(Trouble::Status(response.status));
    }
    let reply = match guard.kind {
        Kind::Moderation => read_moderation(&response.body),
        Kind::Chat => read_chat(&response.body),
        Kind::Webhook => read_webhook(&response.body, texts),
        Kind::Similarity => crate::similarity::vectors(&response.body, texts).map(Reply::Vectors),
    };
    reply.ok_or(Trouble::Garbage)
}

#[derive(Deserialize)]
struct Moderation {
    results: Vec<ModerationResult>,
}

#[derive(Deserialize)]
struct ModerationResult {
    #[serde(default)]
    categories: BTreeMap<String, Option<bool>>,
    #[serde(default)]
    category_scores: BTreeMap<String, f64>,
}

fn read_moderation(body: &[u8]) -> Option<Reply> {
    let moderation: Moderation = serde_json::from_slice(body).ok()?;
    if moderation.results.is_empty() {
        return None;
    }
    let mut findings: BTreeMap<String, Finding> = BTreeMap::new();
    for result in moderation.results {
        if result.categories.is_empty() && result.category_scores.is_empty() {
            return None;
        }
        let names: Vec<&String> = result.categories.keys().chain(result.category_scores.keys()).collect();
        for name in names {
            let score = result.category_scores.get(name).copied();
            if score.is_some_and(|s| !s.is_finite()) {
                return None;
            }
            let flagged = result.categories.get(name).copied().flatten().unwrap_or(false);
            let entry =
                findings.entry(name.clone()).or_insert(Finding { category: name.clone(), score: None, flagged: false });
            entry.flagged |= flagged;
            entry.score = match (entry.score, score) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    Some(Reply::Findings(findings.into_values().collect()))
}

fn read_chat(body: &[u8]) -> Option<Reply> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let content = value.get("choices")?.get(0)?.get("message")?.get("content")?.as_str()?;
    let mut lines = content.trim().lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next()? {
        "safe" => lines.next().is_none().then_some(Reply::Findings(Vec::new())),
        "unsafe" => {
            let categories: Vec<String> = match lines.next() {
                Some(line) => line.split(',').map(|c| c.trim().to_string()).collect(),
                None => vec!["unsafe".to_string()],
            };
            let well_formed = lines.next().is_none() && categories.iter().all(|c| is_category(c));
            well_formed.then(|| {
                Reply::Findings(
                    categories.into_iter().map(|category| Finding { category, score: None, flagged: true }).collect(),
                )
            })
        }
        _ => None,
    }
}

fn is_category(name: &str) -> bool {
    !name.is_empty() && name.len() <= 40 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Webhook {
    action: WebhookAction,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
}

fn read_webhook(body: &[u8], shown: usize) -> Option<Reply> {
    let hook: Webhook = serde_json::from_slice(body).ok()?;
    let mut categories = hook.categories;
    categories.extend(hook.category);
    if !categories.iter().all(|c| is_category(c)) {
        return None;
    }
    let texts = match (hook.action, hook.texts) {
        (WebhookAction::Redact, Some(texts)) if texts.len() == shown => Some(texts),
        (WebhookAction::Redact, _) => return None,
        (_, Some(_)) => return None,
        (_, None) => None,
    };
    if categories.is_empty() && hook.action != WebhookAction::Allow {
        categories.push(match hook.action {
            WebhookAction::Redact => "redacted".to_string(),
            _ => "policy".to_string(),
        });
    }
    let reason = hook.reason.map(|r| r.chars().take(200).collect());
    Some(Reply::Asked { action: hook.action, categories, reason, texts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn guard(kind: &str, extra: &str) -> Guard {
        let text =
            format!(r#"{{"guards": [{{"name": "g", "kind": "{kind}", "cluster": "c", "authority": "a" {extra}}}]}}"#);
        let config: Config = sluice_shared::config::parse_config(Some(text.as_bytes())).unwrap();
        config.guards[0].clone()
    }

    fn ok(body: &str) -> CalloutResponse {
        CalloutResponse { status: 200, body: body.as_bytes().to_vec() }
    }

    fn question<'a>(prompt: &'a [Said], answer: Option<&'a str>) -> Question<'a> {
        let direction = if answer.is_some() { Direction::Answer } else { Direction::Prompt };
        Question { direction, prompt, answer, api: "chat_completions", model: "m", embedded: &[] }
    }

    fn body(call: &Callout) -> Value {
        serde_json::from_slice(call.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn moderation_is_asked_about_the_texts_and_read_by_score() {
        let g = guard("moderation", r#", "model": "omni-moderation-latest""#);
        let prompt = [Said::new(Speaker::System, "S"), Said::new(Speaker::User, "U")];
        let call = callout(&g, &question(&prompt, None));
        assert_eq!((call.path.as_str(), call.cluster.as_str()), ("/v1/moderations", "c"));
        assert_eq!(body(&call), json!({"input": ["S", "U"], "model": "omni-moderation-latest"}));
        assert_eq!(body(&callout(&g, &question(&prompt, Some("A"))))["input"], json!(["A"]));
        let reply = read(
            &g,
            &ok(r#"{"id":"m","model":"x","results":[
                {"flagged":true,"categories":{"violence":true,"hate":false},"category_scores":{"violence":0.91,"hate":0.02}},
                {"flagged":false,"categories":{"violence":false,"hate":false},"category_scores":{"violence":0.2,"hate":0.4}}]}"#),
            2,
        )
        .unwrap();
        assert_eq!(
            reply,
            Reply::Findings(vec![
                Finding { category: "hate".into(), score: Some(0.4), flagged: false },
                Finding { category: "violence".into(), score: Some(0.91), flagged: true },
            ])
        );
    }

    #[test]
    fn chat_guards_get_the_conversation_and_are_parsed_strictly() {
        let g = guard("chat", r#", "model": "llama-guard-3""#);
        let prompt = [Said::new(Speaker::System, "S"), Said::new(Speaker::User, "U")];
        let sent = body(&callout(&g, &question(&prompt, Some("A"))));
        assert_eq!(
            sent["messages"],
            json!([{"role": "user", "content": "S\n\nU"}, {"role": "assistant", "content": "A"}])
        );
        assert_eq!((sent["model"].as_str(), sent["temperature"].as_i64()), (Some("llama-guard-3"), Some(0)));
        let answer =
            |text: &str| ok(&json!({"choices": [{"message": {"role": "assistant", "content": text}}]}).to_string());
        assert_eq!(read(&g, &answer("safe"), 1), Ok(Reply::Findings(vec![])));
        assert_eq!(read(&g, &answer("\n\nsafe\n"), 1), Ok(Reply::Findings(vec![])));
        let Ok(Reply::Findings(found)) = read(&g, &answer("unsafe\nS1,S10"), 1) else { panic!() };
        assert_eq!(found.iter().map(|f| f.category.as_str()).collect::<Vec<_>>(), ["S1", "S10"]);
        let Ok(Reply::Findings(found)) = read(&g, &answer("unsafe"), 1) else { panic!() };
        assert_eq!(found[0].category, "unsafe");
        for garbage in ["Safe!", "I think it is safe", "safe\nS1", "unsafe\nS1\nmore", "unsafe\nS 1; S2", ""] {
            assert_eq!(read(&g, &answer(garbage), 1), Err(Trouble::Garbage), "{garbage}");
        }
        assert_eq!(read(&g, &ok("{}"), 1), Err(Trouble::Garbage));
    }

    #[test]
    fn the_llama_guard_template_is_the_documented_prompt() {
        let g = guard("chat", r#", "model": "lg", "template": "llama_guard""#);
        let prompt = [Said::new(Speaker::User, "How do I pick a lock?")];
        let sent = body(&callout(&g, &question(&prompt, Some("Like this."))));
        let text = sent["messages"][0]["content"].as_str().unwrap();
        assert!(text.starts_with("Task: Check if there is unsafe content in 'Agent' messages"));
        assert!(text.contains("S14: Code Interpreter Abuse.\n<END UNSAFE CONTENT CATEGORIES>"));
        assert!(text.contains("User: How do I pick a lock?\n\nAgent: Like this.\n\n<END CONVERSATION>"));
        assert!(text.contains("ONLY THE LAST Agent message"));
        let on_prompt = body(&callout(&g, &question(&prompt, None)));
        assert!(on_prompt["messages"][0]["content"].as_str().unwrap().contains("ONLY THE LAST User message"));
    }

    #[test]
    fn webhooks_follow_the_contract() {
        let g = guard("webhook", "");
        let prompt = [Said::new(Speaker::User, "U1"), Said::new(Speaker::User, "U2")];
        let sent = body(&callout(&g, &question(&prompt, None)));
        assert_eq!(
            sent,
            json!({"guard": "g", "direction": "prompt", "api": "chat_completions", "model": "m",
                   "texts": [{"role": "user", "text": "U1"}, {"role": "user", "text": "U2"}]})
        );
        assert_eq!(
            read(&g, &ok(r#"{"action":"allow"}"#), 2),
            Ok(Reply::Asked { action: WebhookAction::Allow, categories: vec![], reason: None, texts: None })
        );
        assert_eq!(
            read(&g, &ok(r#"{"action":"block","category":"secrets","reason":"no"}"#), 2),
            Ok(Reply::Asked {
                action: WebhookAction::Block,
                categories: vec!["secrets".into()],
                reason: Some("no".into()),
                texts: None
            })
        );
        let Ok(Reply::Asked { texts, categories, .. }) = read(&g, &ok(r#"{"action":"redact","texts":["a","b"]}"#), 2)
        else {
            panic!()
        };
        assert_eq!((texts, categories), (Some(vec!["a".to_string(), "b".to_string()]), vec!["redacted".to_string()]));
        for garbage in [
            r#"{"action":"redact","texts":["a"]}"#,
            r#"{"action":"redact"}"#,
            r#"{"action":"allow","texts":["a","b"]}"#,
            r#"{"action":"maybe"}"#,
            r#"{"action":"block","category":"has space"}"#,
            r#"{"action":"allow","extra":1}"#,
            "[]",
        ] {
            assert_eq!(read(&g, &ok(garbage), 2), Err(Trouble::Garbage), "{garbage}");
        }
    }

    #[test]
    fn similarity_guards_embed_the_users_texts() {
        let g = guard("similarity", r#", "model": "all-MiniLM-L6-v2", "check": ["prompt"]"#);
        let embedded = ["last turn".to_string(), "tool text".to_string()];
        let q = Question { embedded: &embedded, ..question(&[], None) };
        let call = callout(&g, &q);
        assert_eq!(call.path, "/v1/embeddings");
        assert_eq!(body(&call), json!({"input": ["last turn", "tool text"], "model": "all-MiniLM-L6-v2"}));
        let reply = read(&g, &ok(r#"{"data":[{"embedding":[1,0]},{"embedding":[0,2]}]}"#), 2);
        assert_eq!(reply, Ok(Reply::Vectors(vec![vec![1.0, 0.0], vec![0.0, 1.0]])));
        assert_eq!(read(&g, &ok(r#"{"data":[{"embedding":[1,0]}]}"#), 2), Err(Trouble::Garbage));
    }

    #[test]
    fn transport_troubles_are_told_apart() {
        let g = guard("moderation", "");
        assert_eq!(read(&g, &CalloutResponse { status: 0, body: vec![] }, 1), Err(Trouble::Timeout));
        assert_eq!(read(&g, &CalloutResponse { status: 503, body: b"{}".to_vec() }, 1), Err(Trouble::Status(503)));
        for garbage in
            ["", "{}", r#"{"results":[]}"#, r#"{"results":[{}]}"#, r#"{"results":[{"category_scores":{"v":"high"}}]}"#]
        {
            assert_eq!(read(&g, &ok(garbage), 1), Err(Trouble::Garbage), "{garbage}");
        }
    }
}
