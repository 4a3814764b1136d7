//! One request's path through the enforcer (proxy-wasm glue over the plain-Rust modules):
//! key → path class (default deny: unknown paths 404 unless `passthrough`) → identity → model
//! check → limits checked in Redis → admit, queue, downgrade or refuse;
//! after the answer, the reservation is settled against the actual usage.
//!
//! A request's state lives in an `Rc<RefCell<Request>>` so that the worker's root context can
//! finish a queued request (re-check it, then resume or refuse it) after switching to its
//! context. Hostcalls act on whichever context is current.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action as Flow;
use sluice_shared::api::{clean_path, Api, Class};
use sluice_shared::callout::{Callout, CalloutResponse};
use sluice_shared::errors::ApiError;
use sluice_shared::facts;
use sluice_shared::host::Clock;
use sluice_shared::metrics::MetricRegistry;
use sluice_shared::pricing::Price;
use sluice_shared::prompt;
use sluice_shared::proxy::{self, Host};
use sluice_shared::redis::{as_args, RedisError};

use crate::config::Kind;
use crate::keys::{self, Digest, Identity, Lookup};
use crate::limits::{self, Counter, Estimate};
use crate::report::{self, Refusal, Reported};
use crate::scripts;
use crate::state::{Settings, Waiter, NAME};
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
    api: Option<Api>,
    /// The `passthrough` entry that admits a path outside the APIs.
    passthrough: Option<usize>,
    /// The body, kept until admission (prompt estimate, downgrade rewrite).
    body: Option<Vec<u8>>,
    body_size: usize,
    model: String,
    estimate: Estimate,
    counters: Vec<Counter>,
    /// Redis key the check sets when it reserves for this request.
    marker: String,
    reservation: Option<Reservation>,
    answer_headers: Vec<(String, String)>,
    status: Option<u16>,
    /// The `queue` limit a queued request waits for.
    waiting_for: String,
}

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
                api: None,
                passthrough: None,
                body: None,
                body_size: 0,
                model: String::new(),
                estimate: Estimate::default(),
                counters: Vec::new(),
                marker: String::new(),
                reservation: None,
                answer_headers: Vec::new(),
                status: None,
                waiting_for: String::new(),
            })
        })
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        let key = keys::presented_key(
            proxy::request_header("authorization").as_deref(),
            proxy::request_header("x-api-key").as_deref(),
        );
        // The virtual key is ours: it never reaches the provider.
        proxy::remove_request_header("authorization");
        proxy::remove_request_header("x-api-key");
        let Some(key) = key else {
            return self.refuse(
                ApiError::unauthorized(
                    "You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key`.",
                )
                .with_code("missing_api_key"),
                Refusal::MissingKey,
                None,
            );
        };
        let method = proxy::request_header_text(":method").unwrap_or_default();
        let path = proxy::request_header_text(":path").unwrap_or_default();
        let class = Class::of(&method, &path);
        if class == Class::Other {
            let rules = &self.settings.config.passthrough;
            self.passthrough = rules.iter().position(|p| p.rule.matches(&method, &path));
            if self.passthrough.is_none() {
                return self.refuse_path(&method, &path);
            }
        }
        self.api = class.api();
        if self.api.is_some() && end_of_stream {
            return self.refuse(
                ApiError::bad_request("The request has no body.").with_code("missing_body"),
                Refusal::BadRequest,
                None,
            );
        }
        let digest = sluice_shared::digest::sha256(&key);
        let lookup = self.state.borrow().keys.lookup(&digest, Host.now_ms());
        match lookup {
            Lookup::Known(identity) => self.identity = Some(identity),
            Lookup::Unknown => return self.refuse_unknown_key(),
            Lookup::AskRedis => {}
        }
        self.digest = Some(digest);
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

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        if self.phase != Phase::ReadingBody {
            return Flow::Continue;
        }
        self.body_size = body_size;
        if body_size > self.settings.config.max_request_bytes {
            let limit = self.settings.config.max_request_bytes;
            return self.refuse(
                ApiError::payload_too_large(format!("The request body exceeds {limit} bytes.")),
                Refusal::BadRequest,
                None,
            );
        }
        if !end_of_stream {
            return Flow::Pause; // buffer until the whole body is here
        }
        let body = proxy::request_body(body_size).unwrap_or_default();
        if self.api.is_some() && body_size > 0 {
            match sluice_shared::json::unique_members(&body).and_then(|()| prompt::summarize(&body)) {
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
        report::publish_identity(&Host, &identity);
        if !self.model.is_empty() {
            facts::publish_first(&Host, facts::REQUEST_MODEL, &self.model);
        }
        let settings = Rc::clone(&self.settings);
        let applicable =
            limits::applicable(&settings.config, limits::Request { identity: &identity, model: &self.model });
        let usd_limited = applicable.iter().any(|(_, limit, _)| limit.kind == Kind::Usd);
        if usd_limited && self.api.is_some() && self.price().is_none() {
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
        let request_id = self.state.borrow_mut().next_request_id();
        self.marker = format!("{}:resv:{request_id}", settings.config.key_prefix);
        self.send_check()
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
        let applicable = limits::applicable(config, limits::Request { identity: &identity, model: &self.model });
        self.counters = limits::counters(config, &applicable, self.estimate, Host.now_ms());
    }

    /// The check callout for this request's counters.
    pub fn check_callout(&self) -> Callout {
        let cached = self.state.borrow().check_cached;
        let (keys, args) = scripts::check_args(&self.counters, &self.marker);
        let command = self.settings.scripts.check.call(cached, &keys, &args);
        self.settings.config.redis.command(&as_args(&command))
    }

    fn send_check(&mut self) -> Flow {
        match proxy::dispatch(&self.check_callout()) {
            Ok(_) => self.hold(Phase::Checking),
            Err(e) => self.bridge_failed(&format!("check not sent: {e:?}")),
        }
    }

    /// Handles the check's reply (from this request's context, or the root's for a queued one),
    /// resuming the request when it is admitted.
    pub fn on_check_reply(&mut self, response: &CalloutResponse) -> AfterCheck {
        let settings = Rc::clone(&self.settings);
        let parsed = settings.config.redis.reply(response).and_then(|value| {
            scripts::read_check(&value, self.counters.len())
                .ok_or_else(|| RedisError::Bridge(format!("unexpected check reply: {value:?}")))
        });
        match parsed {
            Ok((_, used)) => {
                self.state.borrow_mut().check_cached = true;
                let flow = self.decide(&used, false);
                self.continue_if(flow);
                AfterCheck::Settled
            }
            Err(e) if e.is_noscript() => {
                self.state.borrow_mut().check_cached = false;
                AfterCheck::Resend
            }
            Err(e) => {
                let flow = self.bridge_failed(&e.to_string());
                self.continue_if(flow);
                AfterCheck::Settled
            }
        }
    }

    /// Resends a check after `NOSCRIPT`, from this request's own context.
    fn resend_check(&mut self) {
        let flow = self.send_check();
        self.continue_if(flow);
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
                self.refuse_limit(name, retry_after_ms, headers, Refusal::Limit)
            }
            Verdict::Admit { downgrade_to, alerts } => {
                let estimate = self.estimate;
                let counters = std::mem::take(&mut self.counters);
                let marker = self.marker.clone();
                self.reservation = Some(if local {
                    Reservation::unsure(counters, used, estimate, marker)
                } else {
                    Reservation::from_check(counters, used, estimate, marker)
                });
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
        self.refuse(
            ApiError::not_found(format!(
                "Unknown request URL: {} {shown}.",
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
        if let Phase::Queued { .. } = self.phase {
            // The client left while waiting. (Compared by address: this request is borrowed.)
            let me = self.me.as_ptr();
            self.state.borrow_mut().waiters.retain(|w| !std::ptr::eq(Rc::as_ptr(&w.request), me));
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
        let mut state = self.state.borrow_mut();
        let State { registry, ledger, .. } = &mut *state;
        if let Some(identity) = &self.identity {
            report::spend(&Host, registry, identity, &self.model, usage);
        }
        ledger.settle(reservation.settle(usage));
    }
}

/// Refunds what a re-check reserved for a request that is gone.
pub fn refund(state: &mut State, counters: &[Counter], used: &[i64], marker: &str) {
    let reservation = Reservation::from_check(counters.to_vec(), used, Estimate::default(), marker.to_string());
    state.ledger.settle(reservation.cancel());
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

/// The proxy-wasm HTTP context: hands each event to the shared request state.
pub struct Filter {
    pub request: Rc<RefCell<Request>>,
}

impl Context for Filter {
    fn on_http_call_response(&mut self, _token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        let response = proxy::callout_response(num_headers, body_size);
        let mut request = self.request.borrow_mut();
        match request.phase {
            Phase::LookingUpKey => request.on_key_reply(&response),
            Phase::Checking => {
                if let AfterCheck::Resend = request.on_check_reply(&response) {
                    request.resend_check();
                }
            }
            _ => {}
        }
    }

    fn on_done(&mut self) -> bool {
        self.request.borrow_mut().on_done();
        true
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Flow {
        self.request.borrow_mut().on_request_headers(end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        self.request.borrow_mut().on_request_body(body_size, end_of_stream)
    }

    /// A request with trailers ends here, not in a body chunk: what is buffered is the whole body.
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Flow {
        let mut request = self.request.borrow_mut();
        let size = request.body_size;
        request.on_request_body(size, true)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Flow {
        self.request.borrow_mut().on_answer_headers();
        Flow::Continue
    }
}
