//! The validated shape of rate limiting: `[rate_limit]` (the default policy, the store, what
//! happens when the store fails) and a route's own `rate_limit`. Checked in
//! `validate/limits.rs`; enforced by `crate::ratelimit`.

use std::time::Duration;

use http::HeaderName;

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Routes without a `rate_limit` of their own are limited. Default is true (the seeds
    /// limited every proxied route).
    pub enabled: bool,
    /// The default policy: `RATE_LIMIT_MAX` (200) per `RATE_LIMIT_WINDOW_MS` (60 s), sliding
    /// window, keyed by client IP.
    pub policy: LimitPolicy,
    /// Where counts live. Default is `redis` when a Redis URL is set, else `memory`.
    pub store: StoreKind,
    /// `REDIS_URL`. Default is none.
    pub redis_url: Option<String>,
    /// Each Redis call (and connect) is given this long. Default is 50 ms.
    pub redis_timeout: Duration,
    /// What a request gets while the store cannot answer. Default is `local`.
    pub on_store_error: StoreErrorPolicy,
    /// The memory store keeps at most this many clients; expired ones go first. Default is
    /// 1,000,000.
    pub memory_max_keys: usize,
}

/// One limit: at most `max` requests per `window` for each key.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitPolicy {
    pub max: u64,
    pub window: Duration,
    pub algorithm: LimitAlgorithm,
    /// GCRA only: requests allowed at once. Default is `max`.
    pub burst: u64,
    pub key: LimitKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAlgorithm {
    /// At most `max` per window, the previous window weighted by how much of it still
    /// overlaps: no burst of 2×`max` across a window edge.
    SlidingWindow,
    /// A token bucket (generic cell rate): `max` per window on average, `burst` at once.
    Gcra,
    /// The seeds' behaviour: counts reset at each window boundary.
    FixedWindow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address through `trusted_proxies`; IPv6 grouped by /64.
    Ip,
    /// The verified identity (`sub`, an API key's id); the IP without one.
    User,
    /// An API key's id; the IP for other requests.
    ApiKey,
    /// A request header's value; the IP when it is missing.
    Header(HeaderName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorPolicy {
    /// Count in this process meanwhile (each instance enforces the limit on its own).
    Local,
    /// Let requests through unlimited.
    Allow,
    /// Refuse them (429 with `Retry-After: 1`).
    Deny,
}

/// A route's `rate_limit`.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteLimit {
    /// `rate_limit = false`: not limited.
    Off,
    /// Its own limit and key space (unset keys come from `[rate_limit]`).
    Own(LimitPolicy),
}
