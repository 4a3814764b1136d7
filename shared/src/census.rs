//! A count of every host call, for measuring what a request costs Envoy.
//!
//! Built with the `census` feature (`python -m harness.host_cost --census` builds the bundle that
//! way), each host call made through [`crate::proxy`] also bumps an Envoy counter
//! `sluice_census.<call>` (the call and, for headers and properties, their name), so calls per
//! request are read from Envoy's stats next to its request count. Without the feature, [`count`]
//! is empty and the name is never built.

/// Counts one host call; `call` names it (only evaluated with the `census` feature).
#[inline(always)]
pub fn count(call: impl FnOnce() -> String) {
    #[cfg(feature = "census")]
    counted(&call());
    #[cfg(not(feature = "census"))]
    let _ = call;
}

#[cfg(feature = "census")]
fn counted(call: &str) {
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::MetricType;
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    }
    let clean: String = call.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        let id = match ids.get(&clean) {
            Some(id) => Some(*id),
            None => {
                let id = hostcalls::define_metric(MetricType::Counter, &format!("sluice_census.{clean}")).ok();
                if let Some(id) = id {
                    ids.insert(clean, id);
                }
                id
            }
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    });
}
