use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied())
}

fn errors_of(toml: Option<&str>, pairs: &[(&str, &str)]) -> Vec<String> {
    match Config::from_sources(toml, &env(pairs)) {
        Ok(_) => vec![],
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults_match_the_seeds() {
    let config = Config::from_sources(None, &env(&[])).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(config.server.env, Environment::Development);
    assert_eq!(config.log.level, LogLevel::Info);
    assert!(!config.auth.required);
    assert_eq!(config.rate_limit.policy.max, 200);
    assert_eq!(config.rate_limit.policy.window, Duration::from_secs(60));
    assert!(!config.cache.enabled);
    assert_eq!(config.cache.default_ttl, Duration::from_secs(5));
    assert_eq!(config.cache.max_body_bytes, 262_144);
    assert_eq!(config.websocket.max_buffered_bytes, 2_000_000);
    assert_eq!(config.websocket.ping_interval, Duration::from_secs(30));
    assert_eq!(
        config.pressure.max_event_loop_delay,
        Some(Duration::from_secs(1))
    );
    assert_eq!(config.pressure.max_rss, None);
    assert_eq!(config.server.max_request_body, 10 * 1024 * 1024);
    assert!(config.services.is_empty());
}

#[test]
fn seed_env_vars_are_read() {
    let config = Config::from_sources(
        None,
        &env(&[
            ("HOST", "127.0.0.1"),
            ("PORT", "9000"),
            ("LOG_LEVEL", "warn"),
            (
                "UPSTREAMS",
                r#"{"users":["http://localhost:3001/base/"],"billing":["http://a:1","https://b"]}"#,
            ),
            ("HTTP_PROXY_TIMEOUT_MS", "1500"),
            ("RATE_LIMIT_MAX", "10"),
            ("RATE_LIMIT_WINDOW_MS", "1000"),
            ("CACHE_ENABLED", "yes"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]),
    )
    .unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(config.log.level, LogLevel::Warn);
    let users = &config.services["users"];
    assert_eq!(users.upstreams[0].base_path, "/base");
    assert_eq!(users.upstreams[0].authority.as_str(), "localhost:3001");
    assert_eq!(users.response_timeout, Duration::from_millis(1500));
    assert_eq!(config.services["billing"].upstreams.len(), 2);
    assert_eq!(config.rate_limit.policy.max, 10);
    assert!(config.cache.enabled);
    assert_eq!(
        config.rate_limit.redis_url.as_deref(),
        Some("redis://127.0.0.1:6379")
    );
}

#[test]
fn production_requires_auth_and_a_secret() {
    let errors = errors_of(None, &[("NODE_ENV", "production")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("NODE_ENV: authentication is required"),
        "{errors:?}"
    );
    // The error names where production was said.
    let errors = errors_of(None, &[("SLUICE_ENV", "production")]);
    assert!(errors[0].starts_with("SLUICE_ENV: "), "{errors:?}");
    let errors = errors_of(Some("[server]\nenv = \"production\"\n"), &[]);
    assert!(errors[0].starts_with("server.env: "), "{errors:?}");
    let config = Config::from_sources(
        None,
        &env(&[("NODE_ENV", "production"), ("JWT_SECRET", &"s".repeat(32))]),
    )
    .unwrap();
    assert!(config.auth.required);
    let config = Config::from_sources(
        None,
        &env(&[("NODE_ENV", "production"), ("AUTH_REQUIRED", "off")]),
    )
    .unwrap();
    assert!(!config.auth.required);
}

#[test]
fn bad_env_values_name_their_variable() {
    let errors = errors_of(
        None,
        &[
            ("PORT", "eighty"),
            ("AUTH_REQUIRED", "maybe"),
            ("JWT_SECRET", "short"),
            ("UPSTREAMS", r#"{"a":["localhost:3000"],"b":["ftp://x"]}"#),
            ("LOG_LEVEL", "loud"),
            ("RATE_LIMIT_MAX", "0"),
        ],
    );
    let keys: Vec<&str> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            "PORT",
            "LOG_LEVEL",
            "AUTH_REQUIRED",
            "JWT_SECRET",
            "RATE_LIMIT_MAX",
            "UPSTREAMS.a[0]",
            "UPSTREAMS.b[0]"
        ],
        "{errors:#?}"
    );
}

#[test]
fn env_overrides_the_file() {
    let toml = r#"
        [server]
        listen = "127.0.0.1:7000"
        [log]
        level = "debug"
        [services.users]
        upstreams = ["http://127.0.0.1:1"]
    "#;
    let config = Config::from_sources(
        Some(toml),
        &env(&[
            ("PORT", "7001"),
            ("UPSTREAMS", r#"{"users":["http://127.0.0.1:2"]}"#),
        ]),
    )
    .unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:7001".parse().unwrap());
    assert_eq!(config.log.level, LogLevel::Debug);
    assert_eq!(
        config.services["users"].upstreams[0].authority.as_str(),
        "127.0.0.1:2"
    );
}

/// A Redis URL means shared counts: `REDIS_URL` wins over a `store = "memory"` in the file (an
/// instance counting alone would let N instances allow N times the limit), and so does a
/// `redis_url` beside it (DESIGN: "implies store = redis").
#[test]
fn a_redis_url_means_the_redis_store() {
    let memory = "[rate_limit]\nstore = \"memory\"\n";
    let url = ("REDIS_URL", "redis://127.0.0.1:6379");
    let config = Config::from_sources(Some(memory), &env(&[url])).unwrap();
    assert_eq!(config.rate_limit.store, StoreKind::Redis);
    let both = format!("{memory}redis_url = \"redis://127.0.0.1:6379\"\n");
    let config = Config::from_sources(Some(&both), &env(&[])).unwrap();
    assert_eq!(config.rate_limit.store, StoreKind::Redis);
    let config = Config::from_sources(Some(memory), &env(&[])).unwrap();
    assert_eq!(config.rate_limit.store, StoreKind::Memory);
}

#[test]
fn every_file_error_is_reported_with_its_path() {
    let toml = r#"
        [server]
        shutdown_grace = "soon"
        [services.users]
        upstreams = ["http://ok:1", "localhost:3000"]
        [[routes]]
        path = "/a"
        service = "billing"
        [[routes]]
        path = "b"
        service = "users"
        methods = ["GET", "N O"]
        rewrite = { pattern = "(", replace = "" }
    "#;
    let errors = errors_of(Some(toml), &[]);
    let keys: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            "server.shutdown_grace",
            "services.users.upstreams[1]",
            "routes[0].service",
            "routes[1].path",
            "routes[1].methods[1]",
            "routes[1].rewrite.pattern",
        ],
        "{errors:#?}"
    );
}

#[test]
fn every_unknown_key_is_refused_by_its_path() {
    let toml = r#"
        [server]
        listen = "0.0.0.0:1"
        listen_port = 3
        [services.s]
        upstreams = ["http://127.0.0.1:1"]
        timeout = "1s"
        [[routes]]
        path = "/a"
        service = "s"
        [[routes]]
        path = "/b"
        servce = "s"
        [[routes]]
        path = "/c"
        service = "nope"
        [logging]
        level = "info"
    "#;
    let errors = errors_of(Some(toml), &[]);
    let mut keys: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "logging",
            "routes[1].servce",
            // The misspelt key is read as missing, and that is an error of its own.
            "routes[1].service",
            "routes[2].service",
            "server.listen_port",
            "services.s.timeout"
        ],
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unknown field `listen_port`")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("unknown field `servce`")),
        "{errors:?}"
    );
}

#[test]
fn toml_syntax_errors_name_their_line() {
    let errors = errors_of(
        Some("[server]\nlisten = \"0.0.0.0:1\"\nbroken = = 3\n"),
        &[],
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("line 3: "), "{errors:?}");
}

#[test]
fn route_hosts_are_plain_names() {
    let toml = r#"
        [services.s]
        upstreams = ["http://127.0.0.1:1"]
        [[routes]]
        path = "/a"
        service = "s"
        host = "api.example.com:8080"
        [[routes]]
        path = "/b"
        service = "s"
        host = "API.Example.com"
        [[routes]]
        path = "/b"
        service = "s"
        match = "prefix"
        host = "api.example.com."
    "#;
    // The final dot of a fully qualified name is dropped (as from requests' hosts), so the
    // third route is the second's duplicate.
    let errors = errors_of(Some(toml), &[]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("routes[0].host: "), "{errors:?}");
    assert!(
        errors[1].starts_with("routes[2].path: duplicates"),
        "{errors:?}"
    );
}

#[test]
fn routes_are_normalised_and_duplicates_refused() {
    let toml = r#"
        [services.s]
        upstreams = ["http://127.0.0.1:1"]
        [[routes]]
        path = "/users/"
        service = "s"
        [[routes]]
        path = "/users"
        service = "s"
        [[routes]]
        path = "/users"
        match = "exact"
        service = "s"
    "#;
    let errors = errors_of(Some(toml), &[]);
    assert_eq!(
        errors,
        vec!["routes[1].path: duplicates an earlier route with the same path, match and host"]
    );
    let errors = errors_of(Some(&toml.replace("/users/\"", "/a/../b\"")), &[]);
    assert!(
        errors[0].starts_with("routes[0].path: path contains a '.'"),
        "{errors:?}"
    );
}

#[test]
fn sizes_and_durations_parse_in_the_file() {
    let toml = r#"
        [server]
        max_request_body = "1MiB"
        max_header_bytes = 4096
        header_read_timeout = "250ms"
        [services.s]
        upstreams = [{ url = "http://127.0.0.1:1", weight = 3 }]
        connect_timeout = "1s"
        response_timeout = "2s"
    "#;
    let config = Config::from_sources(Some(toml), &env(&[])).unwrap();
    assert_eq!(config.server.max_request_body, 1 << 20);
    assert_eq!(config.server.max_header_bytes, 4096);
    assert_eq!(
        config.server.header_read_timeout,
        Duration::from_millis(250)
    );
    assert_eq!(config.services["s"].upstreams[0].weight, 3);
    assert_eq!(
        config.services["s"].response_timeout,
        Duration::from_secs(2)
    );
}

#[test]
fn bad_value_types_name_their_key_and_what_was_expected() {
    let errors = errors_of(Some("[server]\nshutdown_grace = -5\n"), &[]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("server.shutdown_grace: "),
        "{errors:?}"
    );
    assert!(errors[0].contains("negative"), "{errors:?}");
    let errors = errors_of(Some("[server]\nmax_request_body = true\n"), &[]);
    assert!(
        errors[0].starts_with("server.max_request_body: "),
        "{errors:?}"
    );
    assert!(errors[0].contains("expected a size"), "{errors:?}");
}

#[test]
fn worker_threads_and_service_names_are_bounded() {
    let errors = errors_of(Some("[server]\nworker_threads = 100000\n"), &[]);
    assert!(
        errors[0].starts_with("server.worker_threads: must be between 1 and 1024"),
        "{errors:?}"
    );
    let errors = errors_of(None, &[("UPSTREAMS", r#"{"..":["http://127.0.0.1:1"]}"#)]);
    assert!(errors[0].starts_with("UPSTREAMS...: "), "{errors:?}");
}

#[test]
fn route_header_edits_cannot_touch_framing() {
    let toml = r#"
        [services.s]
        upstreams = ["http://127.0.0.1:1"]
        [[routes]]
        path = "/a"
        service = "s"
        response_headers = { set = { "content-length" = "5" }, remove = ["transfer-encoding"] }
    "#;
    let errors = errors_of(Some(toml), &[]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors.iter().all(|e| e.contains("managed by the gateway")),
        "{errors:#?}"
    );
}

#[test]
fn empty_upstream_lists_and_unbounded_sizes_are_refused() {
    let errors = errors_of(None, &[("UPSTREAMS", r#"{"users":[]}"#)]);
    assert_eq!(
        errors,
        vec!["UPSTREAMS.users: needs at least one upstream URL"]
    );
    let errors = errors_of(
        Some("[server]\nmax_header_bytes = \"1GiB\"\nmax_connections = 99999999\n"),
        &[],
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn pool_keys_are_checked_by_their_path() {
    let toml = r#"
        [breaker]
        consecutive_failures = 0
        failure_ratio = 1.5
        failure_statuses = [404, 503]
        [services.a]
        upstreams = ["http://127.0.0.1:1"]
        balancer = "fastest"
        max_retries = 11
        max_in_flight_per_endpoint = 0
        health_check = { interval = "1s" }
        [services.b]
        upstreams = ["http://127.0.0.1:2"]
        hash_key = "header:x-user"
        breaker = { window = "2m" }
        [services.c]
        upstreams = ["http://127.0.0.1:3"]
        balancer = "hash"
        hash_key = "cookie:"
        health_check = { path = "/h", interval = "1s", timeout = "2s" }
    "#;
    let errors = errors_of(Some(toml), &[]);
    for expected in [
        "breaker.consecutive_failures: must be at least 1",
        "breaker.failure_ratio: must be above 0 and at most 1",
        "breaker.failure_statuses: only 5xx statuses can count as failures, got 404",
        "services.a.balancer: unknown balancer \"fastest\"",
        "services.a.max_retries: must be at most 10",
        "services.a.max_in_flight_per_endpoint: must be at least 1",
        "services.a.health_check.path: required",
        "services.b.hash_key: only used with balancer = \"hash\"",
        "services.b.breaker.window: must be whole seconds between 1s and 60s",
        "services.c.hash_key: expected \"ip\", \"header:<name>\" or \"cookie:<name>\"",
        "services.c.health_check.timeout: must not be longer than the interval",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 11, "{errors:#?}");
}

#[test]
fn too_many_upstreams_and_too_long_durations_are_config_errors() {
    let urls: Vec<String> = (0..257)
        .map(|i| format!("\"http://127.0.0.1:{}\"", 1000 + i))
        .collect();
    let upstreams = format!("{{\"big\":[{}]}}", urls.join(","));
    let toml = r#"
        [breaker]
        open_for = "30d"
        [services.a]
        upstreams = ["http://127.0.0.1:1"]
        response_timeout = 999999999999
        health_check = { path = "/h x" }
    "#;
    let errors = errors_of(
        Some(toml),
        &[
            ("UPSTREAMS", &upstreams),
            ("HTTP_PROXY_TIMEOUT_MS", "604800001"),
        ],
    );
    for expected in [
        "UPSTREAMS.big: has 257 upstreams; at most 256 are supported",
        "breaker.open_for: 30days is longer than the longest duration accepted (7 days)",
        "services.a.response_timeout: ",
        "services.a.health_check.path: expected a path and optional query without '#'",
        "HTTP_PROXY_TIMEOUT_MS: ",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn upstream_tables_and_lists_are_checked_key_by_key() {
    let toml = r#"
        [services.typo]
        upstreams = [{ url = "http://127.0.0.1:1", wieght = 2 }]
        [services.twice]
        upstreams = ["http://127.0.0.1:3", { url = "http://127.0.0.1:3/", weight = 2 }]
        [services.shape]
        upstreams = ["http://127.0.0.1:4"]
        health_check = "/h"
    "#;
    let errors = errors_of(Some(toml), &[]);
    for expected in [
        "services.typo.upstreams[0].wieght: unknown field `wieght`, expected `url` or `weight`",
        "services.twice.upstreams[1]: http://127.0.0.1:3 is listed twice (first at [0])",
        "services.shape.health_check: invalid type: string \"/h\", expected a table",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn a_service_breaker_overrides_the_defaults_key_by_key() {
    let toml = r#"
        [breaker]
        consecutive_failures = 7
        open_for = "20s"
        [services.a]
        upstreams = ["http://127.0.0.1:1"]
        breaker = { open_for = "1m", failure_statuses = [502] }
        balancer = "hash"
        hash_key = "header:x-user"
        [services.b]
        upstreams = ["http://127.0.0.1:2"]
    "#;
    let config = Config::from_sources(Some(toml), &env(&[])).unwrap();
    let a = &config.services["a"];
    assert_eq!(a.breaker.consecutive_failures, 7);
    assert_eq!(a.breaker.open_for, Duration::from_secs(60));
    assert!(a.breaker.failure_statuses.contains(502));
    assert!(!a.breaker.failure_statuses.contains(500));
    assert_eq!(
        a.balancer,
        BalancerKind::Hash(HashKey::Header(HeaderName::from_static("x-user")))
    );
    let b = &config.services["b"];
    assert_eq!(b.breaker.open_for, Duration::from_secs(20));
    assert!(b.breaker.failure_statuses.contains(599));
    assert!(!b.breaker.failure_statuses.contains(499));
    assert_eq!(b.balancer, BalancerKind::P2cEwma);
    assert_eq!(b.max_retries, 2);
}

mod access;
mod limits;

#[test]
fn pressure_and_metrics_keys_are_checked() {
    let config = Config::from_sources(
        Some("[pressure]\nmax_in_flight = 500\nmax_rss = \"512MiB\"\n[metrics]\nenabled = false\n"),
        &env(&[]),
    )
    .unwrap();
    assert_eq!(config.pressure.max_in_flight, Some(500));
    assert_eq!(config.pressure.max_rss, Some(512 * 1024 * 1024));
    assert!(!config.metrics.enabled);
    let defaults = Config::from_sources(None, &env(&[])).unwrap();
    assert_eq!(defaults.pressure.max_in_flight, None);
    assert!(defaults.metrics.enabled);
    // 0 turns a check off, as the seeds' under-pressure did.
    let off = Config::from_sources(
        None,
        &env(&[
            ("UNDER_PRESSURE_MAX_EVENT_LOOP_DELAY_MS", "0"),
            ("UNDER_PRESSURE_MAX_RSS_BYTES", "0"),
        ]),
    )
    .unwrap();
    assert_eq!(off.pressure.max_event_loop_delay, None);
    assert_eq!(off.pressure.max_rss, None);
    let errors = errors_of(
        Some("[pressure]\nmax_in_flight = 0\n[metrics]\nenabled = \"yes\"\nscrape = 1\n"),
        &[],
    );
    for expected in [
        "pressure.max_in_flight: must be at least 1",
        "metrics.enabled",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{expected} in {errors:?}"
        );
    }
    let errors = errors_of(Some("[metrics]\nscrape = 1\n"), &[]);
    assert!(
        errors.iter().any(|e| e.starts_with("metrics.scrape")),
        "{errors:?}"
    );
}

/// Values that only failed later (every request a 502, a bind error at start, a route that
/// refuses everything) are config errors, one line each.
#[test]
fn late_failures_are_config_errors() {
    let toml = r#"
        [server]
        listen = "127.0.0.1:18082"
        admin_listen = "0.0.0.0:18082"
        [services.a]
        upstreams = ["http://127.0.0.1:abc", "http://127.0.0.1:65536", "http://127.0.0.1:+80",
                     "http://127.0.0.1:0", "http://[::1]:8080", "http://[::1]", "http://h:80"]
        [[routes]]
        path = "/x"
        service = "a"
        methods = []
        rewrite = { pattern = "(", replace = "/" }
    "#;
    let errors = errors_of(Some(toml), &[]);
    let port = "the port must be a number from 1 to 65535";
    assert_eq!(errors.len(), 7, "{errors:#?}");
    assert!(errors[0]
        .starts_with("server.admin_listen: 0.0.0.0:18082 is the public listener's own port"));
    for (i, error) in errors[1..5].iter().enumerate() {
        assert!(
            error.starts_with(&format!("services.a.upstreams[{i}]: {port}")),
            "{error}"
        );
    }
    assert!(
        errors[5].starts_with("routes[0].methods: is empty"),
        "{}",
        errors[5]
    );
    assert_eq!(
        errors[6],
        "routes[0].rewrite.pattern: invalid regex \"(\": unclosed group"
    );
    // A different port, or the same port on another address, is fine.
    for admin in ["127.0.0.1:18083", "127.0.0.2:18082"] {
        let toml = format!("[server]\nlisten = \"127.0.0.1:18082\"\nadmin_listen = \"{admin}\"\n");
        assert!(errors_of(Some(&toml), &[]).is_empty(), "{admin}");
    }
}

/// Several bad keys in one table are several errors: serde stops at the first, so each is
/// taken out and the table read again (found by a tester: three errors in `[server]` printed
/// one, six misspelt keys in a route printed one).
#[test]
fn every_error_in_one_table_is_reported() {
    let toml = r#"
        [server]
        listen = "0.0.0.0:99999"
        max_connections = 0
        max_request_body = -5
        [services.a]
        upstreams = ["http://127.0.0.1:1"]
        [[routes]]
        path = "/x"
        service = "a"
        strip_prefx = true
        methodz = ["GET"]
        cache = { tll = "5s" }
        rate_limit = { maxx = 3 }
        [[routes]]
        path = 5
        service = "a"
    "#;
    let errors = errors_of(Some(toml), &[]);
    let mut keys: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "routes[0].cache.tll",
            "routes[0].methodz",
            "routes[0].rate_limit.maxx",
            "routes[0].strip_prefx",
            // Once: not also "is required" for the key that could not be read.
            "routes[1].path",
            "server.listen",
            "server.max_connections",
            "server.max_request_body",
        ],
        "{errors:#?}"
    );
}

/// A rewrite's replacement may not add a query, nor name a group its pattern lacks (regex would
/// put an empty string there in silence).
#[test]
fn rewrite_replacements_name_real_groups_and_make_paths_only() {
    let route = |replace: &str| {
        format!(
            "[services.a]\nupstreams = [\"http://127.0.0.1:1\"]\n[[routes]]\npath = \"/old\"\n\
             service = \"a\"\nrewrite = {{ pattern = '^/old/(?P<rest>.*)$', replace = '{replace}' }}\n"
        )
    };
    for good in [
        "/new/$1",
        "/new/${rest}",
        "/new/$rest/x",
        "/cost$$/$1",
        "/new",
    ] {
        assert!(errors_of(Some(&route(good)), &[]).is_empty(), "{good}");
    }
    for (bad, why) in [
        ("/new/$1?injected=1", "a rewrite makes the path only"),
        ("/new/#x", "a rewrite makes the path only"),
        ("/new/$2", "names the group $2"),
        ("/new/${nope}", "names the group $nope"),
        ("/new/$1a", "names the group $1a"),
        ("/new/${rest", "without its '}'"),
        ("/new/${}", "an empty group name"),
    ] {
        let errors = errors_of(Some(&route(bad)), &[]);
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(
            errors[0].starts_with("routes[0].rewrite.replace: ") && errors[0].contains(why),
            "{bad}: {errors:?}"
        );
    }
}

/// Type errors say what is wanted in words, not Rust's type names.
#[test]
fn type_errors_name_ranges_not_rust_types() {
    let errors = errors_of(
        Some("[server]\nmax_connections = -1\n[services.a]\nupstreams = [{ url = \"http://a:1\", weight = -3 }]\n"),
        &[],
    );
    assert_eq!(
        errors,
        [
            "server.max_connections: invalid value: integer `-1`, expected a whole number, 0 or more",
            "services.a.upstreams[0].weight: invalid value: integer `-3`, expected a whole number from 0 to 4294967295",
        ],
        "{errors:#?}"
    );
}

/// A bad service name is reported where it was written.
#[test]
fn a_bad_service_name_is_named_where_it_was_written() {
    let errors = errors_of(None, &[("UPSTREAMS", r#"{"b c":["http://127.0.0.1:1"]}"#)]);
    assert!(
        errors[0].starts_with("UPSTREAMS.b c: service names"),
        "{errors:?}"
    );
    let errors = errors_of(
        Some("[services.\"b c\"]\nupstreams = [\"http://a:1\"]\n"),
        &[],
    );
    assert!(
        errors[0].starts_with("services.b c: service names"),
        "{errors:?}"
    );
}

/// Taking a bad key out never hides the other errors of its section: a misspelt required key
/// is reported with the `missing field` it leaves (it is missing), the rest of the section is
/// still read, and an array taken out for a bad element is not also "empty".
#[test]
fn a_bad_key_in_a_nested_table_hides_nothing_else() {
    let keys = |toml: &str| -> Vec<String> {
        errors_of(Some(toml), &[])
            .iter()
            .map(|e| e.split(": ").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        keys("[auth]\nrequired = \"yes\"\napi_keys = [{ idx = \"a\" }]\n"),
        ["auth.api_keys[0].idx", "auth.api_keys[0]", "auth.required"]
    );
    assert_eq!(keys("[tls]\nbogus = 1\n"), ["tls.bogus", "tls"]);
    assert_eq!(
        keys("[services.x]\nupstreams = [{ url = 5, weight = 2 }]\n"),
        ["services.x.upstreams[0].url"]
    );
    assert_eq!(
        keys(
            "[services.x]\nupstreams = [\"http://a:1\"]\n[[routes]]\npath = \"/r\"\nservice = \"x\"\n\
             rewrite = { pattern = \"x\", replac = \"y\" }\nzzz = 1\nmethods = []\n"
        ),
        [
            "routes[0].rewrite.replac",
            "routes[0].rewrite",
            "routes[0].zzz",
            "routes[0].methods"
        ]
    );
}
