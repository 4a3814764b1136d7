//! `GET /v1/models` answered from the configuration: the logical models clients may ask for.

use serde::Serialize;

use crate::config::Config;

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

/// Which catalog request a path is, if any.
#[derive(Debug, PartialEq, Eq)]
pub enum CatalogRequest<'p> {
    List,
    One(&'p str),
}

pub fn catalog_request(path: &str) -> Option<CatalogRequest<'_>> {
    let path = path.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    let rest = path.get(path.find("/v1/models")?..)?;
    match rest.strip_prefix("/v1/models") {
        Some("") => Some(CatalogRequest::List),
        Some(id) => id.strip_prefix('/').filter(|id| !id.is_empty()).map(CatalogRequest::One),
        None => None,
    }
}

fn entry<'c>(config: &'c Config, id: &'c str) -> Option<ModelEntry<'c>> {
    let model = config.models.get(id)?;
    Some(ModelEntry { id, object: "model", created: 0, owned_by: model.owned_by.as_deref().unwrap_or("sluice") })
}

/// The list, as OpenAI's `GET /v1/models` answers it.
pub fn list(config: &Config) -> Vec<u8> {
    let data = config.models.keys().filter_map(|id| entry(config, id)).collect();
    serde_json::to_vec(&ModelList { object: "list", data }).unwrap_or_default()
}

/// One model (`GET /v1/models/{id}`), or `None` when it is not configured.
pub fn one(config: &Config, id: &str) -> Option<Vec<u8>> {
    let (name, _) = config.models.get_key_value(id)?;
    serde_json::to_vec(&entry(config, name)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::parse_config;

    #[test]
    fn paths() {
        assert_eq!(catalog_request("/v1/models"), Some(CatalogRequest::List));
        assert_eq!(catalog_request("/v1/models/?x=1"), Some(CatalogRequest::List));
        assert_eq!(catalog_request("/openai/v1/models/chat-fast"), Some(CatalogRequest::One("chat-fast")));
        assert_eq!(catalog_request("/v1/chat/completions"), None);
        assert_eq!(catalog_request("/v1/modelsx"), None);
    }

    #[test]
    fn answers_like_openai() {
        let config: Config = parse_config(Some(
            br#"{"models": {"chat-fast": {"targets": [{"provider": "p", "model": "m", "cluster": "c"}], "owned_by": "platform"},
                            "chat-quality": {"targets": [{"provider": "p", "model": "m2", "cluster": "c"}]}}}"#,
        ))
        .unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&list(&config)).unwrap();
        assert_eq!(listed["object"], "list");
        assert_eq!(listed["data"][0]["id"], "chat-fast");
        assert_eq!(listed["data"][0]["owned_by"], "platform");
        assert_eq!(listed["data"][1]["owned_by"], "sluice");
        let single: serde_json::Value = serde_json::from_slice(&one(&config, "chat-quality").unwrap()).unwrap();
        assert_eq!(single["object"], "model");
        assert_eq!(one(&config, "nope"), None);
    }
}
