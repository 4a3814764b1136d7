//! Redis over HTTP: proxy-wasm has no sockets, so Redis is reached through an HTTP bridge.
//!
//! A command is a list of byte-string arguments; a [`Dialect`] turns it into a [`Callout`] and
//! the bridge's answer back into a [`RedisValue`]. The default dialect is webdis (`POST /` with
//! the command as `/`-separated, percent-encoded arguments; JSON replies such as
//! `{"GET":"3"}`, `{"EVAL":[1,2]}`, errors as `{"EVAL":[false,"ERR ..."]}`). Another bridge (the
//! Upstash-style REST protocol, say) is one more [`Dialect`].
//!
//! Atomic logic runs as Lua: [`Script`] sends `EVALSHA` and, when Redis answers `NOSCRIPT`
//! (first use, or Redis restarted), the caller re-sends the same call as `EVAL`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::callout::{Callout, CalloutResponse};
use crate::config::{ConfigError, Validate};

/// Where the bridge is and how long a call may take. Embedded in each plugin's config as `redis`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisBridge {
    /// Envoy cluster of the bridge (in Istio: `outbound|7379||webdis.ns.svc.cluster.local`).
    pub cluster: String,
    /// `:authority` sent to the bridge.
    pub authority: String,
    /// How long a call on the request path may take before the failure policy applies.
    pub timeout_ms: u64,
    pub dialect: Dialect,
}

impl Default for RedisBridge {
    fn default() -> Self {
        RedisBridge {
            cluster: "redis_bridge".to_string(),
            authority: "redis-bridge".to_string(),
            timeout_ms: 100,
            dialect: Dialect::Webdis,
        }
    }
}

impl Validate for RedisBridge {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            return Err(ConfigError::at(".redis.cluster", "must name an Envoy cluster"));
        }
        if self.authority.is_empty() {
            return Err(ConfigError::at(".redis.authority", "must not be empty"));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigError::at(".redis.timeout_ms", "must be between 1 and 60000"));
        }
        Ok(())
    }
}

impl RedisBridge {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The callout that runs one command.
    pub fn command(&self, args: &[&[u8]]) -> Callout {
        self.dialect.callout(self, args)
    }

    /// Reads the bridge's answer to a command.
    pub fn reply(&self, response: &CalloutResponse) -> Result<RedisValue, RedisError> {
        self.dialect.parse(response)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    Webdis,
}

impl Dialect {
    fn callout(self, bridge: &RedisBridge, args: &[&[u8]]) -> Callout {
        match self {
            Dialect::Webdis => {
                let mut body = Vec::new();
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        body.push(b'/');
                    }
                    percent_encode_into(arg, &mut body);
                }
                // POST keeps long arguments (scripts, JSON records) out of the URL.
                Callout::post(&bridge.cluster, &bridge.authority, "/", "text/plain", body).timeout(bridge.timeout())
            }
        }
    }

    fn parse(self, response: &CalloutResponse) -> Result<RedisValue, RedisError> {
        if !response.is_success() {
            return Err(RedisError::Bridge(format!("bridge answered HTTP {}", response.status)));
        }
        match self {
            Dialect::Webdis => {
                let value: Value = serde_json::from_slice(&response.body)
                    .map_err(|e| RedisError::Bridge(format!("unreadable bridge reply: {e}")))?;
                // The reply is an object with one member named after the command.
                let Value::Object(map) = value else {
                    return Err(RedisError::Bridge("bridge reply is not a JSON object".into()));
                };
                let Some((_, reply)) = map.into_iter().next() else {
                    return Err(RedisError::Bridge("empty bridge reply".into()));
                };
                webdis_value(reply)
            }
        }
    }
}

fn webdis_value(reply: Value) -> Result<RedisValue, RedisError> {
    Ok(match reply {
        Value::Null => RedisValue::Nil,
        Value::Bool(b) => RedisValue::Int(i64::from(b)),
        Value::Number(n) => RedisValue::Int(n.as_i64().unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64)),
        Value::String(s) => RedisValue::Text(s),
        Value::Array(items) => {
            // webdis marks errors `[false, "message"]` and status replies `[true, "OK"]`.
            if let [Value::Bool(ok), Value::String(message)] = items.as_slice() {
                return if *ok {
                    Ok(RedisValue::Text(message.clone()))
                } else {
                    Err(RedisError::Server(message.clone()))
                };
            }
            RedisValue::Array(items.into_iter().map(webdis_value).collect::<Result<_, _>>()?)
        }
        Value::Object(_) => return Err(RedisError::Bridge("unexpected object in bridge reply".into())),
    })
}

/// RFC 3986 unreserved characters pass; every other byte becomes `%XX`.
const ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn percent_encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    for piece in percent_encoding::percent_encode(bytes, ESCAPED) {
        out.extend_from_slice(piece.as_bytes());
    }
}

/// A Redis reply, as much as the bridge preserves of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisValue {
    Nil,
    Int(i64),
    Text(String),
    Array(Vec<RedisValue>),
}

impl RedisValue {
    /// Integers, and text that holds one (Redis returns counters as bulk strings).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            RedisValue::Int(i) => Some(*i),
            RedisValue::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            RedisValue::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[RedisValue]> {
        match self {
            RedisValue::Array(items) => Some(items),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// The bridge failed or answered something unreadable (Redis may be down behind it).
    Bridge(String),
    /// Redis ran the command and answered an error.
    Server(String),
}

impl RedisError {
    /// Redis does not have the script cached: send it again with `EVAL`.
    pub fn is_noscript(&self) -> bool {
        matches!(self, RedisError::Server(m) if m.starts_with("NOSCRIPT"))
    }
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Bridge(m) => write!(f, "redis bridge: {m}"),
            RedisError::Server(m) => write!(f, "redis: {m}"),
        }
    }
}

/// A Lua script run atomically in Redis.
#[derive(Debug, Clone)]
pub struct Script {
    source: &'static str,
    sha1: String,
}

impl Script {
    pub fn new(source: &'static str) -> Self {
        Script { source, sha1: sha1_smol::Sha1::from(source).digest().to_string() }
    }

    pub fn sha1(&self) -> &str {
        &self.sha1
    }

    /// `EVALSHA` (`cached`) or `EVAL` arguments for a call with these keys and arguments (text or
    /// bytes: arguments may be binary, such as a packed vector).
    pub fn call<K: AsRef<[u8]>, A: AsRef<[u8]>>(&self, cached: bool, keys: &[K], args: &[A]) -> Vec<Vec<u8>> {
        let mut command: Vec<Vec<u8>> = Vec::with_capacity(3 + keys.len() + args.len());
        if cached {
            command.push(b"EVALSHA".to_vec());
            command.push(self.sha1.as_bytes().to_vec());
        } else {
            command.push(b"EVAL".to_vec());
            command.push(self.source.as_bytes().to_vec());
        }
        command.push(keys.len().to_string().into_bytes());
        command.extend(keys.iter().map(|k| k.as_ref().to_vec()));
        command.extend(args.iter().map(|a| a.as_ref().to_vec()));
        command
    }
}

/// Borrowed view of an owned command, as [`RedisBridge::command`] takes it.
pub fn as_args(command: &[Vec<u8>]) -> Vec<&[u8]> {
    command.iter().map(Vec::as_slice).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn reply(body: &str) -> Result<RedisValue, RedisError> {
        RedisBridge::default().reply(&CalloutResponse { status: 200, body: body.as_bytes().to_vec() })
    }

    #[test]
    fn webdis_command_is_percent_encoded_post() {
        let call = RedisBridge::default().command(&[b"SET", b"k/1 x", "é".as_bytes()]);
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/");
        assert_eq!(call.cluster, "redis_bridge");
        assert_eq!(call.body.as_deref(), Some(&b"SET/k%2F1%20x/%C3%A9"[..]));
        assert_eq!(call.timeout, Duration::from_millis(100));
    }

    #[test]
    fn webdis_replies() {
        assert_eq!(reply(r#"{"GET":null}"#), Ok(RedisValue::Nil));
        assert_eq!(reply(r#"{"GET":"3"}"#).map(|v| v.as_i64()), Ok(Some(3)));
        assert_eq!(reply(r#"{"INCRBY":-2}"#), Ok(RedisValue::Int(-2)));
        assert_eq!(reply(r#"{"SET":[true,"OK"]}"#), Ok(RedisValue::Text("OK".into())));
        assert_eq!(
            reply(r#"{"EVAL":[1,2,"x",null]}"#),
            Ok(RedisValue::Array(vec![
                RedisValue::Int(1),
                RedisValue::Int(2),
                RedisValue::Text("x".into()),
                RedisValue::Nil
            ]))
        );
        let noscript = reply(r#"{"EVALSHA":[false,"NOSCRIPT No matching script. Please use EVAL."]}"#);
        assert!(noscript.as_ref().is_err_and(RedisError::is_noscript));
        assert_eq!(reply(r#"{"EVAL":[false,"ERR boom"]}"#), Err(RedisError::Server("ERR boom".into())));
    }

    #[test]
    fn bridge_failures_are_errors() {
        assert!(matches!(reply("not json"), Err(RedisError::Bridge(_))));
        assert!(matches!(reply("[1]"), Err(RedisError::Bridge(_))));
        assert!(matches!(reply("{}"), Err(RedisError::Bridge(_))));
        let down = RedisBridge::default().reply(&CalloutResponse { status: 503, body: vec![] });
        assert!(matches!(down, Err(RedisError::Bridge(_))));
    }

    #[test]
    fn script_calls() {
        let script = Script::new("return 1");
        assert_eq!(script.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        let keys = vec!["a".to_string()];
        let args = vec!["5".to_string()];
        let cached = script.call(true, &keys, &args);
        assert_eq!(as_args(&cached), vec![&b"EVALSHA"[..], script.sha1().as_bytes(), b"1", b"a", b"5"]);
        let full = script.call(false, &keys, &args);
        assert_eq!(as_args(&full), vec![&b"EVAL"[..], b"return 1", b"1", b"a", b"5"]);
    }

    #[test]
    fn bridge_config_is_checked() {
        assert!(RedisBridge::default().validate().is_ok());
        let bad = RedisBridge { timeout_ms: 0, ..RedisBridge::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("redis.timeout_ms"));
    }
}
