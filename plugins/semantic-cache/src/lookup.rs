//! The decisions around a lookup: whether a request may use the cache at all, whose entries it
//! may see, and which candidate, if any, answers it.

use sluice_shared::facts;
use sluice_shared::host::Properties;

use crate::config::Namespace;
use crate::record::Record;
use crate::same_question::same_question;
use crate::scripts::Candidate;

/// Why a request does not use the cache (the `reason` of `x-sluice-cache: bypass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// An LLM API the cache does not serve (only chat completions are cached).
    Api,
    /// The route's `mode` is `off`.
    Off,
    /// `Cache-Control: no-cache` (the fresh answer is still stored, unless `no-store`).
    NoCache,
    /// The namespace needs an identity and the request has none (no budget enforcer before the
    /// cache, or a key without alias).
    NoIdentity,
    /// The PII scrubber changed the prompt: its answer will get the values restored.
    Pii,
    TooLarge,
    Unreadable,
    RedisDown,
    EmbedderDown,
}

impl Bypass {
    pub fn name(self) -> &'static str {
        match self {
            Bypass::Api => "api",
            Bypass::Off => "off",
            Bypass::NoCache => "no_cache",
            Bypass::NoIdentity => "no_identity",
            Bypass::Pii => "pii",
            Bypass::TooLarge => "too_large",
            Bypass::Unreadable => "unreadable",
            Bypass::RedisDown => "redis_down",
            Bypass::EmbedderDown => "embedder_down",
        }
    }
}

/// The request's `Cache-Control` directives that concern the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// Do not answer from the cache.
    pub no_cache: bool,
    /// Do not keep this answer.
    pub no_store: bool,
}

impl CacheControl {
    pub fn parse(header: Option<&[u8]>) -> CacheControl {
        let text = String::from_utf8_lossy(header.unwrap_or_default()).to_ascii_lowercase();
        let directives: Vec<&str> =
            text.split(',').map(|d| d.trim().split('=').next().unwrap_or_default().trim()).collect();
        CacheControl { no_cache: directives.contains(&"no-cache"), no_store: directives.contains(&"no-store") }
    }
}

/// The namespace of a request's entries (`team:<name>`, `key:<alias>`, `global`), from the
/// identity the budget enforcer published; `None` when the namespace needs one and there is none.
pub fn namespace(host: &dyn Properties, by: Namespace) -> Option<String> {
    let key = || facts::read(host, facts::IDENTITY_KEY).map(|k| format!("key:{k}"));
    match by {
        Namespace::Global => Some("global".to_string()),
        Namespace::Key => key(),
        Namespace::Team => facts::read(host, facts::IDENTITY_TEAM).map(|t| format!("team:{t}")).or_else(key),
    }
}

/// Whether an earlier module rewrote sensitive data in the prompt.
pub fn pii_scrubbed(host: &dyn Properties) -> bool {
    facts::read_u64(host, facts::PII_DETECTIONS).is_some_and(|n| n > 0)
}

/// The most similar candidate that asks the same question (when `guard` is on) and holds a
/// readable answer.
pub fn pick(candidates: Vec<Candidate>, question: &str, guard: bool) -> Option<(f64, Record)> {
    candidates
        .into_iter()
        .filter(|c| !guard || same_question(question, &c.question))
        .find_map(|c| Record::from_text(&c.record).map(|r| (c.similarity, r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::host::fake::FakeHost;

    #[test]
    fn cache_control_directives() {
        assert_eq!(CacheControl::parse(None), CacheControl::default());
        let both = CacheControl::parse(Some(b"No-Cache, max-age=0, no-store"));
        assert!(both.no_cache && both.no_store);
        let only = CacheControl::parse(Some(b"max-age=60,no-store"));
        assert!(!only.no_cache && only.no_store);
        assert_eq!(CacheControl::parse(Some(b"\xff\xfe")), CacheControl::default());
    }

    #[test]
    fn namespaces_follow_the_identity() {
        let host = FakeHost::default();
        assert_eq!(namespace(&host, Namespace::Team), None);
        assert_eq!(namespace(&host, Namespace::Global).as_deref(), Some("global"));
        facts::publish(&host, facts::IDENTITY_KEY, "alice");
        assert_eq!(namespace(&host, Namespace::Team).as_deref(), Some("key:alice"));
        facts::publish(&host, facts::IDENTITY_TEAM, "search");
        assert_eq!(namespace(&host, Namespace::Team).as_deref(), Some("team:search"));
        assert_eq!(namespace(&host, Namespace::Key).as_deref(), Some("key:alice"));
        assert!(!pii_scrubbed(&host));
        facts::publish(&host, facts::PII_DETECTIONS, "2");
        assert!(pii_scrubbed(&host));
    }

    #[test]
    fn the_guard_picks_among_candidates() {
        let record = |text: &str| {
            format!(
                r#"{{"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}]}}"#
            )
        };
        let candidates = vec![
            Candidate {
                similarity: 0.95,
                question: "What is the capital of Germany?".into(),
                record: record("Berlin"),
            },
            Candidate { similarity: 0.91, question: "capital of France?".into(), record: "garbled".into() },
            Candidate { similarity: 0.90, question: "France: capital?".into(), record: record("Paris") },
        ];
        let (similarity, answer) = pick(candidates.clone(), "What is the capital of France?", true).unwrap();
        assert_eq!((similarity, answer.choices[0]["message"]["content"].as_str()), (0.90, Some("Paris")));
        // Without the guard the most similar readable one wins, right or wrong.
        let (similarity, _) = pick(candidates.clone(), "What is the capital of France?", false).unwrap();
        assert_eq!(similarity, 0.95);
        assert_eq!(pick(candidates, "How tall is Mont Blanc?", true), None);
    }
}
