//! JWT verification (RFC 7519) with the defences of RFC 8725: the algorithm comes from the
//! key, never from the token (`none` does not exist here; an HS token is checked only with
//! `JWT_SECRET`, an RS/PS/ES/EdDSA token only with its issuer's keys, each pinned to its own
//! algorithms, so the HS/RS confusion cannot happen); keys a token names itself (`jwk`,
//! `jku`, `x5u`) are never looked at; `exp` is required and `nbf` checked, both with the
//! leeway; `iss` and `aud` are checked for issuers; `crit` extensions are refused (RFC 7515
//! §4.1.11, we understand none); an oversized token or a `kid` shaped like a path is refused
//! before any lookup.
//!
//! Each part is decoded once: the header into the three fields that matter, the claims into
//! a map (the token's unverified `iss` picks the issuer's key store; the signature then
//! proves it, because only that issuer's keys can verify it). Signatures are checked by
//! aws-lc: HMAC with keys built once at startup, the others through jsonwebtoken's crypto.
//! This is the per-request cost of auth, so it avoids jsonwebtoken's `decode`, which parses
//! the header three times and builds the HMAC key on every call.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::KeyStore;
use crate::config::AuthConfig;

/// Tokens longer than this are refused unread. Real ones are well under 4 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const MAX_KID_BYTES: usize = 256;

pub struct JwtVerifier {
    /// HS256, HS384 and HS512 keys from `JWT_SECRET`.
    secret: Option<[hmac::Key; 3]>,
    leeway: u64,
    pub issuers: Vec<Arc<KeyStore>>,
    /// Bumped when any issuer's key set changes: what was verified before must be again.
    pub key_generation: Arc<AtomicU64>,
}

/// Why a token was refused: the message goes to the client in the 401.
pub type Rejection = &'static str;

/// The header fields that matter; any others are ignored (never trusted).
#[derive(Deserialize)]
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
    crit: Option<Value>,
}

impl JwtVerifier {
    pub fn new(config: &AuthConfig) -> Result<JwtVerifier, String> {
        let secret = config.jwt_secret.as_deref().map(|secret| {
            let key = |alg| hmac::Key::new(alg, secret.as_bytes());
            [
                key(hmac::HMAC_SHA256),
                key(hmac::HMAC_SHA384),
                key(hmac::HMAC_SHA512),
            ]
        });
        let key_generation = Arc::new(AtomicU64::new(0));
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| KeyStore::new(issuer, key_generation.clone()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(JwtVerifier {
            secret,
            leeway: config.leeway.as_secs(),
            issuers,
            key_generation,
        })
    }

    /// The verified claims of `token`.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        const MALFORMED: Rejection = "the token is malformed";
        if token.len() > MAX_TOKEN_BYTES {
            return Err("the token is too large");
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MALFORMED);
        };
        let header: TokenHeader = decode_json(header).ok_or(MALFORMED)?;
        if header.crit.is_some() {
            return Err("the token has critical header extensions");
        }
        if let Some(kid) = &header.kid {
            if !plausible_kid(kid) {
                return Err("the token's key id is invalid");
            }
        }
        let claims: Map<String, Value> = decode_json(payload).ok_or(MALFORMED)?;
        let signed = &token[..header_and_payload_len(token)];

        if header.alg.family() == AlgorithmFamily::Hmac {
            let keys = self
                .secret
                .as_ref()
                .ok_or("the token algorithm is not accepted")?;
            let key = match header.alg {
                Algorithm::HS256 => &keys[0],
                Algorithm::HS384 => &keys[1],
                _ => &keys[2],
            };
            let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| MALFORMED)?;
            hmac::verify(key, signed.as_bytes(), &signature)
                .map_err(|_| "the token signature is invalid")?;
            self.check_times(&claims)?;
            return Ok(claims);
        }

        let store = claims
            .get("iss")
            .and_then(Value::as_str)
            .and_then(|iss| self.issuers.iter().find(|s| s.issuer == iss))
            .ok_or("the token's issuer is not trusted")?;
        if !store.accepts(header.alg) {
            return Err("the token algorithm is not accepted");
        }
        let candidates = store.candidates(header.kid.as_deref(), header.alg).await;
        if candidates.is_empty() {
            return Err("no key of the issuer matches the token");
        }
        let verified = candidates.iter().any(|candidate| {
            jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &candidate.key, header.alg)
                .unwrap_or(false)
        });
        if !verified {
            return Err("the token signature is invalid");
        }
        self.check_times(&claims)?;
        if !audience_matches(claims.get("aud"), &store.audiences) {
            return Err("the token is not meant for this audience");
        }
        Ok(claims)
    }

    /// `exp` is required and must not have passed; `nbf`, when present, must have; both with
    /// the leeway (RFC 7519 §4.1.4–5).
    fn check_times(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or("the token lacks a required claim (exp, iss or aud)")?;
        if exp < now.saturating_sub(self.leeway) {
            return Err("the token has expired");
        }
        match claims.get("nbf") {
            None => Ok(()),
            Some(nbf) => match numeric_date(nbf) {
                Some(nbf) if nbf <= now + self.leeway => Ok(()),
                Some(_) => Err("the token is not valid yet"),
                None => Err("the token is malformed"),
            },
        }
    }
}

/// Base64url (no padding) of a JSON value.
fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The length of `header.payload`, the signed part.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

/// A NumericDate: seconds since the epoch, possibly fractional (RFC 7519 §2); negative or
/// non-numeric values are not dates.
fn numeric_date(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// `aud` (a string or an array of strings) names one of the issuer's audiences.
fn audience_matches(aud: Option<&Value>, audiences: &[String]) -> bool {
    match aud {
        Some(Value::String(aud)) => audiences.iter().any(|a| a == aud),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| audiences.iter().any(|a| a == aud)),
        _ => false,
    }
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
    use serde_json::json;

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

    #[test]
    fn audiences_and_dates_are_read_as_rfc_7519_says() {
        let ours = ["api".to_owned()];
        assert!(audience_matches(Some(&json!("api")), &ours));
        assert!(audience_matches(Some(&json!(["web", "api"])), &ours));
        assert!(!audience_matches(Some(&json!(["web"])), &ours));
        assert!(!audience_matches(Some(&json!("")), &ours));
        assert!(!audience_matches(None, &ours));
        assert_eq!(numeric_date(&json!(1700000000)), Some(1700000000));
        assert_eq!(numeric_date(&json!(1700000000.5)), Some(1700000000));
        assert_eq!(numeric_date(&json!(-5)), None);
        assert_eq!(numeric_date(&json!("1700000000")), None);
    }

    #[test]
    fn unknown_and_none_algorithms_do_not_parse() {
        for alg in ["none", "None", "HS257", ""] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            assert!(decode_json::<TokenHeader>(&header).is_none(), "{alg}");
        }
    }
}
