//! HTTP callouts to Envoy clusters (the Redis bridge, the embedding service): a request built
//! and checked in plain Rust, dispatched by [`crate::proxy`].

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// Envoy cluster name (in Istio: `outbound|7379||webdis.ns.svc.cluster.local`).
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutError {
    /// The request itself is wrong (configuration error): never retried.
    Invalid(String),
    /// The host refused to dispatch it (unknown cluster, ...).
    Dispatch(String),
}

impl Callout {
    pub fn get(cluster: &str, authority: &str, path: &str) -> Self {
        Callout {
            cluster: cluster.to_string(),
            method: "GET".to_string(),
            path: path.to_string(),
            authority: authority.to_string(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_millis(500),
        }
    }

    pub fn post(cluster: &str, authority: &str, path: &str, content_type: &str, body: Vec<u8>) -> Self {
        Callout { method: "POST".to_string(), body: Some(body), ..Callout::get(cluster, authority, path) }
            .header("content-type", content_type)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks what Envoy requires of a callout before it is sent.
    pub fn validate(&self) -> Result<(), CalloutError> {
        let problem = if self.cluster.is_empty() {
            "cluster is empty"
        } else if !self.path.starts_with('/') {
            "path must start with '/'"
        } else if self.authority.is_empty() {
            "authority is empty"
        } else if self.timeout.is_zero() {
            "timeout must be positive"
        } else {
            return Ok(());
        };
        Err(CalloutError::Invalid(problem.to_string()))
    }

    /// Headers as Envoy wants them: the pseudo-headers first, then the rest.
    pub fn wire_headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![
            (":method", self.method.as_str()),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
        ];
        headers.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        headers
    }
}

/// A callout's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl CalloutResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn builds_pseudo_headers_first() {
        let call = Callout::post("embeddings", "embed.local", "/v1/embeddings", "application/json", b"{}".to_vec())
            .header("X-Trace", "1")
            .timeout(Duration::from_millis(200));
        assert_eq!(call.validate(), Ok(()));
        assert_eq!(
            call.wire_headers(),
            vec![
                (":method", "POST"),
                (":path", "/v1/embeddings"),
                (":authority", "embed.local"),
                ("content-type", "application/json"),
                ("x-trace", "1"),
            ]
        );
    }

    #[test]
    fn rejects_what_envoy_would() {
        assert!(Callout::get("", "a", "/").validate().is_err());
        assert!(Callout::get("c", "a", "nopath").validate().is_err());
        assert!(Callout::get("c", "", "/").validate().is_err());
        assert!(Callout::get("c", "a", "/").timeout(Duration::ZERO).validate().is_err());
    }

    #[test]
    fn success_range() {
        assert!(CalloutResponse { status: 204, body: vec![] }.is_success());
        assert!(!CalloutResponse { status: 503, body: vec![] }.is_success());
    }
}
