//! Token usage in one shape for every API, read from provider answers.

use crate::anthropic;
use crate::api::{Api, Schema};
use crate::gemini;
use crate::json::from_object;
use crate::openai;

/// Prompt-side counts reported by a provider. `prompt` includes cached and cache-write tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputUsage {
    pub prompt: u64,
    pub cached: u64,
    pub cache_write: u64,
}

/// Completion-side counts reported by a provider. `completion` includes reasoning tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputUsage {
    pub completion: u64,
    pub reasoning: u64,
}

/// What a provider reported; either side may be missing (no usage, a cut stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedUsage {
    pub input: Option<InputUsage>,
    pub output: Option<OutputUsage>,
}

/// Final counts for one request, whatever their source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl From<&openai::Usage> for ReportedUsage {
    fn from(u: &openai::Usage) -> Self {
        let cached = u.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0);
        let reasoning = u.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0);
        // Embeddings report only prompt and total tokens; a missing completion count is zero
        // there, but unknown elsewhere.
        let completion = u.completion_tokens.or_else(|| match (u.total_tokens, u.prompt_tokens) {
            (Some(total), Some(prompt)) => Some(total.saturating_sub(prompt)),
            _ => None,
        });
        ReportedUsage {
            input: u.prompt_tokens.map(|prompt| InputUsage { prompt, cached, cache_write: 0 }),
            output: completion.map(|completion| OutputUsage { completion, reasoning }),
        }
    }
}

impl From<&openai::ResponsesUsage> for ReportedUsage {
    fn from(u: &openai::ResponsesUsage) -> Self {
        let cached = u.input_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0);
        let reasoning = u.output_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0);
        ReportedUsage {
            input: u.input_tokens.map(|prompt| InputUsage { prompt, cached, cache_write: 0 }),
            output: u.output_tokens.map(|completion| OutputUsage { completion, reasoning }),
        }
    }
}

/// Gemini counts tool-use prompt tokens apart from the prompt, and thoughts apart from the
/// answer; both are billed (as input and output), so both are counted in.
impl From<&gemini::UsageMetadata> for ReportedUsage {
    fn from(u: &gemini::UsageMetadata) -> Self {
        let reasoning = u.thoughts_token_count.unwrap_or(0);
        let cached = u.cached_content_token_count.unwrap_or(0);
        ReportedUsage {
            input: u.prompt_token_count.map(|prompt| InputUsage {
                prompt: prompt.saturating_add(u.tool_use_prompt_token_count.unwrap_or(0)),
                cached,
                cache_write: 0,
            }),
            output: u
                .candidates_token_count
                .or(u.thoughts_token_count.map(|_| 0))
                .map(|answer| OutputUsage { completion: answer.saturating_add(reasoning), reasoning }),
        }
    }
}

impl From<&anthropic::Usage> for ReportedUsage {
    fn from(u: &anthropic::Usage) -> Self {
        let cached = u.cache_read_input_tokens.unwrap_or(0);
        let cache_write = u.cache_creation_input_tokens.unwrap_or(0);
        ReportedUsage {
            input: u.input_tokens.map(|input| InputUsage {
                prompt: input.saturating_add(cached).saturating_add(cache_write),
                cached,
                cache_write,
            }),
            output: u.output_tokens.map(|completion| OutputUsage { completion, reasoning: 0 }),
        }
    }
}

/// What Sluice reads from a whole (non-streamed) JSON answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub model: Option<String>,
    pub usage: ReportedUsage,
    /// Generated text per choice, for counting; collected only when the provider reported no
    /// completion count (copying every answer's text would be wasted work).
    pub output_texts: Vec<String>,
}

/// Reads a whole JSON answer of `api`. An error means the body is not the JSON we expect.
pub fn parse_answer(api: Api, body: &[u8]) -> Result<Answer, serde_json::Error> {
    match (api, api.schema()) {
        (Api::Responses, _) => {
            let r: openai::ResponsesAnswer = from_object(body)?;
            Ok(Answer {
                model: r.model,
                usage: r.usage.as_ref().map(ReportedUsage::from).unwrap_or_default(),
                output_texts: Vec::new(),
            })
        }
        (_, Schema::Anthropic) => {
            let r: anthropic::MessagesAnswer = from_object(body)?;
            let usage = r.usage.as_ref().map(ReportedUsage::from).unwrap_or_default();
            let output_texts = if usage.output.is_some() {
                Vec::new()
            } else {
                let text =
                    r.content.iter().flat_map(|b| b.text.iter().cloned().chain(b.input.iter().map(|i| i.to_string())));
                vec![text.collect::<String>()]
            };
            Ok(Answer { model: r.model, usage, output_texts })
        }
        (_, Schema::Gemini) => {
            let r: gemini::GenerateAnswer = from_object(body)?;
            let usage = r.usage_metadata.as_ref().map(ReportedUsage::from).unwrap_or_default();
            let output_texts = if usage.output.is_some() { Vec::new() } else { gemini_texts(&r) };
            Ok(Answer { model: r.model_version, usage, output_texts })
        }
        (_, Schema::OpenAi) => {
            let r: openai::CompletionAnswer = from_object(body)?;
            let usage = r.usage.as_ref().map(ReportedUsage::from).unwrap_or_default();
            let output_texts =
                if usage.output.is_some() { Vec::new() } else { r.choices.iter().map(choice_text).collect() };
            Ok(Answer { model: r.model, usage, output_texts })
        }
    }
}

/// Generated text per candidate (function call arguments as their JSON text).
pub fn gemini_texts(answer: &gemini::GenerateAnswer) -> Vec<String> {
    answer
        .candidates
        .iter()
        .map(|candidate| {
            let parts = candidate.content.iter().flat_map(|c| c.parts.iter());
            parts
                .map(|p| {
                    let call = p.function_call.as_ref().map(|c| c.args.to_string());
                    format!("{}{}", p.text.as_deref().unwrap_or_default(), call.unwrap_or_default())
                })
                .collect()
        })
        .collect()
}

fn choice_text(choice: &openai::Choice) -> String {
    let mut text = choice.text.clone().unwrap_or_default();
    if let Some(message) = &choice.message {
        for piece in message.content.texts() {
            text.push_str(piece);
        }
        for call in &message.tool_calls {
            text.push_str(call.function.arguments.as_deref().unwrap_or_default());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn reads_gemini_usage_with_thoughts_and_tool_prompts() {
        let body =
            br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]}}],"modelVersion":"gemini-2.5-flash",
            "usageMetadata":{"promptTokenCount":10,"toolUsePromptTokenCount":2,"cachedContentTokenCount":4,
            "candidatesTokenCount":3,"thoughtsTokenCount":5,"totalTokenCount":20}}"#;
        let a = parse_answer(Api::GeminiGenerate, body).unwrap();
        assert_eq!(a.model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(a.usage.input, Some(InputUsage { prompt: 12, cached: 4, cache_write: 0 }));
        assert_eq!(a.usage.output, Some(OutputUsage { completion: 8, reasoning: 5 }));
        assert!(a.output_texts.is_empty());
        let bare = parse_answer(
            Api::GeminiGenerate,
            br#"{"candidates":[{"content":{"parts":[{"text":"Hel"},{"functionCall":{"name":"f","args":{"a":1}}}]}}]}"#,
        )
        .unwrap();
        assert_eq!((bare.usage, bare.output_texts), (ReportedUsage::default(), vec![r#"Hel{"a":1}"#.to_string()]));
    }

    #[test]
    fn openai_chat_answer() {
        let body = br#"{"id":"x","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."}}],
            "usage":{"prompt_tokens":20,"completion_tokens":3,"total_tokens":23,
            "prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        let a = parse_answer(Api::ChatCompletions, body).unwrap();
        assert_eq!(a.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(a.usage.input, Some(InputUsage { prompt: 20, cached: 8, cache_write: 0 }));
        assert_eq!(a.usage.output, Some(OutputUsage { completion: 3, reasoning: 1 }));
        assert!(a.output_texts.is_empty(), "text is not copied when the provider counted it");
    }

    #[test]
    fn embeddings_have_no_completion() {
        let body = br#"{"object":"list","data":[],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        let a = parse_answer(Api::Embeddings, body).unwrap();
        assert_eq!(a.usage.input.map(|i| i.prompt), Some(5));
        assert_eq!(a.usage.output.map(|o| o.completion), Some(0));
    }

    #[test]
    fn anthropic_answer_counts_cache_in_prompt() {
        let body = br#"{"id":"m","model":"claude-sonnet-4","content":[{"type":"text","text":"Hi"}],
            "usage":{"input_tokens":10,"output_tokens":4,"cache_read_input_tokens":100,"cache_creation_input_tokens":20}}"#;
        let a = parse_answer(Api::AnthropicMessages, body).unwrap();
        assert_eq!(a.usage.input, Some(InputUsage { prompt: 130, cached: 100, cache_write: 20 }));
        assert_eq!(a.usage.output, Some(OutputUsage { completion: 4, reasoning: 0 }));
        assert!(a.output_texts.is_empty());
        let without_usage =
            parse_answer(Api::AnthropicMessages, br#"{"content":[{"type":"text","text":"Hi"}]}"#).unwrap();
        assert_eq!(without_usage.output_texts, vec!["Hi"]);
    }

    #[test]
    fn responses_answer() {
        let body = br#"{"model":"o3","output":[],"usage":{"input_tokens":9,"output_tokens":50,
            "input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":40}}}"#;
        let a = parse_answer(Api::Responses, body).unwrap();
        assert_eq!(a.usage.output, Some(OutputUsage { completion: 50, reasoning: 40 }));
    }

    #[test]
    fn answer_without_usage_keeps_texts() {
        let body = br#"{"choices":[{"index":0,"message":{"content":"a"}},{"index":1,"text":"b"}]}"#;
        let a = parse_answer(Api::ChatCompletions, body).unwrap();
        assert_eq!(a.usage, ReportedUsage::default());
        assert_eq!(a.output_texts, vec!["a", "b"]);
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(parse_answer(Api::ChatCompletions, b"{not json").is_err());
        assert!(parse_answer(Api::ChatCompletions, br#"{"choices":"nope"}"#).is_err());
        assert!(parse_answer(Api::AnthropicMessages, b"").is_err());
        assert!(parse_answer(Api::GeminiGenerate, b"[]").is_err());
    }
}
