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
    gateway_with(addr, "").await
}

async fn gateway_with(addr: std::net::SocketAddr, server: &str) -> TestGateway {
    let toml = format!(
        "[server]\n{server}\n{}\n[rate_limit]\nenabled = false\n",
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
    let answer = raw::answer(
        gw.addr,
        b"GET /api/s/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
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

/// A client's chunked trailers would reach the upstream past every header rule of the
/// gateway; they are dropped and the body ends cleanly without them.
#[tokio::test]
async fn a_clients_trailers_never_reach_the_upstream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"0\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        let _ = seen_tx.send(seen);
    });
    let gw = gateway_for(addr).await;
    let answer = raw::answer(gw.addr, b"POST /api/s/x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\nauthorization: Bearer forged\r\nx-user-id: admin\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = String::from_utf8_lossy(&seen_rx.await.unwrap()).into_owned();
    assert!(seen.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{seen}");
    assert!(
        !seen.contains("forged") && !seen.contains("admin"),
        "{seen}"
    );
}

/// A connection lost inside the response head is a lost connection (as hyper's client had
/// it), not an invalid response: the answer says the upstream closed.
#[tokio::test]
async fn a_head_cut_by_the_close_is_a_lost_connection() {
    let (addr, _) = counting_upstream(Some(b"HTTP/1.1 200 OK\r\nContent-")).await;
    let gw = gateway_for(addr).await;
    let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(body.contains("closed the connection"), "{body}");
}

/// Reads a request head from `stream`, returning what came after it.
async fn read_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            return seen.split_off(end + 4);
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the head arrives");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// An upstream that answers `202 ok` as soon as a request's head is in, then reads the
/// body up to `length` bytes (or a 5 s pause); the count it read arrives on the receiver.
async fn accepts_early_then_reads(
    length: usize,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (received_tx, received_rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // What came with the head is body already.
        let mut received = read_head(&mut stream).await.len();
        stream
            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        while received < length {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => received += n,
                _ => break,
            }
        }
        let _ = received_tx.send(received);
    });
    (addr, received_rx)
}

/// An upstream may accept a request at once and read the upload after: the response ending
/// first does not cut the upload.
#[tokio::test]
async fn an_upload_goes_on_after_an_early_response_has_ended() {
    const LENGTH: usize = 1 << 20;
    let (addr, received_rx) = accepts_early_then_reads(LENGTH).await;
    let gw = gateway_for(addr).await;
    let response = client()
        .post(gw.url("/api/s/jobs"))
        .body(vec![b'j'; LENGTH])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.text().await.unwrap(), "ok");
    let received = tokio::time::timeout(Duration::from_secs(10), received_rx)
        .await
        .expect("the upstream reads to the end")
        .unwrap();
    assert_eq!(received, LENGTH, "the whole upload arrived");
}

/// The connection watchdog takes bytes that arrive with nothing in flight for a new request
/// head, and cuts a head that takes longer than `header_read_timeout`. An upload that goes on
/// after its early answer is not such a head: it is still the request's body (the exchange
/// lasts until the upload ends), so it may take many head timeouts.
#[tokio::test]
async fn a_slow_upload_after_an_early_answer_is_not_cut_as_a_slow_head() {
    const PIECES: usize = 12;
    const PIECE: usize = 1000;
    let (addr, received_rx) = accepts_early_then_reads(PIECES * PIECE).await;
    let gw = gateway_with(addr, "header_read_timeout = \"200ms\"").await;
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /api/s/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        PIECES * PIECE
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&[b'j'; PIECE]).await.unwrap();
    // The answer comes first; the rest of the body then trickles in over ~1.1 s, five and a
    // half head timeouts.
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("the early answer arrives")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    for _ in 1..PIECES {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(&[b'j'; PIECE]).await.unwrap();
    }
    let received = tokio::time::timeout(Duration::from_secs(10), received_rx)
        .await
        .expect("the upstream reads to the end")
        .unwrap();
    assert_eq!(received, PIECES * PIECE, "the whole upload arrived");
}

/// An upstream that answers early with a large body while it reads the upload, and a client
/// that sends all of its body before it reads anything: the upload must flow while nobody
/// reads the response, or both sides wait on each other.
#[tokio::test]
async fn an_upload_flows_while_the_client_is_not_reading_the_response() {
    // Well past what the sockets' buffers on the way can hold (a few MiB each).
    const SIZE: usize = 48 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let already = read_head(&mut stream).await.len();
        let (mut read, mut write) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut received = already;
            let mut buf = vec![0u8; 64 * 1024];
            while received < SIZE {
                match read.read(&mut buf).await {
                    Ok(n) if n > 0 => received += n,
                    _ => break,
                }
            }
        });
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n");
        write.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'r'; 64 * 1024];
        for _ in 0..SIZE / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = reader.await;
    });
    let gw = gateway_with(addr, "max_request_body = \"1GiB\"").await;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST /api/s/both HTTP/1.1\r\nhost: x\r\ncontent-length: {SIZE}\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b'u'; SIZE]).await.unwrap();
        let mut received = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => received += n,
                _ => return received,
            }
        }
    };
    let received = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("neither side waits on the other");
    assert!(received > SIZE, "the whole response came back: {received}");
}

/// A gateway whose service gives up on a silent stream after one second.
async fn impatient_gateway(addr: std::net::SocketAddr) -> TestGateway {
    let toml = format!(
        "[server]\nmax_request_body = \"1GiB\"\n{}idle_timeout = \"1s\"\n[rate_limit]\nenabled = false\n",
        service("s", &[format!("http://{addr}")])
    );
    TestGateway::start(&toml, &[]).await
}

/// Sends a 256 MiB upload head and body from a task of its own (its writes stall when no
/// one reads); returns the connection's read half.
async fn endless_upload(gw: &TestGateway) -> tokio::net::tcp::OwnedReadHalf {
    const SIZE: usize = 256 << 20;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    tokio::spawn(async move {
        let head = format!("POST /api/s/up HTTP/1.1\r\nhost: x\r\ncontent-length: {SIZE}\r\n\r\n");
        let _ = write.write_all(head.as_bytes()).await;
        let chunk = vec![b'u'; 1 << 20];
        for _ in 0..SIZE / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    read
}

/// An upstream that takes the head and then reads nothing (and answers nothing): the
/// gateway gives up after the idle timeout with a 504, instead of waiting forever.
#[tokio::test]
async fn an_upstream_that_stops_reading_the_upload_is_a_504() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let gw = impatient_gateway(addr).await;
    let mut read = endless_upload(&gw).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let started = tokio::time::Instant::now();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            other => panic!("no answer: {other:?}"),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// An upstream that answers at once, then stops reading: the upload left to finish in the
/// background is given up on after the idle timeout, and the connection closed.
#[tokio::test]
async fn an_upload_left_after_the_response_ends_is_not_kept_forever() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = read_head(&mut stream).await.len();
        stream
            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        // Read nothing for a while: the gateway's writes stall.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    let _ = closed_tx.send(received);
                    return;
                }
                Ok(Ok(n)) => received += n,
                Err(_) => return,
            }
        }
    });
    let gw = impatient_gateway(addr).await;
    let mut read = endless_upload(&gw).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"ok") {
        match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            other => panic!("no answer: {other:?}"),
        }
    }
    assert!(answer.starts_with(b"HTTP/1.1 202"));
    let received = tokio::time::timeout(Duration::from_secs(15), closed_rx)
        .await
        .expect("the gateway closes the upstream connection")
        .unwrap();
    // What the buffers held when the gateway gave up, not the 256 MiB a stalled upload
    // would have gone on to send once the upstream read again.
    assert!(received < 128 << 20, "{received} bytes arrived");
}

/// The client gets the gateway's HTTP version, not the upstream's (RFC 9110 §6.2): an
/// `HTTP/1.0` status line made clients close a connection the gateway kept open.
#[tokio::test]
async fn an_http_10_upstream_answer_reaches_the_client_as_http_11() {
    let (addr, _) = answering_upstream(
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let gw = gateway_for(addr).await;
    let mut stream = raw::send(gw.addr, b"GET /api/s/x HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&seen).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // The connection serves the next request too.
    stream
        .write_all(b"GET /api/s/y HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = raw::read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && closed,
        "{answer}"
    );
}

/// A valid response with more header fields than a parser's usual array (a page setting
/// many cookies) is passed on whole, not taken for a broken upstream.
#[tokio::test]
async fn a_response_with_many_header_fields_is_passed_on_whole() {
    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 0..150 {
        answer.extend_from_slice(format!("set-cookie: c{i}=v; Path=/\r\n").as_bytes());
    }
    answer.extend_from_slice(b"\r\nok");
    let (addr, _) = answering_upstream(answer.leak()).await;
    let gw = gateway_for(addr).await;
    // More than the breaker's failure threshold: none of them may count as a failure. (Raw:
    // reqwest's own parser stops at 100 fields.)
    for _ in 0..6 {
        let answer = raw::answer(
            gw.addr,
            b"GET /api/s/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(answer.matches("set-cookie: c").count(), 150, "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    }
}

/// A transfer coding the gateway would take off without decoding (`gzip, chunked`) is a
/// bad answer, not a body passed on still gzipped under a plain label.
#[tokio::test]
async fn a_response_with_a_transfer_coding_other_than_chunked_is_502() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\nconnection: close\r\n\r\nok",
    ] {
        let (addr, _) = counting_upstream(Some(answer)).await;
        let gw = gateway_for(addr).await;
        let response = client().get(gw.url("/api/s/x")).send().await.unwrap();
        let text = String::from_utf8_lossy(answer);
        assert_eq!(response.status(), 502, "{text}");
        let body = response.text().await.unwrap();
        assert!(body.contains("upstream_unavailable"), "{text}: {body}");
    }
}
