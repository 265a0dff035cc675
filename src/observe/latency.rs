//! Latency histograms with fixed buckets, shared by `/metrics` and the windowed stats.
//!
//! One bucket table serves both, so a dashboard p99 and a Prometheus `histogram_quantile`
//! agree. Recording is a scan of 16 bounds and two relaxed atomic adds: no lock, no
//! allocation, cheap enough for every request. Percentiles are estimated by linear
//! interpolation inside the bucket they fall in, as Prometheus does.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets in microseconds; one more bucket above the last catches the
/// rest (`+Inf`). From 250 µs (a loopback hop) to 30 s (a slow upstream's timeout).
pub const BOUNDS_US: [u64; 16] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Buckets including the overflow one.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The bucket a latency falls in.
pub fn bucket_of(latency_us: u64) -> usize {
    BOUNDS_US
        .iter()
        .position(|&bound| latency_us <= bound)
        .unwrap_or(BOUNDS_US.len())
}

/// The `q` quantile (0..=1) of a histogram given as per-bucket counts, in microseconds;
/// `None` when it is empty. A quantile in the overflow bucket reads as the last bound.
pub fn quantile_us(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = BOUNDS_US.get(i) else {
                return Some(BOUNDS_US[BOUNDS_US.len() - 1] as f64);
            };
            let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower as f64 + (upper - lower) as f64 * within);
        }
        below += count;
    }
    Some(BOUNDS_US[BOUNDS_US.len() - 1] as f64)
}

/// A cumulative histogram since start: what a Prometheus histogram exports.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Histogram {
    pub fn record(&self, latency_us: u64) {
        self.counts[bucket_of(latency_us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(latency_us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, count in that bucket)` pairs, `+Inf` last: what the
    /// Prometheus encoder takes (it makes the counts cumulative itself).
    pub fn buckets_seconds(&self) -> [(f64, u64); BUCKETS] {
        std::array::from_fn(|i| {
            let bound = BOUNDS_US
                .get(i)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            (bound, self.counts[i])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(250), 0);
        assert_eq!(bucket_of(251), 1);
        assert_eq!(bucket_of(30_000_000), 15);
        assert_eq!(bucket_of(u64::MAX), 16);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut counts = [0u64; BUCKETS];
        assert_eq!(quantile_us(&counts, 0.5), None);
        // 100 requests between 1 and 2.5 ms: the median is halfway through that bucket.
        counts[3] = 100;
        assert_eq!(quantile_us(&counts, 0.5), Some(1_750.0));
        assert_eq!(quantile_us(&counts, 1.0), Some(2_500.0));
        // 99 fast ones and one slow one: p50 stays low, p99 too, p100 is the slow one.
        let mut counts = [0u64; BUCKETS];
        counts[0] = 99;
        counts[10] = 1;
        assert!(quantile_us(&counts, 0.5).unwrap() <= 250.0);
        assert!(quantile_us(&counts, 0.99).unwrap() <= 250.0);
        assert!(quantile_us(&counts, 1.0).unwrap() > 250_000.0);
        // Beyond the last bound reads as the last bound.
        let mut counts = [0u64; BUCKETS];
        counts[16] = 3;
        assert_eq!(quantile_us(&counts, 0.5), Some(30_000_000.0));
    }

    #[test]
    fn the_snapshot_gives_buckets_in_seconds() {
        let histogram = Histogram::default();
        histogram.record(100);
        histogram.record(700);
        histogram.record(40_000_000);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 3);
        assert_eq!(snapshot.sum_us, 40_000_800);
        let buckets = snapshot.buckets_seconds();
        assert_eq!(buckets[0], (0.00025, 1));
        assert_eq!(buckets[1], (0.0005, 0));
        assert_eq!(buckets[2], (0.001, 1));
        assert_eq!(buckets[15], (30.0, 0));
        assert_eq!(buckets[16], (f64::INFINITY, 1));
    }
}
