//! Publishes what an exchange measured: facts for other modules and access logs, and metrics.

use sluice_shared::facts::{self, Fact};
use sluice_shared::host::{MetricsHost, Properties};
use sluice_shared::metrics::{self, MetricRegistry};
use sluice_shared::pricing::PriceTable;
use sluice_shared::prompt::RequestSummary;

use crate::config::Config;
use crate::exchange::Outcome;

/// Facts known once the request body was read. Each fact is a host call, so only what carries
/// information is published (the path, duration and totals are in Envoy's own log fields).
pub fn publish_request(host: &dyn Properties, request: &RequestSummary, estimate: Option<u64>) {
    facts::publish_first(host, facts::REQUEST_MODEL, &request.model);
    if let Some(tokens) = estimate {
        facts::publish(host, facts::PROMPT_ESTIMATE, &tokens.to_string());
    }
}

/// An estimate another module published for this request, if any.
pub fn published_estimate(host: &dyn Properties) -> Option<u64> {
    facts::read_u64(host, facts::PROMPT_ESTIMATE)
}

/// Who an exchange is attributed to in metrics.
struct Attribution {
    model: String,
    provider: String,
    team: String,
}

/// Cost in USD rounded to 1e-10, so sums print without float noise.
fn round_usd(cost: f64) -> f64 {
    (cost * 1e10).round() / 1e10
}

/// Publishes an exchange's outcome; returns its cost in USD when the model has a price.
pub fn publish_outcome<H: Properties + MetricsHost>(
    host: &H,
    registry: &mut MetricRegistry,
    prices: &PriceTable,
    config: &Config,
    outcome: &Outcome,
) -> Option<f64> {
    for reason in [outcome.request_skipped, outcome.passthrough].into_iter().flatten() {
        registry.add(host, metrics::PASSTHROUGH_TOTAL, &[("reason", reason)], 1);
    }
    let api = outcome.api?;
    let routed = facts::read(host, facts::ROUTE_PROVIDER);
    // A fallback answered: its tokens belong to the model and provider that produced them.
    let fell_back = matches!((&outcome.answered_by, &routed), (Some(a), Some(r)) if a != r);
    let (first, second) = match fell_back {
        true => (&outcome.answer_model, &outcome.request_model),
        false => (&outcome.request_model, &outcome.answer_model),
    };
    let who = Attribution {
        model: first.clone().or_else(|| second.clone()).unwrap_or_else(|| metrics::UNKNOWN.to_string()),
        provider: outcome
            .answered_by
            .clone()
            .or(routed)
            .or_else(|| config.provider.clone())
            .unwrap_or_else(|| api.default_provider().to_string()),
        team: facts::read(host, facts::IDENTITY_TEAM).unwrap_or_else(|| "none".to_string()),
    };
    let usage = &outcome.usage;
    let cost = outcome.priced_model().and_then(|m| prices.cost_usd(m, usage)).map(round_usd);

    let number = |fact: Fact, value: u64| facts::publish(host, fact, &value.to_string());
    if let Some(estimate) = outcome.late_estimate {
        number(facts::PROMPT_ESTIMATE, estimate);
    }
    number(facts::PROMPT_TOKENS, usage.prompt);
    number(facts::COMPLETION_TOKENS, usage.completion);
    if usage.cached > 0 {
        number(facts::CACHED_TOKENS, usage.cached);
    }
    if usage.reasoning > 0 {
        number(facts::REASONING_TOKENS, usage.reasoning);
    }
    if let Some(ttft) = outcome.ttft_ms {
        number(facts::TIME_TO_FIRST_TOKEN_MS, ttft);
    }
    facts::publish(host, facts::USAGE_SOURCE, outcome.source.name());
    facts::publish(host, facts::USAGE_PROVIDER, &who.provider);
    if outcome.streamed {
        facts::publish(host, facts::RESPONSE_STREAMED, "true");
    }
    if let Some(model) = outcome.answer_model.as_ref().filter(|m| outcome.request_model.as_ref() != Some(*m)) {
        facts::publish(host, facts::RESPONSE_MODEL, model);
    }
    if let Some(reason) = outcome.passthrough {
        facts::publish(host, facts::PASSTHROUGH, reason);
    }
    match cost {
        Some(cost) => facts::publish(host, facts::COST_USD, &cost.to_string()),
        // Visible in the access log: USD limits charge it at a default price, or not at all.
        None if usage.prompt > 0 || usage.completion > 0 => facts::publish(host, facts::USAGE_UNPRICED, "true"),
        None => {}
    }

    let base = [("model", who.model.as_str()), ("provider", who.provider.as_str()), ("team", who.team.as_str())];
    let streamed = if outcome.streamed { "true" } else { "false" };
    let [model, provider, team] = base;
    registry.add(
        host,
        metrics::REQUESTS_TOTAL,
        &[("api", api.name()), model, provider, team, ("streamed", streamed), ("status", outcome.status)],
        1,
    );
    for (direction, count) in [
        ("input", usage.prompt),
        ("output", usage.completion),
        ("cached", usage.cached),
        ("reasoning", usage.reasoning),
    ] {
        registry.add(host, metrics::TOKENS_TOTAL, &[("direction", direction), model, provider, team], count);
    }
    if let Some(cost) = cost {
        let micro_usd = (cost * 1e6).round() as u64;
        // Cost also by the budget enforcer's attribution dimensions (the bill per feature).
        let feature = facts::read(host, facts::IDENTITY_FEATURE).unwrap_or_else(|| "none".to_string());
        let project = facts::read(host, facts::IDENTITY_PROJECT).unwrap_or_else(|| "none".to_string());
        let billed = [model, provider, team, ("feature", feature.as_str()), ("project", project.as_str())];
        registry.add(host, metrics::COST_MICRO_USD_TOTAL, &billed, micro_usd);
        // The same figure per request, as a distribution (the most expensive requests).
        registry.record(host, metrics::REQUEST_COST_MICRO_USD, &billed, micro_usd);
    }
    let timed = [("api", api.name()), model, provider, team];
    registry.record(host, metrics::REQUEST_DURATION_MS, &timed, outcome.duration_ms);
    if let (true, Some(ttft)) = (outcome.streamed, outcome.ttft_ms) {
        registry.record(host, metrics::TIME_TO_FIRST_TOKEN_MS, &timed, ttft);
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::Source;
    use sluice_shared::api::Api;
    use sluice_shared::host::fake::FakeHost;
    use sluice_shared::usage::TokenUsage;

    fn outcome() -> Outcome {
        Outcome {
            api: Some(Api::ChatCompletions),
            request_model: Some("gpt-4o".into()),
            late_estimate: None,
            answer_model: Some("gpt-4o-2024-08-06".into()),
            streamed: true,
            status: "2xx",
            usage: TokenUsage { prompt: 1000, completion: 200, cached: 400, cache_write: 0, reasoning: 0 },
            source: Source::Provider,
            passthrough: None,
            request_skipped: None,
            ttft_ms: Some(35),
            duration_ms: 120,
            answered_by: None,
        }
    }

    #[test]
    fn publishes_facts_and_labelled_metrics() {
        let host = FakeHost::default();
        facts::publish(&host, facts::IDENTITY_TEAM, "blue");
        let mut registry = MetricRegistry::new(10);
        let cost =
            publish_outcome(&host, &mut registry, &PriceTable::default(), &Config::default(), &outcome()).unwrap();
        // 600 * 2.50 + 400 * 1.25 + 200 * 10.00 per million
        assert!((cost - 0.004).abs() < 1e-12, "{cost}");
        assert_eq!(host.property("sluice.usage.prompt_tokens").as_deref(), Some("1000"));
        assert_eq!(host.property("sluice.usage.cached_tokens").as_deref(), Some("400"));
        assert_eq!(host.property("sluice.usage.reasoning_tokens"), None, "zero counts are not published");
        assert_eq!(host.property("sluice.response.model").as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(host.property("sluice.response.streamed").as_deref(), Some("true"));
        assert_eq!(host.property("sluice.usage.cost_usd").as_deref(), Some("0.004"));
        assert_eq!(host.property("sluice.usage.source").as_deref(), Some("provider"));
        assert_eq!(host.property("sluice.response.ttft_ms").as_deref(), Some("35"));
        let labels = "model=gpt-4o;provider=openai;team=blue";
        assert_eq!(host.metric(&format!("sluice_tokens_total;direction=input;{labels}")), Some(1000));
        assert_eq!(host.metric(&format!("sluice_tokens_total;direction=cached;{labels}")), Some(400));
        let billed = "model=gpt-4o;provider=openai;team=blue;feature=none;project=none";
        assert_eq!(host.metric(&format!("sluice_cost_micro_usd_total;{billed}")), Some(4000));
        assert_eq!(host.recorded(&format!("sluice_request_cost_micro_usd;{billed}")), vec![4000]);
        assert_eq!(
            host.metric(&format!("sluice_requests_total;api=chat_completions;{labels};streamed=true;status=2xx")),
            Some(1)
        );
        assert_eq!(host.recorded(&format!("sluice_time_to_first_token_ms;api=chat_completions;{labels}")), vec![35]);
    }

    #[test]
    fn cost_is_labelled_with_the_requests_feature_and_project() {
        let host = FakeHost::default();
        facts::publish(&host, facts::IDENTITY_FEATURE, "search");
        facts::publish(&host, facts::IDENTITY_PROJECT, "apollo");
        let mut registry = MetricRegistry::new(10);
        publish_outcome(&host, &mut registry, &PriceTable::default(), &Config::default(), &outcome());
        let billed = "model=gpt-4o;provider=openai;team=none;feature=search;project=apollo";
        assert_eq!(host.metric(&format!("sluice_cost_micro_usd_total;{billed}")), Some(4000));
        assert_eq!(host.recorded(&format!("sluice_request_cost_micro_usd;{billed}")), vec![4000]);
    }

    #[test]
    fn routing_fact_and_config_pick_the_provider() {
        let host = FakeHost::default();
        let config = Config { provider: Some("vllm".into()), ..Config::default() };
        let mut registry = MetricRegistry::new(10);
        publish_outcome(&host, &mut registry, &PriceTable::default(), &config, &outcome());
        assert!(host.metric("sluice_tokens_total;direction=output;model=gpt-4o;provider=vllm;team=none").is_some());
        facts::publish(&host, facts::ROUTE_PROVIDER, "anthropic");
        publish_outcome(&host, &mut registry, &PriceTable::default(), &config, &outcome());
        assert!(host
            .metric("sluice_tokens_total;direction=output;model=gpt-4o;provider=anthropic;team=none")
            .is_some());
    }

    #[test]
    fn a_fallback_is_counted_for_the_provider_and_model_that_answered() {
        let host = FakeHost::default();
        let mut registry = MetricRegistry::new(10);
        facts::publish(&host, facts::ROUTE_PROVIDER, "openai");
        let fallback = Outcome {
            answer_model: Some("claude-sonnet-4-5".into()),
            answered_by: Some("anthropic".into()),
            ..outcome()
        };
        publish_outcome(&host, &mut registry, &PriceTable::default(), &Config::default(), &fallback);
        let labels = "model=claude-sonnet-4-5;provider=anthropic;team=none";
        assert!(host.metric(&format!("sluice_tokens_total;direction=output;{labels}")).is_some());
        // The routed provider answering keeps the requested model's name.
        let primary = Outcome { answered_by: Some("openai".into()), ..outcome() };
        publish_outcome(&host, &mut registry, &PriceTable::default(), &Config::default(), &primary);
        assert!(host.metric("sluice_tokens_total;direction=output;model=gpt-4o;provider=openai;team=none").is_some());
    }

    #[test]
    fn passthrough_is_counted_without_facts_for_other_apis() {
        let host = FakeHost::default();
        let mut registry = MetricRegistry::new(10);
        let other = Outcome { api: None, passthrough: Some("other_api"), ..outcome() };
        assert_eq!(publish_outcome(&host, &mut registry, &PriceTable::default(), &Config::default(), &other), None);
        assert_eq!(host.metric("sluice_passthrough_total;reason=other_api"), Some(1));
        assert!(host.properties.borrow().is_empty());
    }

    #[test]
    fn unpriced_model_has_no_cost() {
        let host = FakeHost::default();
        let mut registry = MetricRegistry::new(10);
        let o = Outcome { request_model: Some("my-llama".into()), answer_model: None, ..outcome() };
        assert_eq!(publish_outcome(&host, &mut registry, &PriceTable::default(), &Config::default(), &o), None);
        assert_eq!(host.property("sluice.usage.cost_usd"), None);
        assert!(host.properties.borrow().keys().all(|k| !k.contains("cost_usd")));
    }
}
