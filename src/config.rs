//! Configuration: what the operator wrote, checked once, turned into values the gateway can
//! use without re-parsing.
//!
//! ```text
//!  environment (+ .env) ─┐
//!                        ├─► raw (serde mirror, every field optional) ─► validate ─► Config
//!  TOML file (optional) ─┘        unknown keys refused                   every error collected
//! ```
//!
//! Precedence is CLI flag > environment > file > built-in default. Validation never stops at
//! the first problem: it collects every error with the env var name or TOML path it came from,
//! so `sluice check` can list them all. Nothing here panics; nothing here opens a socket.

mod access;
mod dotenv;
mod env;
mod limits;
pub mod raw;
pub mod units;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use regex::Regex;

pub use access::*;
pub use env::{Env, KNOWN_VARS};
pub use limits::*;

/// The validated configuration. Built by [`Config::load`] or [`Config::from_sources`].
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: Option<TlsConfig>,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub cache: CacheConfig,
    pub websocket: WebSocketConfig,
    pub sse: SseConfig,
    pub pressure: PressureConfig,
    pub metrics: MetricsConfig,
    /// Services by name, sorted (so startup output and `/readyz` are stable).
    pub services: BTreeMap<String, ServiceConfig>,
    /// Config routes in file order.
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `HOST`/`PORT` or `server.listen`. Default is `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Ops endpoints move here when set. Default is none (served on `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// `NODE_ENV`. Default is development.
    pub env: Environment,
    /// Peers whose `X-Forwarded-For` is believed. Default is none.
    pub trusted_proxies: Vec<IpNet>,
    /// Larger request bodies get 413. Default is 10 MiB.
    pub max_request_body: u64,
    /// Request line plus headers beyond this get 431. Default is 16 KiB.
    pub max_header_bytes: usize,
    /// Time a client has to send a request's headers (slowloris guard). Default is 10 seconds.
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this. Default is 60 seconds.
    pub keepalive_idle_timeout: Duration,
    /// In-flight requests get this long to finish on shutdown. Default is 30 seconds.
    pub shutdown_grace: Duration,
    /// Connections beyond this wait in the kernel's accept queue. Default is 10,000.
    pub max_connections: usize,
    /// Tokio worker threads. Default is one per core.
    pub worker_threads: Option<usize>,
}

#[derive(Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Built at validation time, so a bad certificate is a config error, not a runtime one.
    pub server_config: Arc<rustls::ServerConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
    Silent,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `LOG_LEVEL`. Default is info.
    pub level: LogLevel,
    /// One JSON line per request. Default is on.
    pub access_log: bool,
}

/// `[cache]`: the response cache ([`crate::cache`]).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `CACHE_ENABLED`: every proxied route caches unless it says `cache = false`. Default is
    /// false (then only routes with their own `cache` do).
    pub enabled: bool,
    /// `CACHE_DEFAULT_TTL_MS`: the longest a response is kept. Default is 5 seconds.
    pub default_ttl: Duration,
    /// `CACHE_MAX_BODY_BYTES`. Default is 262,144 bytes.
    pub max_body_bytes: u64,
    /// Memory for entries, bodies and headers. Default is 64 MiB.
    pub capacity: u64,
    /// Statuses that may be stored. Default is 200 only.
    pub statuses: Vec<u16>,
}

/// Statuses the cache may store when `[cache] statuses` lists them: those RFC 9110 §15.1 calls
/// heuristically cacheable, but 206 (the cache does not handle ranges).
pub const CACHEABLE_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// A route's `cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteCache {
    /// Not said: cached when `[cache] enabled`.
    #[default]
    Default,
    /// `cache = false`.
    Off,
    /// `cache = true` or `cache = { … }`.
    On {
        /// Caps how long a response is kept; `[cache] default_ttl` when unset.
        ttl: Option<Duration>,
        /// Requests with `Authorization` or `Cookie` may be answered from (and fill) the
        /// cache: for content that is the same for every caller.
        allow_credentials: bool,
    },
}

/// `[websocket]`: the bridge between a client's WebSocket and its upstream's.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// `WS_MAX_BUFFERED_BYTES`: flow control. While this many bytes wait for a peer, nothing
    /// more is read from the other side; if the peer then takes nothing for `stall_timeout`,
    /// both get 1013.
    /// Default is 2,000,000 bytes.
    pub max_buffered_bytes: u64,
    /// `WS_PING_INTERVAL_MS`: pings to both peers this often; a peer silent for two
    /// intervals is closed. Default is 30 seconds.
    pub ping_interval: Duration,
    /// Larger messages (and frames) are refused with close code 1009. Default is 1 MiB.
    /// Frames are relayed as they arrive, so this bounds what a peer may send, not a buffer.
    pub max_message_size: u64,
    /// How long a peer may keep refusing data (backpressure) before the bridge gives up with
    /// close code 1013. Default is 30 seconds.
    pub stall_timeout: Duration,
    /// A cookie that may carry the bearer token on upgrade requests (browsers cannot set
    /// `Authorization` on a WebSocket). Default is none; the `access_token` query parameter
    /// is always accepted.
    pub token_cookie: Option<String>,
}

/// `[sse]`: how Server-Sent Events responses are carried.
#[derive(Debug, Clone, Default)]
pub struct SseConfig {
    /// Send a `:` comment line to the client after this long without data, so proxies and
    /// load balancers in between keep the stream open. Default is none (the stream is passed
    /// on byte for byte). A route's `heartbeat` overrides it.
    pub heartbeat: Option<Duration>,
}

/// `[pressure]`: overload shedding ([`crate::pressure`]).
#[derive(Debug, Clone)]
pub struct PressureConfig {
    /// `UNDER_PRESSURE_MAX_EVENT_LOOP_DELAY_MS`. Default is 1 second; 0 turns it off.
    pub max_event_loop_delay: Option<Duration>,
    /// `UNDER_PRESSURE_MAX_RSS_BYTES`. Default is off (also when 0).
    pub max_rss: Option<u64>,
    /// Proxied requests in flight at once. Default is off.
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Request figures for `/metrics`, `/admin/stats` and the dashboard. Default is on.
    pub enabled: bool,
}

/// The most upstream endpoints one service may list: the pool's candidate sets are
/// fixed-size bitsets of this many bits.
pub const MAX_UPSTREAMS: usize = 256;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub upstreams: Vec<UpstreamUrl>,
    /// TCP (and TLS) connect. Default is 5 seconds.
    pub connect_timeout: Duration,
    /// Until the upstream's response headers, connect included (`HTTP_PROXY_TIMEOUT_MS`).
    /// Default is 30 seconds.
    pub response_timeout: Duration,
    /// Longest silence inside a response body before it is cut. Default is 60 seconds.
    pub idle_timeout: Duration,
    /// Forward the client's `Host` instead of the upstream authority. Default is false.
    pub preserve_host: bool,
    /// How an endpoint is chosen. Default is `p2c_ewma`.
    pub balancer: BalancerKind,
    /// `[breaker]`, overridden key by key by `services.<name>.breaker`.
    pub breaker: BreakerConfig,
    /// Active health checks. Default is none (only the breaker judges endpoints).
    pub health_check: Option<HealthCheckConfig>,
    /// Further attempts on other endpoints for a request that never reached one (or, when
    /// idempotent and none of its body was sent yet, was reset before any response).
    /// Default is 2.
    pub max_retries: u32,
    /// Requests one endpoint may have in flight; a full endpoint is skipped. Default is none.
    pub max_in_flight_per_endpoint: Option<u32>,
    /// Serve `/api/<name>/*`, `/sse/<name>/*` and `/ws/<name>`. Default is none: open, unless
    /// a config route to this service carries access rules the service routes would bypass.
    pub service_routes: Option<bool>,
}

/// `balancer = "…"` of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalancerKind {
    /// Power of two choices over peak-EWMA latency × (in-flight + 1) / weight.
    P2cEwma,
    /// Smooth weighted round robin.
    RoundRobin,
    /// The endpoint with the fewest requests in flight per unit of weight.
    LeastRequest,
    /// Uniform over usable endpoints, weighted.
    Random,
    /// Consistent (rendezvous) hashing of `hash_key`: a key keeps its endpoint while that
    /// endpoint is usable.
    Hash(HashKey),
}

/// `hash_key = "ip" | "header:<name>" | "cookie:<name>"`. Default is `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
}

/// Per-endpoint circuit breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker. Default is 5.
    pub consecutive_failures: u32,
    /// Also open when this share (0–1) of the requests in `window` failed. Default is off.
    pub failure_ratio: Option<f64>,
    /// The span `failure_ratio` looks at. Default is 10 seconds.
    pub window: Duration,
    /// Requests in `window` before `failure_ratio` may judge. Default is 20.
    pub min_requests: u32,
    /// How long an open breaker sends no traffic before probing. Default is 15 seconds.
    pub open_for: Duration,
    /// Requests admitted at once while half-open. Default is 1.
    pub half_open_probes: u32,
    /// Upstream statuses that count as failures; only 5xx may be listed. Default is every 5xx.
    pub failure_statuses: FailureStatuses,
}

/// A set of 5xx statuses, one bit per code 500–599.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureStatuses(pub u128);

/// Active health checking of a service's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// Requested with GET on each endpoint (after its base path); 2xx and 3xx are healthy.
    pub path: String,
    /// Default is 5 seconds.
    pub interval: Duration,
    /// Default is 2 seconds (at most the interval).
    pub timeout: Duration,
    /// Passing checks in a row that make an unhealthy endpoint healthy. Default is 2.
    pub healthy_after: u32,
    /// Failing checks in a row that make an endpoint unhealthy. Default is 3.
    pub unhealthy_after: u32,
}

/// An upstream base URL: `http`/`https`, a host, an optional base path (kept when forwarding).
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Without a trailing slash; empty for the root.
    pub base_path: String,
    /// Relative share of traffic. Default is 1.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Prefix,
    Exact,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Normalised: starts with `/`, no trailing slash (except `/` itself).
    pub path: String,
    /// Default is prefix (segment-wise: `/users` matches `/users/7`, not `/usersx`).
    pub match_kind: MatchKind,
    /// Only requests for this host (without port, lowercase). Default is any host.
    pub host: Option<String>,
    pub service: String,
    /// Other methods get 405. Default is any method.
    pub methods: Option<Vec<Method>>,
    /// Remove the route's path before forwarding. Default is false.
    pub strip_prefix: bool,
    /// Applied to the forwarded path (after `strip_prefix`). Default is none.
    pub rewrite: Option<Rewrite>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Overrides the service's `response_timeout`. Default is the service's.
    pub timeout: Option<Duration>,
    /// Overrides the service's `idle_timeout`. Default is the service's.
    pub idle_timeout: Option<Duration>,
    /// Overrides the service's `preserve_host`. Default is the service's.
    pub preserve_host: Option<bool>,
    /// Overrides `[sse] heartbeat` for event streams on this route.
    pub heartbeat: Option<Duration>,
    /// Who may use the route: auth mode, required claims, CORS, IP lists.
    pub access: RouteAccess,
    /// `rate_limit = { … }` (its own limit and key space) or `false`. Default is none: the
    /// `[rate_limit]` limit, shared with every other route that has none of its own.
    pub rate_limit: Option<RouteLimit>,
    pub cache: RouteCache,
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    pub pattern: Regex,
    pub replace: String,
}

/// Header edits applied in order: remove, then set (so `set` wins over a removed name).
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// One configuration problem, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The env var name or TOML path, e.g. `routes[2].service` or `PORT`.
    pub path: String,
    pub message: String,
}

/// Every problem found; never empty.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

// === impl Config ===

impl Config {
    /// Reads the environment (with `.env`) and the optional file, then validates both.
    pub fn load(file: Option<&Path>, env: &Env) -> Result<Config, ConfigErrors> {
        let text = match file {
            None => None,
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(e) => {
                    return Err(ConfigErrors::one(
                        path.display().to_string(),
                        format!("cannot read config file: {e}"),
                    ))
                }
            },
        };
        Config::from_sources(text.as_deref(), env)
    }

    /// Validates TOML text (if any) merged with `env`.
    pub fn from_sources(toml_text: Option<&str>, env: &Env) -> Result<Config, ConfigErrors> {
        let table: toml::Table = match toml_text {
            None => toml::Table::new(),
            Some(text) => toml::from_str(text).map_err(|e| {
                let line = e
                    .span()
                    .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                    .unwrap_or(1);
                ConfigErrors::one(format!("line {line}"), e.message().to_owned())
            })?,
        };
        let (raw, read_errors) = raw::RawConfig::from_table(table);
        let validated = validate::validate(raw, env);
        if read_errors.is_empty() {
            return validated;
        }
        let mut errors: Vec<ConfigError> = read_errors
            .into_iter()
            .map(|(path, message)| ConfigError { path, message })
            .collect();
        if let Err(more) = validated {
            // A key that could not be read reads as unset: "is required" for it says nothing new,
            // nor does "needs at least one" for an array taken out for a bad element.
            let unreadable: Vec<String> = errors
                .iter()
                .flat_map(|e| {
                    let arrays = e
                        .path
                        .match_indices('[')
                        .map(|(at, _)| e.path[..at].to_owned());
                    std::iter::once(e.path.clone()).chain(arrays)
                })
                .collect();
            errors.extend(more.0.into_iter().filter(|e| !unreadable.contains(&e.path)));
        }
        Err(ConfigErrors(errors))
    }
}

/// Whether two listeners would ask for the same socket (the second bind would fail): the
/// same port, and the same address or one of them all addresses. Port 0 is any free port.
pub fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl UpstreamUrl {
    /// The upstream request target: endpoint base + routed path + the raw query, nothing
    /// re-encoded.
    pub fn path_and_query(
        &self,
        forward_path: &str,
        query: Option<&str>,
    ) -> Option<http::uri::PathAndQuery> {
        let mut target = String::with_capacity(
            self.base_path.len() + forward_path.len() + query.map_or(0, |q| q.len() + 1),
        );
        target.push_str(&self.base_path);
        target.push_str(forward_path);
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        http::uri::PathAndQuery::from_maybe_shared(target).ok()
    }

    /// The absolute upstream URI: [`Self::path_and_query`] on this endpoint.
    pub fn target(&self, forward_path: &str, query: Option<&str>) -> Option<http::Uri> {
        self.uri(self.path_and_query(forward_path, query)?)
    }

    /// The absolute upstream URI for `path_and_query`.
    pub fn uri(&self, path_and_query: http::uri::PathAndQuery) -> Option<http::Uri> {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .ok()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl LogLevel {
    /// The `tracing` filter directive for this level (`fatal` maps to error: tracing has no
    /// fatal; `silent` turns everything off).
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Fatal | LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
            LogLevel::Silent => "off",
        }
    }

    /// Whether info lines (the access log's) are written at this level.
    pub fn shows_info(self) -> bool {
        matches!(self, LogLevel::Info | LogLevel::Debug | LogLevel::Trace)
    }
}

// === impl Environment ===

impl Environment {
    /// As `NODE_ENV` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Test => "test",
            Environment::Production => "production",
        }
    }
}

// === impl BreakerConfig ===

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: None,
            window: Duration::from_secs(10),
            min_requests: 20,
            open_for: Duration::from_secs(15),
            half_open_probes: 1,
            failure_statuses: FailureStatuses::ALL_5XX,
        }
    }
}

impl FailureStatuses {
    pub const ALL_5XX: FailureStatuses = FailureStatuses((1u128 << 100) - 1);

    /// Whether an upstream answering `status` failed. Anything below 500 never did: a client
    /// asking for missing paths must not eject a healthy upstream.
    pub fn contains(self, status: u16) -> bool {
        (500..600).contains(&status) && self.0 & (1u128 << (status - 500)) != 0
    }
}

// === impl ConfigErrors ===

impl ConfigErrors {
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests;
