//! The bridge proper: two WebSockets joined frame by frame until one side ends, with pings,
//! flow control, the stall timeout, the message-size limit and the close codes each ending
//! gets (see [`super`]).
//!
//! One task, one hand-written poll loop over both sockets, and no buffer while idle: that is
//! what makes an idle bridge cheap (issue #4 asks for at most 40 MiB per 10,000). Bytes are
//! read into a buffer on the poll's stack, and each frame is relayed as it arrives — its head
//! rewritten (a client's frames are masked, ours to the client are not; ours to the upstream
//! are masked with a key of our own) and its payload unmasked, checked and remasked into the
//! other side's outbox, which exists only while it holds bytes. Nothing more is read from a
//! side while the other side's outbox (or its own: pongs owed to it) holds `max_buffered`
//! bytes or more (flow control); if the slow peer then takes nothing for `stall_timeout`, both
//! sides get 1013. Pings and pongs belong to each hop: a peer's ping is answered here, pongs
//! are only noted, and our own pings go to both peers. A peer is judged silent only while we
//! read from it and our pings can reach it (not behind a frame still being relayed to it).
//! A close goes to the other side and is echoed to its sender; where part of a frame has
//! already gone to a peer, no close can follow and its connection just ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::frame::{self, Head, Utf8};
use super::outbox::Outbox;
use super::{Accepted, Settings};
use crate::server::{ConnGuard, StreamHost};
use crate::upstream::{Lease, StreamCounters};

/// How much is read from a socket at a time (on the poll's stack, not in the bridge).
const READ_CHUNK: usize = 8 * 1024;
/// How long closing frames may take to go out once the bridge has ended.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a bridge ended.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The sender sent a close frame; it went to the other side, and was echoed back.
    Closed,
    /// The sender's connection ended without a close frame.
    SenderGone,
    /// Writing to the receiver failed.
    ReceiverGone,
    /// The sender sent a message over the size limit (close code 1009 for it).
    TooBig,
    /// The sender broke the protocol: 1002, or 1007 for text that is not UTF-8.
    Violation(u16),
    /// The receiver refused data for `stall_timeout`.
    Stalled,
    /// The receiver was not heard from for two ping intervals.
    Silent,
    /// The shutdown grace period is over.
    Shutdown,
}

/// The two sides, as indexes into [`Bridge::peers`]. Data read from the client goes up.
const CLIENT: usize = 0;
const UPSTREAM: usize = 1;

/// One side of the bridge.
struct Peer {
    io: TokioIo<Upgraded>,
    /// Where we are in the frames this peer sends.
    reader: Reader,
    /// Bytes on their way to this peer.
    out: Outbox,
    /// When a byte last came from this peer.
    heard: Instant,
}

/// Frames coming from one peer.
#[derive(Default)]
struct Reader {
    /// A frame head being collected across reads.
    head: Vec<u8>,
    /// The frame whose payload is being read, and how much of it has been.
    frame: Option<(Head, u64)>,
    /// Our masking key for the relayed frame (frames to the upstream are masked).
    relay_mask: Option<[u8; 4]>,
    /// The message in progress (text or binary) and its size so far.
    message: Option<(u8, u64)>,
    utf8: Utf8,
    /// A control frame's payload being collected (at most 125 bytes).
    control: Vec<u8>,
}

/// What a peer's bytes amounted to, besides relayed data.
enum Fed {
    More,
    /// A close frame, with its payload.
    Close(Vec<u8>),
}

/// A running bridge: everything it holds, which is all its task holds besides a timer.
struct Bridge {
    peers: [Peer; 2],
    settings: Settings,
    /// The endpoint's lease: the bridge counts as in flight there, and its counters.
    lease: Lease,
    next_ping: Instant,
    request_id: HeaderValue,
    /// The client connection's guard: it counts as open until the bridge ends.
    _conn: Arc<ConnGuard>,
}

/// Starts the bridge on `streams`' task tracker: a short task waits for the client's side of
/// the upgrade, then hands a [`Bridge`] to a task of its own, which runs until either side
/// ends or the shutdown grace period is over. Two tasks so that the long-lived one holds only
/// the bridge (an async fn would also keep its arguments and the waiting's state).
pub fn start(
    client: hyper::upgrade::OnUpgrade,
    accepted: Accepted,
    settings: Settings,
    streams: StreamHost,
    request_id: HeaderValue,
) {
    let tracker = streams.tracker.clone();
    tracker.spawn(async move {
        let Accepted { upstream, lease } = accepted;
        let mut upstream = TokioIo::new(upstream);
        let client = match client.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "the client's upgrade did not complete");
                // The upstream has its WebSocket open: close it properly, not by dropping it.
                let mut bytes = Vec::new();
                let payload = frame::close_payload(frame::GOING_AWAY, "client went away");
                frame::control(&mut bytes, frame::CLOSE, &payload, mask_towards(UPSTREAM));
                let write = tokio::io::AsyncWriteExt::write_all(&mut upstream, &bytes);
                let _ = tokio::time::timeout(CLOSE_WAIT, write).await;
                return;
            }
        };
        let now = Instant::now();
        let peer = |io| Peer {
            io,
            reader: Reader::default(),
            out: Outbox::default(),
            heard: now,
        };
        let bridge = Bridge {
            peers: [peer(client), peer(upstream)],
            settings,
            lease,
            next_ping: now + settings.ping_interval,
            request_id,
            _conn: streams.guard,
        };
        streams.tracker.spawn(bridge.run(streams.stop));
    });
}

// === impl Bridge ===

impl Bridge {
    /// The bridge's task. Not an `async fn`: that would move `self` into its body a second
    /// time, and an idle bridge would hold two copies of itself.
    fn run(self, stop: CancellationToken) -> impl Future<Output = ()> + Send {
        let mut bridge = self;
        async move {
            let timer = tokio::time::sleep_until(bridge.next_ping);
            tokio::pin!(timer);
            let ended = {
                let stopped = stop.cancelled();
                tokio::pin!(stopped);
                std::future::poll_fn(|cx| {
                    if stopped.as_mut().poll(cx).is_ready() {
                        return Poll::Ready((End::Shutdown, CLIENT));
                    }
                    bridge.poll_relay(cx, timer.as_mut())
                })
                .await
            };
            bridge.queue_closes(ended);
            // The same timer bounds the closing.
            timer.as_mut().reset(Instant::now() + CLOSE_WAIT);
            std::future::poll_fn(|cx| {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                bridge.poll_close(cx)
            })
            .await;
            tracing::debug!(
                request_id = bridge.request_id.to_str().unwrap_or_default(),
                upstream = &*bridge.lease.endpoint().label,
                end = ?ended.0,
                "WebSocket bridge ended"
            );
        }
    }

    /// Moves bytes both ways until nothing moves, then waits; ends with how the bridge ended
    /// and the peer whose doing (or whose side) it was.
    fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<(End, usize)> {
        let mut scratch = [0u8; READ_CHUNK];
        // A bound on the work done in one poll, so a busy bridge lets other tasks run.
        for _ in 0..16 {
            let mut moved = false;
            for to in [CLIENT, UPSTREAM] {
                match self.peers[to].flush(cx) {
                    Ok(progress) => moved |= progress,
                    Err(_) => return Poll::Ready((End::ReceiverGone, 1 - to)),
                }
            }
            for from in [CLIENT, UPSTREAM] {
                let to = 1 - from;
                // Flow control: the receiver is behind, or the sender itself is (our pongs to
                // a peer that pings and never reads must not pile up either).
                if self.is_behind(to) || self.is_behind(from) {
                    continue;
                }
                let mut read = ReadBuf::new(&mut scratch);
                match Pin::new(&mut self.peers[from].io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if read.filled().is_empty() => {
                        return Poll::Ready((End::SenderGone, from));
                    }
                    Poll::Ready(Ok(())) => {
                        moved = true;
                        self.peers[from].heard = Instant::now();
                        match self.relay(from, read.filled()) {
                            Ok(Fed::More) => {}
                            Ok(Fed::Close(payload)) => {
                                self.exchange_close(&payload);
                                return Poll::Ready((End::Closed, from));
                            }
                            Err(end) => return Poll::Ready((end, from)),
                        }
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready((End::SenderGone, from)),
                    Poll::Pending => {}
                }
            }
            if !moved {
                return match self.poll_timers(cx, timer.as_mut()) {
                    Some(ended) => Poll::Ready(ended),
                    None => Poll::Pending,
                };
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Pings, silence and stalls. Arms `timer` for the next of them.
    fn poll_timers(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Option<(End, usize)> {
        loop {
            let now = Instant::now();
            for to in [CLIENT, UPSTREAM] {
                let behind = self.is_behind(to);
                let out = &mut self.peers[to].out;
                if behind {
                    let since = *out.full_since.get_or_insert(now);
                    if now.duration_since(since) >= self.settings.stall_timeout {
                        return Some((End::Stalled, to));
                    }
                } else {
                    out.full_since = None;
                }
            }
            if now >= self.next_ping {
                let silent_after = 2 * self.settings.ping_interval;
                for to in [CLIENT, UPSTREAM] {
                    // Not silence: we are not reading from it (flow control), or our ping
                    // waits behind a frame we are still relaying to it. Its clock restarts.
                    let unheard = self.is_behind(to) || self.is_behind(1 - to);
                    let unasked = self.peers[to].out.has_open_frame();
                    let peer = &mut self.peers[to];
                    if unheard || unasked {
                        peer.heard = now;
                    } else if now.duration_since(peer.heard) > silent_after {
                        return Some((End::Silent, to));
                    }
                }
                for to in [CLIENT, UPSTREAM] {
                    let out = &mut self.peers[to].out;
                    out.push_control(frame::PING, &[], mask_towards(to));
                }
                self.next_ping = now + self.settings.ping_interval;
                // The pings go out on the next poll.
                cx.waker().wake_by_ref();
            }
            let stall_at = [CLIENT, UPSTREAM]
                .iter()
                .filter_map(|&to| self.peers[to].out.full_since)
                .map(|since| since + self.settings.stall_timeout)
                .min();
            let next = stall_at.map_or(self.next_ping, |at| at.min(self.next_ping));
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
    }

    /// Relays what `from` sent to the other peer, frame by frame.
    fn relay(&mut self, from: usize, mut input: &[u8]) -> Result<Fed, End> {
        let max_message = self.settings.max_message;
        let counters = &self.lease.endpoint().stats.ws;
        let [client, upstream] = &mut self.peers;
        let (source, target) = if from == CLIENT {
            (client, upstream)
        } else {
            (upstream, client)
        };
        // Clients must mask their frames, servers must not (RFC 6455 §5.1).
        let expect_masked = from == CLIENT;
        while !input.is_empty() {
            let reader = &mut source.reader;
            let Some((head, done)) = reader.frame else {
                // The head, which may be split across reads: then it is collected.
                let parsed = if reader.head.is_empty() {
                    let parsed = frame::parse_head(input).map_err(End::Violation)?;
                    match parsed {
                        Some((_, len)) => input = &input[len..],
                        None => {
                            reader.head.extend_from_slice(input);
                            input = &[];
                        }
                    }
                    parsed.map(|(head, _)| head)
                } else {
                    let before = reader.head.len();
                    let take = (frame::MAX_HEAD - before).min(input.len());
                    reader.head.extend_from_slice(&input[..take]);
                    let parsed = frame::parse_head(&reader.head).map_err(End::Violation)?;
                    match parsed {
                        Some((_, len)) => {
                            input = &input[len - before..];
                            reader.head = Vec::new();
                        }
                        None => input = &input[take..],
                    }
                    parsed.map(|(head, _)| head)
                };
                let Some(head) = parsed else {
                    continue;
                };
                if head.mask.is_some() != expect_masked {
                    return Err(End::Violation(frame::PROTOCOL_ERROR));
                }
                if !head.is_control() {
                    let size = match (reader.message, head.opcode) {
                        (None, frame::TEXT | frame::BINARY) => head.len,
                        (Some((_, size)), frame::CONTINUATION) => size.saturating_add(head.len),
                        _ => return Err(End::Violation(frame::PROTOCOL_ERROR)),
                    };
                    if size > max_message {
                        return Err(End::TooBig);
                    }
                    let opcode = reader.message.map_or(head.opcode, |(opcode, _)| opcode);
                    reader.message = Some((opcode, size));
                    reader.relay_mask = mask_towards(1 - from);
                    target.out.open_frame(Head {
                        mask: reader.relay_mask,
                        ..head
                    });
                }
                reader.frame = Some((head, 0));
                if head.len == 0 {
                    if let Fed::Close(payload) = end_frame(source, target, from, counters)? {
                        return Ok(Fed::Close(payload));
                    }
                }
                continue;
            };
            let take = usize::try_from(head.len - done)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (chunk, rest) = input.split_at(take);
            input = rest;
            let reader = &mut source.reader;
            if head.is_control() {
                let start = reader.control.len();
                reader.control.extend_from_slice(chunk);
                if let Some(key) = head.mask {
                    frame::apply_mask(&mut reader.control[start..], key, done);
                }
            } else {
                let data = target.out.append(chunk);
                if let Some(key) = head.mask {
                    frame::apply_mask(data, key, done);
                }
                let text = reader
                    .message
                    .is_some_and(|(opcode, _)| opcode == frame::TEXT);
                if text && !reader.utf8.feed(data) {
                    return Err(End::Violation(frame::INVALID_DATA));
                }
                if let Some(key) = reader.relay_mask {
                    frame::apply_mask(data, key, done);
                }
            }
            reader.frame = Some((head, done + take as u64));
            if done + take as u64 == head.len {
                if let Fed::Close(payload) = end_frame(source, target, from, counters)? {
                    return Ok(Fed::Close(payload));
                }
            }
        }
        Ok(Fed::More)
    }

    /// A close came from one side: it goes to the other, and back to the sender as our answer.
    fn exchange_close(&mut self, payload: &[u8]) {
        for to in [CLIENT, UPSTREAM] {
            // After anything still owed to that side; if part of a frame we were relaying to
            // it has gone out, no close can follow (its connection just ends).
            let out = &mut self.peers[to].out;
            if out.drop_unsent_open_frame() {
                out.push_control(frame::CLOSE, payload, mask_towards(to));
            }
        }
    }

    /// Tells each side what the ending means for it: a close frame, where a frame boundary
    /// allows (after what is queued; a stalled peer may never take it, and the wait for it is
    /// bounded).
    fn queue_closes(&mut self, (end, by): (End, usize)) {
        let away = (frame::GOING_AWAY, "peer went away");
        // (to the peer `by`, to the other one)
        let (to_by, to_other) = match end {
            End::Closed => (None, None), // exchanged already
            End::SenderGone => (None, Some(away)),
            End::ReceiverGone => (Some(away), None),
            End::TooBig => (Some((frame::TOO_BIG, "message too big")), Some(away)),
            End::Violation(code) => (Some((code, "protocol violation")), Some(away)),
            End::Stalled => {
                let too_slow = (frame::TRY_AGAIN_LATER, "peer too slow");
                (Some(too_slow), Some(too_slow))
            }
            End::Silent => (None, Some((frame::GOING_AWAY, "peer not responding"))),
            End::Shutdown => {
                let going = (frame::GOING_AWAY, "gateway shutting down");
                (Some(going), Some(going))
            }
        };
        for (to, close) in [(by, to_by), (1 - by, to_other)] {
            let out = &mut self.peers[to].out;
            let Some((code, reason)) = close else {
                continue;
            };
            if out.drop_unsent_open_frame() {
                let payload = frame::close_payload(code, reason);
                out.push_control(frame::CLOSE, &payload, mask_towards(to));
            }
        }
    }

    /// Whether `max_buffered` bytes or more wait for `peer`: nothing more is read then.
    fn is_behind(&self, peer: usize) -> bool {
        self.peers[peer].out.pending() >= self.settings.max_buffered
    }

    /// Writes what is left for each peer, then shuts its socket.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut done = true;
        for peer in &mut self.peers {
            match peer.flush(cx) {
                Ok(_) if peer.out.is_drained() => {
                    let _ = Pin::new(&mut peer.io).poll_shutdown(cx);
                }
                Ok(_) => done = false,
                Err(_) => {}
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The frame being read from `source` is complete.
fn end_frame(
    source: &mut Peer,
    target: &mut Peer,
    from: usize,
    counters: &StreamCounters,
) -> Result<Fed, End> {
    let reader = &mut source.reader;
    let Some((head, _)) = reader.frame.take() else {
        return Ok(Fed::More);
    };
    if !head.is_control() {
        let message = if head.fin {
            reader.message.take()
        } else {
            None
        };
        // Checked while the frame is still open, so that bad text can be taken back.
        if let Some((frame::TEXT, _)) = message {
            if !reader.utf8.finish() {
                return Err(End::Violation(frame::INVALID_DATA));
            }
        }
        target.out.close_frame();
        if let Some((_, size)) = message {
            if from == CLIENT {
                counters.up(1, size);
            } else {
                counters.down(1, size);
            }
        }
        return Ok(Fed::More);
    }
    let payload = std::mem::take(&mut reader.control);
    match head.opcode {
        frame::PING => {
            source
                .out
                .push_control(frame::PONG, &payload, mask_towards(from));
            Ok(Fed::More)
        }
        frame::CLOSE => {
            frame::check_close(&payload).map_err(End::Violation)?;
            Ok(Fed::Close(payload))
        }
        _ => Ok(Fed::More), // a pong: the peer is alive, which `heard` already says
    }
}

/// The masking key for a frame we send to `to`: a fresh one towards the upstream (we are its
/// client), none towards the client (RFC 6455 §5.1).
fn mask_towards(to: usize) -> Option<[u8; 4]> {
    (to == UPSTREAM).then(|| fastrand::u32(..).to_ne_bytes())
}

// === impl Peer ===

impl Peer {
    /// Writes what the outbox holds. True when anything was written.
    fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        self.out.write_to(&mut self.io, cx)
    }
}
