//! The WebSocket bridge: a client's WebSocket joined to one on the chosen upstream endpoint.
//!
//! Order matters, and it is the point of this module: the request has already been routed,
//! authenticated (a token may come from `access_token` or a cookie, since browsers cannot set
//! `Authorization` on a WebSocket) and checked by the proxy; here an endpoint is picked, the
//! upstream handshake is done (within the route's response timeout), and only when the
//! upstream has said `101` does the client get its `101`, carrying the subprotocol and the
//! headers the upstream chose. Everything that fails before that is a plain HTTP answer with
//! the JSON error: `502` refused or rejected, `504` handshake timeout, `503` no endpoint.
//!
//! The upstream handshake reuses the client's `Sec-WebSocket-Key`, so the upstream's
//! `Sec-WebSocket-Accept` is right for the client too; extensions are not offered (frames
//! pass through tungstenite, which does not compress).
//!
//! Once both sides are open, [`bridge`] moves whole messages: text stays text, binary stays
//! binary, fragmented messages arrive reassembled, and a close frame's code and reason go to
//! the other side. Flow control is per message: while one message waits for a slow peer,
//! nothing more is read from the sender; if the peer refuses it for `stall_timeout`, both
//! sides are closed with 1013. Pings go to both peers every `ping_interval` (tungstenite
//! answers theirs); a peer not heard from for two intervals is dropped. Messages over
//! `max_message_size` are refused with 1009. On shutdown, bridges run until the grace period
//! is over, then both sides get 1001.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
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
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

use crate::config;
use crate::error::{ErrorKind, GatewayError, Side};
use crate::proxy::body::GatewayBody;
use crate::router::normalize_path;
use crate::upstream::{
    Candidates, Lease, Outcome, Service, StreamCounters, StreamKind, Unavailable,
};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// The bridge's limits, from `[websocket]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    frames: WebSocketConfig,
    ping_interval: Duration,
    stall_timeout: Duration,
}

/// An upstream that has accepted the upgrade: its socket-to-be and the lease on its endpoint.
pub struct Accepted {
    upstream: Upgraded,
    lease: Lease,
}

// === the handshake ===

impl Settings {
    pub fn new(config: &config::WebSocketConfig) -> Self {
        let max_message = usize::try_from(config.max_message_size).unwrap_or(usize::MAX);
        let max_buffered = usize::try_from(config.max_buffered_bytes).unwrap_or(usize::MAX);
        // Small buffers: an idle bridge should cost little. tungstenite keeps its read buffer
        // for the life of the socket and reads at most that much per call: 1 KiB per side
        // (measured by bench/ws-idle: 4 KiB cost 6 KiB more per bridge) at the price of more
        // reads for large messages. Writes go out eagerly (nothing is held back to batch), and
        // the write buffer may hold one message beyond the cap.
        let frames = WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_write_buffer_size(max_buffered.max(max_message).saturating_add(1 << 16))
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        Settings {
            frames,
            ping_interval: config.ping_interval,
            stall_timeout: config.stall_timeout,
        }
    }
}

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
/// path (normalised like a request path) and an optional query. Only a relative path that
/// starts with `/` is accepted: nothing in it can name another host.
pub fn target_from_query(query: Option<&str>) -> Result<(String, Option<String>), GatewayError> {
    let bad = |m: String| GatewayError::client(ErrorKind::BadRequest, m);
    let raw = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("path="))
        .ok_or_else(|| bad("the path query parameter is required (?path=/p)".to_owned()))?;
    let decoded = percent_decode(raw)
        .ok_or_else(|| bad("the path parameter is not valid percent-encoded UTF-8".to_owned()))?;
    if decoded.contains('#') {
        return Err(bad(
            "the path parameter may not carry a fragment ('#')".to_owned()
        ));
    }
    let (path, target_query) = match decoded.split_once('?') {
        // A token there would reach the upstream: it goes no further than one here would.
        Some((path, q)) => (path, strip_access_token(Some(q))),
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

/// `query` without the `access_token` parameter (it carried the client's token to us and
/// goes no further).
pub fn strip_access_token(query: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|pair| {
            pair.split_once('=').map_or(*pair, |(k, _)| k) != crate::auth::ACCESS_TOKEN_PARAM
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
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
        let attempt_result =
            tokio::time::timeout_at(deadline, handshake(service, uri, headers.clone())).await;
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

async fn handshake(
    service: &Service,
    uri: http::Uri,
    headers: HeaderMap,
) -> Result<(HeaderMap, Upgraded), HandshakeError> {
    let authority = uri.authority().map(|a| a.as_str().to_owned());
    let io = service
        .ws_connector
        .clone()
        .call(uri.clone())
        .await
        .map_err(HandshakeError::Connect)?;
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

// === the bridge ===

/// How a bridge ended.
#[derive(Debug)]
enum End {
    /// The sender sent a close frame; it went to the other side.
    Closed,
    /// The sender's connection ended without a close frame.
    SenderGone,
    /// Writing to the receiver failed.
    ReceiverGone,
    /// The sender sent a message over the size limit (close code 1009 for it).
    TooBig,
    /// The sender broke the protocol: 1002, or 1007 for text that is not UTF-8.
    Violation(CloseCode),
    /// The receiver refused data for `stall_timeout`.
    Stalled,
    /// The receiver was not heard from for two ping intervals.
    Silent,
    /// The shutdown grace period is over.
    Shutdown,
}

/// Which way a pump moves messages: `Up` from the client to the upstream.
#[derive(Debug, Clone, Copy)]
enum Way {
    Up,
    Down,
}

/// Waits for the client's side of the upgrade, then runs the bridge until either side ends
/// or `stop` (the shutdown grace period is over) fires. Holds the endpoint's lease throughout.
pub async fn run(
    client: hyper::upgrade::OnUpgrade,
    accepted: Accepted,
    settings: Settings,
    stop: CancellationToken,
    request_id: HeaderValue,
) {
    let Accepted { upstream, lease } = accepted;
    let client = match client.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "the client's upgrade did not complete");
            // The upstream has its WebSocket open: close it properly, not by a dropped socket.
            let mut upstream = Socket::from_raw_socket(
                TokioIo::new(upstream),
                Role::Client,
                Some(settings.frames),
            )
            .await;
            let frame = CloseFrame {
                code: CloseCode::Away,
                reason: "client went away".into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), upstream.close(Some(frame))).await;
            return;
        }
    };
    let client =
        Socket::from_raw_socket(TokioIo::new(client), Role::Server, Some(settings.frames)).await;
    let upstream =
        Socket::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(settings.frames)).await;
    let end = bridge(client, upstream, settings, stop, &lease.endpoint().stats.ws).await;
    tracing::debug!(
        request_id = request_id.to_str().unwrap_or_default(),
        upstream = &*lease.endpoint().label,
        ?end,
        "WebSocket bridge ended"
    );
    drop(lease);
}

async fn bridge(
    client: Socket,
    upstream: Socket,
    settings: Settings,
    stop: CancellationToken,
    counters: &StreamCounters,
) -> End {
    let started = Instant::now();
    let heard_client = AtomicU64::new(0);
    let heard_upstream = AtomicU64::new(0);
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let (count_up, count_down) = (
        |bytes| counters.up(1, bytes),
        |bytes| counters.down(1, bytes),
    );
    let outcome = {
        let up = pump(
            &mut client_rx,
            &mut upstream_tx,
            Heard {
                from: &heard_client,
                to: &heard_upstream,
                since: started,
            },
            settings,
            &count_up,
        );
        let down = pump(
            &mut upstream_rx,
            &mut client_tx,
            Heard {
                from: &heard_upstream,
                to: &heard_client,
                since: started,
            },
            settings,
            &count_down,
        );
        tokio::select! {
            end = up => (end, Way::Up),
            end = down => (end, Way::Down),
            () = stop.cancelled() => (End::Shutdown, Way::Up),
        }
    };
    // What each side is told: (to the sender of that way, to its receiver).
    let away = (CloseCode::Away, "peer went away");
    let (to_sender, to_receiver) = match &outcome.0 {
        End::Closed => {
            // The close went across; give both sides a moment to finish the handshake.
            let _ = tokio::join!(
                tokio::time::timeout(Duration::from_secs(1), client_tx.flush()),
                tokio::time::timeout(Duration::from_secs(1), upstream_tx.flush()),
            );
            return outcome.0;
        }
        End::SenderGone => (None, Some(away)),
        End::ReceiverGone => (Some(away), None),
        End::TooBig => (Some((CloseCode::Size, "message too big")), Some(away)),
        End::Violation(code) => (Some((*code, "protocol violation")), Some(away)),
        End::Stalled => {
            let too_slow = (CloseCode::Again, "peer too slow");
            (Some(too_slow), Some(too_slow))
        }
        End::Silent => (Some((CloseCode::Away, "peer not responding")), None),
        End::Shutdown => {
            let going = (CloseCode::Away, "gateway shutting down");
            (Some(going), Some(going))
        }
    };
    let (to_client, to_upstream) = match outcome.1 {
        Way::Up => (to_sender, to_receiver),
        Way::Down => (to_receiver, to_sender),
    };
    // Each side on its own clock: one that cannot take its close (its buffers are full)
    // must not keep the other from getting its own.
    let _ = tokio::join!(
        close(&mut client_tx, to_client),
        close(&mut upstream_tx, to_upstream),
    );
    outcome.0
}

async fn close(tx: &mut SplitSink<Socket, Message>, frame: Option<(CloseCode, &'static str)>) {
    let Some((code, reason)) = frame else {
        return;
    };
    let message = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(message)).await;
}

/// Milliseconds since the bridge started at which each side was last heard from.
struct Heard<'a> {
    from: &'a AtomicU64,
    to: &'a AtomicU64,
    since: Instant,
}

impl Heard<'_> {
    fn now(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }
}

/// Moves messages from `rx` to `tx`, and keeps `tx`'s peer pinged.
async fn pump(
    rx: &mut SplitStream<Socket>,
    tx: &mut SplitSink<Socket, Message>,
    heard: Heard<'_>,
    settings: Settings,
    count: &(dyn Fn(u64) + Sync),
) -> End {
    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    let silent_after = 2 * settings.ping_interval.as_millis() as u64;
    loop {
        let message = tokio::select! {
            message = rx.next() => message,
            _ = ping.tick() => {
                if heard.now().saturating_sub(heard.to.load(Ordering::Relaxed)) > silent_after {
                    return End::Silent;
                }
                match tokio::time::timeout(settings.stall_timeout, tx.send(Message::Ping(Bytes::new()))).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return End::ReceiverGone,
                    Err(_) => return End::Stalled,
                }
            }
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(tungstenite::Error::Capacity(_))) => return End::TooBig,
            Some(Err(tungstenite::Error::Utf8(_))) => return End::Violation(CloseCode::Invalid),
            Some(Err(tungstenite::Error::Protocol(_))) => {
                return End::Violation(CloseCode::Protocol)
            }
            Some(Err(_)) | None => return End::SenderGone,
        };
        heard.from.store(heard.now(), Ordering::Relaxed);
        let closing = matches!(message, Message::Close(_));
        match message {
            // Answered (pings) or noted (pongs) on this hop; each hop keeps its own alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            message => {
                let bytes = message.len() as u64;
                match tokio::time::timeout(settings.stall_timeout, tx.send(message)).await {
                    Ok(Ok(())) if closing => return End::Closed,
                    Ok(Ok(())) => count(bytes),
                    Ok(Err(_)) => return End::ReceiverGone,
                    Err(_) => return End::Stalled,
                }
            }
        }
    }
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
        for bad in [
            "",
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
    fn access_tokens_are_stripped_and_the_rest_kept_in_order() {
        assert_eq!(strip_access_token(Some("access_token=t")), None);
        assert_eq!(
            strip_access_token(Some("a=1&access_token=t&b=2")).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            strip_access_token(Some("access_tokenx=1")).as_deref(),
            Some("access_tokenx=1")
        );
        assert_eq!(strip_access_token(None), None);
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
