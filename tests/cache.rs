//! The response cache, rule by rule: every test checks both what the client got and how many
//! requests reached the upstream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::upstream::ReplyBody;
use crate::support::{admin_stats, client, error_body, service, Reply, TestGateway, Upstream};

/// A gateway caching every route for 60 s, limits off.
async fn caching(up: &Upstream, extra: &str) -> TestGateway {
    let toml = format!(
        "{}\n[rate_limit]\nenabled = false\n[cache]\nenabled = true\ndefault_ttl = \"60s\"\n{extra}",
        service("s", &[up.url()])
    );
    TestGateway::start(&toml, &[]).await
}

struct Got {
    status: u16,
    x_cache: String,
    age: Option<u64>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = client().get(gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let headers = response.headers().clone();
    Got {
        status: response.status().as_u16(),
        x_cache: headers
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        age: headers
            .get("age")
            .map(|v| v.to_str().unwrap().parse().unwrap()),
        body: response.text().await.unwrap(),
        headers,
    }
}

/// An upstream whose every answer says how many requests it has seen.
async fn counting(headers: &'static [(&'static str, &'static str)]) -> Upstream {
    let seen = Arc::new(AtomicUsize::new(0));
    Upstream::start(move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        headers
            .iter()
            .fold(Reply::ok(&format!("answer {n}")), |reply, (name, value)| {
                reply.header(name, value)
            })
    })
    .await
}

#[tokio::test]
async fn a_hit_replays_status_and_end_to_end_headers_with_age() {
    let up = counting(&[
        ("x-custom", "kept"),
        ("cache-control", "public, max-age=60"),
    ])
    .await;
    let gw = caching(&up, "").await;
    let first = get(&gw, "/api/s/page", &[]).await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    assert_eq!(first.body, "answer 1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = get(&gw, "/api/s/page", &[]).await;
    assert_eq!((second.status, second.x_cache.as_str()), (200, "HIT"));
    assert_eq!(second.body, "answer 1");
    assert_eq!(second.headers["x-custom"], "kept");
    assert_eq!(second.headers["content-type"], "text/plain");
    assert_eq!(second.headers["cache-control"], "public, max-age=60");
    assert!(second.age.unwrap() >= 1, "Age counts the time in the cache");
    // Every answer has its own request id, hits included.
    assert_ne!(
        first.headers["x-request-id"],
        second.headers["x-request-id"]
    );
    assert_eq!(up.count(), 1);
    // HEAD is its own entry; POST never uses the cache.
    let head = client().head(gw.url("/api/s/page")).send().await.unwrap();
    assert_eq!(head.headers()["x-cache"], "MISS");
    let head = client().head(gw.url("/api/s/page")).send().await.unwrap();
    assert_eq!(head.headers()["x-cache"], "HIT");
    for _ in 0..2 {
        let post = client().post(gw.url("/api/s/page")).send().await.unwrap();
        assert_eq!(post.headers()["x-cache"], "BYPASS");
    }
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn responses_that_forbid_or_cannot_be_shared_are_never_stored() {
    let up = Upstream::start(|r| {
        let reply = Reply::ok("x");
        match r.uri.path() {
            "/no-store" => reply.header("cache-control", "no-store"),
            "/private" => reply.header("cache-control", "private, max-age=60"),
            "/no-cache" => reply.header("cache-control", "no-cache"),
            "/cookie" => reply.header("set-cookie", "session=1"),
            "/vary-star" => reply.header("vary", "*"),
            "/expired" => reply.header("cache-control", "max-age=0"),
            "/missing" => reply.status(404),
            "/events" => Reply {
                headers: vec![("content-type".into(), "text/event-stream".into())],
                ..reply
            },
            _ => reply,
        }
    })
    .await;
    let gw = caching(&up, "").await;
    let paths = [
        "/no-store",
        "/private",
        "/no-cache",
        "/cookie",
        "/vary-star",
        "/expired",
        "/missing",
        "/events",
    ];
    for path in paths {
        for _ in 0..2 {
            let got = get(&gw, &format!("/api/s{path}"), &[]).await;
            assert_eq!(got.x_cache, "MISS", "{path}");
        }
    }
    assert_eq!(up.count(), 2 * paths.len());
    // The SSE route is never cached at all.
    let events = get(&gw, "/sse/s/events", &[]).await;
    assert_eq!(
        events.x_cache, "",
        "no x-cache on a route that does not cache"
    );
}

#[tokio::test]
async fn other_statuses_are_stored_only_when_configured() {
    let up = Upstream::start(|_| Reply::ok("gone").status(404)).await;
    let gw = caching(&up, "statuses = [200, 404]\n").await;
    assert_eq!(get(&gw, "/api/s/x", &[]).await.x_cache, "MISS");
    let hit = get(&gw, "/api/s/x", &[]).await;
    assert_eq!((hit.status, hit.x_cache.as_str()), (404, "HIT"));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn freshness_is_the_responses_own_capped_by_the_route() {
    let up = Upstream::start(|r| match r.uri.path() {
        "/short" => Reply::ok("x").header("cache-control", "max-age=1"),
        "/shared" => Reply::ok("x").header("cache-control", "max-age=1, s-maxage=60"),
        "/long" => Reply::ok("x").header("cache-control", "max-age=600"),
        _ => Reply::ok("x").header("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    })
    .await;
    let toml = format!(
        "{}\n[rate_limit]\nenabled = false\n[[routes]]\npath = \"/capped\"\nservice = \"s\"\n\
         strip_prefix = true\ncache = {{ ttl = \"1s\" }}\n\
         [[routes]]\npath = \"/plain\"\nservice = \"s\"\nstrip_prefix = true\ncache = true\n",
        service("s", &[up.url()])
    );
    // The cache is off in general: only the routes that ask for it cache.
    let gw = TestGateway::start(&toml, &[]).await;
    assert_eq!(get(&gw, "/api/s/short", &[]).await.x_cache, "");
    for path in [
        "/plain/short",
        "/plain/shared",
        "/capped/long",
        "/plain/dated",
    ] {
        get(&gw, path, &[]).await;
    }
    let before = up.count();
    for path in ["/plain/short", "/plain/shared", "/capped/long"] {
        assert_eq!(get(&gw, path, &[]).await.x_cache, "HIT", "{path}");
    }
    // An Expires in the past: stale at once, never stored.
    assert_eq!(get(&gw, "/plain/dated", &[]).await.x_cache, "MISS");
    assert_eq!(up.count(), before + 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // max-age=1 has run out; s-maxage=60 has not; the route's 1 s cap beat max-age=600.
    assert_eq!(get(&gw, "/plain/short", &[]).await.x_cache, "MISS");
    assert_eq!(get(&gw, "/plain/shared", &[]).await.x_cache, "HIT");
    assert_eq!(get(&gw, "/capped/long", &[]).await.x_cache, "MISS");
    assert_eq!(up.count(), before + 3);
}

#[tokio::test]
async fn vary_keeps_one_entry_per_variant() {
    let up = Upstream::start(|r| {
        let accept = r
            .headers
            .get("accept")
            .map_or("none", |v| v.to_str().unwrap());
        Reply::ok(&format!("for {accept}")).header("vary", "Accept")
    })
    .await;
    let gw = caching(&up, "").await;
    let json = [("accept", "application/json")];
    let html = [("accept", "text/html")];
    assert_eq!(
        get(&gw, "/api/s/v", &json).await.body,
        "for application/json"
    );
    assert_eq!(get(&gw, "/api/s/v", &html).await.x_cache, "MISS");
    let hit = get(&gw, "/api/s/v", &json).await;
    assert_eq!(
        (hit.x_cache.as_str(), hit.body.as_str()),
        ("HIT", "for application/json")
    );
    let hit = get(&gw, "/api/s/v", &html).await;
    assert_eq!(
        (hit.x_cache.as_str(), hit.body.as_str()),
        ("HIT", "for text/html")
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn the_key_is_host_path_and_query_never_the_endpoint() {
    let a = counting(&[]).await;
    let b = counting(&[]).await;
    let toml = format!(
        "[services.s]\nupstreams = [\"{}\", \"{}\"]\nbalancer = \"round_robin\"\n\
         [rate_limit]\nenabled = false\n[cache]\nenabled = true\n",
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&toml, &[]).await;
    assert_eq!(get(&gw, "/api/s/k?x=1", &[]).await.x_cache, "MISS");
    // Round robin would send these to the other endpoint: the entry serves them anyway.
    for _ in 0..4 {
        assert_eq!(get(&gw, "/api/s/k?x=1", &[]).await.x_cache, "HIT");
    }
    assert_eq!(get(&gw, "/api/s/k?x=2", &[]).await.x_cache, "MISS");
    assert_eq!(
        get(&gw, "/api/s/k?x=1", &[("host", "other.example")])
            .await
            .x_cache,
        "MISS"
    );
    assert_eq!(a.count() + b.count(), 3);
}

#[tokio::test]
async fn credentials_bypass_unless_the_route_shares_them() {
    let up = counting(&[]).await;
    let toml = format!(
        "{}\n[rate_limit]\nenabled = false\n[cache]\nenabled = true\n\
         [[routes]]\npath = \"/shared\"\nservice = \"s\"\ncache = {{ allow_credentials = true }}\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    for credential in [("authorization", "Bearer abc"), ("cookie", "session=1")] {
        for _ in 0..2 {
            let got = get(&gw, "/api/s/private", &[credential]).await;
            assert_eq!(got.x_cache, "BYPASS");
        }
    }
    assert_eq!(up.count(), 4);
    assert_eq!(
        get(&gw, "/shared/x", &[("cookie", "a=1")]).await.x_cache,
        "MISS"
    );
    assert_eq!(
        get(&gw, "/shared/x", &[("cookie", "b=2")]).await.x_cache,
        "HIT"
    );
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn a_client_no_cache_forces_a_fetch_that_refreshes_the_entry() {
    let up = counting(&[]).await;
    let gw = caching(&up, "").await;
    assert_eq!(get(&gw, "/api/s/r", &[]).await.body, "answer 1");
    let forced = get(&gw, "/api/s/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(
        (forced.x_cache.as_str(), forced.body.as_str()),
        ("MISS", "answer 2")
    );
    let hit = get(&gw, "/api/s/r", &[]).await;
    assert_eq!(
        (hit.x_cache.as_str(), hit.body.as_str()),
        ("HIT", "answer 2")
    );
    let no_store = get(&gw, "/api/s/r", &[("cache-control", "no-store")]).await;
    assert_eq!(no_store.x_cache, "BYPASS");
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn fifty_concurrent_misses_make_one_upstream_request() {
    let up =
        Upstream::start(|_| Reply::ok("slow and shared").delay(Duration::from_millis(300))).await;
    let gw = caching(&up, "").await;
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let url = gw.url("/api/s/popular");
            tokio::spawn(async move {
                let response = client().get(url).send().await.unwrap();
                let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
                (
                    response.status().as_u16(),
                    x_cache,
                    response.text().await.unwrap(),
                )
            })
        })
        .collect();
    let mut misses = 0;
    for request in requests {
        let (status, x_cache, body) = request.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "slow and shared"));
        misses += usize::from(x_cache == "MISS");
    }
    assert_eq!(misses, 1);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn waiting_requests_fetch_themselves_when_the_answer_cannot_be_stored() {
    let up = Upstream::start(|_| {
        Reply::ok("personal")
            .header("cache-control", "private")
            .delay(Duration::from_millis(200))
    })
    .await;
    let gw = caching(&up, "").await;
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let url = gw.url("/api/s/me");
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn large_cut_or_abandoned_bodies_are_never_stored() {
    let up = Upstream::start(|r| match r.uri.path() {
        "/big" => Reply::ok("").body(ReplyBody::Generated(200_000)),
        _ => Reply::ok("").body(ReplyBody::Chunks(
            vec![Bytes::from_static(b"first "), Bytes::from_static(b"second")],
            Duration::from_millis(500),
        )),
    })
    .await;
    let gw = caching(&up, "max_body_bytes = 100000\n").await;
    for _ in 0..2 {
        let response = client().get(gw.url("/api/s/big")).send().await.unwrap();
        assert_eq!(response.headers()["x-cache"], "MISS");
        assert_eq!(response.bytes().await.unwrap().len(), 200_000);
    }
    assert_eq!(up.count(), 2);
    // A client that leaves mid-body: what arrived is not stored.
    let response = client().get(gw.url("/api/s/slow")).send().await.unwrap();
    assert_eq!(response.headers()["x-cache"], "MISS");
    drop(response);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let whole = get(&gw, "/api/s/slow", &[]).await;
    assert_eq!(
        (whole.x_cache.as_str(), whole.body.as_str()),
        ("MISS", "first second")
    );
    assert_eq!(get(&gw, "/api/s/slow", &[]).await.x_cache, "HIT");
    assert_eq!(up.count(), 4);

    // An upstream that promises 100 bytes and closes after 10: never stored.
    let (addr, served) =
        raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
    let toml = format!(
        "{}\n[rate_limit]\nenabled = false\n[cache]\nenabled = true\n",
        service("cut", &[format!("http://{addr}")])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    for _ in 0..2 {
        let response = client().get(gw.url("/api/cut/x")).send().await.unwrap();
        assert_eq!(response.headers()["x-cache"], "MISS");
        assert!(
            response.bytes().await.is_err(),
            "the cut body fails at the client too"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn memory_stays_within_capacity_and_purges_take_entries_out() {
    let up = Upstream::start(|_| Reply::ok("").body(ReplyBody::Generated(50_000))).await;
    let gw = caching(&up, "capacity = \"1MiB\"\nmax_body_bytes = 60000\n").await;
    for i in 0..60 {
        get(&gw, &format!("/api/s/item/{i}"), &[]).await;
    }
    let cache = &admin_stats(&gw).await["totals"]["cache"];
    let bytes = cache["bytes"].as_u64().unwrap();
    assert!(bytes <= 1024 * 1024, "{cache}");
    let entries = cache["entries"].as_u64().unwrap();
    assert!(
        (10..60).contains(&entries),
        "evicted down to what fits: {cache}"
    );

    let gw = caching(&up, "").await;
    for path in ["/api/s/a/1", "/api/s/a/2", "/api/s/b/1"] {
        get(&gw, path, &[]).await;
    }
    let purge = |query: &'static str| {
        let url = gw.url(&format!("/admin/cache{query}"));
        async move { client().delete(url).send().await.unwrap() }
    };
    let purged: serde_json::Value = purge("?prefix=/api/s/a").await.json().await.unwrap();
    assert_eq!(purged["purged"], 2);
    assert_eq!(get(&gw, "/api/s/a/1", &[]).await.x_cache, "MISS");
    assert_eq!(get(&gw, "/api/s/b/1", &[]).await.x_cache, "HIT");
    let bad = purge("?prefix=api").await;
    assert_eq!(bad.status(), 400);
    error_body(bad, "bad_request").await;
    let all: serde_json::Value = purge("").await.json().await.unwrap();
    assert_eq!(all["purged"], 2);
    assert_eq!(get(&gw, "/api/s/b/1", &[]).await.x_cache, "MISS");
    // Hits and misses are counted per route.
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (result, count) in [("hit", 1), ("miss", 5)] {
        let line =
            format!("sluice_cache_requests_total{{route=\"/api/s\",result=\"{result}\"}} {count}");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn purging_needs_admin_rights_when_auth_is_on() {
    let up = Upstream::ok().await;
    let toml = format!("{}\n[cache]\nenabled = true\n", service("s", &[up.url()]));
    let secret = "0123456789abcdef0123456789abcdef-test";
    let gw = TestGateway::start(&toml, &[("AUTH_REQUIRED", "true"), ("JWT_SECRET", secret)]).await;
    let refused = client()
        .delete(gw.url("/admin/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let token = sluice::token::mint(secret, "ops", Duration::from_secs(60), &[]).unwrap();
    let done = client()
        .delete(gw.url("/admin/cache"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    // Requests carrying a token bypass the cache (the route does not share credentials).
    let user = sluice::token::mint(secret, "u", Duration::from_secs(60), &[]).unwrap();
    let got = client()
        .get(gw.url("/api/s/x"))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["x-cache"], "BYPASS");
}

/// An upstream that reads a request head, writes `answer` and closes; it counts connections.
async fn raw_upstream(answer: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = socket.read(&mut head).await;
            let _ = socket.write_all(answer).await;
        }
    });
    (addr, served)
}

fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An upstream that answers with the identity it was given, varying on it when asked.
async fn whoami() -> Upstream {
    Upstream::start(|r| {
        let user = r
            .headers
            .get("x-user-id")
            .map_or("nobody", |v| v.to_str().unwrap());
        let reply = Reply::ok(&format!("data of {user}"));
        if r.uri.query() == Some("vary") {
            reply.header("vary", "X-User-Id")
        } else {
            reply
        }
    })
    .await
}

#[tokio::test]
async fn one_callers_answer_never_reaches_another() {
    let up = whoami().await;
    let toml = format!(
        "{}\n[rate_limit]\nenabled = false\n[cache]\nenabled = true\n\
         [[auth.api_keys]]\nid = \"alice\"\nsha256 = \"{}\"\n\
         [[auth.api_keys]]\nid = \"bob\"\nsha256 = \"{}\"\n\
         [[routes]]\npath = \"/keyed\"\nservice = \"s\"\nauth = true\n\
         [[routes]]\npath = \"/open\"\nservice = \"s\"\nauth = \"optional\"\n\
         [[routes]]\npath = \"/shared\"\nservice = \"s\"\nauth = true\n\
         cache = {{ allow_credentials = true }}\n",
        service("s", &[up.url()]),
        sha256_hex("key-of-alice"),
        sha256_hex("key-of-bob"),
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let alice = [("x-api-key", "key-of-alice")];
    let bob = [("x-api-key", "key-of-bob")];
    // A verified API key counts as a credential: no sharing on a route that does not share.
    let got = get(&gw, "/keyed/me", &alice).await;
    assert_eq!(
        (got.x_cache.as_str(), got.body.as_str()),
        ("BYPASS", "data of alice")
    );
    let got = get(&gw, "/keyed/me", &bob).await;
    assert_eq!(
        (got.x_cache.as_str(), got.body.as_str()),
        ("BYPASS", "data of bob")
    );
    // Nor does an anonymous caller get what a key holder fetched, or the other way round.
    assert_eq!(get(&gw, "/open/me", &alice).await.body, "data of alice");
    let anonymous = get(&gw, "/open/me", &[]).await;
    assert_eq!(
        (anonymous.x_cache.as_str(), anonymous.body.as_str()),
        ("MISS", "data of nobody")
    );
    assert_eq!(get(&gw, "/open/me", &bob).await.body, "data of bob");
    // A shared route keys a `Vary: X-User-Id` answer on the verified identity, never on a
    // header the client sends (the gateway replaces that one).
    assert_eq!(get(&gw, "/shared/me?vary", &bob).await.body, "data of bob");
    let forged = [("x-api-key", "key-of-bob"), ("x-user-id", "alice")];
    let got = get(&gw, "/shared/me?vary", &forged).await;
    assert_eq!(
        (got.x_cache.as_str(), got.body.as_str()),
        ("HIT", "data of bob")
    );
    let got = get(&gw, "/shared/me?vary", &alice).await;
    assert_eq!(
        (got.x_cache.as_str(), got.body.as_str()),
        ("MISS", "data of alice")
    );
    assert_eq!(get(&gw, "/shared/me?vary", &alice).await.x_cache, "HIT");
}

#[tokio::test]
async fn the_key_holds_the_forwarded_authority_and_the_normalised_path() {
    let up = Upstream::start(|r| {
        let host = r.headers["x-forwarded-host"].to_str().unwrap().to_owned();
        Reply::ok(&format!("links for {host}"))
    })
    .await;
    let gw = caching(&up, "").await;
    let port = gw.addr.port();
    let evil = get(&gw, "/api/s/links", &[("host", "localhost:6666")]).await;
    assert_eq!(evil.body, "links for localhost:6666");
    let honest = get(
        &gw,
        "/api/s/links",
        &[("host", &format!("localhost:{port}"))],
    )
    .await;
    assert_eq!(honest.x_cache, "MISS", "another port is another entry");
    assert_eq!(honest.body, format!("links for localhost:{port}"));
    // Spellings of one path share one entry (the one the purge below finds).
    assert_eq!(get(&gw, "/api/s/same", &[]).await.x_cache, "MISS");
    assert_eq!(get(&gw, "//api/s/same", &[]).await.x_cache, "HIT");
    assert_eq!(get(&gw, "/api/s/./same", &[]).await.x_cache, "HIT");
    client()
        .delete(gw.url("/admin/cache?prefix=/api/s/same"))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&gw, "//api/s/same", &[]).await.x_cache, "MISS");
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn a_purge_during_a_fill_keeps_that_fill_out() {
    let up = Upstream::start(|_| {
        Reply::ok("").body(ReplyBody::Chunks(
            vec![Bytes::from_static(b"old "), Bytes::from_static(b"answer")],
            Duration::from_millis(400),
        ))
    })
    .await;
    let gw = caching(&up, "").await;
    let url = gw.url("/api/s/doc");
    let filling = tokio::spawn(async move { client().get(url).send().await.unwrap().text().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let purged = client()
        .delete(gw.url("/admin/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    assert_eq!(filling.await.unwrap().unwrap(), "old answer");
    assert_eq!(get(&gw, "/api/s/doc", &[]).await.x_cache, "MISS");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_body_ended_only_by_a_closed_connection_is_not_stored() {
    // No length, not chunked: only the close says where it ends (or was cut).
    let (addr, served) =
        raw_upstream(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npartial?").await;
    let toml = format!(
        "{}\n[rate_limit]\nenabled = false\n[cache]\nenabled = true\n",
        service("eof", &[format!("http://{addr}")])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    for _ in 0..2 {
        let got = get(&gw, "/api/eof/x", &[]).await;
        assert_eq!(
            (got.x_cache.as_str(), got.body.as_str()),
            ("MISS", "partial?")
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_leader_whose_client_stopped_reading_holds_the_others_a_second_at_most() {
    // A body the leader's client will never read to the end (it reads nothing at all).
    let up = Upstream::start(|_| Reply::ok("").body(ReplyBody::Generated(6_000_000))).await;
    let gw = caching(&up, "max_body_bytes = 8000000\ncapacity = \"64MiB\"\n").await;
    let mut stalled = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stalled
        .write_all(b"GET /api/s/big HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let response = client().get(gw.url("/api/s/big")).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().len(), 6_000_000);
    // The route's response timeout is 30 s: the follower gave up on the fill long before.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.count(), 2);
    drop(stalled);
}
