//! One upstream endpoint's live state — breaker, latency estimate, health, requests in flight,
//! counters for `/admin/stats` — and the [`Lease`] a request holds while it uses the endpoint.
//!
//! A lease is taken when the endpoint is picked and lives until the response body ends (it
//! rides inside the response body), so in-flight counts include streams and WebSockets for
//! their whole life. The attempt's outcome is recorded once, when the response head arrives
//! or the attempt fails; a lease dropped without an outcome (the client left, or the request
//! failed on the client's side) changes nothing but the in-flight count and gives back a
//! half-open probe slot.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::breaker::{Admission, Breaker, Outcome, State, Transition};
use super::ewma::{PeakEwma, DEFAULT_DECAY_MS};
use crate::config::{BreakerConfig, UpstreamUrl};
use crate::observe::latency::Histogram;
use crate::observe::series::Series;
use crate::proxy::client::keepalive::ConnPool;

#[derive(Debug)]
pub struct Endpoint {
    pub url: UpstreamUrl,
    /// `scheme://authority/base`, for logs and stats.
    pub label: Arc<str>,
    /// The service this endpoint belongs to, for log lines.
    pub service: Arc<str>,
    /// Stable per-endpoint value for hash balancing (a hash of the label).
    pub seed: u64,
    pub breaker: Breaker,
    pub ewma: PeakEwma,
    healthy: AtomicBool,
    /// Consecutive passing and failing health checks.
    health_streak: Mutex<(u32, u32)>,
    in_flight: [AtomicU32; 3],
    max_in_flight: Option<u32>,
    pub stats: EndpointStats,
    /// Keep-alive connections, for a plain `http` endpoint (`https` ones use the service's
    /// client, which speaks HTTP/2 by ALPN).
    pub conns: Option<ConnPool>,
}

/// What a request is to the endpoint, for in-flight counts by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Http = 0,
    Sse = 1,
    WebSocket = 2,
}

#[derive(Debug)]
pub struct EndpointStats {
    pub requests_total: AtomicU64,
    pub errors_total: AtomicU64,
    /// Per-second requests, failures and latencies over the last minutes (service clock).
    pub series: Series,
    /// Every latency since start, for `/metrics`.
    pub latency: Histogram,
    pub last_latency_us: AtomicU64,
    /// What went through this endpoint's event streams (messages are events).
    pub sse: StreamCounters,
    /// What went through this endpoint's WebSocket bridges.
    pub ws: StreamCounters,
}

/// Messages and bytes of long-lived streams, per direction: up is client → upstream.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Streams of this kind ever opened here.
    pub opened: AtomicU64,
    pub messages_up: AtomicU64,
    pub messages_down: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

impl StreamCounters {
    pub fn up(&self, messages: u64, bytes: u64) {
        self.messages_up.fetch_add(messages, Ordering::Relaxed);
        self.bytes_up.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn down(&self, messages: u64, bytes: u64) {
        self.messages_down.fetch_add(messages, Ordering::Relaxed);
        self.bytes_down.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A request's hold on an endpoint, from pick to the end of the response body.
#[derive(Debug)]
pub struct Lease {
    endpoint: Arc<Endpoint>,
    admission: Option<Admission>,
    kind: StreamKind,
    started_us: u64,
}

// === impl Endpoint ===

impl Endpoint {
    pub fn new(
        service: Arc<str>,
        url: UpstreamUrl,
        breaker: BreakerConfig,
        max_in_flight: Option<u32>,
        connect_timeout: std::time::Duration,
    ) -> Self {
        let label: Arc<str> = Arc::from(url.to_string());
        Endpoint {
            conns: (url.scheme == http::uri::Scheme::HTTP)
                .then(|| ConnPool::new(&url.authority, connect_timeout)),
            service,
            seed: super::balancer::hash_bytes(label.as_bytes()),
            label,
            url,
            breaker: Breaker::new(breaker),
            ewma: PeakEwma::new(DEFAULT_DECAY_MS),
            healthy: AtomicBool::new(true),
            health_streak: Mutex::new((0, 0)),
            in_flight: Default::default(),
            max_in_flight,
            stats: EndpointStats {
                requests_total: AtomicU64::new(0),
                errors_total: AtomicU64::new(0),
                series: Series::default(),
                latency: Histogram::default(),
                last_latency_us: AtomicU64::new(0),
                sse: StreamCounters::default(),
                ws: StreamCounters::default(),
            },
        }
    }

    pub fn weight(&self) -> u32 {
        self.url.weight
    }

    /// Whether a request may be sent here now: in service and not at its cap.
    pub fn is_usable(&self, now_ms: u64) -> bool {
        self.is_in_service(now_ms)
            && self
                .max_in_flight
                .is_none_or(|cap| self.in_flight_total() < cap)
    }

    /// Healthy and its breaker not open (or due for a probe): in rotation, however busy.
    /// This is what `/readyz` and the stats call healthy; a full endpoint is busy, not down.
    pub fn is_in_service(&self, now_ms: u64) -> bool {
        self.is_healthy() && self.breaker.is_available(now_ms)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self, kind: StreamKind) -> u32 {
        self.in_flight[kind as usize].load(Ordering::Relaxed)
    }

    pub fn in_flight_total(&self) -> u32 {
        self.in_flight
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes a lease if the breaker admits and the cap allows; `None` otherwise. Time is in
    /// microseconds here (latencies are measured from it), milliseconds everywhere else.
    pub fn lease(self: &Arc<Self>, now_us: u64) -> Option<Lease> {
        let now_ms = now_us / 1000;
        let count = &self.in_flight[StreamKind::Http as usize];
        count.fetch_add(1, Ordering::Relaxed);
        // Counted first, checked second: two racing requests cannot both take the last slot.
        if self
            .max_in_flight
            .is_some_and(|cap| self.in_flight_total() > cap)
        {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let (admission, transition) = self.breaker.admit(now_ms);
        self.log_transition(transition);
        let Some(admission) = admission else {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        Some(Lease {
            endpoint: self.clone(),
            admission: Some(admission),
            kind: StreamKind::Http,
            started_us: now_us,
        })
    }

    /// One active health check's result; returns the new health when it changed.
    pub fn observe_health(
        &self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        let mut streak = self.health_streak.lock().unwrap_or_else(|p| p.into_inner());
        let (passes, fails) = &mut *streak;
        if passed {
            *passes += 1;
            *fails = 0;
        } else {
            *fails += 1;
            *passes = 0;
        }
        let healthy = self.is_healthy();
        let next = if healthy && *fails >= unhealthy_after {
            false
        } else if !healthy && *passes >= healthy_after {
            true
        } else {
            return None;
        };
        self.healthy.store(next, Ordering::Relaxed);
        Some(next)
    }

    fn log_transition(&self, transition: Option<Transition>) {
        let Some(Transition { from, to }) = transition else {
            return;
        };
        match to {
            State::Open { .. } => tracing::warn!(
                service = &*self.service,
                upstream = &*self.label,
                from = from.as_lower(),
                to = to.as_lower(),
                consecutive_failures = self.breaker.consecutive_failures(),
                "circuit breaker opened: no traffic to this endpoint until it is probed"
            ),
            _ => tracing::info!(
                service = &*self.service,
                upstream = &*self.label,
                from = from.as_lower(),
                to = to.as_lower(),
                "circuit breaker changed state"
            ),
        }
    }
}

// === impl Lease ===

impl Lease {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Starts the latency clock again at `now_us`: called when the request body has been
    /// sent, so a slow client's upload is not counted as the endpoint's latency.
    pub fn restart_clock(&mut self, now_us: u64) {
        self.started_us = now_us;
    }

    /// Records how the attempt went, once; later calls do nothing.
    pub fn record(&mut self, outcome: Outcome, now_us: u64) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let now_ms = now_us / 1000;
        let endpoint = &self.endpoint;
        let latency_us = now_us.saturating_sub(self.started_us);
        let failed = outcome == Outcome::Failure;
        // Failures are the breaker's business. Fed to the EWMA, a fast failure (connection
        // refused in 100 µs) would attract traffic, and a penalty would keep traffic away
        // long after the breaker has let the endpoint back in.
        if !failed {
            endpoint.ewma.observe(latency_us as f64, now_ms);
        }
        let stats = &endpoint.stats;
        stats.requests_total.fetch_add(1, Ordering::Relaxed);
        if failed {
            stats.errors_total.fetch_add(1, Ordering::Relaxed);
        }
        stats.series.record(now_ms, latency_us, failed);
        stats.latency.record(latency_us);
        stats.last_latency_us.store(latency_us, Ordering::Relaxed);
        let transition = endpoint.breaker.record(admission, outcome, now_ms);
        endpoint.log_transition(transition);
    }

    /// Upstream data of an event stream went to the client, completing `events` events.
    pub fn count_sse_down(&self, events: u64, bytes: usize) {
        self.endpoint.stats.sse.down(events, bytes as u64);
    }

    /// The response turned out to be a stream of this kind: count it as one from now on.
    pub fn set_kind(&mut self, kind: StreamKind) {
        if kind != self.kind {
            let stats = &self.endpoint.stats;
            match kind {
                StreamKind::Sse => stats.sse.opened.fetch_add(1, Ordering::Relaxed),
                StreamKind::WebSocket => stats.ws.opened.fetch_add(1, Ordering::Relaxed),
                StreamKind::Http => 0,
            };
            // Add before removing, so a racing lease never sees room that is not there.
            self.endpoint.in_flight[kind as usize].fetch_add(1, Ordering::Relaxed);
            self.endpoint.in_flight[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
            self.kind = kind;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
        if let Some(admission) = self.admission.take() {
            self.endpoint.breaker.release(admission);
        }
    }
}
