//! Metrics with real labels on a host that only knows flat names.
//!
//! Envoy custom metrics are plain names; labels are encoded in the name as `;key=value` pairs
//! (`sluice_tokens_total;direction=input;model=gpt-4o`) and turned back into Prometheus labels by
//! Envoy tag extraction: one `stats_tags` entry per label key with the regex `(;key=([^;]*))`
//! (see `envoy-config/`). Envoy shows wasm metrics without the `envoy_` prefix.
//!
//! Label values come from clients and providers, so they are sanitised and each label key keeps
//! at most a configured number of distinct values per VM; later ones are reported as `other`.

use std::collections::{HashMap, HashSet};

use crate::host::{MetricKind, MetricsHost};

// Every Sluice metric name. Counters end in `_total`; histograms are in milliseconds, but for
// `REQUEST_COST_MICRO_USD`.
pub const REQUESTS_TOTAL: &str = "sluice_requests_total";
pub const TOKENS_TOTAL: &str = "sluice_tokens_total";
/// Cost in millionths of a USD (host counters are integers: divide by 1e6 in dashboards), by
/// `model`, `provider`, `team`, `feature` and `project`.
pub const COST_MICRO_USD_TOTAL: &str = "sluice_cost_micro_usd_total";
/// Each priced request's cost in millionths of a USD, by the same labels (a
/// histogram; its buckets, 100 to 5,000,000, that is $0.0001 to $5, are set in Envoy's
/// `stats_config`). Its count and sum sit beside `COST_MICRO_USD_TOTAL`.
pub const REQUEST_COST_MICRO_USD: &str = "sluice_request_cost_micro_usd";
pub const PASSTHROUGH_TOTAL: &str = "sluice_passthrough_total";
pub const REQUEST_DURATION_MS: &str = "sluice_request_duration_ms";
pub const TIME_TO_FIRST_TOKEN_MS: &str = "sluice_time_to_first_token_ms";
// Budget enforcer.
/// Admission decisions by `decision` (admitted, downgraded, queued, rejected, unavailable).
pub const BUDGET_DECISIONS_TOTAL: &str = "sluice_budget_decisions_total";
/// Refusals by `reason` (missing_key, unknown_key, model_not_allowed, limit, queue_timeout,
/// bridge_down) and `limit` (the limit's name, or `none`).
pub const BUDGET_REJECTIONS_TOTAL: &str = "sluice_budget_rejections_total";
/// What a limit has left for the `subject` it was last checked for (gauge, per limit).
pub const BUDGET_REMAINING: &str = "sluice_budget_remaining";
/// How much of a limit its `subject` has used, in whole percent (gauge, per limit and subject,
/// as of that subject's last request; alerts at 70 and 90 read it).
pub const BUDGET_USED_PERCENT: &str = "sluice_budget_used_percent";
/// Soft-limit crossings by `limit`.
pub const BUDGET_ALERTS_TOTAL: &str = "sluice_budget_alerts_total";
/// Spend charged, in millionths of a USD, by `key`, `team`, `model`, `feature` and `project`.
pub const BUDGET_SPEND_MICRO_USD_TOTAL: &str = "sluice_budget_spend_micro_usd_total";
/// Limit checks by `source`: `lease` (decided against room this worker holds, no callout) or
/// `redis` (a call to the bridge, which may grant a lease).
pub const BUDGET_CHECKS_TOTAL: &str = "sluice_budget_checks_total";
/// Calls to the Redis bridge that failed, by `op` (check, charge, key).
pub const BUDGET_BRIDGE_ERRORS_TOTAL: &str = "sluice_budget_bridge_errors_total";
/// Charge batches waiting in shared data for the bridge to come back (gauge).
pub const BUDGET_BACKLOG_BATCHES: &str = "sluice_budget_backlog_batches";
/// Answers settled without the token counter's price, by how they were charged (`how`).
pub const BUDGET_UNPRICED_TOTAL: &str = "sluice_budget_unpriced_total";
/// PII detections by entity type and action (`redact`, `mask`, `hash`, `block`, and for answers
/// `output_redact`, `output_block`).
pub const PII_DETECTIONS_TOTAL: &str = "sluice_pii_detections_total";
/// Guard hits by rule and action (`flag`, `block`, `reject`): injection heuristics, banned
/// patterns, `response_format`.
pub const GUARD_TOTAL: &str = "sluice_guard_total";
/// Guard service checks by `guard`, `direction` (prompt, answer) and `result` (pass, flag,
/// redact, block, error).
pub const GUARD_CHECKS_TOTAL: &str = "sluice_guard_checks_total";
/// Tripped categories by `guard`, `category`, `action` (flag, redact, block) and `direction`.
pub const GUARD_CATEGORIES_TOTAL: &str = "sluice_guard_categories_total";
/// How long a guard service took to answer a check, by `guard` and `direction`.
pub const GUARD_CHECK_MS: &str = "sluice_guard_check_ms";
/// Cache lookups by `status` (`hit`, `miss`, `bypass`) and `reason` (`exact` or `semantic` for
/// hits, `none` for misses, the bypass reason otherwise).
pub const CACHE_LOOKUPS_TOTAL: &str = "sluice_cache_lookups_total";
/// Answers offered to the cache by `status` (`sent` to Redis, `skipped` with the `reason`, or
/// `failed`: not sent, or Redis answered an error while the request was still open).
pub const CACHE_STORES_TOTAL: &str = "sluice_cache_stores_total";
/// Exact lookups the index answered, by `decision`: `absent` (no Redis call), `maybe` (asked
/// Redis), `unready` (not in sync with Redis, so asked).
pub const CACHE_INDEX_TOTAL: &str = "sluice_cache_index_total";
/// Grey-zone candidates put to the cache's verifier, by `decision` (`same`, `different`,
/// `none`: no usable answer, so the guard's miss stands) and `source` (`service`, or `memo`
/// for a pair already decided).
pub const CACHE_VERIFY_TOTAL: &str = "sluice_cache_verify_total";
/// Complaints about cache hits (`x-sluice-cache-wrong`), by `decision`: `stricter` (the entry
/// now needs `contradicted_threshold`), `evicted`, `unknown` (no such entry) or `unrecorded`
/// (Redis did not answer; the request still bypasses the lookup).
pub const CACHE_WRONG_TOTAL: &str = "sluice_cache_wrong_total";
/// Milliseconds from the complete request to the cache's decision, by `status`.
pub const CACHE_LOOKUP_MS: &str = "sluice_cache_lookup_ms";
/// Milliseconds the embedding service took.
pub const CACHE_EMBEDDING_MS: &str = "sluice_cache_embedding_ms";

// Model rewriter.
/// Requests whose intent was read, by `intent` (a name, `none` or `unavailable`).
pub const ROUTE_INTENTS_TOTAL: &str = "sluice_route_intents_total";
/// Prompts the rewriter's semantic routes read, by `source`: `shared` (an embedding a module
/// before it made of the same text) or `own` (its own callout).
pub const ROUTE_EMBEDDINGS_TOTAL: &str = "sluice_route_embeddings_total";
/// Pool endpoints picked, by `pool`, `endpoint` and `reason` (`stale`: Envoy balanced).
pub const ROUTE_PICKS_TOTAL: &str = "sluice_route_picks_total";
/// Latency breakers opening and closing, by `provider`, `model` and `state`.
pub const ROUTE_BREAKER_TOTAL: &str = "sluice_route_breaker_total";
/// Pool endpoints' scrapes, by `pool`, `endpoint` and `result` (`ok`, `unreadable`, `down`).
pub const ROUTE_SCRAPES_TOTAL: &str = "sluice_route_scrapes_total";

/// Every label key used in metric names; each needs a `stats_tags` entry in Envoy.
pub const LABEL_KEYS: &[&str] = &[
    "api",
    "model",
    "provider",
    "team",
    "direction",
    "streamed",
    "source",
    "reason",
    "status",
    "decision",
    "limit",
    "subject",
    "key",
    "op",
    "entity",
    "action",
    "rule",
    "how",
    "guard",
    "category",
    "result",
    "intent",
    "pool",
    "endpoint",
    "state",
    "feature",
    "project",
];

/// Reported instead of a value once a label has too many distinct values.
pub const OTHER: &str = "other";
/// Reported for a label whose value is unknown.
pub const UNKNOWN: &str = "unknown";
const MAX_VALUE_LEN: usize = 64;
/// Most raw label combinations remembered per VM.
const MAX_RAW_KEYS: usize = 10_000;

/// The Envoy regex that extracts `key` from a metric name.
pub fn tag_regex(key: &str) -> String {
    format!("(;{key}=([^;]*))")
}

/// Keeps a label value to characters that survive stat names and tag extraction.
pub fn sanitize_label_value(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .take(MAX_VALUE_LEN)
        .map(|c| if c.is_ascii_alphanumeric() || "_-.:/@+".contains(c) { c } else { '_' })
        .collect();
    if cleaned.is_empty() {
        UNKNOWN.to_string()
    } else {
        cleaned
    }
}

pub fn stat_name(base: &str, labels: &[(&str, String)]) -> String {
    let mut name = base.to_string();
    for (key, value) in labels {
        name.push(';');
        name.push_str(key);
        name.push('=');
        name.push_str(value);
    }
    name
}

/// Defines metrics on first use and remembers their ids for the life of the VM.
#[derive(Debug)]
pub struct MetricRegistry {
    /// Ids by raw (unsanitised) name and label values: the per-request fast path.
    raw_ids: HashMap<String, u32>,
    ids: HashMap<String, u32>,
    values_per_label: HashMap<String, HashSet<String>>,
    max_values_per_label: usize,
}

impl MetricRegistry {
    pub fn new(max_values_per_label: usize) -> Self {
        MetricRegistry {
            raw_ids: HashMap::new(),
            ids: HashMap::new(),
            values_per_label: HashMap::new(),
            max_values_per_label,
        }
    }

    pub fn add(&mut self, host: &dyn MetricsHost, base: &str, labels: &[(&str, &str)], delta: u64) {
        if delta == 0 {
            return;
        }
        if let Some(id) = self.id(host, MetricKind::Counter, base, labels) {
            host.increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
        }
    }

    pub fn set_gauge(&mut self, host: &dyn MetricsHost, base: &str, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(host, MetricKind::Gauge, base, labels) {
            host.record_metric(id, value);
        }
    }

    pub fn record(&mut self, host: &dyn MetricsHost, base: &str, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(host, MetricKind::Histogram, base, labels) {
            host.record_metric(id, value);
        }
    }

    fn id(&mut self, host: &dyn MetricsHost, kind: MetricKind, base: &str, labels: &[(&str, &str)]) -> Option<u32> {
        let mut raw =
            String::with_capacity(base.len() + labels.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>());
        raw.push_str(base);
        for (key, value) in labels {
            raw.push('\0');
            raw.push_str(key);
            raw.push('\0');
            raw.push_str(value);
        }
        if let Some(id) = self.raw_ids.get(&raw) {
            return Some(*id);
        }
        let id = self.define(host, kind, base, labels)?;
        // Raw values are client-controlled: past the bound they take the slow path every time.
        if self.raw_ids.len() < MAX_RAW_KEYS {
            self.raw_ids.insert(raw, id);
        }
        Some(id)
    }

    fn define(&mut self, host: &dyn MetricsHost, kind: MetricKind, base: &str, labels: &[(&str, &str)]) -> Option<u32> {
        let labels: Vec<(&str, String)> = labels.iter().map(|(k, v)| (*k, self.bounded_value(k, v))).collect();
        let name = stat_name(base, &labels);
        if let Some(id) = self.ids.get(&name) {
            return Some(*id);
        }
        let id = host.define_metric(kind, &name)?;
        self.ids.insert(name, id);
        Some(id)
    }

    fn bounded_value(&mut self, key: &str, value: &str) -> String {
        let value = sanitize_label_value(value);
        let seen = self.values_per_label.entry(key.to_string()).or_default();
        if seen.contains(&value) {
            value
        } else if seen.len() < self.max_values_per_label {
            seen.insert(value.clone());
            value
        } else {
            OTHER.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_encode_labels() {
        let mut registry = MetricRegistry::new(10);
        let host = FakeHost::default();
        registry.add(&host, TOKENS_TOTAL, &[("direction", "input"), ("model", "gpt-4.1")], 5);
        registry.add(&host, TOKENS_TOTAL, &[("direction", "input"), ("model", "gpt-4.1")], 7);
        assert_eq!(host.metric("sluice_tokens_total;direction=input;model=gpt-4.1"), Some(12));
        assert_eq!(host.names.borrow().len(), 1, "defined once");
    }

    #[test]
    fn values_are_sanitised() {
        assert_eq!(sanitize_label_value("a;b=c d\"e"), "a_b_c_d_e");
        assert_eq!(sanitize_label_value(""), UNKNOWN);
        assert_eq!(sanitize_label_value(&"x".repeat(500)).len(), 64);
        assert_eq!(sanitize_label_value("anthropic/claude-3.5@v2"), "anthropic/claude-3.5@v2");
    }

    #[test]
    fn label_cardinality_is_bounded() {
        let mut registry = MetricRegistry::new(2);
        let host = FakeHost::default();
        for model in ["a", "b", "c", "d", "a"] {
            registry.add(&host, REQUESTS_TOTAL, &[("model", model)], 1);
        }
        assert_eq!(host.metric("sluice_requests_total;model=a"), Some(2));
        assert_eq!(host.metric("sluice_requests_total;model=other"), Some(2));
        assert_eq!(host.metric("sluice_requests_total;model=c"), None);
    }

    #[test]
    fn zero_is_not_recorded_for_counters_but_histograms_record() {
        let mut registry = MetricRegistry::new(2);
        let host = FakeHost::default();
        registry.add(&host, TOKENS_TOTAL, &[], 0);
        assert!(host.names.borrow().is_empty());
        registry.record(&host, TIME_TO_FIRST_TOKEN_MS, &[("model", "m")], 0);
        assert_eq!(host.recorded("sluice_time_to_first_token_ms;model=m"), vec![0]);
    }

    #[test]
    fn tag_regex_shape() {
        assert_eq!(tag_regex("model"), "(;model=([^;]*))");
    }
}
