//! # Sluice guard
//!
//! Asks guard services about prompts and answers, and acts on what they say.
//!
//! - **Services** ([`service`]): OpenAI-compatible moderation (`POST /v1/moderations`), a chat
//!   model guard (Llama Guard or any classifier served as chat completions), a webhook with a
//!   documented JSON contract, and a semantic prompt-injection check ([`similarity`]: the
//!   prompt's embedding against known attacks', shared with the semantic cache). Each is an
//!   HTTP callout to an Envoy cluster, with a timeout and a failure policy (`on_error`).
//! - **Decisions** ([`verdict`]): per category a threshold (moderation scores) and an action:
//!   `block` (a prompt gets 400 naming the guard and category; an answer is withheld with a
//!   content-filter stop), `flag` (facts and metrics), `redact` (the webhook's replacement text).
//! - **Prompts** ([`texts`]): every text of the conversation, in every API Sluice reads; the
//!   whole body is read (also when it ends in trailers); one that cannot be read is refused.
//! - **Answers**: JSON answers are checked whole; streams ([`screen`]) are held back until
//!   checked (`holdback`) or streamed and cut at a failed check (`cut`), per route
//!   ([`config::Route`]).
//! - **Per request** ([`filter`]): the glue between Envoy's callbacks and the above. This file
//!   holds the per-worker side: the configuration, and the similarity guards' examples,
//!   embedded once by the root context.
//!
//! With the semantic cache in the chain, run this module twice (one VM: same `.wasm`, same
//! `vm_config`): prompt guards before the cache, so a hit is never served to a blocked prompt,
//! and answer guards after it, so a withheld answer is never stored.
//!
//! Texts are never logged. Metrics: `sluice_guard_checks_total{guard,direction,result}`,
//! `sluice_guard_categories_total{guard,category,action,direction}`,
//! `sluice_guard_check_ms{guard,direction}`; facts: `sluice.guard.decision`,
//! `sluice.guard.categories`, `sluice.guard.flagged`, `sluice.guard.wait_ms`.

pub mod config;
mod filter;
mod screen;
pub mod service;
pub mod similarity;
pub mod texts;
pub mod verdict;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::HttpContext;
use sluice_shared::callout::{Callout, CalloutResponse};
use sluice_shared::metrics::MetricRegistry;
use sluice_shared::plugin::{self, Module};
use sluice_shared::proxy;

use crate::config::{Config, Kind};
use crate::filter::Filter;
use crate::similarity::Attacks;

const NAME: &str = "sluice.guard";
/// Distinct values kept per metric label (guards, categories).
const MAX_LABEL_VALUES: usize = 100;

sluice_shared::entry!(GuardModule);

/// What every request of a configuration shares.
struct Shared {
    config: Config,
    registry: RefCell<MetricRegistry>,
    /// Similarity guards' attack vectors, by guard index, once embedded.
    attacks: RefCell<BTreeMap<usize, Attacks>>,
}

struct GuardModule {
    shared: Option<Rc<Shared>>,
    /// Root callouts embedding attack examples: token -> (guard index, how many examples).
    loading: BTreeMap<u32, (usize, usize)>,
}

/// How often the examples are asked for until they are embedded.
const LOAD_RETRY: Duration = Duration::from_millis(200);

impl GuardModule {
    /// Similarity guards whose examples are not embedded yet.
    fn missing(&self) -> Vec<usize> {
        let Some(shared) = &self.shared else { return Vec::new() };
        let attacks = shared.attacks.borrow();
        (0..shared.config.guards.len())
            .filter(|i| shared.config.guards.get(*i).is_some_and(|g| g.kind == Kind::Similarity))
            .filter(|i| !attacks.contains_key(i))
            .collect()
    }
}

impl Module for GuardModule {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(_root_context_id: u32) -> Self {
        GuardModule { shared: None, loading: BTreeMap::new() }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        for guard in &config.guards {
            if guard.api_key_env.is_some() && guard.api_key().is_none() {
                log::warn!(
                    "{NAME}: guard `{}`: `api_key_env` is set but the variable is empty or not passed to the VM",
                    guard.name
                );
            }
        }
        let names: Vec<&str> = config.guards.iter().map(|g| g.name.as_str()).collect();
        log::info!("{NAME}: configured; guards [{}], streams {:?}", names.join(", "), config.stream.mode);
        let registry = RefCell::new(MetricRegistry::new(MAX_LABEL_VALUES));
        self.shared = Some(Rc::new(Shared { config, registry, attacks: RefCell::new(BTreeMap::new()) }));
        self.loading.clear();
        Ok(())
    }

    fn tick(&self) -> Option<Duration> {
        (!self.missing().is_empty()).then_some(LOAD_RETRY)
    }

    /// Embeds the attack examples of each similarity guard that has none yet (one callout each).
    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        for i in self.missing() {
            if self.loading.values().any(|(g, _)| *g == i) {
                continue;
            }
            let Some(guard) = shared.config.guards.get(i) else { continue };
            let examples = guard.attack_examples();
            let body = similarity::request_body(guard.model.as_deref(), &examples);
            let mut call = Callout::post(&guard.cluster, &guard.authority, guard.path(), "application/json", body)
                .timeout(Duration::from_millis(guard.timeout_ms.max(5_000)));
            if let Some(key) = guard.api_key() {
                call = call.header("authorization", &format!("Bearer {key}"));
            }
            match proxy::dispatch(&call) {
                Ok(token) => {
                    self.loading.insert(token, (i, examples.len()));
                }
                Err(e) => log::warn!("{NAME}: guard `{}`: examples not sent to be embedded: {e:?}", guard.name),
            }
        }
    }

    fn on_callout(&mut self, token: u32, response: &CalloutResponse) {
        let (Some(shared), Some((i, count))) = (self.shared.clone(), self.loading.remove(&token)) else { return };
        let name = shared.config.guards.get(i).map(|g| g.name.clone()).unwrap_or_default();
        let vectors = response.is_success().then(|| similarity::vectors(&response.body, count)).flatten();
        match vectors {
            Some(vectors) => {
                log::info!("{NAME}: guard `{name}`: {} examples embedded", vectors.len());
                shared.attacks.borrow_mut().insert(i, Attacks::new(vectors));
            }
            None => log::warn!(
                "{NAME}: guard `{name}`: the examples' embeddings failed (HTTP {}); retrying",
                response.status
            ),
        }
    }

    fn filter(&self, _context_id: u32) -> Box<dyn HttpContext> {
        let Some(shared) = self.shared.clone() else { return plugin::unconfigured::<Self>() };
        plugin::stream(Filter::new(shared))
    }
}
