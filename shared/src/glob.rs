//! Glob patterns for model names and other identifiers: `*` matches any run of characters,
//! `?` one character; everything else matches itself.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(text)
}

/// Whether `text` matches any of `patterns`.
pub fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| matches(p, text))
}

/// Whether `value` is one of `list`; an empty list admits anything (an absent value included).
pub fn listed(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn globs() {
        assert!(matches("gpt-4o*", "gpt-4o-mini"));
        assert!(matches("gpt-4o*", "gpt-4o"));
        assert!(!matches("gpt-4o*", "gpt-4"));
        assert!(matches("*", ""));
        assert!(matches("claude-*-sonnet-*", "claude-3-5-sonnet-20241022"));
        assert!(matches("o?-mini", "o3-mini"));
        assert!(!matches("o?-mini", "o-mini"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(!matches("exact", "exactly"));
        assert!(matches("**x", "yyx"));
        assert!(any(&["x".into(), "gpt-*".into()], "gpt-5"));
        assert!(!any(&[], "gpt-5"));
        assert!(listed(&[], None) && listed(&["a".into()], Some("a")));
        assert!(!listed(&["a".into()], Some("ab")) && !listed(&["a".into()], None));
    }
}
