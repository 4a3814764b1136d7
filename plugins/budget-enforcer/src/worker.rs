//! The worker's root context: configuration (into [`crate::state`]), and a tick that sends spend
//! to Redis and re-checks queued requests.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::HttpContext;
use sluice_shared::callout::CalloutResponse;
use sluice_shared::host::Clock;
use sluice_shared::metrics::{self, MetricRegistry};
use sluice_shared::plugin::{self, Module};
use sluice_shared::proxy::{self, Host};
use sluice_shared::redis::as_args;

use crate::config::Config;
use crate::gate::{self, Filter, Request};
use crate::keys::KeyRing;
use crate::local::LocalLimiter;
use crate::report;
use crate::scripts;
use crate::state::{Settings, Waiter, NAME};

/// This worker's state, with its requests.
type State = crate::state::State<Request>;

/// The enforcer's per-worker side.
pub struct BudgetEnforcer {
    context_id: u32,
    settings: Rc<Settings>,
    state: Rc<RefCell<State>>,
}

impl BudgetEnforcer {
    /// Sends pending spend and the shared backlog, one call at a time.
    fn flush(&mut self) {
        let now = Host.now_ms();
        let next = self.state.borrow_mut().ledger.next_call(&Host, now);
        let batches = match next {
            Ok(Some(batches)) => batches,
            Ok(None) => return,
            Err(e) => {
                log::warn!("{NAME}: charge backlog unavailable: {e:?}");
                return;
            }
        };
        let config = &self.settings.config;
        let cached = self.state.borrow().charge_cached;
        let args = scripts::charge_args(&config.key_prefix, &batches);
        let command = self.settings.scripts.charge.call(cached, &[] as &[&str], &args);
        let call = config.redis.command(&as_args(&command)).timeout(Duration::from_millis(config.charge_timeout_ms));
        match proxy::dispatch(&call) {
            Ok(token) => self.state.borrow_mut().charge_token = Some(token),
            Err(e) => self.charge_failed(&format!("charge not sent: {e:?}")),
        }
    }

    fn on_charge_reply(&mut self, response: &CalloutResponse) {
        self.state.borrow_mut().charge_token = None;
        match self.settings.config.redis.reply(response) {
            Ok(_) => {
                let mut state = self.state.borrow_mut();
                state.charge_cached = true;
                state.ledger.sent();
                // The backlog shrank (to zero once drained): the gauge follows, so an alert on
                // it resolves.
                let waiting = sluice_shared::backlog::len(&Host, crate::ledger::BACKLOG_KEY);
                state.registry.set_gauge(&Host, metrics::BUDGET_BACKLOG_BATCHES, &[], waiting as u64);
            }
            Err(e) if e.is_noscript() => {
                // Not applied: send the same batches again with the script's source.
                let mut state = self.state.borrow_mut();
                state.charge_cached = false;
                let _ = state.ledger.failed(&Host, 0, 0);
            }
            Err(e) => self.charge_failed(&e.to_string()),
        }
    }

    fn charge_failed(&mut self, why: &str) {
        let interval = self.settings.config.flush_interval_ms;
        let mut state = self.state.borrow_mut();
        let State { ledger, registry, .. } = &mut *state;
        report::bridge_error(&Host, registry, "charge");
        match ledger.failed(&Host, Host.now_ms(), interval) {
            Ok(waiting) => {
                registry.set_gauge(&Host, metrics::BUDGET_BACKLOG_BATCHES, &[], waiting as u64);
                log::warn!("{NAME}: {why}; {waiting} charge batches wait for the bridge");
            }
            Err(e) => log::warn!("{NAME}: {why}; charges kept on this worker ({e:?})"),
        }
    }

    /// Re-checks queued requests whose turn came; refuses those past their deadline.
    fn serve_queue(&mut self) {
        let now = Host.now_ms();
        let due: Vec<Waiter<Request>> = {
            let mut state = self.state.borrow_mut();
            let (due, waiting) = std::mem::take(&mut state.waiters).into_iter().partition(|w| w.next_try_ms <= now);
            state.waiters = waiting;
            due
        };
        for waiter in due {
            let deadline = waiter.request.borrow().deadline_ms();
            match deadline {
                None => continue,
                Some(deadline) if deadline <= now => {
                    let context_id = waiter.request.borrow().context_id();
                    if proxy::switch_context(context_id) {
                        waiter.request.borrow_mut().give_up_waiting();
                    }
                }
                Some(_) => {
                    let call = waiter.request.borrow_mut().recheck_callout();
                    match proxy::dispatch(&call) {
                        Ok(token) => {
                            self.state.borrow_mut().rechecks.insert(token, waiter.request);
                        }
                        // Tried again at the next tick.
                        Err(_) => self.state.borrow_mut().waiters.push(waiter),
                    }
                }
            }
        }
        let _ = proxy::switch_context(self.context_id);
    }

    fn on_recheck_reply(&mut self, request: Rc<RefCell<Request>>, response: &CalloutResponse) {
        let context_id = request.borrow().context_id();
        if proxy::switch_context(context_id) {
            request.borrow_mut().on_recheck_reply(response);
        } else {
            // The client left while its re-check was out: Redis gives back what it reserved.
            let request = request.borrow();
            gate::refund(&mut self.state.borrow_mut(), request.counters(), request.marker());
        }
        let _ = proxy::switch_context(self.context_id);
    }
}

impl Module for BudgetEnforcer {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(context_id: u32) -> Self {
        let config = Config::default();
        BudgetEnforcer {
            context_id,
            state: Rc::new(RefCell::new(State::new(&config))),
            settings: Rc::new(Settings::new(config, false)),
        }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        for encoding in &config.preload_encodings {
            encoding.preload();
        }
        log::info!(
            "{NAME}: configured; {} keys, {} limits, bridge `{}`, failure policy {:?}",
            config.keys.len(),
            config.limits.len(),
            config.redis.cluster,
            config.on_bridge_failure
        );
        // The state stays the same object (requests in flight hold it; pending spend is kept).
        {
            let mut state = self.state.borrow_mut();
            state.keys = KeyRing::new(&config.keys, &config.redis_keys);
            state.registry = MetricRegistry::new(config.max_label_values);
            state.local = LocalLimiter::default();
            // Limits may have changed: room held under the old ones goes back.
            let back = state.leases.release();
            state.ledger.add(back);
        }
        self.settings = Rc::new(Settings::new(config, proxy::debug_enabled()));
        Ok(())
    }

    fn filter(&self, context_id: u32) -> Box<dyn HttpContext> {
        let request = Request::new(context_id, Rc::clone(&self.settings), Rc::clone(&self.state));
        plugin::stream(Filter { request })
    }

    /// Spend goes to Redis, and queued requests are re-checked, on every tick.
    fn tick(&self) -> Option<Duration> {
        let config = &self.settings.config;
        Some(Duration::from_millis(config.flush_interval_ms.min(config.queue.poll_interval_ms)))
    }

    fn on_tick(&mut self) {
        {
            let mut state = self.state.borrow_mut();
            let back = state.leases.expire(Host.now_ms(), self.settings.config.lease.idle_ms);
            state.ledger.add(back);
        }
        if self.state.borrow().charge_token.is_none() {
            self.flush();
        }
        if !self.state.borrow().waiters.is_empty() {
            self.serve_queue();
        }
    }

    fn on_callout(&mut self, token: u32, response: &CalloutResponse) {
        if self.state.borrow().charge_token == Some(token) {
            self.on_charge_reply(response);
            return;
        }
        let recheck = self.state.borrow_mut().rechecks.remove(&token);
        if let Some(request) = recheck {
            self.on_recheck_reply(request, response);
        }
    }

    fn on_stop(&mut self) {
        // The worker is stopping: room it holds goes back, and what is not in Redis yet waits
        // in shared data.
        let mut state = self.state.borrow_mut();
        let back = state.leases.release();
        state.ledger.add(back);
        if let Err(e) = state.ledger.park_all(&Host) {
            log::error!("{NAME}: charges could not be saved at shutdown: {e:?}");
        }
    }
}
