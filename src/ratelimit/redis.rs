//! The shared store: every gateway instance counts in one Redis, so together they enforce
//! one limit. One Lua script per check does the read, the arithmetic of [`super::algorithm`]
//! and the write atomically, on Redis's own clock (`TIME`), so gateway clocks never matter;
//! every key it writes has a TTL.
//!
//! Redis can fail or hang, so each call has a short timeout (`redis_timeout`, 50 ms), and a
//! breaker stands in front: after a failure the store is not asked for a second, then one
//! request probes it. Meanwhile `on_store_error` decides (count locally, allow, deny), so a
//! hung Redis costs one timeout per second instead of one per request.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::algorithm::{window_us, Verdict};
use crate::config::{LimitAlgorithm, LimitPolicy};

/// After a failure, the store is left alone this long before one request probes it.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// KEYS[1]: the counter. ARGV: algorithm (1 sliding, 2 gcra, 3 fixed), max, window µs,
/// burst. Returns {allowed, remaining, reset µs, retry µs}. Integers go back to Redis as
/// `%.0f` strings: Lua numbers are doubles, and its default `%.14g` would round µs stamps.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local alg, max, window, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function int(x) return string.format('%.0f', x) end
if alg == 2 then
  local interval = math.max(math.floor(window / max), 1)
  local tolerance = interval * burst
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  local nxt = tat + interval
  if nxt - now <= tolerance then
    redis.call('SET', KEYS[1], int(nxt), 'PX', int(math.ceil((nxt - now) / 1000) + 1))
    return {1, math.floor((tolerance - (nxt - now)) / interval), nxt - now, 0}
  end
  return {0, 0, tat - now, nxt - now - tolerance}
end
local index = math.floor(now / window)
local h = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local i, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
if i == nil or (i ~= index and i + 1 ~= index) then
  c, p = 0, 0
elseif i + 1 == index then
  c, p = 0, c
end
local elapsed = now % window
local reset = window - elapsed
-- Sliding: allowed while p * (window - elapsed) / window + c < max, exactly as in Rust.
local in_view = 0
if alg == 1 then in_view = p * (window - elapsed) end
if in_view + c * window < max * window then
  redis.call('HSET', KEYS[1], 'i', int(index), 'c', int(c + 1), 'p', int(p))
  redis.call('PEXPIRE', KEYS[1], int(math.ceil((2 * window - elapsed) / 1000) + 1))
  return {1, math.max(math.ceil((max * window - in_view - c * window) / window) - 1, 0), reset, 0}
end
local retry = reset
if alg == 1 and c >= max then
  retry = reset + (window - math.floor(max * window / c)) + 1
elseif alg == 1 then
  retry = math.max(window - elapsed - math.floor((max - c) * window / math.max(p, 1)), 0) + 1
end
return {0, 0, math.max(reset, retry), retry}
";

pub struct RedisStore {
    /// Replaced after a timeout: a connection whose peer went silent (a failover that moved
    /// the address, a NAT that dropped its state) would otherwise be retried until TCP gives
    /// up, minutes later.
    connection: ArcSwap<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    script: Script,
    timeout: Duration,
    breaker: Breaker,
    pub errors: AtomicU64,
    /// One slow reply (a fork, an fsync) is not an outage: the breaker opens after this many
    /// failures in a row (or any failed probe).
    failures_in_a_row: AtomicU32,
}

const FAILURES_TO_OPEN: u32 = 3;

/// Closed (`open_until` 0), open until a time, or half-open with one probe out.
struct Breaker {
    started: Instant,
    /// µs since `started`; 0 when closed.
    open_until: AtomicU64,
    probing: AtomicBool,
}

impl RedisStore {
    /// Connects lazily: a Redis that is down at startup does not stop the gateway.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("rate_limit.redis_url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| format!("rate_limit.redis_url: {e}"))?;
        Ok(RedisStore {
            connection: ArcSwap::from_pointee(connection),
            client,
            config,
            failures_in_a_row: AtomicU32::new(0),
            script: Script::new(SCRIPT),
            timeout,
            breaker: Breaker {
                started: Instant::now(),
                open_until: AtomicU64::new(0),
                probing: AtomicBool::new(false),
            },
            errors: AtomicU64::new(0),
        })
    }

    /// One request of `client` under the policy named `name`, or `None` when Redis did not
    /// answer (or is being left alone).
    pub async fn check(
        &self,
        policy: &LimitPolicy,
        name: &str,
        client: &impl std::fmt::Display,
    ) -> Option<Verdict> {
        let probe = self.breaker.admit()?;
        // A request dropped while it waits (the client went away) must not leave the probe
        // slot taken, or Redis would never be asked again.
        let mut guard = ProbeGuard {
            breaker: &self.breaker,
            armed: probe,
        };
        // The algorithm is in the key too: states of different shapes never meet.
        let (algorithm, tag) = match policy.algorithm {
            LimitAlgorithm::SlidingWindow => (1, "sw"),
            LimitAlgorithm::Gcra => (2, "gcra"),
            LimitAlgorithm::FixedWindow => (3, "fw"),
        };
        let key = format!("sluice:rl:{tag}:{name}:{client}");
        let mut connection = ConnectionManager::clone(&self.connection.load());
        let mut invocation = self.script.key(&key);
        invocation
            .arg(algorithm)
            .arg(policy.max)
            .arg(window_us(policy))
            .arg(policy.burst);
        // One retry for a connection Redis (or a NAT) closed while idle: the manager
        // reconnects on the next call. Both tries share the one timeout.
        let call = async {
            match invocation
                .invoke_async::<(u8, u64, u64, u64)>(&mut connection)
                .await
            {
                // Only a connection seen closed: after a timeout the script may have run.
                Err(e) if e.is_connection_dropped() => {
                    invocation.invoke_async(&mut connection).await
                }
                outcome => outcome,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, remaining, reset_us, retry_us))) => {
                guard.armed = false;
                self.failures_in_a_row.store(0, Ordering::Relaxed);
                self.breaker.close(probe);
                Some(Verdict {
                    allowed: allowed == 1,
                    remaining,
                    reset_us,
                    retry_us,
                })
            }
            Ok(Err(e)) if e.code() == Some("WRONGTYPE") => {
                // Something else owns this key (another tool, an old version): this request
                // gets `on_store_error`, the others keep using Redis.
                guard.armed = false;
                self.breaker.release(probe);
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "rate-limit store (Redis) refused a check");
                None
            }
            outcome => {
                guard.armed = false;
                self.errors.fetch_add(1, Ordering::Relaxed);
                let timed_out = outcome.is_err();
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                };
                if timed_out {
                    self.reconnect();
                }
                let in_a_row = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if probe || in_a_row >= FAILURES_TO_OPEN {
                    self.breaker.open(probe, &error);
                }
                None
            }
        }
    }

    /// A fresh (lazy) connection for the next call.
    fn reconnect(&self) {
        if let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            self.connection.store(Arc::new(fresh));
        }
    }

    pub fn is_available(&self) -> bool {
        self.breaker.open_until.load(Ordering::Relaxed) == 0
    }
}

/// Gives the probe slot back (and keeps the breaker open) if a probing request is dropped.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.open(true, "the probing request was cancelled");
        }
    }
}

impl Breaker {
    /// Gives back the probe slot without deciding anything.
    fn release(&self, probe: bool) {
        if probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    fn now_us(&self) -> u64 {
        (self.started.elapsed().as_micros() as u64).max(1)
    }

    /// Whether this request may ask Redis: always while closed; once the interval is over,
    /// one request (the probe, `Some(true)`) at a time.
    fn admit(&self) -> Option<bool> {
        let open_until = self.open_until.load(Ordering::Acquire);
        if open_until == 0 {
            return Some(false);
        }
        if self.now_us() < open_until {
            return None;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| true)
    }

    fn close(&self, probe: bool) {
        if probe {
            self.open_until.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            tracing::info!("rate-limit store (Redis) answers again");
        }
    }

    fn open(&self, probe: bool, error: &str) {
        let was_closed = self.open_until.load(Ordering::Acquire) == 0;
        let until = self.now_us() + PROBE_INTERVAL.as_micros() as u64;
        self.open_until.store(until, Ordering::Release);
        if probe {
            self.probing.store(false, Ordering::Release);
        }
        if was_closed {
            tracing::warn!(%error, "rate-limit store (Redis) failed; on_store_error applies, retrying every second");
        }
    }
}
