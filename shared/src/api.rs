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
    /// Anthropic `POST /v1/messages/count_tokens`: a Messages request's prompt tokens, free of
    /// charge (Claude Code calls it before each turn).
    AnthropicCountTokens,
    /// Gemini `POST .../models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
    /// (Google AI Studio, Vertex AI): the model and streaming are in the path ([`GeminiCall`]).
    GeminiGenerate,
}

/// What a Gemini call's path says: the model, and whether the answer streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeminiCall<'a> {
    pub model: &'a str,
    pub stream: bool,
}

impl<'a> GeminiCall<'a> {
    /// Reads `.../models/{model}:generateContent` or `.../models/{model}:streamGenerateContent`
    /// (query ignored: see [`Api::from_path`] for `alt=sse`). The model is one segment of
    /// letters, digits and `.-_@`.
    pub fn of(path: &'a str) -> Option<GeminiCall<'a>> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let (head, method) = path.rsplit_once(':')?;
        let stream = match method {
            "generateContent" => false,
            "streamGenerateContent" => true,
            _ => return None,
        };
        let (parent, model) = head.rsplit_once('/')?;
        (is_model_segment(model) && parent.ends_with("/models")).then_some(GeminiCall { model, stream })
    }
}

/// Whether a model name can stand as one path segment as it is (Gemini's and Vertex's model
/// paths): letters, digits and `.-_@`, not empty, not starting with `.`.
pub fn is_model_segment(model: &str) -> bool {
    !model.is_empty()
        && !model.starts_with('.')
        && model.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
}

/// The value of the query parameter `name` in `path`, if present (not percent-decoded).
pub fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let query = path.split('#').next().unwrap_or_default().split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// `path` without any query parameter `name` (a `?` left with no parameters is dropped).
pub fn without_query_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else { return path.to_string() };
    let kept: Vec<&str> =
        query.split('&').filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name).collect();
    if kept.iter().all(|p| p.is_empty()) {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The wire schema family of an API, which decides how usage and streams are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    OpenAi,
    Anthropic,
    Gemini,
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
        let Some(clean) = clean_path(path) else { return Class::Other };
        // The whole path: a Gemini stream's query says how it is framed.
        match (method, Api::from_path(path)) {
            ("POST", Some(api)) => Class::Api(api),
            ("GET", None) if is_models_path(clean) => Class::Models,
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
    pub const ALL: [Api; 7] = [
        Api::ChatCompletions,
        Api::Completions,
        Api::Embeddings,
        Api::Responses,
        Api::AnthropicMessages,
        Api::AnthropicCountTokens,
        Api::GeminiGenerate,
    ];

    /// Classifies a request path. Matching is on the path's ending so that prefixed deployments
    /// (`/openai/deployments/x/chat/completions`, `/proxy/v1/messages`) work. The query matters
    /// only to a Gemini stream, which must ask for server-sent events (`alt=sse`): Gemini's
    /// other stream framing (one JSON array) is not read.
    pub fn from_path(path: &str) -> Option<Api> {
        if let Some(call) = GeminiCall::of(path) {
            return (!call.stream || query_param(path, "alt") == Some("sse")).then_some(Api::GeminiGenerate);
        }
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
        } else if path.ends_with("/v1/messages/count_tokens") {
            Some(Api::AnthropicCountTokens)
        } else {
            None
        }
    }

    pub fn schema(self) -> Schema {
        match self {
            Api::AnthropicMessages | Api::AnthropicCountTokens => Schema::Anthropic,
            Api::GeminiGenerate => Schema::Gemini,
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
            Api::AnthropicCountTokens => "count_tokens",
            Api::GeminiGenerate => "generate_content",
        }
    }

    /// The API of a [`Api::name`].
    pub fn from_name(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == name)
    }

    /// The provider family assumed when no routing module said otherwise.
    pub fn default_provider(self) -> &'static str {
        match self.schema() {
            Schema::Anthropic => "anthropic",
            Schema::Gemini => "gemini",
            Schema::OpenAi => "openai",
        }
    }

    /// Whether the provider bills the call by its tokens (counting tokens is free).
    pub fn is_billed(self) -> bool {
        self != Api::AnthropicCountTokens
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
    fn gemini_calls_name_their_model_and_stream_in_the_path() {
        let call = |path| (Api::from_path(path), GeminiCall::of(path));
        let json = GeminiCall { model: "gemini-2.5-flash", stream: false };
        assert_eq!(call("/v1beta/models/gemini-2.5-flash:generateContent"), (Some(Api::GeminiGenerate), Some(json)));
        let stream = GeminiCall { model: "chat-fast", stream: true };
        assert_eq!(
            call("/v1beta/models/chat-fast:streamGenerateContent?alt=sse"),
            (Some(Api::GeminiGenerate), Some(stream))
        );
        // Vertex AI's path, and the key in the query.
        let vertex =
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent?key=k";
        assert_eq!(Class::of("POST", vertex), Class::Api(Api::GeminiGenerate));
        let stream = "/v1beta/models/m:streamGenerateContent?key=k&alt=sse";
        assert_eq!(Class::of("POST", stream), Class::Api(Api::GeminiGenerate));
        // A stream in Gemini's JSON-array framing is not read, so not classified.
        for path in [
            "/v1beta/models/m:streamGenerateContent",
            "/v1beta/models/m:streamGenerateContent?alt=json",
            "/v1beta/models/m:countTokens",
            "/v1beta/models/:generateContent",
            "/v1beta/models/.x:generateContent",
            "/v1beta/tunedModels:generateContent",
            "/v1beta/models/m:generateContent/x",
            "/v1beta/files/m:generateContent",
            "/v1beta/models/m%3AgenerateContent",
        ] {
            assert_eq!(Class::of("POST", path), Class::Other, "{path}");
        }
        assert_eq!(Class::of("GET", "/v1beta/models/m:generateContent"), Class::Other);
    }

    #[test]
    fn query_parameters_are_read_and_removed_whole() {
        assert_eq!(query_param("/p?alt=sse&key=k1", "key"), Some("k1"));
        assert_eq!(query_param("/p?monkey=k1", "key"), None);
        assert_eq!(query_param("/p?key", "key"), Some(""));
        assert_eq!(query_param("/p", "key"), None);
        assert_eq!(without_query_param("/p?alt=sse&key=k1", "key"), "/p?alt=sse");
        assert_eq!(without_query_param("/p?key=k1&alt=sse&key=k2", "key"), "/p?alt=sse");
        assert_eq!(without_query_param("/p?key=k1", "key"), "/p");
        assert_eq!(without_query_param("/p?monkey=1", "key"), "/p?monkey=1");
        assert_eq!(without_query_param("/p", "key"), "/p");
    }

    #[test]
    fn schema_and_names() {
        for api in Api::ALL {
            assert_eq!(Api::from_name(api.name()), Some(api));
        }
        assert_eq!(Api::GeminiGenerate.schema(), Schema::Gemini);
        assert_eq!(Class::of("POST", "/v1/messages/count_tokens"), Class::Api(Api::AnthropicCountTokens));
        assert_eq!(Api::AnthropicCountTokens.schema(), Schema::Anthropic);
        assert!(!Api::AnthropicCountTokens.is_billed() && Api::AnthropicMessages.is_billed());
        assert_eq!(Class::of("POST", "/v1/messages/count"), Class::Other);
        assert_eq!(Api::GeminiGenerate.default_provider(), "gemini");
        assert_eq!(Api::AnthropicMessages.schema(), Schema::Anthropic);
        assert_eq!(Api::Responses.schema(), Schema::OpenAi);
        assert_eq!(Api::ChatCompletions.name(), "chat_completions");
        assert_eq!(Api::AnthropicMessages.default_provider(), "anthropic");
        assert!(Api::Completions.accepts_stream_options());
        assert!(!Api::Responses.accepts_stream_options());
    }
}
