//! The semantic cache's configuration (JSON Schema: `config.schema.json`).

use serde::Deserialize;
use sluice_shared::config::{ConfigError, Validate};
use sluice_shared::glob;
use sluice_shared::redis::RedisBridge;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Whose answers a request may be served: tenants never see each other's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Namespace {
    /// Per team (`sluice.identity.team`), or per key for a key without a team.
    Team,
    /// Per virtual key (`sluice.identity.key`).
    Key,
    /// Per team (or key, as `team`) and feature (`sluice.identity.feature`, the budget
    /// enforcer's `dimensions`): a feature's answers are not another feature's. A request
    /// without a feature is in its team's namespace.
    TeamFeature,
    /// Per project (`sluice.identity.project`): every key of a project shares its answers. A
    /// request without a project bypasses the cache.
    Project,
    /// One cache for everybody. Only for gateways that serve a single tenant.
    Global,
}

/// Which text is embedded for the semantic lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedText {
    /// The last user message; everything before it must match exactly.
    LastUserTurn,
    /// Every message's text; only the parameters must match exactly.
    Conversation,
}

/// What a route does with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Exact, then similar prompts.
    Semantic,
    /// Byte-for-byte (after normalisation) repeats only.
    Exact,
    /// Not cached.
    Off,
}

/// The embedding service (OpenAI-compatible `POST /v1/embeddings`); its `model` is part of
/// every semantic key: changing it starts afresh.
pub use sluice_shared::embeddings::Service as Embedding;

/// How the verifier is asked (`verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VerifierKind {
    /// `POST /rerank` (TEI, vLLM, Jina, Cohere): a relevance score.
    #[default]
    Rerank,
    /// An OpenAI-compatible chat model asked yes or no.
    Chat,
}

/// A service asked about grey-zone candidates (`verify`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verifier {
    pub kind: VerifierKind,
    /// Envoy cluster of the service.
    pub cluster: String,
    pub authority: String,
    /// Default `/rerank` or `/v1/chat/completions` by kind.
    pub path: Option<String>,
    /// `model` sent (required for `chat`).
    pub model: Option<String>,
    pub timeout_ms: u64,
    /// Lowest rerank score that serves.
    pub min_score: f64,
    /// Verdicts kept per worker.
    pub cache_entries: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            kind: VerifierKind::Rerank,
            cluster: String::new(),
            authority: String::new(),
            path: None,
            model: None,
            timeout_ms: 300,
            min_score: 0.5,
            cache_entries: 4096,
        }
    }
}

impl Verifier {
    pub fn path(&self) -> &str {
        match (&self.path, self.kind) {
            (Some(path), _) => path,
            (None, VerifierKind::Rerank) => "/rerank",
            (None, VerifierKind::Chat) => "/v1/chat/completions",
        }
    }
}

/// The exact index (`index`): which answers Redis may hold, known without asking it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExactIndex {
    /// Off: every lookup asks Redis, as before the index existed.
    pub enabled: bool,
    /// Length of one generation of the index. Every TTL must fit in it; gateways sharing a
    /// cache must agree on it (it is part of the index's Redis keys).
    pub period_seconds: u64,
    /// Pages of 2048 bits per generation (a power of two); about 200 answers per page keep
    /// false "maybe"s under 1%. Gateways sharing a cache must agree on it.
    pub pages: u32,
    /// How often each worker copies what other gateways stored from Redis.
    pub sync_ms: u64,
}

impl Default for ExactIndex {
    fn default() -> Self {
        ExactIndex { enabled: true, period_seconds: 86_400, pages: 512, sync_ms: 1000 }
    }
}

/// What a route changes. Unset fields keep the plugin-wide value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Request path prefix (`/v1/chat/completions`, `/team-a/`); any when absent.
    pub path_prefix: Option<String>,
    /// Globs on the request's `:authority`; any when empty.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Globs on the requested model; any when empty.
    #[serde(default)]
    pub models: Vec<String>,
    pub mode: Option<Mode>,
    pub threshold: Option<f64>,
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub redis: RedisBridge,
    pub embedding: Embedding,
    pub mode: Mode,
    /// Lowest cosine similarity at which a cached prompt counts as the same question.
    pub threshold: f64,
    /// Also require the same question (`same_question`); without it, precision on the
    /// project's labelled pairs falls to 0.66-0.85.
    pub guard: bool,
    /// How much more similar than `threshold` a pair must be when the guard finds it only
    /// close (one light verb differs).
    pub close_margin: f64,
    /// Asked about grey-zone candidates; none by default.
    pub verify: Option<Verifier>,
    /// Lowest similarity at which an entry whose hits were contradicted still answers a
    /// paraphrase (`x-sluice-cache-wrong`).
    pub contradicted_threshold: f64,
    /// Contradictions of paraphrase hits that evict an entry (a contradicted exact hit evicts at
    /// once).
    pub evict_after: u32,
    pub embed: EmbedText,
    pub namespace: Namespace,
    pub ttl_seconds: u64,
    /// Store answers that call tools (they act on the caller's state, so off by default).
    pub cache_tool_calls: bool,
    /// Requests larger than this are not cached.
    pub max_request_bytes: usize,
    /// Answers larger than this are not stored.
    pub max_entry_bytes: usize,
    /// Longest text embedded (longer prompts use exact matching only).
    pub max_embed_chars: usize,
    /// Random hyperplanes splitting each scope into 2^bits buckets (0: one bucket, every
    /// entry compared). More bits hold more entries per scope for the same lookup cost, and miss
    /// some neighbours (8% at 4 bits on the labelled pairs).
    pub lsh_bits: u32,
    /// Newest entries kept per bucket: a lookup compares at most `(lsh_bits + 1) * bucket_capacity`.
    pub bucket_capacity: u32,
    /// Per-route overrides; the first matching rule applies.
    pub routes: Vec<RouteRule>,
    pub exact_index: ExactIndex,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis: RedisBridge::default(),
            embedding: Embedding::default(),
            mode: Mode::Semantic,
            threshold: 0.75,
            guard: true,
            close_margin: 0.05,
            verify: None,
            contradicted_threshold: 0.95,
            evict_after: 2,
            embed: EmbedText::LastUserTurn,
            namespace: Namespace::Team,
            ttl_seconds: 3600,
            cache_tool_calls: false,
            max_request_bytes: MIB,
            max_entry_bytes: 256 * KIB,
            max_embed_chars: 2000,
            lsh_bits: 0,
            bucket_capacity: 256,
            routes: Vec::new(),
            exact_index: ExactIndex::default(),
        }
    }
}

const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

fn check_threshold(path: &str, threshold: f64) -> Result<(), ConfigError> {
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(ConfigError::at(path, "must be above 0 and at most 1"));
    }
    Ok(())
}

fn check_ttl(path: &str, ttl: u64) -> Result<(), ConfigError> {
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ConfigError::at(path, "must be between 1 and 2592000 (30 days)"));
    }
    Ok(())
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        let e = &self.embedding;
        if e.cluster.is_empty() || e.authority.is_empty() || e.model.is_empty() {
            return Err(ConfigError::at(".embedding", "`cluster`, `authority` and `model` must not be empty"));
        }
        if !e.path.starts_with('/') {
            return Err(ConfigError::at(".embedding.path", "must start with '/'"));
        }
        if !(1..=60_000).contains(&e.timeout_ms) {
            return Err(ConfigError::at(".embedding.timeout_ms", "must be between 1 and 60000"));
        }
        check_threshold(".threshold", self.threshold)?;
        check_threshold(".contradicted_threshold", self.contradicted_threshold)?;
        if !(1..=100).contains(&self.evict_after) {
            return Err(ConfigError::at(".evict_after", "must be between 1 and 100"));
        }
        if !(0.0..=0.5).contains(&self.close_margin) {
            return Err(ConfigError::at(".close_margin", "must be between 0 and 0.5"));
        }
        if let Some(v) = &self.verify {
            if v.cluster.is_empty() || v.authority.is_empty() {
                return Err(ConfigError::at(".verify", "`cluster` and `authority` must not be empty"));
            }
            if v.kind == VerifierKind::Chat && v.model.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::at(".verify.model", "is required for `kind: chat`"));
            }
            if !v.path().starts_with('/') {
                return Err(ConfigError::at(".verify.path", "must start with '/'"));
            }
            if !(1..=60_000).contains(&v.timeout_ms) {
                return Err(ConfigError::at(".verify.timeout_ms", "must be between 1 and 60000"));
            }
            if !v.min_score.is_finite() {
                return Err(ConfigError::at(".verify.min_score", "must be a number"));
            }
            if !(1..=1_000_000).contains(&v.cache_entries) {
                return Err(ConfigError::at(".verify.cache_entries", "must be between 1 and 1000000"));
            }
        }
        check_ttl(".ttl_seconds", self.ttl_seconds)?;
        if self.max_request_bytes == 0 || self.max_entry_bytes == 0 || self.max_embed_chars == 0 {
            return Err(ConfigError::at(
                ".",
                "`max_request_bytes`, `max_entry_bytes` and `max_embed_chars` must be positive",
            ));
        }
        if self.lsh_bits > 8 {
            return Err(ConfigError::at(".lsh_bits", "must be between 0 and 8"));
        }
        if !(1..=1024).contains(&self.bucket_capacity) {
            return Err(ConfigError::at(".bucket_capacity", "must be between 1 and 1024"));
        }
        let index = &self.exact_index;
        if !(60..=MAX_TTL_SECONDS).contains(&index.period_seconds) {
            return Err(ConfigError::at(".exact_index.period_seconds", "must be between 60 and 2592000 (30 days)"));
        }
        if !(16..=16_384).contains(&index.pages) || !index.pages.is_power_of_two() {
            return Err(ConfigError::at(".exact_index.pages", "must be a power of two between 16 and 16384"));
        }
        if !(100..=60_000).contains(&index.sync_ms) {
            return Err(ConfigError::at(".exact_index.sync_ms", "must be between 100 and 60000"));
        }
        let ttls = std::iter::once((".ttl_seconds".to_string(), self.ttl_seconds)).chain(
            self.routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Some((format!(".routes[{i}].ttl_seconds"), r.ttl_seconds?))),
        );
        for (path, ttl) in ttls {
            if index.enabled && ttl > index.period_seconds {
                return Err(ConfigError::at(
                    path,
                    "is longer than `exact_index.period_seconds`: raise the period or turn the index off",
                ));
            }
        }
        for (i, rule) in self.routes.iter().enumerate() {
            if let Some(threshold) = rule.threshold {
                check_threshold(&format!(".routes[{i}].threshold"), threshold)?;
            }
            if let Some(ttl) = rule.ttl_seconds {
                check_ttl(&format!(".routes[{i}].ttl_seconds"), ttl)?;
            }
            if rule.path_prefix.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err(ConfigError::at(format!(".routes[{i}].path_prefix"), "must start with '/'"));
            }
        }
        Ok(())
    }
}

/// What applies to one request once the route overrides are resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    pub threshold: f64,
    pub ttl_seconds: u64,
}

impl Config {
    /// The policy for a request to `path` on `host` for `model`.
    pub fn policy(&self, path: &str, host: &str, model: &str) -> Policy {
        let base = Policy { mode: self.mode, threshold: self.threshold, ttl_seconds: self.ttl_seconds };
        let rule = self.routes.iter().find(|r| {
            r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
                && (r.hosts.is_empty() || glob::any(&r.hosts, host))
                && (r.models.is_empty() || glob::any(&r.models, model))
        });
        match rule {
            None => base,
            Some(r) => Policy {
                mode: r.mode.unwrap_or(base.mode),
                threshold: r.threshold.unwrap_or(base.threshold),
                ttl_seconds: r.ttl_seconds.unwrap_or(base.ttl_seconds),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_config(Some(text.as_bytes()))
    }

    #[test]
    fn defaults_and_schema_agree() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, path) in [
            (r#"{"threshold": 0}"#, ".threshold"),
            (r#"{"threshold": 1.5}"#, ".threshold"),
            (r#"{"threshold": "high"}"#, ".threshold"),
            (r#"{"ttl_seconds": 0}"#, ".ttl_seconds"),
            (r#"{"lsh_bits": 9}"#, ".lsh_bits"),
            (r#"{"bucket_capacity": 0}"#, ".bucket_capacity"),
            (r#"{"namespace": "tenant"}"#, ".namespace"),
            (r#"{"embedding": {"path": "v1"}}"#, ".embedding.path"),
            (r#"{"embedding": {"timeout_ms": 0}}"#, ".embedding.timeout_ms"),
            (r#"{"routes": [{"threshold": 2}]}"#, ".routes[0].threshold"),
            (r#"{"routes": [{"path_prefix": "v1"}]}"#, ".routes[0].path_prefix"),
            (r#"{"routes": [{"ttl_seconds": 0}]}"#, ".routes[0].ttl_seconds"),
            (r#"{"treshold": 0.9}"#, "."),
            (r#"{"redis": {"timeout_ms": 0}}"#, ".redis.timeout_ms"),
            (r#"{"exact_index": {"pages": 100}}"#, ".exact_index.pages"),
            (r#"{"exact_index": {"period_seconds": 10}}"#, ".exact_index.period_seconds"),
            (r#"{"exact_index": {"sync_ms": 0}}"#, ".exact_index.sync_ms"),
            (r#"{"ttl_seconds": 90000}"#, ".ttl_seconds"),
            (r#"{"routes": [{"ttl_seconds": 90000}]}"#, ".routes[0].ttl_seconds"),
            (r#"{"close_margin": 0.9}"#, ".close_margin"),
            (r#"{"contradicted_threshold": 1.2}"#, ".contradicted_threshold"),
            (r#"{"evict_after": 0}"#, ".evict_after"),
            (r#"{"verify": {}}"#, ".verify"),
            (r#"{"verify": {"cluster": "v", "authority": "v", "kind": "chat"}}"#, ".verify.model"),
            (r#"{"verify": {"cluster": "v", "authority": "v", "path": "rerank"}}"#, ".verify.path"),
            (r#"{"verify": {"cluster": "v", "authority": "v", "timeout_ms": 0}}"#, ".verify.timeout_ms"),
            (r#"{"verify": {"cluster": "v", "authority": "v", "cache_entries": 0}}"#, ".verify.cache_entries"),
            (r#"{"verify": {"cluster": "v", "authority": "v", "kind": "judge"}}"#, ".verify.kind"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.path.starts_with(path), "{text}: {error}");
        }
    }

    #[test]
    fn long_ttls_need_a_longer_index_period_or_no_index() {
        assert!(parse(r#"{"ttl_seconds": 90000, "exact_index": {"period_seconds": 172800}}"#).is_ok());
        assert!(parse(r#"{"ttl_seconds": 90000, "exact_index": {"enabled": false}}"#).is_ok());
    }

    #[test]
    fn first_matching_route_overrides() {
        let config = parse(
            r#"{"threshold": 0.85, "routes": [
                {"models": ["gpt-4o*"], "path_prefix": "/strict/", "threshold": 0.95},
                {"hosts": ["*.internal"], "mode": "off"},
                {"models": ["o1*"], "mode": "exact", "ttl_seconds": 60}
            ]}"#,
        )
        .unwrap();
        assert_eq!(config.policy("/strict/v1/chat/completions", "gw", "gpt-4o").threshold, 0.95);
        assert_eq!(config.policy("/v1/chat/completions", "gw", "gpt-4o").threshold, 0.85);
        assert_eq!(config.policy("/v1/chat/completions", "a.internal", "gpt-4o").mode, Mode::Off);
        let o1 = config.policy("/v1/chat/completions", "gw", "o1-mini");
        assert_eq!((o1.mode, o1.ttl_seconds, o1.threshold), (Mode::Exact, 60, 0.85));
    }
}
