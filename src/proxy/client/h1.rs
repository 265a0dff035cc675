//! HTTP/1.1 exchanges with plain-`http` upstreams, run inside the request's own task.
//!
//! hyper's connection-level client hands each request to a connection task over a channel,
//! the response head back over a oneshot and the body over a third hand-off, with a task
//! switch each way: `bench/instructions` put that at over a quarter of a proxied request's
//! user-space work. Here the request's own task writes the head, reads the response head
//! (httparse) and then reads the body whenever the client's connection asks for more
//! ([`ResponseBody`]), so nothing is handed over.
//!
//! A request body ([`Upload`]) is written while the exchange waits for the response head,
//! and after that whenever the response body is polled, so an upstream may answer before
//! the upload ends (a 413, an echo streaming back) and both directions keep flowing. It goes
//! as the client declared it (Content-Length), else chunked; a write that fails does not hide
//! a response the upstream had already sent.
//!
//! Framing ([`decode`]) follows RFC 9112 §6.3, as hyper's client does: no body after HEAD,
//! 1xx, 204 and 304; chunked when it is the final transfer coding (Content-Length is then
//! dropped); otherwise Content-Length (every value the same, or the response is invalid);
//! otherwise until the upstream closes. Interim 1xx responses are skipped; a 101 is returned
//! as it is (the proxy refuses it, having asked for no upgrade). A connection is reused only
//! when its response ended exactly where the framing said and neither side asked to close.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

use crate::proxy::body::{BoxError, RequestBody};
use crate::proxy::idle::IdleTimer;
use decode::{decode, framing, last_coding_is_chunked, Decoded, Framing};

mod decode;

/// Header fields parsed without an allocation. A head with more (a page setting many cookies)
/// is parsed again with room for as many fields as it has lines: only its size is limited
/// ([`MAX_HEAD`]), as nginx limits it.
const STACK_HEADERS: usize = 100;
/// At most this many fields in a response head or trailer section: a `HeaderMap` holds at most
/// 32,768 entries and panics past about 24,000 reserved, so a head of 25,000 one-letter fields
/// (150 KB, well within [`MAX_HEAD`]) would have cut the request instead of answering 502.
const MAX_FIELDS: usize = 10_000;
/// A response head, a chunk-size line or a trailer section larger than this is invalid. It is
/// about what hyper's client allowed (nginx's default is 4 or 8 KiB), so no upstream that
/// worked before this client breaks.
const MAX_HEAD: usize = 400 * 1024;
/// Room made before the first read of a response; doubled while reads fill it, up to
/// [`MAX_READ`], so a long download takes few reads without holding much memory.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// One HTTP/1.1 connection to an upstream, between exchanges or in one. Kept boxed (see
/// [`Conn::new`]).
pub struct Conn {
    stream: TcpStream,
    /// Read from the upstream and not yet used.
    buf: BytesMut,
    /// The request head being written; kept so its allocation is reused.
    head: Vec<u8>,
}

/// A request head to write.
pub struct Request<'a> {
    pub method: &'a Method,
    /// In origin form.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// `Host` when `headers` have none.
    pub default_host: &'a HeaderValue,
}

/// Where a finished connection goes (its pool).
pub trait Recycle: Send + Sync {
    fn recycle(&self, conn: Box<Conn>);
}

/// A request body on its way to the upstream, written as the exchange and then the response
/// body are polled.
pub struct Upload {
    body: RequestBody,
    chunked: bool,
    /// Taken from the body and not yet written: a chunk-size line, the data, the CRLF.
    parts: [Bytes; 3],
    /// The body has ended; its last bytes are in `parts`.
    ended: bool,
    /// Runs while a write waits: an upstream that stops reading is given up on after the
    /// body's idle timeout, as a client that stops sending is.
    write_idle: IdleTimer,
}

enum UploadError {
    /// The client's body failed (too large, stalled, malformed): the caller answers it.
    Body(BoxError),
    Write(io::Error),
    /// The upstream read none of it for the body's idle timeout.
    Stalled(Duration),
}

/// The upstream stopped reading the request body: nothing could be written for this long.
#[derive(Debug)]
pub struct UploadStalled(pub Duration);

/// A response head and what decides its body.
pub struct Head {
    pub response: Response<()>,
    framing: Framing,
    reusable: bool,
}

/// An exchange that got no response head.
#[derive(Debug)]
pub struct Failure {
    /// Nothing of the request was written: the upstream cannot have seen it.
    pub unsent: bool,
    pub error: BoxError,
}

/// The upstream's response was not valid HTTP/1.1.
#[derive(Debug)]
pub struct InvalidResponse(&'static str);

/// The body of a response read by [`Conn::exchange`], read from the connection as it is
/// polled; the connection goes back to its pool when the body ends cleanly.
pub struct ResponseBody {
    framing: Framing,
    /// `None` once the body has ended (the connection recycled or closed).
    source: Option<Source>,
    reusable: bool,
    home: Option<Arc<dyn Recycle>>,
    /// Room to make before the next read.
    read_size: usize,
    /// An error not given yet: see [`ResponseBody::fail`].
    failed: Option<BoxError>,
}

enum Source {
    /// The whole connection.
    Conn(Box<Conn>),
    /// The read half of a connection whose upload goes on in a task of its own.
    Split(Box<Split>),
}

/// See [`Conn::into_body`].
struct Split {
    read: OwnedReadHalf,
    buf: BytesMut,
    /// Aborted if the response body is dropped unfinished; left to end by itself otherwise.
    upload: AbortOnDropHandle<()>,
}

// === impl Conn ===

impl Conn {
    /// Boxed once, for its life: the response body that carries it is moved several times
    /// on its way to the client, and a pointer is cheaper to move than the connection.
    pub fn new(stream: TcpStream) -> Box<Self> {
        Box::new(Conn {
            stream,
            buf: BytesMut::new(),
            head: Vec::new(),
        })
    }

    /// Whether an idle connection still looks usable: nothing arrived on it since its last
    /// response, not even its end. Costs no system call unless the socket was reported
    /// readable, since an end of stream is reported that way.
    pub fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        // Unconstrained: a task that has used up its Tokio budget would otherwise be told
        // "pending" without the readiness being looked at.
        let ready = tokio::task::coop::unconstrained(poll_fn(|cx| self.stream.poll_read_ready(cx)));
        match std::pin::pin!(ready).poll(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                // The readiness may be left from a read that filled the buffer exactly.
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes a request and reads the response head, skipping interim 1xx responses; the
    /// body, if any, is written meanwhile. Returns what is left of the upload when the
    /// response came before its end.
    pub async fn exchange(
        &mut self,
        request: Request<'_>,
        body: Option<RequestBody>,
    ) -> Result<(Head, Option<Box<Upload>>), Failure> {
        let hint = body.as_ref().map(Body::size_hint);
        let chunked = encode_head(&mut self.head, &request, hint);
        let mut written = 0;
        while written < self.head.len() {
            match self.stream.write(&self.head[written..]).await {
                Ok(0) => {
                    let error = io::Error::from(io::ErrorKind::WriteZero);
                    return Err(Failure::io(written == 0, error));
                }
                Ok(n) => written += n,
                Err(e) => return Err(Failure::io(written == 0, e)),
            }
        }
        let mut upload = body.map(|body| {
            let write_idle = IdleTimer::new(body.idle_timeout());
            Box::new(Upload {
                body,
                chunked,
                parts: Default::default(),
                ended: false,
                write_idle,
            })
        });
        let mut write_failed = false;
        let head = poll_fn(|cx| {
            if let Some(sending) = upload.as_mut() {
                match sending.poll_send(&mut self.stream, cx) {
                    Poll::Ready(Ok(())) => upload = None,
                    Poll::Ready(Err(UploadError::Body(error))) => {
                        return Poll::Ready(Err(Failure {
                            unsent: false,
                            error,
                        }))
                    }
                    // The upstream may have answered already (and closed): read on.
                    Poll::Ready(Err(UploadError::Write(error))) => {
                        tracing::debug!(%error, "writing the request body upstream failed");
                        upload = None;
                        write_failed = true;
                    }
                    // Nothing will come of waiting: the upstream no longer reads.
                    Poll::Ready(Err(UploadError::Stalled(idle))) => {
                        return Poll::Ready(Err(Failure {
                            unsent: false,
                            error: Box::new(UploadStalled(idle)),
                        }))
                    }
                    Poll::Pending => {}
                }
            }
            self.poll_head(cx, request.method)
        })
        .await;
        let mut head = head?;
        head.reusable &= !write_failed;
        if head.response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The proxy refuses it (it asked for no upgrade): none of the body goes after it.
            upload = None;
        }
        Ok((head, upload))
    }

    fn poll_head(&mut self, cx: &mut Context<'_>, method: &Method) -> Poll<Result<Head, Failure>> {
        loop {
            if !self.buf.is_empty() {
                let parsed = parse_head(&mut self.buf, method).map_err(Failure::invalid)?;
                if let Some(head) = parsed {
                    return Poll::Ready(Ok(head));
                }
                if self.buf.len() > MAX_HEAD {
                    let invalid = InvalidResponse("response head too large");
                    return Poll::Ready(Err(Failure::invalid(invalid)));
                }
            }
            self.buf.reserve(FIRST_READ);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf);
            match ready!(read) {
                // A lost connection, not an invalid answer, even inside the head (as hyper's
                // client has it): on a reused connection that earns the replay.
                Ok(0) => {
                    let error = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        if self.buf.is_empty() {
                            "the upstream closed the connection before responding"
                        } else {
                            "the upstream closed the connection inside the response head"
                        },
                    );
                    return Poll::Ready(Err(Failure::io(false, error)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Failure::io(false, e))),
            }
        }
    }

    /// Takes this connection's response body; `home` gets the connection back when the body
    /// ends cleanly and the connection may be reused.
    ///
    /// When the response came before the upload ended, the rest of the upload goes on in a
    /// task of its own with the connection's write half, as it did in hyper's connection
    /// task: it then flows whether or not the client reads the response meanwhile, and it
    /// is not cut when the response ends first (an upstream may answer `202` and read on).
    /// It stops if the response body is dropped unfinished. Such a connection is not reused.
    pub fn into_body(
        self: Box<Self>,
        head: &Head,
        upload: Option<Box<Upload>>,
        home: Option<Arc<dyn Recycle>>,
    ) -> ResponseBody {
        let (source, reusable) = match upload {
            None => (Source::Conn(self), head.reusable),
            Some(upload) => {
                let Conn { stream, buf, .. } = *self;
                let (read, write) = stream.into_split();
                let upload = AbortOnDropHandle::new(tokio::spawn(upload.finish(write)));
                (Source::Split(Box::new(Split { read, buf, upload })), false)
            }
        };
        let mut body = ResponseBody {
            framing: head.framing,
            source: Some(source),
            reusable,
            home,
            read_size: FIRST_READ,
            failed: None,
        };
        if body.framing == Framing::Length(0) {
            body.finish();
        }
        body
    }
}

/// `METHOD target HTTP/1.1`, Host if the headers have none, the header fields as they are
/// (names are lower case in `http`), and the blank line. For a request with a body (`body`
/// its size hint) that declares no framing, Content-Length when its size is known, else
/// chunked. True when the body is to be sent chunked.
fn encode_head(out: &mut Vec<u8>, request: &Request<'_>, body: Option<SizeHint>) -> bool {
    let headers = request.headers;
    out.clear();
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(request.default_host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut chunked = false;
    if let Some(hint) = body {
        chunked = last_coding_is_chunked(headers);
        if !chunked && !headers.contains_key(CONTENT_LENGTH) {
            match hint.exact() {
                Some(length) => {
                    out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes())
                }
                None => {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    chunked = true;
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// Room for every field of a head or trailer section at the front of `buf` with more than
/// [`STACK_HEADERS`]: never more fields than lines, no more lines looked at than a head may
/// have, and at most [`MAX_FIELDS`].
fn room_for_fields(buf: &[u8]) -> usize {
    let lines = buf[..buf.len().min(MAX_HEAD + 2)]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    lines.min(MAX_FIELDS)
}

/// Parses a final response head from the front of `buf` and removes it (and any interim
/// 1xx heads before it); `None` when the head is not complete yet.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, InvalidResponse> {
    loop {
        // Uninitialised slots: filling a hundred of them first would cost more than parsing.
        let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        let mut more_slots = Vec::new();
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let mut result = config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots);
        if let Err(httparse::Error::TooManyHeaders) = result {
            more_slots.resize_with(room_for_fields(buf), MaybeUninit::uninit);
            parsed = httparse::Response::new(&mut []);
            result = config.parse_response_with_uninit_headers(&mut parsed, buf, &mut more_slots);
        }
        let len = match result {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(InvalidResponse("response head too large"))
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(InvalidResponse("too many header fields"))
            }
            Err(_) => return Err(InvalidResponse("malformed response head")),
        };
        let code = parsed.code.unwrap_or_default();
        let status =
            StatusCode::from_u16(code).map_err(|_| InvalidResponse("invalid status code"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // The header values are slices of one copy of the head, so the read buffer stays
        // this connection's own and is reused for the next response.
        let copy = Bytes::copy_from_slice(&buf[..len]);
        let start = buf.as_ptr() as usize;
        // Room for the few the proxy adds (x-request-id, the route's), without a rehash.
        let mut headers = HeaderMap::with_capacity(parsed.headers.len() + 4);
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| InvalidResponse("invalid header name"))?;
            let offset = field.value.as_ptr() as usize - start;
            let value = copy.slice(offset..offset + field.value.len());
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| InvalidResponse("invalid header value"))?;
            headers.append(name, value);
        }
        let reason = parsed
            .reason
            .filter(|reason| Some(*reason) != status.canonical_reason())
            .and_then(|reason| hyper::ext::ReasonPhrase::try_from(reason.as_bytes()).ok());
        buf.advance(len);

        let (framing, framing_reusable) = framing(status, version, method, &mut headers)?;
        let reusable = framing_reusable && status != StatusCode::SWITCHING_PROTOCOLS && {
            let mut close = false;
            let mut keep_alive = false;
            for value in headers.get_all(CONNECTION) {
                for token in value.as_bytes().split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            !close && (version == Version::HTTP_11 || keep_alive)
        };
        // The upstream's version stays here (framing, reuse): the client gets the gateway's
        // own, HTTP/1.1 (RFC 9110 §6.2); hyper's server answered an HTTP/1.0 response with an
        // `HTTP/1.0` status line, and the client then closed a connection kept open for it.
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        if let Some(reason) = reason {
            response.extensions_mut().insert(reason);
        }
        return Ok(Some(Head {
            response,
            framing,
            reusable,
        }));
    }
}

// === impl Upload ===

impl Upload {
    /// Writes what the body has, until it ends (ready) or has nothing more for now.
    fn poll_send<W: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            while self.parts.iter().any(|part| !part.is_empty()) {
                let slices = self.parts.each_ref().map(|part| IoSlice::new(part));
                let written = match Pin::new(&mut *stream).poll_write_vectored(cx, &slices) {
                    Poll::Ready(written) => written.map_err(UploadError::Write)?,
                    Poll::Pending if self.write_idle.poll_expired(cx) => {
                        let idle = self.write_idle.timeout();
                        return Poll::Ready(Err(UploadError::Stalled(idle)));
                    }
                    Poll::Pending => return Poll::Pending,
                };
                self.write_idle.progress();
                if written == 0 {
                    return Poll::Ready(Err(UploadError::Write(io::ErrorKind::WriteZero.into())));
                }
                let mut left = written;
                for part in &mut self.parts {
                    let n = left.min(part.len());
                    part.advance(n);
                    left -= n;
                }
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        let size = Bytes::from(format!("{:x}\r\n", data.len()));
                        self.parts = [size, data, Bytes::from_static(b"\r\n")];
                    }
                    Ok(data) => self.parts[0] = data,
                    // A client's trailers are not passed on: they would reach the upstream
                    // past every header rule of the gateway (credentials stripped, identity
                    // set, route edits). The body ends as it would without them.
                    Err(_trailers) => {}
                },
                Some(Err(error)) => return Poll::Ready(Err(UploadError::Body(error))),
                None => {
                    if self.chunked {
                        self.parts[0] = Bytes::from_static(b"0\r\n\r\n");
                    }
                    self.ended = true;
                }
            }
        }
    }
}

impl Upload {
    /// Sends the rest of the body on `write` (the task [`Conn::into_body`] starts).
    async fn finish(mut self: Box<Self>, mut write: OwnedWriteHalf) {
        match poll_fn(|cx| self.poll_send(&mut write, cx)).await {
            Ok(()) => {
                // No FIN: some servers take a half-close as the client giving up on the
                // response. The connection closes when the response is done with its read half.
                write.forget();
                return;
            }
            Err(UploadError::Body(error)) => {
                tracing::debug!(%error, "the request body failed after the response began");
            }
            Err(UploadError::Write(error)) => {
                tracing::debug!(%error, "writing the request body upstream failed");
            }
            Err(UploadError::Stalled(idle)) => {
                tracing::debug!(?idle, "the upstream stopped reading the request body");
            }
        }
        // A body cut short: the FIN tells the upstream no more is coming, rather than leave
        // it waiting for the rest.
        drop(write);
    }
}

// === impl ResponseBody ===

impl ResponseBody {
    /// The body has ended: the connection goes home if it can be reused, else it closes.
    fn finish(&mut self) {
        self.framing = Framing::Length(0);
        match self.source.take() {
            // Bytes after the end of the response would be an answer to nothing.
            Some(Source::Conn(conn)) if self.reusable && conn.buf.is_empty() => {
                if let Some(home) = &self.home {
                    home.recycle(conn);
                }
            }
            Some(Source::Split(split)) => drop(split.upload.detach()),
            _ => {}
        }
    }

    /// Closes the connection and keeps the error for the next poll. A body that fails makes
    /// hyper's server drop what it has buffered and not yet written, which may be the
    /// response head and the last bytes read with the failure; pending once lets it write
    /// them, so the client sees the response cut where the upstream cut it.
    fn fail(
        &mut self,
        error: BoxError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.framing = Framing::Length(0);
        self.source = None;
        self.failed = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let (buf, reader): (&mut BytesMut, Pin<&mut (dyn AsyncRead + Unpin)>) =
                match &mut this.source {
                    Some(Source::Conn(conn)) => {
                        let Conn { stream, buf, .. } = &mut **conn;
                        (buf, Pin::new(stream as &mut (dyn AsyncRead + Unpin)))
                    }
                    Some(Source::Split(split)) => {
                        let Split { read, buf, .. } = &mut **split;
                        (buf, Pin::new(read as &mut (dyn AsyncRead + Unpin)))
                    }
                    None => return Poll::Ready(this.failed.take().map(Err)),
                };
            match decode(&mut this.framing, buf) {
                Ok(Decoded::Data(data)) => {
                    if this.framing == Framing::Length(0) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Trailers(trailers)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) if buf.len() > MAX_HEAD => {
                    let invalid = InvalidResponse("chunk-size line or trailers too large");
                    return this.fail(Box::new(invalid), cx);
                }
                Ok(Decoded::More) => {}
                Err(invalid) => return this.fail(Box::new(invalid), cx),
            }
            buf.reserve(this.read_size);
            let room = buf.capacity() - buf.len();
            match ready!(tokio_util::io::poll_read_buf(reader, cx, buf)) {
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    let error = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection inside the response body",
                    );
                    return this.fail(Box::new(error), cx);
                }
                Ok(n) => {
                    if n == room {
                        this.read_size = (this.read_size * 2).min(MAX_READ);
                    }
                }
                Err(e) => return this.fail(Box::new(e), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.source.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

// === errors ===

impl Failure {
    fn io(unsent: bool, error: io::Error) -> Self {
        Failure {
            unsent,
            error: Box::new(error),
        }
    }

    fn invalid(invalid: InvalidResponse) -> Self {
        Failure {
            unsent: false,
            error: Box::new(invalid),
        }
    }
}

impl fmt::Display for InvalidResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid upstream response: {}", self.0)
    }
}

impl std::error::Error for InvalidResponse {}

impl fmt::Display for UploadStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the upstream read none of the request body for {:?}",
            self.0
        )
    }
}

impl std::error::Error for UploadStalled {}

#[cfg(test)]
mod tests;
