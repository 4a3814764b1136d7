//! Token counting with OpenAI's BPE encodings, chosen by model name.
//!
//! The vocabularies are compact: every ordinary token's bytes in rank order (written by
//! `build.rs` from OpenAI's published files), about 40% of the size of the text files other
//! tokenizers embed, and one hash map of borrowed slices when loaded (about 3 MB for
//! cl100k_base, 6 MB for o200k_base) instead of owned copies in both directions. An encoding
//! loads once per VM, on first use or at configure time through [`Encoding::preload`]; modules
//! that never count link no vocabulary at all.
//!
//! Counting is tiktoken's: the text is split by the encoding's pattern, each piece that is not a
//! token itself is merged pair by pair, lowest rank first (leftmost on ties), and the parts left
//! are the tokens. Tests check the counts against tiktoken-rs on a varied corpus.

use std::sync::OnceLock;

use fancy_regex::Regex;
use rustc_hash::FxHashMap;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4 and their dated variants.
    O200kBase,
    /// gpt-4, gpt-3.5, text-embedding-*, and the default for unknown models.
    Cl100kBase,
}

/// cl100k_base's pre-tokenizer (OpenAI's published pattern).
const CL100K_PATTERN: &str = concat!(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+",
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
);
/// o200k_base's pre-tokenizer (OpenAI's published pattern).
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

static CL100K_TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.bin"));
static O200K_TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bin"));

/// One encoding, loaded: token bytes to rank, and the pre-tokenizer.
struct Vocabulary {
    ranks: FxHashMap<&'static [u8], u32>,
    pattern: Option<Regex>,
}

impl Vocabulary {
    fn load(table: &'static [u8], pattern: &str) -> Self {
        let mut ranks = FxHashMap::default();
        let mut rest = table;
        while let Some((&length, tail)) = rest.split_first() {
            let Some((token, tail)) = tail.split_at_checked(usize::from(length)) else { break };
            let rank = u32::try_from(ranks.len()).unwrap_or(u32::MAX);
            ranks.insert(token, rank);
            rest = tail;
        }
        let pattern = Regex::new(pattern).map_err(|e| log::error!("tokenizer pattern: {e}")).ok();
        Vocabulary { ranks, pattern }
    }

    fn count(&self, text: &str) -> u64 {
        let Some(pattern) = &self.pattern else { return estimate(text.len()) };
        let mut tokens = 0;
        let mut end = 0;
        for found in pattern.find_iter(text) {
            match found {
                Ok(piece) => {
                    tokens += self.count_piece(piece.as_str().as_bytes());
                    end = piece.end();
                }
                // The pattern gave up (its backtracking limit): the rest is estimated.
                Err(_) => return tokens + estimate(text.len().saturating_sub(end)),
            }
        }
        tokens
    }

    /// Tokens in one pre-tokenized piece: merges adjacent parts, lowest rank first.
    fn count_piece(&self, piece: &[u8]) -> u64 {
        if piece.len() <= 1 || self.ranks.contains_key(piece) {
            return piece.len().min(1) as u64;
        }
        // `starts[i]` is where part i begins (one byte each at first); `pair[i]` is the rank of
        // part i merged with part i + 1, if that is a token.
        let mut starts: Vec<usize> = (0..=piece.len()).collect();
        let rank_of = |starts: &[usize], i: usize| -> Option<u32> {
            let (&from, &to) = (starts.get(i)?, starts.get(i + 2)?);
            self.ranks.get(piece.get(from..to)?).copied()
        };
        let mut pair: Vec<Option<u32>> = (0..piece.len()).map(|i| rank_of(&starts, i)).collect();
        loop {
            let mut best: Option<(u32, usize)> = None;
            for (i, rank) in pair.iter().enumerate() {
                if let Some(rank) = *rank {
                    if best.is_none_or(|(lowest, _)| rank < lowest) {
                        best = Some((rank, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            // Parts i and i + 1 become one.
            starts.remove(i + 1);
            pair.remove(i + 1);
            if let Some(slot) = pair.get_mut(i) {
                *slot = rank_of(&starts, i);
            }
            if let Some(before) = i.checked_sub(1) {
                if let Some(slot) = pair.get_mut(before) {
                    *slot = rank_of(&starts, before);
                }
            }
        }
        (starts.len() - 1) as u64
    }
}

/// Tokens in text the pattern could not split, at the default ratio.
fn estimate(bytes: usize) -> u64 {
    (bytes as f64 / DEFAULT_BYTES_PER_TOKEN).ceil() as u64
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
        let _ = self.vocabulary();
    }

    fn vocabulary(self) -> &'static Vocabulary {
        static CL100K: OnceLock<Vocabulary> = OnceLock::new();
        static O200K: OnceLock<Vocabulary> = OnceLock::new();
        match self {
            Encoding::O200kBase => O200K.get_or_init(|| Vocabulary::load(O200K_TABLE, O200K_PATTERN)),
            Encoding::Cl100kBase => CL100K.get_or_init(|| Vocabulary::load(CL100K_TABLE, CL100K_PATTERN)),
        }
    }

    /// Exact token count of `text` (special tokens counted as ordinary text, as a provider does
    /// with user content).
    pub fn count(self, text: &str) -> u64 {
        self.vocabulary().count(text)
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

    /// Texts of every kind the pre-tokenizers treat differently, drawn from a fixed seed.
    #[cfg(not(target_arch = "wasm32"))]
    fn corpus() -> Vec<String> {
        let fragments = [
            "Hello",
            " world",
            "the",
            " The",
            "DON'T",
            "don't",
            " I'm",
            " we'll",
            " they've",
            "'s",
            "'LL",
            " 123",
            "4567890",
            " 3.14",
            "\n",
            "\r\n",
            "\n\n\n",
            "\t",
            "   ",
            " ",
            "!!",
            "?!",
            " ...",
            "--",
            " (x)",
            "{\"a\": 1}",
            "fn main() {}",
            " https://example.com/a/b?c=d",
            "naïve",
            " café",
            "Ünïcödé",
            "日本語",
            "のテキスト",
            "中文",
            " 한국어",
            "🎉",
            "👩‍💻",
            "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
            "ÀÉÎÕÜ",
            "ǅungla",
            "x²",
            "١٢٣",
            "Привет",
            " мир",
            "שלום",
            "<|endoftext|>",
            "aaaaaaaaaaaaaaaaaaaa",
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
            "_",
            "__init__",
            "camelCaseWord",
            "snake_case_word",
            "/path/to/file.rs",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut texts: Vec<String> = fragments.iter().map(|f| f.to_string()).collect();
        for _ in 0..3000 {
            let parts = 1 + next() % 12;
            texts.push((0..parts).map(|_| fragments[(next() % fragments.len() as u64) as usize]).collect());
        }
        texts.push("a".repeat(3000));
        texts.push("ab1 ".repeat(2000));
        texts.push(fragments.concat().repeat(20));
        texts
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn counts_equal_tiktoken_on_a_varied_corpus() {
        let references = [
            (Encoding::Cl100kBase, tiktoken_rs::cl100k_base_singleton()),
            (Encoding::O200kBase, tiktoken_rs::o200k_base_singleton()),
        ];
        for (encoding, reference) in references {
            for text in corpus() {
                assert_eq!(encoding.count(&text), reference.count_ordinary(&text) as u64, "{encoding:?} {text:?}");
            }
        }
    }

    #[test]
    fn tally_cuts_on_char_boundary() {
        let mut tally = TokenTally::new(Encoding::O200kBase, 2);
        tally.add_text("éé"); // 4 bytes, cut must not split a character
        assert!(tally.total() >= 1);
    }
}
