//! Virtual keys: read from the request, hashed, and resolved to an identity from the
//! configuration or from Redis (cached per worker for a short time).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::Deserialize;
use sluice_shared::digest;

use crate::config::{KeyConfig, RedisKeys};

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub alias: String,
    pub team: Option<String>,
    pub user: Option<String>,
    /// Allowed models (globs); empty: any.
    pub models: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

impl Identity {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.is_empty() || sluice_shared::glob::any(&self.models, model)
    }
}

impl From<&KeyConfig> for Identity {
    fn from(key: &KeyConfig) -> Self {
        Identity {
            alias: key.alias.clone(),
            team: key.team.clone(),
            user: key.user.clone(),
            models: key.models.clone(),
            metadata: key.metadata.clone(),
        }
    }
}

/// The key a client presented: `Authorization: Bearer <key>`, else the first of `others`
/// present and not blank (the gate passes Anthropic's `x-api-key`, Gemini's `x-goog-api-key`
/// and Gemini's `key=` query parameter, in that order).
pub fn presented_key(authorization: Option<&[u8]>, others: &[Option<&[u8]>]) -> Option<Vec<u8>> {
    let bearer = authorization.and_then(|value| {
        let value = value.trim_ascii();
        let scheme = value.get(..7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then(|| value.get(7..).unwrap_or_default().trim_ascii().to_vec())
    });
    let other = || others.iter().flatten().map(|v| v.trim_ascii()).find(|v| !v.is_empty()).map(<[u8]>::to_vec);
    bearer.filter(|k| !k.is_empty()).or_else(other)
}

/// A query parameter's value as bytes: `%XX` decoded, `+` as a space (form encoding).
pub fn query_value(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (byte, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

pub type Digest = [u8; 32];

/// What the worker knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Rc<Identity>),
    Unknown,
    /// Not in the configuration or the cache: ask Redis.
    AskRedis,
}

/// The keys a worker knows: configured ones, and those read from Redis recently.
#[derive(Debug, Default)]
pub struct KeyRing {
    configured: Vec<(Digest, Rc<Identity>)>,
    settings: RedisKeys,
    cache: HashMap<Digest, (Option<Rc<Identity>>, u64)>,
}

impl KeyRing {
    pub fn new(keys: &[KeyConfig], settings: &RedisKeys) -> Self {
        let configured = keys
            .iter()
            .filter_map(|k| {
                let bytes = digest::from_hex(&k.sha256)?;
                let digest: Digest = bytes.try_into().ok()?;
                Some((digest, Rc::new(Identity::from(k))))
            })
            .collect();
        KeyRing { configured, settings: settings.clone(), cache: HashMap::new() }
    }

    pub fn lookup(&self, digest: &Digest, now_ms: u64) -> Lookup {
        // Every configured digest is compared, without an early exit, so the time taken does not
        // depend on which key (if any) matches.
        let mut found = None;
        for (candidate, identity) in &self.configured {
            if digest::constant_time_eq(candidate, digest) {
                found = Some(identity);
            }
        }
        if let Some(identity) = found {
            return Lookup::Known(Rc::clone(identity));
        }
        if !self.settings.enabled {
            return Lookup::Unknown;
        }
        match self.cache.get(digest) {
            Some((entry, expires)) if *expires > now_ms => match entry {
                Some(identity) => Lookup::Known(Rc::clone(identity)),
                None => Lookup::Unknown,
            },
            _ => Lookup::AskRedis,
        }
    }

    /// A key known from Redis whose cache entry expired: still usable while Redis cannot be
    /// asked (with `on_bridge_failure: open`).
    pub fn stale(&self, digest: &Digest) -> Option<Rc<Identity>> {
        self.cache.get(digest).and_then(|(entry, _)| entry.clone())
    }

    /// Remembers what Redis said about a key (`None`: no such key).
    pub fn remember(&mut self, digest: Digest, identity: Option<Identity>, now_ms: u64) -> Option<Rc<Identity>> {
        let ttl = if identity.is_some() { self.settings.cache_ttl_ms } else { self.settings.negative_cache_ttl_ms };
        if self.cache.len() >= self.settings.max_cached {
            self.cache.retain(|_, (_, expires)| *expires > now_ms);
            if self.cache.len() >= self.settings.max_cached {
                self.cache.clear();
            }
        }
        let identity = identity.map(Rc::new);
        self.cache.insert(digest, (identity.clone(), now_ms.saturating_add(ttl)));
        identity
    }
}

/// The Redis key that holds a virtual key's record.
pub fn redis_key(prefix: &str, digest: &Digest) -> String {
    format!("{prefix}:key:{}", digest::to_hex(digest))
}

/// Reads a key record stored in Redis (`None` for an absent key). A record without an alias is
/// named after the start of its hash.
pub fn parse_record(text: Option<&str>, digest: &Digest) -> Result<Option<Identity>, String> {
    let Some(text) = text else { return Ok(None) };
    let mut identity: Identity = serde_json::from_str(text).map_err(|e| format!("unreadable key record: {e}"))?;
    if identity.alias.is_empty() {
        identity.alias = format!("key-{}", digest::to_hex(digest.get(..4).unwrap_or_default()));
    }
    Ok(Some(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str, alias: &str) -> KeyConfig {
        KeyConfig {
            sha256: digest::sha256_hex(secret.as_bytes()),
            alias: alias.into(),
            team: Some("search".into()),
            user: None,
            models: vec!["gpt-4o*".into()],
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn presented_keys() {
        let one = |v: Option<&'static [u8]>| [v, None, None];
        assert_eq!(presented_key(Some(b"Bearer sk-1"), &one(None)), Some(b"sk-1".to_vec()));
        assert_eq!(presented_key(Some(b"bearer   sk-1 "), &one(Some(b"other"))), Some(b"sk-1".to_vec()));
        assert_eq!(presented_key(None, &one(Some(b"sk-2"))), Some(b"sk-2".to_vec()));
        assert_eq!(presented_key(Some(b"Basic abc"), &one(Some(b"sk-2"))), Some(b"sk-2".to_vec()));
        assert_eq!(presented_key(Some(b"Bearer "), &one(None)), None);
        assert_eq!(presented_key(Some(b"Bear"), &one(None)), None);
        assert_eq!(presented_key(None, &one(Some(b"  "))), None);
        // Gemini's header, then its query parameter; a blank one does not hide the next.
        assert_eq!(presented_key(None, &[None, Some(b"g-1"), Some(b"q-1")]), Some(b"g-1".to_vec()));
        assert_eq!(presented_key(None, &[Some(b" "), None, Some(b"q-1")]), Some(b"q-1".to_vec()));
        assert_eq!(presented_key(Some(b"Bearer "), &[None, None, Some(b"q-1")]), Some(b"q-1".to_vec()));
        assert_eq!(presented_key(Some(b"Bearer \xff\xfe"), &one(None)), Some(b"\xff\xfe".to_vec()));
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(query_value("sk-a%2Bb+c%zz%4"), b"sk-a+b c%zz%4".to_vec());
        assert_eq!(query_value("%FF"), vec![0xff]);
        assert_eq!(query_value(""), Vec::<u8>::new());
    }

    #[test]
    fn configured_keys() {
        let ring = KeyRing::new(&[key("sk-a", "a"), key("sk-b", "b")], &RedisKeys::default());
        match ring.lookup(&digest::sha256(b"sk-b"), 0) {
            Lookup::Known(identity) => {
                assert_eq!(identity.alias, "b");
                assert!(identity.may_use("gpt-4o-mini"));
                assert!(!identity.may_use("claude-3-5-sonnet"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ring.lookup(&digest::sha256(b"sk-c"), 0), Lookup::Unknown);
    }

    #[test]
    fn redis_keys_are_cached_for_their_ttl() {
        let settings = RedisKeys { enabled: true, cache_ttl_ms: 100, negative_cache_ttl_ms: 10, max_cached: 2 };
        let mut ring = KeyRing::new(&[], &settings);
        let d = digest::sha256(b"sk-r");
        assert_eq!(ring.lookup(&d, 0), Lookup::AskRedis);
        let record = parse_record(Some(r#"{"alias":"r","team":"t","extra":1}"#), &d).unwrap();
        ring.remember(d, record, 0);
        assert!(matches!(ring.lookup(&d, 99), Lookup::Known(i) if i.team.as_deref() == Some("t")));
        assert_eq!(ring.lookup(&d, 100), Lookup::AskRedis);
        assert_eq!(ring.stale(&d).map(|i| i.alias.clone()).as_deref(), Some("r"));
        let missing = digest::sha256(b"sk-none");
        ring.remember(missing, None, 0);
        assert_eq!(ring.lookup(&missing, 5), Lookup::Unknown);
        assert_eq!(ring.lookup(&missing, 10), Lookup::AskRedis);
        // The cache stays bounded.
        for i in 0..10u8 {
            ring.remember([i; 32], None, 1_000);
        }
        assert!(ring.cache.len() <= 2);
    }

    #[test]
    fn records() {
        let d = [0xab; 32];
        assert_eq!(parse_record(None, &d), Ok(None));
        assert_eq!(parse_record(Some("{}"), &d).unwrap().map(|i| i.alias), Some("key-abababab".into()));
        assert!(parse_record(Some("not json"), &d).is_err());
        assert!(parse_record(Some(r#"{"models": "gpt"}"#), &d).is_err());
        assert_eq!(redis_key("sluice", &[0; 32]), format!("sluice:key:{}", "0".repeat(64)));
    }
}
