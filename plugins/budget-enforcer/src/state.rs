//! What every request of a worker shares: the read-only settings, and the mutable state (key
//! cache, ledger, local limiter, metrics, the queue of waiting requests). Generic over the
//! request type, so the gate and the worker both depend on it and not on each other.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;

use sluice_shared::host::Clock;
use sluice_shared::metrics::MetricRegistry;
use sluice_shared::pricing::PriceTable;
use sluice_shared::proxy::Host;

use crate::config::Config;
use crate::keys::KeyRing;
use crate::lease::Leases;
use crate::ledger::Ledger;
use crate::local::LocalLimiter;
use crate::scripts::Scripts;

pub const NAME: &str = "sluice.budget_enforcer";

/// Read-only per-worker settings.
pub struct Settings {
    pub config: Config,
    pub prices: PriceTable,
    pub scripts: Scripts,
    pub debug_logging: bool,
}

impl Settings {
    pub fn new(config: Config, debug_logging: bool) -> Self {
        Settings {
            prices: PriceTable::with_overrides(&config.prices),
            config,
            scripts: Scripts::default(),
            debug_logging,
        }
    }
}

/// A request waiting for room under a `queue` limit.
pub struct Waiter<R> {
    pub request: Rc<RefCell<R>>,
    pub next_try_ms: u64,
}

/// Mutable per-worker state. Borrowed only briefly, never across a call into a request.
pub struct State<R> {
    pub keys: KeyRing,
    pub ledger: Ledger,
    pub local: LocalLimiter,
    /// Room this worker holds on Redis counters.
    pub leases: Leases,
    /// Requests Redis found a limit full for while other checks of this worker were out: they
    /// wait for the room those may bring (so room this worker holds is used before anyone is
    /// refused).
    pub lease_waiters: Vec<Rc<RefCell<R>>>,
    pub registry: MetricRegistry,
    /// Redis has the check script cached (`EVALSHA` works).
    pub check_cached: bool,
    pub charge_cached: bool,
    pub waiters: Vec<Waiter<R>>,
    /// Re-checks in flight: callout token to the waiting request.
    pub rechecks: HashMap<u32, Rc<RefCell<R>>>,
    /// The charge call in flight.
    pub charge_token: Option<u32>,
    /// Names this worker's requests in reservation markers: `<tag>-<sequence>`.
    tag: String,
    requests: u64,
}

impl<R> State<R> {
    /// A name for a request, unique across workers and restarts.
    pub fn next_request_id(&mut self) -> String {
        self.requests += 1;
        format!("{}-r{}", self.tag, self.requests)
    }

    pub fn new(config: &Config) -> Self {
        // Random per worker start (WASI random), so batch ids never repeat across restarts.
        let tag = format!("{:016x}", RandomState::new().hash_one(Host.now_ms()));
        State {
            keys: KeyRing::new(&config.keys, &config.redis_keys),
            ledger: Ledger::new(tag.clone()),
            tag,
            requests: 0,
            local: LocalLimiter::default(),
            leases: Leases::default(),
            lease_waiters: Vec::new(),
            registry: MetricRegistry::new(config.max_label_values),
            check_cached: true,
            charge_cached: true,
            waiters: Vec::new(),
            rechecks: HashMap::new(),
            charge_token: None,
        }
    }
}
