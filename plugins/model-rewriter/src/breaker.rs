//! Latency breakers: a target whose recent answers are slow (the p95 of their duration, or of
//! their time to first byte, over `window_ms`) is skipped for `open_ms`; then one request
//! probes it, and its timing closes the breaker or opens it again. The samples and the state
//! live in the target's shared stats ([`crate::stats`]), so every worker sees the same breaker.

use crate::config::Breaker;
use crate::stats::{TargetStats, Timing};

/// Samples kept per target (the window may hold fewer).
const MAX_SAMPLES: usize = 64;

/// Whether a target may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// Past its open time with no probe out: this request may probe it.
    Probe,
    Open,
}

pub fn admission(stats: &TargetStats, breaker: &Breaker, now_ms: u64) -> Admission {
    if stats.open_until_ms == 0 {
        Admission::Closed
    } else if now_ms < stats.open_until_ms {
        Admission::Open
    } else if stats.probe_ms == 0 || now_ms.saturating_sub(stats.probe_ms) >= breaker.open_ms {
        // A probe that never answered (reset, timeout) does not hold the breaker forever.
        Admission::Probe
    } else {
        Admission::Open
    }
}

/// A breaker opening or closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

impl Transition {
    pub fn label(self) -> &'static str {
        match self {
            Transition::Opened => "open",
            Transition::Closed => "closed",
        }
    }
}

/// Claims the probe of a half-open breaker (in a compare-and-swap update).
pub fn claim_probe(stats: &mut TargetStats, now_ms: u64) {
    stats.probe_ms = now_ms;
}

/// Records an answer's timing; what it did to the breaker.
pub fn record(stats: &mut TargetStats, breaker: &Breaker, timing: Timing) -> Option<Transition> {
    let now = timing.at_ms;
    if stats.open_until_ms > 0 {
        if now < stats.open_until_ms || stats.probe_ms == 0 {
            // Answers of requests sent before it opened say nothing new.
            return None;
        }
        // The probe's answer decides.
        stats.probe_ms = 0;
        if slow(breaker, &[timing]) {
            stats.open_until_ms = now.saturating_add(breaker.open_ms);
            return Some(Transition::Opened);
        }
        stats.open_until_ms = 0;
        stats.recent.clear();
        return Some(Transition::Closed);
    }
    stats.recent.retain(|t| now.saturating_sub(t.at_ms) < breaker.window_ms);
    stats.recent.push(timing);
    if stats.recent.len() > MAX_SAMPLES {
        stats.recent.remove(0);
    }
    if stats.recent.len() >= breaker.min_samples && slow(breaker, &stats.recent) {
        stats.open_until_ms = now.saturating_add(breaker.open_ms);
        stats.recent.clear();
        return Some(Transition::Opened);
    }
    None
}

/// Whether the p95 of these timings exceeds a threshold.
fn slow(breaker: &Breaker, timings: &[Timing]) -> bool {
    let over = |threshold: Option<u64>, of: fn(&Timing) -> u64| {
        threshold.is_some_and(|limit| p95(timings.iter().map(of).collect()) > limit)
    };
    over(breaker.p95_latency_ms, |t| t.total_ms) || over(breaker.p95_ttft_ms, |t| t.ttft_ms)
}

/// The 95th percentile (nearest rank).
fn p95(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    let rank = (values.len() * 95).div_ceil(100);
    values.get(rank.saturating_sub(1)).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker {
            p95_latency_ms: Some(1_000),
            p95_ttft_ms: Some(300),
            window_ms: 10_000,
            min_samples: 5,
            open_ms: 5_000,
        }
    }

    fn timing(at_ms: u64, total_ms: u64, ttft_ms: u64) -> Timing {
        Timing { at_ms, total_ms, ttft_ms }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(p95((1..=100).collect()), 95);
        assert_eq!(p95((1..=20).collect()), 19);
        assert_eq!(p95(vec![7]), 7);
        assert_eq!(p95(vec![]), 0);
    }

    #[test]
    fn opens_on_a_slow_p95_once_there_are_enough_samples() {
        let b = breaker();
        let mut stats = TargetStats::default();
        for i in 0..4 {
            assert_eq!(record(&mut stats, &b, timing(i, 2_000, 50)), None, "too few samples");
        }
        assert_eq!(record(&mut stats, &b, timing(5, 2_000, 50)), Some(Transition::Opened));
        assert_eq!(admission(&stats, &b, 100), Admission::Open);
        // One slow answer in twenty stays under the p95.
        let mut stats = TargetStats::default();
        for i in 0..19 {
            assert_eq!(record(&mut stats, &b, timing(i, 100, 50)), None);
        }
        assert_eq!(record(&mut stats, &b, timing(20, 9_000, 50)), None);
        // Time to first byte alone opens it too.
        let mut stats = TargetStats::default();
        let opened = (0..5).filter_map(|i| record(&mut stats, &b, timing(i, 400, 350))).collect::<Vec<_>>();
        assert_eq!(opened, [Transition::Opened]);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let b = breaker();
        let mut stats = TargetStats::default();
        for i in 0..4 {
            record(&mut stats, &b, timing(i, 2_000, 50));
        }
        assert_eq!(record(&mut stats, &b, timing(20_000, 2_000, 50)), None, "the first four are too old");
        assert_eq!(stats.recent.len(), 1);
    }

    #[test]
    fn a_probe_closes_or_reopens_it() {
        let b = breaker();
        let mut stats = TargetStats { open_until_ms: 5_000, ..TargetStats::default() };
        assert_eq!(admission(&stats, &b, 4_999), Admission::Open);
        assert_eq!(admission(&stats, &b, 5_000), Admission::Probe);
        // An answer of a request sent before it opened is ignored.
        assert_eq!(record(&mut stats, &b, timing(6_000, 90, 10)), None);
        claim_probe(&mut stats, 6_000);
        assert_eq!(admission(&stats, &b, 6_001), Admission::Open, "one probe at a time");
        assert_eq!(admission(&stats, &b, 11_000), Admission::Probe, "a lost probe is retried");
        assert_eq!(record(&mut stats, &b, timing(6_500, 2_000, 10)), Some(Transition::Opened));
        assert_eq!(stats.open_until_ms, 11_500);
        claim_probe(&mut stats, 11_600);
        assert_eq!(record(&mut stats, &b, timing(11_700, 90, 10)), Some(Transition::Closed));
        assert_eq!(admission(&stats, &b, 11_701), Admission::Closed);
        assert!(stats.recent.is_empty(), "a closed breaker starts counting afresh");
    }
}
