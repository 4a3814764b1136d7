//! Attribution dimensions (`feature`, `project`, ...): each request's value of every declared
//! dimension, from a header only the trusted may set, the key's metadata, or a default. A value
//! outside the dimension's `values` (or not fit for a counter's key and a metric label) counts
//! as `other` or is refused, so a client cannot invent unbounded values.

use std::collections::BTreeMap;

use crate::config::{Dimension, Unknown, Untrusted};
use crate::keys::Identity;

/// Counted for a value outside a dimension's `values`.
pub const OTHER: &str = "other";
/// The longest value kept.
const MAX_VALUE_LEN: usize = 64;

/// A request's dimension values, by dimension name (a dimension without a value is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    values: BTreeMap<String, String>,
}

impl Attribution {
    pub fn get(&self, dimension: &str) -> Option<&str> {
        self.values.get(dimension).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `feature=search;project=apollo` (the `sluice.identity.dimensions` fact).
    pub fn encoded(&self) -> String {
        self.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }
}

/// Why a request's attribution is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The header was sent by a key that may not set it (`untrusted: refuse`).
    Untrusted { dimension: String, header: String },
    /// The value is not one of the dimension's `values` (`unknown: refuse`).
    Unknown { dimension: String },
}

/// The headers that carry dimensions.
pub fn headers(dimensions: &BTreeMap<String, Dimension>) -> Vec<(&str, &str)> {
    dimensions.iter().filter_map(|(name, d)| d.header.as_deref().map(|h| (name.as_str(), h))).collect()
}

/// Each dimension's value for a request by `identity` that sent `sent` (dimension name to the
/// value of its header).
pub fn resolve(
    dimensions: &BTreeMap<String, Dimension>,
    identity: &Identity,
    sent: &BTreeMap<String, String>,
) -> Result<Attribution, Refusal> {
    let mut values = BTreeMap::new();
    for (name, dimension) in dimensions {
        let from_header = match sent.get(name) {
            Some(value) if trusts(dimension, identity) => Some(value.clone()),
            Some(_) if dimension.untrusted == Untrusted::Refuse => {
                let header = dimension.header.clone().unwrap_or_default();
                return Err(Refusal::Untrusted { dimension: name.clone(), header });
            }
            _ => None,
        };
        let found = from_header
            .or_else(|| dimension.metadata.as_ref().and_then(|m| identity.metadata.get(m)).cloned())
            .or_else(|| dimension.default.clone());
        let Some(value) = found else { continue };
        let known = fit(&value) && (dimension.values.is_empty() || dimension.values.contains(&value));
        let value = match (known, dimension.unknown) {
            (true, _) => value,
            (false, Unknown::Other) => OTHER.to_string(),
            (false, Unknown::Refuse) => return Err(Refusal::Unknown { dimension: name.clone() }),
        };
        values.insert(name.clone(), value);
    }
    Ok(Attribution { values })
}

fn trusts(dimension: &Dimension, identity: &Identity) -> bool {
    sluice_shared::glob::any(&dimension.trusted.keys, &identity.alias)
        || identity.team.as_ref().is_some_and(|t| dimension.trusted.teams.contains(t))
}

/// A value usable in a Redis key and a metric label.
fn fit(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Trusted;

    fn identity(alias: &str, team: Option<&str>, metadata: &[(&str, &str)]) -> Identity {
        Identity {
            alias: alias.into(),
            team: team.map(str::to_string),
            user: None,
            models: Vec::new(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn feature(values: &[&str], unknown: Unknown, untrusted: Untrusted) -> BTreeMap<String, Dimension> {
        let dimension = Dimension {
            header: Some("x-sluice-feature".into()),
            trusted: Trusted { keys: vec!["svc-*".into()], teams: vec!["platform".into()] },
            untrusted,
            metadata: Some("feature".into()),
            default: None,
            values: values.iter().map(|v| v.to_string()).collect(),
            unknown,
        };
        BTreeMap::from([("feature".to_string(), dimension)])
    }

    fn sent(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("feature".to_string(), value.to_string())])
    }

    #[test]
    fn a_trusted_header_then_metadata_then_nothing() {
        let dims = feature(&["search", "chat"], Unknown::Other, Untrusted::Ignore);
        let service = identity("svc-search", None, &[("feature", "chat")]);
        assert_eq!(resolve(&dims, &service, &sent("search")).unwrap().get("feature"), Some("search"));
        assert_eq!(resolve(&dims, &service, &BTreeMap::new()).unwrap().get("feature"), Some("chat"));
        let by_team = identity("alice", Some("platform"), &[]);
        assert_eq!(resolve(&dims, &by_team, &sent("search")).unwrap().get("feature"), Some("search"));
        let nobody = identity("bob", Some("sales"), &[]);
        assert_eq!(resolve(&dims, &nobody, &BTreeMap::new()).unwrap().get("feature"), None);
    }

    #[test]
    fn an_untrusted_header_is_ignored_or_refused() {
        let client = identity("bob", Some("sales"), &[("feature", "chat")]);
        let ignoring = feature(&[], Unknown::Other, Untrusted::Ignore);
        let attribution = resolve(&ignoring, &client, &sent("search")).unwrap();
        assert_eq!(attribution.get("feature"), Some("chat"), "the key's own value, not the client's");
        let refusing = feature(&[], Unknown::Other, Untrusted::Refuse);
        assert_eq!(
            resolve(&refusing, &client, &sent("search")),
            Err(Refusal::Untrusted { dimension: "feature".into(), header: "x-sluice-feature".into() })
        );
    }

    #[test]
    fn unknown_and_unfit_values_are_other_or_refused() {
        let service = identity("svc-a", None, &[]);
        let other = feature(&["search"], Unknown::Other, Untrusted::Ignore);
        for value in ["invented", "search;x=1", "a b", &"x".repeat(65), ""] {
            assert_eq!(resolve(&other, &service, &sent(value)).unwrap().get("feature"), Some(OTHER), "{value:?}");
        }
        let any = feature(&[], Unknown::Other, Untrusted::Ignore);
        assert_eq!(resolve(&any, &service, &sent("anything-1.2")).unwrap().get("feature"), Some("anything-1.2"));
        assert_eq!(resolve(&any, &service, &sent("no spaces")).unwrap().get("feature"), Some(OTHER));
        let refuse = feature(&["search"], Unknown::Refuse, Untrusted::Ignore);
        assert_eq!(
            resolve(&refuse, &service, &sent("invented")),
            Err(Refusal::Unknown { dimension: "feature".into() })
        );
    }

    #[test]
    fn defaults_and_the_encoded_fact() {
        let mut dims = feature(&[], Unknown::Other, Untrusted::Ignore);
        dims.insert("project".into(), Dimension { default: Some("general".into()), ..Dimension::default() });
        let attribution = resolve(&dims, &identity("svc-a", None, &[]), &sent("search")).unwrap();
        assert_eq!(attribution.encoded(), "feature=search;project=general");
        assert_eq!(headers(&dims), [("feature", "x-sluice-feature")]);
    }
}
