//! The response cache: safe GET and HEAD responses kept in memory and served again while
//! fresh, by the HTTP caching rules of a shared cache ([`rules`]).
//!
//! - **Key**: method, host, path and query, plus the values of the request headers the
//!   response named in `Vary` — never the endpoint that served it. A response with `Vary`
//!   leaves an index under the plain key listing those header names; the entry itself sits
//!   under the plain key plus the request's values for them.
//! - **Filling** never delays the client: the response streams on as usual while a copy of
//!   its body is kept ([`fill`]), up to `max_body_bytes`. Only a body that arrived whole is
//!   stored; one that was cut, failed or grew too large is dropped.
//! - **Coalescing**: the first miss for a key fetches; later misses for it wait (up to the
//!   route's response timeout) for that fill and are answered from it. When the response
//!   turns out not to be storable they are released at once to fetch for themselves.
//! - **Memory** is bounded by `capacity` (bodies, headers and keys weighed in bytes), with
//!   quick_cache's eviction of the least useful entries; expired entries are dropped when met.
//! - Hits, misses and bypasses are counted per route ([`RouteStats`]) for `/metrics` and the
//!   dashboard; `DELETE /admin/cache?prefix=/p` purges.

pub mod fill;
pub mod rules;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::AGE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::proxy::body::GatewayBody;
use fill::FillTicket;
use rules::RequestUse;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A route's cache settings, resolved from `[cache]` and its own `cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// The longest a response is kept (its own freshness may be shorter).
    pub ttl: Duration,
    pub allow_credentials: bool,
}

pub struct ResponseCache {
    store: quick_cache::sync::Cache<String, Stored, Weigh>,
    /// Keys being fetched now, with a receiver that wakes when that fill ends.
    inflight: Mutex<HashMap<String, watch::Receiver<()>>>,
    max_body_bytes: u64,
    statuses: Vec<u16>,
    capacity: u64,
}

#[derive(Clone)]
enum Stored {
    Entry(Arc<Entry>),
    /// Under the plain key of a response with `Vary`: the request headers it varies on.
    Vary(Arc<[HeaderName]>),
}

/// One stored response.
pub struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored_at: Instant,
    expires_at: Instant,
    /// The response's own `Age` when it arrived.
    initial_age: u64,
    weight: u64,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<String, Stored> for Weigh {
    fn weight(&self, key: &String, value: &Stored) -> u64 {
        key.len() as u64
            + match value {
                Stored::Entry(entry) => entry.weight,
                Stored::Vary(names) => {
                    64 + names.iter().map(|n| n.as_str().len() as u64).sum::<u64>()
                }
            }
    }
}

/// What a request gets from the cache.
pub enum Lookup {
    /// A fresh stored response ([`Entry::response`] makes the answer).
    Hit(Arc<Entry>),
    /// Fetch it; the ticket stores the response when it may be stored.
    Miss(FillTicket),
    /// The cache is not for this request (`x-cache: BYPASS`).
    Bypass,
}

/// The request as the cache keys it.
pub struct CacheRequest<'a> {
    pub method: &'a Method,
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
}

// === impl ResponseCache ===

impl ResponseCache {
    pub fn new(config: &CacheConfig) -> Self {
        // A shard holds a share of the capacity, and an entry never spans shards: keep every
        // shard able to hold a few of the largest bodies.
        let largest = config.max_body_bytes.max(64 * 1024);
        let mut shards = 16usize;
        while shards > 1 && config.capacity / (shards as u64) < 4 * largest {
            shards /= 2;
        }
        let estimated_items = (config.capacity / 16_384).clamp(64, 1 << 20) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated_items)
            .weight_capacity(config.capacity)
            .shards(shards)
            .build();
        let store = match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                Weigh,
                Default::default(),
                Default::default(),
            ),
            // The options above are always valid; fall back to the plain constructor.
            Err(_) => {
                quick_cache::sync::Cache::with_weighter(estimated_items, config.capacity, Weigh)
            }
        };
        ResponseCache {
            store,
            inflight: Mutex::new(HashMap::new()),
            max_body_bytes: config.max_body_bytes,
            statuses: config.statuses.clone(),
            capacity: config.capacity,
        }
    }

    /// Looks `req` up; on a miss for a key another request is already fetching, waits up to
    /// `wait` for that fill first.
    pub async fn lookup(
        self: &Arc<Self>,
        policy: &CachePolicy,
        req: &CacheRequest<'_>,
        wait: Duration,
    ) -> Lookup {
        let refresh = match rules::request_use(req.method, req.headers, policy.allow_credentials) {
            RequestUse::Bypass => return Lookup::Bypass,
            RequestUse::Refresh => true,
            RequestUse::Lookup => false,
        };
        let key = plain_key(req.method, req.host, req.path_and_query);
        if refresh {
            // A forced fetch neither reads nor waits; what it brings back replaces the entry.
            return Lookup::Miss(FillTicket::new(
                self.clone(),
                *policy,
                key,
                req.headers,
                None,
            ));
        }
        let mut waited = false;
        loop {
            if let Some(entry) = self.find(&key, req.headers) {
                return Lookup::Hit(entry);
            }
            let waiting = {
                let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match inflight.get(&key) {
                    Some(fill) if !waited => Some(fill.clone()),
                    Some(_) => None,
                    None => {
                        let (done, wakes) = watch::channel(());
                        inflight.insert(key.clone(), wakes);
                        drop(inflight);
                        let guard = fill::InflightGuard::new(self.clone(), key.clone(), done);
                        return Lookup::Miss(FillTicket::new(
                            self.clone(),
                            *policy,
                            key,
                            req.headers,
                            Some(guard),
                        ));
                    }
                }
            };
            let Some(mut fill) = waiting else {
                // Waited once already and someone else is fetching again: fetch too.
                return Lookup::Miss(FillTicket::new(
                    self.clone(),
                    *policy,
                    key,
                    req.headers,
                    None,
                ));
            };
            waited = true;
            // Resolves when the filling request ends (its sender is dropped), stored or not.
            let _ = tokio::time::timeout(wait, fill.changed()).await;
        }
    }

    /// A fresh entry for `key` and the request's headers, if any; expired ones are removed.
    fn find(&self, key: &str, headers: &HeaderMap) -> Option<Arc<Entry>> {
        let (full_key, stored) = match self.store.get(key)? {
            Stored::Entry(entry) => (None, entry),
            Stored::Vary(names) => {
                let full = variant_key(key, &names, headers);
                match self.store.get(full.as_str())? {
                    Stored::Entry(entry) => (Some(full), entry),
                    Stored::Vary(_) => return None,
                }
            }
        };
        if stored.expires_at > Instant::now() {
            return Some(stored);
        }
        self.store.remove(full_key.as_deref().unwrap_or(key));
        None
    }

    /// Stores a response that arrived whole.
    fn insert(&self, key: &str, request_headers: &HeaderMap, response: fill::Filled) {
        let names = rules::vary_names(&response.headers).unwrap_or_default();
        let weight = response.body.len() as u64
            + response
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().len() + v.len() + 32) as u64)
                .sum::<u64>()
            + 256;
        let now = Instant::now();
        let entry = Stored::Entry(Arc::new(Entry {
            status: response.status,
            initial_age: rules::age(&response.headers),
            headers: response.headers,
            body: response.body,
            stored_at: now,
            expires_at: now + response.ttl,
            weight,
        }));
        if names.is_empty() {
            self.store.insert(key.to_owned(), entry);
        } else {
            let full = variant_key(key, &names, request_headers);
            self.store.insert(full, entry);
            self.store
                .insert(key.to_owned(), Stored::Vary(names.into()));
        }
    }

    /// Removes every entry whose path starts with `prefix` (all of them without one);
    /// returns how many went.
    pub fn purge(&self, prefix: Option<&str>) -> usize {
        let before = self.store.len();
        match prefix {
            None => self.store.clear(),
            Some(prefix) => self
                .store
                .retain(|key, _| !path_of(key).starts_with(prefix)),
        }
        before.saturating_sub(self.store.len())
    }

    pub fn entries(&self) -> usize {
        self.store.len()
    }

    pub fn bytes(&self) -> u64 {
        self.store.weight()
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn fill_ended(&self, key: &str) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        inflight.remove(key);
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.store.len())
            .field("bytes", &self.store.weight())
            .finish()
    }
}

// === impl Entry ===

impl Entry {
    /// The answer to a request with `method`: the stored status and headers, `Age`,
    /// `x-cache: HIT`, and the body (none for HEAD).
    pub fn response(&self, method: &Method) -> Response<GatewayBody> {
        let body = if *method == Method::HEAD {
            GatewayBody::full(Bytes::new())
        } else {
            GatewayBody::full(self.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let age = self.initial_age + self.stored_at.elapsed().as_secs();
        let headers = response.headers_mut();
        headers.insert(AGE, HeaderValue::from(age));
        headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
        response
    }
}

/// `GET example.com /p?q`: the key without `Vary`.
fn plain_key(method: &Method, host: &str, path_and_query: &str) -> String {
    let mut key =
        String::with_capacity(method.as_str().len() + host.len() + path_and_query.len() + 2);
    key.push_str(method.as_str());
    key.push(' ');
    key.push_str(host);
    key.push(' ');
    key.push_str(path_and_query);
    key
}

/// The plain key plus the request's values of the `Vary` headers (each line `name: values`).
fn variant_key(key: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut full = key.to_owned();
    for name in names {
        full.push('\n');
        full.push_str(name.as_str());
        full.push(':');
        for (i, value) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                full.push(',');
            }
            full.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    full
}

/// The path of a key (`GET host /p?q[\n…]` → `/p?q`).
fn path_of(key: &str) -> &str {
    let line = key.split('\n').next().unwrap_or(key);
    line.splitn(3, ' ').nth(2).unwrap_or("")
}

/// Wall-clock now, for the caching rules' date arithmetic.
fn wall_now() -> SystemTime {
    SystemTime::now()
}

/// Counters kept per route: what `x-cache` said.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
}

impl CacheCounters {
    pub fn count(&self, outcome: &'static str) {
        let counter = match outcome {
            "HIT" => &self.hits,
            "MISS" => &self.misses,
            _ => &self.bypasses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_their_path() {
        let key = plain_key(&Method::GET, "example.com", "/a/b?x=1");
        assert_eq!(key, "GET example.com /a/b?x=1");
        assert_eq!(path_of(&key), "/a/b?x=1");
        let mut headers = HeaderMap::new();
        headers.append("accept", HeaderValue::from_static("text/html"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        let names = [
            HeaderName::from_static("accept"),
            HeaderName::from_static("x-absent"),
        ];
        let full = variant_key(&key, &names, &headers);
        assert_eq!(
            full,
            "GET example.com /a/b?x=1\naccept:text/html,*/*\nx-absent:"
        );
        assert_eq!(path_of(&full), "/a/b?x=1");
    }
}
