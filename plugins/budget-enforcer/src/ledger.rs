//! Spend not yet in Redis. Requests add charges here (never a callout from a request that may be
//! gone before its reply); the worker's root context sends them in batches. A batch that fails
//! goes to the host's shared data, where any worker retries it, so spend survives the bridge
//! being down and the worker that took it. Each batch has an id that Redis remembers, so a
//! retry after a lost reply is not applied twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_shared::backlog::{self, BacklogError};
use sluice_shared::host::SharedData;

/// Shared-data key of the backlog (one per plugin VM id, shared by its workers).
pub const BACKLOG_KEY: &str = "sluice.budget.backlog";
/// Most batches sent in one call.
const MAX_BATCHES_PER_CALL: usize = 64;
/// Longest pause between retries while the bridge is failing.
const MAX_BACKOFF_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub key: String,
    pub delta: i64,
    pub ttl_s: u64,
}

/// Use charged where a check's reply was lost: Redis may or may not have granted room. The
/// charge script takes off what the marker recorded as granted (nothing if it was never set),
/// then deletes the marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditional {
    pub marker: String,
    /// The actual use per counter of the check (0 to just give the grant back).
    pub charges: Vec<Charge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    pub charges: Vec<Charge>,
    /// Reservation markers of settled requests, deleted.
    #[serde(default)]
    pub forget: Vec<String>,
    #[serde(default)]
    pub conditional: Vec<Conditional>,
}

#[derive(Debug)]
pub struct Ledger {
    /// Summed deltas by counter key, with the longest TTL seen.
    pending: BTreeMap<String, (i64, u64)>,
    forget: Vec<String>,
    /// With the time before which they are not sent: a check that was cut off may still be
    /// on its way to Redis, and must run first.
    conditional: Vec<(u64, Conditional)>,
    in_flight: Option<Vec<Batch>>,
    /// Ids are `<worker tag>-<sequence>`; the tag is random per worker start.
    tag: String,
    sequence: u64,
    failures: u32,
    next_attempt_ms: u64,
}

impl Ledger {
    pub fn new(tag: String) -> Self {
        Ledger {
            pending: BTreeMap::new(),
            forget: Vec::new(),
            conditional: Vec::new(),
            in_flight: None,
            tag,
            sequence: 0,
            failures: 0,
            next_attempt_ms: 0,
        }
    }

    pub fn add(&mut self, charges: impl IntoIterator<Item = Charge>) {
        for charge in charges {
            if charge.delta == 0 {
                continue;
            }
            let entry = self.pending.entry(charge.key).or_insert((0, 0));
            entry.0 = entry.0.saturating_add(charge.delta);
            entry.1 = entry.1.max(charge.ttl_s);
        }
    }

    /// A check's reply came back: its marker is no longer needed.
    pub fn forget(&mut self, marker: String) {
        self.forget.push(marker);
    }

    /// A check's reply was lost: Redis settles by the marker, from `not_before_ms` on.
    pub fn unsure(&mut self, conditional: Conditional, not_before_ms: u64) {
        self.conditional.push((not_before_ms, conditional));
    }

    #[cfg(test)]
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.forget.is_empty() || !self.conditional.is_empty()
    }

    #[cfg(test)]
    pub fn is_sending(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Moves what is pending (and due) into a new batch.
    fn seal(&mut self, now_ms: u64) -> Option<Batch> {
        let (due, later) = std::mem::take(&mut self.conditional).into_iter().partition(|(at, _)| *at <= now_ms);
        self.conditional = later;
        let due: Vec<Conditional> = due.into_iter().map(|(_, c)| c).collect();
        if self.pending.is_empty() && self.forget.is_empty() && due.is_empty() {
            return None;
        }
        self.sequence += 1;
        let charges = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|(_, (delta, _))| *delta != 0)
            .map(|(key, (delta, ttl_s))| Charge { key, delta, ttl_s })
            .collect();
        Some(Batch {
            id: format!("{}-{}", self.tag, self.sequence),
            charges,
            forget: std::mem::take(&mut self.forget),
            conditional: due,
        })
    }

    /// The batches to send now (this worker's pending spend and some of the shared backlog), or
    /// nothing when a call is out, there is nothing to send, or the bridge is in back-off.
    pub fn next_call(&mut self, host: &dyn SharedData, now_ms: u64) -> Result<Option<Vec<Batch>>, BacklogError> {
        if self.in_flight.is_some() || now_ms < self.next_attempt_ms {
            return Ok(None);
        }
        let mut batches = backlog::take::<Batch>(host, BACKLOG_KEY, MAX_BATCHES_PER_CALL)?;
        batches.extend(self.seal(now_ms));
        if batches.is_empty() {
            return Ok(None);
        }
        self.in_flight = Some(batches.clone());
        Ok(Some(batches))
    }

    /// The call was applied.
    pub fn sent(&mut self) {
        self.in_flight = None;
        self.failures = 0;
        self.next_attempt_ms = 0;
    }

    /// The call failed (or its reply was lost): its batches go to the shared backlog, and this
    /// worker waits before trying again (exponential, up to 5 s).
    pub fn failed(&mut self, host: &dyn SharedData, now_ms: u64, interval_ms: u64) -> Result<usize, BacklogError> {
        self.failures = self.failures.saturating_add(1);
        let backoff = interval_ms.saturating_mul(1 << self.failures.min(8)).min(MAX_BACKOFF_MS);
        self.next_attempt_ms = now_ms.saturating_add(backoff);
        let batches = self.in_flight.take().unwrap_or_default();
        self.park(host, batches)
    }

    /// Sends everything not yet in Redis to the shared backlog (the worker is stopping).
    pub fn park_all(&mut self, host: &dyn SharedData) -> Result<usize, BacklogError> {
        let mut batches = self.in_flight.take().unwrap_or_default();
        batches.extend(self.seal(u64::MAX));
        self.park(host, batches)
    }

    fn park(&mut self, host: &dyn SharedData, batches: Vec<Batch>) -> Result<usize, BacklogError> {
        match backlog::push(host, BACKLOG_KEY, batches.clone()) {
            Ok(waiting) => Ok(waiting),
            Err(e) => {
                // Not lost: kept here and offered again with the next call. (Only a batch that
                // was never applied reaches here: a sent batch that fails is parked first.)
                for batch in batches {
                    self.add(batch.charges);
                    self.forget.extend(batch.forget);
                    self.conditional.extend(batch.conditional.into_iter().map(|c| (0, c)));
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::host::fake::FakeHost;

    fn charge(key: &str, delta: i64) -> Charge {
        Charge { key: key.into(), delta, ttl_s: 60 }
    }

    #[test]
    fn pending_charges_are_summed_into_one_batch() {
        let host = FakeHost::default();
        let mut ledger = Ledger::new("w".into());
        assert_eq!(ledger.next_call(&host, 0), Ok(None));
        ledger.add([charge("a", 5), charge("b", 1), charge("a", -2), charge("c", 0)]);
        let batches = ledger.next_call(&host, 0).unwrap().unwrap();
        assert_eq!(
            batches,
            vec![Batch {
                id: "w-1".into(),
                charges: vec![charge("a", 3), charge("b", 1)],
                forget: vec![],
                conditional: vec![]
            }]
        );
        // One call at a time.
        ledger.add([charge("a", 1)]);
        assert_eq!(ledger.next_call(&host, 0), Ok(None));
        ledger.sent();
        assert_eq!(ledger.next_call(&host, 0).unwrap().unwrap()[0].id, "w-2");
    }

    #[test]
    fn failed_batches_wait_in_shared_data_for_any_worker() {
        let host = FakeHost::default();
        let mut first = Ledger::new("w1".into());
        first.add([charge("a", 5)]);
        let sent = first.next_call(&host, 0).unwrap().unwrap();
        assert_eq!(first.failed(&host, 0, 100), Ok(1));
        // Back-off: the failing worker does not retry at once...
        first.add([charge("a", 1)]);
        assert_eq!(first.next_call(&host, 100), Ok(None));
        // ...but another worker picks the backlog up, with the original batch id.
        let mut second = Ledger::new("w2".into());
        second.add([charge("b", 2)]);
        let batches = second.next_call(&host, 100).unwrap().unwrap();
        assert_eq!(batches[0], sent[0]);
        assert_eq!(batches[1].id, "w2-1");
        second.sent();
        assert_eq!(backlog::len(&host, BACKLOG_KEY), 0);
        assert!(first.next_call(&host, 200).unwrap().is_some());
    }

    #[test]
    fn batches_carry_markers_and_conditionals() {
        let host = FakeHost::default();
        let mut ledger = Ledger::new("w".into());
        ledger.add([charge("a", 2)]);
        ledger.forget("m1".into());
        let unsure = Conditional { marker: "m2".into(), charges: vec![charge("a", 9)] };
        ledger.unsure(unsure.clone(), 0);
        let later = Conditional { marker: "m3".into(), charges: vec![] };
        ledger.unsure(later.clone(), 500);
        let batch = ledger.next_call(&host, 0).unwrap().unwrap().remove(0);
        assert_eq!(
            (batch.charges, batch.forget, batch.conditional),
            (vec![charge("a", 2)], vec!["m1".into()], vec![unsure])
        );
        // A conditional waits its time: the check it settles may still be on its way.
        ledger.sent();
        assert!(ledger.has_pending());
        assert_eq!(ledger.next_call(&host, 499), Ok(None));
        assert_eq!(ledger.next_call(&host, 500).unwrap().unwrap()[0].conditional, vec![later]);
        ledger.sent();
        assert!(!ledger.has_pending());
    }

    #[test]
    fn stopping_parks_everything() {
        let host = FakeHost::default();
        let mut ledger = Ledger::new("w".into());
        ledger.add([charge("a", 5)]);
        let _ = ledger.next_call(&host, 0);
        ledger.add([charge("b", 1)]);
        assert_eq!(ledger.park_all(&host), Ok(2));
        assert!(!ledger.has_pending() && !ledger.is_sending());
    }
}
