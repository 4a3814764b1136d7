//! What the cache tells operators: facts for access logs and other modules, metrics for hit
//! rate and latency, and the answer headers the client sees.

use sluice_shared::facts;
use sluice_shared::host::{MetricsHost, Properties};
use sluice_shared::metrics::{self, MetricRegistry};

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Hit { semantic: bool, similarity: f64 },
    Miss,
    Bypass(&'static str),
}

impl Outcome {
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Hit { .. } => facts::CACHE_HIT,
            Outcome::Miss => "miss",
            Outcome::Bypass(_) => "bypass",
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Hit { semantic: true, .. } => "semantic",
            Outcome::Hit { semantic: false, .. } => "exact",
            Outcome::Miss => "none",
            Outcome::Bypass(reason) => reason,
        }
    }

    /// `x-sluice-cache` and its companions.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("x-sluice-cache", self.status().to_string())];
        match self {
            Outcome::Hit { similarity, .. } => headers.push(("x-sluice-cache-similarity", format!("{similarity:.4}"))),
            Outcome::Bypass(reason) => headers.push(("x-sluice-cache-reason", (*reason).to_string())),
            Outcome::Miss => {}
        }
        headers
    }
}

/// Timings of one lookup, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub lookup_ms: Option<u64>,
    pub embedding_ms: Option<u64>,
}

pub fn lookup<H: Properties + MetricsHost>(
    host: &H,
    registry: &mut MetricRegistry,
    outcome: &Outcome,
    timings: Timings,
) {
    facts::publish(host, facts::CACHE_STATUS, outcome.status());
    facts::publish(host, facts::CACHE_REASON, outcome.reason());
    if let Outcome::Hit { similarity, .. } = outcome {
        facts::publish(host, facts::CACHE_SIMILARITY, &format!("{similarity:.4}"));
    }
    let status = [("status", outcome.status()), ("reason", outcome.reason())];
    registry.add(host, metrics::CACHE_LOOKUPS_TOTAL, &status, 1);
    if let Some(ms) = timings.lookup_ms {
        facts::publish(host, facts::CACHE_LOOKUP_MS, &ms.to_string());
        registry.record(host, metrics::CACHE_LOOKUP_MS, &[("status", outcome.status())], ms);
    }
    if let Some(ms) = timings.embedding_ms {
        facts::publish(host, facts::CACHE_EMBEDDING_MS, &ms.to_string());
        registry.record(host, metrics::CACHE_EMBEDDING_MS, &[], ms);
    }
}

/// The verifier's word on a grey-zone candidate (`same`, `different`, `none`), from the
/// `service` or its `memo`.
pub fn verified<H: Properties + MetricsHost>(host: &H, registry: &mut MetricRegistry, decision: &str, source: &str) {
    facts::publish(host, facts::CACHE_VERIFIED, decision);
    registry.add(host, metrics::CACHE_VERIFY_TOTAL, &[("decision", decision), ("source", source)], 1);
}

/// What a complaint about a hit did (`stricter`, `evicted`, `unknown`, or `unrecorded`: Redis did
/// not answer).
pub fn complaint(host: &dyn MetricsHost, registry: &mut MetricRegistry, decision: &str) {
    registry.add(host, metrics::CACHE_WRONG_TOTAL, &[("decision", decision)], 1);
}

/// What the exact index said before a lookup.
pub fn index(host: &dyn MetricsHost, registry: &mut MetricRegistry, decision: &str) {
    registry.add(host, metrics::CACHE_INDEX_TOTAL, &[("decision", decision)], 1);
}

/// An answer offered to the cache: `sent` (to Redis), `skipped` (with why) or `failed`.
pub fn store(host: &dyn MetricsHost, registry: &mut MetricRegistry, status: &str, reason: &str) {
    registry.add(host, metrics::CACHE_STORES_TOTAL, &[("status", status), ("reason", reason)], 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::host::fake::FakeHost;

    #[test]
    fn hits_misses_and_bypasses_are_reported() {
        let host = FakeHost::default();
        let mut registry = MetricRegistry::new(10);
        let hit = Outcome::Hit { semantic: true, similarity: 0.91234 };
        lookup(&host, &mut registry, &hit, Timings { lookup_ms: Some(4), embedding_ms: Some(3) });
        assert_eq!(host.property("sluice.cache.status").as_deref(), Some("hit"));
        assert_eq!(host.property("sluice.cache.similarity").as_deref(), Some("0.9123"));
        assert_eq!(host.metric("sluice_cache_lookups_total;status=hit;reason=semantic"), Some(1));
        assert_eq!(host.recorded("sluice_cache_lookup_ms;status=hit"), vec![4]);
        assert_eq!(host.recorded("sluice_cache_embedding_ms"), vec![3]);
        assert_eq!(
            hit.headers(),
            vec![("x-sluice-cache", "hit".into()), ("x-sluice-cache-similarity", "0.9123".into())]
        );
        let bypass = Outcome::Bypass("redis_down");
        lookup(&host, &mut registry, &bypass, Timings::default());
        assert_eq!(host.metric("sluice_cache_lookups_total;status=bypass;reason=redis_down"), Some(1));
        assert_eq!(bypass.headers()[1], ("x-sluice-cache-reason", "redis_down".into()));
        assert_eq!(Outcome::Miss.headers(), vec![("x-sluice-cache", "miss".into())]);
        store(&host, &mut registry, "skipped", "tool_calls");
        assert_eq!(host.metric("sluice_cache_stores_total;status=skipped;reason=tool_calls"), Some(1));
    }
}
