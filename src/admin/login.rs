//! The admin login: a form takes a token (or API key), the gateway verifies it exactly as it
//! would a bearer header, and keeps it in a cookie the browser sends back on `/admin` paths
//! only: HttpOnly (scripts cannot read it), SameSite=Strict (no other site can make the
//! browser send it), Secure when the browser came over https (ours or a trusted proxy's),
//! expiring with the token. A form posted from another origin is refused, so no site can log
//! a browser in as someone else.
//!
//! Every location is relative and the cookie has no `Path`, so the browser scopes it to the
//! directory of the login page: behind a proxy that serves the gateway under a prefix
//! (`/ops/admin/login`), the pages and the cookie follow the prefix with no setting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{CONTENT_TYPE, HOST, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{html_response, redirect};
use crate::auth::{ADMIN_COOKIE, MAX_TOKEN_BYTES};
use crate::proxy::body::GatewayBody;
use crate::runtime::Runtime;

const LOGIN_HTML: &str = include_str!("login.html");
/// A form is the token and a little more.
const MAX_FORM_BYTES: usize = MAX_TOKEN_BYTES * 2;
const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An API key has no expiry of its own; its cookie lasts a working day.
const API_KEY_SESSION: u64 = 8 * 3600;

pub fn page(query: Option<&str>) -> Response<GatewayBody> {
    let failed = query.is_some_and(|q| q.split('&').any(|p| p == "failed=1"));
    let message = if failed {
        "That token was not accepted: it may be expired, for another issuer, or mistyped."
    } else {
        ""
    };
    html_response(StatusCode::OK, LOGIN_HTML.replace("{{message}}", message))
}

pub async fn submit(
    req: Request<Incoming>,
    runtime: &Runtime,
    https: bool,
) -> Response<GatewayBody> {
    let failed = || redirect("login?failed=1");
    if !same_origin(&req) {
        tracing::info!("admin login refused: the form came from another origin");
        return failed();
    }
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return failed();
    }
    let read = Limited::new(req.into_body(), MAX_FORM_BYTES).collect();
    let Ok(Ok(body)) = tokio::time::timeout(FORM_READ_TIMEOUT, read).await else {
        return failed();
    };
    let body = body.to_bytes();
    let Some(token) = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.trim().to_owned())
    else {
        return failed();
    };
    // The cookie carries the token as it is: only cookie-safe characters (RFC 6265 §4.1.1).
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b));
    if !cookie_safe {
        return failed();
    }
    let identity = match runtime.auth.verify_presented(&token).await {
        Ok(identity) => identity,
        Err(error) => {
            tracing::info!(reason = %error.message, "admin login refused");
            return failed();
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let max_age = identity
        .expires_at()
        .map_or(API_KEY_SESSION, |exp| exp.saturating_sub(now));
    // From `<prefix>/admin/login` to `<prefix>/admin`.
    let mut response = redirect("../admin");
    set_cookie(&mut response, &format!("{token}; Max-Age={max_age}"), https);
    response
}

pub fn logout(req: &Request<Incoming>, https: bool) -> Response<GatewayBody> {
    let mut response = redirect("login");
    if !same_origin(req) {
        // Another site may not sign the operator out either.
        return response;
    }
    set_cookie(&mut response, "; Max-Age=0", https);
    response
}

fn set_cookie(response: &mut Response<GatewayBody>, value_and_age: &str, https: bool) {
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!("{ADMIN_COOKIE}={value_and_age}; HttpOnly; SameSite=Strict{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
}

/// The form came from this gateway's own page: a browser that says the request is
/// cross-site (`Sec-Fetch-Site`) is believed, and an `Origin`, when sent, must name this
/// host. Only the authority is compared: behind a TLS-terminating proxy the browser's
/// scheme is not ours.
fn same_origin(req: &Request<Incoming>) -> bool {
    let fetch_site = req.headers().get("sec-fetch-site").map(|v| v.as_bytes());
    if matches!(fetch_site, Some(b"cross-site" | b"same-site")) {
        return false;
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    crate::proxy::headers::origin_is(req.headers(), host).unwrap_or(true)
}
