//! Asks an OpenAI-style provider to end a stream with its usage (`stream_options.include_usage`).

use serde_json::{json, Value};

/// The request body with `stream_options.include_usage: true`, or `None` when the body cannot
/// or need not change. A body that never mentions `stream_options` gets the field inserted as
/// text, leaving every other byte as the client sent it; otherwise the JSON is rewritten.
pub fn with_stream_usage(body: &[u8], has_stream_options: bool, include_usage: bool) -> Option<Vec<u8>> {
    if include_usage {
        return None;
    }
    if !has_stream_options {
        let open = body.iter().position(|b| !b.is_ascii_whitespace()).filter(|&i| body.get(i) == Some(&b'{'))?;
        let (head, tail) = body.split_at(open + 1);
        let is_empty_object = tail.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
        let field: &[u8] = if is_empty_object {
            br#""stream_options":{"include_usage":true}"#
        } else {
            br#""stream_options":{"include_usage":true},"#
        };
        return Some([head, field, tail].concat());
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    match object.get_mut("stream_options") {
        Some(Value::Object(options)) => {
            options.insert("include_usage".to_string(), Value::Bool(true));
        }
        _ => {
            object.insert("stream_options".to_string(), json!({"include_usage": true}));
        }
    }
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn inserts_without_touching_the_rest() {
        let body = br#"  {"model":"gpt-4o","stream":true,"messages":[]}"#;
        let out = with_stream_usage(body, false, false).unwrap();
        assert_eq!(
            out,
            br#"  {"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[]}"#.to_vec()
        );
        assert_eq!(parse(&out)["stream_options"]["include_usage"], true);
        assert_eq!(
            with_stream_usage(b"{ }", false, false).unwrap(),
            br#"{"stream_options":{"include_usage":true} }"#.to_vec()
        );
    }

    #[test]
    fn rewrites_existing_options() {
        for body in [
            &br#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#[..],
            br#"{"model":"m","stream_options":null}"#,
        ] {
            let out = parse(&with_stream_usage(body, true, false).unwrap());
            assert_eq!(out["stream_options"]["include_usage"], true);
            assert_eq!(out["model"], "m");
        }
    }

    #[test]
    fn leaves_alone_what_needs_no_change() {
        assert_eq!(with_stream_usage(br#"{"stream_options":{"include_usage":true}}"#, true, true), None);
        assert_eq!(with_stream_usage(b"[1]", false, false), None);
        assert_eq!(with_stream_usage(b"", false, false), None);
        assert_eq!(with_stream_usage(b"{bad", true, false), None);
    }
}
