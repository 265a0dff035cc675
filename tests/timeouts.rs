//! Upstream failures and timeouts: 502 for refused or reset, 504 when headers are late,
//! never a cut for a body that keeps flowing, a cut for one that goes idle.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::support::raw::resetting_upstream;
use crate::support::upstream::ReplyBody;
use crate::support::{client, closed_port, error_body, service, Reply, TestGateway, Upstream};

#[tokio::test]
async fn refused_connection_is_502() {
    let toml = service("s", &[format!("http://127.0.0.1:{}", closed_port())]);
    let gw = TestGateway::start(&toml, &[]).await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    error_body(response, "upstream_unavailable").await;
}

#[tokio::test]
async fn reset_before_response_is_502() {
    let addr = resetting_upstream().await;
    let gw = TestGateway::start(&service("s", &[format!("http://{addr}")]), &[]).await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    error_body(response, "upstream_unavailable").await;
}

#[tokio::test]
async fn late_response_headers_are_504() {
    let up = Upstream::start(|_| Reply::ok("late").delay(Duration::from_secs(3))).await;
    let toml = format!(
        "{}response_timeout = \"300ms\"\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let started = std::time::Instant::now();
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    error_body(response, "upstream_timeout").await;
}

#[tokio::test]
async fn env_proxy_timeout_is_the_default_response_timeout() {
    let up = Upstream::start(|_| Reply::ok("late").delay(Duration::from_secs(3))).await;
    let gw = TestGateway::start(
        &service("s", &[up.url()]),
        &[("HTTP_PROXY_TIMEOUT_MS", "300")],
    )
    .await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 504);
}

#[tokio::test]
async fn a_body_that_keeps_flowing_outlives_the_response_timeout() {
    let chunks: Vec<Bytes> = (0..8).map(|i| Bytes::from(format!("chunk{i}\n"))).collect();
    let up = Upstream::start(move |_| {
        Reply::ok("").body(ReplyBody::Chunks(
            chunks.clone(),
            Duration::from_millis(150),
        ))
    })
    .await;
    let toml = format!(
        "{}response_timeout = \"300ms\"\nidle_timeout = \"1s\"\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let response = client().get(gw.url("/api/s/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert_eq!(
        body.lines().count(),
        8,
        "the full 1.2 s stream arrived: {body}"
    );
}

#[tokio::test]
async fn a_body_that_goes_idle_is_cut() {
    let up = Upstream::start(|_| Reply::ok("").body(ReplyBody::Stall)).await;
    let toml = format!("{}idle_timeout = \"300ms\"\n", service("s", &[up.url()]));
    let gw = TestGateway::start(&toml, &[]).await;
    let response = client().get(gw.url("/api/s/stall")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let started = std::time::Instant::now();
    let mut stream = response.bytes_stream();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = stream.next().await {
            if item.is_err() {
                return "cut";
            }
        }
        "ended"
    })
    .await
    .expect("the idle body was not cut within 5 s");
    assert_eq!(
        outcome, "cut",
        "an idle body ends in an error, not a clean end"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn idempotent_requests_survive_an_upstream_that_closes_keep_alive_connections() {
    let addr = crate::support::raw::one_shot_upstream().await;
    // 400 requests: over the default rate limit, which is not what this is about.
    let toml = format!(
        "[rate_limit]\nenabled = false\n{}",
        service("s", &[format!("http://{addr}")])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = gw.url("/api/s/x");
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut failures = 0;
            for _ in 0..50 {
                if c.get(&url).send().await.unwrap().status() != 200 {
                    failures += 1;
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for task in tasks {
        failures += task.await.unwrap();
    }
    assert_eq!(
        failures, 0,
        "GETs failed on reused dead connections: {failures} of 400"
    );
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_response_timeout() {
    let up = Upstream::start(|r| Reply::ok(&r.body_len.to_string())).await;
    let toml = format!(
        "{}response_timeout = \"300ms\"\nidle_timeout = \"2s\"\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let chunks = futures_util::stream::unfold(0, |i| async move {
        if i == 6 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(vec![b'u'; 1000])),
            i + 1,
        ))
    });
    let response = client()
        .post(gw.url("/api/s/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "a 900 ms upload outlives a 300 ms response timeout"
    );
    assert_eq!(response.text().await.unwrap(), "6000");
}

#[tokio::test]
async fn a_stalled_upload_is_cut_with_408() {
    let up = Upstream::ok().await;
    let toml = format!("{}idle_timeout = \"300ms\"\n", service("s", &[up.url()]));
    let gw = TestGateway::start(&toml, &[]).await;
    let mut stream = crate::support::raw::send(
        gw.addr,
        b"POST /api/s/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-part",
    )
    .await;
    let (response, closed) =
        crate::support::raw::read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("\"error\":\"request_timeout\""),
        "{response}"
    );
    assert!(closed);
    assert!(up.received().iter().all(|r| !r.body_complete));
}
