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
