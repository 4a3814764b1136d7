//! What WordNet says about single words, from the compact table `build.rs` makes at compile time
//! (0.79 MB, read in place: nothing is parsed or allocated at start-up).
//!
//! Layout (little-endian): `SLX1`, the word count `n`, the pair count `m`; `n + 1` word offsets
//! (u32) into the words that follow (sorted, lower-case ASCII); per word a flag byte and its base
//! form (u24: itself, unless it is an irregular form such as `mice`); `m` sorted pairs of word
//! numbers (u24, u24), the second's top bit set when the pair are antonyms.

static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lexicon.bin"));

const FLAG_PERSON: u8 = 1;
const ANTONYM: u32 = 1 << 23;
const WORD_MASK: u32 = ANTONYM - 1;

/// How WordNet relates two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Two lemmas of one attested synset, neither antonyms nor siblings in another sense, or
    /// two words of one root (`differ`, `difference`).
    Synonyms,
    /// Opposites (`open` / `close`).
    Antonyms,
}

/// A word of the table, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Word(u32);

fn u32_at(at: usize) -> u32 {
    TABLE.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn u24_at(at: usize) -> u32 {
    match TABLE.get(at..at + 3) {
        Some(&[a, b, c]) => u32::from_le_bytes([a, b, c, 0]),
        _ => 0,
    }
}

fn words() -> usize {
    if TABLE.get(..4) == Some(b"SLX1") {
        u32_at(4) as usize
    } else {
        0
    }
}

fn pairs() -> usize {
    u32_at(8) as usize
}

const OFFSETS: usize = 12;

fn text_start() -> usize {
    OFFSETS + 4 * (words() + 1)
}

fn text(i: usize) -> &'static [u8] {
    let (from, to) = (u32_at(OFFSETS + 4 * i) as usize, u32_at(OFFSETS + 4 * (i + 1)) as usize);
    TABLE.get(text_start() + from..text_start() + to).unwrap_or_default()
}

fn entry(i: usize) -> usize {
    text_start() + u32_at(OFFSETS + 4 * words()) as usize + 4 * i
}

fn pair_start() -> usize {
    entry(words())
}

/// The word itself, if the table has it.
fn exact(word: &str) -> Option<Word> {
    let (mut low, mut high) = (0, words());
    while low < high {
        let mid = low + (high - low) / 2;
        match text(mid).cmp(word.as_bytes()) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return Some(Word(mid as u32)),
        }
    }
    None
}

fn base_of(word: Word) -> Word {
    Word(u24_at(entry(word.0 as usize) + 1))
}

/// Inflections WordNet's own morphology strips (`morphy`), most specific first.
const DETACH: &[(&str, &str)] = &[
    ("ies", "y"),
    ("sses", "ss"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("xes", "x"),
    ("zes", "z"),
    ("men", "man"),
    ("es", "e"),
    ("es", ""),
    ("s", ""),
    ("ing", "e"),
    ("ing", ""),
    ("ed", "e"),
    ("ed", ""),
    ("est", ""),
    ("er", ""),
];

/// The base forms of a lower-case word that WordNet knows: the word, its irregular base, and
/// the word without each regular inflection that WordNet has (`cities`, `running`, `changed`).
pub fn lemmas(word: &str) -> Vec<Word> {
    let mut out: Vec<Word> = exact(word).map(base_of).into_iter().collect();
    for (suffix, replacement) in DETACH {
        let Some(stem) = word.strip_suffix(suffix).filter(|s| s.len() >= 2) else { continue };
        let mut found = exact(&format!("{stem}{replacement}"));
        // A doubled final consonant (`running`, `stopped`).
        let bytes = stem.as_bytes();
        if found.is_none() && replacement.is_empty() && bytes.len() >= 3 && bytes.last() == bytes.get(bytes.len() - 2) {
            found = stem.get(..stem.len() - 1).and_then(exact);
        }
        if let Some(found) = found.map(base_of).filter(|f| !out.contains(f)) {
            out.push(found);
        }
    }
    out
}

/// The first of [`lemmas`].
pub fn lemma(word: &str) -> Option<Word> {
    lemmas(word).first().copied()
}

/// The base form of an irregular form (`mice`: `mouse`, `ran`: `run`).
pub fn irregular(word: &str) -> Option<&'static str> {
    let found = exact(word)?;
    let base = base_of(found);
    (base != found).then(|| std::str::from_utf8(text(base.0 as usize)).unwrap_or_default())
}

fn flags(word: Word) -> u8 {
    TABLE.get(entry(word.0 as usize)).copied().unwrap_or(0)
}

/// A kind of person in its most frequent noun sense (`artist`, `physicist`).
pub fn is_person(word: Word) -> bool {
    flags(word) & FLAG_PERSON != 0
}

/// How two words relate, if WordNet says.
pub fn relation(a: Word, b: Word) -> Option<Relation> {
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    let (mut low, mut high) = (0, pairs());
    while low < high {
        let mid = low + (high - low) / 2;
        let at = pair_start() + 6 * mid;
        let (first, second) = (u24_at(at), u24_at(at + 3));
        match (first, second & WORD_MASK).cmp(&(a.0, b.0)) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => {
                return Some(if second & ANTONYM != 0 { Relation::Antonyms } else { Relation::Synonyms })
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: &str, b: &str) -> Option<Relation> {
        let (a, b) = (lemmas(a), lemmas(b));
        a.iter().flat_map(|x| b.iter().filter_map(|y| relation(*x, *y))).min_by_key(|r| *r != Relation::Antonyms)
    }

    #[test]
    fn synonyms_antonyms_and_strangers() {
        assert!(words() > 10_000 && TABLE.len() < 1_000_000, "{} words, {} bytes", words(), TABLE.len());
        assert_eq!(rel("buy", "purchase"), Some(Relation::Synonyms));
        assert_eq!(rel("purchased", "buying"), Some(Relation::Synonyms));
        assert_eq!(rel("automobiles", "car"), Some(Relation::Synonyms));
        assert_eq!(rel("begin", "start"), Some(Relation::Synonyms));
        assert_eq!(rel("open", "close"), Some(Relation::Antonyms));
        assert_eq!(rel("buy", "sell"), Some(Relation::Antonyms));
        assert_eq!(rel("differ", "difference"), Some(Relation::Synonyms));
        assert_eq!(rel("decide", "decision"), Some(Relation::Synonyms));
        // Siblings are not synonyms, and neither are unrelated words.
        assert_eq!(rel("saturday", "sunday"), None);
        assert_eq!(rel("france", "germany"), None);
        assert_eq!(rel("car", "purchase"), None);
    }

    #[test]
    fn forms_and_flags() {
        assert_eq!(lemma("mice"), lemma("mouse"));
        assert_eq!(lemma("ran"), lemma("run"));
        assert!(lemmas("running").contains(&lemma("run").unwrap()));
        assert_eq!(lemma("cities"), lemma("city"));
        assert_eq!(lemma("zzqx"), None);
        assert_eq!((irregular("mice"), irregular("feet"), irregular("mouse")), (Some("mouse"), Some("foot"), None));
        assert!(lemma("artist").is_some_and(is_person));
        assert!(lemma("physicists").is_some_and(is_person));
        assert!(!lemma("city").is_some_and(is_person));
    }
}
