//! Model prices (USD per million tokens) and request cost.
//!
//! The built-in table holds list prices as published by OpenAI, Anthropic, Google and AWS; operators
//! override or extend it per model in each plugin's `prices` config. A model matches its exact
//! name first, then the longest known prefix (so dated variants like `gpt-4o-2024-08-06` match
//! `gpt-4o`), after dropping a `provider/` prefix.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::usage::TokenUsage;

/// USD per one million tokens. `cached` (prompt tokens read from the provider's cache) and
/// `cache_write` (tokens written to it) default to the input price when absent.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    const fn new(input: f64, output: f64, cached: f64, cache_write: f64) -> Price {
        Price { input, output, cached: Some(cached), cache_write: Some(cache_write) }
    }

    /// Every price must be a finite, non-negative number.
    pub fn validate(&self) -> Result<(), String> {
        let all = [Some(self.input), Some(self.output), self.cached, self.cache_write];
        if all.iter().flatten().all(|p| p.is_finite() && *p >= 0.0) {
            Ok(())
        } else {
            Err("prices must be finite numbers >= 0".to_string())
        }
    }

    /// Cost of one request in USD.
    pub fn cost_usd(&self, usage: &TokenUsage) -> f64 {
        let uncached = usage.prompt.saturating_sub(usage.cached).saturating_sub(usage.cache_write);
        let micro = uncached as f64 * self.input
            + usage.cached as f64 * self.cached.unwrap_or(self.input)
            + usage.cache_write as f64 * self.cache_write.unwrap_or(self.input)
            + usage.completion as f64 * self.output;
        micro / 1_000_000.0
    }
}

/// Checks a `prices` config field: named models, valid prices. Errors name the bad entry.
pub fn validate_overrides(prices: &BTreeMap<String, Price>) -> Result<(), crate::config::ConfigError> {
    use crate::config::ConfigError;
    for (model, price) in prices {
        if model.is_empty() {
            return Err(ConfigError::at(".prices", "model names must not be empty"));
        }
        price.validate().map_err(|m| ConfigError::at(format!(".prices.{model}"), m))?;
    }
    Ok(())
}

const BUILTIN: &[(&str, Price)] = &[
    ("gpt-4o", Price::new(2.50, 10.00, 1.25, 2.50)),
    ("gpt-4o-mini", Price::new(0.15, 0.60, 0.075, 0.15)),
    ("gpt-4.1", Price::new(2.00, 8.00, 0.50, 2.00)),
    ("gpt-4.1-mini", Price::new(0.40, 1.60, 0.10, 0.40)),
    ("gpt-4.1-nano", Price::new(0.10, 0.40, 0.025, 0.10)),
    ("gpt-5", Price::new(1.25, 10.00, 0.125, 1.25)),
    ("gpt-5-mini", Price::new(0.25, 2.00, 0.025, 0.25)),
    ("gpt-5-nano", Price::new(0.05, 0.40, 0.005, 0.05)),
    ("gpt-4-turbo", Price::new(10.00, 30.00, 10.00, 10.00)),
    ("gpt-4", Price::new(30.00, 60.00, 30.00, 30.00)),
    ("gpt-3.5-turbo", Price::new(0.50, 1.50, 0.50, 0.50)),
    ("o1", Price::new(15.00, 60.00, 7.50, 15.00)),
    ("o1-mini", Price::new(1.10, 4.40, 0.55, 1.10)),
    ("o3", Price::new(2.00, 8.00, 0.50, 2.00)),
    ("o3-mini", Price::new(1.10, 4.40, 0.55, 1.10)),
    ("o4-mini", Price::new(1.10, 4.40, 0.275, 1.10)),
    ("text-embedding-3-small", Price::new(0.02, 0.0, 0.02, 0.02)),
    ("text-embedding-3-large", Price::new(0.13, 0.0, 0.13, 0.13)),
    ("text-embedding-ada-002", Price::new(0.10, 0.0, 0.10, 0.10)),
    ("claude-opus-4-5", Price::new(5.00, 25.00, 0.50, 6.25)),
    ("claude-opus-4", Price::new(15.00, 75.00, 1.50, 18.75)),
    ("claude-haiku-4-5", Price::new(1.00, 5.00, 0.10, 1.25)),
    ("claude-sonnet-4", Price::new(3.00, 15.00, 0.30, 3.75)),
    ("claude-3-7-sonnet", Price::new(3.00, 15.00, 0.30, 3.75)),
    ("claude-3-5-sonnet", Price::new(3.00, 15.00, 0.30, 3.75)),
    ("claude-3-5-haiku", Price::new(0.80, 4.00, 0.08, 1.00)),
    ("claude-3-haiku", Price::new(0.25, 1.25, 0.03, 0.30)),
    // Gemini: prompts up to 200k tokens (longer ones cost more: override `prices` for them);
    // cached reads at Google's 90% discount; no cache-write charge (storage is billed by time).
    ("gemini-3-pro", Price::new(2.00, 12.00, 0.20, 2.00)),
    ("gemini-2.5-pro", Price::new(1.25, 10.00, 0.125, 1.25)),
    ("gemini-2.5-flash", Price::new(0.30, 2.50, 0.03, 0.30)),
    ("gemini-2.5-flash-lite", Price::new(0.10, 0.40, 0.01, 0.10)),
    ("gemini-2.0-flash", Price::new(0.10, 0.40, 0.025, 0.10)),
    // Amazon Nova on Bedrock (on-demand, us-east-1; cached reads at a quarter).
    ("nova-micro", Price::new(0.035, 0.14, 0.00875, 0.035)),
    ("nova-lite", Price::new(0.06, 0.24, 0.015, 0.06)),
    ("nova-pro", Price::new(0.80, 3.20, 0.20, 0.80)),
    // Meta Llama on Bedrock (on-demand, us-east-1; no prompt caching, so cached reads at full price).
    ("llama4-maverick-17b-instruct", Price::new(0.24, 0.97, 0.24, 0.24)),
    ("llama4-scout-17b-instruct", Price::new(0.17, 0.66, 0.17, 0.17)),
    ("llama3-3-70b-instruct", Price::new(0.72, 0.72, 0.72, 0.72)),
    ("llama3-2-90b-instruct", Price::new(0.72, 0.72, 0.72, 0.72)),
    ("llama3-2-11b-instruct", Price::new(0.16, 0.16, 0.16, 0.16)),
    ("llama3-2-3b-instruct", Price::new(0.15, 0.15, 0.15, 0.15)),
    ("llama3-2-1b-instruct", Price::new(0.10, 0.10, 0.10, 0.10)),
    ("llama3-1-70b-instruct", Price::new(0.72, 0.72, 0.72, 0.72)),
    ("llama3-1-8b-instruct", Price::new(0.22, 0.22, 0.22, 0.22)),
];

#[derive(Debug, Clone)]
pub struct PriceTable {
    /// Longest name first, so the first prefix match is the most specific.
    entries: Vec<(String, Price)>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable::with_overrides(&BTreeMap::new())
    }
}

impl PriceTable {
    /// The built-in table with `overrides` replacing or adding models.
    pub fn with_overrides(overrides: &BTreeMap<String, Price>) -> Self {
        let mut map: BTreeMap<String, Price> = BUILTIN.iter().map(|(m, p)| (m.to_string(), *p)).collect();
        map.extend(overrides.iter().map(|(m, p)| (m.to_ascii_lowercase(), *p)));
        let mut entries: Vec<(String, Price)> = map.into_iter().collect();
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        PriceTable { entries }
    }

    /// A model's price: by its name, or its longest known prefix. A path (`accounts/x/models/m`)
    /// counts by its last segment, and Bedrock's region and vendor prefixes
    /// (`us.anthropic.claude-...`) are tried without them.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        let lower = model.to_ascii_lowercase();
        let mut name = lower.rsplit('/').next().unwrap_or(&lower);
        loop {
            let found = self
                .entries
                .iter()
                .find(|(m, _)| m == name)
                .or_else(|| self.entries.iter().find(|(m, _)| name.starts_with(m.as_str())));
            match (found, name.split_once('.')) {
                (Some((_, price)), _) => return Some(price),
                (None, Some((head, rest))) if !head.is_empty() && head.bytes().all(|b| b.is_ascii_lowercase()) => {
                    name = rest;
                }
                (None, _) => return None,
            }
        }
    }

    /// Cost in USD, or `None` for a model with no known price.
    pub fn cost_usd(&self, model: &str, usage: &TokenUsage) -> Option<f64> {
        self.lookup(model).map(|p| p.cost_usd(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn usage(prompt: u64, completion: u64, cached: u64) -> TokenUsage {
        TokenUsage { prompt, completion, cached, ..Default::default() }
    }

    #[test]
    fn longest_prefix_wins() {
        let table = PriceTable::default();
        assert_eq!(table.lookup("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(table.lookup("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(table.lookup("openai/GPT-4o").unwrap().input, 2.50);
        assert_eq!(table.lookup("claude-sonnet-4-20250514").unwrap().output, 15.00);
        assert_eq!(table.lookup("gemini-2.5-flash-lite-preview-09-2025").unwrap().output, 0.40);
        assert_eq!(table.lookup("gemini-2.5-flash").unwrap().output, 2.50);
        // Bedrock's ids: region and vendor prefixes, a version suffix.
        assert_eq!(table.lookup("anthropic.claude-3-5-haiku-20241022-v1:0").unwrap().output, 4.00);
        assert_eq!(table.lookup("us.anthropic.claude-sonnet-4-20250514-v1:0").unwrap().output, 15.00);
        assert_eq!(table.lookup("us.amazon.nova-lite-v1:0").unwrap().output, 0.24);
        assert_eq!(table.lookup("meta.llama3-1-70b-instruct-v1:0").unwrap().output, 0.72);
        assert_eq!(table.lookup("us.meta.llama4-maverick-17b-instruct-v1:0").unwrap().output, 0.97);
        assert!(table.lookup("my-llama").is_none());
    }

    #[test]
    fn cost_uses_cached_price() {
        let table = PriceTable::default();
        // 1M prompt of which 400k cached, 100k completion on gpt-4o:
        // 600k * 2.50 + 400k * 1.25 + 100k * 10.00 = 1.5 + 0.5 + 1.0 USD
        let cost = table.cost_usd("gpt-4o", &usage(1_000_000, 100_000, 400_000)).unwrap();
        assert!((cost - 3.0).abs() < 1e-9, "{cost}");
        assert_eq!(table.cost_usd("unknown-model", &usage(1, 1, 0)), None);
    }

    #[test]
    fn overrides_replace_and_add() {
        let mut overrides = BTreeMap::new();
        overrides.insert("gpt-4o".to_string(), Price { input: 1.0, output: 2.0, cached: None, cache_write: None });
        overrides.insert("My-Llama".to_string(), Price { input: 0.1, output: 0.1, cached: None, cache_write: None });
        let table = PriceTable::with_overrides(&overrides);
        assert_eq!(table.lookup("gpt-4o-2024-08-06").unwrap().input, 1.0);
        assert_eq!(table.lookup("gpt-4o-mini").unwrap().input, 0.15);
        let cost = table.cost_usd("my-llama-70b", &usage(1_000_000, 0, 500_000)).unwrap();
        assert!((cost - 0.1).abs() < 1e-9, "cached defaults to input price: {cost}");
    }

    #[test]
    fn validation() {
        assert!(Price { input: -1.0, output: 0.0, cached: None, cache_write: None }.validate().is_err());
        assert!(Price { input: 1.0, output: f64::NAN, cached: None, cache_write: None }.validate().is_err());
        assert!(Price::new(1.0, 2.0, 0.5, 1.0).validate().is_ok());
    }
}
