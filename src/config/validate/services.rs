//! `[services.*]` merged with `UPSTREAMS`: for each service named in either, its upstream
//! URLs (the env list replaces the file's), weights and timeouts.

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::raw::{RawConfig, RawService, RawUpstream};
use super::super::units::RawDuration;
use super::super::values::*;
use super::super::*;
use super::{pools, Errors};

pub(super) fn services(
    errors: &mut Errors,
    raw: &RawConfig,
    env: &Env,
    response_timeout: Duration,
    breaker_defaults: &BreakerConfig,
) -> BTreeMap<String, ServiceConfig> {
    let env_upstreams: BTreeMap<String, Vec<String>> = match env.get("UPSTREAMS") {
        None => BTreeMap::new(),
        Some(text) => errors
            .check(
                "UPSTREAMS",
                serde_json::from_str(text).map_err(|e| {
                    format!(
                        "expected a JSON object of service → list of URLs, e.g. \
                         {{\"users\":[\"http://localhost:3001\"]}} ({e})"
                    )
                }),
            )
            .unwrap_or_default(),
    };
    let empty = RawService::default();
    let names: Vec<&String> = raw
        .services
        .keys()
        .chain(env_upstreams.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut services = BTreeMap::new();
    for name in names {
        let file = raw.services.get(name).unwrap_or(&empty);
        let path = format!("services.{name}");
        if let Err(message) = check_service_name(name) {
            // Named where the name was written (the file's name if both have it).
            let at = match raw.services.contains_key(name) {
                true => path.clone(),
                false => format!("UPSTREAMS.{name}"),
            };
            errors.push(&at, message);
        }
        let upstreams: Vec<UpstreamUrl> = match env_upstreams.get(name) {
            Some(urls) => urls
                .iter()
                .enumerate()
                .filter_map(|(i, url)| {
                    errors.check(&format!("UPSTREAMS.{name}[{i}]"), parse_upstream(url, None))
                })
                .collect(),
            None => file
                .upstreams
                .iter()
                .enumerate()
                .filter_map(|(i, up): (usize, &RawUpstream)| {
                    errors.check(
                        &format!("{path}.upstreams[{i}]"),
                        parse_upstream(up.url(), up.weight()),
                    )
                })
                .collect(),
        };
        // Where the list came from, for naming it in errors.
        let list_key = if env_upstreams.contains_key(name) {
            format!("UPSTREAMS.{name}")
        } else {
            format!("{path}.upstreams")
        };
        // The same endpoint twice would have two breakers and two shares of traffic: a
        // weight in disguise, and a confusing one. Say so (compared after parsing, so
        // `http://a:1` and `http://a:1/` are the same).
        for (i, url) in upstreams.iter().enumerate() {
            let url = url.to_string();
            if let Some(first) = upstreams[..i].iter().position(|u| u.to_string() == url) {
                errors.push(
                    format!("{list_key}[{i}]"),
                    format!("{url} is listed twice (first at [{first}]); use weight instead"),
                );
            }
        }
        let listed = match env_upstreams.get(name) {
            Some(urls) => urls.len(),
            None => file.upstreams.len(),
        };
        // An empty list is an error of its own; a list of bad URLs was reported URL by URL.
        if listed == 0 {
            errors.push(&list_key, "needs at least one upstream URL");
        } else if listed > crate::config::MAX_UPSTREAMS {
            errors.push(
                &list_key,
                format!(
                    "has {listed} upstreams; at most {} are supported",
                    crate::config::MAX_UPSTREAMS
                ),
            );
        }
        let duration = |errors: &mut Errors, key: &str, value: &Option<RawDuration>, default| {
            value
                .as_ref()
                .and_then(|v| {
                    errors.check(
                        &format!("{path}.{key}"),
                        v.parse().and_then(nonzero_duration),
                    )
                })
                .unwrap_or(default)
        };
        let service = ServiceConfig {
            name: name.clone(),
            upstreams,
            connect_timeout: duration(
                errors,
                "connect_timeout",
                &file.connect_timeout,
                Duration::from_secs(5),
            ),
            response_timeout: duration(
                errors,
                "response_timeout",
                &file.response_timeout,
                response_timeout,
            ),
            idle_timeout: duration(
                errors,
                "idle_timeout",
                &file.idle_timeout,
                Duration::from_secs(60),
            ),
            preserve_host: file.preserve_host.unwrap_or(false),
            balancer: pools::balancer(
                errors,
                &path,
                file.balancer.as_deref(),
                file.hash_key.as_deref(),
            ),
            breaker: match &file.breaker {
                Some(raw) => {
                    pools::breaker(errors, &format!("{path}.breaker"), breaker_defaults, raw)
                }
                None => breaker_defaults.clone(),
            },
            health_check: file
                .health_check
                .as_ref()
                .and_then(|raw| pools::health_check(errors, &format!("{path}.health_check"), raw)),
            max_retries: match file.max_retries {
                Some(n) if n > 10 => {
                    errors.push(format!("{path}.max_retries"), "must be at most 10");
                    2
                }
                Some(n) => n,
                None => 2,
            },
            max_in_flight_per_endpoint: match file.max_in_flight_per_endpoint {
                Some(0) => {
                    errors.push(
                        format!("{path}.max_in_flight_per_endpoint"),
                        "must be at least 1 (leave it out for no cap)",
                    );
                    None
                }
                other => other,
            },
            service_routes: file.service_routes,
        };
        services.insert(name.clone(), service);
    }
    services
}
