//! Listeners and connections: accept (bounded by `max_connections`), TLS with ALPN when
//! configured, HTTP/1.1 and HTTP/2 on one port (hyper-util's auto builder: prior-knowledge
//! h2c is detected by its preface), and the limits that protect the gateway from its clients.
//!
//! Connection lifecycle:
//! 1. a permit is taken before `accept`, so past `max_connections` clients wait in the kernel's
//!    backlog instead of costing memory;
//! 2. the TLS handshake (if any) must finish within `header_read_timeout`;
//! 3. a request head must arrive within `header_read_timeout` (slowloris guard), and a
//!    connection with no request in flight for `keepalive_idle_timeout` is closed gracefully:
//!    both are kept by the connection's watchdog ([`conn`]); hyper refuses heads larger than
//!    its buffer, and the proxy enforces `max_header_bytes` with a JSON 431;
//! 4. on shutdown, accepting stops, every connection is told to finish its in-flight requests
//!    and close, and the server waits up to `shutdown_grace` for them;
//! 5. a connection that upgrades to a WebSocket leaves hyper but not the server: its bridge
//!    runs on the same task tracker (shutdown waits for it, then stops it) and keeps the
//!    connection's `max_connections` permit and open-connection count until it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod chunked;
mod conn;
mod scan;

use conn::{ActivityIo, Verdict};
pub use conn::{ConnActivity, FeedGuard, InFlight};

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

/// Everything a listener's connections share.
struct Shared {
    runtime: SharedRuntime,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    head_timeout: Duration,
    /// hyper's buffer for a request head: the most a head it accepts can take.
    head_buffer: usize,
    idle_timeout: Duration,
    role: Role,
    /// Cancelled when the shutdown grace period is over: remaining connections are dropped.
    hard_stop: CancellationToken,
    /// Every connection task and WebSocket bridge.
    tracker: TaskTracker,
}

/// What a connection holds while it is open: its `max_connections` permit and its place in
/// the open-connection count. Shared with a WebSocket bridge that outlives the HTTP side.
pub struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    _open: crate::observe::OpenConnection,
}

/// Where a connection's long-lived streams run once they leave hyper (WebSocket bridges).
#[derive(Clone)]
pub struct StreamHost {
    pub tracker: TaskTracker,
    /// Cancelled when the shutdown grace period is over.
    pub stop: CancellationToken,
    /// Cancelled when shutdown begins: streams the gateway makes itself (the dashboard's
    /// live feed) end then, so they never hold up a drain.
    pub draining: CancellationToken,
    pub guard: Arc<ConnGuard>,
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
        head_timeout: config.header_read_timeout,
        head_buffer: head_buffer(config),
        idle_timeout: config.keepalive_idle_timeout,
        role,
        hard_stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
    });
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let tracker = shared.tracker.clone();
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
        let guard = Arc::new(ConnGuard {
            _permit: permit,
            _open: shared.runtime.load().live.connection_opened(),
        });
        tracker.spawn(async move {
            serve_connection(stream, peer, shared, shutdown, guard).await;
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
        shared.hard_stop.cancel();
        // Dropping a connection is immediate; this only lets the tasks observe it.
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
}

/// hyper answers heads larger than its buffer with a bare 431; leave room so that the
/// proxy's own check (with the JSON body) is what clients normally meet.
fn head_buffer(config: &ServerConfig) -> usize {
    (config.max_header_bytes * 2).max(8192)
}

fn http_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let buffer = head_buffer(config);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Off: its timer also runs between keep-alive requests; see `conn` for ours.
        .header_read_timeout(None)
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
    guard: Arc<ConnGuard>,
) {
    let _ = stream.set_nodelay(true);
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let activity = Arc::new(ConnActivity::new());
    let streams = StreamHost {
        tracker: shared.tracker.clone(),
        stop: shared.hard_stop.clone(),
        draining: shutdown.clone(),
        guard,
    };
    let info = |tls| ConnInfo::new(peer, local_port, tls, activity.clone(), streams.clone());
    // ActivityIo wraps the plaintext side (above TLS), where request heads can be seen.
    match &shared.tls {
        None => {
            let io = ActivityIo::new(stream, activity.clone(), shared.head_buffer);
            serve_io(io, info(false), &shared, shutdown).await;
        }
        Some(acceptor) => {
            match tokio::time::timeout(shared.head_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let io = ActivityIo::new(tls, activity.clone(), shared.head_buffer);
                    serve_io(io, info(true), &shared, shutdown).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<S>(io: S, info: ConnInfo, shared: &Shared, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = info.activity.clone();
    let peer = info.peer;
    let info = Arc::new(info);
    let runtime = shared.runtime.clone();
    let role = shared.role;
    let service = service_fn(move |req| {
        let runtime = runtime.load_full();
        let info = info.clone();
        proxy::handle(req, runtime, info, role)
    });
    let conn = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    // Set at shutdown on a connection carrying a live feed: closed then, not drained.
    let mut feed_cutoff: Option<Instant> = None;
    loop {
        if feed_cutoff.is_some_and(|at| Instant::now() >= at) && activity.has_feeds() {
            tracing::debug!(%peer, "closing a connection with a live feed at shutdown");
            return;
        }
        let wake_at =
            match activity.verdict(Instant::now(), shared.head_timeout, shared.idle_timeout) {
                Verdict::Wait(at) => at,
                Verdict::AbortSlowHead => {
                    tracing::debug!(%peer, "request head not received in time; closing");
                    return;
                }
                Verdict::CloseIdle if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    Instant::now() + shared.idle_timeout
                }
                Verdict::CloseIdle => Instant::now() + shared.idle_timeout,
            };
        let wake_at = feed_cutoff.map_or(wake_at, |at| wake_at.min(at));
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
                // A feed that is being read ends by itself at once; give it a moment.
                feed_cutoff = Some(Instant::now() + Duration::from_secs(1));
            }
            // Only cancelled after `shutdown`, which sets `closing` first (or `closing` came
            // from the idle rule): each wake polls one token, not two.
            () = shared.hard_stop.cancelled(), if closing => return,
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
///
/// SIGHUP's default action would end the process at once, cutting every request in flight,
/// and operators send it by habit to reload (`systemctl reload`, `kill -HUP`, nginx's
/// convention). sluice does not reload yet: it says so and goes on serving.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => drop(signal.recv().await),
                None => std::future::pending().await,
            }
        }
        let mut term = signal(SignalKind::terminate()).ok();
        let mut hangup = signal(SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                () = next(&mut term) => return,
                () = next(&mut hangup) => tracing::warn!(
                    "SIGHUP ignored: sluice does not reload its configuration; restart it to apply changes"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
