//! Body wrappers for the proxy path. Nothing here buffers: each frame is passed on as it
//! arrives, and counted on the way.
//!
//! - [`RequestBody`] carries the client's body to the upstream. It enforces
//!   `max_request_body` while streaming (a chunked upload is cut at the limit and answered
//!   413), cuts an upload that stalls for longer than the route's idle timeout, and tells the
//!   request's [`Exchange`] when it has been sent in full: the response timeout starts then.
//! - [`GatewayBody`] is every response body sluice sends: a small fixed body it made itself,
//!   a stream it makes as it goes (the dashboard's live feed), or the upstream's stream with an idle timeout (a stream that goes silent longer than
//!   `idle_timeout` is cut; one that keeps flowing is never cut, however long it runs) and,
//!   for an event stream, optional heartbeats while the upstream is quiet
//!   ([`crate::realtime::sse`]).
//!
//! Both hold the request's [`Exchange`], so the access log line is written when the last of
//! them is done.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::client::UpstreamBody;
use super::idle::IdleTimer;
use crate::cache::fill::Fill;
use crate::observe::Exchange;
use crate::realtime::sse::EventStream;
use crate::upstream::Lease;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client's request body exceeded `max_request_body`.
#[derive(Debug)]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// Reading the client's body failed (malformed chunked encoding, or the client went away):
/// the client's fault, not the upstream's.
#[derive(Debug)]
pub struct ClientBodyError(pub hyper::Error);

/// A body was silent for longer than its idle timeout.
#[derive(Debug)]
pub struct BodyIdleTimeout(pub Duration);

/// The client's body on its way upstream.
pub struct RequestBody {
    source: Source,
    received: u64,
    limit: u64,
    idle: IdleTimer,
    exchange: Arc<Exchange>,
}

/// Every response body sluice sends.
pub struct GatewayBody {
    kind: Kind,
    /// The upstream endpoint's lease: the request counts as in flight there until this body
    /// is done. Dropped before the exchange, so the access log sees the final counts.
    lease: Option<Lease>,
    exchange: Option<Arc<Exchange>>,
    /// A copy of the body on its way into the response cache.
    /// Boxed: most responses have none, and this body is moved several times.
    fill: Option<Box<Fill>>,
}

/// A client body not yet handed to an upstream connection. It stays here until the first
/// attempt's connection polls it, so when that attempt fails before sending a byte (connect
/// refused, or reset before the body was read) the next attempt can send the same body.
#[derive(Clone)]
pub struct UnsentBody(Arc<Mutex<Option<Incoming>>>);

enum Source {
    Empty,
    /// Taken from the [`UnsentBody`] on first poll.
    Unsent(UnsentBody),
    Streaming(Incoming),
}

enum Kind {
    Full(Option<Bytes>),
    /// Made by the gateway as it goes (the dashboard's live feed); ends with the stream.
    Generated(Pin<Box<dyn Stream<Item = Bytes> + Send>>),
    Upstream {
        inner: UpstreamBody,
        idle: IdleTimer,
        /// An event stream's line state and heartbeat.
        events: Option<EventStream>,
    },
}

// === impl RequestBody ===

impl RequestBody {
    /// The body of one attempt, from `unsent`; it takes the client's body on first poll.
    pub fn new(
        unsent: &UnsentBody,
        limit: u64,
        idle_timeout: Duration,
        exchange: Arc<Exchange>,
    ) -> Self {
        if unsent.is_end_stream() {
            exchange.request_body_done();
        }
        RequestBody {
            source: Source::Unsent(unsent.clone()),
            received: 0,
            limit,
            idle: IdleTimer::new(idle_timeout),
            exchange,
        }
    }

    /// How long the body may be silent (also how long the upstream may not read it).
    pub fn idle_timeout(&self) -> Duration {
        self.idle.timeout()
    }

    /// A body that is empty from the start.
    pub fn empty(exchange: Arc<Exchange>) -> Self {
        exchange.request_body_done();
        RequestBody {
            source: Source::Empty,
            received: 0,
            limit: 0,
            idle: IdleTimer::new(Duration::MAX),
            exchange,
        }
    }

    fn fail(&self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.exchange.request_body_done();
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Source::Unsent(unsent) = &this.source {
            this.source = match unsent.take() {
                Some(inner) => Source::Streaming(inner),
                None => {
                    // Another attempt's connection took it: this attempt has nothing to send.
                    let error = std::io::Error::other("the request body went to another attempt");
                    return this.fail(Box::new(error));
                }
            };
        }
        let Source::Streaming(inner) = &mut this.source else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.progress();
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.received += n;
                    this.exchange.add_bytes_in(n);
                    if this.received > this.limit {
                        return this.fail(Box::new(BodyTooLarge { limit: this.limit }));
                    }
                }
                if inner.is_end_stream() {
                    this.exchange.request_body_done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(Box::new(ClientBodyError(e))),
            Poll::Ready(None) => {
                this.exchange.request_body_done();
                Poll::Ready(None)
            }
            Poll::Pending if this.idle.poll_expired(cx) => {
                let timeout = this.idle.timeout();
                this.fail(Box::new(BodyIdleTimeout(timeout)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Unsent(unsent) => unsent.is_end_stream(),
            Source::Streaming(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Empty => SizeHint::with_exact(0),
            Source::Unsent(unsent) => unsent.size_hint(),
            Source::Streaming(inner) => inner.size_hint(),
        }
    }
}

// === impl UnsentBody ===

impl UnsentBody {
    pub fn new(inner: Incoming) -> Self {
        UnsentBody(Arc::new(Mutex::new(Some(inner))))
    }

    /// Whether no attempt has started sending it yet.
    pub fn is_unsent(&self) -> bool {
        self.lock().is_some()
    }

    fn take(&self) -> Option<Incoming> {
        self.lock().take()
    }

    fn is_end_stream(&self) -> bool {
        self.lock().as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.lock()
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl GatewayBody ===

impl GatewayBody {
    pub fn full(bytes: Bytes) -> Self {
        GatewayBody {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
            lease: None,
            exchange: None,
            fill: None,
        }
    }

    /// A body the gateway produces chunk by chunk.
    pub fn generated(stream: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        GatewayBody {
            kind: Kind::Generated(Box::pin(stream)),
            lease: None,
            exchange: None,
            fill: None,
        }
    }

    pub fn upstream(inner: UpstreamBody, idle_timeout: Duration) -> Self {
        GatewayBody {
            kind: Kind::Upstream {
                inner,
                idle: IdleTimer::new(idle_timeout),
                events: None,
            },
            lease: None,
            exchange: None,
            fill: None,
        }
    }

    /// Treats the upstream body as an event stream: heartbeats (if it has them) and counts.
    pub fn with_event_stream(mut self, stream: EventStream) -> Self {
        if let Kind::Upstream { events, .. } = &mut self.kind {
            *events = Some(stream);
        }
        self
    }

    /// Copies the body into the response cache as it goes; stored if it ends whole.
    pub fn with_fill(mut self, fill: Fill) -> Self {
        if self.is_end_stream() {
            // Nothing will be polled (an empty body, a HEAD): it is whole already.
            fill.complete();
        } else {
            self.fill = Some(Box::new(fill));
        }
        self
    }

    /// Holds the endpoint's lease until this body is done.
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Attaches the request's record; it is finished when this body is.
    pub fn with_exchange(mut self, exchange: Arc<Exchange>) -> Self {
        if self.is_end_stream() {
            exchange.mark_completed();
        }
        self.exchange = Some(exchange);
        self
    }

    fn count(&mut self, data: &[u8]) {
        if let Some(exchange) = &self.exchange {
            exchange.add_bytes_out(data.len() as u64);
        }
        if let Some(fill) = &mut self.fill {
            fill.push(data);
        }
    }

    fn finished(&mut self) {
        if let Some(exchange) = &self.exchange {
            exchange.mark_completed();
        }
        if let Some(fill) = self.fill.take() {
            fill.complete();
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Generated(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                inner,
                idle,
                events,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    idle.progress();
                    if let (Some(stream), Some(data)) = (events.as_mut(), frame.data_ref()) {
                        let completed = stream.sent(data);
                        if let Some(lease) = &this.lease {
                            lease.count_sse_down(completed, data.len());
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending if idle.poll_expired(cx) => {
                    let error: BoxError = Box::new(BodyIdleTimeout(idle.timeout()));
                    Poll::Ready(Some(Err(error)))
                }
                Poll::Pending => match events.as_mut().and_then(|e| e.poll_beat(cx)) {
                    // The upstream's silence still counts towards its idle timeout.
                    Some(beat) => Poll::Ready(Some(Ok(Frame::data(beat)))),
                    None => Poll::Pending,
                },
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.count(data);
                }
                if this.is_end_stream() {
                    this.finished();
                }
            }
            Poll::Ready(None) => this.finished(),
            // A failed body is not whole: nothing of it is cached.
            Poll::Ready(Some(Err(_))) => this.fill = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Generated(_) => false,
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Generated(_) => SizeHint::default(),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl fmt::Debug for GatewayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayBody")
    }
}

// === errors ===

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body exceeds the limit of {} bytes", self.limit)
    }
}

impl StdError for BodyTooLarge {}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading the client's request body failed: {}", self.0)
    }
}

impl StdError for ClientBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

impl fmt::Display for BodyIdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body idle for {:?}", self.0)
    }
}

impl StdError for BodyIdleTimeout {}

/// True when `error` (or anything in its source chain) is a `T`: how the proxy tells a
/// failure of the client's body from a failure of the upstream.
pub fn caused_by<T: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<T>() {
            return true;
        }
        current = e.source();
    }
    false
}
