//! A route's `cors`: origins (exact, `*`, or `https://*.example.com`), methods, headers,
//! credentials and max age, with the combinations browsers refuse (`*` with credentials)
//! refused here.

use std::time::Duration;

use http::{HeaderName, Method};

use super::super::raw::RawCors;
use super::super::values::*;
use super::super::*;
use super::Errors;

pub(super) fn cors(
    errors: &mut Errors,
    at: &str,
    raw: &RawCors,
    route_methods: Option<&[Method]>,
) -> Option<CorsConfig> {
    let before = errors.0.len();
    if raw.allow_origins.is_empty() {
        errors.push(
            format!("{at}.allow_origins"),
            "must name at least one origin",
        );
    }
    let origins: Vec<OriginRule> = raw
        .allow_origins
        .iter()
        .enumerate()
        .filter_map(|(i, o)| errors.check(&format!("{at}.allow_origins[{i}]"), origin_rule(o)))
        .collect();
    if raw.allow_methods.as_ref().is_some_and(Vec::is_empty) {
        errors.push(
            format!("{at}.allow_methods"),
            "must name at least one method",
        );
    }
    let methods = match &raw.allow_methods {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, m)| errors.check(&format!("{at}.allow_methods[{i}]"), parse_method(m)))
            .collect(),
        None => route_methods.map(<[Method]>::to_vec).unwrap_or_else(|| {
            vec![
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ]
        }),
    };
    let header_list = |errors: &mut Errors, key: &str, list: &[String]| -> Vec<HeaderName> {
        list.iter()
            .enumerate()
            .filter_map(|(i, h)| errors.check(&format!("{at}.{key}[{i}]"), parse_header_name(h)))
            .collect()
    };
    let headers = match raw.allow_headers.as_deref() {
        Some([star]) if star == "*" => AllowedHeaders::Any,
        Some(list) => AllowedHeaders::List(header_list(errors, "allow_headers", list)),
        None => AllowedHeaders::List(vec![
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
        ]),
    };
    let expose_headers = header_list(
        errors,
        "expose_headers",
        raw.expose_headers.as_deref().unwrap_or_default(),
    );
    let credentials = raw.allow_credentials.unwrap_or(false);
    if credentials && origins.contains(&OriginRule::Any) {
        errors.push(
            format!("{at}.allow_origins"),
            "\"*\" cannot be used with allow_credentials (browsers refuse it); list the origins",
        );
    }
    if credentials && headers == AllowedHeaders::Any {
        errors.push(
            format!("{at}.allow_headers"),
            "\"*\" cannot be used with allow_credentials (browsers refuse it); list the headers",
        );
    }
    let max_age = raw
        .max_age
        .as_ref()
        .and_then(|d| errors.check(&format!("{at}.max_age"), d.parse()))
        .unwrap_or(Duration::from_secs(600));
    (errors.0.len() == before).then_some(CorsConfig {
        origins,
        methods,
        headers,
        expose_headers,
        credentials,
        max_age,
    })
}

/// `*`, `https://app.example.com[:port]` or `https://*.example.com[:port]`.
fn origin_rule(text: &str) -> Result<OriginRule, String> {
    let text = text.trim().to_ascii_lowercase();
    if text == "*" {
        return Ok(OriginRule::Any);
    }
    let bad = || {
        format!(
            "expected \"*\" or an origin like https://app.example.com or \
             https://*.example.com (scheme and host, no path), got {text:?}"
        )
    };
    let (scheme, host) = text.split_once("://").ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]*".contains(&b));
    if !matches!(scheme, "http" | "https") || !host_ok {
        return Err(bad());
    }
    match host.strip_prefix("*.") {
        Some(suffix) => {
            // `*.localhost` is allowed too, for development.
            let domain = suffix.split(':').next().unwrap_or_default();
            if suffix.contains('*') || !(domain.contains('.') || domain == "localhost") {
                return Err(format!(
                    "a wildcard needs a domain of at least two labels after it \
                     (https://*.example.com), got {text:?}"
                ));
            }
            Ok(OriginRule::Subdomains {
                scheme: scheme.to_owned(),
                suffix: format!(".{suffix}"),
            })
        }
        None if host.contains('*') => Err(bad()),
        None => Ok(OriginRule::Exact(text.clone())),
    }
}
