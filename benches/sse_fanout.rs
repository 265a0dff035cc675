//! Server-Sent Events fan-out (issue #4's target: 1,000 concurrent streams at 10 events/s each,
//! added delivery latency p99 under 5 ms, CPU per event reported beside nginx's).
//!
//! One process plays both ends: an SSE upstream that writes `data: <send time>` on every
//! stream every 100 ms, and 1,000 clients that note when each event arrives. It runs the
//! clients straight against the upstream (the baseline), through nginx (`proxy_buffering
//! off`, one worker) and through a fresh `sluice` (release build, one worker thread), each
//! for `SSE_FANOUT_SECS` (default 10) after a 2 s warm-up, and prints per system the p50 and
//! p99 delivery latency, the p99 added over the baseline and the proxy's CPU time per event.
//! The proxy runs on core 1, this process on core 0 (`taskset`), as in `bench/run`. Use
//! `bench/sse-fanout`, which writes the result into BENCHMARKS.md.

// A bench with a broken setup has nothing to measure: stopping loudly is the right answer.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STREAMS: usize = 1_000;
const EVERY: Duration = Duration::from_millis(100);

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Every stream writes `data: <microseconds since EPOCH>\n\n` every 100 ms.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    let ticks = tokio_stream_ticks();
                    let response = hyper::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(ticks))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn tokio_stream_ticks(
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    // Streams start at random phases so the 10,000 events a second are spread out.
    let phase = Duration::from_micros(fastrand::u64(..EVERY.as_micros() as u64));
    let start = tokio::time::Instant::now() + phase;
    futures_util::stream::unfold(0u32, move |n| async move {
        tokio::time::sleep_until(start + EVERY * n).await;
        let event = Bytes::from(format!("data: {}\n\n", now_us()));
        Some((Ok(Frame::data(event)), n + 1))
    })
}

/// Latencies (µs) of events received while `recording` is set.
type Samples = Arc<Mutex<Vec<u32>>>;

async fn client(
    addr: SocketAddr,
    path: &'static str,
    recording: Arc<AtomicBool>,
    samples: Samples,
) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut pending = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let received = now_us();
        pending.extend_from_slice(&buf[..n]);
        // Chunked framing and headers are skipped: only `data: N` lines matter.
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(sent) = line
                .strip_prefix(b"data: ")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                if recording.load(Ordering::Relaxed) {
                    let latency = received.saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                    samples.lock().unwrap().push(latency);
                }
            }
        }
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12) // utime, stime
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proxy {
    child: Child,
    name: &'static str,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sluice(dir: &std::path::Path, up: SocketAddr, port: u16) -> Proxy {
    let binary = std::env::var("SLUICE_BIN").unwrap_or_else(|_| "target/release/sluice".into());
    let binary = std::fs::canonicalize(&binary)
        .unwrap_or_else(|e| panic!("{binary}: {e} (build it with cargo build --release)"));
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nworker_threads = 1\n\
             [log]\nlevel = \"warn\"\naccess_log = false\n\
             [services.bench]\nupstreams = [\"http://{up}\"]\nidle_timeout = \"1h\"\n"
        ),
    )
    .unwrap();
    let child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(&binary)
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Proxy {
        child,
        name: "sluice",
    }
}

fn start_nginx(dir: &std::path::Path, up: SocketAddr, port: u16) -> Option<Proxy> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    let p = prefix.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log {p}/logs/error.log warn;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             upstream bench {{ server {up}; keepalive 64; }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location /api/bench/ {{\n\
             proxy_pass http://bench/;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
             proxy_buffering off;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("taskset")
        .args(["-c", "1", "nginx", "-p"])
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Proxy {
        child,
        name: "nginx",
    })
}

struct Result_ {
    name: &'static str,
    events: usize,
    p50_us: u32,
    p99_us: u32,
    cpu_us_per_event: Option<f64>,
}

async fn measure(
    name: &'static str,
    addr: SocketAddr,
    path: &'static str,
    pid: Option<u32>,
    secs: u64,
) -> Result_ {
    let recording = Arc::new(AtomicBool::new(false));
    let samples: Samples = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..STREAMS {
        clients.push(tokio::spawn(client(
            addr,
            path,
            recording.clone(),
            samples.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks_before = pid.map(cpu_ticks);
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    recording.store(false, Ordering::Relaxed);
    let ticks_after = pid.map(cpu_ticks);
    for c in &clients {
        c.abort();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut all = std::mem::take(&mut *samples.lock().unwrap());
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let clk_tck = 100.0; // USER_HZ on Linux
    let cpu = match (ticks_before, ticks_after) {
        (Some(a), Some(b)) if !all.is_empty() => {
            Some((b - a) as f64 / clk_tck * 1e6 / all.len() as f64)
        }
        _ => None,
    };
    Result_ {
        name,
        events: all.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        cpu_us_per_event: cpu,
    }
}

async fn wait_port(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    EPOCH.get_or_init(Instant::now);
    let secs: u64 = std::env::var("SSE_FANOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("sluice-sse-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let up = upstream().await;
    let mut results = vec![measure("direct", up, "/events", None, secs).await];

    let port = free_port();
    if let Some(nginx) = start_nginx(&dir, up, port) {
        wait_port(port).await;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let pid = nginx.child.id();
        results.push(measure(nginx.name, addr, "/api/bench/events", Some(pid), secs).await);
    }
    let port = free_port();
    let sluice = start_sluice(&dir, up, port);
    wait_port(port).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = sluice.child.id();
    results.push(measure(sluice.name, addr, "/sse/bench/events", Some(pid), secs).await);
    drop(sluice);
    let _ = std::fs::remove_dir_all(&dir);

    let base = results[0].p99_us;
    for r in &results {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            r.name,
            r.events,
            r.p50_us,
            r.p99_us,
            r.p99_us.saturating_sub(base),
            r.cpu_us_per_event
                .map_or("-".to_owned(), |c| format!("{c:.2}")),
        );
    }
}
