//! `[auth]` and the access keys of a route: token verifiers (secret, issuers with static keys
//! or JWKS), API keys, admin protection, and per route the auth mode, required claims and
//! scopes, token sources, CORS and IP lists. A route that demands a credential when nothing
//! could verify one is an error here, not a 401 for every request later.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::super::raw::{RawAuthMode, RawConfig, RawIssuer, RawRoute};
use super::super::units::{parse_bool, RawDuration};
use super::super::values::*;
use super::super::*;
use super::{parse_cidrs, Errors};

/// The asymmetric algorithms an issuer may use, in the order they are documented.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub(super) fn auth(
    errors: &mut Errors,
    raw: &RawConfig,
    env: &Env,
    environment: Environment,
) -> AuthConfig {
    let a = &raw.auth;
    let required = errors.layered(
        env,
        "AUTH_REQUIRED",
        parse_bool,
        "auth.required",
        a.required,
        Ok,
        environment == Environment::Production,
    );
    let (secret_key, jwt_secret) = match env.get("JWT_SECRET") {
        Some(secret) => ("JWT_SECRET", Some(secret.to_owned())),
        None => ("auth.jwt_secret", a.jwt_secret.clone()),
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
    let claims_to_headers = match &a.claims_to_headers {
        None => vec![("sub".to_owned(), HeaderName::from_static("x-user-id"))],
        Some(map) => map
            .iter()
            .filter_map(|(claim, header)| {
                errors
                    .check(
                        &format!("auth.claims_to_headers.{claim}"),
                        parse_header_name(header)
                            .and_then(editable_header)
                            .and_then(identity_header),
                    )
                    .map(|name| (claim.clone(), name))
            })
            .collect::<Vec<_>>(),
    };
    let mut seen_headers = HashSet::new();
    for (claim, header) in &claims_to_headers {
        if !seen_headers.insert(header.clone()) {
            errors.push(
                format!("auth.claims_to_headers.{claim}"),
                format!("{header} is already filled from another claim"),
            );
        }
    }
    let leeway = a
        .leeway
        .as_ref()
        .and_then(|d| errors.check("auth.leeway", d.parse().and_then(at_most_an_hour)))
        .unwrap_or(Duration::from_secs(60));
    let issuers = a
        .issuers
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, issuer)| self::issuer(errors, &format!("auth.issuers[{i}]"), issuer))
        .collect::<Vec<_>>();
    let mut seen_issuers = HashSet::new();
    for (i, issuer) in issuers.iter().enumerate() {
        if !seen_issuers.insert(issuer.issuer.as_str()) {
            errors.push(
                format!("auth.issuers[{i}].issuer"),
                "duplicates an earlier issuer",
            );
        }
    }
    let api_keys = api_keys(errors, raw);
    let api_key_header = a
        .api_key_header
        .as_deref()
        .and_then(|h| {
            errors.check(
                "auth.api_key_header",
                parse_header_name(h)
                    .and_then(editable_header)
                    .and_then(|name| match name.as_str() {
                        "authorization" | "cookie" | "x-user-id" => Err(format!(
                            "{name} cannot carry API keys (it has its own meaning)"
                        )),
                        _ => Ok(name),
                    }),
            )
        })
        .unwrap_or(HeaderName::from_static("x-api-key"));
    let config = AuthConfig {
        required,
        jwt_secret,
        leeway,
        claims_to_headers,
        issuers,
        api_keys,
        api_key_header,
        protect_admin: a.protect_admin.unwrap_or(required),
        cache_verified_tokens: a.cache_verified_tokens.unwrap_or(true),
        admin_access: RouteAccess {
            require_claims: a
                .admin_require_claims
                .iter()
                .flatten()
                .map(|(claim, value)| (claim.clone(), value.clone()))
                .collect(),
            require_scopes: scopes(
                errors,
                "auth.admin_require_scopes",
                a.admin_require_scopes.as_deref(),
            ),
            ..RouteAccess::default()
        },
    };
    if required && !config.can_verify() {
        let key = if env.get("AUTH_REQUIRED").is_some() {
            "AUTH_REQUIRED"
        } else if a.required.is_some() {
            "auth.required"
        } else if env.get("SLUICE_ENV").is_some() {
            // Production made auth required: name where production was said.
            "SLUICE_ENV"
        } else if env.get("NODE_ENV").is_some() {
            "NODE_ENV"
        } else {
            "server.env"
        };
        errors.push(
            key,
            "authentication is required but no JWT_SECRET (auth.jwt_secret), \
             [[auth.issuers]] or [[auth.api_keys]] is configured",
        );
    } else if config.protect_admin && !config.can_verify() {
        errors.push(
            "auth.protect_admin",
            "admin protection needs JWT_SECRET, [[auth.issuers]] or [[auth.api_keys]]",
        );
    }
    config
}

/// Headers a claim may fill: not ones with their own meaning to the gateway, the upstream
/// or the browser (they are removed from every request, so the client loses them too).
fn identity_header(name: HeaderName) -> Result<HeaderName, String> {
    const OWNED: &[&str] = &[
        "authorization",
        "cookie",
        "forwarded",
        "origin",
        "traceparent",
        "tracestate",
        "x-api-key",
        "x-request-id",
    ];
    if OWNED.contains(&name.as_str()) || name.as_str().starts_with("x-forwarded-") {
        Err(format!(
            "{name} has its own meaning and cannot carry a claim"
        ))
    } else {
        Ok(name)
    }
}

/// At least 100 ms: the floor of how often a provider is asked for keys.
fn at_least_100ms(d: Duration) -> Result<Duration, String> {
    if d < Duration::from_millis(100) {
        Err("must be at least 100ms".to_owned())
    } else {
        Ok(d)
    }
}

fn at_most_an_hour(d: Duration) -> Result<Duration, String> {
    if d > Duration::from_secs(3600) {
        Err("must be at most 1h".to_owned())
    } else {
        Ok(d)
    }
}

fn issuer(errors: &mut Errors, at: &str, raw: &RawIssuer) -> Option<IssuerConfig> {
    let before = errors.0.len();
    if raw.issuer.trim().is_empty() {
        errors.push(format!("{at}.issuer"), "must not be empty");
    }
    if raw
        .audiences
        .as_ref()
        .is_none_or(|a| a.is_empty() || a.iter().any(String::is_empty))
    {
        errors.push(
            format!("{at}.audiences"),
            "is required: the `aud` values meant for this gateway (without it any token the \
             provider issues, to any of its clients, would pass)",
        );
    }
    if raw.algorithms.as_ref().is_some_and(Vec::is_empty) {
        errors.push(
            format!("{at}.algorithms"),
            "must name at least one algorithm",
        );
    }
    let algorithms = match &raw.algorithms {
        None => ASYMMETRIC.to_vec(),
        Some(names) => names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                errors.check(&format!("{at}.algorithms[{i}]"), asymmetric_algorithm(name))
            })
            .collect(),
    };
    let keys = raw
        .keys
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, key)| {
            let at = format!("{at}.keys[{i}]");
            let algorithm = errors.check(
                &format!("{at}.algorithm"),
                asymmetric_algorithm(&key.algorithm),
            )?;
            if !algorithms.contains(&algorithm) {
                errors.push(
                    format!("{at}.algorithm"),
                    format!("{:?} is not in this issuer's algorithms", algorithm),
                );
            }
            let pem = match (&key.pem, &key.pem_file) {
                (Some(pem), None) => pem.clone().into_bytes(),
                (None, Some(file)) => errors.check(
                    &format!("{at}.pem_file"),
                    std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}")),
                )?,
                _ => {
                    errors.push(at.clone(), "expected exactly one of pem and pem_file");
                    return None;
                }
            };
            if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
                let key_at = if key.pem.is_some() { "pem" } else { "pem_file" };
                errors.push(
                    format!("{at}.{key_at}"),
                    "is a private key: give the issuer's public key (openssl pkey -pubout)",
                );
                return None;
            }
            if let Some(kid) = &key.kid {
                if !crate::auth::plausible_kid(kid) {
                    errors.push(
                        format!("{at}.kid"),
                        "expected letters, digits and -_.=+/: (no path segments)",
                    );
                }
            }
            let decoded = match algorithm.family() {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_ed_pem(&pem),
            };
            let key_at = if key.pem.is_some() { "pem" } else { "pem_file" };
            let decoded = errors.check(
                &format!("{at}.{key_at}"),
                decoded.map_err(|e| format!("not a {algorithm:?} public key in PEM: {e}")),
            )?;
            Some(StaticKey {
                kid: key.kid.clone(),
                algorithm,
                key: decoded,
            })
        })
        .collect::<Vec<_>>();
    let mut kids = HashSet::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(kid) = &key.kid {
            if !kids.insert(kid.as_str()) {
                errors.push(
                    format!("{at}.keys[{i}].kid"),
                    "duplicates an earlier key's kid",
                );
            }
        }
    }
    let jwks = raw.jwks_url.as_deref().and_then(|url| {
        let url = errors.check(&format!("{at}.jwks_url"), parse_jwks_url(url))?;
        let duration = |errors: &mut Errors, key: &str, raw: &Option<RawDuration>, default| {
            raw.as_ref()
                .and_then(|d| {
                    errors.check(&format!("{at}.{key}"), d.parse().and_then(nonzero_duration))
                })
                .unwrap_or(default)
        };
        let config = JwksConfig {
            url,
            refresh: duration(
                errors,
                "jwks_refresh",
                &raw.jwks_refresh,
                Duration::from_secs(600),
            ),
            min_interval: raw
                .jwks_min_interval
                .as_ref()
                .and_then(|d| {
                    errors.check(
                        &format!("{at}.jwks_min_interval"),
                        d.parse().and_then(at_least_100ms),
                    )
                })
                .unwrap_or(Duration::from_secs(10)),
        };
        if config.refresh < config.min_interval {
            errors.push(
                format!("{at}.jwks_refresh"),
                "must be at least jwks_min_interval",
            );
        }
        Some(config)
    });
    if raw.jwks_url.is_none() && raw.keys.as_ref().is_none_or(Vec::is_empty) {
        errors.push(at, "needs a jwks_url or at least one entry in keys");
    }
    (errors.0.len() == before).then(|| IssuerConfig {
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone().unwrap_or_default(),
        algorithms,
        keys,
        jwks,
    })
}

fn asymmetric_algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(name.trim())
        .ok()
        .filter(|a| ASYMMETRIC.contains(a))
        .ok_or_else(|| {
            format!(
                "expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA \
                 (HS tokens use JWT_SECRET), got {name:?}"
            )
        })
}

fn parse_jwks_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|_| format!("not a URL: {text:?}"))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        _ if host.is_empty() => Err(format!("expected an https URL with a host, got {text:?}")),
        Some("https") => Ok(uri),
        // Keys fetched in clear text could be swapped by anyone on the path.
        Some("http") if loopback => Ok(uri),
        Some("http") => Err(format!(
            "must be https (plain http is allowed only for loopback hosts), got {text:?}"
        )),
        _ => Err(format!("expected an https URL with a host, got {text:?}")),
    }
}

fn api_keys(errors: &mut Errors, raw: &RawConfig) -> Vec<ApiKeyConfig> {
    let mut ids = HashSet::new();
    let mut hashes = HashSet::new();
    let mut keys = Vec::new();
    for (i, key) in raw.auth.api_keys.iter().flatten().enumerate() {
        let at = |k: &str| format!("auth.api_keys[{i}].{k}");
        let id_ok = !key.id.is_empty()
            && key.id.len() <= 128
            && key.id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            errors.push(at("id"), "expected 1 to 128 printable ASCII characters");
        } else if !ids.insert(key.id.clone()) {
            errors.push(at("id"), "duplicates an earlier key's id");
        }
        let Some(sha256) = errors.check(&at("sha256"), parse_sha256(&key.sha256)) else {
            continue;
        };
        // The SHA-256 of nothing: what `printf %s "$KEY" | sha256sum` gives with $KEY unset.
        const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        if key.sha256.trim().eq_ignore_ascii_case(EMPTY) {
            errors.push(at("sha256"), "is the hash of an empty key (was $KEY set?)");
        }
        if !hashes.insert(sha256) {
            errors.push(at("sha256"), "duplicates an earlier key's hash");
        }
        let scopes = scopes(errors, &at("scopes"), key.scopes.as_deref());
        keys.push(ApiKeyConfig {
            id: key.id.clone(),
            sha256,
            scopes,
        });
    }
    keys
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let mut out = [0u8; 32];
    let valid = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(
            "expected 64 hex digits (the key's SHA-256: printf %s \"$KEY\" | sha256sum)".to_owned(),
        );
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn scopes(errors: &mut Errors, at: &str, raw: Option<&[String]>) -> Vec<String> {
    raw.unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, scope)| {
            let ok = !scope.is_empty() && scope.bytes().all(|b| b.is_ascii_graphic());
            if ok {
                Some(scope.clone())
            } else {
                errors.push(format!("{at}[{i}]"), "expected a scope without spaces");
                None
            }
        })
        .collect()
}

/// A route that asks for credentials needs something that can verify them.
pub(super) fn check_route_verifiable(
    errors: &mut Errors,
    index: usize,
    access: &RouteAccess,
    auth: &AuthConfig,
) {
    let asks = matches!(access.auth, Some(AuthMode::Required | AuthMode::Optional))
        || !access.require_claims.is_empty()
        || !access.require_scopes.is_empty();
    if asks && !auth.can_verify() {
        errors.push(
            format!("routes[{index}].auth"),
            "needs JWT_SECRET (auth.jwt_secret), [[auth.issuers]] or [[auth.api_keys]]",
        );
    }
}

/// A route's access keys. `methods` are the route's own, the default for CORS.
pub(super) fn route_access(
    errors: &mut Errors,
    index: usize,
    raw: &RawRoute,
    methods: Option<&[Method]>,
) -> RouteAccess {
    let at = |key: &str| format!("routes[{index}].{key}");
    let auth = raw.auth.as_ref().and_then(|mode| match mode {
        RawAuthMode::Flag(true) => Some(AuthMode::Required),
        RawAuthMode::Flag(false) => Some(AuthMode::Off),
        RawAuthMode::Word(word) if word == "optional" => Some(AuthMode::Optional),
        RawAuthMode::Word(word) => {
            errors.push(
                at("auth"),
                format!("expected true, false or \"optional\", got {word:?}"),
            );
            None
        }
    });
    let require_claims: Vec<(String, String)> = raw
        .require_claims
        .iter()
        .flatten()
        .map(|(claim, value)| (claim.clone(), value.clone()))
        .collect();
    let require_scopes = scopes(errors, &at("require_scopes"), raw.require_scopes.as_deref());
    if auth == Some(AuthMode::Off) && !(require_claims.is_empty() && require_scopes.is_empty()) {
        errors.push(
            at("auth"),
            "is false, but the route requires claims or scopes",
        );
    }
    let token_cookie = raw
        .token_cookie
        .as_deref()
        .and_then(|name| errors.check(&at("token_cookie"), parse_cookie_name(name)));
    let cors = raw
        .cors
        .as_ref()
        .and_then(|cors| super::cors::cors(errors, &at("cors"), cors, methods));
    let ips = |errors: &mut Errors, key: &str, list: &Option<Vec<String>>| {
        if list.as_ref().is_some_and(Vec::is_empty) {
            errors.push(at(key), "is empty: leave it out instead (an empty allow list reads as \"nobody\" but would mean \"anybody\")");
        }
        let items: Vec<&str> = list.iter().flatten().map(String::as_str).collect();
        parse_cidrs(errors, &at(key), &items)
    };
    RouteAccess {
        auth,
        require_claims,
        require_scopes,
        strip_authorization: raw.strip_authorization.unwrap_or(false),
        token_query: raw.token_query.unwrap_or(false),
        token_cookie,
        cors,
        allow_ips: ips(errors, "allow_ips", &raw.allow_ips),
        deny_ips: ips(errors, "deny_ips", &raw.deny_ips),
    }
}
