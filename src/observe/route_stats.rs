//! Per-route request figures: the seed's `gateway_http_request_duration_seconds{method,route,
//! status_code}` histograms, the windowed [`Series`], rate-limit rejections and aborted
//! responses.
//!
//! Each route owns its figures, built with the router, so a request records into handles it
//! already holds: no label hashing, no lock. A histogram per (method, status) pair is created
//! on first use in a fixed table of the common methods and statuses; a status outside the
//! table (rare by definition) goes to a short list behind a mutex.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::Method;

use super::latency::{Histogram, HistogramSnapshot};
use super::series::Series;
use crate::cache::CacheCounters;

/// Methods with their own label value; any other is counted as `other`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// Statuses with a slot in the table: what upstreams and the gateway itself usually answer.
const STATUSES: [u16; 33] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409,
    410, 412, 413, 415, 422, 429, 431, 499, 500, 501, 502, 503, 504, 101,
];

#[derive(Debug)]
pub struct RouteStats {
    /// The route as logs and metrics name it: its config path, `/api/<service>`, `admin` or
    /// `unmatched`.
    pub label: Arc<str>,
    pub service: Option<Arc<str>>,
    cells: Box<[OnceLock<Box<Histogram>>]>,
    rare: Mutex<Vec<(usize, u16, Box<Histogram>)>>,
    pub series: Series,
    pub rate_limited: AtomicU64,
    /// Responses whose client left before the body ended (streams included).
    pub aborted: AtomicU64,
    /// What the response cache did for this route's requests.
    pub cache: CacheCounters,
}

impl RouteStats {
    pub fn new(label: Arc<str>, service: Option<Arc<str>>) -> Self {
        RouteStats {
            label,
            service,
            cells: (0..METHODS.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            rare: Mutex::new(Vec::new()),
            series: Series::default(),
            rate_limited: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            cache: CacheCounters::default(),
        }
    }

    /// One finished (or abandoned) request: its whole duration for the histogram, the time
    /// to its response head for the series.
    pub fn record(
        &self,
        method: &Method,
        status: u16,
        duration_us: u64,
        head_us: u64,
        now_ms: u64,
    ) {
        let method = method_index(method);
        match STATUSES.iter().position(|&s| s == status) {
            Some(slot) => self.cells[method * STATUSES.len() + slot]
                .get_or_init(Box::default)
                .record(duration_us),
            None => {
                let mut rare = self.rare.lock().unwrap_or_else(|p| p.into_inner());
                match rare.iter().find(|(m, s, _)| *m == method && *s == status) {
                    Some((_, _, histogram)) => histogram.record(duration_us),
                    None => {
                        let histogram = Box::<Histogram>::default();
                        histogram.record(duration_us);
                        rare.push((method, status, histogram));
                    }
                }
            }
        }
        self.series.record(now_ms, head_us, status >= 500);
    }

    /// Every (method, status) histogram that has counted something.
    pub fn histograms(&self) -> Vec<(&'static str, u16, HistogramSnapshot)> {
        let mut out: Vec<_> = self
            .cells
            .iter()
            .enumerate()
            .filter_map(|(i, cell)| {
                let histogram = cell.get()?;
                let (method, slot) = (i / STATUSES.len(), i % STATUSES.len());
                Some((METHODS[method], STATUSES[slot], histogram.snapshot()))
            })
            .collect();
        let rare = self.rare.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(
            rare.iter()
                .map(|(method, status, h)| (METHODS[*method], *status, h.snapshot())),
        );
        out
    }

    pub fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}

fn method_index(method: &Method) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(METHODS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_and_status_gets_its_own_histogram() {
        let stats = RouteStats::new(Arc::from("/r"), None);
        stats.record(&Method::GET, 200, 1_000, 900, 5_000);
        stats.record(&Method::GET, 200, 3_000, 900, 5_000);
        stats.record(&Method::POST, 502, 1_000, 900, 5_000);
        // Outside the table: counted all the same.
        let purge = Method::from_bytes(b"PURGE").unwrap();
        stats.record(&purge, 418, 10, 10, 5_000);
        stats.record(&purge, 418, 10, 10, 5_000);
        let mut seen: Vec<_> = stats
            .histograms()
            .into_iter()
            .map(|(m, s, h)| (m, s, h.count()))
            .collect();
        seen.sort();
        assert_eq!(seen, [("GET", 200, 2), ("POST", 502, 1), ("other", 418, 2)]);
        let summary = stats.series.summary(6_000, 1);
        assert_eq!((summary.requests, summary.errors), (5, 1));
    }
}
