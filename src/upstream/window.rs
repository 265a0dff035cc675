//! Counts over a sliding window of whole seconds: requests and failures per second, kept in a
//! ring of per-second buckets. It answers "how many in the last N seconds" for the breaker's
//! failure ratio and a true windowed rate for `/admin/stats` (the seed's `rps` was a
//! since-last-sample figure that read 0 between samples).
//!
//! Writers touch one bucket with relaxed atomics; buckets change seconds as the dashboard's
//! series do ([`enter_second`]), so a reader never takes an old second's counts for the
//! current one (the breaker decides on them).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::observe::series::{enter_second, second_of};

#[derive(Debug)]
pub struct Window {
    buckets: Box<[Bucket]>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The second this bucket counts, plus one (0 = never used).
    second: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
}

/// Totals over a span of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub failures: u64,
}

// === impl Window ===

impl Window {
    /// A window able to answer for up to `seconds` past seconds (plus the current one).
    pub fn new(seconds: usize) -> Self {
        Window {
            buckets: (0..=seconds.max(1)).map(|_| Bucket::default()).collect(),
        }
    }

    pub fn record(&self, now_ms: u64, failed: bool) {
        let second = now_ms / 1000;
        let bucket = &self.buckets[(second % self.buckets.len() as u64) as usize];
        enter_second(&bucket.second, second, || {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
        });
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            bucket.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Totals of the `seconds` whole seconds before the current one (which is still filling),
    /// plus the current one when `include_current` is set.
    pub fn counts(&self, now_ms: u64, seconds: u64, include_current: bool) -> Counts {
        let current = now_ms / 1000;
        let first = current.saturating_sub(seconds);
        let last = if include_current {
            current
        } else {
            current.saturating_sub(1)
        };
        let mut counts = Counts::default();
        if seconds == 0 && !include_current {
            return counts;
        }
        for bucket in self.buckets.iter() {
            let Some(second) = second_of(&bucket.second) else {
                continue;
            };
            if second >= first && second <= last && (include_current || second < current) {
                counts.requests += u64::from(bucket.requests.load(Ordering::Relaxed));
                counts.failures += u64::from(bucket.failures.load(Ordering::Relaxed));
            }
        }
        counts
    }

    /// Forgets everything (a breaker that closes starts a fresh ratio).
    pub fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.second.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_whole_seconds_and_forgets_old_ones() {
        let window = Window::new(10);
        for i in 0..100u64 {
            // 10 per second for 10 seconds.
            window.record(i * 100, i % 10 == 0);
        }
        let counts = window.counts(10_000, 10, false);
        assert_eq!(
            counts,
            Counts {
                requests: 100,
                failures: 10
            }
        );
        // Five seconds on, only the last five seconds remain in a 10-second view.
        assert_eq!(window.counts(15_000, 10, false).requests, 50);
        // A bucket reused for a new second starts from zero.
        window.record(20_500, false);
        assert_eq!(window.counts(20_900, 0, true).requests, 1);
        assert_eq!(window.counts(30_000, 10, false).requests, 1);
        window.clear();
        assert_eq!(window.counts(30_000, 10, true), Counts::default());
    }
}
