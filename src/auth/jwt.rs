//! JWT verification (RFC 7519) with the defences of RFC 8725: the algorithm comes from the
//! key, never from the token (`none` does not exist here; an HS token is checked only with
//! `JWT_SECRET`, an RS/PS/ES/EdDSA token only with its issuer's keys, so the HS/RS confusion
//! cannot happen); `exp` is required and `nbf` checked, both with the leeway; `iss` and `aud`
//! are checked for issuers; `crit` extensions are refused (RFC 7515 §4.1.11, we understand
//! none); an oversized token or a `kid` shaped like a path is refused before any lookup.
//!
//! Which issuer? The token's unverified `iss` picks the key store; the signature then proves
//! the claim, because only that issuer's keys can verify it.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::KeyStore;
use crate::config::AuthConfig;

/// Tokens longer than this are refused unread. Real ones are well under 4 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const MAX_KID_BYTES: usize = 256;

pub struct JwtVerifier {
    secret: Option<(DecodingKey, Validation)>,
    pub issuers: Vec<Arc<KeyStore>>,
}

/// Why a token was refused: the message goes to the client in the 401.
pub type Rejection = &'static str;

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

impl JwtVerifier {
    pub fn new(config: &AuthConfig) -> Result<JwtVerifier, String> {
        let secret = config.jwt_secret.as_deref().map(|secret| {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.algorithms = AlgorithmFamily::Hmac.algorithms().to_vec();
            validation.leeway = config.leeway.as_secs();
            validation.validate_nbf = true;
            validation.validate_aud = false;
            (DecodingKey::from_secret(secret.as_bytes()), validation)
        });
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| KeyStore::new(issuer, config.leeway).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(JwtVerifier { secret, issuers })
    }

    /// The verified claims of `token`.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("the token is too large");
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is malformed")?;
        if header.crit.is_some() {
            return Err("the token has critical header extensions");
        }
        if let Some(kid) = &header.kid {
            if !plausible_kid(kid) {
                return Err("the token's key id is invalid");
            }
        }
        if header.alg.family() == AlgorithmFamily::Hmac {
            let (key, validation) = self
                .secret
                .as_ref()
                .ok_or("the token algorithm is not accepted")?;
            return decode(token, key, validation);
        }
        let issuer: UnverifiedIssuer = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| "the token is malformed")?;
        let store = issuer
            .iss
            .and_then(|iss| self.issuers.iter().find(|s| s.issuer == iss))
            .ok_or("the token's issuer is not trusted")?;
        if !store.accepts(header.alg) {
            return Err("the token algorithm is not accepted");
        }
        let candidates = store.candidates(header.kid.as_deref(), header.alg).await;
        if candidates.is_empty() {
            return Err("no key of the issuer matches the token");
        }
        let mut rejection = "the token signature is invalid";
        for candidate in candidates {
            match decode(token, &candidate.key, &candidate.validation) {
                Ok(claims) => return Ok(claims),
                Err(e) => rejection = e,
            }
        }
        Err(rejection)
    }
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, Rejection> {
    use jsonwebtoken::errors::ErrorKind as Jwt;
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            Jwt::ExpiredSignature => "the token has expired",
            Jwt::ImmatureSignature => "the token is not valid yet",
            Jwt::InvalidSignature => "the token signature is invalid",
            Jwt::InvalidAlgorithm => "the token algorithm is not accepted",
            Jwt::InvalidIssuer => "the token's issuer is not trusted",
            Jwt::InvalidAudience => "the token is not meant for this audience",
            Jwt::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss or aud)",
            _ => "the token is invalid",
        })
}

/// A `kid` is an opaque name, but one with path or control characters is an attack probe:
/// refused before it can cause a JWKS fetch.
pub fn plausible_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_BYTES
        && !kid.contains("..")
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=+/:".contains(&b))
        && !kid.starts_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_with_path_characters_are_refused() {
        assert!(plausible_kid("2024-10-key_1"));
        assert!(plausible_kid("abc+def/ghi="));
        assert!(!plausible_kid("../../etc/passwd"));
        assert!(!plausible_kid("/etc/passwd"));
        assert!(!plausible_kid("a\\b"));
        assert!(!plausible_kid("a b"));
        assert!(!plausible_kid(""));
        assert!(!plausible_kid(&"k".repeat(300)));
    }
}
