//! Which limits apply to a request, the counters they use, and the rule that decides whether a
//! counter has room. The same rule runs in Redis (`scripts::CHECK`) and in the per-worker
//! fallback limiter, so both agree.

use sluice_shared::window::Span;

use crate::attribution::Attribution;
use crate::config::{Action, Config, Kind, Limit, Scope};
use crate::keys::Identity;

/// USD amounts are counted in millionths (Redis counters are integers).
pub const MICRO_USD: f64 = 1_000_000.0;

/// A counter is kept this long past its window, so late charges still land in it.
const TTL_GRACE_S: u64 = 300;

/// One limit's counter for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    /// Index in `config.limits`.
    pub limit: usize,
    /// Redis key: `<prefix>:limit:<name>:<scope>:<subject>:<window id>`.
    pub key: String,
    /// Whose counter it is (key alias, team, user, model, or `all`).
    pub subject: String,
    pub kind: Kind,
    pub action: Action,
    /// The limit in counter units (requests, tokens, micro-USD).
    pub capacity: i64,
    /// What admitting this request adds now (1 request, the prompt estimate, its cost).
    pub cost: i64,
    pub span: Span,
    pub ttl_s: u64,
}

impl Counter {
    /// The rule: a counter at or past its limit, or that this request would take past it,
    /// has no room.
    pub fn has_room(&self, used: i64) -> bool {
        used < self.capacity && used.saturating_add(self.cost) <= self.capacity
    }

    pub fn remaining(&self, used: i64) -> i64 {
        self.capacity.saturating_sub(used).max(0)
    }

    /// How much of the limit `used` is, in whole percent (a spent limit reads 100 or more).
    pub fn used_percent(&self, used: i64) -> u64 {
        if self.capacity <= 0 {
            return 100;
        }
        let percent = i128::from(used.max(0)) * 100 / i128::from(self.capacity);
        u64::try_from(percent).unwrap_or(u64::MAX)
    }

    /// Blocks the request when full (a full `downgrade` limit changes the model instead).
    pub fn blocks(&self) -> bool {
        self.action != Action::Downgrade
    }
}

/// What a request looks like to the limits.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub identity: &'a Identity,
    /// The requested model (empty when the request names none).
    pub model: &'a str,
    /// Its dimension values (`feature`, `project`, ...).
    pub attribution: &'a Attribution,
}

/// The limits that apply, with their subject, or `None` for a limit this request is outside of.
pub fn applicable<'c>(config: &'c Config, request: Request<'_>) -> Vec<(usize, &'c Limit, String)> {
    config
        .limits
        .iter()
        .enumerate()
        .filter(|(_, limit)| matches(limit, request))
        .filter_map(|(i, limit)| subject(&limit.scope, request).map(|subject| (i, limit, subject)))
        .collect()
}

/// Whether any applicable limit needs the prompt's size before the answer.
pub fn needs_estimate(limits: &[(usize, &Limit, String)]) -> bool {
    limits.iter().any(|(_, limit, _)| limit.kind != Kind::Requests)
}

fn matches(limit: &Limit, request: Request<'_>) -> bool {
    use sluice_shared::glob::listed;
    let m = &limit.matches;
    let id = request.identity;
    (m.models.is_empty() || sluice_shared::glob::any(&m.models, request.model))
        && listed(&m.keys, Some(&id.alias))
        && listed(&m.teams, id.team.as_deref())
        && listed(&m.users, id.user.as_deref())
        && m.metadata.iter().all(|(k, v)| id.metadata.get(k) == Some(v))
        && m.dimensions
            .iter()
            .all(|(name, values)| request.attribution.get(name).is_some_and(|v| values.iter().any(|x| x == v)))
}

fn subject(scope: &Scope, request: Request<'_>) -> Option<String> {
    let id = request.identity;
    match scope {
        Scope::Key => Some(id.alias.clone()),
        Scope::Team => id.team.clone(),
        Scope::User => id.user.clone(),
        Scope::Model => Some(if request.model.is_empty() { "none".to_string() } else { request.model.to_string() }),
        Scope::Global => Some("all".to_string()),
        Scope::Dimension(name) => Some(request.attribution.get(name).unwrap_or("none").to_string()),
    }
}

/// The prompt's expected size, for token and USD limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    pub tokens: u64,
    pub micro_usd: u64,
}

/// The counters of the applicable limits for a request at `now_ms`.
pub fn counters(config: &Config, limits: &[(usize, &Limit, String)], estimate: Estimate, now_ms: u64) -> Vec<Counter> {
    limits
        .iter()
        .map(|(index, limit, subject)| {
            let span = limit.window.span(now_ms);
            let (capacity, cost) = match limit.kind {
                Kind::Requests => (limit.limit as i64, 1),
                Kind::Tokens => (limit.limit as i64, clamp(estimate.tokens)),
                Kind::Usd => ((limit.limit * MICRO_USD).round() as i64, clamp(estimate.micro_usd)),
            };
            Counter {
                limit: *index,
                key: format!(
                    "{}:limit:{}:{}:{}:{}",
                    config.key_prefix,
                    limit.name,
                    limit.scope.name(),
                    subject,
                    span.id
                ),
                subject: subject.clone(),
                kind: limit.kind,
                action: limit.action,
                capacity,
                cost,
                ttl_s: span.remaining_ms(now_ms).div_ceil(1000) + TTL_GRACE_S,
                span,
            }
        })
        .collect()
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Match;
    use sluice_shared::window::Window;
    use std::collections::BTreeMap;

    fn limit(name: &str, scope: Scope, kind: Kind, value: f64) -> Limit {
        Limit {
            name: name.into(),
            scope,
            kind,
            window: Window::Hour,
            limit: value,
            matches: Match::default(),
            alert_at: None,
            action: Action::Reject,
            downgrade_to: None,
        }
    }

    fn alice() -> Identity {
        Identity {
            alias: "alice-key".into(),
            team: Some("search".into()),
            user: Some("alice".into()),
            models: vec![],
            metadata: BTreeMap::from([("tier".to_string(), "quality".to_string())]),
        }
    }

    #[test]
    fn scopes_and_matches() {
        let mut quality = limit("quality", Scope::Key, Kind::Requests, 20.0);
        quality.matches.metadata.insert("tier".into(), "quality".into());
        let mut gpt4o = limit("gpt4o", Scope::Global, Kind::Usd, 50.0);
        gpt4o.matches.models = vec!["gpt-4o".into()];
        let mut other_team = limit("ops", Scope::Team, Kind::Requests, 1.0);
        other_team.matches.teams = vec!["ops".into()];
        let config = Config {
            limits: vec![
                limit("per-user", Scope::User, Kind::Requests, 100.0),
                quality,
                gpt4o,
                other_team,
                limit("per-model", Scope::Model, Kind::Tokens, 1000.0),
            ],
            ..Config::default()
        };
        let id = alice();
        let found =
            applicable(&config, Request { identity: &id, model: "gpt-4o", attribution: &Attribution::default() });
        let names: Vec<(&str, &str)> = found.iter().map(|(_, l, s)| (l.name.as_str(), s.as_str())).collect();
        assert_eq!(
            names,
            vec![("per-user", "alice"), ("quality", "alice-key"), ("gpt4o", "all"), ("per-model", "gpt-4o")]
        );
        assert!(needs_estimate(&found));
        let mini =
            applicable(&config, Request { identity: &id, model: "gpt-4o-mini", attribution: &Attribution::default() });
        assert!(!mini.iter().any(|(_, l, _)| l.name == "gpt4o"));
        // A key without a user is outside per-user limits.
        let anonymous = Identity { user: None, ..alice() };
        let found = applicable(
            &config,
            Request { identity: &anonymous, model: "gpt-4o", attribution: &Attribution::default() },
        );
        assert!(!found.iter().any(|(_, l, _)| l.name == "per-user"));
    }

    #[test]
    fn dimensions_are_scopes_and_match_conditions() {
        let dimensions = serde_json::from_str(
            r#"{"feature": {"header": "x-sluice-feature", "trusted": {"keys": ["alice-key"]}, "values": ["search", "chat"]}}"#,
        )
        .unwrap();
        let mut search_only = limit("search", Scope::Global, Kind::Requests, 5.0);
        search_only.matches.dimensions.insert("feature".into(), vec!["search".into()]);
        let config = Config {
            limits: vec![limit("per-feature", Scope::Dimension("feature".into()), Kind::Usd, 10.0), search_only],
            dimensions,
            ..Config::default()
        };
        let id = alice();
        let sent = BTreeMap::from([("feature".to_string(), "search".to_string())]);
        let search = crate::attribution::resolve(&config.dimensions, &id, &sent).unwrap();
        let found = applicable(&config, Request { identity: &id, model: "m", attribution: &search });
        let names: Vec<(&str, &str)> = found.iter().map(|(_, l, s)| (l.name.as_str(), s.as_str())).collect();
        assert_eq!(names, [("per-feature", "search"), ("search", "all")]);
        let c = counters(&config, &found, Estimate::default(), 1_795_428_930_250);
        assert!(c[0].key.starts_with("sluice:limit:per-feature:feature:search:"), "{}", c[0].key);
        // Without a value: its own `none` counter, and outside the `match`.
        let none = applicable(&config, Request { identity: &id, model: "m", attribution: &Attribution::default() });
        let names: Vec<(&str, &str)> = none.iter().map(|(_, l, s)| (l.name.as_str(), s.as_str())).collect();
        assert_eq!(names, [("per-feature", "none")]);
    }

    #[test]
    fn counters_and_the_rule() {
        let config = Config {
            limits: vec![limit("r", Scope::Key, Kind::Requests, 2.0), limit("usd", Scope::Key, Kind::Usd, 1.5)],
            ..Config::default()
        };
        let id = alice();
        let found = applicable(&config, Request { identity: &id, model: "m", attribution: &Attribution::default() });
        let now = 1_795_428_930_250;
        let c = counters(&config, &found, Estimate { tokens: 10, micro_usd: 400_000 }, now);
        assert_eq!(c[0].key, "sluice:limit:r:key:alice-key:498730");
        assert_eq!((c[0].capacity, c[0].cost), (2, 1));
        assert_eq!((c[1].capacity, c[1].cost), (1_500_000, 400_000));
        assert_eq!(c[0].ttl_s, 2670 + 300);
        assert!(c[0].has_room(1) && !c[0].has_room(2));
        assert!(c[1].has_room(1_100_000) && !c[1].has_room(1_100_001));
        assert_eq!(c[1].remaining(2_000_000), 0);
        assert_eq!((c[1].used_percent(1_050_000), c[1].used_percent(1_500_000), c[1].used_percent(-5)), (70, 100, 0));
        assert_eq!(Counter { capacity: 0, ..c[1].clone() }.used_percent(0), 100);
        // A zero-cost charge is still refused once the counter is full.
        let free = Counter { cost: 0, ..c[1].clone() };
        assert!(free.has_room(1_499_999) && !free.has_room(1_500_000));
    }
}
