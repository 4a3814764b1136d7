//! Per-request facts shared between modules and with access logs, under one namespace.
//!
//! A fact is a proxy-wasm property whose path is one segment, `sluice.<group>.<name>`; in Envoy
//! it lands in filter state as `wasm.sluice.<group>.<name>`, so an access log reads it with
//! `%FILTER_STATE(wasm.sluice.usage.prompt_tokens:PLAIN)%`. Values are UTF-8 text (numbers in
//! decimal) so logs print them as they are. A module that runs alone finds other modules' facts
//! absent and carries on.

use crate::host::Properties;

/// The name of one fact. The constants below are the complete, documented list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact(pub &'static str);

impl Fact {
    pub fn name(self) -> &'static str {
        self.0
    }
}

// Request, as the client sent it.
/// Model named by the client.
pub const REQUEST_MODEL: Fact = Fact("sluice.request.model");
/// The last user turn as it left the PII scrubber (scrubbed, cut to its `log_prompt_chars`),
/// only with its `log_prompt` on: no other module publishes prompt text.
pub const REQUEST_PROMPT: Fact = Fact("sluice.request.prompt");

// Usage and cost, set by the token counter.
/// Prompt tokens estimated before the request was sent (for budget checks and routing).
pub const PROMPT_ESTIMATE: Fact = Fact("sluice.usage.prompt_estimate");
pub const PROMPT_TOKENS: Fact = Fact("sluice.usage.prompt_tokens");
pub const COMPLETION_TOKENS: Fact = Fact("sluice.usage.completion_tokens");
/// Cached prompt tokens (absent when zero).
pub const CACHED_TOKENS: Fact = Fact("sluice.usage.cached_tokens");
/// Reasoning tokens, part of the completion (absent when zero).
pub const REASONING_TOKENS: Fact = Fact("sluice.usage.reasoning_tokens");
/// Provider the usage is attributed to (the routing fact, the config, or the API's own).
pub const USAGE_PROVIDER: Fact = Fact("sluice.usage.provider");
/// Where the counts came from: `provider`, `counted` (tokenizer), or `none`.
pub const USAGE_SOURCE: Fact = Fact("sluice.usage.source");
/// Cost in USD (decimal); absent when the model has no price.
pub const COST_USD: Fact = Fact("sluice.usage.cost_usd");
/// `true` when tokens were counted for a model with no known price (no `cost_usd`).
pub const USAGE_UNPRICED: Fact = Fact("sluice.usage.unpriced");
/// Why an exchange was not metered (`not_json`, `compressed`, `too_large`, `unparsable`, ...).
pub const PASSTHROUGH: Fact = Fact("sluice.usage.passthrough");

// Answer.
/// Model named in the provider's answer, when it differs from the one asked for.
pub const RESPONSE_MODEL: Fact = Fact("sluice.response.model");
/// `true` when the answer was an SSE stream (absent otherwise).
pub const RESPONSE_STREAMED: Fact = Fact("sluice.response.streamed");
/// Milliseconds from the request's arrival to the answer's first body byte.
pub const TIME_TO_FIRST_TOKEN_MS: Fact = Fact("sluice.response.ttft_ms");

// Routing.
/// Provider chosen by the model rewriter.
pub const ROUTE_PROVIDER: Fact = Fact("sluice.route.provider");
/// The Envoy cluster chosen by the model rewriter; Envoy's header-mutation filter copies it to
/// the `x-sluice-cluster` request header, which the gateway's routes match.
pub const ROUTE_CLUSTER: Fact = Fact("sluice.route.cluster");
/// The model sent upstream, as the chosen provider knows it.
pub const ROUTE_MODEL: Fact = Fact("sluice.route.model");
/// Every model of the route by provider, as a JSON object (`{"openai": "gpt-4o", ...}`): the
/// target and its fallbacks. A provider whose schema puts the model in the path (Gemini) reads
/// its own before the body arrives.
pub const ROUTE_MODELS: Fact = Fact("sluice.route.models");
/// `true` when the routed request asks for a stream, `false` otherwise (Gemini's path says so).
pub const ROUTE_STREAM: Fact = Fact("sluice.route.stream");
/// The logical model the request was routed as.
pub const ROUTE_LOGICAL: Fact = Fact("sluice.route.logical");
/// The rule that picked the logical model (absent when the client named it).
pub const ROUTE_RULE: Fact = Fact("sluice.route.rule");
/// The prompt's nearest intent (semantic routes), `none` below every threshold, or
/// `unavailable` when it could not be embedded; absent when no rule reads intents.
pub const ROUTE_INTENT: Fact = Fact("sluice.route.intent");
/// The cosine of the prompt with its nearest intent's nearest example (also when below the
/// intent's threshold).
pub const ROUTE_INTENT_SCORE: Fact = Fact("sluice.route.intent_score");
/// The prompt's complexity score (0-1, three decimals), when a rule reads it.
pub const ROUTE_COMPLEXITY: Fact = Fact("sluice.route.complexity");
/// The pool endpoint (`ip:port`) picked for the request, then the ones its retries go to
/// (comma-separated); copied by Envoy's header-mutation filter to
/// `x-gateway-destination-endpoint` for the override-host load-balancing policy.
pub const ROUTE_ENDPOINT: Fact = Fact("sluice.route.endpoint");
/// Why the endpoint was picked (`headroom`, `prefix`, `lora`, `saturated`), or `stale` when no
/// endpoint had fresh figures and Envoy balanced.
pub const ROUTE_PICK: Fact = Fact("sluice.route.pick");
/// Targets skipped because their latency breaker is open (`provider/model`, comma-separated).
pub const ROUTE_SKIPPED: Fact = Fact("sluice.route.skipped");
/// `open` or `closed` when this request's timing changed its target's breaker; `probe` when
/// it was the request let through to probe a half-open one.
pub const ROUTE_BREAKER: Fact = Fact("sluice.route.breaker");
/// The client's API (`chat_completions`, `messages`, ...), set once a provider adapter sent
/// the request to another path (a translated attempt): later attempts of the request
/// (retries, fallbacks) still know what the client sent.
pub const ATTEMPT_API: Fact = Fact("sluice.attempt.api");
/// Every attempt of the request, oldest first, as the provider adapter saw it:
/// `provider=openai model=gpt-4o status=503 ms=12; provider=anthropic ...` (`status=reset`
/// when it ended without an answer: a reset, a timeout, no connection).
pub const ATTEMPT_HISTORY: Fact = Fact("sluice.attempt.history");
/// A Gemini client's own path (its model and streaming), set with [`ATTEMPT_API`] when an
/// adapter sent the request to another path; without any `key=` parameter.
pub const ATTEMPT_PATH: Fact = Fact("sluice.attempt.path");
/// Cheaper model the budget enforcer asks for because a limit with `action: downgrade` is
/// spent (the model rewriter routes it; the enforcer also rewrites the request's `model`).
pub const ROUTE_DOWNGRADE: Fact = Fact("sluice.route.downgrade");

// Identity, set by the budget enforcer from the virtual key.
/// The key's alias (never the key).
pub const IDENTITY_KEY: Fact = Fact("sluice.identity.key");
pub const IDENTITY_TEAM: Fact = Fact("sluice.identity.team");
pub const IDENTITY_USER: Fact = Fact("sluice.identity.user");
/// Every attribution dimension's value (`feature=search;project=apollo`), from the budget
/// enforcer's `dimensions`; absent without any.
pub const IDENTITY_DIMENSIONS: Fact = Fact("sluice.identity.dimensions");
/// The `feature` dimension's value (a metric label and an access-log field).
pub const IDENTITY_FEATURE: Fact = Fact("sluice.identity.feature");
/// The `project` dimension's value (a metric label and an access-log field).
pub const IDENTITY_PROJECT: Fact = Fact("sluice.identity.project");
/// The key's model allow-list, globs joined by `,` (absent: any model). The model rewriter
/// holds every route to it: rules, targets and fallbacks.
pub const IDENTITY_MODELS: Fact = Fact("sluice.identity.models");

// Budget.
/// How the budget enforcer admitted the request: `admitted`, `downgraded`, `queued` (admitted
/// after waiting) or `fail_open` (bridge down, local limits applied).
pub const BUDGET_DECISION: Fact = Fact("sluice.budget.decision");

// PII scrubber.
/// How many values were redacted, masked, hashed or found in a blocked request.
pub const PII_DETECTIONS: Fact = Fact("sluice.pii.detections");
/// The entity types found, comma-separated (never the values).
pub const PII_ENTITIES: Fact = Fact("sluice.pii.entities");
/// Guard rules a request or its answer tripped, comma-separated (`flag` and `block` alike).
pub const GUARD_FLAGGED: Fact = Fact("sluice.guard.flagged");
/// The guard services' word on the request and its answer, the strongest of every check:
/// `pass`, `unchecked` (a guard could not answer and lets text pass), `flag`, `redact`, `block`.
pub const GUARD_DECISION: Fact = Fact("sluice.guard.decision");
/// `guard:category` of every category a guard service reported as tripped, comma-separated.
pub const GUARD_CATEGORIES: Fact = Fact("sluice.guard.categories");
/// Milliseconds the request and its answer waited on guard services.
pub const GUARD_WAIT_MS: Fact = Fact("sluice.guard.wait_ms");

// A prompt's embedding, computed once per request (the guard's similarity check) and reused by
// the semantic cache when it would ask for the same one ([`embedding_key`]).
/// An embedding service answer holding one vector: `{"data":[{"embedding":[...]}]}`.
pub const EMBEDDING_VECTOR: Fact = Fact("sluice.embedding.vector");
/// What [`EMBEDDING_VECTOR`] is the embedding of.
pub const EMBEDDING_KEY: Fact = Fact("sluice.embedding.key");

/// Names an embedding: the service (authority and path), the model and the text.
pub fn embedding_key(authority: &str, path: &str, model: &str, text: &str) -> String {
    crate::digest::sha256_hex(format!("{authority}\n{path}\n{model}\n{text}").as_bytes())
}

// Semantic cache.
/// `hit`, `miss` or `bypass`.
pub const CACHE_STATUS: Fact = Fact("sluice.cache.status");
/// `exact` or `semantic` for a hit; why for a bypass.
pub const CACHE_REASON: Fact = Fact("sluice.cache.reason");
/// Cosine similarity of a semantic hit (1 for an exact one).
pub const CACHE_SIMILARITY: Fact = Fact("sluice.cache.similarity");
/// The verifier's word on a grey-zone candidate: `same`, `different` or `none` (no usable answer).
pub const CACHE_VERIFIED: Fact = Fact("sluice.cache.verified");
/// Milliseconds from the complete request to the cache's decision (embedding included).
pub const CACHE_LOOKUP_MS: Fact = Fact("sluice.cache.lookup_ms");
/// Milliseconds the embedding service took.
pub const CACHE_EMBEDDING_MS: Fact = Fact("sluice.cache.embedding_ms");

/// Reads a fact as text; absent, empty or non-UTF-8 values read as `None`.
pub fn read(host: &dyn Properties, fact: Fact) -> Option<String> {
    let bytes = host.get_property(&[fact.name()])?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// Reads a fact holding a whole number.
pub fn read_u64(host: &dyn Properties, fact: Fact) -> Option<u64> {
    read(host, fact).and_then(|v| v.parse().ok())
}

/// Prompt plus completion tokens the token counter reported for this request, if it did.
pub fn reported_tokens(host: &dyn Properties) -> Option<u64> {
    let prompt = read_u64(host, PROMPT_TOKENS);
    let completion = read_u64(host, COMPLETION_TOKENS);
    (prompt.is_some() || completion.is_some()).then(|| prompt.unwrap_or(0).saturating_add(completion.unwrap_or(0)))
}

/// `sluice.cache.status` of an answer the semantic cache served itself.
pub const CACHE_HIT: &str = "hit";

/// Whether the semantic cache answered this request (no provider generated or billed it).
pub fn served_from_cache(host: &dyn Properties) -> bool {
    read(host, CACHE_STATUS).as_deref() == Some(CACHE_HIT)
}

pub fn publish(host: &dyn Properties, fact: Fact, value: &str) {
    host.set_property(&[fact.name()], value.as_bytes());
}

/// Publishes a fact unless an earlier module already did (the first word stands: the model the
/// client asked for stays that, whatever a router rewrote it to).
pub fn publish_first(host: &dyn Properties, fact: Fact, value: &str) {
    if read(host, fact).is_none() {
        publish(host, fact, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn round_trip_and_absent() {
        let host = FakeHost::default();
        assert_eq!(read(&host, IDENTITY_TEAM), None);
        publish(&host, IDENTITY_TEAM, "blue");
        assert_eq!(read(&host, IDENTITY_TEAM).as_deref(), Some("blue"));
        assert_eq!(host.property("sluice.identity.team").as_deref(), Some("blue"));
        publish_first(&host, IDENTITY_TEAM, "red");
        assert_eq!(reported_tokens(&host), None);
        publish(&host, COMPLETION_TOKENS, "7");
        assert_eq!(reported_tokens(&host), Some(7));
        publish(&host, PROMPT_TOKENS, "21");
        assert_eq!((reported_tokens(&host), read_u64(&host, PROMPT_TOKENS)), (Some(28), Some(21)));
        assert_eq!(read(&host, IDENTITY_TEAM).as_deref(), Some("blue"));
        assert!(!served_from_cache(&host));
        publish(&host, CACHE_STATUS, "miss");
        assert!(!served_from_cache(&host));
        publish(&host, CACHE_STATUS, CACHE_HIT);
        assert!(served_from_cache(&host));
        publish(&host, ROUTE_PROVIDER, "");
        assert_eq!(read(&host, ROUTE_PROVIDER), None);
        host.set_property(&[ROUTE_PROVIDER.name()], b"\xff");
        assert_eq!(read(&host, ROUTE_PROVIDER), None);
    }

    #[test]
    fn every_fact_is_in_the_namespace() {
        for fact in [
            REQUEST_MODEL,
            REQUEST_PROMPT,
            PROMPT_ESTIMATE,
            PROMPT_TOKENS,
            COMPLETION_TOKENS,
            CACHED_TOKENS,
            REASONING_TOKENS,
            USAGE_PROVIDER,
            USAGE_SOURCE,
            COST_USD,
            PASSTHROUGH,
            RESPONSE_MODEL,
            RESPONSE_STREAMED,
            TIME_TO_FIRST_TOKEN_MS,
            ROUTE_PROVIDER,
            ROUTE_DOWNGRADE,
            ROUTE_CLUSTER,
            ROUTE_MODEL,
            ROUTE_MODELS,
            ROUTE_STREAM,
            ATTEMPT_API,
            ATTEMPT_PATH,
            ATTEMPT_HISTORY,
            ROUTE_LOGICAL,
            ROUTE_RULE,
            ROUTE_INTENT,
            ROUTE_INTENT_SCORE,
            ROUTE_COMPLEXITY,
            ROUTE_ENDPOINT,
            ROUTE_PICK,
            ROUTE_SKIPPED,
            ROUTE_BREAKER,
            IDENTITY_KEY,
            IDENTITY_TEAM,
            IDENTITY_USER,
            IDENTITY_DIMENSIONS,
            IDENTITY_FEATURE,
            IDENTITY_PROJECT,
            BUDGET_DECISION,
            PII_DETECTIONS,
            PII_ENTITIES,
            GUARD_FLAGGED,
            GUARD_DECISION,
            GUARD_CATEGORIES,
            GUARD_WAIT_MS,
            EMBEDDING_VECTOR,
            EMBEDDING_KEY,
            CACHE_STATUS,
            CACHE_REASON,
            CACHE_SIMILARITY,
            CACHE_VERIFIED,
            CACHE_LOOKUP_MS,
            CACHE_EMBEDDING_MS,
        ] {
            assert!(fact.name().starts_with("sluice.") && fact.name().split('.').count() == 3, "{fact:?}");
        }
    }
}
