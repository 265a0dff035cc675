//! `sluice token`: mints an HS256 development token with the configured secret, so nobody
//! needs a Node one-liner to try an authenticated route.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

/// Claims for a token: `sub`, `iat`, `exp`, plus `extra` (`key=value`; numbers and booleans
/// are typed, everything else is a string).
pub fn mint(secret: &str, sub: &str, ttl: Duration, extra: &[String]) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("system clock: {e}"))?
        .as_secs();
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(sub));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
    for pair in extra {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--claim expects key=value, got {pair:?}"))?;
        let value = serde_json::from_str::<Value>(value)
            .ok()
            .filter(|v| v.is_number() || v.is_boolean())
            .unwrap_or_else(|| Value::from(value));
        claims.insert(key.to_owned(), value);
    }
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign token: {e}"))
}
