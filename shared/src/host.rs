//! The small interfaces plugin logic needs from its host. [`crate::proxy`] implements them with
//! proxy-wasm hostcalls; tests implement them with in-memory fakes.

/// Per-request properties (Envoy filter state), shared between modules of one request.
pub trait Properties {
    fn get_property(&self, path: &[&str]) -> Option<Vec<u8>>;
    fn set_property(&self, path: &[&str], value: &[u8]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Host metrics. Ids are stable per VM once defined.
pub trait MetricsHost {
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn record_metric(&self, id: u32, value: u64);
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// Data shared by every VM of a plugin on this host (all Envoy workers), with compare-and-swap.
pub trait SharedData {
    /// The value and its version (`None` when absent).
    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Stores `value` if the version is still `cas` (`None`: unconditionally). `false` when
    /// another VM wrote in between or the host refused.
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Tries of [`update_record`] before it gives up (other workers kept writing in between).
const CAS_ATTEMPTS: usize = 16;

/// Changes the JSON record under `key` in shared data by compare-and-swap, so no worker's
/// change is lost; an absent or unreadable record starts as `T::default()`. `change` returns
/// whether to write. `false` when it did not write (declined, contended, refused).
pub fn update_record<T>(host: &dyn SharedData, key: &str, mut change: impl FnMut(&mut T) -> bool) -> bool
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = host.get_shared(key);
        if cas.is_none() {
            // Created empty first: a write without a version is unconditional on the host.
            host.set_shared(key, b"{}", None);
            continue;
        }
        let mut record: T = bytes.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        if !change(&mut record) {
            return false;
        }
        let Ok(bytes) = serde_json::to_vec(&record) else { return false };
        if host.set_shared(key, &bytes, cas) {
            return true;
        }
    }
    false
}

#[cfg(any(test, feature = "fake-host"))]
pub mod fake {
    //! In-memory host for unit tests.
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct FakeHost {
        pub properties: RefCell<HashMap<String, Vec<u8>>>,
        pub names: RefCell<Vec<(MetricKind, String)>>,
        pub values: RefCell<HashMap<u32, i64>>,
        pub records: RefCell<Vec<(u32, u64)>>,
        pub now: Cell<u64>,
        pub shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    }

    impl FakeHost {
        /// Current value of a counter or gauge by full name.
        pub fn metric(&self, name: &str) -> Option<i64> {
            let names = self.names.borrow();
            let id = names.iter().position(|(_, n)| n == name)? as u32;
            Some(self.values.borrow().get(&id).copied().unwrap_or(0))
        }
        pub fn recorded(&self, name: &str) -> Vec<u64> {
            let names = self.names.borrow();
            let Some(id) = names.iter().position(|(_, n)| n == name) else { return Vec::new() };
            self.records.borrow().iter().filter(|(i, _)| *i == id as u32).map(|(_, v)| *v).collect()
        }
        pub fn property(&self, path: &str) -> Option<String> {
            self.properties.borrow().get(path).map(|v| String::from_utf8_lossy(v).into_owned())
        }
    }

    impl Properties for FakeHost {
        fn get_property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.properties.borrow().get(&path.join(".")).cloned()
        }
        fn set_property(&self, path: &[&str], value: &[u8]) {
            self.properties.borrow_mut().insert(path.join("."), value.to_vec());
        }
    }

    impl MetricsHost for FakeHost {
        fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
            let mut names = self.names.borrow_mut();
            if let Some(i) = names.iter().position(|(_, n)| n == name) {
                return Some(i as u32);
            }
            names.push((kind, name.to_string()));
            Some(names.len() as u32 - 1)
        }
        fn increment_metric(&self, id: u32, delta: i64) {
            *self.values.borrow_mut().entry(id).or_default() += delta;
        }
        fn record_metric(&self, id: u32, value: u64) {
            self.records.borrow_mut().push((id, value));
        }
    }

    impl SharedData for FakeHost {
        fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.shared.borrow().get(key) {
                Some((value, version)) => (Some(value.clone()), Some(*version)),
                None => (None, None),
            }
        }
        fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut shared = self.shared.borrow_mut();
            let current = shared.get(key).map(|(_, version)| *version);
            if cas.is_some() && cas != current {
                return false;
            }
            shared.insert(key.to_string(), (value.to_vec(), current.unwrap_or(0) + 1));
            true
        }
    }

    impl Clock for FakeHost {
        fn now_ms(&self) -> u64 {
            self.now.get()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[derive(serde::Serialize, serde::Deserialize, Default, Debug, PartialEq)]
    struct Count {
        n: u32,
    }

    #[test]
    fn records_are_created_changed_and_left_alone_when_declined() {
        let host = FakeHost::default();
        assert!(update_record(&host, "k", |c: &mut Count| {
            c.n += 1;
            true
        }));
        assert!(update_record(&host, "k", |c: &mut Count| {
            c.n += 1;
            true
        }));
        assert_eq!(host.get_shared("k").0, Some(br#"{"n":2}"#.to_vec()));
        assert!(!update_record(&host, "k", |c: &mut Count| {
            c.n = 99;
            false
        }));
        assert_eq!(host.get_shared("k").0, Some(br#"{"n":2}"#.to_vec()), "declined: not written");
        // An unreadable record starts again from the default.
        host.set_shared("k", b"not json", None);
        assert!(update_record(&host, "k", |c: &mut Count| {
            c.n += 1;
            true
        }));
        assert_eq!(host.get_shared("k").0, Some(br#"{"n":1}"#.to_vec()));
    }

    #[test]
    fn a_write_in_between_is_not_lost() {
        let host = FakeHost::default();
        let mut first = true;
        assert!(update_record(&host, "k", |c: &mut Count| {
            if first {
                first = false;
                // Another worker writes after this one read: this try's write must fail.
                host.set_shared("k", br#"{"n":10}"#, None);
            }
            c.n += 1;
            true
        }));
        assert_eq!(host.get_shared("k").0, Some(br#"{"n":11}"#.to_vec()));
    }
}
