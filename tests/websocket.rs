//! The WebSocket bridge end to end, with real tokio-tungstenite clients and upstreams: the
//! handshake order and every answer before `101`, messages and close codes both ways,
//! pings, the message size limit, and the counts in `/admin/stats`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::{
    admin_stats, client, closed_port, error_body, service, TestGateway, Upstream,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// What a WebSocket upstream saw of the handshake and the close.
#[derive(Default)]
struct Seen {
    uri: Option<String>,
    headers: HeaderMap,
    close: Option<(u16, String)>,
}

/// A WebSocket upstream. On `/deaf` it completes the handshake, then never reads again (so it
/// never answers a ping). Everywhere else it echoes each message back as it came, and on the
/// text `close-me` closes with 4001 "bye". It picks the subprotocol `chat` when offered.
pub(crate) struct WsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl WsUpstream {
    pub(crate) async fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let deaf = Arc::new(Mutex::new(false));
                    let is_deaf = deaf.clone();
                    // The callback's error type is tungstenite's (large) response type.
                    #[allow(clippy::result_large_err)]
                    let callback = |request: &Request, mut response: Response| {
                        let mut seen = record.lock().unwrap();
                        seen.uri = Some(request.uri().to_string());
                        seen.headers = request.headers().clone();
                        *is_deaf.lock().unwrap() = request.uri().path() == "/deaf";
                        let offered = request
                            .headers()
                            .get("sec-websocket-protocol")
                            .is_some_and(|v| v.to_str().unwrap().contains("chat"));
                        if offered {
                            response
                                .headers_mut()
                                .insert("sec-websocket-protocol", "chat".parse().unwrap());
                        }
                        Ok(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    if *deaf.lock().unwrap() {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    while let Some(Ok(message)) = ws.next().await {
                        match message {
                            Message::Text(text) if text.as_str() == "close-me" => {
                                let frame = CloseFrame {
                                    code: CloseCode::Library(4001),
                                    reason: "bye".into(),
                                };
                                let _ = ws.close(Some(frame)).await;
                            }
                            Message::Close(frame) => {
                                record.lock().unwrap().close = frame
                                    .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                            }
                            Message::Ping(_) | Message::Pong(_) => {}
                            other => {
                                if ws.send(other).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        WsUpstream { addr, seen }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The close frame the upstream got (code, reason), waiting up to 3 s for it.
    async fn close(&self) -> Option<(u16, String)> {
        let started = std::time::Instant::now();
        loop {
            if let Some(close) = self.seen.lock().unwrap().close.clone() {
                return Some(close);
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "no close upstream"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn ws_url(gw: &TestGateway, path_and_query: &str) -> String {
    format!("ws://{}{path_and_query}", gw.addr)
}

/// Connects, expecting a `101`.
async fn connect(
    request: impl IntoClientRequest + Unpin,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::handshake::client::Response,
) {
    tokio_tungstenite::connect_async(request).await.unwrap()
}

/// Connects, expecting a plain HTTP refusal: its status and JSON error code.
async fn refused(request: impl IntoClientRequest + Unpin) -> (u16, String) {
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or(b"{}"))
                .unwrap_or_default();
            assert!(response.headers().contains_key("x-request-id"));
            (
                response.status().as_u16(),
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
        Ok((_, response)) => panic!("upgraded, status {}", response.status()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn next_data(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message within 5 s")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("stream ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_ws_route_bridges_text_binary_and_close_codes() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let mut request = ws_url(&gw, "/ws/s?path=%2Fchat%3Froom%3D1")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "chat, superchat".parse().unwrap());
    headers.insert("origin", "https://app.example.com".parse().unwrap());
    headers.insert("cookie", "session=abc".parse().unwrap());
    headers.insert("x-request-id", "ws-test-1".parse().unwrap());
    let (mut ws, response) = connect(request).await;
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    assert_eq!(response.headers()["x-request-id"], "ws-test-1");
    {
        let seen = up.seen.lock().unwrap();
        assert_eq!(seen.uri.as_deref(), Some("/chat?room=1"));
        assert_eq!(seen.headers["origin"], "https://app.example.com");
        assert_eq!(seen.headers["cookie"], "session=abc");
        assert_eq!(seen.headers["x-request-id"], "ws-test-1");
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
        assert!(!seen.headers.contains_key("sec-websocket-extensions"));
    }
    let live = admin_stats(&gw).await;
    assert_eq!(live["connections"]["ws"], 1, "{live}");

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    // The upstream closes with its own code and reason: both reach the client.
    ws.send(Message::text("close-me")).await.unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = admin_stats(&gw).await;
    assert_eq!(live["connections"]["ws"], 0, "{live}");
    // Messages and bytes per direction (close frames are not messages).
    let counted = &live["services"]["s"]["upstreamDetails"][0]["streams"]["ws"];
    let expected =
        serde_json::json!({"messagesUp": 3, "bytesUp": 17, "messagesDown": 2, "bytesDown": 9});
    assert_eq!(counted, &expected, "{live}");
    assert_eq!(&live["services"]["s"]["streams"]["ws"], &expected);
    assert_eq!(
        live["services"]["s"]["upstreamDetails"][0]["inflight"]["ws"],
        0
    );
}

/// Without `?path`, the Node gateway bridged to the service's root; clients written for it
/// still connect.
#[tokio::test]
async fn the_ws_route_without_a_path_bridges_to_the_root() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s")).await;
    assert_eq!(up.seen.lock().unwrap().uri.as_deref(), Some("/"));
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hi"));
}

#[tokio::test]
async fn a_clients_close_code_and_reason_reach_the_upstream() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s?path=/x")).await;
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("one"));
    let frame = CloseFrame {
        code: CloseCode::Library(4000),
        reason: "done here".into(),
    };
    ws.close(Some(frame)).await.unwrap();
    let close = up.close().await;
    assert_eq!(close, Some((4000, "done here".to_owned())));
}

#[tokio::test]
async fn every_failure_before_the_upgrade_is_a_plain_json_answer() {
    let up = WsUpstream::start().await;
    let http_only = Upstream::ok().await;
    // Accepts connections and never answers: the handshake times out.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let toml = format!(
        "{}{}{}{}response_timeout = \"300ms\"\n",
        service("s", &[up.url()]),
        service("plain", &[http_only.url()]),
        service("dead", &[format!("http://127.0.0.1:{}", closed_port())]),
        service("slow", &[format!("http://{silent_addr}")]),
    );
    let gw = TestGateway::start(&toml, &[]).await;
    for (path, status, code) in [
        ("/ws/nope?path=/x", 404, "unknown_service"),
        ("/ws/s?path=//evil.example/x", 400, "bad_request"),
        ("/ws/s?path=http://evil.example/x", 400, "bad_request"),
        ("/ws/s?path=/a/../b", 400, "bad_request"),
        ("/ws/s?path=%2Fx%23frag", 400, "bad_request"),
        ("/ws/dead?path=/x", 502, "upstream_unavailable"),
        ("/ws/plain?path=/x", 502, "upstream_unavailable"),
        ("/ws/slow?path=/x", 504, "upstream_timeout"),
    ] {
        let (got_status, got_code) = refused(ws_url(&gw, path)).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "{path}");
    }
    assert_eq!(
        http_only.count(),
        1,
        "the plain upstream saw only its one handshake"
    );
    // A plain GET on the WebSocket route is refused, not proxied.
    let response = client().get(gw.url("/ws/s?path=/x")).send().await.unwrap();
    error_body(response, "bad_request").await;
}

#[tokio::test]
async fn auth_comes_before_the_upstream_and_accepts_a_query_token_or_cookie() {
    let up = WsUpstream::start().await;
    let toml = format!(
        "[websocket]\ntoken_cookie = \"sluice_token\"\n{}[[routes]]\npath = \"/live\"\nservice = \"s\"\n",
        service("s", &[up.url()])
    );
    let env = [("AUTH_REQUIRED", "true"), ("JWT_SECRET", SECRET)];
    let gw = TestGateway::start(&toml, &env).await;
    let (status, code) = refused(ws_url(&gw, "/ws/s?path=/x")).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(
        up.seen.lock().unwrap().uri.is_none(),
        "nothing reached the upstream"
    );

    let token = sluice::token::mint(SECRET, "u1", Duration::from_secs(60), &[]).unwrap();
    // A config route that receives an upgrade: the token parameter goes no further.
    let (mut ws, _) = connect(ws_url(&gw, &format!("/live/feed?access_token={token}&x=1"))).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hi"));
    {
        let seen = up.seen.lock().unwrap();
        assert_eq!(seen.uri.as_deref(), Some("/live/feed?x=1"));
        assert_eq!(seen.headers["x-user-id"], "u1");
    }
    let mut request = ws_url(&gw, "/ws/s?path=/y").into_client_request().unwrap();
    request.headers_mut().insert(
        "cookie",
        format!("a=b; sluice_token={token}").parse().unwrap(),
    );
    let (mut ws, _) = connect(request).await;
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("again"));
}

#[tokio::test]
async fn a_message_over_the_limit_is_closed_with_1009() {
    let up = WsUpstream::start().await;
    let toml = format!(
        "[websocket]\nmax_message_size = \"1KiB\"\n{}",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s?path=/x")).await;
    ws.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(vec![7u8; 1000]));
    ws.send(Message::binary(vec![7u8; 2000])).await.unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn peers_are_pinged_and_a_silent_one_is_dropped() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(
        &service("s", &[up.url()]),
        &[("WS_PING_INTERVAL_MS", "200")],
    )
    .await;
    // A live upstream: the client gets pings and the bridge stays up.
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s?path=/x")).await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(900);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, ws.next()).await {
        if matches!(message, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 3, "{pings} pings in 900 ms at a 200 ms interval");
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("still here"));

    // An upstream that stops answering is dropped after two intervals, and the client told.
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s?path=/deaf")).await;
    let started = std::time::Instant::now();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected 1001, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn on_shutdown_a_bridge_runs_through_the_grace_period_then_gets_1001() {
    let up = WsUpstream::start().await;
    let toml = format!(
        "[server]\nshutdown_grace = \"400ms\"\n{}",
        service("s", &[up.url()])
    );
    let mut gw = TestGateway::start(&toml, &[]).await;
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s?path=/x")).await;
    let started = std::time::Instant::now();
    let serving = gw.begin_stop();
    // Within the grace period the bridge still carries messages.
    ws.send(Message::text("during grace")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("during grace"));
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected 1001, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "closed after {waited:?}"
    );
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_peer_that_stops_reading_stops_the_sender_then_gets_1013() {
    let up = WsUpstream::start().await;
    let toml = format!(
        "[websocket]\nstall_timeout = \"500ms\"\n{}",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    // The deaf upstream never reads: once the sockets in between are full, the bridge stops
    // reading from the client (flow control), and after stall_timeout gives up with 1013.
    let (ws, _) = connect(ws_url(&gw, "/ws/s?path=/deaf")).await;
    let (mut tx, mut rx) = ws.split();
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0usize;
        // Bounded: 256 MiB at most, far beyond any socket buffer.
        while sent < 256 << 20 {
            let send = tx.send(Message::binary(chunk.clone()));
            match tokio::time::timeout(Duration::from_secs(5), send).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
        }
        sent
    });
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = rx.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("no close within 10 s");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Again));
    writer.abort();
}

#[tokio::test]
async fn a_peer_that_breaks_the_protocol_gets_1007_and_the_other_side_1001() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s?path=/x")).await;
    // A text frame that is not UTF-8.
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Invalid),
        other => panic!("expected 1007, got {other:?}"),
    }
    let close = up.close().await;
    assert_eq!(close.map(|c| c.0), Some(1001));
}

#[tokio::test]
async fn fragments_large_messages_and_pings_pass_frame_by_frame() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
    let (mut ws, _) = connect(ws_url(&gw, "/ws/s?path=/x")).await;
    // A text message in three fragments, characters split between them: checked as UTF-8
    // across the fragments, passed on as it came (the upstream echoes it whole).
    let text = "snow ☃ and fire 🔥!";
    let bytes = text.as_bytes();
    let cut1 = text.find('☃').unwrap() + 1;
    let cut2 = text.find('🔥').unwrap() + 2;
    let parts = [
        (&bytes[..cut1], OpCode::Data(Data::Text), false),
        (&bytes[cut1..cut2], OpCode::Data(Data::Continue), false),
        (&bytes[cut2..], OpCode::Data(Data::Continue), true),
    ];
    for (part, opcode, fin) in parts {
        let frame = Frame::message(part.to_vec(), opcode, fin);
        ws.send(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(next_data(&mut ws).await, Message::text(text));
    // Larger than one read, so masked and unmasked across reads at every offset.
    let big: Vec<u8> = (0..300_001u32).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(big));
    // A ping is answered on this hop, with its payload.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Pong(payload)))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_frame_unmasked_or_with_reserved_bits_is_a_protocol_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad_frames: [&[u8]; 2] = [
        &[0x81, 0x02, b'h', b'i'],             // text, not masked
        &[0xC1, 0x80, 0x01, 0x02, 0x03, 0x04], // RSV1 set (nothing was negotiated)
    ];
    for bad in bad_frames {
        let up = WsUpstream::start().await;
        let gw = TestGateway::start(&service("s", &[up.url()]), &[]).await;
        let mut stream = raw_ws::client(gw.addr, "/x").await;
        stream.write_all(bad).await.unwrap();
        let mut close = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut close))
            .await
            .expect("no close within 5 s")
            .unwrap();
        assert_eq!(close[0], 0x88, "a close frame, unmasked: {close:?}");
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002, "{bad:?}");
        assert_eq!(up.close().await.map(|c| c.0), Some(1001));
    }
}

#[tokio::test]
async fn a_client_that_pings_and_never_reads_is_cut_off_not_buffered_for() {
    use tokio::io::AsyncWriteExt;
    let up = WsUpstream::start().await;
    let toml = format!(
        "[websocket]\nmax_buffered_bytes = \"64KiB\"\nstall_timeout = \"30s\"\n{}",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = raw_ws::upgrade(socket.connect(gw.addr).await.unwrap(), "/x").await;
    // Masked pings with 125-byte payloads, each owed a pong that is never read.
    let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    ping.extend(std::iter::repeat_n(b'p' ^ 1, 125));
    let burst: Vec<u8> = ping.repeat(100);
    // The gateway stops reading from a client it owes 64 KiB: the writes soon block (only
    // socket buffers fill), and nothing piles up in the gateway.
    let mut written = 0usize;
    while written < 64 << 20 {
        let write = stream.write_all(&burst);
        match tokio::time::timeout(Duration::from_secs(1), write).await {
            Ok(Ok(())) => written += burst.len(),
            Ok(Err(e)) => panic!("the connection failed before the stall timeout: {e}"),
            Err(_) => break, // blocked: the gateway is not reading
        }
    }
    assert!(
        written < 16 << 20,
        "the gateway read {written} bytes of pings it could not answer"
    );
}

// ---------------------------------------------------------------------------------------------
// The frame relay against raw sockets on both sides: frames split and held back at will.

mod raw_ws {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    /// A whole frame; masked (with a fixed key) when `mask`.
    pub fn frame(opcode: u8, fin: bool, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut out = head(opcode, fin, payload.len() as u64, mask);
        let key = [0x11, 0x22, 0x33, 0x44];
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| if mask { b ^ key[i % 4] } else { *b }),
        );
        out
    }

    /// Only a frame head declaring `len` payload bytes (mask key 11 22 33 44 when `mask`).
    pub fn head(opcode: u8, fin: bool, len: u64, mask: bool) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        let m = if mask { 0x80 } else { 0 };
        match len {
            0..=125 => out.push(m | len as u8),
            126..=0xFFFF => {
                out.push(m | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if mask {
            out.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        }
        out
    }

    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        String::from_utf8(head).unwrap()
    }

    /// A raw client through the gateway's `/ws/s?path=...`, after its `101`.
    pub async fn client(gw: SocketAddr, path: &str) -> TcpStream {
        upgrade(TcpStream::connect(gw).await.unwrap(), path).await
    }

    /// Asks for the upgrade to `/ws/s?path=...` on `stream` and reads the `101`.
    pub async fn upgrade(mut stream: TcpStream, path: &str) -> TcpStream {
        stream.set_nodelay(true).unwrap();
        let request = format!(
            "GET /ws/s?path={path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        stream
    }

    /// A raw WebSocket upstream: answers the upgrade, then hands the socket to `serve`.
    pub async fn upstream<F, Fut>(serve: F) -> String
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = std::sync::Arc::new(serve);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let serve = serve.clone();
                tokio::spawn(async move {
                    stream.set_nodelay(true).unwrap();
                    let head = read_head(&mut stream).await;
                    let key = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("sec-websocket-key")
                                .then(|| value.trim().to_owned())
                        })
                        .unwrap();
                    let reply = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        derive_accept_key(key.as_bytes())
                    );
                    stream.write_all(reply.as_bytes()).await.unwrap();
                    serve(stream).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// One frame: (first byte, unmasked payload).
    pub async fn read_frame(stream: &mut TcpStream, wait: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(wait, async {
            let first = stream.read_u8().await.ok()?;
            let second = stream.read_u8().await.ok()?;
            let len = match second & 0x7F {
                126 => u64::from(stream.read_u16().await.ok()?),
                127 => stream.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut key = [0u8; 4];
            if second & 0x80 != 0 {
                stream.read_exact(&mut key).await.ok()?;
            }
            let mut payload = vec![0u8; len as usize];
            stream.read_exact(&mut payload).await.ok()?;
            if second & 0x80 != 0 {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
            }
            Some((first, payload))
        })
        .await
        .ok()
        .flatten()
    }
}

/// A text message whose last frame ends inside a character is invalid (1007 to the sender),
/// and, like any other invalid text, does not reach the other side: the upstream's first
/// frame is the 1001 close.
#[tokio::test]
async fn ws_text_ending_inside_a_character_is_not_relayed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let seen_tx = Arc::new(Mutex::new(Some(seen_tx)));
    let url = raw_ws::upstream(move |mut stream| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut got = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut got)).await;
            if let Some(tx) = seen_tx.lock().unwrap().take() {
                let _ = tx.send(got);
            }
        }
    })
    .await;
    let gw = TestGateway::start(&service("s", &[url]), &[]).await;
    let mut client = raw_ws::client(gw.addr, "/x").await;
    client
        .write_all(&raw_ws::frame(0x1, true, b"abc\xE2\x82", true))
        .await
        .unwrap();
    let (first, payload) = raw_ws::read_frame(&mut client, Duration::from_secs(3))
        .await
        .expect("a close frame");
    assert_eq!((first, &payload[..2]), (0x88, &1007u16.to_be_bytes()[..]));
    let upstream_got = tokio::time::timeout(Duration::from_secs(5), seen_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        upstream_got.first(),
        Some(&0x88),
        "the upstream's first frame should be the close, not the invalid text: {upstream_got:x?}"
    );
}

/// While a frame from the upstream is still arriving, pongs owed to the client wait behind
/// it; they count towards the client's outbox, so a client that pings meanwhile is no longer
/// read from once `max_buffered_bytes` are owed to it (its writes block), and nothing piles up.
#[tokio::test]
async fn ws_pongs_waiting_behind_an_open_frame_count_for_flow_control() {
    use tokio::io::AsyncWriteExt;
    let url = raw_ws::upstream(|mut stream| async move {
        // Start a 900 KB binary frame, send 1 KB of it, then stay quiet.
        let mut start = raw_ws::head(0x2, true, 900_000, false);
        start.extend_from_slice(&[b'v'; 1024]);
        let _ = stream.write_all(&start).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;
    let toml = format!(
        "[websocket]\nmax_buffered_bytes = \"64KiB\"\nstall_timeout = \"30s\"\n{}",
        service("s", &[url])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let client = raw_ws::client(gw.addr, "/x").await;
    let (mut rx, mut tx) = client.into_split();
    // The client reads everything it is sent: it is not slow.
    let reader = tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut rx, &mut sink).await;
    });
    let pings: Vec<u8> = (0..1000)
        .flat_map(|_| raw_ws::frame(0x9, true, &[b'p'; 125], true))
        .collect();
    // 64 MiB of pings at most; a write blocked for a second means the gateway stopped reading.
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match tokio::time::timeout(Duration::from_secs(1), tx.write_all(&pings)).await {
            Ok(Ok(())) => sent += pings.len(),
            Ok(Err(e)) => panic!("the connection failed: {e}"),
            Err(_) => break,
        }
    }
    reader.abort();
    assert!(
        sent < 16 << 20,
        "the gateway read {} MiB of pings whose pongs could not go out",
        sent >> 20
    );
}

/// Our keepalive pings to the client wait behind a frame being relayed to it, so a client is
/// not judged silent while one is: an upstream that streams one frame for longer than two
/// ping intervals does not get a responsive client dropped.
#[tokio::test]
async fn ws_a_slowly_streamed_frame_does_not_get_a_responsive_client_dropped() {
    use tokio::io::AsyncWriteExt;
    const LEN: usize = 200_000;
    let url = raw_ws::upstream(|stream| async move {
        let (mut rx, mut tx) = stream.into_split();
        // Answer pings: read and discard (the bridge only needs to hear bytes).
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut rx, &mut sink).await;
        });
        let _ = tx
            .write_all(&raw_ws::head(0x2, true, LEN as u64, false))
            .await;
        // 200 KB over 2 s.
        for _ in 0..20 {
            if tx.write_all(&[b's'; LEN / 20]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let toml = format!(
        "[websocket]\nping_interval = \"200ms\"\n{}",
        service("s", &[url])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let mut client = raw_ws::client(gw.addr, "/x").await;
    loop {
        let frame = raw_ws::read_frame(&mut client, Duration::from_secs(5)).await;
        match frame {
            Some((0x89, payload)) => {
                client
                    .write_all(&raw_ws::frame(0xA, true, &payload, true))
                    .await
                    .unwrap();
            }
            Some((0x82, payload)) => {
                assert_eq!(payload.len(), LEN);
                return;
            }
            other => panic!(
                "a responsive client was cut off mid-frame: {:?}",
                other.map(|(b, p)| (b, p.len()))
            ),
        }
    }
}

/// A side the bridge stops reading for flow control cannot be heard (its pongs wait unread):
/// it is not judged silent, and the stall ends as stalls do, 1013 after stall_timeout, even
/// when that is many ping intervals.
#[tokio::test]
async fn ws_a_flow_controlled_sender_is_not_dropped_as_silent_before_stall_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<Option<(u16, Duration)>>();
    let close_tx = Arc::new(Mutex::new(Some(close_tx)));
    let url = raw_ws::upstream(move |stream| {
        let close_tx = close_tx.clone();
        async move {
            let started = std::time::Instant::now();
            let (mut rx, mut tx) = stream.into_split();
            let flood = tokio::spawn(async move {
                let chunk = raw_ws::frame(0x2, true, &[b'u'; 65536], false);
                for _ in 0..4096 {
                    if tx.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            // Find the first close frame in what comes from the gateway (pings, the client's
            // texts, the close), answering nothing.
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            let mut close = None;
            'read: while started.elapsed() < Duration::from_secs(15) {
                match tokio::time::timeout(Duration::from_secs(15), rx.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => break,
                }
                let mut at = 0;
                while got.len() >= at + 2 {
                    let len = usize::from(got[at + 1] & 0x7F);
                    assert!(len < 126, "short frames only here");
                    let end = at + 6 + len;
                    if got.len() < end {
                        break;
                    }
                    if got[at] == 0x88 {
                        let mut code = [got[at + 6] ^ got[at + 2], got[at + 7] ^ got[at + 3]];
                        code.reverse();
                        close = Some((u16::from_le_bytes(code), started.elapsed()));
                        break 'read;
                    }
                    at = end;
                }
            }
            flood.abort();
            if let Some(tx) = close_tx.lock().unwrap().take() {
                let _ = tx.send(close);
            }
        }
    })
    .await;
    let toml = format!(
        "[websocket]\nping_interval = \"300ms\"\nstall_timeout = \"3s\"\nmax_buffered_bytes = 100000\n{}",
        service("s", &[url])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let mut client = raw_ws::client(gw.addr, "/x").await;
    // The client never reads, but keeps talking (so it is heard).
    let talker = tokio::spawn(async move {
        for _ in 0..100 {
            if client
                .write_all(&raw_ws::frame(0x1, true, b"still here", true))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let close = tokio::time::timeout(Duration::from_secs(20), close_rx)
        .await
        .unwrap()
        .unwrap();
    talker.abort();
    let (code, after) = close.expect("the upstream got no close frame at all");
    assert_eq!(code, 1013, "closed with {code} after {after:?}");
    assert!(after >= Duration::from_millis(2500), "1013 after {after:?}");
}

/// A client that closes while a frame from the upstream is half relayed to it gets no close
/// frame written into the middle of that frame: its connection just ends.
#[tokio::test]
async fn ws_a_close_is_never_written_inside_a_half_relayed_frame() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = raw_ws::upstream(|stream| async move {
        let (mut rx, mut tx) = stream.into_split();
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut rx, &mut sink).await;
        });
        let mut start = raw_ws::head(0x2, true, 100_000, false);
        start.extend_from_slice(&[b's'; 1000]);
        let _ = tx.write_all(&start).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let gw = TestGateway::start(&service("s", &[url]), &[]).await;
    let mut client = raw_ws::client(gw.addr, "/x").await;
    let mut first = vec![0u8; 10 + 1000];
    tokio::time::timeout(Duration::from_secs(3), client.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first[..10], &raw_ws::head(0x2, true, 100_000, false)[..]);
    client
        .write_all(&raw_ws::frame(0x8, true, &1000u16.to_be_bytes(), true))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut rest)).await;
    assert!(
        rest.iter().all(|&b| b == b's'),
        "bytes that are not the frame's payload arrived inside it: {:x?}",
        &rest[..rest.len().min(32)]
    );
}
