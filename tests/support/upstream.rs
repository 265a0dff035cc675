//! A fake upstream: a real HTTP server on 127.0.0.1 that records every request it receives
//! and answers with a scripted [`Reply`] (status, headers, body as bytes, timed chunks, a
//! generated stream of N bytes, or a stall), optionally after a delay.

use std::convert::Infallible;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the upstream saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Kept whole up to 1 MiB; larger bodies are only counted and hashed.
    pub body: Bytes,
    pub body_len: u64,
    pub body_hash: u64,
    /// False when the body ended in an error (the client or gateway cut it).
    pub body_complete: bool,
}

#[derive(Clone)]
pub enum ReplyBody {
    Bytes(Bytes),
    /// Each chunk after `interval`.
    Chunks(Vec<Bytes>, Duration),
    /// `len` bytes of a repeating pattern, in 64 KiB chunks.
    Generated(u64),
    /// Headers, then silence forever.
    Stall,
    /// Echo the request body back.
    Echo,
}

#[derive(Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    pub delay: Duration,
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    killed: CancellationToken,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: ReplyBody::Bytes(Bytes::from(body.to_owned())),
            delay: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = StatusCode::from_u16(status).unwrap();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: ReplyBody) -> Reply {
        self.body = body;
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

impl Upstream {
    /// Answers every request with "ok from upstream".
    pub async fn ok() -> Upstream {
        Upstream::start(|_| Reply::ok("ok from upstream")).await
    }

    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream::start_on("127.0.0.1:0".parse().unwrap(), handler).await
    }

    /// Listens on `addr` (to bring a killed upstream back on its old port).
    pub async fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = received.clone();
        let killed = CancellationToken::new();
        let stop = killed.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted_count = connections.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stop.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else {
                    return;
                };
                accepted_count.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let log = log.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, handler.clone(), log.clone()));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        // Dropping the connection closes its socket, as a dying process would.
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Upstream {
            addr,
            received,
            connections,
            killed,
        }
    }

    /// Stops listening and drops every open connection, like a process that died.
    pub fn kill(&self) {
        self.killed.cancel();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The only request received; fails when there were none or several.
    pub fn only(&self) -> Recorded {
        let received = self.received();
        assert_eq!(received.len(), 1, "expected exactly one upstream request");
        received.into_iter().next().unwrap()
    }
}

async fn answer(
    req: Request<Incoming>,
    handler: Handler,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut kept = Vec::new();
    let mut len = 0u64;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    len += data.len() as u64;
                    hasher.write(data);
                    if kept.len() < (1 << 20) {
                        kept.extend_from_slice(data);
                    }
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let recorded = Recorded {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body: Bytes::from(kept),
        body_len: len,
        body_hash: hasher.finish(),
        body_complete: complete,
    };
    let reply = handler(&recorded);
    let echo = recorded.body.clone();
    log.lock().unwrap().push(recorded);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let body: BoxBody<Bytes, Infallible> = match reply.body {
        ReplyBody::Bytes(bytes) => Full::new(bytes).boxed(),
        ReplyBody::Echo => Full::new(echo).boxed(),
        ReplyBody::Chunks(chunks, interval) => {
            let stream =
                futures_util::stream::unfold(chunks.into_iter(), move |mut chunks| async move {
                    let chunk = chunks.next()?;
                    tokio::time::sleep(interval).await;
                    Some((Ok::<_, Infallible>(Frame::data(chunk)), chunks))
                });
            BodyExt::boxed(StreamBody::new(stream))
        }
        ReplyBody::Generated(total) => {
            let stream = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent >= total {
                    return None;
                }
                let n = (total - sent).min(64 * 1024);
                let chunk = Bytes::from(pattern(sent, n as usize));
                Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + n))
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        ReplyBody::Stall => {
            let stream = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
            BodyExt::boxed(StreamBody::new(stream))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(&value).unwrap(),
        );
    }
    Ok(response)
}

/// A deterministic byte pattern, position-dependent so reordering or loss would show.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}
