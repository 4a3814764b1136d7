//! # Sluice provider adapter
//!
//! An upstream (cluster-level) filter, so it runs once per attempt: a retry or a fallback is
//! adapted for the provider that attempt reaches.
//!
//! - **Default deny** ([`attempt::admitted`]): only a request the gateway classified (an LLM API
//!   call, the model list) or a configured `passthrough` path goes out, with a credential;
//!   anything else gets 404. Every internal `x-sluice-*` header is removed first.
//! - **Provider** ([`attempt::provider`]): the only one configured, or in a fallback chain (an
//!   aggregate cluster, where each attempt may reach another provider) the one the chosen
//!   endpoint names in its metadata (`filter_metadata.sluice.provider`).
//! - **Credentials**: the provider's key from config or environment replaces whatever the
//!   request carried, and no other provider's key is left on it.
//! - **Model**: in a chain, the body names each provider's model (`sluice_models`, written by
//!   the model rewriter); the attempt's entry becomes `model` and the member is removed.
//! - **Schemas** (`sluice_shared::translate`): a request is sent in its provider's schema or
//!   refused ([`attempt::unspoken`]). An OpenAI chat or Responses request to an Anthropic
//!   provider goes as a Messages request, an Anthropic Messages request to an OpenAI provider as
//!   a chat request, any of the three to a Gemini provider as `generateContent` (to Bedrock as
//!   Converse, its event-stream answers decoded with checksums) at the path of the model the rewriter
//!   routed to (its facts `sluice.route.models` and `sluice.route.stream`: the path is set
//!   before the body arrives); the answer comes back in the client's schema, JSON whole, a
//!   stream event by event, usage and errors included. A request in its provider's own schema
//!   passes as it is.
//! - **Answered by**: the `x-sluice-provider` response header names the provider; every
//!   attempt (provider, model, status, time to its answer) is added to `sluice.attempt.history`.
//!
//! Logic is plain Rust in [`attempt`], [`config`] and the shared translators; this file is the
//! glue.

mod attempt;
mod config;

use std::collections::BTreeMap;
use std::rc::Rc;

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Action;
use sluice_shared::api::{without_query_param, Api, Class};
use sluice_shared::chain;
use sluice_shared::errors::ApiError;
use sluice_shared::eventstream;
use sluice_shared::facts;
use sluice_shared::host::{Clock, Properties};
use sluice_shared::plugin::{self, Module};
use sluice_shared::proxy::{self, Host};
use sluice_shared::sse::{self, SseParser};
use sluice_shared::translate::{Event, StreamReader, StreamWriter, Wire};

use crate::attempt::{Ended, Seen, Translation};
use crate::config::Config;

const NAME: &str = "sluice.provider_adapter";
/// Longest SSE line (or AWS event-stream message) accepted from the provider.
const MAX_SSE_LINE: usize = 4 << 20;
/// Bedrock's stream content type.
const AWS_EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
/// Where an endpoint names its provider.
const ENDPOINT_PROVIDER: [&str; 5] = ["xds", "upstream_host_metadata", "filter_metadata", "sluice", "provider"];

sluice_shared::entry!(ProviderAdapter);

struct ProviderAdapter {
    config: Rc<Config>,
    /// Each provider's credential, read once from config or environment.
    credentials: Rc<BTreeMap<String, String>>,
}

impl Module for ProviderAdapter {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(_root_context_id: u32) -> Self {
        ProviderAdapter { config: Rc::default(), credentials: Rc::default() }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        let mut credentials = BTreeMap::new();
        let mut described = Vec::new();
        for (name, provider) in &config.providers {
            let credential = provider.credential();
            if provider.api_key_env.is_some() && credential.is_none() {
                log::warn!(
                    "{NAME}: provider `{name}`: `api_key_env` is set but the variable is empty or not passed to the VM"
                );
            }
            let source = if credential.is_some() { "credential set" } else { "credential from the request" };
            described.push(format!("{name} ({:?}, {source})", provider.schema));
            if let Some(key) = credential {
                credentials.insert(name.clone(), key);
            }
        }
        if config.providers.is_empty() {
            log::warn!("{NAME}: no providers configured; requests pass unchanged");
        }
        log::info!("{NAME}: configured: {}", described.join(", "));
        self.credentials = Rc::new(credentials);
        self.config = Rc::new(config);
        Ok(())
    }

    fn filter(&self, _context_id: u32) -> Box<dyn HttpContext> {
        plugin::stream(Filter {
            config: Rc::clone(&self.config),
            credentials: Rc::clone(&self.credentials),
            provider: None,
            read_body: false,
            translation: None,
            include_usage: false,
            path_stream: None,
            model: String::new(),
            gemini: None,
            count_here: false,
            status: 0,
            answer: Answer::Untouched,
            started_ms: 0,
            sent_model: None,
            logged: false,
        })
    }
}

/// How the answer is being translated.
enum Answer {
    Untouched,
    Json,
    Stream(Box<StreamState>),
}

struct StreamState {
    framing: Framing,
    reader: Box<dyn StreamReader>,
    writer: Box<dyn StreamWriter>,
}

/// How the provider's stream is framed.
enum Framing {
    Sse(SseParser),
    /// AWS event-stream (Bedrock), binary and checksummed.
    Aws(eventstream::Decoder),
}

impl Framing {
    /// The (event name, data) pairs a chunk completes; at the end, what a cut or corrupt
    /// stream leaves is reported as an error event for the client.
    fn events(&mut self, chunk: &[u8], end: bool) -> Vec<(Option<String>, String)> {
        match self {
            Framing::Sse(parser) => {
                let mut events = parser.push(chunk);
                if end {
                    events.extend(parser.finish());
                }
                events.into_iter().map(|e| (e.event, e.data)).collect()
            }
            Framing::Aws(decoder) => {
                let was_broken = decoder.broken().is_some();
                let mut events: Vec<(Option<String>, String)> = decoder
                    .push(chunk)
                    .into_iter()
                    .map(|m| (Some(m.event_type), String::from_utf8_lossy(&m.payload).into_owned()))
                    .collect();
                if (decoder.broken().is_some() && !was_broken) || (end && decoder.pending() > 0) {
                    log::warn!("{NAME}: the provider's event stream is corrupt or cut ({:?})", decoder.broken());
                    let message = r#"{"message":"The provider's stream was corrupt or cut."}"#;
                    events.push((Some("internalServerException".into()), message.into()));
                }
                events
            }
        }
    }
}

/// One attempt's glue.
struct Filter {
    config: Rc<Config>,
    credentials: Rc<BTreeMap<String, String>>,
    /// The provider this attempt reaches.
    provider: Option<String>,
    /// The body must be prepared (chain model, translation).
    read_body: bool,
    /// The request is sent in another schema, and its answer comes back translated.
    translation: Option<Translation>,
    /// A translated request's client wants usage at the end of its stream.
    include_usage: bool,
    /// The attempt's path says whether the answer streams (Gemini, Bedrock).
    path_stream: Option<bool>,
    /// The model the path names, for answers that do not name theirs (Bedrock's).
    model: String,
    /// The client speaks Gemini (its model and stream are in its path).
    gemini: Option<attempt::GeminiClient>,
    /// A count of tokens answered here (the provider cannot count them).
    count_here: bool,
    /// The answer's status.
    status: u16,
    answer: Answer,
    /// When the attempt started (ms), and the model it asks for, for the request's history.
    started_ms: u64,
    sent_model: Option<String>,
    /// The attempt is in the history (or, refused here, not one to list).
    logged: bool,
}

impl Filter {
    fn created() -> u64 {
        Host.now_ms() / 1000
    }

    fn fail(&mut self, error: &ApiError) -> Action {
        self.read_body = false;
        self.translation = None;
        // Refused here: the answer says why; no provider was tried.
        self.logged = true;
        proxy::send_error(error);
        Action::Pause
    }

    /// Adds this attempt to the request's history (`sluice.attempt.history`), once.
    fn log_attempt(&mut self, ended: Ended) {
        let Some(provider) = self.provider.as_deref() else { return };
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let model = self
            .sent_model
            .clone()
            .or_else(|| (!self.model.is_empty()).then(|| self.model.clone()))
            .or_else(|| facts::read(&Host, facts::ROUTE_MODEL))
            .or_else(|| facts::read(&Host, facts::REQUEST_MODEL))
            .unwrap_or_default();
        let ms = Host.now_ms().saturating_sub(self.started_ms);
        let history = facts::read(&Host, facts::ATTEMPT_HISTORY);
        if let Some(history) = attempt::with_attempt(history.as_deref(), provider, &model, ended, ms) {
            facts::publish(&Host, facts::ATTEMPT_HISTORY, &history);
        }
    }
}

impl plugin::Filter for Filter {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        // Default deny: a credential goes only with a request the gateway classified.
        let path = proxy::request_header_text(":path").unwrap_or_default();
        let method = proxy::request_header_text(":method").unwrap_or_default();
        let marked = facts::read(&Host, facts::ATTEMPT_API).and_then(|name| Api::from_name(&name));
        if !attempt::admitted(&self.config, &method, &path, marked) {
            return self.fail(&ApiError::not_found("Unknown request URL.").with_code("unknown_url"));
        }
        let endpoint_provider = Host.get_property(&ENDPOINT_PROVIDER).and_then(|b| String::from_utf8(b).ok());
        let found = attempt::provider(&self.config, endpoint_provider.as_deref());
        // Internal headers never leave the gateway (nor AWS's, from a client, to Bedrock).
        for name in proxy::request_header_names() {
            if attempt::foreign_header(found.as_ref().ok().map(|(_, p)| *p), &name) {
                proxy::remove_request_header(&name);
            }
        }
        if self.config.providers.is_empty() {
            return Action::Continue;
        }
        let (name, provider) = match found {
            Ok(found) => found,
            Err(reason) => {
                log::error!("{NAME}: {reason}");
                return self.fail(&ApiError::bad_gateway("The gateway has no adapter configured for this provider."));
            }
        };
        // Only a provider with the model in its path, or a Gemini client, needs the route's
        // facts (two host calls), and only a Gemini client its own path once an earlier
        // attempt changed it.
        let gemini_client = Class::of(&method, &path).api().or(marked) == Some(Api::GeminiGenerate);
        let (models, stream) = if provider.model_in_path() || gemini_client {
            (
                facts::read(&Host, facts::ROUTE_MODELS),
                facts::read(&Host, facts::ROUTE_STREAM).as_deref() == Some("true"),
            )
        } else {
            (None, false)
        };
        let client_path =
            if marked == Some(Api::GeminiGenerate) { facts::read(&Host, facts::ATTEMPT_PATH) } else { None };
        let seen = Seen {
            method: &method,
            path: &path,
            marked,
            client_path: client_path.as_deref(),
            has_body: !end_of_stream,
            models: models.as_deref(),
            stream,
        };
        if let Some(why) = attempt::unspoken(name, provider, &seen) {
            return self.fail(&ApiError::bad_request(why).with_code("unsupported_api").with_param("model"));
        }
        let credential = self.credentials.get(name).map(String::as_str);
        let plan = match attempt::plan(&self.config, name, provider, credential, &seen) {
            Ok(plan) => plan,
            Err(why) => {
                let message = format!("The request cannot be sent: {why}.");
                return self.fail(&ApiError::bad_request(message).with_code("model_not_routable").with_param("model"));
            }
        };
        for header in &plan.remove {
            proxy::remove_request_header(header);
        }
        for (header, value) in &plan.set {
            proxy::set_request_header(header, value);
        }
        if let Some(path) = &plan.path {
            proxy::set_request_path(path);
        }
        if let (Some(api), None) = (plan.mark, marked) {
            facts::publish(&Host, facts::ATTEMPT_API, api.name());
            if api == Api::GeminiGenerate {
                facts::publish(&Host, facts::ATTEMPT_PATH, &without_query_param(&path, "key"));
            }
        }
        self.provider = Some(name.to_string());
        self.started_ms = Host.now_ms();
        self.read_body = plan.read_body;
        self.translation = plan.translate;
        self.path_stream = plan.path_model.is_some().then_some(seen.streams());
        self.model = plan.path_model.unwrap_or_default();
        self.gemini = plan.gemini;
        self.count_here = plan.count_here;
        Action::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        self.read_body.then_some(self.config.max_request_bytes)
    }

    /// A body that cannot be prepared must not reach the provider unprepared: refused.
    fn on_body_too_large(&mut self, _limit: usize) -> Action {
        self.fail(&ApiError::payload_too_large("The request body is too large to adapt for the provider."))
    }

    fn on_request_body(&mut self, body: Vec<u8>, size: usize) -> Action {
        self.read_body = false;
        if self.count_here {
            if let Err(why) = Wire::Anthropic.read_request(&body) {
                return self.fail(&ApiError::bad_request(format!("The request cannot be counted: {why}.")));
            }
            // The token counter's count (exact where it has the model's encoding), else about
            // four bytes per token.
            let tokens =
                facts::read_u64(&Host, facts::PROMPT_ESTIMATE).unwrap_or_else(|| body.len().div_ceil(4) as u64);
            proxy::send_json(200, &attempt::counted_tokens(tokens));
            return Action::Pause;
        }
        let Some(name) = self.provider.as_deref() else { return Action::Continue };
        let Some(provider) = self.config.providers.get(name) else { return Action::Continue };
        let gemini = self.gemini.as_ref();
        match attempt::prepare_body(&body, name, provider, self.config.is_chain(), self.translation, gemini) {
            // The path promised the provider one answer shape; the body must ask for that one.
            Ok(prepared) if self.path_stream.is_some_and(|s| s != prepared.stream) => {
                let message = "The request's `stream` differs from what the gateway routed.";
                self.fail(&ApiError::bad_request(message).with_param("stream"))
            }
            Ok(prepared) => {
                self.include_usage = prepared.include_usage;
                self.sent_model = prepared.model;
                if let Some(bytes) = prepared.body {
                    if !proxy::replace_request_body(size, &bytes) {
                        log::warn!("{NAME}: could not replace the request body");
                    }
                }
                Action::Continue
            }
            Err(e) => self.fail(&ApiError::bad_request(format!("The request cannot be sent to `{name}`: {e}"))),
        }
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        if let Some(name) = &self.provider {
            proxy::set_response_header(chain::ANSWERED_BY, name);
        }
        self.log_attempt(Ended::Answered(proxy::response_status().unwrap_or(0)));
        let Some(translation) = self.translation else { return Action::Continue };
        self.status = proxy::response_status().unwrap_or(0);
        let content_type = proxy::response_header_text("content-type").unwrap_or_default();
        let framing = if content_type.starts_with("text/event-stream") {
            Some(Framing::Sse(SseParser::new(MAX_SSE_LINE)))
        } else if content_type.starts_with(AWS_EVENT_STREAM) {
            proxy::set_response_header("content-type", "text/event-stream");
            Some(Framing::Aws(eventstream::Decoder::new(MAX_SSE_LINE)))
        } else {
            None
        };
        self.answer = if let Some(framing) = framing {
            Answer::Stream(Box::new(StreamState {
                framing,
                reader: translation.provider.stream_reader(),
                writer: translation.client.stream_writer(Self::created(), self.include_usage),
            }))
        } else {
            proxy::set_response_header("content-type", "application/json");
            Answer::Json
        };
        proxy::remove_response_header("content-length");
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(translation) = self.translation else { return Action::Continue };
        match &mut self.answer {
            Answer::Untouched => Action::Continue,
            Answer::Json => {
                if body_size > self.config.max_response_bytes {
                    self.answer = Answer::Untouched;
                    log::warn!("{NAME}: answer too large to translate; passed as is");
                    return Action::Continue;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = proxy::response_body(body_size).unwrap_or_default();
                let translated = match translation.provider.read_answer(self.status, &body) {
                    Ok(mut answer) => {
                        if answer.model.is_empty() {
                            answer.model = self.model.clone();
                        }
                        translation.client.write_answer(&answer, Self::created())
                    }
                    // The provider's status stays: the client's SDK raises by it.
                    Err(error) => translation.client.write_error(&error).1,
                };
                if !proxy::replace_response_body(body_size, &translated) {
                    log::warn!("{NAME}: could not replace the answer body");
                }
                Action::Continue
            }
            Answer::Stream(state) => {
                let StreamState { framing, reader, writer } = &mut **state;
                let chunk = proxy::response_body(body_size).unwrap_or_default();
                let mut out = String::new();
                for (name, data) in framing.events(&chunk, end_of_stream) {
                    for mut canonical in reader.read(name.as_deref(), &data) {
                        if let Event::Start { model, .. } = &mut canonical {
                            if model.is_empty() {
                                model.clone_from(&self.model);
                            }
                        }
                        for (name, data) in writer.write(&canonical) {
                            sse::write_event(&mut out, name, &data);
                        }
                    }
                }
                if end_of_stream {
                    for (name, data) in writer.finish() {
                        sse::write_event(&mut out, name, &data);
                    }
                }
                if !proxy::replace_response_body(body_size, out.as_bytes()) {
                    log::warn!("{NAME}: could not replace a stream chunk");
                }
                Action::Continue
            }
        }
    }

    /// An attempt that ends without an answer (reset, timed out, never connected) is in the
    /// history too.
    fn on_done(&mut self) {
        self.log_attempt(Ended::Reset);
    }
}
