//! Filling the cache while the response streams to its client: a [`FillTicket`] comes with a
//! miss; when the response head arrives it either becomes a [`Fill`] (the response may be
//! stored) or is dropped (it may not; any requests waiting on this key are released at
//! once). The fill rides in the response body, which hands it each chunk on its way to the
//! client and tells it when the body ended whole. Only then is the entry stored. A body that
//! fails, is cut, outgrows `max_body_bytes`, or whose client leaves first is never stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use super::{rules, wall_now, CachePolicy, ResponseCache};

/// The right (and duty) to store what a miss brings back.
pub struct FillTicket {
    cache: Arc<ResponseCache>,
    policy: CachePolicy,
    key: String,
    /// The request's headers, for the `Vary` part of the key (known once the response is).
    request_headers: HeaderMap,
    /// Present when this request is the one others wait for.
    guard: Option<InflightGuard>,
}

/// Marks a key as being fetched; dropping it wakes the requests waiting for it.
pub struct InflightGuard {
    cache: Arc<ResponseCache>,
    key: String,
    _done: watch::Sender<()>,
}

/// A response being copied into the cache as it streams.
pub struct Fill {
    ticket: FillTicket,
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    body: BytesMut,
    declined: bool,
}

/// A response that arrived whole, ready to store.
pub struct Filled {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub ttl: Duration,
}

impl FillTicket {
    pub(super) fn new(
        cache: Arc<ResponseCache>,
        policy: CachePolicy,
        key: String,
        request_headers: &HeaderMap,
        guard: Option<InflightGuard>,
    ) -> Self {
        FillTicket {
            cache,
            policy,
            key,
            request_headers: request_headers.clone(),
            guard,
        }
    }

    /// The response head arrived (`headers` as the client will get them): a [`Fill`] when
    /// it may be stored, `None` otherwise (the ticket is spent and waiters are released).
    pub fn start(self, status: StatusCode, headers: &HeaderMap) -> Option<Fill> {
        let ttl = rules::storable_for(
            status.as_u16(),
            headers,
            &self.cache.statuses,
            self.policy.ttl,
            wall_now(),
        )?;
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.cache.max_body_bytes) {
            return None;
        }
        let mut headers = headers.clone();
        // Per-request headers are the gateway's to set on every answer, hits included.
        headers.remove(crate::proxy::headers::X_REQUEST_ID);
        headers.remove(super::X_CACHE);
        Some(Fill {
            status,
            headers,
            ttl,
            body: BytesMut::with_capacity(declared.unwrap_or(0) as usize),
            declined: false,
            ticket: self,
        })
    }
}

impl Fill {
    /// A chunk of the body went to the client.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.declined {
            return;
        }
        if (self.body.len() + chunk.len()) as u64 > self.ticket.cache.max_body_bytes {
            // Too large to keep: stop copying, and let waiting requests fetch for themselves.
            self.declined = true;
            self.body = BytesMut::new();
            self.ticket.guard = None;
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    /// The body ended whole: store it (waiting requests then find it).
    pub fn complete(self) {
        if self.declined {
            return;
        }
        let Fill {
            ticket,
            status,
            headers,
            ttl,
            body,
            ..
        } = self;
        ticket.cache.insert(
            &ticket.key,
            &ticket.request_headers,
            Filled {
                status,
                headers,
                body: body.freeze(),
                ttl,
            },
        );
        // `ticket.guard` drops here, after the insert.
    }
}

impl InflightGuard {
    pub(super) fn new(cache: Arc<ResponseCache>, key: String, done: watch::Sender<()>) -> Self {
        InflightGuard {
            cache,
            key,
            _done: done,
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // Out of the map first, then the sender goes (with the guard): a request that wakes
        // finds either the stored entry or no fill in progress.
        self.cache.fill_ended(&self.key);
    }
}
