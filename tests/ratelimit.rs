//! Rate limiting with the memory store: the count, the 429 and its headers, window reset,
//! separate key spaces per route, keys by user, X-Forwarded-For believed only from trusted
//! proxies, headers on streamed answers.

use std::time::Duration;

use bytes::Bytes;

use crate::support::upstream::ReplyBody;
use crate::support::{client, error_body, service, Reply, TestGateway, Upstream};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

async fn gateway(up: &Upstream, limits: &str, extra: &str) -> TestGateway {
    let toml = format!(
        "[rate_limit]\n{limits}\n[auth]\njwt_secret = \"{SECRET}\"\n{}{extra}",
        service("s", &[up.url()])
    );
    TestGateway::start(&toml, &[]).await
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn a_client_over_the_limit_gets_429_and_nothing_goes_upstream() {
    let up = Upstream::ok().await;
    let gw = gateway(
        &up,
        "max = 3\nwindow = \"1m\"\nalgorithm = \"fixed_window\"",
        "",
    )
    .await;
    for left in ["2", "1", "0"] {
        let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), "3");
        assert_eq!(header(&response, "x-ratelimit-remaining"), left);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"default\";q=3;w=60"
        );
        assert!(header(&response, "ratelimit").starts_with(&format!("\"default\";r={left};t=")));
    }
    let refused = client()
        .post(gw.url("/api/s/x"))
        .body("a body that must not be forwarded")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert!(
        refused.headers().get("connection").is_none(),
        "a small body is drained, not closed on"
    );
    error_body(refused, "rate_limited").await;
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn the_count_starts_again_when_the_window_ends() {
    let up = Upstream::ok().await;
    let gw = gateway(
        &up,
        "max = 2\nwindow = \"1s\"\nalgorithm = \"fixed_window\"",
        "",
    )
    .await;
    let call = || async { client().get(gw.url("/api/s/x")).send().await.unwrap() };
    // Two fit in a window; a window may end meanwhile, so look for the refusal a little on.
    let mut refused = None;
    for _ in 0..5 {
        let response = call().await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a third request in one window was allowed");
    let wait: u64 = header(&refused, "retry-after").parse().unwrap();
    assert_eq!(wait, 1);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(call().await.status(), 200, "a new window");
}

#[tokio::test]
async fn routes_with_their_own_limit_have_their_own_key_space() {
    let up = Upstream::ok().await;
    let routes = r#"
[[routes]]
path = "/search"
service = "s"
rate_limit = { max = 2 }
[[routes]]
path = "/upload"
service = "s"
rate_limit = { max = 1, window = "1h" }
[[routes]]
path = "/health-proxy"
service = "s"
rate_limit = false
[[routes]]
path = "/other"
service = "s"
"#;
    let gw = gateway(&up, "max = 3\nwindow = \"1m\"", routes).await;
    let status = |path: &str| {
        let request = client().get(gw.url(path));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        [
            status("/search").await,
            status("/search").await,
            status("/search").await
        ],
        [200, 200, 429]
    );
    assert_eq!(
        [status("/upload").await, status("/upload").await],
        [200, 429],
        "not limited by /search"
    );
    // Routes without a limit of their own share the default budget.
    assert_eq!(
        [
            status("/api/s/a").await,
            status("/other").await,
            status("/api/s/b").await,
            status("/other").await
        ],
        [200, 200, 200, 429]
    );
    let unlimited = client().get(gw.url("/health-proxy")).send().await.unwrap();
    assert_eq!(unlimited.status(), 200);
    assert!(unlimited.headers().get("x-ratelimit-limit").is_none());
    for _ in 0..5 {
        assert_eq!(status("/health-proxy").await, 200);
    }
    // Ops endpoints are never limited.
    for _ in 0..5 {
        assert_eq!(status("/healthz").await, 200);
    }
}

#[tokio::test]
async fn users_are_counted_apart_and_anonymous_requests_by_address() {
    let up = Upstream::ok().await;
    let route = "[[routes]]\npath = \"/me\"\nservice = \"s\"\nauth = \"optional\"\n\
                 rate_limit = { max = 1, key = \"user\" }\n";
    let gw = gateway(&up, "max = 100\nwindow = \"1m\"", route).await;
    let call = |sub: Option<&str>| {
        let mut request = client().get(gw.url("/me"));
        if let Some(sub) = sub {
            let token = sluice::token::mint(SECRET, sub, Duration::from_secs(60), &[]).unwrap();
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        [call(Some("ann")).await, call(Some("ann")).await],
        [200, 429]
    );
    assert_eq!(
        [call(Some("bob")).await, call(Some("bob")).await],
        [200, 429]
    );
    assert_eq!(
        [call(None).await, call(None).await],
        [200, 429],
        "by address"
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let up = Upstream::ok().await;
    let untrusted = gateway(&up, "max = 2\nwindow = \"1m\"", "").await;
    let from = |gw: &TestGateway, xff: &str| {
        let request = client()
            .get(gw.url("/api/s/x"))
            .header("x-forwarded-for", xff);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Spoofed addresses from an untrusted peer all count as that peer.
    assert_eq!(
        [
            from(&untrusted, "1.1.1.1").await,
            from(&untrusted, "2.2.2.2").await,
            from(&untrusted, "3.3.3.3").await
        ],
        [200, 200, 429]
    );
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[rate_limit]\nmax = 2\nwindow = \"1m\"\n{}",
        service("s", &[up.url()])
    );
    let trusted = TestGateway::start(&toml, &[]).await;
    assert_eq!(
        [
            from(&trusted, "1.1.1.1").await,
            from(&trusted, "2.2.2.2").await,
            from(&trusted, "1.1.1.1").await,
            from(&trusted, "1.1.1.1").await
        ],
        [200, 200, 200, 429]
    );
}

#[tokio::test]
async fn streamed_answers_carry_the_limit_headers() {
    let chunks = vec![Bytes::from("data: one\n\n"), Bytes::from("data: two\n\n")];
    let up = Upstream::start(move |_| {
        Reply::ok("")
            .header("content-type", "text/event-stream")
            .body(ReplyBody::Chunks(chunks.clone(), Duration::from_millis(50)))
    })
    .await;
    let gw = gateway(&up, "max = 5\nwindow = \"1m\"", "").await;
    let response = client().get(gw.url("/sse/s/events")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "4");
    assert!(
        response.headers().get("content-length").is_none(),
        "streamed"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("data: two"), "{body}");
}

// --- the Redis store, against a real redis-server ---

use crate::support::process::{gateway_command, start};
use crate::support::redis::Redis;
use crate::support::{admin_stats, closed_port};

async fn redis_gateway(up: &Upstream, redis: &Redis, limits: &str) -> TestGateway {
    let toml = format!(
        "[rate_limit]\nredis_url = \"{}\"\n{limits}\n{}",
        redis.url(),
        service("s", &[up.url()])
    );
    TestGateway::start(&toml, &[]).await
}

async fn wait_until_redis_answers(gw: &TestGateway, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        // A request lets the breaker probe; the stats say whether the probe got through.
        let _ = client().get(gw.url("/api/s/probe")).send().await.unwrap();
        if admin_stats(gw).await["rateLimit"]["redis"]["available"] == true {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Redis was not used again within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_gateway_processes_sharing_redis_enforce_one_limit() {
    let up = Upstream::ok().await;
    let redis = Redis::start();
    let ports = [closed_port(), closed_port()];
    let mut gateways = Vec::new();
    for port in ports {
        let mut command = gateway_command(port);
        command
            .env("UPSTREAMS", format!(r#"{{"s":["{}"]}}"#, up.url()))
            .env("REDIS_URL", redis.url())
            .env("RATE_LIMIT_MAX", "100")
            .env("RATE_LIMIT_WINDOW_MS", "3600000")
            .env("LOG_LEVEL", "warn");
        gateways.push(start(command, port).await);
    }
    // 150 requests to each, 30 at a time, the two instances interleaved.
    let client = client();
    let mut statuses = Vec::new();
    let all: Vec<usize> = (0..300).collect();
    for batch in all.chunks(30) {
        let calls = batch.iter().map(|i| {
            let url = format!("http://127.0.0.1:{}/api/s/x", ports[i % 2]);
            let request = client.get(url);
            async move { request.send().await.unwrap().status().as_u16() }
        });
        statuses.extend(futures_util::future::join_all(calls).await);
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(allowed + refused, 300, "{statuses:?}");
    assert!(
        (99..=101).contains(&allowed),
        "{allowed} allowed across two instances"
    );
    assert_eq!(up.count(), allowed);
    drop(gateways);
}

#[tokio::test]
async fn a_redis_crash_costs_no_errors_and_sharing_resumes_when_it_is_back() {
    let up = Upstream::ok().await;
    let mut redis = Redis::start();
    let limits = "max = 5\nwindow = \"1h\"\nkey = \"header:x-client\"";
    let (a, b) = (
        redis_gateway(&up, &redis, limits).await,
        redis_gateway(&up, &redis, limits).await,
    );
    let call = |gw: &TestGateway, who: &str| {
        let request = client().get(gw.url("/api/s/x")).header("x-client", who);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..5 {
        assert_eq!(call(&a, "ann").await, 200);
    }
    assert_eq!(call(&b, "ann").await, 429, "b sees a's count");
    redis.kill();
    // Counting goes local in each instance: no 5xx, limits per instance.
    let mut during = Vec::new();
    for _ in 0..6 {
        during.push(call(&a, "bob").await);
    }
    assert!(during.iter().all(|s| *s == 200 || *s == 429), "{during:?}");
    assert_eq!(
        during.iter().filter(|s| **s == 200).count(),
        5,
        "{during:?}"
    );
    redis.restart();
    let back = std::time::Instant::now();
    wait_until_redis_answers(&a, Duration::from_secs(5)).await;
    wait_until_redis_answers(
        &b,
        Duration::from_secs(5) - back.elapsed().min(Duration::from_secs(4)),
    )
    .await;
    // Shared again (the restarted Redis starts empty).
    for _ in 0..5 {
        assert_eq!(call(&a, "cat").await, 200);
    }
    assert_eq!(call(&b, "cat").await, 429);
}

#[tokio::test]
async fn a_frozen_redis_is_left_alone_after_one_timeout() {
    let up = Upstream::ok().await;
    let redis = Redis::start();
    let gw = redis_gateway(&up, &redis, "max = 1000\nwindow = \"1h\"").await;
    assert_eq!(
        client()
            .get(gw.url("/api/s/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    redis.freeze();
    let started = std::time::Instant::now();
    let mut slow = 0;
    for _ in 0..40 {
        let one = std::time::Instant::now();
        let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
        assert_eq!(response.status(), 200, "on_store_error = local");
        // Bounded by redis_timeout (50 ms), far from hanging; generous for a shared machine.
        assert!(
            one.elapsed() < Duration::from_secs(1),
            "{:?}",
            one.elapsed()
        );
        if one.elapsed() > Duration::from_millis(40) {
            slow += 1;
        }
    }
    // Only the requests that asked Redis waited for it: the three failures in a row that open
    // the breaker, then one probe a second.
    let probes = 1 + started.elapsed().as_secs() as usize;
    assert!(
        slow <= 3 + probes,
        "{slow} slow requests in {:?}",
        started.elapsed()
    );
    redis.thaw();
    wait_until_redis_answers(&gw, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn on_store_error_allow_and_deny_do_what_they_say() {
    let up = Upstream::ok().await;
    let mut redis = Redis::start();
    let allow = redis_gateway(
        &up,
        &redis,
        "max = 1\nwindow = \"1h\"\non_store_error = \"allow\"",
    )
    .await;
    let deny = redis_gateway(
        &up,
        &redis,
        "max = 1\nwindow = \"1h\"\non_store_error = \"deny\"",
    )
    .await;
    redis.kill();
    for _ in 0..3 {
        let allowed = client().get(allow.url("/api/s/x")).send().await.unwrap();
        assert_eq!(allowed.status(), 200);
    }
    let denied = client().get(deny.url("/api/s/x")).send().await.unwrap();
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "retry-after"), "1");
    error_body(denied, "rate_limited").await;
}

#[tokio::test]
async fn every_algorithm_runs_in_the_redis_script() {
    let up = Upstream::ok().await;
    let redis = Redis::start();
    let routes = "[[routes]]\npath = \"/g\"\nservice = \"s\"\n\
                  rate_limit = { algorithm = \"gcra\", max = 3, window = \"1h\", burst = 2 }\n\
                  [[routes]]\npath = \"/f\"\nservice = \"s\"\n\
                  rate_limit = { algorithm = \"fixed_window\", max = 2, window = \"1h\" }\n\
                  [[routes]]\npath = \"/w\"\nservice = \"s\"\nrate_limit = { max = 2, window = \"1h\" }\n";
    let toml = format!(
        "[rate_limit]\nredis_url = \"{}\"\n{}{routes}",
        redis.url(),
        service("s", &[up.url()])
    );
    let (a, b) = (
        TestGateway::start(&toml, &[]).await,
        TestGateway::start(&toml, &[]).await,
    );
    let status = |gw: &TestGateway, path: &str| {
        let request = client().get(gw.url(path));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Alternating instances: only a shared count gives these answers.
    for path in ["/g", "/f", "/w"] {
        let got = [
            status(&a, path).await,
            status(&b, path).await,
            status(&a, path).await,
        ];
        assert_eq!(got, [200, 200, 429], "{path}");
    }
    for gw in [&a, &b] {
        let stats = admin_stats(gw).await;
        assert_eq!(stats["rateLimit"]["redis"]["errors"], 0, "{stats}");
    }
}

#[tokio::test]
async fn an_idle_connection_redis_closed_is_reopened_without_an_outage() {
    let up = Upstream::ok().await;
    let redis = Redis::start();
    let gw = redis_gateway(
        &up,
        &redis,
        "max = 100\nwindow = \"1h\"\non_store_error = \"deny\"",
    )
    .await;
    assert_eq!(
        client()
            .get(gw.url("/api/s/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Redis drops clients idle for a second (managed services and NATs do the same).
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut connection = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg("1")
        .query_async(&mut connection)
        .await
        .unwrap();
    drop(connection);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..3 {
        let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "deny would answer 429 had Redis counted as down"
        );
    }
}

#[tokio::test]
async fn a_refused_small_chunked_body_is_drained_and_the_connection_kept() {
    let up = Upstream::ok().await;
    let gw = gateway(&up, "max = 1\nwindow = \"1h\"", "").await;
    assert_eq!(
        client()
            .get(gw.url("/api/s/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let chunks = futures_util::stream::iter(
        ["hello ", "world"].map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
    );
    let refused = client()
        .post(gw.url("/api/s/x"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers().get("connection").is_none(),
        "closed instead of drained"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn an_empty_header_key_counts_by_address() {
    let up = Upstream::ok().await;
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[rate_limit]\nmax = 1\nwindow = \"1h\"\nkey = \"header:x-client\"\n{}",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let from = |ip: &str, client_id: &str| {
        let request = client()
            .get(gw.url("/api/s/x"))
            .header("x-forwarded-for", ip)
            .header("x-client", client_id);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(from("10.0.0.1", "").await, 200);
    assert_eq!(
        from("10.0.0.2", "").await,
        200,
        "an empty value is no shared key"
    );
    assert_eq!(
        from("10.0.0.2", " ").await,
        429,
        "that address has had its one"
    );
}
