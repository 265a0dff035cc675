//! `sluice demo`: the first thing a newcomer runs. It starts five small upstreams on loopback
//! ports chosen by the OS, then the gateway in front of them with an embedded configuration,
//! and prints what to try. `fast` has three endpoints and `flaky` two, so balancing and
//! circuit breakers can be watched in `/admin/stats`; every answer names the endpoint
//! (`served_by`).
//!
//! | service  | endpoints | behaviour |
//! |----------|-----------|-----------|
//! | `fast`   | 3 | answers at once with JSON describing the request it received |
//! | `slow`   | 1 | waits `?ms=` milliseconds (default 1500) first |
//! | `flaky`  | 2 | 500 when the path contains `/fail` or `?fail=1`; `POST /toggle` breaks or mends the endpoint it reaches, for every request |
//! | `ticker` | 1 | Server-Sent Events: one `tick` event a second, forever |
//! | `echo`   | 1 | WebSocket echo (through the gateway: `/ws/echo?path=/`) |
//!
//! These are demonstration servers, not test fakes: the integration tests have their own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::config::{Config, Env};

/// Signs the demo's dev token. Only ever used by `sluice demo`.
pub const DEMO_SECRET: &str = "sluice-demo-secret-not-for-production-use";

type DemoBody = BoxBody<Bytes, Infallible>;

#[derive(Clone, Copy)]
enum Kind {
    Fast,
    Slow,
    Flaky,
    Ticker,
    Echo,
}

/// Name, behaviour, number of endpoints.
const SERVICES: [(&str, Kind, usize); 5] = [
    ("fast", Kind::Fast, 3),
    ("slow", Kind::Slow, 1),
    ("flaky", Kind::Flaky, 2),
    ("ticker", Kind::Ticker, 1),
    ("echo", Kind::Echo, 1),
];

/// Runs the demo until SIGINT/SIGTERM. `listen` defaults to 127.0.0.1:8080.
pub fn run(listen: Option<SocketAddr>) -> Result<(), String> {
    // The upstreams need ports before the config can name them: bind them on a std listener
    // first (OS-chosen ports), hand them to Tokio once the runtime runs.
    let mut listeners = Vec::new();
    let mut upstreams = serde_json::Map::new();
    for (name, kind, count) in SERVICES {
        let mut urls = Vec::new();
        for n in 1..=count {
            let label = format!("{name}#{n}");
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("demo upstream {label}: {e}"))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("demo upstream {label}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            urls.push(format!("http://{addr}"));
            listeners.push((listener, kind, label));
        }
        upstreams.insert(name.into(), json!(urls));
    }
    let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let upstreams = serde_json::Value::Object(upstreams).to_string();
    let env = Env::from_pairs([
        ("UPSTREAMS", upstreams.as_str()),
        ("JWT_SECRET", DEMO_SECRET),
        ("LOG_LEVEL", "info"),
    ]);
    let config = Config::from_sources(Some(DEMO_ROUTES), &env).map_err(|e| e.to_string())?;
    let mut config = config;
    config.server.listen = listen;
    crate::run_with(config, move |gateway| {
        for (listener, kind, label) in listeners {
            let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            tokio::spawn(serve_upstream(listener, kind, label));
        }
        print_banner(gateway.local_addr());
        Ok(())
    })
}

/// Config routes on top of the `/api/<service>` routes every service gets.
const DEMO_ROUTES: &str = r#"
[[routes]]
path = "/users"
service = "fast"
methods = ["GET", "POST"]
response_headers = { set = { "x-demo-route" = "users" } }

[[routes]]
path = "/legacy"
service = "fast"
strip_prefix = true
rewrite = { pattern = "^/v1/(.*)$", replace = "/v2/$1" }
# Answers kept for 10 s: the second request within that says x-cache: HIT.
cache = { ttl = "10s" }
"#;

fn print_banner(addr: SocketAddr) {
    let base = format!("http://{addr}");
    let token = crate::token::mint(DEMO_SECRET, "demo-user", Duration::from_secs(3600), &[])
        .unwrap_or_else(|e| format!("(could not mint: {e})"));
    println!(
        "\nsluice demo is running at {base}\n\
         live dashboard: {base}/admin   (Prometheus metrics: {base}/metrics)\n\n\
         try:\n  \
         curl {base}/api/fast/hello?name=sluice          # proxied to the fast service\n  \
         curl {base}/users/42                             # a config route (prefix /users)\n  \
         curl -i {base}/legacy/v1/items                   # strip_prefix + rewrite → /v2/items, cached 10 s (x-cache)\n  \
         curl {base}/api/slow/report?ms=500               # a slow upstream\n  \
         curl -i {base}/api/flaky/fail                    # an upstream error, passed through\n  \
         curl -X POST {base}/api/flaky/toggle             # break (or mend) one of flaky's two endpoints\n  \
         for i in $(seq 20); do curl -s {base}/api/flaky/x; echo; done   # 5 failures in a row open its breaker\n  \
         curl {base}/admin/stats                          # balancing, breakers, rates, latencies\n  \
         websocat ws://{addr}/ws/echo?path=/              # WebSocket echo, bridged (any WebSocket client)\n  \
         curl -N {base}/sse/ticker/events                 # Server-Sent Events, streamed as they come\n  \
         curl -i {base}/api/nowhere/x                     # unknown service → JSON 404\n  \
         curl {base}/healthz  and  {base}/readyz\n\n\
         dev token (HS256, 1h, sub=demo-user; auth is off in the demo):\n  {token}\n\n\
         Ctrl-C stops everything.\n"
    );
}

/// One endpoint; `label` (`fast#2`) goes into every answer as `served_by`.
async fn serve_upstream(listener: TcpListener, kind: Kind, label: String) {
    let label: Arc<str> = label.into();
    let broken = Arc::new(AtomicBool::new(false));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (broken, label) = (broken.clone(), label.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, kind, broken.clone(), label.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    kind: Kind,
    broken: Arc<AtomicBool>,
    label: Arc<str>,
) -> Result<Response<DemoBody>, Infallible> {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let described = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": query,
        "x-request-id": req.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
        "x-forwarded-for": req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        "time_ms": now_ms(),
    });
    let by = &*label;
    Ok(match kind {
        Kind::Fast => json_reply(
            StatusCode::OK,
            json!({"service": "fast", "served_by": by, "request": described}),
        ),
        Kind::Slow => {
            let ms = query_value(&query, "ms").unwrap_or(1500).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_reply(
                StatusCode::OK,
                json!({"service": "slow", "served_by": by, "waited_ms": ms, "request": described}),
            )
        }
        Kind::Flaky => {
            if req.method() == Method::POST && req.uri().path().ends_with("/toggle") {
                let now_broken = !broken.fetch_xor(true, Ordering::Relaxed);
                json_reply(
                    StatusCode::OK,
                    json!({"service": "flaky", "served_by": by, "broken": now_broken}),
                )
            } else if broken.load(Ordering::Relaxed)
                || req.uri().path().contains("/fail")
                || query_value(&query, "fail") == Some(1)
            {
                json_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"service": "flaky", "served_by": by, "error": "failing on demand"}),
                )
            } else {
                json_reply(
                    StatusCode::OK,
                    json!({"service": "flaky", "served_by": by, "request": described}),
                )
            }
        }
        Kind::Ticker => ticker(),
        Kind::Echo => echo(req),
    })
}

fn ticker() -> Response<DemoBody> {
    let events = futures_util::stream::unfold(0u64, |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let event = format!(
            "id: {n}\nevent: tick\ndata: {{\"n\":{n},\"time_ms\":{}}}\n\n",
            now_ms()
        );
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), n + 1))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

fn echo(mut req: Request<Incoming>) -> Response<DemoBody> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return json_reply(
            StatusCode::UPGRADE_REQUIRED,
            json!({"service": "echo", "error": "this is a WebSocket echo; connect with a WebSocket client"}),
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    if let Ok(accept) = http::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn json_reply(status: StatusCode, body: serde_json::Value) -> Response<DemoBody> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn empty() -> DemoBody {
    Full::new(Bytes::new()).boxed()
}

fn query_value(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
