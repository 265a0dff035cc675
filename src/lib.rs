//! sluice: a real-time API gateway.
//!
//! One request's life:
//!
//! ```text
//! client ─► server (accept, TLS, h1/h2, limits) ─► proxy::handle
//!   request id, trace ─► ops endpoint? ─► framing ─► normalise path ─► route
//!   ─► overload shedding ─► IP lists, method ─► auth ─► rate limit ─► body limit
//!   ─► upstream headers ─► cache lookup (a hit answers here) ─► pick endpoint
//!   ─► forward (pooled client, timeouts) ─► response headers ─► stream body back
//!   (copied into the cache on a storable miss) ─► access log line and request figures
//!   when the body ends
//! ```
//!
//! Configuration is validated once ([`config`]) into an immutable [`runtime::Runtime`]
//! snapshot that every request reads through one atomic load. [`Gateway`] binds the listeners
//! (so callers, tests included, can learn the ports) and [`Gateway::serve`] runs until the
//! shutdown future resolves, then drains in-flight requests for `shutdown_grace`.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod cors;
pub mod demo;
pub mod error;
pub mod observe;
pub mod pressure;
pub mod proxy;
pub mod ratelimit;
pub mod realtime;
pub mod router;
pub mod runtime;
pub mod server;
pub mod token;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::Config;
use runtime::{Runtime, SharedRuntime};
use server::Role;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// A gateway with its listeners bound, ready to serve.
pub struct Gateway {
    config: Arc<Config>,
    runtime: SharedRuntime,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
}

impl Gateway {
    /// Builds the runtime and binds the listeners (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Gateway, StartError> {
        let config = Arc::new(config);
        let runtime = Runtime::build(config.clone())
            .map_err(StartError::Runtime)?
            .shared();
        let listener = bind(config.server.listen).await?;
        let admin_listener = match config.server.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Gateway {
            config,
            runtime,
            listener,
            admin_listener,
        })
    }

    /// The public listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    /// The admin listener's address, when `admin_listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains connections for `shutdown_grace`.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let token = CancellationToken::new();
        for service in self.runtime.load().services.values() {
            upstream::health::spawn(service.clone(), token.clone());
        }
        self.runtime.load().auth.spawn_refreshers(&token);
        self.runtime
            .load()
            .pressure
            .clone()
            .spawn_probe(token.clone());
        let tls = self.config.tls.as_ref().map(|t| t.server_config.clone());
        let public = server::serve(
            self.listener,
            Role::Public,
            self.runtime.clone(),
            &self.config.server,
            tls.clone(),
            token.clone(),
        );
        let admin = async {
            if let Some(listener) = self.admin_listener {
                server::serve(
                    listener,
                    Role::Admin,
                    self.runtime.clone(),
                    &self.config.server,
                    tls,
                    token.clone(),
                )
                .await;
            }
        };
        let signal = async {
            shutdown.await;
            tracing::info!("shutting down: no new connections, draining in-flight requests");
            token.cancel();
        };
        tokio::join!(public, admin, signal);
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Runs the gateway for `config` until SIGINT/SIGTERM: builds the Tokio runtime (with
/// `worker_threads`), installs logging, binds, serves, drains. Used by `sluice` and
/// `sluice demo`; the `Err` is one line for stderr.
pub fn run(config: Config) -> Result<(), String> {
    run_with(config, |_| Ok(()))
}

/// Like [`run`], with `before_serve` called inside the runtime once the listeners are bound
/// (the demo starts its upstreams and prints its banner there).
pub fn run_with(
    config: Config,
    before_serve: impl FnOnce(&Gateway) -> Result<(), String>,
) -> Result<(), String> {
    // One worker means one thread: the current-thread scheduler then does the same work
    // without the cross-thread queues and wake-ups of the multi-thread one.
    let mut builder = match config.server.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    // The log guard is declared first so it is dropped last, after the runtime: lines logged
    // by connections that end during the runtime's shutdown are still flushed.
    let _log_guard = observe::init_logging(config.log.level)?;
    let tokio = builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(async move {
        let gateway = Gateway::bind(config).await.map_err(|e| e.to_string())?;
        before_serve(&gateway)?;
        tracing::info!(
            listen = %gateway.local_addr(),
            admin = gateway.admin_addr().map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            "sluice is listening"
        );
        gateway.serve(server::shutdown_signal()).await;
        tracing::info!("sluice stopped");
        Ok(())
    })
}
