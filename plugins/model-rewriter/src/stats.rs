//! What the strategies know about each target, shared by every worker through host shared data:
//! requests in flight, a moving average of time to first byte, tokens used in the current
//! minute, the last failure, and the latency breaker's samples and state ([`crate::breaker`]).
//! Every update is a compare-and-swap, retried a few times.

use serde::{Deserialize, Serialize};
use sluice_shared::host::SharedData;

use crate::config::Target;

/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;
const MINUTE_MS: u64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetStats {
    pub in_flight: i64,
    /// Moving average of time to the answer's headers (ms); `None` before the first sample.
    pub latency_ms: Option<f64>,
    /// Tokens used in the minute `minute` (epoch minutes).
    pub minute: u64,
    pub minute_tokens: u64,
    /// When the target last answered 429 or 5xx, or failed to answer (ms).
    pub last_failure_ms: u64,
    /// Recent answers' timings, for a latency breaker (newest last).
    pub recent: Vec<Timing>,
    /// The latency breaker: open until this time (ms); 0: closed.
    pub open_until_ms: u64,
    /// When one request was let through to probe a breaker past `open_until_ms` (ms).
    pub probe_ms: u64,
}

/// One answer's timings (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub at_ms: u64,
    /// Request start to the answer's end.
    pub total_ms: u64,
    /// Request start to the answer's first body byte.
    pub ttft_ms: u64,
}

impl TargetStats {
    /// Tokens used in the minute containing `now_ms`.
    pub fn tokens_this_minute(&self, now_ms: u64) -> u64 {
        if self.minute == now_ms / MINUTE_MS {
            self.minute_tokens
        } else {
            0
        }
    }

    /// Failed within `window_ms` before `now_ms`.
    pub fn failed_recently(&self, now_ms: u64, window_ms: u64) -> bool {
        self.last_failure_ms > 0 && now_ms.saturating_sub(self.last_failure_ms) < window_ms
    }
}

/// The shared-data key of a target's stats.
pub fn key(target: &Target) -> String {
    format!("sluice.route.stats.{}.{}", target.cluster, target.model)
}

pub fn read(host: &dyn SharedData, key: &str) -> TargetStats {
    host.get_shared(key).0.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// Applies `change` to a target's stats; `false` when other workers kept writing.
pub fn update(host: &dyn SharedData, key: &str, change: impl Fn(&mut TargetStats)) -> bool {
    sluice_shared::host::update_record(host, key, |stats: &mut TargetStats| {
        change(stats);
        true
    })
}

pub fn started(stats: &mut TargetStats) {
    stats.in_flight = stats.in_flight.saturating_add(1);
}

pub fn answered(stats: &mut TargetStats, latency_ms: u64, failed: bool, now_ms: u64) {
    let sample = latency_ms as f64;
    stats.latency_ms = Some(match stats.latency_ms {
        Some(average) => average + EWMA_ALPHA * (sample - average),
        None => sample,
    });
    if failed {
        stats.last_failure_ms = now_ms;
    }
}

pub fn finished(stats: &mut TargetStats, tokens: u64, now_ms: u64) {
    stats.in_flight = stats.in_flight.saturating_sub(1).max(0);
    let minute = now_ms / MINUTE_MS;
    if stats.minute != minute {
        stats.minute = minute;
        stats.minute_tokens = 0;
    }
    stats.minute_tokens = stats.minute_tokens.saturating_add(tokens);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::host::fake::FakeHost;

    #[test]
    fn a_request_through_its_life() {
        let host = FakeHost::default();
        assert!(update(&host, "t", started));
        assert!(update(&host, "t", started));
        assert_eq!(read(&host, "t").in_flight, 2);
        assert!(update(&host, "t", |s| answered(s, 100, false, 1_000)));
        assert!(update(&host, "t", |s| answered(s, 200, true, 2_000)));
        let stats = read(&host, "t");
        assert_eq!(stats.latency_ms, Some(130.0));
        assert!(stats.failed_recently(2_500, 1_000) && !stats.failed_recently(4_000, 1_000));
        assert!(update(&host, "t", |s| finished(s, 50, 61_000)));
        assert!(update(&host, "t", |s| finished(s, 25, 62_000)));
        assert!(update(&host, "t", |s| finished(s, 0, 62_000)));
        let stats = read(&host, "t");
        assert_eq!(stats.in_flight, 0, "never negative");
        assert_eq!(stats.tokens_this_minute(62_000), 75);
        assert_eq!(stats.tokens_this_minute(121_000), 0);
    }

    #[test]
    fn unreadable_stats_start_over() {
        let host = FakeHost::default();
        host.set_shared("t", b"garbage", None);
        assert_eq!(read(&host, "t"), TargetStats::default());
        assert!(update(&host, "t", started));
        assert_eq!(read(&host, "t").in_flight, 1);
    }
}
