//! Which LLM API a request speaks, decided from its path.

/// The APIs Sluice understands. Anything else passes through untouched.
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
    fn schema_and_names() {
        assert_eq!(Api::AnthropicMessages.schema(), Schema::Anthropic);
        assert_eq!(Api::Responses.schema(), Schema::OpenAi);
        assert_eq!(Api::ChatCompletions.name(), "chat_completions");
        assert_eq!(Api::AnthropicMessages.default_provider(), "anthropic");
        assert!(Api::Completions.accepts_stream_options());
        assert!(!Api::Responses.accepts_stream_options());
    }
}
