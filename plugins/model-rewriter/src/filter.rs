//! One request's glue: reads the routing inputs while Envoy delivers the request, embeds the
//! last user turn when a rule reads intents, routes, picks a pool endpoint, rewrites the body
//! and publishes the facts; on the answer, feeds the target's shared figures and breaker.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::types::Action;
use sluice_shared::api::Api;
use sluice_shared::callout::CalloutResponse;
use sluice_shared::chain;
use sluice_shared::embeddings;
use sluice_shared::errors::ApiError;
use sluice_shared::facts;
use sluice_shared::host::Clock;
use sluice_shared::metrics;
use sluice_shared::plugin;
use sluice_shared::prompt;
use sluice_shared::proxy::{self, Host};
use sluice_shared::translate::{Chat, Part, Role, Turn, Wire};

use crate::breaker::{self, Transition};
use crate::catalog::{self, CatalogRequest};
use crate::config::{Breaker, Strategy, Target};
use crate::pool::{self, Ask};
use crate::routing::{self, RequestFacts, Route, Routing, Signals};
use crate::stats::{self, Timing};
use crate::{intents, Shared, NAME};

/// Request headers only the gateway sets: the one its routes match (set from
/// `sluice.route.cluster` by Envoy's header-mutation filter once the body was read, see
/// `envoy-config/gateway.yaml`), and the one the pools' override-host policy reads.
const GATEWAY_HEADERS: [&str; 2] = ["x-sluice-cluster", "x-gateway-destination-endpoint"];

pub(crate) struct Filter {
    shared: Rc<Shared>,
    /// The chosen target's shared figures, when its model's strategy or breaker uses them.
    tracked: Option<Tracked>,
    api: Option<Api>,
    /// The request's path (a Gemini call names its model there).
    path: String,
    /// The routing headers, read with the request headers.
    headers: Vec<(String, String)>,
    /// A body waiting for its last user turn's embedding, and that text.
    waiting: Option<(Body, String)>,
    /// The pool endpoint's shared record this request counts in, until it is done.
    endpoint: Option<String>,
}

/// A request counted in its target's shared figures.
struct Tracked {
    key: String,
    started_ms: u64,
    answered: bool,
    first_byte_ms: Option<u64>,
    breaker: Option<Breaker>,
    recorded: bool,
}

/// What the request says, read once from its body.
struct Prompt {
    chat: Option<Chat>,
}

impl Prompt {
    fn read(api: Api, body: &[u8]) -> Prompt {
        Prompt { chat: Wire::of_client(api).and_then(|wire| wire.read_request(body).ok()) }
    }

    /// Every message's text in order (system first): the complexity score's input and the
    /// prompt's prefix.
    fn texts(&self) -> Vec<String> {
        let Some(c) = &self.chat else { return Vec::new() };
        let system = (!c.system.is_empty()).then(|| c.system.join("\n"));
        system.into_iter().chain(c.turns.iter().map(turn_text)).collect()
    }

    /// The last user turn's text (what the semantic cache and the guard embed).
    fn last_user_turn(&self) -> Option<String> {
        let turn = self.chat.as_ref()?.turns.iter().rev().find(|t| t.role == Role::User)?;
        let texts: Vec<&str> =
            turn.parts.iter().filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None }).collect();
        Some(texts.join("\n")).filter(|t| !t.trim().is_empty())
    }
}

/// A complete request body, read once.
struct Body {
    bytes: Vec<u8>,
    /// Its size in Envoy's buffer.
    size: usize,
    summary: prompt::RequestSummary,
    /// Its messages, when a rule or a pool reads them.
    prompt: Option<Prompt>,
}

/// The prompt's intent as routing sees it.
enum Intent {
    /// No rule reads intents.
    Unread,
    /// Could not be read (embedder down, examples not loaded yet): intent rules do not hold.
    Unavailable,
    Read(Option<intents::Nearest>),
}

impl Filter {
    pub fn new(shared: Rc<Shared>) -> Filter {
        Filter {
            shared,
            tracked: None,
            api: None,
            path: String::new(),
            headers: Vec::new(),
            waiting: None,
            endpoint: None,
        }
    }

    fn price(&self, target: &Target) -> Option<f64> {
        self.shared.prices.lookup(&target.model).map(|p| p.input + p.output)
    }

    fn answer_catalog(&self, request: CatalogRequest<'_>) -> Action {
        let config = &self.shared.config;
        let body = match request {
            CatalogRequest::List => Some(catalog::list(config)),
            CatalogRequest::One(id) => catalog::one(config, id),
        };
        match body {
            Some(body) => proxy::send_json(200, &body),
            None => proxy::send_error(
                &ApiError::not_found("The model does not exist.").with_code("model_not_found").with_param("model"),
            ),
        }
        Action::Pause
    }

    /// The body is complete: embeds its last user turn first when a rule for its model reads
    /// intents.
    fn on_body(&mut self, bytes: Vec<u8>, size: usize) -> Action {
        let Some(api) = self.api else { return Action::Continue };
        let Ok(summary) = prompt::summarize(api, &self.path, &bytes) else { return Action::Continue };
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let reads_intents = routing::reads_intents(config, &summary.model);
        // The body is translated once, for every reader of its messages.
        let prompt =
            (reads_intents || routing::needs_complexity(config) || shared.pooled).then(|| Prompt::read(api, &bytes));
        let text = prompt.as_ref().and_then(Prompt::last_user_turn);
        let body = Body { bytes, size, summary, prompt };
        if !reads_intents {
            return self.steer(&body, Intent::Unread);
        }
        let Some(text) = text else { return self.steer(&body, Intent::Read(None)) };
        if shared.examples.borrow().is_none() {
            log::debug!("{NAME}: the intents' examples are not embedded yet");
            return self.steer(&body, Intent::Unavailable);
        }
        let service = &config.embedding;
        if let Some(answer) = service.reuse(&Host, &text) {
            shared.count(metrics::ROUTE_EMBEDDINGS_TOTAL, &[("source", "shared")]);
            let intent = self.intent(&answer);
            return self.steer(&body, intent);
        }
        shared.count(metrics::ROUTE_EMBEDDINGS_TOTAL, &[("source", "own")]);
        let call = service.callout(std::slice::from_ref(&text), Duration::from_millis(service.timeout_ms));
        match proxy::dispatch(&call) {
            Ok(_) => {
                self.waiting = Some((body, text));
                Action::Pause
            }
            Err(e) => {
                log::warn!("{NAME}: the prompt was not sent to be embedded: {e:?}");
                self.steer(&body, Intent::Unavailable)
            }
        }
    }

    /// The intent of an embedding answer.
    fn intent(&self, answer: &[u8]) -> Intent {
        let examples = self.shared.examples.borrow();
        let vector = embeddings::unit_vectors(answer, 1).and_then(|v| v.into_iter().next());
        match (vector, examples.as_ref()) {
            (Some(vector), Some(examples)) => match intents::nearest(&self.shared.config.intents, examples, &vector) {
                Ok(nearest) => Intent::Read(nearest),
                Err(()) => Intent::Unavailable,
            },
            _ => Intent::Unavailable,
        }
    }

    /// Routes a complete request body; answers locally when it cannot be routed.
    fn steer(&mut self, body: &Body, intent: Intent) -> Action {
        let Some(api) = self.api else { return Action::Continue };
        let summary = &body.summary;
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let headers = std::mem::take(&mut self.headers);
        let key = facts::read(&Host, facts::IDENTITY_KEY);
        let team = facts::read(&Host, facts::IDENTITY_TEAM);
        let allowed = facts::read(&Host, facts::IDENTITY_MODELS)
            .map(|globs| globs.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        // A count of a prompt's tokens is answered whatever the window (that is what it is for).
        let prompt_tokens = if api.is_billed() {
            facts::read_u64(&Host, facts::PROMPT_ESTIMATE)
                .or_else(|| prompt::estimate_prompt(api, &body.bytes, 0).ok().map(|e| e.tokens))
                .unwrap_or(0)
        } else {
            0
        };
        let texts = body.prompt.as_ref().map(Prompt::texts).unwrap_or_default();
        let complexity = routing::needs_complexity(config).then(|| {
            let score =
                crate::complexity::score(&config.complexity, &texts.iter().map(String::as_str).collect::<Vec<_>>());
            // Published whatever the rules decide: it is what `complexity_over` is tuned on.
            facts::publish(&Host, facts::ROUTE_COMPLEXITY, &format!("{score:.3}"));
            score
        });
        let intent_name = self.publish_intent(&intent);
        let request = RequestFacts {
            model: &summary.model,
            headers,
            key: key.as_deref(),
            team: team.as_deref(),
            prompt_tokens,
            complexity,
            allowed,
            intent: intent_name.as_deref(),
        };
        let now_ms = Host.now_ms();
        let signals = Signals {
            roll: shared.roll(),
            now_ms,
            stats: &|t: &Target| stats::read(&Host, &stats::key(t)),
            price: &|t: &Target| self.price(t),
            health_window_ms: config.health_window_ms,
        };
        match routing::route(config, &request, &config.task_header, &signals) {
            Routing::Pass => Action::Continue,
            Routing::NotAllowed { logical } => {
                let alias = key.as_deref().unwrap_or("presented");
                proxy::send_error(
                    &ApiError::forbidden(format!("The key `{alias}` may not use the model `{logical}`."))
                        .with_code("model_not_allowed")
                        .with_param("model"),
                );
                Action::Pause
            }
            Routing::UnknownModel => {
                proxy::send_error(
                    &ApiError::not_found(format!("The model `{}` does not exist.", summary.model))
                        .with_code("model_not_found")
                        .with_param("model"),
                );
                Action::Pause
            }
            Routing::TooLong { logical, largest_window } => {
                proxy::send_error(
                    &ApiError::bad_request(format!(
                        "This request's prompt is about {prompt_tokens} tokens; the largest context window of `{logical}` \
                         is {largest_window} tokens."
                    ))
                    .with_code("context_length_exceeded")
                    .with_param("messages"),
                );
                Action::Pause
            }
            Routing::Route(route) => {
                let prefix_text = if shared.pooled { texts.join("\n") } else { String::new() };
                self.send(&route, &request, summary, &body.bytes, body.size, &prefix_text, now_ms);
                Action::Continue
            }
        }
    }

    /// Publishes the intent (fact and metric); its name, for the rules.
    fn publish_intent(&self, intent: &Intent) -> Option<String> {
        let config = &self.shared.config;
        let (label, name) = match intent {
            Intent::Unread => return None,
            Intent::Unavailable => ("unavailable".to_string(), None),
            Intent::Read(None) => ("none".to_string(), None),
            Intent::Read(Some(nearest)) => {
                // The score is published either way: it is what thresholds are tuned on.
                facts::publish(&Host, facts::ROUTE_INTENT_SCORE, &format!("{:.3}", nearest.score));
                let name = config.intents.get(nearest.index).map(|i| i.name.clone()).filter(|_| nearest.reached);
                (name.clone().unwrap_or_else(|| "none".into()), name)
            }
        };
        facts::publish(&Host, facts::ROUTE_INTENT, &label);
        self.shared.count(metrics::ROUTE_INTENTS_TOTAL, &[("intent", &label)]);
        name
    }

    /// Sends the request on to its route: facts, the chain, the pool endpoint, the body.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        route: &Route<'_>,
        request: &RequestFacts<'_>,
        summary: &prompt::RequestSummary,
        body: &[u8],
        body_size: usize,
        prompt_text: &str,
        now_ms: u64,
    ) {
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let target = route.target;
        facts::publish_first(&Host, facts::REQUEST_MODEL, &summary.model);
        facts::publish(&Host, facts::ROUTE_LOGICAL, route.logical);
        if let Some(rule) = route.rule {
            facts::publish(&Host, facts::ROUTE_RULE, rule);
        }
        facts::publish(&Host, facts::ROUTE_PROVIDER, &target.provider);
        facts::publish(&Host, facts::ROUTE_MODEL, &target.model);
        facts::publish(&Host, facts::ROUTE_CLUSTER, &target.cluster);
        if !route.skipped.is_empty() {
            let skipped: Vec<String> = route.skipped.iter().map(|t| format!("{}/{}", t.provider, t.model)).collect();
            facts::publish(&Host, facts::ROUTE_SKIPPED, &skipped.join(","));
        }
        let logical = config.models.get(route.logical);
        let chain: Vec<(&str, &str)> = match logical {
            Some(m) if !m.fallbacks.is_empty() => {
                // Every fallback too must be one the key may use.
                let fallbacks = m.fallbacks.iter().filter(|f| request.may_reach(route.logical, &f.model));
                std::iter::once((target.provider.as_str(), target.model.as_str()))
                    .chain(fallbacks.map(|f| (f.provider.as_str(), f.model.as_str())))
                    .collect()
            }
            _ => Vec::new(),
        };
        facts::publish(&Host, facts::ROUTE_STREAM, if summary.stream { "true" } else { "false" });
        let models =
            if chain.is_empty() { vec![(target.provider.as_str(), target.model.as_str())] } else { chain.clone() };
        facts::publish(&Host, facts::ROUTE_MODELS, &chain::models_text(&models));
        if let Some(pool_name) = &target.pool {
            self.pick_endpoint(pool_name, target, prompt_text, now_ms);
        }
        // A client's own chain member is never passed on.
        let clients_chain = body.windows(chain::MODELS_MEMBER.len()).any(|w| w == chain::MODELS_MEMBER.as_bytes());
        if target.model != summary.model || !chain.is_empty() || clients_chain {
            match chain::with_route(body, &target.model, &chain) {
                Some(new_body) if proxy::replace_request_body(body_size, &new_body) => {}
                _ => log::warn!("{NAME}: could not rewrite the model to `{}`", target.model),
            }
        }
        let breaker = logical.and_then(|m| m.breaker.clone());
        let strategy = logical.map(|m| m.strategy);
        if strategy.is_some_and(|s| s != Strategy::Weighted) || breaker.is_some() {
            let key = stats::key(target);
            stats::update(&Host, &key, |s| {
                stats::started(s);
                if route.probe {
                    breaker::claim_probe(s, now_ms);
                }
            });
            if route.probe {
                facts::publish(&Host, facts::ROUTE_BREAKER, "probe");
            }
            self.tracked = Some(Tracked {
                key,
                started_ms: now_ms,
                answered: false,
                first_byte_ms: None,
                breaker,
                recorded: false,
            });
        }
        if !proxy::clear_route_cache() {
            log::warn!("{NAME}: the host cannot re-route; `{}` keeps its first route", route.logical);
        }
    }

    /// Picks the pool endpoint and tells Envoy (or leaves it to Envoy when no figures are fresh).
    fn pick_endpoint(&mut self, pool_name: &str, target: &Target, prompt_text: &str, now_ms: u64) {
        let Some(pool) = self.shared.config.pools.get(pool_name) else { return };
        let records: Vec<(&str, pool::Endpoint)> =
            pool.endpoints.iter().map(|e| (e.as_str(), pool::read(&Host, &pool::key(pool_name, e)))).collect();
        let ask = Ask {
            model: &target.model,
            prefix: pool::prefix(prompt_text, pool.prefix_chars),
            roll: self.shared.roll(),
        };
        let (endpoint, reason) = match pool::pick(pool, &records, &ask, now_ms) {
            Some((endpoint, reason)) => {
                let key = pool::key(pool_name, endpoint);
                pool::update(&Host, &key, |r| {
                    r.in_flight = r.in_flight.saturating_add(1);
                    true
                });
                self.endpoint = Some(key);
                let order: Vec<&str> =
                    std::iter::once(endpoint).chain(pool::failovers(pool, &records, endpoint, now_ms)).collect();
                facts::publish(&Host, facts::ROUTE_ENDPOINT, &order.join(","));
                (endpoint, reason.label())
            }
            None => ("none", "stale"),
        };
        facts::publish(&Host, facts::ROUTE_PICK, reason);
        let labels = [("pool", pool_name), ("endpoint", endpoint), ("reason", reason)];
        self.shared.count(metrics::ROUTE_PICKS_TOTAL, &labels);
    }

    /// The answer ended: its timing feeds the target's breaker.
    fn record_timing(&mut self) {
        let Some(tracked) = self.tracked.as_mut() else { return };
        let Some(breaker) = tracked.breaker.clone().filter(|_| !tracked.recorded) else { return };
        tracked.recorded = true;
        let now = Host.now_ms();
        let timing = Timing {
            at_ms: now,
            total_ms: now.saturating_sub(tracked.started_ms),
            ttft_ms: tracked.first_byte_ms.unwrap_or(now).saturating_sub(tracked.started_ms),
        };
        // A retried update starts from the stored figures again: the last attempt's word stands.
        let transition = std::cell::Cell::new(None);
        let key = tracked.key.clone();
        stats::update(&Host, &key, |s| transition.set(breaker::record(s, &breaker, timing)));
        if let Some(t) = transition.get() {
            let provider = facts::read(&Host, facts::ROUTE_PROVIDER).unwrap_or_default();
            let model = facts::read(&Host, facts::ROUTE_MODEL).unwrap_or_default();
            log::info!("{NAME}: the latency breaker of {provider}/{model} is {}", t.label());
            facts::publish(&Host, facts::ROUTE_BREAKER, t.label());
            let labels = [("provider", provider.as_str()), ("model", model.as_str()), ("state", t.label())];
            self.shared.count(metrics::ROUTE_BREAKER_TOTAL, &labels);
            if t == Transition::Opened {
                log::warn!("{NAME}: {provider}/{model} is skipped for {} ms", breaker.open_ms);
            }
        }
    }
}

/// A turn's text, for the complexity score.
fn turn_text(turn: &Turn) -> String {
    let texts = turn.parts.iter().filter_map(|p| match p {
        Part::Text(text) | Part::ToolResult { content: text, .. } => Some(text.as_str()),
        _ => None,
    });
    texts.collect()
}

impl plugin::Filter for Filter {
    fn on_done(&mut self) {
        if let Some(key) = self.endpoint.take() {
            pool::update(&Host, &key, |r| {
                r.in_flight = r.in_flight.saturating_sub(1);
                r.at_scrape = r.at_scrape.min(r.in_flight);
                true
            });
        }
        // After every module's log: the token counter's counts are known.
        if let Some(tracked) = self.tracked.take() {
            let now = Host.now_ms();
            let tokens = facts::reported_tokens(&Host).unwrap_or(0);
            stats::update(&Host, &tracked.key, |s| {
                if !tracked.answered {
                    s.last_failure_ms = now;
                }
                stats::finished(s, tokens, now);
            });
        }
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        // Only the gateway sets its own headers: a client's are dropped, and the route Envoy
        // already matched with them forgotten.
        if GATEWAY_HEADERS.iter().any(|h| proxy::request_header(h).is_some()) {
            GATEWAY_HEADERS.iter().for_each(|h| proxy::remove_request_header(h));
            proxy::clear_route_cache();
        }
        let path = proxy::request_header_text(":path").unwrap_or_default();
        let method = proxy::request_header_text(":method").unwrap_or_default();
        let config = &self.shared.config;
        if method == "GET" && !config.models.is_empty() {
            if let Some(request) = catalog::catalog_request(&path) {
                return self.answer_catalog(request);
            }
        }
        self.api = if method == "POST" && !end_of_stream { Api::from_path(&path) } else { None };
        self.path = path;
        if self.api.is_some() && !config.models.is_empty() {
            // The body's model may be rewritten: it cannot keep its length.
            proxy::remove_request_header("content-length");
            self.headers = self
                .shared
                .header_names
                .iter()
                .filter_map(|name| Some((name.clone(), proxy::request_header_text(name)?)))
                .collect();
        }
        Action::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        let config = &self.shared.config;
        (self.api.is_some() && !config.models.is_empty()).then_some(config.max_request_bytes)
    }

    /// A body the rewriter cannot read cannot be routed: refused.
    fn on_body_too_large(&mut self, limit: usize) -> Action {
        self.api = None;
        proxy::send_error(&ApiError::payload_too_large(format!("The request body exceeds {limit} bytes.")));
        Action::Pause
    }

    fn on_request_body(&mut self, body: Vec<u8>, size: usize) -> Action {
        let action = self.on_body(body, size);
        if self.waiting.is_none() {
            self.api = None;
        }
        action
    }

    fn on_callout(&mut self, _token: u32, response: &CalloutResponse) {
        let Some((body, text)) = self.waiting.take() else { return };
        let intent = if response.is_success() { self.intent(&response.body) } else { Intent::Unavailable };
        if matches!(intent, Intent::Unavailable) {
            log::warn!("{NAME}: the prompt's embedding failed (HTTP {}); intent rules do not hold", response.status);
        } else {
            self.shared.config.embedding.share(&Host, &text, &response.body);
        }
        let action = self.steer(&body, intent);
        self.api = None;
        if action == Action::Continue {
            proxy::resume_request();
        }
    }

    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        if let Some(tracked) = self.tracked.as_mut() {
            let now = Host.now_ms();
            let status = proxy::response_status().unwrap_or(0);
            let failed = status == 429 || status >= 500;
            let latency = now.saturating_sub(tracked.started_ms);
            stats::update(&Host, &tracked.key, |s| stats::answered(s, latency, failed, now));
            tracked.answered = true;
        }
        if end_of_stream {
            self.record_timing();
        }
        Action::Continue
    }

    fn on_response_body(&mut self, _size: usize, end_of_stream: bool) -> Action {
        if let Some(tracked) = self.tracked.as_mut() {
            tracked.first_byte_ms.get_or_insert_with(|| Host.now_ms());
        }
        if end_of_stream {
            self.record_timing();
        }
        Action::Continue
    }
}
