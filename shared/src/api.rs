//! Which LLM API a request speaks, decided from its method and path, and which other paths an
//! operator lets through ([`PathRule`]). Default deny: a request that is neither is refused by
//! the modules that guard the way to a provider (budget enforcer, provider adapter).

use serde::Deserialize;

/// The APIs Sluice understands, reads and meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions` (also vLLM, NIM, Groq, Azure deployments).
    ChatCompletions,
    /// OpenAI legacy `POST /v1/completions`.
    Completions,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
}

/// The wire schema family of an API, which decides how usage and streams are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    OpenAi,
    Anthropic,
}

/// What a request is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `POST` to an API path the chain reads and meters.
    Api(Api),
    /// `GET /v1/models` or `GET /v1/models/<id>`: the model list (answered by the model
    /// rewriter when it has logical models, otherwise by the provider); no prompt, no spend.
    Models,
    /// Anything else: refused unless a [`PathRule`] lets it through.
    Other,
}

impl Class {
    /// Classifies a request by method and path. Only a clean path counts (see [`clean_path`]):
    /// a percent-encoded, dot-segment or empty-segment path is `Other` even when a provider
    /// would decode it into an API path, so the decision never depends on Envoy's normalisation.
    pub fn of(method: &str, path: &str) -> Class {
        let Some(path) = clean_path(path) else { return Class::Other };
        match (method, Api::from_path(path)) {
            ("POST", Some(api)) => Class::Api(api),
            ("GET", None) if is_models_path(path) => Class::Models,
            _ => Class::Other,
        }
    }

    pub fn api(self) -> Option<Api> {
        match self {
            Class::Api(api) => Some(api),
            _ => None,
        }
    }
}

fn is_models_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path == "/v1/models" || path.strip_prefix("/v1/models/").is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The path without its query, when it is clean: absolute, only RFC 3986 unreserved characters
/// and sub-delimiters (`:` and `@` too) besides `/`, no `%` escape, no `.` or `..` segment, no
/// empty segment (`//`). `None` otherwise.
pub fn clean_path(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@/".contains(c);
    if !path.starts_with('/') || !path.chars().all(allowed) {
        return None;
    }
    let inner = path.trim_end_matches('/');
    let bad_segment = inner.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == "..");
    (!bad_segment).then_some(path)
}

/// A path an operator lets through to the provider although the chain does not read it (files,
/// batches, images, audio, moderations): its prefix, matched on whole segments, and its methods.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    /// `/v1/files` matches `/v1/files` and `/v1/files/file-abc`, not `/v1/filesystem`.
    pub prefix: String,
    /// Upper-case methods; default `["GET"]`.
    #[serde(default = "get_only")]
    pub methods: Vec<String>,
}

fn get_only() -> Vec<String> {
    vec!["GET".to_string()]
}

impl PathRule {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let Some(path) = clean_path(path) else { return false };
        let prefix = self.prefix.trim_end_matches('/');
        let on_boundary = path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        on_boundary && self.methods.iter().any(|m| m == method)
    }

    /// Why the rule is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if clean_path(&self.prefix).is_none()
            || self.prefix.contains(['?', '#'])
            || self.prefix.trim_end_matches('/').is_empty()
        {
            return Some(format!("`{}` is not a clean absolute path below `/`", self.prefix));
        }
        if self.methods.is_empty() {
            return Some("`methods` is empty".into());
        }
        self.methods
            .iter()
            .find(|m| m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()))
            .map(|m| format!("method `{m}` is not an upper-case HTTP method"))
    }
}

impl Api {
    /// Classifies a request path (query string ignored). Matching is on the path's ending so that
    /// prefixed deployments (`/openai/deployments/x/chat/completions`, `/proxy/v1/messages`) work.
    pub fn from_path(path: &str) -> Option<Api> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Api::ChatCompletions)
        } else if path.ends_with("/completions") {
            Some(Api::Completions)
        } else if path.ends_with("/embeddings") {
            Some(Api::Embeddings)
        } else if path.ends_with("/responses") {
            Some(Api::Responses)
        } else if path.ends_with("/v1/messages") {
            Some(Api::AnthropicMessages)
        } else {
            None
        }
    }

    pub fn schema(self) -> Schema {
        match self {
            Api::AnthropicMessages => Schema::Anthropic,
            _ => Schema::OpenAi,
        }
    }

    /// Short stable name, used as a metric label and a fact value.
    pub fn name(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Responses => "responses",
            Api::AnthropicMessages => "messages",
        }
    }

    /// The API of a [`Api::name`].
    pub fn from_name(name: &str) -> Option<Api> {
        [Api::ChatCompletions, Api::Completions, Api::Embeddings, Api::Responses, Api::AnthropicMessages]
            .into_iter()
            .find(|api| api.name() == name)
    }

    /// The provider family assumed when no routing module said otherwise.
    pub fn default_provider(self) -> &'static str {
        match self.schema() {
            Schema::Anthropic => "anthropic",
            Schema::OpenAi => "openai",
        }
    }

    /// Whether the API accepts `stream_options.include_usage`.
    pub fn accepts_stream_options(self) -> bool {
        matches!(self, Api::ChatCompletions | Api::Completions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn classifies_paths() {
        assert_eq!(Api::from_path("/v1/chat/completions"), Some(Api::ChatCompletions));
        assert_eq!(
            Api::from_path("/openai/deployments/gpt4/chat/completions?api-version=2024-10-21"),
            Some(Api::ChatCompletions)
        );
        assert_eq!(Api::from_path("/v1/completions/"), Some(Api::Completions));
        assert_eq!(Api::from_path("/v1/embeddings"), Some(Api::Embeddings));
        assert_eq!(Api::from_path("/v1/responses"), Some(Api::Responses));
        assert_eq!(Api::from_path("/v1/messages"), Some(Api::AnthropicMessages));
        assert_eq!(Api::from_path("/v1/models"), None);
        assert_eq!(Api::from_path("/healthz"), None);
        assert_eq!(Api::from_path(""), None);
    }

    #[test]
    fn classes_need_the_method_and_a_clean_path() {
        assert_eq!(Class::of("POST", "/v1/chat/completions"), Class::Api(Api::ChatCompletions));
        assert_eq!(Class::of("POST", "/v1/messages?beta=true"), Class::Api(Api::AnthropicMessages));
        for method in ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "post", "BREW"] {
            assert_eq!(Class::of(method, "/v1/chat/completions"), Class::Other, "{method}");
        }
        for path in [
            "/v1/chat/%63ompletions",
            "/v1/chat%2Fcompletions",
            "/v1//chat/completions",
            "/v1/./chat/completions",
            "/v1/files/../chat/completions",
            "v1/chat/completions",
            "/v1/chat/completions\\",
            "/v1/chat/completions;x",
            "",
        ] {
            assert_eq!(Class::of("POST", path), Class::Other, "{path}");
        }
        assert_eq!(Class::of("GET", "/v1/models"), Class::Models);
        assert_eq!(Class::of("GET", "/v1/models/gpt-4o"), Class::Models);
        assert_eq!(Class::of("GET", "/v1/models/a/b"), Class::Other);
        assert_eq!(Class::of("POST", "/v1/models"), Class::Other);
        for path in ["/v1/files", "/v1/batches", "/v1/organization/users", "/v1/images/generations", "/x"] {
            assert_eq!(Class::of("GET", path), Class::Other, "{path}");
            assert_eq!(Class::of("POST", path), Class::Other, "{path}");
        }
    }

    #[test]
    fn path_rules_match_whole_segments_and_methods() {
        let rule = PathRule { prefix: "/v1/files".into(), methods: vec!["GET".into(), "DELETE".into()] };
        assert!(rule.matches("GET", "/v1/files"));
        assert!(rule.matches("DELETE", "/v1/files/file-abc?x=1"));
        assert!(!rule.matches("POST", "/v1/files"));
        assert!(!rule.matches("GET", "/v1/filesystem"));
        assert!(!rule.matches("GET", "/v1/files/../chat/completions"));
        assert!(!rule.matches("GET", "/v1/files/%2e%2e"));
        assert!(!rule.matches("GET", "/v1/fil%65s"));
        assert_eq!(rule.problem(), None);
        assert!(PathRule { prefix: "/".into(), methods: vec!["GET".into()] }.problem().is_some());
        assert!(PathRule { prefix: "/v1/%66".into(), methods: vec!["GET".into()] }.problem().is_some());
        assert!(PathRule { prefix: "/v1/files".into(), methods: vec!["get".into()] }.problem().is_some());
        assert!(PathRule { prefix: "/v1/files".into(), methods: vec![] }.problem().is_some());
    }

    #[test]
    fn schema_and_names() {
        assert_eq!(Api::AnthropicMessages.schema(), Schema::Anthropic);
        assert_eq!(Api::Responses.schema(), Schema::OpenAi);
        assert_eq!(Api::ChatCompletions.name(), "chat_completions");
        assert_eq!(Api::AnthropicMessages.default_provider(), "anthropic");
        assert!(Api::Completions.accepts_stream_options());
        assert!(!Api::Responses.accepts_stream_options());
    }
}
