//! The model rewriter's configuration (JSON Schema: `config.schema.json`).

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use sluice_shared::config::{ConfigError, Validate};

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
            if rule.when.header.as_ref().is_some_and(|h| h.name.is_empty() || h.values.is_empty()) {
                return Err(ConfigError::at(at("when.header"), "needs a name and at least one value"));
            }
        }
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
