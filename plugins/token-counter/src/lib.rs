//! # Sluice token counter
//!
//! Counts prompt, completion, cached and reasoning tokens and their cost for every LLM call
//! that passes, and publishes them as facts (for other modules and access logs) and metrics.
//!
//! - **Request:** `POST`s to the OpenAI and Anthropic APIs are read whole; the prompt estimate
//!   is published at once (`sluice.usage.prompt_estimate`). Streaming OpenAI requests are asked
//!   to end with a usage chunk (`request_stream_usage`).
//! - **Answer:** read as it passes, never held back: JSON answers are copied, SSE streams
//!   tallied event by event. Provider usage is used when given; otherwise the generated text is
//!   counted with the model's tokenizer. Cut streams are charged for what streamed.
//! - **Anything else** (other paths, compressed or non-JSON bodies) passes untouched and is
//!   counted in `sluice_passthrough_total{reason}`.
//!
//! Logic lives in [`exchange`] (plain Rust); this file is only the proxy-wasm glue.

mod config;
mod exchange;
mod report;
mod stream_usage;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Action;
use sluice_shared::chain;
use sluice_shared::facts;
use sluice_shared::host::Clock;
use sluice_shared::metrics::MetricRegistry;
use sluice_shared::plugin::{self, Module};
use sluice_shared::pricing::PriceTable;
use sluice_shared::proxy::{self, Host};

use crate::config::Config;
use crate::exchange::Exchange;

const NAME: &str = "sluice.token_counter";

sluice_shared::entry!(TokenCounter);

/// Per-VM state: the configuration and the metric ids, shared by every request of this worker.
struct Settings {
    config: Config,
    prices: PriceTable,
    /// Envoy's log level for wasm allowed debug lines at configure time.
    debug_logging: bool,
}

struct TokenCounter {
    settings: Rc<Settings>,
    registry: Rc<RefCell<MetricRegistry>>,
}

impl Module for TokenCounter {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(_root_context_id: u32) -> Self {
        let config = Config::default();
        TokenCounter {
            registry: Rc::new(RefCell::new(MetricRegistry::new(config.max_label_values))),
            settings: Rc::new(Settings {
                prices: PriceTable::with_overrides(&config.prices),
                config,
                debug_logging: false,
            }),
        }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        let started = Host.now_ms();
        for encoding in &config.preload_encodings {
            encoding.preload();
        }
        log::info!(
            "{NAME}: configured; preloaded {:?} in {} ms; this VM's linear memory {} KiB",
            config.preload_encodings.iter().map(|e| e.name()).collect::<Vec<_>>(),
            Host.now_ms().saturating_sub(started),
            proxy::linear_memory_bytes() / 1024
        );
        self.registry = Rc::new(RefCell::new(MetricRegistry::new(config.max_label_values)));
        let debug_logging = proxy::debug_enabled();
        self.settings = Rc::new(Settings { prices: PriceTable::with_overrides(&config.prices), config, debug_logging });
        Ok(())
    }

    fn filter(&self, _context_id: u32) -> Box<dyn HttpContext> {
        plugin::stream(Filter {
            settings: Rc::clone(&self.settings),
            registry: Rc::clone(&self.registry),
            exchange: None,
            compressed: false,
        })
    }
}

/// Where an exchange ended, which decides what may still be sent to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The answer had no body.
    Headers,
    /// The answer's last body chunk.
    Body,
    /// The answer's trailers.
    Trailers,
    /// Never completed (reset, cancelled): only the log remains.
    Log,
}

/// One request's glue: hands host events to its [`Exchange`] and publishes the outcome.
struct Filter {
    settings: Rc<Settings>,
    registry: Rc<RefCell<MetricRegistry>>,
    exchange: Option<Exchange>,
    /// The request body is compressed: it is not read.
    compressed: bool,
}

impl Filter {
    fn config(&self) -> &Config {
        &self.settings.config
    }

    fn finish(&mut self, end: End) {
        let Some(exchange) = self.exchange.as_mut() else { return };
        let completed = end != End::Log;
        let Some(outcome) = exchange.finish(Host.now_ms(), completed, &self.settings.config) else { return };
        let cost = report::publish_outcome(
            &Host,
            &mut self.registry.borrow_mut(),
            &self.settings.prices,
            &self.settings.config,
            &outcome,
        );
        if outcome.api.is_some() && self.settings.debug_logging {
            log::debug!(
                "{NAME}: model={} prompt={} completion={} cached={} source={} cost_usd={} status={}",
                outcome.request_model.as_deref().unwrap_or("-"),
                outcome.usage.prompt,
                outcome.usage.completion,
                outcome.usage.cached,
                outcome.source.name(),
                cost.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                outcome.status,
            );
        }
        // Envoy has a trailer map only while the body or trailers pass (the SDK traps otherwise).
        let trailers_possible = matches!(end, End::Body | End::Trailers);
        if trailers_possible && self.settings.config.response_headers && outcome.api.is_some() {
            let u = outcome.usage;
            proxy::add_response_trailer("x-sluice-prompt-tokens", &u.prompt.to_string());
            proxy::add_response_trailer("x-sluice-completion-tokens", &u.completion.to_string());
            proxy::add_response_trailer("x-sluice-total-tokens", &u.prompt.saturating_add(u.completion).to_string());
            if let Some(cost) = cost {
                proxy::add_response_trailer("x-sluice-cost-usd", &cost.to_string());
            }
        }
    }
}

impl plugin::Filter for Filter {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let method = proxy::request_header_text(":method");
        let path = proxy::request_header_text(":path");
        let mut exchange = Exchange::start(method.as_deref(), path.as_deref(), Host.now_ms());
        if exchange.api().is_some() {
            let encoding = proxy::request_header_text("content-encoding").unwrap_or_default();
            if !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity") {
                exchange.skip_request("compressed_request");
                self.compressed = true;
            } else if !end_of_stream && exchange.may_rewrite_request(self.config()) {
                // Headers go upstream before the body is read: a body we may rewrite cannot
                // keep its length.
                proxy::remove_request_header("content-length");
            }
        }
        self.exchange = Some(exchange);
        Action::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        let reads = self.exchange.as_ref().is_some_and(|e| e.api().is_some()) && !self.compressed;
        reads.then_some(self.config().max_request_bytes)
    }

    /// The counter is no gate: a body it cannot read passes, counted as a passthrough.
    fn on_body_too_large(&mut self, _limit: usize) -> Action {
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.skip_request("too_large_request");
        }
        Action::Continue
    }

    fn on_request_body(&mut self, body: Vec<u8>, size: usize) -> Action {
        let Some(exchange) = self.exchange.as_mut() else { return Action::Continue };
        let decision = exchange.on_request_body(body, report::published_estimate(&Host), &self.settings.config);
        if let Some(summary) = &decision.summary {
            report::publish_request(&Host, summary, decision.estimate);
        }
        if let Some(new_body) = decision.new_body {
            if !proxy::replace_request_body(size, &new_body) {
                log::warn!("{NAME}: could not rewrite the request body; usage may be counted");
            }
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        let status = proxy::response_status();
        let content_type = proxy::response_header_text("content-type");
        let content_encoding = proxy::response_header_text("content-encoding");
        let response_headers = self.config().response_headers;
        let answered_by = proxy::response_header_text(chain::ANSWERED_BY);
        if facts::served_from_cache(&Host) {
            // Answered by the semantic cache: no provider generated (or billed) these tokens.
            self.exchange = None;
            return Action::Continue;
        }
        let Some(exchange) = self.exchange.as_mut() else { return Action::Continue };
        exchange.answered_by = answered_by;
        exchange.on_answer_headers(status, content_type.as_deref(), content_encoding.as_deref(), &self.settings.config);
        if let (true, Some(estimate)) = (response_headers, exchange.prompt_estimate()) {
            proxy::set_response_header("x-sluice-prompt-tokens-estimate", &estimate.to_string());
            // The counts follow as trailers, which a body of fixed length cannot carry.
            proxy::remove_response_header("content-length");
        }
        if end_of_stream {
            self.finish(End::Headers);
        }
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.as_mut() else { return Action::Continue };
        let chunk = if exchange.reads_answer() && body_size > 0 { proxy::response_body(body_size) } else { None };
        exchange.on_answer_chunk(chunk.as_deref().unwrap_or_default(), body_size, &Host, &self.settings.config);
        if end_of_stream {
            self.finish(End::Body);
        }
        Action::Continue
    }

    fn on_response_trailers(&mut self) -> Action {
        self.finish(End::Trailers);
        Action::Continue
    }

    fn on_log(&mut self) {
        // Reached without the answer's end: the stream was reset or the client went away.
        self.finish(End::Log);
    }
}
