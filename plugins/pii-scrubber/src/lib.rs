//! # Sluice PII scrubber
//!
//! Keeps sensitive data out of prompts and answers.
//!
//! - **Detect** ([`detect`]): email, phone numbers, payment cards (Luhn), US SSNs, IBANs
//!   (mod-97), IP addresses, secrets (AWS keys, OpenAI and Anthropic keys, GitHub tokens, JWTs,
//!   private keys), plus custom patterns and word lists.
//! - **Act** ([`scrub`]), per entity type: redact to a placeholder (`<EMAIL_1>`), mask, hash, or
//!   block the request (400 naming the entity types, never the values). Every string value
//!   anywhere in the body is scanned ([`request`]), structural members (`model`, `role`, ids)
//!   and the messages of roles left out of `roles` aside; base64 text payloads are decoded and
//!   scanned; a body with a duplicate member name is refused. The whole body is decided on,
//!   also when the request ends in trailers.
//! - **Restore** ([`answer`], [`text_stream`]): placeholders in the answer get their values back,
//!   in JSON answers and SSE streams, even split across events.
//! - **Output scanning**: sensitive data in an answer that the prompt did not hold is redacted or
//!   withholds the answer (`finish_reason: content_filter`).
//! - **Guards** ([`guard`]): prompt-injection heuristics and banned patterns (flag or block), and
//!   a `response_format` JSON check on answers (flag or reject).
//!
//! Values are never logged. Metrics: `sluice_pii_detections_total{entity,action}` and
//! `sluice_guard_total{rule,action}`; facts: `sluice.pii.detections`, `sluice.pii.entities`,
//! `sluice.guard.flagged`.

mod answer;
pub mod config;
pub mod detect;
mod guard;
mod request;
pub mod scrub;
mod text_stream;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Action;
use sluice_shared::api::Api;
use sluice_shared::errors::ApiError;
use sluice_shared::facts;
use sluice_shared::metrics::{self, MetricRegistry};
use sluice_shared::plugin::{self, Module};
use sluice_shared::proxy::{self, Host};
use sluice_shared::sse::{self, SseParser};

use crate::answer::Answer;
use crate::config::{Config, FormatAction, GuardAction, OutputAction};
use crate::guard::Guard;
use crate::scrub::{Scrubber, Tally, Vault};
use crate::text_stream::Answering;

const NAME: &str = "sluice.pii_scrubber";
/// Longest SSE line accepted from the provider.
const MAX_SSE_LINE: usize = 4 << 20;
/// Distinct values kept per metric label (entity types, rules).
const MAX_LABEL_VALUES: usize = 100;

sluice_shared::entry!(PiiScrubber);

/// What every request of a configuration shares.
struct Shared {
    config: Config,
    scrubber: Scrubber,
    guard: Guard,
    registry: RefCell<MetricRegistry>,
}

struct PiiScrubber {
    shared: Option<Rc<Shared>>,
}

impl Module for PiiScrubber {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(_root_context_id: u32) -> Self {
        PiiScrubber { shared: None }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        let built = Scrubber::new(&config)
            .and_then(|s| Ok((s, Guard::new(config.injection.heuristics, &config.injection.deny)?)));
        let (scrubber, guard) = built.map_err(|e| e.to_string())?;
        if config.hash_salt_env.is_some() && config.salt().is_empty() {
            log::warn!("{NAME}: `hash_salt_env` is set but the variable is empty or not passed to the VM");
        }
        log::info!(
            "{NAME}: configured; restore {}, output {:?}, injection {:?}, response_format {:?}",
            config.restore,
            config.output,
            config.injection.action,
            config.response_format
        );
        let registry = RefCell::new(MetricRegistry::new(MAX_LABEL_VALUES));
        self.shared = Some(Rc::new(Shared { config, scrubber, guard, registry }));
        Ok(())
    }

    fn filter(&self, _context_id: u32) -> Box<dyn HttpContext> {
        let Some(shared) = self.shared.clone() else { return plugin::unconfigured::<Self>() };
        plugin::stream(Filter { shared, api: None, vault: Vault::default(), answer: None, tally: Tally::default() })
    }
}

/// How an answer is processed.
enum Reading {
    Json(Answer),
    Stream(Box<(SseParser, Answer)>),
}

/// One request's glue.
struct Filter {
    shared: Rc<Shared>,
    api: Option<Api>,
    vault: Vault,
    answer: Option<Reading>,
    tally: Tally,
}

impl Filter {
    fn count(&self, tally: &Tally) {
        let mut registry = self.shared.registry.borrow_mut();
        for ((entity, action), n) in &tally.counts {
            registry.add(&Host, metrics::PII_DETECTIONS_TOTAL, &[("entity", entity), ("action", action)], *n);
        }
    }

    fn guard_hit(&self, rules: &[String], action: &str) {
        let mut registry = self.shared.registry.borrow_mut();
        for rule in rules {
            registry.add(&Host, metrics::GUARD_TOTAL, &[("rule", rule), ("action", action)], 1);
        }
        let earlier = facts::read(&Host, facts::GUARD_FLAGGED);
        let all: Vec<String> = earlier.into_iter().chain(rules.iter().cloned()).collect();
        facts::publish(&Host, facts::GUARD_FLAGGED, &all.join(","));
    }

    fn answering(&self) -> bool {
        let c = &self.shared.config;
        (c.restore && !self.vault.is_empty()) || c.output != OutputAction::Off
    }

    /// Scans a complete request body; answers it locally when it must not pass.
    fn scan_request(&mut self, body: &[u8], body_size: usize) -> Action {
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let scanned = match request::scan(body, &shared.scrubber, &config.roles) {
            Ok(scanned) => scanned,
            Err(_) => {
                // Unreadable text cannot be scanned, and no provider would accept it either.
                proxy::send_error(&ApiError::bad_request("The request body is not a valid JSON object."));
                return Action::Pause;
            }
        };
        self.count(&scanned.tally);
        let total: u64 = scanned.tally.counts.values().sum();
        if total > 0 {
            let entities: Vec<&str> = scanned
                .tally
                .counts
                .keys()
                .map(|(e, _)| e.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            facts::publish(&Host, facts::PII_DETECTIONS, &total.to_string());
            facts::publish(&Host, facts::PII_ENTITIES, &entities.join(","));
        }
        if !scanned.tally.blocked.is_empty() {
            let types: Vec<&str> = scanned.tally.blocked.iter().map(String::as_str).collect();
            proxy::send_error(
                &ApiError::bad_request(format!(
                    "The request contains sensitive data that may not be sent: {}.",
                    types.join(", ")
                ))
                .with_code("sensitive_data_detected"),
            );
            return Action::Pause;
        }
        if config.injection.action != GuardAction::Off {
            let rules = shared.guard.check(&scanned.user_texts);
            if !rules.is_empty() {
                let action = if config.injection.action == GuardAction::Block { "block" } else { "flag" };
                self.guard_hit(&rules, action);
                if action == "block" {
                    proxy::send_error(
                        &ApiError::bad_request(format!(
                            "The request was refused by the prompt guard ({}).",
                            rules.join(", ")
                        ))
                        .with_code("prompt_guard"),
                    );
                    return Action::Pause;
                }
            }
        }
        if let Some(new_body) = &scanned.body {
            if !proxy::replace_request_body(body_size, new_body) {
                // The unscrubbed text must not leave: refuse rather than pass it.
                proxy::send_error(&ApiError::unavailable("The request could not be scrubbed."));
                return Action::Pause;
            }
        }
        if config.log_prompt {
            if let Some(last) = scanned.sent_user_texts.last() {
                let cut: String = last.chars().take(config.log_prompt_chars).collect();
                facts::publish(&Host, facts::REQUEST_PROMPT, &cut);
            }
        }
        self.vault = scanned.vault;
        let format =
            (scanned.wants_json && config.response_format != FormatAction::Off).then_some(config.response_format);
        if self.answering() || format.is_some() {
            self.answer = Some(Reading::Json(Answer::new(format)));
        }
        Action::Continue
    }

    fn finish_answer(&mut self, answer: &Answer) {
        let tally = std::mem::take(&mut self.tally);
        self.count(&tally);
        if answer.format_violation {
            let action = if self.shared.config.response_format == FormatAction::Reject { "reject" } else { "flag" };
            self.guard_hit(&["response_format".to_string()], action);
        }
    }
}

impl plugin::Filter for Filter {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let method = proxy::request_header_text(":method").unwrap_or_default();
        let path = proxy::request_header_text(":path").unwrap_or_default();
        self.api = if method == "POST" && !end_of_stream { Api::from_path(&path) } else { None };
        if self.api.is_some() {
            // The body may change length; answers are read as they come, so uncompressed.
            proxy::remove_request_header("content-length");
            proxy::remove_request_header("accept-encoding");
        }
        Action::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        self.api.map(|_| self.shared.config.max_request_bytes)
    }

    /// A body the scrubber cannot scan must not reach a provider: refused.
    fn on_body_too_large(&mut self, limit: usize) -> Action {
        self.api = None;
        proxy::send_error(&ApiError::payload_too_large(format!(
            "The request body exceeds the {limit} bytes the PII scrubber scans."
        )));
        Action::Pause
    }

    fn on_request_body(&mut self, body: Vec<u8>, size: usize) -> Action {
        self.api = None;
        self.scan_request(&body, size)
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        let Some(Reading::Json(answer)) = self.answer.take() else { return Action::Continue };
        let content_type = proxy::response_header_text("content-type").unwrap_or_default().to_ascii_lowercase();
        let encoded =
            proxy::response_header_text("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity"));
        if encoded {
            log::warn!("{NAME}: a compressed answer cannot be restored or scanned; passed as it is");
            return Action::Continue;
        }
        if content_type.starts_with("text/event-stream") {
            self.answer = Some(Reading::Stream(Box::new((SseParser::new(MAX_SSE_LINE), answer))));
        } else if content_type.contains("json") {
            self.answer = Some(Reading::Json(answer));
        } else {
            return Action::Continue;
        }
        proxy::remove_response_header("content-length");
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(reading) = self.answer.take() else { return Action::Continue };
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let scan = (config.output != OutputAction::Off).then_some((&shared.scrubber, config.output));
        let vault = std::mem::take(&mut self.vault);
        let a = Answering { vault: &vault, restore: config.restore, scan };
        let next = match reading {
            Reading::Json(mut answer) => {
                if body_size > config.max_response_bytes {
                    log::warn!("{NAME}: answer larger than `max_response_bytes`; passed as it is");
                    self.vault = vault;
                    return Action::Continue;
                }
                if !end_of_stream {
                    self.vault = vault;
                    self.answer = Some(Reading::Json(answer));
                    return Action::Pause;
                }
                let mut tally = std::mem::take(&mut self.tally);
                let body = proxy::response_body(body_size).unwrap_or_default();
                if let Some(new_body) = answer.json(&body, &a, &mut tally) {
                    if !proxy::replace_response_body(body_size, &new_body) {
                        log::warn!("{NAME}: could not replace the answer");
                    }
                }
                self.tally = tally;
                self.finish_answer(&answer);
                None
            }
            Reading::Stream(mut state) => {
                let mut tally = std::mem::take(&mut self.tally);
                let (parser, answer) = &mut *state;
                let chunk = proxy::response_body(body_size).unwrap_or_default();
                let mut events = parser.push(&chunk);
                if end_of_stream {
                    events.extend(parser.finish());
                }
                let mut out = String::new();
                let mut emitted = Vec::new();
                for event in events {
                    emitted.extend(answer.event(event.event.as_deref(), &event.data, &a, &mut tally));
                }
                if end_of_stream {
                    emitted.extend(answer.finish(&a, &mut tally));
                }
                for (name, data) in emitted {
                    sse::write_event(&mut out, name.as_deref(), &data);
                }
                if !proxy::replace_response_body(body_size, out.as_bytes()) {
                    log::warn!("{NAME}: could not replace a stream chunk");
                }
                self.tally = tally;
                if end_of_stream {
                    self.finish_answer(answer);
                    None
                } else {
                    Some(Reading::Stream(state))
                }
            }
        };
        self.vault = vault;
        self.answer = next;
        Action::Continue
    }
}
