//! Server-Sent Events end to end: `/sse/<service>/*` and event streams on any route pass
//! each chunk on as it comes, with the stream headers, no total timeout, heartbeats only
//! between lines, and a client that leaves taking the upstream stream down with it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::{admin_stats, client, error_body, service, TestGateway};

/// An event-stream upstream playing a script: each chunk after its delay, then the end of
/// the stream, or (with `hold_open`) silence until the client goes away.
pub(crate) struct SseUpstream {
    addr: SocketAddr,
    /// `Last-Event-ID` of the latest request, if it had one.
    last_event_id: Arc<Mutex<Option<String>>>,
    /// When the latest stream's body was dropped: the gateway closed the connection.
    dropped_at: Arc<Mutex<Option<Instant>>>,
}

/// Sets its time when dropped (with the response body it lives in).
struct DropClock(Arc<Mutex<Option<Instant>>>);

impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

impl SseUpstream {
    pub(crate) async fn start(
        script: Vec<(Duration, &'static str)>,
        hold_open: bool,
    ) -> SseUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let last_event_id = Arc::new(Mutex::new(None));
        let dropped_at = Arc::new(Mutex::new(None));
        let (ids, dropped) = (last_event_id.clone(), dropped_at.clone());
        let script: Vec<(Duration, Bytes)> = script
            .into_iter()
            .map(|(delay, chunk)| (delay, Bytes::from_static(chunk.as_bytes())))
            .collect();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, ids, dropped) = (script.clone(), ids.clone(), dropped.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        *ids.lock().unwrap() = req
                            .headers()
                            .get("last-event-id")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let clock = DropClock(dropped.clone());
                        let chunks = futures_util::stream::iter(script.clone()).then(
                            |(delay, chunk): (Duration, Bytes)| async move {
                                tokio::time::sleep(delay).await;
                                Ok::<_, Infallible>(Frame::data(chunk))
                            },
                        );
                        let tail = futures_util::stream::once(async move {
                            if hold_open {
                                std::future::pending::<()>().await;
                            }
                            drop(clock);
                            Ok::<_, Infallible>(Frame::data(Bytes::new()))
                        });
                        let body = StreamBody::new(chunks.chain(tail));
                        let response = hyper::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(body)
                            .unwrap();
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SseUpstream {
            addr,
            last_event_id,
            dropped_at,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// An upstream that names Content-Type in `Connection` has it removed (hop-by-hop), and
/// what is left is not an event stream: no streaming headers are added to it.
#[tokio::test]
async fn an_event_stream_type_named_in_connection_is_removed_and_not_streamed() {
    use crate::support::upstream::{Reply, Upstream};
    let up = Upstream::start(|_| {
        let mut reply = Reply::ok("data: x\n\n").header("connection", "content-type");
        reply.headers[0].1 = "text/event-stream".into();
        reply
    })
    .await;
    let gw = TestGateway::in_front_of(&up).await;
    let response = client().get(gw.url("/api/s/events")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert!(headers.get("content-type").is_none(), "{headers:?}");
    assert!(headers.get("x-accel-buffering").is_none(), "{headers:?}");
    assert!(headers.get("cache-control").is_none(), "{headers:?}");
    assert_eq!(&response.bytes().await.unwrap()[..], b"data: x\n\n");
}

#[tokio::test]
async fn the_sse_route_passes_each_event_on_as_it_arrives() {
    let ms = Duration::from_millis;
    let up = SseUpstream::start(
        vec![
            (ms(0), "id: 1\ndata: one\n\n"),
            (ms(400), "id: 2\ndata: two\n\n"),
        ],
        false,
    )
    .await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let started = Instant::now();
    let mut response = client()
        .get(gw.url("/sse/s/events?topic=x"))
        .header("last-event-id", "41")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.contains_key("x-request-id"));
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"id: 1\ndata: one\n\n");
    assert!(
        started.elapsed() < ms(300),
        "the first event waited for the second: {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(
        rest, b"id: 2\ndata: two\n\n",
        "the upstream's end ends the stream"
    );
    assert_eq!(up.last_event_id.lock().unwrap().as_deref(), Some("41"));
    let live = admin_stats(&gw).await;
    let counted = &live["services"]["s"]["streams"]["sse"];
    assert_eq!(counted["messagesDown"], 2, "{live}");
    assert_eq!(counted["bytesDown"], 34, "{live}");
}

#[tokio::test]
async fn an_event_stream_outlives_five_times_the_response_timeout() {
    let script = (0..12)
        .map(|_| (Duration::from_millis(100), "data: tick\n\n"))
        .collect();
    let up = SseUpstream::start(script, false).await;
    let toml = format!(
        "{}response_timeout = \"200ms\"\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let started = Instant::now();
    let body = client()
        .get(gw.url("/api/s/ticks"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.matches("data: tick\n\n").count(), 12, "{body:?}");
    assert!(started.elapsed() >= Duration::from_millis(1_000));
}

#[tokio::test]
async fn heartbeats_fill_silences_but_never_split_a_line() {
    let ms = Duration::from_millis;
    let script = vec![
        (ms(0), "data: a\n\n"),
        // A line paused halfway for longer than the heartbeat: no comment may go in.
        (ms(20), "data: b"),
        (ms(350), "c\n\n"),
        // A quiet spell between events: comments go in.
        (ms(350), "data: d\n\n"),
    ];
    let up = SseUpstream::start(script, false).await;
    let toml = format!(
        "[sse]\nheartbeat = \"100ms\"\n{}",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let body = client()
        .get(gw.url("/sse/s/e"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("data: bc\n\n"), "{body:?}");
    assert!(
        body.contains("c\n\n:\n"),
        "a beat after the event: {body:?}"
    );
    assert!(body.matches(":\n").count() >= 2, "{body:?}");
    assert_eq!(
        body.replace(":\n", ""),
        "data: a\n\ndata: bc\n\ndata: d\n\n",
        "comments are all that was added"
    );
}

#[tokio::test]
async fn a_client_that_leaves_closes_the_upstream_stream_within_a_second() {
    let up = SseUpstream::start(vec![(Duration::ZERO, "data: hello\n\n")], true).await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let mut response = client().get(gw.url("/sse/s/live")).send().await.unwrap();
    assert_eq!(response.chunk().await.unwrap().unwrap(), "data: hello\n\n");
    let live = admin_stats(&gw).await;
    assert_eq!(live["connections"]["sse"], 1, "{live}");
    assert_eq!(
        live["services"]["s"]["upstreamDetails"][0]["inflight"]["sse"],
        1
    );

    drop(response);
    let left = Instant::now();
    let closed = loop {
        if let Some(at) = *up.dropped_at.lock().unwrap() {
            break at;
        }
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "upstream stream still open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = closed.saturating_duration_since(left);
    assert!(
        took < Duration::from_secs(1),
        "upstream closed after {took:?}"
    );
    let live = admin_stats(&gw).await;
    assert_eq!(live["connections"]["sse"], 0, "{live}");
    assert_eq!(
        live["services"]["s"]["upstreamDetails"][0]["inflight"]["sse"],
        0
    );
}

#[tokio::test]
async fn the_sse_route_takes_get_and_head_only_and_known_services() {
    let up = SseUpstream::start(vec![(Duration::ZERO, "data: x\n\n")], false).await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let response = client().post(gw.url("/sse/s/e")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    error_body(response, "method_not_allowed").await;
    let response = client().get(gw.url("/sse/nope/e")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    error_body(response, "unknown_service").await;
    assert!(up.last_event_id.lock().unwrap().is_none());
    assert!(
        up.dropped_at.lock().unwrap().is_none(),
        "no stream was opened"
    );
}

#[tokio::test]
async fn no_heartbeat_goes_past_a_declared_content_length() {
    // An event stream with a Content-Length, pausing between its two events.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 18\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(b"data: 1\n\n").await;
                tokio::time::sleep(Duration::from_millis(400)).await;
                let _ = stream.write_all(b"data: 2\n\n").await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    let toml = format!(
        "[sse]\nheartbeat = \"50ms\"\n{}",
        service("s", &[format!("http://{addr}")])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let response = client().get(gw.url("/sse/s/e")).send().await.unwrap();
    assert_eq!(response.headers()["content-length"], "18");
    assert_eq!(response.text().await.unwrap(), "data: 1\n\ndata: 2\n\n");
}
