//! `[[routes]]`: each route checked on its own (path, service, match, host, methods,
//! rewrite, header edits, timeouts), then the set checked for duplicates.

use std::collections::{BTreeMap, HashSet};

use http::HeaderValue;
use regex::Regex;

use super::super::raw::{FlagOr, RawHeaderOps, RawRoute};
use super::super::values::*;
use super::super::*;
use super::Errors;

pub(super) fn route(
    errors: &mut Errors,
    index: usize,
    raw: &RawRoute,
    services: &BTreeMap<String, ServiceConfig>,
    limits: &RateLimitConfig,
) -> Option<RouteConfig> {
    let at = |key: &str| format!("routes[{index}].{key}");
    let before = errors.0.len();
    let path = match raw.path.as_deref() {
        None => {
            errors.push(at("path"), "is required");
            None
        }
        Some(text) => errors.check(&at("path"), parse_route_path(text)),
    };
    let service = match raw.service.as_deref() {
        None => {
            errors.push(at("service"), "is required");
            None
        }
        Some(name) if !services.contains_key(name) => {
            let known: Vec<&str> = services.keys().map(String::as_str).collect();
            errors.push(
                at("service"),
                format!(
                    "unknown service {name:?} (known: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            None
        }
        Some(name) => Some(name.to_owned()),
    };
    let match_kind = match raw.match_kind.as_deref() {
        None | Some("prefix") => MatchKind::Prefix,
        Some("exact") => MatchKind::Exact,
        Some(other) => {
            errors.push(
                at("match"),
                format!("expected \"prefix\" or \"exact\", got {other:?}"),
            );
            MatchKind::Prefix
        }
    };
    if raw.methods.as_ref().is_some_and(Vec::is_empty) {
        errors.push(
            at("methods"),
            "is empty, which would refuse every request: list methods, or leave it out for all",
        );
    }
    let methods = raw.methods.as_ref().map(|methods| {
        methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| errors.check(&at(&format!("methods[{i}]")), parse_method(m)))
            .collect::<Vec<_>>()
    });
    let rewrite = raw.rewrite.as_ref().and_then(|rw| {
        errors
            .check(
                &at("rewrite.pattern"),
                // regex's message draws a caret under the pattern over several lines: the
                // last line says what is wrong, and the error stays one line.
                Regex::new(&rw.pattern).map_err(|e| {
                    let text = e.to_string();
                    let why = text.lines().last().unwrap_or_default().trim();
                    format!(
                        "invalid regex {:?}: {}",
                        rw.pattern,
                        why.trim_start_matches("error: ")
                    )
                }),
            )
            .and_then(|pattern| {
                errors.check(
                    &at("rewrite.replace"),
                    check_replacement(&pattern, &rw.replace),
                )?;
                Some(Rewrite {
                    pattern,
                    replace: rw.replace.clone(),
                })
            })
    });
    let request_headers = header_ops(errors, &at("request_headers"), &raw.request_headers);
    let response_headers = header_ops(errors, &at("response_headers"), &raw.response_headers);
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|d| errors.check(&at("timeout"), d.parse().and_then(nonzero_duration)));
    let idle_timeout = raw
        .idle_timeout
        .as_ref()
        .and_then(|d| errors.check(&at("idle_timeout"), d.parse().and_then(nonzero_duration)));
    let heartbeat = raw
        .heartbeat
        .as_ref()
        .and_then(|d| errors.check(&at("heartbeat"), d.parse().and_then(nonzero_duration)));
    let host = raw
        .host
        .as_deref()
        .and_then(|h| errors.check(&at("host"), parse_route_host(h)));
    let access = super::access::route_access(errors, index, raw, methods.as_deref());
    let rate_limit = raw
        .rate_limit
        .as_ref()
        .and_then(|r| super::limits::route_limit(errors, &at("rate_limit"), r, &limits.policy));
    let cache = match &raw.cache {
        None => RouteCache::Default,
        Some(FlagOr::Flag(false)) => RouteCache::Off,
        Some(FlagOr::Flag(true)) => RouteCache::On {
            ttl: None,
            allow_credentials: false,
        },
        Some(FlagOr::Table(table)) => RouteCache::On {
            ttl: table
                .ttl
                .as_ref()
                .and_then(|t| errors.check(&at("cache.ttl"), t.parse().and_then(nonzero_duration))),
            allow_credentials: table.allow_credentials.unwrap_or(false),
        },
    };
    if errors.0.len() > before {
        return None;
    }
    Some(RouteConfig {
        path: path?,
        match_kind,
        host,
        service: service?,
        methods,
        strip_prefix: raw.strip_prefix.unwrap_or(false),
        rewrite,
        request_headers,
        response_headers,
        timeout,
        idle_timeout,
        preserve_host: raw.preserve_host,
        heartbeat,
        access,
        rate_limit,
        cache,
    })
}

pub(super) fn check_duplicate_routes(errors: &mut Errors, routes: &[Option<RawRoute>]) {
    let mut seen = HashSet::new();
    for (i, route) in routes.iter().enumerate() {
        let Some(route) = route else { continue };
        let Some(path) = route.path.as_deref().and_then(|p| parse_route_path(p).ok()) else {
            continue;
        };
        let exact = route.match_kind.as_deref() == Some("exact");
        // As routes are matched: `API.example.` is `api.example`.
        let host = route
            .host
            .as_deref()
            .map(|h| parse_route_host(h).unwrap_or_else(|_| h.to_owned()));
        if !seen.insert((path, exact, host)) {
            errors.push(
                format!("routes[{i}].path"),
                "duplicates an earlier route with the same path, match and host",
            );
        }
    }
}

pub(super) fn header_ops(errors: &mut Errors, path: &str, raw: &Option<RawHeaderOps>) -> HeaderOps {
    let Some(raw) = raw else {
        return HeaderOps::default();
    };
    let set = raw
        .set
        .iter()
        .filter_map(|(name, value)| {
            let key = format!("{path}.set.{name}");
            let name = errors.check(&key, parse_header_name(name).and_then(editable_header))?;
            let value = errors.check(
                &key,
                HeaderValue::from_str(value).map_err(|_| format!("invalid header value {value:?}")),
            )?;
            Some((name, value))
        })
        .collect();
    let remove = raw
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            errors.check(
                &format!("{path}.remove[{i}]"),
                parse_header_name(name).and_then(editable_header),
            )
        })
        .collect();
    HeaderOps { set, remove }
}

/// A rewrite's replacement makes a path: it may not add a query or fragment (the `?` would go
/// into the request line as it is), and every group it names must exist in the pattern (regex
/// puts an empty string for one that does not, silently).
fn check_replacement(pattern: &Regex, replace: &str) -> Result<(), String> {
    if let Some(c) = replace.chars().find(|c| matches!(c, '?' | '#')) {
        return Err(format!(
            "{replace:?} has a {c:?}: a rewrite makes the path only (the query is kept as it came)"
        ));
    }
    let mut rest = replace;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after; // `$$` is a literal `$`
            continue;
        }
        let (name, after) = match rest.strip_prefix('{') {
            Some(braced) => match braced.split_once('}') {
                Some(parts) => parts,
                None => return Err(format!("{replace:?} has a '${{' without its '}}'")),
            },
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                rest.split_at(end)
            }
        };
        let braced = rest.starts_with('{');
        rest = after;
        if name.is_empty() && braced {
            return Err(format!("{replace:?} has an empty group name ${{}}"));
        }
        if name.is_empty() {
            continue; // a lone `$` is literal
        }
        let exists = match name.parse::<usize>() {
            Ok(index) => index < pattern.captures_len(),
            Err(_) => pattern.capture_names().flatten().any(|n| n == name),
        };
        if !exists {
            return Err(format!(
                "{replace:?} names the group ${name}, which the pattern does not have"
            ));
        }
    }
    Ok(())
}
