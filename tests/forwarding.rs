//! What a proxied request and its response get: bodies, headers, identity of the request.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::support::upstream::{pattern, ReplyBody};
use crate::support::{client, service, Reply, TestGateway, Upstream};

#[tokio::test]
async fn bodies_stream_byte_exact_both_ways() {
    let up = Upstream::start(|_| Reply::ok("").body(ReplyBody::Generated(8 * 1024 * 1024))).await;
    let gw = TestGateway::in_front_of(&up).await;
    let upload: Vec<u8> = pattern(7, 3 * 1024 * 1024 + 17);
    let response = client()
        .post(gw.url("/api/s/upload"))
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(
            chunk.to_vec(),
            pattern(received, chunk.len()),
            "download byte-exact"
        );
        received += chunk.len() as u64;
    }
    assert_eq!(received, 8 * 1024 * 1024);
    let seen = up.only();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.body_len, upload.len() as u64);
    assert!(
        seen.body[..] == upload[..seen.body.len()],
        "upload byte-exact (the kept prefix)"
    );
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hasher::write(&mut hasher, &upload);
    assert_eq!(
        seen.body_hash,
        std::hash::Hasher::finish(&hasher),
        "upload byte-exact"
    );
}

#[tokio::test]
async fn chunked_uploads_stream_through() {
    let up = Upstream::start(|_| Reply::ok("").body(ReplyBody::Echo)).await;
    let gw = TestGateway::in_front_of(&up).await;
    let chunks = futures_util::stream::iter(
        (0..5).map(|i| Ok::<_, std::io::Error>(Bytes::from(format!("part{i};")))),
    );
    let response = client()
        .post(gw.url("/api/s/chunks"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "part0;part1;part2;part3;part4;"
    );
    let seen = up.only();
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(
        seen.headers.get("content-length").is_none(),
        "exactly one framing header"
    );
}

#[tokio::test]
async fn compressed_bodies_cookies_and_redirects_pass_through_untouched() {
    let gz: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5];
    let body = Bytes::from_static(gz);
    let up = Upstream::start(move |r| {
        if r.uri.path() == "/redirect" {
            Reply::ok("")
                .status(302)
                .header("location", "http://elsewhere.example/x")
        } else {
            Reply::ok("")
                .body(ReplyBody::Bytes(body.clone()))
                .header("content-encoding", "gzip")
                .header("set-cookie", "a=1; Path=/")
                .header("set-cookie", "b=2; HttpOnly")
        }
    })
    .await;
    let gw = TestGateway::in_front_of(&up).await;
    let response = client()
        .get(gw.url("/api/s/data"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let cookies: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, vec!["a=1; Path=/", "b=2; HttpOnly"]);
    assert_eq!(&response.bytes().await.unwrap()[..], gz);
    let response = client()
        .get(gw.url("/api/s/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "http://elsewhere.example/x");
    assert_eq!(up.count(), 2, "the redirect was not followed");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = Upstream::start(|_| {
        Reply::ok("x")
            .header("connection", "x-upstream-secret")
            .header("x-upstream-secret", "s")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"inner\"")
            .header("x-end-to-end", "kept")
    })
    .await;
    let gw = TestGateway::in_front_of(&up).await;
    let response = client()
        .get(gw.url("/api/s/h"))
        .header("connection", "x-client-secret")
        .header("x-client-secret", "c")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("upgrade", "websocket-ish")
        .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("x-upstream-secret").is_none());
    assert!(response.headers().get("keep-alive").is_none());
    assert!(response.headers().get("proxy-authenticate").is_none());
    assert_eq!(response.headers()["x-end-to-end"], "kept");
    let seen = up.only();
    for name in [
        "x-client-secret",
        "proxy-connection",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
}

#[tokio::test]
async fn host_is_the_upstream_authority_unless_preserved() {
    let up = Upstream::ok().await;
    let toml = format!(
        r#"{}
        [[routes]]
        path = "/keep"
        service = "s"
        preserve_host = true
    "#,
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    c.get(gw.url("/api/s/a"))
        .header("host", "public.example")
        .send()
        .await
        .unwrap();
    c.get(gw.url("/keep/b"))
        .header("host", "public.example")
        .send()
        .await
        .unwrap();
    let seen = up.received();
    assert_eq!(seen[0].headers["host"], up.addr.to_string());
    assert_eq!(seen[0].headers["x-forwarded-host"], "public.example");
    assert_eq!(seen[1].headers["host"], "public.example");
}

#[tokio::test]
async fn an_upstream_named_by_host_name_is_resolved_and_addressed_by_that_name() {
    let up = Upstream::ok().await;
    // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
    let url = format!("http://localhost:{}", up.addr.port());
    let gw = TestGateway::start(&service("s", &[url]), &[]).await;
    let response = client().get(gw.url("/api/s/a")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        up.only().headers["host"],
        format!("localhost:{}", up.addr.port())
    );
}

#[tokio::test]
async fn forwarded_headers_trust_only_configured_proxies() {
    let up = Upstream::ok().await;
    let plain = TestGateway::in_front_of(&up).await;
    client()
        .get(plain.url("/api/s/x"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6;host=evil")
        .header("x-real-ip", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let trusting = TestGateway::start(
        &format!(
            "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}",
            service("s", &[up.url()])
        ),
        &[],
    )
    .await;
    client()
        .get(trusting.url("/api/s/x"))
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let seen = up.received();
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "http");
    assert!(
        seen[0].headers.get("forwarded").is_none(),
        "a spoofed Forwarded is dropped"
    );
    assert!(
        seen[0].headers.get("x-real-ip").is_none(),
        "a spoofed X-Real-IP is dropped"
    );
    assert_eq!(
        seen[0].headers["x-forwarded-port"],
        plain.addr.port().to_string()
    );
    assert_eq!(seen[1].headers["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(seen[1].headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn request_id_is_kept_when_valid_and_the_same_everywhere() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let c = client();
    let kept = c
        .get(gw.url("/api/s/1"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
    let long = "x".repeat(129);
    let replaced = c
        .get(gw.url("/api/s/2"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let new_id = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(new_id.len(), 36, "a UUID replaces an invalid id");
    let seen = up.received();
    assert_eq!(seen[0].headers["x-request-id"], "abc-123");
    assert_eq!(seen[1].headers["x-request-id"], new_id.as_str());
    // Gateway-made answers carry it too.
    let missing = c
        .get(gw.url("/nowhere"))
        .header("x-request-id", "err-1")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.headers()["x-request-id"], "err-1");
}

#[tokio::test]
async fn traceparent_is_propagated_or_created() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let c = client();
    c.get(gw.url("/api/s/1"))
        .header("traceparent", given)
        .send()
        .await
        .unwrap();
    c.get(gw.url("/api/s/2")).send().await.unwrap();
    c.get(gw.url("/api/s/3"))
        .header("traceparent", "garbage")
        .header("tracestate", "vendor=of-the-garbage-trace")
        .send()
        .await
        .unwrap();
    c.get(gw.url("/api/s/4"))
        .header("traceparent", given)
        .header("tracestate", "vendor=kept")
        .send()
        .await
        .unwrap();
    // One traceparent goes on, never a second field beside it.
    let mut two = reqwest::header::HeaderMap::new();
    two.append("traceparent", given.parse().unwrap());
    two.append("traceparent", "junk".parse().unwrap());
    c.get(gw.url("/api/s/5")).headers(two).send().await.unwrap();
    let seen = up.received();
    assert_eq!(seen[0].headers["traceparent"], given);
    // A new trace does not carry the old one's state; a kept trace keeps it.
    assert!(seen[2].headers.get("tracestate").is_none());
    assert_eq!(seen[3].headers["traceparent"], given);
    assert_eq!(seen[3].headers["tracestate"], "vendor=kept");
    let fields: Vec<_> = seen[4].headers.get_all("traceparent").iter().collect();
    assert_eq!(fields, [given]);
    for created in [&seen[1], &seen[2]] {
        let value = created.headers["traceparent"].to_str().unwrap();
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[1].len(), parts[2].len()),
            (4, "00", 32, 16),
            "{value}"
        );
    }
}

#[tokio::test]
async fn route_header_edits_apply_in_both_directions() {
    let up = Upstream::start(|_| {
        Reply::ok("x")
            .header("server", "leaky/1.0")
            .header("x-kept", "1")
    })
    .await;
    let toml = format!(
        r#"{}
        [[routes]]
        path = "/edit"
        service = "s"
        request_headers = {{ set = {{ "x-api-version" = "2", "x-request-id" = "forged" }}, remove = ["x-debug"] }}
        response_headers = {{ set = {{ "x-frame-options" = "DENY" }}, remove = ["server"] }}
    "#,
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let response = client()
        .get(gw.url("/edit/x"))
        .header("x-debug", "1")
        .header("x-api-version", "1")
        .send()
        .await
        .unwrap();
    let response_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert!(response.headers().get("server").is_none());
    assert_eq!(response.headers()["x-kept"], "1");
    let seen = up.only();
    assert_eq!(seen.headers["x-api-version"], "2");
    assert_eq!(
        seen.headers["x-request-id"],
        response_id.as_str(),
        "routes cannot forge the request id"
    );
    assert!(seen.headers.get("x-debug").is_none());
}

#[tokio::test]
async fn responses_stream_as_they_arrive() {
    let chunks = vec![Bytes::from("data: 1\n\n"), Bytes::from("data: 2\n\n")];
    let up = Upstream::start(move |_| {
        Reply::ok("")
            .header("content-type", "text/event-stream")
            .body(ReplyBody::Chunks(
                chunks.clone(),
                Duration::from_millis(400),
            ))
    })
    .await;
    let gw = TestGateway::in_front_of(&up).await;
    let started = std::time::Instant::now();
    let response = client().get(gw.url("/api/s/events")).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"data: 1\n\n");
    let second = stream.next().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: 2\n\n");
    let second_at = started.elapsed();
    // The first event arrives before the second exists upstream: nothing was buffered.
    assert!(
        second_at - first_at >= Duration::from_millis(300),
        "{first_at:?} {second_at:?}"
    );
}

#[tokio::test]
async fn http2_clients_are_served_by_prior_knowledge() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let h2 = crate::support::client_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(gw.url("/api/s/h2")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok from upstream");
    let seen = up.only();
    assert_eq!(seen.uri.path(), "/h2");
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "plain upstreams are spoken to in HTTP/1.1"
    );
    assert_eq!(seen.headers["host"], up.addr.to_string());
}

/// HTTP/2 clients (browsers) may send each cookie as a field of its own; an HTTP/1.1 upstream
/// gets them as one `Cookie` line (RFC 9113 §8.2.3), as many servers read only the first.
#[tokio::test]
async fn http2_split_cookies_reach_an_http1_upstream_as_one_line() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let h2 = crate::support::client_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut cookies = reqwest::header::HeaderMap::new();
    cookies.append("cookie", "a=1".parse().unwrap());
    cookies.append("cookie", "b=2".parse().unwrap());
    cookies.append("cookie", "c=3".parse().unwrap());
    let response = h2
        .get(gw.url("/api/s/c"))
        .headers(cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = up.only();
    let lines: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(lines, ["a=1; b=2; c=3"]);
    // HTTP/1.1 clients send one line already; several are passed on as they came.
    client()
        .get(gw.url("/api/s/c"))
        .header("cookie", "a=1; b=2")
        .send()
        .await
        .unwrap();
    let seen = up.received().pop().unwrap();
    let lines: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(lines, ["a=1; b=2"]);
}

#[tokio::test]
async fn client_supplied_identity_headers_never_reach_upstreams() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    client()
        .get(gw.url("/api/s/x"))
        .header("x-user-id", "admin")
        .send()
        .await
        .unwrap();
    assert!(up.only().headers.get("x-user-id").is_none());
}

#[tokio::test]
async fn a_malformed_websocket_handshake_is_400_and_never_forwarded() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    for (versions, keys) in [
        (&["12"][..], &[key][..]),
        (&["13"], &["short"]),
        (&["13", "13"], &[key]),
        (&["13"], &[key, key]),
    ] {
        let mut request = client()
            .get(gw.url("/api/s/socket"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket");
        for version in versions {
            request = request.header("sec-websocket-version", *version);
        }
        for key in keys {
            request = request.header("sec-websocket-key", *key);
        }
        let response = request.send().await.unwrap();
        let (version, key) = (versions, keys);
        assert_eq!(response.status(), 400, "versions {version:?}, keys {key:?}");
        crate::support::error_body(response, "bad_request").await;
    }
    let response = client()
        .post(gw.url("/api/s/socket"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "an upgrade must be a GET");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_unasked_protocol_switch_from_the_upstream_is_502() {
    let up = Upstream::start(|_| Reply::ok("").status(101).header("upgrade", "websocket")).await;
    let gw = TestGateway::in_front_of(&up).await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    crate::support::error_body(response, "upstream_unavailable").await;
}

#[tokio::test]
async fn a_chunked_get_body_keeps_its_framing() {
    let up = Upstream::start(|_| Reply::ok("").body(ReplyBody::Echo)).await;
    let gw = TestGateway::in_front_of(&up).await;
    let chunks = futures_util::stream::iter(
        ["{\"query\":", "\"all\"}"].map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
    );
    let response = client()
        .get(gw.url("/api/s/_search"))
        // hyper (under reqwest) sends a GET of unknown length bodiless unless told otherwise.
        .header("transfer-encoding", "chunked")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert_eq!(text, "{\"query\":\"all\"}");
    assert_eq!(up.only().headers["transfer-encoding"], "chunked");
}
