//! The circuit breaker of one endpoint.
//!
//! ```text
//!            failures ≥ consecutive_failures            open_for elapsed,
//!            (or failure_ratio over window)              next request admitted
//!   Closed ────────────────────────────────► Open ─────────────────────────────► HalfOpen
//!     ▲                                        ▲                                   │
//!     │          a probe succeeds              │         a probe fails             │
//!     └────────────────────────────────────────┼───────────────────────────────────┤
//!                                              └───────────────────────────────────┘
//! ```
//!
//! Half-open admits at most `half_open_probes` requests at once; only their outcomes decide.
//! A probe slot is released on every outcome, including none at all (the client went away, or
//! the request failed on its own side): an [`Admission`] that is dropped unrecorded gives its
//! slot back, so the breaker can never wedge half-open. What counts as a failure is decided by
//! the caller (connect errors, resets before a response, timeouts, configured 5xx) — never a
//! 4xx, never a client that left, and requests refused before forwarding never get here.
//!
//! The read path (`is_available`) is one atomic load of a packed state word; transitions take
//! a lock, which is only contended while an endpoint is failing. Time is milliseconds on the
//! service clock, passed in, so the whole state machine is tested without sleeping.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use super::window::Window;
use crate::config::BreakerConfig;

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    /// State tag in the low 2 bits, `open_until` (ms) above them.
    state: AtomicU64,
    consecutive_failures: AtomicU32,
    window: Window,
    probes: Mutex<Probes>,
    opened_total: AtomicU64,
    half_opened_total: AtomicU64,
    closed_total: AtomicU64,
}

/// The probes of the current half-open period. Each period has its own number, so a slow
/// probe from an earlier period (the breaker reopened meanwhile) can neither decide the
/// current one nor give back a slot it does not hold.
#[derive(Debug, Default)]
struct Probes {
    in_flight: u32,
    period: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until_ms: u64 },
    HalfOpen,
}

/// Permission to send one request. Hand it back with [`Breaker::record`] or
/// [`Breaker::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Admission {
    /// The half-open period this probe belongs to; `None` for a request admitted while closed.
    probe: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// A state change, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
/// Half-open with a free probe slot.
const HALF_OPEN: u64 = 2;
/// Half-open with every probe slot taken.
const HALF_OPEN_FULL: u64 = 3;

// === impl Breaker ===

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            window: Window::new(config.window.as_secs() as usize),
            config,
            state: AtomicU64::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            probes: Mutex::new(Probes::default()),
            opened_total: AtomicU64::new(0),
            half_opened_total: AtomicU64::new(0),
            closed_total: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> State {
        let word = self.state.load(Ordering::Acquire);
        match word & 3 {
            CLOSED => State::Closed,
            OPEN => State::Open {
                until_ms: word >> 2,
            },
            _ => State::HalfOpen,
        }
    }

    /// Whether [`Breaker::admit`] would let a request through now. One atomic load.
    pub fn is_available(&self, now_ms: u64) -> bool {
        let word = self.state.load(Ordering::Acquire);
        match word & 3 {
            CLOSED | HALF_OPEN => true,
            OPEN => now_ms >= word >> 2,
            _ => false,
        }
    }

    /// The state as an observer should see it at `now_ms`: an open breaker whose `open_for`
    /// has run out is half-open in all but name (the next request is its probe), even when
    /// no request has come to make it so.
    pub fn state_at(&self, now_ms: u64) -> State {
        match self.state() {
            State::Open { until_ms } if until_ms <= now_ms => State::HalfOpen,
            state => state,
        }
    }

    /// When an open breaker will admit a probe; `None` unless open.
    pub fn open_until(&self) -> Option<u64> {
        match self.state() {
            State::Open { until_ms } => Some(until_ms),
            _ => None,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// How many times this breaker has opened.
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }

    /// How many times it has turned half-open (admitted a first probe).
    pub fn half_opened_total(&self) -> u64 {
        self.half_opened_total.load(Ordering::Relaxed)
    }

    /// How many times a probe's success has closed it.
    pub fn closed_total(&self) -> u64 {
        self.closed_total.load(Ordering::Relaxed)
    }

    /// Lets one request through, or says no. An open breaker whose time is up becomes
    /// half-open here, admitting this request as its first probe.
    pub fn admit(&self, now_ms: u64) -> (Option<Admission>, Option<Transition>) {
        const CLOSED_ADMISSION: Admission = Admission { probe: None };
        if self.state.load(Ordering::Acquire) & 3 == CLOSED {
            return (Some(CLOSED_ADMISSION), None);
        }
        let mut probes = self.lock_probes();
        match self.state() {
            State::Closed => (Some(CLOSED_ADMISSION), None),
            State::Open { until_ms } if now_ms < until_ms => (None, None),
            from @ State::Open { .. } => {
                probes.period += 1;
                probes.in_flight = 1;
                let to = self.set_half_open(probes.in_flight);
                self.half_opened_total.fetch_add(1, Ordering::Relaxed);
                let admission = Admission {
                    probe: Some(probes.period),
                };
                (Some(admission), Some(Transition { from, to }))
            }
            State::HalfOpen if probes.in_flight < self.config.half_open_probes => {
                probes.in_flight += 1;
                self.set_half_open(probes.in_flight);
                let admission = Admission {
                    probe: Some(probes.period),
                };
                (Some(admission), None)
            }
            State::HalfOpen => (None, None),
        }
    }

    /// The outcome of an admitted request.
    pub fn record(
        &self,
        admission: Admission,
        outcome: Outcome,
        now_ms: u64,
    ) -> Option<Transition> {
        let failed = outcome == Outcome::Failure;
        if let Some(period) = admission.probe {
            let mut probes = self.lock_probes();
            if self.state() != State::HalfOpen || probes.period != period {
                return None;
            }
            probes.in_flight = probes.in_flight.saturating_sub(1);
            return Some(if failed {
                self.open(now_ms, State::HalfOpen)
            } else {
                self.close()
            });
        }
        // Outcomes of requests admitted while closed only count while still closed: the
        // probes alone decide a half-open breaker.
        if self.state() != State::Closed {
            return None;
        }
        self.window.record(now_ms, failed);
        if !failed {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let in_a_row = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= self.config.consecutive_failures || self.ratio_exceeded(now_ms) {
            let _probes = self.lock_probes();
            if self.state() == State::Closed {
                return Some(self.open(now_ms, State::Closed));
            }
        }
        None
    }

    /// Gives back an admission without an outcome (the client went away, or the request
    /// failed on the client's side): a probe slot is freed, nothing is counted.
    pub fn release(&self, admission: Admission) {
        if let Some(period) = admission.probe {
            let mut probes = self.lock_probes();
            if self.state() == State::HalfOpen && probes.period == period {
                probes.in_flight = probes.in_flight.saturating_sub(1);
                self.set_half_open(probes.in_flight);
            }
        }
    }

    fn ratio_exceeded(&self, now_ms: u64) -> bool {
        let Some(ratio) = self.config.failure_ratio else {
            return false;
        };
        let counts = self
            .window
            .counts(now_ms, self.config.window.as_secs(), true);
        counts.requests >= u64::from(self.config.min_requests)
            && counts.failures as f64 >= ratio * counts.requests as f64
    }

    fn open(&self, now_ms: u64, from: State) -> Transition {
        let until_ms = now_ms + self.config.open_for.as_millis() as u64;
        self.state.store((until_ms << 2) | OPEN, Ordering::Release);
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        Transition {
            from,
            to: State::Open { until_ms },
        }
    }

    fn close(&self) -> Transition {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.window.clear();
        self.state.store(CLOSED, Ordering::Release);
        self.closed_total.fetch_add(1, Ordering::Relaxed);
        Transition {
            from: State::HalfOpen,
            to: State::Closed,
        }
    }

    fn set_half_open(&self, probes: u32) -> State {
        let tag = if probes < self.config.half_open_probes {
            HALF_OPEN
        } else {
            HALF_OPEN_FULL
        };
        self.state.store(tag, Ordering::Release);
        State::HalfOpen
    }

    fn lock_probes(&self) -> std::sync::MutexGuard<'_, Probes> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl State ===

impl State {
    /// `CLOSED` / `OPEN` / `HALF_OPEN`, as Aegis's `/gateway/stats` spells them.
    pub fn as_upper(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open { .. } => "OPEN",
            State::HalfOpen => "HALF_OPEN",
        }
    }

    pub fn as_lower(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[cfg(test)]
mod tests;
