//! `[auth]` and the routes' access keys: each mistake named by its key.

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn auth_mistakes_are_named_by_key() {
    let toml = r#"
[auth]
api_key_header = "bad header"
leeway = "2h"
[[auth.issuers]]
issuer = "https://idp/"
algorithms = ["HS256", "none"]
[[auth.issuers]]
issuer = "https://idp2/"
audiences = ["api"]
jwks_url = "ftp://idp2/keys"
keys = [{ algorithm = "RS256", pem = "not a key" }, { algorithm = "ES256" }]
[[auth.issuers]]
issuer = "https://idp3/"
audiences = []
algorithms = []
jwks_url = "http://idp3.example.com/keys"
[[auth.api_keys]]
id = "a b"
sha256 = "abc"
[services.s]
upstreams = ["http://127.0.0.1:1"]
[[routes]]
path = "/x"
service = "s"
auth = "sometimes"
cors = { allow_origins = ["*", "https://*.com", "https://a.example.com/path"], allow_credentials = true }
allow_ips = ["10.0.0.0/33"]
token_cookie = "a;b"
"#;
    let errors = errors_of(Some(toml), &[]).join("\n");
    for expected in [
        "auth.api_key_header: invalid header name",
        "auth.leeway: must be at most 1h",
        "auth.issuers[0].algorithms[0]: expected one of RS256",
        "auth.issuers[0].algorithms[1]: expected one of RS256",
        "auth.issuers[0]: needs a jwks_url or at least one entry in keys",
        "auth.issuers[0].audiences: is required",
        "auth.issuers[1].jwks_url: expected an https URL",
        "auth.issuers[2].audiences: is required",
        "auth.issuers[2].algorithms: must name at least one algorithm",
        "auth.issuers[2].jwks_url: must be https (plain http is allowed only for loopback hosts)",
        "auth.issuers[1].keys[0].pem: not a RS256 public key in PEM",
        "auth.issuers[1].keys[1]: expected exactly one of pem and pem_file",
        "auth.api_keys[0].id: expected 1 to 128 printable ASCII characters",
        "auth.api_keys[0].sha256: expected 64 hex digits",
        "routes[0].auth: expected true, false or \"optional\", got \"sometimes\"",
        "routes[0].cors.allow_origins[1]: a wildcard needs a domain of at least two labels",
        "routes[0].cors.allow_origins[2]: expected \"*\" or an origin",
        "routes[0].cors.allow_origins: \"*\" cannot be used with allow_credentials",
        "routes[0].allow_ips[0]: expected an address or CIDR",
        "routes[0].token_cookie: invalid cookie name",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn risky_access_settings_are_refused() {
    let toml = r#"
[auth]
claims_to_headers = { sub = "x-id", email = "X-ID", role = "cookie", trace = "traceparent" }
[[auth.issuers]]
issuer = "https://idp/"
audiences = ["api"]
jwks_url = "https://idp/jwks"
jwks_min_interval = "10ms"
keys = [
  { kid = "../a", algorithm = "RS256", pem = "-----BEGIN PRIVATE KEY-----\nMII=\n-----END PRIVATE KEY-----\n" },
  { kid = "../a", algorithm = "RS256", pem = "x" },
]
[[auth.issuers]]
issuer = "https://idp2/"
audiences = ["api"]
jwks_url = "https://idp2/jwks"
jwks_refresh = "5s"
jwks_min_interval = "10s"
[[auth.api_keys]]
id = "unset"
sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
[services.s]
upstreams = ["http://127.0.0.1:1"]
[[routes]]
path = "/x"
service = "s"
allow_ips = []
cors = { allow_origins = ["https://a.example.com"], allow_methods = [] }
"#;
    let errors = errors_of(Some(toml), &[]).join("\n");
    for expected in [
        "auth.claims_to_headers.role: cookie has its own meaning",
        "auth.claims_to_headers.trace: traceparent has its own meaning",
        "is already filled from another claim",
        "auth.issuers[0].jwks_min_interval: must be at least 100ms",
        "auth.issuers[0].keys[0].pem: is a private key",
        "auth.issuers[0].keys[1].kid: expected letters",
        "auth.issuers[1].jwks_refresh: must be at least jwks_min_interval",
        "auth.api_keys[0].sha256: is the hash of an empty key",
        "routes[0].allow_ips: is empty",
        "routes[0].cors.allow_methods: must name at least one method",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn credentials_demanded_with_nothing_to_verify_them_are_errors() {
    let routes = "[services.s]\nupstreams = [\"http://127.0.0.1:1\"]\n\
                  [[routes]]\npath = \"/x\"\nservice = \"s\"\nauth = true\n\
                  [[routes]]\npath = \"/y\"\nservice = \"s\"\nauth = false\nrequire_scopes = [\"r\"]\n";
    let errors = errors_of(Some(routes), &[]).join("\n");
    assert!(
        errors.contains("routes[0].auth: needs JWT_SECRET"),
        "{errors}"
    );
    assert!(
        errors.contains("routes[1].auth: is false, but the route requires"),
        "{errors}"
    );
    let admin = errors_of(Some("[auth]\nprotect_admin = true\n"), &[]).join("\n");
    assert!(
        admin.contains("auth.protect_admin: admin protection needs"),
        "{admin}"
    );
    // An issuer alone is enough for AUTH_REQUIRED.
    let issuer = "[[auth.issuers]]\nissuer = \"https://idp/\"\naudiences = [\"api\"]\n\
                  jwks_url = \"https://idp/jwks\"\n";
    assert!(errors_of(Some(issuer), &[("AUTH_REQUIRED", "true")]).is_empty());
    let loopback = issuer.replace("https://idp/jwks", "http://127.0.0.1:9/jwks");
    assert!(
        errors_of(Some(&loopback), &[]).is_empty(),
        "plain http on loopback is fine"
    );
    let header = errors_of(Some("[auth]\napi_key_header = \"Authorization\"\n"), &[]).join("\n");
    assert!(
        header.contains("auth.api_key_header: authorization cannot carry API keys"),
        "{header}"
    );
}

#[test]
fn access_defaults_follow_the_seed_rule() {
    let config = Config::from_sources(
        Some("[services.s]\nupstreams = [\"http://127.0.0.1:1\"]\n[[routes]]\npath = \"/x\"\nservice = \"s\"\ncors = { allow_origins = [\"https://a.example.com\"] }\n"),
        &env(&[("AUTH_REQUIRED", "yes"), ("JWT_SECRET", SECRET)]),
    )
    .unwrap();
    assert!(
        config.auth.protect_admin,
        "admin is protected when auth is required"
    );
    assert_eq!(config.auth.leeway, Duration::from_secs(60));
    assert_eq!(config.auth.api_key_header.as_str(), "x-api-key");
    let access = &config.routes[0].access;
    assert_eq!(access.auth, None, "routes follow [auth] required");
    let cors = access.cors.as_ref().unwrap();
    assert_eq!(cors.max_age, Duration::from_secs(600));
    assert!(!cors.credentials);
    assert_eq!(cors.methods.len(), 6);
    let open = Config::from_sources(None, &env(&[])).unwrap();
    assert!(!open.auth.protect_admin);
}
