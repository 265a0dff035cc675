//! Who a request is: the verified claims of its token, or an API key's id and scopes. What
//! a route may require of it (claims, scopes → 403), and what goes upstream as headers.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::{ApiKeyConfig, RouteAccess};

pub struct Identity(Map<String, Value>);

impl Identity {
    pub fn from_claims(claims: Map<String, Value>) -> Identity {
        Identity(claims)
    }

    /// An API key's identity: its id as `sub`, its scopes as `scope`.
    pub fn from_api_key(key: &ApiKeyConfig) -> Identity {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::from(key.id.as_str()));
        claims.insert("scope".into(), Value::from(key.scopes.join(" ")));
        Identity(claims)
    }

    /// The route's `require_claims` and `require_scopes`; the message says what is missing.
    pub fn satisfies(&self, access: &RouteAccess) -> Result<(), String> {
        for (claim, wanted) in &access.require_claims {
            let holds = match self.0.get(claim) {
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
            .any(|claim| match self.0.get(*claim) {
                Some(Value::String(s)) => s.split(' ').any(|s| s == scope),
                Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(scope)),
                _ => false,
            })
    }

    /// The upstream headers for the configured claims. `sub` falls back to Aegis's
    /// `userId`, which its tokens carried instead. A claim that cannot be a header value
    /// (control characters) is an error: dropped silently, the request would pass upstream
    /// as anonymous.
    fn headers(
        &self,
        claims_to_headers: &[(String, HeaderName)],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, &'static str> {
        let mut out = Vec::with_capacity(claims_to_headers.len());
        for (claim, header) in claims_to_headers {
            let value = self
                .0
                .get(claim)
                .or_else(|| (claim == "sub").then(|| self.0.get("userId")).flatten());
            let Some(text) = value.and_then(text) else {
                continue;
            };
            let value = HeaderValue::from_str(&text)
                .map_err(|_| "the token's identity cannot be forwarded as a header")?;
            out.push((header.clone(), value));
        }
        Ok(out)
    }

    /// Every configured claim the identity carries can become a header value.
    pub fn check_forwardable(
        &self,
        claims_to_headers: &[(String, HeaderName)],
    ) -> Result<(), &'static str> {
        self.headers(claims_to_headers).map(drop)
    }

    /// Copies the configured claims to upstream headers (checked by [`check_forwardable`]).
    pub fn apply(&self, claims_to_headers: &[(String, HeaderName)], headers: &mut HeaderMap) {
        for (name, value) in self.headers(claims_to_headers).unwrap_or_default() {
            headers.insert(name, value);
        }
    }

    /// The `exp` claim, when the identity came from a token.
    pub fn expires_at(&self) -> Option<u64> {
        self.0.get("exp").and_then(Value::as_u64)
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
