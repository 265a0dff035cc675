//! Overload shedding (the seeds' "under pressure"): when the gateway itself is in trouble,
//! proxied requests are refused at once with 503 `overloaded` and `Retry-After`, instead of
//! queueing until everything times out. The ops endpoints are never shed, so `/healthz`
//! stays 200 (the process is alive; restarting it would not help) and `/_pressure` reports
//! why.
//!
//! Three signals, each off unless configured (the scheduler delay defaults to 1 s; a limit of
//! 0 is off, as in the seeds):
//! - **scheduler delay**: a probe task sleeps [`PROBE_INTERVAL`] and measures how late it
//!   wakes. Lateness means tasks are waiting for a worker: everything is slow.
//! - **resident memory** above `max_rss`, read by the same probe once a second.
//! - **requests in flight** above `max_in_flight`, counted from admission until the response
//!   ends. Event streams and WebSockets stop counting once established: they are long-lived
//!   by design and would otherwise fill the cap with idle connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::PressureConfig;
use crate::error::{ErrorKind, GatewayError};
use crate::observe::round2;

/// How often the probe measures its own wake-up lag.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Resident memory is read every this many probes (once a second).
const RSS_EVERY: u32 = 10;

#[derive(Debug)]
pub struct Pressure {
    max_delay: Option<Duration>,
    max_rss: Option<u64>,
    max_in_flight: Option<u64>,
    delay_us: AtomicU64,
    rss: AtomicU64,
    in_flight: AtomicU64,
    /// Requests shed, by [`Reason`].
    shed: [AtomicU64; 3],
}

/// Why requests are being shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SchedulerDelay = 0,
    Memory = 1,
    InFlight = 2,
}

/// A request's place in the in-flight count, given back when dropped or released.
#[derive(Debug)]
pub struct Slot {
    pressure: Arc<Pressure>,
    released: AtomicBool,
}

impl Pressure {
    pub fn new(config: &PressureConfig) -> Self {
        Pressure {
            max_delay: config.max_event_loop_delay,
            max_rss: config.max_rss,
            max_in_flight: config.max_in_flight,
            delay_us: AtomicU64::new(0),
            rss: AtomicU64::new(crate::observe::process::resident_bytes().unwrap_or(0)),
            in_flight: AtomicU64::new(0),
            shed: Default::default(),
        }
    }

    /// Lets a proxied request in, or says why not.
    pub fn admit(self: &Arc<Self>) -> Result<Slot, GatewayError> {
        if let Some(reason) = self.overload() {
            return Err(self.refuse(reason));
        }
        let count = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = Slot {
            pressure: self.clone(),
            released: AtomicBool::new(false),
        };
        // Counted first, checked second: racing requests cannot all take the last place.
        if self.max_in_flight.is_some_and(|cap| count > cap) {
            drop(slot);
            return Err(self.refuse(Reason::InFlight));
        }
        Ok(slot)
    }

    /// The probe's verdict: scheduler delay or memory over their limits.
    pub fn overload(&self) -> Option<Reason> {
        let delay = self.delay_us.load(Ordering::Relaxed);
        if self
            .max_delay
            .is_some_and(|max| delay > max.as_micros() as u64)
        {
            return Some(Reason::SchedulerDelay);
        }
        let rss = self.rss.load(Ordering::Relaxed);
        if self.max_rss.is_some_and(|max| rss > max) {
            return Some(Reason::Memory);
        }
        None
    }

    fn refuse(&self, reason: Reason) -> GatewayError {
        self.shed[reason as usize].fetch_add(1, Ordering::Relaxed);
        let (message, retry_after) = match reason {
            Reason::SchedulerDelay => ("the gateway is overloaded (scheduler delay)", 2),
            Reason::Memory => ("the gateway is overloaded (memory)", 5),
            Reason::InFlight => ("the gateway is overloaded (too many requests in flight)", 1),
        };
        GatewayError::new(ErrorKind::Overloaded, crate::error::Side::Internal, message)
            .with_retry_after(retry_after)
    }

    /// Measures scheduler delay (and, once a second, resident memory when it has a limit)
    /// until `stop`. Nothing runs when neither has a limit: `/_pressure` then reads memory
    /// when asked, and has no delay to report.
    pub fn spawn_probe(self: Arc<Self>, stop: CancellationToken) {
        if self.max_delay.is_none() && self.max_rss.is_none() {
            return;
        }
        tokio::spawn(async move {
            let mut ticks = 0u32;
            loop {
                let before = Instant::now();
                tokio::select! {
                    () = tokio::time::sleep(PROBE_INTERVAL) => {}
                    () = stop.cancelled() => return,
                }
                let late = before.elapsed().saturating_sub(PROBE_INTERVAL);
                self.delay_us
                    .store(late.as_micros() as u64, Ordering::Relaxed);
                ticks = ticks.wrapping_add(1);
                if self.max_rss.is_some() && ticks.is_multiple_of(RSS_EVERY) {
                    if let Some(rss) = crate::observe::process::resident_bytes() {
                        self.rss.store(rss, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Resident memory: as last probed when there is a limit, read now otherwise.
    pub fn rss(&self) -> u64 {
        if self.max_rss.is_none() {
            return crate::observe::process::resident_bytes().unwrap_or(0);
        }
        self.rss.load(Ordering::Relaxed)
    }

    pub fn shed_total(&self, reason: Reason) -> u64 {
        self.shed[reason as usize].load(Ordering::Relaxed)
    }

    /// The `/_pressure` document.
    pub fn status(&self) -> Value {
        let in_flight = self.in_flight();
        let mut reasons: Vec<&str> = self.overload().map(Reason::as_str).into_iter().collect();
        if self.max_in_flight.is_some_and(|cap| in_flight >= cap) {
            reasons.push(Reason::InFlight.as_str());
        }
        json!({
            "overloaded": !reasons.is_empty(),
            "reasons": reasons,
            "eventLoopDelayMs": self
                .max_delay
                .map(|_| round2(self.delay().as_secs_f64() * 1000.0)),
            "maxEventLoopDelayMs": self.max_delay.map(|d| d.as_millis() as u64),
            "rssBytes": self.rss(),
            "maxRssBytes": self.max_rss,
            "inFlight": in_flight,
            "maxInFlight": self.max_in_flight,
            "shedTotal": {
                "schedulerDelay": self.shed_total(Reason::SchedulerDelay),
                "memory": self.shed_total(Reason::Memory),
                "inFlight": self.shed_total(Reason::InFlight),
            },
        })
    }
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::SchedulerDelay, Reason::Memory, Reason::InFlight];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SchedulerDelay => "scheduler_delay",
            Reason::Memory => "memory",
            Reason::InFlight => "in_flight",
        }
    }
}

impl Slot {
    /// Stops counting this request (an established stream); later calls do nothing.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::Relaxed) {
            self.pressure.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pressure(max_in_flight: Option<u64>, max_rss: Option<u64>) -> Arc<Pressure> {
        Arc::new(Pressure::new(&PressureConfig {
            max_event_loop_delay: Some(Duration::from_secs(1)),
            max_rss,
            max_in_flight,
        }))
    }

    #[test]
    fn the_in_flight_cap_sheds_the_excess_and_gives_places_back() {
        let pressure = pressure(Some(2), None);
        let a = pressure.admit().unwrap();
        let b = pressure.admit().unwrap();
        let refused = pressure.admit().unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Overloaded);
        assert_eq!(pressure.in_flight(), 2);
        assert_eq!(pressure.shed_total(Reason::InFlight), 1);
        assert_eq!(pressure.status()["reasons"], json!(["in_flight"]));
        // A released stream and a finished request both give their place back, once.
        a.release();
        a.release();
        assert_eq!(pressure.in_flight(), 1);
        drop(a);
        drop(b);
        assert_eq!(pressure.in_flight(), 0);
        assert!(pressure.admit().is_ok());
        assert_eq!(pressure.status()["overloaded"], false);
    }

    #[test]
    fn memory_and_delay_over_their_limits_shed_everything() {
        let pressure = pressure(None, Some(1));
        // Any process uses more than one byte.
        assert_eq!(pressure.overload(), Some(Reason::Memory));
        assert!(pressure.admit().is_err());
        let calm = self::pressure(None, None);
        calm.delay_us.store(1_500_000, Ordering::Relaxed);
        assert_eq!(calm.overload(), Some(Reason::SchedulerDelay));
        calm.delay_us.store(1_000, Ordering::Relaxed);
        assert_eq!(calm.overload(), None);
    }
}
