//! How sluice speaks HTTP/1.1 to a plain-`http` upstream: which connections it reuses, how
//! it reads what comes back (interim responses, bodies delimited by the close), and that an
//! upload and its response flow at the same time.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::raw::{self, answering_upstream, counting_upstream};
use crate::support::{client, service, TestGateway};

async fn gateway_for(addr: std::net::SocketAddr) -> TestGateway {
    let toml = format!(
        "{}\n[rate_limit]\nenabled = false\n",
        service("s", &[format!("http://{addr}")])
    );
    TestGateway::start(&toml, &[]).await
}

#[tokio::test]
async fn a_connection_is_reused_only_after_a_response_that_ended_cleanly() {
    let cases: [(&'static [u8], usize); 6] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 1),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
            1,
        ),
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
            1,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            3,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 3),
        // Bytes past the declared end answer nothing: that connection is not trusted again.
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA", 3),
    ];
    for (answer, connections) in cases {
        let (addr, count) = answering_upstream(answer).await;
        let gw = gateway_for(addr).await;
        let c = client();
        for _ in 0..3 {
            let response = c.get(gw.url("/api/s/x")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "ok");
        }
        let text = String::from_utf8_lossy(answer);
        assert_eq!(count.load(Ordering::SeqCst), connections, "{text}");
    }
}

#[tokio::test]
async fn a_body_without_length_runs_until_the_upstream_closes() {
    let (addr, count) = counting_upstream(Some(b"HTTP/1.1 200 OK\r\n\r\nuntil the close")).await;
    let gw = gateway_for(addr).await;
    for _ in 0..2 {
        let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "until the close");
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn interim_responses_are_skipped_and_the_final_one_passed_on() {
    let (addr, _) = answering_upstream(
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-final: yes\r\n\r\nok",
    )
    .await;
    let gw = gateway_for(addr).await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-final"], "yes");
    assert!(response.headers().get("link").is_none());
    assert_eq!(response.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn a_custom_reason_phrase_reaches_the_client() {
    let (addr, _) =
        answering_upstream(b"HTTP/1.1 299 Quite Fine\r\ncontent-length: 2\r\n\r\nok").await;
    let gw = gateway_for(addr).await;
    let (answer, _) = raw::exchange(
        gw.addr,
        b"GET /api/s/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 299 Quite Fine\r\n"),
        "{answer}"
    );
}

/// The upstream answers as soon as it has the head, while the client is still sending: the
/// answer reaches the client without waiting for a body that will not come.
#[tokio::test]
async fn an_upstream_may_answer_before_the_upload_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the head arrives");
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
            .await
            .unwrap();
        // Read on (as a server that lingers would) until the gateway lets go.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
        }
    });
    let gw = gateway_for(addr).await;
    let mut stream = raw::send(
        gw.addr,
        b"POST /api/s/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nfirst part",
    )
    .await;
    let (answer, _) = raw::read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("x-request-id: "), "{answer}");
    assert!(answer.ends_with("\r\n\r\ntoo big!"), "{answer}");
}

/// An upstream that streams the body back as it reads it: each part comes back before the
/// client sends the next, so neither direction waits for the other to end.
#[tokio::test]
async fn an_upload_and_its_response_stream_at_the_same_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let echo = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(http::Response::new(req.into_body()))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), echo)
                    .await;
            });
        }
    });
    let gw = gateway_for(addr).await;
    let (parts, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    let upload = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|part| (part, rx))
    });
    parts.send(Ok(Bytes::from("part0;"))).await.unwrap();
    let wait = Duration::from_secs(5);
    let response = tokio::time::timeout(
        wait,
        client()
            .post(gw.url("/api/s/echo"))
            .body(reqwest::Body::wrap_stream(upload))
            .send(),
    )
    .await
    .expect("the response head comes while the upload is still open")
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    for i in 0..5 {
        let expected = format!("part{i};");
        let mut echoed = Vec::new();
        while echoed.len() < expected.len() {
            let chunk = tokio::time::timeout(wait, body.next())
                .await
                .expect("the echo of the last part comes before the next is sent")
                .expect("the body goes on")
                .unwrap();
            echoed.extend_from_slice(&chunk);
        }
        assert_eq!(String::from_utf8_lossy(&echoed), expected);
        if i < 4 {
            parts
                .send(Ok(Bytes::from(format!("part{};", i + 1))))
                .await
                .unwrap();
        }
    }
    drop(parts);
    let end = tokio::time::timeout(wait, body.next())
        .await
        .expect("the body ends");
    assert!(end.is_none(), "nothing after the echo");
}
