//! `/metrics`: the runtime's figures in the Prometheus text format (0.0.4), through
//! prometheus-client's encoder.
//!
//! Nothing here sits on the request path. Requests record into handles they already hold
//! (route, endpoint and gateway figures, plain atomics); a scrape walks the runtime once and
//! encodes what those hold, as one [`Collector`]. Families, by owner:
//! - the seed's `gateway_http_request_duration_seconds{method,route,status_code}` and
//!   `gateway_websocket_connections`, under those names;
//! - per route: rate-limit rejections, responses aborted by the client;
//! - per service and endpoint: request duration, requests and failures, in flight by kind,
//!   health, breaker state (one series per state, 1 for the current one) and openings,
//!   retries, SSE streams and events, WebSocket connections, messages and bytes;
//! - the gateway: open connections, requests in flight, scheduler delay, requests shed,
//!   config version, build info;
//! - the process: resident memory, CPU seconds, open descriptors, threads, start time.
//!
//! A route's series appear once it has served a request, an endpoint's SSE and WebSocket
//! series once it has carried such a stream: a gateway of 1,000 services would otherwise
//! export tens of thousands of zeros on every scrape (see `bench/metrics-scrape`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::latency::HistogramSnapshot;
use crate::pressure::Reason;
use crate::runtime::Runtime;
use crate::upstream::{Endpoint, StreamKind};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The whole scrape, as text.
pub fn render(runtime: &Arc<Runtime>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(runtime.clone())));
    // Sized like the last scrape: growing a multi-megabyte string by doubling costs more
    // than the encoding.
    let mut text = String::with_capacity(runtime.metrics.scrape_size_hint());
    // Writing into a String cannot fail; an encoder error would be a bug in a label.
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::error!(%error, "metrics encoding failed");
    }
    runtime.metrics.remember_scrape_size(text.len());
    text
}

struct Scrape(Arc<Runtime>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// An endpoint with its service's name and the service clock's now.
type EndpointEntry<'a> = (&'a str, &'a Arc<Endpoint>, u64);

fn labels<'a>(&(service, endpoint, _): &EndpointEntry<'a>) -> [(&'static str, &'a str); 2] {
    [("service", service), ("endpoint", &*endpoint.label)]
}

/// An endpoint's labels plus one more.
type LabelsAnd<'a> = (
    [(&'static str, &'a str); 2],
    [(&'static str, &'static str); 1],
);

/// WebSocket messages or bytes of one endpoint, as `up` and `down` series.
fn directions<'a>(entry: &EndpointEntry<'a>, bytes: bool) -> [(LabelsAnd<'a>, u64); 2] {
    let ws = &entry.1.stats.ws;
    let (up, down) = if bytes {
        (ws.bytes_up.load(Relaxed), ws.bytes_down.load(Relaxed))
    } else {
        (ws.messages_up.load(Relaxed), ws.messages_down.load(Relaxed))
    };
    [
        ((labels(entry), [("direction", "up")]), up),
        ((labels(entry), [("direction", "down")]), down),
    ]
}

type Result = std::result::Result<(), std::fmt::Error>;

const NO_LABELS: [(&str, &str); 0] = [];

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> Result {
        let rt = &*self.0;
        request_families(rt, &mut out)?;
        upstream_families(rt, &mut out)?;
        gateway_families(rt, &mut out)?;
        process_families(&mut out)
    }
}

fn request_families(rt: &Runtime, out: &mut DescriptorEncoder) -> Result {
    let policies = rt.router.policies();
    let routes: Vec<_> = policies
        .iter()
        .map(|p| &*p.stats)
        .chain([&*rt.metrics.unmatched, &*rt.metrics.admin])
        .collect();
    let mut family = out.encode_descriptor(
        "gateway_http_request_duration_seconds",
        "Time from request to the end of its response, by method, route and status.",
        None,
        MetricType::Histogram,
    )?;
    for route in &routes {
        for (method, status, histogram) in route.histograms() {
            let status = status.to_string();
            let labels = [
                ("method", method),
                ("route", &*route.label),
                ("status_code", status.as_str()),
            ];
            histogram_value(&mut family, &labels, &histogram)?;
        }
    }
    let served: Vec<_> = routes.iter().filter(|r| r.series.is_used()).collect();
    counter_family(
        out,
        "sluice_route_rate_limited",
        "Requests refused by a rate limit, by route.",
        served
            .iter()
            .map(|r| ([("route", &*r.label)], r.rate_limited.load(Relaxed))),
    )?;
    let cached: Vec<_> = policies
        .iter()
        .filter(|p| p.cache.is_some() && p.stats.series.is_used())
        .map(|p| &*p.stats)
        .collect();
    counter_family(
        out,
        "sluice_cache_requests",
        "What the response cache did for a route's requests: hit, miss or bypass.",
        cached.iter().flat_map(|r| {
            let c = &r.cache;
            [
                (
                    [("route", &*r.label), ("result", "hit")],
                    c.hits.load(Relaxed),
                ),
                (
                    [("route", &*r.label), ("result", "miss")],
                    c.misses.load(Relaxed),
                ),
                (
                    [("route", &*r.label), ("result", "bypass")],
                    c.bypasses.load(Relaxed),
                ),
            ]
        }),
    )?;
    if let Some(cache) = &rt.cache {
        gauge_family(
            out,
            "sluice_cache_entries",
            "Entries in the response cache.",
            [(NO_LABELS, cache.entries() as u64)],
        )?;
        gauge_family(
            out,
            "sluice_cache_bytes",
            "Memory the response cache's entries weigh (bodies, headers, keys).",
            [(NO_LABELS, cache.bytes())],
        )?;
        gauge_family(
            out,
            "sluice_cache_capacity_bytes",
            "The response cache's capacity.",
            [(NO_LABELS, cache.capacity())],
        )?;
    }
    counter_family(
        out,
        "sluice_route_aborted_responses",
        "Responses (streams included) whose client left before the end, by route.",
        served
            .iter()
            .map(|r| ([("route", &*r.label)], r.aborted.load(Relaxed))),
    )
}

fn upstream_families(rt: &Runtime, out: &mut DescriptorEncoder) -> Result {
    let endpoints: Vec<EndpointEntry> = rt
        .services
        .iter()
        .flat_map(|(name, service)| {
            let now = service.clock.now_ms();
            service
                .pool
                .endpoints()
                .iter()
                .map(move |e| (name.as_str(), e, now))
        })
        .collect();
    let endpoints = &endpoints;
    let carried = |kind: StreamKind| -> Vec<&EndpointEntry> {
        endpoints
            .iter()
            .filter(|e| {
                let counters = match kind {
                    StreamKind::Sse => &e.1.stats.sse,
                    _ => &e.1.stats.ws,
                };
                counters.opened.load(Relaxed) > 0
            })
            .collect()
    };
    let (sse, ws) = (carried(StreamKind::Sse), carried(StreamKind::WebSocket));
    let mut family = out.encode_descriptor(
        "sluice_upstream_request_duration_seconds",
        "Time from sending a request upstream to its response head, by service and endpoint.",
        None,
        MetricType::Histogram,
    )?;
    for entry in endpoints {
        histogram_value(
            &mut family,
            &labels(entry),
            &entry.1.stats.latency.snapshot(),
        )?;
    }
    counter_family(
        out,
        "sluice_upstream_requests",
        "Attempts sent to an endpoint that got an outcome, by service and endpoint.",
        endpoints
            .iter()
            .map(|e| (labels(e), e.1.stats.requests_total.load(Relaxed))),
    )?;
    counter_family(
        out,
        "sluice_upstream_failures",
        "Attempts that failed (connection, timeout or a failure status), by service and endpoint.",
        endpoints
            .iter()
            .map(|e| (labels(e), e.1.stats.errors_total.load(Relaxed))),
    )?;
    let mut family = out.encode_descriptor(
        "sluice_upstream_in_flight",
        "Requests in flight to an endpoint, by kind (http, sse, ws).",
        None,
        MetricType::Gauge,
    )?;
    let kinds = endpoints
        .iter()
        .map(|e| (e, StreamKind::Http, "http"))
        .chain(sse.iter().map(|e| (*e, StreamKind::Sse, "sse")))
        .chain(ws.iter().map(|e| (*e, StreamKind::WebSocket, "ws")));
    for (entry, kind, name) in kinds {
        let labels = (labels(entry), [("kind", name)]);
        family
            .encode_family(&labels)?
            .encode_gauge(&entry.1.in_flight(kind))?;
    }
    gauge_family(
        out,
        "sluice_upstream_healthy",
        "1 when the endpoint passes its health checks (or has none), 0 when not.",
        endpoints
            .iter()
            .map(|e| (labels(e), u64::from(e.1.is_healthy()))),
    )?;
    let mut family = out.encode_descriptor(
        "sluice_upstream_breaker_state",
        "The circuit breaker's state: 1 for the current one of closed, open, half_open.",
        None,
        MetricType::Gauge,
    )?;
    for entry in endpoints {
        let state = entry.1.breaker.state_at(entry.2).as_lower();
        for name in ["closed", "open", "half_open"] {
            let labels = (labels(entry), [("state", name)]);
            family
                .encode_family(&labels)?
                .encode_gauge(&u64::from(name == state))?;
        }
    }
    counter_family(
        out,
        "sluice_upstream_breaker_opened",
        "Times the endpoint's circuit breaker opened.",
        endpoints
            .iter()
            .map(|e| (labels(e), e.1.breaker.opened_total())),
    )?;
    counter_family(
        out,
        "sluice_service_retries",
        "Requests retried on another endpoint, by service.",
        rt.services
            .iter()
            .map(|(name, s)| ([("service", name.as_str())], s.retries_total.load(Relaxed))),
    )?;
    gauge_family(
        out,
        "sluice_sse_streams",
        "Server-Sent Event streams open, by service and endpoint.",
        sse.iter()
            .map(|e| (labels(e), u64::from(e.1.in_flight(StreamKind::Sse)))),
    )?;
    counter_family(
        out,
        "sluice_sse_events",
        "Events passed from upstream event streams to clients.",
        sse.iter()
            .map(|e| (labels(e), e.1.stats.sse.messages_down.load(Relaxed))),
    )?;
    counter_family(
        out,
        "sluice_sse_bytes",
        "Bytes passed from upstream event streams to clients.",
        sse.iter()
            .map(|e| (labels(e), e.1.stats.sse.bytes_down.load(Relaxed))),
    )?;
    gauge_family(
        out,
        "gateway_websocket_connections",
        "WebSocket connections bridged now (all services).",
        [(
            NO_LABELS,
            endpoints
                .iter()
                .map(|e| u64::from(e.1.in_flight(StreamKind::WebSocket)))
                .sum::<u64>(),
        )],
    )?;
    gauge_family(
        out,
        "sluice_websocket_connections",
        "WebSocket connections bridged now, by service and endpoint.",
        ws.iter()
            .map(|e| (labels(e), u64::from(e.1.in_flight(StreamKind::WebSocket)))),
    )?;
    counter_family(
        out,
        "sluice_websocket_messages",
        "WebSocket messages bridged, by direction (up: client to upstream).",
        ws.iter().flat_map(|e| directions(e, false)),
    )?;
    counter_family(
        out,
        "sluice_websocket_bytes",
        "WebSocket payload bytes bridged, by direction (up: client to upstream).",
        ws.iter().flat_map(|e| directions(e, true)),
    )
}

fn gateway_families(rt: &Runtime, out: &mut DescriptorEncoder) -> Result {
    let pressure = &rt.pressure;
    gauge_family(
        out,
        "sluice_open_connections",
        "Client connections open now.",
        [(NO_LABELS, rt.live.open_connections())],
    )?;
    gauge_family(
        out,
        "sluice_in_flight_requests",
        "Proxied requests in flight now (established streams excluded).",
        [(NO_LABELS, pressure.in_flight())],
    )?;
    gauge_family(
        out,
        "sluice_scheduler_delay_seconds",
        "How late the overload probe last woke up.",
        [(NO_LABELS, pressure.delay().as_secs_f64())],
    )?;
    counter_family(
        out,
        "sluice_shed_requests",
        "Requests refused with 503 overloaded, by reason.",
        Reason::ALL
            .iter()
            .map(|r| ([("reason", r.as_str())], pressure.shed_total(*r))),
    )?;
    gauge_family(
        out,
        "sluice_config_version",
        "How many configurations this process has loaded.",
        [(NO_LABELS, rt.config_version)],
    )?;
    gauge_family(
        out,
        "sluice_build_info",
        "The running build.",
        [([("version", env!("CARGO_PKG_VERSION"))], 1u64)],
    )
}

fn process_families(out: &mut DescriptorEncoder) -> Result {
    let figures = super::process::read();
    if let Some(cpu) = figures.cpu_seconds {
        counter_family(
            out,
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            [(NO_LABELS, cpu)],
        )?;
    }
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            figures.resident_bytes.map(|b| b as f64),
        ),
        (
            "process_open_fds",
            "Open file descriptors.",
            figures.open_fds.map(|n| n as f64),
        ),
        (
            "process_threads",
            "OS threads.",
            figures.threads.map(|n| n as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            figures.start_time_seconds,
        ),
    ];
    // A figure this platform cannot tell is left out, not reported as 0.
    for (name, help, value) in gauges {
        if let Some(value) = value {
            gauge_family(out, name, help, [(NO_LABELS, value)])?;
        }
    }
    Ok(())
}

fn histogram_value(
    family: &mut prometheus_client::encoding::MetricEncoder,
    labels: &impl EncodeLabelSet,
    histogram: &HistogramSnapshot,
) -> Result {
    family
        .encode_family(labels)?
        .encode_histogram::<NoLabelSet>(
            histogram.sum_us as f64 / 1e6,
            histogram.count(),
            &histogram.buckets_seconds(),
            None,
        )
}

fn counter_family<L, V>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, V)>,
) -> Result
where
    L: EncodeLabelSet,
    V: prometheus_client::encoding::EncodeCounterValue,
{
    let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, V, u64>(&value, None)?;
    }
    Ok(())
}

fn gauge_family<L, V>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, V)>,
) -> Result
where
    L: EncodeLabelSet,
    V: prometheus_client::encoding::EncodeGaugeValue,
{
    let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}
