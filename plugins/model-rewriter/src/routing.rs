//! Where a request goes: rules first (in order), then the logical model the client named; then
//! one of that model's targets, drawn by weight (or fixed per key or header when sticky), among
//! those whose context window fits the prompt.

use sluice_shared::digest;

use crate::breaker::{self, Admission};
use crate::config::{Condition, Config, DisallowedRules, LogicalModel, Sticky, Strategy, Target, UnknownModels};
use crate::stats::TargetStats;

/// What the strategies see of the targets at decision time.
pub struct Signals<'a> {
    /// A random number for weighted draws and ties.
    pub roll: u64,
    pub now_ms: u64,
    pub stats: &'a dyn Fn(&Target) -> TargetStats,
    /// Input + output USD per million tokens, when the model has a price.
    pub price: &'a dyn Fn(&Target) -> Option<f64>,
    pub health_window_ms: u64,
}

impl Signals<'_> {
    #[cfg(test)]
    /// Signals for weighted draws only.
    pub fn roll(roll: u64) -> Signals<'static> {
        Signals { roll, now_ms: 0, stats: &|_| TargetStats::default(), price: &|_| None, health_window_ms: 0 }
    }
}

/// What the routing decision needs to know about a request.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    /// The model the client asked for.
    pub model: &'a str,
    /// Request headers by lower-case name, as text.
    pub headers: Vec<(String, String)>,
    pub key: Option<&'a str>,
    pub team: Option<&'a str>,
    pub prompt_tokens: u64,
    /// Only computed when a rule needs it.
    pub complexity: Option<f64>,
    /// The key's model allow-list (globs, from the budget enforcer); empty: any model.
    pub allowed: Vec<String>,
    /// The prompt's nearest intent, when a rule reads it and one reached its threshold.
    pub intent: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// Whether the key may use a model (logical or upstream) by name.
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed.is_empty() || sluice_shared::glob::any(&self.allowed, model)
    }

    /// Whether the key may reach this target of `logical`: every target when it may use the
    /// logical name, otherwise only targets whose upstream model it may use.
    pub fn may_reach(&self, logical: &str, model: &str) -> bool {
        self.may_use(logical) || self.may_use(model)
    }

    fn permits(&self, logical: &str, model: &LogicalModel) -> bool {
        self.may_use(logical) || model.targets.iter().any(|t| self.may_use(&t.model))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Routing<'c> {
    Route(Route<'c>),
    /// Neither a logical model nor matched by a rule (`unknown_models: reject`).
    UnknownModel,
    /// No target of the logical model takes a prompt this long.
    TooLong {
        logical: &'c str,
        largest_window: u64,
    },
    /// Left to Envoy's own routes (no model configured, or `unknown_models: pass`).
    Pass,
    /// The key's allow-list admits neither the logical model nor any of its targets.
    NotAllowed {
        logical: &'c str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route<'c> {
    pub logical: &'c str,
    pub rule: Option<&'c str>,
    pub target: &'c Target,
    /// Targets skipped because their latency breaker is open.
    pub skipped: Vec<&'c Target>,
    /// The target's breaker is half-open and this request probes it.
    pub probe: bool,
}

/// Whether any rule needs the complexity score (it parses the messages).
pub fn needs_complexity(config: &Config) -> bool {
    config.rules.iter().any(|r| r.when.complexity_over.is_some())
}

/// Whether a rule that can hold for a request for `model` reads its intent (its last user turn
/// is then embedded; requests no intent rule can take do not wait for the embedder).
pub fn reads_intents(config: &Config, model: &str) -> bool {
    !config.intents.is_empty()
        && config.rules.iter().any(|r| {
            !r.when.intents.is_empty() && (r.when.models.is_empty() || sluice_shared::glob::any(&r.when.models, model))
        })
}

/// Decides.
pub fn route<'c>(
    config: &'c Config,
    request: &RequestFacts<'_>,
    task_header: &str,
    signals: &Signals<'_>,
) -> Routing<'c> {
    if config.models.is_empty() {
        return Routing::Pass;
    }
    let permitted = |logical: &str| config.models.get(logical).is_none_or(|m| request.permits(logical, m));
    let mut holding = config.rules.iter().filter(|rule| holds(&rule.when, request, task_header));
    let ruled = match config.disallowed_rules {
        DisallowedRules::Skip => holding.find(|rule| permitted(&rule.route_to)),
        DisallowedRules::Refuse => match holding.next() {
            Some(rule) if !permitted(&rule.route_to) => return Routing::NotAllowed { logical: rule.route_to.as_str() },
            found => found,
        },
    };
    let (logical, rule) = match ruled {
        Some(rule) => (rule.route_to.as_str(), Some(rule.name.as_str())),
        None => match config.models.get_key_value(request.model) {
            Some((name, _)) => (name.as_str(), None),
            None if config.unknown_models == UnknownModels::Pass => return Routing::Pass,
            None => return Routing::UnknownModel,
        },
    };
    let Some(model) = config.models.get(logical) else { return Routing::UnknownModel };
    if !request.permits(logical, model) {
        return Routing::NotAllowed { logical };
    }
    match pick(logical, model, request, signals) {
        Some((target, skipped)) => {
            let probe = model
                .breaker
                .as_ref()
                .is_some_and(|b| breaker::admission(&(signals.stats)(target), b, signals.now_ms) == Admission::Probe);
            Routing::Route(Route { logical, rule, target, skipped, probe })
        }
        None => Routing::TooLong {
            logical,
            largest_window: model.targets.iter().filter_map(|t| t.context_window).max().unwrap_or(0),
        },
    }
}

fn holds(when: &Condition, request: &RequestFacts<'_>, task_header: &str) -> bool {
    use sluice_shared::glob::listed;
    (when.models.is_empty() || sluice_shared::glob::any(&when.models, request.model))
        && when.header.as_ref().is_none_or(|h| request.header(&h.name).is_some_and(|v| h.values.iter().any(|x| x == v)))
        && listed(&when.teams, request.team)
        && when.prompt_tokens_over.is_none_or(|n| request.prompt_tokens > n)
        && when.complexity_over.is_none_or(|n| request.complexity.is_some_and(|c| c > n))
        && listed(&when.tasks, request.header(task_header))
        && (when.intents.is_empty() || request.intent.is_some_and(|i| when.intents.iter().any(|x| x == i)))
}

/// Chooses among the targets whose window fits the prompt and whose breaker is not open
/// (all of them, when every breaker is), by the model's strategy; with the targets skipped.
fn pick<'c>(
    logical: &str,
    model: &'c LogicalModel,
    request: &RequestFacts<'_>,
    signals: &Signals<'_>,
) -> Option<(&'c Target, Vec<&'c Target>)> {
    let fits: Vec<&Target> = model
        .targets
        .iter()
        .filter(|t| t.weight > 0 && t.context_window.is_none_or(|w| request.prompt_tokens <= w))
        .filter(|t| request.may_reach(logical, &t.model))
        .collect();
    let now = signals.now_ms;
    let (fits, skipped) = match &model.breaker {
        Some(b) => {
            let (open, closed): (Vec<&Target>, Vec<&Target>) =
                fits.iter().partition(|t| breaker::admission(&(signals.stats)(t), b, now) == Admission::Open);
            if closed.is_empty() {
                (open, Vec::new())
            } else {
                (closed, open)
            }
        }
        None => (fits, Vec::new()),
    };
    let chosen = by_strategy(model, &fits, request, signals)?;
    Some((chosen, skipped))
}

fn by_strategy<'c>(
    model: &LogicalModel,
    fits: &[&'c Target],
    request: &RequestFacts<'_>,
    signals: &Signals<'_>,
) -> Option<&'c Target> {
    let fits = fits.to_vec();
    let now = signals.now_ms;
    match model.strategy {
        Strategy::Weighted => weighted(model, &fits, request, signals.roll),
        Strategy::LeastBusy => lowest(&fits, signals.roll, |t| (signals.stats)(t).in_flight as f64),
        Strategy::Usage => lowest(&fits, signals.roll, |t| (signals.stats)(t).tokens_this_minute(now) as f64),
        // Unmeasured targets first (below any measurement, even a 0 ms one on loopback), so
        // each is tried before the averages decide.
        Strategy::Latency => lowest(&fits, signals.roll, |t| (signals.stats)(t).latency_ms.unwrap_or(-1.0)),
        Strategy::Cost => {
            let healthy: Vec<&Target> = fits
                .iter()
                .copied()
                .filter(|t| !(signals.stats)(t).failed_recently(now, signals.health_window_ms))
                .collect();
            let pool = if healthy.is_empty() { &fits } else { &healthy };
            lowest(pool, signals.roll, |t| (signals.price)(t).unwrap_or(f64::MAX))
        }
    }
}

/// The target with the lowest score; ties broken by the roll.
fn lowest<'c>(targets: &[&'c Target], roll: u64, score: impl Fn(&Target) -> f64) -> Option<&'c Target> {
    let scored: Vec<(f64, &Target)> = targets.iter().map(|t| (score(t), *t)).collect();
    let best = scored.iter().map(|(s, _)| *s).fold(f64::INFINITY, f64::min);
    let ties: Vec<&Target> = scored.iter().filter(|(s, _)| *s <= best).map(|(_, t)| *t).collect();
    let count = u64::try_from(ties.len()).ok().filter(|n| *n > 0)?;
    ties.get(usize::try_from(roll % count).ok()?).copied()
}

/// Draws by weight (or by the sticky value's hash).
fn weighted<'c>(
    model: &LogicalModel,
    fits: &[&'c Target],
    request: &RequestFacts<'_>,
    roll: u64,
) -> Option<&'c Target> {
    let total: u64 = fits.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return None;
    }
    let sticky_value = match &model.sticky {
        Some(Sticky::Key) => request.key,
        Some(Sticky::Header { header }) => request.header(header),
        None => None,
    };
    let roll = match sticky_value {
        Some(value) => {
            let hash = digest::sha256(value.as_bytes());
            u64::from_le_bytes(hash.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
        }
        None => roll,
    };
    let mut point = roll % total;
    for target in fits {
        let weight = u64::from(target.weight);
        if point < weight {
            return Some(target);
        }
        point -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderMatch, Rule};
    use std::collections::BTreeMap;

    fn target(model: &str, weight: u32, window: Option<u64>) -> Target {
        Target {
            provider: "openai".into(),
            model: model.into(),
            cluster: "provider_openai".into(),
            weight,
            context_window: window,
            pool: None,
        }
    }

    fn config() -> Config {
        let mut models = BTreeMap::new();
        models.insert(
            "chat".to_string(),
            LogicalModel {
                targets: vec![target("big", 90, Some(1_000)), target("canary", 10, Some(100_000))],
                strategy: Strategy::Weighted,
                sticky: None,
                owned_by: None,
                fallbacks: Vec::new(),
                breaker: None,
            },
        );
        models.insert(
            "chat-quality".to_string(),
            LogicalModel {
                targets: vec![target("quality", 1, None)],
                strategy: Strategy::Weighted,
                sticky: None,
                owned_by: None,
                fallbacks: Vec::new(),
                breaker: None,
            },
        );
        Config {
            models,
            rules: vec![
                Rule {
                    name: "tier".into(),
                    when: Condition {
                        header: Some(HeaderMatch { name: "x-model-tier".into(), values: vec!["quality".into()] }),
                        ..Condition::default()
                    },
                    route_to: "chat-quality".into(),
                },
                Rule {
                    name: "research".into(),
                    when: Condition { teams: vec!["research".into()], ..Condition::default() },
                    route_to: "chat-quality".into(),
                },
                Rule {
                    name: "hard".into(),
                    when: Condition { models: vec!["chat".into()], complexity_over: Some(0.5), ..Condition::default() },
                    route_to: "chat-quality".into(),
                },
            ],
            ..Config::default()
        }
    }

    fn facts(model: &str) -> RequestFacts<'_> {
        RequestFacts { model, prompt_tokens: 10, ..RequestFacts::default() }
    }

    fn chosen<'c>(routing: &Routing<'c>) -> (&'c str, Option<&'c str>, &'c str) {
        match routing {
            Routing::Route(r) => (r.logical, r.rule, r.target.model.as_str()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_requests_an_intent_rule_can_take_wait_for_the_embedder() {
        let mut config = config();
        let rule = |models: Vec<String>| Rule {
            name: "code".into(),
            when: Condition { models, intents: vec!["code".into()], ..Condition::default() },
            route_to: "chat-quality".into(),
        };
        config.rules.push(rule(vec!["auto*".into()]));
        assert!(!reads_intents(&config, "auto"), "no intents configured");
        config.intents = serde_json::from_str(r#"[{"name": "code", "examples": ["Write a function."]}]"#).unwrap();
        assert!(reads_intents(&config, "auto") && reads_intents(&config, "auto-cheap"));
        assert!(!reads_intents(&config, "chat"), "the rule cannot hold for `chat`");
        config.rules.push(rule(Vec::new()));
        assert!(reads_intents(&config, "chat"), "a rule for any model");
    }

    #[test]
    fn weights_split_draws() {
        let config = config();
        let canary = (0..1000u64)
            .filter(|roll| chosen(&route(&config, &facts("chat"), "x-task", &Signals::roll(*roll))).2 == "canary")
            .count();
        assert_eq!(canary, 100);
    }

    #[test]
    fn rules_in_order() {
        let config = config();
        let mut request = facts("chat");
        request.headers.push(("X-Model-Tier".into(), "quality".into()));
        assert_eq!(
            chosen(&route(&config, &request, "x-task", &Signals::roll(0))),
            ("chat-quality", Some("tier"), "quality")
        );
        let request = RequestFacts { team: Some("research"), ..facts("anything") };
        assert_eq!(chosen(&route(&config, &request, "x-task", &Signals::roll(0))).1, Some("research"));
        let request = RequestFacts { complexity: Some(0.6), ..facts("chat") };
        assert_eq!(chosen(&route(&config, &request, "x-task", &Signals::roll(0))).1, Some("hard"));
        let request = RequestFacts { complexity: Some(0.6), ..facts("chat-quality") };
        assert_eq!(
            chosen(&route(&config, &request, "x-task", &Signals::roll(0))).1,
            None,
            "the rule is scoped to `chat`"
        );
    }

    #[test]
    fn the_allow_list_holds_for_rules_and_targets() {
        let mut config = config();
        let tiered = |allowed: &[&str]| {
            let mut request = facts("chat");
            request.headers.push(("x-model-tier".into(), "quality".into()));
            request.allowed = allowed.iter().map(|s| s.to_string()).collect();
            request
        };
        // A key allowed only `chat` is not routed to `chat-quality` by the tier header.
        assert_eq!(chosen(&route(&config, &tiered(&["chat"]), "x-task", &Signals::roll(0))).0, "chat");
        // Allowed by the upstream model's name instead of the logical one.
        assert_eq!(chosen(&route(&config, &tiered(&["chat", "quality"]), "x-task", &Signals::roll(0))).1, Some("tier"));
        // Only the targets the key may use are drawn.
        for roll in 0..50 {
            let request = RequestFacts { allowed: vec!["canary".into()], ..facts("chat") };
            assert_eq!(chosen(&route(&config, &request, "x-task", &Signals::roll(roll))).2, "canary");
        }
        let request = RequestFacts { allowed: vec!["other".into()], ..facts("chat") };
        assert_eq!(route(&config, &request, "x-task", &Signals::roll(0)), Routing::NotAllowed { logical: "chat" });
        config.disallowed_rules = DisallowedRules::Refuse;
        assert_eq!(
            route(&config, &tiered(&["chat"]), "x-task", &Signals::roll(0)),
            Routing::NotAllowed { logical: "chat-quality" }
        );
    }

    #[test]
    fn unknown_models_and_pass_through() {
        let mut config = config();
        assert_eq!(route(&config, &facts("gpt-9"), "x-task", &Signals::roll(0)), Routing::UnknownModel);
        config.unknown_models = UnknownModels::Pass;
        assert_eq!(route(&config, &facts("gpt-9"), "x-task", &Signals::roll(0)), Routing::Pass);
        assert_eq!(route(&Config::default(), &facts("chat"), "x-task", &Signals::roll(0)), Routing::Pass);
    }

    #[test]
    fn context_window_guard() {
        let config = config();
        let long = RequestFacts { prompt_tokens: 5_000, ..facts("chat") };
        // Only the canary fits: every draw lands on it.
        assert!((0..50).all(|roll| chosen(&route(&config, &long, "x-task", &Signals::roll(roll))).2 == "canary"));
        let huge = RequestFacts { prompt_tokens: 200_000, ..facts("chat") };
        assert_eq!(
            route(&config, &huge, "x-task", &Signals::roll(0)),
            Routing::TooLong { logical: "chat", largest_window: 100_000 }
        );
    }

    #[test]
    fn sticky_by_header_ignores_the_roll() {
        let mut config = config();
        if let Some(model) = config.models.get_mut("chat") {
            model.sticky = Some(Sticky::Header { header: "x-session".into() });
        }
        let mut request = facts("chat");
        request.headers.push(("x-session".into(), "abc".into()));
        let first = chosen(&route(&config, &request, "x-task", &Signals::roll(0))).2;
        assert!((1..100).all(|roll| chosen(&route(&config, &request, "x-task", &Signals::roll(roll))).2 == first));
    }

    #[test]
    fn task_hints() {
        let mut config = config();
        config.rules.insert(
            0,
            Rule {
                name: "code".into(),
                when: Condition { tasks: vec!["code".into()], ..Condition::default() },
                route_to: "chat-quality".into(),
            },
        );
        let mut request = facts("chat");
        request.headers.push(("x-task".into(), "code".into()));
        assert_eq!(chosen(&route(&config, &request, "x-task", &Signals::roll(0))).1, Some("code"));
    }

    fn two_targets(strategy: Strategy) -> Config {
        let mut config = config();
        if let Some(model) = config.models.get_mut("chat") {
            model.strategy = strategy;
            model.targets = vec![target("a", 1, None), target("b", 1, None)];
        }
        config
    }

    fn with_stats(
        config: &Config,
        stats: &dyn Fn(&Target) -> TargetStats,
        price: &dyn Fn(&Target) -> Option<f64>,
    ) -> String {
        let signals = Signals { roll: 0, now_ms: 120_000, stats, price, health_window_ms: 30_000 };
        chosen(&route(config, &facts("chat"), "x-task", &signals)).2.to_string()
    }

    #[test]
    fn strategies_read_the_shared_figures() {
        let by_model =
            |a: TargetStats, b: TargetStats| move |t: &Target| if t.model == "a" { a.clone() } else { b.clone() };
        let busy = TargetStats { in_flight: 3, ..TargetStats::default() };
        let idle = TargetStats { in_flight: 1, ..TargetStats::default() };
        let no_price = |_: &Target| None;
        assert_eq!(
            with_stats(&two_targets(Strategy::LeastBusy), &by_model(busy.clone(), idle.clone()), &no_price),
            "b"
        );
        assert_eq!(with_stats(&two_targets(Strategy::LeastBusy), &by_model(idle, busy), &no_price), "a");
        let slow = TargetStats { latency_ms: Some(300.0), ..TargetStats::default() };
        let fast = TargetStats { latency_ms: Some(40.0), ..TargetStats::default() };
        assert_eq!(with_stats(&two_targets(Strategy::Latency), &by_model(slow.clone(), fast), &no_price), "b");
        assert_eq!(
            with_stats(&two_targets(Strategy::Latency), &by_model(slow, TargetStats::default()), &no_price),
            "b"
        );
        // A loopback target measured at 0 ms still yields to one never measured.
        let instant = TargetStats { latency_ms: Some(0.0), ..TargetStats::default() };
        let stats = |t: &Target| if t.model == "a" { instant.clone() } else { TargetStats::default() };
        for roll in 0..8 {
            let signals = Signals { roll, now_ms: 120_000, stats: &stats, price: &no_price, health_window_ms: 30_000 };
            let picked =
                chosen(&route(&two_targets(Strategy::Latency), &facts("chat"), "x-task", &signals)).2.to_string();
            assert_eq!(picked, "b", "roll {roll}");
        }
        let used = TargetStats { minute: 2, minute_tokens: 500, ..TargetStats::default() };
        let stale = TargetStats { minute: 1, minute_tokens: 900, ..TargetStats::default() };
        assert_eq!(with_stats(&two_targets(Strategy::Usage), &by_model(used, stale), &no_price), "b");
        let price = |t: &Target| Some(if t.model == "a" { 0.5 } else { 2.0 });
        let fine = || TargetStats::default();
        assert_eq!(with_stats(&two_targets(Strategy::Cost), &by_model(fine(), fine()), &price), "a");
        let failing = TargetStats { last_failure_ms: 110_000, ..TargetStats::default() };
        assert_eq!(with_stats(&two_targets(Strategy::Cost), &by_model(failing.clone(), fine()), &price), "b");
        // All unhealthy: the cheapest anyway.
        assert_eq!(with_stats(&two_targets(Strategy::Cost), &by_model(failing.clone(), failing), &price), "a");
    }

    #[test]
    fn ties_are_broken_by_the_roll() {
        let config = two_targets(Strategy::LeastBusy);
        let picks: std::collections::HashSet<String> = (0..10u64)
            .map(|roll| {
                let signals = Signals { roll, ..Signals::roll(roll) };
                chosen(&route(&config, &facts("chat"), "x-task", &signals)).2.to_string()
            })
            .collect();
        assert_eq!(picks.len(), 2);
    }
}
