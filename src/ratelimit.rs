//! Rate limiting: how many requests a client may make, decided after auth (so limits can
//! key by user) and before any upstream is picked.
//!
//! A route takes the `[rate_limit]` policy (one budget per client shared by every such
//! route, the seeds' behaviour) or its own (its own key space), or none. Each check counts one
//! request for the client's key — IP (IPv6 by /64), user, API key or a header — in the store:
//! [`memory`] for one instance, [`redis`] for several (with `on_store_error` deciding while
//! Redis cannot answer). Every answer of a
//! limited route carries the limit, what is left and when it resets, as `X-RateLimit-*` and
//! as the IETF `RateLimit-Policy` / `RateLimit` fields; over the limit the answer is 429
//! `rate_limited` with `Retry-After`, and nothing goes upstream.

mod algorithm;
mod memory;
mod redis;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::Identity;
use crate::config::{LimitKey, LimitPolicy, RateLimitConfig, StoreErrorPolicy, StoreKind};
use crate::error::{ErrorKind, GatewayError};
pub use algorithm::Verdict;
use memory::MemoryStore;
use redis::RedisStore;

pub struct Limiter {
    memory: MemoryStore,
    redis: Option<RedisStore>,
    on_store_error: StoreErrorPolicy,
}

/// A policy with the name its headers and store keys use.
pub struct NamedPolicy {
    pub name: Arc<str>,
    pub policy: LimitPolicy,
    /// `RateLimit-Policy` and `X-RateLimit-Limit`, rendered once.
    policy_header: HeaderValue,
    limit_header: HeaderValue,
}

/// The outcome of one check, for the response headers.
pub struct Decision {
    policy: Arc<NamedPolicy>,
    verdict: Verdict,
    /// False when nothing was counted (`on_store_error = "allow"`): no headers then, rather
    /// than made-up numbers.
    counted: bool,
}

/// What a client is counted by.
#[derive(Hash, PartialEq, Eq, Debug)]
pub enum ClientKey<'a> {
    Ip(IpAddr),
    Text(&'a str),
}

/// The client part of a Redis key. Text (a header value, a user id) is hashed: it may be a
/// credential, must not be readable with SCAN or MONITOR, and is kept short.
impl std::fmt::Display for ClientKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Ip(ip) => write!(f, "ip:{ip}"),
            ClientKey::Text(text) => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
                f.write_str("k:")?;
                for byte in &digest.as_ref()[..16] {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl NamedPolicy {
    pub fn new(name: &str, policy: LimitPolicy) -> NamedPolicy {
        // An sf-string: printable ASCII without `"` or `\` (route paths qualify).
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // The IETF fields count in whole seconds: a window is shown rounded up.
        let rendered = format!(
            "\"{name}\";q={};w={}",
            policy.max,
            policy.window.as_micros().div_ceil(1_000_000).max(1)
        );
        NamedPolicy {
            policy_header: HeaderValue::from_str(&rendered)
                .unwrap_or(HeaderValue::from_static("\"default\"")),
            limit_header: HeaderValue::from(policy.max),
            name: Arc::from(name),
            policy,
        }
    }
}

impl Limiter {
    pub fn new(config: &RateLimitConfig) -> Result<Limiter, String> {
        let redis = match (&config.store, &config.redis_url) {
            (StoreKind::Redis, Some(url)) => Some(RedisStore::new(url, config.redis_timeout)?),
            _ => None,
        };
        Ok(Limiter {
            memory: MemoryStore::new(config.memory_max_keys),
            redis,
            on_store_error: config.on_store_error,
        })
    }

    /// Counts one request of `client` under `policy`.
    pub async fn check(&self, policy: &Arc<NamedPolicy>, client: ClientKey<'_>) -> Decision {
        let local = || self.memory.check(&policy.policy, (&*policy.name, &client));
        let mut counted = true;
        let verdict = match &self.redis {
            None => local(),
            Some(redis) => match redis.check(&policy.policy, &policy.name, &client).await {
                Some(verdict) => verdict,
                None => match self.on_store_error {
                    StoreErrorPolicy::Local => local(),
                    StoreErrorPolicy::Allow => {
                        counted = false;
                        Verdict {
                            allowed: true,
                            remaining: policy.policy.max,
                            reset_us: 0,
                            retry_us: 0,
                        }
                    }
                    StoreErrorPolicy::Deny => Verdict {
                        allowed: false,
                        remaining: 0,
                        reset_us: 1_000_000,
                        retry_us: 1_000_000,
                    },
                },
            },
        };
        Decision {
            policy: policy.clone(),
            verdict,
            counted,
        }
    }

    /// For `/admin/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let redis = self.redis.as_ref().map(|r| {
            serde_json::json!({
                "available": r.is_available(),
                "errors": r.errors.load(std::sync::atomic::Ordering::Relaxed),
            })
        });
        serde_json::json!({
            "store": if self.redis.is_some() { "redis" } else { "memory" },
            "memoryKeys": self.memory.len(),
            "redis": redis,
        })
    }
}

/// The key a request is counted by. Identity-based keys fall back to the client address for
/// requests without one.
pub fn client_key<'a>(
    key: &'a LimitKey,
    client: IpAddr,
    headers: &'a HeaderMap,
    identity: Option<&'a Identity>,
) -> ClientKey<'a> {
    let text = match key {
        LimitKey::Ip => None,
        LimitKey::User => identity.and_then(Identity::subject),
        LimitKey::ApiKey => identity
            .filter(|i| i.is_api_key())
            .and_then(Identity::subject),
        // The last value: a trusted proxy that appends writes after the client.
        LimitKey::Header(name) => headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok()),
    };
    // An empty key would be one budget shared by everyone who sends it.
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => ClientKey::Text(text),
        None => ClientKey::Ip(network(client)),
    }
}

/// IPv4 as is; IPv6 by its /64, what one subscriber usually gets.
fn network(ip: IpAddr) -> IpAddr {
    match crate::proxy::headers::canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up, at least 1 when anything is left.
fn seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict.allowed
    }

    /// The 429 for a refused request (its headers are set by [`Decision::set_headers`]).
    pub fn refusal(&self) -> GatewayError {
        GatewayError::client(
            ErrorKind::RateLimited,
            format!(
                "rate limit of {} requests per {} exceeded",
                self.policy.policy.max,
                humantime::format_duration(self.policy.policy.window)
            ),
        )
        .with_retry_after(seconds(self.verdict.retry_us).max(1))
    }

    /// The limit headers, on every answer of a limited route.
    pub fn set_headers(&self, headers: &mut HeaderMap) {
        if !self.counted {
            return;
        }
        let reset = seconds(self.verdict.reset_us);
        // A GCRA burst above `max` may leave more than the stated limit; never say so.
        let remaining = self.verdict.remaining.min(self.policy.policy.max);
        // Every answer of a limited route carries these five, so they are made without
        // `format!`: the fixed ones cloned, the numbers through itoa, `RateLimit` in one buffer.
        headers.reserve(5);
        headers.insert(X_LIMIT, self.policy.limit_header.clone());
        headers.insert(X_REMAINING, HeaderValue::from(remaining));
        headers.insert(X_RESET, HeaderValue::from(reset));
        headers.insert(RATELIMIT_POLICY, self.policy.policy_header.clone());
        let name = &self.policy.name;
        let mut current = Vec::with_capacity(name.len() + 48);
        current.push(b'"');
        current.extend_from_slice(name.as_bytes());
        current.extend_from_slice(b"\";r=");
        current.extend_from_slice(itoa::Buffer::new().format(remaining).as_bytes());
        current.extend_from_slice(b";t=");
        current.extend_from_slice(itoa::Buffer::new().format(reset).as_bytes());
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(current)) {
            headers.insert(RATELIMIT, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(network(mapped), IpAddr::from([10, 1, 2, 3]));
    }
}
