//! Services and their endpoints, as the proxy sees them at runtime.
//!
//! A [`Service`] owns a [`Pool`] of endpoints (each with its breaker, latency estimate, health
//! and counters), its balancer, its retry budget and its pooled HTTP client (one per service,
//! so each service's connect timeout applies to its own connections). The proxy asks the pool
//! for a [`Lease`] per attempt and records the attempt's outcome on it; `health` probes
//! endpoints in the background when the service has a health check.
//!
//! Time is milliseconds (microseconds where latency is measured) on the service's [`Clock`] (Tokio's clock, so tests can pause it) and
//! every piece of logic takes it as an argument; randomness comes from a `fastrand::Rng`
//! passed in, so balancing and breaking are tested deterministically.

pub mod balancer;
pub mod breaker;
pub mod endpoint;
pub mod ewma;
pub mod health;
pub mod pool;
pub mod window;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{FailureStatuses, HashKey, HealthCheckConfig, ServiceConfig};
use crate::proxy::client::{self, UpstreamClient};
pub use balancer::Candidates;
pub use breaker::Outcome;
pub use endpoint::{Endpoint, Lease, StreamCounters, StreamKind};
pub use pool::{Pool, Unavailable};

pub struct Service {
    pub name: Arc<str>,
    pub pool: Pool,
    pub client: UpstreamClient,
    /// Unpooled: a new connection per request, for retries.
    pub fresh_client: UpstreamClient,
    /// Opens connections for WebSocket bridges (HTTP/1.1 only: an upgrade needs it).
    pub ws_connector: client::Connector,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub preserve_host: bool,
    pub max_retries: u32,
    pub retry_budget: RetryBudget,
    /// Retries made so far (for `/metrics`).
    pub retries_total: AtomicU64,
    /// What a `hash` balancer keys on; `None` for other balancers.
    pub hash_key: Option<HashKey>,
    pub health_check: Option<HealthCheckConfig>,
    /// Upstream statuses that count as failures (the breaker config's).
    pub failure_statuses: FailureStatuses,
    pub connect_timeout: Duration,
    pub clock: Clock,
}

/// Milliseconds since the service was built, on Tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

/// Retries may add at most ~20% to a service's traffic: every first attempt deposits a fifth
/// of a retry, every retry withdraws one. The balance starts at, and is capped at, ten
/// retries, so a quiet service can still retry and a failing one cannot multiply its load.
#[derive(Debug)]
pub struct RetryBudget {
    /// In thousandths of a retry.
    balance: AtomicI64,
}

const RETRY_COST: i64 = 1000;
const RETRY_DEPOSIT: i64 = 200;
const RETRY_RESERVE: i64 = 10 * RETRY_COST;

// === impl Service ===

impl Service {
    pub fn new(config: &ServiceConfig) -> Result<Service, String> {
        if config.upstreams.len() > balancer::MAX_ENDPOINTS {
            return Err(format!(
                "service {} has {} upstreams; at most {} are supported",
                config.name,
                config.upstreams.len(),
                balancer::MAX_ENDPOINTS
            ));
        }
        Ok(Service {
            name: Arc::from(config.name.as_str()),
            pool: Pool::new(config),
            client: client::build(config.connect_timeout, true)?,
            fresh_client: client::build(config.connect_timeout, false)?,
            ws_connector: client::connector(config.connect_timeout, false)?,
            response_timeout: config.response_timeout,
            idle_timeout: config.idle_timeout,
            preserve_host: config.preserve_host,
            max_retries: config.max_retries,
            retry_budget: RetryBudget::new(),
            retries_total: AtomicU64::new(0),
            hash_key: match &config.balancer {
                crate::config::BalancerKind::Hash(key) => Some(key.clone()),
                _ => None,
            },
            health_check: config.health_check.clone(),
            failure_statuses: config.breaker.failure_statuses,
            connect_timeout: config.connect_timeout,
            clock: Clock::new(),
        })
    }

    pub fn count_retry(&self) {
        self.retries_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the service has an endpoint in service (healthy, breaker not open).
    pub fn is_ready(&self) -> bool {
        self.pool.has_in_service(self.clock.now_ms())
    }
}

// === impl Clock ===

impl Clock {
    pub fn new() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    pub fn new() -> Self {
        RetryBudget {
            balance: AtomicI64::new(RETRY_RESERVE),
        }
    }

    /// A first attempt was made.
    pub fn deposit(&self) {
        if self.balance.load(Ordering::Relaxed) < RETRY_RESERVE {
            self.balance.fetch_add(RETRY_DEPOSIT, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget, if it has one.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= RETRY_COST).then_some(b - RETRY_COST)
            })
            .is_ok()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_a_fifth_of_traffic() {
        let budget = RetryBudget::new();
        // The reserve: ten retries with no traffic at all.
        assert_eq!((0..20).filter(|_| budget.withdraw()).count(), 10);
        // Then one retry per five requests.
        for _ in 0..25 {
            budget.deposit();
        }
        assert_eq!((0..100).filter(|_| budget.withdraw()).count(), 5);
        for _ in 0..1000 {
            budget.deposit();
        }
        assert_eq!(
            (0..1000).filter(|_| budget.withdraw()).count(),
            10,
            "capped"
        );
    }
}
