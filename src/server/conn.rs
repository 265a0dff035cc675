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

use super::scan::HeadScan;
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

/// A client stream that reports reads to its connection's [`ConnActivity`], and shows each
/// read to the framing scan ([`HeadScan`]) before hyper sees it.
pub struct ActivityIo<S> {
    inner: S,
    activity: Arc<ConnActivity>,
    scan: HeadScan,
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
            scan: HeadScan::new(scan_limit),
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
            let new_head = this.activity.bytes_received();
            if this.scan.read(&buf.filled()[before..], new_head) {
                this.activity
                    .ambiguous_framing
                    .store(true, Ordering::Relaxed);
            }
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
}
