//! Services and their endpoints, as the proxy sees them at runtime.
//!
//! A [`Service`] owns its endpoints and its pooled HTTP client (one pool per service, so each
//! service's connect timeout applies to its own connections). Endpoint choice here is smooth
//! weighted round robin (nginx's algorithm: each pick adds every endpoint's weight to its
//! running score and takes the highest, then subtracts the total), which spreads a 5:1:1
//! weighting as `a a b a c a a` rather than `a a a a a b c`. Latency-aware balancing, breakers
//! and health checks build on this with the upstream-pools work (issue #3).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{ServiceConfig, UpstreamUrl};
use crate::proxy::client::{self, UpstreamClient};

pub struct Service {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    pub client: UpstreamClient,
    /// Unpooled: a new connection per request, for replays.
    pub fresh_client: UpstreamClient,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub preserve_host: bool,
    picker: Picker,
}

pub struct Endpoint {
    pub url: UpstreamUrl,
    /// `scheme://authority/base`, for logs.
    pub label: Arc<str>,
}

/// Smooth weighted round robin; a single endpoint or equal weights skip the lock.
enum Picker {
    Single,
    Even(AtomicUsize),
    Weighted(Mutex<Vec<i64>>),
}

impl Service {
    pub fn new(config: &ServiceConfig) -> Result<Service, String> {
        let endpoints: Vec<Endpoint> = config
            .upstreams
            .iter()
            .map(|url| Endpoint {
                label: Arc::from(url.to_string()),
                url: url.clone(),
            })
            .collect();
        let weights_differ = endpoints
            .windows(2)
            .any(|w| w[0].url.weight != w[1].url.weight);
        let picker = match endpoints.len() {
            0 | 1 => Picker::Single,
            n if weights_differ => Picker::Weighted(Mutex::new(vec![0; n])),
            _ => Picker::Even(AtomicUsize::new(0)),
        };
        Ok(Service {
            name: Arc::from(config.name.as_str()),
            client: client::build(config.connect_timeout, true)?,
            fresh_client: client::build(config.connect_timeout, false)?,
            endpoints,
            response_timeout: config.response_timeout,
            idle_timeout: config.idle_timeout,
            preserve_host: config.preserve_host,
            picker,
        })
    }

    /// The endpoint for the next request, or `None` when the service has none.
    pub fn pick(&self) -> Option<&Endpoint> {
        let index = match &self.picker {
            Picker::Single => 0,
            Picker::Even(next) => next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len(),
            Picker::Weighted(scores) => {
                let mut scores = scores
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                smooth_weighted_pick(&mut scores, self.endpoints.iter().map(|e| e.url.weight))
            }
        };
        self.endpoints.get(index)
    }

    pub fn is_usable(&self) -> bool {
        !self.endpoints.is_empty()
    }
}

/// One step of smooth weighted round robin over `scores` (one per endpoint).
fn smooth_weighted_pick(scores: &mut [i64], weights: impl Iterator<Item = u32>) -> usize {
    let mut total = 0i64;
    let mut best = 0;
    for (i, weight) in weights.enumerate() {
        let weight = i64::from(weight);
        total += weight;
        scores[i] += weight;
        if scores[i] > scores[best] {
            best = i;
        }
    }
    scores[best] -= total;
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let weights = [5u32, 1, 1];
        let mut scores = vec![0; 3];
        let picks: Vec<usize> = (0..7)
            .map(|_| smooth_weighted_pick(&mut scores, weights.iter().copied()))
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_shares_hold_over_many_picks() {
        let weights = [3u32, 1];
        let mut scores = vec![0; 2];
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[smooth_weighted_pick(&mut scores, weights.iter().copied())] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }
}
