//! Parsers for single configuration values: addresses, URLs, route paths and hosts, names,
//! methods, header names. Each takes what the operator wrote and returns the typed value or
//! a message fit to follow its key (`routes[2].host: expected a host name …`); none panics.
//! Sizes, durations and booleans live in `units`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Method, Uri};

use super::{Environment, LogLevel, UpstreamUrl};

/// An upstream base URL: `http`/`https`, a host, an optional path; no query or fragment.
pub(super) fn parse_upstream(text: &str, weight: Option<u32>) -> Result<UpstreamUrl, String> {
    let invalid = |why: &str| format!("{why}: {text:?} (expected e.g. \"http://127.0.0.1:3001\")");
    let uri: Uri = text.trim().parse().map_err(|_| invalid("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(_) => return Err(invalid("only http and https upstreams are supported")),
        None => return Err(invalid("missing http:// or https://")),
    };
    let authority: Authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
    if authority.host().is_empty() {
        return Err(invalid("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in upstream URLs are not supported"));
    }
    // `http` takes any text after the host's colon; a port that is no port (`:abc`, `:65536`,
    // `:0`) would only fail later, every request a 502 naming the wrong cause.
    let port_text = authority.as_str().get(authority.host().len() + 1..);
    let digits = port_text.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let has_port = authority.as_str() != authority.host();
    if has_port && (!digits || authority.port_u16().is_none_or(|port| port == 0)) {
        return Err(invalid("the port must be a number from 1 to 65535"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(invalid(
            "an upstream base URL cannot have a query or fragment",
        ));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    if weight == Some(0) {
        return Err("weight must be at least 1".to_owned());
    }
    Ok(UpstreamUrl {
        scheme,
        authority,
        base_path,
        weight: weight.unwrap_or(1),
    })
}

pub(super) fn parse_route_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("must start with '/', got {text:?}"));
    }
    if text.contains(['{', '}', '*', '?', '#']) {
        return Err(format!(
            "must be a literal path (no '{{', '}}', '*', '?' or '#'), got {text:?}"
        ));
    }
    // A request path never carries a raw space or control character (they arrive
    // percent-encoded), so a route written with one could never match.
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain spaces or control characters (write them percent-encoded), got {text:?}"
        ));
    }
    let normalized = crate::router::normalize_path(text)
        .map_err(|e| format!("{e} in {text:?}"))?
        .into_owned();
    let trimmed = normalized.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// A route host: a DNS name or IP, compared without port, case-insensitively.
/// A route's host, as requests are matched against it: lowercase, without the final dot of a
/// fully qualified name (`api.example.` is `api.example`, as in requests).
pub(super) fn parse_route_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    let host = host.strip_suffix('.').map_or(host.clone(), str::to_owned);
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if valid {
        Ok(host)
    } else {
        Err(format!(
            "expected a host name without scheme or port, like \"api.example.com\", got {text:?}"
        ))
    }
}

pub(super) fn check_service_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "service names may contain only letters, digits, '-', '_' and '.', got {name:?}"
        ))
    }
}

pub(super) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("expected an address like \"0.0.0.0:8080\" or \"[::1]:8080\", got {text:?}")
    })
}

pub(super) fn parse_host(text: &str) -> Result<IpAddr, String> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    trimmed
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("expected an IP address like 0.0.0.0 or ::, got {text:?}"))
}

pub(super) fn parse_environment(text: &str) -> Result<Environment, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(Environment::Development),
        "test" => Ok(Environment::Test),
        "production" | "prod" => Ok(Environment::Production),
        _ => Err(format!(
            "expected development, test or production, got {text:?}"
        )),
    }
}

pub(super) fn parse_log_level(text: &str) -> Result<LogLevel, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "fatal" => Ok(LogLevel::Fatal),
        "error" => Ok(LogLevel::Error),
        "warn" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        "trace" => Ok(LogLevel::Trace),
        "silent" => Ok(LogLevel::Silent),
        _ => Err(format!(
            "expected one of fatal, error, warn, info, debug, trace, silent, got {text:?}"
        )),
    }
}

pub(super) fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.trim().to_ascii_uppercase();
    Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid HTTP method {text:?}"))
}

pub(super) fn parse_header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("invalid header name {text:?}"))
}

/// Route header edits may not touch framing or connection management: a configured
/// `content-length` or `transfer-encoding` would desynchronise the client's connection.
pub(super) fn editable_header(name: HeaderName) -> Result<HeaderName, String> {
    const RESERVED: &[&str] = &[
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    if RESERVED.contains(&name.as_str()) {
        Err(format!(
            "{name} is managed by the gateway and cannot be edited (use preserve_host for Host)"
        ))
    } else {
        Ok(name)
    }
}

/// A cookie name: an RFC 9110 token.
pub(super) fn parse_cookie_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!("invalid cookie name {name:?}"))
    }
}

pub(super) fn parse_positive(text: &str) -> Result<u64, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number, got {text:?}"))?;
    positive(n).map_err(str::to_owned)
}

pub(super) fn positive(n: u64) -> Result<u64, &'static str> {
    if n == 0 {
        Err("must be at least 1")
    } else {
        Ok(n)
    }
}

pub(super) fn nonzero_duration(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(d)
    }
}
