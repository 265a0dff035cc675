//! Keep-alive HTTP/1.1 connections to one plain-`http` endpoint, on hyper's connection-level
//! client (`hyper::client::conn::http1`).
//!
//! Why not hyper-util's legacy client, which `https` upstreams still use: for every request it
//! looks its pool up by scheme and authority, races a checkout against a new connection,
//! rewrites the request and spawns a task that waits for the connection to be idle again —
//! together the largest single cost of a proxied request in `bench/instructions`. Here each
//! endpoint owns its connections, so a checkout is one lock and a pop, and a connection goes
//! back when the response body ends. By then hyper has almost always made it ready for the
//! next request; only when it has not does a small task wait for it ([`PooledConn`]'s drop).
//! The pool also knows whether a connection was reused, which the proxy's replay of a request
//! that died on a stale keep-alive connection needs (`forward`).
//!
//! Idle connections are handed out newest first: the newest is the least likely to be one the
//! upstream is about to close. One idle for [`IDLE_TIMEOUT`] is closed, at checkout or by a
//! sweeper task that runs while any are idle.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::POOL_IDLE_TIMEOUT as IDLE_TIMEOUT;
use crate::proxy::body::{BoxError, RequestBody};

/// The connections to one endpoint.
#[derive(Clone)]
pub struct ConnPool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Host name or IP (without brackets) and port to connect to.
    host: String,
    port: u16,
    /// `Host` for requests that do not bring their own (`preserve_host`).
    host_header: HeaderValue,
    connect_timeout: Duration,
    /// Oldest first; checkouts pop from the back.
    idle: Mutex<VecDeque<IdleConn>>,
    /// Whether a sweeper task is running.
    sweeping: AtomicBool,
}

struct IdleConn {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// A connection lent to one request. Dropping it gives it back: at once when hyper has it
/// ready for another request, or once it is (a task waits, up to [`IDLE_TIMEOUT`]); a
/// connection that closed is let go.
pub struct PooledConn {
    sender: Option<SendRequest<RequestBody>>,
    pool: Arc<Inner>,
}

/// Why a request got no response head.
#[derive(Debug)]
pub struct SendError {
    /// No connection could be made: nothing of the request reached the upstream.
    pub connect: bool,
    /// The request went out on a connection an earlier request had used.
    pub reused: bool,
    /// The connection closed before any of the request was written (hyper gives it back
    /// "canceled"): the upstream cannot have seen it, whatever its method.
    pub unsent: bool,
    pub error: BoxError,
}

/// The connect timeout passed.
#[derive(Debug)]
struct ConnectTimeout(Duration);

// === impl ConnPool ===

impl ConnPool {
    pub fn new(authority: &Authority, connect_timeout: Duration) -> Self {
        let host = authority.host();
        // IPv6 literals keep their brackets in an authority, not in an address.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16();
        // Like a browser: the default port is not written in Host.
        let host_header = match port {
            Some(80) | None => HeaderValue::from_str(authority.host()),
            Some(_) => HeaderValue::from_str(authority.as_str()),
        }
        .unwrap_or(HeaderValue::from_static("localhost"));
        ConnPool {
            inner: Arc::new(Inner {
                host: host.to_owned(),
                port: port.unwrap_or(80),
                host_header,
                connect_timeout,
                idle: Mutex::new(VecDeque::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` (its URI in origin form) on an idle connection when `reuse` allows and
    /// one is ready, else on a new one. Resolves with the response head; the connection is
    /// lent until the response body is done.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice (see `proxy::handle`)"
    )]
    pub fn send(
        &self,
        mut request: Request<RequestBody>,
        reuse: bool,
    ) -> impl Future<Output = Result<(Response<Incoming>, PooledConn), SendError>> + '_ {
        async move {
            let (mut sender, reused) = match reuse.then(|| self.inner.checkout()).flatten() {
                Some(sender) => (sender, true),
                None => match self.inner.connect().await {
                    Ok(sender) => (sender, false),
                    Err(error) => {
                        return Err(SendError {
                            connect: true,
                            reused: false,
                            unsent: true,
                            error,
                        })
                    }
                },
            };
            request
                .headers_mut()
                .entry(http::header::HOST)
                .or_insert_with(|| self.inner.host_header.clone());
            match sender.send_request(request).await {
                Ok(response) => Ok((
                    response,
                    PooledConn {
                        sender: Some(sender),
                        pool: self.inner.clone(),
                    },
                )),
                Err(error) => Err(SendError {
                    connect: false,
                    reused,
                    unsent: error.is_canceled(),
                    error: error.into(),
                }),
            }
        }
    }

    /// A new TCP connection to the endpoint, outside the pool (the WebSocket bridge's).
    pub async fn connect_tcp(&self) -> Result<TcpStream, BoxError> {
        self.inner.connect_tcp().await
    }
}

impl fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnPool")
            .field("host", &self.inner.host)
            .field("port", &self.inner.port)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    /// The newest idle connection that is ready and not expired; older ones it passes are
    /// closed.
    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        while let Some(conn) = idle.pop_back() {
            if conn.sender.is_ready() && now.duration_since(conn.since) < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, sender: SendRequest<RequestBody>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.push_back(IdleConn {
            sender,
            since: Instant::now(),
        });
        drop(idle);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(sweep(Arc::downgrade(self)))),
                Err(_) => self.sweeping.store(false, Ordering::Release),
            }
        }
    }

    /// A new HTTP/1.1 connection.
    async fn connect(&self) -> Result<SendRequest<RequestBody>, BoxError> {
        let stream = self.connect_tcp().await?;
        let (sender, connection) = http1::Builder::new()
            // One flattened write per request head and body chunk: fewer syscalls than
            // writev for the small bodies a gateway mostly carries.
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A TCP connection with `TCP_NODELAY` (also the WebSocket bridge's, which needs the
    /// bare socket). An IP literal needs no lookup; a name is looked up for every new
    /// connection, so a changed DNS record is followed. The addresses are tried in turn, the
    /// connect timeout shared evenly among them (as hyper-util's connector does), so one that
    /// drops connection attempts cannot use it all up.
    async fn connect_tcp(&self) -> Result<TcpStream, BoxError> {
        let addresses: Vec<_> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        let count = u32::try_from(addresses.len()).unwrap_or(u32::MAX).max(1);
        let each = self.connect_timeout / count;
        let mut last_error: Option<BoxError> = None;
        for address in addresses {
            match tokio::time::timeout(each, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Ok(Err(e)) => last_error = Some(e.into()),
                Err(_) => last_error = Some(Box::new(ConnectTimeout(each))),
            }
        }
        Err(last_error.unwrap_or_else(|| format!("{} resolved to no address", self.host).into()))
    }
}

/// Closes connections idle for [`IDLE_TIMEOUT`] while the pool has any; ends when it has none
/// (the next connection given back starts another).
async fn sweep(pool: Weak<Inner>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 4).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let Ok(mut idle) = pool.idle.lock() else {
            return;
        };
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|conn| now.duration_since(conn.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.is_empty() {
            // Under the lock, so a connection given back after this starts a new sweeper.
            pool.sweeping.store(false, Ordering::Release);
            return;
        }
    }
}

// === impl PooledConn ===

impl Drop for PooledConn {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_ready() {
            self.pool.put(sender);
            return;
        }
        if sender.is_closed() {
            return;
        }
        // Still finishing this exchange (the request body going out, the end of the response
        // being read on another thread): give it back once hyper says it is ready.
        let pool = self.pool.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await {
                    pool.put(sender);
                }
            });
        }
    }
}

impl fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PooledConn")
    }
}

// === errors ===

impl fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect timed out after {:?}", self.0)
    }
}

impl std::error::Error for ConnectTimeout {}
