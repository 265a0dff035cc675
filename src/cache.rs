//! The response cache: safe GET and HEAD responses kept in memory and served again while
//! fresh, by the HTTP caching rules of a shared cache ([`rules`]).
//!
//! - **Key**: method, scheme, authority (host and port), normalised path and query as the
//!   upstream gets them (a query token removed), plus the values of the request headers the
//!   response named in `Vary`, read from the request *as forwarded* (so `Vary: x-user-id`
//!   sees the verified identity, never a client's forgery) — never the endpoint that served
//!   it. A response with `Vary` leaves an index under the plain key listing those header
//!   names; the entry itself sits under the plain key plus the escaped values.
//! - **Who may use it**: a request that carries credentials (`Authorization`, `Cookie`, or
//!   any credential the gateway verified, such as an API key) bypasses the cache unless its
//!   route shares answers between callers (`allow_credentials`).
//! - **Filling** never delays the client: the response streams on as usual while a copy of
//!   its body is kept ([`fill`]), up to `max_body_bytes`. Only a body that arrived whole, with
//!   explicit framing, is stored; one that was cut, failed or grew too large is dropped. The
//!   copies in progress share a budget of `capacity` bytes.
//! - **Coalescing**: the first miss for a key fetches; later misses for it wait for that
//!   fill and are answered from it — until the route's response timeout for the response
//!   head, then at most [`STREAM_WAIT`] for its body (so a leader whose client reads slowly
//!   cannot hold everyone). A response that may not be stored releases them at once.
//! - **Memory** is bounded by `capacity` (bodies, headers and keys weighed in bytes), with
//!   quick_cache's eviction of the least useful entries; expired entries are dropped when met.
//! - **Purges** bump a generation, so a fill that started before a purge is not stored.
//! - Hits, misses and bypasses are counted per route ([`RouteStats`]) for `/metrics` and the
//!   dashboard; `DELETE /admin/cache?prefix=/p` purges.

pub(crate) mod fill;
mod key;
pub mod rules;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AGE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::proxy::body::GatewayBody;
use fill::{FillTicket, Phase};
use key::{path_of, plain_key, variant_key};
use rules::RequestUse;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How long requests waiting on a fill keep waiting once its response head has arrived: a
/// cacheable body is at most `max_body_bytes`, which a healthy client reads in far less.
pub const STREAM_WAIT: Duration = Duration::from_secs(1);

/// A route's cache settings, resolved from `[cache]` and its own `cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// The longest a response is kept (its own freshness may be shorter).
    pub ttl: Duration,
    pub allow_credentials: bool,
}

/// What `x-cache` says about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass,
}

pub struct ResponseCache {
    store: quick_cache::sync::Cache<String, Stored, Weigh>,
    /// Keys being fetched now, with a receiver that follows that fill.
    inflight: Mutex<HashMap<String, watch::Receiver<Phase>>>,
    max_body_bytes: u64,
    statuses: Vec<u16>,
    capacity: u64,
    /// Bytes held by fills in progress; they may not exceed `capacity` together.
    filling: AtomicU64,
    /// Bumped by every purge: a fill begun before it is not stored.
    generation: AtomicU64,
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

/// The request as the cache keys it: as it will be sent upstream.
pub struct CacheRequest<'a> {
    pub method: &'a Method,
    pub scheme: &'a str,
    /// Host and port, lowercase.
    pub authority: &'a str,
    /// Normalised.
    pub path: &'a str,
    /// As forwarded (a query token removed).
    pub query: Option<&'a str>,
    /// As forwarded: route edits, identity and forwarding headers applied.
    pub headers: &'a HeaderMap,
    /// The gateway verified a credential on this request.
    pub identified: bool,
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
            // Only reachable if quick_cache's rules for options change: its defaults then.
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
            filling: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Looks `req` up; on a miss for a key another request is already fetching, waits for
    /// that fill first (up to `wait` for its response head, [`STREAM_WAIT`] for its body).
    pub async fn lookup(
        self: &Arc<Self>,
        policy: &CachePolicy,
        req: &CacheRequest<'_>,
        wait: Duration,
    ) -> Lookup {
        let credentials = req.identified || rules::has_credentials(req.headers);
        if credentials && !policy.allow_credentials {
            return Lookup::Bypass;
        }
        let refresh = match rules::request_use(req.method, req.headers) {
            RequestUse::Bypass => return Lookup::Bypass,
            RequestUse::Refresh => true,
            RequestUse::Lookup => false,
        };
        let key = plain_key(req);
        let ticket = |guard| FillTicket::new(self.clone(), *policy, key.clone(), req, guard);
        if refresh {
            // A forced fetch neither reads nor waits; what it brings back replaces the entry.
            return Lookup::Miss(ticket(None));
        }
        let mut waited = false;
        loop {
            if let Some(entry) = self.find(&key, req.headers) {
                return Lookup::Hit(entry);
            }
            let follow = {
                let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match inflight.get(&key) {
                    Some(fill) if !waited => Some(fill.clone()),
                    Some(_) => None,
                    None => {
                        let (phase, follow) = watch::channel(Phase::Fetching);
                        inflight.insert(key.clone(), follow);
                        drop(inflight);
                        let guard = fill::InflightGuard::new(self.clone(), key.clone(), phase);
                        return Lookup::Miss(ticket(Some(guard)));
                    }
                }
            };
            let Some(fill) = follow else {
                // Waited once already and someone else is fetching again: fetch too.
                return Lookup::Miss(ticket(None));
            };
            waited = true;
            fill::follow(fill, Instant::now() + wait).await;
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

    /// Stores a response that arrived whole (unless a purge came since its fill began).
    fn insert(&self, response: fill::Filled) {
        if response.generation != self.generation.load(Ordering::Acquire) {
            return;
        }
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
        match response.vary {
            None => self.store.insert(response.key, entry),
            Some((names, full)) => {
                self.store.insert(full, entry);
                self.store.insert(response.key, Stored::Vary(names));
            }
        }
    }

    /// Removes every entry whose path starts with `prefix` (all of them without one);
    /// returns how many went. Fills in progress are not stored.
    pub fn purge(&self, prefix: Option<&str>) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
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
        headers.insert(X_CACHE, Outcome::Hit.header());
        response
    }
}

impl Outcome {
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
        })
    }
}

/// Counters kept per route: what `x-cache` said.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
}

impl CacheCounters {
    pub fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Hit => &self.hits,
            Outcome::Miss => &self.misses,
            Outcome::Bypass => &self.bypasses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
