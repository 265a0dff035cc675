//! Raw TCP for what HTTP clients refuse to send: ambiguous framing, oversized or slow heads.
//! Also raw "upstreams" that refuse, reset or stall at the TCP level.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connects and writes `bytes` as-is, leaving the connection open.
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Sends `request` as-is and reads until the peer closes or `wait` passes.
/// Returns the bytes received and whether the peer closed the connection.
pub async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    let mut stream = send(addr, request).await;
    read_until_close(&mut stream, wait).await
}

/// Sends `request` as-is and returns what came back before the peer closed or 5 s passed.
pub async fn answer(addr: SocketAddr, request: &[u8]) -> String {
    exchange(addr, request, Duration::from_secs(5)).await.0
}

pub async fn read_until_close(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), false),
        }
    }
}

/// A raw TCP "upstream" on loopback: `serve` runs, in its own task, for every connection.
async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// An upstream that accepts, reads the request head, then closes without answering.
pub async fn resetting_upstream() -> SocketAddr {
    raw_upstream(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
    })
    .await
}

/// Like [`resetting_upstream`], also counting the connections (= attempts) it got.
pub async fn counting_resetting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    counting_upstream(None).await
}

/// An upstream that answers every request with a response no HTTP parser may accept (two
/// different `Content-Length`s), counting the connections it got.
pub async fn invalid_response_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    counting_upstream(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    ))
    .await
}

/// Counts connections; on each, reads the request, writes `answer` (if any) and closes.
pub async fn counting_upstream(answer: Option<&'static [u8]>) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = raw_upstream(move |mut stream| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
            if let Some(answer) = answer {
                let _ = stream.write_all(answer).await;
            }
        }
    })
    .await;
    (addr, count)
}

/// Answers every request head on a connection with `answer`, for as long as the connection
/// stays open, counting the connections it got: a gateway that reuses connections shows as
/// fewer connections than requests.
pub async fn answering_upstream(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = raw_upstream(move |mut stream| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
        }
    })
    .await;
    (addr, count)
}

/// An upstream that answers each connection's first request with `200 ok`, then closes it
/// (3 ms later) without announcing `Connection: close`: a keep-alive pool reuses sockets that
/// are about to die.
pub async fn one_shot_upstream() -> SocketAddr {
    raw_upstream(|mut stream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        // Close a moment later, once the gateway may have sent the next request on this
        // connection: unread data turns the close into a reset.
        tokio::time::sleep(Duration::from_millis(3)).await;
    })
    .await
}
