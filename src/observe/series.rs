//! Windowed stats: per-second requests, errors and a latency histogram over the last five
//! minutes, for one route, one endpoint or the whole gateway. They feed `/admin/stats` and
//! the dashboard's rates, percentiles and charts (Prometheus gets the cumulative
//! [`Histogram`](super::latency::Histogram)s instead; rates there are the scraper's job).
//!
//! A series is a ring of one-second buckets, allocated on first use so a route that never
//! sees traffic costs one pointer (a full ring is about 25 KiB). Writers touch one bucket
//! with relaxed atomics; a bucket left from an older second is reset by the first writer of
//! the new one ([`enter_second`]), so readers never mix seconds. A count landing during that
//! reset may be lost: an accepted inaccuracy that keeps locks off the request path.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use super::latency::{bucket_of, quantile_us, BUCKETS};

/// How far back a series remembers, in whole seconds.
pub const SERIES_SECONDS: u64 = 300;

/// The tag of a bucket being reset: it matches no second.
const RESETTING: u64 = u64::MAX;

/// Makes a ring bucket count `second` (its tag is `second + 1`, 0 meaning never used): when
/// it still holds an older second, the first caller marks it, runs `reset`, then tags it.
pub(crate) fn enter_second(tag: &AtomicU64, second: u64, reset: impl FnOnce()) {
    let wanted = second + 1;
    let seen = tag.load(Ordering::Acquire);
    if seen != wanted
        && seen != RESETTING
        && tag
            .compare_exchange(seen, RESETTING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        reset();
        tag.store(wanted, Ordering::Release);
    }
}

/// The second a bucket holds, if any (and not being reset).
pub(crate) fn second_of(tag: &AtomicU64) -> Option<u64> {
    match tag.load(Ordering::Acquire) {
        0 | RESETTING => None,
        tagged => Some(tagged - 1),
    }
}

#[derive(Debug, Default)]
pub struct Series {
    ring: OnceLock<Box<[Second]>>,
}

#[derive(Debug, Default)]
struct Second {
    tag: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

/// Totals over a span of whole seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub latency: [u64; BUCKETS],
    /// How many seconds the totals cover (the divisor of the rates).
    pub seconds: u64,
}

impl Series {
    /// Whether anything was ever recorded (the ring exists).
    pub fn is_used(&self) -> bool {
        self.ring.get().is_some()
    }

    pub fn record(&self, now_ms: u64, latency_us: u64, error: bool) {
        let ring = self.ring.get_or_init(|| {
            (0..=SERIES_SECONDS)
                .map(|_| Second::default())
                .collect::<Box<[Second]>>()
        });
        let second = now_ms / 1000;
        let bucket = &ring[(second % ring.len() as u64) as usize];
        enter_second(&bucket.tag, second, || {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.errors.store(0, Ordering::Relaxed);
            for count in &bucket.latency {
                count.store(0, Ordering::Relaxed);
            }
        });
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            bucket.errors.fetch_add(1, Ordering::Relaxed);
        }
        bucket.latency[bucket_of(latency_us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Totals of the `seconds` whole seconds before the current one (which is still filling).
    pub fn summary(&self, now_ms: u64, seconds: u64) -> Summary {
        let current = now_ms / 1000;
        let seconds = seconds.clamp(1, SERIES_SECONDS);
        let mut summary = Summary {
            seconds,
            ..Summary::default()
        };
        let Some(ring) = self.ring.get() else {
            return summary;
        };
        for bucket in ring.iter() {
            let Some(second) = second_of(&bucket.tag) else {
                continue;
            };
            if second < current && second + seconds >= current {
                summary.add(bucket);
            }
        }
        summary
    }

    /// One summary per second for the `seconds` whole seconds before the current one,
    /// oldest first (for charts).
    pub fn per_second(&self, now_ms: u64, seconds: u64) -> Vec<Summary> {
        let current = now_ms / 1000;
        let seconds = seconds.clamp(1, SERIES_SECONDS);
        let ring = self.ring.get();
        (1..=seconds)
            .rev()
            .map(|back| {
                let mut summary = Summary {
                    seconds: 1,
                    ..Summary::default()
                };
                let Some(second) = current.checked_sub(back) else {
                    return summary;
                };
                if let Some(ring) = ring {
                    let bucket = &ring[(second % ring.len() as u64) as usize];
                    if second_of(&bucket.tag) == Some(second) {
                        summary.add(bucket);
                    }
                }
                summary
            })
            .collect()
    }
}

impl Summary {
    fn add(&mut self, bucket: &Second) {
        self.requests += u64::from(bucket.requests.load(Ordering::Relaxed));
        self.errors += u64::from(bucket.errors.load(Ordering::Relaxed));
        for (total, count) in self.latency.iter_mut().zip(&bucket.latency) {
            *total += u64::from(count.load(Ordering::Relaxed));
        }
    }

    /// Adds another summary over the same span (endpoints into their service).
    pub fn merge(&mut self, other: &Summary) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (total, count) in self.latency.iter_mut().zip(&other.latency) {
            *total += count;
        }
    }

    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1) as f64
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The `q` quantile of the latencies in milliseconds; `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_us(&self.latency, q).map(|us| us / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_cover_whole_seconds_before_the_current_one() {
        let series = Series::default();
        assert_eq!(series.summary(5_000, 10).requests, 0);
        // Ten requests a second for ten seconds (0..10 s), one in ten an error.
        for i in 0..100u64 {
            series.record(i * 100, 2_000, i % 10 == 0);
        }
        let summary = series.summary(10_000, 10);
        assert_eq!((summary.requests, summary.errors), (100, 10));
        assert_eq!(summary.rps(), 10.0);
        assert_eq!(summary.error_rate(), 0.1);
        let p50 = summary.quantile_ms(0.5).unwrap();
        assert!((1.0..=2.5).contains(&p50), "{p50}");
        // The second still filling is not counted; older seconds fall out of the span.
        series.record(10_500, 2_000, false);
        assert_eq!(series.summary(10_900, 10).requests, 100);
        // 5..=14: five seconds of ten, and the one at 10.5 s.
        assert_eq!(series.summary(15_000, 10).requests, 51);
        assert_eq!(series.summary(11_000, 1).requests, 1);
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let series = Series::default();
        series.record(1_000, 100, true);
        // The same ring slot, one lap later.
        let lap = (SERIES_SECONDS + 1) * 1000;
        series.record(1_000 + lap, 100, false);
        let summary = series.summary(2_000 + lap, 1);
        assert_eq!((summary.requests, summary.errors), (1, 0));
        // Nothing of the first lap is reported as recent.
        assert_eq!(series.summary(2_000 + lap, SERIES_SECONDS).requests, 1);
    }

    #[test]
    fn per_second_is_oldest_first_with_gaps_as_zero() {
        let series = Series::default();
        series.record(7_100, 1_000, false);
        series.record(7_200, 1_000, false);
        series.record(9_100, 1_000, true);
        let seconds = series.per_second(10_000, 4);
        let requests: Vec<u64> = seconds.iter().map(|s| s.requests).collect();
        assert_eq!(requests, [0, 2, 0, 1]);
        assert_eq!(seconds[3].errors, 1);
        assert_eq!(seconds[2].quantile_ms(0.99), None);
        // Right after start there is no earlier second to show.
        assert_eq!(series.per_second(1_500, 3).len(), 3);
    }
}
