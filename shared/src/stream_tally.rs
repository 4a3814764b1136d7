//! Follows a streamed (SSE) answer chunk by chunk: the usage the provider reports, the text it
//! generates (for counting when no usage comes) and whether the stream completed.

use crate::anthropic;
use crate::api::{Api, Schema};
use crate::gemini;
use crate::openai;
use crate::sse::{SseEvent, SseParser};
use crate::usage::ReportedUsage;

/// Longest SSE line kept; longer ones are dropped and their text estimated from their size.
const MAX_LINE_BYTES: usize = 4 << 20;
/// Most choices (`n`) tracked separately.
const MAX_CHOICES: usize = 128;

/// Generated text per choice, kept up to a byte budget; beyond it only the size is kept.
#[derive(Debug, Default)]
pub struct OutputTexts {
    texts: Vec<String>,
    kept_bytes: usize,
    max_bytes: usize,
    dropped_bytes: u64,
}

impl OutputTexts {
    pub fn new(max_bytes: usize) -> Self {
        OutputTexts { max_bytes, ..Default::default() }
    }

    pub fn push(&mut self, index: usize, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.kept_bytes.saturating_add(text.len()) > self.max_bytes || index >= MAX_CHOICES {
            self.dropped_bytes = self.dropped_bytes.saturating_add(text.len() as u64);
            return;
        }
        if self.texts.len() <= index {
            self.texts.resize(index + 1, String::new());
        }
        if let Some(slot) = self.texts.get_mut(index) {
            slot.push_str(text);
            self.kept_bytes += text.len();
        }
    }

    /// The kept text, one string per choice.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// Hands over the kept text, one string per choice.
    pub fn take_texts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.texts)
    }

    /// Bytes of text seen but not kept.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }
}

#[derive(Debug)]
pub struct StreamTally {
    api: Api,
    parser: SseParser,
    usage: ReportedUsage,
    output: OutputTexts,
    model: Option<String>,
    events: u64,
    unreadable_events: u64,
    completed: bool,
}

impl StreamTally {
    pub fn new(api: Api, max_text_bytes: usize) -> Self {
        StreamTally {
            api,
            parser: SseParser::new(MAX_LINE_BYTES),
            usage: ReportedUsage::default(),
            output: OutputTexts::new(max_text_bytes),
            model: None,
            events: 0,
            unreadable_events: 0,
            completed: false,
        }
    }

    /// Feeds one chunk of the answer body as it passes through.
    pub fn push(&mut self, chunk: &[u8]) {
        for event in self.parser.push(chunk) {
            self.on_event(&event);
        }
    }

    /// The body ended (or was cut): reads a last unterminated event, if any.
    pub fn finish(&mut self) {
        if let Some(event) = self.parser.finish() {
            self.on_event(&event);
        }
    }

    pub fn usage(&self) -> ReportedUsage {
        self.usage
    }
    pub fn output(&self) -> &OutputTexts {
        &self.output
    }
    pub fn output_mut(&mut self) -> &mut OutputTexts {
        &mut self.output
    }
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    /// Events seen, and how many of them were not the JSON we expect.
    pub fn events(&self) -> (u64, u64) {
        (self.events, self.unreadable_events)
    }
    /// The provider's end-of-stream marker arrived (`[DONE]`, `message_stop`, `response.completed`).
    pub fn completed(&self) -> bool {
        self.completed
    }
    /// Some line was too long to keep: counts from text may be low.
    pub fn overflowed(&self) -> bool {
        self.parser.overflowed()
    }

    fn on_event(&mut self, event: &SseEvent) {
        self.events += 1;
        let data = event.data.trim();
        if data == "[DONE]" {
            self.completed = true;
            return;
        }
        let readable = match (self.api, self.api.schema()) {
            (Api::Responses, _) => self.on_responses_event(data),
            (_, Schema::Anthropic) => self.on_anthropic_event(data),
            (_, Schema::Gemini) => self.on_gemini_chunk(data),
            (_, Schema::OpenAi) => self.on_openai_chunk(data),
        };
        if !readable {
            self.unreadable_events += 1;
        }
    }

    fn on_openai_chunk(&mut self, data: &str) -> bool {
        let Ok(chunk) = serde_json::from_str::<openai::CompletionChunk>(data) else {
            return false;
        };
        if self.model.is_none() {
            self.model = chunk.model;
        }
        for choice in &chunk.choices {
            let index = choice.index as usize;
            if let Some(text) = &choice.text {
                self.output.push(index, text);
            }
            if let Some(delta) = &choice.delta {
                for text in [&delta.content, &delta.reasoning_content, &delta.refusal].into_iter().flatten() {
                    self.output.push(index, text);
                }
                for call in &delta.tool_calls {
                    if let Some(args) = &call.function.arguments {
                        self.output.push(index, args);
                    }
                }
            }
        }
        // Some servers repeat a running usage in every chunk: the last one wins.
        if let Some(usage) = &chunk.usage {
            let reported = ReportedUsage::from(usage);
            self.usage.input = reported.input.or(self.usage.input);
            self.usage.output = reported.output.or(self.usage.output);
        }
        true
    }

    fn on_anthropic_event(&mut self, data: &str) -> bool {
        let Ok(event) = serde_json::from_str::<anthropic::StreamEvent>(data) else {
            return false;
        };
        match event.kind.as_str() {
            "message_start" => {
                if let Some(message) = event.message {
                    self.model = message.model.or(self.model.take());
                    // Its output count is a placeholder (usually 1): only the input side is final.
                    if let Some(usage) = &message.usage {
                        self.usage.input = ReportedUsage::from(usage).input.or(self.usage.input);
                    }
                }
            }
            "content_block_delta" => {
                if let Some(delta) = &event.delta {
                    for text in [&delta.text, &delta.partial_json, &delta.thinking].into_iter().flatten() {
                        self.output.push(0, text);
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = &event.usage {
                    let reported = ReportedUsage::from(usage);
                    self.usage.output = reported.output.or(self.usage.output);
                    self.usage.input = reported.input.or(self.usage.input);
                }
            }
            "message_stop" => self.completed = true,
            _ => {}
        }
        true
    }

    /// Each Gemini chunk carries the usage so far (the last one wins); the stream is complete
    /// once a candidate has a finish reason.
    fn on_gemini_chunk(&mut self, data: &str) -> bool {
        let Ok(chunk) = serde_json::from_str::<gemini::GenerateAnswer>(data) else {
            return false;
        };
        if self.model.is_none() {
            self.model.clone_from(&chunk.model_version);
        }
        for (index, text) in crate::usage::gemini_texts(&chunk).iter().enumerate() {
            self.output.push(index, text);
        }
        if let Some(usage) = &chunk.usage_metadata {
            let reported = ReportedUsage::from(usage);
            self.usage.input = reported.input.or(self.usage.input);
            self.usage.output = reported.output.or(self.usage.output);
        }
        if chunk.candidates.iter().any(|c| c.finish_reason.is_some()) {
            self.completed = true;
        }
        true
    }

    fn on_responses_event(&mut self, data: &str) -> bool {
        let Ok(event) = serde_json::from_str::<openai::ResponsesEvent>(data) else {
            return false;
        };
        match event.kind.as_str() {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
            | "response.reasoning_summary_text.delta" => {
                if let Some(delta) = &event.delta {
                    self.output.push(0, delta);
                }
            }
            "response.created" | "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(response) = event.response {
                    self.model = response.model.or(self.model.take());
                    if let Some(usage) = &response.usage {
                        self.usage = ReportedUsage::from(usage);
                    }
                }
                if event.kind != "response.created" {
                    self.completed = true;
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{InputUsage, OutputUsage};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn chunk(content: &str) -> String {
        format!(
            "data: {{\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{content:?}}}}}]}}\n\n"
        )
    }

    #[test]
    fn openai_stream_with_usage_split_everywhere() {
        let stream = format!(
            "{}{}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":11,\"completion_tokens\":2,\"total_tokens\":13}}}}\n\ndata: [DONE]\n\n",
            chunk("Hel"),
            chunk("lo")
        );
        let bytes = stream.as_bytes();
        for cut in 0..=bytes.len() {
            let mut tally = StreamTally::new(Api::ChatCompletions, 1 << 20);
            tally.push(&bytes[..cut]);
            tally.push(&bytes[cut..]);
            tally.finish();
            assert!(tally.completed());
            assert_eq!(tally.model(), Some("gpt-4o"));
            assert_eq!(tally.output().texts(), &["Hello".to_string()]);
            assert_eq!(tally.usage().input, Some(InputUsage { prompt: 11, cached: 0, cache_write: 0 }));
            assert_eq!(tally.usage().output, Some(OutputUsage { completion: 2, reasoning: 0 }));
        }
    }

    #[test]
    fn openai_stream_without_usage_keeps_text_per_choice_and_tool_args() {
        let mut tally = StreamTally::new(Api::ChatCompletions, 1 << 20);
        tally.push(chunk("a").as_bytes());
        tally.push(b"data: {\"choices\":[{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n");
        tally.push(b"data: not json\n\n");
        assert_eq!(tally.usage(), ReportedUsage::default());
        assert_eq!(tally.output().texts(), &["a".to_string(), "{}".to_string()]);
        assert_eq!(tally.events(), (3, 1));
        assert!(!tally.completed());
    }

    #[test]
    fn anthropic_stream() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut tally = StreamTally::new(Api::AnthropicMessages, 1 << 20);
        for piece in stream.as_bytes().chunks(7) {
            tally.push(piece);
        }
        assert!(tally.completed());
        assert_eq!(tally.model(), Some("claude-sonnet-4"));
        assert_eq!(tally.usage().input, Some(InputUsage { prompt: 30, cached: 5, cache_write: 0 }));
        assert_eq!(tally.usage().output, Some(OutputUsage { completion: 15, reasoning: 0 }));
        assert_eq!(tally.output().texts(), &["Hi there".to_string()]);
    }

    #[test]
    fn anthropic_stream_cut_before_message_delta_has_no_output_usage() {
        let mut tally = StreamTally::new(Api::AnthropicMessages, 1 << 20);
        tally.push(
            b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        );
        tally.push(
            b"data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n",
        );
        assert_eq!(tally.usage().output, None);
        assert_eq!(tally.usage().input.map(|i| i.prompt), Some(25));
        assert!(!tally.completed());
    }

    #[test]
    fn responses_stream() {
        let mut tally = StreamTally::new(Api::Responses, 1 << 20);
        tally.push(
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hey\"}\n\n",
        );
        tally.push(b"data: {\"type\":\"response.completed\",\"response\":{\"model\":\"o3\",\"usage\":{\"input_tokens\":3,\"output_tokens\":9,\"output_tokens_details\":{\"reasoning_tokens\":6}}}}\n\n");
        assert!(tally.completed());
        assert_eq!(tally.usage().output, Some(OutputUsage { completion: 9, reasoning: 6 }));
        assert_eq!(tally.output().texts(), &["Hey".to_string()]);
    }

    #[test]
    fn gemini_stream_keeps_the_last_usage_and_completes_on_a_finish_reason() {
        let mut tally = StreamTally::new(Api::GeminiGenerate, 1 << 20);
        let first = b"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}],\"modelVersion\":\"gemini-2.5-flash\",\"usageMetadata\":{\"promptTokenCount\":7}}\r\n\r\n";
        tally.push(first);
        assert!(!tally.completed());
        tally.push(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":2,\"thoughtsTokenCount\":4}}\r\n\r\n");
        assert!(tally.completed());
        assert_eq!(tally.model(), Some("gemini-2.5-flash"));
        assert_eq!(tally.usage().input.map(|i| i.prompt), Some(7));
        assert_eq!(tally.usage().output, Some(OutputUsage { completion: 6, reasoning: 4 }));
        assert_eq!(tally.output().texts(), &["Hello".to_string()]);
        tally.push(b"data: {not json\n\n");
        assert_eq!(tally.events(), (3, 1));
    }

    #[test]
    fn text_budget_is_bounded() {
        let mut texts = OutputTexts::new(4);
        texts.push(0, "abc");
        texts.push(0, "defg");
        texts.push(500, "x");
        assert_eq!(texts.texts(), &["abc".to_string()]);
        assert_eq!(texts.dropped_bytes(), 5);
    }
}
