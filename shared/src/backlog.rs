//! A queue in host shared data that every VM of a plugin can append to and drain: work that
//! must survive a failed callout (and the VM that made it) waits here until a VM can retry it.
//!
//! Items are stored as one JSON array under a key; every change is a compare-and-swap, retried
//! a bounded number of times when another VM wrote in between. A write without a version is
//! unconditional on the host, so an absent key is first created empty and then always updated
//! by compare-and-swap (two VMs creating it at once both write the same empty array).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::host::SharedData;

const CAS_ATTEMPTS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BacklogError {
    /// Other VMs kept writing; nothing was changed.
    Contended,
    /// The host refused the write or the stored value is unreadable.
    Host(String),
}

fn load<T: DeserializeOwned>(host: &dyn SharedData, key: &str) -> Result<(Vec<T>, Option<u32>), BacklogError> {
    let (bytes, cas) = host.get_shared(key);
    let items = match bytes.as_deref() {
        None | Some(b"") => Vec::new(),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| BacklogError::Host(format!("unreadable: {e}")))?,
    };
    Ok((items, cas))
}

fn store<T: Serialize>(host: &dyn SharedData, key: &str, items: &[T], cas: Option<u32>) -> Result<bool, BacklogError> {
    let bytes = serde_json::to_vec(items).map_err(|e| BacklogError::Host(e.to_string()))?;
    Ok(host.set_shared(key, &bytes, cas))
}

/// Appends `items`; returns how many items the backlog holds now.
pub fn push<T: Serialize + DeserializeOwned>(
    host: &dyn SharedData,
    key: &str,
    items: Vec<T>,
) -> Result<usize, BacklogError> {
    if items.is_empty() {
        return Ok(len(host, key));
    }
    let mut items = Some(items);
    for _ in 0..CAS_ATTEMPTS {
        let (mut stored, cas) = load::<T>(host, key)?;
        if cas.is_none() {
            host.set_shared(key, b"[]", None);
            continue;
        }
        let new = items.take().unwrap_or_default();
        let count = new.len();
        stored.extend(new);
        if store(host, key, &stored, cas)? {
            return Ok(stored.len());
        }
        let keep = stored.split_off(stored.len().saturating_sub(count));
        items = Some(keep);
    }
    Err(BacklogError::Contended)
}

/// Removes and returns up to `max` of the oldest items.
pub fn take<T: Serialize + DeserializeOwned>(
    host: &dyn SharedData,
    key: &str,
    max: usize,
) -> Result<Vec<T>, BacklogError> {
    for _ in 0..CAS_ATTEMPTS {
        let (mut stored, cas) = load::<T>(host, key)?;
        if stored.is_empty() || cas.is_none() {
            return Ok(stored);
        }
        let rest = stored.split_off(stored.len().min(max));
        if store(host, key, &rest, cas)? {
            return Ok(stored);
        }
    }
    Err(BacklogError::Contended)
}

/// How many items wait (0 when unreadable).
pub fn len(host: &dyn SharedData, key: &str) -> usize {
    load::<serde_json::Value>(host, key).map(|(items, _)| items.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn push_then_take_in_order() {
        let host = FakeHost::default();
        assert_eq!(take::<u32>(&host, "q", 10), Ok(vec![]));
        assert_eq!(push(&host, "q", vec![1u32, 2]), Ok(2));
        assert_eq!(push(&host, "q", vec![3u32]), Ok(3));
        assert_eq!(len(&host, "q"), 3);
        assert_eq!(take::<u32>(&host, "q", 2), Ok(vec![1, 2]));
        assert_eq!(take::<u32>(&host, "q", 2), Ok(vec![3]));
        assert_eq!(len(&host, "q"), 0);
    }

    /// A host where another VM writes between every read and write, a set number of times.
    struct Racing {
        inner: FakeHost,
        races: std::cell::Cell<usize>,
    }
    impl SharedData for Racing {
        fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get_shared(key)
        }
        fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            if self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                let (current, version) = self.inner.get_shared(key);
                let mut other: Vec<u32> =
                    current.map(|b| serde_json::from_slice(&b).unwrap_or_default()).unwrap_or_default();
                other.push(99);
                self.inner.set_shared(key, &serde_json::to_vec(&other).unwrap_or_default(), version);
            }
            self.inner.set_shared(key, value, cas)
        }
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let host = Racing { inner: FakeHost::default(), races: std::cell::Cell::new(3) };
        host.inner.set_shared("q", b"[]", None);
        assert_eq!(push(&host, "q", vec![1u32]), Ok(4));
        let mut all = take::<u32>(&host.inner, "q", 100).unwrap_or_default();
        all.sort_unstable();
        assert_eq!(all, vec![1, 99, 99, 99]);
    }

    #[test]
    fn endless_contention_is_reported_not_looped() {
        let host = Racing { inner: FakeHost::default(), races: std::cell::Cell::new(usize::MAX) };
        assert_eq!(push(&host, "q", vec![1u32]), Err(BacklogError::Contended));
    }

    #[test]
    fn garbage_is_an_error() {
        let host = FakeHost::default();
        host.set_shared("q", b"{not json", None);
        assert!(matches!(take::<u32>(&host, "q", 1), Err(BacklogError::Host(_))));
    }
}
