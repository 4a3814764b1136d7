//! The budget enforcer's configuration (JSON Schema: `config.schema.json`).

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use sluice_shared::api::PathRule;
use sluice_shared::config::{ConfigError, Validate};
use sluice_shared::digest;
use sluice_shared::pricing::Price;
use sluice_shared::redis::RedisBridge;
use sluice_shared::tokenizer::Encoding;
use sluice_shared::window::Window;

const MIB: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Redis bridge (webdis) that holds counters and, optionally, keys.
    pub redis: RedisBridge,
    /// Prefix of every Redis key this module writes (`<prefix>:limit:...`, `<prefix>:key:...`).
    pub key_prefix: String,
    /// Virtual keys known from configuration (hashed).
    pub keys: Vec<KeyConfig>,
    /// Virtual keys stored in Redis, added or revoked without a config push.
    pub redis_keys: RedisKeys,
    /// Request, token and USD limits; every limit that matches a request applies.
    pub limits: Vec<Limit>,
    /// Paths besides the LLM APIs that keys may reach (files, batches, ...). Every other path
    /// gets 404: default deny.
    pub passthrough: Vec<Passthrough>,
    /// How long a request may wait for room when a limit with `action: queue` is spent.
    pub queue: Queue,
    /// How much room a worker takes from Redis at once, so most requests are admitted without
    /// a callout.
    pub lease: Lease,
    /// What happens when the bridge fails or times out on the request path.
    pub on_bridge_failure: FailurePolicy,
    /// With `on_bridge_failure: open`, each worker enforces this share of every limit on its own
    /// until the bridge is back (1.0: the full limit per worker; 1/(replicas × workers) to keep
    /// the global total).
    pub local_limit_share: f64,
    /// How often spend is sent to Redis (and the backlog retried), in milliseconds.
    pub flush_interval_ms: u64,
    /// Timeout of the calls that charge spend (off the request path).
    pub charge_timeout_ms: u64,
    /// Add `x-ratelimit-*` headers to answers, as OpenAI does.
    pub rate_limit_headers: bool,
    /// Price overrides and additions, USD per million tokens (for the USD estimate before the
    /// answer; the charge after it uses the token counter's cost).
    pub prices: BTreeMap<String, Price>,
    /// How models without a price count against USD limits.
    pub unpriced: Unpriced,
    /// Largest request body read for the model and prompt estimate; larger requests get 413.
    pub max_request_bytes: usize,
    /// Bytes of prompt text counted with the tokenizer for token and USD reservations; the rest
    /// is estimated at about four bytes per token. 0 (default) keeps the tokenizer off the
    /// request path: the reservation is settled against the exact usage afterwards anyway.
    pub exact_count_bytes: usize,
    /// Encodings loaded at configure time rather than on the first token or USD check.
    pub preload_encodings: Vec<Encoding>,
    /// Distinct values kept per metric label per worker before `other`.
    pub max_label_values: usize,
    /// Attribution dimensions (`feature`, `project`, ...): where each request's value comes
    /// from and which values count. Limits use them as `scope` and in `match`.
    pub dimensions: BTreeMap<String, Dimension>,
    /// Identity from JWTs that Envoy's `jwt_authn` filter verified, beside virtual keys.
    pub jwt: Option<Jwt>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis: RedisBridge::default(),
            key_prefix: "sluice".to_string(),
            keys: Vec::new(),
            redis_keys: RedisKeys::default(),
            limits: Vec::new(),
            passthrough: Vec::new(),
            queue: Queue::default(),
            lease: Lease::default(),
            on_bridge_failure: FailurePolicy::Open,
            local_limit_share: 1.0,
            flush_interval_ms: 200,
            charge_timeout_ms: 1_000,
            rate_limit_headers: true,
            prices: BTreeMap::new(),
            unpriced: Unpriced::default(),
            max_request_bytes: 16 * MIB,
            exact_count_bytes: 0,
            preload_encodings: Vec::new(),
            max_label_values: 100,
            dimensions: BTreeMap::new(),
            jwt: None,
        }
    }
}

/// How a verified token's claims become an identity. Envoy's `jwt_authn` filter checks the
/// token and forwards its payload in `payload_header`, which the edge removes from every
/// client request (envoy-config/gateway.yaml), so the header only ever holds verified claims.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// The header `jwt_authn` writes the payload to (its `forward_payload_header`).
    pub payload_header: String,
    /// The claim that names the caller; its value, after `alias_prefix`, is the alias.
    #[serde(default = "sub")]
    pub key_claim: String,
    /// Keeps token identities apart from key aliases in counters, metrics and logs.
    #[serde(default = "jwt_prefix")]
    pub alias_prefix: String,
    /// The claim that names the team (`None`: no team).
    #[serde(default)]
    pub team_claim: Option<String>,
    /// The claim that names the user (`None`: no user).
    #[serde(default)]
    pub user_claim: Option<String>,
    /// Claims copied into the identity's metadata (metadata entry to claim name), where limits'
    /// `match.metadata` and dimensions' `metadata` read them.
    #[serde(default)]
    pub metadata_claims: BTreeMap<String, String>,
    /// Models token identities may call (globs); empty: any.
    #[serde(default)]
    pub models: Vec<String>,
}

fn sub() -> String {
    "sub".to_string()
}

fn jwt_prefix() -> String {
    "jwt:".to_string()
}

/// An attribution dimension: a request's value is the first found of a trusted header, the
/// key's metadata, then `default`; a value outside `values` is `other` or refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dimension {
    /// A request header that carries the value (removed before the request goes on). Only
    /// keys and teams listed in `trusted` may set it.
    pub header: Option<String>,
    /// Who may set the value with `header`.
    pub trusted: Trusted,
    /// What a header from anyone else does: `ignore` (default: as if absent) or `refuse` (403).
    pub untrusted: Untrusted,
    /// A key metadata entry that carries the value (`{"metadata": {"feature": "search"}}`).
    pub metadata: Option<String>,
    /// The value when no source gives one (`None`: the request has none; its counter under a
    /// `scope` of this dimension is `none`).
    pub default: Option<String>,
    /// The values that count; empty: any (metrics still keep at most `max_label_values`).
    pub values: Vec<String>,
    /// What a value outside `values` does: `other` (default: counted as `other`) or `refuse`
    /// (400).
    pub unknown: Unknown,
}

impl Default for Dimension {
    fn default() -> Self {
        Dimension {
            header: None,
            trusted: Trusted::default(),
            untrusted: Untrusted::Ignore,
            metadata: None,
            default: None,
            values: Vec::new(),
            unknown: Unknown::Other,
        }
    }
}

/// Keys (aliases, globs) and teams whose requests may set a dimension by header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trusted {
    pub keys: Vec<String>,
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Untrusted {
    Ignore,
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    Other,
    Refuse,
}

/// A header name as proxy-wasm hosts present them (lowercase).
fn header_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The names a dimension may not take: the built-in scopes.
const SCOPES: [&str; 5] = ["key", "team", "user", "model", "global"];

/// A virtual key. Only its SHA-256 is configured: `printf %s "$KEY" | sha256sum`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Name used in logs, metrics and facts instead of the key.
    pub alias: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Models the key may call (globs); empty: any model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Free-form labels limits can match (`{"tier": "quality"}`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Models without a price (self-hosted, new, misspelt but accepted by the provider) must not
/// be free against USD limits. Without `price`, a request under a USD limit whose model has no
/// price is refused (403 `model_unpriced`); with it, the model is estimated and charged at it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Unpriced {
    /// Default price, USD per million tokens.
    pub price: Option<Price>,
    /// Default price per provider (`sluice.usage.provider`), for the charge after the answer.
    pub providers: BTreeMap<String, Price>,
}

/// A path outside the LLM APIs that some keys may reach. Counted against request limits; not
/// read, scrubbed or metered in tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "PassthroughEntry")]
pub struct Passthrough {
    /// The path prefix and methods.
    pub rule: PathRule,
    /// Teams whose keys may use it; with `keys`, either list admits. Both empty: every key.
    pub teams: Vec<String>,
    /// Key aliases that may use it.
    pub keys: Vec<String>,
}

/// A `passthrough` entry as configured.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassthroughEntry {
    prefix: String,
    #[serde(default = "get_only")]
    methods: Vec<String>,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
}

fn get_only() -> Vec<String> {
    vec!["GET".to_string()]
}

impl From<PassthroughEntry> for Passthrough {
    fn from(entry: PassthroughEntry) -> Self {
        Passthrough {
            rule: PathRule { prefix: entry.prefix, methods: entry.methods },
            teams: entry.teams,
            keys: entry.keys,
        }
    }
}

impl Passthrough {
    /// Whether a key with this alias and team may use the path.
    pub fn admits(&self, alias: &str, team: Option<&str>) -> bool {
        (self.teams.is_empty() && self.keys.is_empty())
            || self.keys.iter().any(|k| k == alias)
            || team.is_some_and(|t| self.teams.iter().any(|x| x == t))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisKeys {
    /// Look up keys not in `keys` at `<key_prefix>:key:<sha256>` (a JSON object with `alias`,
    /// `team`, `user`, `models`, `metadata`; delete it to revoke).
    pub enabled: bool,
    /// How long a worker trusts a key it read from Redis.
    pub cache_ttl_ms: u64,
    /// How long a worker remembers that a key is unknown.
    pub negative_cache_ttl_ms: u64,
    /// Most keys cached per worker.
    pub max_cached: usize,
}

impl Default for RedisKeys {
    fn default() -> Self {
        RedisKeys { enabled: false, cache_ttl_ms: 10_000, negative_cache_ttl_ms: 2_000, max_cached: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "String")]
pub enum Scope {
    /// One counter per virtual key.
    Key,
    /// One counter per team (requests from keys without a team are not limited).
    Team,
    /// One counter per user (requests from keys without a user are not limited).
    User,
    /// One counter per requested model.
    Model,
    /// One counter for everything the limit matches.
    Global,
    /// One counter per value of a declared dimension (`none` for requests without one).
    Dimension(String),
}

impl From<String> for Scope {
    fn from(name: String) -> Self {
        match name.as_str() {
            "key" => Scope::Key,
            "team" => Scope::Team,
            "user" => Scope::User,
            "model" => Scope::Model,
            "global" => Scope::Global,
            _ => Scope::Dimension(name),
        }
    }
}

impl Scope {
    pub fn name(&self) -> &str {
        match self {
            Scope::Key => "key",
            Scope::Team => "team",
            Scope::User => "user",
            Scope::Model => "model",
            Scope::Global => "global",
            Scope::Dimension(name) => name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Requests admitted.
    Requests,
    /// Prompt plus completion tokens: the prompt estimate is checked and reserved before, the
    /// actual usage charged after.
    Tokens,
    /// Spend in USD: the prompt's estimated cost is checked and reserved before, the actual cost
    /// charged after.
    Usd,
}

impl Kind {
    /// Suffix of OpenAI's `x-ratelimit-*` headers.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Usd => "usd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// 429 with `Retry-After`.
    Reject,
    /// Hold the request until the window has room, up to `queue.max_wait_ms`, then 429.
    Queue,
    /// Send the request to `downgrade_to` instead.
    Downgrade,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Unique name: in Redis keys, metrics and the `x-sluice-budget-*` headers.
    pub name: String,
    pub scope: Scope,
    pub kind: Kind,
    pub window: Window,
    /// Requests, tokens, or USD per window.
    pub limit: f64,
    /// Which requests the limit applies to (all when empty).
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Fraction of the limit (0 < x < 1) past which `sluice_budget_alerts_total` counts and
    /// `x-sluice-budget-alert` names the limit, without blocking.
    #[serde(default)]
    pub alert_at: Option<f64>,
    #[serde(default = "reject")]
    pub action: Action,
    /// With `action: downgrade`, the model used instead.
    #[serde(default)]
    pub downgrade_to: Option<String>,
}

fn reject() -> Action {
    Action::Reject
}

/// Every condition given must hold; lists match any of their entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Match {
    /// Requested model (globs).
    pub models: Vec<String>,
    /// Key aliases.
    pub keys: Vec<String>,
    pub teams: Vec<String>,
    pub users: Vec<String>,
    /// Key metadata entries that must all be present with these values.
    pub metadata: BTreeMap<String, String>,
    /// Declared dimensions by name, with the values that match (`"feature": ["search"]`);
    /// any other member is refused when the config is validated.
    #[serde(flatten)]
    pub dimensions: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// Longest a request waits for room before its 429.
    pub max_wait_ms: u64,
    /// How often a waiting request asks Redis again.
    pub poll_interval_ms: u64,
    /// Most requests waiting per worker; more get 429 at once.
    pub max_waiting: usize,
}

impl Default for Queue {
    fn default() -> Self {
        Queue { max_wait_ms: 5_000, poll_interval_ms: 100, max_waiting: 1_000 }
    }
}

/// Leases: a worker takes a slice of a counter's remaining room in the same atomic call that
/// checks a request, and admits the next requests against it locally. The slice shrinks as the
/// counter fills (the last requests under a limit are checked one by one), and what a worker
/// does not use goes back to Redis, so the total admitted never exceeds the limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lease {
    /// Share of a counter's remaining room one lease may take (0: no leases, every request is
    /// checked in Redis).
    pub share: f64,
    /// Largest lease, in requests: at most this many times the request's own cost.
    pub max_requests: u32,
    /// Room a worker has not used for this long goes back to Redis (also at the window's end).
    pub idle_ms: u64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease { share: 0.05, max_requests: 100, idle_ms: 2_000 }
    }
}

impl Lease {
    /// Whether workers hold room at all (`share: 0` checks every request in Redis).
    pub fn enabled(&self) -> bool {
        self.share > 0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Admit, enforcing each limit per worker (`local_limit_share`); spend is charged to Redis
    /// once it is back.
    Open,
    /// Answer 503.
    Closed,
}

impl Config {
    fn validate_dimensions(&self) -> Result<(), ConfigError> {
        for (name, dimension) in &self.dimensions {
            let at = |field: &str| format!(".dimensions.{name}{field}");
            let name_ok = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !SCOPES.contains(&name.as_str());
            if !name_ok {
                return Err(ConfigError::at(
                    at(""),
                    "names are lowercase letters, digits and '_', not a built-in scope",
                ));
            }
            if dimension.header.is_none() && dimension.metadata.is_none() && dimension.default.is_none() {
                return Err(ConfigError::at(at(""), "needs a source: `header`, `metadata` or `default`"));
            }
            if dimension.header.as_deref().is_some_and(|h| !header_name(h)) {
                return Err(ConfigError::at(at(".header"), "a lowercase header name"));
            }
            let values = dimension.values.iter().chain(dimension.default.as_ref());
            if let Some(bad) = values.clone().find(|v| v.is_empty() || v.len() > 64 || v.contains([';', '=', ',', ' ']))
            {
                return Err(ConfigError::at(
                    at(".values"),
                    format!("`{bad}`: 1-64 characters, without `;`, `=`, `,` or spaces"),
                ));
            }
            if let Some(default) = &dimension.default {
                if !dimension.values.is_empty() && !dimension.values.contains(default) {
                    return Err(ConfigError::at(at(".default"), "must be one of `values`"));
                }
            }
        }
        Ok(())
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::at(".key_prefix", "must be non-empty, without spaces"));
        }
        let mut hashes = HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            let at = |field: &str| format!(".keys[{i}].{field}");
            match digest::from_hex(&key.sha256) {
                Some(bytes) if bytes.len() == 32 => {}
                _ => return Err(ConfigError::at(at("sha256"), "must be 64 hex digits (the key's SHA-256)")),
            }
            if !hashes.insert(key.sha256.to_ascii_lowercase()) {
                return Err(ConfigError::at(at("sha256"), "the same key is configured twice"));
            }
            if key.alias.is_empty() {
                return Err(ConfigError::at(at("alias"), "must not be empty"));
            }
        }
        self.validate_dimensions()?;
        if let Some(jwt) = &self.jwt {
            if !header_name(&jwt.payload_header) {
                return Err(ConfigError::at(".jwt.payload_header", "a lowercase header name"));
            }
            if jwt.key_claim.is_empty() {
                return Err(ConfigError::at(".jwt.key_claim", "must not be empty"));
            }
        }
        let mut names = HashSet::new();
        for (i, limit) in self.limits.iter().enumerate() {
            let at = |field: &str| format!(".limits[{i}].{field}");
            if let Scope::Dimension(name) = &limit.scope {
                if !self.dimensions.contains_key(name) {
                    let why = format!("`{name}` is not key, team, user, model, global or a declared dimension");
                    return Err(ConfigError::at(at("scope"), why));
                }
            }
            if let Some(name) = limit.matches.dimensions.keys().find(|n| !self.dimensions.contains_key(*n)) {
                return Err(ConfigError::at(
                    at(&format!("match.{name}")),
                    "not a match condition (models, keys, teams, users, metadata) or a declared dimension",
                ));
            }
            let name_ok =
                !limit.name.is_empty() && limit.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !name_ok {
                return Err(ConfigError::at(at("name"), "must be non-empty: letters, digits, '-', '_', '.'"));
            }
            if !names.insert(limit.name.as_str()) {
                return Err(ConfigError::at(at("name"), format!("`{}` is used by two limits", limit.name)));
            }
            if !limit.limit.is_finite() || limit.limit < 0.0 || limit.limit > 1e15 {
                return Err(ConfigError::at(at("limit"), "must be a number from 0 to 1e15"));
            }
            if limit.kind != Kind::Usd && limit.limit.fract() != 0.0 {
                return Err(ConfigError::at(at("limit"), "request and token limits are whole numbers"));
            }
            if let Some(alert) = limit.alert_at {
                if !(alert > 0.0 && alert < 1.0) {
                    return Err(ConfigError::at(at("alert_at"), "must be between 0 and 1 (exclusive)"));
                }
            }
            match (limit.action, limit.downgrade_to.as_deref()) {
                (Action::Downgrade, None | Some("")) => {
                    return Err(ConfigError::at(at("downgrade_to"), "`action: downgrade` needs a model"));
                }
                (Action::Reject | Action::Queue, Some(_)) => {
                    return Err(ConfigError::at(at("downgrade_to"), "only for `action: downgrade`"));
                }
                _ => {}
            }
        }
        for (i, passthrough) in self.passthrough.iter().enumerate() {
            if let Some(problem) = passthrough.rule.problem() {
                return Err(ConfigError::at(format!(".passthrough[{i}]"), problem));
            }
        }
        sluice_shared::pricing::validate_overrides(&self.prices)?;
        if let Some(price) = &self.unpriced.price {
            price.validate().map_err(|m| ConfigError::at(".unpriced.price", m))?;
        }
        for (provider, price) in &self.unpriced.providers {
            price.validate().map_err(|m| ConfigError::at(format!(".unpriced.providers.{provider}"), m))?;
        }
        let ranges: [(&str, u64, u64, u64); 6] = [
            (".lease.idle_ms", self.lease.idle_ms, 100, 600_000),
            (".lease.max_requests", u64::from(self.lease.max_requests), 1, 1_000_000),
            (".flush_interval_ms", self.flush_interval_ms, 10, 60_000),
            (".charge_timeout_ms", self.charge_timeout_ms, 1, 60_000),
            (".queue.max_wait_ms", self.queue.max_wait_ms, 0, 600_000),
            (".queue.poll_interval_ms", self.queue.poll_interval_ms, 10, 60_000),
        ];
        for (path, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::at(path, format!("must be between {min} and {max}")));
            }
        }
        if !(self.lease.share >= 0.0 && self.lease.share <= 0.5) {
            return Err(ConfigError::at(".lease.share", "must be from 0 to 0.5"));
        }
        if !(self.local_limit_share > 0.0 && self.local_limit_share <= 1.0) {
            return Err(ConfigError::at(".local_limit_share", "must be in (0, 1]"));
        }
        if self.max_label_values == 0 {
            return Err(ConfigError::at(".max_label_values", "must be at least 1"));
        }
        Ok(())
    }
}

impl Config {
    /// Whether any limit may change the request's model (its body must then stay rewritable).
    pub fn may_downgrade(&self) -> bool {
        self.limits.iter().any(|l| l.action == Action::Downgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    const HASH: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn parse(json: &str) -> Result<Config, ConfigError> {
        parse_config(Some(json.as_bytes()))
    }

    #[test]
    fn defaults_and_full_example() {
        assert_eq!(parse("").ok(), Some(Config::default()));
        let config = parse(&format!(
            r#"{{
              "keys": [{{"sha256": "{HASH}", "alias": "alice", "team": "search", "user": "alice",
                        "models": ["gpt-4o*"], "metadata": {{"tier": "quality"}}}}],
              "limits": [
                {{"name": "user-hourly", "scope": "user", "kind": "requests", "window": "hour", "limit": 100}},
                {{"name": "quality", "scope": "key", "kind": "requests", "window": "hour", "limit": 20,
                  "match": {{"metadata": {{"tier": "quality"}}}}, "action": "queue"}},
                {{"name": "key-monthly", "scope": "key", "kind": "usd", "window": "month", "limit": 100,
                  "alert_at": 0.7}},
                {{"name": "gpt4o", "scope": "global", "kind": "usd", "window": "month", "limit": 50,
                  "match": {{"models": ["gpt-4o"]}}, "action": "downgrade", "downgrade_to": "gpt-4o-mini"}}
              ]
            }}"#
        ))
        .unwrap();
        assert_eq!(config.limits.len(), 4);
        assert!(config.may_downgrade());
        assert_eq!(config.limits[1].action, Action::Queue);
        assert_eq!(config.limits[2].window, Window::Month);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"keys": [{"sha256": "abc", "alias": "a"}]}"#, ".keys[0].sha256"),
            (
                &format!(r#"{{"keys": [{{"sha256": "{HASH}", "alias": "a"}}, {{"sha256": "{HASH}", "alias": "b"}}]}}"#),
                ".keys[1].sha256",
            ),
            (&format!(r#"{{"keys": [{{"sha256": "{HASH}", "alias": ""}}]}}"#), ".keys[0].alias"),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "requests", "window": "week", "limit": 1}]}"#,
                ".limits[0].window",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "org", "kind": "requests", "window": "day", "limit": 1}]}"#,
                ".limits[0].scope",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "requests", "window": "day", "limit": -1}]}"#,
                ".limits[0].limit",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "tokens", "window": "day", "limit": 1.5}]}"#,
                ".limits[0].limit",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": "10"}]}"#,
                ".limits[0].limit",
            ),
            (
                r#"{"limits": [{"name": "x y", "scope": "key", "kind": "usd", "window": "day", "limit": 1}]}"#,
                ".limits[0].name",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1},
                               {"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1}]}"#,
                ".limits[1].name",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1, "alert_at": 1.5}]}"#,
                ".limits[0].alert_at",
            ),
            (r#"{"passthrough": [{"prefix": "/v1/%66iles"}]}"#, ".passthrough[0]"),
            (r#"{"passthrough": [{"prefix": "/"}]}"#, ".passthrough[0]"),
            (r#"{"passthrough": [{"prefix": "/v1/files", "methods": ["get"]}]}"#, ".passthrough[0]"),
            (r#"{"passthrough": [{"prefix": "/v1/files", "team": ["a"]}]}"#, ".passthrough[0].team"),
            (r#"{"unpriced": {"price": {"input": -1, "output": 1}}}"#, ".unpriced.price"),
            (r#"{"unpriced": {"providers": {"vllm": {"input": 1}}}}"#, ".unpriced.providers.vllm"),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1, "action": "downgrade"}]}"#,
                ".limits[0].downgrade_to",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1, "downgrade_to": "m"}]}"#,
                ".limits[0].downgrade_to",
            ),
            (
                r#"{"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1, "match": {"model": ["a"]}}]}"#,
                ".limits[0].match.model",
            ),
            (r#"{"redis": {"timeout_ms": 0}}"#, ".redis.timeout_ms"),
            (r#"{"redis": {"cluster": 5}}"#, ".redis.cluster"),
            (r#"{"on_bridge_failure": "maybe"}"#, ".on_bridge_failure"),
            (r#"{"local_limit_share": 0}"#, ".local_limit_share"),
            (r#"{"queue": {"poll_interval_ms": 1}}"#, ".queue.poll_interval_ms"),
            (r#"{"lease": {"share": 0.9}}"#, ".lease.share"),
            (r#"{"lease": {"max_requests": 0}}"#, ".lease.max_requests"),
            (r#"{"lease": {"idle_ms": 5}}"#, ".lease.idle_ms"),
            (r#"{"lease": {"size": 5}}"#, ".lease.size"),
            (r#"{"flush_interval_ms": 0}"#, ".flush_interval_ms"),
            (r#"{"prices": {"m": {"input": -1, "output": 1}}}"#, ".prices.m"),
            (r#"{"key_prefix": ""}"#, ".key_prefix"),
            (r#"{"max_label_values": 0}"#, ".max_label_values"),
            (r#"{"unknown": 1}"#, ".unknown"),
            (r#"{"dimensions": {"feature": {}}}"#, ".dimensions.feature"),
            (r#"{"jwt": {"payload_header": "X-Jwt"}}"#, ".jwt.payload_header"),
            (r#"{"jwt": {"payload_header": "x-jwt", "key_claim": ""}}"#, ".jwt.key_claim"),
            (r#"{"jwt": {"payload_header": "x-jwt", "team": "team"}}"#, ".jwt.team"),
            (r#"{"dimensions": {"team": {"default": "x"}}}"#, ".dimensions.team"),
            (r#"{"dimensions": {"Feature": {"default": "x"}}}"#, ".dimensions.Feature"),
            (r#"{"dimensions": {"feature": {"header": "X-Feature"}}}"#, ".dimensions.feature.header"),
            (r#"{"dimensions": {"feature": {"default": "a", "values": ["b"]}}}"#, ".dimensions.feature.default"),
            (r#"{"dimensions": {"feature": {"default": "a b"}}}"#, ".dimensions.feature.values"),
            (r#"{"dimensions": {"feature": {"default": "a", "unknown": "drop"}}}"#, ".dimensions.feature.unknown"),
            (
                r#"{"dimensions": {"feature": {"default": "a", "trusted": {"team": []}}}}"#,
                ".dimensions.feature.trusted.team",
            ),
            (
                r#"{"dimensions": {"feature": {"default": "a"}},
                    "limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1, "match": {"feature": "a"}}]}"#,
                // Serde names the object, not the member, of a flattened map.
                ".limits[0].match",
            ),
        ];
        for (json, path) in cases {
            let error = parse(json).expect_err(json);
            assert_eq!(error.path, path, "{json}: {error}");
        }
    }

    /// The JSON Schema documents exactly the fields the plugin accepts, with their defaults.
    #[test]
    fn schema_matches_config() {
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }
}
