//! Whether two prompts ask the same question, beyond their embeddings' similarity.
//!
//! Cosine similarity alone cannot serve cached answers safely: with all-MiniLM-L6-v2 "the
//! capital of France" and "the capital of Germany" score 0.66, "convert a string to an integer"
//! and "an integer to a string" 0.995, Saturday and Sunday 0.956, while true paraphrases score
//! 0.8-0.98. On the project's labelled pairs (`tests/data/semantic_pairs.json`) no threshold gets
//! precision above 0.88. So the guard compares what the prompts say, word by word ([`judge`]).
//!
//! **Words** (`words.rs`). Each prompt becomes its content words ([`Prompt`]): lower case, stop words and
//! question framing ("tell me", "how do I", "steps to", "the capital *city*") left out, number
//! words folded to digits ("twenty five" is `25`), common abbreviations and British spellings
//! spelled out (`int`, `js`, `km`, `metre`), phrasal verbs as one word ("turn off" is
//! `disable`), inflections stripped (`cities`, `boiling`, `safely`; `mice` through WordNet's
//! irregular forms), quantifiers by meaning ("every" is "all"), and "how many / number of /
//! count of" as one kind of answer.
//!
//! **Hard rules** (a pair that breaks one is [`Verdict::Different`], whatever a verifier says):
//! - the same numbers in the same order ("15% of 200" is neither "25% of 200" nor "what
//!   percentage of 200 is 15");
//! - a negation on both sides or neither ("can dogs eat" / "can't dogs eat");
//! - the same question words: `when` (also "what time / year / date"), `where` (also "what
//!   place"), `who`, `why` (also "how come", "what makes"); "which artist" counts as `who`
//!   when the other side asks `who` and WordNet calls the noun a person;
//! - the same kind of answer: a count ("how many", "number of") is not a yes or no ("can I
//!   take ibuprofen" / "how much ibuprofen can I take"), though either side may leave it unsaid
//!   ("calories in a banana?");
//! - no conversion turned round: source and target ("X to Y", "from X to Y", "to Y from X";
//!   also "into", "in", "as") may not swap places ("kilometers to miles" / "miles to
//!   kilometers", "from London to New York" / "from New York to London");
//! - a capitalised word (a name) on one side only;
//! - no WordNet antonyms left over ("open" / "close").
//!
//! **Forgiven**: an unmatched word whose WordNet synonym or same-root word (`buy` / `purchase`,
//! `differ` / `difference`; not antonyms, and not siblings in any attested sense: Saturday and
//! Sunday are siblings) is unmatched on the other side. The rest decides the verdict: nothing
//! left is [`Verdict::Same`]; at most one light verb left on each side ([`LIGHT_VERBS`]: "parse" /
//! "convert", "turn") is [`Verdict::Close`], served only at a higher similarity; anything else is
//! [`Verdict::Unsure`], which a verifier may settle (see `verify.rs`).
//!
//! The lexical data is [`crate::lexicon`], 0.35 MB built from WordNet at compile time.

use std::collections::BTreeSet;

use crate::lexicon::{self, Relation};
use crate::words::{key, normalise, stem, words};

/// The guard's answer for a pair of prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same question.
    Same,
    /// The same question but for one verb each side: served at a higher similarity only.
    Close,
    /// Content words differ, and no hard rule decides: a verifier may.
    Unsure,
    /// A hard rule says they differ.
    Different,
}

const STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "do", "does", "did", "doing", "i", "me", "my",
    "mine", "you", "your", "yours", "we", "our", "us", "it", "its", "this", "that", "these", "those", "there", "of",
    "in", "on", "at", "to", "for", "from", "by", "with", "about", "into", "onto", "as", "and", "or", "if", "so",
    "than", "then", "too", "very", "just", "also", "please", "tell", "give", "show", "let", "know", "can", "could",
    "should", "would", "will", "what", "which", "whats", "one", "have", "has", "had", "here", "they", "them", "their",
    "he", "she", "his", "her",
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
    "quick",
    "quickly",
    "question",
    "wondering",
    "wonder",
    "curious",
    "help",
    "like",
    "possible",
    "simple",
    "simply",
    "briefly",
    "actually",
    "exact",
    "correct",
    "right",
    "proper",
    "properly",
    "someone",
    "anyone",
    "say",
    "mean",
    "means",
    "thing",
    "things",
    // Classifier nouns that restate what the entity already is ("the capital city of France",
    // "a prime number").
    "city",
    "country",
    "number",
];
/// Quantifiers, as one word per meaning ("every bird" is "all birds"): content words.
const QUANTIFIERS: &[(&str, &str)] = &[
    ("all", "ALL"),
    ("every", "ALL"),
    ("each", "ALL"),
    ("some", "SOME"),
    ("any", "SOME"),
    ("several", "SOME"),
    ("most", "MOST"),
    ("few", "FEW"),
    ("both", "BOTH"),
    ("many", "MANY"),
];
/// Verbs that only say "turn X into Y" or "do X": one each side (or one alone) may differ, at a
/// higher similarity, since the direction rule already checks X and Y.
const LIGHT_VERBS: &[&str] = &[
    "convert",
    "turn",
    "change",
    "cast",
    "parse",
    "transform",
    "translate",
    "make",
    "do",
    "go",
    "look",
    "seem",
    "appear",
    "happen",
    "work",
    "put",
    "take",
    "become",
    "keep",
    "try",
    "perform",
    "carry",
];
const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "without",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "isn't",
    "won't",
    "shouldn't",
    "aren't",
    "wasn't",
    "weren't",
    "didn't",
    "none",
    "nor",
];
/// Words after which the next content word is a target ("to miles"); `from` names the source.
const MARKERS: &[&str] = &["to", "into", "in", "as", "from"];
/// A question that starts with one of these asks yes or no.
const AUXILIARIES: &[&str] = &[
    "is",
    "are",
    "was",
    "were",
    "am",
    "do",
    "does",
    "did",
    "can",
    "could",
    "should",
    "would",
    "will",
    "may",
    "might",
    "must",
    "shall",
    "has",
    "have",
    "had",
    "isn't",
    "aren't",
    "can't",
    "cannot",
    "don't",
    "doesn't",
    "didn't",
    "won't",
    "shouldn't",
    "wasn't",
    "weren't",
];
/// The kinds of answer asked for besides the question words: either side may leave its kind
/// unsaid ("calories in a banana?"), but a count is never a yes or no.
const KINDS: &[&str] = &["count", "yes-no"];
/// "what time", "which year" ... ask `when`.
const TIME_NOUNS: &[&str] = &["time", "year", "date", "hour"];
const PLACE_NOUNS: &[&str] = &["place", "location"];

/// One word of a prompt, as written (lower case) and as the guard compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    word: String,
    key: String,
    /// Written with a capital where a sentence does not start, or an unknown word that does.
    name: bool,
    /// Follows "which" or "what" ("which artist").
    asked: bool,
}

/// What the guard reads from a prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    terms: Vec<Term>,
    /// In the order written: "15% of 200" is not "what percentage of 200 is 15".
    numbers: Vec<String>,
    negated: bool,
    asks: BTreeSet<&'static str>,
    /// Content words either side of a conversion marker, source first.
    directions: Vec<(String, String)>,
}

impl Prompt {
    pub fn read(text: &str) -> Prompt {
        let words = normalise(words(text));
        let mut prompt = Prompt::default();
        let mut last: Option<String> = None;
        let mut marker: Option<bool> = None;
        // (after "from", the word before, the word after)
        let mut conversions: Vec<(bool, Option<String>, String)> = Vec::new();
        let mut asked = false;
        let mut i = 0;
        while let Some((word, capital)) = words.get(i) {
            i += 1;
            let next = words.get(i).map(|(w, _)| w.as_str()).unwrap_or_default();
            let word = word.as_str();
            let then = words.get(i + 1).map(|(w, _)| w.as_str());
            let asks_time = then.is_none_or(|w| STOP.contains(&w) || w == "when");
            if matches!(word, "what" | "which") && TIME_NOUNS.contains(&next) && asks_time {
                prompt.asks.insert("when");
                i += 1;
                continue;
            }
            if matches!(word, "what" | "which") && PLACE_NOUNS.contains(&next) {
                prompt.asks.insert("where");
                i += 1;
                continue;
            }
            if i == 1 && AUXILIARIES.contains(&word) {
                prompt.asks.insert("yes-no");
            }
            if word == "COUNT" {
                prompt.asks.insert("count");
                continue;
            }
            if NEGATIONS.contains(&word) {
                prompt.negated = true;
                continue;
            }
            let question = match word {
                "when" => Some("when"),
                "where" => Some("where"),
                "who" | "whom" => Some("who"),
                "why" => Some("why"),
                _ => None,
            };
            if let Some(question) = question {
                prompt.asks.insert(question);
                continue;
            }
            if matches!(word, "what" | "which") {
                asked = true;
                continue;
            }
            if MARKERS.contains(&word) {
                marker = Some(word == "from");
                continue;
            }
            if STOP.contains(&word) || FRAME.contains(&word) {
                continue;
            }
            let key = match QUANTIFIERS.iter().find(|(q, _)| *q == word) {
                Some((_, meaning)) => (*meaning).to_string(),
                None => key(word),
            };
            let number = word.chars().all(|c| c.is_ascii_digit() || c == '.');
            if number && !prompt.numbers.iter().any(|n| n == word) {
                prompt.numbers.push(word.to_string());
            }
            if let Some(from) = marker.take() {
                conversions.push((from, last.clone(), key.clone()));
            }
            let name =
                *capital || (i == 1 && lexicon::lemma(word).is_none() && !word.chars().all(|c| c.is_ascii_digit()));
            last = Some(key.clone());
            if !prompt.terms.iter().any(|t| t.key == key) {
                prompt.terms.push(Term { word: word.to_string(), key, name, asked: std::mem::take(&mut asked) });
            }
        }
        prompt.directions = directions(&conversions);
        prompt
    }
}

/// Source and target of each conversion: "X to Y", "from X to Y", "to Y from X", "Y from X".
fn directions(conversions: &[(bool, Option<String>, String)]) -> Vec<(String, String)> {
    let source = conversions.iter().find(|(from, _, _)| *from).map(|(_, _, next)| next);
    let targets: Vec<&(bool, Option<String>, String)> = conversions.iter().filter(|(from, _, _)| !from).collect();
    if targets.is_empty() {
        return conversions.iter().filter_map(|(_, before, next)| Some((next.clone(), before.clone()?))).collect();
    }
    targets
        .into_iter()
        .filter_map(|(_, before, next)| Some((source.or(before.as_ref())?.clone(), next.clone())))
        .filter(|(from, to)| from != to)
        .collect()
}

fn relation(a: &Term, b: &Term) -> Option<Relation> {
    lexicon::relate(&a.word, &b.word)
}

fn is_light(term: &Term) -> bool {
    LIGHT_VERBS.iter().any(|verb| stem(verb) == term.key)
}

/// A person noun after "which" or "what" (`artist`, not `artists`' other senses).
fn is_person(term: &Term) -> bool {
    term.asked && lexicon::lemma(&term.word).is_some_and(lexicon::is_person)
}

/// Takes "which artist" as `who` when only the other side asks `who`.
fn person_as_who(asks: &mut BTreeSet<&'static str>, others: &BTreeSet<&'static str>, left: &mut Vec<&Term>) {
    if others.contains("who") && !asks.contains("who") {
        if let Some(at) = left.iter().position(|t| is_person(t)) {
            left.remove(at);
            asks.insert("who");
        }
    }
}

/// Whether `a` and `b` ask the same question (given that their embeddings are close).
pub fn judge(a: &str, b: &str) -> Verdict {
    compare(&Prompt::read(a), &Prompt::read(b))
}

/// [`judge`] on prompts already read.
pub fn compare(a: &Prompt, b: &Prompt) -> Verdict {
    if a.numbers != b.numbers || a.negated != b.negated {
        return Verdict::Different;
    }
    let mut left_a: Vec<&Term> = a.terms.iter().filter(|t| !b.terms.iter().any(|u| u.key == t.key)).collect();
    let mut left_b: Vec<&Term> = b.terms.iter().filter(|t| !a.terms.iter().any(|u| u.key == t.key)).collect();
    let (mut asks_a, mut asks_b) = (a.asks.clone(), b.asks.clone());
    person_as_who(&mut asks_a, &b.asks, &mut left_a);
    person_as_who(&mut asks_b, &a.asks, &mut left_b);
    let questions =
        |asks: &BTreeSet<&'static str>| asks.iter().filter(|a| !KINDS.contains(a)).copied().collect::<Vec<_>>();
    let kinds = |asks: &BTreeSet<&'static str>| asks.iter().filter(|a| KINDS.contains(a)).copied().collect::<Vec<_>>();
    let (kind_a, kind_b) = (kinds(&asks_a), kinds(&asks_b));
    if questions(&asks_a) != questions(&asks_b) || (!kind_a.is_empty() && !kind_b.is_empty() && kind_a != kind_b) {
        return Verdict::Different;
    }
    // Synonyms pair off; a key of `b` then stands for its synonym in `a`.
    let mut same_as: Vec<(&str, &str)> = Vec::new();
    left_a.retain(|t| {
        let found = left_b.iter().position(|u| relation(t, u) == Some(Relation::Synonyms));
        match found {
            Some(at) => {
                same_as.push((left_b.remove(at).key.as_str(), t.key.as_str()));
                false
            }
            None => true,
        }
    });
    let opposed = left_a.iter().any(|t| left_b.iter().any(|u| relation(t, u) == Some(Relation::Antonyms)));
    let named = left_a.iter().chain(&left_b).any(|t| t.name);
    let as_a = |k: &str| same_as.iter().find(|(from, _)| *from == k).map_or(k.to_string(), |(_, to)| to.to_string());
    let turned = b.directions.iter().any(|(from, to)| a.directions.contains(&(as_a(to), as_a(from))));
    if opposed || named || turned {
        return Verdict::Different;
    }
    match (left_a.as_slice(), left_b.as_slice()) {
        ([], []) => Verdict::Same,
        (x, y) if x.len() <= 1 && y.len() <= 1 && x.iter().chain(y).all(|t| is_light(t)) => Verdict::Close,
        _ => Verdict::Unsure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[track_caller]
    fn check(a: &str, b: &str, expected: Verdict) {
        assert_eq!(judge(a, b), expected, "{a} | {b}");
        assert_eq!(judge(b, a), expected, "{b} | {a}");
    }

    #[test]
    fn framing_inflection_and_stop_words_do_not_count() {
        check("What is the capital of France?", "france capital?", Same);
        check("What is the capital of France?", "Tell me the capital city of France", Same);
        check("How many days are there in a leap year?", "Leap year: how many days, please?", Same);
        check("How do I boil an egg?", "Steps to boiling eggs", Same);
    }

    #[test]
    fn numbers_are_digits_and_must_match() {
        check("What is 15% of 200?", "What is 25% of 200?", Different);
        check("What is twenty five percent of two hundred?", "What is 25% of 200?", Same);
        check("What is 3.5 times 2?", "What is 3.6 times 2?", Different);
        check("What is 15% of 200?", "What percentage of 200 is 15?", Different);
        check("Is 7 a prime number?", "Is seven prime?", Same);
    }

    #[test]
    fn quantity_words_are_one_word() {
        check("How many days are in a leap year?", "Number of days in a leap year?", Same);
        check("How many days are in a leap year?", "What is the day count of a leap year?", Same);
        check("How many calories are in a banana?", "calories in a banana?", Same);
        check("Can I take ibuprofen with food?", "How much ibuprofen can I take with food?", Different);
    }

    #[test]
    fn negation_must_match() {
        check("Can dogs eat chocolate?", "Can't dogs eat chocolate?", Different);
        check("Why is the sky blue?", "Why isn't the sky blue?", Different);
    }

    #[test]
    fn question_words_must_match() {
        check("When did World War II end?", "Where did World War II end?", Different);
        check("When did World War II end?", "What year did WWII end?", Same);
        check("When do you open on Saturday?", "What time do you open on Saturday?", Same);
        check("Why do cats purr?", "How come cats purr?", Same);
        check("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?", Same);
        // Only a person stands for `who`.
        check("Who painted the Mona Lisa?", "Which year was the Mona Lisa painted?", Different);
        check("Who painted the Mona Lisa?", "Which museum holds the Mona Lisa?", Different);
    }

    #[test]
    fn conversions_may_not_turn_round() {
        check("Convert 10 kilometers to miles", "Convert 10 miles to kilometers", Different);
        check("How many ounces in a pound?", "How many pounds in an ounce?", Different);
        check("How do I convert a string to an integer in Python?", "Python: convert a str into an int", Same);
        check("Convert 10 km to miles", "How many miles is 10 kilometres?", Close);
        check("Convert 10 km to miles", "10 kilometres in miles", Close);
        check("Convert Celsius to Fahrenheit", "Convert to Fahrenheit from Celsius", Same);
        check("Fly from London to New York", "Fly from New York to London", Different);
        check("Fly from London to New York", "Fly to New York from London", Same);
        check("How do I convert an integer to a string in Python?", "convert a string to an int in Python", Different);
    }

    #[test]
    fn synonyms_are_forgiven_siblings_and_antonyms_are_not() {
        check("Where can I buy a used car?", "Where can I purchase a used automobile?", Same);
        check("What are your opening hours on Saturday?", "What are your opening hours on Sunday?", Different);
        check("What time do you open on Saturday?", "What time do you close on Saturday?", Different);
        check(
            "How do I convert a string to a float in Python?",
            "How do I convert a string to an integer in Python?",
            Unsure,
        );
    }

    #[test]
    fn a_name_on_one_side_only_is_a_different_question() {
        check("How do I sort a list?", "How do I sort a list in Rust?", Different);
        check("Convert a string to an integer in Python", "Convert a string to an integer in Java", Different);
    }

    #[test]
    fn one_verb_each_side_is_close() {
        check(
            "How can I parse a string as an integer in Python?",
            "How do I convert a string to an integer in Python?",
            Close,
        );
        check("Python: turn a string into an int", "Python: change a string into an int", Close);
        check("Python: turn a string into an int", "Python: a string into an int", Close);
    }
}
