//! Plugin configuration: one JSON document per plugin, unknown fields rejected, every error
//! naming the path of the bad field so the `on_configure` log line says what to fix.

use std::fmt;

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending field (`.prices.gpt-4o.input`), or `.` for the document.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration at `{}`: {}", self.path, self.message)
    }
}

/// A configuration that can check what its types alone cannot (ranges, cross-field rules).
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses a plugin configuration. An absent or blank document yields the defaults.
pub fn parse_config<T>(bytes: Option<&[u8]>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Default + Validate,
{
    let bytes = bytes.unwrap_or_default();
    let config = if bytes.iter().all(u8::is_ascii_whitespace) {
        T::default()
    } else {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { path } else { format!(".{}", path.trim_start_matches('.')) };
            ConfigError::at(path, e.into_inner().to_string())
        })?;
        de.end().map_err(|e| ConfigError::at(".", e.to_string()))?;
        parsed
    };
    config.validate()?;
    Ok(config)
}

/// Checks that a plugin's JSON Schema documents exactly the top-level fields its config accepts,
/// with the same defaults, each with a description. Used by every plugin's tests.
pub fn check_schema<T>(schema: &str) -> Result<(), String>
where
    T: DeserializeOwned + Default + Validate + PartialEq + fmt::Debug,
{
    let schema: serde_json::Value = serde_json::from_str(schema).map_err(|e| format!("schema: {e}"))?;
    let properties = schema.get("properties").and_then(|p| p.as_object()).ok_or("schema has no properties")?;
    // serde lists every accepted field when it meets an unknown one.
    let message = match parse_config::<T>(Some(br#"{"~":0}"#)) {
        Err(e) => e.message,
        Ok(_) => return Err("the config accepts unknown fields".into()),
    };
    let mut accepted: Vec<&str> = message.split('`').skip(3).step_by(2).collect();
    let mut documented: Vec<&str> = properties.keys().map(String::as_str).collect();
    accepted.sort_unstable();
    documented.sort_unstable();
    if documented != accepted {
        return Err(format!("schema documents {documented:?}, config accepts {accepted:?}"));
    }
    let defaults: serde_json::Map<String, serde_json::Value> =
        properties.iter().filter_map(|(k, v)| Some((k.clone(), v.get("default")?.clone()))).collect();
    let text = serde_json::to_string(&defaults).map_err(|e| e.to_string())?;
    let from_defaults: T = parse_config(Some(text.as_bytes())).map_err(|e| format!("schema defaults: {e}"))?;
    if from_defaults != T::default() {
        return Err(format!("schema defaults give {from_defaults:?}, not the config's defaults"));
    }
    for (name, property) in properties {
        if property.get("description").and_then(|d| d.as_str()).is_none_or(|d| d.len() <= 20) {
            return Err(format!("`{name}` needs a description"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        enabled: bool,
        limit: u32,
        nested: BTreeMap<String, Inner>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        value: f64,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.limit > 10 {
                return Err(ConfigError::at(".limit", "must be at most 10"));
            }
            Ok(())
        }
    }

    #[test]
    fn absent_and_blank_give_defaults() {
        assert_eq!(parse_config::<Sample>(None).unwrap(), Sample::default());
        assert_eq!(parse_config::<Sample>(Some(b"  \n")).unwrap(), Sample::default());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_config::<Sample>(Some(br#"{"enabled":"yes"}"#)).unwrap_err();
        assert_eq!(e.path, ".enabled");
        let e = parse_config::<Sample>(Some(br#"{"nested":{"a":{"value":"x"}}}"#)).unwrap_err();
        assert_eq!(e.path, ".nested.a.value");
        let e = parse_config::<Sample>(Some(br#"{"typo":1}"#)).unwrap_err();
        assert!(e.message.contains("unknown field `typo`"), "{e}");
        let e = parse_config::<Sample>(Some(br#"{"limit":11}"#)).unwrap_err();
        assert_eq!(e.to_string(), "invalid configuration at `.limit`: must be at most 10");
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_rejected() {
        assert!(parse_config::<Sample>(Some(b"{")).is_err());
        assert!(parse_config::<Sample>(Some(b"{} x")).is_err());
        assert!(parse_config::<Sample>(Some(b"\xff")).is_err());
    }
}
