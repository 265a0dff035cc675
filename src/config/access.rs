//! The validated shape of access control: `[auth]` (token verifiers, API keys, admin
//! protection) and each route's access keys (auth mode, required claims and scopes, token
//! sources, CORS, IP lists). Checked in `validate/access.rs`; enforced by `crate::auth`,
//! `crate::cors` and the proxy.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;
use jsonwebtoken::{Algorithm, DecodingKey};

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_REQUIRED`: the default for routes that do not say. Default is true in
    /// production, false otherwise.
    pub required: bool,
    /// `JWT_SECRET`: verifies HS256/384/512 tokens; at least 32 characters. Default is none.
    pub jwt_secret: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default is 60 seconds.
    pub leeway: Duration,
    /// Verified claims copied to upstream request headers. Default is `sub` → `x-user-id`.
    pub claims_to_headers: Vec<(String, HeaderName)>,
    /// Identity providers with asymmetric keys (static PEM or JWKS). Default is none.
    pub issuers: Vec<IssuerConfig>,
    /// API keys, by the SHA-256 of the key. Default is none.
    pub api_keys: Vec<ApiKeyConfig>,
    /// The request header an API key comes in. Default is `x-api-key`.
    pub api_key_header: HeaderName,
    /// Remember tokens that verified (until `exp`, at most a minute, forgotten when a key set
    /// changes), so a repeated token costs a lookup, not a signature check. Default is true.
    pub cache_verified_tokens: bool,
    /// `/admin`, `/admin/stats` and `/gateway/stats` need a token or API key. Default is
    /// `required`.
    pub protect_admin: bool,
    /// What an admin credential must also carry (`admin_require_claims`,
    /// `admin_require_scopes`): without it, any valid credential may read the stats.
    pub admin_access: RouteAccess,
}

impl AuthConfig {
    /// Whether any credential could ever be accepted.
    pub fn can_verify(&self) -> bool {
        self.jwt_secret.is_some() || !self.issuers.is_empty() || !self.api_keys.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The exact `iss` value of this provider's tokens.
    pub issuer: String,
    /// A token's `aud` must name one of these. Required: without it any token the provider
    /// issues, to any of its clients, would pass (RFC 8725 §3.9).
    pub audiences: Vec<String>,
    /// The algorithms accepted from this issuer (asymmetric only). Default is all of them
    /// (each key is pinned to its own anyway).
    pub algorithms: Vec<Algorithm>,
    pub keys: Vec<StaticKey>,
    pub jwks: Option<JwksConfig>,
}

/// A public key written in the config, pinned to one algorithm.
#[derive(Clone)]
pub struct StaticKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub url: Uri,
    /// The key set is fetched again this often. Default is 10 minutes.
    pub refresh: Duration,
    /// Fetches (on an unknown `kid`, or retrying a failure) are at least this far apart.
    /// Default is 10 seconds.
    pub min_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    /// Forwarded as the identity (the `sub` claim of an API-key request).
    pub id: String,
    pub sha256: [u8; 32],
    /// Scopes the key grants, for routes' `require_scopes`. Default is none.
    pub scopes: Vec<String>,
}

/// A route's `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid credential is needed.
    Required,
    /// A credential is verified when sent (a bad one is 401); none is fine too.
    Optional,
    /// Credentials are not looked at (identity headers are still stripped).
    Off,
}

/// Who may use a route. The default (no keys written) follows `[auth] required`.
#[derive(Debug, Clone, Default)]
pub struct RouteAccess {
    /// Default is none: `[auth] required` decides.
    pub auth: Option<AuthMode>,
    /// Claims that must hold (`role = "admin"`: equal, or an array containing it) → 403.
    pub require_claims: Vec<(String, String)>,
    /// Scopes that must all be granted (`scope`, space-separated, or `scp`) → 403.
    pub require_scopes: Vec<String>,
    /// Remove `Authorization` before forwarding. Default is false (forwarded).
    pub strip_authorization: bool,
    /// Accept the token in the `access_token` query parameter (removed before forwarding).
    /// Default is false; always true for WebSocket upgrades and `/sse/` routes.
    pub token_query: bool,
    /// Accept the token in this cookie. Default is none.
    pub token_cookie: Option<String>,
    pub cors: Option<CorsConfig>,
    /// When not empty, only clients in these networks are served (403 otherwise).
    pub allow_ips: Vec<IpNet>,
    /// Clients in these networks get 403; deny wins over allow.
    pub deny_ips: Vec<IpNet>,
}

impl RouteAccess {
    /// Rules the service routes (`/api/<name>/*`, which reach the same upstream paths) would
    /// not apply: claims, scopes, IP lists, or auth where auth is not the default.
    pub fn is_guarded(&self, auth_required: bool) -> bool {
        !self.require_claims.is_empty()
            || !self.require_scopes.is_empty()
            || !self.allow_ips.is_empty()
            || !self.deny_ips.is_empty()
            || (self.auth == Some(AuthMode::Required) && !auth_required)
    }

    /// The IP lists: not denied, and allowed when an allow list is given.
    pub fn admits(&self, client: std::net::IpAddr) -> bool {
        !self.deny_ips.iter().any(|net| net.contains(&client))
            && (self.allow_ips.is_empty() || self.allow_ips.iter().any(|net| net.contains(&client)))
    }
}

/// A route's `cors`: which browser origins may call it, answered by the gateway itself.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub origins: Vec<OriginRule>,
    /// Methods a preflight may ask for. Default is the route's methods, else
    /// GET, HEAD, POST, PUT, PATCH, DELETE.
    pub methods: Vec<Method>,
    /// Request headers a preflight may ask for. Default is `authorization`, `content-type`.
    pub headers: AllowedHeaders,
    /// Response headers scripts may read. Default is none.
    pub expose_headers: Vec<HeaderName>,
    /// Cookies and `Authorization` may be sent. Default is false.
    pub credentials: bool,
    /// How long a browser may cache a preflight answer. Default is 10 minutes.
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `*`: any origin (not with credentials).
    Any,
    /// `https://app.example.com` (lowercase, no trailing slash).
    Exact(String),
    /// `https://*.example.com`: the scheme, then one or more labels, then `.example.com`.
    Subdomains { scheme: String, suffix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHeaders {
    /// `*`: whatever a preflight asks for (not with credentials).
    Any,
    List(Vec<HeaderName>),
}
