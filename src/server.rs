//! Listeners and connections: accept (bounded by `max_connections`), TLS with ALPN when
//! configured, HTTP/1.1 and HTTP/2 on one port (hyper-util's auto builder: prior-knowledge
//! h2c is detected by its preface), and the limits that protect the gateway from its clients.
//!
//! Connection lifecycle:
//! 1. a permit is taken before `accept`, so past `max_connections` clients wait in the kernel's
//!    backlog instead of costing memory;
//! 2. the TLS handshake (if any) must finish within `header_read_timeout`;
//! 3. hyper reads each request head within `header_read_timeout` (slowloris guard) and refuses
//!    heads larger than its buffer; the proxy enforces `max_header_bytes` with a JSON 431;
//! 4. a connection with no request in flight for `keepalive_idle_timeout` is closed gracefully;
//! 5. on shutdown, accepting stops, every connection is told to finish its in-flight requests
//!    and close, and the server waits up to `shutdown_grace` for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::proxy::{self, ConnInfo};
use crate::runtime::SharedRuntime;

/// Which requests a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Proxied routes (and the ops endpoints unless `admin_listen` is set).
    Public,
    /// Only the ops endpoints.
    Admin,
}

/// Per-connection activity, for the keep-alive idle timeout.
#[derive(Debug)]
pub struct ConnActivity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request finished (or the connection opened).
    last_idle_ms: AtomicU64,
}

/// Everything a listener's connections share.
struct Shared {
    runtime: SharedRuntime,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    role: Role,
}

// === impl ConnActivity ===

impl ConnActivity {
    fn new() -> Self {
        ConnActivity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_idle_ms: AtomicU64::new(0),
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        let ms = self.opened.elapsed().as_millis();
        self.last_idle_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// When the connection will have been idle for `timeout`, if nothing is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let idle_since =
            self.opened + Duration::from_millis(self.last_idle_ms.load(Ordering::Relaxed));
        Some(idle_since + timeout)
    }
}

// === serving ===

/// Accepts connections on `listener` until `shutdown` is cancelled, then drains them for up to
/// `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    role: Role,
    runtime: SharedRuntime,
    config: &ServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        runtime,
        builder: http_builder(config),
        tls: tls.map(TlsAcceptor::from),
        handshake_timeout: config.header_read_timeout,
        idle_timeout: config.keepalive_idle_timeout,
        role,
    });
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            serve_connection(stream, peer, shared, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "shutdown grace period over; closing remaining connections"
        );
    }
}

fn http_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper answers heads larger than its buffer with a bare 431; leave room so that the
    // proxy's own check (with the JSON body) is what clients normally meet.
    let buffer = (config.max_header_bytes * 2).max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(buffer)
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    match &shared.tls {
        None => serve_io(stream, peer, local_port, false, &shared, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_io(tls, peer, local_port, true, &shared, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<S>(
    io: S,
    peer: SocketAddr,
    local_port: u16,
    tls: bool,
    shared: &Shared,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(ConnActivity::new());
    let info = Arc::new(ConnInfo::new(peer, local_port, tls, activity.clone()));
    let runtime = shared.runtime.clone();
    let role = shared.role;
    let service = service_fn(move |req| {
        let runtime = runtime.load_full();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy::handle(req, &runtime, &info, role).await) }
    });
    let conn = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_check = activity
            .idle_deadline(shared.idle_timeout)
            .unwrap_or_else(|| Instant::now() + shared.idle_timeout);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_check), if !closing => {
                let idle = activity
                    .idle_deadline(shared.idle_timeout)
                    .is_some_and(|deadline| deadline <= Instant::now());
                if idle {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
