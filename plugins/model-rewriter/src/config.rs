//! The model rewriter's configuration (JSON Schema: `config.schema.json`).

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use sluice_shared::config::{ConfigError, Validate};
use sluice_shared::embeddings::Service;

const MIB: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Logical model names clients may ask for, each with its targets.
    pub models: BTreeMap<String, LogicalModel>,
    /// Rules evaluated in order; the first that matches picks the logical model.
    pub rules: Vec<Rule>,
    /// A rule whose logical model the key's allow-list does not admit: `skip` it (the next rule
    /// or the client's own model applies) or `refuse` the request (403).
    pub disallowed_rules: DisallowedRules,
    /// What happens to a model that is neither logical nor matched by a rule: `reject` (404) or
    /// `pass` (sent on unchanged, routed by Envoy's own table).
    pub unknown_models: UnknownModels,
    /// Request header carrying a task hint for rules (`when.tasks`).
    pub task_header: String,
    /// Weights of the complexity heuristic used by `when.complexity_over`.
    pub complexity: ComplexityWeights,
    /// How long a target that answered 429 or 5xx counts as unhealthy for `strategy: cost`.
    pub health_window_ms: u64,
    /// Price overrides and additions (USD per million tokens) for `strategy: cost`.
    pub prices: BTreeMap<String, sluice_shared::pricing::Price>,
    /// Largest request body read; larger requests get 413.
    pub max_request_bytes: usize,
    /// The embedding service semantic routes (`intents`) ask; the same as the semantic cache's,
    /// so one embedding of the last user turn serves both.
    pub embedding: Service,
    /// Semantic routes: what prompts are about, described by examples. A rule's
    /// `when.intents` holds when the prompt's nearest intent is listed.
    pub intents: Vec<Intent>,
    /// How a prompt is compared with an intent's examples: `nearest` (its closest example) or
    /// `centroid` (their mean, better for intents that are kinds of task across topics).
    pub intent_match: IntentMatch,
    /// Self-hosted pools (vLLM, SGLang, NIM) whose endpoints are picked per request from their
    /// scraped metrics; a target names one with `pool`.
    pub pools: BTreeMap<String, Pool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            models: BTreeMap::new(),
            rules: Vec::new(),
            disallowed_rules: DisallowedRules::Skip,
            unknown_models: UnknownModels::Reject,
            task_header: "x-sluice-task".to_string(),
            complexity: ComplexityWeights::default(),
            health_window_ms: 30_000,
            prices: BTreeMap::new(),
            max_request_bytes: 16 * MIB,
            embedding: Service::default(),
            intents: Vec::new(),
            intent_match: IntentMatch::Nearest,
            pools: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisallowedRules {
    Skip,
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownModels {
    Reject,
    Pass,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalModel {
    pub targets: Vec<Target>,
    /// How a target is chosen among those that fit the prompt.
    #[serde(default)]
    pub strategy: Strategy,
    /// With `weighted`: keep a client on one target, by virtual key (`{"by": "key"}`) or by a
    /// header's value (`{"by": "header", "header": "x-session-id"}`).
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// Shown in `GET /v1/models` as `owned_by`.
    #[serde(default)]
    pub owned_by: Option<String>,
    /// Providers tried, in order, when the chosen target fails (connect failure, 429, 5xx,
    /// timeout). Envoy does the retrying: the target's cluster must then be an aggregate
    /// cluster of the target's provider cluster followed by the fallbacks' (`envoy-config/`),
    /// with the provider adapter, which sets each attempt's model from this list.
    #[serde(default)]
    pub fallbacks: Vec<Fallback>,
    /// Skip a target whose recent answers are slow (p95 latency or time to first token over
    /// a window), for a while; then let one request probe it.
    #[serde(default)]
    pub breaker: Option<Breaker>,
}

/// A latency breaker (per target, shared by every worker).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Breaker {
    /// Opens when the p95 of the answers' whole duration in the window exceeds this (ms).
    pub p95_latency_ms: Option<u64>,
    /// Opens when the p95 of the time to the answer's first body byte exceeds this (ms).
    pub p95_ttft_ms: Option<u64>,
    /// The window the percentiles are taken over (ms).
    pub window_ms: u64,
    /// Fewest answers in the window before the breaker may open.
    pub min_samples: usize,
    /// How long an open breaker skips its target before one request probes it (ms).
    pub open_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { p95_latency_ms: None, p95_ttft_ms: None, window_ms: 60_000, min_samples: 10, open_ms: 30_000 }
    }
}

/// How a prompt is compared with an intent's examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentMatch {
    /// The cosine with the intent's nearest example.
    Nearest,
    /// The cosine with the unit mean of the intent's examples.
    Centroid,
}

/// A semantic route: what a prompt is about, by example.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Name rules list in `when.intents`; published as `sluice.route.intent`.
    pub name: String,
    /// A sentence saying what these prompts ask for (embedded as one more example).
    #[serde(default)]
    pub description: Option<String>,
    /// Prompts of this kind.
    #[serde(default)]
    pub examples: Vec<String>,
    /// Lowest cosine with the nearest example (or the centroid) for a prompt to count as this
    /// intent.
    #[serde(default = "intent_threshold")]
    pub threshold: f64,
}

/// A starting point for all-MiniLM-L6-v2 (prompts of an intent with examples across its
/// topics score 0.5-0.9, others under 0.2); tune it on `sluice.route.intent_score`.
pub const INTENT_THRESHOLD: f64 = 0.4;

fn intent_threshold() -> f64 {
    INTENT_THRESHOLD
}

impl Intent {
    /// The texts embedded for this intent: its examples, then its description.
    pub fn texts(&self) -> Vec<String> {
        self.examples.iter().cloned().chain(self.description.clone()).collect()
    }
}

/// A self-hosted pool: its endpoints, how their metrics are scraped and what headroom means.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// The endpoints (`ip:port`), as the pool cluster's load assignment has them: Envoy is
    /// told to use one by that address.
    pub endpoints: Vec<String>,
    /// How each endpoint's Prometheus metrics are read.
    #[serde(default)]
    pub scrape: Scrape,
    /// Which metric names the endpoints expose.
    #[serde(default)]
    pub engine: Engine,
    /// An endpoint with more requests waiting than this has no headroom.
    #[serde(default = "max_waiting")]
    pub max_waiting: u64,
    /// An endpoint whose KV cache is fuller than this (0-1) has no headroom.
    #[serde(default = "max_kv_cache")]
    pub max_kv_cache: f64,
    /// Requests whose prompts share their first this many characters go to the same endpoint
    /// while it has headroom (its prefix cache holds them); 0: no prefix affinity.
    #[serde(default = "prefix_chars")]
    pub prefix_chars: usize,
    /// Prefer endpoints that have the requested LoRA adapter (the target's model) loaded, while
    /// their queue is under twice `max_waiting`.
    #[serde(default = "yes")]
    pub lora_affinity: bool,
}

fn max_waiting() -> u64 {
    2
}
fn max_kv_cache() -> f64 {
    0.9
}
fn prefix_chars() -> usize {
    256
}
fn yes() -> bool {
    true
}

/// How pool endpoints' metrics are fetched: a GET of `path` (then of `health_path`), through `cluster` (an
/// `ORIGINAL_DST` cluster reading `x-envoy-original-dst-host`, so each endpoint is asked
/// itself), every `interval_ms` by one worker; older than `stale_ms`, an endpoint's figures are
/// not used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scrape {
    pub cluster: String,
    pub path: String,
    /// Asked after each good metrics scrape; an endpoint that fails it is not picked (Envoy's
    /// override-host policy does not check host health itself). Empty: not asked.
    pub health_path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub stale_ms: u64,
}

impl Default for Scrape {
    fn default() -> Self {
        Scrape {
            cluster: "sluice_scrape".to_string(),
            path: "/metrics".to_string(),
            health_path: "/health".to_string(),
            interval_ms: 200,
            timeout_ms: 250,
            stale_ms: 2_000,
        }
    }
}

/// The serving engine, which names its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// vLLM (and NIM's vLLM backend): `vllm:num_requests_waiting`, `vllm:num_requests_running`,
    /// `vllm:kv_cache_usage_perc` (or `vllm:gpu_cache_usage_perc`), `vllm:lora_requests_info`.
    #[default]
    Vllm,
    /// SGLang: `sglang:num_queue_reqs`, `sglang:num_running_reqs`, `sglang:token_usage`.
    Sglang,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Provider name, as the provider cluster's endpoints name it (`metadata.sluice.provider`).
    pub provider: String,
    /// The model name this provider knows.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Provider name, published as `sluice.route.provider` (`openai`, `anthropic`, `vllm`, ...).
    pub provider: String,
    /// The model name the provider knows.
    pub model: String,
    /// The Envoy cluster the request is sent to (the routes match it in `x-sluice-cluster`).
    pub cluster: String,
    /// Share of requests (relative to the other targets' weights).
    #[serde(default = "one")]
    pub weight: u32,
    /// Most prompt tokens the model accepts; a longer prompt skips this target.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// A pool of `pools` this target's cluster balances: the rewriter picks its endpoint.
    #[serde(default)]
    pub pool: Option<String>,
}

/// Strategies as LiteLLM users know them. All but `weighted` use per-target figures shared by
/// every worker (requests in flight, latency, tokens, failures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Random by weight (a 90/10 canary), or sticky.
    #[default]
    Weighted,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest moving average of time to the answer's headers; targets not yet measured first.
    Latency,
    /// Cheapest by price (input + output per million tokens) among targets without a failure
    /// in `health_window_ms`.
    Cost,
    /// Fewest tokens used in the current minute.
    Usage,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sticky {
    /// The virtual key's alias (`sluice.identity.key`, from the budget enforcer).
    Key,
    /// A request header's value.
    Header { header: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name published as `sluice.route.rule`.
    pub name: String,
    pub when: Condition,
    /// The logical model the request goes to.
    pub route_to: String,
}

/// Every condition given must hold; lists match any entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Condition {
    /// The model the client asked for (globs).
    pub models: Vec<String>,
    /// A request header with one of these values (`{"name": "x-model-tier", "values": ["fast"]}`).
    pub header: Option<HeaderMatch>,
    /// The caller's team (`sluice.identity.team`).
    pub teams: Vec<String>,
    /// The prompt estimate is above this many tokens.
    pub prompt_tokens_over: Option<u64>,
    /// The complexity score (0-1) is above this.
    pub complexity_over: Option<f64>,
    /// The task hint header (`task_header`) has one of these values.
    pub tasks: Vec<String>,
    /// The prompt's nearest intent (`intents`, at or above its threshold) is one of these.
    pub intents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub values: Vec<String>,
}

/// A prompt's complexity, 0 to 1: the sum of these contributions, capped at 1.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplexityWeights {
    /// Added when the prompt holds a fenced code block.
    pub code_block: f64,
    /// Added per conversation turn beyond the first, up to `max_turns`.
    pub per_turn: f64,
    pub max_turns: u32,
    /// Added per 1,000 characters of prompt text, up to `max_length`.
    pub per_thousand_chars: f64,
    pub max_length: f64,
    /// Added once when any of `keywords` appears (case-insensitive).
    pub keyword: f64,
    pub keywords: Vec<String>,
}

impl Default for ComplexityWeights {
    fn default() -> Self {
        ComplexityWeights {
            code_block: 0.3,
            per_turn: 0.05,
            max_turns: 6,
            per_thousand_chars: 0.05,
            max_length: 0.3,
            keyword: 0.25,
            keywords: [
                "step by step",
                "prove",
                "analyze",
                "analyse",
                "derive",
                "refactor",
                "architecture",
                "trade-off",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl Config {
    /// Every request header a routing decision may read (rules, task hint, sticky headers):
    /// request headers can only be read before the body arrives, so these are kept then.
    pub fn routing_headers(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.rules.iter().filter_map(|r| r.when.header.as_ref().map(|h| h.name.clone())).collect();
        names.push(self.task_header.clone());
        names.extend(self.models.values().filter_map(|m| match &m.sticky {
            Some(Sticky::Header { header }) => Some(header.clone()),
            _ => None,
        }));
        let mut names: Vec<String> = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl Config {
    fn validate_intents(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, intent) in self.intents.iter().enumerate() {
            let at = |field: &str| format!(".intents[{i}].{field}");
            if intent.name.is_empty() || !names.insert(intent.name.as_str()) {
                return Err(ConfigError::at(at("name"), "intent names must be unique and non-empty"));
            }
            if intent.texts().iter().all(|t| t.trim().is_empty()) {
                return Err(ConfigError::at(at("examples"), "needs at least one example or a description"));
            }
            if !(intent.threshold > 0.0 && intent.threshold < 1.0) {
                return Err(ConfigError::at(at("threshold"), "must be in (0, 1)"));
            }
        }
        if !self.intents.is_empty() {
            let e = &self.embedding;
            for (field, value) in [("cluster", &e.cluster), ("authority", &e.authority), ("model", &e.model)] {
                if value.is_empty() {
                    return Err(ConfigError::at(format!(".embedding.{field}"), "must not be empty"));
                }
            }
            if !e.path.starts_with('/') {
                return Err(ConfigError::at(".embedding.path", "must start with `/`"));
            }
            if e.timeout_ms == 0 {
                return Err(ConfigError::at(".embedding.timeout_ms", "must be positive"));
            }
        }
        Ok(())
    }

    fn validate_pools(&self) -> Result<(), ConfigError> {
        for (name, pool) in &self.pools {
            let at = |field: &str| format!(".pools.{name}.{field}");
            if pool.endpoints.is_empty() {
                return Err(ConfigError::at(at("endpoints"), "needs at least one endpoint"));
            }
            let mut seen = HashSet::new();
            for (i, endpoint) in pool.endpoints.iter().enumerate() {
                if crate::pool::address(endpoint).is_none() || !seen.insert(endpoint.as_str()) {
                    return Err(ConfigError::at(
                        format!(".pools.{name}.endpoints[{i}]"),
                        format!("`{endpoint}` is not a unique `ip:port` (as the cluster's load assignment has it)"),
                    ));
                }
            }
            let scrape = &pool.scrape;
            if scrape.cluster.is_empty()
                || !scrape.path.starts_with('/')
                || !(scrape.health_path.is_empty() || scrape.health_path.starts_with('/'))
            {
                return Err(ConfigError::at(at("scrape"), "needs a cluster and a path starting with `/`"));
            }
            if scrape.interval_ms == 0 || scrape.timeout_ms == 0 || scrape.stale_ms <= scrape.interval_ms {
                return Err(ConfigError::at(
                    at("scrape.stale_ms"),
                    "intervals must be positive and `stale_ms` longer than `interval_ms`",
                ));
            }
            if !(pool.max_kv_cache > 0.0 && pool.max_kv_cache <= 1.0) {
                return Err(ConfigError::at(at("max_kv_cache"), "must be in (0, 1]"));
            }
        }
        Ok(())
    }

    /// Whether any rule reads prompts' intents (the examples are then embedded).
    pub fn reads_intents(&self) -> bool {
        !self.intents.is_empty() && self.rules.iter().any(|r| !r.when.intents.is_empty())
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, model) in &self.models {
            let at = |field: &str| format!(".models.{name}.{field}");
            if name.is_empty() {
                return Err(ConfigError::at(".models", "model names must not be empty"));
            }
            if model.targets.is_empty() {
                return Err(ConfigError::at(at("targets"), "needs at least one target"));
            }
            for (i, target) in model.targets.iter().enumerate() {
                let at = |field: &str| format!(".models.{name}.targets[{i}].{field}");
                for (field, value) in
                    [("provider", &target.provider), ("model", &target.model), ("cluster", &target.cluster)]
                {
                    if value.is_empty() {
                        return Err(ConfigError::at(at(field), "must not be empty"));
                    }
                }
                if let Some(pool) = &target.pool {
                    if !self.pools.contains_key(pool) {
                        return Err(ConfigError::at(at("pool"), format!("`{pool}` is not a configured pool")));
                    }
                }
                if target.context_window == Some(0) {
                    return Err(ConfigError::at(at("context_window"), "must be positive"));
                }
            }
            if model.targets.iter().all(|t| t.weight == 0) {
                return Err(ConfigError::at(at("targets"), "at least one target needs a positive weight"));
            }
            let mut providers: HashSet<&str> = HashSet::new();
            for (i, fallback) in model.fallbacks.iter().enumerate() {
                let at = |field: &str| format!(".models.{name}.fallbacks[{i}].{field}");
                if fallback.provider.is_empty() || fallback.model.is_empty() {
                    return Err(ConfigError::at(at("model"), "needs a provider and a model"));
                }
                // Each attempt's model is looked up by its provider.
                let taken = !providers.insert(&fallback.provider)
                    || (model.targets.iter().any(|t| t.provider == fallback.provider));
                if taken {
                    return Err(ConfigError::at(
                        at("provider"),
                        format!("`{}` appears twice in the chain (targets and fallbacks)", fallback.provider),
                    ));
                }
            }
            if let Some(breaker) = &model.breaker {
                if breaker.p95_latency_ms.is_none() && breaker.p95_ttft_ms.is_none() {
                    return Err(ConfigError::at(at("breaker"), "needs `p95_latency_ms` or `p95_ttft_ms`"));
                }
                if breaker.window_ms == 0 || breaker.open_ms == 0 || breaker.min_samples == 0 {
                    return Err(ConfigError::at(
                        at("breaker"),
                        "`window_ms`, `open_ms` and `min_samples` must be positive",
                    ));
                }
            }
            if let Some(Sticky::Header { header }) = &model.sticky {
                if header.is_empty() {
                    return Err(ConfigError::at(at("sticky.header"), "must name a header"));
                }
            }
        }
        let mut names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!(".rules[{i}].{field}");
            if rule.name.is_empty() || !names.insert(rule.name.as_str()) {
                return Err(ConfigError::at(at("name"), "rule names must be unique and non-empty"));
            }
            if !self.models.contains_key(&rule.route_to) {
                return Err(ConfigError::at(at("route_to"), format!("`{}` is not a configured model", rule.route_to)));
            }
            if let Some(score) = rule.when.complexity_over {
                if !(0.0..1.0).contains(&score) {
                    return Err(ConfigError::at(at("when.complexity_over"), "must be in [0, 1)"));
                }
            }
            for intent in &rule.when.intents {
                if !self.intents.iter().any(|i| &i.name == intent) {
                    return Err(ConfigError::at(at("when.intents"), format!("`{intent}` is not a configured intent")));
                }
            }
            if rule.when.header.as_ref().is_some_and(|h| h.name.is_empty() || h.values.is_empty()) {
                return Err(ConfigError::at(at("when.header"), "needs a name and at least one value"));
            }
        }
        self.validate_intents()?;
        self.validate_pools()?;
        sluice_shared::pricing::validate_overrides(&self.prices)?;
        if self.task_header.is_empty() {
            return Err(ConfigError::at(".task_header", "must name a header"));
        }
        let c = &self.complexity;
        let weights = [c.code_block, c.per_turn, c.per_thousand_chars, c.max_length, c.keyword];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(ConfigError::at(".complexity", "weights must be finite numbers >= 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        parse_config(Some(json.as_bytes()))
    }

    const MODELS: &str = r#""models": {"chat-fast": {"targets": [
        {"provider": "openai", "model": "gpt-4o-mini", "cluster": "provider_openai", "weight": 9},
        {"provider": "anthropic", "model": "claude-haiku-4-5", "cluster": "provider_anthropic"}]}}"#;

    #[test]
    fn example() {
        let config = parse(&format!(
            r#"{{{MODELS}, "rules": [{{"name": "tier", "when": {{"header": {{"name": "x-model-tier", "values": ["fast"]}}}},
                "route_to": "chat-fast"}}]}}"#
        ))
        .unwrap();
        let fast = &config.models["chat-fast"];
        assert_eq!(fast.targets[1].weight, 1);
        assert_eq!(config.rules[0].route_to, "chat-fast");
        assert_eq!(parse(&format!(r#"{{{MODELS}}}"#)).map(|c| c.unknown_models), Ok(UnknownModels::Reject));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"models": {"m": {"targets": []}}}"#.to_string(), ".models.m.targets"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "", "cluster": "c"}]}}}"#.into(), ".models.m.targets[0].model"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c", "weight": 0}]}}}"#.into(), ".models.m.targets"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c", "weight": -1}]}}}"#.into(), ".models.m.targets[0].weight"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}], "sticky": {"by": "cookie"}}}}"#.into(), ".models.m.sticky.by"),
            (format!(r#"{{{MODELS}, "rules": [{{"name": "r", "when": {{}}, "route_to": "nope"}}]}}"#), ".rules[0].route_to"),
            (format!(r#"{{{MODELS}, "rules": [{{"name": "r", "when": {{"complexity_over": 2}}, "route_to": "chat-fast"}}]}}"#), ".rules[0].when.complexity_over"),
            (format!(r#"{{{MODELS}, "rules": [{{"name": "r", "when": {{"size": 2}}, "route_to": "chat-fast"}}]}}"#), ".rules[0].when.size"),
            (r#"{"unknown_models": "maybe"}"#.into(), ".unknown_models"),
            (r#"{"disallowed_rules": "ignore"}"#.into(), ".disallowed_rules"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}], "fallbacks": [{"provider": "p", "model": "y"}]}}}"#.into(), ".models.m.fallbacks[0].provider"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}], "fallbacks": [{"provider": "q", "model": "y"}, {"provider": "q", "model": "z"}]}}}"#.into(), ".models.m.fallbacks[1].provider"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}], "fallbacks": [{"provider": "q", "model": ""}]}}}"#.into(), ".models.m.fallbacks[0].model"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}], "fallbacks": [{"provider": "q"}]}}}"#.into(), ".models.m.fallbacks[0]"),
            (r#"{"complexity": {"keyword": -1}}"#.into(), ".complexity"),
            (format!(r#"{{{MODELS}, "rules": [{{"name": "r", "when": {{"intents": ["code"]}}, "route_to": "chat-fast"}}]}}"#), ".rules[0].when.intents"),
            (r#"{"intents": [{"name": "code"}]}"#.into(), ".intents[0].examples"),
            (r#"{"intents": [{"name": "a", "examples": ["x"]}, {"name": "a", "examples": ["y"]}]}"#.into(), ".intents[1].name"),
            (r#"{"intents": [{"name": "a", "examples": ["x"], "threshold": 1}]}"#.into(), ".intents[0].threshold"),
            (r#"{"intents": [{"name": "a", "examples": ["x"]}], "embedding": {"cluster": ""}}"#.into(), ".embedding.cluster"),
            (r#"{"intents": [{"name": "a", "examples": ["x"]}], "embedding": {"dimensions": 3}}"#.into(), ".embedding.dimensions"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c", "pool": "gpu"}]}}}"#.into(), ".models.m.targets[0].pool"),
            (r#"{"pools": {"gpu": {"endpoints": []}}}"#.into(), ".pools.gpu.endpoints"),
            (r#"{"pools": {"gpu": {"endpoints": ["vllm.local:8000"]}}}"#.into(), ".pools.gpu.endpoints[0]"),
            (r#"{"pools": {"gpu": {"endpoints": ["10.0.0.1:80", "10.0.0.1:80"]}}}"#.into(), ".pools.gpu.endpoints[1]"),
            (r#"{"pools": {"gpu": {"endpoints": ["10.0.0.1:80"], "scrape": {"interval_ms": 500, "stale_ms": 400}}}}"#.into(), ".pools.gpu.scrape.stale_ms"),
            (r#"{"pools": {"gpu": {"endpoints": ["10.0.0.1:80"], "max_kv_cache": 0}}}"#.into(), ".pools.gpu.max_kv_cache"),
            (r#"{"pools": {"gpu": {"endpoints": ["10.0.0.1:80"], "engine": "tgi"}}}"#.into(), ".pools.gpu.engine"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}], "breaker": {}}}}"#.into(), ".models.m.breaker"),
            (r#"{"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}], "breaker": {"p95_ttft_ms": 500, "open_ms": 0}}}}"#.into(), ".models.m.breaker"),
        ];
        for (json, path) in cases {
            let error = parse(&json).expect_err(&json);
            assert_eq!(error.path, path, "{json}: {error}");
        }
    }

    #[test]
    fn schema_matches_config() {
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }
}
