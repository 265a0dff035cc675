//! The gateway-wide half of the request figures: the all-routes [`Series`] behind the
//! dashboard's headline numbers and charts, the figures of requests that matched no route
//! and of ops requests, and the last error responses with their request ids.
//!
//! Routes keep their own figures ([`RouteStats`]); endpoints keep theirs. This hub is built
//! with the runtime and handed to every request's [`Exchange`](super::Exchange), which
//! records into it once, when the response ends. With `[metrics] enabled = false` nothing is
//! recorded (the benchmark's "off" side) and `/metrics` answers 404.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};

use super::route_stats::RouteStats;
use super::series::{Series, SERIES_SECONDS};
use crate::upstream::window::Window;

/// How many error responses the dashboard lists.
const RECENT_ERRORS: usize = 50;

/// The longest request path kept in an error record.
const MAX_RECORDED_PATH: usize = 256;

#[derive(Debug)]
pub struct Metrics {
    pub enabled: bool,
    /// Every proxied or refused request; ops requests are left out so the dashboard's own
    /// traffic does not show up as load.
    pub totals: Series,
    pub unmatched: Arc<RouteStats>,
    pub admin: Arc<RouteStats>,
    /// 429 answers per second (the limiter's, or an upstream's), for the dashboard.
    too_many: Window,
    recent_errors: Mutex<VecDeque<ErrorRecord>>,
    /// The size of the last `/metrics` text, to size the next one's buffer.
    last_scrape_bytes: AtomicUsize,
    /// The dashboard's last live-feed event and when it was made: every open dashboard
    /// shares it for up to a second.
    pub feed_event: Mutex<Option<(std::time::Instant, bytes::Bytes)>>,
}

/// One error response, for the dashboard's list.
#[derive(Debug, Clone)]
pub struct ErrorRecord {
    pub at_ms: u64,
    pub status: u16,
    pub method: Method,
    pub path: String,
    pub route: Arc<str>,
    pub request_id: HeaderValue,
}

/// What the exchange knows when its response ends.
pub struct Finished<'a> {
    pub stats: &'a RouteStats,
    pub method: &'a Method,
    pub path: &'a str,
    pub status: u16,
    /// Until the response ended: the Prometheus histogram's "duration".
    pub duration_us: u64,
    /// Until the response head: the series' latency, which a stream's length would
    /// otherwise swamp.
    pub head_us: u64,
    pub completed: bool,
    pub request_id: &'a HeaderValue,
}

impl Metrics {
    pub fn new(enabled: bool) -> Self {
        Metrics {
            enabled,
            totals: Series::default(),
            unmatched: Arc::new(RouteStats::new(Arc::from("unmatched"), None)),
            admin: Arc::new(RouteStats::new(Arc::from("admin"), None)),
            too_many: Window::new(SERIES_SECONDS as usize),
            recent_errors: Mutex::new(VecDeque::with_capacity(RECENT_ERRORS)),
            last_scrape_bytes: AtomicUsize::new(0),
            feed_event: Mutex::new(None),
        }
    }

    pub fn record(&self, done: Finished<'_>) {
        let now_ms = epoch_ms();
        let stats = done.stats;
        stats.record(
            done.method,
            done.status,
            done.duration_us,
            done.head_us,
            now_ms,
        );
        if !done.completed {
            stats.aborted.fetch_add(1, Ordering::Relaxed);
        }
        if std::ptr::eq(stats, &*self.admin) {
            return;
        }
        self.totals.record(now_ms, done.head_us, done.status >= 500);
        if done.status == 429 {
            self.too_many.record(now_ms, false);
        }
        // 429s are left out: a flood of them would push every other error off the list, and
        // the dashboard counts them on their own.
        if done.status >= 400 && done.status != 429 {
            let mut path = done.path;
            if path.len() > MAX_RECORDED_PATH {
                let mut end = MAX_RECORDED_PATH;
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                path = &path[..end];
            }
            let record = ErrorRecord {
                at_ms: now_ms,
                status: done.status,
                method: done.method.clone(),
                path: path.to_owned(),
                route: stats.label.clone(),
                request_id: done.request_id.clone(),
            };
            // Never waited for: under a flood of errors, some are left off the list rather
            // than every request queueing on one lock.
            let mut errors = match self.recent_errors.try_lock() {
                Ok(errors) => errors,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            if errors.len() == RECENT_ERRORS {
                errors.pop_back();
            }
            errors.push_front(record);
        }
    }

    /// 429 answers per second over the `seconds` whole seconds before now.
    pub fn rate_limited_rps(&self, now_ms: u64, seconds: u64) -> f64 {
        let seconds = seconds.max(1);
        self.too_many.counts(now_ms, seconds, false).requests as f64 / seconds as f64
    }

    /// A buffer size for the next scrape: the last one's plus an eighth.
    pub fn scrape_size_hint(&self) -> usize {
        let last = self.last_scrape_bytes.load(Ordering::Relaxed);
        (last + last / 8).max(64 * 1024)
    }

    pub fn remember_scrape_size(&self, bytes: usize) {
        self.last_scrape_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The last error responses, newest first.
    pub fn recent_errors(&self) -> Vec<ErrorRecord> {
        let errors = self.recent_errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.iter().cloned().collect()
    }
}

/// Wall-clock milliseconds: the series are read against the dashboard's clock.
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished<'a>(
        stats: &'a RouteStats,
        status: u16,
        path: &'a str,
        id: &'a HeaderValue,
    ) -> Finished<'a> {
        Finished {
            stats,
            method: &Method::GET,
            path,
            status,
            duration_us: 1_000,
            head_us: 1_000,
            completed: status != 499,
            request_id: id,
        }
    }

    #[test]
    fn errors_are_kept_newest_first_and_bounded() {
        let metrics = Metrics::new(true);
        let route = RouteStats::new(Arc::from("/r"), None);
        let id = HeaderValue::from_static("id-1");
        metrics.record(finished(&route, 200, "/r/ok", &id));
        metrics.record(finished(&route, 429, "/r/limited", &id));
        for i in 0..60 {
            let path = format!("/r/{i}");
            metrics.record(finished(&route, 502, &path, &id));
        }
        let long = "/é".repeat(300);
        metrics.record(finished(&route, 404, &long, &id));
        let errors = metrics.recent_errors();
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0].status, 404);
        assert!(errors[0].path.len() <= MAX_RECORDED_PATH);
        assert_eq!(errors[1].path, "/r/59");
        assert!(errors.iter().all(|e| e.status != 429 && e.status != 200));
        // Ops requests count for their route only, not in the gateway's totals.
        metrics.record(finished(&metrics.admin, 500, "/admin", &id));
        assert_eq!(metrics.recent_errors()[0].status, 404);
        let now = epoch_ms() + 1000;
        assert_eq!(metrics.totals.summary(now, 2).requests, 63);
        assert_eq!(metrics.admin.series.summary(now, 2).requests, 1);
    }
}
