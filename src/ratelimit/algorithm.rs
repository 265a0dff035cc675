//! The three limits as pure state machines over one key's state and a clock in
//! microseconds. The memory store runs them under a shard lock; the Redis store runs the same
//! arithmetic in its Lua script, on Redis's clock.

use crate::config::{LimitAlgorithm, LimitPolicy};

/// One key's state. `Window` serves the sliding and the fixed window, `Gcra` the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Window {
        index: u64,
        current: u64,
        previous: u64,
    },
    Gcra {
        /// Theoretical arrival time of the next request, µs.
        tat: u64,
    },
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests left now (0 when refused).
    pub remaining: u64,
    /// Until the limit is fully available again (window end, or an empty bucket), µs.
    pub reset_us: u64,
    /// When refused: until a request would be allowed, µs.
    pub retry_us: u64,
}

/// Applies one request at `now` (µs) to `state` (`None` for a key not seen or expired).
pub fn check(policy: &LimitPolicy, state: Option<State>, now: u64) -> (State, Verdict) {
    let window = window_us(policy);
    match policy.algorithm {
        LimitAlgorithm::FixedWindow | LimitAlgorithm::SlidingWindow => {
            let index = now / window;
            let (current, previous) = match state {
                Some(State::Window {
                    index: i,
                    current,
                    previous,
                }) if i == index => (current, previous),
                Some(State::Window {
                    index: i, current, ..
                }) if i + 1 == index => (0, current),
                _ => (0, 0),
            };
            let elapsed = now % window;
            let reset_us = window - elapsed;
            let state = |current| State::Window {
                index,
                current,
                previous,
            };
            // Sliding: the previous window's count is taken as spread evenly over it, and the
            // part still in view counts, exactly (no rounding): allowed while
            //   previous × (window − elapsed) / window + current < max.
            // A client pacing itself under max per window is never refused.
            let (w, p, c, max) = (
                u128::from(window),
                u128::from(previous),
                u128::from(current),
                u128::from(policy.max),
            );
            let sliding = policy.algorithm == LimitAlgorithm::SlidingWindow;
            let in_view = if sliding {
                p * u128::from(window - elapsed)
            } else {
                0
            };
            if in_view + c * w < max * w {
                // What is left after this request, in whole requests.
                let left = (max * w - in_view - c * w).div_ceil(w).saturating_sub(1);
                let verdict = Verdict {
                    allowed: true,
                    remaining: left as u64,
                    reset_us,
                    retry_us: 0,
                };
                (state(current + 1), verdict)
            } else {
                let retry_us = if !sliding {
                    reset_us
                } else if c >= max {
                    // This window's count weighs on the next one: wait until enough of it
                    // has slid out of view there (current × (w − e') < max × w).
                    let keep = max * w / c;
                    reset_us + (window - keep as u64) + 1
                } else {
                    // p × (w − e − x) < (max − c) × w
                    let keep = (max - c) * w / p.max(1);
                    (u128::from(window - elapsed).saturating_sub(keep) as u64) + 1
                };
                let verdict = Verdict {
                    allowed: false,
                    remaining: 0,
                    // Refused: the limit resets, as far as this client is concerned, when it
                    // may come back.
                    reset_us: reset_us.max(retry_us),
                    retry_us,
                };
                (state(current), verdict)
            }
        }
        LimitAlgorithm::Gcra => {
            let interval = (window / policy.max).max(1);
            let tolerance = interval.saturating_mul(policy.burst);
            let tat = match state {
                Some(State::Gcra { tat }) => tat.max(now),
                _ => now,
            };
            let next = tat + interval;
            if next - now <= tolerance {
                let verdict = Verdict {
                    allowed: true,
                    remaining: (tolerance - (next - now)) / interval,
                    reset_us: next - now,
                    retry_us: 0,
                };
                (State::Gcra { tat: next }, verdict)
            } else {
                let verdict = Verdict {
                    allowed: false,
                    remaining: 0,
                    reset_us: tat - now,
                    retry_us: next - now - tolerance,
                };
                (State::Gcra { tat }, verdict)
            }
        }
    }
}

/// How long a key's state matters after `now`: past this it is as good as new.
pub fn ttl_us(policy: &LimitPolicy, state: &State, now: u64) -> u64 {
    match state {
        // The previous window still counts during the next one.
        State::Window { index, .. } => ((index + 2) * window_us(policy)).saturating_sub(now),
        State::Gcra { tat } => tat.saturating_sub(now),
    }
}

pub fn window_us(policy: &LimitPolicy) -> u64 {
    (policy.window.as_micros() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::LimitKey;

    fn policy(algorithm: LimitAlgorithm, max: u64, burst: u64) -> LimitPolicy {
        LimitPolicy {
            max,
            window: Duration::from_secs(1),
            algorithm,
            burst,
            key: LimitKey::Ip,
        }
    }

    /// Runs `count` requests at `at` µs, returning how many were allowed.
    fn run(policy: &LimitPolicy, state: &mut Option<State>, at: u64, count: u64) -> u64 {
        let mut allowed = 0;
        for _ in 0..count {
            let (next, verdict) = check(policy, *state, at);
            *state = Some(next);
            allowed += u64::from(verdict.allowed);
        }
        allowed
    }

    #[test]
    fn a_fixed_window_resets_at_its_edge() {
        let p = policy(LimitAlgorithm::FixedWindow, 5, 5);
        let mut s = None;
        assert_eq!(run(&p, &mut s, 100, 8), 5);
        assert_eq!(run(&p, &mut s, 999_999, 3), 0);
        assert_eq!(run(&p, &mut s, 1_000_000, 8), 5, "a new window");
    }

    #[test]
    fn a_sliding_window_damps_a_burst_across_the_edge() {
        let p = policy(LimitAlgorithm::SlidingWindow, 10, 10);
        let mut s = None;
        assert_eq!(run(&p, &mut s, 900_000, 10), 10);
        // At the edge all of the previous window is in view; 100 ms on, 90% of it: 9 + 1.
        assert_eq!(run(&p, &mut s, 1_000_000, 10), 0);
        assert_eq!(run(&p, &mut s, 1_100_000, 10), 1);
        // Half-way through, half of it: 5 + 5 in all.
        assert_eq!(run(&p, &mut s, 1_500_000, 10), 4);
        assert_eq!(
            run(&p, &mut s, 3_000_000, 20),
            10,
            "two windows later, all of it"
        );
    }

    #[test]
    fn a_client_pacing_itself_under_the_limit_is_never_refused() {
        for (max, every) in [
            (1u64, 1_050_000u64),
            (2, 525_000),
            (3, 350_000),
            (10, 105_000),
        ] {
            let p = policy(LimitAlgorithm::SlidingWindow, max, max);
            let mut s = None;
            for i in 0..100 {
                let (next, verdict) = check(&p, s, 7 + i * every);
                assert!(
                    verdict.allowed,
                    "max {max}, every {every} µs: request {i} refused"
                );
                s = Some(next);
            }
        }
    }

    #[test]
    fn retry_after_is_honest() {
        let p = policy(LimitAlgorithm::SlidingWindow, 3, 3);
        let mut s = None;
        let mut now = 123_456;
        // A client that waits what retry_us says is allowed then (at most two windows on).
        for _ in 0..50 {
            let (next, verdict) = check(&p, s, now);
            if verdict.allowed {
                s = Some(next);
                now += 1;
                continue;
            }
            assert!(
                (1..=2_000_001).contains(&verdict.retry_us),
                "{}",
                verdict.retry_us
            );
            now += verdict.retry_us;
            let (next, then) = check(&p, s, now);
            assert!(then.allowed, "refused after waiting retry_us");
            s = Some(next);
        }
    }

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let p = policy(LimitAlgorithm::Gcra, 10, 3);
        let mut s = None;
        assert_eq!(run(&p, &mut s, 0, 5), 3, "the burst");
        assert_eq!(run(&p, &mut s, 100_000, 5), 1, "then one per 100 ms");
        assert_eq!(run(&p, &mut s, 150_000, 5), 0);
        let (_, verdict) = check(&p, s, 150_000);
        assert_eq!(verdict.retry_us, 50_000);
    }

    #[test]
    fn verdicts_count_down_and_say_when_to_retry() {
        let p = policy(LimitAlgorithm::FixedWindow, 2, 2);
        let (s, first) = check(&p, None, 250_000);
        assert_eq!(
            (first.allowed, first.remaining, first.reset_us),
            (true, 1, 750_000)
        );
        let (s, second) = check(&p, Some(s), 250_000);
        assert_eq!((second.allowed, second.remaining), (true, 0));
        let (_, third) = check(&p, Some(s), 250_000);
        assert_eq!((third.allowed, third.retry_us), (false, 750_000));
    }
}
