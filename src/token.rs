//! `sluice token`: mints an HS256 development token with the configured secret, so nobody
//! needs a Node one-liner to try an authenticated route.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

/// Long enough for any test; more would overflow `exp` (a number of seconds).
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The claims `sluice token` sets itself, from `--sub` and `--ttl`.
const OWN_CLAIMS: [&str; 3] = ["sub", "iat", "exp"];

/// What makes a token no test of anything: a secret the gateway refuses, an empty subject (forwarded as an empty
/// `x-user-id`), one expired when minted, or a `--claim` overriding `sub`, `iat` or `exp`
/// (a string `iat`, an `exp` in the past) behind `--sub` and `--ttl`.
pub fn check_usage(secret: &str, sub: &str, ttl: Duration, extra: &[String]) -> Result<(), String> {
    if secret.chars().count() < 32 {
        return Err(
            "--secret must be at least 32 characters (the gateway refuses shorter ones)".to_owned(),
        );
    }
    if sub.trim().is_empty() {
        return Err("--sub must not be empty".to_owned());
    }
    if ttl.as_secs() == 0 {
        return Err(
            "--ttl must be at least 1s (the token would be expired when minted)".to_owned(),
        );
    }
    if ttl > MAX_TTL {
        return Err("--ttl must be at most 100 years".to_owned());
    }
    for pair in extra {
        let Some((key, _)) = pair.split_once('=') else {
            return Err(format!("--claim expects key=value, got {pair:?}"));
        };
        if key.is_empty() {
            return Err(format!("--claim expects key=value, got {pair:?}"));
        }
        if OWN_CLAIMS.contains(&key) {
            return Err(format!(
                "--claim cannot set {key:?}: use --sub and --ttl for sub, iat and exp"
            ));
        }
    }
    Ok(())
}

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
