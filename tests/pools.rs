//! Upstream pools end to end: endpoints that die and come back, breakers that open and close
//! (and are never opened by 4xx nor wedged by refused requests), retries that keep the body,
//! health checks, stickiness, caps, and the stats documents that show it all.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::support::upstream::Reply;
use crate::support::{admin_stats, client, closed_port, error_body, TestGateway, Upstream};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn pool(name: &str, urls: &[String], extra: &str) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[services.{name}]\nupstreams = [{}]\n{extra}\n",
        list.join(", ")
    )
}

async fn gateway_stats(gw: &TestGateway) -> Vec<Value> {
    let body: Value = client()
        .get(gw.url("/gateway/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body.as_array().unwrap().clone()
}

fn requests_total(stats: &Value, service: &str, url: &str) -> u64 {
    stats["services"][service]["upstreamDetails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["url"] == url)
        .unwrap_or_else(|| panic!("no {url} in stats"))["requestsTotal"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_dead_endpoint_is_dropped_without_client_errors_and_readmitted_after_open_for() {
    let ups = [
        Upstream::start(|_| Reply::ok("a")).await,
        Upstream::start(|_| Reply::ok("b")).await,
        Upstream::start(|_| Reply::ok("c")).await,
    ];
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let toml = pool(
        "s",
        &urls,
        "breaker = { consecutive_failures = 3, open_for = \"3s\" }",
    );
    // Hundreds of requests a second: over the default rate limit, which is not the point here.
    let toml = format!("[rate_limit]\nenabled = false\n{toml}");
    let gw = TestGateway::start(&toml, &[]).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (url, failures, sent, stop) = (
            gw.url("/api/s/x"),
            failures.clone(),
            sent.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let c = client();
            // Bounded: stops when told, or after 20 000 requests.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ok = matches!(c.get(&url).send().await, Ok(r) if r.status() == 200);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let dead_url = urls[2].clone();
    let dead_addr = ups[2].addr;
    ups[2].kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let attempts_at_1s = requests_total(&admin_stats(&gw).await, "s", &dead_url);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let attempts_at_2_5s = requests_total(&admin_stats(&gw).await, "s", &dead_url);
    assert_eq!(
        attempts_at_1s, attempts_at_2_5s,
        "no request goes to the dead endpoint once its breaker is open"
    );
    let state = gateway_stats(&gw)
        .await
        .into_iter()
        .find(|e| e["targetUrl"] == dead_url.as_str())
        .unwrap();
    assert_eq!(state["state"], "OPEN", "{state}");

    // It comes back on its old port and gets traffic again once open_for has passed.
    let revived = Upstream::start_on(dead_addr, |_| Reply::ok("c again")).await;
    let readmitted = async {
        while revived.count() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Instant::now()
    };
    let readmitted_at = tokio::time::timeout(Duration::from_secs(6), readmitted)
        .await
        .expect("the revived endpoint got no traffic within 6 s");
    assert!(
        readmitted_at.duration_since(killed_at) >= Duration::from_millis(2900),
        "readmitted before open_for was over"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let before = revived.count();
    assert!(
        before > 10,
        "a readmitted endpoint takes a share again: {before}"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "client-visible errors among {} GETs",
        sent.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn unauthenticated_requests_during_half_open_do_not_wedge_the_breaker() {
    let failing = Arc::new(AtomicBool::new(true));
    let slow_probe = Arc::new(AtomicBool::new(false));
    let (f, s) = (failing.clone(), slow_probe.clone());
    let up = Upstream::start(move |_| {
        let reply = if f.load(Ordering::Relaxed) {
            Reply::ok("down").status(503)
        } else {
            Reply::ok("up")
        };
        if s.swap(false, Ordering::Relaxed) {
            reply.delay(Duration::from_secs(2))
        } else {
            reply
        }
    })
    .await;
    let toml = pool(
        "s",
        &[up.url()],
        "breaker = { consecutive_failures = 2, open_for = \"500ms\" }",
    );
    let gw = TestGateway::start(&toml, &[("AUTH_REQUIRED", "true"), ("JWT_SECRET", SECRET)]).await;
    let token = sluice::token::mint(SECRET, "u1", Duration::from_secs(60), &[]).unwrap();
    let get = |auth: bool| {
        let request = client().get(gw.url("/api/s/x"));
        if auth {
            request.bearer_auth(&token)
        } else {
            request
        }
    };
    for _ in 0..2 {
        assert_eq!(get(true).send().await.unwrap().status(), 503);
    }
    let response = get(true).send().await.unwrap();
    assert_eq!(response.status(), 503);
    error_body(response, "no_healthy_upstream").await;
    failing.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Half-open now. Refused requests never touch the breaker.
    for _ in 0..3 {
        assert_eq!(get(false).send().await.unwrap().status(), 401);
    }
    // A probe whose client gives up gives its slot back.
    slow_probe.store(true, Ordering::Relaxed);
    let gave_up = tokio::time::timeout(Duration::from_millis(200), get(true).send()).await;
    assert!(gave_up.is_err(), "the slow probe should still be pending");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let response = get(true).send().await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "a valid request after them is the probe"
    );
    // With auth required the stats need a token too (they name internal URLs); the
    // orchestrator's probes do not.
    for path in ["/gateway/stats", "/admin/stats"] {
        let refused = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
    }
    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let stats: Vec<Value> = client()
        .get(gw.url("/gateway/stats"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = &stats[0];
    assert_eq!(entry["state"], "CLOSED", "{entry}");
    assert_eq!(entry["path"], "/api/s");
}

#[tokio::test]
async fn a_flood_of_404s_never_opens_the_breaker() {
    let up = Upstream::start(|_| Reply::ok("nope").status(404)).await;
    let toml = pool("s", &[up.url()], "breaker = { consecutive_failures = 2 }");
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    for _ in 0..60 {
        let response = c.get(gw.url("/api/s/missing")).send().await.unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.text().await.unwrap(),
            "nope",
            "the upstream's own 404"
        );
    }
    assert_eq!(up.count(), 60);
    let entry = &gateway_stats(&gw).await[0];
    assert_eq!(entry["state"], "CLOSED");
    assert_eq!(entry["failures"], 0);
    let stats = admin_stats(&gw).await;
    let detail = &stats["services"]["s"]["upstreamDetails"][0];
    assert_eq!(detail["errorsTotal"], 0);
    assert_eq!(detail["requestsTotal"], 60);
}

#[tokio::test]
async fn all_endpoints_dead_is_503_no_healthy_upstream_with_retry_after() {
    let urls = [
        format!("http://127.0.0.1:{}", closed_port()),
        format!("http://127.0.0.1:{}", closed_port()),
    ];
    let toml = pool(
        "s",
        &urls,
        "breaker = { consecutive_failures = 2, open_for = \"30s\" }",
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    // Connection refused everywhere: 502 while breakers count, then 503 once both are open.
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let response = c.get(gw.url("/api/s/x")).send().await.unwrap();
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    assert!(statuses.starts_with(&[502]), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    let response = last.unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    error_body(response, "no_healthy_upstream").await;
    let ready = c.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready with every endpoint open");
}

#[tokio::test]
async fn admin_stats_shows_a_windowed_request_rate() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(&pool("s", &[up.url()], ""), &[]).await;
    let c = client();
    // A steady 10 requests per second for 5 seconds.
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..50 {
        ticker.tick().await;
        assert_eq!(
            c.get(gw.url("/api/s/x")).send().await.unwrap().status(),
            200
        );
    }
    let stats = admin_stats(&gw).await;
    let service = &stats["services"]["s"];
    let rps = service["rps"].as_f64().unwrap();
    assert!((8.0..=12.0).contains(&rps), "service rps {rps}: {service}");
    let detail = &service["upstreamDetails"][0];
    let endpoint_rps = detail["rps"].as_f64().unwrap();
    assert!(
        (8.0..=12.0).contains(&endpoint_rps),
        "endpoint rps {endpoint_rps}"
    );
    assert_eq!(detail["requestsTotal"], 50);
    assert_eq!(detail["breaker"]["state"], "closed");
    assert_eq!(detail["healthy"], true);
    assert!(
        detail["latency"]["p99Ms"].as_f64().unwrap()
            >= detail["latency"]["p50Ms"].as_f64().unwrap()
    );
    assert_eq!(service["upstreams"], 1);
    assert_eq!(service["healthy"], 1);
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert!(stats["nowMs"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(stats["connections"]["http"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_and_bring_it_back() {
    let sick = Arc::new(AtomicBool::new(true));
    let s = sick.clone();
    let a = Upstream::start(|_| Reply::ok("a")).await;
    let b = Upstream::start(move |r| {
        if r.uri.path() == "/health" && s.load(Ordering::Relaxed) {
            Reply::ok("sick").status(500)
        } else {
            Reply::ok("b")
        }
    })
    .await;
    let toml = pool(
        "s",
        &[a.url(), b.url()],
        "health_check = { path = \"/health\", interval = \"100ms\", timeout = \"100ms\", healthy_after = 2, unhealthy_after = 2 }",
    );
    let gw = TestGateway::start(&toml, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = client();
    let traffic_to_b = |b: &Upstream| {
        b.received()
            .iter()
            .filter(|r| r.uri.path() != "/health")
            .count()
    };
    for _ in 0..20 {
        assert_eq!(
            c.get(gw.url("/api/s/x")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(traffic_to_b(&b), 0, "an unhealthy endpoint gets no traffic");
    let stats = admin_stats(&gw).await;
    assert_eq!(stats["services"]["s"]["healthy"], 1, "{stats}");
    assert_eq!(c.get(gw.url("/readyz")).send().await.unwrap().status(), 200);

    sick.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..40 {
        c.get(gw.url("/api/s/x")).send().await.unwrap();
    }
    assert!(
        traffic_to_b(&b) > 0,
        "a healthy-again endpoint is back in rotation"
    );
}

#[tokio::test]
async fn a_connect_failure_is_retried_elsewhere_with_the_body_intact() {
    let up =
        Upstream::start(|_| Reply::ok("").body(crate::support::upstream::ReplyBody::Echo)).await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    // Round robin: every other first attempt lands on the dead endpoint.
    let toml = pool(
        "s",
        &[dead, up.url()],
        "balancer = \"round_robin\"\nbreaker = { consecutive_failures = 1000 }",
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    for i in 0..10 {
        let payload = format!("payload number {i} ").repeat(1000);
        // A streamed (chunked) body: it cannot be replayed from a copy, only handed over.
        let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(payload.clone())]);
        let response = c
            .post(gw.url("/api/s/echo"))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), payload, "request {i}");
    }
    assert_eq!(up.count(), 10);
}

#[tokio::test]
async fn a_post_reset_before_the_response_is_not_sent_again() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = attempts.clone();
    tokio::spawn(async move {
        // Bounded: at most 20 connections.
        for _ in 0..20 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            seen.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            // Closed without a word: to the gateway, a connection lost before the response.
            drop(stream);
        }
    });
    let gw = TestGateway::start(&pool("s", &[format!("http://{addr}")], ""), &[]).await;
    for (body, attempts_after) in [(Some("once only"), 1), (None, 2)] {
        let mut request = client().post(gw.url("/api/s/x"));
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 502);
        error_body(response, "upstream_unavailable").await;
        assert_eq!(
            attempts.load(Ordering::Relaxed),
            attempts_after,
            "a POST (with body {body:?}) is never repeated"
        );
    }
}

#[tokio::test]
async fn hash_balancing_keeps_a_key_on_one_endpoint() {
    let ups = [
        Upstream::start(|_| Reply::ok("a")).await,
        Upstream::start(|_| Reply::ok("b")).await,
        Upstream::start(|_| Reply::ok("c")).await,
    ];
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let toml = pool(
        "s",
        &urls,
        "balancer = \"hash\"\nhash_key = \"header:x-user\"",
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    let mut seen = std::collections::BTreeMap::new();
    for user in 0..30 {
        let mut bodies = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let response = c
                .get(gw.url("/api/s/x"))
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .unwrap();
            bodies.insert(response.text().await.unwrap());
        }
        assert_eq!(
            bodies.len(),
            1,
            "user-{user} moved between endpoints: {bodies:?}"
        );
        *seen.entry(bodies.into_iter().next().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        3,
        "30 users spread over all three endpoints: {seen:?}"
    );
}

#[tokio::test]
async fn a_full_endpoint_is_skipped_and_a_full_pool_is_503() {
    let up = Upstream::start(|_| Reply::ok("slow").delay(Duration::from_millis(500))).await;
    let toml = pool("s", &[up.url()], "max_in_flight_per_endpoint = 1");
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    let first = tokio::spawn(c.get(gw.url("/api/s/1")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = c.get(gw.url("/api/s/2")).send().await.unwrap();
    assert_eq!(second.status(), 503);
    // Merely full: worth trying again in a second, not after a health interval.
    assert_eq!(second.headers()["retry-after"], "1");
    error_body(second, "no_healthy_upstream").await;
    // Busy is not unready: an orchestrator must not pull a gateway for being loaded.
    let ready = c.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_refused_request_with_an_unread_body_closes_the_connection() {
    let toml = pool(
        "s",
        &[format!("http://127.0.0.1:{}", closed_port())],
        "breaker = { consecutive_failures = 1, open_for = \"30s\" }",
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    // The first request opens the breaker (502); the POST then gets 503 with its body unread.
    assert_eq!(
        c.get(gw.url("/api/s/x")).send().await.unwrap().status(),
        502
    );
    let response = c
        .post(gw.url("/api/s/x"))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["connection"], "close");
    error_body(response, "no_healthy_upstream").await;
}

#[tokio::test]
async fn a_slow_upload_is_not_counted_as_the_endpoints_latency() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(&pool("s", &[up.url()], ""), &[]).await;
    let c = client();
    // 600 ms of upload, then a fast answer: the endpoint's latency is the answer's, not 600 ms.
    let chunks = futures_util::stream::iter(0..6).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(format!("chunk {i}\n")))
    });
    let response = c
        .put(gw.url("/api/s/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stats = admin_stats(&gw).await;
    let latency = &stats["services"]["s"]["upstreamDetails"][0]["latency"];
    let last_ms = latency["lastMs"].as_f64().unwrap();
    assert!(last_ms < 300.0, "lastMs {last_ms}");
    assert!(latency["ewmaMs"].as_f64().unwrap() < 300.0, "{latency}");
}

#[tokio::test]
async fn a_reset_endpoint_is_never_retried_against_itself() {
    use crate::support::raw::counting_resetting_upstream;
    let (alone, attempts) = counting_resetting_upstream().await;
    let gw = TestGateway::start(&pool("s", &[format!("http://{alone}")], ""), &[]).await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    // A reset on a new connection says the endpoint is failing: no replay (that is only for a
    // reused keep-alive connection, see timeouts.rs), no retry there, counted once.
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let stats = gateway_stats(&gw).await;
    assert_eq!(stats[0]["failures"], 1, "{stats:?}");

    // With a working endpoint beside it, the request ends there.
    let (resetting, attempts) = counting_resetting_upstream().await;
    let up = Upstream::ok().await;
    let urls = [format!("http://{resetting}"), up.url()];
    let gw = TestGateway::start(&pool("s", &urls, "balancer = \"round_robin\""), &[]).await;
    for _ in 0..2 {
        let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "one request, no replay on its new connection"
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn an_invalid_upstream_response_is_named_as_such_and_not_repeated_there() {
    use crate::support::raw::invalid_response_upstream;
    let (addr, attempts) = invalid_response_upstream().await;
    let gw = TestGateway::start(&pool("s", &[format!("http://{addr}")], ""), &[]).await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body = error_body(response, "upstream_unavailable").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid HTTP response"),
        "{body}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(&pool("s", &[up.url()], ""), &[]).await;
    let c = client();
    for _ in 0..10 {
        let response = c.get(gw.url("/api/s/x")).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "ok from upstream");
        let response = c
            .post(gw.url("/api/s/x"))
            .body(vec![b'a'; 100_000])
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "ok from upstream");
    }
    assert_eq!(up.count(), 20);
    assert_eq!(
        up.connections(),
        1,
        "one keep-alive connection carries one request after another"
    );
}
