//! The per-worker limiter used while the bridge is down and the policy is to fail open: the same
//! rule as in Redis, on this worker's counters, with each limit scaled by `local_limit_share`.

use std::collections::HashMap;

use crate::limits::Counter;

/// Most counters a worker keeps; past it, ended windows are dropped.
const MAX_COUNTERS: usize = 10_000;

#[derive(Debug, Default)]
pub struct LocalLimiter {
    /// Use by counter key, with the end of its window.
    used: HashMap<String, (i64, u64)>,
}

impl LocalLimiter {
    /// Checks and, when admitted, charges the request's costs. Returns the admission and each
    /// counter's use before this request, scaled back to the full limit for headers and verdicts.
    pub fn check(&mut self, counters: &[Counter], share: f64, now_ms: u64) -> (bool, Vec<i64>) {
        if self.used.len() > MAX_COUNTERS {
            self.used.retain(|_, (_, end)| *end > now_ms);
        }
        let scaled: Vec<Counter> = counters
            .iter()
            .map(|c| Counter { capacity: (c.capacity as f64 * share).floor() as i64, ..c.clone() })
            .collect();
        let used: Vec<i64> = scaled.iter().map(|c| self.used.get(&c.key).map_or(0, |(u, _)| *u)).collect();
        let admitted = scaled.iter().zip(&used).all(|(c, u)| c.has_room(*u) || !c.blocks());
        if admitted {
            for (c, u) in scaled.iter().zip(&used) {
                if c.has_room(*u) {
                    let entry = self.used.entry(c.key.clone()).or_insert((0, c.span.end_ms));
                    entry.0 = entry.0.saturating_add(c.cost);
                }
            }
        }
        // Report use as a share of the full limit, so the verdict sees the scaled standing.
        let used = used
            .iter()
            .zip(counters.iter().zip(&scaled))
            .map(|(u, (full, local))| {
                if local.capacity <= 0 || !local.has_room(*u) {
                    full.capacity.max(1)
                } else {
                    ((*u as f64) / share).floor() as i64
                }
            })
            .collect();
        (admitted, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, Kind};
    use sluice_shared::window::Window;

    fn counter(capacity: i64, action: Action) -> Counter {
        Counter {
            limit: 0,
            key: format!("k{capacity}"),
            subject: "s".into(),
            kind: Kind::Requests,
            action,
            capacity,
            cost: 1,
            span: Window::Minute.span(0),
            ttl_s: 60,
        }
    }

    #[test]
    fn enforces_a_share_of_each_limit() {
        let mut local = LocalLimiter::default();
        let counters = [counter(10, Action::Reject)];
        let admitted = (0..10).filter(|_| local.check(&counters, 0.5, 0).0).count();
        assert_eq!(admitted, 5);
        let (ok, used) = local.check(&counters, 0.5, 0);
        assert!(!ok);
        assert!(!counters[0].has_room(used[0]), "the verdict sees the limit as full");
    }

    #[test]
    fn a_full_downgrade_limit_does_not_block() {
        let mut local = LocalLimiter::default();
        let counters = [counter(1, Action::Downgrade), counter(5, Action::Reject)];
        assert!(local.check(&counters, 1.0, 0).0);
        let (ok, used) = local.check(&counters, 1.0, 0);
        assert!(ok);
        assert!(!counters[0].has_room(used[0]));
    }
}
