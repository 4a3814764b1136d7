//! Room this worker holds on Redis counters. The check script can grant more than a request
//! needs (a lease, `scripts::CHECK`); later requests are admitted against what is left without a
//! callout. Every unit held here is already counted in Redis, so whatever the workers and
//! gateways do, the total admitted stays within the limit. Room not used within `idle_ms`, or
//! left when the window ends, goes back to Redis as a negative charge.

use std::collections::HashMap;

use crate::config::Lease as Settings;
use crate::ledger::Charge;
use crate::limits::Counter;

/// What this worker holds of one counter.
#[derive(Debug, Clone, PartialEq)]
struct Lease {
    /// Room held and not yet used.
    left: i64,
    /// This worker's view of the counter's use by everyone (Redis's value when last asked, plus
    /// what this worker took since, minus what it still holds): for headers and alerts.
    used: i64,
    ttl_s: u64,
    end_ms: u64,
    last_ms: u64,
}

#[derive(Debug, Default)]
pub struct Leases {
    held: HashMap<String, Lease>,
    /// Check calls out, by counter key: room may still come in for those counters.
    asking: HashMap<String, u32>,
}

/// How much room to ask for beyond `counter.cost`: at most `max_requests` times the cost (the
/// script also caps it at `share` of the room left).
pub fn wanted(counter: &Counter, settings: &Settings) -> i64 {
    if !settings.enabled() {
        return counter.cost;
    }
    counter.cost.saturating_mul(i64::from(settings.max_requests)).max(counter.cost)
}

impl Leases {
    /// The view of the counter's use when this worker holds room for one more request on it.
    pub fn covers(&self, counter: &Counter, now_ms: u64) -> Option<i64> {
        let lease = self.held.get(&counter.key)?;
        let fits = lease.end_ms > now_ms && lease.left > 0 && lease.left >= counter.cost;
        (fits && counter.has_room(lease.used)).then_some(lease.used)
    }

    /// Redis granted `granted` (the request's cost and maybe more) when the counter stood at
    /// `used_before`.
    pub fn grant(&mut self, counter: &Counter, used_before: i64, granted: i64, now_ms: u64) {
        if granted <= 0 {
            return;
        }
        let lease = self.held.entry(counter.key.clone()).or_insert(Lease {
            left: 0,
            used: 0,
            ttl_s: counter.ttl_s,
            end_ms: counter.span.end_ms,
            last_ms: now_ms,
        });
        // Redis's value includes what this worker still holds.
        lease.used = used_before.saturating_sub(lease.left).max(0);
        lease.left = lease.left.saturating_add(granted);
        lease.ttl_s = lease.ttl_s.max(counter.ttl_s);
        lease.last_ms = now_ms;
    }

    /// An admitted request uses its cost of the room held.
    pub fn take(&mut self, counter: &Counter, now_ms: u64) {
        if let Some(lease) = self.held.get_mut(&counter.key) {
            let cost = counter.cost.min(lease.left).max(0);
            lease.left -= cost;
            lease.used = lease.used.saturating_add(cost);
            lease.last_ms = now_ms;
        }
    }

    /// Settles a charge against the room held: spend beyond a reservation uses held room first,
    /// a refund adds to it. Returns what Redis still has to be told.
    pub fn absorb(&mut self, charge: Charge, now_ms: u64) -> Option<Charge> {
        let Some(lease) = self.held.get_mut(&charge.key).filter(|l| l.end_ms > now_ms) else {
            return (charge.delta != 0).then_some(charge);
        };
        // A refund is held whole; spend takes what is held.
        let taken = if charge.delta < 0 { charge.delta } else { charge.delta.min(lease.left.max(0)) };
        lease.left -= taken;
        lease.used = lease.used.saturating_add(taken).max(0);
        let delta = charge.delta - taken;
        (delta != 0).then_some(Charge { delta, ..charge })
    }

    /// Room to give back: idle for `idle_ms`, or its window over.
    pub fn expire(&mut self, now_ms: u64, idle_ms: u64) -> Vec<Charge> {
        let mut back = Vec::new();
        self.held.retain(|key, lease| {
            let keep = lease.end_ms > now_ms && now_ms.saturating_sub(lease.last_ms) < idle_ms;
            if !keep && lease.left > 0 {
                back.push(Charge { key: key.clone(), delta: -lease.left, ttl_s: lease.ttl_s });
            }
            keep
        });
        back
    }

    /// Everything held, to give back (the worker stops or is configured anew).
    pub fn release(&mut self) -> Vec<Charge> {
        self.expire(0, 0)
    }

    /// A check call for these counters is out.
    pub fn asking(&mut self, keys: &[&str]) {
        for key in keys {
            *self.asking.entry((*key).to_string()).or_insert(0) += 1;
        }
    }

    /// A check call for these counters is back (or lost).
    pub fn answered(&mut self, keys: &[&str]) {
        for key in keys {
            if let Some(count) = self.asking.get_mut(*key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.asking.remove(*key);
                }
            }
        }
    }

    /// Whether room may still come in for this counter (a check call for it is out).
    pub fn awaited(&self, key: &str) -> bool {
        self.asking.contains_key(key)
    }

    #[cfg(test)]
    fn left(&self, key: &str) -> i64 {
        self.held.get(key).map_or(0, |l| l.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, Kind};
    use sluice_shared::window::Window;

    fn counter(capacity: i64, cost: i64) -> Counter {
        Counter {
            limit: 0,
            key: "k".into(),
            subject: "s".into(),
            kind: Kind::Tokens,
            action: Action::Reject,
            capacity,
            cost,
            span: Window::Hour.span(0),
            ttl_s: 3_900,
        }
    }

    #[test]
    fn a_lease_admits_until_its_room_is_used() {
        let mut leases = Leases::default();
        let c = counter(1_000, 10);
        assert_eq!(leases.covers(&c, 1), None);
        // The request that asked takes its cost out of the grant; three more fit.
        leases.grant(&c, 0, 40, 1);
        leases.take(&c, 1);
        assert_eq!(leases.covers(&c, 2), Some(10));
        for _ in 0..3 {
            assert!(leases.covers(&c, 2).is_some());
            leases.take(&c, 2);
        }
        assert_eq!(leases.covers(&c, 2), None);
        assert_eq!(leases.left("k"), 0);
        // A bigger request than what is left is not covered.
        leases.grant(&c, 400, 15, 3);
        assert_eq!(leases.covers(&counter(1_000, 20), 3), None);
        assert_eq!(leases.covers(&c, 3), Some(400));
    }

    #[test]
    fn no_lease_past_its_window() {
        let mut leases = Leases::default();
        let c = counter(1_000, 10);
        leases.grant(&c, 0, 100, 1);
        assert_eq!(leases.covers(&c, c.span.end_ms), None);
        assert_eq!(leases.expire(c.span.end_ms, 60_000), vec![Charge { key: "k".into(), delta: -100, ttl_s: 3_900 }]);
        assert!(leases.release().is_empty());
    }

    #[test]
    fn settlements_use_held_room_first() {
        let mut leases = Leases::default();
        let c = counter(1_000, 10);
        leases.grant(&c, 0, 50, 1);
        leases.take(&c, 1);
        // 30 more than reserved: all of it from the 40 held.
        assert_eq!(leases.absorb(Charge { key: "k".into(), delta: 30, ttl_s: 1 }, 2), None);
        assert_eq!(leases.left("k"), 10);
        // 25 more: 10 held, 15 for Redis.
        assert_eq!(
            leases.absorb(Charge { key: "k".into(), delta: 25, ttl_s: 1 }, 2),
            Some(Charge { key: "k".into(), delta: 15, ttl_s: 1 })
        );
        // A refund is held again.
        assert_eq!(leases.absorb(Charge { key: "k".into(), delta: -10, ttl_s: 1 }, 2), None);
        assert_eq!(leases.left("k"), 10);
        // A counter without a lease goes to Redis as is.
        let other = Charge { key: "o".into(), delta: 5, ttl_s: 1 };
        assert_eq!(leases.absorb(other.clone(), 2), Some(other));
    }

    #[test]
    fn idle_room_goes_back() {
        let mut leases = Leases::default();
        let c = counter(1_000, 10);
        leases.grant(&c, 0, 50, 1_000);
        leases.take(&c, 1_500);
        assert!(leases.expire(3_000, 2_000).is_empty());
        assert_eq!(leases.expire(3_500, 2_000), vec![Charge { key: "k".into(), delta: -40, ttl_s: 3_900 }]);
        assert_eq!(leases.covers(&c, 3_500), None);
    }

    #[test]
    fn the_view_counts_others_through_redis() {
        let mut leases = Leases::default();
        let c = counter(100, 10);
        leases.grant(&c, 0, 20, 1);
        leases.take(&c, 1);
        // Asked again while holding 10: Redis stood at 70 (our 20 and 50 by others).
        leases.grant(&c, 70, 10, 2);
        assert_eq!(leases.covers(&c, 2), Some(60));
        leases.take(&c, 2);
        leases.take(&c, 2);
        // The view never passes the capacity: 60 + 20 taken = 80, and Redis holds 80 too.
        assert_eq!(leases.covers(&c, 2), None);
    }

    #[test]
    fn calls_out_are_counted_per_counter() {
        let mut leases = Leases::default();
        leases.asking(&["a", "b"]);
        leases.asking(&["a"]);
        leases.answered(&["a", "b"]);
        assert!(leases.awaited("a") && !leases.awaited("b"));
        leases.answered(&["a"]);
        assert!(!leases.awaited("a"));
    }

    #[test]
    fn wanted_is_a_multiple_of_the_cost() {
        let c = counter(1_000, 10);
        assert_eq!(wanted(&c, &Settings::default()), 1_000);
        assert_eq!(wanted(&c, &Settings { share: 0.0, ..Settings::default() }), 10);
        assert_eq!(wanted(&counter(1_000, i64::MAX), &Settings::default()), i64::MAX);
    }
}
