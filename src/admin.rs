//! Ops endpoints: `/healthz` (the process is alive; never shed), `/readyz` (every service has
//! an endpoint that can take traffic: healthy, breaker not open), `/_pressure` (the overload
//! state), `/metrics` (Prometheus text, [`crate::observe::prometheus`]), `/admin/stats` and
//! `/gateway/stats` (see [`stats`]), and `/admin`, the live dashboard fed by `/admin/feed`
//! ([`feed`]). They answer on the public listener, or only on `admin_listen` when that is
//! set.
//!
//! The stats and metrics name internal upstream URLs, so with admin protection on
//! (`auth.protect_admin`, by default the seed rule: on when auth is required) they need a
//! token or API key like a proxied route; the probes stay open for orchestrators. A browser
//! cannot send a bearer header, so [`login`] turns a token typed into a form into an
//! HttpOnly, SameSite=Strict cookie for the `/admin` pages.

mod feed;
mod login;
pub mod stats;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::error::{ErrorKind, GatewayError};
use crate::proxy::body::GatewayBody;
use crate::runtime::Runtime;

const DASHBOARD_HTML: &str = include_str!("admin/dashboard.html");
const UPLOT_JS: &str = include_str!("admin/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("admin/vendor/uPlot.min.css");

/// What the connection tells the ops endpoints.
pub struct AdminRequest {
    /// The browser came over https (ours, or a trusted proxy's).
    pub https: bool,
    /// Cancelled when shutdown begins: the live feed ends then.
    pub stop: tokio_util::sync::CancellationToken,
    /// The connection, which counts its live feeds (closed, not drained, at shutdown).
    pub activity: Arc<crate::server::ConnActivity>,
    /// The client's address (its own, not a forwarded one).
    pub peer: std::net::IpAddr,
}

/// The ops paths this module answers.
pub fn is_admin_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/_pressure"
            | "/metrics"
            | "/admin"
            | "/admin/feed"
            | "/admin/cache"
            | "/admin/login"
            | "/admin/logout"
            | "/admin/stats"
            | "/gateway/stats"
    )
}

/// Answers an ops request (`path` is one of [`is_admin_path`]).
pub async fn handle(
    req: Request<Incoming>,
    runtime: &Arc<Runtime>,
    admin: AdminRequest,
) -> Result<Response<GatewayBody>, GatewayError> {
    let https = admin.https;
    let path = req.uri().path().to_owned();
    let allowed = match path.as_str() {
        "/admin/login" => "GET, HEAD, POST",
        "/admin/logout" => "POST",
        "/admin/cache" => "DELETE",
        _ => "GET, HEAD",
    };
    if !allowed.split(", ").any(|m| m == req.method().as_str()) {
        return Err(GatewayError::client(
            ErrorKind::MethodNotAllowed,
            format!("{path} answers {allowed} only"),
        )
        .with_allow(allowed.to_owned()));
    }
    if req.method() == Method::POST {
        return Ok(if path == "/admin/login" {
            login::submit(req, runtime, https).await
        } else {
            login::logout(&req, https)
        });
    }
    let protected = matches!(
        path.as_str(),
        "/admin" | "/admin/feed" | "/admin/cache" | "/admin/stats" | "/gateway/stats" | "/metrics"
    );
    if protected {
        if let Err(error) = runtime.auth.authenticate_admin(req.headers()).await {
            // A browser asking for the page goes to the login form; API clients get the 401.
            return if path == "/admin" {
                // Relative: `<prefix>/admin` → `<prefix>/admin/login`.
                Ok(redirect("admin/login"))
            } else {
                Err(error)
            };
        }
    }
    if req.method() == Method::DELETE {
        // Emptying the cache moves its load onto the upstreams: never open to anyone.
        let trusted = runtime.auth.protects_admin()
            || runtime.admin_separate
            || crate::proxy::headers::canonical(admin.peer).is_loopback();
        if !trusted {
            return Err(GatewayError::client(
                ErrorKind::Forbidden,
                "purging the cache needs admin protection (auth.protect_admin), a separate \
                 admin listener (server.admin_listen), or a request from this host",
            ));
        }
        return purge_cache(runtime, req.uri().query());
    }
    if path == "/metrics" && !runtime.metrics.enabled {
        return Err(GatewayError::client(
            ErrorKind::RouteNotFound,
            "metrics are off ([metrics] enabled = false)",
        ));
    }
    Ok(match path.as_str() {
        "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/_pressure" => json_response(StatusCode::OK, runtime.pressure.status()),
        "/metrics" => metrics_response(runtime).await,
        "/admin/feed" => feed::response(runtime.clone(), admin.stop, admin.activity.feed_opened()),
        "/admin/stats" => json_response(StatusCode::OK, stats::admin_stats(runtime)),
        "/gateway/stats" => json_response(StatusCode::OK, stats::gateway_stats(runtime)),
        "/admin" => html_response(StatusCode::OK, dashboard_page(runtime)),
        "/admin/login" => login::page(req.uri().query()),
        _ => readyz(runtime),
    })
}

/// The dashboard with its chart library inlined (the page's CSP allows nothing external).
fn dashboard_page(runtime: &Runtime) -> String {
    let logout = if runtime.auth.protects_admin() {
        "inline"
    } else {
        "none"
    };
    DASHBOARD_HTML
        .replace("{{logout}}", logout)
        .replace("{{uplot_css}}", UPLOT_CSS)
        .replace("{{uplot_js}}", UPLOT_JS)
}

/// `DELETE /admin/cache?prefix=/p`: drops the entries whose path starts with `/p` (every
/// entry without a prefix).
fn purge_cache(
    runtime: &Runtime,
    query: Option<&str>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let prefix = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "prefix")
            .map(|(_, value)| value.into_owned())
    });
    if prefix.as_deref().is_some_and(|p| !p.starts_with('/')) {
        return Err(GatewayError::client(
            ErrorKind::BadRequest,
            "prefix must be a path starting with /",
        ));
    }
    let purged = runtime
        .cache
        .as_ref()
        .map_or(0, |cache| cache.purge(prefix.as_deref()));
    tracing::info!(
        prefix = prefix.as_deref().unwrap_or("*"),
        purged,
        "cache purged"
    );
    Ok(json_response(
        StatusCode::OK,
        json!({"purged": purged, "prefix": prefix}),
    ))
}

async fn metrics_response(runtime: &Arc<Runtime>) -> Response<GatewayBody> {
    // A big gateway's scrape takes milliseconds to render: not on a request worker.
    let rt = runtime.clone();
    let text = tokio::task::spawn_blocking(move || crate::observe::prometheus::render(&rt))
        .await
        .unwrap_or_default();
    let mut response = Response::new(GatewayBody::full(Bytes::from(text)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::observe::prometheus::CONTENT_TYPE),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn readyz(runtime: &Runtime) -> Response<GatewayBody> {
    let services: serde_json::Map<String, serde_json::Value> = runtime
        .services
        .iter()
        .map(|(name, service)| {
            (
                name.clone(),
                json!({"endpoints": service.pool.endpoints().len(), "usable": service.is_ready()}),
            )
        })
        .collect();
    let ready = runtime.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        json!({"status": if ready { "ready" } else { "not_ready" }, "services": services}),
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An admin page: no caching, no framing, scripts and styles only from the page itself.
pub(crate) fn html_response(status: StatusCode, html: String) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub(crate) fn redirect(to: &'static str) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
