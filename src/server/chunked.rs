//! Where a chunked request body ends, found as its bytes go by.
//!
//! The connection's framing scan ([`super::scan`]) reads on past each request to the next
//! pipelined head. A body of known length is skipped by count; a chunked one has to be
//! followed chunk by chunk. This follows it with hyper's own grammar (RFC 9112 §7.1 with
//! CRLF line ends only, as hyper refuses a bare LF there), so that where this says the body
//! ends is where hyper reads its next head. The states are named after hyper's
//! `ChunkedState` (`proto/h1/decode.rs`) so the two can be read side by side. Only a state
//! and a count are kept: chunk data is skipped, never copied, however large.
//!
//! ```text
//!   hex-size [spaces] [;ext] CRLF  data CRLF  …  0 [spaces] [;ext] CRLF  *(trailer CRLF)  CRLF
//! ```
//!
//! hyper's limits (16 KiB of extensions, the size and count of trailer fields, trailer
//! fields httparse refuses) are not copied: past them hyper fails the body and reads nothing
//! more from the connection, so a head this finds beyond that point is never parsed. The
//! upstream responses' decoder (`proxy::client::h1::decode`) is not used here: it decodes
//! from a buffer it owns, and this must only watch bytes pass, in reads cut anywhere.

/// How far into a chunked body the reader is.
#[derive(Debug, Default)]
pub struct ChunkedBody {
    state: State,
    /// The chunk size while its line is read; then the chunk's data bytes still to come.
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A chunk's first size digit.
    #[default]
    Start,
    /// More size digits.
    Size,
    /// Spaces or tabs after the size: no more digits may follow.
    SizeLws,
    /// A chunk extension, up to the CR.
    Extension,
    /// The LF that ends the size line.
    SizeLf,
    /// Chunk data, `size` bytes of it still to come.
    Body,
    /// The CR after a chunk's data.
    BodyCr,
    /// The LF after a chunk's data.
    BodyLf,
    /// After the last chunk's line, or a trailer field: another field, or the final CR.
    EndCr,
    /// A trailer field, up to its CR.
    Trailer,
    /// The LF that ends a trailer field.
    TrailerLf,
    /// The final LF.
    EndLf,
}

/// What one read showed of the body.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// All of it was body, and more is to come.
    More,
    /// The body ended this many bytes into the read; the rest is the next request.
    Ended(usize),
    /// Not a chunked body as hyper reads one: hyper refuses it, so nothing after it is a head.
    Malformed,
}

impl ChunkedBody {
    /// Follows the body through `bytes`, the connection's next bytes. Once it has said
    /// `Ended` or `Malformed`, it is done with (one body each).
    pub fn read(&mut self, bytes: &[u8]) -> Progress {
        use State::*;
        let mut at = 0;
        while at < bytes.len() {
            if self.state == Body {
                let left = bytes.len() - at;
                let take = usize::try_from(self.size).map_or(left, |size| size.min(left));
                self.size -= take as u64;
                at += take;
                if self.size == 0 {
                    self.state = BodyCr;
                }
                continue;
            }
            let byte = bytes[at];
            at += 1;
            self.state = match (self.state, byte) {
                (Start | Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = match byte {
                        b'0'..=b'9' => byte - b'0',
                        b'a'..=b'f' => byte - b'a' + 10,
                        _ => byte - b'A' + 10,
                    };
                    let size = self.size.checked_mul(16);
                    match size.and_then(|size| size.checked_add(u64::from(digit))) {
                        Some(size) => self.size = size,
                        None => return Progress::Malformed,
                    }
                    Size
                }
                (Size | SizeLws, b' ' | b'\t') => SizeLws,
                (Size | SizeLws, b';') => Extension,
                (Size | SizeLws | Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Progress::Malformed,
                (Extension, _) => Extension,
                (SizeLf, b'\n') if self.size == 0 => EndCr,
                (SizeLf, b'\n') => Body,
                (BodyCr, b'\r') => BodyLf,
                (BodyLf, b'\n') => Start,
                (EndCr, b'\r') => EndLf,
                (Trailer, b'\r') => TrailerLf,
                (EndCr | Trailer, b'\n') => return Progress::Malformed,
                (EndCr | Trailer, _) => Trailer,
                (TrailerLf, b'\n') => EndCr,
                (EndLf, b'\n') => return Progress::Ended(at),
                _ => return Progress::Malformed,
            };
        }
        Progress::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `bytes` in the given pieces; where the body was said to end, from the start.
    fn read_in(pieces: &[&[u8]]) -> Progress {
        let mut body = ChunkedBody::default();
        let mut before = 0;
        for piece in pieces {
            match body.read(piece) {
                Progress::More => before += piece.len(),
                Progress::Ended(at) => return Progress::Ended(before + at),
                Progress::Malformed => return Progress::Malformed,
            }
        }
        Progress::More
    }

    #[test]
    fn a_body_ends_after_its_last_chunk_and_trailers_wherever_the_reads_are_cut() {
        let next = b"GET /next HTTP/1.1\r\n\r\n";
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;name=value\r\nhello\r\nA \t;x\r\n0123456789\r\n000\r\n\r\n",
            b"3\r\n\r\n\r\r\n0;last\r\nX-Sum: 1\r\nY: \r\n\r\n",
            b"00000000000000000002\r\nhi\r\nB\r\nhello world\r\n0\r\n\r\n",
        ] {
            let bytes = [body, next].concat();
            for first in 0..=bytes.len() {
                for second in first..=bytes.len() {
                    let pieces = [&bytes[..first], &bytes[first..second], &bytes[second..]];
                    assert_eq!(
                        read_in(&pieces),
                        Progress::Ended(body.len()),
                        "{:?} cut at {first} and {second}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
        }
    }

    #[test]
    fn data_that_looks_like_chunk_lines_is_skipped_by_count() {
        // 0x15 bytes of data: a last chunk and a request line.
        let body = b"15\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n0\r\n\r\n";
        assert_eq!(read_in(&[body]), Progress::Ended(body.len()));
    }

    #[test]
    fn what_hyper_refuses_is_malformed() {
        for body in [
            &b"\r\n"[..],
            b"x\r\n",
            b" 5\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rX",
            b"5 5\r\nhello\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5\r\nhello\rX",
            b"0\r\n\n",
            b"0\r\n\rX",
            b"0\r\nX: 1\n\r\n",
            b"10000000000000000\r\n",
        ] {
            assert_eq!(
                read_in(&[body]),
                Progress::Malformed,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_unfinished_body_wants_more() {
        // The largest size there is, and a chunk read in two parts.
        assert_eq!(
            read_in(&[b"ffffffffffffffff\r\n", &[b'x'; 4096]]),
            Progress::More
        );
        let data = [b'x'; 4097];
        let (head, tail) = (b"1001\r\n", b"\r\n0\r\n\r\n");
        assert_eq!(read_in(&[head, &data[..4096]]), Progress::More);
        let whole = read_in(&[head, &data[..4096], &data[4096..], tail]);
        assert_eq!(whole, Progress::Ended(head.len() + data.len() + tail.len()));
    }
}
