//! The decisions around a lookup: whether a request may use the cache at all, whose entries it
//! may see, and which candidate, if any, answers it.

use sluice_shared::facts;
use sluice_shared::host::Properties;

use crate::config::Namespace;
use crate::record::Record;
use crate::same_question::{compare, Prompt, Verdict};
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
    /// The request says an earlier hit was wrong ([`WRONG_HEADER`]): looked up nowhere, and its
    /// fresh answer is stored.
    Wrong,
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
            Bypass::Wrong => "wrong",
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
    let team = || facts::read(host, facts::IDENTITY_TEAM).map(|t| format!("team:{t}")).or_else(key);
    match by {
        Namespace::Global => Some("global".to_string()),
        Namespace::Key => key(),
        Namespace::Team => team(),
        Namespace::TeamFeature => {
            let team = team()?;
            Some(match facts::read(host, facts::IDENTITY_FEATURE) {
                Some(feature) => format!("{team}/feature:{feature}"),
                None => team,
            })
        }
        Namespace::Project => facts::read(host, facts::IDENTITY_PROJECT).map(|p| format!("project:{p}")),
    }
}

/// Whether an earlier module rewrote sensitive data in the prompt.
pub fn pii_scrubbed(host: &dyn Properties) -> bool {
    facts::read_u64(host, facts::PII_DETECTIONS).is_some_and(|n| n > 0)
}

/// A cached answer that may serve the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub similarity: f64,
    pub record: Record,
    /// The entry's id, given to the client to complain with ([`complaint`]).
    pub id: String,
}

/// What the guard makes of the candidates.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Serve(Hit),
    /// The best grey-zone candidate (similar, but the guard is unsure): a verifier may serve it.
    Ask {
        hit: Hit,
        question: String,
    },
    Miss,
}

/// Header of a request that says an earlier hit was wrong, naming its entry
/// (`x-sluice-cache-entry` of that hit).
pub const WRONG_HEADER: &str = "x-sluice-cache-wrong";

/// The entry a request complains about: an id as hits give them (32 hex digits), else none.
pub fn complaint(header: Option<&[u8]>) -> Option<String> {
    let text = std::str::from_utf8(header?).ok()?.trim().to_ascii_lowercase();
    (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
}

/// How the guard decides (`None`: off, the most similar readable candidate wins).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    pub threshold: f64,
    /// Extra similarity a [`Verdict::Close`] pair needs.
    pub close_margin: f64,
}

/// The most similar candidate that asks the same question and holds a readable answer, or else
/// the most similar one the guard is unsure about.
pub fn pick(candidates: Vec<Candidate>, question: &str, guard: Option<Guard>) -> Choice {
    let asked = guard.map(|_| Prompt::read(question));
    let mut grey = None;
    for c in candidates {
        let Some(record) = Record::from_text(&c.record) else { continue };
        let verdict = asked.as_ref().map(|asked| compare(asked, &Prompt::read(&c.question)));
        let hit = Hit { similarity: c.similarity, record, id: c.id };
        match (verdict, guard) {
            (None, _) | (Some(Verdict::Same), _) => return Choice::Serve(hit),
            (Some(Verdict::Close), Some(g)) if hit.similarity >= g.threshold + g.close_margin => {
                return Choice::Serve(hit)
            }
            (Some(Verdict::Close | Verdict::Unsure), _) if grey.is_none() => {
                grey = Some(Choice::Ask { hit, question: c.question })
            }
            _ => {}
        }
    }
    grey.unwrap_or(Choice::Miss)
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
    fn complaints_name_an_entry() {
        let id = "0123456789abcdef0123456789ABCDEF";
        assert_eq!(complaint(Some(id.as_bytes())).as_deref(), Some("0123456789abcdef0123456789abcdef"));
        for bad in
            [&b""[..], b"wrong", b"0123456789abcdef0123456789abcde", b"0123456789abcdef0123456789abcdeg", b"\xff"]
        {
            assert_eq!(complaint(Some(bad)), None);
        }
        assert_eq!(complaint(None), None);
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
        assert_eq!(namespace(&host, Namespace::TeamFeature).as_deref(), Some("team:search"));
        assert_eq!(namespace(&host, Namespace::Project), None, "no project: no namespace");
        facts::publish(&host, facts::IDENTITY_FEATURE, "summaries");
        facts::publish(&host, facts::IDENTITY_PROJECT, "apollo");
        assert_eq!(namespace(&host, Namespace::TeamFeature).as_deref(), Some("team:search/feature:summaries"));
        assert_eq!(namespace(&host, Namespace::Project).as_deref(), Some("project:apollo"));
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
                id: "de".into(),
            },
            Candidate {
                similarity: 0.91,
                question: "capital of France?".into(),
                record: "garbled".into(),
                id: "fr1".into(),
            },
            Candidate {
                similarity: 0.90,
                question: "France: capital?".into(),
                record: record("Paris"),
                id: "fr2".into(),
            },
        ];
        let guard = Some(Guard { threshold: 0.8, close_margin: 0.05 });
        let Choice::Serve(hit) = pick(candidates.clone(), "What is the capital of France?", guard) else {
            panic!("no hit")
        };
        assert_eq!((hit.similarity, hit.record.choices[0]["message"]["content"].as_str()), (0.90, Some("Paris")));
        assert_eq!(hit.id, "fr2");
        // Without the guard the most similar readable one wins, right or wrong.
        let Choice::Serve(hit) = pick(candidates.clone(), "What is the capital of France?", None) else {
            panic!("no hit")
        };
        assert_eq!(hit.similarity, 0.95);
        assert_eq!(pick(candidates, "How tall is Mont Blanc?", guard), Choice::Miss);
    }

    #[test]
    fn close_pairs_need_the_margin_and_unsure_ones_are_asked_about() {
        let record = r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"int(s)"},"finish_reason":"stop"}]}"#;
        let candidate = |similarity: f64, question: &str| Candidate {
            similarity,
            question: question.into(),
            record: record.into(),
            id: "e".into(),
        };
        let guard = Some(Guard { threshold: 0.8, close_margin: 0.05 });
        let asked = "How do I convert a string to an integer in Python?";
        let close = "How can I parse a string as an integer in Python?";
        assert!(matches!(pick(vec![candidate(0.86, close)], asked, guard), Choice::Serve(..)));
        let Choice::Ask { hit, question } = pick(vec![candidate(0.84, close)], asked, guard) else {
            panic!("not asked")
        };
        assert_eq!((hit.similarity, question.as_str()), (0.84, close));
        let unsure = "How do I turn a string into a number in Python?";
        assert!(matches!(pick(vec![candidate(0.95, unsure)], asked, guard), Choice::Ask { .. }));
        // A hard rule is never asked about.
        let turned = "How do I convert an integer to a string in Python?";
        assert_eq!(pick(vec![candidate(0.99, turned)], asked, guard), Choice::Miss);
    }
}
