//! Whether two prompts ask the same question, beyond their embeddings' similarity.
//!
//! Cosine similarity alone cannot serve cached answers safely: with all-MiniLM-L6-v2 "the
//! capital of France" and "the capital of Germany" score 0.66, "convert a string to an integer"
//! and "an integer to a string" 0.995, Saturday and Sunday 0.956, while true paraphrases score
//! 0.8-0.98. On the project's labelled pairs (`tests/data/semantic_pairs.json`) no threshold gets
//! precision above 0.85. So the guard compares what the prompts say, word by word ([`judge`]).
//!
//! **Words.** Each prompt becomes its content words ([`Prompt`]): lower case, stop words and
//! question framing ("tell me", "how do I", "steps to", "the capital *city*") left out, number
//! words folded to digits ("twenty five" is `25`), common abbreviations and British spellings
//! spelled out (`int`, `js`, `km`, `metre`), inflections stripped (`cities`, `boiling`, `mice`,
//! through WordNet's irregular forms), and "how many / number of / count of" as one word.
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
//! **Forgiven**: an unmatched word whose WordNet synonym (one attested synset, not antonyms and
//! not siblings in any attested sense: Saturday and Sunday are siblings) is unmatched on the
//! other side ("purchase" / "buy"). The rest decides the verdict: nothing left is
//! [`Verdict::Same`]; at most one verb-like word left on each side ("parse" / "convert", "turn")
//! is [`Verdict::Close`], served only at a higher similarity; anything else is
//! [`Verdict::Unsure`], which a verifier may settle (see `verify.rs`).
//!
//! The lexical data is [`crate::lexicon`], about 0.5 MB built from WordNet at compile time.

use std::collections::BTreeSet;

use crate::lexicon::{self, Relation};

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
/// Phrases said in one word, or that ask for a count (`COUNT`) or a reason.
const PHRASES: &[(&str, &str)] = &[
    ("how many", "COUNT"),
    ("how much is", "what is"),
    ("how much are", "what are"),
    ("how much", "COUNT"),
    ("number of", "COUNT"),
    ("count of", "COUNT"),
    ("amount of", "COUNT"),
    ("how come", "why"),
    ("for what reason", "why"),
    ("what makes", "why"),
    ("what causes", "why"),
    ("turn off", "disable"),
    ("switch off", "disable"),
    ("shut off", "disable"),
    ("turn on", "enable"),
    ("switch on", "enable"),
    ("get rid of", "remove"),
    ("set up", "setup"),
    ("log in", "login"),
    ("sign in", "login"),
    ("log out", "logout"),
    ("sign out", "logout"),
    ("find out", ""),
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
/// Abbreviations and spellings, spelled out.
const SPELLED: &[(&str, &str)] = &[
    ("int", "integer"),
    ("ints", "integers"),
    ("str", "string"),
    ("js", "javascript"),
    ("ts", "typescript"),
    ("py", "python"),
    ("k8s", "kubernetes"),
    ("db", "database"),
    ("km", "kilometers"),
    ("kms", "kilometers"),
    ("kg", "kilograms"),
    ("kgs", "kilograms"),
    ("lb", "pounds"),
    ("lbs", "pounds"),
    ("oz", "ounces"),
    ("ft", "feet"),
    ("cm", "centimeters"),
    ("mm", "millimeters"),
    ("hr", "hours"),
    ("hrs", "hours"),
    ("mins", "minutes"),
    ("secs", "seconds"),
    ("temp", "temperature"),
    ("info", "information"),
    ("metre", "meter"),
    ("metres", "meters"),
    ("kilometre", "kilometer"),
    ("kilometres", "kilometers"),
    ("centimetre", "centimeter"),
    ("centimetres", "centimeters"),
    ("litre", "liter"),
    ("litres", "liters"),
    ("colour", "color"),
    ("favourite", "favorite"),
    ("sqrt", "square root"),
    ("ww2", "world war 2"),
    ("wwii", "world war 2"),
    ("ii", "2"),
];
const UNITS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: &[&str] = &["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
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

/// Words with whether each is written with a capital where no sentence starts.
fn words(text: &str) -> Vec<(String, bool)> {
    let text = text.replace('\u{2019}', "'").replace('%', " percent ");
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut sentence_start = true;
    let mut starts = true;
    for (i, &c) in chars.iter().enumerate() {
        let inner = |k: usize| chars.get(k).is_some_and(|c| c.is_alphanumeric());
        let keep = c.is_alphanumeric()
            || (c == '\'' && !current.is_empty() && inner(i + 1))
            || (c == '.'
                && !current.is_empty()
                && current.chars().all(|c| c.is_ascii_digit())
                && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if keep {
            if current.is_empty() {
                starts = sentence_start;
            }
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            let capital = current.chars().next().is_some_and(char::is_uppercase) && !starts;
            out.push((std::mem::take(&mut current).to_lowercase(), capital));
            sentence_start = false;
        }
        if matches!(c, '.' | '?' | '!' | ':' | ';' | '\n' | ',' | '(' | '"') {
            sentence_start = true;
        }
    }
    if !current.is_empty() {
        let capital = current.chars().next().is_some_and(char::is_uppercase) && !starts;
        out.push((current.to_lowercase(), capital));
    }
    out
}

/// Spells out abbreviations and folds number words into digits ("twenty five" is `25`).
fn normalise(words: Vec<(String, bool)>) -> Vec<(String, bool)> {
    let mut spelled = Vec::new();
    for (word, capital) in words {
        let word = word.replace("what's", "what is");
        let word = word.strip_suffix("'s").unwrap_or(&word).to_string();
        match SPELLED.iter().find(|(short, _)| *short == word) {
            Some((_, long)) => spelled.extend(long.split(' ').map(|w| (w.to_string(), capital))),
            None => spelled.extend(word.split(' ').map(|w| (w.to_string(), capital))),
        }
    }
    let mut out = Vec::new();
    let mut number: Option<u64> = None;
    let mut i = 0;
    while let Some((word, capital)) = spelled.get(i).cloned() {
        i += 1;
        let scaled = spelled.get(i).is_some_and(|(w, _)| matches!(w.as_str(), "hundred" | "thousand" | "million"));
        // "one" is a number only inside one ("one hundred"); alone it is mostly a pronoun.
        let unit = UNITS.iter().position(|u| *u == word).filter(|&u| u != 1 || number.is_some() || scaled);
        let ten = TENS.iter().position(|t| *t == word);
        let scale = match word.as_str() {
            "hundred" => Some(100),
            "thousand" => Some(1000),
            "million" => Some(1_000_000),
            _ => None,
        };
        match (unit, ten, scale, number) {
            (Some(u), _, _, n) => number = Some(n.unwrap_or(0) + u as u64),
            (_, Some(t), _, n) => number = Some(n.unwrap_or(0) + 20 + 10 * t as u64),
            (_, _, Some(s), Some(n)) => number = Some(n.max(1) * s),
            _ => {
                if let Some(n) = number.take() {
                    out.push((n.to_string(), false));
                }
                out.push((word, capital));
            }
        }
    }
    if let Some(n) = number {
        out.push((n.to_string(), false));
    }
    phrases(out)
}

/// Replaces [`PHRASES`].
fn phrases(words: Vec<(String, bool)>) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    'words: while i < words.len() {
        for (phrase, replacement) in PHRASES {
            let parts: Vec<&str> = phrase.split(' ').collect();
            let here = words.iter().skip(i).take(parts.len()).map(|(w, _)| w.as_str());
            if here.eq(parts.iter().copied()) {
                out.extend(replacement.split(' ').filter(|w| !w.is_empty()).map(|w| (w.to_string(), false)));
                i += parts.len();
                continue 'words;
            }
        }
        out.extend(words.get(i).cloned());
        i += 1;
    }
    out
}

/// A light stem for comparing: plural, `-ly`, `-ing`, `-ed` and a final `e` stripped, doubled
/// consonants undone (`stopped`, `stop`).
fn stem(word: &str) -> String {
    let mut w = word.to_string();
    if let Some(s) = w.strip_suffix("ies").filter(|s| s.len() >= 3) {
        w = format!("{s}y");
    } else if let Some(s) =
        w.strip_suffix("es").filter(|s| s.ends_with("ss") || s.ends_with("ch") || s.ends_with("sh") || s.ends_with('x'))
    {
        w = s.to_string();
    } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w.pop();
    }
    if let Some(s) = w.strip_suffix("ly").filter(|s| s.len() >= 4) {
        w = s.to_string();
    }
    for suffix in ["ing", "ed"] {
        if let Some(s) = w.strip_suffix(suffix).filter(|s| s.len() >= 3 && s.chars().any(|c| "aeiouy".contains(c))) {
            w = s.to_string();
            let b = w.as_bytes();
            if b.len() >= 3 && b.last() == b.get(b.len() - 2) && !matches!(b.last(), Some(b'l' | b's' | b'z')) {
                w.pop();
            }
            break;
        }
    }
    if w.len() > 3 && w.ends_with('e') {
        w.pop();
    }
    w
}

/// The comparison key: the stem of WordNet's base form where it has an irregular one (`mice`).
fn key(word: &str) -> String {
    if word.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return word.to_string();
    }
    stem(lexicon::irregular(word).unwrap_or(word))
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
            match word {
                "when" => prompt.asks.insert("when"),
                "where" => prompt.asks.insert("where"),
                "who" | "whom" => prompt.asks.insert("who"),
                "why" => prompt.asks.insert("why"),
                _ => false,
            };
            if matches!(word, "when" | "where" | "who" | "whom" | "why") {
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
            if word.chars().all(|c| c.is_ascii_digit() || c == '.') {
                if !prompt.numbers.iter().any(|n| n == word) {
                    prompt.numbers.push(word.to_string());
                }
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

    /// The content words' keys.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.terms.iter().map(|t| t.key.as_str()).collect()
    }
}

/// How WordNet relates any base forms of two words: antonyms if any are.
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
    let (a, b) = (lexicon::lemmas(&a.word), lexicon::lemmas(&b.word));
    let mut found = None;
    for x in &a {
        for y in &b {
            match lexicon::relation(*x, *y) {
                Some(Relation::Antonyms) => return Some(Relation::Antonyms),
                Some(Relation::Synonyms) => found = Some(Relation::Synonyms),
                None => {}
            }
        }
    }
    found
}

fn is_light(term: &Term) -> bool {
    LIGHT_VERBS.contains(&stem(&term.word).as_str()) || LIGHT_VERBS.iter().any(|v| stem(v) == term.key)
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

    #[test]
    fn words_keep_their_capitals_and_decimals() {
        assert_eq!(
            words("It's 3.5% of Jürgen's. Paris"),
            [
                ("it's".to_string(), false),
                ("3.5".to_string(), false),
                ("percent".to_string(), false),
                ("of".to_string(), false),
                ("jürgen's".to_string(), true),
                ("paris".to_string(), false)
            ]
        );
        assert_eq!(stem("stopped"), stem("stop"));
        assert_eq!(stem("boiling"), stem("boil"));
        assert_eq!(stem("changes"), stem("change"));
        assert_eq!(stem("boxes"), stem("box"));
        assert_eq!(stem("cities"), stem("city"));
    }
}
