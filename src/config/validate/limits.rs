//! `[rate_limit]` (the seeds' `RATE_LIMIT_*` and `REDIS_URL`, plus algorithm, key, store and
//! failure policy) and a route's own `rate_limit`.

use std::time::Duration;

use super::super::raw::{RawConfig, RawRouteLimit};
use super::super::units::parse_millis;
use super::super::values::*;
use super::super::*;
use super::Errors;

pub(super) fn rate_limit(errors: &mut Errors, raw: &RawConfig, env: &Env) -> RateLimitConfig {
    let r = &raw.rate_limit;
    let max = errors.layered(
        env,
        "RATE_LIMIT_MAX",
        parse_positive,
        "rate_limit.max",
        r.max,
        |n| positive(n).map_err(str::to_owned),
        200,
    );
    let window = errors.layered(
        env,
        "RATE_LIMIT_WINDOW_MS",
        |t| parse_millis(t).and_then(nonzero_duration),
        "rate_limit.window",
        r.window.as_ref(),
        |d| d.parse().and_then(window_duration),
        Duration::from_secs(60),
    );
    let algorithm = r
        .algorithm
        .as_deref()
        .and_then(|a| errors.check("rate_limit.algorithm", algorithm(a)))
        .unwrap_or(LimitAlgorithm::SlidingWindow);
    let key = r
        .key
        .as_deref()
        .and_then(|k| errors.check("rate_limit.key", limit_key(k)))
        .unwrap_or(LimitKey::Ip);
    let burst = burst(errors, "rate_limit.burst", r.burst, algorithm, max);
    let redis_url = redis_url(errors, env, r.redis_url.as_deref());
    let store = match r.store.as_deref() {
        // A Redis URL means shared counts (DESIGN: "implies store = redis"), even over a
        // `store = "memory"` in the file: REDIS_URL in the environment wins over the file as
        // every variable does, and instances counting alone would allow N times the limit.
        None | Some("memory") if redis_url.is_some() => StoreKind::Redis,
        None | Some("memory") => StoreKind::Memory,
        Some("redis") => {
            if redis_url.is_none() {
                errors.push(
                    "rate_limit.store",
                    "is redis, but no REDIS_URL (rate_limit.redis_url) is set",
                );
            }
            StoreKind::Redis
        }
        Some(other) => {
            errors.push(
                "rate_limit.store",
                format!("expected \"memory\" or \"redis\", got {other:?}"),
            );
            StoreKind::Memory
        }
    };
    let on_store_error = match r.on_store_error.as_deref() {
        None | Some("local") => StoreErrorPolicy::Local,
        Some("allow") => StoreErrorPolicy::Allow,
        Some("deny") => StoreErrorPolicy::Deny,
        Some(other) => {
            errors.push(
                "rate_limit.on_store_error",
                format!("expected \"local\", \"allow\" or \"deny\", got {other:?}"),
            );
            StoreErrorPolicy::Local
        }
    };
    let redis_timeout = r
        .redis_timeout
        .as_ref()
        .and_then(|d| {
            errors.check(
                "rate_limit.redis_timeout",
                d.parse().and_then(nonzero_duration).and_then(|d| {
                    if d > Duration::from_secs(5) {
                        Err(
                            "must be at most 5s (every limited request may wait this long)"
                                .to_owned(),
                        )
                    } else {
                        Ok(d)
                    }
                }),
            )
        })
        .unwrap_or(Duration::from_millis(50));
    let memory_max_keys = match r.memory_max_keys {
        Some(0) => {
            errors.push("rate_limit.memory_max_keys", "must be at least 1");
            1_000_000
        }
        Some(n) => n,
        None => 1_000_000,
    };
    RateLimitConfig {
        enabled: r.enabled.unwrap_or(true),
        policy: LimitPolicy {
            max,
            window,
            algorithm,
            burst,
            key,
        },
        store,
        redis_url,
        redis_timeout,
        on_store_error,
        memory_max_keys,
    }
}

/// A route's `rate_limit`: `false`, or a table whose unset keys come from `[rate_limit]`.
pub(super) fn route_limit(
    errors: &mut Errors,
    at: &str,
    raw: &RawRouteLimit,
    default: &LimitPolicy,
) -> Option<RouteLimit> {
    let raw = match raw {
        RawRouteLimit::Flag(false) => return Some(RouteLimit::Off),
        RawRouteLimit::Flag(true) => {
            errors.push(
                at,
                "expected false or a table such as { max = 10, window = \"1m\" }",
            );
            return None;
        }
        RawRouteLimit::Table(policy) => policy,
    };
    let max = match raw.max {
        Some(0) => {
            errors.push(format!("{at}.max"), "must be at least 1");
            default.max
        }
        Some(n) => n,
        None => default.max,
    };
    let window = raw
        .window
        .as_ref()
        .and_then(|d| errors.check(&format!("{at}.window"), d.parse().and_then(window_duration)))
        .unwrap_or(default.window);
    let algorithm = raw
        .algorithm
        .as_deref()
        .and_then(|a| errors.check(&format!("{at}.algorithm"), algorithm(a)))
        .unwrap_or(default.algorithm);
    let key = raw
        .key
        .as_deref()
        .and_then(|k| errors.check(&format!("{at}.key"), limit_key(k)))
        .unwrap_or_else(|| default.key.clone());
    // An unset burst follows [rate_limit] when the route keeps its algorithm and max.
    let inherited = (algorithm == default.algorithm && max == default.max).then_some(default.burst);
    let burst = match (raw.burst, inherited) {
        (None, Some(burst)) => burst,
        _ => burst(errors, &format!("{at}.burst"), raw.burst, algorithm, max),
    };
    Some(RouteLimit::Own(LimitPolicy {
        max,
        window,
        algorithm,
        burst,
        key,
    }))
}

/// `key = "user"` / `"api_key"` count identities: on a route that does not authenticate
/// there are none, and every client would silently be counted by address.
pub(super) fn check_identity_key(
    errors: &mut Errors,
    index: usize,
    route: &RouteConfig,
    limits: &RateLimitConfig,
    auth: &AuthConfig,
) {
    let (policy, key) = match &route.rate_limit {
        Some(RouteLimit::Own(policy)) => (policy, format!("routes[{index}].rate_limit.key")),
        Some(RouteLimit::Off) => return,
        None if limits.enabled => (&limits.policy, "rate_limit.key".to_owned()),
        None => return,
    };
    let by_identity = matches!(policy.key, LimitKey::User | LimitKey::ApiKey);
    let authenticates = match route.access.auth {
        Some(mode) => mode != AuthMode::Off,
        None => auth.required,
    };
    if by_identity && !authenticates {
        errors.push(
            key,
            format!(
                "counts by identity, but routes[{index}] ({}) does not authenticate \
                 (set its auth = true or \"optional\")",
                route.path
            ),
        );
    }
}

fn window_duration(d: Duration) -> Result<Duration, String> {
    if d < Duration::from_millis(1) {
        Err("must be at least 1ms".to_owned())
    } else if d > Duration::from_secs(7 * 24 * 3600) {
        Err("must be at most 7d".to_owned())
    } else {
        Ok(d)
    }
}

fn burst(
    errors: &mut Errors,
    at: &str,
    raw: Option<u64>,
    algorithm: LimitAlgorithm,
    max: u64,
) -> u64 {
    match raw {
        // Kept within what the Redis script counts exactly.
        Some(n) if n > 1_000_000_000 => {
            errors.push(at, "must be at most 1000000000");
            max
        }
        None => max,
        Some(_) if algorithm != LimitAlgorithm::Gcra => {
            errors.push(at, "applies only to algorithm = \"gcra\"");
            max
        }
        Some(0) => {
            errors.push(at, "must be at least 1");
            max
        }
        Some(n) => n,
    }
}

fn algorithm(text: &str) -> Result<LimitAlgorithm, String> {
    match text {
        "sliding_window" => Ok(LimitAlgorithm::SlidingWindow),
        "gcra" => Ok(LimitAlgorithm::Gcra),
        "fixed_window" => Ok(LimitAlgorithm::FixedWindow),
        other => Err(format!(
            "expected \"sliding_window\", \"gcra\" or \"fixed_window\", got {other:?}"
        )),
    }
}

fn limit_key(text: &str) -> Result<LimitKey, String> {
    match text {
        "ip" => Ok(LimitKey::Ip),
        "user" => Ok(LimitKey::User),
        "api_key" => Ok(LimitKey::ApiKey),
        other => match other.strip_prefix("header:") {
            Some(name) => parse_header_name(name).map(LimitKey::Header),
            None => Err(format!(
                "expected \"ip\", \"user\", \"api_key\" or \"header:<name>\", got {other:?}"
            )),
        },
    }
}

fn redis_url(errors: &mut Errors, env: &Env, file: Option<&str>) -> Option<String> {
    let (key, url) = match (env.get("REDIS_URL"), file) {
        (Some(url), _) => ("REDIS_URL", url),
        (None, Some(url)) => ("rate_limit.redis_url", url),
        (None, None) => return None,
    };
    // The URL may hold a password: errors show only its scheme.
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        // Parsed as the client will parse it (no connection is made), so `check` and startup
        // agree; the message is the client's, which never repeats the password.
        "redis" => match redis::Client::open(url) {
            Ok(_) => Some(url.to_owned()),
            Err(e) => {
                errors.push(key, format!("not a usable Redis URL: {e}"));
                None
            }
        },
        "rediss" => {
            errors.push(
                key,
                "rediss:// (TLS to Redis) is not supported yet: use redis:// on a private network",
            );
            None
        }
        _ => {
            errors.push(key, "expected a redis://host:port URL");
            None
        }
    }
}
