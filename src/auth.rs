//! Authentication: who is calling, before anything else happens to the request.
//!
//! A credential is a bearer token (`Authorization: Bearer …`; on routes that allow it also
//! the `access_token` query parameter or a cookie, for browsers' EventSource and WebSocket)
//! or an API key in its header. Tokens are JWTs verified by [`jwt`] against `JWT_SECRET`
//! (HS256/384/512) or an issuer's keys ([`keys`]: static PEM or JWKS); API keys are looked up
//! by hash ([`api_keys`]). Each route says whether a credential is required, optional or
//! ignored (default: `[auth] required`, the seed rule), and may require claims or scopes
//! (→ 403). A rejection is 401 with `WWW-Authenticate: Bearer`, decided before rate limiting
//! and before any upstream is picked.
//!
//! The verified identity goes upstream as headers (`sub` → `x-user-id` by default); a
//! client's own copies of those headers are removed on every request, authenticated or not,
//! and so is the API key.

mod api_keys;
mod cache;
mod identity;
mod jwt;
mod keys;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, AuthMode, RouteAccess};
use crate::error::{ErrorKind, GatewayError};
use crate::proxy::headers::cookie_value;
use api_keys::ApiKeys;
pub use identity::Identity;
use jwt::JwtVerifier;
pub use jwt::{plausible_kid, MAX_TOKEN_BYTES};

/// The query parameter that may carry a token (removed before the request goes upstream).
pub const ACCESS_TOKEN_PARAM: &str = "access_token";
/// The cookie the admin login sets, scoped to `/admin`.
pub const ADMIN_COOKIE: &str = "sluice_admin";

pub struct Auth {
    default_mode: AuthMode,
    jwt: JwtVerifier,
    api_keys: ApiKeys,
    api_key_header: HeaderName,
    claims_to_headers: Vec<(String, HeaderName)>,
    protect_admin: bool,
    admin_access: RouteAccess,
    /// `None` when `cache_verified_tokens` is off.
    verified: Option<cache::VerifiedTokens>,
    leeway: u64,
}

/// Where, besides `Authorization` and the API key header, a request's token may be.
#[derive(Default, Clone, Copy)]
pub struct TokenSources<'a> {
    /// The request's query, when the route takes `access_token` from it.
    pub query: Option<&'a str>,
    /// A cookie name the route takes the token from.
    pub cookie: Option<&'a str>,
}

enum Credential<'a> {
    Token(&'a str),
    ApiKey(&'a [u8]),
}

fn unauthorized(message: impl Into<std::borrow::Cow<'static, str>>) -> GatewayError {
    GatewayError::client(ErrorKind::Unauthorized, message)
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Auth, String> {
        Ok(Auth {
            default_mode: if config.required {
                AuthMode::Required
            } else {
                AuthMode::Off
            },
            jwt: JwtVerifier::new(config)?,
            api_keys: ApiKeys::new(&config.api_keys),
            api_key_header: config.api_key_header.clone(),
            claims_to_headers: config.claims_to_headers.clone(),
            protect_admin: config.protect_admin,
            admin_access: config.admin_access.clone(),
            verified: config
                .cache_verified_tokens
                .then(cache::VerifiedTokens::new),
            leeway: config.leeway.as_secs(),
        })
    }

    /// Checks a proxied request against its route. `Ok(None)`: no identity (auth is off for
    /// the route, or optional and no credential was sent).
    pub async fn authenticate(
        &self,
        access: &RouteAccess,
        headers: &HeaderMap,
        sources: TokenSources<'_>,
    ) -> Result<Option<Arc<Identity>>, GatewayError> {
        let mode = access.auth.unwrap_or(self.default_mode);
        let demands = !access.require_claims.is_empty() || !access.require_scopes.is_empty();
        if mode == AuthMode::Off && !demands {
            return Ok(None);
        }
        let identity = match self.credential(headers, sources)? {
            Some(credential) => self.verify(credential).await?,
            None if mode == AuthMode::Optional && !demands => return Ok(None),
            None => return Err(unauthorized("a bearer token or API key is required")),
        };
        identity
            .satisfies(access)
            .map_err(|m| GatewayError::client(ErrorKind::Forbidden, m))?;
        Ok(Some(identity))
    }

    /// The ops endpoints' rule: when admin protection is on, a token or API key is needed
    /// (in a header, or in the login cookie), carrying `admin_require_claims`/`_scopes`.
    pub async fn authenticate_admin(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        if !self.protect_admin {
            return Ok(());
        }
        let identity = match self.credential(headers, TokenSources::default())? {
            Some(credential) => self.verify(credential).await?,
            None => match cookie_value(headers, ADMIN_COOKIE) {
                Some(presented) => self.verify_presented(presented).await?,
                None => {
                    return Err(unauthorized(
                        "the admin endpoints need a bearer token or API key",
                    ))
                }
            },
        };
        identity
            .satisfies(&self.admin_access)
            .map_err(|m| GatewayError::client(ErrorKind::Forbidden, m))
    }

    pub fn protects_admin(&self) -> bool {
        self.protect_admin
    }

    /// What the admin login form was given: a JWT (two dots) or an API key.
    pub async fn verify_presented(&self, presented: &str) -> Result<Arc<Identity>, GatewayError> {
        let credential = if presented.bytes().filter(|b| *b == b'.').count() == 2 {
            Credential::Token(presented)
        } else {
            Credential::ApiKey(presented.as_bytes())
        };
        self.verify(credential).await
    }

    async fn verify(&self, credential: Credential<'_>) -> Result<Arc<Identity>, GatewayError> {
        match credential {
            Credential::Token(token) => {
                // Read before verifying: a set replaced meanwhile invalidates this entry.
                let generation = self.jwt.key_generation.load(Ordering::Acquire);
                let cache = self
                    .verified
                    .as_ref()
                    .filter(|_| token.len() <= cache::MAX_CACHED_TOKEN);
                if let Some(identity) = cache.and_then(|c| c.get(token, generation)) {
                    return Ok(identity);
                }
                let claims = self.jwt.verify(token).await.map_err(unauthorized)?;
                let identity = Identity::from_claims(claims, &self.claims_to_headers)
                    .map(Arc::new)
                    .map_err(unauthorized)?;
                if let (Some(cache), Some(exp)) = (cache, identity.expires_at()) {
                    let until = exp.saturating_add(self.leeway);
                    cache.insert(token, identity.clone(), until, generation);
                }
                Ok(identity)
            }
            Credential::ApiKey([]) => Err(unauthorized("the API key is empty")),
            Credential::ApiKey(key) => self
                .api_keys
                .find(key)
                .ok_or_else(|| unauthorized("the API key is not valid"))
                .and_then(|key| {
                    Identity::from_api_key(key, &self.claims_to_headers)
                        .map(Arc::new)
                        .map_err(unauthorized)
                }),
        }
    }

    /// The request's credential: `Authorization` first, then the query, the cookie, and
    /// last the API key header (only when API keys are configured).
    fn credential<'a>(
        &self,
        headers: &'a HeaderMap,
        sources: TokenSources<'a>,
    ) -> Result<Option<Credential<'a>>, GatewayError> {
        let mut authorization = headers.get_all(http::header::AUTHORIZATION).iter();
        if let Some(value) = authorization.next() {
            // Two would leave the upstream to pick one: which one we checked is not its call.
            if authorization.next().is_some() {
                return Err(unauthorized("more than one Authorization header"));
            }
            // A present but unusable Authorization (another scheme, not text) is an empty
            // bearer token: refused, never skipped in favour of a weaker source.
            let token = value.to_str().ok().and_then(bearer_token).unwrap_or("");
            return Ok(Some(Credential::Token(token)));
        }
        let token = sources
            .query
            .and_then(|q| query_param(q, ACCESS_TOKEN_PARAM))
            .or_else(|| cookie_value(headers, sources.cookie?));
        if let Some(token) = token {
            return Ok(Some(Credential::Token(token)));
        }
        if self.api_keys.is_empty() {
            return Ok(None);
        }
        let mut keys = headers.get_all(&self.api_key_header).iter();
        let key = keys.next();
        if keys.next().is_some() {
            return Err(unauthorized("more than one API key header"));
        }
        Ok(key.map(|key| Credential::ApiKey(key.as_bytes())))
    }

    /// Removes what the client may not send upstream: the identity headers the gateway
    /// fills (and `x-user-id`, which the seeds' upstreams trust, whatever the mapping), the
    /// API key, `Authorization` where the route strips it, and credential cookies (the
    /// route's token cookie, the admin login's).
    pub fn strip_credentials(&self, headers: &mut HeaderMap, access: &RouteAccess) {
        headers.remove(X_USER_ID);
        for (_, header) in &self.claims_to_headers {
            headers.remove(header);
        }
        // CGI-style servers (WSGI, PHP, …) read `x_user_id` as `x-user-id`: such look-alikes
        // of the headers the gateway owns go too (nginx drops underscored names altogether).
        let look_alikes: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().contains('_'))
            .filter(|name| {
                let dashed = name.as_str().replace('_', "-");
                dashed == X_USER_ID.as_str()
                    || dashed == self.api_key_header.as_str()
                    || self
                        .claims_to_headers
                        .iter()
                        .any(|(_, h)| h.as_str() == dashed)
            })
            .cloned()
            .collect();
        for name in look_alikes {
            headers.remove(name);
        }
        let token_cookie = access.token_cookie.as_deref().unwrap_or(ADMIN_COOKIE);
        remove_cookies(headers, &[ADMIN_COOKIE, token_cookie]);
        if !self.api_keys.is_empty() {
            headers.remove(&self.api_key_header);
        }
        if access.strip_authorization {
            headers.remove(http::header::AUTHORIZATION);
        }
    }

    /// Sets the identity's headers (its mapped claims) on the upstream request.
    pub fn apply(&self, identity: &Identity, headers: &mut HeaderMap) {
        identity.apply(headers);
    }

    /// Starts the JWKS refreshers, until `stop`.
    pub fn spawn_refreshers(&self, stop: &CancellationToken) {
        for store in &self.jwt.issuers {
            store.spawn_refresher(stop.clone());
        }
    }

    /// For `/admin/stats`: each issuer's keys and JWKS fetches.
    pub fn stats(&self) -> serde_json::Value {
        let issuers: Vec<_> = self
            .jwt
            .issuers
            .iter()
            .map(|store| {
                let s = store.stats();
                json!({
                    "issuer": s.issuer,
                    "staticKeys": s.static_keys,
                    "jwksKeys": s.jwks_keys,
                    "jwksFetches": s.fetches,
                    "jwksFailures": s.failures,
                })
            })
            .collect();
        json!({ "issuers": issuers })
    }
}

const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");

/// Removes the named cookies from the `Cookie` headers, keeping the others in order.
fn remove_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let named = |pair: &str| names.contains(&pair.split('=').next().unwrap_or_default().trim());
    let cookies = headers.get_all(http::header::COOKIE);
    let any = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(';').any(named));
    if !any {
        return;
    }
    let kept: Vec<String> = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter(|pair| !pair.trim().is_empty() && !named(pair))
        .map(|pair| pair.trim().to_owned())
        .collect();
    headers.remove(http::header::COOKIE);
    if let Ok(value) = http::HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(http::header::COOKIE, value);
        }
    }
}

/// The raw value of `name` in a query string (tokens are base64url: no decoding needed).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `query` without any `name=…` parameter (also spelled with percent-escapes, as the
/// upstream would decode it); `None` when nothing is left.
pub fn without_query_param(query: Option<&str>, name: &str) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let decoded: Vec<u8> = form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned().into_bytes())
                .unwrap_or_default();
            key != name && decoded != name.as_bytes()
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn a_query_parameter_is_removed_whole() {
        let strip = |q| without_query_param(Some(q), "access_token");
        assert_eq!(strip("a=1&access_token=x&b=2"), Some("a=1&b=2".to_owned()));
        assert_eq!(strip("access_token=x"), None);
        assert_eq!(strip("access_token"), None);
        assert_eq!(strip("access_tokenx=1"), Some("access_tokenx=1".to_owned()));
        assert_eq!(strip("access%5Ftoken=x&a=1"), Some("a=1".to_owned()));
        assert_eq!(without_query_param(None, "access_token"), None);
    }
}
