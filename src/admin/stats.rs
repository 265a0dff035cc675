//! The two stats documents, in the shapes the seeds' dashboards and scripts already read.
//!
//! - `/admin/stats`: Real-Time-API-Gateway's shape — per service its endpoints with health,
//!   breaker, in-flight requests by kind, totals, a windowed request rate and latencies —
//!   extended with gateway `totals`, per-route figures and the overload state. Rates and
//!   percentiles come from the windowed series ([`crate::observe::series`]) over the last ten
//!   whole seconds (fewer right after start), not the seed's since-last-sample figure that
//!   read 0 between samples. `healthy` counts endpoints that can take traffic now (health
//!   checks passing, breaker not open).
//! - `/gateway/stats`: Aegis's array of `{path, targetUrl, failures, state}`, one entry per
//!   route and endpoint (the breaker is per endpoint, so routes to one service share it).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::observe::metrics::epoch_ms;
use crate::observe::round2;
use crate::observe::series::Summary;
use crate::runtime::Runtime;
use crate::upstream::breaker::State;
use crate::upstream::{Endpoint, Service, StreamCounters, StreamKind};

/// The span `rps`, `errorRate` and the percentiles are computed over, in whole seconds.
pub const RATE_WINDOW_SECS: u64 = 10;

pub fn admin_stats(rt: &Runtime) -> Value {
    let services: serde_json::Map<String, Value> = rt
        .services
        .iter()
        .map(|(name, service)| (name.clone(), service_stats(service)))
        .collect();
    json!({
        "nowMs": epoch_ms(),
        "uptimeSeconds": rt.live.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "env": rt.config.server.env.as_str(),
        "services": services,
        "connections": connections(rt),
        "auth": rt.auth.stats(),
        "rateLimit": rt.limiter.stats(),
        "totals": totals(rt),
        "routes": routes(rt),
        "pressure": rt.pressure.status(),
    })
}

/// Open client connections, and the event streams and WebSockets among them.
pub fn connections(rt: &Runtime) -> Value {
    let in_flight = |kind| -> u64 {
        rt.services
            .values()
            .flat_map(|s| s.pool.endpoints())
            .map(|e| u64::from(e.in_flight(kind)))
            .sum()
    };
    json!({
        "http": rt.live.open_connections(),
        "sse": in_flight(StreamKind::Sse),
        "ws": in_flight(StreamKind::WebSocket),
    })
}

/// Gateway-wide figures over the rate window: every request but the ops endpoints'.
pub fn totals(rt: &Runtime) -> Value {
    let now = epoch_ms();
    let summary = rt.metrics.totals.summary(now, rate_window(rt));
    let rate_limited: u64 = rt
        .router
        .policies()
        .iter()
        .map(|p| p.stats.rate_limited.load(Relaxed))
        .sum();
    json!({
        "metricsEnabled": rt.metrics.enabled,
        "windowSeconds": summary.seconds,
        "requests": summary.requests,
        "rps": round2(summary.rps()),
        "errorRate": round4(summary.error_rate()),
        "p50Ms": quantile(&summary, 0.5),
        "p99Ms": quantile(&summary, 0.99),
        "rateLimited": rate_limited,
        "rateLimitedRps": round2(rt.metrics.rate_limited_rps(now, summary.seconds)),
        "cache": cache_totals(rt),
    })
}

/// The response cache since start: what `x-cache` said, summed over routes, and its size.
fn cache_totals(rt: &Runtime) -> Value {
    let Some(cache) = &rt.cache else {
        return json!({"enabled": false, "hits": 0, "misses": 0, "bypasses": 0, "hitRatio": null});
    };
    let policies = rt.router.policies();
    let sum = |f: fn(&crate::cache::CacheCounters) -> &std::sync::atomic::AtomicU64| -> u64 {
        policies
            .iter()
            .map(|p| f(&p.stats.cache).load(Relaxed))
            .sum()
    };
    let (hits, misses) = (sum(|c| &c.hits), sum(|c| &c.misses));
    json!({
        "enabled": true,
        "hits": hits,
        "misses": misses,
        "bypasses": sum(|c| &c.bypasses),
        "hitRatio": (hits + misses > 0).then(|| round4(hits as f64 / (hits + misses) as f64)),
        "entries": cache.entries(),
        "bytes": cache.bytes(),
        "capacityBytes": cache.capacity(),
    })
}

/// Per route over the rate window, config routes first.
pub fn routes(rt: &Runtime) -> Vec<Value> {
    let now = epoch_ms();
    let seconds = rate_window(rt);
    rt.router
        .policies()
        .iter()
        .map(|p| {
            let stats = &p.stats;
            let summary = stats.series.summary(now, seconds);
            json!({
                "route": &*stats.label,
                "service": stats.service.as_deref(),
                "rps": round2(summary.rps()),
                "errorRate": round4(summary.error_rate()),
                "p99Ms": quantile(&summary, 0.99),
                "rateLimited": stats.rate_limited.load(Relaxed),
                "aborted": stats.aborted.load(Relaxed),
                "cache": p.cache.map(|_| json!({
                    "hits": stats.cache.hits.load(Relaxed),
                    "misses": stats.cache.misses.load(Relaxed),
                    "bypasses": stats.cache.bypasses.load(Relaxed),
                })),
            })
        })
        .collect()
}

/// The rate window, shorter right after start (a gateway up for 3 s has 3 s of traffic).
fn rate_window(rt: &Runtime) -> u64 {
    rt.live
        .started
        .elapsed()
        .as_secs()
        .clamp(1, RATE_WINDOW_SECS)
}

/// A percentile in milliseconds, `null` without traffic.
pub fn quantile(summary: &Summary, q: f64) -> Option<f64> {
    summary.quantile_ms(q).map(round2)
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

/// A service's endpoints with their figures over the rate window, and the service's total:
/// `(now on the service clock, total, per endpoint)`.
pub fn windowed(service: &Service) -> (u64, Summary, Vec<(&Arc<Endpoint>, Summary)>) {
    let now = service.clock.now_ms();
    let seconds = (now / 1000).clamp(1, RATE_WINDOW_SECS);
    let mut total = Summary {
        seconds,
        ..Summary::default()
    };
    let endpoints = service
        .pool
        .endpoints()
        .iter()
        .map(|endpoint| {
            let summary = endpoint.stats.series.summary(now, seconds);
            total.merge(&summary);
            (endpoint, summary)
        })
        .collect();
    (now, total, endpoints)
}

fn service_stats(service: &Service) -> Value {
    let (now, total, windowed) = windowed(service);
    let endpoints = service.pool.endpoints();
    let latencies: Vec<f64> = endpoints
        .iter()
        .filter(|e| e.stats.requests_total.load(Relaxed) > 0)
        .map(|e| e.ewma.cost(now) / 1000.0)
        .collect();
    let details: Vec<Value> = windowed
        .iter()
        .map(|(endpoint, summary)| endpoint_stats(endpoint, now, summary))
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
        "rps": round2(total.rps()),
        "errorRate": round4(total.error_rate()),
        "p99Ms": quantile(&total, 0.99),
        "streams": {
            "sse": stream_counts(&endpoints.iter().map(|e| &e.stats.sse).collect::<Vec<_>>()),
            "ws": stream_counts(&endpoints.iter().map(|e| &e.stats.ws).collect::<Vec<_>>()),
        },
        "upstreamDetails": details,
    })
}

fn endpoint_stats(endpoint: &Endpoint, now: u64, summary: &Summary) -> Value {
    let state = endpoint.breaker.state_at(now);
    let open_until = match state {
        // The service clock's milliseconds, as wall-clock time.
        State::Open { until_ms } => epoch_ms() + until_ms.saturating_sub(now),
        _ => 0,
    };
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
        "rps": round2(summary.rps()),
        "errorRate": round4(summary.error_rate()),
        "latency": {
            "ewmaMs": round2(endpoint.ewma.cost(now) / 1000.0),
            "lastMs": round2(endpoint.stats.last_latency_us.load(Relaxed) as f64 / 1000.0),
            "p50Ms": quantile(summary, 0.5),
            "p99Ms": quantile(summary, 0.99),
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
    let sum = |f: fn(&StreamCounters) -> u64| counters.iter().map(|c| f(c)).sum::<u64>();
    json!({
        "messagesUp": sum(|c| c.messages_up.load(Relaxed)),
        "messagesDown": sum(|c| c.messages_down.load(Relaxed)),
        "bytesUp": sum(|c| c.bytes_up.load(Relaxed)),
        "bytesDown": sum(|c| c.bytes_down.load(Relaxed)),
    })
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
