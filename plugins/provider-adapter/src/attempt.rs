//! One attempt, planned in plain Rust: which provider it reaches, how its request headers
//! change, and how its body is prepared.
//!
//! Envoy hands every attempt of a request the same header map, so what one attempt changed is
//! what the next one starts from (a retry to another provider after an Anthropic attempt sees
//! `/v1/messages`). Each plan therefore sets every header it depends on, removes the other
//! providers' credentials, and marks a request whose path it changed with the client's API
//! ([`Plan::mark`], kept as the fact `sluice.attempt.api`, which every attempt of the request
//! sees), so later attempts still know what the client asked for. The body, on the other hand,
//! is a fresh copy of the client's for every attempt.

use serde_json::Value;
use sluice_shared::api::{is_model_segment, query_param, without_query_param, Api, Class, GeminiCall};
use sluice_shared::chain;
use sluice_shared::translate::Wire;

use crate::config::{Config, Provider, Schema, MODEL_SLOT};

/// Request headers with this prefix are the gateway's own (or a client's imitation): removed
/// before every attempt, so none reaches a provider.
pub const INTERNAL_PREFIX: &str = "x-sluice-";

/// Whether a client's request header must not reach `provider`: the gateway's own, and for
/// Bedrock AWS's (`x-amz-*`: a client must not supply a date, token or hash for the signer).
pub fn foreign_header(provider: Option<&Provider>, name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
        || (provider.is_some_and(|p| p.schema == Schema::Bedrock) && name.starts_with("x-amz-"))
}

/// Whether an attempt may go out: an API request the gateway classified (by its path, or, when
/// an earlier attempt sent it to another provider's path, by that attempt's mark `marked`), the
/// model list, or a passthrough path.
pub fn admitted(config: &Config, method: &str, path: &str, marked: Option<Api>) -> bool {
    marked.is_some()
        || Class::of(method, path) != Class::Other
        || config.passthrough.iter().any(|rule| rule.matches(method, path))
}
const OPENAI_CHAT_PATH: &str = "/v1/chat/completions";
const OPENAI_RESPONSES_PATH: &str = "/v1/responses";
const ANTHROPIC_PATH: &str = "/v1/messages";
const ANTHROPIC_COUNT_PATH: &str = "/v1/messages/count_tokens";

/// An attempt whose request and answer are translated: the client's schema and the provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub client: Wire,
    pub provider: Wire,
}

/// The provider an attempt reaches: the only one configured, or in a chain the one its
/// endpoint's metadata names.
pub fn provider<'c>(config: &'c Config, endpoint_provider: Option<&str>) -> Result<(&'c str, &'c Provider), String> {
    let mut providers = config.providers.iter();
    match (providers.next(), providers.next(), endpoint_provider) {
        (Some((name, provider)), None, _) => Ok((name.as_str(), provider)),
        (None, _, _) => Err("no provider is configured".into()),
        (Some(_), Some(_), Some(name)) => config
            .providers
            .get_key_value(name)
            .map(|(name, provider)| (name.as_str(), provider))
            .ok_or_else(|| format!("the endpoint names provider `{name}`, which this adapter does not configure")),
        (Some(_), Some(_), None) => {
            Err("the endpoint has no `sluice.provider` metadata and more than one provider is configured".into())
        }
    }
}

/// What an attempt does to its request headers, and whether it needs the body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    pub path: Option<String>,
    /// The client's API, for a request whose path this attempt changes: later attempts must
    /// know what the client sent.
    pub mark: Option<Api>,
    /// The request and its answer are translated.
    pub translate: Option<Translation>,
    /// The model the path names (Gemini, Bedrock): answers that name none are given it.
    pub path_model: Option<String>,
    /// The client speaks Gemini: its model and streaming come from its path.
    pub gemini: Option<GeminiClient>,
    /// A count of tokens for a provider that cannot count them: answered here, never sent.
    pub count_here: bool,
    /// The body must be read: to translate it, or to take the chain's model out of it.
    pub read_body: bool,
}

/// A Gemini client's call. Its body names no model and no stream; this attempt's body is
/// given both (translated), or must agree with the model its path names (`in_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeminiClient {
    /// The model the client's path names.
    pub model: String,
    pub stream: bool,
    /// The model this attempt's path names, when it names one (a Gemini or Bedrock provider).
    pub in_path: Option<String>,
}

/// What an attempt sees of its request.
#[derive(Default)]
pub struct Seen<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The client's API, when an earlier attempt changed the request's path.
    pub marked: Option<Api>,
    /// The client's own path, when an earlier attempt changed it (the fact `sluice.attempt.path`,
    /// kept for Gemini calls, whose path names their model).
    pub client_path: Option<&'a str>,
    pub has_body: bool,
    /// The route's models by provider (the rewriter's `sluice.route.models`), if it routed.
    pub models: Option<&'a str>,
    /// The rewriter saw a request for a stream (`sluice.route.stream`).
    pub stream: bool,
}

impl Seen<'_> {
    /// The API the client's request speaks, also when an earlier attempt changed its path.
    pub fn api(&self) -> Option<Api> {
        self.marked.or_else(|| Class::of(self.method, self.path).api())
    }

    /// A Gemini client's call, read from its own path.
    pub fn gemini_call(&self) -> Option<GeminiCall<'_>> {
        (self.api() == Some(Api::GeminiGenerate)).then(|| GeminiCall::of(self.client_path.unwrap_or(self.path)))?
    }

    /// The answer streams: the rewriter saw a stream, or a Gemini client's path asks for one.
    pub fn streams(&self) -> bool {
        self.stream || self.gemini_call().is_some_and(|c| c.stream)
    }

    /// The model for `provider_name`: the route's, else the one a Gemini client's path names.
    fn model_for(&self, provider_name: &str) -> Option<String> {
        let routed = self.models.and_then(|text| chain::model_in(text, provider_name));
        routed.or_else(|| self.gemini_call().map(|c| c.model.to_string()))
    }
}

/// The APIs a provider of `schema` takes from this adapter: natively, or translated here.
pub fn takes(schema: Schema) -> &'static [Api] {
    match schema {
        Schema::Openai => &Api::ALL,
        Schema::Anthropic | Schema::Gemini | Schema::Bedrock => &[
            Api::ChatCompletions,
            Api::Responses,
            Api::AnthropicMessages,
            Api::AnthropicCountTokens,
            Api::GeminiGenerate,
        ],
    }
}

/// The path of an attempt to a provider with the model in its path (Gemini, Bedrock): the
/// provider's model path with the model the route names for it (for a Gemini client not routed,
/// the model its path names), and the method for a JSON answer or a stream. An error when no
/// model is named (no model rewriter ran) or, for
/// Gemini, one that cannot be a path segment; Bedrock's model ids (`anthropic.claude-...:0`,
/// ARNs) are percent-encoded into one segment.
fn model_path(provider_name: &str, provider: &Provider, seen: &Seen<'_>) -> Result<(String, String), String> {
    let model = seen.model_for(provider_name).ok_or_else(|| {
        format!("provider `{provider_name}` takes its model in the path, and no route named one (route the request with the model rewriter)")
    })?;
    let segment = match provider.schema {
        Schema::Bedrock if !model.is_empty() => percent_encoded(&model),
        _ if is_model_segment(&model) => model.clone(),
        _ => return Err(format!("the model `{model}` cannot be sent to provider `{provider_name}`")),
    };
    let method = match (provider.schema, seen.streams()) {
        (Schema::Bedrock, false) => "/converse",
        (Schema::Bedrock, true) => "/converse-stream",
        (Schema::Anthropic, false) => ":rawPredict",
        (Schema::Anthropic, true) => ":streamRawPredict",
        (_, false) => ":generateContent",
        (_, true) => ":streamGenerateContent?alt=sse",
    };
    let path = format!("{}{method}", provider.model_path().replacen(MODEL_SLOT, &segment, 1));
    Ok((path, model))
}

/// Every byte but RFC 3986's unreserved ones as `%XX`: one path segment whatever the text.
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Why an attempt must not go out: its request speaks an API its provider does not take, and
/// a request is never sent in the wrong schema. `None` for every other request (the model
/// list, passthrough paths).
pub fn unspoken(provider_name: &str, provider: &Provider, seen: &Seen<'_>) -> Option<String> {
    let api = seen.api()?;
    let taken = takes(provider.schema);
    if taken.contains(&api) {
        return None;
    }
    let names: Vec<&str> = taken.iter().map(|a| a.name()).collect();
    Some(format!(
        "This request's route reaches provider `{provider_name}`, which does not take `{}` requests (it takes: {}).",
        api.name(),
        names.join(", ")
    ))
}

/// The schema of a client's API, for one the adapter translates.
fn client_wire(api: Api) -> Wire {
    Wire::of_client(api).unwrap_or(Wire::OpenaiChat)
}

/// Plans an attempt to `provider` (named `provider_name`), whose credential is `credential`; an
/// error when the request cannot be addressed to it.
pub fn plan(
    config: &Config,
    provider_name: &str,
    provider: &Provider,
    credential: Option<&str>,
    seen: &Seen<'_>,
) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let chain = config.is_chain();
    let api = seen.api();

    // Credentials: never another provider's, and this provider's own when it has one.
    let own = provider.credential_header();
    let replaces_credentials = provider.aws_sigv4 || credential.is_some() || chain;
    if provider.aws_sigv4 {
        // Envoy's signer adds the only credential this request carries.
        plan.remove.extend(["authorization", "x-api-key", "x-goog-api-key"].map(str::to_string));
    } else if credential.is_some() || chain {
        let mut others: Vec<&str> = config.providers.values().map(Provider::credential_header).collect();
        others.extend(["authorization", "x-api-key", "x-goog-api-key"]);
        others.sort_unstable();
        others.dedup();
        plan.remove.extend(others.into_iter().filter(|h| *h != own).map(str::to_string));
    }
    match credential {
        _ if provider.aws_sigv4 => {}
        Some(key) => plan.set.push((own.to_string(), provider.credential_value(key))),
        // A chain attempt whose key is missing must not carry what an earlier attempt set.
        None if chain => plan.remove.push(own.to_string()),
        None => {}
    }

    if let Some(authority) = &provider.authority {
        plan.set.push((":authority".into(), authority.clone()));
    }
    let translated = |client, provider| Some(Translation { client, provider });
    match (provider.schema, api) {
        // Claude on Vertex AI: Messages at the routed model's path.
        (
            Schema::Anthropic,
            Some(api @ (Api::ChatCompletions | Api::Responses | Api::AnthropicMessages | Api::GeminiGenerate)),
        ) if provider.on_vertex_anthropic() && seen.has_body => {
            if api != Api::AnthropicMessages {
                plan.translate = translated(client_wire(api), Wire::Anthropic);
            }
            let (path, model) = model_path(provider_name, provider, seen)?;
            plan.path = Some(path);
            plan.path_model = Some(model);
        }
        (Schema::Anthropic, Some(Api::AnthropicCountTokens)) if provider.on_vertex_anthropic() => {
            plan.count_here = true
        }
        (Schema::Anthropic, Some(api @ (Api::ChatCompletions | Api::Responses | Api::GeminiGenerate)))
            if seen.has_body =>
        {
            plan.translate = translated(client_wire(api), Wire::Anthropic);
            plan.path = Some(ANTHROPIC_PATH.into());
        }
        // An earlier attempt sent this Messages request elsewhere: back to its own path.
        (Schema::Anthropic, Some(Api::AnthropicMessages)) if seen.marked.is_some() => {
            plan.path = Some(ANTHROPIC_PATH.into());
        }
        // Anthropic counts its own (back to its path if an earlier attempt moved the request).
        (Schema::Anthropic, Some(Api::AnthropicCountTokens)) => {
            plan.path = seen.marked.map(|_| ANTHROPIC_COUNT_PATH.to_string());
        }
        // Only Anthropic counts a Messages request's tokens: the others get the gateway's count.
        (_, Some(Api::AnthropicCountTokens)) => plan.count_here = true,
        (Schema::Openai, Some(api @ (Api::AnthropicMessages | Api::GeminiGenerate))) if seen.has_body => {
            plan.translate = translated(client_wire(api), Wire::OpenaiChat);
            plan.path = Some(provider.chat_path.as_deref().unwrap_or(OPENAI_CHAT_PATH).to_string());
        }
        (Schema::Openai, Some(Api::ChatCompletions)) => {
            let wanted = provider.chat_path.as_deref().or(seen.marked.map(|_| OPENAI_CHAT_PATH));
            plan.path = wanted.filter(|w| *w != seen.path).map(str::to_string);
        }
        // An earlier attempt sent this Responses request elsewhere: back to its own path.
        (Schema::Openai, Some(Api::Responses)) if seen.marked.is_some() => {
            plan.path = Some(OPENAI_RESPONSES_PATH.into());
        }
        // A Gemini call to a Gemini provider: at the provider's own path for the routed model.
        (Schema::Gemini, Some(Api::GeminiGenerate)) => {
            let (path, model) = model_path(provider_name, provider, seen)?;
            plan.path = Some(path);
            plan.path_model = Some(model);
        }
        (
            schema @ (Schema::Gemini | Schema::Bedrock),
            Some(api @ (Api::ChatCompletions | Api::Responses | Api::AnthropicMessages | Api::GeminiGenerate)),
        ) if seen.has_body => {
            let wire = if schema == Schema::Gemini { Wire::Gemini } else { Wire::Bedrock };
            plan.translate = translated(client_wire(api), wire);
            let (path, model) = model_path(provider_name, provider, seen)?;
            plan.path = Some(path);
            plan.path_model = Some(model);
        }
        _ => {}
    }
    // A key in the query (Gemini's `key=`) goes wherever the other credentials go.
    if plan.path.is_none() && replaces_credentials && query_param(seen.path, "key").is_some() {
        plan.path = Some(without_query_param(seen.path, "key"));
    }
    plan.gemini = seen.gemini_call().map(|call| GeminiClient {
        model: call.model.to_string(),
        stream: call.stream,
        in_path: plan.path_model.clone(),
    });
    match provider.schema {
        // Vertex AI takes the version in the body.
        Schema::Anthropic if provider.on_vertex_anthropic() => {
            plan.remove.extend(["anthropic-version".to_string(), "anthropic-beta".to_string()]);
        }
        Schema::Anthropic => plan.set.push(("anthropic-version".into(), provider.anthropic_version.clone())),
        // Anthropic's headers never reach another provider.
        Schema::Openai | Schema::Gemini | Schema::Bedrock if chain || plan.translate.is_some() => {
            plan.remove.extend(["anthropic-version".to_string(), "anthropic-beta".to_string()]);
        }
        Schema::Openai | Schema::Gemini | Schema::Bedrock => {}
    }
    if plan.translate.is_some() {
        // Answers are translated as they come: they must not be compressed.
        plan.remove.push("accept-encoding".into());
    }
    if plan.path.is_some() {
        plan.mark = api;
    }
    // A Gemini call's body always is: the gateway's `model` member must not reach the provider.
    plan.read_body = seen.has_body
        && (plan.translate.is_some()
            || plan.gemini.is_some()
            || plan.count_here
            || (provider.on_vertex_anthropic() && api.is_some())
            || (chain && api.is_some()));
    if plan.read_body {
        // The body changes length.
        plan.remove.push("content-length".into());
    }
    Ok(plan)
}

/// The answer to a count of tokens the adapter makes itself: Anthropic's shape.
pub fn counted_tokens(tokens: u64) -> Vec<u8> {
    serde_json::json!({ "input_tokens": tokens }).to_string().into_bytes()
}

/// Most attempts one request's history keeps (a chain is a few providers; retries add a few).
const MAX_HISTORY: usize = 16;

/// How an attempt ended, for the request's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The provider answered with this status.
    Answered(u16),
    /// No answer: reset, timed out, or never connected.
    Reset,
}

/// `history` (the [`sluice_shared::facts::ATTEMPT_HISTORY`] so far) with one more attempt; at most
/// [`MAX_HISTORY`] kept, the first ones.
pub fn with_attempt(history: Option<&str>, provider: &str, model: &str, ended: Ended, ms: u64) -> Option<String> {
    let history = history.filter(|h| !h.is_empty());
    if history.is_some_and(|h| h.split("; ").count() >= MAX_HISTORY) {
        return None;
    }
    let status = match ended {
        Ended::Answered(code) => code.to_string(),
        Ended::Reset => "reset".to_string(),
    };
    let model = if model.is_empty() { "-" } else { model };
    let entry = format!("provider={provider} model={model} status={status} ms={ms}");
    Some(match history {
        Some(before) => format!("{before}; {entry}"),
        None => entry,
    })
}

/// A prepared request body.
#[derive(Debug, PartialEq)]
pub struct Prepared {
    pub body: Option<Vec<u8>>,
    /// The model the attempt asks its provider for (`None`: the body was not read).
    pub model: Option<String>,
    /// A translated request's client wants usage at the end of its stream.
    pub include_usage: bool,
    /// A translated request asks for a stream.
    pub stream: bool,
}

/// The `anthropic_version` Claude on Vertex AI takes in the body.
const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Prepares an attempt's body ([`reshape`]); for Claude on Vertex AI, the Messages body then
/// names no model (the path does) and carries Vertex's `anthropic_version`.
pub fn prepare_body(
    body: &[u8],
    provider_name: &str,
    provider: &Provider,
    in_chain: bool,
    translate: Option<Translation>,
    gemini: Option<&GeminiClient>,
) -> Result<Prepared, String> {
    let prepared = reshape(body, provider_name, provider, in_chain, translate, gemini)?;
    if !provider.on_vertex_anthropic() {
        return Ok(prepared);
    }
    let mut value: Value = serde_json::from_slice(prepared.body.as_deref().unwrap_or(body))
        .map_err(|e| format!("the body is not JSON ({e})"))?;
    let object = value.as_object_mut().ok_or("the body is not a JSON object")?;
    object.remove("model");
    object.remove(chain::MODELS_MEMBER);
    object.insert("anthropic_version".into(), Value::String(VERTEX_ANTHROPIC_VERSION.into()));
    let stream = object.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let body = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    Ok(Prepared { body: Some(body), stream, ..prepared })
}

/// Prepares an attempt's body: in a chain (`in_chain`), the chain's model for `provider_name`;
/// the private chain member always removed; translated when `translate` says so. A Gemini
/// client's body (`gemini`) loses the gateway's `model` member and, translated, is given its
/// model and stream. `body: None` leaves the body as it is.
fn reshape(
    body: &[u8],
    provider_name: &str,
    provider: &Provider,
    in_chain: bool,
    translate: Option<Translation>,
    gemini: Option<&GeminiClient>,
) -> Result<Prepared, String> {
    let mut value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) if translate.is_none() && gemini.is_none() => {
            return Ok(Prepared { body: None, model: None, include_usage: false, stream: false })
        }
        Err(e) => return Err(format!("the body is not JSON ({e})")),
    };
    let had_chain = value.get(chain::MODELS_MEMBER).is_some();
    let chain_model = chain::take_model_for(&mut value, provider_name);
    if in_chain && had_chain && chain_model.is_none() {
        // The rewriter left this provider out of the chain (the key may not use its model).
        return Err(format!("the route has no model for provider `{provider_name}`"));
    }
    // Only the rewriter's chain picks the model: a chain cluster's body has it rewritten.
    let chain_model = chain_model.filter(|_| in_chain);
    if let Some(call) = gemini {
        let body_model = value.as_object_mut().and_then(|o| o.remove("model"));
        let model = chain_model
            .or_else(|| body_model.and_then(|m| m.as_str().map(str::to_string)))
            .unwrap_or_else(|| call.model.clone());
        if call.in_path.as_ref().is_some_and(|in_path| *in_path != model) {
            // A module changed the model after the path was set: the provider must not get
            // the path's model in place of that one.
            return Err(format!(
                "the model `{model}` differs from the routed path's (route the request with the model rewriter)"
            ));
        }
        let Some(translation) = translate else {
            let body = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            return Ok(Prepared { body: Some(body), model: Some(model), include_usage: false, stream: call.stream });
        };
        let mut chat = translation.client.read_request(&serde_json::to_vec(&value).map_err(|e| e.to_string())?)?;
        chat.model = model.clone();
        chat.stream = call.stream;
        let body = translation.provider.write_request(&chat, provider.default_max_tokens)?;
        return Ok(Prepared {
            body: Some(body),
            model: Some(model),
            include_usage: chat.stream_usage,
            stream: chat.stream,
        });
    }
    if let (Some(model), Some(object)) = (chain_model, value.as_object_mut()) {
        object.insert("model".into(), Value::String(model));
    }
    let model = value.get("model").and_then(Value::as_str).map(str::to_string);
    let Some(translation) = translate else {
        let body = had_chain.then(|| serde_json::to_vec(&value)).transpose().map_err(|e| e.to_string())?;
        return Ok(Prepared { body, model, include_usage: false, stream: false });
    };
    let chat = translation.client.read_request(&serde_json::to_vec(&value).map_err(|e| e.to_string())?)?;
    let body = translation.provider.write_request(&chat, provider.default_max_tokens)?;
    Ok(Prepared { body: Some(body), model, include_usage: chat.stream_usage, stream: chat.stream })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    #[test]
    fn the_history_lists_every_attempt_in_order_up_to_its_cap() {
        let first = with_attempt(None, "openai", "gpt-4o", Ended::Answered(503), 12).unwrap();
        assert_eq!(first, "provider=openai model=gpt-4o status=503 ms=12");
        let both = with_attempt(Some(&first), "anthropic", "claude-sonnet-4-6", Ended::Reset, 1_000).unwrap();
        assert_eq!(both, format!("{first}; provider=anthropic model=claude-sonnet-4-6 status=reset ms=1000"));
        assert_eq!(
            with_attempt(Some(""), "vllm", "", Ended::Answered(200), 0).unwrap(),
            "provider=vllm model=- status=200 ms=0"
        );
        let mut history = None;
        for _ in 0..20 {
            if let Some(next) = with_attempt(history.as_deref(), "openai", "m", Ended::Answered(500), 1) {
                history = Some(next);
            }
        }
        assert_eq!(history.unwrap().split("; ").count(), MAX_HISTORY);
    }

    fn config(json: &str) -> Config {
        parse_config(Some(json.as_bytes())).unwrap()
    }

    const CHAIN: &str = r#"{"providers": {
        "openai": {"api_key": "sk-o"},
        "anthropic": {"schema": "anthropic", "api_key": "sk-a"}}}"#;

    fn seen(path: &str, marked: Option<Api>) -> Seen<'_> {
        Seen { method: "POST", path, marked, has_body: true, ..Seen::default() }
    }

    const CHAT: Option<Api> = Some(Api::ChatCompletions);
    const MESSAGES: Option<Api> = Some(Api::AnthropicMessages);
    const TO_ANTHROPIC: Option<Translation> = Some(Translation { client: Wire::OpenaiChat, provider: Wire::Anthropic });
    const TO_OPENAI: Option<Translation> = Some(Translation { client: Wire::Anthropic, provider: Wire::OpenaiChat });

    #[test]
    fn every_api_reaches_only_a_provider_that_takes_it() {
        let chain = config(CHAIN);
        let (openai, anthropic) = (&chain.providers["openai"], &chain.providers["anthropic"]);
        // (path, taken by an OpenAI-schema provider, taken by an Anthropic-schema provider)
        let cases = [
            ("/v1/chat/completions", true, true),
            ("/v1/completions", true, false),
            ("/v1/embeddings", true, false),
            ("/v1/responses", true, true),
            ("/v1/messages", true, true),
            ("/openai/deployments/d/chat/completions?api-version=2024-10-21", true, true),
        ];
        for (path, by_openai, by_anthropic) in cases {
            let seen = seen(path, None);
            assert_eq!(unspoken("openai", openai, &seen).is_none(), by_openai, "{path} to openai");
            assert_eq!(unspoken("anthropic", anthropic, &seen).is_none(), by_anthropic, "{path} to anthropic");
        }
        let why = unspoken("anthropic", anthropic, &seen("/v1/embeddings", None)).unwrap();
        assert!(why.contains("`anthropic`") && why.contains("`embeddings`") && why.contains("messages"), "{why}");
    }

    #[test]
    fn a_chat_request_an_earlier_attempt_sent_to_anthropic_still_reaches_openai() {
        let chain = config(CHAIN);
        let seen = seen("/v1/messages", CHAT);
        assert_eq!(seen.api(), Some(Api::ChatCompletions));
        assert_eq!(unspoken("openai", &chain.providers["openai"], &seen), None);
    }

    #[test]
    fn requests_that_are_no_api_call_are_not_refused_for_their_schema() {
        let chain = config(CHAIN);
        let models = Seen { method: "GET", path: "/v1/models", marked: None, has_body: false, ..Seen::default() };
        let files = Seen { method: "POST", path: "/v1/files", marked: None, has_body: true, ..Seen::default() };
        for provider in chain.providers.values() {
            assert_eq!(unspoken("p", provider, &models), None);
            assert_eq!(unspoken("p", provider, &files), None);
        }
    }

    #[test]
    fn provider_by_metadata_or_the_only_one() {
        let chain = config(CHAIN);
        assert_eq!(provider(&chain, Some("anthropic")).map(|p| p.0), Ok("anthropic"));
        assert!(provider(&chain, Some("gemini")).unwrap_err().contains("gemini"));
        assert!(provider(&chain, None).is_err());
        let single = config(r#"{"providers": {"only": {}}}"#);
        assert_eq!(provider(&single, None).map(|p| p.0), Ok("only"));
        assert_eq!(provider(&single, Some("openai")).map(|p| p.0), Ok("only"));
        assert!(provider(&Config::default(), None).is_err());
    }

    #[test]
    fn anthropic_attempt_then_openai_retry() {
        let c = config(
            r#"{"providers": {
            "openai": {"api_key": "sk-o", "authority": "api.openai.com"},
            "anthropic": {"schema": "anthropic", "api_key": "sk-a", "authority": "api.anthropic.com"}}}"#,
        );
        let first = plan(&c, "anthropic", &c.providers["anthropic"], Some("sk-a"), &seen("/v1/chat/completions", None))
            .unwrap();
        assert!(first.translate == TO_ANTHROPIC && first.read_body);
        assert_eq!(first.path.as_deref(), Some("/v1/messages"));
        assert!(first.set.contains(&("x-api-key".into(), "sk-a".into())));
        assert_eq!(first.mark, CHAT);
        assert!(first.set.iter().all(|(name, _)| !name.starts_with(INTERNAL_PREFIX)));
        assert!(first.remove.contains(&"authorization".to_string()));
        assert!(first.set.contains(&(":authority".into(), "api.anthropic.com".into())));
        // The retry starts from the headers the first attempt left.
        let retry = plan(&c, "openai", &c.providers["openai"], Some("sk-o"), &seen("/v1/messages", CHAT)).unwrap();
        assert!(retry.translate.is_none() && retry.read_body);
        assert_eq!(retry.path.as_deref(), Some("/v1/chat/completions"));
        assert!(retry.set.contains(&("authorization".into(), "Bearer sk-o".into())));
        assert!(retry.remove.contains(&"x-api-key".to_string()));
        assert!(retry.remove.contains(&"anthropic-version".to_string()));
        assert!(retry.set.contains(&(":authority".into(), "api.openai.com".into())));
    }

    #[test]
    fn a_messages_request_is_translated_for_openai_and_goes_back_to_its_path_for_anthropic() {
        let c = config(CHAIN);
        let first = plan(&c, "openai", &c.providers["openai"], Some("sk-o"), &seen("/v1/messages", None)).unwrap();
        assert_eq!(first.translate, TO_OPENAI);
        assert_eq!(first.path.as_deref(), Some("/v1/chat/completions"));
        assert_eq!(first.mark, MESSAGES);
        for header in ["anthropic-version", "anthropic-beta", "x-api-key", "accept-encoding", "content-length"] {
            assert!(first.remove.contains(&header.to_string()), "{header}");
        }
        let retry =
            plan(&c, "anthropic", &c.providers["anthropic"], Some("sk-a"), &seen("/v1/chat/completions", MESSAGES))
                .unwrap();
        assert_eq!(retry.translate, None);
        assert_eq!(retry.path.as_deref(), Some("/v1/messages"));
        assert!(retry.set.contains(&("anthropic-version".into(), "2023-06-01".into())));
    }

    const WITH_GEMINI: &str = r#"{"providers": {
        "openai": {"api_key": "sk-o"},
        "gemini": {"schema": "gemini", "api_key": "g-key"}}}"#;

    #[test]
    fn a_gemini_attempt_is_translated_and_addressed_to_the_routes_model() {
        let c = config(WITH_GEMINI);
        let gemini = &c.providers["gemini"];
        let models = r#"{"gemini": "gemini-2.5-flash", "openai": "gpt-4o"}"#;
        let clients = [
            ("/v1/chat/completions", Wire::OpenaiChat),
            ("/v1/responses", Wire::OpenaiResponses),
            ("/v1/messages", Wire::Anthropic),
        ];
        for (path, client) in clients {
            for (stream, method) in [(false, ":generateContent"), (true, ":streamGenerateContent?alt=sse")] {
                let seen = Seen { models: Some(models), stream, ..seen(path, None) };
                assert_eq!(unspoken("gemini", gemini, &seen), None);
                let p = plan(&c, "gemini", gemini, Some("g-key"), &seen).unwrap();
                assert_eq!(p.translate, Some(Translation { client, provider: Wire::Gemini }));
                assert_eq!(p.path, Some(format!("/v1beta/models/gemini-2.5-flash{method}")));
                assert_eq!(p.path_model.as_deref(), Some("gemini-2.5-flash"));
                assert!(p.set.contains(&("x-goog-api-key".into(), "g-key".into())));
                for header in ["authorization", "x-api-key", "anthropic-version", "accept-encoding", "content-length"] {
                    assert!(p.remove.contains(&header.to_string()), "{header}");
                }
            }
        }
        // The OpenAI retry drops the Gemini key.
        let retry =
            plan(&c, "openai", &c.providers["openai"], Some("sk-o"), &seen("/v1/chat/completions", None)).unwrap();
        assert!(retry.remove.contains(&"x-goog-api-key".to_string()));
        // Vertex AI: its own model path and a bearer token.
        let vertex = config(
            r#"{"providers": {"vertex": {"schema": "gemini", "api_key": "t", "auth_header": "authorization",
                "model_path": "/v1/projects/p/locations/europe-west4/publishers/google/models/{model}"}}}"#,
        );
        let seen = Seen { models: Some(r#"{"vertex": "gemini-2.5-pro"}"#), ..seen("/v1/chat/completions", None) };
        let p = plan(&vertex, "vertex", &vertex.providers["vertex"], Some("t"), &seen).unwrap();
        assert_eq!(
            p.path.as_deref(),
            Some("/v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent")
        );
        assert!(p.set.contains(&("authorization".into(), "Bearer t".into())));
    }

    #[test]
    fn a_gemini_attempt_without_a_routed_model_or_with_one_that_is_no_path_segment_is_refused() {
        let c = config(WITH_GEMINI);
        let gemini = &c.providers["gemini"];
        let unrouted = plan(&c, "gemini", gemini, Some("g"), &seen("/v1/chat/completions", None)).unwrap_err();
        assert!(unrouted.contains("model rewriter"), "{unrouted}");
        let other = Seen { models: Some(r#"{"openai": "gpt-4o"}"#), ..seen("/v1/chat/completions", None) };
        assert!(plan(&c, "gemini", gemini, Some("g"), &other).is_err());
        for model in ["../../v1/files", "m?key=x", "m:streamGenerateContent", "m/x", "", ".."] {
            let text = serde_json::json!({"gemini": model}).to_string();
            let seen = Seen { models: Some(&text), ..seen("/v1/chat/completions", None) };
            assert!(plan(&c, "gemini", gemini, Some("g"), &seen).is_err(), "{model}");
        }
        // Only chat, Responses, Messages and Gemini requests are taken.
        for path in ["/v1/embeddings", "/v1/completions"] {
            assert!(unspoken("gemini", gemini, &seen(path, None)).is_some(), "{path}");
        }
    }

    /// One provider of each schema.
    const EVERY_SCHEMA: &str = r#"{"providers": {
        "openai": {"api_key": "sk-o"},
        "anthropic": {"schema": "anthropic", "api_key": "sk-a"},
        "gemini": {"schema": "gemini", "api_key": "g-key"},
        "bedrock": {"schema": "bedrock", "api_key": "ABSK-k"}}}"#;

    const GEMINI_CALL: &str = "/v1beta/models/chat-fast:streamGenerateContent?alt=sse&key=vk-1";

    #[test]
    fn a_gemini_call_reaches_every_schema_in_its_own_model_and_stream() {
        let c = config(EVERY_SCHEMA);
        let models = r#"{"openai": "gpt-4o", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash", "bedrock": "amazon.nova-lite-v1:0"}"#;
        let routed = Seen { models: Some(models), ..seen(GEMINI_CALL, None) };
        let cases = [
            ("openai", Some(Wire::OpenaiChat), "/v1/chat/completions", None),
            ("anthropic", Some(Wire::Anthropic), "/v1/messages", None),
            ("gemini", None, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", Some("gemini-2.5-flash")),
            (
                "bedrock",
                Some(Wire::Bedrock),
                "/model/amazon.nova-lite-v1%3A0/converse-stream",
                Some("amazon.nova-lite-v1:0"),
            ),
        ];
        for (name, wire, path, in_path) in cases {
            let provider = &c.providers[name];
            assert_eq!(unspoken(name, provider, &routed), None, "{name}");
            let p = plan(&c, name, provider, Some("k"), &routed).unwrap();
            assert_eq!(p.translate.map(|t| (t.client, t.provider)), wire.map(|w| (Wire::Gemini, w)), "{name}");
            // The client's key never travels in the path.
            assert_eq!(p.path.as_deref(), Some(path), "{name}");
            assert!(p.read_body && p.mark == Some(Api::GeminiGenerate), "{name}");
            let client = GeminiClient { model: "chat-fast".into(), stream: true, in_path: in_path.map(str::to_string) };
            assert_eq!(p.gemini, Some(client), "{name}");
        }
        // Not routed: the path's own model, also once an earlier attempt changed the path.
        let gemini = &c.providers["gemini"];
        let direct = "/v1beta/models/gemini-2.5-pro:generateContent";
        let p = plan(&c, "gemini", gemini, Some("g"), &seen(direct, None)).unwrap();
        assert_eq!(p.path.as_deref(), Some(direct));
        let later = Seen { client_path: Some(direct), ..seen("/v1/chat/completions", Some(Api::GeminiGenerate)) };
        let p = plan(&c, "gemini", gemini, Some("g"), &later).unwrap();
        assert_eq!((p.path.as_deref(), p.path_model.as_deref()), (Some(direct), Some("gemini-2.5-pro")));
    }

    #[test]
    fn a_gemini_body_loses_the_gateways_model_and_is_given_its_paths() {
        let c = config(WITH_GEMINI);
        let contents = r#""contents":[{"role":"user","parts":[{"text":"Hi"}]}]"#;
        let routed =
            format!(r#"{{"model":"gemini-2.5-flash","sluice_models":{{"gemini":"gemini-2.5-flash"}},{contents}}}"#);
        let call = GeminiClient { model: "chat-fast".into(), stream: false, in_path: Some("gemini-2.5-flash".into()) };
        let same = prepare_body(routed.as_bytes(), "gemini", &c.providers["gemini"], true, None, Some(&call)).unwrap();
        let value: Value = serde_json::from_slice(&same.body.unwrap()).unwrap();
        assert_eq!(value, serde_json::from_str::<Value>(&format!("{{{contents}}}")).unwrap());
        // A model changed after the path was set (a downgrade with no rewriter) is refused.
        let downgraded = format!(r#"{{"model":"gemini-2.5-flash-lite",{contents}}}"#);
        let refused = prepare_body(downgraded.as_bytes(), "gemini", &c.providers["gemini"], false, None, Some(&call));
        assert!(refused.unwrap_err().contains("gemini-2.5-flash-lite"));
        // Translated: the model and the stream come from the call.
        let to_openai = Some(Translation { client: Wire::Gemini, provider: Wire::OpenaiChat });
        let stream = GeminiClient { model: "gpt-4o-mini".into(), stream: true, in_path: None };
        let body = format!("{{{contents}}}");
        let out =
            prepare_body(body.as_bytes(), "openai", &c.providers["openai"], false, to_openai, Some(&stream)).unwrap();
        let value: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!((value["model"].as_str(), value["stream"].as_bool()), (Some("gpt-4o-mini"), Some(true)));
        assert!(out.stream && out.include_usage);
        for bad in [&b"not json"[..], b"[]", br#"{"contents": 5}"#] {
            assert!(prepare_body(bad, "openai", &c.providers["openai"], false, to_openai, Some(&stream)).is_err());
        }
        assert!(prepare_body(b"not json", "gemini", &c.providers["gemini"], false, None, Some(&call)).is_err());
    }

    #[test]
    fn a_count_of_tokens_goes_to_anthropic_and_is_answered_here_for_the_others() {
        let c = config(EVERY_SCHEMA);
        let count = seen("/v1/messages/count_tokens", None);
        for (name, provider) in &c.providers {
            assert_eq!(unspoken(name, provider, &count), None, "{name}");
            let p = plan(&c, name, provider, Some("k"), &count).unwrap();
            let anthropic = name == "anthropic";
            // Never translated, never sent to a model path (none is routed here).
            assert_eq!((p.count_here, p.translate, p.path.is_some()), (!anthropic, None, false), "{name}");
            assert_eq!(p.read_body, !anthropic || c.is_chain(), "{name}");
        }
        let back = seen("/v1/chat/completions", Some(Api::AnthropicCountTokens));
        let p = plan(&c, "anthropic", &c.providers["anthropic"], Some("sk-a"), &back).unwrap();
        assert_eq!(p.path.as_deref(), Some("/v1/messages/count_tokens"));
        assert_eq!(counted_tokens(42), br#"{"input_tokens":42}"#.to_vec());
    }

    #[test]
    fn claude_on_vertex_is_messages_at_the_routed_models_path_with_the_version_in_the_body() {
        let c = config(
            r#"{"providers": {"vertex": {"schema": "anthropic", "api_key": "t", "auth_header": "authorization",
                "model_path": "/v1/projects/p/locations/us-east5/publishers/anthropic/models/{model}"}}}"#,
        );
        let vertex = &c.providers["vertex"];
        let models = r#"{"vertex": "claude-sonnet-4-6@20260101"}"#;
        let base = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6@20260101";
        for (path, translated) in [("/v1/messages", false), ("/v1/chat/completions", true)] {
            for (stream, method) in [(false, ":rawPredict"), (true, ":streamRawPredict")] {
                let seen = Seen { models: Some(models), stream, ..seen(path, None) };
                let p = plan(&c, "vertex", vertex, Some("t"), &seen).unwrap();
                assert_eq!(p.path, Some(format!("{base}{method}")), "{path}");
                assert_eq!(p.translate.is_some(), translated, "{path}");
                assert!(p.read_body && p.set.contains(&("authorization".into(), "Bearer t".into())));
                assert!(
                    p.remove.contains(&"anthropic-version".to_string()) && p.remove.contains(&"x-api-key".to_string())
                );
            }
        }
        // The body: no model, Vertex's version; the stream as asked.
        let body = br#"{"model":"claude-sonnet-4-6@20260101","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let out = prepare_body(body, "vertex", vertex, false, None, None).unwrap();
        let value: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!((value.get("model"), value["anthropic_version"].as_str()), (None, Some("vertex-2023-10-16")));
        assert!(out.stream);
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let out = prepare_body(chat, "vertex", vertex, false, TO_ANTHROPIC, None).unwrap();
        let value: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!((value.get("model"), value["max_tokens"].as_u64()), (None, Some(4096)));
        // Unrouted, it cannot be addressed; counting tokens is the gateway's.
        assert!(plan(&c, "vertex", vertex, Some("t"), &seen("/v1/messages", None)).is_err());
        assert!(plan(&c, "vertex", vertex, Some("t"), &seen("/v1/messages/count_tokens", None)).unwrap().count_here);
        // Only with a model path may the Anthropic schema take another credential header.
        let bad = r#"{"providers": {"a": {"schema": "anthropic", "auth_header": "authorization"}}}"#;
        assert!(sluice_shared::config::parse_config::<Config>(Some(bad.as_bytes())).is_err());
    }

    #[test]
    fn a_key_in_the_query_goes_where_the_other_credentials_go() {
        let c = config(WITH_GEMINI);
        let openai = &c.providers["openai"];
        let p = plan(&c, "openai", openai, Some("sk-o"), &seen("/v1/chat/completions?key=vk&x=1", None)).unwrap();
        assert_eq!(p.path.as_deref(), Some("/v1/chat/completions?x=1"));
        // A provider whose credential comes from the request keeps the client's.
        let own = config(r#"{"providers": {"openai": {}}}"#);
        let p =
            plan(&own, "openai", &own.providers["openai"], None, &seen("/v1/chat/completions?key=vk", None)).unwrap();
        assert_eq!(p.path, None);
    }

    #[test]
    fn a_responses_request_is_translated_for_anthropic_and_goes_back_to_its_path_for_openai() {
        let c = config(CHAIN);
        let first =
            plan(&c, "anthropic", &c.providers["anthropic"], Some("sk-a"), &seen("/v1/responses", None)).unwrap();
        assert_eq!(first.translate, Some(Translation { client: Wire::OpenaiResponses, provider: Wire::Anthropic }));
        assert_eq!((first.path.as_deref(), first.mark), (Some("/v1/messages"), Some(Api::Responses)));
        let retry =
            plan(&c, "openai", &c.providers["openai"], Some("sk-o"), &seen("/v1/messages", Some(Api::Responses)))
                .unwrap();
        assert_eq!((retry.translate, retry.path.as_deref()), (None, Some("/v1/responses")));
        assert!(retry.remove.contains(&"anthropic-version".to_string()));
    }

    #[test]
    fn a_bedrock_attempt_is_translated_to_converse_at_its_percent_encoded_model() {
        let c = config(
            r#"{"providers": {"bedrock": {"schema": "bedrock", "api_key": "ABSK-k",
            "authority": "bedrock-runtime.eu-west-1.amazonaws.com"}}}"#,
        );
        let bedrock = &c.providers["bedrock"];
        let cases = [
            (
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                false,
                "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
            ),
            ("eu.amazon.nova-lite-v1:0", true, "/model/eu.amazon.nova-lite-v1%3A0/converse-stream"),
            (
                "arn:aws:bedrock:eu-west-1:123:inference-profile/eu.x?y#z",
                false,
                "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123%3Ainference-profile%2Feu.x%3Fy%23z/converse",
            ),
        ];
        for (model, stream, path) in cases {
            let text = serde_json::json!({"bedrock": model}).to_string();
            let seen = Seen { models: Some(&text), stream, ..seen("/v1/messages", None) };
            let p = plan(&c, "bedrock", bedrock, Some("ABSK-k"), &seen).unwrap();
            assert_eq!(p.path.as_deref(), Some(path));
            assert_eq!(p.translate, Some(Translation { client: Wire::Anthropic, provider: Wire::Bedrock }));
            assert!(p.set.contains(&("authorization".into(), "Bearer ABSK-k".into())));
            assert!(p.remove.contains(&"x-api-key".to_string()) && p.remove.contains(&"anthropic-version".to_string()));
        }
        assert!(plan(&c, "bedrock", bedrock, Some("k"), &seen("/v1/chat/completions", None)).is_err());
    }

    #[test]
    fn a_sigv4_bedrock_attempt_carries_no_credential_for_envoys_signer_to_replace() {
        let c = config(r#"{"providers": {"bedrock": {"schema": "bedrock", "aws_sigv4": true}}}"#);
        let bedrock = &c.providers["bedrock"];
        let seen =
            Seen { models: Some(r#"{"bedrock": "amazon.nova-lite-v1:0"}"#), ..seen("/v1/chat/completions", None) };
        let p = plan(&c, "bedrock", bedrock, None, &seen).unwrap();
        assert!(p.set.iter().all(|(h, _)| h != "authorization"));
        for header in ["authorization", "x-api-key", "x-goog-api-key"] {
            assert!(p.remove.contains(&header.to_string()), "{header}");
        }
        assert!(foreign_header(Some(bedrock), "x-amz-security-token"));
        assert!(foreign_header(None, "x-sluice-cluster") && !foreign_header(None, "x-amz-date"));
    }

    #[test]
    fn chain_attempt_without_its_key_carries_no_credential() {
        let c = config(r#"{"providers": {"openai": {"api_key_env": "SLUICE_TEST_UNSET"}, "b": {"api_key": "k"}}}"#);
        let p = plan(&c, "openai", &c.providers["openai"], None, &seen("/v1/chat/completions", None)).unwrap();
        assert!(p.set.iter().all(|(h, _)| h != "authorization"));
        assert!(p.remove.contains(&"authorization".to_string()));
    }

    #[test]
    fn single_provider_passes_what_it_need_not_touch() {
        let c = config(r#"{"providers": {"openai": {}}}"#);
        let p = plan(&c, "openai", &c.providers["openai"], None, &seen("/v1/chat/completions", None)).unwrap();
        assert_eq!(p, Plan::default());
        let native = config(r#"{"providers": {"a": {"schema": "anthropic"}}}"#);
        let p = plan(&native, "a", &native.providers["a"], None, &seen("/v1/messages", None)).unwrap();
        assert!(p.translate.is_none() && !p.read_body && p.path.is_none());
        // Azure: the chat path and the `api-key` header.
        let azure = config(
            r#"{"providers": {"azure": {"api_key": "k", "auth_header": "api-key",
                "chat_path": "/openai/deployments/d/chat/completions?api-version=2024-10-21"}}}"#,
        );
        let p =
            plan(&azure, "azure", &azure.providers["azure"], Some("k"), &seen("/v1/chat/completions", None)).unwrap();
        assert_eq!(p.path.as_deref(), Some("/openai/deployments/d/chat/completions?api-version=2024-10-21"));
        assert!(p.set.contains(&("api-key".into(), "k".into())));
        assert!(p.remove.contains(&"authorization".to_string()));
    }

    #[test]
    fn bodies() {
        let c = config(CHAIN);
        let body = br#"{"model":"gpt-4o","sluice_models":{"openai":"gpt-4o","anthropic":"claude-x"},
            "messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let to_anthropic =
            prepare_body(body, "anthropic", &c.providers["anthropic"], true, TO_ANTHROPIC, None).unwrap();
        let value: Value = serde_json::from_slice(&to_anthropic.body.unwrap_or_default()).unwrap_or_default();
        assert_eq!((value["model"].as_str(), value.get("sluice_models")), (Some("claude-x"), None));
        assert!(to_anthropic.include_usage);
        let to_openai = prepare_body(body, "openai", &c.providers["openai"], true, None, None).unwrap();
        let value: Value = serde_json::from_slice(&to_openai.body.unwrap_or_default()).unwrap_or_default();
        assert_eq!((value["model"].as_str(), value.get("sluice_models")), (Some("gpt-4o"), None));
        // Nothing to change: the body stays; not JSON: passed unless it must be translated.
        assert_eq!(
            prepare_body(br#"{"model":"m"}"#, "openai", &c.providers["openai"], true, None, None).unwrap().body,
            None
        );
        assert_eq!(prepare_body(b"\xff\xfe", "openai", &c.providers["openai"], true, None, None).unwrap().body, None);
        assert!(prepare_body(b"\xff\xfe", "anthropic", &c.providers["anthropic"], true, TO_ANTHROPIC, None).is_err());
        // Outside a chain, a client's member is dropped and picks nothing.
        let single = prepare_body(body, "anthropic", &c.providers["anthropic"], false, TO_ANTHROPIC, None).unwrap();
        let value: Value = serde_json::from_slice(&single.body.unwrap_or_default()).unwrap_or_default();
        assert_eq!((value["model"].as_str(), value.get("sluice_models")), (Some("gpt-4o"), None));
        assert!(prepare_body(br#"{"messages": 3}"#, "anthropic", &c.providers["anthropic"], true, TO_ANTHROPIC, None)
            .is_err());
        // An Anthropic Messages request for an OpenAI provider.
        let messages = br#"{"model":"claude-x","sluice_models":{"openai":"gpt-4o","anthropic":"claude-x"},
            "max_tokens":9,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let to_openai = prepare_body(messages, "openai", &c.providers["openai"], true, TO_OPENAI, None).unwrap();
        let value: Value = serde_json::from_slice(&to_openai.body.unwrap_or_default()).unwrap_or_default();
        assert_eq!(value["model"], "gpt-4o");
        assert_eq!(value["messages"][0], serde_json::json!({"role": "user", "content": "hi"}));
        assert_eq!(value["max_completion_tokens"], 9);
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert!(to_openai.include_usage);
        // A chain that leaves a provider out (not allowed for the key) is never sent to it.
        let partial = br#"{"model":"gpt-4o","sluice_models":{"openai":"gpt-4o"},"messages":[]}"#;
        let refused = prepare_body(partial, "anthropic", &c.providers["anthropic"], true, TO_ANTHROPIC, None);
        assert!(refused.unwrap_err().contains("no model for provider `anthropic`"));
    }

    #[test]
    fn only_classified_requests_are_admitted() {
        let mut c = config(CHAIN);
        assert!(admitted(&c, "POST", "/v1/chat/completions", None));
        assert!(admitted(&c, "POST", "/v1/messages", None));
        assert!(admitted(&c, "GET", "/v1/models", None));
        // A Gemini call is an API request of its own.
        assert!(admitted(&c, "POST", "/v1beta/models/gemini-2.5-flash:generateContent", None));
        // An earlier attempt sent the request to a Bedrock path: its mark admits the next attempt.
        let bedrock = "/model/anthropic.claude-haiku-4-5/converse";
        assert!(!admitted(&c, "POST", bedrock, None) && admitted(&c, "POST", bedrock, CHAT));
        for (method, path) in
            [("GET", "/v1/files"), ("PUT", "/v1/chat/completions"), ("POST", "/v1/chat/%63ompletions")]
        {
            assert!(!admitted(&c, method, path, None), "{method} {path}");
        }
        c.passthrough = vec![sluice_shared::api::PathRule { prefix: "/v1/files".into(), methods: vec!["GET".into()] }];
        assert!(admitted(&c, "GET", "/v1/files/f-1", None));
        assert!(!admitted(&c, "POST", "/v1/files", None));
    }
}
