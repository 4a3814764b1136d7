//! Where a request goes: rules first (in order), then the logical model the client named; then
//! one of that model's targets, drawn by weight (or fixed per key or header when sticky), among
//! those whose context window fits the prompt.

use sluice_shared::digest;

use crate::config::{Condition, Config, LogicalModel, Sticky, Target, UnknownModels};

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
}

impl RequestFacts<'_> {
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route<'c> {
    pub logical: &'c str,
    pub rule: Option<&'c str>,
    pub target: &'c Target,
}

/// Whether any rule needs the complexity score (it parses the messages).
pub fn needs_complexity(config: &Config) -> bool {
    config.rules.iter().any(|r| r.when.complexity_over.is_some())
}

/// Decides. `roll` is a random number for weighted draws (ignored when sticky).
pub fn route<'c>(config: &'c Config, request: &RequestFacts<'_>, task_header: &str, roll: u64) -> Routing<'c> {
    if config.models.is_empty() {
        return Routing::Pass;
    }
    let ruled = config.rules.iter().find(|rule| holds(&rule.when, request, task_header));
    let (logical, rule) = match ruled {
        Some(rule) => (rule.route_to.as_str(), Some(rule.name.as_str())),
        None => match config.models.get_key_value(request.model) {
            Some((name, _)) => (name.as_str(), None),
            None if config.unknown_models == UnknownModels::Pass => return Routing::Pass,
            None => return Routing::UnknownModel,
        },
    };
    let Some(model) = config.models.get(logical) else { return Routing::UnknownModel };
    match pick(model, request, roll) {
        Some(target) => Routing::Route(Route { logical, rule, target }),
        None => Routing::TooLong {
            logical,
            largest_window: model.targets.iter().filter_map(|t| t.context_window).max().unwrap_or(0),
        },
    }
}

fn holds(when: &Condition, request: &RequestFacts<'_>, task_header: &str) -> bool {
    let listed =
        |list: &[String], value: Option<&str>| list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v));
    (when.models.is_empty() || sluice_shared::glob::any(&when.models, request.model))
        && when.header.as_ref().is_none_or(|h| request.header(&h.name).is_some_and(|v| h.values.iter().any(|x| x == v)))
        && listed(&when.teams, request.team)
        && when.prompt_tokens_over.is_none_or(|n| request.prompt_tokens > n)
        && when.complexity_over.is_none_or(|n| request.complexity.is_some_and(|c| c > n))
        && listed(&when.tasks, request.header(task_header))
}

/// Draws a target by weight among those whose window fits the prompt.
fn pick<'c>(model: &'c LogicalModel, request: &RequestFacts<'_>, roll: u64) -> Option<&'c Target> {
    let fits = |t: &&Target| t.weight > 0 && t.context_window.is_none_or(|w| request.prompt_tokens <= w);
    let total: u64 = model.targets.iter().filter(fits).map(|t| u64::from(t.weight)).sum();
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
    for target in model.targets.iter().filter(fits) {
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
        }
    }

    fn config() -> Config {
        let mut models = BTreeMap::new();
        models.insert(
            "chat".to_string(),
            LogicalModel {
                targets: vec![target("big", 90, Some(1_000)), target("canary", 10, Some(100_000))],
                sticky: None,
                owned_by: None,
            },
        );
        models.insert(
            "chat-quality".to_string(),
            LogicalModel { targets: vec![target("quality", 1, None)], sticky: None, owned_by: None },
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
    fn weights_split_draws() {
        let config = config();
        let canary =
            (0..1000u64).filter(|roll| chosen(&route(&config, &facts("chat"), "x-task", *roll)).2 == "canary").count();
        assert_eq!(canary, 100);
    }

    #[test]
    fn rules_in_order() {
        let config = config();
        let mut request = facts("chat");
        request.headers.push(("X-Model-Tier".into(), "quality".into()));
        assert_eq!(chosen(&route(&config, &request, "x-task", 0)), ("chat-quality", Some("tier"), "quality"));
        let request = RequestFacts { team: Some("research"), ..facts("anything") };
        assert_eq!(chosen(&route(&config, &request, "x-task", 0)).1, Some("research"));
        let request = RequestFacts { complexity: Some(0.6), ..facts("chat") };
        assert_eq!(chosen(&route(&config, &request, "x-task", 0)).1, Some("hard"));
        let request = RequestFacts { complexity: Some(0.6), ..facts("chat-quality") };
        assert_eq!(chosen(&route(&config, &request, "x-task", 0)).1, None, "the rule is scoped to `chat`");
    }

    #[test]
    fn unknown_models_and_pass_through() {
        let mut config = config();
        assert_eq!(route(&config, &facts("gpt-9"), "x-task", 0), Routing::UnknownModel);
        config.unknown_models = UnknownModels::Pass;
        assert_eq!(route(&config, &facts("gpt-9"), "x-task", 0), Routing::Pass);
        assert_eq!(route(&Config::default(), &facts("chat"), "x-task", 0), Routing::Pass);
    }

    #[test]
    fn context_window_guard() {
        let config = config();
        let long = RequestFacts { prompt_tokens: 5_000, ..facts("chat") };
        // Only the canary fits: every draw lands on it.
        assert!((0..50).all(|roll| chosen(&route(&config, &long, "x-task", roll)).2 == "canary"));
        let huge = RequestFacts { prompt_tokens: 200_000, ..facts("chat") };
        assert_eq!(route(&config, &huge, "x-task", 0), Routing::TooLong { logical: "chat", largest_window: 100_000 });
    }

    #[test]
    fn sticky_by_header_ignores_the_roll() {
        let mut config = config();
        if let Some(model) = config.models.get_mut("chat") {
            model.sticky = Some(Sticky::Header { header: "x-session".into() });
        }
        let mut request = facts("chat");
        request.headers.push(("x-session".into(), "abc".into()));
        let first = chosen(&route(&config, &request, "x-task", 0)).2;
        assert!((1..100).all(|roll| chosen(&route(&config, &request, "x-task", roll)).2 == first));
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
        assert_eq!(chosen(&route(&config, &request, "x-task", 0)).1, Some("code"));
    }
}
