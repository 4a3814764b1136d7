//! Whether two prompts ask the same question, beyond their embeddings' similarity.
//!
//! Cosine similarity alone cannot serve cached answers safely: with all-MiniLM-L6-v2 "the
//! capital of France" and "the capital of Germany" score 0.66, "convert a string to an integer"
//! and "an integer to a string" 0.995, while true paraphrases score 0.8-0.98. On the project's
//! labelled pairs (`tests/data/semantic_pairs.json`) no threshold gets precision above 0.85.
//!
//! The guard therefore also requires:
//! - the same content words, ignoring stop words, question framing ("tell me", "how do I",
//!   "steps to") and inflection (`days`/`day`, `boiling`/`boil`);
//! - the same conversion target: the first content word after "to", "into" or "in".
//!
//! Numbers, names, negations and question words (`when`, `where`, `who`, `why`) are content
//! words, so "15% of 200" never matches "25% of 200" and "when did it end" never matches "where".

use std::collections::BTreeSet;

const STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "do", "does", "did", "doing", "i", "me", "my",
    "mine", "you", "your", "yours", "we", "our", "us", "it", "its", "this", "that", "these", "those", "there", "of",
    "in", "on", "at", "to", "for", "from", "by", "with", "about", "into", "onto", "as", "and", "or", "if", "so",
    "than", "then", "too", "very", "just", "also", "please", "tell", "give", "show", "let", "know", "can", "could",
    "should", "would", "will", "what", "which", "whats",
];
/// Words that frame a question without changing it.
const FRAME: &[&str] = &[
    "name",
    "explain",
    "describe",
    "calculate",
    "compute",
    "find",
    "want",
    "need",
    "way",
    "ways",
    "steps",
    "step",
    "process",
    "command",
    "example",
    "using",
    "use",
    "used",
    "get",
    "equal",
    "equals",
    "exactly",
    "really",
    "typical",
    "common",
    "best",
    "good",
    "instructions",
    "how",
    // Classifier nouns that restate what the entity already is ("the capital city of France").
    "city",
    "country",
];
const QUESTION_WORDS: &[&str] = &["when", "where", "who", "whom", "why"];
const NEGATIONS: &[&str] =
    &["not", "no", "never", "without", "cannot", "can't", "don't", "doesn't", "isn't", "won't", "shouldn't"];

fn is_skipped(word: &str) -> bool {
    STOP.contains(&word) || FRAME.contains(&word)
}

fn lemma(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if word.len() > suffix.len() + 3 && word.ends_with(suffix) && !word.ends_with("ss") {
            return word.get(..word.len() - suffix.len()).unwrap_or(word).to_string();
        }
    }
    word.to_string()
}

/// Lower-case words: letters and digits, with inner apostrophes and decimal points.
fn tokens(text: &str) -> Vec<String> {
    let text = text.to_lowercase().replace('%', " percent ").replace('\u{2019}', "'").replace("what's", "what is");
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let inner = |k: usize| chars.get(k).is_some_and(|c| c.is_alphanumeric());
        let keep = c.is_alphanumeric()
            || (c == '\'' && !current.is_empty() && inner(i + 1))
            || (c == '.'
                && current.chars().all(|c| c.is_ascii_digit())
                && !current.is_empty()
                && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if keep {
            current.push(c);
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The content words of a prompt (negations as `NOT`).
pub fn content_words(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for token in tokens(text) {
        let word = token.strip_suffix("'s").unwrap_or(&token);
        if NEGATIONS.contains(&word) {
            out.insert("NOT".to_string());
        } else if QUESTION_WORDS.contains(&word) {
            out.insert(word.to_string());
        } else if !is_skipped(word) {
            out.insert(lemma(word));
        }
    }
    out
}

/// The first content word after each "to", "into" or "in".
fn targets(text: &str) -> BTreeSet<String> {
    let words: Vec<String> = text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let mut out = BTreeSet::new();
    for (i, w) in words.iter().enumerate() {
        if matches!(w.as_str(), "to" | "into" | "in") {
            if let Some(next) = words.iter().skip(i + 1).find(|x| !is_skipped(x)) {
                out.insert(lemma(next));
            }
        }
    }
    out
}

/// Whether `a` and `b` ask the same question (given that their embeddings are close).
pub fn same_question(a: &str, b: &str) -> bool {
    if content_words(a) != content_words(b) {
        return false;
    }
    let (ta, tb) = (targets(a), targets(b));
    ta.is_empty() || tb.is_empty() || ta == tb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paraphrases_and_near_misses() {
        assert!(same_question("What is the capital of France?", "france capital?"));
        assert!(same_question("What is the capital of France?", "Tell me the capital city of France"));
        assert!(same_question("How many days are there in a leap year?", "Leap year: how many days, please?"));
        assert!(!same_question("What is the capital of France?", "What is the capital of Germany?"));
        assert!(!same_question("What is 15% of 200?", "What is 25% of 200?"));
        assert!(!same_question("When did World War II end?", "Where did World War II end?"));
        assert!(!same_question("Convert 10 kilometers to miles", "Convert 10 miles to kilometers"));
        assert!(!same_question("Can dogs eat chocolate?", "Can't dogs eat chocolate?"));
        assert_eq!(tokens("It's 3.5% of Jürgen's"), ["it's", "3.5", "percent", "of", "jürgen's"]);
    }
}
