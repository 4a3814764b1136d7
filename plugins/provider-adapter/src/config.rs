//! The provider adapter's configuration, one per provider cluster (JSON Schema:
//! `config.schema.json`).

use serde::Deserialize;
use sluice_shared::config::{ConfigError, Validate};

const MIB: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// OpenAI and OpenAI-compatible APIs: requests pass as they are.
    Openai,
    /// Anthropic Messages: OpenAI chat requests are translated, and their answers back.
    Anthropic,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What the cluster's provider speaks.
    pub schema: Schema,
    /// The provider credential. Prefer `api_key_env`: configuration is visible to operators.
    pub api_key: Option<String>,
    /// Environment variable holding the credential (pass it to the VM with
    /// `vm_config.environment_variables.host_env_keys`).
    pub api_key_env: Option<String>,
    /// `anthropic-version` sent to Anthropic.
    pub anthropic_version: String,
    /// `max_tokens` for Anthropic when the client set none (Anthropic requires one).
    pub default_max_tokens: u64,
    /// Largest request body translated; larger requests get 413.
    pub max_request_bytes: usize,
    /// Largest JSON answer translated; a larger one is answered with 502.
    pub max_response_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            schema: Schema::Openai,
            api_key: None,
            api_key_env: None,
            anthropic_version: "2023-06-01".to_string(),
            default_max_tokens: 4096,
            max_request_bytes: 16 * MIB,
            max_response_bytes: 32 * MIB,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.api_key.is_some() && self.api_key_env.is_some() {
            return Err(ConfigError::at(".api_key_env", "give `api_key` or `api_key_env`, not both"));
        }
        if self.api_key.as_deref() == Some("") {
            return Err(ConfigError::at(".api_key", "must not be empty"));
        }
        if self.default_max_tokens == 0 {
            return Err(ConfigError::at(".default_max_tokens", "must be positive"));
        }
        Ok(())
    }
}

impl Config {
    /// The credential, from the config or the environment (`None`: the request keeps its own).
    pub fn credential(&self) -> Option<String> {
        match (&self.api_key, &self.api_key_env) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(var)) => std::env::var(var).ok().filter(|k| !k.is_empty()),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    #[test]
    fn config_and_errors() {
        let c: Config = parse_config(Some(br#"{"schema": "anthropic", "api_key": "k"}"#)).unwrap();
        assert_eq!((c.schema, c.credential()), (Schema::Anthropic, Some("k".to_string())));
        let both = parse_config::<Config>(Some(br#"{"api_key": "k", "api_key_env": "K"}"#)).unwrap_err();
        assert_eq!(both.path, ".api_key_env");
        assert_eq!(parse_config::<Config>(Some(br#"{"schema": "gemini"}"#)).unwrap_err().path, ".schema");
        let missing: Config = parse_config(Some(br#"{"api_key_env": "SLUICE_TEST_UNSET_VARIABLE"}"#)).unwrap();
        assert_eq!(missing.credential(), None);
    }

    #[test]
    fn schema_matches_config() {
        assert_eq!(sluice_shared::config::check_schema::<Config>(include_str!("../config.schema.json")), Ok(()));
    }
}
