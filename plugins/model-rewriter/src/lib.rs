//! # Sluice model rewriter
//!
//! Clients call one OpenAI-compatible API with logical model names (`chat-fast`,
//! `chat-quality`, ...); the rewriter decides where each request goes.
//!
//! - **Rules** ([`routing`]), in order: by header, by the caller's team (from the budget
//!   enforcer), by prompt size, by a complexity score ([`complexity`]), by a task hint. The
//!   first that matches picks the logical model; otherwise the client's own model name must be
//!   a logical model (else 404, or passed on unchanged with `unknown_models: pass`).
//! - **Targets**: a logical model has weighted targets (provider, upstream model, Envoy
//!   cluster), drawn per request or kept per key or header (`sticky`). Targets whose context
//!   window the prompt exceeds are skipped; when none fits, 400 `context_length_exceeded`.
//! - **Rewrite**: the body's `model` becomes the target's; `sluice.route.cluster` is published
//!   and Envoy's route cache cleared. Envoy's buffer filter holds the request until then; its
//!   header-mutation filter then copies the fact to `x-sluice-cluster`, which the gateway's
//!   routes (or a Gateway API HTTPRoute) match. Facts: `sluice.route.{logical,rule,provider,
//!   model,cluster}`.
//! - **Fallbacks**: for a logical model with `fallbacks`, the body also carries the chain's
//!   models by provider (`sluice_models`, see `sluice_shared::chain`) for the provider adapter,
//!   which sets each attempt's model as Envoy retries through the chain's aggregate cluster.
//! - **Catalog** ([`catalog`]): `GET /v1/models` (and `/v1/models/{id}`) is answered from the
//!   configuration.
//!
//! Logic is plain Rust in the modules above; this file is the proxy-wasm glue.

mod catalog;
mod complexity;
mod config;
mod routing;
mod stats;

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Action;
use sluice_shared::api::Api;
use sluice_shared::chain;
use sluice_shared::errors::ApiError;
use sluice_shared::facts;
use sluice_shared::plugin::{self, Module};
use sluice_shared::prompt;
use sluice_shared::proxy::{self, Host};
use sluice_shared::translate::{Part, Turn, Wire};

use sluice_shared::host::Clock;
use sluice_shared::pricing::PriceTable;

use crate::catalog::CatalogRequest;
use crate::config::{Config, Strategy, Target};
use crate::routing::{RequestFacts, Routing, Signals};

const NAME: &str = "sluice.model_rewriter";
/// Request headers only the gateway sets: the one its routes match (set from
/// `sluice.route.cluster` by Envoy's header-mutation filter once the body was read, see
/// `envoy-config/gateway.yaml`).
const GATEWAY_HEADERS: [&str; 1] = ["x-sluice-cluster"];

sluice_shared::entry!(ModelRewriter);

struct ModelRewriter {
    config: Rc<Config>,
    prices: Rc<PriceTable>,
    /// Request headers routing reads (`Config::routing_headers`).
    header_names: Rc<Vec<String>>,
    /// Per-worker random sequence for weighted draws (xorshift, seeded from WASI random).
    rng: Rc<Cell<u64>>,
}

impl Module for ModelRewriter {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(_root_context_id: u32) -> Self {
        let seed = RandomState::new().hash_one(0u8) | 1;
        ModelRewriter {
            config: Rc::new(Config::default()),
            prices: Rc::new(PriceTable::with_overrides(&Default::default())),
            header_names: Rc::default(),
            rng: Rc::new(Cell::new(seed)),
        }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        log::info!("{NAME}: configured; {} models, {} rules", config.models.len(), config.rules.len());
        self.header_names = Rc::new(config.routing_headers());
        self.prices = Rc::new(PriceTable::with_overrides(&config.prices));
        self.config = Rc::new(config);
        Ok(())
    }

    fn filter(&self, _context_id: u32) -> Box<dyn HttpContext> {
        plugin::stream(Filter {
            config: Rc::clone(&self.config),
            prices: Rc::clone(&self.prices),
            tracked: None,
            header_names: Rc::clone(&self.header_names),
            rng: Rc::clone(&self.rng),
            api: None,
            path: String::new(),
            headers: Vec::new(),
        })
    }
}

/// One request's glue.
struct Filter {
    config: Rc<Config>,
    prices: Rc<PriceTable>,
    /// The chosen target's shared figures, when its model's strategy uses them.
    tracked: Option<Tracked>,
    header_names: Rc<Vec<String>>,
    rng: Rc<Cell<u64>>,
    api: Option<Api>,
    /// The request's path (a Gemini call names its model there).
    path: String,
    /// The routing headers, read with the request headers.
    headers: Vec<(String, String)>,
}

/// A request counted in its target's shared figures.
struct Tracked {
    key: String,
    started_ms: u64,
    answered: bool,
}

impl Filter {
    fn price(&self, target: &Target) -> Option<f64> {
        self.prices.lookup(&target.model).map(|p| p.input + p.output)
    }

    fn roll(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    fn answer_catalog(&self, request: CatalogRequest<'_>) -> Action {
        let body = match request {
            CatalogRequest::List => Some(catalog::list(&self.config)),
            CatalogRequest::One(id) => catalog::one(&self.config, id),
        };
        match body {
            Some(body) => proxy::send_json(200, &body),
            None => proxy::send_error(
                &ApiError::not_found("The model does not exist.").with_code("model_not_found").with_param("model"),
            ),
        }
        Action::Pause
    }

    /// Routes a complete request body; answers locally when it cannot be routed.
    fn steer(&mut self, body: &[u8], body_size: usize) -> Action {
        let Some(api) = self.api else { return Action::Continue };
        let Ok(summary) = prompt::summarize(api, &self.path, body) else { return Action::Continue };
        let config = &self.config;
        let headers = std::mem::take(&mut self.headers);
        let key = facts::read(&Host, facts::IDENTITY_KEY);
        let team = facts::read(&Host, facts::IDENTITY_TEAM);
        let allowed = facts::read(&Host, facts::IDENTITY_MODELS)
            .map(|globs| globs.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        // A count of a prompt's tokens is answered whatever the window (that is what it is for).
        let prompt_tokens = if api.is_billed() {
            facts::read_u64(&Host, facts::PROMPT_ESTIMATE)
                .or_else(|| prompt::estimate_prompt(api, body, 0).ok().map(|e| e.tokens))
                .unwrap_or(0)
        } else {
            0
        };
        let complexity = routing::needs_complexity(config).then(|| {
            // Every chat schema is read through its translator: the same texts score the same.
            let chat = Wire::of_client(api).and_then(|wire| wire.read_request(body).ok());
            let texts: Vec<String> = chat
                .map(|c| {
                    let system = (!c.system.is_empty()).then(|| c.system.join("\n"));
                    system.into_iter().chain(c.turns.iter().map(turn_text)).collect()
                })
                .unwrap_or_default();
            complexity::score(&config.complexity, &texts.iter().map(String::as_str).collect::<Vec<_>>())
        });
        let request = RequestFacts {
            model: &summary.model,
            headers,
            key: key.as_deref(),
            team: team.as_deref(),
            prompt_tokens,
            complexity,
            allowed,
        };
        let now_ms = Host.now_ms();
        let signals = Signals {
            roll: self.roll(),
            now_ms,
            stats: &|t: &Target| stats::read(&Host, &stats::key(t)),
            price: &|t: &Target| self.price(t),
            health_window_ms: config.health_window_ms,
        };
        let decision = routing::route(config, &request, &config.task_header, &signals);
        match decision {
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
                let target = route.target;
                facts::publish_first(&Host, facts::REQUEST_MODEL, &summary.model);
                facts::publish(&Host, facts::ROUTE_LOGICAL, route.logical);
                if let Some(rule) = route.rule {
                    facts::publish(&Host, facts::ROUTE_RULE, rule);
                }
                facts::publish(&Host, facts::ROUTE_PROVIDER, &target.provider);
                facts::publish(&Host, facts::ROUTE_MODEL, &target.model);
                facts::publish(&Host, facts::ROUTE_CLUSTER, &target.cluster);
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
                let models = if chain.is_empty() {
                    vec![(target.provider.as_str(), target.model.as_str())]
                } else {
                    chain.clone()
                };
                facts::publish(&Host, facts::ROUTE_MODELS, &chain::models_text(&models));
                // A client's own chain member is never passed on.
                let clients_chain =
                    body.windows(chain::MODELS_MEMBER.len()).any(|w| w == chain::MODELS_MEMBER.as_bytes());
                if target.model != summary.model || !chain.is_empty() || clients_chain {
                    match chain::with_route(body, &target.model, &chain) {
                        Some(new_body) if proxy::replace_request_body(body_size, &new_body) => {}
                        _ => log::warn!("{NAME}: could not rewrite the model to `{}`", target.model),
                    }
                }
                let strategy = logical.map(|m| m.strategy);
                if strategy.is_some_and(|s| s != Strategy::Weighted) {
                    let key = stats::key(target);
                    stats::update(&Host, &key, stats::started);
                    self.tracked = Some(Tracked { key, started_ms: now_ms, answered: false });
                }
                if !proxy::clear_route_cache() {
                    log::warn!("{NAME}: the host cannot re-route; `{}` keeps its first route", route.logical);
                }
                Action::Continue
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
        if method == "GET" && !self.config.models.is_empty() {
            if let Some(request) = catalog::catalog_request(&path) {
                return self.answer_catalog(request);
            }
        }
        self.api = if method == "POST" && !end_of_stream { Api::from_path(&path) } else { None };
        self.path = path;
        if self.api.is_some() && !self.config.models.is_empty() {
            // The body's model may be rewritten: it cannot keep its length.
            proxy::remove_request_header("content-length");
            self.headers = self
                .header_names
                .iter()
                .filter_map(|name| Some((name.clone(), proxy::request_header_text(name)?)))
                .collect();
        }
        Action::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        (self.api.is_some() && !self.config.models.is_empty()).then_some(self.config.max_request_bytes)
    }

    /// A body the rewriter cannot read cannot be routed: refused.
    fn on_body_too_large(&mut self, limit: usize) -> Action {
        self.api = None;
        proxy::send_error(&ApiError::payload_too_large(format!("The request body exceeds {limit} bytes.")));
        Action::Pause
    }

    fn on_request_body(&mut self, body: Vec<u8>, size: usize) -> Action {
        let action = self.steer(&body, size);
        self.api = None;
        action
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        if let Some(tracked) = self.tracked.as_mut() {
            let now = Host.now_ms();
            let status = proxy::response_status().unwrap_or(0);
            let failed = status == 429 || status >= 500;
            let latency = now.saturating_sub(tracked.started_ms);
            stats::update(&Host, &tracked.key, |s| stats::answered(s, latency, failed, now));
            tracked.answered = true;
        }
        Action::Continue
    }
}
