//! Builds the paraphrase guard's lexicon (`lexicon.bin` in OUT_DIR) from WordNet 3.0, the
//! Debian package `wordnet-base` (`make deps` installs it; `SLUICE_WORDNET` names another copy).
//!
//! Only what the guard's rules read is kept (see `src/lexicon.rs` for the layout):
//! - single-word lemmas whose most frequent noun sense is an attested kind of person;
//! - synonym pairs: two lemmas of one synset that is a tagged (attested) sense of both, that no
//!   sense marks antonyms and no attested senses make siblings (co-hyponyms of one hypernym:
//!   Saturday and Sunday, Celsius and Fahrenheit);
//! - derived words of one root in attested senses (`differ` / `difference`), as synonyms;
//! - antonyms (`open` / `close`), in any sense;
//! - irregular forms of nouns and verbs (`mice`, `ran`) to their base form (not of adjectives:
//!   `better` is not `good`).
//!
//! WordNet's licence allows redistribution; its notice is in `docs/licences/wordnet.txt`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A synset: its part of speech (n, v, a, r) and byte offset.
type Synset = (u8, u32);

/// person.n.01
const PERSON: Synset = (b'n', 7846);

/// Marks a pair of antonyms (in the second word's number).
const ANTONYM: u32 = 1 << 23;

#[derive(Default)]
struct Lemma {
    /// Senses by frequency, with whether each is tagged in the corpus.
    senses: Vec<(Synset, bool)>,
}

#[derive(Default)]
struct Data {
    lemmas: BTreeMap<String, Lemma>,
    words: HashMap<Synset, Vec<String>>,
    hypernyms: HashMap<Synset, Vec<Synset>>,
    /// Classes of instances (Paris is an instance of a national capital).
    classes: HashMap<Synset, Vec<Synset>>,
    antonyms: HashMap<Synset, Vec<Synset>>,
    /// Lexical links between a noun and a verb of one root (`differ`, `difference`).
    derived: BTreeSet<(String, String)>,
    exceptions: BTreeMap<String, String>,
}

fn pos_of(c: &str) -> u8 {
    match c {
        "n" => b'n',
        "v" => b'v',
        "r" => b'r',
        _ => b'a',
    }
}

fn simple(word: &str) -> bool {
    word.len() >= 2 && word.bytes().all(|b| b.is_ascii_lowercase())
}

fn read(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    println!("cargo:rerun-if-changed={}", path.display());
    match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "cannot read {}: {e}\nThe semantic cache's guard is built from WordNet: install Debian's \
                 `wordnet-base` (`make deps` does) or set SLUICE_WORDNET to its dictionary folder.",
                path.display()
            );
            std::process::exit(1);
        }
    }
}

fn load(dir: &Path) -> Data {
    let mut data = Data::default();
    let mut derived: Vec<(Synset, Synset, String)> = Vec::new();
    for (file, pos) in [("noun", b'n'), ("verb", b'v'), ("adj", b'a'), ("adv", b'r')] {
        for line in read(dir, &format!("index.{file}")).lines().filter(|l| !l.starts_with(' ')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(word), Some(pointers)) = (f.first(), f.get(3).and_then(|p| p.parse::<usize>().ok())) else {
                continue;
            };
            if !simple(word) {
                continue;
            }
            let tagged = f.get(5 + pointers).and_then(|t| t.parse::<usize>().ok()).unwrap_or(0);
            let offsets = f.iter().skip(6 + pointers).filter_map(|o| o.parse::<u32>().ok());
            let lemma = data.lemmas.entry((*word).to_string()).or_default();
            lemma.senses.extend(offsets.enumerate().map(|(i, o)| ((pos, o), i < tagged)));
        }
        for line in read(dir, &format!("data.{file}")).lines().filter(|l| !l.starts_with(' ')) {
            let f: Vec<&str> = line.split(" | ").next().unwrap_or_default().split_whitespace().collect();
            let (Some(offset), Some(count)) =
                (f.first().and_then(|o| o.parse::<u32>().ok()), f.get(3).and_then(|c| u32::from_str_radix(c, 16).ok()))
            else {
                continue;
            };
            let synset = (pos, offset);
            let count = count as usize;
            let words = (0..count)
                .filter_map(|i| f.get(4 + 2 * i))
                .map(|w| w.split('(').next().unwrap_or_default().to_lowercase())
                .collect();
            data.words.insert(synset, words);
            let pointers = f.get(4 + 2 * count).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
            for p in 0..pointers {
                let at = 5 + 2 * count + 4 * p;
                let (Some(symbol), Some(target), Some(target_pos)) = (f.get(at), f.get(at + 1), f.get(at + 2)) else {
                    continue;
                };
                let Ok(target) = target.parse::<u32>() else { continue };
                let target = (pos_of(target_pos), target);
                match *symbol {
                    "@" => data.hypernyms.entry(synset).or_default().push(target),
                    "@i" => data.classes.entry(synset).or_default().push(target),
                    "!" => data.antonyms.entry(synset).or_default().push(target),
                    "+" => derived.push((synset, target, f.get(at + 3).copied().unwrap_or_default().to_string())),
                    _ => {}
                }
            }
        }
        // Adjectives' irregular forms are comparatives (`better`: `good`), a different question.
        let irregular = if pos == b'a' { String::new() } else { read(dir, &format!("{file}.exc")) };
        for line in irregular.lines() {
            let mut f = line.split_whitespace();
            if let (Some(form), Some(base)) = (f.next(), f.next()) {
                if simple(form) && simple(base) {
                    data.exceptions.entry(form.to_string()).or_insert_with(|| base.to_string());
                }
            }
        }
    }
    // A derivational pointer names its words by number (hex "sstt": source, target).
    let mut pairs = BTreeSet::new();
    for (from, to, words) in derived {
        let number = |at: std::ops::Range<usize>| words.get(at).and_then(|n| usize::from_str_radix(n, 16).ok());
        let word = |synset: &Synset, n: Option<usize>| {
            n.and_then(|n| n.checked_sub(1)).and_then(|n| data.words.get(synset).and_then(|w| w.get(n))).cloned()
        };
        let attested = |w: &String, synset: &Synset| {
            data.lemmas.get(w).is_some_and(|l| l.senses.iter().any(|(s, tagged)| s == synset && *tagged))
        };
        if let (Some(a), Some(b)) = (word(&from, number(0..2)), word(&to, number(2..4))) {
            if !attested(&a, &from) || !attested(&b, &to) {
                continue;
            }
            // Inflections the guard strips itself need no entry (`boil` / `boiling`).
            let inflected = |long: &str, short: &str| {
                long.strip_prefix(short)
                    .is_some_and(|rest| ["s", "es", "ing", "ed", "d", "er", "r", "ly"].contains(&rest))
            };
            if simple(&a) && simple(&b) && a != b && !inflected(&a, &b) && !inflected(&b, &a) {
                pairs.insert(if a < b { (a, b) } else { (b, a) });
            }
        }
    }
    data.derived = pairs;
    data
}

impl Data {
    fn is_person(&self, synset: Synset) -> bool {
        let mut seen = HashSet::new();
        let mut todo = vec![synset];
        while let Some(s) = todo.pop() {
            if s == PERSON {
                return true;
            }
            if seen.insert(s) {
                todo.extend(self.hypernyms.get(&s).into_iter().flatten());
            }
        }
        false
    }

    /// The most frequent noun sense is an attested kind of person.
    fn is_person_noun(&self, lemma: &Lemma) -> bool {
        lemma.senses.iter().find(|((pos, _), _)| *pos == b'n').is_some_and(|(s, tagged)| *tagged && self.is_person(*s))
    }

    fn parents(&self, synset: &Synset) -> impl Iterator<Item = &Synset> {
        self.hypernyms.get(synset).into_iter().chain(self.classes.get(synset)).flatten()
    }

    /// Whether a sense of `a` and a sense of `b` are antonyms, or distinct co-hyponyms (of the
    /// attested senses: every rare sense would make most words someone's sibling).
    fn opposed(&self, a: &Lemma, b: &Lemma) -> bool {
        for (sa, tagged_a) in &a.senses {
            for (sb, tagged_b) in &b.senses {
                if self.antonyms.get(sa).is_some_and(|t| t.contains(sb)) {
                    return true;
                }
                if sa != sb && *tagged_a && *tagged_b && self.parents(sa).any(|h| self.parents(sb).any(|g| g == h)) {
                    return true;
                }
            }
        }
        false
    }

    fn synonyms(&self) -> BTreeSet<(String, String)> {
        let mut pairs = BTreeSet::new();
        for (word, lemma) in &self.lemmas {
            for (synset, tagged) in &lemma.senses {
                if !tagged {
                    continue;
                }
                for other in self.words.get(synset).into_iter().flatten() {
                    if other <= word || !simple(other) {
                        continue;
                    }
                    let Some(theirs) = self.lemmas.get(other) else { continue };
                    if theirs.senses.iter().any(|(s, t)| s == synset && *t) && !self.opposed(lemma, theirs) {
                        pairs.insert((word.clone(), other.clone()));
                    }
                }
            }
        }
        pairs
    }

    /// Lemmas of synsets that WordNet marks antonyms (open and close, buy and sell).
    fn antonym_pairs(&self) -> BTreeSet<(String, String)> {
        let mut pairs = BTreeSet::new();
        for (synset, targets) in &self.antonyms {
            for target in targets {
                for a in self.words.get(synset).into_iter().flatten().filter(|w| self.lemmas.contains_key(*w)) {
                    for b in self.words.get(target).into_iter().flatten().filter(|w| self.lemmas.contains_key(*w)) {
                        if a != b {
                            pairs.insert(if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) });
                        }
                    }
                }
            }
        }
        pairs
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SLUICE_WORDNET");
    let dir = std::env::var_os("SLUICE_WORDNET").map_or_else(|| PathBuf::from("/usr/share/wordnet"), PathBuf::from);
    let data = load(&dir);
    let synonyms = data.synonyms();
    let antonyms = data.antonym_pairs();
    let pairs: BTreeSet<(String, String, bool)> = synonyms
        .iter()
        .filter(|p| !antonyms.contains(p))
        .map(|(a, b)| (a.clone(), b.clone(), false))
        .chain(antonyms.iter().map(|(a, b)| (a.clone(), b.clone(), true)))
        .collect();
    // Derived words count as synonyms (`differ` / `difference`, `safe` / `safely`) unless they
    // are antonyms.
    let pairs: BTreeSet<(String, String, bool)> = pairs
        .into_iter()
        .chain(data.derived.iter().filter(|p| !antonyms.contains(*p)).map(|(a, b)| (a.clone(), b.clone(), false)))
        .collect();
    let persons: BTreeSet<&String> =
        data.lemmas.iter().filter(|(_, l)| data.is_person_noun(l)).map(|(w, _)| w).collect();
    // Irregular forms (`feet`, `ran`) point at their base, which is kept too.
    let exceptions: BTreeMap<&String, &String> = data
        .exceptions
        .iter()
        .filter(|(form, base)| data.lemmas.contains_key(*base) && !data.lemmas.contains_key(*form))
        .collect();
    let mut kept: BTreeSet<&str> = persons.iter().map(|w| w.as_str()).collect();
    kept.extend(pairs.iter().flat_map(|(a, b, _)| [a.as_str(), b.as_str()]));
    kept.extend(exceptions.iter().flat_map(|(form, base)| [form.as_str(), base.as_str()]));
    let words: Vec<&str> = kept.into_iter().collect();
    let index: HashMap<&str, u32> = words.iter().enumerate().map(|(i, w)| (*w, i as u32)).collect();
    let id = |w: &str| index.get(w).copied().unwrap_or(u32::MAX);
    let u24 = |out: &mut Vec<u8>, n: u32| out.extend(n.to_le_bytes().iter().take(3));

    // Layout (`src/lexicon.rs`): "SLX2"; the counts of words, irregular forms, persons and pairs
    // (u32); word offsets (count + 1, u24); the words; irregular forms (form, base: u24 each);
    // persons (u24); pairs (u24, u24: the second's top bit set for antonyms). All sorted.
    let mut out = b"SLX2".to_vec();
    for count in [words.len(), exceptions.len(), persons.len(), pairs.len()] {
        out.extend((count as u32).to_le_bytes());
    }
    let mut offset = 0u32;
    for w in &words {
        u24(&mut out, offset);
        offset += w.len() as u32;
    }
    u24(&mut out, offset);
    for w in &words {
        out.extend(w.as_bytes());
    }
    let mut irregular: Vec<(u32, u32)> = exceptions.iter().map(|(form, base)| (id(form), id(base))).collect();
    irregular.sort_unstable();
    for (form, base) in irregular {
        u24(&mut out, form);
        u24(&mut out, base);
    }
    for person in &persons {
        u24(&mut out, id(person));
    }
    let mut numbered: Vec<(u32, u32, bool)> = pairs.iter().map(|(a, b, antonym)| (id(a), id(b), *antonym)).collect();
    numbered.sort_unstable();
    numbered.dedup_by_key(|(a, b, _)| (*a, *b));
    for (a, b, antonym) in numbered {
        u24(&mut out, a);
        u24(&mut out, b | if antonym { ANTONYM } else { 0 });
    }
    let target = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("lexicon.bin");
    if let Err(e) = fs::write(&target, &out) {
        eprintln!("cannot write {}: {e}", target.display());
        std::process::exit(1);
    }
    let summary = format!(
        "{} words, {} irregular forms, {} persons, {} pairs ({} antonyms), {} bytes\n",
        words.len(),
        exceptions.len(),
        persons.len(),
        pairs.len(),
        antonyms.len(),
        out.len()
    );
    let _ = fs::write(target.with_extension("txt"), summary);
}
