//! Filling the cache while the response streams to its client: a [`FillTicket`] comes with a
//! miss; when the response head arrives it either becomes a [`Fill`] (the response may be
//! stored) or is dropped (it may not; any requests waiting on this key are released at
//! once). The fill rides in the response body, which hands it each chunk on its way to the
//! client and tells it when the body ended whole. Only then is the entry stored. A body that
//! fails, is cut, outgrows `max_body_bytes` or the shared fill budget, or whose client leaves
//! first is never stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, Method, StatusCode, Version};
use tokio::sync::watch;
use tokio::time::Instant;

use super::key::variant_key;
use super::{rules, CachePolicy, CacheRequest, ResponseCache, STREAM_WAIT};

/// Where the fill of a key is, for the requests waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the upstream's response head.
    Fetching,
    /// The body is streaming into the cache since then.
    Streaming(Instant),
}

/// The right (and duty) to store what a miss brings back.
pub struct FillTicket {
    cache: Arc<ResponseCache>,
    policy: CachePolicy,
    key: String,
    /// The request's headers as forwarded, for the `Vary` part of the key.
    request_headers: HeaderMap,
    head: bool,
    generation: u64,
    /// Present when this request is the one others wait for.
    guard: Option<InflightGuard>,
}

/// Marks a key as being fetched; dropping it wakes the requests waiting for it.
pub struct InflightGuard {
    cache: Arc<ResponseCache>,
    key: String,
    phase: watch::Sender<Phase>,
}

/// A response being copied into the cache as it streams.
pub struct Fill {
    ticket: FillTicket,
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    /// `Vary` header names (from the upstream's own headers) and the full key.
    vary: Option<(Arc<[HeaderName]>, String)>,
    body: BytesMut,
    /// Bytes taken from the cache's fill budget.
    reserved: u64,
    declined: bool,
}

/// A response that arrived whole, ready to store.
pub struct Filled {
    pub key: String,
    pub vary: Option<(Arc<[HeaderName]>, String)>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub ttl: Duration,
    pub generation: u64,
}

/// Waits on another request's fill: until `head_deadline` for its response head, then at
/// most [`STREAM_WAIT`] for its body; returns early when it ends, stored or not.
pub async fn follow(mut fill: watch::Receiver<Phase>, head_deadline: Instant) {
    loop {
        let until = match *fill.borrow_and_update() {
            Phase::Fetching => head_deadline,
            Phase::Streaming(since) => (since + STREAM_WAIT).min(head_deadline),
        };
        match tokio::time::timeout_at(until, fill.changed()).await {
            Ok(Ok(())) => continue,
            // Ended (its sender is gone) or out of time.
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

impl FillTicket {
    pub(super) fn new(
        cache: Arc<ResponseCache>,
        policy: CachePolicy,
        key: String,
        req: &CacheRequest<'_>,
        guard: Option<InflightGuard>,
    ) -> Self {
        FillTicket {
            generation: cache.generation.load(Ordering::Acquire),
            cache,
            policy,
            key,
            request_headers: req.headers.clone(),
            head: *req.method == Method::HEAD,
            guard,
        }
    }

    /// The response head arrived, `upstream_headers` as the upstream sent them (hop-by-hop
    /// ones included): a [`Fill`] when it may be stored, `None` otherwise (the ticket is
    /// spent and waiters are released). Only a body whose end is marked (a length, chunked,
    /// HTTP/2) is kept, so a connection cut short cannot pass for a whole body.
    pub fn start(
        self,
        status: StatusCode,
        version: Version,
        upstream_headers: &HeaderMap,
    ) -> Option<Fill> {
        let delimited = version == Version::HTTP_2
            || upstream_headers.contains_key(http::header::CONTENT_LENGTH)
            || upstream_headers
                .get(http::header::TRANSFER_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if !delimited && !self.head {
            return None;
        }
        let ttl = rules::storable_for(
            status.as_u16(),
            upstream_headers,
            &self.cache.statuses,
            self.policy.ttl,
            std::time::SystemTime::now(),
        )?;
        let declared = upstream_headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !self.head && declared.is_some_and(|length| length > self.cache.max_body_bytes) {
            return None;
        }
        let names = rules::vary_names(upstream_headers)?;
        let vary = (!names.is_empty()).then(|| {
            let full = variant_key(&self.key, &names, &self.request_headers);
            (Arc::from(names), full)
        });
        if let Some(guard) = &self.guard {
            guard.phase.send_replace(Phase::Streaming(Instant::now()));
        }
        Some(Fill {
            status,
            headers: HeaderMap::new(),
            ttl,
            vary,
            body: BytesMut::new(),
            reserved: 0,
            declined: false,
            ticket: self,
        })
    }
}

impl Fill {
    /// The headers to store: the answer's as the client gets them, without the ones the
    /// gateway sets per request.
    pub fn keep_headers(&mut self, headers: &HeaderMap) {
        let mut kept = headers.clone();
        kept.remove(crate::proxy::headers::X_REQUEST_ID);
        kept.remove(super::X_CACHE);
        self.headers = kept;
    }

    /// A chunk of the body went to the client.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.declined {
            return;
        }
        let n = chunk.len() as u64;
        let cache = &self.ticket.cache;
        let within_body = self.body.len() as u64 + n <= cache.max_body_bytes;
        let budget = cache.filling.fetch_add(n, Ordering::AcqRel) + n;
        self.reserved += n;
        if !within_body || budget > cache.capacity {
            // Too large to keep (or too much being filled at once): stop copying, and let
            // waiting requests fetch for themselves.
            self.decline();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    fn decline(&mut self) {
        self.declined = true;
        self.body = BytesMut::new();
        self.release();
        self.ticket.guard = None;
    }

    fn release(&mut self) {
        self.ticket
            .cache
            .filling
            .fetch_sub(self.reserved, Ordering::AcqRel);
        self.reserved = 0;
    }

    /// The body ended whole: store it (waiting requests then find it).
    pub fn complete(mut self) {
        if self.declined {
            return;
        }
        self.release();
        let body = std::mem::take(&mut self.body);
        // A buffer that grew by doubling holds more than it says: keep only the bytes.
        let body = if body.capacity() > body.len() {
            Bytes::copy_from_slice(&body)
        } else {
            body.freeze()
        };
        let cache = self.ticket.cache.clone();
        cache.insert(Filled {
            key: std::mem::take(&mut self.ticket.key),
            vary: self.vary.take(),
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            body,
            ttl: self.ttl,
            generation: self.ticket.generation,
        });
        // `self` (and the ticket's guard) drops here, after the insert.
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        self.release();
    }
}

impl InflightGuard {
    pub(super) fn new(cache: Arc<ResponseCache>, key: String, phase: watch::Sender<Phase>) -> Self {
        InflightGuard { cache, key, phase }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // Out of the map first, then the sender goes (with the guard): a request that wakes
        // finds either the stored entry or no fill in progress.
        self.cache.fill_ended(&self.key);
    }
}
