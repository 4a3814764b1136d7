//! From the replies of one check's guards to one decision: each tripped category's action by
//! its rule, then the strongest action over every guard (block > redact > flag > pass).

use crate::config::{Action, FailurePolicy, Guard, Kind};
use crate::service::{Reply, Trouble, WebhookAction};

/// The category a guard that could not answer is reported under (with `on_error: closed`).
pub const UNAVAILABLE: &str = "guard_unavailable";

/// How strong a decision is (`pass` < `unchecked` < `flag` < `redact` < `block`), for the one
/// fact both guard filters add to.
pub fn rank(decision: &str) -> u8 {
    match decision {
        "block" => 4,
        "redact" => 3,
        "flag" => 2,
        "unchecked" => 1,
        _ => 0,
    }
}

/// One tripped category.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub guard: String,
    pub category: String,
    pub action: Action,
    /// A webhook's reason, shown in a block's error.
    pub reason: Option<String>,
}

/// The decision of one check.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    pub hits: Vec<Hit>,
    /// A webhook's replacement texts, when the strongest action is `redact`.
    pub replacement: Option<Vec<String>>,
    /// Guards that could not answer and let the text pass (`on_error: open`), with why.
    pub unchecked: Vec<(String, &'static str)>,
    /// Guards that could not answer and stopped the text (`on_error: closed`).
    pub unavailable: Vec<(String, &'static str)>,
}

impl Verdict {
    /// The strongest action (`Off`: pass).
    pub fn action(&self) -> Action {
        self.hits.iter().map(|h| h.action).max().unwrap_or(Action::Off)
    }

    /// The hit that decided a block.
    pub fn blocker(&self) -> Option<&Hit> {
        self.hits.iter().find(|h| h.action == Action::Block)
    }

    /// `pass`, `flag`, `redact`, `block`, or `unchecked` when nothing tripped but a guard could
    /// not answer.
    pub fn decision(&self) -> &'static str {
        match self.action() {
            Action::Off if !self.unchecked.is_empty() => "unchecked",
            Action::Off => "pass",
            action => action.name(),
        }
    }

    /// Adds `guard`'s reply; returns what it said on its own (`pass`, `flag`, `redact`, `block`,
    /// or `error` when it could not answer).
    pub fn add(&mut self, guard: &Guard, reply: Result<Reply, Trouble>) -> &'static str {
        let before = self.hits.len();
        if self.take(guard, reply) {
            return "error";
        }
        match self.hits.get(before..).unwrap_or_default().iter().map(|h| h.action).max() {
            Some(action) => action.name(),
            None => "pass",
        }
    }

    /// Adds a reply; `true` when the guard could not answer.
    fn take(&mut self, guard: &Guard, reply: Result<Reply, Trouble>) -> bool {
        let reply = match reply {
            Ok(reply) => reply,
            Err(trouble) => {
                let who = (guard.name.clone(), trouble.name());
                if guard.on_error == FailurePolicy::Open {
                    self.unchecked.push(who);
                } else {
                    self.unavailable.push(who);
                    self.hit(guard, UNAVAILABLE, Action::Block, None);
                }
                return true;
            }
        };
        match reply {
            // Scored into findings before they get here; unscored vectors decide nothing.
            Reply::Vectors(_) => return self.take(guard, Err(Trouble::Garbage)),
            Reply::Findings(findings) => {
                for finding in findings {
                    let rule = guard.rule(&finding.category);
                    let tripped = match (rule.threshold, finding.score) {
                        (Some(threshold), Some(score)) => score >= threshold,
                        _ => finding.flagged,
                    };
                    if tripped {
                        self.hit(guard, &finding.category, rule.action, None);
                    }
                }
            }
            Reply::Asked { action, categories, reason, texts } => {
                let asked = match action {
                    WebhookAction::Allow => return false,
                    WebhookAction::Flag => Action::Flag,
                    WebhookAction::Block => Action::Block,
                    WebhookAction::Redact => Action::Redact,
                };
                for category in &categories {
                    // A listed category's rule overrides what the webhook asked.
                    let action = guard.categories.get(category).map_or(asked, |r| r.action);
                    self.hit(guard, category, action, reason.clone());
                }
                let redacts = guard.kind == Kind::Webhook && self.replacement.is_none();
                if redacts && self.hits.iter().any(|h| h.guard == guard.name && h.action == Action::Redact) {
                    self.replacement = texts;
                }
            }
        }
        false
    }

    fn hit(&mut self, guard: &Guard, category: &str, action: Action, reason: Option<String>) {
        if action != Action::Off {
            self.hits.push(Hit { guard: guard.name.clone(), category: category.to_string(), action, reason });
        }
    }

    /// `guard:category` of every hit, for the `sluice.guard.flagged` fact.
    pub fn labels(&self) -> Vec<String> {
        self.hits.iter().map(|h| format!("{}:{}", h.guard, h.category)).collect()
    }

    /// What the client is told of a block: the guard and the category, never the text.
    pub fn message(&self) -> String {
        match self.blocker() {
            Some(hit) if hit.category == UNAVAILABLE => {
                format!("The guard `{}` could not check the request; it was not sent.", hit.guard)
            }
            Some(hit) => {
                let reason = hit.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                format!("The request was refused by the guard `{}` (category `{}`){reason}.", hit.guard, hit.category)
            }
            None => String::new(),
        }
    }

    /// Whether a block is only because guards could not answer (503, not 400).
    pub fn only_unavailable(&self) -> bool {
        self.blocker()
            .is_some_and(|_| self.hits.iter().filter(|h| h.action == Action::Block).all(|h| h.category == UNAVAILABLE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::service::Finding;

    fn guards(text: &str) -> Vec<Guard> {
        let config: Config = sluice_shared::config::parse_config(Some(text.as_bytes())).unwrap();
        config.guards
    }

    fn finding(category: &str, score: Option<f64>, flagged: bool) -> Finding {
        Finding { category: category.into(), score, flagged }
    }

    #[test]
    fn each_category_follows_its_rule() {
        let g = &guards(
            r#"{"guards": [{"name": "mod", "kind": "moderation", "cluster": "c", "authority": "a",
                "categories": {"violence": {"threshold": 0.8, "action": "block"}, "self-harm": {"threshold": 0.3, "action": "flag"},
                               "harassment": {"action": "off"}}, "default_action": "flag"}]}"#,
        )[0];
        let mut v = Verdict::default();
        v.add(
            g,
            Ok(Reply::Findings(vec![
                finding("violence", Some(0.79), true),
                finding("self-harm", Some(0.31), false),
                finding("harassment", Some(0.99), true),
                finding("hate", Some(0.6), true),
                finding("sexual", Some(0.6), false),
            ])),
        );
        assert_eq!(v.labels(), ["mod:self-harm", "mod:hate"]);
        assert_eq!((v.action(), v.decision()), (Action::Flag, "flag"));
        assert_eq!(v.add(g, Ok(Reply::Findings(vec![finding("violence", Some(0.8), false)]))), "block");
        assert_eq!((v.decision(), v.blocker().map(|h| h.category.as_str())), ("block", Some("violence")));
        assert!(v.message().contains("guard `mod` (category `violence`)"));
        assert!(!v.only_unavailable());
    }

    #[test]
    fn decisions_are_ranked() {
        let mut names = ["block", "pass", "redact", "unchecked", "flag"];
        names.sort_by_key(|d| rank(d));
        assert_eq!(names, ["pass", "unchecked", "flag", "redact", "block"]);
    }

    #[test]
    fn failures_follow_the_guards_policy() {
        let gs = guards(
            r#"{"guards": [{"name": "open", "kind": "moderation", "cluster": "c", "authority": "a", "on_error": "open"},
                           {"name": "closed", "kind": "moderation", "cluster": "c", "authority": "a"}]}"#,
        );
        let mut v = Verdict::default();
        assert_eq!(v.add(&gs[0], Err(Trouble::Timeout)), "error");
        assert_eq!((v.decision(), v.unchecked.clone()), ("unchecked", vec![("open".to_string(), "timeout")]));
        v.add(&gs[1], Err(Trouble::Garbage));
        assert_eq!(v.decision(), "block");
        assert!(v.only_unavailable());
        assert!(v.message().contains("could not check"));
    }

    #[test]
    fn webhooks_ask_and_rules_override() {
        let g = &guards(
            r#"{"guards": [{"name": "hook", "kind": "webhook", "cluster": "c", "authority": "a",
                "categories": {"mild": {"action": "flag"}}}]}"#,
        )[0];
        let asked = |action, categories: &[&str], texts: Option<Vec<String>>| {
            let mut v = Verdict::default();
            v.add(
                g,
                Ok(Reply::Asked {
                    action,
                    categories: categories.iter().map(|c| c.to_string()).collect(),
                    reason: Some("why".into()),
                    texts,
                }),
            );
            v
        };
        assert_eq!(asked(WebhookAction::Allow, &[], None).decision(), "pass");
        assert_eq!(asked(WebhookAction::Block, &["mild"], None).decision(), "flag");
        let blocked = asked(WebhookAction::Block, &["secrets"], None);
        assert!(blocked.message().ends_with("(category `secrets`): why."));
        let redacted = asked(WebhookAction::Redact, &["redacted"], Some(vec!["x".into()]));
        assert_eq!((redacted.decision(), redacted.replacement.clone()), ("redact", Some(vec!["x".to_string()])));
    }
}
