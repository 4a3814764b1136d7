//! Token counting with OpenAI's BPE encodings (tiktoken-rs), chosen by model name.
//!
//! Each encoding's tables load once per VM (one VM per Envoy worker), on first use or at
//! configure time through [`Encoding::preload`]; loading takes 100–200 ms, counting is fast.

use serde::Deserialize;
use tiktoken_rs::CoreBPE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4 and their dated variants.
    O200kBase,
    /// gpt-4, gpt-3.5, text-embedding-*, and the default for unknown models.
    Cl100kBase,
}

impl Encoding {
    /// Picks the encoding for a model name. Provider prefixes (`openai/gpt-4o`) and dated
    /// suffixes are accepted; unknown models (Claude, Llama, ...) get the default, cl100k_base,
    /// which is an estimate for them.
    pub fn for_model(model: &str) -> Encoding {
        let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        let o200k = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4", "gpt-oss"];
        if o200k.iter().any(|prefix| name.starts_with(prefix)) {
            Encoding::O200kBase
        } else {
            Encoding::Cl100kBase
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// Loads the encoding's tables now rather than on the first request.
    pub fn preload(self) {
        let _ = self.bpe();
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Exact token count of `text` (special tokens counted as ordinary text, as a provider does
    /// with user content).
    pub fn count(self, text: &str) -> u64 {
        self.bpe().count_ordinary(text) as u64
    }
}

/// Counts many pieces of text, exactly up to a byte budget and by extrapolation beyond it, so a
/// multi-megabyte prompt costs bounded time.
#[derive(Debug)]
pub struct TokenTally {
    encoding: Encoding,
    exact_budget_bytes: usize,
    exact_bytes: u64,
    exact_tokens: u64,
    estimated_bytes: u64,
    /// Fixed overheads (message framing) added by the caller.
    overhead: u64,
}

/// When nothing was counted exactly, the usual English ratio of about four bytes per token.
const DEFAULT_BYTES_PER_TOKEN: f64 = 4.0;

impl TokenTally {
    pub fn new(encoding: Encoding, exact_budget_bytes: usize) -> Self {
        TokenTally { encoding, exact_budget_bytes, exact_bytes: 0, exact_tokens: 0, estimated_bytes: 0, overhead: 0 }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub fn add_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if text.len() <= self.exact_budget_bytes {
            self.exact_budget_bytes -= text.len();
            self.exact_bytes += text.len() as u64;
            self.exact_tokens += self.encoding.count(text);
            return;
        }
        let mut cut = self.exact_budget_bytes;
        while cut > 0 && !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = text.split_at(cut);
        if !head.is_empty() {
            self.exact_budget_bytes = 0;
            self.exact_bytes += head.len() as u64;
            self.exact_tokens += self.encoding.count(head);
        }
        self.estimated_bytes += tail.len() as u64;
    }

    /// Adds text known only by its size (for example text a stream dropped).
    pub fn add_unseen_bytes(&mut self, bytes: u64) {
        self.estimated_bytes = self.estimated_bytes.saturating_add(bytes);
    }

    pub fn add_overhead(&mut self, tokens: u64) {
        self.overhead = self.overhead.saturating_add(tokens);
    }

    /// Whether part of the total is extrapolated rather than counted.
    pub fn is_estimated(&self) -> bool {
        self.estimated_bytes > 0
    }

    pub fn total(&self) -> u64 {
        let bytes_per_token = if self.exact_tokens > 0 {
            self.exact_bytes as f64 / self.exact_tokens as f64
        } else {
            DEFAULT_BYTES_PER_TOKEN
        };
        let extrapolated = (self.estimated_bytes as f64 / bytes_per_token).ceil() as u64;
        self.exact_tokens.saturating_add(extrapolated).saturating_add(self.overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn picks_encoding_by_model() {
        for m in ["gpt-4o", "gpt-4o-mini-2024-07-18", "openai/gpt-4.1", "o3-mini", "o1", "gpt-5", "GPT-4O"] {
            assert_eq!(Encoding::for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "text-embedding-3-small", "claude-sonnet-4", "", "llama-3"] {
            assert_eq!(Encoding::for_model(m), Encoding::Cl100kBase, "{m}");
        }
    }

    #[test]
    fn known_counts() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
        assert_eq!(Encoding::O200kBase.count("hello world"), 2);
        assert_eq!(Encoding::Cl100kBase.count("tiktoken is great!"), 6);
        assert_eq!(Encoding::O200kBase.count(""), 0);
        // Special-token text is ordinary text in user content.
        assert!(Encoding::Cl100kBase.count("<|endoftext|>") > 1);
    }

    #[test]
    fn tally_is_exact_within_budget_and_extrapolates_beyond() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        let exact = Encoding::Cl100kBase.count(&text);
        let mut within = TokenTally::new(Encoding::Cl100kBase, 1 << 20);
        within.add_text(&text);
        within.add_overhead(3);
        assert_eq!(within.total(), exact + 3);
        assert!(!within.is_estimated());

        let mut beyond = TokenTally::new(Encoding::Cl100kBase, 450);
        beyond.add_text(&text);
        assert!(beyond.is_estimated());
        let total = beyond.total() as f64;
        assert!((total - exact as f64).abs() / (exact as f64) < 0.05, "{total} vs {exact}");
    }

    #[test]
    fn tally_cuts_on_char_boundary() {
        let mut tally = TokenTally::new(Encoding::O200kBase, 2);
        tally.add_text("éé"); // 4 bytes, cut must not split a character
        assert!(tally.total() >= 1);
    }
}
