//! Identity from a verified JWT beside virtual keys. Envoy's `jwt_authn` filter verifies the
//! token (signature against the JWKS, issuer, audience, expiry) and forwards its payload in a
//! header (`forward_payload_header`, base64url JSON) that the edge strips from clients, so only
//! a verified token's claims arrive here; this module maps them to an identity by config.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::config::Jwt;
use crate::keys::Identity;

/// The identity a verified token's payload (the header's value) names.
pub fn identity(jwt: &Jwt, payload: &str) -> Result<Identity, String> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes = engine
        .decode(payload.trim().trim_end_matches('='))
        .map_err(|e| format!("the token payload is not base64url ({e})"))?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|e| format!("the token payload is not JSON ({e})"))?;
    let claim = |name: &str| match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let subject = claim(&jwt.key_claim).ok_or_else(|| format!("the token has no `{}` claim", jwt.key_claim))?;
    let metadata: BTreeMap<String, String> =
        jwt.metadata_claims.iter().filter_map(|(entry, name)| claim(name).map(|v| (entry.clone(), v))).collect();
    Ok(Identity {
        alias: format!("{}{subject}", jwt.alias_prefix),
        team: jwt.team_claim.as_deref().and_then(claim),
        user: jwt.user_claim.as_deref().and_then(claim),
        models: jwt.models.clone(),
        metadata,
    })
}

/// Whether a presented credential looks like a JWT (three base64url parts, a JSON header): one
/// that reaches the key lookup was not verified (expired, wrongly signed, another issuer).
pub fn looks_like_jwt(credential: &str) -> bool {
    let parts: Vec<&str> = credential.split('.').collect();
    parts.len() == 3 && credential.starts_with("eyJ") && parts.iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn jwt() -> Jwt {
        serde_json::from_str(
            r#"{"payload_header": "x-sluice-jwt-payload", "team_claim": "team", "user_claim": "email",
                "metadata_claims": {"feature": "feature"}, "models": ["gpt-4o*"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn claims_map_to_an_identity() {
        let payload = encode(&serde_json::json!({
            "sub": "svc-42", "team": "search", "email": "a@example.com", "feature": "summaries", "exp": 1
        }));
        let id = identity(&jwt(), &payload).unwrap();
        assert_eq!(id.alias, "jwt:svc-42");
        assert_eq!((id.team.as_deref(), id.user.as_deref()), (Some("search"), Some("a@example.com")));
        assert_eq!(id.metadata.get("feature").map(String::as_str), Some("summaries"));
        assert!(id.may_use("gpt-4o-mini") && !id.may_use("claude-sonnet-4-6"));
        // Padding, and numbers as subjects, are fine; missing claims are absent.
        let id = identity(&jwt(), &format!("{}==", encode(&serde_json::json!({"sub": 7})))).unwrap();
        assert_eq!((id.alias.as_str(), id.team), ("jwt:7", None));
    }

    #[test]
    fn unreadable_payloads_and_missing_subjects_are_errors() {
        for bad in
            ["%%%", &encode(&serde_json::json!(["not", "an", "object"])), &encode(&serde_json::json!({"team": "x"}))]
        {
            assert!(identity(&jwt(), bad).is_err(), "{bad}");
        }
        assert!(identity(&jwt(), "bm90IGpzb24").is_err(), "base64 of `not json`");
    }

    #[test]
    fn jwts_are_told_from_virtual_keys() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        for key in ["sk-sluice-demo", "eyJ.only-two", "a.b.c", "eyJx..c"] {
            assert!(!looks_like_jwt(key), "{key}");
        }
    }
}
