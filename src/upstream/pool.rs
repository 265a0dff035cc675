//! A service's endpoints and the pick over them: the usable endpoints (healthy, breaker
//! admitting, under their concurrency cap, not already tried by this request) become the
//! candidates, the service's balancer chooses one, and its breaker admits the request — or,
//! when a half-open endpoint's last probe slot went to a concurrent request, the pick goes on
//! without it. No usable endpoint at all is [`Unavailable`], with the seconds until the
//! earliest open breaker will probe again (the 503's `Retry-After`).

use std::sync::Arc;

use fastrand::Rng;

use super::balancer::{Balancer, Candidates, Load};
use super::endpoint::{Endpoint, Lease};
use crate::config::ServiceConfig;

#[derive(Debug)]
pub struct Pool {
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    /// Retry-After when nothing is open but nothing is usable either (unhealthy or full), ms.
    retry_hint_ms: u64,
}

/// No endpoint can take the request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    /// Whole seconds, at least 1.
    pub retry_after_secs: u64,
}

// === impl Pool ===

impl Pool {
    pub fn new(config: &ServiceConfig) -> Self {
        let service: Arc<str> = Arc::from(config.name.as_str());
        let endpoints = config
            .upstreams
            .iter()
            .map(|url| {
                Arc::new(Endpoint::new(
                    service.clone(),
                    url.clone(),
                    config.breaker.clone(),
                    config.max_in_flight_per_endpoint,
                    config.connect_timeout,
                ))
            })
            .collect::<Vec<_>>();
        Pool {
            balancer: Balancer::new(&config.balancer, endpoints.len()),
            endpoints,
            retry_hint_ms: config
                .health_check
                .as_ref()
                .map_or(1000, |h| h.interval.as_millis() as u64),
        }
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Leases an endpoint for one attempt (`now_us` in microseconds on the service clock). `tried` are endpoints this request already failed
    /// on; they are skipped.
    pub fn pick(
        &self,
        now_us: u64,
        hash_key: Option<u64>,
        tried: &Candidates,
        rng: &mut Rng,
    ) -> Result<Lease, Unavailable> {
        let now_ms = now_us / 1000;
        let mut candidates = Candidates::default();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if !tried.contains(i) && endpoint.is_usable(now_ms) {
                candidates.insert(i);
            }
        }
        let load = |i: usize| {
            let e = &self.endpoints[i];
            Load {
                cost_us: e.ewma.cost(now_ms),
                in_flight: e.in_flight_total(),
                weight: e.weight(),
                seed: e.seed,
            }
        };
        while let Some(i) = self.balancer.choose(&candidates, load, hash_key, rng) {
            if let Some(lease) = self.endpoints[i].lease(now_us) {
                return Ok(lease);
            }
            // A concurrent request took the last probe slot or the cap: pick among the rest.
            candidates.remove(i);
        }
        Err(Unavailable {
            retry_after_secs: self.retry_after_ms(now_ms).div_ceil(1000).max(1),
        })
    }

    /// Whether any endpoint is in service (for `/readyz`): a pool whose endpoints are all at
    /// their concurrency cap is busy, not unready.
    pub fn has_in_service(&self, now_ms: u64) -> bool {
        self.endpoints.iter().any(|e| e.is_in_service(now_ms))
    }

    /// Whether an endpoint not in `tried` could take a request now (may a retry go anywhere?).
    pub fn has_usable_except(&self, tried: &Candidates, now_ms: u64) -> bool {
        self.endpoints
            .iter()
            .enumerate()
            .any(|(i, e)| !tried.contains(i) && e.is_usable(now_ms))
    }

    pub fn index_of(&self, endpoint: &Arc<Endpoint>) -> Option<usize> {
        self.endpoints.iter().position(|e| Arc::ptr_eq(e, endpoint))
    }

    /// How long until some endpoint may take traffic again: an unhealthy one not before its
    /// next health check, an open one when its breaker admits a probe, one that is merely
    /// full (or whose probe slots are taken) in about a second.
    fn retry_after_ms(&self, now_ms: u64) -> u64 {
        self.endpoints
            .iter()
            .map(|e| match e.breaker.open_until() {
                _ if !e.is_healthy() => self.retry_hint_ms,
                Some(until) if until > now_ms => until - now_ms,
                _ => 1000,
            })
            .min()
            .unwrap_or(self.retry_hint_ms)
    }
}

#[cfg(test)]
mod tests;
