//! Request routing: which policy applies to a request, and which path goes upstream.
//!
//! Order, most specific first:
//! 1. config routes (`[[routes]]`): the longest matching path wins, segment-wise (`/users`
//!    matches `/users` and `/users/7`, never `/usersx`); among routes on the same path an
//!    exact match beats a prefix, and a route with a `host` beats one without. A prefix route
//!    for a host that does not match falls back to a shorter path, so hosts never shadow.
//! 2. the service routes (matchit): `/api/:service/*rest` (any method) and
//!    `/sse/:service/*rest` (GET and HEAD: the same forwarding, for event streams) forward
//!    `/rest`; `/ws/:service` (WebSocket upgrades) forwards the path given in its `path`
//!    query parameter (see [`crate::realtime::ws`]).
//!
//! A service whose config routes carry access rules the service routes would not apply
//! (claims, scopes, IP lists, auth beyond the default) has its service routes closed, unless
//! it sets `service_routes = true`: `/api/<name>/<path>` reaches the same upstream paths, so
//! leaving it open would bypass those rules.
//!
//! Matching happens on the normalised path ([`normalize_path`]), and the same string is what
//! goes upstream: the router never decodes, resolves or re-encodes anything afterwards.

mod path;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::cache::CachePolicy;
use crate::config::{Config, HeaderOps, MatchKind, Rewrite, RouteAccess, RouteCache, RouteLimit};
use crate::error::{ErrorKind, GatewayError};
use crate::observe::route_stats::RouteStats;
use crate::ratelimit::NamedPolicy;
use crate::upstream::Service;

pub use path::{normalize_path, PathError};

/// Everything the proxy needs to know about the route a request took.
pub struct RoutePolicy {
    /// The route's figures, and its name in logs and metrics: the config path (with
    /// ` exact` or ` host=<host>` when several routes share it), or `/api/<service>`.
    pub stats: Arc<RouteStats>,
    pub service: Arc<Service>,
    match_kind: MatchKind,
    host: Option<String>,
    pub methods: Option<Vec<Method>>,
    /// The `Allow` header value for 405s.
    pub allow: String,
    strip_prefix: bool,
    rewrite: Option<Rewrite>,
    /// Length of the matched prefix in the request path (for `strip_prefix`).
    prefix_len: usize,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub preserve_host: bool,
    /// SSE heartbeat interval for event-stream responses on this route, if any.
    pub heartbeat: Option<Duration>,
    /// `/ws/<service>`: the upstream path comes from the `path` query parameter, and only
    /// WebSocket upgrades are taken.
    pub websocket_only: bool,
    /// Auth mode, required claims, token sources, CORS, IP lists.
    pub access: RouteAccess,
    /// The limit counted for this route's requests, if any.
    pub rate_limit: Option<Arc<NamedPolicy>>,
    /// Whether (and how) its GET and HEAD answers are cached.
    pub cache: Option<CachePolicy>,
}

pub struct Router {
    config_routes: HashMap<String, Vec<Arc<RoutePolicy>>>,
    service_routes: matchit::Router<ServiceRoute>,
    /// A B-tree, not a hash map: for a handful of names a few comparisons beat SipHash.
    api_policies: BTreeMap<String, Arc<RoutePolicy>>,
    sse_policies: BTreeMap<String, Arc<RoutePolicy>>,
    ws_policies: BTreeMap<String, Arc<RoutePolicy>>,
    /// Services whose service routes are closed (see [`Router::new`]).
    closed_services: HashSet<String>,
    has_host_routes: bool,
}

/// Which family of service routes a path matched.
#[derive(Debug, Clone, Copy)]
enum ServiceRoute {
    Api,
    Sse,
    Ws,
}

/// A routing decision.
pub struct Routed<'a> {
    pub policy: Arc<RoutePolicy>,
    /// The path to append to the endpoint's base path (always starts with `/`).
    pub forward_path: Cow<'a, str>,
}

// === impl Router ===

impl Router {
    pub fn new(
        config: &Config,
        services: &BTreeMap<String, Arc<Service>>,
    ) -> Result<Router, String> {
        let (routes, sse) = (&config.routes, &config.sse);
        let default_limit = config.rate_limit.enabled.then(|| {
            Arc::new(NamedPolicy::new(
                "default",
                config.rate_limit.policy.clone(),
            ))
        });
        let default_cache = config.cache.enabled.then_some(CachePolicy {
            ttl: config.cache.default_ttl,
            allow_credentials: false,
        });
        let mut config_routes: HashMap<String, Vec<Arc<RoutePolicy>>> = HashMap::new();
        for route in routes {
            let service = services.get(&route.service).ok_or_else(|| {
                format!("route {}: unknown service {}", route.path, route.service)
            })?;
            // Unique, as (path, match, host) is; a space never occurs in a path.
            let exact = if route.match_kind == MatchKind::Exact {
                " exact"
            } else {
                ""
            };
            let host = route
                .host
                .as_deref()
                .map(|h| format!(" host={h}"))
                .unwrap_or_default();
            let name = format!("{}{exact}{host}", route.path);
            let policy = RoutePolicy {
                stats: Arc::new(RouteStats::new(
                    Arc::from(name.as_str()),
                    Some(service.name.clone()),
                )),
                service: service.clone(),
                match_kind: route.match_kind,
                host: route.host.clone(),
                allow: allow_header(route.methods.as_deref()),
                methods: route.methods.clone(),
                strip_prefix: route.strip_prefix,
                rewrite: route.rewrite.clone(),
                prefix_len: if route.path == "/" {
                    0
                } else {
                    route.path.len()
                },
                request_headers: route.request_headers.clone(),
                response_headers: route.response_headers.clone(),
                response_timeout: route.timeout.unwrap_or(service.response_timeout),
                idle_timeout: route.idle_timeout.unwrap_or(service.idle_timeout),
                preserve_host: route.preserve_host.unwrap_or(service.preserve_host),
                heartbeat: route.heartbeat.or(sse.heartbeat),
                websocket_only: false,
                access: route.access.clone(),
                rate_limit: match &route.rate_limit {
                    None => default_limit.clone(),
                    Some(RouteLimit::Off) => None,
                    Some(RouteLimit::Own(policy)) => {
                        Some(Arc::new(NamedPolicy::new(&name, policy.clone())))
                    }
                },
                cache: match route.cache {
                    RouteCache::Off => None,
                    RouteCache::Default => default_cache,
                    RouteCache::On {
                        ttl,
                        allow_credentials,
                    } => Some(CachePolicy {
                        ttl: ttl.unwrap_or(config.cache.default_ttl),
                        allow_credentials,
                    }),
                },
            };
            config_routes
                .entry(route.path.clone())
                .or_default()
                .push(Arc::new(policy));
        }
        for candidates in config_routes.values_mut() {
            // Exact before prefix, host-specific before any-host; stable otherwise (file order).
            candidates.sort_by_key(|p| (p.match_kind != MatchKind::Exact, p.host.is_none()));
        }

        let mut service_routes = matchit::Router::new();
        for (prefix, kind) in [("/api", ServiceRoute::Api), ("/sse", ServiceRoute::Sse)] {
            for tail in ["", "/", "/{*rest}"] {
                let pattern = format!("{prefix}/{{service}}{tail}");
                service_routes
                    .insert(pattern.as_str(), kind)
                    .map_err(|e| format!("service route {pattern}: {e}"))?;
            }
        }
        for pattern in ["/ws/{service}", "/ws/{service}/"] {
            service_routes
                .insert(pattern, ServiceRoute::Ws)
                .map_err(|e| format!("service route {pattern}: {e}"))?;
        }
        // A config route may have a service route's path (and then shadows it): the service
        // route keeps a name of its own, so no two routes share one in logs and metrics.
        let config_labels: HashSet<Arc<str>> = config_routes
            .values()
            .flatten()
            .map(|p| p.stats.label.clone())
            .collect();
        let service_policy = |prefix: &str, name: &str, service: &Arc<Service>| {
            let mut label = format!("{prefix}/{name}");
            if config_labels.contains(label.as_str()) {
                label.push_str(" (service route)");
            }
            let methods = match prefix {
                "/sse" => Some(vec![Method::GET, Method::HEAD]),
                "/ws" => Some(vec![Method::GET]),
                _ => None,
            };
            let policy = RoutePolicy {
                stats: Arc::new(RouteStats::new(
                    Arc::from(label),
                    Some(service.name.clone()),
                )),
                service: service.clone(),
                match_kind: MatchKind::Prefix,
                host: None,
                allow: allow_header(methods.as_deref()),
                methods,
                strip_prefix: true,
                rewrite: None,
                prefix_len: prefix.len() + 1 + name.len(),
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
                response_timeout: service.response_timeout,
                idle_timeout: service.idle_timeout,
                preserve_host: service.preserve_host,
                heartbeat: sse.heartbeat,
                websocket_only: prefix == "/ws",
                // Browsers' EventSource and WebSocket cannot send Authorization.
                access: RouteAccess {
                    token_query: prefix != "/api",
                    ..RouteAccess::default()
                },
                rate_limit: default_limit.clone(),
                // Event streams and WebSockets are never cached.
                cache: default_cache.filter(|_| prefix == "/api"),
            };
            (name.to_owned(), Arc::new(policy))
        };
        // A service's routes would reach, unguarded, the paths its guarded config routes
        // protect: they close unless the service opens them explicitly.
        let guarded: HashSet<&str> = routes
            .iter()
            .filter(|r| r.access.is_guarded(config.auth.required))
            .map(|r| r.service.as_str())
            .collect();
        let open = |name: &String| {
            let explicit = config.services.get(name).and_then(|s| s.service_routes);
            explicit.unwrap_or(!guarded.contains(name.as_str()))
        };
        let policies = |prefix: &str| {
            services
                .iter()
                .filter(|(name, _)| open(name))
                .map(|(name, service)| service_policy(prefix, name, service))
                .collect::<BTreeMap<_, _>>()
        };
        let api_policies = policies("/api");
        let sse_policies = policies("/sse");
        let ws_policies = policies("/ws");
        let has_host_routes = config_routes.values().flatten().any(|p| p.host.is_some());
        Ok(Router {
            config_routes,
            service_routes,
            api_policies,
            sse_policies,
            ws_policies,
            closed_services: services.keys().filter(|n| !open(n)).cloned().collect(),
            has_host_routes,
        })
    }

    /// Every route, config routes first, each group sorted by name (for stats and metrics).
    pub fn policies(&self) -> Vec<&Arc<RoutePolicy>> {
        let mut config: Vec<_> = self.config_routes.values().flatten().collect();
        config.sort_by(|a, b| a.stats.label.cmp(&b.stats.label));
        let service_routes = [&self.api_policies, &self.sse_policies, &self.ws_policies];
        config.extend(service_routes.into_iter().flat_map(|p| p.values()));
        config
    }

    /// Routes a normalised `path` for `host` (lowercase, without port).
    pub fn route<'a>(&self, host: Option<&str>, path: &'a str) -> Result<Routed<'a>, GatewayError> {
        if let Some(policy) = self.match_config_route(host, path) {
            let forward_path = policy.forward_path(path)?;
            return Ok(Routed {
                policy: policy.clone(),
                forward_path,
            });
        }
        let Ok(matched) = self.service_routes.at(path) else {
            return Err(GatewayError::client(
                ErrorKind::RouteNotFound,
                "no route matches this path",
            ));
        };
        let service = matched.params.get("service").unwrap_or_default();
        let policies = match matched.value {
            ServiceRoute::Api => &self.api_policies,
            ServiceRoute::Sse => &self.sse_policies,
            ServiceRoute::Ws => &self.ws_policies,
        };
        let Some(policy) = policies.get(service) else {
            // A closed service answers like a path nothing serves, not like a missing one.
            let error = if self.closed_services.contains(service) {
                GatewayError::client(ErrorKind::RouteNotFound, "no route matches this path")
            } else {
                GatewayError::client(
                    ErrorKind::UnknownService,
                    format!("unknown service {service:?}"),
                )
            };
            return Err(error);
        };
        let forward_path = policy.forward_path(path)?;
        Ok(Routed {
            policy: policy.clone(),
            forward_path,
        })
    }

    fn match_config_route(&self, host: Option<&str>, path: &str) -> Option<&Arc<RoutePolicy>> {
        if self.config_routes.is_empty() {
            return None;
        }
        let mut key = path;
        loop {
            if let Some(candidates) = self.config_routes.get(key) {
                // An exact route also takes its path with one trailing slash.
                let whole_path =
                    key.len() == path.len() || (path.len() == key.len() + 1 && path.ends_with('/'));
                let found = candidates.iter().find(|policy| {
                    let host_ok = policy.host.is_none() || policy.host.as_deref() == host;
                    let kind_ok = policy.match_kind == MatchKind::Prefix || whole_path;
                    host_ok && kind_ok
                });
                if found.is_some() {
                    return found;
                }
            }
            if key == "/" {
                return None;
            }
            key = match key.rfind('/') {
                Some(0) | None => "/",
                Some(i) => &key[..i],
            };
        }
    }

    /// Whether any config route is restricted to a host (so the proxy knows whether it needs
    /// to work out the request's host at all).
    pub fn has_host_routes(&self) -> bool {
        self.has_host_routes
    }
}

// === impl RoutePolicy ===

impl RoutePolicy {
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// The path sent upstream: the request path, minus the route prefix when stripping, then
    /// rewritten. A rewrite that produces an unsafe path is refused like an unsafe request path.
    fn forward_path<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, GatewayError> {
        let stripped: &'a str = if self.strip_prefix {
            &path[self.prefix_len.min(path.len())..]
        } else {
            path
        };
        let base: Cow<'a, str> = if stripped.is_empty() {
            Cow::Borrowed("/")
        } else {
            Cow::Borrowed(stripped)
        };
        let Some(rewrite) = &self.rewrite else {
            return Ok(base);
        };
        let rewritten = rewrite.pattern.replace(&base, rewrite.replace.as_str());
        let rewritten = if rewritten.starts_with('/') {
            rewritten.into_owned()
        } else {
            format!("/{rewritten}")
        };
        let normalized = normalize_path(&rewritten)
            .map_err(|e| GatewayError::client(ErrorKind::BadRequest, format!("rewritten {e}")))?;
        Ok(Cow::Owned(normalized.into_owned()))
    }
}

fn allow_header(methods: Option<&[Method]>) -> String {
    methods
        .unwrap_or_default()
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
