//! Applying the configured action to what the detectors find in a piece of text.
//!
//! A request's placeholders are numbered per entity type (`<EMAIL_1>`, `<EMAIL_2>`) and the same
//! value always gets the same placeholder, so the model can still tell people apart. The
//! [`Vault`] keeps them for restoring the answer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sluice_shared::digest;

use crate::config::{Action, Config};
use crate::detect::{Custom, Detectors, Finding, BUILTIN};

/// The detectors and actions of one configuration.
pub struct Scrubber {
    detectors: Detectors,
    actions: HashMap<String, Action>,
    salt: String,
}

impl Scrubber {
    pub fn new(config: &Config) -> Result<Scrubber, String> {
        let builtin: Vec<&str> = BUILTIN.iter().copied().filter(|e| config.action(e) != Action::Off).collect();
        let mut custom: Vec<Custom<'_>> = config
            .patterns
            .iter()
            .filter(|p| config.action(&p.entity) != Action::Off)
            .map(|p| Custom { entity: &p.entity, pattern: p.pattern.clone() })
            .collect();
        for list in config.word_lists.iter().filter(|w| config.action(&w.entity) != Action::Off) {
            let words: Vec<String> = list.words.iter().map(|w| regex::escape(w.trim())).collect();
            let flags = if list.case_sensitive { "" } else { "(?i)" };
            custom.push(Custom { entity: &list.entity, pattern: format!(r"{flags}\b(?:{})\b", words.join("|")) });
        }
        let detectors = Detectors::new(&builtin, &custom)?;
        let mut actions: HashMap<String, Action> = BUILTIN.iter().map(|e| (e.to_string(), config.action(e))).collect();
        for entity in config.patterns.iter().map(|p| &p.entity).chain(config.word_lists.iter().map(|w| &w.entity)) {
            actions.insert(entity.clone(), config.action(entity));
        }
        Ok(Scrubber { detectors, actions, salt: config.salt() })
    }

    pub fn find(&self, text: &str) -> Vec<Finding> {
        self.detectors.find(text)
    }

    fn action(&self, entity: &str) -> Action {
        self.actions.get(entity).copied().unwrap_or(Action::Redact)
    }

    /// The text with every finding handled; `None` when nothing was found.
    pub fn scrub(&self, text: &str, vault: &mut Vault, tally: &mut Tally) -> Option<String> {
        let findings = self.find(text);
        if findings.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in findings {
            let (Some(before), Some(value)) = (text.get(at..f.start), text.get(f.start..f.end)) else { continue };
            out.push_str(before);
            let action = self.action(&f.entity);
            tally.count(&f.entity, action);
            match action {
                Action::Off | Action::Block => out.push_str(value),
                Action::Redact => out.push_str(&vault.placeholder(&f.entity, value)),
                Action::Mask => out.push_str(&mask(value)),
                Action::Hash => out.push_str(&self.hash(&f.entity, value)),
            }
            if action == Action::Block {
                tally.blocked.insert(f.entity.clone());
            }
            at = f.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        Some(out)
    }

    fn hash(&self, entity: &str, value: &str) -> String {
        let hex = digest::sha256_hex(format!("{}{value}", self.salt).as_bytes());
        format!("<{entity}_{}>", hex.get(..12).unwrap_or_default())
    }
}

/// Every letter and digit but the last four replaced by `*`; separators kept.
pub fn mask(value: &str) -> String {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if !c.is_alphanumeric() {
                return c;
            }
            seen += 1;
            if seen + 4 > total {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// A request's placeholders and the values behind them.
#[derive(Debug, Default)]
pub struct Vault {
    by_value: HashMap<(String, String), String>,
    values: HashMap<String, String>,
    /// The prompt's values, whatever their type (output scanning lets these pass).
    held: HashSet<String>,
    counters: HashMap<String, u32>,
    longest: usize,
}

impl Vault {
    /// The placeholder for `value`, made on first sight.
    pub fn placeholder(&mut self, entity: &str, value: &str) -> String {
        let key = (entity.to_string(), value.to_string());
        if let Some(existing) = self.by_value.get(&key) {
            return existing.clone();
        }
        let n = self.counters.entry(entity.to_string()).or_insert(0);
        *n += 1;
        let placeholder = format!("<{entity}_{n}>");
        self.longest = self.longest.max(placeholder.len());
        self.values.insert(placeholder.clone(), value.to_string());
        self.held.insert(value.to_string());
        self.by_value.insert(key, placeholder.clone());
        placeholder
    }

    /// The value behind a placeholder.
    pub fn value(&self, placeholder: &str) -> Option<&str> {
        self.values.get(placeholder).map(String::as_str)
    }

    /// Whether `text` is one of the values the prompt held.
    pub fn holds_value(&self, text: &str) -> bool {
        self.held.contains(text)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The longest placeholder, which bounds how much of a stream is held back.
    pub fn longest_placeholder(&self) -> usize {
        self.longest
    }
}

/// Detections of one request, for metrics and the block decision.
#[derive(Debug, Default)]
pub struct Tally {
    pub counts: BTreeMap<(String, &'static str), u64>,
    pub blocked: BTreeSet<String>,
}

impl Tally {
    pub fn count(&mut self, entity: &str, action: Action) {
        *self.counts.entry((entity.to_string(), action.name())).or_insert(0) += 1;
    }

    pub fn count_output(&mut self, entity: &str, action: &'static str) {
        *self.counts.entry((entity.to_string(), action)).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    fn scrubber(json: &str) -> Scrubber {
        Scrubber::new(&parse_config::<Config>(Some(json.as_bytes())).unwrap()).unwrap()
    }

    #[test]
    fn placeholders_are_numbered_and_reused() {
        let s = scrubber("{}");
        let (mut vault, mut tally) = (Vault::default(), Tally::default());
        let out = s.scrub("a@x.com wrote to b@x.com, then a@x.com again", &mut vault, &mut tally).unwrap();
        assert_eq!(out, "<EMAIL_1> wrote to <EMAIL_2>, then <EMAIL_1> again");
        assert_eq!(vault.value("<EMAIL_2>"), Some("b@x.com"));
        assert_eq!(tally.counts.get(&("EMAIL".to_string(), "redact")), Some(&3));
        assert_eq!(s.scrub("nothing here", &mut vault, &mut tally), None);
    }

    #[test]
    fn mask_hash_block_and_custom() {
        let s = scrubber(
            r#"{"entities": {"CREDIT_CARD": "mask", "EMAIL": "hash", "US_SSN": "block"}, "hash_salt": "pepper",
                "word_lists": [{"entity": "CODENAME", "words": ["Project Falcon"]}]}"#,
        );
        let (mut vault, mut tally) = (Vault::default(), Tally::default());
        let out = s
            .scrub(
                "card 4111-1111-1111-1111, mail a@x.com, ssn 123-45-6789, about project falcon",
                &mut vault,
                &mut tally,
            )
            .unwrap();
        assert!(out.starts_with("card ****-****-****-1111, mail <EMAIL_"), "{out}");
        assert!(out.contains("ssn 123-45-6789") && out.ends_with("about <CODENAME_1>"), "{out}");
        assert_eq!(tally.blocked.iter().collect::<Vec<_>>(), ["US_SSN"]);
        // The same value hashes the same; another salt hashes otherwise.
        assert_eq!(s.hash("EMAIL", "a@x.com"), s.hash("EMAIL", "a@x.com"));
        assert_ne!(s.hash("EMAIL", "a@x.com"), scrubber("{}").hash("EMAIL", "a@x.com"));
        assert_eq!(mask("jürgen"), "**rgen");
    }

    #[test]
    fn off_entities_are_not_looked_for() {
        let s = scrubber(r#"{"entities": {"EMAIL": "off"}}"#);
        assert_eq!(s.scrub("a@x.com", &mut Vault::default(), &mut Tally::default()), None);
    }
}
