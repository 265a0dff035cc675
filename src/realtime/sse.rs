//! Server-Sent Events: what makes a `text/event-stream` response a stream that reaches the
//! client as it is written, on any route.
//!
//! - Headers: `Cache-Control: no-cache` (unless the upstream already forbids storing) and
//!   `X-Accel-Buffering: no`, so caches and nginx-style proxies in front pass events on at once.
//! - No total timeout: the response timeout covers only the wait for the response head, and
//!   the stream is cut only after the route's `idle_timeout` of upstream silence.
//! - Heartbeats (optional, `[sse] heartbeat` or a route's `heartbeat`): after that long with
//!   nothing sent to the client, a `:` comment line is. Comment lines are ignored by every
//!   EventSource, but only at the start of a line: one written after `data: ab` would become
//!   part of the event. So a beat waits until the bytes sent so far end with `\n`; a stream
//!   paused mid-line gets no heartbeat (and no corruption). A `\r` alone is not enough either,
//!   since the `\n` of a `\r\n` may follow.
//!
//! Bytes are never re-framed or changed: the stream the client receives is the upstream's,
//! with comment lines inserted between lines. They are read, to know where lines end and to
//! count events (a blank line ends one; CR, LF and CRLF all end a line). No beat goes out
//! before the upstream's first byte, so a byte-order mark there stays at the start.

use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::idle::IdleTimer;

/// The comment line a heartbeat sends.
const BEAT: &[u8] = b":\n";

static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Whether a response is an event stream (`text/event-stream`, any parameters, any case).
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    // Asked of every response: bytes, without a UTF-8 check or a split iterator.
    headers.get(CONTENT_TYPE).is_some_and(|value| {
        let bytes = value.as_bytes();
        let media = bytes.split(|&b| b == b';').next().unwrap_or(bytes);
        media
            .trim_ascii()
            .eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// Sets the headers that keep caches and buffering proxies from holding events back.
pub fn set_stream_headers(headers: &mut HeaderMap) {
    let forbids_storing = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store")
        });
    if !forbids_storing {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    headers.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
}

/// What sluice keeps per event stream: where the client's stream stands line-wise (for
/// heartbeats and for counting events) and the heartbeat timer, if any.
pub struct EventStream {
    beat: Option<IdleTimer>,
    lines: Lines,
}

/// SSE line state (any of CR, LF, CRLF ends a line; a blank line ends an event).
#[derive(Default)]
struct Lines {
    /// Not inside a line (nothing since the last line end).
    at_line_start: bool,
    /// The last byte was a CR: a LF now is the second half of CRLF, not a blank line.
    after_cr: bool,
    /// The current line started with `:` (a comment: never part of an event).
    in_comment: bool,
    /// A field line has ended since the last blank line: a blank line now ends an event.
    event_open: bool,
    /// The upstream has sent its first byte.
    started: bool,
}

impl EventStream {
    /// `plain` is false for a stream with a `Content-Encoding`: its bytes are not lines, so
    /// there are no heartbeats and no event counts.
    pub fn new(heartbeat: Option<Duration>, plain: bool) -> Option<Self> {
        plain.then(|| EventStream {
            beat: heartbeat.map(IdleTimer::new),
            lines: Lines {
                at_line_start: true,
                ..Lines::default()
            },
        })
    }

    /// `data` from the upstream went to the client; returns how many events it completed.
    pub fn sent(&mut self, data: &[u8]) -> u64 {
        if data.is_empty() {
            return 0;
        }
        if let Some(beat) = &mut self.beat {
            beat.progress();
        }
        self.lines.feed(data)
    }

    /// A comment line to send now, or `None` (the waker is registered for the next beat).
    /// Only ever at a line start, not right after a CR (whose LF may follow), and not before
    /// the upstream's first byte.
    pub fn poll_beat(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        let beat = self.beat.as_mut()?;
        if !beat.poll_expired(cx) {
            return None;
        }
        // Due: start the next interval (and register for it) whether or not we may beat now.
        beat.progress();
        let _ = beat.poll_expired(cx);
        let lines = &self.lines;
        (lines.started && lines.at_line_start && !lines.after_cr).then(|| Bytes::from_static(BEAT))
    }
}

impl Lines {
    fn feed(&mut self, data: &[u8]) -> u64 {
        self.started |= !data.is_empty();
        let mut events = 0;
        for &b in data {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {} // CRLF: the line already ended at the CR
                // A blank line: it ends the event, if one is open.
                b'\r' | b'\n' if self.at_line_start => {
                    events += u64::from(std::mem::take(&mut self.event_open));
                }
                b'\r' | b'\n' => {
                    self.at_line_start = true;
                    if !self.in_comment {
                        self.event_open = true;
                    }
                }
                _ if self.at_line_start => {
                    self.at_line_start = false;
                    self.in_comment = b == b':';
                }
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|_| unreachable!()),
                HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        map
    }

    #[test]
    fn event_streams_are_recognised_by_media_type() {
        for (value, expected) in [
            ("text/event-stream", true),
            ("text/event-stream; charset=utf-8", true),
            ("Text/Event-Stream", true),
            ("text/event-streamx", false),
            ("application/json", false),
        ] {
            let map = headers(&[("content-type", value)]);
            assert_eq!(is_event_stream(&map), expected, "{value}");
        }
        assert!(!is_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn stream_headers_keep_a_stricter_cache_control() {
        let mut map = headers(&[("cache-control", "public, max-age=60")]);
        set_stream_headers(&mut map);
        assert_eq!(map[CACHE_CONTROL], "no-cache");
        assert_eq!(map["x-accel-buffering"], "no");
        let mut map = headers(&[("cache-control", "private, no-store")]);
        set_stream_headers(&mut map);
        assert_eq!(map[CACHE_CONTROL], "private, no-store");
    }

    #[test]
    fn events_are_counted_by_blank_lines_across_chunks_and_line_endings() {
        let mut stream = EventStream::new(None, true).unwrap_or_else(|| unreachable!());
        assert_eq!(stream.sent(b"data: a\n\n"), 1);
        // The blank line arrives in a chunk of its own.
        assert_eq!(stream.sent(b"data: b\n"), 0);
        assert_eq!(stream.sent(b"\n"), 1);
        // CRLF and CR line endings; a CRLF split across chunks.
        assert_eq!(stream.sent(b"data: c\r\n\r\ndata: d\r\r"), 2);
        assert_eq!(stream.sent(b"data: e\r"), 0);
        assert_eq!(stream.sent(b"\n\r\n"), 1);
        // Comments and extra blank lines are not events.
        assert_eq!(stream.sent(b": keep-alive\n\n\n\n"), 0);
        assert!(EventStream::new(Some(Duration::from_secs(1)), false).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn beats_only_at_a_line_start_after_a_quiet_interval() {
        let mut beat =
            EventStream::new(Some(Duration::from_secs(10)), true).unwrap_or_else(|| unreachable!());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // As the body does: data goes out, then the upstream is polled and has nothing.
        let send_then_wait = |beat: &mut EventStream, data: &[u8]| {
            beat.sent(data);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert_eq!(beat.poll_beat(&mut cx), None, "just sent {data:?}");
        };
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            beat.poll_beat(&mut cx),
            None,
            "nothing before the first byte"
        );
        send_then_wait(&mut beat, b"data: 0\n\n");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(beat.poll_beat(&mut cx).as_deref(), Some(BEAT));
        // Mid-line (`data: ab` not yet ended): due again, but no beat may go in.
        send_then_wait(&mut beat, b"data: ab");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(beat.poll_beat(&mut cx), None);
        // `\r` may be the first half of `\r\n`: still not a line start.
        send_then_wait(&mut beat, b"\r");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(beat.poll_beat(&mut cx), None);
        send_then_wait(&mut beat, b"\n");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(beat.poll_beat(&mut cx), None, "data went out 5 s ago");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(beat.poll_beat(&mut cx).as_deref(), Some(BEAT));
        // And then every interval while nothing else is sent.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(beat.poll_beat(&mut cx).as_deref(), Some(BEAT));
    }
}
