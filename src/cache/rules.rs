//! The HTTP caching rules the response cache follows (RFC 9111, as a shared cache), as pure
//! functions over methods, statuses and headers: which requests may use the cache, which
//! responses may be stored and for how long, and what `Vary` asks for.
//!
//! The cache stores only what it can serve back unchanged to anyone: a response with
//! `no-store`, `private` or `no-cache` (which would need revalidation on every use, and this
//! cache does not revalidate), a `Set-Cookie`, `Vary: *` or an event stream is never stored.

use std::time::{Duration, SystemTime};

use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, DATE, EXPIRES, PRAGMA, SET_COOKIE,
    VARY,
};
use http::{HeaderMap, HeaderName, Method};

/// What a request may do with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestUse {
    /// Look it up, fetch and store on a miss.
    Lookup,
    /// `Cache-Control: no-cache` (or `Pragma: no-cache`): fetch, and store what comes back.
    Refresh,
    /// Not at all: another method, or `Cache-Control: no-store`.
    Bypass,
}

/// What the request's method and `Cache-Control` allow (credentials are the caller's
/// business: see [`has_credentials`]).
pub fn request_use(method: &Method, headers: &HeaderMap) -> RequestUse {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return RequestUse::Bypass;
    }
    let directives = Directives::of(headers);
    if directives.no_store {
        return RequestUse::Bypass;
    }
    let pragma_no_cache = headers
        .get_all(PRAGMA)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    if directives.no_cache || directives.max_age == Some(0) || pragma_no_cache {
        return RequestUse::Refresh;
    }
    RequestUse::Lookup
}

/// Whether the request carries something that may make its answer personal: `Authorization`
/// or `Cookie` (the gateway also knows about credentials it verified itself).
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION) || headers.contains_key(COOKIE)
}

/// How long a response may be kept, at most `cap`; `None` when it may not be stored.
pub fn storable_for(
    status: u16,
    headers: &HeaderMap,
    statuses: &[u16],
    cap: Duration,
    now: SystemTime,
) -> Option<Duration> {
    if !statuses.contains(&status) || headers.contains_key(SET_COOKIE) {
        return None;
    }
    // `Vary: *`, or on a header that differs on every request (the gateway's request id or
    // trace): no request would ever match.
    let names = vary_names(headers)?;
    if names
        .iter()
        .any(|n| n == "x-request-id" || n == "traceparent")
    {
        return None;
    }
    let is_event_stream = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        });
    if is_event_stream {
        return None;
    }
    let directives = Directives::of(headers);
    if directives.no_store || directives.private || directives.no_cache {
        return None;
    }
    let lifetime = match directives.s_maxage.or(directives.max_age) {
        Some(seconds) => Duration::from_secs(seconds),
        None => match header_date(headers, EXPIRES) {
            // An Expires that cannot be read means "already expired" (RFC 9111 §5.3).
            Some(Ok(expires)) => {
                let date = header_date(headers, DATE)
                    .and_then(Result::ok)
                    .unwrap_or(now);
                expires.duration_since(date).unwrap_or(Duration::ZERO)
            }
            Some(Err(())) => Duration::ZERO,
            None => cap,
        },
    };
    let remaining = lifetime.saturating_sub(Duration::from_secs(age(headers)));
    let ttl = remaining.min(cap);
    (!ttl.is_zero()).then_some(ttl)
}

/// The response's own `Age` in seconds (0 when absent or unreadable).
pub fn age(headers: &HeaderMap) -> u64 {
    headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The request headers a response varies on, lowercase; `None` for `Vary: *` (never stored).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        let Ok(value) = value.to_str() else {
            return None;
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// `Cache-Control` directives that matter here, from every `Cache-Control` header.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

impl Directives {
    fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable directives: be safe, store nothing.
                d.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, argument) = match directive.split_once('=') {
                    Some((name, argument)) => {
                        (name.trim(), Some(argument.trim().trim_matches('"')))
                    }
                    None => (directive.trim(), None),
                };
                let seconds = || argument.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    // `no-cache="set-cookie"` and `private="x"` name fields; treated as whole.
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    // A malformed max-age counts as 0 (stale), never as "no limit".
                    "max-age" => d.max_age = Some(seconds().unwrap_or(0)),
                    "s-maxage" => d.s_maxage = Some(seconds().unwrap_or(0)),
                    _ => {}
                }
            }
        }
        d
    }
}

fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<Result<SystemTime, ()>> {
    let value = headers.get(name)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .ok_or(()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const CAP: Duration = Duration::from_secs(60);

    fn ttl(status: u16, pairs: &[(&str, &str)]) -> Option<u64> {
        let now = httpdate::parse_http_date("Fri, 04 Dec 2026 12:00:00 GMT").unwrap();
        storable_for(status, &headers(pairs), &[200], CAP, now).map(|d| d.as_secs())
    }

    #[test]
    fn requests_use_the_cache_only_when_safe() {
        let get = Method::GET;
        let none = headers(&[]);
        assert_eq!(request_use(&get, &none), RequestUse::Lookup);
        assert_eq!(request_use(&Method::HEAD, &none), RequestUse::Lookup);
        assert_eq!(request_use(&Method::POST, &none), RequestUse::Bypass);
        assert!(has_credentials(&headers(&[("authorization", "Bearer x")])));
        assert!(has_credentials(&headers(&[("cookie", "a=b")])));
        assert!(!has_credentials(&none));
        for refresh in [
            ("cache-control", "no-cache"),
            ("cache-control", "max-age=0"),
            ("pragma", "no-cache"),
        ] {
            assert_eq!(request_use(&get, &headers(&[refresh])), RequestUse::Refresh);
        }
        let no_store = headers(&[("cache-control", "No-Store")]);
        assert_eq!(request_use(&get, &no_store), RequestUse::Bypass);
    }

    #[test]
    fn freshness_comes_from_s_maxage_max_age_or_expires_capped() {
        assert_eq!(ttl(200, &[]), Some(60), "no freshness: the cap");
        assert_eq!(ttl(200, &[("cache-control", "max-age=10")]), Some(10));
        assert_eq!(
            ttl(200, &[("cache-control", "public, max-age=600")]),
            Some(60)
        );
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=10, s-maxage=20")]),
            Some(20)
        );
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=10"), ("age", "4")]),
            Some(6)
        );
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=10"), ("age", "10")]),
            None
        );
        assert_eq!(ttl(200, &[("cache-control", "max-age=0")]), None);
        assert_eq!(ttl(200, &[("cache-control", "max-age=oops")]), None);
        let date = ("date", "Fri, 04 Dec 2026 12:00:00 GMT");
        assert_eq!(
            ttl(200, &[date, ("expires", "Fri, 04 Dec 2026 12:00:30 GMT")]),
            Some(30)
        );
        assert_eq!(
            ttl(200, &[date, ("expires", "Fri, 04 Dec 2026 11:00:00 GMT")]),
            None
        );
        assert_eq!(
            ttl(200, &[("expires", "0")]),
            None,
            "an unreadable Expires is expired"
        );
        // max-age wins over Expires.
        assert_eq!(
            ttl(
                200,
                &[
                    date,
                    ("expires", "Fri, 04 Dec 2026 11:00:00 GMT"),
                    ("cache-control", "max-age=5")
                ]
            ),
            Some(5)
        );
    }

    #[test]
    fn what_is_never_stored() {
        for pairs in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "private")],
            &[("cache-control", "no-cache")],
            &[("cache-control", "max-age=10, private=\"x\"")],
            &[("set-cookie", "a=b")],
            &[("vary", "*")],
            &[("vary", "accept, *")],
            &[("vary", "Traceparent")],
            &[("vary", "accept, x-request-id")],
            &[("content-type", "text/event-stream; charset=utf-8")],
        ] {
            assert_eq!(ttl(200, pairs), None, "{pairs:?}");
        }
        assert_eq!(ttl(404, &[]), None, "only the configured statuses");
        assert_eq!(ttl(206, &[]), None);
    }

    #[test]
    fn vary_names_are_collected_once() {
        let names = vary_names(&headers(&[
            ("vary", "Accept-Encoding, accept"),
            ("vary", "accept-encoding"),
        ]))
        .unwrap();
        assert_eq!(names, ["accept-encoding", "accept"]);
        assert_eq!(vary_names(&headers(&[])).unwrap(), Vec::<HeaderName>::new());
        assert!(vary_names(&headers(&[("vary", "*")])).is_none());
    }
}
