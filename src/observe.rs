//! Logging and the per-request record behind the access log.
//!
//! Logs are JSON lines on stdout, written in batches by [`log_buffer`]'s thread (a slow
//! terminal or pipe never stalls a request). An [`Exchange`] is created once a request is routed (or refused) and is
//! shared by the request and response bodies; when the last of them is dropped — the response
//! fully sent, or the client gone — it writes the access log line with the true byte counts
//! and duration, records the request's figures ([`metrics`], [`route_stats`]), and tells
//! the connection it is idle again. Latency buckets ([`latency`]) and per-second series
//! ([`series`]) are shared by routes and endpoints; [`prometheus`] renders `/metrics` and
//! [`process`] reads the process's own resource use.

pub mod json_line;
pub mod latency;
pub mod log_buffer;
pub mod metrics;
pub mod process;
pub mod prometheus;
pub mod route_stats;
pub mod series;

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use http::{HeaderValue, Method, Uri};
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;
use crate::pressure::Slot;
use crate::server::InFlight;
use metrics::{Finished, Metrics};
use route_stats::RouteStats;

/// Rounds to two decimals, for figures people read.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Installs the JSON subscriber. Keep the guard alive until exit: dropping it flushes the log.
pub fn init_logging(level: LogLevel) -> Result<log_buffer::FlushOnDrop, String> {
    let guard = log_buffer::start()?;
    let filter = EnvFilter::try_new(format!(
        "{level},hyper=warn,h2=warn,rustls=warn",
        level = level.as_filter()
    ))
    .map_err(|e| format!("log filter: {e}"))?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(|| log_buffer::LogLines)
        .try_init()
        .map_err(|e| format!("cannot install logger: {e}"))?;
    Ok(guard)
}

/// Gateway-wide live numbers for `/admin/stats`: uptime and open client connections.
#[derive(Debug)]
pub struct Live {
    pub started: Instant,
    connections: AtomicU64,
}

/// One open client connection; counted until dropped.
pub struct OpenConnection(Arc<Live>);

impl Live {
    pub fn new() -> Self {
        Live {
            started: Instant::now(),
            connections: AtomicU64::new(0),
        }
    }

    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    pub fn open_connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request's record, written to the access log when it is dropped.
#[derive(Debug)]
pub struct Exchange {
    pub request_id: HeaderValue,
    method: Method,
    uri: Uri,
    client: IpAddr,
    /// The route's figures (and its name and service for the log).
    stats: Arc<RouteStats>,
    /// Where the request's figures go; `None` when metrics are off.
    metrics: Option<Arc<Metrics>>,
    upstream: OnceLock<Arc<str>>,
    status: AtomicU16,
    started: Instant,
    /// Microseconds from the start to the response head (0 until there is one).
    head_us: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    completed: AtomicBool,
    /// Set (and waiters woken) once the request body has been sent upstream in full.
    request_body_done: AtomicBool,
    request_body_sent: Notify,
    access_log: bool,
    /// Dropped with the exchange: the connection then counts one request fewer in flight.
    _in_flight: Option<InFlight>,
    /// The request's place in the gateway-wide in-flight count (proxied requests only).
    pressure_slot: OnceLock<Slot>,
}

/// What `Exchange::new` needs to know up front.
pub struct ExchangeStart {
    pub request_id: HeaderValue,
    pub method: Method,
    pub uri: Uri,
    pub client: IpAddr,
    pub started: Instant,
    pub access_log: bool,
    pub in_flight: Option<InFlight>,
    pub metrics: Option<Arc<Metrics>>,
}

impl Exchange {
    pub fn new(start: ExchangeStart, stats: Arc<RouteStats>) -> Arc<Exchange> {
        Arc::new(Exchange {
            request_id: start.request_id,
            method: start.method,
            uri: start.uri,
            client: start.client,
            stats,
            metrics: start.metrics,
            upstream: OnceLock::new(),
            status: AtomicU16::new(0),
            started: start.started,
            head_us: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            completed: AtomicBool::new(false),
            request_body_done: AtomicBool::new(false),
            request_body_sent: Notify::new(),
            access_log: start.access_log,
            _in_flight: start.in_flight,
            pressure_slot: OnceLock::new(),
        })
    }

    pub fn set_upstream(&self, upstream: Arc<str>) {
        let _ = self.upstream.set(upstream);
    }

    /// Holds `slot` until the response ends (or [`Exchange::release_pressure_slot`]).
    pub fn hold_pressure_slot(&self, slot: Slot) {
        let _ = self.pressure_slot.set(slot);
    }

    /// The response is an established stream: it no longer counts as a request in flight.
    pub fn release_pressure_slot(&self) {
        if let Some(slot) = self.pressure_slot.get() {
            slot.release();
        }
    }

    /// The response head is ready: its status, and the time it took.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
        let _ = self.head_us.compare_exchange(
            0,
            self.started.elapsed().as_micros().max(1) as u64,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The request body has been sent upstream in full (or failed): wake the response timer.
    pub fn request_body_done(&self) {
        if !self.request_body_done.swap(true, Ordering::AcqRel) {
            self.request_body_sent.notify_waiters();
        }
    }

    /// Whether the request body has been read to its end (or there was none).
    pub fn is_request_body_done(&self) -> bool {
        self.request_body_done.load(Ordering::Acquire)
    }

    /// Resolves once [`Exchange::request_body_done`] has been called.
    pub async fn request_body_sent(&self) {
        loop {
            // Registered before the check, so a notification in between is not missed.
            let notified = self.request_body_sent.notified();
            if self.request_body_done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The response body reached its end (as opposed to being dropped by a client that left).
    pub fn mark_completed(&self) {
        self.completed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let status = self.status.load(Ordering::Relaxed);
        // A HEAD answer has no body to send: it is complete once its head is.
        let completed =
            self.completed.load(Ordering::Relaxed) || (self.method == Method::HEAD && status != 0);
        if let Some(metrics) = &self.metrics {
            metrics.record(Finished {
                stats: &self.stats,
                method: &self.method,
                path: self.uri.path(),
                // The client left before any answer: recorded as nginx does, 499.
                status: if status == 0 { 499 } else { status },
                duration_us: elapsed.as_micros() as u64,
                head_us: match self.head_us.load(Ordering::Relaxed) {
                    0 => elapsed.as_micros() as u64,
                    head => head,
                },
                completed,
                request_id: &self.request_id,
            });
        }
        if self.access_log {
            self.write_access_line(status, elapsed, completed);
        }
    }
}

thread_local! {
    /// Each worker thread's access line, reused so a line costs no allocation.
    static ACCESS_LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl Exchange {
    /// The access log line: the shape tracing's JSON formatter gives other lines (timestamp,
    /// level, the fields, target `access`), written by hand because formatting it through
    /// tracing cost more than the rest of the request's bookkeeping together.
    fn write_access_line(&self, status: u16, elapsed: Duration, completed: bool) {
        if !log_buffer::is_started() {
            return;
        }
        ACCESS_LINE.with_borrow_mut(|line| {
            line.clear();
            line.extend_from_slice(b"{\"timestamp\":\"");
            json_line::timestamp(line, SystemTime::now());
            line.extend_from_slice(b"\",\"level\":\"INFO\",\"request_id\":");
            json_line::string(line, self.request_id.to_str().unwrap_or_default());
            line.extend_from_slice(b",\"method\":");
            json_line::string(line, self.method.as_str());
            line.extend_from_slice(b",\"path\":");
            json_line::string(line, self.uri.path());
            line.extend_from_slice(b",\"client\":\"");
            json_line::ip(line, self.client);
            line.extend_from_slice(b"\",\"route\":");
            json_line::string(line, &self.stats.label);
            line.extend_from_slice(b",\"service\":");
            json_line::string(line, self.stats.service.as_deref().unwrap_or("-"));
            line.extend_from_slice(b",\"upstream\":");
            json_line::string(line, self.upstream.get().map(|u| &**u).unwrap_or("-"));
            line.extend_from_slice(b",\"status\":");
            json_line::uint(line, status);
            line.extend_from_slice(b",\"duration_ms\":");
            let duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1000.0;
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *line, &duration_ms);
            line.extend_from_slice(b",\"bytes_in\":");
            json_line::uint(line, self.bytes_in.load(Ordering::Relaxed));
            line.extend_from_slice(b",\"bytes_out\":");
            json_line::uint(line, self.bytes_out.load(Ordering::Relaxed));
            line.extend_from_slice(if completed {
                b",\"completed\":true,\"target\":\"access\"}\n"
            } else {
                b",\"completed\":false,\"target\":\"access\"}\n"
            });
            log_buffer::append(line);
        });
    }
}
