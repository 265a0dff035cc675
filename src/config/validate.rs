//! `RawConfig` + `Env` → `Config`. Each value is taken from the highest-precedence source that
//! has it (environment over file over default) and checked; an error names that source (the
//! env var, or the TOML path), and checking carries on so every problem is reported at once.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use regex::Regex;

use super::raw::{RawConfig, RawHeaderOps, RawRoute, RawService, RawTls, RawUpstream};
use super::units::{parse_bool, parse_millis, parse_size, RawDuration, RawSize};
use super::*;

/// Collects errors while validation carries on.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
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
    let auth = auth(&mut errors, &raw, env, server.env);
    let rate_limit = RateLimitConfig {
        max: errors.layered(
            env,
            "RATE_LIMIT_MAX",
            parse_positive,
            "rate_limit.max",
            raw.rate_limit.max,
            |n| positive(n).map_err(str::to_owned),
            200,
        ),
        window: errors.layered(
            env,
            "RATE_LIMIT_WINDOW_MS",
            |t| parse_millis(t).and_then(nonzero_duration),
            "rate_limit.window",
            raw.rate_limit.window.as_ref(),
            |d| d.parse().and_then(nonzero_duration),
            Duration::from_secs(60),
        ),
        redis_url: redis_url(&mut errors, env, raw.rate_limit.redis_url.as_deref()),
    };
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
    };
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
            parse_millis,
            "websocket.ping_interval",
            raw.websocket.ping_interval.as_ref(),
            RawDuration::parse,
            Duration::from_secs(30),
        ),
    };
    let pressure = PressureConfig {
        max_event_loop_delay: errors.layered(
            env,
            "UNDER_PRESSURE_MAX_EVENT_LOOP_DELAY_MS",
            parse_millis,
            "pressure.max_event_loop_delay",
            raw.pressure.max_event_loop_delay.as_ref(),
            RawDuration::parse,
            Duration::from_secs(1),
        ),
        max_rss: errors.layered(
            env,
            "UNDER_PRESSURE_MAX_RSS_BYTES",
            |t| parse_size(t).map(Some),
            "pressure.max_rss",
            raw.pressure.max_rss.as_ref(),
            |s| s.parse().map(Some),
            None,
        ),
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
    let services = services(&mut errors, &raw, env, response_timeout_default);
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter(|(_, route)| {
            // A route to a service whose table was unreadable adds no second error.
            let service = route.as_ref().and_then(|r| r.service.as_ref());
            !service.is_some_and(|s| raw.unreadable_services.contains(s))
        })
        .filter_map(|(i, route)| self::route(&mut errors, i, route.as_ref()?, &services))
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
            pressure,
            services,
            routes,
        })
    } else {
        Err(ConfigErrors(errors.0))
    }
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
    ServerConfig {
        listen: SocketAddr::new(host, port),
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

fn auth(errors: &mut Errors, raw: &RawConfig, env: &Env, environment: Environment) -> AuthConfig {
    let required = errors.layered(
        env,
        "AUTH_REQUIRED",
        parse_bool,
        "auth.required",
        raw.auth.required,
        Ok,
        environment == Environment::Production,
    );
    let (secret_key, jwt_secret) = match env.get("JWT_SECRET") {
        Some(secret) => ("JWT_SECRET", Some(secret.to_owned())),
        None => ("auth.jwt_secret", raw.auth.jwt_secret.clone()),
    };
    if let Some(secret) = &jwt_secret {
        let length = secret.chars().count();
        if length < 32 {
            errors.push(
                secret_key,
                format!("must be at least 32 characters, got {length}"),
            );
        }
    }
    if required && jwt_secret.is_none() {
        let key = if env.get("AUTH_REQUIRED").is_some() {
            "AUTH_REQUIRED"
        } else if raw.auth.required.is_some() {
            "auth.required"
        } else {
            "NODE_ENV"
        };
        errors.push(
            key,
            "authentication is required but no JWT_SECRET (auth.jwt_secret) is configured",
        );
    }
    let claims_to_headers = match &raw.auth.claims_to_headers {
        None => vec![("sub".to_owned(), HeaderName::from_static("x-user-id"))],
        Some(map) => map
            .iter()
            .filter_map(|(claim, header)| {
                errors
                    .check(
                        &format!("auth.claims_to_headers.{claim}"),
                        parse_header_name(header),
                    )
                    .map(|name| (claim.clone(), name))
            })
            .collect(),
    };
    AuthConfig {
        required,
        jwt_secret,
        claims_to_headers,
    }
}

fn redis_url(errors: &mut Errors, env: &Env, file: Option<&str>) -> Option<String> {
    let (key, url) = match (env.get("REDIS_URL"), file) {
        (Some(url), _) => ("REDIS_URL", url),
        (None, Some(url)) => ("rate_limit.redis_url", url),
        (None, None) => return None,
    };
    let valid = url.starts_with("redis://") || url.starts_with("rediss://");
    if !valid {
        errors.push(
            key,
            format!("expected a redis:// or rediss:// URL, got {url:?}"),
        );
        return None;
    }
    Some(url.to_owned())
}

fn services(
    errors: &mut Errors,
    raw: &RawConfig,
    env: &Env,
    response_timeout: Duration,
) -> BTreeMap<String, ServiceConfig> {
    let env_upstreams: BTreeMap<String, Vec<String>> = match env.get("UPSTREAMS") {
        None => BTreeMap::new(),
        Some(text) => errors
            .check(
                "UPSTREAMS",
                serde_json::from_str(text).map_err(|e| {
                    format!(
                        "expected a JSON object of service → list of URLs, e.g. \
                         {{\"users\":[\"http://localhost:3001\"]}} ({e})"
                    )
                }),
            )
            .unwrap_or_default(),
    };
    let empty = RawService::default();
    let names: Vec<&String> = raw
        .services
        .keys()
        .chain(env_upstreams.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut services = BTreeMap::new();
    for name in names {
        let file = raw.services.get(name).unwrap_or(&empty);
        let path = format!("services.{name}");
        if let Err(message) = check_service_name(name) {
            errors.push(&path, message);
        }
        let upstreams: Vec<UpstreamUrl> = match env_upstreams.get(name) {
            Some(urls) => urls
                .iter()
                .enumerate()
                .filter_map(|(i, url)| {
                    errors.check(&format!("UPSTREAMS.{name}[{i}]"), parse_upstream(url, None))
                })
                .collect(),
            None => file
                .upstreams
                .iter()
                .enumerate()
                .filter_map(|(i, up): (usize, &RawUpstream)| {
                    errors.check(
                        &format!("{path}.upstreams[{i}]"),
                        parse_upstream(up.url(), up.weight()),
                    )
                })
                .collect(),
        };
        let from_env = env_upstreams.contains_key(name);
        let listed = match env_upstreams.get(name) {
            Some(urls) => urls.len(),
            None => file.upstreams.len(),
        };
        // An empty list is an error of its own; a list of bad URLs was reported URL by URL.
        if listed == 0 {
            let key = if from_env {
                format!("UPSTREAMS.{name}")
            } else {
                format!("{path}.upstreams")
            };
            errors.push(key, "needs at least one upstream URL");
        }
        let duration = |errors: &mut Errors, key: &str, value: &Option<RawDuration>, default| {
            value
                .as_ref()
                .and_then(|v| {
                    errors.check(
                        &format!("{path}.{key}"),
                        v.parse().and_then(nonzero_duration),
                    )
                })
                .unwrap_or(default)
        };
        let service = ServiceConfig {
            name: name.clone(),
            upstreams,
            connect_timeout: duration(
                errors,
                "connect_timeout",
                &file.connect_timeout,
                Duration::from_secs(5),
            ),
            response_timeout: duration(
                errors,
                "response_timeout",
                &file.response_timeout,
                response_timeout,
            ),
            idle_timeout: duration(
                errors,
                "idle_timeout",
                &file.idle_timeout,
                Duration::from_secs(60),
            ),
            preserve_host: file.preserve_host.unwrap_or(false),
        };
        services.insert(name.clone(), service);
    }
    services
}

fn route(
    errors: &mut Errors,
    index: usize,
    raw: &RawRoute,
    services: &BTreeMap<String, ServiceConfig>,
) -> Option<RouteConfig> {
    let at = |key: &str| format!("routes[{index}].{key}");
    let before = errors.0.len();
    let path = match raw.path.as_deref() {
        None => {
            errors.push(at("path"), "is required");
            None
        }
        Some(text) => errors.check(&at("path"), parse_route_path(text)),
    };
    let service = match raw.service.as_deref() {
        None => {
            errors.push(at("service"), "is required");
            None
        }
        Some(name) if !services.contains_key(name) => {
            let known: Vec<&str> = services.keys().map(String::as_str).collect();
            errors.push(
                at("service"),
                format!(
                    "unknown service {name:?} (known: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            None
        }
        Some(name) => Some(name.to_owned()),
    };
    let match_kind = match raw.match_kind.as_deref() {
        None | Some("prefix") => MatchKind::Prefix,
        Some("exact") => MatchKind::Exact,
        Some(other) => {
            errors.push(
                at("match"),
                format!("expected \"prefix\" or \"exact\", got {other:?}"),
            );
            MatchKind::Prefix
        }
    };
    let methods = raw.methods.as_ref().map(|methods| {
        methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| errors.check(&at(&format!("methods[{i}]")), parse_method(m)))
            .collect::<Vec<_>>()
    });
    let rewrite = raw.rewrite.as_ref().and_then(|rw| {
        errors
            .check(
                &at("rewrite.pattern"),
                Regex::new(&rw.pattern).map_err(|e| format!("invalid regex: {e}")),
            )
            .map(|pattern| Rewrite {
                pattern,
                replace: rw.replace.clone(),
            })
    });
    let request_headers = header_ops(errors, &at("request_headers"), &raw.request_headers);
    let response_headers = header_ops(errors, &at("response_headers"), &raw.response_headers);
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|d| errors.check(&at("timeout"), d.parse().and_then(nonzero_duration)));
    let idle_timeout = raw
        .idle_timeout
        .as_ref()
        .and_then(|d| errors.check(&at("idle_timeout"), d.parse().and_then(nonzero_duration)));
    let host = raw
        .host
        .as_deref()
        .and_then(|h| errors.check(&at("host"), parse_route_host(h)));
    if errors.0.len() > before {
        return None;
    }
    Some(RouteConfig {
        path: path?,
        match_kind,
        host,
        service: service?,
        methods,
        strip_prefix: raw.strip_prefix.unwrap_or(false),
        rewrite,
        request_headers,
        response_headers,
        timeout,
        idle_timeout,
        preserve_host: raw.preserve_host,
    })
}

fn check_duplicate_routes(errors: &mut Errors, routes: &[Option<RawRoute>]) {
    let mut seen = HashSet::new();
    for (i, route) in routes.iter().enumerate() {
        let Some(route) = route else { continue };
        let Some(path) = route.path.as_deref().and_then(|p| parse_route_path(p).ok()) else {
            continue;
        };
        let exact = route.match_kind.as_deref() == Some("exact");
        let host = route.host.as_deref().map(|h| h.trim().to_ascii_lowercase());
        if !seen.insert((path, exact, host)) {
            errors.push(
                format!("routes[{i}].path"),
                "duplicates an earlier route with the same path, match and host",
            );
        }
    }
}

fn header_ops(errors: &mut Errors, path: &str, raw: &Option<RawHeaderOps>) -> HeaderOps {
    let Some(raw) = raw else {
        return HeaderOps::default();
    };
    let set = raw
        .set
        .iter()
        .filter_map(|(name, value)| {
            let key = format!("{path}.set.{name}");
            let name = errors.check(&key, parse_header_name(name).and_then(editable_header))?;
            let value = errors.check(
                &key,
                HeaderValue::from_str(value).map_err(|_| format!("invalid header value {value:?}")),
            )?;
            Some((name, value))
        })
        .collect();
    let remove = raw
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            errors.check(
                &format!("{path}.remove[{i}]"),
                parse_header_name(name).and_then(editable_header),
            )
        })
        .collect();
    HeaderOps { set, remove }
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

// === value parsers ===

/// An upstream base URL: `http`/`https`, a host, an optional path; no query or fragment.
pub(crate) fn parse_upstream(text: &str, weight: Option<u32>) -> Result<UpstreamUrl, String> {
    let invalid = |why: &str| format!("{why}: {text:?} (expected e.g. \"http://127.0.0.1:3001\")");
    let uri: Uri = text.trim().parse().map_err(|_| invalid("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(_) => return Err(invalid("only http and https upstreams are supported")),
        None => return Err(invalid("missing http:// or https://")),
    };
    let authority: Authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
    if authority.host().is_empty() {
        return Err(invalid("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in upstream URLs are not supported"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(invalid(
            "an upstream base URL cannot have a query or fragment",
        ));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    if weight == Some(0) {
        return Err("weight must be at least 1".to_owned());
    }
    Ok(UpstreamUrl {
        scheme,
        authority,
        base_path,
        weight: weight.unwrap_or(1),
    })
}

fn parse_route_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("must start with '/', got {text:?}"));
    }
    if text.contains(['{', '}', '*', '?', '#']) {
        return Err(format!(
            "must be a literal path (no '{{', '}}', '*', '?' or '#'), got {text:?}"
        ));
    }
    let normalized = crate::router::normalize_path(text)
        .map_err(|e| format!("{e} in {text:?}"))?
        .into_owned();
    let trimmed = normalized.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// A route host: a DNS name or IP, compared without port, case-insensitively.
fn parse_route_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if valid {
        Ok(host)
    } else {
        Err(format!(
            "expected a host name without scheme or port, like \"api.example.com\", got {text:?}"
        ))
    }
}

fn check_service_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "service names may contain only letters, digits, '-', '_' and '.', got {name:?}"
        ))
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("expected an address like \"0.0.0.0:8080\" or \"[::1]:8080\", got {text:?}")
    })
}

fn parse_host(text: &str) -> Result<IpAddr, String> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    trimmed
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("expected an IP address like 0.0.0.0 or ::, got {text:?}"))
}

fn parse_environment(text: &str) -> Result<Environment, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(Environment::Development),
        "test" => Ok(Environment::Test),
        "production" | "prod" => Ok(Environment::Production),
        _ => Err(format!(
            "expected development, test or production, got {text:?}"
        )),
    }
}

fn parse_log_level(text: &str) -> Result<LogLevel, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "fatal" => Ok(LogLevel::Fatal),
        "error" => Ok(LogLevel::Error),
        "warn" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        "trace" => Ok(LogLevel::Trace),
        "silent" => Ok(LogLevel::Silent),
        _ => Err(format!(
            "expected one of fatal, error, warn, info, debug, trace, silent, got {text:?}"
        )),
    }
}

fn parse_cidrs(errors: &mut Errors, path: &str, items: &[&str]) -> Vec<IpNet> {
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

fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.trim().to_ascii_uppercase();
    Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid HTTP method {text:?}"))
}

fn parse_header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("invalid header name {text:?}"))
}

/// Route header edits may not touch framing or connection management: a configured
/// `content-length` or `transfer-encoding` would desynchronise the client's connection.
fn editable_header(name: HeaderName) -> Result<HeaderName, String> {
    const RESERVED: &[&str] = &[
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    if RESERVED.contains(&name.as_str()) {
        Err(format!(
            "{name} is managed by the gateway and cannot be edited (use preserve_host for Host)"
        ))
    } else {
        Ok(name)
    }
}

fn parse_positive(text: &str) -> Result<u64, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number, got {text:?}"))?;
    positive(n).map_err(str::to_owned)
}

fn positive(n: u64) -> Result<u64, &'static str> {
    if n == 0 {
        Err("must be at least 1")
    } else {
        Ok(n)
    }
}

fn nonzero_duration(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(d)
    }
}
