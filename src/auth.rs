//! Bearer-token authentication, as the seeds did it: HS256 JWTs signed with `JWT_SECRET`
//! (RFC 7519), the algorithm pinned so `alg: none` and HS/RS confusion fail (RFC 8725 §3.1),
//! `exp` required and `nbf` checked with a 60 s leeway, tokens with `crit` extensions refused
//! (RFC 7515 §4.1.11). The verified identity goes upstream as
//! headers (`sub` → `x-user-id` by default, Aegis's `userId` when `sub` is absent); a client's
//! own copies of those headers are removed on every request, authenticated or not.
//!
//! JWKS, asymmetric keys, API keys and per-route policies arrive with issue #5; until then
//! auth is all-or-nothing for proxied routes.

use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use crate::error::{ErrorKind, GatewayError};

pub struct Auth {
    required: bool,
    key: Option<DecodingKey>,
    validation: Validation,
    claims_to_headers: Vec<(String, HeaderName)>,
}

/// The verified claims of a request's token.
pub struct Identity(Map<String, Value>);

impl Auth {
    pub fn new(config: &AuthConfig) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 60;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Auth {
            required: config.required,
            key: config
                .jwt_secret
                .as_deref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            validation,
            claims_to_headers: config.claims_to_headers.clone(),
        }
    }

    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Removes every header the gateway itself fills from verified claims.
    pub fn strip_identity_headers(&self, headers: &mut HeaderMap) {
        for (_, header) in &self.claims_to_headers {
            headers.remove(header);
        }
    }

    /// Checks the bearer token when auth is required. `Ok(None)` when it is not required.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Identity>, GatewayError> {
        self.authenticate_token(header_token(headers))
    }

    /// For WebSocket upgrades, which browsers cannot give an `Authorization` header: the
    /// bearer token may also come from the `access_token` query parameter or, when
    /// configured, a cookie. The header wins when present.
    pub fn authenticate_upgrade(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        cookie: Option<&str>,
    ) -> Result<Option<Identity>, GatewayError> {
        let token = header_token(headers)
            .or_else(|| query_param(query?, ACCESS_TOKEN_PARAM))
            .or_else(|| cookie_value(headers, cookie?));
        self.authenticate_token(token)
    }

    fn authenticate_token(&self, token: Option<&str>) -> Result<Option<Identity>, GatewayError> {
        if !self.required {
            return Ok(None);
        }
        let unauthorized = |m: &'static str| GatewayError::client(ErrorKind::Unauthorized, m);
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("a bearer token is required"))?;
        if has_critical_extensions(token) {
            return Err(unauthorized("the token has critical header extensions"));
        }
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| unauthorized("no key is configured to verify tokens"))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as Jwt;
                match e.kind() {
                    Jwt::ExpiredSignature => unauthorized("the token has expired"),
                    Jwt::ImmatureSignature => unauthorized("the token is not valid yet"),
                    Jwt::InvalidSignature => unauthorized("the token signature is invalid"),
                    Jwt::InvalidAlgorithm => unauthorized("the token algorithm is not accepted"),
                    _ => unauthorized("the token is invalid"),
                }
            })?;
        Ok(Some(Identity(data.claims)))
    }

    /// Copies the configured claims to upstream headers.
    pub fn apply(&self, identity: &Identity, headers: &mut HeaderMap) {
        for (claim, header) in &self.claims_to_headers {
            let value = identity.0.get(claim).or_else(|| {
                // The seeds' second gateway (Aegis) put the user in `userId`.
                (claim == "sub").then(|| identity.0.get("userId")).flatten()
            });
            let text = match value {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => continue,
            };
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(header.clone(), value);
            }
        }
    }
}

/// The query parameter that may carry a token on WebSocket upgrades (removed before the
/// request goes upstream).
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

/// The raw value of `name` in a query string (tokens are base64url: no decoding needed).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// RFC 7515 §4.1.11: a `crit` header names extensions the recipient must understand. sluice
/// understands none, so any `crit` means reject.
fn has_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|header| header.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn crit_headers_are_detected() {
        // {"alg":"HS256","crit":["exp"]}
        assert!(has_critical_extensions(
            "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.e30.sig"
        ));
        // {"alg":"HS256","typ":"JWT"}
        assert!(!has_critical_extensions(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig"
        ));
    }
}
