//! The request path: `handle(request) -> response`, top to bottom.
//!
//! ```text
//! request id ─► framing and header-size checks ─► ops endpoint? ─► normalise path ─► route
//!   ─► overload shedding ─► IP lists ─► method ─► auth ─► rate limit
//!   ─► body limit (Content-Length) ─► upstream request headers (hop-by-hop removed,
//!   X-Forwarded-*, x-request-id, traceparent, route header edits, identity)
//!   ─► cache lookup (a hit is answered here) ─► pick endpoint
//!   ─► send with the response timeout ─► response headers cleaned and edited
//!   (event streams: no-cache, no proxy buffering, heartbeats)
//!   ─► stream body (copied into the cache on a storable miss)
//! ```
//!
//! Every answer the gateway makes itself is a [`GatewayError`] turned into JSON in one place;
//! when the request still has an unread body, that answer also closes the connection, so an
//! unread body can never be parsed as the next request. Bodies are streamed both ways and never
//! collected ([`body`]).

pub mod body;
mod checks;
mod forward;

pub use checks::{head_framing, BodyFraming, HeadFraming};
pub mod client;
pub mod headers;
pub(crate) mod idle;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{HOST, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::auth::{without_query_param, TokenSources, ACCESS_TOKEN_PARAM};
use crate::cache::{CacheRequest, Lookup, Outcome, X_CACHE};
use crate::config::HeaderOps;
use crate::error::{ErrorKind, GatewayError};
use crate::observe::{Exchange, ExchangeStart};
use crate::ratelimit::{client_key, Decision};
use crate::realtime::{sse, ws};
use crate::router::{normalize_path, Routed};
use crate::runtime::Runtime;
use crate::server::{ConnActivity, Role, StreamHost};
use crate::upstream::StreamKind;
use body::{GatewayBody, UnsentBody};
use checks::{check_framing, content_length, request_authority};
use forward::{forward, Outgoing};
use headers::{Forwarded, X_REQUEST_ID};

/// What the server knows about the connection a request came in on.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    pub activity: Arc<ConnActivity>,
    /// The peer's IP and the local port as header values, rendered once per connection.
    pub peer_header: HeaderValue,
    pub port_header: HeaderValue,
    /// Where a WebSocket bridge started on this connection runs.
    pub streams: StreamHost,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        local_port: u16,
        tls: bool,
        activity: Arc<ConnActivity>,
        streams: StreamHost,
    ) -> Self {
        ConnInfo {
            streams,
            peer_header: HeaderValue::from_str(&headers::canonical(peer.ip()).to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            port_header: HeaderValue::from(local_port),
            peer,
            tls,
            activity,
        }
    }
}

/// Answers one request on the public listener. Every failure is an answer too, so the
/// error type is `Infallible`: hyper's service takes this future as it is, without an async
/// block around it that would be one more copy of it per request.
///
/// Not an `async fn`, nor is anything on the request path that it awaits with the request
/// in its arguments (`serve_route`, `forward`, `send`, `ConnPool::send`): an `async fn` keeps
/// its arguments twice in its future (as passed, and as the body's locals), and each future is
/// copied whole into the one awaiting it (`bench/instructions`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn handle(
    req: Request<Incoming>,
    runtime: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    role: Role,
) -> impl Future<Output = Result<Response<GatewayBody>, Infallible>> {
    async move {
        let (rt, conn) = (&runtime, &*conn);
        let request_id = headers::request_id(req.headers());
        let peer_trusted = headers::is_trusted(conn.peer.ip(), &rt.trusted_proxies);
        // Kept apart from `req`: routing borrows the path while the request moves on.
        let request_uri = req.uri().clone();
        let client_ip = headers::client_ip(
            conn.peer.ip(),
            peer_trusted,
            req.headers(),
            &rt.trusted_proxies,
        );
        let start = ExchangeStart {
            request_id,
            method: req.method().clone(),
            uri: request_uri.clone(),
            client: client_ip,
            started: Instant::now(),
            access_log: rt.access_log,
            in_flight: Some(conn.activity.begin(req.version() == Version::HTTP_2)),
            metrics: rt.metrics.enabled.then(|| rt.metrics.clone()),
        };
        let unmatched = || rt.metrics.unmatched.clone();
        let has_body = !req.body().is_end_stream();
        if conn.activity.take_ambiguous_framing() {
            let error = GatewayError::client(
                ErrorKind::BadRequest,
                "both Content-Length and Transfer-Encoding are present",
            )
            .closing();
            return Ok(refuse(error, Exchange::new(start, unmatched()), has_body));
        }
        if let Err(error) = check_framing(req.headers(), rt.max_header_bytes, &req) {
            return Ok(refuse(error, Exchange::new(start, unmatched()), has_body));
        }
        let serves_admin = role == Role::Admin || !rt.admin_separate;
        if serves_admin && crate::admin::is_admin_path(req.uri().path()) {
            let exchange = Exchange::new(start, rt.metrics.admin.clone());
            // The scheme the browser used: ours, or a TLS-terminating proxy's in front of us.
            let https = conn.tls
                || (peer_trusted
                    && req
                        .headers()
                        .get("x-forwarded-proto")
                        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https")));
            let admin = crate::admin::AdminRequest {
                https,
                stop: conn.streams.draining.clone(),
                activity: conn.activity.clone(),
                peer: conn.peer.ip(),
            };
            // Boxed: the ops endpoints' futures (login, feed, purge) are large, and inlined they
            // would make every proxied request's future as large, copied on every move.
            return Ok(match Box::pin(crate::admin::handle(req, rt, admin)).await {
                Ok(response) => finish(response, exchange),
                Err(error) => refuse(error, exchange, has_body),
            });
        }
        if role == Role::Admin {
            let error = GatewayError::client(
                ErrorKind::RouteNotFound,
                "the admin listener serves only ops endpoints",
            );
            return Ok(refuse(error, Exchange::new(start, unmatched()), has_body));
        }
        let path = match normalize_path(request_uri.path()) {
            Ok(path) => path,
            Err(e) => {
                let error = GatewayError::client(ErrorKind::BadRequest, e.to_string());
                return Ok(refuse(error, Exchange::new(start, unmatched()), has_body));
            }
        };
        // One authority per request, used for routing, X-Forwarded-Host and preserve_host alike.
        let authority = match request_authority(&req) {
            Ok(authority) => authority,
            Err(error) => return Ok(refuse(error, Exchange::new(start, unmatched()), has_body)),
        };
        let host = match &authority {
            // `good.example.` is `good.example` (the root label's dot, RFC 1034 §3.1).
            Some(authority) if rt.router.has_host_routes() => {
                let host = authority.host();
                Some(host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase())
            }
            _ => None,
        };
        let routed = match rt.router.route(host.as_deref(), &path) {
            Ok(routed) => routed,
            Err(error) => return Ok(refuse(error, Exchange::new(start, unmatched()), has_body)),
        };
        let policy = routed.policy.clone();
        let exchange = Exchange::new(start, policy.stats.clone());
        let admission = Admission {
            routed,
            path: &path,
            request_uri: &request_uri,
            client_ip,
            peer_trusted,
            authority,
            has_body,
        };
        // The rate limit's headers go on every answer once the request was counted.
        let mut limit = None;
        let Some(cors) = &policy.access.cors else {
            let mut response = serve_route(req, rt, conn, admission, exchange, &mut limit).await;
            if let Some(limit) = limit {
                limit.set_headers(response.headers_mut());
            }
            return Ok(response);
        };
        // CORS: the gateway answers preflights itself, and owns the CORS headers of every other
        // answer on the route, its own errors included (so scripts can read a 401 or 429).
        let origin = crate::cors::allowed_origin(cors, req.headers());
        if crate::cors::is_preflight(req.method(), req.headers()) && admission.ip_admitted() {
            return Ok(match crate::cors::preflight(cors, req.headers()) {
                Ok(response) => finish(response, exchange),
                Err(error) => {
                    let mut response = refuse(error, exchange, has_body);
                    crate::cors::decorate(cors, None, response.headers_mut());
                    response
                }
            });
        }
        let mut response = serve_route(req, rt, conn, admission, exchange, &mut limit).await;
        if let Some(limit) = limit {
            limit.set_headers(response.headers_mut());
        }
        crate::cors::decorate(cors, origin, response.headers_mut());
        Ok(response)
    }
}

/// What was settled about a request before its route's own rules apply.
struct Admission<'a> {
    routed: Routed<'a>,
    /// The normalised request path.
    path: &'a str,
    request_uri: &'a Uri,
    client_ip: IpAddr,
    peer_trusted: bool,
    authority: Option<Authority>,
    has_body: bool,
}

impl Admission<'_> {
    fn ip_admitted(&self) -> bool {
        // `::ffff:10.0.0.1` from a dual-stack listener is matched as 10.0.0.1.
        let client = headers::canonical(self.client_ip);
        self.routed.policy.access.admits(client)
    }
}

/// A routed request: the route's access rules (IP lists, methods, auth), then the upstream.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice (see `proxy::handle`)"
)]
fn serve_route<'a>(
    mut req: Request<Incoming>,
    rt: &'a Runtime,
    conn: &'a ConnInfo,
    admission: Admission<'a>,
    exchange: Arc<Exchange>,
    limit: &'a mut Option<Decision>,
) -> impl Future<Output = Response<GatewayBody>> + 'a {
    async move {
        let has_body = admission.has_body;
        match rt.pressure.admit() {
            Ok(slot) => exchange.hold_pressure_slot(slot),
            Err(error) => return refuse(error, exchange, has_body),
        }
        if !admission.ip_admitted() {
            let error = GatewayError::client(
                ErrorKind::Forbidden,
                "this client address may not use this route",
            );
            return refuse(error, exchange, has_body);
        }
        let Admission {
            routed,
            path,
            request_uri,
            client_ip,
            peer_trusted,
            authority,
            ..
        } = admission;
        let policy = &routed.policy;
        let access = &policy.access;
        if !policy.allows(req.method()) {
            let error = GatewayError::client(
                ErrorKind::MethodNotAllowed,
                format!("{} is not allowed on this route", req.method()),
            )
            .with_allow(policy.allow.clone());
            return refuse(error, exchange, has_body);
        }
        let upgrade = ws::is_upgrade(req.headers());
        if policy.websocket_only && !upgrade {
            let error = GatewayError::client(
                ErrorKind::BadRequest,
                "this route takes WebSocket upgrades only",
            );
            return refuse(error, exchange, has_body);
        }
        // Browsers cannot give a WebSocket an Authorization header: upgrades may always bring
        // the token in the query, or in the `[websocket] token_cookie`.
        let token_query = access.token_query || upgrade;
        let upgrade_cookie = rt
            .config
            .websocket
            .token_cookie
            .as_deref()
            .filter(|_| upgrade);
        // A cookie is sent by the browser whoever made the page: it counts only for reads and
        // upgrades from this gateway's own origin or one the route's CORS allows (no CSRF, no
        // cross-site WebSocket hijacking).
        let cookie_allowed = (upgrade || matches!(*req.method(), Method::GET | Method::HEAD))
            && same_or_allowed_origin(req.headers(), authority.as_ref(), access);
        let sources = TokenSources {
            query: request_uri.query().filter(|_| token_query),
            cookie: access
                .token_cookie
                .as_deref()
                .or(upgrade_cookie)
                .filter(|_| cookie_allowed),
        };
        let identity = match rt.auth.authenticate(access, req.headers(), sources).await {
            Ok(identity) => identity,
            Err(error) => return refuse(error, exchange, has_body),
        };
        if let Some(named) = &policy.rate_limit {
            let key = client_key(
                &named.policy.key,
                client_ip,
                req.headers(),
                identity.as_deref(),
            );
            let decision = rt.limiter.check(named, key).await;
            let refused = (!decision.allowed()).then(|| decision.refusal());
            *limit = Some(decision);
            if let Some(error) = refused {
                policy.stats.count_rate_limited();
                // A small body is read and dropped, so the 429 keeps the connection (and is not
                // lost to a reset); a larger one closes it.
                let drained = has_body && drain_small_body(req).await;
                return refuse(error, exchange, has_body && !drained);
            }
        }
        // A WebSocket: the client's handshake is checked now, its connection taken over later.
        let client_upgrade = if upgrade {
            match ws::check_client_handshake(req.method(), req.version(), req.headers()) {
                Ok(key) => Some((key, hyper::upgrade::on(&mut req))),
                Err(error) => return refuse(error, exchange, has_body),
            }
        } else {
            None
        };
        if let Some(length) = content_length(req.headers()) {
            if length > rt.max_request_body {
                let error = GatewayError::client(
                    ErrorKind::PayloadTooLarge,
                    format!("request body exceeds {} bytes", rt.max_request_body),
                );
                return refuse(error, exchange, has_body);
            }
        }
        let service = &policy.service;
        let hash_key = service
            .hash_key
            .as_ref()
            .and_then(|key| headers::hash_key(key, req.headers(), client_ip));

        let (mut parts, incoming) = req.into_parts();
        // Only a caching route needs it as a key (one allocation fewer everywhere else).
        let cache_authority = match (&rt.cache, &policy.cache, &authority) {
            (Some(_), Some(_), Some(a)) => a.as_str().to_ascii_lowercase(),
            _ => String::new(),
        };
        let client_host = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let mut upstream_headers = std::mem::take(&mut parts.headers);
        // Room for the headers set below (forwarding, request id, trace, Host) at once, not
        // in two or three rehashing steps.
        upstream_headers.reserve(8);
        headers::remove_hop_by_hop(&mut upstream_headers);
        if parts.version == Version::HTTP_2 {
            headers::join_cookies(&mut upstream_headers);
        }
        // Route edits first: the headers the gateway owns (identity, forwarding, request id,
        // trace) are set after them, so no route can remove or forge those.
        apply_header_ops(&mut upstream_headers, &policy.request_headers);
        rt.auth.strip_credentials(&mut upstream_headers, access);
        if let Some(identity) = &identity {
            rt.auth.apply(identity, &mut upstream_headers);
        }
        headers::set_forwarded(
            &mut upstream_headers,
            &Forwarded {
                peer: &conn.peer_header,
                peer_trusted,
                proto: if conn.tls { "https" } else { "http" },
                host: client_host.as_ref(),
                port: &conn.port_header,
            },
        );
        // A token that came in the query goes no further than the gateway.
        let stripped_query = (token_query
            && request_uri
                .query()
                .is_some_and(|q| q.contains(ACCESS_TOKEN_PARAM)))
        .then(|| without_query_param(request_uri.query(), ACCESS_TOKEN_PARAM));
        let query = match &stripped_query {
            Some(stripped) => stripped.as_deref(),
            None => request_uri.query(),
        };
        // The response cache, asked with the request as the upstream will get it: a hit is
        // answered here; a miss goes on and may fill it.
        let mut cache_ticket = None;
        let mut x_cache = None;
        // Asked before the per-request headers (request id, trace) are set: a hit needs none.
        let cacheable = (&rt.cache, &policy.cache, client_upgrade.is_none());
        if let (Some(cache), Some(cache_policy), true) = cacheable {
            let lookup = if has_body {
                // A GET with a body is not the plain read the cache is for.
                Lookup::Bypass
            } else {
                let request = CacheRequest {
                    method: &parts.method,
                    scheme: if conn.tls { "https" } else { "http" },
                    authority: &cache_authority,
                    path,
                    query,
                    headers: &upstream_headers,
                    identified: identity.is_some(),
                };
                // Boxed, for the same reason: the wait on another fill is large and rare.
                Box::pin(cache.lookup(cache_policy, &request, policy.response_timeout)).await
            };
            match lookup {
                Lookup::Hit(entry) => {
                    policy.stats.cache.count(Outcome::Hit);
                    return finish(entry.response(&parts.method), exchange);
                }
                Lookup::Miss(ticket) => {
                    x_cache = Some(Outcome::Miss);
                    cache_ticket = Some(ticket);
                }
                Lookup::Bypass => x_cache = Some(Outcome::Bypass),
            }
        }
        upstream_headers.insert(X_REQUEST_ID, exchange.request_id.clone());
        headers::set_traceparent(&mut upstream_headers);
        match (policy.preserve_host, client_host) {
            (true, Some(host)) => {
                upstream_headers.insert(HOST, host);
            }
            // The client sets Host from the URI's authority when none is given.
            _ => {
                upstream_headers.remove(HOST);
            }
        }
        if let Some((client_key, client_upgrade)) = client_upgrade {
            let target = if policy.websocket_only {
                ws::target_from_query(request_uri.query())
            } else {
                Ok((
                    routed.forward_path.into_owned(),
                    without_query_param(request_uri.query(), ACCESS_TOKEN_PARAM),
                ))
            };
            let (path, query) = match target {
                Ok(target) => target,
                Err(error) => return refuse(error, exchange, false),
            };
            let path_and_query = match query {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            // Boxed: the handshake's state is several KiB, and inline it would make every
            // request's future that much larger (hyper moves it; bench/instructions).
            let upstream = Box::pin(ws::connect_upstream(
                service,
                &path_and_query,
                upstream_headers,
                client_key,
                hash_key,
                policy.response_timeout,
            ))
            .await;
            let (accepted, upstream_headers) = match upstream {
                Ok(accepted) => accepted,
                Err(error) => return refuse(error, exchange, false),
            };
            conn.activity.upgraded();
            let settings = ws::Settings::new(&rt.config.websocket);
            let request_id = exchange.request_id.clone();
            ws::start(
                client_upgrade,
                accepted,
                settings,
                conn.streams.clone(),
                request_id,
            );
            let mut response = ws::switching_protocols(upstream_headers);
            apply_header_ops(response.headers_mut(), &policy.response_headers);
            return finish(response, exchange);
        }
        if !incoming.is_end_stream() && incoming.size_hint().exact().is_none() {
            // The client's own Transfer-Encoding went with the hop-by-hop headers. Say it again:
            // without it hyper would send a GET or HEAD with no body at all.
            upstream_headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        let outgoing = Outgoing {
            method: parts.method,
            headers: upstream_headers,
            body: (!incoming.is_end_stream()).then(|| UnsentBody::new(incoming)),
            forward_path: &routed.forward_path,
            query,
            hash_key,
            response_timeout: policy.response_timeout,
            idle_timeout: policy.idle_timeout,
            max_request_body: rt.max_request_body,
        };
        let forward::Forwarded {
            response,
            mut lease,
        } = match forward(service, outgoing, &exchange).await {
            Ok(forwarded) => forwarded,
            Err(error) => {
                // A body not (wholly) sent upstream is unread: the answer closes the connection.
                let unread_body = has_body && !exchange.is_request_body_done();
                return refuse(error, exchange, unread_body);
            }
        };

        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // We never asked for an upgrade (Upgrade is hop-by-hop), so this upstream is broken.
            let error = GatewayError::upstream(
                ErrorKind::UpstreamUnavailable,
                "the upstream switched protocols unasked",
            );
            return refuse(error, exchange, false);
        }
        let (mut parts, upstream_body) = response.into_parts();
        // Judged on the upstream's own headers (before route edits, which may not make a private
        // answer shareable), while its framing is still there to see.
        let mut fill = cache_ticket
            .and_then(|ticket| ticket.start(parts.status, parts.version, &parts.headers));
        headers::remove_hop_by_hop(&mut parts.headers);
        // Asked once, after hop-by-hop removal: a Content-Type the upstream named in `Connection`
        // is gone, and what is left is not an event stream.
        let event_stream = sse::is_event_stream(&parts.headers);
        // Events are counted (and heartbeats sent) only where the bytes are the lines, not in a
        // compressed stream; heartbeats only where no length was declared, never past it.
        let plain_events = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let heartbeat = policy
            .heartbeat
            .filter(|_| !parts.headers.contains_key(http::header::CONTENT_LENGTH));
        if event_stream {
            sse::set_stream_headers(&mut parts.headers);
            exchange.release_pressure_slot();
            lease.set_kind(StreamKind::Sse);
        }
        apply_header_ops(&mut parts.headers, &policy.response_headers);
        if let Some(outcome) = x_cache {
            policy.stats.cache.count(outcome);
            parts.headers.insert(X_CACHE, outcome.header());
        }
        // Stored as the client gets it (route edits applied), without the per-request headers.
        if let Some(fill) = &mut fill {
            fill.keep_headers(&parts.headers);
        }
        parts
            .headers
            .insert(X_REQUEST_ID, exchange.request_id.clone());
        exchange.set_status(parts.status.as_u16());
        let mut body = GatewayBody::upstream(upstream_body, policy.idle_timeout);
        if let Some(fill) = fill {
            body = body.with_fill(fill);
        }
        if let Some(events) = event_stream
            .then(|| sse::EventStream::new(heartbeat, plain_events))
            .flatten()
        {
            body = body.with_event_stream(events);
        }
        let body = body.with_lease(lease).with_exchange(exchange);
        Response::from_parts(parts, body)
    }
}

/// Reads and drops a request body of up to 64 KiB (declared, or chunked and ending within
/// that), within 200 ms. True when it was read to the end.
async fn drain_small_body(req: Request<Incoming>) -> bool {
    const MAX_DRAIN: u64 = 64 * 1024;
    if content_length(req.headers()).is_some_and(|length| length > MAX_DRAIN) {
        return false;
    }
    let body = http_body_util::Limited::new(req.into_body(), MAX_DRAIN as usize);
    let read = http_body_util::BodyExt::collect(body);
    matches!(
        tokio::time::timeout(std::time::Duration::from_millis(200), read).await,
        Ok(Ok(_))
    )
}

/// No `Origin` (not a cross-site browser request), the request's own authority, or an origin
/// the route's CORS allows.
fn same_or_allowed_origin(
    headers: &HeaderMap,
    authority: Option<&Authority>,
    access: &crate::config::RouteAccess,
) -> bool {
    let Some(same) = headers::origin_is(headers, authority.map(Authority::as_str)) else {
        return true;
    };
    same || access
        .cors
        .as_ref()
        .is_some_and(|cors| crate::cors::allowed_origin(cors, headers).is_some())
}

/// A gateway-made error answer, logged under the request's exchange.
fn refuse(
    error: GatewayError,
    exchange: Arc<Exchange>,
    unread_body: bool,
) -> Response<GatewayBody> {
    let error = if unread_body { error.closing() } else { error };
    let response = error.to_response(&exchange.request_id);
    finish(response, exchange)
}

fn finish(mut response: Response<GatewayBody>, exchange: Arc<Exchange>) -> Response<GatewayBody> {
    exchange.set_status(response.status().as_u16());
    response
        .headers_mut()
        .insert(X_REQUEST_ID, exchange.request_id.clone());
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.with_exchange(exchange))
}

fn apply_header_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value) in &ops.set {
        headers.insert(name.clone(), value.clone());
    }
}
