//! The PII scrubber's configuration (JSON Schema: `config.schema.json`).

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_shared::config::{ConfigError, Validate};

use crate::detect::BUILTIN;

const MIB: usize = 1 << 20;

/// What happens to a detected entity in a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Not looked for.
    Off,
    /// Replaced by a typed placeholder (`<EMAIL_1>`), restored in the answer with `restore`.
    Redact,
    /// Every letter and digit but the last 4 replaced by `*`.
    Mask,
    /// Replaced by a salted hash (`<EMAIL_3f2a9c1d>`): equal values, equal hashes.
    Hash,
    /// The request is refused (400, naming the entity types, never the values).
    Block,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Redact => "redact",
            Action::Mask => "mask",
            Action::Hash => "hash",
            Action::Block => "block",
        }
    }
}

/// What happens to sensitive data found in an answer that the prompt did not contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputAction {
    Off,
    /// Replaced by a typed marker (`<EMAIL>`).
    Redact,
    /// The answer's text is withheld and it ends with `finish_reason: content_filter`.
    Block,
}

/// What happens to a request that looks like a prompt injection or matches a banned pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    Off,
    /// Passed, with the `sluice.guard.flagged` fact and a metric.
    Flag,
    /// Refused with 400.
    Block,
}

/// What happens when an answer to a `response_format` JSON request is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatAction {
    Off,
    /// Passed, with the `sluice.guard.flagged` fact and a metric.
    Flag,
    /// The answer's text is withheld and it ends with `finish_reason: content_filter`.
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Action per entity type; built-in types not listed are redacted.
    pub entities: BTreeMap<String, Action>,
    /// Custom entity types found by a regular expression.
    pub patterns: Vec<Pattern>,
    /// Custom entity types found by a list of words or phrases.
    pub word_lists: Vec<WordList>,
    /// Put the original values back where the answer repeats a placeholder.
    pub restore: bool,
    /// Message roles scanned (`system`, `developer`, `user`, `assistant`, `tool`).
    pub roles: Vec<String>,
    /// Sensitive data in answers that did not come from the prompt.
    pub output: OutputAction,
    /// Prompt-injection heuristics and banned patterns.
    pub injection: Injection,
    /// Answers to `response_format` JSON requests that are not JSON.
    pub response_format: FormatAction,
    /// Salt for `hash`. Prefer `hash_salt_env`.
    pub hash_salt: Option<String>,
    /// Environment variable holding the salt for `hash`.
    pub hash_salt_env: Option<String>,
    /// Largest request body scanned; larger ones are refused with 413 (nothing unscanned passes).
    pub max_request_bytes: usize,
    /// Largest JSON answer restored or scanned; a larger one passes as it is, with a warning.
    pub max_response_bytes: usize,
    /// Put the last user turn, as it leaves scrubbed, in the fact `sluice.request.prompt` (the
    /// access log's `prompt`), at most `log_prompt_chars` characters. Off: no prompt text is
    /// logged anywhere.
    pub log_prompt: bool,
    pub log_prompt_chars: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// Entity type name (upper case, `A-Z`, digits and `_`), used in placeholders and metrics.
    pub entity: String,
    /// A regular expression (Rust `regex` syntax).
    pub pattern: String,
    #[serde(default = "redact")]
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordList {
    pub entity: String,
    pub words: Vec<String>,
    #[serde(default)]
    pub case_sensitive: bool,
    #[serde(default = "redact")]
    pub action: Action,
}

fn redact() -> Action {
    Action::Redact
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Injection {
    pub action: GuardAction,
    /// Use the built-in heuristics (`guard::HEURISTICS`).
    pub heuristics: bool,
    /// Banned patterns (regular expressions, case-insensitive), each a rule of its own.
    pub deny: Vec<String>,
}

impl Default for Injection {
    fn default() -> Self {
        Injection { action: GuardAction::Flag, heuristics: true, deny: Vec::new() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entities: BTreeMap::new(),
            patterns: Vec::new(),
            word_lists: Vec::new(),
            restore: true,
            roles: ["system", "developer", "user", "assistant", "tool"].map(String::from).to_vec(),
            output: OutputAction::Off,
            injection: Injection::default(),
            response_format: FormatAction::Flag,
            hash_salt: None,
            hash_salt_env: None,
            max_request_bytes: 16 * MIB,
            max_response_bytes: 32 * MIB,
            log_prompt: false,
            log_prompt_chars: 256,
        }
    }
}

fn valid_entity_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && name.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        for name in self.entities.keys() {
            let custom =
                self.patterns.iter().any(|p| &p.entity == name) || self.word_lists.iter().any(|w| &w.entity == name);
            if !BUILTIN.contains(&name.as_str()) && !custom {
                return Err(ConfigError::at(
                    format!(".entities.{name}"),
                    format!("unknown entity type; built-in ones are {}", BUILTIN.join(", ")),
                ));
            }
        }
        for (i, p) in self.patterns.iter().enumerate() {
            if !valid_entity_name(&p.entity) || BUILTIN.contains(&p.entity.as_str()) {
                return Err(ConfigError::at(
                    format!(".patterns[{i}].entity"),
                    "an upper-case name (A-Z, 0-9, _) not used by a built-in type",
                ));
            }
            if let Err(e) = regex::RegexBuilder::new(&p.pattern).size_limit(1 << 20).build() {
                return Err(ConfigError::at(format!(".patterns[{i}].pattern"), e.to_string()));
            }
        }
        for (i, w) in self.word_lists.iter().enumerate() {
            if !valid_entity_name(&w.entity) || BUILTIN.contains(&w.entity.as_str()) {
                return Err(ConfigError::at(
                    format!(".word_lists[{i}].entity"),
                    "an upper-case name (A-Z, 0-9, _) not used by a built-in type",
                ));
            }
            if w.words.is_empty() || w.words.iter().any(|w| w.trim().is_empty()) {
                return Err(ConfigError::at(format!(".word_lists[{i}].words"), "needs at least one non-empty word"));
            }
        }
        for (i, d) in self.injection.deny.iter().enumerate() {
            if let Err(e) = regex::RegexBuilder::new(d).size_limit(1 << 20).build() {
                return Err(ConfigError::at(format!(".injection.deny[{i}]"), e.to_string()));
            }
        }
        const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
        if let Some(role) = self.roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
            return Err(ConfigError::at(".roles", format!("unknown role `{role}`; roles are {}", ROLES.join(", "))));
        }
        if self.hash_salt.is_some() && self.hash_salt_env.is_some() {
            return Err(ConfigError::at(".hash_salt_env", "give `hash_salt` or `hash_salt_env`, not both"));
        }
        if self.max_request_bytes == 0 {
            return Err(ConfigError::at(".max_request_bytes", "must be positive"));
        }
        if !(1..=65_536).contains(&self.log_prompt_chars) {
            return Err(ConfigError::at(".log_prompt_chars", "must be between 1 and 65536"));
        }
        Ok(())
    }
}

impl Config {
    /// The action for an entity type.
    pub fn action(&self, entity: &str) -> Action {
        if let Some(action) = self.entities.get(entity) {
            return *action;
        }
        let custom = self
            .patterns
            .iter()
            .map(|p| (&p.entity, p.action))
            .chain(self.word_lists.iter().map(|w| (&w.entity, w.action)));
        custom.filter(|(e, _)| *e == entity).map(|(_, a)| a).next().unwrap_or(Action::Redact)
    }

    /// The salt for `hash`: from the config or the environment (empty when neither).
    pub fn salt(&self) -> String {
        match (&self.hash_salt, &self.hash_salt_env) {
            (Some(salt), _) => salt.clone(),
            (None, Some(var)) => std::env::var(var).unwrap_or_default(),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    #[test]
    fn defaults_and_overrides() {
        let c: Config = parse_config(Some(
            br#"{"entities": {"CREDIT_CARD": "block", "EMAIL": "off", "EMPLOYEE_ID": "hash"},
                 "patterns": [{"entity": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}"}],
                 "word_lists": [{"entity": "CODENAME", "words": ["Falcon"], "action": "block"}]}"#,
        ))
        .unwrap();
        assert_eq!(c.action("CREDIT_CARD"), Action::Block);
        assert_eq!(c.action("EMAIL"), Action::Off);
        assert_eq!(c.action("PHONE"), Action::Redact);
        assert_eq!(c.action("EMPLOYEE_ID"), Action::Hash);
        assert_eq!(c.action("CODENAME"), Action::Block);
        assert!(c.restore);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 9] = [
            (br#"{"entities": {"EMAILS": "redact"}}"#, ".entities.EMAILS"),
            (br#"{"entities": {"EMAIL": "erase"}}"#, ".entities.EMAIL"),
            (br#"{"patterns": [{"entity": "x", "pattern": "a"}]}"#, ".patterns[0].entity"),
            (br#"{"patterns": [{"entity": "EMAIL", "pattern": "a"}]}"#, ".patterns[0].entity"),
            (br#"{"patterns": [{"entity": "ID", "pattern": "("}]}"#, ".patterns[0].pattern"),
            (br#"{"word_lists": [{"entity": "W", "words": []}]}"#, ".word_lists[0].words"),
            (br#"{"injection": {"deny": ["[unclosed"]}}"#, ".injection.deny[0]"),
            (br#"{"roles": ["admin"]}"#, ".roles"),
            (br#"{"log_prompt_chars": 0}"#, ".log_prompt_chars"),
        ];
        for (config, path) in cases {
            assert_eq!(
                parse_config::<Config>(Some(config)).unwrap_err().path,
                path,
                "{}",
                String::from_utf8_lossy(config)
            );
        }
    }

    #[test]
    fn schema_matches_config() {
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }
}
