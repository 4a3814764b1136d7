//! One request/answer exchange, followed from request headers to the answer's end: what the
//! request asked, what the answer says, and the final counts. Plain Rust, no host calls.

use sluice_shared::api::Api;
use sluice_shared::host::Clock;
use sluice_shared::prompt::{estimate_prompt, summarize, RequestSummary};
use sluice_shared::stream_tally::StreamTally;
use sluice_shared::tokenizer::{Encoding, TokenTally};
use sluice_shared::usage::{parse_answer, ReportedUsage, TokenUsage};

use crate::config::Config;
use crate::stream_usage::with_stream_usage;

/// How the answer body is being read.
#[derive(Debug)]
enum AnswerBody {
    /// Headers not seen yet.
    Pending,
    /// Not metered, and why.
    Passthrough(&'static str),
    /// A JSON answer, copied as it passes (never held back).
    Json(Vec<u8>),
    /// An SSE answer, tallied chunk by chunk.
    Sse(Box<StreamTally>),
}

/// Where the final counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Both sides as the provider reported them.
    Provider,
    /// At least one side counted or estimated by Sluice.
    Counted,
    /// Nothing could be counted.
    None,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Provider => "provider",
            Source::Counted => "counted",
            Source::None => "none",
        }
    }
}

/// Everything known about an exchange when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub api: Option<Api>,
    pub request_model: Option<String>,
    /// A prompt estimate made only now, after the answer (it still needs publishing).
    pub late_estimate: Option<u64>,
    pub answer_model: Option<String>,
    pub streamed: bool,
    /// `2xx`, `4xx`, `5xx`, or `reset` when the answer never completed.
    pub status: &'static str,
    pub usage: TokenUsage,
    pub source: Source,
    /// Why the answer was not metered.
    pub passthrough: Option<&'static str>,
    /// Why the request body was not read (the answer may still be metered).
    pub request_skipped: Option<&'static str>,
    pub ttft_ms: Option<u64>,
    pub duration_ms: u64,
    /// The provider that answered, as the provider adapter names it (`x-sluice-provider`).
    pub answered_by: Option<String>,
}

impl Outcome {
    /// The model whose price applies: the provider's exact name when it gave one.
    pub fn priced_model(&self) -> Option<&str> {
        self.answer_model.as_deref().or(self.request_model.as_deref())
    }
}

/// What reading the request body decided.
#[derive(Debug, Default)]
pub struct RequestDecision {
    /// The request's model and stream flags, when the body is a JSON object.
    pub summary: Option<RequestSummary>,
    /// The prompt estimate, when it was made now (see [`Config::estimates_on_request`]).
    pub estimate: Option<u64>,
    /// A new body to send upstream instead of the client's.
    pub new_body: Option<Vec<u8>>,
}

/// Where the prompt estimate stands.
#[derive(Debug)]
enum Estimate {
    /// Not needed so far; the body is kept in case the answer carries no prompt count.
    Deferred(Vec<u8>),
    /// Made by this module.
    Made(u64),
    /// Published by a module earlier in the chain.
    Published(u64),
    /// Not possible (no body, not the JSON the API expects).
    Unavailable,
}

#[derive(Debug)]
pub struct Exchange {
    api: Option<Api>,
    /// A Gemini call's path, which names its model and stream.
    gemini_path: Option<String>,
    started_ms: u64,
    request: Option<RequestSummary>,
    estimate: Estimate,
    request_passthrough: Option<&'static str>,
    status: Option<u16>,
    answer: AnswerBody,
    first_byte_ms: Option<u64>,
    finished: bool,
    /// The provider that answered (the provider adapter's `x-sluice-provider` answer header).
    pub answered_by: Option<String>,
}

impl Exchange {
    /// A new exchange from its request line. Only `POST`s to a known API are metered.
    pub fn start(method: Option<&str>, path: Option<&str>, now_ms: u64) -> Exchange {
        let api = match method {
            Some("POST") => path.and_then(Api::from_path),
            _ => None,
        };
        let gemini_path = path.filter(|_| api == Some(Api::GeminiGenerate)).map(str::to_string);
        Exchange {
            api,
            gemini_path,
            started_ms: now_ms,
            request: None,
            estimate: Estimate::Unavailable,
            request_passthrough: None,
            status: None,
            answer: AnswerBody::Pending,
            first_byte_ms: None,
            finished: false,
            answered_by: None,
        }
    }

    pub fn api(&self) -> Option<Api> {
        self.api
    }

    /// The prompt estimate, if it is known yet.
    pub fn prompt_estimate(&self) -> Option<u64> {
        match self.estimate {
            Estimate::Made(tokens) | Estimate::Published(tokens) => Some(tokens),
            Estimate::Deferred(_) | Estimate::Unavailable => None,
        }
    }

    /// Whether the request body may be rewritten (so its `content-length` must go now).
    pub fn may_rewrite_request(&self, config: &Config) -> bool {
        config.request_stream_usage && self.api.is_some_and(Api::accepts_stream_options)
    }

    /// The request body is not read (compressed, too large, ...).
    pub fn skip_request(&mut self, reason: &'static str) {
        self.request_passthrough = Some(reason);
    }

    /// Reads the whole request body. `published_estimate` is an estimate another module
    /// already published for this request.
    pub fn on_request_body(
        &mut self,
        body: Vec<u8>,
        published_estimate: Option<u64>,
        config: &Config,
    ) -> RequestDecision {
        let Some(api) = self.api else { return RequestDecision::default() };
        let summary = match summarize(api, self.gemini_path.as_deref().unwrap_or_default(), &body) {
            Ok(summary) => summary,
            Err(_) => {
                self.request_passthrough = Some("unparsable_request");
                return RequestDecision::default();
            }
        };
        let new_body = if summary.stream && self.may_rewrite_request(config) {
            with_stream_usage(&body, summary.has_stream_options, summary.include_usage)
        } else {
            None
        };
        self.estimate = match published_estimate {
            Some(tokens) => Estimate::Published(tokens),
            // Counting tokens is the call's whole point: its estimate is always made (the
            // provider adapter answers with it for a provider that cannot count).
            None if config.estimates_on_request() || !api.is_billed() => estimate(api, &body, config),
            None => Estimate::Deferred(body),
        };
        self.request = Some(summary.clone());
        let estimate = match self.estimate {
            Estimate::Made(tokens) => Some(tokens),
            _ => None,
        };
        RequestDecision { summary: Some(summary), estimate, new_body }
    }

    /// The answer's status and content headers decide how its body is read. Streamed text is
    /// kept only up to the exact-count budget; beyond it only its size matters.
    pub fn on_answer_headers(
        &mut self,
        status: Option<u16>,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        config: &Config,
    ) {
        self.status = status;
        let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
        let encoded =
            content_encoding.is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"));
        self.answer = match self.api {
            None => AnswerBody::Passthrough("other_api"),
            // A count of tokens is billed nothing.
            Some(api) if !api.is_billed() => AnswerBody::Passthrough("count_tokens"),
            Some(_) if encoded => AnswerBody::Passthrough("compressed"),
            Some(api) if content_type.starts_with("text/event-stream") => {
                AnswerBody::Sse(Box::new(StreamTally::new(api, config.exact_count_bytes)))
            }
            Some(_) if content_type.contains("json") => AnswerBody::Json(Vec::new()),
            Some(_) => AnswerBody::Passthrough("not_json"),
        };
    }

    /// One chunk of `chunk_size` bytes of the answer body as it passes; `chunk` holds its bytes
    /// when [`Exchange::reads_answer`] asked for them. The clock is read for the first byte only:
    /// a stream has hundreds of chunks and each read is a host call.
    pub fn on_answer_chunk(&mut self, chunk: &[u8], chunk_size: usize, clock: &dyn Clock, config: &Config) {
        if chunk_size > 0 && self.first_byte_ms.is_none() {
            self.first_byte_ms = Some(clock.now_ms());
        }
        match &mut self.answer {
            AnswerBody::Sse(tally) => tally.push(chunk),
            AnswerBody::Json(buffer) => {
                if buffer.len().saturating_add(chunk.len()) > config.max_response_bytes {
                    self.answer = AnswerBody::Passthrough("too_large");
                } else {
                    buffer.extend_from_slice(chunk);
                }
            }
            AnswerBody::Pending | AnswerBody::Passthrough(_) => {}
        }
    }

    /// Whether the answer body needs to be read chunk by chunk.
    pub fn reads_answer(&self) -> bool {
        matches!(self.answer, AnswerBody::Json(_) | AnswerBody::Sse(_))
    }

    /// Ends the exchange once: `completed` is false when the answer was cut (reset, cancelled).
    /// Returns `None` when it had already ended.
    pub fn finish(&mut self, now_ms: u64, completed: bool, config: &Config) -> Option<Outcome> {
        if self.finished {
            return None;
        }
        self.finished = true;
        let answer = std::mem::replace(&mut self.answer, AnswerBody::Passthrough("finished"));
        let mut skipped = None;
        let mut streamed = false;
        let (reported, output_texts, dropped_bytes, answer_model) = match answer {
            AnswerBody::Pending => {
                skipped = Some("no_answer");
                (ReportedUsage::default(), Vec::new(), 0, None)
            }
            AnswerBody::Passthrough(reason) => {
                skipped = Some(reason);
                (ReportedUsage::default(), Vec::new(), 0, None)
            }
            AnswerBody::Json(body) => match self.api.map(|api| parse_answer(api, &body)) {
                Some(Ok(answer)) => (answer.usage, answer.output_texts, 0, answer.model),
                _ => {
                    skipped = Some(if completed { "unparsable_answer" } else { "cut_answer" });
                    (ReportedUsage::default(), Vec::new(), 0, None)
                }
            },
            AnswerBody::Sse(mut tally) => {
                streamed = true;
                tally.finish();
                let texts = tally.output_mut().take_texts();
                (tally.usage(), texts, tally.output().dropped_bytes(), tally.model().map(str::to_string))
            }
        };
        let status = match (completed, self.status) {
            (false, _) | (true, None) => "reset",
            (true, Some(s)) if (200..300).contains(&s) => "2xx",
            (true, Some(s)) if (400..500).contains(&s) => "4xx",
            (true, Some(s)) if s >= 500 => "5xx",
            (true, Some(_)) => "other",
        };
        let was_deferred = matches!(self.estimate, Estimate::Deferred(_));
        // Providers charge nothing for error answers.
        let (usage, source) = if skipped.is_none() && status != "4xx" && status != "5xx" {
            self.combine(reported, &output_texts, dropped_bytes, answer_model.as_deref(), config)
        } else {
            (TokenUsage::default(), Source::None)
        };
        Some(Outcome {
            api: self.api,
            request_model: self.request.as_ref().map(|r| r.model.clone()).filter(|m| !m.is_empty()),
            late_estimate: if was_deferred { self.prompt_estimate() } else { None },
            answer_model,
            streamed,
            status,
            usage,
            source,
            passthrough: skipped,
            request_skipped: self.request_passthrough,
            ttft_ms: self.first_byte_ms.map(|t| t.saturating_sub(self.started_ms)),
            duration_ms: now_ms.saturating_sub(self.started_ms),
            answered_by: self.answered_by.take(),
        })
    }

    /// Provider counts where given; the request estimate and the tokenizer's count of the
    /// generated text where not.
    fn combine(
        &mut self,
        reported: ReportedUsage,
        output_texts: &[String],
        dropped_bytes: u64,
        answer_model: Option<&str>,
        config: &Config,
    ) -> (TokenUsage, Source) {
        let mut counted = false;
        let (prompt, cached, cache_write) = match reported.input {
            Some(input) => (input.prompt, input.cached, input.cache_write),
            None => {
                if let (Estimate::Deferred(body), Some(api)) = (&self.estimate, self.api) {
                    self.estimate = estimate(api, body, config);
                }
                counted = true;
                (self.prompt_estimate().unwrap_or(0), 0, 0)
            }
        };
        let (completion, reasoning) = match reported.output {
            Some(output) => (output.completion, output.reasoning),
            None => {
                counted = true;
                let model = answer_model.or(self.request.as_ref().map(|r| r.model.as_str())).unwrap_or_default();
                // Each choice counted on its own; text beyond the budget at the measured ratio.
                let mut tally = TokenTally::new(Encoding::for_model(model), config.exact_count_bytes);
                for text in output_texts {
                    tally.add_text(text);
                }
                tally.add_unseen_bytes(dropped_bytes);
                (tally.total(), 0)
            }
        };
        let nothing = reported.input.is_none()
            && reported.output.is_none()
            && self.prompt_estimate().is_none()
            && output_texts.is_empty();
        let source = if nothing {
            Source::None
        } else if counted {
            Source::Counted
        } else {
            Source::Provider
        };
        (TokenUsage { prompt, completion, cached, cache_write, reasoning }, source)
    }
}

fn estimate(api: Api, body: &[u8], config: &Config) -> Estimate {
    match estimate_prompt(api, body, config.exact_count_bytes) {
        Ok(estimate) => Estimate::Made(estimate.tokens),
        Err(_) => Estimate::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock stopped at one instant.
    pub struct At(pub u64);
    impl Clock for At {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    fn config() -> Config {
        Config::default()
    }

    fn feed(ex: &mut Exchange, chunk: &[u8], now_ms: u64) {
        ex.on_answer_chunk(chunk, chunk.len(), &At(now_ms), &config());
    }

    const CHAT_BODY_STREAM: &str =
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello world"}]}"#;

    fn chat(stream: bool) -> Exchange {
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 1_000);
        let body =
            format!(r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"hello world"}}]}}"#);
        ex.on_request_body(body.as_bytes().to_vec(), None, &config());
        ex
    }

    #[test]
    fn json_answer_uses_provider_usage() {
        let mut ex = chat(false);
        ex.on_answer_headers(Some(200), Some("application/json; charset=utf-8"), None, &config());
        let body = br#"{"model":"gpt-4o-2024-08-06","choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        feed(&mut ex, &body[..10], 1_040);
        feed(&mut ex, &body[10..], 1_050);
        let out = ex.finish(1_100, true, &config()).unwrap();
        assert_eq!(out.usage, TokenUsage { prompt: 9, completion: 1, cached: 2, cache_write: 0, reasoning: 0 });
        assert_eq!(out.source, Source::Provider);
        assert_eq!(out.status, "2xx");
        assert_eq!(out.ttft_ms, Some(40));
        assert_eq!(out.duration_ms, 100);
        assert_eq!(out.priced_model(), Some("gpt-4o-2024-08-06"));
        assert_eq!(out.request_model.as_deref(), Some("gpt-4o"));
        assert!(ex.finish(1_200, true, &config()).is_none(), "finishes once");
    }

    #[test]
    fn stream_without_usage_is_counted_with_the_tokenizer() {
        let mut ex = chat(true);
        ex.on_answer_headers(Some(200), Some("text/event-stream"), None, &Config::default());
        feed(&mut ex, b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"The capital of \"}}]}\n\n", 1_010);
        feed(
            &mut ex,
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"France is Paris.\"}}]}\n\ndata: [DONE]\n\n",
            1_020,
        );
        let out = ex.finish(1_030, true, &config()).unwrap();
        assert!(out.streamed);
        assert_eq!(out.source, Source::Counted);
        assert_eq!(out.usage.completion, Encoding::O200kBase.count("The capital of France is Paris."));
        assert_eq!(
            out.usage.prompt,
            estimate_prompt(Api::ChatCompletions, CHAT_BODY_STREAM.as_bytes(), 1 << 20).unwrap().tokens
        );
        assert_eq!(out.late_estimate, Some(out.usage.prompt), "the deferred estimate was made and is published");
    }

    #[test]
    fn cut_stream_is_charged_for_what_streamed() {
        let mut ex = chat(true);
        ex.on_answer_headers(Some(200), Some("text/event-stream"), None, &Config::default());
        feed(
            &mut ex,
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial answer\"}}]}\n\ndata: {\"cho",
            1_010,
        );
        let out = ex.finish(1_030, false, &config()).unwrap();
        assert_eq!(out.status, "reset");
        assert_eq!(out.usage.completion, Encoding::O200kBase.count("partial answer"));
        assert_eq!(out.source, Source::Counted);
    }

    #[test]
    fn requests_are_rewritten_for_stream_usage_only_when_streaming() {
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        let decision =
            ex.on_request_body(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#.to_vec(), None, &config());
        assert!(decision.new_body.is_some());
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        assert!(ex
            .on_request_body(br#"{"model":"gpt-4o","messages":[]}"#.to_vec(), None, &config())
            .new_body
            .is_none());
        let off = Config { request_stream_usage: false, ..Config::default() };
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        assert!(ex
            .on_request_body(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#.to_vec(), None, &off)
            .new_body
            .is_none());
        let mut ex = Exchange::start(Some("POST"), Some("/v1/messages"), 0);
        assert!(!ex.may_rewrite_request(&config()));
        assert!(ex
            .on_request_body(br#"{"model":"claude-sonnet-4","stream":true,"messages":[]}"#.to_vec(), None, &config())
            .new_body
            .is_none());
    }

    #[test]
    fn what_is_not_understood_passes_through_with_a_reason() {
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a [u8], &'a str);
        let cases: [Case; 5] = [
            ("GET", "/v1/models", Some("application/json"), None, b"{}", "other_api"),
            ("POST", "/v1/chat/completions", Some("application/json"), Some("gzip"), b"\x1f\x8b", "compressed"),
            ("POST", "/v1/chat/completions", Some("text/html"), None, b"<html>", "not_json"),
            ("POST", "/v1/chat/completions", Some("application/json"), None, b"{oops", "unparsable_answer"),
            ("POST", "/v1/chat/completions", Some("application/json"), None, b"\xff\xfe", "unparsable_answer"),
        ];
        for (method, path, ct, ce, body, reason) in cases {
            let mut ex = Exchange::start(Some(method), Some(path), 0);
            ex.on_answer_headers(Some(200), ct, ce, &Config::default());
            feed(&mut ex, body, 1);
            let out = ex.finish(2, true, &config()).unwrap();
            assert_eq!(out.passthrough, Some(reason), "{path} {ct:?} {ce:?}");
            assert_eq!(out.source, Source::None);
            assert_eq!(out.usage, TokenUsage::default());
        }
    }

    #[test]
    fn long_streams_extrapolate_beyond_the_budget_at_the_measured_ratio() {
        let budget = Config { exact_count_bytes: 64, ..Config::default() };
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        ex.on_request_body(br#"{"model":"gpt-4o","stream":true}"#.to_vec(), None, &budget);
        ex.on_answer_headers(Some(200), Some("text/event-stream"), None, &budget);
        for word in text.split_inclusive(' ') {
            let event = format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{word:?}}}}}]}}\n\n");
            ex.on_answer_chunk(event.as_bytes(), event.len(), &At(1), &budget);
        }
        let out = ex.finish(2, true, &budget).unwrap();
        let exact = Encoding::O200kBase.count(&text) as f64;
        assert!((out.usage.completion as f64 - exact).abs() / exact < 0.05, "{} vs {exact}", out.usage.completion);
    }

    #[test]
    fn oversized_json_answer_is_not_buffered() {
        let small = Config { max_response_bytes: 8, ..Config::default() };
        let mut ex = chat(false);
        ex.on_answer_headers(Some(200), Some("application/json"), None, &Config::default());
        ex.on_answer_chunk(b"{\"usage\":", 9, &At(1), &small);
        assert!(!ex.reads_answer());
        assert_eq!(ex.finish(2, true, &small).unwrap().passthrough, Some("too_large"));
    }

    #[test]
    fn error_answers_count_no_tokens() {
        let mut ex = chat(false);
        ex.on_answer_headers(Some(500), Some("application/json"), None, &Config::default());
        feed(&mut ex, br#"{"error":{"message":"boom"}}"#, 1);
        let out = ex.finish(2, true, &config()).unwrap();
        assert_eq!(out.status, "5xx");
        assert_eq!(out.usage, TokenUsage::default());
    }

    #[test]
    fn unparsable_request_still_meters_the_answer() {
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        ex.on_request_body(b"{not json".to_vec(), None, &config());
        ex.on_answer_headers(Some(200), Some("application/json"), None, &Config::default());
        feed(&mut ex, br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#, 1);
        let out = ex.finish(2, true, &config()).unwrap();
        assert_eq!(out.usage.prompt, 3);
        assert_eq!(out.request_model, None);
        assert_eq!(out.passthrough, None);
        assert_eq!(out.request_skipped, Some("unparsable_request"));
    }
}

#[cfg(test)]
mod estimate_tests {
    use super::tests::At;
    use super::*;

    const BODY: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#;

    fn answer_with_prompt_usage(ex: &mut Exchange) -> Outcome {
        ex.on_answer_headers(Some(200), Some("application/json"), None, &Config::default());
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        ex.on_answer_chunk(body, body.len(), &At(1), &Config::default());
        ex.finish(2, true, &Config::default()).unwrap()
    }

    #[test]
    fn when_needed_skips_the_estimate_if_the_provider_counts() {
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        let decision = ex.on_request_body(BODY.to_vec(), None, &Config::default());
        assert_eq!(decision.estimate, None);
        assert_eq!(ex.prompt_estimate(), None);
        let out = answer_with_prompt_usage(&mut ex);
        assert_eq!(out.usage.prompt, 3);
        assert_eq!(out.late_estimate, None);
    }

    #[test]
    fn on_request_estimates_at_once() {
        let config = Config { prompt_estimate: crate::config::PromptEstimate::OnRequest, ..Config::default() };
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        let decision = ex.on_request_body(BODY.to_vec(), None, &config);
        let expected = estimate_prompt(Api::ChatCompletions, BODY, 1 << 20).unwrap().tokens;
        assert_eq!(decision.estimate, Some(expected));
        assert_eq!(ex.prompt_estimate(), Some(expected));
    }

    #[test]
    fn an_estimate_published_upstream_is_reused_not_republished() {
        let config = Config { prompt_estimate: crate::config::PromptEstimate::OnRequest, ..Config::default() };
        let mut ex = Exchange::start(Some("POST"), Some("/v1/chat/completions"), 0);
        let decision = ex.on_request_body(BODY.to_vec(), Some(999), &config);
        assert_eq!(decision.estimate, None);
        assert_eq!(ex.prompt_estimate(), Some(999));
        ex.on_answer_headers(Some(200), Some("application/json"), None, &Config::default());
        ex.on_answer_chunk(br#"{"choices":[]}"#, 14, &At(1), &config);
        let out = ex.finish(2, true, &config).unwrap();
        assert_eq!(out.usage.prompt, 999);
        assert_eq!(out.late_estimate, None);
    }
}
