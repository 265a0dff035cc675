//! Tokens already verified, so a client that sends the same token again (as clients do, for
//! the token's life) costs a hash lookup instead of a signature check. Keyed by the whole
//! token, so only the exact bytes that verified can hit; kept at most until the token's
//! `exp` (with the leeway) and at most a minute, and forgotten as soon as any issuer's key
//! set changes (a withdrawn key stops working at once). Bounded: a full shard is emptied
//! (rare; tokens are few).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Identity;

const SHARDS: usize = 16;
/// Tokens kept in all: tens of bytes of bookkeeping each, plus the token.
const CAPACITY: usize = 16 * 1024;
/// A verification is trusted this long at most.
const MAX_AGE_SECS: u64 = 60;
/// Longer tokens are verified every time: the cache's memory stays bounded by count × this.
pub const MAX_CACHED_TOKEN: usize = 2048;

/// foldhash, randomly seeded: only tokens that verified are ever stored, so no client can
/// fill a shard with keys of its choosing, and hashing a token with SipHash (twice: shard,
/// then map) was a tenth of an authenticated request's bookkeeping.
type Hasher = foldhash::quality::RandomState;
type Shard = Mutex<HashMap<Box<str>, Entry, Hasher>>;

pub struct VerifiedTokens {
    shards: Box<[Shard]>,
    hasher: Hasher,
}

struct Entry {
    identity: Arc<Identity>,
    /// The key generation it was verified under.
    generation: u64,
    /// Epoch seconds after which this entry is not used.
    until: u64,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl VerifiedTokens {
    pub fn new() -> VerifiedTokens {
        VerifiedTokens {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Hasher::default())))
                .collect(),
            hasher: Hasher::default(),
        }
    }

    fn shard(&self, token: &str) -> &Shard {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(token) as usize) % SHARDS]
    }

    pub fn get(&self, token: &str, generation: u64) -> Option<Arc<Identity>> {
        let now = now_secs();
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        match shard.get(token) {
            Some(entry) if now <= entry.until && entry.generation == generation => {
                Some(entry.identity.clone())
            }
            Some(_) => {
                shard.remove(token);
                None
            }
            None => None,
        }
    }

    /// Keeps a verified token until `expires` (epoch seconds, the leeway included).
    pub fn insert(&self, token: &str, identity: Arc<Identity>, expires: u64, generation: u64) {
        if token.len() > MAX_CACHED_TOKEN {
            return;
        }
        let now = now_secs();
        let until = expires.min(now + MAX_AGE_SECS);
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= CAPACITY / SHARDS {
            shard.retain(|_, e| e.until >= now);
            if shard.len() >= CAPACITY / SHARDS {
                // Freed outside the lock.
                let full = std::mem::take(&mut *shard);
                drop(shard);
                drop(full);
                return self.insert(token, identity, expires, generation);
            }
        }
        shard.insert(
            Box::from(token),
            Entry {
                identity,
                generation,
                until,
            },
        );
    }
}
