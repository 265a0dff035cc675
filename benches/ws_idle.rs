//! Resident memory of idle bridged WebSockets (issue #4's target: at most 40 MiB per 10,000).
//!
//! Starts a WebSocket upstream in this process, a fresh `sluice` (the release binary) in
//! front of it, measures the gateway's resident memory, opens `WS_IDLE_CONNECTIONS`
//! (default 10,000) WebSockets through `/ws/bench?path=/`, sends one message on each and
//! waits for its echo, lets everything sit idle, and measures again. The difference, over the
//! connection count, is what an idle bridge costs. Run it with `bench/ws-idle`, which raises
//! the file-descriptor limit first (each bridge is two sockets in each process).

// A bench with a broken setup has nothing to measure: stopping loudly is the right answer.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
}

/// An upstream that echoes every message and keeps each connection open until it closes.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let accepted =
                    tokio_tungstenite::accept_async_with_config(stream, Some(small_buffers()))
                        .await;
                let Ok(mut ws) = accepted else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = ws.send(message).await;
                    }
                }
            });
        }
    });
    addr
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway(Child);

impl Drop for Gateway {
    /// SIGTERM first (a profiler wrapping the binary writes its report on a clean exit), then
    /// SIGKILL if it is still there after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("WS_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let binary = std::env::var("SLUICE_BIN").unwrap_or_else(|_| "target/release/sluice".into());
    let binary = std::fs::canonicalize(&binary)
        .unwrap_or_else(|e| panic!("{binary}: {e} (build it with cargo build --release)"));
    let up = upstream().await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sluice-ws-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nworker_threads = 1\nmax_connections = {}\n\
             shutdown_grace = \"1s\"\n\
             [log]\nlevel = \"warn\"\naccess_log = false\n\
             [services.bench]\nupstreams = [\"http://{up}\"]\n",
            count + 100
        ),
    )
    .unwrap();
    let child = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let gateway = Gateway(child);
    let pid = gateway.0.id();
    let health = format!("127.0.0.1:{port}");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&health).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sluice did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm up (first connections allocate the runtime's per-thread structures), then measure.
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..10 {
        sockets.push(open(port).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let opened = Instant::now();
    let mut batch = Vec::new();
    while sockets.len() < count {
        batch.push(tokio::spawn(open(port)));
        if batch.len() == 250 || sockets.len() + batch.len() == count {
            for handle in batch.drain(..) {
                sockets.push(handle.await.unwrap());
            }
        }
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    let added = after.saturating_sub(before) as f64;
    let measured = count - 10;
    println!("connections\t{count}");
    println!("open_seconds\t{open_secs:.1}");
    println!("rss_before_kib\t{before}");
    println!("rss_after_kib\t{after}");
    println!(
        "per_connection_bytes\t{:.0}",
        added * 1024.0 / measured as f64
    );
    println!(
        "per_10k_mib\t{:.1}",
        added / 1024.0 * 10_000.0 / measured as f64
    );
    drop(sockets);
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One bridged WebSocket that has carried one message each way.
async fn open(port: u16) -> Client {
    let url = format!("ws://127.0.0.1:{port}/ws/bench?path=/");
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(small_buffers()), false)
            .await
            .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(_))) => return ws,
            Some(Ok(_)) => continue,
            other => panic!("no echo: {other:?}"),
        }
    }
}
