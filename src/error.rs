//! The gateway's own error answers: one type that knows which side failed and whether a
//! retry is safe, and one function ([`GatewayError::to_response`]) that turns it into the
//! JSON shape every client sees:
//!
//! ```json
//! {"error":"<code>","message":"<human text>","request_id":"<id>"}
//! ```
//!
//! Every status and code a client can get from sluice itself is listed in [`ErrorKind`], so
//! this file is the place to grep. `Display` is for logs.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::proxy::body::GatewayBody;

/// What went wrong, as the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    RouteNotFound,
    UnknownService,
    MethodNotAllowed,
    BadRequest,
    Unauthorized,
    Forbidden,
    RequestTimeout,
    PayloadTooLarge,
    HeadersTooLarge,
    RateLimited,
    UpstreamUnavailable,
    NoHealthyUpstream,
    Overloaded,
    UpstreamTimeout,
}

/// Who caused it: decides 4xx vs 5xx in logs and, later, whether a breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or was unreachable.
    Upstream,
    /// Our own state (no usable endpoint, overload).
    Internal,
}

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub side: Side,
    /// True when the request never reached an upstream, so sending it again is safe.
    pub retryable: bool,
    pub message: Cow<'static, str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// For 405: the methods the route accepts.
    pub allow: Option<String>,
    /// Close the client connection after answering (unread or unframeable request body).
    pub close: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: &'a str,
    request_id: &'a str,
}

// === impl ErrorKind ===

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::RouteNotFound | ErrorKind::UnknownService => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::NoHealthyUpstream | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::RouteNotFound => "route_not_found",
            ErrorKind::UnknownService => "unknown_service",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::NoHealthyUpstream => "no_healthy_upstream",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
        }
    }
}

// === impl GatewayError ===

impl GatewayError {
    pub fn new(kind: ErrorKind, side: Side, message: impl Into<Cow<'static, str>>) -> Self {
        GatewayError {
            kind,
            side,
            retryable: false,
            message: message.into(),
            retry_after: None,
            allow: None,
            close: false,
        }
    }

    /// A refusal of the client's request.
    pub fn client(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        GatewayError::new(kind, Side::Downstream, message)
    }

    pub fn upstream(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        GatewayError::new(kind, Side::Upstream, message)
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn with_allow(mut self, allow: String) -> Self {
        self.allow = Some(allow);
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The one place a gateway error becomes a response.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<GatewayBody> {
        let body = ErrorBody {
            error: self.kind.code(),
            message: &self.message,
            request_id: request_id.to_str().unwrap_or_default(),
        };
        // Serialising a struct of strings cannot fail; fall back to an empty object regardless.
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::new(GatewayBody::full(Bytes::from(json)));
        *response.status_mut() = self.kind.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(crate::proxy::headers::X_REQUEST_ID, request_id.clone());
        if self.kind == ErrorKind::Unauthorized {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            headers.insert(http::header::ALLOW, allow);
        }
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?} side): {}",
            self.kind.code(),
            self.side,
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}
