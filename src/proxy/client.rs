//! The pooled upstream clients. Plain `http` endpoints speak HTTP/1.1 with keep-alive over
//! a pool of their own ([`keepalive`]); `https` endpoints, and health checks, use hyper-util's
//! legacy client over a TCP connector with `TCP_NODELAY` and a connect timeout, wrapped in
//! rustls (HTTP/2 by ALPN). Redirects are never followed: neither client has such a feature,
//! which is what a proxy wants.

pub mod h1;
pub mod keepalive;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{BoxError, RequestBody};

pub type Connector = HttpsConnector<HttpConnector>;
pub type Client<B> = legacy::Client<Connector, B>;
pub type UpstreamClient = Client<RequestBody>;

/// How long an unused pooled connection is kept. Default is 4 seconds: under the shortest
/// common upstream keep-alive timeout (Node.js and Apache close after 5 s, nginx after 75 s),
/// so the pool rarely hands out a connection the upstream is closing. Busy pools never idle.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A client with a connection pool, or (`pooled = false`) one that opens a new connection for
/// every request: the proxy's replay of a request that died on a pooled connection must not
/// land on another one about to die.
pub fn build<B>(connect_timeout: Duration, pooled: bool) -> Result<Client<B>, String>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let https = connector(connect_timeout, true)?;
    let mut builder = legacy::Client::builder(TokioExecutor::new());
    if !pooled {
        builder.pool_max_idle_per_host(0);
    }
    Ok(builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http1_writev(false)
        .build(https))
}

/// TCP with `TCP_NODELAY` and the connect timeout, TLS for `https` upstreams. `http2` offers
/// h2 by ALPN; the WebSocket bridge connects without it (an upgrade is HTTP/1.1).
pub fn connector(connect_timeout: Duration, http2: bool) -> Result<Connector, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| format!("TLS client setup: {e}"))?
        .https_or_http()
        .enable_http1();
    Ok(if http2 {
        https.enable_http2().wrap_connector(http)
    } else {
        https.wrap_connector(http)
    })
}

/// The body of an upstream response, from whichever client read it.
#[derive(Debug)]
pub enum UpstreamBody {
    Hyper(Incoming),
    H1(h1::ResponseBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(BoxError::from))),
            UpstreamBody::H1(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            UpstreamBody::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            UpstreamBody::H1(body) => body.size_hint(),
        }
    }
}
