//! The framing pre-scan: each request head's framing, read from the client's bytes before
//! hyper parses them.
//!
//! hyper silently resolves Content-Length plus Transfer-Encoding in favour of the latter
//! (RFC 9112 §6.3), where the proxy refuses such a request; once hyper has parsed the head
//! the Content-Length is gone, so the conflict is only visible here. A head is followed
//! across reads (hyper's protocol detection reads the first 24 bytes alone) up to the
//! limit, hyper's own head buffer, so every head hyper accepts is seen whole. Pipelined
//! heads are scanned too: a body of known length is skipped by count, a chunked one
//! followed chunk by chunk ([`ChunkedBody`]), and the next head is read. A conflict found in
//! a later head is reported to whichever request is handled next, which closes the
//! connection with it.

use super::chunked::{ChunkedBody, Progress};
use crate::proxy::{head_framing, BodyFraming, HeadFraming};

/// One connection's scan, fed every byte the client sends, in order.
pub struct HeadScan {
    /// The current head's bytes while it is being collected across reads; reused.
    head: Vec<u8>,
    scanning: bool,
    /// The body of the last scanned request, while some of it is still to come.
    body: Option<Body>,
    limit: usize,
}

enum Body {
    /// This many bytes left.
    Length(u64),
    Chunked(ChunkedBody),
}

impl HeadScan {
    /// `limit`: the most bytes a request head may take, empty lines before it aside.
    pub fn new(limit: usize) -> Self {
        HeadScan {
            head: Vec::new(),
            scanning: false,
            body: None,
            limit,
        }
    }

    /// Reads the connection's next bytes; `new_head`: they arrived with no request in flight.
    /// True when a head with both Content-Length and Transfer-Encoding was found.
    pub fn read(&mut self, mut bytes: &[u8], new_head: bool) -> bool {
        // Bytes on an idle connection begin a new head: a scan that had stopped starts over.
        // One still going keeps its place, as those bytes may go on with a head (or body)
        // that began while the last request was in flight.
        if new_head && !self.scanning {
            self.head.clear();
            self.scanning = true;
            self.body = None;
        }
        while self.scanning && !bytes.is_empty() {
            match &mut self.body {
                Some(Body::Length(left)) => {
                    let n =
                        usize::try_from(*left).map_or(bytes.len(), |left| left.min(bytes.len()));
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.body = None;
                    }
                    continue;
                }
                Some(Body::Chunked(chunked)) => {
                    match chunked.read(bytes) {
                        Progress::More => return false,
                        Progress::Ended(at) => bytes = &bytes[at..],
                        // hyper refuses the request and closes; nothing after it is a head.
                        Progress::Malformed => self.scanning = false,
                    }
                    self.body = None;
                    continue;
                }
                None => {}
            }
            if self.head.is_empty() {
                // Empty lines before a head count for nothing (httparse skips them), so no
                // flood of them can push a head past the limit.
                let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n');
                bytes = &bytes[start.unwrap_or(bytes.len())..];
                if bytes.is_empty() {
                    return false;
                }
            }
            // Most heads arrive in one read: scanned where they lie, copied only when not whole.
            let (framing, earlier) = if self.head.is_empty() {
                (head_framing(bytes), 0)
            } else {
                let earlier = self.head.len();
                self.head.extend_from_slice(bytes);
                (head_framing(&self.head), earlier)
            };
            match framing {
                HeadFraming::Incomplete => {
                    if earlier == 0 {
                        self.head.extend_from_slice(bytes);
                    }
                    // Longer than hyper takes: it refuses the head itself.
                    self.scanning = self.head.len() < self.limit;
                    return false;
                }
                HeadFraming::Conflicting => {
                    self.scanning = false;
                    return true;
                }
                HeadFraming::Fine { len, body } => {
                    // The head ended `len - earlier` bytes into this read; its body follows.
                    bytes = bytes.get(len.saturating_sub(earlier)..).unwrap_or_default();
                    self.head.clear();
                    self.body = match body {
                        BodyFraming::Length(length) => Some(Body::Length(length)),
                        BodyFraming::Chunked => Some(Body::Chunked(ChunkedBody::default())),
                        BodyFraming::Unknown => {
                            self.scanning = false;
                            None
                        }
                    };
                }
                HeadFraming::Other => self.scanning = false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` to a fresh scan as one connection's reads, the first starting a head;
    /// whether it found a Content-Length + Transfer-Encoding conflict.
    fn conflict_found(reads: &[&[u8]]) -> bool {
        let mut scan = HeadScan::new(8192);
        let mut found = false;
        for (i, read) in reads.iter().enumerate() {
            found |= scan.read(read, i == 0);
        }
        found
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
                let mut scan = HeadScan::new(8192);
                let mut found = scan.read(&[first, &CONFLICTING[..cut]].concat(), true);
                // The connection is idle again when the rest arrives: bytes of a new head, as
                // far as the connection can tell.
                found |= scan.read(&CONFLICTING[cut..], true);
                assert!(found, "cut at {cut}");
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
