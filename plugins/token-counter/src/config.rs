//! The token counter's configuration (JSON Schema: `config.schema.json`).

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_shared::config::{ConfigError, Validate};
use sluice_shared::pricing::Price;
use sluice_shared::tokenizer::Encoding;

const MIB: usize = 1 << 20;

/// When the prompt estimate (`sluice.usage.prompt_estimate`) is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptEstimate {
    /// For every request, as soon as its body is read (about 1 ms per 8k prompt tokens on the
    /// request path).
    OnRequest,
    /// Only when the provider's answer carries no prompt count, after the answer.
    WhenNeeded,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Ask OpenAI-style providers to end streams with a usage chunk
    /// (`stream_options.include_usage`) when the client did not. Requests that may be rewritten
    /// lose their `content-length` and go upstream chunked.
    pub request_stream_usage: bool,
    /// Add `x-sluice-prompt-tokens-estimate` to answers, and the final counts as response
    /// trailers (`x-sluice-prompt-tokens`, `-completion-tokens`, `-total-tokens`, `-cost-usd`).
    pub response_headers: bool,
    /// When to estimate prompt tokens: `when_needed` (default) or `on_request`. An estimate an
    /// earlier module already published is reused either way.
    pub prompt_estimate: PromptEstimate,
    /// Provider label when no routing module published one (default: from the API schema).
    pub provider: Option<String>,
    /// Price overrides and additions, USD per million tokens, by model name or prefix.
    pub prices: BTreeMap<String, Price>,
    /// Largest request body read; larger requests pass through unread. Keep it below Envoy's
    /// buffer limit (`per_connection_buffer_limit_bytes`), or Envoy answers 413 first.
    pub max_request_bytes: usize,
    /// Largest JSON answer read for usage; larger answers pass through counted as `too_large`.
    pub max_response_bytes: usize,
    /// Bytes of text per request or answer counted exactly; the rest is extrapolated.
    pub exact_count_bytes: usize,
    /// Encodings loaded at configure time rather than on first use. Empty by default: both together
    /// cost about 6 MB and 15 ms per VM, and are needed only when a provider reports no usage.
    pub preload_encodings: Vec<Encoding>,
    /// Distinct values kept per metric label (model, team, ...) per worker before `other`.
    pub max_label_values: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_stream_usage: true,
            response_headers: false,
            prompt_estimate: PromptEstimate::WhenNeeded,
            provider: None,
            prices: BTreeMap::new(),
            max_request_bytes: 16 * MIB,
            max_response_bytes: 32 * MIB,
            exact_count_bytes: 256 * 1024,
            preload_encodings: Vec::new(),
            max_label_values: 100,
        }
    }
}

impl Config {
    /// Whether the estimate is needed as soon as the request is read.
    pub fn estimates_on_request(&self) -> bool {
        self.prompt_estimate == PromptEstimate::OnRequest || self.response_headers
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        sluice_shared::pricing::validate_overrides(&self.prices)?;
        let positive = [
            (".max_request_bytes", self.max_request_bytes),
            (".max_response_bytes", self.max_response_bytes),
            (".max_label_values", self.max_label_values),
        ];
        for (path, value) in positive {
            if value == 0 {
                return Err(ConfigError::at(path, "must be greater than 0"));
            }
        }
        if self.provider.as_deref() == Some("") {
            return Err(ConfigError::at(".provider", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    #[test]
    fn defaults() {
        let c: Config = parse_config(None).unwrap();
        assert!(c.request_stream_usage);
        assert!(!c.response_headers);
        assert!(c.preload_encodings.is_empty());
    }

    #[test]
    fn full_document() {
        let c: Config = parse_config(Some(
            br#"{"request_stream_usage":false,"response_headers":true,"provider":"vllm","prompt_estimate":"on_request",
                 "prices":{"my-llama":{"input":0.2,"output":0.4}},"max_request_bytes":1024,
                 "max_response_bytes":2048,"exact_count_bytes":0,"preload_encodings":["cl100k_base"],
                 "max_label_values":5}"#,
        ))
        .unwrap();
        assert_eq!(c.provider.as_deref(), Some("vllm"));
        assert_eq!(c.prompt_estimate, PromptEstimate::OnRequest);
        assert_eq!(c.prices["my-llama"].output, 0.4);
        assert_eq!(c.preload_encodings, vec![Encoding::Cl100kBase]);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(&[u8], &str); 8] = [
            (br#"{"prompt_estimate":"sometimes"}"#, ".prompt_estimate"),
            (br#"{"response_headers":"yes"}"#, ".response_headers"),
            (br#"{"prices":{"m":{"input":-1,"output":1}}}"#, ".prices.m"),
            (br#"{"prices":{"m":{"input":1}}}"#, ".prices.m"),
            (br#"{"max_request_bytes":0}"#, ".max_request_bytes"),
            (br#"{"preload_encodings":["p50k_base"]}"#, ".preload_encodings[0]"),
            (br#"{"provider":""}"#, ".provider"),
            (br#"{"max_label_values":-1}"#, ".max_label_values"),
        ];
        for (doc, path) in cases {
            let e = parse_config::<Config>(Some(doc)).unwrap_err();
            assert_eq!(e.path, path, "{e}");
        }
        let e = parse_config::<Config>(Some(br#"{"respons_headers":true}"#)).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    /// The JSON Schema documents exactly the fields the plugin accepts, with their defaults.
    #[test]
    fn schema_matches_config() {
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }
}
