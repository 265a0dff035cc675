//! The serde mirror of what an operator wrote in the TOML file: every field optional, unknown
//! keys refused (`deny_unknown_fields`), nothing parsed beyond TOML's own types. Values are
//! checked and turned into real types in `validate`; defaults are applied there too, so that
//! "not written" stays distinguishable from "written as the default" when env vars merge in.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_path_to_error::Segment;

use super::units::{RawDuration, RawSize};

#[derive(Debug, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub tls: Option<RawTls>,
    pub log: RawLog,
    pub auth: RawAuth,
    pub rate_limit: RawRateLimit,
    pub cache: RawCache,
    pub websocket: RawWebSocket,
    pub sse: RawSse,
    pub pressure: RawPressure,
    pub metrics: RawMetrics,
    pub breaker: RawBreaker,
    pub services: BTreeMap<String, RawService>,
    /// Services whose table could not be read (already reported): known names, not validated.
    pub unreadable_services: std::collections::BTreeSet<String>,
    /// `None` where a route could not be read at all (its error is already reported); kept
    /// so that later errors still name the route by its index in the file.
    pub routes: Vec<Option<RawRoute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub env: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_request_body: Option<RawSize>,
    pub max_header_bytes: Option<RawSize>,
    pub header_read_timeout: Option<RawDuration>,
    pub keepalive_idle_timeout: Option<RawDuration>,
    pub shutdown_grace: Option<RawDuration>,
    pub max_connections: Option<usize>,
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub required: Option<bool>,
    pub jwt_secret: Option<String>,
    pub claims_to_headers: Option<BTreeMap<String, String>>,
    pub leeway: Option<RawDuration>,
    pub protect_admin: Option<bool>,
    pub cache_verified_tokens: Option<bool>,
    pub admin_require_claims: Option<BTreeMap<String, String>>,
    pub admin_require_scopes: Option<Vec<String>>,
    pub api_key_header: Option<String>,
    pub issuers: Option<Vec<RawIssuer>>,
    pub api_keys: Option<Vec<RawApiKey>>,
}

/// `[[auth.issuers]]`: an identity provider whose tokens are signed with asymmetric keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<RawDuration>,
    pub jwks_min_interval: Option<RawDuration>,
    pub keys: Option<Vec<RawStaticKey>>,
}

/// One static public key of an issuer: `{ kid = "…", algorithm = "RS256", pem_file = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticKey {
    pub kid: Option<String>,
    pub algorithm: String,
    pub pem: Option<String>,
    pub pem_file: Option<String>,
}

/// `[[auth.api_keys]]`: a key known only by its SHA-256 hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub id: String,
    pub sha256: String,
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub enabled: Option<bool>,
    pub max: Option<u64>,
    pub window: Option<RawDuration>,
    pub algorithm: Option<String>,
    pub burst: Option<u64>,
    pub key: Option<String>,
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub redis_timeout: Option<RawDuration>,
    pub on_store_error: Option<String>,
    pub memory_max_keys: Option<usize>,
}

/// A key that is either a switch or a table of settings (`rate_limit = false`,
/// `cache = { ttl = "10s" }`). Deserialized by hand, like [`RawUpstream`], so a mistake inside
/// the table is named by its key.
#[derive(Debug)]
pub enum FlagOr<T> {
    Flag(bool),
    Table(T),
}

/// What a [`FlagOr`] key's error message says it expected.
pub trait TableExample {
    const EXPECTING: &'static str;
}

impl<'de, T: Deserialize<'de> + TableExample> Deserialize<'de> for FlagOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FlagOrVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableExample> serde::de::Visitor<'de> for FlagOrVisitor<T> {
            type Value = FlagOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FlagOr<T>, E> {
                Ok(FlagOr::Flag(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FlagOr<T>, A::Error> {
                let map = serde::de::value::MapAccessDeserializer::new(map);
                T::deserialize(map).map(FlagOr::Table)
            }
        }
        deserializer.deserialize_any(FlagOrVisitor(std::marker::PhantomData))
    }
}

/// A route's `rate_limit = false | { max = 10, … }`.
pub type RawRouteLimit = FlagOr<RawRoutePolicy>;

impl TableExample for RawRoutePolicy {
    const EXPECTING: &'static str = "false or a table such as { max = 10, window = \"1m\" }";
}

/// A route's `cache = true | false | { ttl = "10s", allow_credentials = false }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub ttl: Option<RawDuration>,
    pub allow_credentials: Option<bool>,
}

impl TableExample for RawRouteCache {
    const EXPECTING: &'static str = "true, false or a table such as { ttl = \"10s\" }";
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutePolicy {
    pub max: Option<u64>,
    pub window: Option<RawDuration>,
    pub algorithm: Option<String>,
    pub burst: Option<u64>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub default_ttl: Option<RawDuration>,
    pub max_body_bytes: Option<RawSize>,
    pub capacity: Option<RawSize>,
    pub statuses: Option<Vec<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub max_buffered_bytes: Option<RawSize>,
    pub ping_interval: Option<RawDuration>,
    pub max_message_size: Option<RawSize>,
    pub stall_timeout: Option<RawDuration>,
    pub token_cookie: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSse {
    pub heartbeat: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPressure {
    pub max_event_loop_delay: Option<RawDuration>,
    pub max_rss: Option<RawSize>,
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    pub connect_timeout: Option<RawDuration>,
    pub response_timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub preserve_host: Option<bool>,
    pub balancer: Option<String>,
    pub hash_key: Option<String>,
    pub breaker: Option<RawBreaker>,
    pub health_check: Option<RawHealthCheck>,
    pub max_retries: Option<u32>,
    pub max_in_flight_per_endpoint: Option<u32>,
    pub service_routes: Option<bool>,
}

/// `[breaker]`, and a service's `breaker = { … }` (its keys override the section's).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { consecutive_failures = 5 }"
)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub failure_ratio: Option<f64>,
    pub window: Option<RawDuration>,
    pub min_requests: Option<u32>,
    pub open_for: Option<RawDuration>,
    pub half_open_probes: Option<u32>,
    pub failure_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { path = \"/health\" }"
)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub healthy_after: Option<u32>,
    pub unhealthy_after: Option<u32>,
}

/// `"http://host:port"` or `{ url = "…", weight = 2 }`. Deserialized by hand rather than as
/// an untagged enum, whose only error is "did not match any variant": this way a typo in the
/// table (`wieght`) or a bad weight gets serde's own message naming the key.
#[derive(Debug, Clone)]
pub enum RawUpstream {
    Url(String),
    Weighted(RawWeightedUpstream),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedUpstream {
    pub url: String,
    #[serde(default)]
    pub weight: Option<u32>,
}

impl<'de> Deserialize<'de> for RawUpstream {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UpstreamVisitor;
        impl<'de> serde::de::Visitor<'de> for UpstreamVisitor {
            type Value = RawUpstream;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL string or a table { url = \"…\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawUpstream, E> {
                Ok(RawUpstream::Url(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawUpstream, A::Error> {
                let map = serde::de::value::MapAccessDeserializer::new(map);
                RawWeightedUpstream::deserialize(map).map(RawUpstream::Weighted)
            }
        }
        deserializer.deserialize_any(UpstreamVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: Option<String>,
    #[serde(rename = "match")]
    pub match_kind: Option<String>,
    pub host: Option<String>,
    pub service: Option<String>,
    pub methods: Option<Vec<String>>,
    pub strip_prefix: Option<bool>,
    pub rewrite: Option<RawRewrite>,
    pub request_headers: Option<RawHeaderOps>,
    pub response_headers: Option<RawHeaderOps>,
    pub timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub preserve_host: Option<bool>,
    pub heartbeat: Option<RawDuration>,
    pub auth: Option<RawAuthMode>,
    pub require_claims: Option<BTreeMap<String, String>>,
    pub require_scopes: Option<Vec<String>>,
    pub strip_authorization: Option<bool>,
    pub token_query: Option<bool>,
    pub token_cookie: Option<String>,
    pub cors: Option<RawCors>,
    pub allow_ips: Option<Vec<String>>,
    pub deny_ips: Option<Vec<String>>,
    pub rate_limit: Option<RawRouteLimit>,
    pub cache: Option<FlagOr<RawRouteCache>>,
}

/// A route's `auth = true | false | "optional"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "true, false or \"optional\"")]
pub enum RawAuthMode {
    Flag(bool),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub pattern: String,
    pub replace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl RawConfig {
    /// Reads every section it can, returning the problems as `(path, message)` pairs.
    pub fn from_table(table: toml::Table) -> (RawConfig, Vec<(String, String)>) {
        let mut raw = RawConfig::default();
        let mut errors = Vec::new();
        for (key, value) in table {
            let mut fail = |path: String, message: String| errors.push((path, message));
            match key.as_str() {
                "server" => read(value, &key, &mut fail, &mut raw.server),
                "log" => read(value, &key, &mut fail, &mut raw.log),
                "auth" => read(value, &key, &mut fail, &mut raw.auth),
                "rate_limit" => read(value, &key, &mut fail, &mut raw.rate_limit),
                "cache" => read(value, &key, &mut fail, &mut raw.cache),
                "websocket" => read(value, &key, &mut fail, &mut raw.websocket),
                "sse" => read(value, &key, &mut fail, &mut raw.sse),
                "pressure" => read(value, &key, &mut fail, &mut raw.pressure),
                "metrics" => read(value, &key, &mut fail, &mut raw.metrics),
                "breaker" => read(value, &key, &mut fail, &mut raw.breaker),
                "tls" => {
                    let mut tls = None;
                    read(value, &key, &mut fail, &mut tls);
                    raw.tls = tls;
                }
                "services" => match value {
                    toml::Value::Table(services) => {
                        for (name, service) in services {
                            let mut parsed: Option<RawService> = None;
                            read(service, &format!("services.{name}"), &mut fail, &mut parsed);
                            match parsed {
                                Some(parsed) => {
                                    raw.services.insert(name, parsed);
                                }
                                None => {
                                    raw.unreadable_services.insert(name);
                                }
                            }
                        }
                    }
                    _ => errors.push((key.clone(), "expected a table of services".to_owned())),
                },
                "routes" => match value {
                    toml::Value::Array(routes) => {
                        for (i, route) in routes.into_iter().enumerate() {
                            let mut parsed = None;
                            read(route, &format!("routes[{i}]"), &mut fail, &mut parsed);
                            raw.routes.push(parsed);
                        }
                    }
                    _ => errors.push((
                        key.clone(),
                        "expected an array of tables ([[routes]])".to_owned(),
                    )),
                },
                _ => errors.push((
                    key.clone(),
                    "unknown section (expected server, tls, log, auth, rate_limit, cache, \
                     websocket, sse, pressure, metrics, breaker, services or routes)"
                        .to_owned(),
                )),
            }
        }
        (raw, errors)
    }
}

/// Deserialises one section, naming the offending key in each error (`server.shutdown_grace`)
/// and reporting every problem, not just the first: after each error the offending key is
/// taken out and the rest read again, so three bad keys in one table are three errors (serde
/// alone stops at the first). A key taken out reads as unset; the `missing field` that follows
/// when it was a required one adds nothing, and its table is taken out too.
fn read<T: serde::de::DeserializeOwned>(
    mut value: toml::Value,
    path: &str,
    fail: &mut impl FnMut(String, String),
    into: &mut T,
) {
    let mut reported: Vec<Vec<String>> = Vec::new();
    // Bounded: each round removes a key, and a table has few.
    for _ in 0..256 {
        let error = match serde_path_to_error::deserialize(value.clone()) {
            Ok(parsed) => {
                *into = parsed;
                return;
            }
            Err(error) => error,
        };
        let at: Vec<Segment> = error.path().iter().cloned().collect();
        let shown: Vec<String> = at.iter().map(ToString::to_string).collect();
        let message = plain_types(error.inner().message());
        let follows_from_a_removal = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
            .is_some_and(|field| {
                let mut missing = shown.clone();
                missing.push(field.to_owned());
                reported.contains(&missing)
            });
        if follows_from_a_removal {
            // A required key already reported and taken out is now missing: not an error of
            // its own. Its table goes too, and the rest of the section is read on.
            if !remove_at(&mut value, &at) {
                return;
            }
            continue;
        }
        let inner = error.path().to_string();
        let full = if inner.is_empty() || inner == "." {
            path.to_owned()
        } else {
            format!("{path}.{inner}")
        };
        fail(full, message);
        if !remove_at(&mut value, &at) {
            return;
        }
        reported.push(shown);
    }
}

/// serde names the Rust type it wanted (`expected u32`); an operator wants the range.
fn plain_types(message: &str) -> String {
    const TYPES: [(&str, &str); 7] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
    ];
    TYPES
        .iter()
        .find(|(rust, _)| message.ends_with(rust))
        .map_or_else(
            || message.to_owned(),
            |(rust, plain)| format!("{}{plain}", &message[..message.len() - rust.len()]),
        )
}

/// Takes the key at `path` out of `value` (a whole array when the path ends inside one: taking
/// an element out would shift the indexes of the errors after it). False when there is none.
fn remove_at(value: &mut toml::Value, path: &[Segment]) -> bool {
    let Some(last_key) = path.iter().rposition(|s| matches!(s, Segment::Map { .. })) else {
        return false;
    };
    let mut node = value;
    for segment in &path[..last_key] {
        let next = match (segment, node) {
            (Segment::Map { key }, toml::Value::Table(table)) => table.get_mut(key),
            (Segment::Seq { index }, toml::Value::Array(array)) => array.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (&path[last_key], node) {
        (Segment::Map { key }, toml::Value::Table(table)) => table.remove(key).is_some(),
        _ => false,
    }
}

impl RawUpstream {
    pub fn url(&self) -> &str {
        match self {
            RawUpstream::Url(url) | RawUpstream::Weighted(RawWeightedUpstream { url, .. }) => url,
        }
    }

    pub fn weight(&self) -> Option<u32> {
        match self {
            RawUpstream::Url(_) => None,
            RawUpstream::Weighted(weighted) => weighted.weight,
        }
    }
}
