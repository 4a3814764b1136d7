//! A prompt's words as the guard compares them (`same_question.rs`): lower case, marked where a
//! name is capitalised; abbreviations and spellings spelled out; number words folded to digits;
//! phrases said in one word; a light stem.

use crate::lexicon;

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

/// Words with whether each is written with a capital where no sentence starts.
pub fn words(text: &str) -> Vec<(String, bool)> {
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
pub fn normalise(words: Vec<(String, bool)>) -> Vec<(String, bool)> {
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
pub fn stem(word: &str) -> String {
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
pub fn key(word: &str) -> String {
    if word.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return word.to_string();
    }
    stem(lexicon::irregular(word).unwrap_or(word))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn numbers_abbreviations_and_phrases() {
        let text = |t: &str| normalise(words(t)).into_iter().map(|(w, _)| w).collect::<Vec<_>>().join(" ");
        assert_eq!(text("twenty five percent of one hundred forty-four"), "25 percent of 144");
        assert_eq!(text("which one is it"), "which one is it");
        assert_eq!(text("sqrt of 9 in km"), "square root of 9 in kilometers");
        assert_eq!(text("how many days, how much is it"), "COUNT days what is it");
        assert_eq!(text("turn off wifi"), "disable wifi");
    }
}
