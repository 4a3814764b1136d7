//! # Sluice model rewriter
//!
//! Clients call one OpenAI-compatible API with logical model names (`chat-fast`,
//! `chat-quality`, ...); the rewriter decides where each request goes.
//!
//! - **Rules** ([`routing`]), in order: by header, by the caller's team (from the budget
//!   enforcer), by prompt size, by a complexity score ([`complexity`]), by a task hint, by what
//!   the prompt is about ([`intents`]: semantic routes described by example prompts). The first
//!   that matches picks the logical model; otherwise the client's own model name must be a
//!   logical model (else 404, or passed on unchanged with `unknown_models: pass`).
//! - **Targets**: a logical model has weighted targets (provider, upstream model, Envoy
//!   cluster), drawn per request or kept per key or header (`sticky`), or chosen by a strategy
//!   from figures every worker shares ([`stats`]). Targets whose context window the prompt
//!   exceeds are skipped (when none fits, 400 `context_length_exceeded`), and so are targets
//!   whose latency breaker is open ([`breaker`]).
//! - **Pools** ([`pool`]): a target served by a self-hosted pool gets its endpoint picked from
//!   the endpoints' scraped metrics (headroom, LoRA and prefix affinity); Envoy's override-host
//!   load-balancing policy sends the request there.
//! - **Rewrite**: the body's `model` becomes the target's; `sluice.route.cluster` is published
//!   and Envoy's route cache cleared. Envoy's buffer filter holds the request until then; its
//!   header-mutation filter then copies the fact to `x-sluice-cluster`, which the gateway's
//!   routes (or a Gateway API HTTPRoute) match. Facts: `sluice.route.{logical,rule,provider,
//!   model,cluster,intent,endpoint,...}`.
//! - **Fallbacks**: for a logical model with `fallbacks`, the body also carries the chain's
//!   models by provider (`sluice_models`, see `sluice_shared::chain`) for the provider adapter,
//!   which sets each attempt's model as Envoy retries through the chain's aggregate cluster.
//! - **Catalog** ([`catalog`]): `GET /v1/models` (and `/v1/models/{id}`) is answered from the
//!   configuration.
//!
//! Per request ([`filter`]) is the glue between Envoy's callbacks and the above; this file
//! holds the per-worker side: the configuration, the intents' examples (embedded once by the
//! root context) and the pools' scrapes (a tick).

mod breaker;
mod catalog;
mod complexity;
mod config;
mod filter;
mod intents;
mod pool;
mod routing;
mod stats;

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::HttpContext;
use sluice_shared::callout::{Callout, CalloutResponse};
use sluice_shared::embeddings::{self, Examples};
use sluice_shared::host::Clock;
use sluice_shared::metrics::{self, MetricRegistry};
use sluice_shared::plugin::{self, Module};
use sluice_shared::pricing::PriceTable;
use sluice_shared::proxy::{self, Host};

use crate::config::{Config, IntentMatch};
use crate::filter::Filter;
use crate::pool::Figures;

const NAME: &str = "sluice.model_rewriter";
/// Distinct values kept per metric label (intents, pools, endpoints, models).
const MAX_LABEL_VALUES: usize = 200;
/// How often the intents' examples are asked for until they are embedded.
const LOAD_RETRY: Duration = Duration::from_millis(200);
/// The header the scrape cluster (`ORIGINAL_DST`, `use_http_header`) sends each scrape by.
const DESTINATION: &str = "x-envoy-original-dst-host";

sluice_shared::entry!(ModelRewriter);

/// What every request of a configuration shares.
pub(crate) struct Shared {
    pub config: Config,
    pub prices: PriceTable,
    /// Request headers routing reads (`Config::routing_headers`).
    pub header_names: Vec<String>,
    /// Whether a target is served by a pool (its endpoint is picked; the prompt's prefix read).
    pub pooled: bool,
    /// The intents' example vectors, once embedded.
    pub examples: RefCell<Option<Examples>>,
    pub registry: RefCell<MetricRegistry>,
    /// Per-worker random sequence for weighted draws (xorshift, seeded from WASI random).
    rng: Cell<u64>,
}

impl Shared {
    pub fn roll(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    pub fn count(&self, name: &str, labels: &[(&str, &str)]) {
        self.registry.borrow_mut().add(&Host, name, labels, 1);
    }
}

/// A root callout in flight.
enum Pending {
    Examples,
    Metrics {
        pool: String,
        endpoint: String,
    },
    /// The health check after good metrics, which are kept only if it passes.
    Health {
        pool: String,
        endpoint: String,
        figures: Figures,
    },
}

struct ModelRewriter {
    shared: Rc<Shared>,
    pending: BTreeMap<u32, Pending>,
}

impl ModelRewriter {
    fn examples_missing(&self) -> bool {
        self.shared.config.reads_intents() && self.shared.examples.borrow().is_none()
    }

    /// Embeds every intent's examples in one callout.
    fn load_examples(&mut self) {
        if !self.examples_missing() || self.pending.values().any(|p| matches!(p, Pending::Examples)) {
            return;
        }
        let config = &self.shared.config;
        let (texts, _) = intents::texts(&config.intents);
        let call = config.embedding.callout(&texts, Duration::from_millis(config.embedding.timeout_ms.max(5_000)));
        match proxy::dispatch(&call) {
            Ok(token) => {
                self.pending.insert(token, Pending::Examples);
            }
            Err(e) => log::warn!("{NAME}: the intents' examples were not sent to be embedded: {e:?}"),
        }
    }

    /// Scrapes every pool endpoint no worker scraped (or claimed) within its interval.
    fn scrape(&mut self) {
        let now = Host.now_ms();
        let shared = Rc::clone(&self.shared);
        for (name, pool) in &shared.config.pools {
            let interval = pool.scrape.interval_ms;
            for endpoint in &pool.endpoints {
                let key = pool::key(name, endpoint);
                let claimed = pool::update(&Host, &key, |r| {
                    r.due(now, interval) && {
                        r.claimed_ms = now;
                        true
                    }
                });
                if !claimed {
                    continue;
                }
                let call = scrape(&pool.scrape, endpoint, &pool.scrape.path);
                let pending = Pending::Metrics { pool: name.clone(), endpoint: endpoint.clone() };
                self.send(call, pending);
            }
        }
    }

    fn send(&mut self, call: Callout, pending: Pending) {
        match proxy::dispatch(&call) {
            Ok(token) => {
                self.pending.insert(token, pending);
            }
            Err(e) => {
                if let Pending::Metrics { pool, endpoint } | Pending::Health { pool, endpoint, .. } = &pending {
                    log::warn!("{NAME}: pool `{pool}`: endpoint {endpoint} not scraped: {e:?}");
                    self.scraped(pool, endpoint, None, "down");
                }
            }
        }
    }

    /// A metrics scrape answered: its figures, then the endpoint's health.
    fn on_metrics(&mut self, pool_name: String, endpoint: String, response: &CalloutResponse) {
        let Some(pool) = self.shared.config.pools.get(&pool_name) else { return };
        let text = String::from_utf8_lossy(&response.body);
        let figures = response.is_success().then(|| Figures::parse(pool.engine, &text)).flatten();
        match figures {
            Some(figures) if !pool.scrape.health_path.is_empty() => {
                let call = scrape(&pool.scrape, &endpoint, &pool.scrape.health_path);
                self.send(call, Pending::Health { pool: pool_name, endpoint, figures });
            }
            Some(figures) => self.scraped(&pool_name, &endpoint, Some(figures), "ok"),
            None => {
                let result = if response.is_success() { "unreadable" } else { "down" };
                log::warn!(
                    "{NAME}: pool `{pool_name}`: endpoint {endpoint}: scrape {result} (HTTP {})",
                    response.status
                );
                self.scraped(&pool_name, &endpoint, None, result);
            }
        }
    }
    /// Stores a scrape's outcome (`None`: the endpoint's figures are unknown until the next).
    fn scraped(&self, pool: &str, endpoint: &str, figures: Option<Figures>, result: &str) {
        let now = Host.now_ms();
        pool::update(&Host, &pool::key(pool, endpoint), |r| {
            r.figures = figures.clone();
            r.scraped_ms = now;
            r.at_scrape = r.in_flight;
            true
        });
        self.shared.count(metrics::ROUTE_SCRAPES_TOTAL, &[("pool", pool), ("endpoint", endpoint), ("result", result)]);
    }
}

impl Module for ModelRewriter {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(_root_context_id: u32) -> Self {
        ModelRewriter { shared: Rc::new(shared(Config::default())), pending: BTreeMap::new() }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        log::info!(
            "{NAME}: configured; {} models, {} rules, {} intents, {} pools",
            config.models.len(),
            config.rules.len(),
            config.intents.len(),
            config.pools.len()
        );
        self.shared = Rc::new(shared(config));
        self.pending.clear();
        Ok(())
    }

    fn tick(&self) -> Option<Duration> {
        let scrapes =
            self.shared.config.pools.values().map(|p| Duration::from_millis((p.scrape.interval_ms / 2).max(1)));
        let loading = self.examples_missing().then_some(LOAD_RETRY);
        scrapes.chain(loading).min()
    }

    fn on_tick(&mut self) {
        self.load_examples();
        self.scrape();
    }

    fn on_callout(&mut self, token: u32, response: &CalloutResponse) {
        match self.pending.remove(&token) {
            Some(Pending::Examples) => {
                let (texts, labels) = intents::texts(&self.shared.config.intents);
                let vectors = response.is_success().then(|| embeddings::unit_vectors(&response.body, texts.len()));
                match vectors.flatten() {
                    Some(vectors) => {
                        log::info!("{NAME}: {} intent examples embedded", vectors.len());
                        let examples = Examples::new(&labels, vectors);
                        *self.shared.examples.borrow_mut() = Some(match self.shared.config.intent_match {
                            IntentMatch::Nearest => examples,
                            IntentMatch::Centroid => examples.centroids(),
                        });
                    }
                    None => log::warn!(
                        "{NAME}: the intents' examples' embeddings failed (HTTP {}); retrying",
                        response.status
                    ),
                }
            }
            Some(Pending::Metrics { pool, endpoint }) => self.on_metrics(pool, endpoint, response),
            Some(Pending::Health { pool, endpoint, figures }) => {
                if response.is_success() {
                    self.scraped(&pool, &endpoint, Some(figures), "ok");
                } else {
                    log::warn!("{NAME}: pool `{pool}`: endpoint {endpoint} is unhealthy (HTTP {})", response.status);
                    self.scraped(&pool, &endpoint, None, "unhealthy");
                }
            }
            None => {}
        }
    }

    fn filter(&self, _context_id: u32) -> Box<dyn HttpContext> {
        plugin::stream(Filter::new(Rc::clone(&self.shared)))
    }
}

/// A GET of one pool endpoint through the scrape cluster.
fn scrape(scrape: &config::Scrape, endpoint: &str, path: &str) -> Callout {
    Callout::get(&scrape.cluster, endpoint, path)
        .header(DESTINATION, endpoint)
        .header("accept", "text/plain")
        .timeout(Duration::from_millis(scrape.timeout_ms))
}

fn shared(config: Config) -> Shared {
    Shared {
        header_names: config.routing_headers(),
        prices: PriceTable::with_overrides(&config.prices),
        pooled: config.models.values().flat_map(|m| &m.targets).any(|t| t.pool.is_some()),
        config,
        examples: RefCell::new(None),
        registry: RefCell::new(MetricRegistry::new(MAX_LABEL_VALUES)),
        rng: Cell::new(RandomState::new().hash_one(0u8) | 1),
    }
}
