use super::*;

#[test]
fn rate_limit_settings_are_checked_by_key() {
    let toml = r#"
[rate_limit]
algorithm = "leaky"
key = "cookie:x"
burst = 5
store = "redis"
on_store_error = "panic"
redis_timeout = "10s"
[services.s]
upstreams = ["http://127.0.0.1:1"]
[[routes]]
path = "/a"
service = "s"
rate_limit = { max = 0, window = "0s", algorithm = "gcra", burst = 0, key = "header:bad header" }
[[routes]]
path = "/b"
service = "s"
rate_limit = true
"#;
    let errors = errors_of(Some(toml), &[]).join("\n");
    for expected in [
        "rate_limit.algorithm: expected \"sliding_window\", \"gcra\" or \"fixed_window\"",
        "rate_limit.key: expected \"ip\", \"user\", \"api_key\" or \"header:<name>\"",
        "rate_limit.burst: applies only to algorithm = \"gcra\"",
        "rate_limit.store: is redis, but no REDIS_URL",
        "rate_limit.on_store_error: expected \"local\", \"allow\" or \"deny\"",
        "rate_limit.redis_timeout: must be at most 5s",
        "routes[0].rate_limit.max: must be at least 1",
        "routes[0].rate_limit.window: must be at least 1ms",
        "routes[0].rate_limit.burst: must be at least 1",
        "routes[0].rate_limit.key: invalid header name",
        "routes[1].rate_limit: expected false or a table",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    let redis =
        Config::from_sources(None, &env(&[("REDIS_URL", "redis://127.0.0.1:6379")])).unwrap();
    assert_eq!(
        redis.rate_limit.store,
        StoreKind::Redis,
        "REDIS_URL selects the Redis store"
    );
}

#[test]
fn route_rate_limits_name_their_keys_and_identity_keys_need_auth() {
    let toml = r#"
[services.s]
upstreams = ["http://127.0.0.1:1"]
[[routes]]
path = "/a"
service = "s"
rate_limit = { maxx = 3 }
[[routes]]
path = "/b"
service = "s"
rate_limit = { max = 3, key = "user" }
[[routes]]
path = "/c"
service = "s"
rate_limit = { algorithm = "gcra", burst = 9223372036854775807 }
"#;
    let errors = errors_of(Some(toml), &[]).join("\n");
    for expected in [
        "routes[0].rate_limit.maxx: unknown field `maxx`",
        "routes[1].rate_limit.key: counts by identity, but routes[1] (/b) does not authenticate",
        "routes[2].rate_limit.burst: must be at most 1000000000",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}
