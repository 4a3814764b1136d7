//! # Sluice provider adapter
//!
//! An upstream (cluster-level) filter in each provider cluster, so it runs once per attempt:
//! a retry or a fallback to this cluster is adapted for this cluster's provider.
//!
//! - **Credentials**: the provider key from config or environment replaces whatever the
//!   request carried (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic).
//! - **Anthropic** ([`anthropic`]): an OpenAI chat request (`/v1/chat/completions`) is sent as a
//!   Messages request (`/v1/messages`); the answer comes back as OpenAI JSON, or as OpenAI chunks
//!   event by event for a stream, usage included. Native `/v1/messages` requests pass as they are.
//!
//! Logic is plain Rust in [`anthropic`] and [`config`]; this file is the proxy-wasm glue.

pub mod anthropic;
pub mod config;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use sluice_shared::api::Api;
use sluice_shared::errors::ApiError;
use sluice_shared::host::Clock;
use sluice_shared::proxy::{self, Host};
use sluice_shared::sse::SseParser;

use crate::anthropic::StreamTranslator;
use crate::config::{Config, Schema};

const NAME: &str = "sluice.provider_adapter";
/// Longest SSE line accepted from the provider.
const MAX_SSE_LINE: usize = 4 << 20;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Adapter::default()) });
}}

#[derive(Default)]
struct Adapter {
    config: Rc<Config>,
    credential: Rc<Option<String>>,
}

impl Context for Adapter {}

impl RootContext for Adapter {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = proxy::load_config::<Config>(NAME) else { return false };
        let credential = config.credential();
        if config.api_key_env.is_some() && credential.is_none() {
            proxy::warn(&format!("{NAME}: `api_key_env` is set but the variable is empty or not passed to the VM"));
        }
        proxy::info(&format!(
            "{NAME}: configured for {:?}; credential {}",
            config.schema,
            if credential.is_some() { "set" } else { "from the request" }
        ));
        self.credential = Rc::new(credential);
        self.config = Rc::new(config);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Attempt {
            config: Rc::clone(&self.config),
            credential: Rc::clone(&self.credential),
            translating: false,
            include_usage: false,
            answer: Answer::Untouched,
        }))
    }
}

/// How the answer is being translated.
enum Answer {
    Untouched,
    Json,
    Stream(Box<StreamState>),
}

struct StreamState {
    parser: SseParser,
    translator: StreamTranslator,
}

/// One attempt's glue.
struct Attempt {
    config: Rc<Config>,
    credential: Rc<Option<String>>,
    /// An OpenAI chat request sent to an Anthropic provider.
    translating: bool,
    include_usage: bool,
    answer: Answer,
}

impl Attempt {
    fn created() -> u64 {
        Host.now_ms() / 1000
    }
}

impl Context for Attempt {}

impl HttpContext for Attempt {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let path = proxy::request_header_text(":path").unwrap_or_default();
        match self.config.schema {
            Schema::Openai => {
                if let Some(key) = self.credential.as_deref() {
                    proxy::set_request_header("authorization", &format!("Bearer {key}"));
                }
            }
            Schema::Anthropic => {
                if let Some(key) = self.credential.as_deref() {
                    proxy::remove_request_header("authorization");
                    proxy::set_request_header("x-api-key", key);
                }
                proxy::set_request_header("anthropic-version", &self.config.anthropic_version);
                if Api::from_path(&path) == Some(Api::ChatCompletions) && !end_of_stream {
                    self.translating = true;
                    proxy::set_request_path("/v1/messages");
                    proxy::remove_request_header("content-length");
                    // Answers are translated as they come: they must not be compressed.
                    proxy::remove_request_header("accept-encoding");
                }
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.translating {
            return Action::Continue;
        }
        if body_size > self.config.max_request_bytes {
            self.translating = false;
            proxy::send_error(&ApiError::payload_too_large("The request body is too large to translate."));
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = proxy::request_body(body_size).unwrap_or_default();
        let openai: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let model = openai.get("model").and_then(|m| m.as_str()).unwrap_or_default().to_string();
        self.include_usage = openai
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        match anthropic::request(&openai, &model, self.config.default_max_tokens) {
            Ok(translated) => {
                let bytes = serde_json::to_vec(&translated).unwrap_or_default();
                if !proxy::replace_request_body(body_size, &bytes) {
                    proxy::warn(&format!("{NAME}: could not replace the request body"));
                }
                Action::Continue
            }
            Err(e) => {
                self.translating = false;
                proxy::send_error(&ApiError::bad_request(format!("The request cannot be sent to Anthropic: {e}")));
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if !self.translating {
            return Action::Continue;
        }
        let content_type = proxy::response_header_text("content-type").unwrap_or_default();
        self.answer = if content_type.starts_with("text/event-stream") {
            Answer::Stream(Box::new(StreamState {
                parser: SseParser::new(MAX_SSE_LINE),
                translator: StreamTranslator::new(Self::created(), self.include_usage),
            }))
        } else {
            proxy::set_response_header("content-type", "application/json");
            Answer::Json
        };
        proxy::remove_response_header("content-length");
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.answer {
            Answer::Untouched => Action::Continue,
            Answer::Json => {
                if body_size > self.config.max_response_bytes {
                    self.answer = Answer::Untouched;
                    proxy::warn(&format!("{NAME}: answer too large to translate; passed as is"));
                    return Action::Continue;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = proxy::response_body(body_size).unwrap_or_default();
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let translated = serde_json::to_vec(&anthropic::response(&value, Self::created())).unwrap_or_default();
                if !proxy::replace_response_body(body_size, &translated) {
                    proxy::warn(&format!("{NAME}: could not replace the answer body"));
                }
                Action::Continue
            }
            Answer::Stream(state) => {
                let StreamState { parser, translator } = &mut **state;
                let chunk = proxy::response_body(body_size).unwrap_or_default();
                let mut out = String::new();
                let mut events = parser.push(&chunk);
                if end_of_stream {
                    events.extend(parser.finish());
                }
                let mut payloads: Vec<String> = events.iter().flat_map(|e| translator.event(&e.data)).collect();
                if end_of_stream {
                    payloads.extend(translator.finish());
                }
                for payload in payloads {
                    out.push_str("data: ");
                    out.push_str(&payload);
                    out.push_str("\n\n");
                }
                if !proxy::replace_response_body(body_size, out.as_bytes()) {
                    proxy::warn(&format!("{NAME}: could not replace a stream chunk"));
                }
                Action::Continue
            }
        }
    }
}
