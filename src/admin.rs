//! Ops endpoints: `/healthz` (the process is alive), `/readyz` (every service has an
//! endpoint that can take traffic: healthy, breaker not open), `/admin/stats` and
//! `/gateway/stats` (see [`stats`]). They answer on the public listener, or only on
//! `admin_listen` when that is set. The stats name internal upstream URLs, so when auth is
//! required they need a valid token like any proxied route (DESIGN §1.3); the probes stay
//! open for orchestrators. Metrics and the dashboard arrive with issue #7.

mod stats;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::json;

use crate::error::{ErrorKind, GatewayError};
use crate::proxy::body::GatewayBody;
use crate::runtime::Runtime;

/// The ops paths this module answers.
pub fn is_admin_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/admin/stats" | "/gateway/stats"
    )
}

/// Answers an ops request, or `None` when `path` is not one.
pub fn handle(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    runtime: &Runtime,
) -> Option<Result<Response<GatewayBody>, GatewayError>> {
    if !is_admin_path(path) {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        let error = GatewayError::client(
            ErrorKind::MethodNotAllowed,
            format!("{path} answers GET and HEAD only"),
        )
        .with_allow("GET, HEAD".to_owned());
        return Some(Err(error));
    }
    if matches!(path, "/admin/stats" | "/gateway/stats") {
        if let Err(error) = runtime.auth.authenticate(headers) {
            return Some(Err(error));
        }
    }
    Some(Ok(match path {
        "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/admin/stats" => json_response(StatusCode::OK, stats::admin_stats(runtime)),
        "/gateway/stats" => json_response(StatusCode::OK, stats::gateway_stats(runtime)),
        _ => readyz(runtime),
    }))
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
