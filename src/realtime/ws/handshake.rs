//! The opening of a bridge: the client's handshake checked, the upstream's target taken from
//! `/ws/`'s `path` parameter, an endpoint picked and the upstream handshake done (reusing the
//! client's key, so the upstream's `Sec-WebSocket-Accept` is right for the client too), and
//! the client's `101` built from the upstream's. Nothing here touches a frame.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tower_service::Service as _;

use crate::auth::{without_query_param, ACCESS_TOKEN_PARAM};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::proxy::body::GatewayBody;
use crate::router::normalize_path;
use crate::upstream::{Candidates, Endpoint, Outcome, Service, StreamKind, Unavailable};

use super::Accepted;

/// Whether the request asks for a WebSocket (`Upgrade: websocket`, any case).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Checks the client's opening handshake (RFC 6455 §4.2.1) and returns its key.
pub fn check_client_handshake(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<HeaderValue, GatewayError> {
    let bad = |m: &'static str| GatewayError::client(ErrorKind::BadRequest, m);
    if version != Version::HTTP_11 {
        return Err(bad("WebSocket upgrades need HTTP/1.1"));
    }
    if method != Method::GET {
        return Err(bad("a WebSocket upgrade must be a GET"));
    }
    let asks_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks_upgrade {
        return Err(bad("Upgrade: websocket without Connection: upgrade"));
    }
    let only = |name: &str| {
        let mut values = headers.get_all(name).iter();
        values.next().filter(|_| values.next().is_none())
    };
    if only("sec-websocket-version").map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(bad("Sec-WebSocket-Version must be 13, once"));
    }
    only("sec-websocket-key")
        .filter(|k| k.len() == 24)
        .cloned()
        .ok_or_else(|| bad("Sec-WebSocket-Key is missing, repeated or malformed"))
}

/// The upstream target of `/ws/<service>?path=/p`: the percent-decoded `path` parameter, as a
/// path (normalised like a request path) and an optional query; `/` without one, as the Node
/// gateway had it (`searchParams.get('path') ?? '/'`). Only a relative path that starts with
/// `/` is accepted: nothing in it can name another host.
pub fn target_from_query(query: Option<&str>) -> Result<(String, Option<String>), GatewayError> {
    let bad = |m: String| GatewayError::client(ErrorKind::BadRequest, m);
    let Some(raw) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("path="))
    else {
        return Ok(("/".to_owned(), None));
    };
    let decoded = percent_decode(raw)
        .ok_or_else(|| bad("the path parameter is not valid percent-encoded UTF-8".to_owned()))?;
    if decoded.contains('#') {
        return Err(bad(
            "the path parameter may not carry a fragment ('#')".to_owned()
        ));
    }
    let (path, target_query) = match decoded.split_once('?') {
        // A token there would reach the upstream: it goes no further than one here would.
        Some((path, q)) => (path, without_query_param(Some(q), ACCESS_TOKEN_PARAM)),
        None => (decoded.as_str(), None),
    };
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(bad(format!(
            "the path parameter must be a relative path starting with '/', got {path:?}"
        )));
    }
    let normalized = normalize_path(path).map_err(|e| bad(format!("path parameter: {e}")))?;
    // Refused here, before any endpoint is picked, rather than when the URI is built.
    let whole = match &target_query {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized.to_string(),
    };
    if http::uri::PathAndQuery::try_from(whole.as_str()).is_err() {
        return Err(bad(format!(
            "the path parameter is not a valid target: {whole:?}"
        )));
    }
    Ok((normalized.into_owned(), target_query))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Opens the upstream side: picks an endpoint and does the upgrade handshake there, all
/// within `timeout`. A refused connection is retried on another endpoint (nothing was sent);
/// anything later is not. `headers` are the forwarding headers the proxy built (hop-by-hop
/// already removed); the client's `Sec-WebSocket-*` headers are among them.
pub async fn connect_upstream(
    service: &Service,
    path_and_query: &str,
    mut headers: HeaderMap,
    client_key: HeaderValue,
    hash_key: Option<u64>,
    timeout: Duration,
) -> Result<(Accepted, HeaderMap), GatewayError> {
    // Set here, after the hop-by-hop removal: a client's `Connection` header may name these.
    let offered = headers.get(SEC_WEBSOCKET_PROTOCOL).cloned();
    headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_KEY, client_key);
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    let mut rng = fastrand::Rng::new();
    let mut tried = Candidates::default();
    let deadline = Instant::now() + timeout;
    service.retry_budget.deposit();
    let mut attempt = 0;
    loop {
        let now = service.clock.now_us();
        let mut lease = service.pool.pick(now, hash_key, &tried, &mut rng).map_err(
            |Unavailable { retry_after_secs }| {
                GatewayError::new(
                    ErrorKind::NoHealthyUpstream,
                    Side::Upstream,
                    format!("no usable upstream for service {}", service.name),
                )
                .with_retry_after(retry_after_secs)
            },
        )?;
        let endpoint = lease.endpoint().clone();
        let uri = endpoint.url.target(path_and_query, None).ok_or_else(|| {
            GatewayError::client(ErrorKind::BadRequest, "the target cannot be forwarded")
        })?;
        let attempt_result = tokio::time::timeout_at(
            deadline,
            handshake(service, &endpoint, uri, headers.clone()),
        )
        .await;
        let failed = match attempt_result {
            Ok(Ok((response, upgraded))) if !chosen_was_offered(&response, offered.as_ref()) => {
                drop(upgraded);
                lease.record(Outcome::Success, service.clock.now_us());
                return Err(GatewayError::upstream(
                    ErrorKind::UpstreamUnavailable,
                    "the upstream chose a WebSocket subprotocol the client did not offer",
                ));
            }
            Ok(Ok((response, upgraded))) => {
                lease.record(Outcome::Success, service.clock.now_us());
                lease.set_kind(StreamKind::WebSocket);
                let accepted = Accepted {
                    upstream: upgraded,
                    lease,
                };
                return Ok((accepted, response));
            }
            Ok(Err(HandshakeError::Rejected(status))) => {
                let outcome = if service.failure_statuses.contains(status.as_u16()) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                lease.record(outcome, service.clock.now_us());
                return Err(GatewayError::upstream(
                    ErrorKind::UpstreamUnavailable,
                    format!("the upstream rejected the WebSocket upgrade with status {status}"),
                ));
            }
            Ok(Err(HandshakeError::Connect(e))) => {
                lease.record(Outcome::Failure, service.clock.now_us());
                tracing::warn!(upstream = &*endpoint.label, error = %e, "WebSocket connect failed");
                GatewayError::upstream(
                    ErrorKind::UpstreamUnavailable,
                    "the upstream refused the connection",
                )
            }
            Ok(Err(HandshakeError::Broken(why))) => {
                lease.record(Outcome::Failure, service.clock.now_us());
                return Err(GatewayError::upstream(
                    ErrorKind::UpstreamUnavailable,
                    format!("the upstream's WebSocket handshake failed: {why}"),
                ));
            }
            Err(_) => {
                lease.record(Outcome::Failure, service.clock.now_us());
                return Err(GatewayError::upstream(
                    ErrorKind::UpstreamTimeout,
                    format!("no WebSocket handshake from the upstream within {timeout:?}"),
                ));
            }
        };
        if let Some(index) = service.pool.index_of(&endpoint) {
            tried.insert(index);
        }
        let may_retry = attempt < service.max_retries
            && service
                .pool
                .has_usable_except(&tried, service.clock.now_ms())
            && service.retry_budget.withdraw();
        if !may_retry {
            return Err(failed);
        }
        attempt += 1;
    }
}

/// Whether the upstream's `Sec-WebSocket-Protocol` (if any) is one the client offered.
fn chosen_was_offered(upstream: &HeaderMap, offered: Option<&HeaderValue>) -> bool {
    let Some(chosen) = upstream.get(SEC_WEBSOCKET_PROTOCOL) else {
        return true;
    };
    offered.and_then(|o| o.to_str().ok()).is_some_and(|o| {
        o.split(',')
            .any(|p| p.trim().as_bytes() == chosen.as_bytes())
    })
}

enum HandshakeError {
    /// No connection: safe to try elsewhere.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The upstream answered, but not with `101`.
    Rejected(StatusCode),
    /// The connection broke, or the `101` was not a valid WebSocket acceptance.
    Broken(String),
}

/// Connects to `endpoint` and does the upgrade handshake there. A plain `http` endpoint gets a
/// bare TCP socket: the upgraded connection then holds nothing else for as long as the bridge
/// lives (the TLS-capable connector's stream type is about 1 KiB, kept per bridge).
async fn handshake(
    service: &Service,
    endpoint: &Endpoint,
    uri: http::Uri,
    headers: HeaderMap,
) -> Result<(HeaderMap, Upgraded), HandshakeError> {
    match &endpoint.conns {
        Some(conns) => {
            let tcp = conns.connect_tcp().await.map_err(HandshakeError::Connect)?;
            upgrade(TokioIo::new(tcp), uri, headers).await
        }
        None => {
            let io = service
                .ws_connector
                .clone()
                .call(uri.clone())
                .await
                .map_err(HandshakeError::Connect)?;
            upgrade(io, uri, headers).await
        }
    }
}

/// Sends the upgrade request over `io` and checks the upstream's `101`.
async fn upgrade<I>(
    io: I,
    uri: http::Uri,
    headers: HeaderMap,
) -> Result<(HeaderMap, Upgraded), HandshakeError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let authority = uri.authority().map(|a| a.as_str().to_owned());
    let broken = |e: hyper::Error| HandshakeError::Broken(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(broken)?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::get(target)
        .body(Empty::<Bytes>::new())
        .map_err(|e| HandshakeError::Broken(e.to_string()))?;
    let client_key = headers.get("sec-websocket-key").cloned();
    *request.headers_mut() = headers;
    if !request.headers().contains_key(HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
            request.headers_mut().insert(HOST, value);
        }
    }
    let mut response = sender.send_request(request).await.map_err(broken)?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(HandshakeError::Rejected(response.status()));
    }
    let expected = client_key.map(|k| derive_accept_key(k.as_bytes()));
    let accept = response.headers().get(SEC_WEBSOCKET_ACCEPT);
    if expected.is_none()
        || accept.map(HeaderValue::as_bytes) != expected.as_deref().map(str::as_bytes)
    {
        return Err(HandshakeError::Broken(
            "Sec-WebSocket-Accept does not match the key".to_owned(),
        ));
    }
    let upgraded = hyper::upgrade::on(&mut response).await.map_err(broken)?;
    Ok((response.headers().clone(), upgraded))
}

/// The client's `101`: the upstream's response headers (subprotocol, cookies, ...) with the
/// hop-by-hop ones set for this hop.
pub fn switching_protocols(mut headers: HeaderMap) -> Response<GatewayBody> {
    crate::proxy::headers::remove_hop_by_hop(&mut headers);
    headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let mut response = Response::new(GatewayBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(query: &str) -> Result<(String, Option<String>), String> {
        target_from_query(Some(query)).map_err(|e| e.to_string())
    }

    #[test]
    fn the_path_parameter_is_a_relative_target_and_nothing_else() {
        assert_eq!(target("path=/chat"), Ok(("/chat".into(), None)));
        assert_eq!(
            target("x=1&path=%2Fchat%3Froom%3D1%26access_token%3Dt"),
            Ok(("/chat".into(), Some("room=1".into())))
        );
        assert_eq!(
            target("path=/a+b"),
            Ok(("/a+b".into(), None)),
            "'+' is literal"
        );
        // No `path` parameter: the service's root, as the Node gateway had it.
        assert_eq!(target(""), Ok(("/".into(), None)));
        assert_eq!(target("room=1"), Ok(("/".into(), None)));
        assert_eq!(target_from_query(None).ok(), Some(("/".into(), None)));
        for bad in [
            "path=",
            "path=chat",
            "path=//evil.example/x",
            "path=%2F%2Fevil.example",
            "path=http://evil.example/x",
            "path=/a/../b",
            "path=/x%23frag",
            "path=/x%zz",
            "path=/x%+f",
            "path=/x%00",
            "path=/a%20b",
        ] {
            assert!(target(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn only_an_offered_subprotocol_may_be_chosen() {
        let mut upstream = HeaderMap::new();
        let offered = HeaderValue::from_static("chat, superchat");
        assert!(
            chosen_was_offered(&upstream, Some(&offered)),
            "none chosen is fine"
        );
        upstream.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("superchat"),
        );
        assert!(chosen_was_offered(&upstream, Some(&offered)));
        upstream.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("mqtt"));
        assert!(!chosen_was_offered(&upstream, Some(&offered)));
        assert!(!chosen_was_offered(&upstream, None));
    }
}
