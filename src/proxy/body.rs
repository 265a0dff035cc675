//! Body wrappers for the proxy path. Nothing here buffers: each frame is passed on as it
//! arrives, and counted on the way.
//!
//! - [`RequestBody`] carries the client's body to the upstream and enforces
//!   `max_request_body` while streaming (a chunked upload is cut at the limit and answered 413).
//! - [`GatewayBody`] is every response body sluice sends: a small fixed body it made itself,
//!   or the upstream's stream with an idle timeout (a stream that goes silent longer than
//!   `idle_timeout` is cut; one that keeps flowing is never cut, however long it runs).
//!
//! Both hold the request's [`Exchange`], so the access log line is written when the last of
//! them is done.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::observe::Exchange;

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

/// An upstream response body was silent for longer than its idle timeout.
#[derive(Debug)]
pub struct BodyIdleTimeout(pub Duration);

/// The client's body on its way upstream.
pub struct RequestBody {
    /// `None` for a request sent again without a body (see the proxy's replay).
    inner: Option<Incoming>,
    received: u64,
    limit: u64,
    exchange: Arc<Exchange>,
}

/// Every response body sluice sends.
pub struct GatewayBody {
    kind: Kind,
    exchange: Option<Arc<Exchange>>,
}

enum Kind {
    Full(Option<Bytes>),
    Upstream {
        inner: Incoming,
        idle_timeout: Duration,
        /// Created the first time the stream is pending; reset when frames flowed since.
        idle: Option<Pin<Box<Sleep>>>,
        progressed: bool,
    },
}

// === impl RequestBody ===

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64, exchange: Arc<Exchange>) -> Self {
        RequestBody {
            inner: Some(inner),
            received: 0,
            limit,
            exchange,
        }
    }

    /// A body that is empty from the start.
    pub fn empty(exchange: Arc<Exchange>) -> Self {
        RequestBody {
            inner: None,
            received: 0,
            limit: 0,
            exchange,
        }
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.received += n;
                    this.exchange.add_bytes_in(n);
                    if this.received > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

// === impl GatewayBody ===

impl GatewayBody {
    pub fn full(bytes: Bytes) -> Self {
        GatewayBody {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
            exchange: None,
        }
    }

    pub fn empty() -> Self {
        GatewayBody {
            kind: Kind::Full(None),
            exchange: None,
        }
    }

    pub fn upstream(inner: Incoming, idle_timeout: Duration) -> Self {
        GatewayBody {
            kind: Kind::Upstream {
                inner,
                idle_timeout,
                idle: None,
                progressed: false,
            },
            exchange: None,
        }
    }

    /// Attaches the request's record; it is finished when this body is.
    pub fn with_exchange(mut self, exchange: Arc<Exchange>) -> Self {
        if self.is_end_stream() {
            exchange.mark_completed();
        }
        self.exchange = Some(exchange);
        self
    }

    fn count(&self, n: usize) {
        if let Some(exchange) = &self.exchange {
            exchange.add_bytes_out(n as u64);
        }
    }

    fn finished(&self) {
        if let Some(exchange) = &self.exchange {
            exchange.mark_completed();
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
            Kind::Upstream {
                inner,
                idle_timeout,
                idle,
                progressed,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    *progressed = true;
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BoxError::from(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    let deadline = Instant::now() + *idle_timeout;
                    let sleep =
                        idle.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if std::mem::take(progressed) {
                        sleep.as_mut().reset(deadline);
                    }
                    match sleep.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(
                            *idle_timeout,
                        ))
                            as BoxError))),
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.count(data.len());
                }
                if this.is_end_stream() {
                    this.finished();
                }
            }
            Poll::Ready(None) => this.finished(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
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
        write!(f, "upstream body idle for {:?}", self.0)
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
