//! Choosing one endpoint among the usable ones. Pure: the caller passes which endpoints may be
//! chosen ([`Candidates`]), how loaded each one is ([`Load`]), the request's hash key and the
//! random source, so every policy is tested deterministically with a seeded RNG.
//!
//! - `p2c_ewma` (default): the power of two choices (Mitzenmacher, "The Power of Two Choices
//!   in Randomized Load Balancing", 2001) over Finagle's peak-EWMA load: two distinct
//!   candidates at random, the one with the lower `latency × (in-flight + 1) / weight` wins.
//!   Two random samples avoid the herd that "always the least loaded" causes when every
//!   gateway instance sees the same stale numbers, and cost O(1) whatever the pool size.
//! - `round_robin`: smooth weighted round robin (nginx's), over the usable endpoints only.
//! - `least_request`: the fewest requests in flight per unit of weight; ties broken at random
//!   (otherwise a quiet pool would send everything to its first endpoint).
//! - `random`: weighted random.
//! - `hash`: rendezvous hashing (Thaler & Ravishankar, 1998) of the request's key: every
//!   candidate scores `hash(key, endpoint)`, the best wins. When an endpoint leaves, only its
//!   own keys move; when it comes back, they return. Weighted by `-ln(u) / weight`.

use std::sync::Mutex;

use fastrand::Rng;

use crate::config::BalancerKind;

/// Endpoints a pool may hold: the candidate set is a fixed bitset, so a pick never allocates.
pub const MAX_ENDPOINTS: usize = crate::config::MAX_UPSTREAMS;

/// A set of endpoint indexes below [`MAX_ENDPOINTS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidates {
    bits: [u64; MAX_ENDPOINTS / 64],
}

/// What a balancer knows of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Peak-EWMA latency in microseconds (0 for an endpoint never measured).
    pub cost_us: f64,
    pub in_flight: u32,
    pub weight: u32,
    /// A stable per-endpoint value for rendezvous hashing.
    pub seed: u64,
}

#[derive(Debug)]
pub enum Balancer {
    P2cEwma,
    RoundRobin(Mutex<Vec<i64>>),
    LeastRequest,
    Random,
    Hash,
}

/// Below this an estimate is treated as this: sub-millisecond differences are noise, and a
/// never-measured endpoint (cost 0) must still count its in-flight requests.
const COST_FLOOR_US: f64 = 1_000.0;

// === impl Candidates ===

impl Candidates {
    /// Adds `index`; one at or beyond [`MAX_ENDPOINTS`] (which validation refuses) is ignored.
    pub fn insert(&mut self, index: usize) {
        if index < MAX_ENDPOINTS {
            self.bits[index / 64] |= 1 << (index % 64);
        }
    }

    pub fn remove(&mut self, index: usize) {
        if index < MAX_ENDPOINTS {
            self.bits[index / 64] &= !(1 << (index % 64));
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        index < MAX_ENDPOINTS && self.bits[index / 64] & (1 << (index % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(w * 64 + bit)
            })
        })
    }

    /// The `n`th member in index order.
    fn nth(&self, n: usize) -> Option<usize> {
        self.iter().nth(n)
    }
}

// === impl Balancer ===

impl Balancer {
    pub fn new(kind: &BalancerKind, endpoints: usize) -> Self {
        match kind {
            BalancerKind::P2cEwma => Balancer::P2cEwma,
            BalancerKind::RoundRobin => Balancer::RoundRobin(Mutex::new(vec![0; endpoints])),
            BalancerKind::LeastRequest => Balancer::LeastRequest,
            BalancerKind::Random => Balancer::Random,
            BalancerKind::Hash(_) => Balancer::Hash,
        }
    }

    /// One of `candidates` (which must not be empty), or `None` when it is.
    pub fn choose(
        &self,
        candidates: &Candidates,
        load: impl Fn(usize) -> Load,
        hash_key: Option<u64>,
        rng: &mut Rng,
    ) -> Option<usize> {
        let count = candidates.len();
        match count {
            0 => return None,
            1 => return candidates.nth(0),
            _ => {}
        }
        match self {
            Balancer::P2cEwma => {
                let first = rng.usize(..count);
                // A second, distinct one: draw from the other count - 1 and skip the first.
                let mut second = rng.usize(..count - 1);
                if second >= first {
                    second += 1;
                }
                let (a, b) = (candidates.nth(first)?, candidates.nth(second)?);
                Some(if p2c_load(&load(b)) < p2c_load(&load(a)) {
                    b
                } else {
                    a
                })
            }
            Balancer::RoundRobin(scores) => {
                let mut scores = scores.lock().unwrap_or_else(|p| p.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in candidates.iter() {
                    let weight = i64::from(load(i).weight);
                    total += weight;
                    scores[i] += weight;
                    if best.is_none_or(|b| scores[i] > scores[b]) {
                        best = Some(i);
                    }
                }
                let best = best?;
                scores[best] -= total;
                Some(best)
            }
            Balancer::LeastRequest => {
                let mut best: Option<(f64, usize)> = None;
                let mut ties = 0u32;
                for i in candidates.iter() {
                    let l = load(i);
                    let score = f64::from(l.in_flight + 1) / f64::from(l.weight);
                    match best {
                        Some((b, _)) if score > b => {}
                        Some((b, _)) if score == b => {
                            // Reservoir sampling among equals: each keeps a 1/ties chance.
                            ties += 1;
                            if rng.u32(..ties) == 0 {
                                best = Some((score, i));
                            }
                        }
                        _ => {
                            ties = 1;
                            best = Some((score, i));
                        }
                    }
                }
                best.map(|(_, i)| i)
            }
            Balancer::Random => {
                let total: u64 = candidates.iter().map(|i| u64::from(load(i).weight)).sum();
                let mut ticket = rng.u64(..total.max(1));
                for i in candidates.iter() {
                    let weight = u64::from(load(i).weight);
                    if ticket < weight {
                        return Some(i);
                    }
                    ticket -= weight;
                }
                candidates.nth(0)
            }
            Balancer::Hash => {
                // Without a key (no such header or cookie) the request is not sticky.
                let key = hash_key.unwrap_or_else(|| rng.u64(..));
                let mut best: Option<(f64, usize)> = None;
                for i in candidates.iter() {
                    let l = load(i);
                    let unit = (mix(key ^ l.seed) >> 11) as f64 / (1u64 << 53) as f64;
                    // -ln(u) / w: the smallest wins. u is in [0, 1); clamping it to the smallest
                    // positive float keeps ln finite.
                    let score = -(unit.max(f64::MIN_POSITIVE)).ln() / f64::from(l.weight);
                    if best.is_none_or(|(b, _)| score < b) {
                        best = Some((score, i));
                    }
                }
                best.map(|(_, i)| i)
            }
        }
    }
}

fn p2c_load(load: &Load) -> f64 {
    load.cost_us.max(COST_FLOOR_US) * f64::from(load.in_flight + 1) / f64::from(load.weight)
}

/// A stable 64-bit hash of `bytes` (FNV-1a, then a SplitMix64 finaliser for avalanche):
/// the same key maps to the same endpoint on every gateway instance and every restart.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
