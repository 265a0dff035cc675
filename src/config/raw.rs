//! The serde mirror of what an operator wrote in the TOML file: every field optional, unknown
//! keys refused (`deny_unknown_fields`), nothing parsed beyond TOML's own types. Values are
//! checked and turned into real types in `validate`; defaults are applied there too, so that
//! "not written" stays distinguishable from "written as the default" when env vars merge in.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{RawDuration, RawSize};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub websocket: RawWebSocket,
    #[serde(default)]
    pub pressure: RawPressure,
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub max: Option<u64>,
    pub window: Option<RawDuration>,
    pub redis_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub default_ttl: Option<RawDuration>,
    pub max_body_bytes: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub max_buffered_bytes: Option<RawSize>,
    pub ping_interval: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPressure {
    pub max_event_loop_delay: Option<RawDuration>,
    pub max_rss: Option<RawSize>,
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
}

/// `"http://host:port"` or `{ url = "…", weight = 2 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawUpstream {
    Url(String),
    Weighted {
        url: String,
        #[serde(default)]
        weight: Option<u32>,
    },
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

impl RawUpstream {
    pub fn url(&self) -> &str {
        match self {
            RawUpstream::Url(url) | RawUpstream::Weighted { url, .. } => url,
        }
    }

    pub fn weight(&self) -> Option<u32> {
        match self {
            RawUpstream::Url(_) => None,
            RawUpstream::Weighted { weight, .. } => *weight,
        }
    }
}
