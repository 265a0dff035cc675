//! Who a request is: the verified claims of its token, or an API key's id and scopes. What
//! a route may require of it (claims, scopes → 403), and what goes upstream as headers.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::{ApiKeyConfig, RouteAccess};

pub struct Identity {
    claims: Map<String, Value>,
    /// The upstream headers its claims map to, worked out once when it was verified.
    headers: Vec<(HeaderName, HeaderValue)>,
    api_key: bool,
}

impl Identity {
    /// A verified token's identity. A mapped claim that cannot be a header value (control
    /// characters) is an error: dropped silently, the request would pass upstream as nobody.
    pub fn from_claims(
        claims: Map<String, Value>,
        claims_to_headers: &[(String, HeaderName)],
    ) -> Result<Identity, &'static str> {
        let headers = forwarded_headers(&claims, claims_to_headers)?;
        Ok(Identity {
            claims,
            headers,
            api_key: false,
        })
    }

    /// An API key's identity: its id as `sub`, its scopes as `scope`.
    pub fn from_api_key(
        key: &ApiKeyConfig,
        claims_to_headers: &[(String, HeaderName)],
    ) -> Result<Identity, &'static str> {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::from(key.id.as_str()));
        claims.insert("scope".into(), Value::from(key.scopes.join(" ")));
        let mut identity = Identity::from_claims(claims, claims_to_headers)?;
        identity.api_key = true;
        Ok(identity)
    }

    /// Who it is: `sub` (Aegis's `userId` when absent; an API key's id).
    pub fn subject(&self) -> Option<&str> {
        self.claims
            .get("sub")
            .or_else(|| self.claims.get("userId"))
            .and_then(Value::as_str)
    }

    /// Whether it came from an API key rather than a token.
    pub fn is_api_key(&self) -> bool {
        self.api_key
    }

    /// The route's `require_claims` and `require_scopes`; the message says what is missing.
    pub fn satisfies(&self, access: &RouteAccess) -> Result<(), String> {
        for (claim, wanted) in &access.require_claims {
            let holds = match self.claims.get(claim) {
                Some(Value::Array(items)) => {
                    items.iter().any(|v| text(v).as_deref() == Some(wanted))
                }
                Some(value) => text(value).as_deref() == Some(wanted),
                None => false,
            };
            if !holds {
                return Err(format!("the {claim:?} claim does not allow this route"));
            }
        }
        for scope in &access.require_scopes {
            if !self.has_scope(scope) {
                return Err(format!("the {scope:?} scope is required"));
            }
        }
        Ok(())
    }

    /// OAuth's `scope` (space-separated, RFC 8693 §4.2) or the common `scp` (array or string).
    fn has_scope(&self, scope: &str) -> bool {
        ["scope", "scp"]
            .iter()
            .any(|claim| match self.claims.get(*claim) {
                Some(Value::String(s)) => s.split(' ').any(|s| s == scope),
                Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(scope)),
                _ => false,
            })
    }

    /// Sets the identity's headers on the upstream request.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The `exp` claim, when the identity came from a token.
    pub fn expires_at(&self) -> Option<u64> {
        self.claims.get("exp").and_then(Value::as_u64)
    }
}

/// The upstream headers for the configured claims. `sub` falls back to Aegis's `userId`,
/// which its tokens carried instead.
fn forwarded_headers(
    claims: &Map<String, Value>,
    claims_to_headers: &[(String, HeaderName)],
) -> Result<Vec<(HeaderName, HeaderValue)>, &'static str> {
    let mut out = Vec::with_capacity(claims_to_headers.len());
    for (claim, header) in claims_to_headers {
        let value = claims
            .get(claim)
            .or_else(|| (claim == "sub").then(|| claims.get("userId")).flatten());
        let Some(text) = value.and_then(text) else {
            continue;
        };
        let value = HeaderValue::from_str(&text)
            .map_err(|_| "the token's identity cannot be forwarded as a header")?;
        out.push((header.clone(), value));
    }
    Ok(out)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Vec<(String, HeaderName)> {
        vec![
            ("sub".to_owned(), HeaderName::from_static("x-user-id")),
            ("tenant".to_owned(), HeaderName::from_static("x-tenant")),
        ]
    }

    fn identity(claims: serde_json::Value) -> Identity {
        let serde_json::Value::Object(map) = claims else {
            unreachable!("claims are an object")
        };
        Identity::from_claims(map, &mapping()).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn sub_falls_back_to_aegis_user_id_and_other_claims_map_as_configured() {
        let mut headers = HeaderMap::new();
        identity(serde_json::json!({"userId": 42, "tenant": "acme"})).apply(&mut headers);
        assert_eq!(headers["x-user-id"], "42");
        assert_eq!(headers["x-tenant"], "acme");
        let mut headers = HeaderMap::new();
        identity(serde_json::json!({"sub": "s1", "userId": "u1"})).apply(&mut headers);
        assert_eq!(headers["x-user-id"], "s1", "sub wins over userId");
    }

    #[test]
    fn claims_and_scopes_are_matched_as_documented() {
        let who = identity(serde_json::json!({
            "roles": ["reader", "admin"], "level": 3, "scope": "a:read b:write", "scp": ["c"]
        }));
        let access = |claims: &[(&str, &str)], scopes: &[&str]| RouteAccess {
            require_claims: claims
                .iter()
                .map(|(c, v)| ((*c).into(), (*v).into()))
                .collect(),
            require_scopes: scopes.iter().map(|s| (*s).into()).collect(),
            ..RouteAccess::default()
        };
        assert!(who
            .satisfies(&access(&[("roles", "admin"), ("level", "3")], &[]))
            .is_ok());
        assert!(who.satisfies(&access(&[("roles", "owner")], &[])).is_err());
        assert!(who.satisfies(&access(&[], &["b:write", "c"])).is_ok());
        assert!(
            who.satisfies(&access(&[], &["a"])).is_err(),
            "scopes match whole words"
        );
    }
}
