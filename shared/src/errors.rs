//! OpenAI-style error answers: `{"error":{"message","type","param","code"}}` with the right status.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI `type`: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `server_error`.
    pub kind: &'static str,
    pub code: Option<String>,
    pub param: Option<String>,
    /// Headers sent with the error besides `content-type` (`retry-after`, ...).
    pub extra_headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, code: None, param: None, extra_headers: Vec::new() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "authentication_error", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found_error", message)
    }
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "invalid_request_error", message)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(429, "rate_limit_error", message)
    }
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, "server_error", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "server_error", message)
    }
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    pub fn body(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(self.extra_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn openai_shape() {
        let e = ApiError::rate_limited("Too many \"requests\"").with_code("rate_limit_exceeded");
        assert_eq!(e.status, 429);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "Too many \"requests\"");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert!(v["error"]["param"].is_null());
        assert_eq!(e.headers(), vec![("content-type", "application/json")]);
    }

    #[test]
    fn statuses() {
        assert_eq!(ApiError::bad_request("x").status, 400);
        assert_eq!(ApiError::unauthorized("x").status, 401);
        assert_eq!(ApiError::forbidden("x").status, 403);
        assert_eq!(ApiError::not_found("x").with_param("model").param.as_deref(), Some("model"));
        assert_eq!(ApiError::payload_too_large("x").status, 413);
        assert_eq!(ApiError::unavailable("x").kind, "server_error");
        let limited = ApiError::rate_limited("x").with_header("retry-after", "3");
        assert_eq!(limited.headers(), vec![("content-type", "application/json"), ("retry-after", "3")]);
    }
}
