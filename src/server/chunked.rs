//! Where a chunked request body ends, found as its bytes go by.
//!
//! The connection's framing scan ([`super::conn`]) reads on past each request to the next
//! pipelined head. A body of known length is skipped by count; a chunked one has to be
//! followed chunk by chunk. This follows it with hyper's own grammar (RFC 9112 §7.1 with
//! CRLF line ends only, as hyper refuses a bare LF there), so that where this says the body
//! ends is where hyper reads its next head. Only a state and a count are kept: chunk data is
//! skipped, never copied, however large.
//!
//! ```text
//!   hex-size [spaces] [;ext] CRLF  data CRLF  …  0 [spaces] [;ext] CRLF  *(trailer CRLF)  CRLF
//! ```

/// How far into a chunked body the reader is.
#[derive(Debug, Default)]
pub struct ChunkedBody {
    state: State,
    /// The chunk size while its line is read; then the chunk's data bytes still to come.
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first digit of a chunk size.
    #[default]
    Start,
    Size,
    /// Spaces or tabs after the size: no more digits may follow.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk's line: a trailer field, or the CRLF that ends the body.
    LineStart,
    Trailer,
    TrailerLf,
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
    /// Follows the body through `bytes`, the next bytes of the connection.
    pub fn read(&mut self, bytes: &[u8]) -> Progress {
        use State::*;
        let mut at = 0;
        while at < bytes.len() {
            if self.state == Data {
                let left = bytes.len() - at;
                let take = usize::try_from(self.size).map_or(left, |size| size.min(left));
                self.size -= take as u64;
                at += take;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let byte = bytes[at];
            at += 1;
            self.state = match (self.state, byte) {
                (Start | Size, _) if byte.is_ascii_hexdigit() => {
                    let digit = u64::from(char::from(byte).to_digit(16).unwrap_or(0));
                    match self.size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                        Some(size) => self.size = size,
                        None => return Progress::Malformed,
                    }
                    Size
                }
                (Size | SizeSpace, b' ' | b'\t') => SizeSpace,
                (Size | SizeSpace, b';') => Extension,
                (Size | SizeSpace | Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Progress::Malformed,
                (Extension, _) => Extension,
                (SizeLf, b'\n') if self.size == 0 => LineStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Start,
                (LineStart, b'\r') => EndLf,
                (Trailer, b'\r') => TrailerLf,
                (LineStart | Trailer, b'\n') => return Progress::Malformed,
                (LineStart | Trailer, _) => Trailer,
                (TrailerLf, b'\n') => LineStart,
                (EndLf, b'\n') => {
                    *self = ChunkedBody::default();
                    return Progress::Ended(at);
                }
                _ => return Progress::Malformed,
            };
        }
        Progress::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `body` (split at `cut`) and what follows it; where the body was said to end.
    fn end_of(bytes: &[u8], cut: usize) -> Progress {
        let mut body = ChunkedBody::default();
        let (first, second) = bytes.split_at(cut);
        match body.read(first) {
            Progress::More => {}
            Progress::Ended(at) => return Progress::Ended(at),
            Progress::Malformed => return Progress::Malformed,
        }
        match body.read(second) {
            Progress::Ended(at) => Progress::Ended(cut + at),
            other => other,
        }
    }

    #[test]
    fn a_body_ends_after_its_last_chunk_and_trailers_wherever_the_reads_are_cut() {
        let next = b"GET /next HTTP/1.1\r\n\r\n";
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;name=value\r\nhello\r\nA \t;x\r\n0123456789\r\n000\r\n\r\n",
            b"3\r\n\r\n\r\r\n0;last\r\nX-Sum: 1\r\nY: \r\n\r\n",
        ] {
            let bytes = [body, next].concat();
            for cut in 0..=bytes.len() {
                assert_eq!(
                    end_of(&bytes, cut),
                    Progress::Ended(body.len()),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn data_that_looks_like_chunk_lines_is_skipped_by_count() {
        // 0x15 bytes of data: a last chunk and a request line.
        let body = b"15\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n0\r\n\r\n";
        assert_eq!(end_of(body, 0), Progress::Ended(body.len()));
    }

    #[test]
    fn what_hyper_refuses_is_malformed() {
        for body in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
            b"10000000000000000\r\n",
        ] {
            assert_eq!(
                end_of(body, 0),
                Progress::Malformed,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_unfinished_body_wants_more() {
        let mut body = ChunkedBody::default();
        assert_eq!(body.read(b"ffffffff\r\n"), Progress::More);
        assert_eq!(body.read(&[b'x'; 4096]), Progress::More);
        assert_eq!(body.size, 0xffff_ffff - 4096);
    }
}
