//! Facts and metrics the budget enforcer publishes.

use sluice_shared::facts;
use sluice_shared::host::{MetricsHost, Properties};
use sluice_shared::metrics::{self, MetricRegistry};

use sluice_shared::pricing::Price;

use crate::attribution::Attribution;
use crate::keys::Identity;
use crate::limits::Counter;
use crate::verdict::Usage;

/// Identity facts for the other modules and access logs (the alias, never the key).
pub fn publish_identity(host: &dyn Properties, identity: &Identity) {
    facts::publish(host, facts::IDENTITY_KEY, &identity.alias);
    if let Some(team) = &identity.team {
        facts::publish(host, facts::IDENTITY_TEAM, team);
    }
    if let Some(user) = &identity.user {
        facts::publish(host, facts::IDENTITY_USER, user);
    }
    if !identity.models.is_empty() {
        facts::publish(host, facts::IDENTITY_MODELS, &identity.models.join(","));
    }
}

/// Dimension facts: every value (`sluice.identity.dimensions`), and `feature` and `project` on
/// their own (metric labels and access-log fields).
pub fn publish_attribution(host: &dyn Properties, attribution: &Attribution) {
    let encoded = attribution.encoded();
    if encoded.is_empty() {
        return;
    }
    facts::publish(host, facts::IDENTITY_DIMENSIONS, &encoded);
    for (fact, dimension) in [(facts::IDENTITY_FEATURE, "feature"), (facts::IDENTITY_PROJECT, "project")] {
        if let Some(value) = attribution.get(dimension) {
            facts::publish(host, fact, value);
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingKey,
    UnknownKey,
    ModelNotAllowed,
    UnknownPath,
    Unpriced,
    Limit,
    QueueTimeout,
    BridgeDown,
    BadRequest,
    Attribution,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::MissingKey => "missing_key",
            Refusal::UnknownKey => "unknown_key",
            Refusal::ModelNotAllowed => "model_not_allowed",
            Refusal::UnknownPath => "unknown_path",
            Refusal::Unpriced => "unpriced",
            Refusal::Limit => "limit",
            Refusal::QueueTimeout => "queue_timeout",
            Refusal::BridgeDown => "bridge_down",
            Refusal::BadRequest => "bad_request",
            Refusal::Attribution => "attribution",
        }
    }
}

pub fn refused(host: &dyn MetricsHost, registry: &mut MetricRegistry, refusal: Refusal, limit: Option<&str>) {
    let limit = limit.unwrap_or("none");
    registry.add(host, metrics::BUDGET_REJECTIONS_TOTAL, &[("reason", refusal.name()), ("limit", limit)], 1);
    decided(host, registry, if refusal == Refusal::BridgeDown { "unavailable" } else { "rejected" });
}

/// A limit check, by where it was decided: `lease` (no callout) or `redis`.
pub fn checked(host: &dyn MetricsHost, registry: &mut MetricRegistry, source: &str) {
    registry.add(host, metrics::BUDGET_CHECKS_TOTAL, &[("source", source)], 1);
}

pub fn decided(host: &dyn MetricsHost, registry: &mut MetricRegistry, decision: &str) {
    registry.add(host, metrics::BUDGET_DECISIONS_TOTAL, &[("decision", decision)], 1);
}

/// Each checked limit's remaining room (after this request), and alerts.
pub fn standing(
    host: &dyn MetricsHost,
    registry: &mut MetricRegistry,
    names: &dyn Fn(usize) -> String,
    counters: &[Counter],
    used: &[i64],
    alerts: &[String],
) {
    for (counter, used) in counters.iter().zip(used) {
        let after = if counter.has_room(*used) { used.saturating_add(counter.cost) } else { *used };
        let remaining = u64::try_from(counter.remaining(after)).unwrap_or(0);
        let name = names(counter.limit);
        let labels = [("limit", name.as_str()), ("subject", counter.subject.as_str())];
        registry.set_gauge(host, metrics::BUDGET_REMAINING, &labels, remaining);
        registry.set_gauge(host, metrics::BUDGET_USED_PERCENT, &labels, counter.used_percent(after));
    }
    for alert in alerts {
        registry.add(host, metrics::BUDGET_ALERTS_TOTAL, &[("limit", alert)], 1);
    }
}

/// Spend by key, team, model, feature and project once a request is settled.
pub fn spend(
    host: &dyn MetricsHost,
    registry: &mut MetricRegistry,
    identity: &Identity,
    attribution: &Attribution,
    model: &str,
    usage: Usage,
) {
    let team = identity.team.as_deref().unwrap_or("none");
    let model = if model.is_empty() { metrics::UNKNOWN } else { model };
    let feature = attribution.get("feature").unwrap_or("none");
    let project = attribution.get("project").unwrap_or("none");
    registry.add(
        host,
        metrics::BUDGET_SPEND_MICRO_USD_TOTAL,
        &[("key", &identity.alias), ("team", team), ("model", model), ("feature", feature), ("project", project)],
        usage.micro_usd,
    );
}

pub fn bridge_error(host: &dyn MetricsHost, registry: &mut MetricRegistry, op: &str) {
    registry.add(host, metrics::BUDGET_BRIDGE_ERRORS_TOTAL, &[("op", op)], 1);
}

/// What a finished request reports through the token counter's facts, if it ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reported {
    pub prompt: u64,
    pub completion: u64,
    /// `None`: the token counter knew no price for the model.
    pub cost_usd: Option<f64>,
}

pub fn reported(host: &dyn Properties) -> Option<Reported> {
    facts::reported_tokens(host)?;
    Some(Reported {
        prompt: facts::read_u64(host, facts::PROMPT_TOKENS).unwrap_or(0),
        completion: facts::read_u64(host, facts::COMPLETION_TOKENS).unwrap_or(0),
        cost_usd: facts::read(host, facts::COST_USD).and_then(|v| v.parse::<f64>().ok()),
    })
}

/// The usage a reported answer is charged: its cost, or for an unpriced model the tokens at
/// `price` (USD per million tokens, so micro-USD per token). `None` price: charged nothing.
pub fn charged(reported: Reported, price: Option<&Price>) -> Usage {
    let tokens = reported.prompt.saturating_add(reported.completion);
    let micro_usd = match (reported.cost_usd, price) {
        (Some(cost), _) => cost * crate::limits::MICRO_USD,
        (None, Some(p)) => reported.prompt as f64 * p.input + reported.completion as f64 * p.output,
        (None, None) => 0.0,
    };
    Usage { tokens, micro_usd: micro_usd.round().max(0.0) as u64 }
}

/// An answer settled without the token counter's price: how it was charged (`provider_price`,
/// `default_price`, `request_model_price`, or `free` when nothing applied). The access log
/// shows `sluice.usage.unpriced` (settling runs after logging).
pub fn unpriced(host: &dyn MetricsHost, registry: &mut MetricRegistry, how: &str) {
    registry.add(host, metrics::BUDGET_UNPRICED_TOTAL, &[("how", how)], 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::host::fake::FakeHost;

    #[test]
    fn usage_from_the_token_counter() {
        let host = FakeHost::default();
        assert_eq!(reported(&host), None);
        facts::publish(&host, facts::PROMPT_TOKENS, "120");
        facts::publish(&host, facts::COMPLETION_TOKENS, "30");
        facts::publish(&host, facts::COST_USD, "0.00045");
        let r = reported(&host).unwrap();
        assert_eq!(charged(r, None), Usage { tokens: 150, micro_usd: 450 });
        // No cost: the tokens at the fallback price (USD per million tokens).
        let unpriced = Reported { cost_usd: None, ..r };
        let price = Price { input: 2.0, output: 10.0, cached: None, cache_write: None };
        assert_eq!(charged(unpriced, Some(&price)).micro_usd, r.prompt * 2 + r.completion * 10);
        assert_eq!(charged(unpriced, None).micro_usd, 0);
    }

    #[test]
    fn identity_facts_never_hold_the_key() {
        let host = FakeHost::default();
        let id = Identity { alias: "alice".into(), team: Some("search".into()), ..Identity::default() };
        publish_identity(&host, &id);
        assert_eq!(host.property("sluice.identity.key").as_deref(), Some("alice"));
        assert_eq!(host.property("sluice.identity.team").as_deref(), Some("search"));
        assert_eq!(host.property("sluice.identity.user"), None);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let host = FakeHost::default();
        let mut registry = MetricRegistry::new(10);
        refused(&host, &mut registry, Refusal::Limit, Some("hourly"));
        assert_eq!(host.metric("sluice_budget_rejections_total;reason=limit;limit=hourly"), Some(1));
        assert_eq!(host.metric("sluice_budget_decisions_total;decision=rejected"), Some(1));
    }
}
