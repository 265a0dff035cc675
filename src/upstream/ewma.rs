//! Peak-EWMA latency of one endpoint, the "how slow is it lately" half of P2C's load.
//!
//! The estimate follows Finagle's and Linkerd's peak EWMA: a sample above the current estimate
//! replaces it at once (latency spikes are believed immediately), a sample below it is blended
//! in with a weight that grows with the time since the last sample. Between samples the
//! estimate decays towards zero with time constant `decay`: an endpoint that was slow once and
//! then got no traffic looks cheaper and cheaper until the balancer tries it again, so a
//! recovered endpoint is never starved. A new endpoint starts at zero and is therefore tried
//! early, which is how it gets probed.
//!
//! The estimate (microseconds, `f32`) and the time of the last sample (milliseconds on the
//! service clock, wrapping `u32`) share one `AtomicU64`: reading is one load, updating a
//! compare-and-swap loop, and no lock is ever taken on the request path.

use std::sync::atomic::{AtomicU64, Ordering};

/// How quickly an estimate forgets. Two seconds: an endpoint that took 80 ms decays to its
/// 10 ms peers' cost in about 4 s (2 s × ln 8) without traffic, and one whose single answer
/// took 300 ms to the 1 ms cost floor in about 11 s, so a slow spell costs an endpoint
/// seconds of traffic, not minutes; one that recovered is back at its first fast answer.
/// Between those probes a still-slow endpoint gets nothing, which is the point.
pub const DEFAULT_DECAY_MS: f64 = 2_000.0;

#[derive(Debug)]
pub struct PeakEwma {
    packed: AtomicU64,
    decay_ms: f64,
}

// === impl PeakEwma ===

impl PeakEwma {
    pub fn new(decay_ms: f64) -> Self {
        PeakEwma {
            packed: AtomicU64::new(pack(0.0, 0)),
            decay_ms,
        }
    }

    /// The estimate in microseconds at `now_ms`, decayed for the time since the last sample.
    pub fn cost(&self, now_ms: u64) -> f64 {
        let (cost, stamp) = unpack(self.packed.load(Ordering::Relaxed));
        // Under load most picks land in the millisecond of the last sample: skip the `exp`.
        if cost == 0.0 || (now_ms as u32) == stamp {
            return cost;
        }
        cost * decay(elapsed_ms(now_ms, stamp), self.decay_ms)
    }

    /// Adds one latency sample, in microseconds.
    pub fn observe(&self, rtt_us: f64, now_ms: u64) {
        let mut current = self.packed.load(Ordering::Relaxed);
        loop {
            let (cost, stamp) = unpack(current);
            let elapsed = elapsed_ms(now_ms, stamp);
            let decay = decay(elapsed, self.decay_ms);
            let decayed = cost * decay;
            let next = if rtt_us > decayed {
                rtt_us
            } else {
                // Weight the new sample by how long it has been since the last one.
                decayed + (rtt_us - decayed) * (1.0 - decay)
            };
            // A sample that lost a race with a later one keeps the later stamp: time never
            // runs backwards for the estimate.
            let stamp = if elapsed == 0 { stamp } else { now_ms as u32 };
            match self.packed.compare_exchange_weak(
                current,
                pack(next, u64::from(stamp)),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

/// Milliseconds from `stamp` to `now_ms`, 0 when `now_ms` is earlier. Concurrent requests
/// read the clock a little apart, so a pick or a sample can carry a time just before the
/// stamp a racing sample wrote: that is "no time passed", not 49 days. The stamp is the low
/// 32 bits of the clock, so the signed difference is exact within ±24 days.
fn elapsed_ms(now_ms: u64, stamp: u32) -> u32 {
    let elapsed = (now_ms as u32).wrapping_sub(stamp) as i32;
    elapsed.max(0) as u32
}

fn decay(elapsed_ms: u32, decay_ms: f64) -> f64 {
    (-f64::from(elapsed_ms) / decay_ms).exp()
}

fn pack(cost_us: f64, now_ms: u64) -> u64 {
    (u64::from((cost_us as f32).to_bits()) << 32) | (now_ms & 0xffff_ffff)
}

fn unpack(packed: u64) -> (f64, u32) {
    (
        f64::from(f32::from_bits((packed >> 32) as u32)),
        packed as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_is_believed_at_once_and_forgotten_with_time() {
        let ewma = PeakEwma::new(DEFAULT_DECAY_MS);
        assert_eq!(
            ewma.cost(0),
            0.0,
            "a new endpoint looks free, so it gets tried"
        );
        ewma.observe(10_000.0, 0);
        assert_eq!(ewma.cost(0), 10_000.0);
        ewma.observe(90_000.0, 10);
        assert!((ewma.cost(10) - 90_000.0).abs() < 1.0);
        // One decay constant later, e^-1 of it remains.
        let later = ewma.cost(10 + DEFAULT_DECAY_MS as u64);
        assert!(
            (later - 90_000.0 / std::f64::consts::E).abs() < 10.0,
            "{later}"
        );
    }

    #[test]
    fn lower_samples_are_blended_by_elapsed_time() {
        let ewma = PeakEwma::new(1_000.0);
        ewma.observe(100_000.0, 0);
        // Right after the spike a fast sample barely moves it; a second later it counts more.
        ewma.observe(10_000.0, 1);
        assert!(ewma.cost(1) > 99_000.0);
        ewma.observe(10_000.0, 1_001);
        let cost = ewma.cost(1_001);
        assert!(cost > 10_000.0 && cost < 40_000.0, "{cost}");
    }

    #[test]
    fn a_time_just_before_the_stamp_means_no_time_passed() {
        let ewma = PeakEwma::new(DEFAULT_DECAY_MS);
        ewma.observe(500_000.0, 1_000);
        // A pick that read the clock a millisecond before that sample was stored.
        assert_eq!(ewma.cost(999), 500_000.0);
        // A sample that lost the race: blended as if no time passed, the later stamp kept.
        ewma.observe(1_000.0, 999);
        assert!(ewma.cost(1_000) > 499_000.0, "{}", ewma.cost(1_000));
        let later = ewma.cost(1_000 + DEFAULT_DECAY_MS as u64);
        assert!((later - ewma.cost(1_000) / std::f64::consts::E).abs() < 10.0);
    }

    proptest::proptest! {
        /// The estimate never leaves the range of its samples (it only decays below it),
        /// also when samples and picks carry times a little out of order, as concurrent
        /// requests do.
        #[test]
        fn estimate_stays_within_the_samples(samples in proptest::collection::vec((1u32..5_000_000, 0u64..2_000, 0u64..3, 0u64..3), 1..50)) {
            let ewma = PeakEwma::new(DEFAULT_DECAY_MS);
            let mut now = 10;
            let max = samples.iter().map(|s| s.0).max().unwrap_or(0);
            for (rtt, gap, sample_skew, pick_skew) in samples {
                now += gap;
                ewma.observe(f64::from(rtt), now - sample_skew);
                let cost = ewma.cost(now - pick_skew);
                proptest::prop_assert!(cost <= f64::from(max) * 1.0001);
                proptest::prop_assert!(cost >= 0.0);
            }
        }
    }
}
