//! The provider adapter's configuration (JSON Schema: `config.schema.json`).
//!
//! One adapter runs in each provider cluster, and one in each fallback chain's aggregate
//! cluster. It knows its providers by name; each attempt's provider is the only one configured,
//! or in a chain the one the chosen endpoint's metadata names (`filter_metadata.sluice.provider`).

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_shared::api::PathRule;
use sluice_shared::config::{ConfigError, Validate};

const MIB: usize = 1 << 20;
/// Google AI Studio's model path.
const GEMINI_MODEL_PATH: &str = "/v1beta/models/{model}";
/// Bedrock runtime's model path.
const BEDROCK_MODEL_PATH: &str = "/model/{model}";
/// Where a Gemini model path puts the model.
pub const MODEL_SLOT: &str = "{model}";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// OpenAI and OpenAI-compatible APIs (vLLM, NIM, Groq, Azure OpenAI): OpenAI requests pass as
    /// they are; Anthropic Messages requests are translated, and their answers back.
    Openai,
    /// Anthropic Messages: Messages requests pass as they are; OpenAI chat and Responses
    /// requests are translated, and their answers back.
    Anthropic,
    /// Gemini `generateContent` (Google AI Studio; Vertex AI with `model_path`): OpenAI chat,
    /// Responses and Anthropic Messages requests are translated, and their answers back. The model goes in
    /// the path, so the model rewriter must route the request (its facts name the model).
    Gemini,
    /// Amazon Bedrock Converse (`bedrock-runtime.<region>.amazonaws.com`, with a Bedrock API
    /// key): OpenAI chat, Responses and Anthropic Messages requests are translated, and their
    /// answers back (streams from AWS event-stream frames). The model is in the path, as for
    /// Gemini.
    Bedrock,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The providers this cluster reaches, by the name its endpoints carry in their metadata.
    pub providers: BTreeMap<String, Provider>,
    /// Paths besides the LLM APIs sent to the provider with its credential (files, batches, ...).
    /// Every other method and path gets 404 and no credential: default deny.
    pub passthrough: Vec<PathRule>,
    /// Largest request body translated; larger requests get 413.
    pub max_request_bytes: usize,
    /// Largest JSON answer translated; a larger one is passed as it is.
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Provider {
    /// What the provider speaks.
    pub schema: Schema,
    /// The provider credential. Prefer `api_key_env`: configuration is visible to operators.
    pub api_key: Option<String>,
    /// Environment variable holding the credential (pass it to the VM with
    /// `vm_config.environment_variables.host_env_keys`).
    pub api_key_env: Option<String>,
    /// The header carrying the credential (default: the schema's own, `authorization` for
    /// openai and bedrock, `x-goog-api-key` for gemini, `x-api-key` for anthropic; anthropic
    /// takes another only with `model_path`, on Vertex AI). `authorization` gets
    /// `Bearer <key>`; any other (Azure OpenAI's `api-key`) gets the key alone.
    pub auth_header: Option<String>,
    /// OpenAI schema: the path chat requests are sent to, query included (Azure OpenAI:
    /// `/openai/deployments/<deployment>/chat/completions?api-version=2024-10-21`).
    pub chat_path: Option<String>,
    /// The `Host` (`:authority`) sent to the provider, e.g. `api.openai.com`. Set per attempt:
    /// the providers of a chain differ. Unset: as routed.
    pub authority: Option<String>,
    /// Anthropic schema: the `anthropic-version` header.
    pub anthropic_version: String,
    /// Anthropic schema: `max_tokens` when the client set none (Anthropic requires one).
    pub default_max_tokens: u64,
    /// Gemini and Bedrock schemas: the model's path, `{model}` standing for the model; the
    /// method follows (Gemini: `:generateContent` or `:streamGenerateContent?alt=sse`; Bedrock:
    /// `/converse` or `/converse-stream`). Default: `/v1beta/models/{model}` (Gemini),
    /// `/model/{model}` (Bedrock). Vertex AI:
    /// `/v1/projects/<project>/locations/<region>/publishers/google/models/{model}`.
    /// Anthropic schema, for Claude on Vertex AI only:
    /// `/v1/projects/<project>/locations/<region>/publishers/anthropic/models/{model}` (then
    /// `:rawPredict` or `:streamRawPredict`; the body names no model and carries Vertex's
    /// `anthropic_version`).
    pub model_path: Option<String>,
    /// Bedrock schema: the request is signed with AWS SigV4 by Envoy's
    /// `envoy.filters.http.aws_request_signing` filter after the adapter (credentials from
    /// Envoy's environment, region in that filter). The adapter then removes every credential
    /// header and sets none; `api_key` and `api_key_env` must be unset.
    pub aws_sigv4: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            providers: BTreeMap::new(),
            passthrough: Vec::new(),
            max_request_bytes: 16 * MIB,
            max_response_bytes: 32 * MIB,
        }
    }
}

impl Default for Provider {
    fn default() -> Self {
        Provider {
            schema: Schema::Openai,
            api_key: None,
            api_key_env: None,
            auth_header: None,
            chat_path: None,
            authority: None,
            anthropic_version: "2023-06-01".to_string(),
            default_max_tokens: 4096,
            model_path: None,
            aws_sigv4: false,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let chain = self.is_chain();
        for (i, rule) in self.passthrough.iter().enumerate() {
            if let Some(problem) = rule.problem() {
                return Err(ConfigError::at(format!(".passthrough[{i}]"), problem));
            }
        }
        for (name, provider) in &self.providers {
            let at = |field: &str| format!(".providers.{name}{field}");
            let signed = provider.aws_sigv4;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(ConfigError::at(".providers", format!("`{name}`: names use letters, digits, `_` and `-`")));
            }
            provider.validate().map_err(|e| ConfigError::at(at(&e.path), e.message))?;
            // In a chain, a provider without its own key would receive the request as an earlier
            // attempt left it: with another provider's credential.
            if chain && !signed && provider.api_key.is_none() && provider.api_key_env.is_none() {
                return Err(ConfigError::at(
                    at(".api_key_env"),
                    "with more than one provider, each needs `api_key` or `api_key_env`",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for Provider {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.api_key.is_some() && self.api_key_env.is_some() {
            return Err(ConfigError::at(".api_key_env", "give `api_key` or `api_key_env`, not both"));
        }
        if self.api_key.as_deref() == Some("") || self.api_key_env.as_deref() == Some("") {
            return Err(ConfigError::at(".api_key", "must not be empty"));
        }
        if self.default_max_tokens == 0 {
            return Err(ConfigError::at(".default_max_tokens", "must be positive"));
        }
        if let Some(header) = &self.auth_header {
            let ok =
                !header.is_empty() && header.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(ConfigError::at(".auth_header", "must be a lower-case header name"));
            }
        }
        if let Some(path) = &self.chat_path {
            if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(ConfigError::at(".chat_path", "must be a path starting with `/`"));
            }
        }
        if let Some(authority) = &self.authority {
            let ok = !authority.is_empty()
                && authority
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
            if !ok {
                return Err(ConfigError::at(".authority", "must be a host name, optionally with a port"));
            }
        }
        if self.schema == Schema::Anthropic && self.chat_path.is_some() {
            return Err(ConfigError::at(".chat_path", "is not for the anthropic schema"));
        }
        if self.schema == Schema::Anthropic && self.auth_header.is_some() && self.model_path.is_none() {
            return Err(ConfigError::at(
                ".auth_header",
                "the anthropic schema takes one only on Vertex AI (with `model_path`)",
            ));
        }
        let model_in_path = self.model_in_path();
        if model_in_path && self.chat_path.is_some() {
            return Err(ConfigError::at(".chat_path", "is for the openai schema (this schema uses `model_path`)"));
        }
        if self.aws_sigv4 && self.schema != Schema::Bedrock {
            return Err(ConfigError::at(".aws_sigv4", "is for the bedrock schema"));
        }
        if self.aws_sigv4 && (self.api_key.is_some() || self.api_key_env.is_some() || self.auth_header.is_some()) {
            return Err(ConfigError::at(".aws_sigv4", "a signed request carries no `api_key` or `auth_header`"));
        }
        if let Some(path) = &self.model_path {
            if !model_in_path {
                return Err(ConfigError::at(
                    ".model_path",
                    "is for the gemini, bedrock and (Vertex AI) anthropic schemas",
                ));
            }
            let ok = path.starts_with('/')
                && path.matches(MODEL_SLOT).count() == 1
                && !path.bytes().any(|b| b.is_ascii_control() || matches!(b, b' ' | b'?' | b'#' | b'%'));
            if !ok {
                return Err(ConfigError::at(".model_path", "must be a path starting with `/` holding `{model}` once"));
            }
        }
        Ok(())
    }
}

impl Config {
    /// A fallback chain's adapter: attempts may reach different providers.
    pub fn is_chain(&self) -> bool {
        self.providers.len() > 1
    }
}

impl Provider {
    /// The credential, from the config or the environment (`None`: the request keeps its own).
    pub fn credential(&self) -> Option<String> {
        match (&self.api_key, &self.api_key_env) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(var)) => std::env::var(var).ok().filter(|k| !k.is_empty()),
            (None, None) => None,
        }
    }

    /// The header this provider's credential travels in.
    pub fn credential_header(&self) -> &str {
        match (self.schema, &self.auth_header) {
            (_, Some(header)) => header,
            (Schema::Anthropic, None) => "x-api-key",
            (Schema::Openai | Schema::Bedrock, None) => "authorization",
            (Schema::Gemini, None) => "x-goog-api-key",
        }
    }

    /// Whether the model goes in the request's path (Gemini, Bedrock, Claude on Vertex AI).
    pub fn model_in_path(&self) -> bool {
        matches!(self.schema, Schema::Gemini | Schema::Bedrock) || self.on_vertex_anthropic()
    }

    /// Claude on Vertex AI: the Anthropic schema at a model path.
    pub fn on_vertex_anthropic(&self) -> bool {
        self.schema == Schema::Anthropic && self.model_path.is_some()
    }

    /// The model's path, `{model}` in it (Gemini and Bedrock).
    pub fn model_path(&self) -> &str {
        match (&self.model_path, self.schema) {
            (Some(path), _) => path,
            (None, Schema::Bedrock) => BEDROCK_MODEL_PATH,
            (None, _) => GEMINI_MODEL_PATH,
        }
    }

    /// The credential header's value for `key`.
    pub fn credential_value(&self, key: &str) -> String {
        if self.credential_header() == "authorization" {
            format!("Bearer {key}")
        } else {
            key.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    #[test]
    fn one_provider() {
        let c: Config =
            parse_config(Some(br#"{"providers": {"anthropic": {"schema": "anthropic", "api_key": "k"}}}"#)).unwrap();
        let p = &c.providers["anthropic"];
        assert_eq!((p.schema, p.credential()), (Schema::Anthropic, Some("k".to_string())));
        assert_eq!((p.credential_header(), p.credential_value("k").as_str()), ("x-api-key", "k"));
        let openai = Provider::default();
        assert_eq!(openai.credential_value("k"), "Bearer k");
        let azure = Provider { auth_header: Some("api-key".into()), ..Provider::default() };
        assert_eq!((azure.credential_header(), azure.credential_value("k").as_str()), ("api-key", "k"));
        let gemini = Provider { schema: Schema::Gemini, ..Provider::default() };
        assert_eq!((gemini.credential_header(), gemini.credential_value("k").as_str()), ("x-goog-api-key", "k"));
        let vertex = Provider { schema: Schema::Gemini, auth_header: Some("authorization".into()), ..gemini };
        assert_eq!(vertex.credential_value("k"), "Bearer k");
        let bedrock = Provider { schema: Schema::Bedrock, ..Provider::default() };
        assert_eq!((bedrock.credential_header(), bedrock.model_path()), ("authorization", "/model/{model}"));
        // Without a key the request keeps its own credential.
        let missing: Config =
            parse_config(Some(br#"{"providers": {"o": {"api_key_env": "SLUICE_TEST_UNSET_VARIABLE"}}}"#)).unwrap();
        assert_eq!(missing.providers["o"].credential(), None);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 20] = [
            (br#"{"passthrough": [{"prefix": "/v1/../x"}]}"#, ".passthrough[0]"),
            (br#"{"passthrough": [{"prefix": "/v1/files", "methods": []}]}"#, ".passthrough[0]"),
            (br#"{"providers": {"a": {"authority": "https://api.openai.com"}}}"#, ".providers.a.authority"),
            (br#"{"providers": {"a": {"api_key": "k", "api_key_env": "K"}}}"#, ".providers.a.api_key_env"),
            (br#"{"providers": {"a": {"schema": "vertex"}}}"#, ".providers.a.schema"),
            (br#"{"providers": {"a": {"schema": "gemini", "chat_path": "/x"}}}"#, ".providers.a.chat_path"),
            (
                br#"{"providers": {"a": {"schema": "gemini", "model_path": "/v1beta/models"}}}"#,
                ".providers.a.model_path",
            ),
            (
                br#"{"providers": {"a": {"schema": "gemini", "model_path": "/m/{model}?x=1"}}}"#,
                ".providers.a.model_path",
            ),
            (br#"{"providers": {"a": {"schema": "anthropic", "auth_header": "x"}}}"#, ".providers.a.auth_header"),
            (br#"{"providers": {"a": {"model_path": "/m/{model}"}}}"#, ".providers.a.model_path"),
            (br#"{"providers": {"a": {"schema": "bedrock", "chat_path": "/x"}}}"#, ".providers.a.chat_path"),
            (br#"{"providers": {"a": {"aws_sigv4": true}}}"#, ".providers.a.aws_sigv4"),
            (
                br#"{"providers": {"a": {"schema": "bedrock", "aws_sigv4": true, "api_key": "k"}}}"#,
                ".providers.a.aws_sigv4",
            ),
            (br#"{"providers": {"a": {"api_key": ""}}}"#, ".providers.a.api_key"),
            (br#"{"providers": {"a": {"default_max_tokens": 0}}}"#, ".providers.a.default_max_tokens"),
            (br#"{"providers": {"a": {"auth_header": "Api Key"}}}"#, ".providers.a.auth_header"),
            (br#"{"providers": {"a": {"chat_path": "v1/chat"}}}"#, ".providers.a.chat_path"),
            (br#"{"providers": {"a": {"schema": "anthropic", "chat_path": "/x"}}}"#, ".providers.a.chat_path"),
            (br#"{"providers": {"a b": {}}}"#, ".providers"),
            (br#"{"providers": {"a": {"api_key": "k"}, "b": {}}}"#, ".providers.b.api_key_env"),
        ];
        for (config, path) in cases {
            let error = parse_config::<Config>(Some(config)).unwrap_err();
            assert_eq!(error.path, path, "{}", String::from_utf8_lossy(config));
        }
    }

    #[test]
    fn schema_matches_config() {
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }
}
