//! One request's path through the enforcer (proxy-wasm glue over the plain-Rust modules):
//! key → path class (default deny: unknown paths 404 unless `passthrough`) → identity → model
//! check → limits checked against this worker's leases, or in Redis (which may grant a lease)
//! → admit, queue, downgrade or refuse; after the answer, the reservation is settled against
//! the actual usage.
//!
//! A request's state lives in an `Rc<RefCell<Request>>` so that the worker's root context can
//! finish a queued request (re-check it, then resume or refuse it) after switching to its
//! context. Hostcalls act on whichever context is current.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

use proxy_wasm::types::Action as Flow;
use sluice_shared::api::{clean_path, query_param, without_query_param, Api, Class};
use sluice_shared::callout::{Callout, CalloutResponse};
use sluice_shared::errors::ApiError;
use sluice_shared::facts;
use sluice_shared::host::Clock;
use sluice_shared::metrics::MetricRegistry;
use sluice_shared::plugin;
use sluice_shared::pricing::Price;
use sluice_shared::prompt;
use sluice_shared::proxy::{self, Host};
use sluice_shared::redis::{as_args, RedisError};

use crate::attribution::{self, Attribution};
use crate::config::Kind;
use crate::keys::{self, Digest, Identity, Lookup};
use crate::lease;
use crate::ledger::{Charge, Conditional};
use crate::limits::{self, Counter, Estimate};
use crate::report::{self, Refusal, Reported};
use crate::scripts;
use crate::state::{Settings, Waiter, NAME};
use crate::tokens;
use crate::verdict::{self, Reservation, Usage, Verdict};

/// The worker's state, with its requests.
type State = crate::state::State<Request>;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the whole body (model, prompt size).
    ReadingBody,
    /// Waiting for the key's record from Redis.
    LookingUpKey,
    /// Waiting for the limits check.
    Checking,
    /// Waiting for room under a `queue` limit, until the deadline (ms).
    Queued { deadline_ms: u64 },
    /// Sent upstream.
    Admitted,
    /// Answered locally (or let through untouched).
    Done,
}

pub struct Request {
    context_id: u32,
    me: Weak<RefCell<Request>>,
    settings: Rc<Settings>,
    state: Rc<RefCell<State>>,
    phase: Phase,
    /// The request is held (headers or body returned `Pause`) and needs a resume.
    paused: bool,
    digest: Option<Digest>,
    identity: Option<Rc<Identity>>,
    /// Dimension values the request's headers carry (trusted or not: decided with the key).
    sent_dimensions: BTreeMap<String, String>,
    attribution: Attribution,
    api: Option<Api>,
    /// The request's path (a Gemini call names its model there), its key parameter removed.
    path: String,
    /// The `passthrough` entry that admits a path outside the APIs.
    passthrough: Option<usize>,
    /// The body, kept until admission (prompt estimate, downgrade rewrite).
    body: Option<Vec<u8>>,
    body_size: usize,
    model: String,
    estimate: Estimate,
    counters: Vec<Counter>,
    /// Per counter: its room is asked of Redis (this worker's leases do not cover it).
    asked: Vec<bool>,
    /// Per counter: its use before this request (from Redis, or this worker's view).
    used: Vec<i64>,
    /// Per counter: this request's cost is already taken from the lease Redis just granted (so
    /// no request woken meanwhile can use it).
    taken: Vec<bool>,
    /// A check call is out from this request's context.
    calling: bool,
    /// Redis key (a hash of the room granted) the check sets when it reserves for this request.
    marker: String,
    reservation: Option<Reservation>,
    answer_headers: Vec<(String, String)>,
    status: Option<u16>,
    /// The `queue` limit a queued request waits for.
    waiting_for: String,
}

/// The request headers that may carry a client's key (Bearer, Anthropic's, Gemini's).
const KEY_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-goog-api-key"];

/// What a check's reply asks the caller to do next.
pub enum AfterCheck {
    /// Settled (admitted, queued or refused).
    Settled,
    /// Redis lost the script: send the check again (as `EVAL`).
    Resend,
}

impl Request {
    pub fn new(context_id: u32, settings: Rc<Settings>, state: Rc<RefCell<State>>) -> Rc<RefCell<Request>> {
        Rc::new_cyclic(|me| {
            RefCell::new(Request {
                context_id,
                me: me.clone(),
                settings,
                state,
                phase: Phase::ReadingBody,
                paused: false,
                digest: None,
                identity: None,
                sent_dimensions: BTreeMap::new(),
                attribution: Attribution::default(),
                api: None,
                path: String::new(),
                passthrough: None,
                body: None,
                body_size: 0,
                model: String::new(),
                estimate: Estimate::default(),
                counters: Vec::new(),
                asked: Vec::new(),
                used: Vec::new(),
                taken: Vec::new(),
                calling: false,
                marker: String::new(),
                reservation: None,
                answer_headers: Vec::new(),
                status: None,
                waiting_for: String::new(),
            })
        })
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        let mut path = proxy::request_header_text(":path").unwrap_or_default();
        let query_key = query_param(&path, "key").map(keys::query_value);
        let key = keys::presented_key(
            proxy::request_header("authorization").as_deref(),
            &[
                proxy::request_header("x-api-key").as_deref(),
                proxy::request_header("x-goog-api-key").as_deref(),
                query_key.as_deref(),
            ],
        );
        // The virtual key is ours: it never reaches the provider, nor (in the path) a log.
        for header in KEY_HEADERS {
            proxy::remove_request_header(header);
        }
        // A token Envoy's jwt_authn verified arrives as its payload (clients' own such headers
        // are removed at the edge); it names the identity in place of a key.
        let token = self.settings.config.jwt.as_ref().and_then(|jwt| {
            let payload = proxy::request_header_text(&jwt.payload_header);
            proxy::remove_request_header(&jwt.payload_header);
            payload.map(|p| tokens::identity(jwt, &p))
        });
        // Dimension headers are read now (whether they count is known with the key) and go
        // no further.
        for (dimension, header) in attribution::headers(&self.settings.config.dimensions) {
            if let Some(value) = proxy::request_header_text(header) {
                self.sent_dimensions.insert(dimension.to_string(), value);
            }
            proxy::remove_request_header(header);
        }
        if query_key.is_some() {
            path = without_query_param(&path, "key");
            proxy::set_request_path(&path);
        }
        // A verified token names the identity; otherwise the key does.
        let key = match (token, key) {
            (Some(Ok(identity)), _) => {
                self.identity = Some(Rc::new(identity));
                None
            }
            (Some(Err(why)), _) => {
                log::warn!("{NAME}: a verified token's claims could not be read: {why}");
                return self.refuse_invalid_token();
            }
            (None, Some(key)) => Some(key),
            (None, None) => {
                return self.refuse(
                    ApiError::unauthorized(
                        "You didn't provide an API key. Send it as `Authorization: Bearer <key>`, `x-api-key` or `x-goog-api-key`.",
                    )
                    .with_code("missing_api_key"),
                    Refusal::MissingKey,
                    None,
                );
            }
        };
        let method = proxy::request_header_text(":method").unwrap_or_default();
        let class = Class::of(&method, &path);
        if class == Class::Other {
            let rules = &self.settings.config.passthrough;
            self.passthrough = rules.iter().position(|p| p.rule.matches(&method, &path));
            if self.passthrough.is_none() {
                return self.refuse_path(&method, &path);
            }
        }
        self.api = class.api();
        self.path = path;
        if self.api.is_some() && end_of_stream {
            return self.refuse(
                ApiError::bad_request("The request has no body.").with_code("missing_body"),
                Refusal::BadRequest,
                None,
            );
        }
        if let Some(key) = key {
            if self.settings.config.jwt.is_some() && std::str::from_utf8(&key).is_ok_and(tokens::looks_like_jwt) {
                // Envoy's jwt_authn let it through unverified (expired, wrongly signed, ...).
                return self.refuse_invalid_token();
            }
            let digest = sluice_shared::digest::sha256(&key);
            let lookup = self.state.borrow().keys.lookup(&digest, Host.now_ms());
            match lookup {
                Lookup::Known(identity) => self.identity = Some(identity),
                Lookup::Unknown => return self.refuse_unknown_key(),
                Lookup::AskRedis => {}
            }
            self.digest = Some(digest);
        }
        // Only LLM API bodies are read (model, prompt size); anything else is checked now and
        // its body streams untouched once admitted.
        if end_of_stream || self.api.is_none() {
            return self.proceed();
        }
        if self.settings.config.may_downgrade() && self.api.is_some() {
            // Headers go upstream before the body is read: a body that may be rewritten
            // cannot keep its length.
            proxy::remove_request_header("content-length");
        }
        Flow::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        (self.phase == Phase::ReadingBody).then_some(self.settings.config.max_request_bytes)
    }

    /// A body the enforcer cannot read could hide its model and size: refused.
    fn on_body_too_large(&mut self, limit: usize) -> Flow {
        self.refuse(
            ApiError::payload_too_large(format!("The request body exceeds {limit} bytes.")),
            Refusal::BadRequest,
            None,
        )
    }

    fn on_request_body(&mut self, body: Vec<u8>, body_size: usize) -> Flow {
        self.body_size = body_size;
        if let (Some(api), true) = (self.api, body_size > 0) {
            match sluice_shared::json::unique_members(&body).and_then(|()| prompt::summarize(api, &self.path, &body)) {
                Ok(summary) => self.model = summary.model,
                Err(e) => {
                    // An unreadable body could hide its model from us and not from the
                    // provider (duplicate keys), so it is refused here.
                    return self.refuse(
                        ApiError::bad_request(format!("The request body is not valid JSON: {e}")),
                        Refusal::BadRequest,
                        None,
                    );
                }
            }
        }
        self.body = Some(body);
        self.proceed()
    }

    /// The request is complete: resolve the key if needed, then check it.
    fn proceed(&mut self) -> Flow {
        if self.identity.is_none() {
            let Some(digest) = self.digest else { return self.refuse_unknown_key() };
            let config = &self.settings.config;
            let record_key = keys::redis_key(&config.key_prefix, &digest);
            let command = [&b"GET"[..], record_key.as_bytes()];
            return match proxy::dispatch(&config.redis.command(&command)) {
                Ok(_) => self.hold(Phase::LookingUpKey),
                Err(e) => {
                    self.key_lookup_failed(&format!("not sent: {e:?}"));
                    if self.phase == Phase::Admitted {
                        Flow::Continue
                    } else {
                        Flow::Pause
                    }
                }
            };
        }
        self.check()
    }

    fn hold(&mut self, phase: Phase) -> Flow {
        self.phase = phase;
        self.paused = true;
        Flow::Pause
    }

    pub fn on_key_reply(&mut self, response: &CalloutResponse) {
        let Some(digest) = self.digest else { return };
        let settings = Rc::clone(&self.settings);
        let record = settings
            .config
            .redis
            .reply(response)
            .map_err(|e| e.to_string())
            .and_then(|value| keys::parse_record(value.as_text(), &digest));
        match record {
            Ok(identity) => {
                let known = self.state.borrow_mut().keys.remember(digest, identity, Host.now_ms());
                match known {
                    Some(identity) => {
                        self.identity = Some(identity);
                        let flow = self.check();
                        self.continue_if(flow);
                    }
                    None => {
                        self.refuse_unknown_key();
                    }
                }
            }
            Err(e) => self.key_lookup_failed(&e),
        }
    }

    /// Redis could not be asked about the key. Failing open, a key this worker knew recently
    /// keeps working; an unknown one cannot be let in either way.
    fn key_lookup_failed(&mut self, why: &str) {
        let stale = match (self.settings.config.on_bridge_failure, self.digest) {
            (crate::config::FailurePolicy::Open, Some(digest)) => self.state.borrow().keys.stale(&digest),
            _ => None,
        };
        match stale {
            Some(identity) => {
                report::bridge_error(&Host, &mut self.state.borrow_mut().registry, "key");
                self.identity = Some(identity);
                let flow = self.check();
                self.continue_if(flow);
            }
            None => {
                self.bridge_down(&format!("key lookup failed: {why}"), "key");
            }
        }
    }

    /// Model check, identity facts, then the limits.
    fn check(&mut self) -> Flow {
        let Some(identity) = self.identity.clone() else { return self.refuse_unknown_key() };
        let rules = &self.settings.config.passthrough;
        if let Some(rule) = self.passthrough.and_then(|i| rules.get(i)) {
            if !rule.admits(&identity.alias, identity.team.as_deref()) {
                let (method, path) = (
                    proxy::request_header_text(":method").unwrap_or_default(),
                    proxy::request_header_text(":path").unwrap_or_default(),
                );
                return self.refuse_path(&method, &path);
            }
        }
        if self.api.is_some() && !identity.may_use(&self.model) {
            let model = self.model.clone();
            return self.refuse(
                ApiError::forbidden(format!("The key `{}` may not use the model `{model}`.", identity.alias))
                    .with_code("model_not_allowed")
                    .with_param("model"),
                Refusal::ModelNotAllowed,
                None,
            );
        }
        match attribution::resolve(&self.settings.config.dimensions, &identity, &self.sent_dimensions) {
            Ok(found) => self.attribution = found,
            Err(refusal) => return self.refuse_attribution(&identity, refusal),
        }
        report::publish_identity(&Host, &identity);
        report::publish_attribution(&Host, &self.attribution);
        if !self.model.is_empty() {
            facts::publish_first(&Host, facts::REQUEST_MODEL, &self.model);
        }
        let settings = Rc::clone(&self.settings);
        let request = limits::Request { identity: &identity, model: &self.model, attribution: &self.attribution };
        let applicable = limits::applicable(&settings.config, request);
        let usd_limited = applicable.iter().any(|(_, limit, _)| limit.kind == Kind::Usd);
        if usd_limited && self.api.is_some_and(Api::is_billed) && self.price().is_none() {
            let model = self.model.clone();
            return self.refuse(
                ApiError::forbidden(format!(
                    "The model `{model}` has no price, and the key has a USD limit. The operator can add it to \
                     `prices` or set `unpriced.price`."
                ))
                .with_code("model_unpriced")
                .with_param("model"),
                Refusal::Unpriced,
                None,
            );
        }
        if applicable.is_empty() {
            return self.admit("admitted");
        }
        if limits::needs_estimate(&applicable) {
            self.estimate = self.estimate_prompt();
        }
        self.refresh_counters();
        self.admit_or_ask()
    }

    /// Decides here when this worker's leases cover every counter; asks Redis otherwise.
    fn admit_or_ask(&mut self) -> Flow {
        let now = Host.now_ms();
        let views: Vec<Option<i64>> = {
            let state = self.state.borrow();
            self.counters.iter().map(|c| state.leases.covers(c, now)).collect()
        };
        self.asked = views.iter().map(Option::is_none).collect();
        self.used = views.iter().map(|v| v.unwrap_or(0)).collect();
        self.taken = vec![false; self.counters.len()];
        if self.asked.contains(&true) {
            return self.send_check();
        }
        report::checked(&Host, &mut self.state.borrow_mut().registry, "lease");
        let used = self.used.clone();
        self.decide(&used, false)
    }

    /// The request model's price, or the configured default for unpriced models.
    fn price(&self) -> Option<&Price> {
        self.settings.prices.lookup(&self.model).or(self.settings.config.unpriced.price.as_ref())
    }

    /// What a finished answer is charged: the token counter's cost, or for a model it could
    /// not price the provider's default, the default, or the request model's price.
    fn charge(&self, reported: Reported, registry: &mut MetricRegistry) -> Usage {
        if reported.cost_usd.is_some() || reported.prompt.saturating_add(reported.completion) == 0 {
            return report::charged(reported, None);
        }
        let unpriced = &self.settings.config.unpriced;
        let provider = facts::read(&Host, facts::USAGE_PROVIDER);
        let (price, how) = match provider.as_deref().and_then(|p| unpriced.providers.get(p)) {
            Some(price) => (Some(price), "provider_price"),
            None => match (&unpriced.price, self.settings.prices.lookup(&self.model)) {
                (Some(price), _) => (Some(price), "default_price"),
                (None, Some(price)) => (Some(price), "request_model_price"),
                (None, None) => (None, "free"),
            },
        };
        report::unpriced(&Host, registry, how);
        report::charged(reported, price)
    }

    fn estimate_prompt(&self) -> Estimate {
        if self.api.is_some_and(|api| !api.is_billed()) {
            // Counting tokens costs nothing: nothing is reserved.
            return Estimate { tokens: 0, micro_usd: 0 };
        }
        let body = self.body.as_deref().unwrap_or_default();
        let tokens =
            match self.api.map(|api| prompt::estimate_prompt(api, body, self.settings.config.exact_count_bytes)) {
                Some(Ok(estimate)) => {
                    // Only a tokenizer count is worth sharing (the token counter reuses it).
                    if !estimate.extrapolated {
                        facts::publish(&Host, facts::PROMPT_ESTIMATE, &estimate.tokens.to_string());
                    }
                    estimate.tokens
                }
                // Not an API body we can read: about four bytes per token.
                _ => (body.len() as u64).div_ceil(4),
            };
        let input_price = self.price().map_or(0.0, |p| p.input);
        Estimate { tokens, micro_usd: (tokens as f64 * input_price).round() as u64 }
    }

    /// The request's counters in the current windows (recomputed for a queued request, which
    /// may wait into new ones).
    pub fn refresh_counters(&mut self) {
        let Some(identity) = self.identity.clone() else { return };
        let config = &self.settings.config;
        let request = limits::Request { identity: &identity, model: &self.model, attribution: &self.attribution };
        let applicable = limits::applicable(config, request);
        self.counters = limits::counters(config, &applicable, self.estimate, Host.now_ms());
    }

    /// The check callout for the counters asked of Redis; with `lease`, asking for more room
    /// than this request needs.
    pub fn check_callout(&mut self, lease: bool) -> Callout {
        if self.marker.is_empty() {
            let request_id = self.state.borrow_mut().next_request_id();
            self.marker = format!("{}:resv:{request_id}", self.settings.config.key_prefix);
        }
        let settings = &self.settings.config.lease;
        let share = if lease { settings.share } else { 0.0 };
        let asked: Vec<(&Counter, i64)> = self
            .counters
            .iter()
            .zip(&self.asked)
            .filter(|(_, asked)| **asked)
            .map(|(c, _)| (c, if lease { lease::wanted(c, settings) } else { c.cost }))
            .collect();
        let cached = self.state.borrow().check_cached;
        let (keys, args) = scripts::check_args(&asked, &self.marker, share);
        let command = self.settings.scripts.check.call(cached, &keys, &args);
        self.settings.config.redis.command(&as_args(&command))
    }

    /// A queued request is checked again in Redis (from the root context), counter by counter.
    pub fn recheck_callout(&mut self) -> Callout {
        self.refresh_counters();
        self.asked = vec![true; self.counters.len()];
        self.used = vec![0; self.counters.len()];
        self.taken = vec![false; self.counters.len()];
        self.check_callout(false)
    }

    fn asked_keys(&self) -> Vec<&str> {
        self.counters.iter().zip(&self.asked).filter(|(_, a)| **a).map(|(c, _)| c.key.as_str()).collect()
    }

    fn send_check(&mut self) -> Flow {
        let call = self.check_callout(true);
        match proxy::dispatch(&call) {
            Ok(_) => {
                let mut state = self.state.borrow_mut();
                state.leases.asking(&self.asked_keys());
                report::checked(&Host, &mut state.registry, "redis");
                drop(state);
                self.calling = true;
                self.hold(Phase::Checking)
            }
            Err(e) => self.bridge_failed(&format!("check not sent: {e:?}")),
        }
    }

    /// This request's check call is over (answered, lost or cut off): other requests stop
    /// waiting for the room it may have brought.
    fn call_over(&mut self) {
        if std::mem::take(&mut self.calling) {
            self.state.borrow_mut().leases.answered(&self.asked_keys());
        }
    }

    /// Redis may have granted room for a check whose reply never came: the charge script gives
    /// back what the marker recorded, once the check itself is sure to have run.
    fn give_back_unknown_grant(&mut self) {
        let asked = self.counters.iter().zip(&self.asked).filter(|(_, asked)| **asked).map(|(c, _)| c);
        let not_before = Host.now_ms().saturating_add(self.settings.config.redis.timeout_ms.max(1_000));
        self.state.borrow_mut().ledger.unsure(grant_back(&self.marker, asked), not_before);
    }

    /// Handles the check's reply (from this request's context, or the root's for a queued one),
    /// resuming the request when it is admitted.
    pub fn on_check_reply(&mut self, response: &CalloutResponse) -> AfterCheck {
        self.call_over();
        let settings = Rc::clone(&self.settings);
        let asked = self.asked.iter().filter(|a| **a).count();
        let parsed = settings.config.redis.reply(response).and_then(|value| {
            scripts::read_check(&value, asked)
                .ok_or_else(|| RedisError::Bridge(format!("unexpected check reply: {value:?}")))
        });
        match parsed {
            Ok(checked) => {
                self.take_grants(&checked);
                // Requests waiting for room try again before this one is judged (they asked
                // first; this one may still join them).
                wake_waiters(&self.state, self.context_id);
                let flow =
                    if checked.admitted || self.phase != Phase::Checking { self.judge() } else { self.wait_or_judge() };
                self.continue_if(flow);
                AfterCheck::Settled
            }
            Err(e) if e.is_noscript() => {
                self.state.borrow_mut().check_cached = false;
                wake_waiters(&self.state, self.context_id);
                AfterCheck::Resend
            }
            Err(e) => {
                self.give_back_unknown_grant();
                wake_waiters(&self.state, self.context_id);
                let flow = self.bridge_failed(&e.to_string());
                self.continue_if(flow);
                AfterCheck::Settled
            }
        }
    }

    /// Redis answered: its view of each counter, and the room it granted, which goes to this
    /// worker's leases.
    fn take_grants(&mut self, checked: &scripts::Checked) {
        let now = Host.now_ms();
        let leasing = self.settings.config.lease.enabled();
        {
            let mut state = self.state.borrow_mut();
            state.check_cached = true;
            if checked.admitted {
                state.ledger.forget(self.marker.clone());
            }
            let asked = self.counters.iter().enumerate().filter(|(i, _)| self.asked.get(*i) == Some(&true));
            for ((i, counter), (used, granted)) in asked.zip(checked.used.iter().zip(&checked.granted)) {
                if let Some(slot) = self.used.get_mut(i) {
                    *slot = *used;
                }
                if leasing {
                    state.leases.grant(counter, *used, *granted, now);
                    if checked.admitted && counter.has_room(*used) {
                        state.leases.take(counter, now);
                        if let Some(taken) = self.taken.get_mut(i) {
                            *taken = true;
                        }
                    }
                }
            }
        }
    }

    /// Room this request took from a fresh grant goes back to the lease (it is refused after all).
    fn give_back_taken(&mut self, now: u64) {
        let mut state = self.state.borrow_mut();
        for (counter, taken) in self.counters.iter().zip(std::mem::take(&mut self.taken)) {
            let refund = Charge { key: counter.key.clone(), delta: -counter.cost, ttl_s: counter.ttl_s };
            if let Some(rest) = taken.then(|| state.leases.absorb(refund, now)).flatten() {
                state.ledger.add([rest]);
            }
        }
    }

    fn judge(&mut self) -> Flow {
        let used = self.used.clone();
        self.decide(&used, false)
    }

    /// Redis found a limit full. Room this worker holds is used before anyone is refused: the
    /// request is admitted if leases now cover every counter, waits while checks that may
    /// bring room are out, and is judged on Redis's answer otherwise.
    fn wait_or_judge(&mut self) -> Flow {
        let now = Host.now_ms();
        let (views, awaited) = {
            let state = self.state.borrow();
            let views: Vec<Option<i64>> = self.counters.iter().map(|c| state.leases.covers(c, now)).collect();
            let awaited = self.counters.iter().zip(&views).any(|(c, v)| v.is_none() && state.leases.awaited(&c.key));
            (views, awaited)
        };
        if views.iter().all(Option::is_some) {
            self.asked = vec![false; self.counters.len()];
            self.used = views.into_iter().flatten().collect();
            return self.judge();
        }
        if awaited {
            if let Some(me) = self.me.upgrade() {
                self.state.borrow_mut().lease_waiters.push(me);
                return self.hold(Phase::Checking);
            }
        }
        self.judge()
    }

    /// Resends a check after `NOSCRIPT`, from this request's own context.
    fn resend_check(&mut self) {
        let flow = self.send_check();
        self.continue_if(flow);
    }

    /// Woken (in its own context) after another check of this worker came back.
    fn on_wake(&mut self) {
        if self.phase == Phase::Checking {
            let flow = self.wait_or_judge();
            self.continue_if(flow);
        }
    }

    /// The bridge failed on the check: the configured policy decides.
    fn bridge_failed(&mut self, why: &str) -> Flow {
        if self.settings.config.on_bridge_failure == crate::config::FailurePolicy::Closed {
            return self.bridge_down(why, "check");
        }
        let settings = Rc::clone(&self.settings);
        report::bridge_error(&Host, &mut self.state.borrow_mut().registry, "check");
        log::warn!("{NAME}: {why}; admitting on this worker's limits (on_bridge_failure: open)");
        let (_, used) =
            self.state.borrow_mut().local.check(&self.counters, settings.config.local_limit_share, Host.now_ms());
        self.decide(&used, true)
    }

    fn bridge_down(&mut self, why: &str, op: &str) -> Flow {
        log::warn!("{NAME}: {why}");
        report::bridge_error(&Host, &mut self.state.borrow_mut().registry, op);
        self.refuse(
            ApiError::unavailable("The budget service is unavailable; try again shortly.")
                .with_code("budget_unavailable"),
            Refusal::BridgeDown,
            None,
        )
    }

    /// Applies the verdict on the counters' use before this request.
    fn decide(&mut self, used: &[i64], local: bool) -> Flow {
        let now = Host.now_ms();
        let settings = Rc::clone(&self.settings);
        let config = &settings.config;
        let verdict = verdict::judge(config, &self.counters, used, now);
        let admitted = matches!(verdict, Verdict::Admit { .. });
        let headers = verdict::rate_limit_headers(&self.counters, used, admitted, now);
        let names = |i: usize| config.limits.get(i).map(|l| l.name.clone()).unwrap_or_default();
        let alerts = match &verdict {
            Verdict::Admit { alerts, .. } => alerts.as_slice(),
            _ => &[],
        };
        report::standing(&Host, &mut self.state.borrow_mut().registry, &names, &self.counters, used, alerts);
        match verdict {
            Verdict::Reject { limit, retry_after_ms } => {
                self.refuse_limit(limit, retry_after_ms, headers, Refusal::Limit)
            }
            Verdict::Queue { limit, retry_after_ms } => self.queue(limit, retry_after_ms, headers, now),
            Verdict::Admit { downgrade_to: Some(model), .. }
                if self.identity.as_ref().is_some_and(|identity| !identity.may_use(&model)) =>
            {
                // The cheaper model is outside the key's allow-list: the spent limit refuses.
                let spent = self.counters.iter().find(|c| {
                    config.limits.get(c.limit).and_then(|l| l.downgrade_to.as_deref()) == Some(model.as_str())
                });
                let name = spent.and_then(|c| config.limits.get(c.limit)).map(|l| l.name.clone()).unwrap_or_default();
                let retry_after_ms = spent.map_or(0, |c| c.span.remaining_ms(now));
                self.give_back_taken(now);
                self.refuse_limit(name, retry_after_ms, headers, Refusal::Limit)
            }
            Verdict::Admit { downgrade_to, alerts } => {
                let estimate = self.estimate;
                let counters = std::mem::take(&mut self.counters);
                if !local && settings.config.lease.enabled() {
                    let mut state = self.state.borrow_mut();
                    for ((counter, used), taken) in counters.iter().zip(used).zip(&self.taken) {
                        if counter.has_room(*used) && !taken {
                            state.leases.take(counter, now);
                        }
                    }
                }
                self.reservation = Some(Reservation::new(counters, used, estimate, local));
                if config.rate_limit_headers {
                    self.answer_headers.extend(headers);
                }
                if !alerts.is_empty() {
                    self.answer_headers.push(("x-sluice-budget-alert".into(), alerts.join(",")));
                }
                let decision = match (&downgrade_to, local, self.phase) {
                    (_, true, _) => "fail_open",
                    (Some(_), _, _) => "downgraded",
                    (None, _, Phase::Queued { .. }) => "queued",
                    _ => "admitted",
                };
                if let Some(model) = downgrade_to {
                    self.downgrade(&model);
                }
                self.admit(decision)
            }
        }
    }

    fn downgrade(&mut self, model: &str) {
        facts::publish(&Host, facts::ROUTE_DOWNGRADE, model);
        let Some(body) = self.body.as_deref() else { return };
        // Also drops a client's own chain member, as every model rewrite does.
        match sluice_shared::chain::with_route(body, model, &[]) {
            Some(new_body) if proxy::replace_request_body(self.body_size, &new_body) => {
                log::info!("{NAME}: downgraded `{}` to `{model}`", self.model);
            }
            _ => log::warn!("{NAME}: could not rewrite the model to `{model}`"),
        }
    }

    fn admit(&mut self, decision: &str) -> Flow {
        self.body = None;
        facts::publish(&Host, facts::BUDGET_DECISION, decision);
        report::decided(&Host, &mut self.state.borrow_mut().registry, decision);
        if self.settings.debug_logging {
            let alias = self.identity.as_ref().map_or("-", |i| i.alias.as_str());
            log::debug!("{NAME}: {decision} key={alias} model={}", self.model);
        }
        self.phase = Phase::Admitted;
        Flow::Continue
    }

    fn queue(&mut self, limit: String, retry_after_ms: u64, headers: Vec<(String, String)>, now: u64) -> Flow {
        let queue = &self.settings.config.queue;
        let deadline_ms = match self.phase {
            Phase::Queued { deadline_ms } => deadline_ms,
            _ => now.saturating_add(queue.max_wait_ms),
        };
        let next_try_ms = now.saturating_add(queue.poll_interval_ms.min(retry_after_ms));
        let full = self.state.borrow().waiters.len() >= queue.max_waiting;
        if next_try_ms > deadline_ms || full {
            let reason =
                if matches!(self.phase, Phase::Queued { .. }) { Refusal::QueueTimeout } else { Refusal::Limit };
            return self.refuse_limit(limit, retry_after_ms, headers, reason);
        }
        if !matches!(self.phase, Phase::Queued { .. }) {
            report::decided(&Host, &mut self.state.borrow_mut().registry, "waiting");
        }
        let Some(me) = self.me.upgrade() else { return Flow::Continue };
        self.waiting_for = limit;
        self.state.borrow_mut().waiters.push(Waiter { request: me, next_try_ms });
        self.hold(Phase::Queued { deadline_ms })
    }

    fn refuse_limit(
        &mut self,
        limit: String,
        retry_after_ms: u64,
        headers: Vec<(String, String)>,
        reason: Refusal,
    ) -> Flow {
        let message = match reason {
            Refusal::QueueTimeout => format!("Rate limit `{limit}` stayed reached while the request waited."),
            _ => format!("Rate limit `{limit}` reached."),
        };
        let mut error =
            ApiError::rate_limited(format!("{message} Retry in {}.", verdict::format_duration(retry_after_ms)))
                .with_code("rate_limit_exceeded")
                .with_header("retry-after", retry_after_ms.div_ceil(1000).to_string())
                .with_header("x-sluice-budget-limit", limit.clone());
        for (name, value) in headers {
            error = error.with_header(name, value);
        }
        self.refuse(error, reason, Some(&limit))
    }

    /// A dimension the key may not set, or a value that does not count (`unknown: refuse`).
    fn refuse_attribution(&mut self, identity: &Identity, refusal: attribution::Refusal) -> Flow {
        let error = match refusal {
            attribution::Refusal::Untrusted { dimension, header } => ApiError::forbidden(format!(
                "The key `{}` may not set the {dimension} (header `{header}`).",
                identity.alias
            ))
            .with_code("attribution_not_allowed"),
            attribution::Refusal::Unknown { dimension } => {
                ApiError::bad_request(format!("The request's {dimension} is not one this gateway counts."))
                    .with_code("unknown_attribution")
            }
        };
        self.refuse(error, Refusal::Attribution, None)
    }

    /// A JWT that did not verify, or whose verified claims name no identity.
    fn refuse_invalid_token(&mut self) -> Flow {
        self.refuse(
            ApiError::unauthorized(
                "The bearer token is not a valid JWT for this gateway (expired, wrongly signed, from another issuer \
                 or without the claims it needs).",
            )
            .with_code("invalid_token"),
            Refusal::UnknownKey,
            None,
        )
    }

    fn refuse_unknown_key(&mut self) -> Flow {
        self.refuse(
            ApiError::unauthorized("Incorrect API key provided.").with_code("invalid_api_key"),
            Refusal::UnknownKey,
            None,
        )
    }

    /// Default deny: a method and path the chain neither reads nor lets through for this key.
    fn refuse_path(&mut self, method: &str, path: &str) -> Flow {
        // The query is never echoed: clients put keys there.
        let shown: String = clean_path(path).unwrap_or("(unnormalised path)").chars().take(200).collect();
        // Gemini's JSON-array stream is not read: only its server-sent events are.
        let hint = if shown.ends_with(":streamGenerateContent") { " Stream with `?alt=sse`." } else { "" };
        self.refuse(
            ApiError::not_found(format!(
                "Unknown request URL: {} {shown}.{hint}",
                method.chars().take(20).collect::<String>()
            ))
            .with_code("unknown_url"),
            Refusal::UnknownPath,
            None,
        )
    }

    fn refuse(&mut self, error: ApiError, refusal: Refusal, limit: Option<&str>) -> Flow {
        report::refused(&Host, &mut self.state.borrow_mut().registry, refusal, limit);
        if self.settings.debug_logging {
            log::debug!("{NAME}: refused ({}) with {}", refusal.name(), error.status);
        }
        self.phase = Phase::Done;
        self.body = None;
        // The local reply ends the stream; nothing is resumed.
        self.paused = false;
        proxy::send_error(&error);
        Flow::Pause
    }

    /// After a callout: lets the request go on if it was admitted.
    fn continue_if(&mut self, flow: Flow) {
        if flow == Flow::Continue && self.paused {
            self.paused = false;
            proxy::resume_request();
        }
    }

    /// A queued request's turn: its deadline passed, or it is checked again.
    pub fn deadline_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Queued { deadline_ms } => Some(deadline_ms),
            _ => None,
        }
    }

    /// From the root context, after switching to this request's: the wait is over.
    pub fn give_up_waiting(&mut self) {
        let limit = std::mem::take(&mut self.waiting_for);
        let now = Host.now_ms();
        let retry_after_ms = self
            .counters
            .iter()
            .filter(|c| c.action == crate::config::Action::Queue)
            .map(|c| c.span.remaining_ms(now))
            .max()
            .unwrap_or(1_000);
        self.refuse_limit(limit, retry_after_ms, Vec::new(), Refusal::QueueTimeout);
    }

    /// From the root context, after switching to this request's: apply a re-check's reply.
    pub fn on_recheck_reply(&mut self, response: &CalloutResponse) {
        match self.on_check_reply(response) {
            AfterCheck::Settled => {}
            // Asked again at the next tick, now with the script's source.
            AfterCheck::Resend => {
                if let (Some(me), Phase::Queued { .. }) = (self.me.upgrade(), self.phase) {
                    self.state.borrow_mut().waiters.push(Waiter { request: me, next_try_ms: Host.now_ms() });
                }
            }
        }
    }

    fn on_answer_headers(&mut self) {
        self.status = proxy::response_status();
        for (name, value) in &self.answer_headers {
            proxy::set_response_header(name, value);
        }
    }

    /// The stream is over (every module has logged it): settle the reservation.
    fn on_done(&mut self) {
        // The client left while waiting. (Compared by address: this request is borrowed.)
        let me = self.me.as_ptr();
        if let Phase::Queued { .. } = self.phase {
            self.state.borrow_mut().waiters.retain(|w| !std::ptr::eq(Rc::as_ptr(&w.request), me));
        }
        if self.phase == Phase::Checking {
            self.state.borrow_mut().lease_waiters.retain(|w| !std::ptr::eq(Rc::as_ptr(w), me));
            if self.calling {
                // Envoy cancels the call with its request; Redis may have run it.
                self.call_over();
                self.give_back_unknown_grant();
                wake_waiters(&self.state, self.context_id);
            }
        }
        let Some(reservation) = self.reservation.take() else { return };
        let from_cache = facts::served_from_cache(&Host);
        let reported = report::reported(&Host);
        let charged = reported.map(|r| self.charge(r, &mut self.state.borrow_mut().registry));
        let usage = charged.unwrap_or(match self.status {
            // Answered by the semantic cache: no provider was paid.
            _ if from_cache => Usage::default(),
            // Served, but no module measured it: the prompt estimate stands.
            Some(200..=299) => Usage { tokens: reservation.estimate.tokens, micro_usd: reservation.estimate.micro_usd },
            // Failed or never answered: nothing was generated.
            _ => Usage::default(),
        });
        let now = Host.now_ms();
        let mut state = self.state.borrow_mut();
        let State { registry, ledger, leases, .. } = &mut *state;
        if let Some(identity) = &self.identity {
            report::spend(&Host, registry, identity, &self.attribution, &self.model, usage);
        }
        // Spend beyond the reservation uses room this worker holds first.
        ledger.add(reservation.settle(usage).into_iter().filter_map(|charge| leases.absorb(charge, now)));
    }
}

/// Gives back what a re-check reserved for a request that is gone (Redis knows how much).
pub fn refund(state: &mut State, counters: &[Counter], marker: &str) {
    state.ledger.unsure(grant_back(marker, counters.iter()), 0);
}

/// A conditional charge of nothing on `counters`: Redis takes off whatever the check behind
/// `marker` granted, and nothing if it never ran.
fn grant_back<'a>(marker: &str, counters: impl Iterator<Item = &'a Counter>) -> Conditional {
    let charges = counters.map(|c| Charge { key: c.key.clone(), delta: 0, ttl_s: c.ttl_s }).collect();
    Conditional { marker: marker.to_string(), charges }
}

/// Lets the requests waiting for this worker's room try again, each in its own context, then
/// returns to `back_to`'s.
fn wake_waiters(state: &Rc<RefCell<State>>, back_to: u32) {
    let waiters = std::mem::take(&mut state.borrow_mut().lease_waiters);
    if waiters.is_empty() {
        return;
    }
    for waiter in waiters {
        // (A request being handled right now cannot be woken: it stays in the list.)
        let Ok(mut request) = waiter.try_borrow_mut() else {
            state.borrow_mut().lease_waiters.push(Rc::clone(&waiter));
            continue;
        };
        if proxy::switch_context(request.context_id) {
            request.on_wake();
        }
    }
    let _ = proxy::switch_context(back_to);
}

impl Request {
    pub fn counters(&self) -> &[Counter] {
        &self.counters
    }
    pub fn context_id(&self) -> u32 {
        self.context_id
    }
    pub fn marker(&self) -> &str {
        &self.marker
    }
}

/// The request's filter: hands each event to the shared request state.
pub struct Filter {
    pub request: Rc<RefCell<Request>>,
}

impl plugin::Filter for Filter {
    fn on_callout(&mut self, _token: u32, response: &CalloutResponse) {
        let mut request = self.request.borrow_mut();
        match request.phase {
            Phase::LookingUpKey => request.on_key_reply(response),
            Phase::Checking => {
                if let AfterCheck::Resend = request.on_check_reply(response) {
                    request.resend_check();
                }
            }
            _ => {}
        }
    }

    fn on_done(&mut self) {
        self.request.borrow_mut().on_done();
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        self.request.borrow_mut().on_request_headers(end_of_stream)
    }

    fn body_limit(&self) -> Option<usize> {
        self.request.borrow().body_limit()
    }

    fn on_body_too_large(&mut self, limit: usize) -> Flow {
        self.request.borrow_mut().on_body_too_large(limit)
    }

    fn on_request_body(&mut self, body: Vec<u8>, size: usize) -> Flow {
        self.request.borrow_mut().on_request_body(body, size)
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Flow {
        self.request.borrow_mut().on_answer_headers();
        Flow::Continue
    }
}
