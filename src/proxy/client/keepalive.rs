//! Keep-alive HTTP/1.1 connections to one plain-`http` endpoint, each request exchanged in
//! its own task ([`h1`]).
//!
//! Why not hyper-util's legacy client, which `https` upstreams still use: for every request it
//! looks its pool up by scheme and authority, races a checkout against a new connection,
//! rewrites the request and spawns a task that waits for the connection to be idle again —
//! together the largest single cost of a proxied request in `bench/instructions`. Here each
//! endpoint owns its connections, so a checkout is one lock and a pop, and a connection goes
//! back when its response body ends. The pool also knows whether a connection was reused,
//! which the proxy's replay of a request that died on a stale keep-alive connection needs
//! (`forward`).
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

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::Body as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1::{self, Recycle};
use super::UpstreamBody;
use super::POOL_IDLE_TIMEOUT as IDLE_TIMEOUT;
use crate::proxy::body::{BoxError, RequestBody};

/// The connections to one endpoint.
#[derive(Clone)]
pub struct ConnPool {
    inner: Arc<Inner>,
}

struct Inner {
    /// This pool, for the sweeper a connection given back may start.
    me: Weak<Inner>,
    /// Host name or IP (without brackets) and port to connect to.
    host: String,
    port: u16,
    /// `Host` for requests that do not bring their own (they do with `preserve_host`).
    host_header: HeaderValue,
    connect_timeout: Duration,
    /// Oldest first; checkouts pop from the back.
    idle: Mutex<VecDeque<IdleConn>>,
    /// Whether a sweeper task is running.
    sweeping: AtomicBool,
}

struct IdleConn {
    conn: Box<h1::Conn>,
    since: Instant,
}

/// Why a request got no response head.
#[derive(Debug)]
pub struct SendError {
    /// No connection could be made: nothing of the request reached the upstream.
    pub connect: bool,
    /// The request went out on a connection an earlier request had used.
    pub reused: bool,
    /// The connection failed before any of the request was written: the upstream cannot
    /// have seen it, whatever its method.
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
            inner: Arc::new_cyclic(|me| Inner {
                me: me.clone(),
                host: host.to_owned(),
                port: port.unwrap_or(80),
                host_header,
                connect_timeout,
                idle: Mutex::new(VecDeque::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends a request (`target` in origin form) on an idle connection when `reuse` allows
    /// and one is usable, else on a new one. Resolves with the response head; the connection
    /// goes with the response body, back to the pool when that ends cleanly.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice (see `proxy::handle`)"
    )]
    pub fn send<'a>(
        &'a self,
        method: &'a Method,
        target: &'a PathAndQuery,
        headers: &'a HeaderMap,
        body: RequestBody,
        reuse: bool,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, SendError>> + 'a {
        async move {
            let (mut conn, reused) = match reuse.then(|| self.inner.checkout()).flatten() {
                Some(conn) => (conn, true),
                None => match self.inner.connect_tcp().await {
                    Ok(stream) => (h1::Conn::new(stream), false),
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
            let body = (!body.is_end_stream()).then_some(body);
            let request = h1::Request {
                method,
                target: target.as_str(),
                headers,
                default_host: &self.inner.host_header,
            };
            match conn.exchange(request, body).await {
                Ok((head, upload)) => {
                    let home: Arc<dyn Recycle> = self.inner.clone();
                    let body = conn.into_body(&head, upload, Some(home));
                    Ok(head.response.map(|()| UpstreamBody::H1(body)))
                }
                Err(failure) => Err(SendError {
                    connect: false,
                    reused,
                    unsent: failure.unsent,
                    error: failure.error,
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
    /// The newest idle connection that is usable and not expired; older ones it passes are
    /// closed.
    fn checkout(&self) -> Option<Box<h1::Conn>> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        while let Some(idle) = idle.pop_back() {
            if now.duration_since(idle.since) < IDLE_TIMEOUT && idle.conn.is_usable() {
                return Some(idle.conn);
            }
        }
        None
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

impl Recycle for Inner {
    fn recycle(&self, conn: Box<h1::Conn>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.push_back(IdleConn {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(sweep(self.me.clone()))),
                Err(_) => self.sweeping.store(false, Ordering::Release),
            }
        }
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

// === errors ===

impl fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect timed out after {:?}", self.0)
    }
}

impl std::error::Error for ConnectTimeout {}
