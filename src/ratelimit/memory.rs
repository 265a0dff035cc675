//! The in-process store: keys hashed into 64 shards, each a map behind its own short lock.
//! The hash is foldhash with a per-process random seed: fast, and with the seed unknown a
//! client cannot work out which keys share its slot (foldhash makes no stronger claim; two
//! colliding clients would share one budget, which SipHash could not rule out either).
//! Bounded: a shard over its share of `memory_max_keys` first drops expired keys, then, if
//! still full, an arbitrary one (that client starts afresh, which can only be in its favour).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::Instant;

use super::algorithm::{self, State, Verdict};
use crate::config::LimitPolicy;

const SHARDS: usize = 64;

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::quality::RandomState,
    per_shard: usize,
    started: Instant,
}

#[derive(Default)]
struct Shard {
    /// Keyed by the key's hash; the map's own hasher only has to spread a `u64`.
    entries: HashMap<u64, Entry, foldhash::fast::RandomState>,
}

#[derive(Clone, Copy)]
struct Entry {
    state: State,
    expires_us: u64,
}

impl MemoryStore {
    pub fn new(max_keys: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: foldhash::quality::RandomState::default(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            started: Instant::now(),
        }
    }

    /// One request for `key` (the policy's name and the client's key) under `policy`.
    pub fn check(&self, policy: &LimitPolicy, key: impl Hash) -> Verdict {
        let hash = self.hasher.hash_one(key);
        let now = self.started.elapsed().as_micros() as u64;
        let shard = &self.shards[(hash as usize) % SHARDS];
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let previous = shard
            .entries
            .get(&hash)
            .filter(|e| e.expires_us > now)
            .map(|e| e.state);
        let (state, verdict) = algorithm::check(policy, previous, now);
        let expires_us = now + algorithm::ttl_us(policy, &state, now).max(1);
        if previous.is_none() && shard.entries.len() >= self.per_shard {
            shard.make_room(now, self.per_shard);
        }
        shard.entries.insert(hash, Entry { state, expires_us });
        verdict
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.entries.len()))
            .sum()
    }
}

impl Shard {
    /// Drops expired keys; if the shard is still full, an eighth of it, so a flood of new
    /// keys pays for one sweep per eighth rather than one per request.
    fn make_room(&mut self, now: u64, cap: usize) {
        self.entries.retain(|_, e| e.expires_us > now);
        if self.entries.len() >= cap {
            let victims: Vec<u64> = self.entries.keys().take(cap.div_ceil(8)).copied().collect();
            for victim in victims {
                self.entries.remove(&victim);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{LimitAlgorithm, LimitKey};

    #[test]
    fn the_store_stays_within_its_bound() {
        let policy = LimitPolicy {
            max: 10,
            window: Duration::from_secs(60),
            algorithm: LimitAlgorithm::SlidingWindow,
            burst: 10,
            key: LimitKey::Ip,
        };
        let store = MemoryStore::new(640);
        for client in 0..10_000u32 {
            assert!(store.check(&policy, client).allowed);
        }
        assert!(store.len() <= 640, "{} keys kept", store.len());
        // A key still present keeps counting.
        for _ in 0..10 {
            assert!(store.check(&policy, "steady").allowed);
        }
        assert!(!store.check(&policy, "steady").allowed);
    }
}
