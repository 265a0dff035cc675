//! What a request must satisfy before anything is forwarded: unambiguous framing (RFC 9112
//! §6.3), a head within `max_header_bytes` and exactly one authority (RFC 9112 §3.2). Each
//! check answers with the `GatewayError` the client gets; none of them reads the body.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{HeaderMap, Request, Version};

use crate::error::{ErrorKind, GatewayError};

/// What the start of a request says about its framing.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadFraming {
    /// The head is not complete yet.
    Incomplete,
    /// Both Content-Length and Transfer-Encoding: to be refused.
    Conflicting,
    /// A complete head of `len` bytes without that conflict, and how its body is framed:
    /// where a pipelined next head would begin.
    Fine { len: usize, body: BodyFraming },
    /// Not an HTTP/1 request head (a TLS hello, HTTP/2's preface) or a malformed one: hyper
    /// answers those itself.
    Other,
}

/// A request body's framing, as far as its head alone tells.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No Transfer-Encoding, and no Content-Length or the same plain number in each: this
    /// many bytes.
    Length(u64),
    /// Transfer-Encoding without Content-Length: read as chunked (hyper refuses any other
    /// coding of a request).
    Chunked,
    /// Content-Lengths that differ or are not plain numbers: hyper or `check_framing`
    /// refuses the request.
    Unknown,
}

/// Looks at the first bytes of an HTTP/1 request head; what follows it is not read.
///
/// Runs on every request's first bytes, before hyper parses them (hyper drops a
/// Content-Length that comes with Transfer-Encoding, so the conflict is only visible here):
/// a scan of line starts, not a second full parse. A malformed head may be called anything
/// but `Fine`, as hyper refuses it anyway; a head hyper accepts is never misread.
pub fn head_framing(bytes: &[u8]) -> HeadFraming {
    let mut seen_request_line = false;
    let mut encoding = false;
    // Content-Length fields seen, and the one length they all give (None once one is not a
    // plain number or two differ): hyper takes a length repeated in several fields.
    let (mut lengths, mut length) = (0u32, None);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = end + 1;
        if !seen_request_line {
            // Empty lines before the request line are skipped, as httparse does.
            if line.is_empty() {
                continue;
            }
            if !is_http1_request_line(line) {
                return HeadFraming::Other;
            }
            seen_request_line = true;
        } else if line.is_empty() {
            let body = match (lengths, encoding) {
                (1.., true) => return HeadFraming::Conflicting,
                (0, true) => BodyFraming::Chunked,
                (0, false) => BodyFraming::Length(0),
                (1.., false) => length.map_or(BodyFraming::Unknown, BodyFraming::Length),
            };
            return HeadFraming::Fine { len: start, body };
        } else if let Some(value) = field_value(line, b"content-length:") {
            let value = super::headers::content_length_value(value);
            length = if lengths == 0 || value == length {
                value
            } else {
                None
            };
            lengths += 1;
        } else {
            encoding |= field_value(line, b"transfer-encoding:").is_some();
        }
    }
    // Not whole yet; but a start no method can have (a TLS hello, say) is not worth waiting for.
    let rest = &bytes[start..];
    if !seen_request_line
        && rest
            .first()
            .is_some_and(|&b| b != b'\r' && !is_token_char(b))
    {
        return HeadFraming::Other;
    }
    HeadFraming::Incomplete
}

/// The value of a header line whose name (with its colon) is `name`, in any case.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (start, value) = line.split_at_checked(name.len())?;
    start.eq_ignore_ascii_case(name).then(|| value.trim_ascii())
}

/// `METHOD target HTTP/1.x`, as far as framing cares: a method's first character and the
/// version. Any token character, not only capitals: hyper takes `post` or `m-search` as
/// extension methods, and such a request must not slip past the check.
fn is_http1_request_line(line: &[u8]) -> bool {
    line.first().is_some_and(|&b| is_token_char(b))
        && line.len() > 9
        && line[..line.len() - 1].ends_with(b" HTTP/1.")
}

/// A `tchar` of RFC 9110 §5.6.2, what a method is made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Refuses what could be read two ways (RFC 9112 §6.3): Content-Length together with
/// Transfer-Encoding, several differing Content-Lengths, or a Transfer-Encoding other than
/// plain `chunked`. Also enforces `max_header_bytes` (request line plus header fields).
pub(super) fn check_framing<B>(
    headers: &HeaderMap,
    max_header_bytes: usize,
    req: &Request<B>,
) -> Result<(), GatewayError> {
    let target_len = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    // "METHOD SP target SP HTTP/1.1 CRLF", each "name: value CRLF", the final CRLF.
    let size: usize = req.method().as_str().len()
        + target_len
        + 13
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if size > max_header_bytes {
        return Err(GatewayError::client(
            ErrorKind::HeadersTooLarge,
            format!("request headers exceed {max_header_bytes} bytes"),
        )
        .closing());
    }
    let ambiguous = |m: &'static str| GatewayError::client(ErrorKind::BadRequest, m).closing();
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    let (first_te, first_cl) = (te.next(), cl.next());
    if first_te.is_some() && first_cl.is_some() {
        return Err(ambiguous(
            "both Content-Length and Transfer-Encoding are present",
        ));
    }
    if let Some(first) = first_te {
        if te.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(ambiguous(
                "only a single 'Transfer-Encoding: chunked' is accepted",
            ));
        }
    }
    if let Some(first) = first_cl {
        if super::headers::content_length_value(first.as_bytes()).is_none() {
            return Err(ambiguous("Content-Length is not a number"));
        }
        if cl.any(|other| other != first) {
            return Err(ambiguous("differing Content-Length values"));
        }
    }
    Ok(())
}

pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The authority the client asked for (RFC 9112 §3.2): the request target's, when it has one
/// (absolute-form, or HTTP/2's `:authority`), which then overrides `Host`; else the single
/// `Host` header. HTTP/1.1 requires exactly one valid `Host`.
pub(super) fn request_authority<B>(req: &Request<B>) -> Result<Option<Authority>, GatewayError> {
    let bad = |m: &'static str| GatewayError::client(ErrorKind::BadRequest, m);
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        // Also beside an absolute-form target: RFC 9112 §3.2 wants the 400 for any HTTP/1.1
        // request without Host.
        return Err(bad("the Host header is required"));
    }
    if let Some(authority) = req.uri().authority() {
        return match is_host(authority) {
            true => Ok(Some(authority.clone())),
            false => Err(bad("the request target's authority is not a valid host")),
        };
    }
    match host {
        Some(value) => Authority::try_from(value.as_bytes())
            .ok()
            .filter(is_host)
            .map(Some)
            .ok_or_else(|| bad("the Host header is not a valid host")),
        None => Ok(None),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): `http`'s `Authority` also takes user info
/// (`user:secret@host`, which would reach the upstream's Host and X-Forwarded-Host and its
/// logs) and any text after the colon (`host:99999`, `host:+80`). One pass over the bytes: it
/// runs for every request, and `Authority::host` and `port_u16` each scan the text again
/// (~800 instructions a request together, `bench/instructions`; `memchr` measured no better).
fn is_host(authority: &Authority) -> bool {
    let text = authority.as_str().as_bytes();
    let mut port_colon = None;
    for (i, byte) in text.iter().enumerate() {
        match byte {
            b'@' => return false,
            b':' => port_colon = Some(i),
            // The colons of an IPv6 literal are not the port's.
            b']' => port_colon = None,
            _ => {}
        }
    }
    let Some(colon) = port_colon else {
        return true;
    };
    // An empty port is allowed (`*DIGIT`); a sign is not.
    let port = &text[colon + 1..];
    port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_framing_is_seen_once_the_head_is_complete() {
        let both = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head_framing(both), HeadFraming::Conflicting);
        assert_eq!(head_framing(&both[..24]), HeadFraming::Incomplete);
        let reversed =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\nbody";
        assert_eq!(head_framing(reversed), HeadFraming::Conflicting);
        let get = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let whole = HeadFraming::Fine {
            len: get.len(),
            body: BodyFraming::Length(0),
        };
        assert_eq!(head_framing(get), whole);
        assert_eq!(head_framing(b"\x16\x03\x01 not http"), HeadFraming::Other);
    }

    #[test]
    fn framing_is_read_from_line_starts_of_an_http1_head_only() {
        // Leading empty lines, bare LF endings, names in any case.
        let bare = b"\r\n\nPOST / HTTP/1.0\ncontent-length: 4\nTRANSFER-encoding: chunked\n\n";
        assert_eq!(head_framing(bare), HeadFraming::Conflicting);
        // Each prefix of a conflicting head is incomplete, never `Fine`.
        let both = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        for end in 0..both.len() {
            assert_eq!(head_framing(&both[..end]), HeadFraming::Incomplete, "{end}");
        }
        // A name that merely contains one of them, or a value that does, is not one.
        let lookalike = b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\nTransfer-Encoding: chunked\r\nA: content-length: 1\r\n\r\n";
        let chunked = HeadFraming::Fine {
            len: lookalike.len(),
            body: BodyFraming::Chunked,
        };
        assert_eq!(head_framing(lookalike), chunked);
        // Not HTTP/1: the HTTP/2 preface, JSON.
        assert_eq!(
            head_framing(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HeadFraming::Other
        );
        assert_eq!(head_framing(b"{\"json\": 1}\r\n"), HeadFraming::Other);
        // An extension method in any case is still a request.
        let lower = b"post / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head_framing(lower), HeadFraming::Conflicting);
        assert_eq!(
            head_framing(b"m-search * HTTP/1.1\r\n"),
            HeadFraming::Incomplete
        );
        assert_eq!(head_framing(b"\r"), HeadFraming::Incomplete);
    }

    #[test]
    fn a_complete_head_tells_where_the_next_one_begins_when_it_can() {
        let with_body = b"POST / HTTP/1.1\r\ncontent-length:  12 \r\n\r\nhello, world";
        let head_len = with_body.len() - 12;
        assert_eq!(
            head_framing(with_body),
            HeadFraming::Fine {
                len: head_len,
                body: BodyFraming::Length(12)
            }
        );
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            head_framing(&[&head[..], b"5\r\n"].concat()),
            HeadFraming::Fine {
                len: head.len(),
                body: BodyFraming::Chunked
            }
        );
        // The same length twice is that length (hyper takes it)...
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 4\r\ncontent-length:4\r\n\r\n";
        let expected = HeadFraming::Fine {
            len: twice.len(),
            body: BodyFraming::Length(4),
        };
        assert_eq!(head_framing(twice), expected);
        // ...two that differ, or one that is not a plain number, are left to hyper and
        // `check_framing`, which refuse them.
        for unknown in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: x\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
        ] {
            let framing = head_framing(unknown);
            let expected = HeadFraming::Fine {
                len: unknown.len(),
                body: BodyFraming::Unknown,
            };
            assert_eq!(framing, expected, "{}", String::from_utf8_lossy(unknown));
        }
    }
}
