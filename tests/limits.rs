//! Client limits: header bytes (431), body size (413, counted while streaming), slowloris,
//! keep-alive idle timeout, connection count.

use std::time::Duration;

use bytes::Bytes;

use tokio::io::AsyncWriteExt;

use crate::support::raw::{exchange, read_until_close, send};
use crate::support::{client, error_body, TestGateway, Upstream};

#[tokio::test]
async fn oversized_headers_get_a_json_431() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(&up, "max_header_bytes = \"4KiB\"").await;
    let response = client()
        .get(gw.url("/api/s/x"))
        .header("x-big", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    error_body(response, "headers_too_large").await;
    // Far past hyper's own buffer, the connection is still answered with 431 (bare) or closed.
    let huge = format!(
        "GET /api/s/x HTTP/1.1\r\nHost: t\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (response, closed) = exchange(gw.addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 431"),
        "{response}"
    );
    assert!(closed);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn declared_oversized_bodies_get_413_without_reaching_the_upstream() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(&up, "max_request_body = \"1KiB\"").await;
    let response = client()
        .post(gw.url("/api/s/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["connection"], "close");
    error_body(response, "payload_too_large").await;
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn streamed_bodies_are_cut_at_the_limit_with_413() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(&up, "max_request_body = \"64KiB\"").await;
    let chunks = futures_util::stream::iter(
        (0..32).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 8192]))),
    );
    let response = client()
        .post(gw.url("/api/s/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    error_body(response, "payload_too_large").await;
    // The upstream may have seen the start of the body, but never a complete one.
    for seen in up.received() {
        assert!(
            !seen.body_complete || seen.body_len <= 64 * 1024,
            "a complete oversized body reached the upstream"
        );
    }
    // Within the limit, chunked uploads pass.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'z'; 8192]))),
    );
    let response = client()
        .post(gw.url("/api/s/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(&up, "header_read_timeout = \"300ms\"").await;
    let mut stream = send(gw.addr, b"GET /api/s/x HTTP/1.1\r\nHost: t\r\nX-Slow: ").await;
    let started = std::time::Instant::now();
    let (_, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "a slowloris connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn keep_alive_connections_outlive_the_head_timeout_while_idle() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(
        &up,
        "keepalive_idle_timeout = \"2s\"\nheader_read_timeout = \"200ms\"",
    )
    .await;
    let mut stream = send(gw.addr, b"GET /api/s/1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let (first, closed) = read_until_close(&mut stream, Duration::from_millis(900)).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !closed,
        "an idle keep-alive connection is not cut by the head timeout"
    );
    stream
        .write_all(b"GET /api/s/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (second, _) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(
        &up,
        "keepalive_idle_timeout = \"400ms\"\nheader_read_timeout = \"10s\"",
    )
    .await;
    let mut stream = send(gw.addr, b"GET /api/s/x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let started = std::time::Instant::now();
    let (response, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(closed, "the idle connection was closed");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn connections_beyond_the_maximum_wait_their_turn() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(&up, "max_connections = 1").await;
    let first = send(gw.addr, b"GET /api/s/1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut second = send(
        gw.addr,
        b"GET /api/s/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (waiting, closed) = read_until_close(&mut second, Duration::from_millis(500)).await;
    assert!(
        waiting.is_empty() && !closed,
        "the second connection is not served yet: {waiting}"
    );
    drop(first);
    let (served, _) = read_until_close(&mut second, Duration::from_secs(5)).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}
