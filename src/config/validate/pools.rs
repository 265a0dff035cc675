//! The upstream-pool keys of a service: `balancer` and `hash_key`, `breaker` (the `[breaker]`
//! section, overridden key by key per service) and `health_check`. Each is checked here and
//! turned into the typed value the `upstream` module runs on.

use std::time::Duration;

use super::super::raw::{RawBreaker, RawHealthCheck};
use super::super::units::RawDuration;
use super::super::values::{nonzero_duration, parse_header_name};
use super::super::*;
use super::Errors;

/// `base` with the keys `raw` sets replaced; `path` names the table (`breaker`,
/// `services.users.breaker`).
pub(super) fn breaker(
    errors: &mut Errors,
    path: &str,
    base: &BreakerConfig,
    raw: &RawBreaker,
) -> BreakerConfig {
    let mut config = base.clone();
    let count = |errors: &mut Errors, key: &str, value: Option<u32>, into: &mut u32| match value {
        Some(0) => errors.push(format!("{path}.{key}"), "must be at least 1"),
        Some(n) => *into = n,
        None => {}
    };
    count(
        errors,
        "consecutive_failures",
        raw.consecutive_failures,
        &mut config.consecutive_failures,
    );
    count(
        errors,
        "min_requests",
        raw.min_requests,
        &mut config.min_requests,
    );
    count(
        errors,
        "half_open_probes",
        raw.half_open_probes,
        &mut config.half_open_probes,
    );
    if let Some(ratio) = raw.failure_ratio {
        if ratio > 0.0 && ratio <= 1.0 {
            config.failure_ratio = Some(ratio);
        } else {
            errors.push(
                format!("{path}.failure_ratio"),
                format!("must be above 0 and at most 1, got {ratio}"),
            );
        }
    }
    if let Some(window) = duration(errors, &format!("{path}.window"), &raw.window) {
        if window < Duration::from_secs(1)
            || window > Duration::from_secs(60)
            || window.subsec_nanos() != 0
        {
            errors.push(
                format!("{path}.window"),
                "must be whole seconds between 1s and 60s (it is counted per second)",
            );
        } else {
            config.window = window;
        }
    }
    if let Some(open_for) = duration(errors, &format!("{path}.open_for"), &raw.open_for) {
        config.open_for = open_for;
    }
    if let Some(statuses) = &raw.failure_statuses {
        let mut set = 0u128;
        for status in statuses {
            if (500..600).contains(status) {
                set |= 1u128 << (status - 500);
            } else {
                errors.push(
                    format!("{path}.failure_statuses"),
                    format!(
                        "only 5xx statuses can count as failures, got {status} \
                         (a 4xx is the client's doing, not the upstream's)"
                    ),
                );
            }
        }
        config.failure_statuses = FailureStatuses(set);
    }
    config
}

pub(super) fn balancer(
    errors: &mut Errors,
    path: &str,
    kind: Option<&str>,
    hash_key: Option<&str>,
) -> BalancerKind {
    let kind = match kind.unwrap_or("p2c_ewma") {
        "p2c_ewma" => BalancerKind::P2cEwma,
        "round_robin" => BalancerKind::RoundRobin,
        "least_request" => BalancerKind::LeastRequest,
        "random" => BalancerKind::Random,
        "hash" => BalancerKind::Hash(HashKey::ClientIp),
        other => {
            errors.push(
                format!("{path}.balancer"),
                format!(
                    "unknown balancer {other:?} (expected p2c_ewma, round_robin, \
                     least_request, random or hash)"
                ),
            );
            BalancerKind::P2cEwma
        }
    };
    let Some(text) = hash_key else {
        return kind;
    };
    let key_path = format!("{path}.hash_key");
    if kind != BalancerKind::Hash(HashKey::ClientIp) {
        errors.push(key_path, "only used with balancer = \"hash\"");
        return kind;
    }
    let key = match text.split_once(':') {
        None if text == "ip" => Some(HashKey::ClientIp),
        Some(("header", name)) => errors
            .check(&key_path, parse_header_name(name))
            .map(HashKey::Header),
        Some(("cookie", name)) if !name.is_empty() && !name.contains([';', '=', ' ']) => {
            Some(HashKey::Cookie(name.to_owned()))
        }
        _ => {
            errors.push(
                key_path,
                format!("expected \"ip\", \"header:<name>\" or \"cookie:<name>\", got {text:?}"),
            );
            None
        }
    };
    BalancerKind::Hash(key.unwrap_or(HashKey::ClientIp))
}

pub(super) fn health_check(
    errors: &mut Errors,
    path: &str,
    raw: &RawHealthCheck,
) -> Option<HealthCheckConfig> {
    let path_key = format!("{path}.path");
    // Every key is checked even when an earlier one is wrong, so one run reports them all.
    let check_path = match raw.path.as_deref() {
        None => {
            errors.push(path_key, "required (e.g. \"/health\")");
            None
        }
        Some(p) if !p.starts_with('/') => {
            errors.push(
                path_key,
                format!("expected a path starting with '/', got {p:?}"),
            );
            None
        }
        Some(p) if p.contains('#') || http::uri::PathAndQuery::try_from(p).is_err() => {
            errors.push(
                path_key,
                format!("expected a path and optional query without '#', spaces or control characters, got {p:?}"),
            );
            None
        }
        Some(p) => Some(p.to_owned()),
    };
    let interval = duration(errors, &format!("{path}.interval"), &raw.interval)
        .unwrap_or(Duration::from_secs(5));
    let timeout = duration(errors, &format!("{path}.timeout"), &raw.timeout)
        .unwrap_or(Duration::from_secs(2).min(interval));
    if timeout > interval {
        errors.push(
            format!("{path}.timeout"),
            "must not be longer than the interval",
        );
    }
    let count = |errors: &mut Errors, key: &str, value: Option<u32>, default: u32| match value {
        Some(0) => {
            errors.push(format!("{path}.{key}"), "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    };
    let healthy_after = count(errors, "healthy_after", raw.healthy_after, 2);
    let unhealthy_after = count(errors, "unhealthy_after", raw.unhealthy_after, 3);
    Some(HealthCheckConfig {
        path: check_path?,
        interval,
        timeout,
        healthy_after,
        unhealthy_after,
    })
}

fn duration(errors: &mut Errors, path: &str, value: &Option<RawDuration>) -> Option<Duration> {
    value
        .as_ref()
        .and_then(|v| errors.check(path, v.parse().and_then(nonzero_duration)))
}
