//! What WordNet says about single words, from the compact table `build.rs` makes at compile time
//! (read in place: nothing is parsed or allocated at start-up).
//!
//! Layout (little-endian): `SLX2`; the counts of words, irregular forms, persons and pairs (u32);
//! word offsets (count + 1, u24) into the words that follow (sorted, lower-case ASCII); irregular
//! forms (form, base: word numbers, u24 each) sorted by form; persons (word numbers, u24),
//! sorted; pairs of word numbers (u24, u24), sorted, the second's top bit set for antonyms.

static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lexicon.bin"));

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

fn u32_at(at: usize) -> usize {
    TABLE.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes) as usize
}

fn u24_at(at: usize) -> u32 {
    match TABLE.get(at..at + 3) {
        Some(&[a, b, c]) => u32::from_le_bytes([a, b, c, 0]),
        _ => 0,
    }
}

/// The counts in the header: words, irregular forms, persons, pairs.
fn count(which: usize) -> usize {
    if TABLE.get(..4) == Some(b"SLX2") {
        u32_at(4 + 4 * which)
    } else {
        0
    }
}

fn words() -> usize {
    count(0)
}

const OFFSETS: usize = 20;

fn text_start() -> usize {
    OFFSETS + 3 * (words() + 1)
}

fn text(i: usize) -> &'static [u8] {
    let (from, to) = (u24_at(OFFSETS + 3 * i) as usize, u24_at(OFFSETS + 3 * (i + 1)) as usize);
    TABLE.get(text_start() + from..text_start() + to).unwrap_or_default()
}

fn irregular_start() -> usize {
    text_start() + u24_at(OFFSETS + 3 * words()) as usize
}

fn person_start() -> usize {
    irregular_start() + 6 * count(1)
}

fn pair_start() -> usize {
    person_start() + 3 * count(2)
}

/// Binary search over `n` sorted records of `size` bytes from `start`: `order` tells how the
/// record at an offset compares with the one wanted.
fn search(start: usize, size: usize, n: usize, order: impl Fn(usize) -> std::cmp::Ordering) -> Option<usize> {
    let (mut low, mut high) = (0, n);
    while low < high {
        let mid = low + (high - low) / 2;
        match order(start + size * mid) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return Some(start + size * mid),
        }
    }
    None
}

/// The word itself, if the table has it.
fn exact(word: &str) -> Option<Word> {
    let at = search(0, 1, words(), |i| text(i).cmp(word.as_bytes()))?;
    Some(Word(at as u32))
}

/// The base of an irregular form, or the word itself.
fn base_of(word: Word) -> Word {
    search(irregular_start(), 6, count(1), |at| u24_at(at).cmp(&word.0)).map_or(word, |at| Word(u24_at(at + 3)))
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

/// A kind of person in its most frequent noun sense (`artist`, `physicist`).
pub fn is_person(word: Word) -> bool {
    search(person_start(), 3, count(2), |at| u24_at(at).cmp(&word.0)).is_some()
}

/// How two words relate, if WordNet says.
fn relation(a: Word, b: Word) -> Option<Relation> {
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    let at = search(pair_start(), 6, count(3), |at| (u24_at(at), u24_at(at + 3) & WORD_MASK).cmp(&(a.0, b.0)))?;
    Some(if u24_at(at + 3) & ANTONYM != 0 { Relation::Antonyms } else { Relation::Synonyms })
}

/// How WordNet relates any base forms of two lower-case words: antonyms if any are.
pub fn relate(a: &str, b: &str) -> Option<Relation> {
    let (a, b) = (lemmas(a), lemmas(b));
    a.iter().flat_map(|x| b.iter().filter_map(|y| relation(*x, *y))).min_by_key(|r| *r != Relation::Antonyms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: &str, b: &str) -> Option<Relation> {
        relate(a, b)
    }

    #[test]
    fn synonyms_antonyms_and_strangers() {
        // Memory per VM is the budget: the table is read in place, so its size is its cost.
        assert!(words() > 10_000 && TABLE.len() < 500_000, "{} words, {} bytes", words(), TABLE.len());
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
