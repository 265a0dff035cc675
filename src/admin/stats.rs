//! The two stats documents, in the shapes the seeds' dashboards and scripts already read.
//!
//! - `/admin/stats`: Real-Time-API-Gateway's shape — per service its endpoints with health,
//!   breaker, in-flight requests by kind, totals, a windowed request rate and latencies.
//!   `rps` is requests per second over the last ten whole seconds (fewer right after start),
//!   not the seed's since-last-sample figure that read 0 between samples. `healthy` counts
//!   endpoints that can take traffic now (health checks passing, breaker not open).
//! - `/gateway/stats`: Aegis's array of `{path, targetUrl, failures, state}`, one entry per
//!   route and endpoint (the breaker is per endpoint, so routes to one service share it).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::runtime::Runtime;
use crate::upstream::breaker::State;
use crate::upstream::{Endpoint, Service, StreamCounters, StreamKind};

/// The span `rps` and `errorRate` are computed over, in whole seconds.
const RATE_WINDOW_SECS: u64 = 10;

pub fn admin_stats(rt: &Runtime) -> Value {
    let services: serde_json::Map<String, Value> = rt
        .services
        .iter()
        .map(|(name, service)| (name.clone(), service_stats(service)))
        .collect();
    let in_flight = |kind| -> u64 {
        rt.services
            .values()
            .flat_map(|s| s.pool.endpoints())
            .map(|e| u64::from(e.in_flight(kind)))
            .sum()
    };
    json!({
        "nowMs": epoch_ms(),
        "uptimeSeconds": rt.live.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "env": rt.config.server.env.as_str(),
        "services": services,
        "connections": {
            "http": rt.live.open_connections(),
            "sse": in_flight(StreamKind::Sse),
            "ws": in_flight(StreamKind::WebSocket),
        },
        "auth": rt.auth.stats(),
        "rateLimit": rt.limiter.stats(),
    })
}

pub fn gateway_stats(rt: &Runtime) -> Value {
    let routes = rt
        .config
        .routes
        .iter()
        .map(|r| (r.path.clone(), &r.service))
        .chain(
            rt.services
                .keys()
                .map(|name| (format!("/api/{name}"), name)),
        );
    let mut entries = Vec::new();
    for (path, service) in routes {
        let Some(service) = rt.services.get(service) else {
            continue;
        };
        for endpoint in service.pool.endpoints() {
            entries.push(json!({
                "path": path,
                "targetUrl": &*endpoint.label,
                "failures": endpoint.breaker.consecutive_failures(),
                "state": endpoint.breaker.state_at(service.clock.now_ms()).as_upper(),
            }));
        }
    }
    Value::Array(entries)
}

fn service_stats(service: &Service) -> Value {
    let now = service.clock.now_ms();
    let seconds = (now / 1000).clamp(1, RATE_WINDOW_SECS);
    let endpoints = service.pool.endpoints();
    let mut requests = 0;
    let mut failures = 0;
    let mut latencies = Vec::new();
    let details: Vec<Value> = endpoints
        .iter()
        .map(|endpoint| {
            let counts = endpoint.stats.window.counts(now, RATE_WINDOW_SECS, false);
            requests += counts.requests;
            failures += counts.failures;
            if endpoint
                .stats
                .requests_total
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
            {
                latencies.push(endpoint.ewma.cost(now) / 1000.0);
            }
            endpoint_stats(endpoint, now, counts.requests as f64 / seconds as f64)
        })
        .collect();
    let avg_latency = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().sum::<f64>() / latencies.len() as f64
    };
    json!({
        "upstreams": endpoints.len(),
        "healthy": endpoints.iter().filter(|e| e.is_in_service(now)).count(),
        "avgLatencyMs": round2(avg_latency),
        "rps": round2(requests as f64 / seconds as f64),
        "errorRate": if requests == 0 { 0.0 } else { round2(failures as f64 / requests as f64) },
        "streams": {
            "sse": stream_counts(&endpoints.iter().map(|e| &e.stats.sse).collect::<Vec<_>>()),
            "ws": stream_counts(&endpoints.iter().map(|e| &e.stats.ws).collect::<Vec<_>>()),
        },
        "upstreamDetails": details,
    })
}

fn endpoint_stats(endpoint: &Endpoint, now: u64, rps: f64) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let state = endpoint.breaker.state_at(now);
    let open_until = match state {
        // The service clock's milliseconds, as wall-clock time.
        State::Open { until_ms } => epoch_ms() + until_ms.saturating_sub(now),
        _ => 0,
    };
    let (p50, p99) = endpoint.latency_percentiles();
    json!({
        "url": &*endpoint.label,
        "healthy": endpoint.is_in_service(now),
        "circuitOpenUntilMs": open_until,
        "inflight": {
            "http": endpoint.in_flight(StreamKind::Http),
            "sse": endpoint.in_flight(StreamKind::Sse),
            "ws": endpoint.in_flight(StreamKind::WebSocket),
        },
        "requestsTotal": endpoint.stats.requests_total.load(Relaxed),
        "errorsTotal": endpoint.stats.errors_total.load(Relaxed),
        "rps": round2(rps),
        "latency": {
            "ewmaMs": round2(endpoint.ewma.cost(now) / 1000.0),
            "lastMs": round2(endpoint.stats.last_latency_us.load(Relaxed) as f64 / 1000.0),
            "p50Ms": round2(p50 as f64 / 1000.0),
            "p99Ms": round2(p99 as f64 / 1000.0),
        },
        "streams": {
            "sse": stream_counts(&[&endpoint.stats.sse]),
            "ws": stream_counts(&[&endpoint.stats.ws]),
        },
        "breaker": {
            "state": state.as_lower(),
            "consecutiveFailures": endpoint.breaker.consecutive_failures(),
            "openedTotal": endpoint.breaker.opened_total(),
            "halfOpenedTotal": endpoint.breaker.half_opened_total(),
            "closedTotal": endpoint.breaker.closed_total(),
        },
    })
}

/// `{messagesUp, messagesDown, bytesUp, bytesDown}` summed over `counters` (up is client to
/// upstream).
fn stream_counts(counters: &[&StreamCounters]) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let sum = |f: fn(&StreamCounters) -> u64| counters.iter().map(|c| f(c)).sum::<u64>();
    json!({
        "messagesUp": sum(|c| c.messages_up.load(Relaxed)),
        "messagesDown": sum(|c| c.messages_down.load(Relaxed)),
        "bytesUp": sum(|c| c.bytes_up.load(Relaxed)),
        "bytesDown": sum(|c| c.bytes_down.load(Relaxed)),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
