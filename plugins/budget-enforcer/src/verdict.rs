//! What a check's result means for the request: admit (maybe on a cheaper model), queue or
//! reject; the `x-ratelimit-*` headers; and what to charge once the answer is known.

use crate::config::{Action, Config, Kind};
use crate::ledger::Charge;
use crate::limits::{Counter, Estimate};

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Admit {
        /// A full `downgrade` limit asks for this model instead.
        downgrade_to: Option<String>,
        /// Limits past their `alert_at` share after this request.
        alerts: Vec<String>,
    },
    /// A full `queue` limit: ask again later (no `reject` limit is full).
    Queue {
        limit: String,
        retry_after_ms: u64,
    },
    Reject {
        limit: String,
        retry_after_ms: u64,
    },
}

/// Judges a request from each counter's use before it (`used`, aligned with `counters`).
pub fn judge(config: &Config, counters: &[Counter], used: &[i64], now_ms: u64) -> Verdict {
    let full: Vec<&Counter> = counters.iter().zip(used).filter(|(c, u)| !c.has_room(**u)).map(|(c, _)| c).collect();
    let name = |c: &Counter| config.limits.get(c.limit).map(|l| l.name.clone()).unwrap_or_default();
    // A rejecting limit wins over a queueing one; the answer names the one that resets last.
    for action in [Action::Reject, Action::Queue] {
        let blocking = full.iter().filter(|c| c.action == action).max_by_key(|c| c.span.end_ms);
        if let Some(counter) = blocking {
            let limit = name(counter);
            let retry_after_ms = counter.span.remaining_ms(now_ms);
            return match action {
                Action::Queue => Verdict::Queue { limit, retry_after_ms },
                _ => Verdict::Reject { limit, retry_after_ms },
            };
        }
    }
    let downgrade_to = full.iter().find_map(|c| config.limits.get(c.limit).and_then(|l| l.downgrade_to.clone()));
    let alerts = counters
        .iter()
        .zip(used)
        .filter(|(c, u)| c.has_room(**u))
        .filter_map(|(c, u)| {
            let limit = config.limits.get(c.limit)?;
            let threshold = limit.alert_at? * c.capacity as f64;
            (u.saturating_add(c.cost) as f64 >= threshold).then(|| limit.name.clone())
        })
        .collect();
    Verdict::Admit { downgrade_to, alerts }
}

/// The counters' standing after the request: OpenAI's `x-ratelimit-{limit,remaining,reset}-*`
/// for requests and tokens, and the same for USD; per kind, the counter with least room left.
pub fn rate_limit_headers(counters: &[Counter], used: &[i64], admitted: bool, now_ms: u64) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for kind in [Kind::Requests, Kind::Tokens, Kind::Usd] {
        let tightest = counters
            .iter()
            .zip(used)
            .filter(|(c, _)| c.kind == kind)
            .map(|(c, u)| {
                let after = if admitted && c.has_room(*u) { u.saturating_add(c.cost) } else { *u };
                (c, c.remaining(after))
            })
            .min_by_key(|(_, remaining)| *remaining);
        let Some((counter, remaining)) = tightest else { continue };
        let amount = |value: i64| match kind {
            Kind::Usd => format_usd(value),
            _ => value.to_string(),
        };
        let suffix = kind.name();
        headers.push((format!("x-ratelimit-limit-{suffix}"), amount(counter.capacity)));
        headers.push((format!("x-ratelimit-remaining-{suffix}"), amount(remaining)));
        headers.push((format!("x-ratelimit-reset-{suffix}"), format_duration(counter.span.remaining_ms(now_ms))));
    }
    headers
}

/// Micro-USD as dollars without trailing zeros (`12.5`, `0.000125`).
fn format_usd(micro: i64) -> String {
    let text = format!("{:.6}", micro as f64 / 1_000_000.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// OpenAI's reset format: `20ms`, `1s`, `6m0s`, `2h5m0s`, `3d4h0m0s`.
pub fn format_duration(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1_000);
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m{s}s"),
        _ => format!("{d}d{h}h{m}m{s}s"),
    }
}

/// What a finished request actually used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub tokens: u64,
    pub micro_usd: u64,
}

/// What was reserved per counter when the request was admitted, so the final charge is the
/// difference. A counter skipped at admission (a full downgrade limit) is never charged.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub counters: Vec<Counter>,
    /// Taken per counter (its cost, from Redis or from this worker's lease); `None`: skipped.
    pub reserved: Vec<Option<i64>>,
    pub estimate: Estimate,
    /// Admitted by this worker's own limiter while the bridge was down: nothing was taken from
    /// Redis, so the whole use is charged.
    pub local: bool,
}

impl Reservation {
    /// Admitted with room on every counter that had it (`used`: each counter's use before).
    pub fn new(counters: Vec<Counter>, used: &[i64], estimate: Estimate, local: bool) -> Self {
        let reserved = counters.iter().zip(used).map(|(c, u)| c.has_room(*u).then_some(c.cost)).collect();
        Reservation { counters, reserved, estimate, local }
    }

    /// The charges that settle the reservation against actual use.
    pub fn settle(&self, usage: Usage) -> Vec<Charge> {
        self.counters
            .iter()
            .zip(&self.reserved)
            .filter_map(|(counter, cost)| {
                let cost = (*cost)?;
                let actual = match counter.kind {
                    Kind::Requests => 1,
                    Kind::Tokens => i64::try_from(usage.tokens).unwrap_or(i64::MAX),
                    Kind::Usd => i64::try_from(usage.micro_usd).unwrap_or(i64::MAX),
                };
                let delta = if self.local { actual } else { actual.saturating_sub(cost) };
                Some(Charge { key: counter.key.clone(), delta, ttl_s: counter.ttl_s })
            })
            .filter(|charge| charge.delta != 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Attribution;
    use crate::config::{Limit, Match, Scope};
    use crate::keys::Identity;
    use crate::limits::{applicable, counters, Request};
    use sluice_shared::window::Window;

    const NOW: u64 = 1_795_428_930_250;

    fn limit(name: &str, kind: Kind, window: Window, value: f64, action: Action) -> Limit {
        Limit {
            name: name.into(),
            scope: Scope::Key,
            kind,
            window,
            limit: value,
            matches: Match::default(),
            alert_at: None,
            action,
            downgrade_to: (action == Action::Downgrade).then(|| "cheap".to_string()),
        }
    }

    fn setup(limits: Vec<Limit>) -> (Config, Vec<Counter>) {
        let config = Config { limits, ..Config::default() };
        let id = Identity { alias: "k".into(), ..Identity::default() };
        let found = applicable(&config, Request { identity: &id, model: "m", attribution: &Attribution::default() });
        let counters = counters(&config, &found, Estimate { tokens: 100, micro_usd: 1_000 }, NOW);
        (config, counters)
    }

    #[test]
    fn reject_wins_over_queue_and_names_the_limit() {
        let (config, c) = setup(vec![
            limit("q", Kind::Requests, Window::Second, 1.0, Action::Queue),
            limit("r", Kind::Requests, Window::Hour, 1.0, Action::Reject),
        ]);
        assert_eq!(judge(&config, &c, &[1, 1], NOW), Verdict::Reject { limit: "r".into(), retry_after_ms: 2_669_750 });
        assert_eq!(judge(&config, &c, &[1, 0], NOW), Verdict::Queue { limit: "q".into(), retry_after_ms: 750 });
        assert_eq!(judge(&config, &c, &[0, 0], NOW), Verdict::Admit { downgrade_to: None, alerts: vec![] });
    }

    #[test]
    fn downgrade_and_alerts() {
        let mut alerting = limit("tokens", Kind::Tokens, Window::Day, 1_000.0, Action::Reject);
        alerting.alert_at = Some(0.7);
        let (config, c) = setup(vec![limit("usd", Kind::Usd, Window::Month, 1.0, Action::Downgrade), alerting]);
        assert_eq!(
            judge(&config, &c, &[1_000_000, 600], NOW),
            Verdict::Admit { downgrade_to: Some("cheap".into()), alerts: vec!["tokens".into()] }
        );
        assert_eq!(judge(&config, &c, &[0, 599], NOW), Verdict::Admit { downgrade_to: None, alerts: vec![] });
        // A prompt bigger than what is left is refused even below the limit.
        assert!(matches!(judge(&config, &c, &[0, 901], NOW), Verdict::Reject { .. }));
    }

    #[test]
    fn headers_follow_openai() {
        let (_, c) = setup(vec![
            limit("a", Kind::Requests, Window::Minute, 10.0, Action::Reject),
            limit("b", Kind::Requests, Window::Hour, 100.0, Action::Reject),
            limit("usd", Kind::Usd, Window::Month, 12.5, Action::Reject),
        ]);
        let headers = rate_limit_headers(&c, &[9, 20, 250], true, NOW);
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-ratelimit-limit-requests"), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(get("x-ratelimit-reset-requests"), Some("30s"));
        assert_eq!(get("x-ratelimit-limit-usd"), Some("12.5"));
        assert_eq!(get("x-ratelimit-remaining-usd"), Some("12.49875"));
        assert_eq!(get("x-ratelimit-limit-tokens"), None);
        assert_eq!(format_duration(20), "20ms");
        assert_eq!(format_duration(360_000), "6m0s");
        assert_eq!(format_duration(7_500_000), "2h5m0s");
        assert_eq!(format_duration(8 * 86_400_000 + 1), "8d0h0m1s");
    }

    #[test]
    fn settlement_charges_the_difference() {
        let (config, c) = setup(vec![
            limit("r", Kind::Requests, Window::Hour, 10.0, Action::Reject),
            limit("t", Kind::Tokens, Window::Hour, 1_000.0, Action::Reject),
            limit("usd", Kind::Usd, Window::Month, 1.0, Action::Downgrade),
        ]);
        assert!(config.may_downgrade());
        let estimate = Estimate { tokens: 100, micro_usd: 1_000 };
        let deltas = |charges: Vec<Charge>| charges.iter().map(|ch| ch.delta).collect::<Vec<_>>();
        // The USD limit was full: downgraded, never charged.
        let reservation = Reservation::new(c.clone(), &[0, 0, 1_000_000], estimate, false);
        assert_eq!(deltas(reservation.settle(Usage { tokens: 130, micro_usd: 5 })), vec![30]);
        // A failed request is refunded its token reservation.
        assert_eq!(deltas(reservation.settle(Usage::default())), vec![-100]);
        // Admitted by the worker alone (bridge down): Redis took nothing, the whole use is charged.
        let local = Reservation::new(c, &[0, 0, 0], estimate, true);
        assert_eq!(deltas(local.settle(Usage { tokens: 130, micro_usd: 5 })), vec![1, 130, 5]);
    }
}
