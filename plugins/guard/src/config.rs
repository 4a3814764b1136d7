//! The guard's configuration (JSON Schema: `config.schema.json`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use sluice_shared::api::Api;
use sluice_shared::config::{ConfigError, Validate};

const MIB: usize = 1 << 20;

/// What a guard service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// OpenAI-compatible `POST /v1/moderations`: categories with scores.
    Moderation,
    /// A classifier served as chat completions (Llama Guard on vLLM, ...): `safe`, or `unsafe`
    /// and its categories.
    Chat,
    /// An in-house policy engine behind the documented JSON contract (README).
    Webhook,
    /// Prompt injection by likeness: the prompt's embedding against known attack prompts'
    /// (an OpenAI-compatible `POST /v1/embeddings` service, the one the semantic cache calls).
    Similarity,
}

impl Kind {
    pub fn default_path(self) -> &'static str {
        match self {
            Kind::Moderation => "/v1/moderations",
            Kind::Chat => "/v1/chat/completions",
            Kind::Webhook => "/guard",
            Kind::Similarity => "/v1/embeddings",
        }
    }
}

/// Which side of an exchange a guard looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Prompt,
    Answer,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Prompt => "prompt",
            Direction::Answer => "answer",
        }
    }
}

/// What a category that trips does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing (the category is ignored).
    Off,
    /// Passed, with the `sluice.guard.flagged` fact and a metric.
    Flag,
    /// The text is replaced by what the webhook sent (webhook guards only).
    Redact,
    /// A prompt is refused (400, naming the guard and the category); an answer is withheld and
    /// ends with `finish_reason: content_filter` (Anthropic: `stop_reason: refusal`).
    Block,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Flag => "flag",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

/// What happens when a guard cannot answer (down, slow, garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// The text passes unchecked (`sluice.guard.decision` says `unchecked`).
    Open,
    /// As if the guard had blocked it: a prompt gets 503, an answer is withheld.
    Closed,
}

/// When a category trips, and what it then does.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Moderation scores at or above this trip the category; without it, the service's own
    /// `categories` verdict decides. Chat and webhook guards give no scores.
    #[serde(default)]
    pub threshold: Option<f64>,
    pub action: Action,
}

/// How a chat guard is shown the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// As chat messages: the served model's own chat template formats them (Llama Guard's does).
    #[default]
    Messages,
    /// One user message holding Llama Guard's documented task prompt, written here (for servers
    /// without that template, or classifiers trained on the same prompt).
    LlamaGuard,
}

/// One guard service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Its name in metrics, facts and errors.
    pub name: String,
    pub kind: Kind,
    /// Envoy cluster of the service (in Istio: `outbound|443||api.openai.com`).
    pub cluster: String,
    /// `:authority` of the callout.
    pub authority: String,
    /// Default per kind: `/v1/moderations`, `/v1/chat/completions`, `/guard`.
    #[serde(default)]
    pub path: Option<String>,
    /// The model to ask (required for `chat`; `moderation` sends it when set).
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable with a key sent as `Authorization: Bearer` (pass it to the VM with
    /// `vm_config.environment_variables.host_env_keys`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_on_error")]
    pub on_error: FailurePolicy,
    /// What it looks at.
    #[serde(default = "both_directions")]
    pub check: Vec<Direction>,
    /// Rules per category (the service's names: `violence`, `S1`, ...).
    #[serde(default)]
    pub categories: BTreeMap<String, Rule>,
    /// What a tripped category not listed in `categories` does.
    #[serde(default = "default_action")]
    pub default_action: Action,
    /// `chat` only: how the conversation is shown.
    #[serde(default)]
    pub template: Template,
    /// `chat` with `template: llama_guard`: the policy's category lines (`S1: Violent Crimes.`);
    /// Llama Guard 3's fourteen when empty.
    #[serde(default)]
    pub policy: Vec<String>,
    /// `similarity`: the operator's own attack prompts, besides (or instead of) the built-in ones.
    #[serde(default)]
    pub examples: Vec<String>,
    /// `similarity`: compare with the attack prompts shipped with the module.
    #[serde(default = "yes")]
    pub builtin_examples: bool,
}

fn yes() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_on_error() -> FailurePolicy {
    FailurePolicy::Closed
}
fn both_directions() -> Vec<Direction> {
    vec![Direction::Prompt, Direction::Answer]
}
fn default_action() -> Action {
    Action::Block
}

impl Guard {
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(self.kind.default_path())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn checks(&self, direction: Direction) -> bool {
        self.check.contains(&direction)
    }

    /// The rule of a category the service reported.
    pub fn rule(&self, category: &str) -> Rule {
        self.categories.get(category).copied().unwrap_or(Rule { threshold: None, action: self.default_action })
    }

    /// `similarity`: every attack prompt to compare with.
    pub fn attack_examples(&self) -> Vec<String> {
        let builtin = if self.builtin_examples { crate::similarity::builtin() } else { Vec::new() };
        builtin.into_iter().chain(self.examples.iter().cloned()).collect()
    }

    pub fn api_key(&self) -> Option<String> {
        let var = self.api_key_env.as_deref()?;
        std::env::var(var).ok().filter(|k| !k.is_empty())
    }
}

/// How streamed answers are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// Text is released only once a check passed it.
    Holdback,
    /// Text streams at once; a failed check ends the answer with a content filter stop.
    Cut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stream {
    pub mode: StreamMode,
    /// A check is asked once this many characters arrived since the last one.
    pub check_every_chars: usize,
    /// Also at a sentence end, once `min_chars` arrived since the last check.
    pub sentence_ends: bool,
    pub min_chars: usize,
    /// `holdback`: the most text held unchecked; past it the guard counts as too slow
    /// (its `on_error` decides).
    pub max_held_bytes: usize,
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            mode: StreamMode::Holdback,
            check_every_chars: 400,
            sentence_ends: true,
            min_chars: 40,
            max_held_bytes: 16 * 1024,
        }
    }
}

/// Which requests a route covers: every listed condition must hold (an empty list holds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Match {
    /// Model globs (`gpt-4o*`), against the model the client asked for.
    pub models: Vec<String>,
    /// API names: `chat_completions`, `responses`, `messages`, `generate_content`, `completions`,
    /// `embeddings`, `count_tokens`.
    pub apis: Vec<String>,
}

/// Guards and stream handling for the requests a route matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(rename = "match", default)]
    pub when: Match,
    /// Guard names; all of them when absent, none when empty.
    #[serde(default)]
    pub guards: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<Stream>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub guards: Vec<Guard>,
    /// The first route that matches a request decides its guards; without one, every guard.
    pub routes: Vec<Route>,
    pub stream: Stream,
    /// Larger prompts are refused (413): they cannot be checked.
    pub max_request_bytes: usize,
    /// Larger JSON answers, or streams with more text, are withheld: they cannot be checked.
    pub max_answer_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            guards: Vec::new(),
            routes: Vec::new(),
            stream: Stream::default(),
            max_request_bytes: 4 * MIB,
            max_answer_bytes: MIB,
        }
    }
}

/// The guards (indices into `guards`) and stream handling for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub guards: Vec<usize>,
    pub stream: Stream,
}

impl Config {
    /// What the first matching route says for a request of `api` asking for `model`.
    pub fn plan(&self, api: Api, model: &str) -> Plan {
        let route = self.routes.iter().find(|r| {
            (r.when.models.is_empty() || sluice_shared::glob::any(&r.when.models, model))
                && (r.when.apis.is_empty() || r.when.apis.iter().any(|a| a == api.name()))
        });
        let named = route.and_then(|r| r.guards.as_ref());
        let guards = (0..self.guards.len())
            .filter(|&i| named.is_none_or(|names| self.guards.get(i).is_some_and(|g| names.contains(&g.name))))
            .collect();
        Plan { guards, stream: route.and_then(|r| r.stream).unwrap_or(self.stream) }
    }
}

fn check_stream(path: &str, s: &Stream) -> Result<(), ConfigError> {
    if !(1..=1_000_000).contains(&s.check_every_chars) {
        return Err(ConfigError::at(format!("{path}.check_every_chars"), "must be between 1 and 1000000"));
    }
    if s.min_chars > s.check_every_chars {
        return Err(ConfigError::at(format!("{path}.min_chars"), "must not exceed `check_every_chars`"));
    }
    if s.max_held_bytes < s.check_every_chars {
        return Err(ConfigError::at(format!("{path}.max_held_bytes"), "must be at least `check_every_chars`"));
    }
    Ok(())
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, g) in self.guards.iter().enumerate() {
            let at = |field: &str| format!(".guards[{i}].{field}");
            let valid_name = !g.name.is_empty()
                && g.name.len() <= 40
                && g.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid_name {
                return Err(ConfigError::at(at("name"), "1-40 letters, digits, `_` or `-`"));
            }
            if !names.insert(g.name.as_str()) {
                return Err(ConfigError::at(at("name"), "names must be unique"));
            }
            if g.cluster.is_empty() || g.authority.is_empty() {
                return Err(ConfigError::at(at("cluster"), "`cluster` and `authority` must not be empty"));
            }
            if !g.path().starts_with('/') {
                return Err(ConfigError::at(at("path"), "must start with '/'"));
            }
            if g.kind == Kind::Chat && g.model.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::at(at("model"), "is required for `kind: chat`"));
            }
            if !(1..=60_000).contains(&g.timeout_ms) {
                return Err(ConfigError::at(at("timeout_ms"), "must be between 1 and 60000"));
            }
            if g.check.is_empty() {
                return Err(ConfigError::at(at("check"), "must name `prompt`, `answer` or both"));
            }
            let redacts =
                g.default_action == Action::Redact || g.categories.values().any(|r| r.action == Action::Redact);
            if redacts && g.kind != Kind::Webhook {
                return Err(ConfigError::at(
                    at("categories"),
                    "`redact` needs text to redact with: webhook guards only",
                ));
            }
            for (name, rule) in &g.categories {
                if rule.threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                    return Err(ConfigError::at(
                        format!(".guards[{i}].categories.{name}.threshold"),
                        "must be between 0 and 1",
                    ));
                }
                if rule.threshold.is_some() && !matches!(g.kind, Kind::Moderation | Kind::Similarity) {
                    return Err(ConfigError::at(
                        format!(".guards[{i}].categories.{name}.threshold"),
                        "only moderation and similarity guards report scores",
                    ));
                }
            }
            if (g.template != Template::Messages || !g.policy.is_empty()) && g.kind != Kind::Chat {
                return Err(ConfigError::at(at("template"), "only for `kind: chat`"));
            }
            if g.kind == Kind::Similarity {
                if g.check != [Direction::Prompt] {
                    return Err(ConfigError::at(at("check"), "a similarity guard checks prompts only: `[prompt]`"));
                }
                if g.attack_examples().is_empty() {
                    return Err(ConfigError::at(at("examples"), "no examples: list some or keep `builtin_examples`"));
                }
                if g.examples.len() > 1000 {
                    return Err(ConfigError::at(at("examples"), "at most 1000"));
                }
            } else if !g.examples.is_empty() || !g.builtin_examples {
                return Err(ConfigError::at(at("examples"), "only for `kind: similarity`"));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            for guard in route.guards.iter().flatten() {
                if !names.contains(guard.as_str()) {
                    return Err(ConfigError::at(
                        format!(".routes[{i}].guards"),
                        format!("no guard is named `{guard}`"),
                    ));
                }
            }
            if let Some(api) = route.when.apis.iter().find(|a| Api::from_name(a).is_none()) {
                return Err(ConfigError::at(format!(".routes[{i}].match.apis"), format!("unknown API `{api}`")));
            }
            if let Some(stream) = &route.stream {
                check_stream(&format!(".routes[{i}].stream"), stream)?;
            }
        }
        check_stream(".stream", &self.stream)?;
        if self.max_request_bytes == 0 || self.max_answer_bytes == 0 {
            return Err(ConfigError::at(".max_request_bytes", "sizes must be positive"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_config(Some(text.as_bytes()))
    }

    const MODERATION: &str = r#"{"name": "mod", "kind": "moderation", "cluster": "guards", "authority": "g"}"#;

    #[test]
    fn defaults_and_a_full_guard() {
        assert_eq!(parse("").unwrap(), Config::default());
        let c = parse(&format!(r#"{{"guards": [{MODERATION}]}}"#)).unwrap();
        let g = &c.guards[0];
        assert_eq!((g.path(), g.timeout_ms, g.on_error), ("/v1/moderations", 1000, FailurePolicy::Closed));
        assert!(g.checks(Direction::Prompt) && g.checks(Direction::Answer));
        assert_eq!(g.rule("violence"), Rule { threshold: None, action: Action::Block });
        let c = parse(
            r#"{"guards": [{"name": "lg", "kind": "chat", "cluster": "c", "authority": "a", "model": "llama-guard",
                "check": ["answer"], "categories": {"S6": {"action": "flag"}}, "template": "llama_guard"}],
               "routes": [{"match": {"models": ["gpt-*"], "apis": ["chat_completions"]}, "guards": ["lg"],
                           "stream": {"mode": "cut"}}]}"#,
        )
        .unwrap();
        assert_eq!(c.guards[0].rule("S6").action, Action::Flag);
        assert_eq!(c.routes[0].stream.map(|s| s.mode), Some(StreamMode::Cut));
    }

    #[test]
    fn every_bad_field_is_named() {
        for (text, path) in [
            (
                r#"{"guards": [{"name": "", "kind": "moderation", "cluster": "c", "authority": "a"}]}"#,
                ".guards[0].name",
            ),
            (&format!(r#"{{"guards": [{MODERATION}, {MODERATION}]}}"#), ".guards[1].name"),
            (r#"{"guards": [{"name": "x", "kind": "chat", "cluster": "c", "authority": "a"}]}"#, ".guards[0].model"),
            (
                r#"{"guards": [{"name": "x", "kind": "moderation", "cluster": "", "authority": "a"}]}"#,
                ".guards[0].cluster",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "moderation", "cluster": "c", "authority": "a", "path": "m"}]}"#,
                ".guards[0].path",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "moderation", "cluster": "c", "authority": "a", "timeout_ms": 0}]}"#,
                ".guards[0].timeout_ms",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "moderation", "cluster": "c", "authority": "a", "check": []}]}"#,
                ".guards[0].check",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "moderation", "cluster": "c", "authority": "a", "default_action": "redact"}]}"#,
                ".guards[0].categories",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "moderation", "cluster": "c", "authority": "a", "categories": {"v": {"threshold": 2, "action": "block"}}}]}"#,
                ".guards[0].categories.v.threshold",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "webhook", "cluster": "c", "authority": "a", "categories": {"v": {"threshold": 0.5, "action": "block"}}}]}"#,
                ".guards[0].categories.v.threshold",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "webhook", "cluster": "c", "authority": "a", "template": "llama_guard"}]}"#,
                ".guards[0].template",
            ),
            (r#"{"guards": [{"name": "x", "kind": "nope", "cluster": "c", "authority": "a"}]}"#, ".guards[0].kind"),
            (
                r#"{"guards": [{"name": "x", "kind": "moderation", "cluster": "c", "authority": "a", "on_error": "maybe"}]}"#,
                ".guards[0].on_error",
            ),
            (r#"{"routes": [{"guards": ["ghost"]}]}"#, ".routes[0].guards"),
            (r#"{"routes": [{"match": {"apis": ["fax"]}}]}"#, ".routes[0].match.apis"),
            (r#"{"routes": [{"stream": {"check_every_chars": 0}}]}"#, ".routes[0].stream.check_every_chars"),
            (r#"{"stream": {"check_every_chars": 10, "min_chars": 20}}"#, ".stream.min_chars"),
            (r#"{"stream": {"check_every_chars": 100, "max_held_bytes": 10}}"#, ".stream.max_held_bytes"),
            (r#"{"stream": {"mode": "later"}}"#, ".stream.mode"),
            (r#"{"max_answer_bytes": 0}"#, ".max_request_bytes"),
            (
                r#"{"guards": [{"name": "x", "kind": "similarity", "cluster": "c", "authority": "a"}]}"#,
                ".guards[0].check",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "similarity", "cluster": "c", "authority": "a", "check": ["prompt"], "builtin_examples": false}]}"#,
                ".guards[0].examples",
            ),
            (
                r#"{"guards": [{"name": "x", "kind": "webhook", "cluster": "c", "authority": "a", "examples": ["e"]}]}"#,
                ".guards[0].examples",
            ),
            (r#"{"gaurds": []}"#, "."),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.path.starts_with(path), "{text}: {error}");
        }
    }

    #[test]
    fn the_first_matching_route_decides() {
        let c = parse(&format!(
            r#"{{"guards": [{MODERATION}, {{"name": "hook", "kind": "webhook", "cluster": "c", "authority": "a"}}],
                "routes": [{{"match": {{"models": ["internal-*"]}}, "guards": []}},
                           {{"match": {{"apis": ["messages"]}}, "guards": ["hook"], "stream": {{"mode": "cut"}}}}]}}"#
        ))
        .unwrap();
        assert_eq!(c.plan(Api::ChatCompletions, "internal-llm").guards, Vec::<usize>::new());
        let claude = c.plan(Api::AnthropicMessages, "claude");
        assert_eq!((claude.guards, claude.stream.mode), (vec![1], StreamMode::Cut));
        let other = c.plan(Api::ChatCompletions, "gpt-4o");
        assert_eq!((other.guards, other.stream.mode), (vec![0, 1], StreamMode::Holdback));
    }

    #[test]
    fn schema_matches_config() {
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }
}
