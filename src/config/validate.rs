//! `RawConfig` + `Env` → `Config`. Each value is taken from the highest-precedence source that
//! has it (environment over file over default) and checked; an error names that source (the
//! env var, or the TOML path), and checking carries on so every problem is reported at once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{RawConfig, RawTls};
use super::units::{parse_bool, parse_millis, parse_size, RawDuration, RawSize};
use super::values::*;
use super::*;

mod access;
mod cors;
mod limits;
mod pools;
mod routes;
mod services;

use routes::{check_duplicate_routes, route};
use services::services;

/// Collects errors while validation carries on.
#[derive(Default)]
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(path, message)).ok()
    }

    /// The env var if set, else the file value, else the default; a bad value is reported under
    /// the name it was given by, and the default stands in so checking can continue.
    // Each argument is one half of a (source, parser) pair; grouping them would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn layered<T, F>(
        &mut self,
        env: &Env,
        var: &str,
        parse_env: impl Fn(&str) -> Result<T, String>,
        file_path: &str,
        file: Option<F>,
        parse_file: impl Fn(F) -> Result<T, String>,
        default: T,
    ) -> T {
        if let Some(text) = env.get(var) {
            return self.check(var, parse_env(text)).unwrap_or(default);
        }
        match file {
            Some(value) => self.check(file_path, parse_file(value)).unwrap_or(default),
            None => default,
        }
    }
}

pub(super) fn validate(raw: RawConfig, env: &Env) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::default();

    let server = server(&mut errors, &raw, env);
    let tls = raw.tls.as_ref().and_then(|tls| load_tls(&mut errors, tls));
    let log = LogConfig {
        level: errors.layered(
            env,
            "LOG_LEVEL",
            parse_log_level,
            "log.level",
            raw.log.level.as_deref(),
            parse_log_level,
            LogLevel::Info,
        ),
        access_log: raw.log.access_log.unwrap_or(true),
    };
    let auth = access::auth(&mut errors, &raw, env, server.env);
    let rate_limit = limits::rate_limit(&mut errors, &raw, env);
    let cache = CacheConfig {
        enabled: errors.layered(
            env,
            "CACHE_ENABLED",
            parse_bool,
            "cache.enabled",
            raw.cache.enabled,
            Ok,
            false,
        ),
        default_ttl: errors.layered(
            env,
            "CACHE_DEFAULT_TTL_MS",
            parse_millis,
            "cache.default_ttl",
            raw.cache.default_ttl.as_ref(),
            RawDuration::parse,
            Duration::from_secs(5),
        ),
        max_body_bytes: errors.layered(
            env,
            "CACHE_MAX_BODY_BYTES",
            parse_size,
            "cache.max_body_bytes",
            raw.cache.max_body_bytes.as_ref(),
            RawSize::parse,
            262_144,
        ),
        capacity: raw
            .cache
            .capacity
            .as_ref()
            .and_then(|c| errors.check("cache.capacity", c.parse()))
            .unwrap_or(64 * 1024 * 1024),
        statuses: match &raw.cache.statuses {
            None => vec![200],
            Some(statuses) => {
                for status in statuses {
                    if !CACHEABLE_STATUSES.contains(status) {
                        errors.push(
                            "cache.statuses",
                            format!(
                                "{status} cannot be cached by this gateway (allowed: {})",
                                CACHEABLE_STATUSES.map(|s| s.to_string()).join(", ")
                            ),
                        );
                    }
                }
                statuses.clone()
            }
        },
    };
    if cache.capacity < cache.max_body_bytes {
        errors.push(
            "cache.capacity",
            format!(
                "must be at least cache.max_body_bytes ({} bytes), got {}",
                cache.max_body_bytes, cache.capacity
            ),
        );
    }
    let websocket = WebSocketConfig {
        max_buffered_bytes: errors.layered(
            env,
            "WS_MAX_BUFFERED_BYTES",
            parse_size,
            "websocket.max_buffered_bytes",
            raw.websocket.max_buffered_bytes.as_ref(),
            RawSize::parse,
            2_000_000,
        ),
        ping_interval: errors.layered(
            env,
            "WS_PING_INTERVAL_MS",
            |text| parse_millis(text).and_then(ping_interval),
            "websocket.ping_interval",
            raw.websocket.ping_interval.as_ref(),
            |d| d.parse().and_then(ping_interval),
            Duration::from_secs(30),
        ),
        max_message_size: raw
            .websocket
            .max_message_size
            .as_ref()
            .and_then(|s| {
                errors.check(
                    "websocket.max_message_size",
                    s.parse().and_then(|n| match n {
                        0 => Err("must be above 0".to_owned()),
                        n if n > 1 << 30 => Err("must be at most 1GiB".to_owned()),
                        n => Ok(n),
                    }),
                )
            })
            .unwrap_or(1 << 20),
        stall_timeout: raw
            .websocket
            .stall_timeout
            .as_ref()
            .and_then(|d| {
                errors.check(
                    "websocket.stall_timeout",
                    d.parse().and_then(nonzero_duration),
                )
            })
            .unwrap_or(Duration::from_secs(30)),
        token_cookie: raw
            .websocket
            .token_cookie
            .as_deref()
            .and_then(|name| errors.check("websocket.token_cookie", parse_cookie_name(name))),
    };
    let sse = SseConfig {
        heartbeat: raw
            .sse
            .heartbeat
            .as_ref()
            .and_then(|d| errors.check("sse.heartbeat", d.parse().and_then(nonzero_duration))),
    };
    // 0 turns a check off, as in the seeds' under-pressure.
    let pressure = PressureConfig {
        max_event_loop_delay: Some(errors.layered(
            env,
            "UNDER_PRESSURE_MAX_EVENT_LOOP_DELAY_MS",
            parse_millis,
            "pressure.max_event_loop_delay",
            raw.pressure.max_event_loop_delay.as_ref(),
            RawDuration::parse,
            Duration::from_secs(1),
        ))
        .filter(|d| !d.is_zero()),
        max_rss: errors
            .layered(
                env,
                "UNDER_PRESSURE_MAX_RSS_BYTES",
                |t| parse_size(t).map(Some),
                "pressure.max_rss",
                raw.pressure.max_rss.as_ref(),
                |s| s.parse().map(Some),
                None,
            )
            .filter(|&bytes| bytes > 0),
        max_in_flight: match raw.pressure.max_in_flight {
            Some(0) => {
                errors.push("pressure.max_in_flight", "must be at least 1");
                None
            }
            other => other,
        },
    };
    let metrics = MetricsConfig {
        enabled: raw.metrics.enabled.unwrap_or(true),
    };

    let response_timeout_default = match env.get("HTTP_PROXY_TIMEOUT_MS") {
        Some(text) => errors
            .check(
                "HTTP_PROXY_TIMEOUT_MS",
                parse_millis(text).and_then(nonzero_duration),
            )
            .unwrap_or(Duration::from_secs(30)),
        None => Duration::from_secs(30),
    };
    let breaker_defaults = pools::breaker(
        &mut errors,
        "breaker",
        &BreakerConfig::default(),
        &raw.breaker,
    );
    let services = services(
        &mut errors,
        &raw,
        env,
        response_timeout_default,
        &breaker_defaults,
    );
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter(|(_, route)| {
            // A route to a service whose table was unreadable adds no second error.
            let service = route.as_ref().and_then(|r| r.service.as_ref());
            !service.is_some_and(|s| raw.unreadable_services.contains(s))
        })
        .filter_map(|(i, raw_route)| {
            let route = route(&mut errors, i, raw_route.as_ref()?, &services, &rate_limit)?;
            access::check_route_verifiable(&mut errors, i, &route.access, &auth);
            limits::check_identity_key(&mut errors, i, &route, &rate_limit, &auth);
            Some(route)
        })
        .collect();
    check_duplicate_routes(&mut errors, &raw.routes);

    if errors.0.is_empty() {
        Ok(Config {
            server,
            tls,
            log,
            auth,
            rate_limit,
            cache,
            websocket,
            sse,
            pressure,
            metrics,
            services,
            routes,
        })
    } else {
        Err(ConfigErrors(errors.0))
    }
}

/// Pings need a period, and one below 100 ms would declare peers silent between two packets.
fn ping_interval(interval: Duration) -> Result<Duration, String> {
    if interval < Duration::from_millis(100) {
        return Err(format!(
            "must be at least 100ms, got {}",
            humantime::format_duration(interval)
        ));
    }
    Ok(interval)
}

fn server(errors: &mut Errors, raw: &RawConfig, env: &Env) -> ServerConfig {
    let s = &raw.server;
    let default_listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    let file_listen = s
        .listen
        .as_deref()
        .and_then(|text| errors.check("server.listen", parse_socket_addr(text)))
        .unwrap_or(default_listen);
    let host = match env.get("HOST") {
        Some(text) => errors
            .check("HOST", parse_host(text))
            .unwrap_or(file_listen.ip()),
        None => file_listen.ip(),
    };
    let port = match env.get("PORT") {
        Some(text) => errors
            .check(
                "PORT",
                text.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("expected a port number 0-65535, got {text:?}")),
            )
            .unwrap_or(file_listen.port()),
        None => file_listen.port(),
    };
    let admin_listen = match (env.get("SLUICE_ADMIN_LISTEN"), s.admin_listen.as_deref()) {
        (Some(text), _) => errors.check("SLUICE_ADMIN_LISTEN", parse_socket_addr(text)),
        (None, Some(text)) => errors.check("server.admin_listen", parse_socket_addr(text)),
        (None, None) => None,
    };
    let node_env = env.get("NODE_ENV").map(|v| ("NODE_ENV", v));
    let sluice_env = env.get("SLUICE_ENV").map(|v| ("SLUICE_ENV", v));
    let environment = match sluice_env.or(node_env) {
        Some((var, text)) => errors.check(var, parse_environment(text)),
        None => s
            .env
            .as_deref()
            .and_then(|text| errors.check("server.env", parse_environment(text))),
    }
    .unwrap_or(Environment::Development);
    let trusted_proxies = match env.get("SLUICE_TRUSTED_PROXIES") {
        Some(text) => {
            let items: Vec<&str> = text.split(',').map(str::trim).collect();
            parse_cidrs(errors, "SLUICE_TRUSTED_PROXIES", &items)
        }
        None => {
            let items: Vec<&str> = s
                .trusted_proxies
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            parse_cidrs(errors, "server.trusted_proxies", &items)
        }
    };
    let size = |errors: &mut Errors, key: &str, value: &Option<RawSize>, default: u64| {
        value
            .as_ref()
            .and_then(|v| errors.check(&format!("server.{key}"), v.parse()))
            .unwrap_or(default)
    };
    let duration = |errors: &mut Errors, key: &str, value: &Option<RawDuration>, default| {
        value
            .as_ref()
            .and_then(|v| {
                errors.check(
                    &format!("server.{key}"),
                    v.parse().and_then(nonzero_duration),
                )
            })
            .unwrap_or(default)
    };
    let max_header_bytes = size(errors, "max_header_bytes", &s.max_header_bytes, 16 * 1024);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        errors.push(
            "server.max_header_bytes",
            format!("must be between 1KiB and 1MiB, got {max_header_bytes} bytes"),
        );
    }
    let max_connections = s.max_connections.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max_connections) {
        errors.push(
            "server.max_connections",
            format!("must be between 1 and 1000000, got {max_connections}"),
        );
    }
    if let Some(threads) = s.worker_threads {
        if !(1..=1024).contains(&threads) {
            errors.push(
                "server.worker_threads",
                format!("must be between 1 and 1024, got {threads}"),
            );
        }
    }
    let listen = SocketAddr::new(host, port);
    if let Some(admin) = admin_listen.filter(|admin| same_socket(*admin, listen)) {
        let key = if env.get("SLUICE_ADMIN_LISTEN").is_some() {
            "SLUICE_ADMIN_LISTEN"
        } else {
            "server.admin_listen"
        };
        errors.push(
            key,
            format!("{admin} is the public listener's own port (server.listen {listen}): choose another"),
        );
    }
    ServerConfig {
        listen,
        admin_listen,
        env: environment,
        trusted_proxies,
        max_request_body: size(
            errors,
            "max_request_body",
            &s.max_request_body,
            10 * 1024 * 1024,
        ),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        header_read_timeout: duration(
            errors,
            "header_read_timeout",
            &s.header_read_timeout,
            Duration::from_secs(10),
        ),
        keepalive_idle_timeout: duration(
            errors,
            "keepalive_idle_timeout",
            &s.keepalive_idle_timeout,
            Duration::from_secs(60),
        ),
        shutdown_grace: s
            .shutdown_grace
            .as_ref()
            .and_then(|v| errors.check("server.shutdown_grace", v.parse()))
            .unwrap_or(Duration::from_secs(30)),
        max_connections,
        worker_threads: s.worker_threads,
    }
}

fn load_tls(errors: &mut Errors, raw: &RawTls) -> Option<TlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Option<Vec<CertificateDer<'static>>> = errors.check(
        "tls.cert",
        CertificateDer::pem_file_iter(&raw.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot load certificate chain from {:?}: {e}", raw.cert))
            .and_then(|certs| {
                if certs.is_empty() {
                    Err(format!("no certificate found in {:?}", raw.cert))
                } else {
                    Ok(certs)
                }
            }),
    );
    let key = errors.check(
        "tls.key",
        PrivateKeyDer::from_pem_file(&raw.key)
            .map_err(|e| format!("cannot load private key from {:?}: {e}", raw.key)),
    );
    let (certs, key) = (certs?, key?);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_config = errors.check(
        "tls",
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| format!("certificate and key do not form a usable pair: {e}")),
    )?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(TlsConfig {
        cert: PathBuf::from(&raw.cert),
        key: PathBuf::from(&raw.key),
        server_config: Arc::new(server_config),
    })
}

pub(super) fn parse_cidrs(errors: &mut Errors, path: &str, items: &[&str]) -> Vec<IpNet> {
    items
        .iter()
        .filter(|item| !item.is_empty())
        .enumerate()
        .filter_map(|(i, item)| {
            let parsed = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("expected an address or CIDR like 10.0.0.0/8, got {item:?}"));
            errors.check(&format!("{path}[{i}]"), parsed)
        })
        .collect()
}
