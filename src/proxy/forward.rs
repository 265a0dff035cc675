//! Sending one request upstream: pick an endpoint, send, classify what came back, and maybe
//! try again elsewhere.
//!
//! ```text
//! pick (balancer + breaker) ─► send with the response timeout ─► response head?
//!   yes ─► 5xx in failure_statuses counts against the endpoint, anything else for it
//!   no  ─► the client's own fault (body too large, stalled, malformed)? answer it, count nothing
//!       ─► connect error, reset before any response, or an invalid response
//!          ─► count a failure ─► retry elsewhere?
//! ```
//!
//! A retry happens only when nothing of the request can have been processed twice: a connect
//! error, or a connection lost before any of the request was written, for any method; a reset
//! or an unparseable response for an idempotent one (RFC 9110 §9.2.2) — and in all cases only
//! while the body has not started to go out. It goes to an endpoint this request has not
//! tried, on a new connection, bounded by the service's `max_retries` and its retry budget;
//! never to the same endpoint again, which would only multiply the load on a failing one. Nothing reaches the client before this function
//! returns, so no retry follows response bytes.
//!
//! One case is not a retry: a reset on the first attempt over a *reused* keep-alive
//! connection is most often one the upstream closed just as we reused it. That request is
//! replayed once on a new connection to the same endpoint, without counting a failure; the
//! replay's outcome is what the breaker hears. Plain `http` endpoints have a pool of their own
//! that knows whether a connection was reused; hyper-util's legacy client (`https`) does not
//! say, so there any reset on the pooled client is treated as one on a reused connection.

use std::future::Future;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, Version};
use tokio::time::Instant;

use super::body::{
    caused_by, BodyIdleTimeout, BodyTooLarge, BoxError, ClientBodyError, RequestBody, UnsentBody,
};
use super::client::h1::{InvalidResponse, UploadStalled};
use super::client::keepalive::SendError;
use super::client::UpstreamBody;
use crate::error::{ErrorKind, GatewayError, Side};
use crate::observe::Exchange;
use crate::upstream::{Candidates, Endpoint, Lease, Outcome, Service, Unavailable};

/// Everything about the request that does not change from one attempt to the next.
pub(super) struct Outgoing<'a> {
    pub method: Method,
    pub headers: HeaderMap,
    /// `None` for a request without a body.
    pub body: Option<UnsentBody>,
    /// The path after routing (strip/rewrite), appended to the endpoint's base path.
    pub forward_path: &'a str,
    pub query: Option<&'a str>,
    pub hash_key: Option<u64>,
    pub response_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub max_request_body: u64,
}

/// A response head from the upstream, and what to hold until its body is done.
pub(super) struct Forwarded {
    pub response: Response<UpstreamBody>,
    /// The endpoint's lease: the request is in flight there until then.
    pub lease: Lease,
}

/// How one attempt ended without a response head.
enum Failure {
    Connect(BoxError),
    /// The connection was lost; `reused` when an earlier request had used it, `unsent` when
    /// it was lost before any of this request was written.
    Reset {
        error: BoxError,
        reused: bool,
        unsent: bool,
    },
    /// The upstream answered with something that is not HTTP (bad status line, conflicting
    /// lengths, ...): it got the request, so only an idempotent one may go elsewhere.
    Invalid(BoxError),
    Timeout,
    /// The upstream stopped reading the request body for the idle timeout.
    Stalled(BoxError),
}

/// Sends `out` to one of `service`'s endpoints, retrying where that is safe. On success, the
/// response head and the lease to keep until its body is done.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice (see `proxy::handle`)"
)]
pub(super) fn forward<'a>(
    service: &'a Service,
    out: Outgoing<'a>,
    exchange: &'a Arc<Exchange>,
) -> impl Future<Output = Result<Forwarded, GatewayError>> + 'a {
    async move {
        let mut rng = fastrand::Rng::new();
        let mut tried = Candidates::default();
        let mut attempt = 0u32;
        // The endpoint to replay on after a reset on a reused pooled connection (see below).
        let mut replay_on: Option<Arc<crate::upstream::Endpoint>> = None;
        let mut pooled = true;
        // Without a body the response timeout runs from now, across attempts; with one it starts
        // once the body has been sent (a stalled upload is the body's idle timeout's business).
        let deadline = Instant::now() + out.response_timeout;
        service.retry_budget.deposit();
        let mut attempts_made = 0u32;
        loop {
            // Without a body, later attempts get what is left of the shared deadline: a timeout
            // then says little about the endpoint, so the breaker does not hear of it.
            let has_full_time = out.body.is_some() || attempts_made == 0;
            attempts_made += 1;
            let now = service.clock.now_us();
            let picked = match replay_on.take().and_then(|e| e.lease(now)) {
                Some(lease) => Ok(lease),
                None => service.pool.pick(now, out.hash_key, &tried, &mut rng),
            };
            let mut lease = match picked {
                Ok(lease) => lease,
                Err(Unavailable { retry_after_secs }) => {
                    return Err(GatewayError::new(
                        ErrorKind::NoHealthyUpstream,
                        Side::Upstream,
                        format!("no usable upstream for service {}", service.name),
                    )
                    .with_retry_after(retry_after_secs));
                }
            };
            let endpoint = lease.endpoint().clone();
            let Some(target) = endpoint.url.path_and_query(out.forward_path, out.query) else {
                return Err(GatewayError::client(
                    ErrorKind::BadRequest,
                    "the request target cannot be forwarded",
                ));
            };
            let body = match &out.body {
                Some(unsent) => RequestBody::new(
                    unsent,
                    out.max_request_body,
                    out.idle_timeout,
                    exchange.clone(),
                ),
                None => RequestBody::empty(exchange.clone()),
            };
            // Retries use a new connection: the pooled one next in line may be as stale as the
            // one that just failed.
            let request = Attempt {
                method: &out.method,
                headers: &out.headers,
                body,
                target,
            };
            let send = send(service, &endpoint, request, pooled);
            let sent = if out.body.is_some() {
                let lease = &mut lease;
                let upload_then_wait = async {
                    exchange.request_body_sent().await;
                    lease.restart_clock(service.clock.now_us());
                    tokio::time::sleep(out.response_timeout).await;
                };
                tokio::select! {
                    sent = send => Some(sent),
                    () = upload_then_wait => None,
                }
            } else {
                tokio::time::timeout_at(deadline, send).await.ok()
            };
            let failure = match sent {
                Some(Ok(response)) => {
                    exchange.set_upstream(endpoint.label.clone());
                    let outcome = if service
                        .failure_statuses
                        .contains(response.status().as_u16())
                    {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    lease.record(outcome, service.clock.now_us());
                    return Ok(Forwarded { response, lease });
                }
                Some(Err(e)) => {
                    let client_error =
                        client_side(&*e.error, out.max_request_body, out.idle_timeout);
                    if let Some(error) = client_error {
                        // The client's doing: the lease goes back unrecorded.
                        exchange.set_upstream(endpoint.label.clone());
                        return Err(error);
                    }
                    if e.connect {
                        Failure::Connect(e.error)
                    } else if caused_by::<UploadStalled>(&*e.error) {
                        Failure::Stalled(e.error)
                    } else if is_invalid_response(&*e.error) {
                        Failure::Invalid(e.error)
                    } else {
                        Failure::Reset {
                            error: e.error,
                            reused: e.reused,
                            unsent: e.unsent,
                        }
                    }
                }
                None => Failure::Timeout,
            };
            let body_unsent = out.body.as_ref().is_none_or(UnsentBody::is_unsent);
            let safe_to_repeat = body_unsent
                && match &failure {
                    Failure::Connect(_) => true,
                    Failure::Reset { unsent: true, .. } => true,
                    Failure::Reset { .. } | Failure::Invalid(_) => out.method.is_idempotent(),
                    Failure::Timeout | Failure::Stalled(_) => false,
                };
            if pooled && safe_to_repeat && matches!(failure, Failure::Reset { reused: true, .. }) {
                // A reset on a reused connection is most often a keep-alive connection the
                // upstream closed just as we reused it: the endpoint is fine. Replay once on a
                // new connection to the same endpoint, outside the retry count and budget, and
                // let that attempt's outcome be the one the breaker hears.
                log_failure(exchange, &endpoint.label, &failure, true);
                drop(lease);
                replay_on = Some(endpoint);
                pooled = false;
                continue;
            }
            pooled = false;
            if matches!(failure, Failure::Timeout) && !has_full_time {
                drop(lease); // released unrecorded
            } else {
                lease.record(Outcome::Failure, service.clock.now_us());
                drop(lease);
            }
            let may_retry = attempt < service.max_retries;
            let mut retrying = false;
            if may_retry && safe_to_repeat {
                if let Some(index) = service.pool.index_of(&endpoint) {
                    tried.insert(index);
                }
                // After a reset the same endpoint may be tried again when nothing else is usable.
                let now = service.clock.now_ms();
                retrying =
                    service.pool.has_usable_except(&tried, now) && service.retry_budget.withdraw();
            }
            log_failure(exchange, &endpoint.label, &failure, retrying);
            if retrying {
                service.count_retry();
                attempt += 1;
                continue;
            }
            exchange.set_upstream(endpoint.label.clone());
            return Err(failure_error(failure, &out));
        }
    }
}

/// One attempt's request. The headers are lent, not cloned: a plain-`http` endpoint's
/// client only writes them out, so every attempt can use the same ones.
struct Attempt<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    body: RequestBody,
    /// The target in origin form.
    target: PathAndQuery,
}

/// Sends one attempt to `endpoint`: over its own keep-alive pool for plain `http` (the target
/// in origin form), else over the service's legacy client (the URI absolute, the headers a
/// copy). `pooled` false asks for a new connection.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice (see `proxy::handle`)"
)]
fn send<'a>(
    service: &'a Service,
    endpoint: &'a Endpoint,
    attempt: Attempt<'a>,
    pooled: bool,
) -> impl Future<Output = Result<Response<UpstreamBody>, SendError>> + 'a {
    async move {
        let Attempt {
            method,
            headers,
            body,
            target,
        } = attempt;
        if let Some(conns) = &endpoint.conns {
            return conns.send(method, &target, headers, body, pooled).await;
        }
        let Some(uri) = endpoint.url.uri(target) else {
            return Err(SendError {
                connect: true,
                reused: false,
                unsent: true,
                error: "the upstream URI cannot be formed".into(),
            });
        };
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers.clone();
        *request.uri_mut() = uri;
        let client = if pooled {
            &service.client
        } else {
            &service.fresh_client
        };
        match client.request(request).await {
            Ok(response) => Ok(response.map(UpstreamBody::Hyper)),
            Err(e) => Err(SendError {
                connect: e.is_connect(),
                // The legacy client does not say; see the module comment. (It sends a request
                // that found its connection closed again by itself.)
                reused: pooled,
                unsent: false,
                error: e.into(),
            }),
        }
    }
}

/// The error to answer when sending failed because of the client's body, if it did.
fn client_side(
    e: &(dyn std::error::Error + 'static),
    max_request_body: u64,
    idle_timeout: std::time::Duration,
) -> Option<GatewayError> {
    let error = if caused_by::<BodyTooLarge>(e) {
        GatewayError::client(
            ErrorKind::PayloadTooLarge,
            format!("request body exceeds {max_request_body} bytes"),
        )
    } else if caused_by::<BodyIdleTimeout>(e) {
        GatewayError::client(
            ErrorKind::RequestTimeout,
            format!("the request body stalled for {idle_timeout:?}"),
        )
    } else if caused_by::<ClientBodyError>(e) {
        GatewayError::client(
            ErrorKind::BadRequest,
            "the request body could not be read (malformed chunked encoding?)",
        )
    } else {
        return None;
    };
    Some(error.closing())
}

fn failure_error(failure: Failure, out: &Outgoing<'_>) -> GatewayError {
    match failure {
        Failure::Connect(_) => GatewayError::upstream(
            ErrorKind::UpstreamUnavailable,
            "the upstream refused the connection",
        )
        .retryable(),
        Failure::Reset { .. } => GatewayError::upstream(
            ErrorKind::UpstreamUnavailable,
            "the upstream closed the connection before responding",
        ),
        Failure::Invalid(_) => GatewayError::upstream(
            ErrorKind::UpstreamUnavailable,
            "the upstream sent an invalid HTTP response",
        ),
        Failure::Timeout => GatewayError::upstream(
            ErrorKind::UpstreamTimeout,
            format!(
                "the upstream did not respond within {:?}",
                out.response_timeout
            ),
        ),
        Failure::Stalled(_) => GatewayError::upstream(
            ErrorKind::UpstreamTimeout,
            format!(
                "the upstream read none of the request body for {:?}",
                out.idle_timeout
            ),
        ),
    }
}

fn log_failure(exchange: &Exchange, upstream: &str, failure: &Failure, retrying: bool) {
    let request_id = exchange.request_id.to_str().unwrap_or_default();
    match failure {
        Failure::Connect(e)
        | Failure::Reset { error: e, .. }
        | Failure::Invalid(e)
        | Failure::Stalled(e) => {
            tracing::warn!(
                request_id,
                upstream,
                retrying,
                error = %error_chain(&**e),
                "upstream request failed"
            )
        }
        Failure::Timeout => tracing::warn!(request_id, upstream, "upstream timed out"),
    }
}

/// Whether the upstream's response could not be parsed (as opposed to the connection being
/// lost), by our own HTTP/1.1 exchange or by hyper.
fn is_invalid_response(error: &(dyn std::error::Error + 'static)) -> bool {
    if caused_by::<InvalidResponse>(error) {
        return true;
    }
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(hyper_error) = e.downcast_ref::<hyper::Error>() {
            return hyper_error.is_parse() || hyper_error.is_parse_status();
        }
        current = e.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
