//! `/admin/feed`: the dashboard's live feed, as Server-Sent Events. Once a second (the first
//! at once) one event carries the whole dashboard — headline figures, five minutes of
//! per-second series for the charts, services and endpoints, routes, overload state and the
//! last error responses — so a page that (re)connects is complete with its first event and
//! the browser never polls.
//!
//! The feed is made by the gateway, not proxied, so it ends when shutdown begins rather than
//! holding up the drain; the browser's EventSource reconnects to the next process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::stats::{quantile, totals};
use crate::observe::metrics::epoch_ms;
use crate::observe::round2;
use crate::observe::series::SERIES_SECONDS;
use crate::proxy::body::GatewayBody;
use crate::runtime::Runtime;
use crate::server::FeedGuard;
use crate::upstream::breaker::State;
use crate::upstream::StreamKind;

const PERIOD: Duration = Duration::from_secs(1);

/// How long an event is reused for other dashboards (a little under the period, so each
/// feed still gets a new one every second).
const FRESH: Duration = Duration::from_millis(900);

pub fn response(
    runtime: Arc<Runtime>,
    stop: CancellationToken,
    guard: FeedGuard,
) -> Response<GatewayBody> {
    // The browser waits 2 s before reconnecting after the stream ends.
    let hello = Bytes::from_static(b"retry: 2000\n\n");
    let events = stream::unfold(
        (runtime, stop, None::<tokio::time::Interval>, guard),
        |(runtime, stop, ticker, guard)| async move {
            let mut ticker = match ticker {
                Some(mut ticker) => {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        () = stop.cancelled() => return None,
                    }
                    ticker
                }
                None => {
                    let mut ticker = tokio::time::interval(PERIOD);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ticker.tick().await; // the first tick is immediate
                    ticker
                }
            };
            if stop.is_cancelled() {
                return None;
            }
            let event = shared_event(&runtime);
            ticker.reset();
            Some((event, (runtime, stop, Some(ticker), guard)))
        },
    );
    let body = stream::once(async move { hello }).chain(events);
    let mut response = Response::new(GatewayBody::generated(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The current event, built at most once a second however many dashboards are open.
fn shared_event(rt: &Runtime) -> Bytes {
    let mut last = rt
        .metrics
        .feed_event
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((made, event)) = &*last {
        if made.elapsed() < FRESH {
            return event.clone();
        }
    }
    let event = Bytes::from(format!("data: {}\n\n", snapshot(rt)));
    *last = Some((std::time::Instant::now(), event.clone()));
    event
}

/// One event's document (the shape `dashboard.html` reads).
pub fn snapshot(rt: &Runtime) -> Value {
    let now = epoch_ms();
    let mut totals = totals(rt);
    totals["connections"] = super::stats::connections(rt);
    let seconds = rt.metrics.totals.per_second(now, SERIES_SECONDS);
    let start_ms = (now / 1000 - seconds.len() as u64) * 1000;
    json!({
        "nowMs": now,
        "uptimeSeconds": rt.live.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "totals": totals,
        "series": {
            "startMs": start_ms,
            "stepMs": 1000,
            "rps": seconds.iter().map(|s| s.requests).collect::<Vec<_>>(),
            "errors": seconds.iter().map(|s| s.errors).collect::<Vec<_>>(),
            "p50Ms": seconds.iter().map(|s| quantile(s, 0.5)).collect::<Vec<_>>(),
            "p99Ms": seconds.iter().map(|s| quantile(s, 0.99)).collect::<Vec<_>>(),
        },
        "services": services(rt, now),
        "routes": super::stats::routes(rt),
        "pressure": rt.pressure.status(),
        "recentErrors": rt.metrics.recent_errors().iter().map(|e| json!({
            "atMs": e.at_ms,
            "status": e.status,
            "method": e.method.as_str(),
            "path": e.path,
            "route": &*e.route,
            "requestId": e.request_id.to_str().unwrap_or("-"),
        })).collect::<Vec<_>>(),
    })
}

fn services(rt: &Runtime, wall_now: u64) -> Vec<Value> {
    rt.services
        .iter()
        .map(|(name, service)| {
            let (now, total, windowed) = super::stats::windowed(service);
            let endpoints = service.pool.endpoints();
            let upstreams: Vec<Value> = windowed
                .iter()
                .map(|(e, summary)| {
                    let state = e.breaker.state_at(now);
                    let open_until = match state {
                        State::Open { until_ms } => wall_now + until_ms.saturating_sub(now),
                        _ => 0,
                    };
                    json!({
                        "url": &*e.label,
                        "healthy": e.is_healthy(),
                        "breaker": state.as_lower(),
                        "openUntilMs": open_until,
                        "ewmaMs": round2(e.ewma.cost(now) / 1000.0),
                        "inflight": {
                            "http": e.in_flight(StreamKind::Http),
                            "sse": e.in_flight(StreamKind::Sse),
                            "ws": e.in_flight(StreamKind::WebSocket),
                        },
                        "rps": round2(summary.rps()),
                        "p99Ms": quantile(summary, 0.99),
                        "errorRate": round2(summary.error_rate()),
                    })
                })
                .collect();
            json!({
                "name": name,
                "healthy": endpoints.iter().filter(|e| e.is_in_service(now)).count(),
                "endpoints": endpoints.len(),
                "rps": round2(total.rps()),
                "p99Ms": quantile(&total, 0.99),
                "errorRate": round2(total.error_rate()),
                "upstreams": upstreams,
            })
        })
        .collect()
}
