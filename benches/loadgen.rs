//! The load generator behind issue #9's side-by-side benchmarks: one binary, four modes, each
//! printing its figures as `key<TAB>value` lines on stdout (progress and errors go to stderr),
//! so a shell script can run any proxy under test the same way and read the same keys back.
//!
//! - `open-loop` is an open-loop HTTP/1.1 keep-alive generator in the spirit of wrk2. The
//!   target rate is split evenly over the connections, each with its own fixed schedule
//!   (request `i` of connection `k` is due at `start + k/R + i·C/R`), so a slow answer does not
//!   slow the offered load down. A request's latency runs from the moment it was *due* when its
//!   connection was still busy with an earlier answer: that wait is the server's doing, and
//!   leaving it out is the "coordinated omission" that makes closed-loop tools (wrk, ab) report
//!   flattering tails. When the connection was free, latency runs from the actual send: tokio's
//!   timer fires up to a millisecond late, and that lateness is the generator's, not the
//!   server's (at sub-millisecond proxy latencies it would otherwise be most of the figure).
//!   The warm-up runs a schedule of its own and the recorded one starts afresh after it.
//!   Non-2xx answers, transport errors and answers still missing 5 s after the end are errors;
//!   requests due but never sent because the connection was still behind are `unsent`.
//! - `ws-upstream` is a WebSocket echo server (RFC 6455 handshake done by hand over hyper's
//!   upgrade, small tungstenite buffers) that also answers plain GETs with `200 ok`, so the
//!   proxies' readiness checks pass.
//! - `ws-idle` opens N WebSockets through a proxy, echoes one message on each, prints `ready`
//!   and holds them idle until stdin closes, so the caller can read the proxy's RSS meanwhile.
//! - `sse-fanout` serves Server-Sent Events (WHATWG EventSource format, `data: <µs since this
//!   process started>` every 100 ms per stream, random phase) and reads N streams back, either
//!   straight or through a proxy, reporting delivery latency and the proxy's CPU per event.
//!
//! It is not a general tool: plain HTTP only, no TLS, one request in flight per connection.
//! Everything runs on one current-thread runtime, so `taskset` can pin it to one core.
//! Cargo's `--bench` argument is accepted and ignored. The modes share one file (and one
//! binary for the scripts to find), each in its own `// === mode ===` section; a setup
//! failure is printed and exits with status 2.

// A bench with a broken setup has nothing to measure: stopping loudly is the right answer.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

type Header = (HeaderName, HeaderValue);

#[derive(Parser)]
#[command(about = "Load generator for the side-by-side proxy benchmarks (issue #9)")]
enum Mode {
    /// Open-loop HTTP/1.1 keep-alive load at a fixed rate, coordinated-omission corrected.
    OpenLoop(OpenLoop),
    /// WebSocket echo upstream (plain GETs get `200 ok`); runs until killed.
    WsUpstream {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Opens N WebSockets, echoes one message on each, prints `ready`, holds them idle.
    WsIdle(WsIdle),
    /// SSE upstream on `--upstream-listen` plus N client streams reading `--url`.
    SseFanout(SseFanout),
}

#[derive(Args)]
struct OpenLoop {
    #[arg(long)]
    url: Uri,
    /// Total requests per second over all connections.
    #[arg(long)]
    rate: f64,
    /// Recorded seconds, after the warm-up.
    #[arg(long)]
    secs: f64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// `Name: value`, repeatable.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<Header>,
}

#[derive(Args)]
struct WsIdle {
    /// `ws://host:port/path`.
    #[arg(long)]
    url: String,
    #[arg(long)]
    count: usize,
    /// Give up waiting for stdin to close after this long.
    #[arg(long, default_value_t = 600)]
    hold_secs: u64,
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<Header>,
}

#[derive(Args)]
struct SseFanout {
    #[arg(long)]
    upstream_listen: SocketAddr,
    /// The upstream itself (the baseline) or a proxy forwarding to it.
    #[arg(long)]
    url: Uri,
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    #[arg(long, default_value_t = 10)]
    secs: u64,
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// The proxy whose CPU time per event is reported (its child processes included).
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<Header>,
}

fn parse_header(s: &str) -> Result<Header, String> {
    let (name, value) = s.split_once(':').ok_or("expected `Name: value`")?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| e.to_string())?;
    let value = HeaderValue::try_from(value.trim()).map_err(|e| e.to_string())?;
    Ok((name, value))
}

fn main() {
    let mode = Mode::parse_from(std::env::args().filter(|a| a != "--bench"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async move {
        match mode {
            Mode::OpenLoop(args) => open_loop(args).await,
            Mode::WsUpstream { listen } => ws_upstream(listen).await,
            Mode::WsIdle(args) => ws_idle(args).await,
            Mode::SseFanout(args) => sse_fanout(args).await,
        }
    });
    std::io::stdout().flush().unwrap();
    // `ws-idle` may leave a blocked stdin read behind; the runtime must not wait for it.
    runtime.shutdown_background();
    if let Err(e) = outcome {
        eprintln!("{e}");
        std::process::exit(2);
    }
}

/// Where a URL's requests go.
async fn resolve(url: &Uri) -> Result<SocketAddr, String> {
    let authority = url.authority().ok_or(format!("{url}: no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    let mut addrs = tokio::net::lookup_host((authority.host(), port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    addrs.next().ok_or(format!("{url}: no address"))
}

/// Nearest-rank quantile of sorted samples; 0 when there are none.
fn quantile(sorted: &[u32], q: f64) -> u32 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(0)
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
}

// === open-loop ===

/// What one connection saw of the recorded window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    /// Requests due in the recorded window but never sent: the connection was still behind
    /// when the window closed. A system that cannot keep up shows here (and in
    /// `achieved_rps`), since those would have been its slowest answers.
    unsent: u64,
}

async fn open_loop(args: OpenLoop) -> Result<(), String> {
    let OpenLoop {
        url,
        rate,
        secs,
        connections,
        warmup_secs,
        headers,
    } = args;
    if rate <= 0.0 || secs <= 0.0 || connections == 0 {
        return Err("--rate, --secs and --connections must be positive".into());
    }
    let addr = resolve(&url).await?;
    TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let target = Arc::new(Target {
        addr,
        host: HeaderValue::try_from(url.authority().map_or("", |a| a.as_str())).unwrap(),
        path: url.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        headers,
    });
    let start = TokioInstant::now() + Duration::from_millis(10);
    let window = Window {
        start,
        recorded_from: start + Duration::from_secs_f64(warmup_secs),
        end: start + Duration::from_secs_f64(warmup_secs + secs),
    };
    let gap = Duration::from_secs_f64(connections as f64 / rate);
    let tasks: Vec<_> = (0..connections)
        .map(|k| {
            let phase = Duration::from_secs_f64(k as f64 / rate);
            tokio::spawn(connection(target.clone(), phase, gap, window))
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await.unwrap();
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        all.unsent += tally.unsent;
    }
    let mut lat = all.latencies_us;
    lat.sort_unstable();
    println!("rate\t{rate}");
    println!("achieved_rps\t{:.1}", lat.len() as f64 / secs);
    println!("requests\t{}", lat.len() as u64 + all.errors);
    println!("errors\t{}", all.errors);
    println!("unsent\t{}", all.unsent);
    for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        println!("{key}_us\t{}", quantile(&lat, q));
    }
    println!("max_us\t{}", lat.last().copied().unwrap_or(0));
    Ok(())
}

struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    headers: Vec<Header>,
}

#[derive(Clone, Copy)]
struct Window {
    /// The warm-up's schedule starts here; nothing before `recorded_from` is recorded.
    start: TokioInstant,
    /// The recorded schedule starts here, afresh: a connection still behind with warm-up
    /// requests drops them (though one still in flight delays the first recorded request,
    /// which is then timed from its due time).
    recorded_from: TokioInstant,
    /// No request is sent from here on; the one in flight gets 5 s more.
    end: TokioInstant,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One keep-alive connection working through its own schedule, reconnecting after errors.
async fn connection(target: Arc<Target>, phase: Duration, gap: Duration, w: Window) -> Tally {
    let hard_stop = w.end + Duration::from_secs(5);
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    let mut free_since = TokioInstant::now();
    let mut complained = false; // once per connection is enough to see what went wrong
    for (from, until, recorded) in [
        (w.start, w.recorded_from, false),
        (w.recorded_from, w.end, true),
    ] {
        for i in 0u32.. {
            let due = from + phase + gap * i;
            if due >= until {
                break;
            }
            let now = TokioInstant::now();
            if now >= until {
                if recorded {
                    // Slots i, i+1, … that fall before `until`: due, never sent.
                    let left = (until - due).as_secs_f64() / gap.as_secs_f64();
                    tally.unsent += left.ceil() as u64;
                }
                break;
            }
            if due > TokioInstant::now() {
                tokio::time::sleep_until(due).await;
            }
            // See the module doc: a busy connection's wait counts, the timer's lateness does not.
            let origin = if free_since <= due {
                TokioInstant::now()
            } else {
                due
            };
            let outcome = tokio::time::timeout_at(hard_stop, request(&target, &mut sender)).await;
            free_since = TokioInstant::now();
            match outcome {
                Ok(Ok(status)) if status.is_success() => {
                    if recorded {
                        tally.latencies_us.push(micros(free_since - origin));
                    }
                }
                Ok(Ok(_)) => tally.errors += u64::from(recorded),
                Ok(Err(e)) => {
                    if !complained {
                        eprintln!("request failed: {e}");
                        complained = true;
                    }
                    sender = None;
                    tally.errors += u64::from(recorded);
                }
                Err(_) => {
                    tally.errors += u64::from(recorded);
                    return tally;
                }
            }
        }
    }
    tally
}

async fn request(target: &Target, sender: &mut Option<Sender>) -> Result<StatusCode, String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(handshake(target.addr).await?);
    }
    let s = sender.as_mut().unwrap();
    s.ready().await.map_err(|e| e.to_string())?;
    let mut req = Request::get(target.path.as_str())
        .header(hyper::header::HOST, target.host.clone())
        .body(Empty::new())
        .unwrap();
    for (name, value) in &target.headers {
        req.headers_mut().append(name.clone(), value.clone());
    }
    let response = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

async fn handshake(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

// === ws-upstream ===

async fn ws_upstream(listen: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    eprintln!("ws-upstream listening on {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(ws_or_ok))
                .with_upgrades()
                .await;
        });
    }
}

/// Upgrades a WebSocket handshake (RFC 6455 §4.2.2) into an echo; anything else gets `200 ok`.
async fn ws_or_ok(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let wants_ws = req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req.headers().get(hyper::header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (wants_ws, key) else {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = TokioIo::new(upgraded);
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            Role::Server,
            Some(small_buffers()),
        )
        .await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(
            hyper::header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Full::default())
        .unwrap();
    Ok(response)
}

// === ws-idle ===

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_idle(args: WsIdle) -> Result<(), String> {
    let WsIdle {
        url,
        count,
        hold_secs,
        headers,
    } = args;
    let mut template = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    for (name, value) in headers {
        template.headers_mut().append(name, value);
    }
    let started = Instant::now();
    // At most 200 handshakes in flight: more only fills the proxy's accept backlog.
    let results: Vec<_> = futures_util::stream::iter(0..count)
        .map(|_| open_ws(template.clone()))
        .buffer_unordered(200)
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(count);
    let mut failed = 0;
    for result in results {
        match result {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("websocket failed: {e}");
                }
            }
        }
    }
    eprintln!(
        "opened {} in {:.1} s",
        sockets.len(),
        started.elapsed().as_secs_f64()
    );
    println!("opened\t{}", sockets.len());
    println!("failed\t{failed}");
    println!("ready");
    std::io::stdout().flush().unwrap();
    if sockets.is_empty() && count > 0 {
        return Err("no websocket opened".into());
    }
    // Reading keeps each socket answering pings while idle, and notices a proxy closing it.
    let closed = Arc::new(AtomicUsize::new(0));
    for mut ws in sockets {
        let closed = closed.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = ws.next().await {}
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 256];
    let eof = async { while !matches!(stdin.read(&mut sink).await, Ok(0) | Err(_)) {} };
    tokio::select! {
        () = eof => {}
        () = tokio::time::sleep(Duration::from_secs(hold_secs)) => {}
    }
    let closed = closed.load(Ordering::Relaxed);
    if closed > 0 {
        eprintln!("{closed} websockets were closed while idle");
    }
    Ok(())
}

/// One WebSocket that has carried one message each way (30 s at most).
async fn open_ws(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> Result<Client, String> {
    let exchange = async {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(small_buffers()), true)
                .await
                .map_err(|e| e.to_string())?;
        ws.send(Message::text("hello"))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => return Ok(ws),
                Some(Ok(_)) => {}
                other => return Err(format!("no echo: {other:?}")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

// === sse-fanout ===

const EVERY: Duration = Duration::from_millis(100);

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What the client streams share: whether to record, what they recorded, how they fared.
#[derive(Default)]
struct Fanout {
    recording: AtomicBool,
    stopping: AtomicBool,
    latencies_us: Mutex<Vec<u32>>,
    connected: AtomicUsize,
    failed: AtomicUsize,
}

async fn sse_fanout(args: SseFanout) -> Result<(), String> {
    let SseFanout {
        upstream_listen,
        url,
        streams,
        secs,
        warmup_secs,
        pid,
        headers,
    } = args;
    EPOCH.get_or_init(Instant::now);
    let listener = TcpListener::bind(upstream_listen)
        .await
        .map_err(|e| format!("bind {upstream_listen}: {e}"))?;
    tokio::spawn(sse_upstream(listener));
    let addr = resolve(&url).await?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        url.path_and_query().map_or("/", |p| p.as_str()),
        url.authority().map_or("", |a| a.as_str()),
    );
    for (name, value) in &headers {
        request += &format!("{name}: {}\r\n", value.to_str().unwrap_or_default());
    }
    request += "\r\n";
    let request: Arc<str> = request.into();
    let shared = Arc::new(Fanout::default());
    for _ in 0..streams {
        tokio::spawn(sse_client(addr, request.clone(), shared.clone()));
    }
    tokio::time::sleep(Duration::from_secs(warmup_secs)).await;
    let cpu_before = pid.map(cpu_ticks);
    shared.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shared.recording.store(false, Ordering::Relaxed);
    shared.stopping.store(true, Ordering::Relaxed);
    let cpu_after = pid.map(cpu_ticks);
    let mut lat = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
    lat.sort_unstable();
    println!(
        "streams_connected\t{}",
        shared.connected.load(Ordering::Relaxed)
    );
    println!("streams_failed\t{}", shared.failed.load(Ordering::Relaxed));
    println!("events\t{}", lat.len());
    println!("p50_us\t{}", quantile(&lat, 0.5));
    println!("p99_us\t{}", quantile(&lat, 0.99));
    println!("max_us\t{}", lat.last().copied().unwrap_or(0));
    match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if !lat.is_empty() => {
            let us = b.saturating_sub(a) as f64 * 1e6 / clock_ticks_per_sec();
            println!("cpu_us_per_event\t{:.2}", us / lat.len() as f64);
        }
        _ => println!("cpu_us_per_event\t-"),
    }
    Ok(())
}

/// Every stream, whatever its path, writes `data: <µs since EPOCH>\n\n` every 100 ms.
async fn sse_upstream(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<Incoming>| async {
                let response = Response::builder()
                    .header(hyper::header::CONTENT_TYPE, "text/event-stream")
                    .header(hyper::header::CACHE_CONTROL, "no-cache")
                    .body(StreamBody::new(ticks()))
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn ticks() -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    // Random phases spread the 10,000 events a second of 1,000 streams over the 100 ms.
    let phase = Duration::from_micros(fastrand::u64(..EVERY.as_micros() as u64));
    let start = TokioInstant::now() + phase;
    futures_util::stream::unfold(0u32, move |n| async move {
        tokio::time::sleep_until(start + EVERY * n).await;
        let event = Bytes::from(format!("data: {}\n\n", now_us()));
        Some((Ok(Frame::data(event)), n + 1))
    })
}

/// Reads one stream, noting each event's delivery latency while recording is on.
async fn sse_client(addr: SocketAddr, request: Arc<str>, shared: Arc<Fanout>) {
    let outcome = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let mut pending = Vec::new();
        let mut status_seen = false;
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("stream ended".to_owned());
            }
            let received = now_us();
            pending.extend_from_slice(&buf[..n]);
            // Chunked framing and headers are skipped: only the status and `data: N` matter.
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if !status_seen {
                    if !line.starts_with(b"HTTP/1.1 200") {
                        return Err(String::from_utf8_lossy(&line).trim().to_owned());
                    }
                    status_seen = true;
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                }
                let sent = line
                    .strip_prefix(b"data: ")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if let (Some(sent), true) = (sent, shared.recording.load(Ordering::Relaxed)) {
                    let latency = received.saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                    shared.latencies_us.lock().unwrap().push(latency);
                }
            }
        }
    };
    let Err(e): Result<Infallible, String> = outcome.await;
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        eprintln!("sse stream failed: {e}");
    }
}

/// utime + stime (clock ticks) of `pid`'s threads and of its direct children (nginx's workers).
fn cpu_ticks(pid: u32) -> u64 {
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    std::iter::once(pid)
        .chain(children)
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // Fields 14 and 15 (utime, stime), counted after the `(comm)` that may hold spaces.
            let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            let mut fields = rest.split(' ').skip(11);
            let mut next = || {
                fields
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            next() + next()
        })
        .sum()
}

fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
