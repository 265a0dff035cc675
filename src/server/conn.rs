//! One client connection's clock: when it is busy, idle, or slowly sending a request head.
//!
//! hyper's own head-read timer also runs while a keep-alive connection waits for its next
//! request, which would make the keep-alive idle timeout collapse into `header_read_timeout`
//! (10 s instead of 60 s by default). So sluice turns hyper's timer off and keeps both rules
//! here, checked by a watchdog in the connection's task:
//!
//! ```text
//!   request in flight ────────────────────────────► busy: check again later
//!   no request, no bytes since the last one ──────► idle: graceful close after keepalive_idle_timeout
//!   no request, bytes arrived (a head started) ───► reading: abort once header_read_timeout has passed
//! ```
//!
//! [`ActivityIo`] notes the first bytes of a new head on an idle connection (one clock read
//! per request); the proxy marks requests started and finished. The watchdog wakes at least
//! every `header_read_timeout` while idle, so a stalled head is cut between one and two
//! `header_read_timeout`s after its first byte. HTTP/2 connections (known from their first
//! request) are exempt from the head rule: their idle reads are PINGs and SETTINGS, not heads.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::chunked::{ChunkedBody, Progress};
use crate::proxy::{BodyFraming, HeadFraming};
use tokio::time::Instant;

#[derive(Debug)]
pub struct ConnActivity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request finished (0: none yet).
    last_idle_ms: AtomicU64,
    /// Milliseconds after `opened`, plus one, when a new head's first bytes arrived while
    /// idle; 0 when no head is being read.
    head_started: AtomicU64,
    /// No HTTP/1 request heads will follow: the connection speaks HTTP/2, or was upgraded
    /// (a WebSocket's frames are not heads).
    no_more_heads: AtomicBool,
    /// The head just started carries both Content-Length and Transfer-Encoding.
    ambiguous_framing: AtomicBool,
    /// Endless streams the gateway itself makes on this connection (the dashboard's feed).
    feeds: AtomicUsize,
}

/// One gateway-made endless stream on a connection, counted until dropped: at shutdown such
/// a connection is closed rather than drained, since a client that stopped reading would
/// otherwise hold the drain for the whole grace period.
#[derive(Debug)]
pub struct FeedGuard(Arc<ConnActivity>);

impl Drop for FeedGuard {
    fn drop(&mut self) {
        self.0.feeds.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request in flight on a connection: made by [`ConnActivity::begin`], finished when
/// dropped. Owning the pairing here means no early return on the request path can leave a
/// connection counted busy forever.
#[derive(Debug)]
pub struct InFlight(Arc<ConnActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// What the watchdog should do now, and when to look again.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Wait(Instant),
    /// Idle for the whole keep-alive timeout: close once nothing is in flight.
    CloseIdle,
    /// A request head took longer than `header_read_timeout`: drop the connection.
    AbortSlowHead,
}

/// A client stream that reports reads to its connection's [`ConnActivity`], and looks at
/// each request head's framing before hyper does: hyper silently resolves Content-Length
/// plus Transfer-Encoding in favour of the latter (RFC 9112 §6.3), where the proxy refuses
/// such a request. A head is followed across reads (hyper's protocol detection reads the
/// first 24 bytes alone) up to `scan_limit`, hyper's own head buffer, so every head hyper
/// accepts is seen whole. Pipelined heads are scanned too: a body of known length is
/// skipped by count, a chunked one followed chunk by chunk ([`ChunkedBody`]), and the next
/// head is read. A conflict found in a later head is reported to whichever request is
/// handled next, which closes the connection with it.
pub struct ActivityIo<S> {
    inner: S,
    activity: Arc<ConnActivity>,
    /// The current head's bytes while it is being collected across reads; reused.
    head: Vec<u8>,
    scanning: bool,
    /// Body bytes of the last scanned request still to come before the next head.
    body_left: u64,
    /// The last scanned request's chunked body, while it lasts.
    chunked: Option<ChunkedBody>,
    scan_limit: usize,
}

// === impl ConnActivity ===

impl ConnActivity {
    pub fn new() -> Self {
        ConnActivity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_idle_ms: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            no_more_heads: AtomicBool::new(false),
            ambiguous_framing: AtomicBool::new(false),
            feeds: AtomicUsize::new(0),
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>, http2: bool) -> InFlight {
        self.request_started(http2);
        InFlight(self.clone())
    }

    fn request_started(&self, http2: bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        if http2 {
            self.no_more_heads.store(true, Ordering::Relaxed);
        }
    }

    fn request_finished(&self) {
        self.last_idle_ms
            .store(self.millis_since_open(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Bytes were just read. On an idle connection they begin a new request head: note the
    /// time, and return true so the reader scans the head.
    fn bytes_received(&self) -> bool {
        let idle = self.in_flight.load(Ordering::Relaxed) == 0;
        let new_head = idle
            && self.head_started.load(Ordering::Relaxed) == 0
            && !self.no_more_heads.load(Ordering::Relaxed);
        if new_head {
            self.head_started
                .store(self.millis_since_open() + 1, Ordering::Relaxed);
        }
        new_head
    }

    /// A live feed starts on this connection; it counts until the guard is dropped.
    pub fn feed_opened(self: &Arc<Self>) -> FeedGuard {
        self.feeds.fetch_add(1, Ordering::Relaxed);
        FeedGuard(self.clone())
    }

    /// Whether a live feed is open on this connection now.
    pub fn has_feeds(&self) -> bool {
        self.feeds.load(Ordering::Relaxed) > 0
    }

    /// The connection is being upgraded (a WebSocket): stop looking for request heads.
    pub fn upgraded(&self) {
        self.no_more_heads.store(true, Ordering::Relaxed);
    }

    /// Whether the request now being handled came with both Content-Length and
    /// Transfer-Encoding (reading clears it).
    pub fn take_ambiguous_framing(&self) -> bool {
        self.ambiguous_framing.swap(false, Ordering::Relaxed)
    }

    fn millis_since_open(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, millis: u64) -> Instant {
        self.opened + Duration::from_millis(millis)
    }

    /// The watchdog's decision at `now`.
    pub fn verdict(&self, now: Instant, head_timeout: Duration, idle_timeout: Duration) -> Verdict {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Look again soon enough that a head stalled right after this request finishes
            // is still cut within two head timeouts.
            return Verdict::Wait(now + head_timeout.min(idle_timeout));
        }
        let head_started = self.head_started.load(Ordering::Relaxed);
        if head_started > 0 {
            let deadline = self.at(head_started - 1) + head_timeout;
            return if now >= deadline {
                Verdict::AbortSlowHead
            } else {
                Verdict::Wait(deadline)
            };
        }
        let deadline = self.at(self.last_idle_ms.load(Ordering::Relaxed)) + idle_timeout;
        if now >= deadline {
            Verdict::CloseIdle
        } else {
            Verdict::Wait(deadline.min(now + head_timeout))
        }
    }
}

impl Default for ConnActivity {
    fn default() -> Self {
        ConnActivity::new()
    }
}

// === impl ActivityIo ===

impl<S> ActivityIo<S> {
    /// `scan_limit`: the most bytes a request head may take, empty lines before it aside.
    pub fn new(inner: S, activity: Arc<ConnActivity>, scan_limit: usize) -> Self {
        ActivityIo {
            inner,
            activity,
            head: Vec::new(),
            scanning: false,
            body_left: 0,
            chunked: None,
            scan_limit,
        }
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        // Bytes on an idle connection begin a new head: a scan that had stopped starts over.
        // One still going keeps its place, as those bytes may go on with a head (or body)
        // that began while the last request was in flight.
        if self.activity.bytes_received() && !self.scanning {
            self.head.clear();
            self.scanning = true;
            self.body_left = 0;
            self.chunked = None;
        }
        while self.scanning && !bytes.is_empty() {
            if self.body_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            if let Some(chunked) = &mut self.chunked {
                match chunked.read(bytes) {
                    Progress::More => return,
                    Progress::Ended(at) => bytes = &bytes[at..],
                    // hyper refuses the request and closes; nothing after it is a head.
                    Progress::Malformed => self.scanning = false,
                }
                self.chunked = None;
                continue;
            }
            if self.head.is_empty() {
                // Empty lines before a head count for nothing (httparse skips them), so no
                // flood of them can push a head past the limit.
                let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n');
                bytes = &bytes[start.unwrap_or(bytes.len())..];
                if bytes.is_empty() {
                    return;
                }
            }
            // Most heads arrive in one read: scanned where they lie, copied only when not whole.
            let (framing, earlier) = if self.head.is_empty() {
                (crate::proxy::head_framing(bytes), 0)
            } else {
                let earlier = self.head.len();
                self.head.extend_from_slice(bytes);
                (crate::proxy::head_framing(&self.head), earlier)
            };
            match framing {
                HeadFraming::Incomplete => {
                    if earlier == 0 {
                        self.head.extend_from_slice(bytes);
                    }
                    // Longer than hyper takes: it refuses the head itself.
                    self.scanning = self.head.len() < self.scan_limit;
                    return;
                }
                HeadFraming::Conflicting => {
                    self.activity
                        .ambiguous_framing
                        .store(true, Ordering::Relaxed);
                    self.scanning = false;
                }
                HeadFraming::Fine { len, body } => {
                    // The head ended `len - earlier` bytes into this read; its body follows.
                    bytes = bytes.get(len.saturating_sub(earlier)..).unwrap_or_default();
                    self.head.clear();
                    match body {
                        BodyFraming::Length(length) => self.body_left = length,
                        BodyFraming::Chunked => self.chunked = Some(ChunkedBody::default()),
                        BodyFraming::Unknown => self.scanning = false,
                    }
                }
                HeadFraming::Other => self.scanning = false,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let this = &mut *self;
            this.scan(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_after_the_keepalive_timeout_not_the_head_timeout() {
        let activity = ConnActivity::new();
        activity.request_started(false);
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(
            activity.verdict(start, HEAD, IDLE),
            Verdict::Wait(start + HEAD)
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        let now = Instant::now();
        assert_eq!(activity.verdict(now, HEAD, IDLE), Verdict::Wait(now + HEAD));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            activity.verdict(Instant::now(), HEAD, IDLE),
            Verdict::CloseIdle
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_aborted_after_the_head_timeout() {
        let activity = ConnActivity::new();
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_received();
        let started = Instant::now();
        assert_eq!(
            activity.verdict(started, HEAD, IDLE),
            Verdict::Wait(started + HEAD)
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            activity.verdict(Instant::now(), HEAD, IDLE),
            Verdict::AbortSlowHead
        );
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_and_http2_reads_are_left_alone() {
        let activity = ConnActivity::new();
        activity.request_started(true);
        tokio::time::advance(Duration::from_secs(600)).await;
        let now = Instant::now();
        assert_eq!(activity.verdict(now, HEAD, IDLE), Verdict::Wait(now + HEAD));
        activity.request_finished();
        activity.bytes_received(); // a PING, not a head
        let now = Instant::now();
        assert_eq!(activity.verdict(now, HEAD, IDLE), Verdict::Wait(now + HEAD));
    }

    /// Feeds `reads` to a fresh connection's scanner, one `scan` per read; whether it
    /// found a Content-Length + Transfer-Encoding conflict.
    fn conflict_found(reads: &[&[u8]]) -> bool {
        let mut io = ActivityIo::new((), Arc::new(ConnActivity::new()), 8192);
        for read in reads {
            io.scan(read);
        }
        io.activity.take_ambiguous_framing()
    }

    const CONFLICTING: &[u8] =
        b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn a_conflicting_head_is_found_in_one_read_or_byte_by_byte() {
        assert!(conflict_found(&[CONFLICTING]));
        let bytes: Vec<&[u8]> = CONFLICTING.chunks(1).collect();
        assert!(conflict_found(&bytes));
        assert!(!conflict_found(&[b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"]));
    }

    #[test]
    fn pipelined_heads_are_scanned_past_known_bodies() {
        let get = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        // Behind a bodiless request, in the same read or split anywhere.
        let pipelined = [get.as_slice(), CONFLICTING].concat();
        assert!(conflict_found(&[&pipelined]));
        for cut in 1..pipelined.len() {
            let (a, b) = pipelined.split_at(cut);
            assert!(conflict_found(&[a, b]), "cut at {cut}");
        }
        // Behind a body of known length, which is skipped, not read as a head...
        let post = b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        assert!(conflict_found(&[&post, b"\r\n", CONFLICTING]));
        // ...even when the body itself looks like a conflicting head.
        let mut carrier = format!(
            "POST /c HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            CONFLICTING.len()
        )
        .into_bytes();
        carrier.extend_from_slice(CONFLICTING);
        assert!(!conflict_found(&[&carrier]));
        assert!(!conflict_found(&[&carrier, &get]));
        assert!(conflict_found(&[&carrier, CONFLICTING]));
    }

    #[test]
    fn pipelined_heads_are_scanned_past_chunked_bodies() {
        let chunked = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5;x=1\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n";
        let pipelined = [chunked.as_slice(), CONFLICTING].concat();
        assert!(conflict_found(&[&pipelined]));
        for cut in 1..pipelined.len() {
            let (a, b) = pipelined.split_at(cut);
            assert!(conflict_found(&[a, b]), "cut at {cut}");
        }
        // Chunk data that looks like a conflicting head is skipped by count, not read.
        let mut carrier = format!(
            "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            CONFLICTING.len()
        )
        .into_bytes();
        carrier.extend_from_slice(CONFLICTING);
        carrier.extend_from_slice(b"\r\n0\r\n\r\n");
        assert!(!conflict_found(&[&carrier]));
        assert!(conflict_found(&[&carrier, CONFLICTING]));
        // A body hyper cannot read ends the scan: hyper refuses it and reads nothing after.
        let bare_lf =
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n";
        assert!(!conflict_found(&[bare_lf, CONFLICTING]));
    }

    #[test]
    fn a_head_begun_while_a_request_was_in_flight_is_scanned_whole() {
        // Its first bytes come behind a request being handled, the rest once that request is
        // answered and the connection idle.
        let chunked = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for first in [&b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"[..], chunked] {
            // (Not 1: what is left, `OST /x …`, would be a conflicting head of its own.)
            for cut in [5, 20, 40] {
                let mut io = ActivityIo::new((), Arc::new(ConnActivity::new()), 8192);
                io.scan(&[first, &CONFLICTING[..cut]].concat());
                io.activity.request_started(false);
                io.activity.request_finished();
                io.scan(&CONFLICTING[cut..]);
                assert!(io.activity.take_ambiguous_framing(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn the_same_content_length_twice_is_skipped_as_one() {
        let twice = b"POST /b HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 005\r\n\r\nhello";
        assert!(conflict_found(&[twice, CONFLICTING]));
        // Its body is skipped by that length, even when it looks like a conflicting head.
        let carrier = format!(
            "POST /c HTTP/1.1\r\nContent-Length: {0}\r\nContent-Length: {0}\r\n\r\n",
            CONFLICTING.len()
        );
        let carrier = [carrier.as_bytes(), CONFLICTING].concat();
        assert!(!conflict_found(&[&carrier]));
        assert!(conflict_found(&[&carrier, CONFLICTING]));
    }

    #[test]
    fn empty_lines_before_a_head_do_not_use_up_the_scan_limit() {
        let flood = vec![b'\n'; 20_000];
        assert!(conflict_found(&[&flood, CONFLICTING]));
        assert!(conflict_found(&[&[flood.as_slice(), CONFLICTING].concat()]));
        // A head longer than the limit is hyper's to refuse; the scan gives up on it.
        let long = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n", "p".repeat(9000));
        let rest = b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!conflict_found(&[long.as_bytes(), rest]));
    }
}
