//! CORS (the Fetch standard's protocol) for routes with `cors`: the gateway answers
//! preflights itself — they never reach an upstream or need a credential — and adds the
//! `Access-Control-*` headers to the answers of allowed origins, replacing any the upstream
//! sent, so one place decides. Every answer on such a route says `Vary: Origin`, so a shared
//! cache never serves one origin's answer to another. A disallowed origin gets no CORS
//! headers (the browser then blocks the response); a disallowed preflight gets 403.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::config::{AllowedHeaders, CorsConfig, OriginRule};
use crate::error::{ErrorKind, GatewayError};
use crate::proxy::body::GatewayBody;

/// An `OPTIONS` request with an `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The request's `Origin`, when the route allows it.
pub fn allowed_origin(cors: &CorsConfig, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    let text = origin.to_str().ok()?.to_ascii_lowercase();
    cors.origins
        .iter()
        .any(|rule| matches(rule, &text))
        .then(|| origin.clone())
}

fn matches(rule: &OriginRule, origin: &str) -> bool {
    match rule {
        OriginRule::Any => true,
        OriginRule::Exact(allowed) => allowed == origin,
        OriginRule::Subdomains { scheme, suffix } => origin
            .strip_prefix(scheme.as_str())
            .and_then(|rest| rest.strip_prefix("://"))
            .and_then(|host| host.strip_suffix(suffix.as_str()))
            .is_some_and(|labels| {
                !labels.is_empty()
                    && !labels.starts_with('.')
                    && labels
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }),
    }
}

/// The gateway's answer to a preflight: 204 with the allowances, or 403 naming what was
/// refused.
pub fn preflight(
    cors: &CorsConfig,
    headers: &HeaderMap,
) -> Result<Response<GatewayBody>, GatewayError> {
    let forbidden = |m: String| GatewayError::client(ErrorKind::Forbidden, m);
    let origin = allowed_origin(cors, headers)
        .ok_or_else(|| forbidden("CORS: this origin is not allowed".to_owned()))?;
    let method = headers
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| forbidden("CORS: the requested method is not valid".to_owned()))?;
    if !cors.methods.contains(&method) {
        return Err(forbidden(format!("CORS: {method} is not allowed")));
    }
    let requested: Vec<String> = headers
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if let AllowedHeaders::List(allowed) = &cors.headers {
        if let Some(refused) = requested
            .iter()
            .find(|h| !allowed.iter().any(|a| a.as_str() == h.as_str()))
        {
            return Err(forbidden(format!(
                "CORS: the {refused} header is not allowed"
            )));
        }
    }
    let mut response = Response::new(GatewayBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    set_origin(cors, origin, out);
    out.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        list(cors.methods.iter().map(Method::as_str)),
    );
    let allow_headers = match &cors.headers {
        AllowedHeaders::Any => HeaderValue::from_static("*"),
        AllowedHeaders::List(names) => list(names.iter().map(|n| n.as_str())),
    };
    out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    out.insert(
        ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age.as_secs()),
    );
    out.insert(
        VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    Ok(response)
}

/// Sets the CORS headers of a (non-preflight) answer on a route with `cors`.
pub fn decorate(cors: &CorsConfig, origin: Option<HeaderValue>, headers: &mut HeaderMap) {
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        headers.remove(name);
    }
    append_vary_origin(headers);
    let Some(origin) = origin else { return };
    set_origin(cors, origin, headers);
    if !cors.expose_headers.is_empty() {
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            list(cors.expose_headers.iter().map(|n| n.as_str())),
        );
    }
}

fn set_origin(cors: &CorsConfig, origin: HeaderValue, headers: &mut HeaderMap) {
    // `*` is answered as `*` only without credentials; otherwise the origin is echoed.
    let any = !cors.credentials && cors.origins.contains(&OriginRule::Any);
    let value = if any {
        HeaderValue::from_static("*")
    } else {
        origin
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if cors.credentials {
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn append_vary_origin(headers: &mut HeaderMap) {
    let already = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin") || v.trim() == "*");
    if !already {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let text = items.collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_patterns_match_one_or_more_labels_only() {
        let rule = OriginRule::Subdomains {
            scheme: "https".into(),
            suffix: ".example.com".into(),
        };
        assert!(matches(&rule, "https://app.example.com"));
        assert!(matches(&rule, "https://a.b.example.com"));
        assert!(!matches(&rule, "https://example.com"));
        assert!(!matches(&rule, "http://app.example.com"));
        assert!(!matches(&rule, "https://evilexample.com"));
        assert!(!matches(&rule, "https://app.example.com.evil.net"));
        assert!(!matches(&rule, "https://x/.example.com"));
        assert!(!matches(&rule, "https://.example.com"));
    }
}
