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
    /// Complete and unambiguous, or not parseable (hyper will answer that itself).
    Fine,
}

/// Looks at the first bytes of an HTTP/1 request. Only the head is parsed; a body or a
/// pipelined request after it is ignored.
pub fn head_framing(bytes: &[u8]) -> HeadFraming {
    // Uninitialised slots: filling 128 empty headers on every request costs more than parsing.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 128];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Partial) => HeadFraming::Incomplete,
        Ok(httparse::Status::Complete(_)) => {
            let named = |name: &str| {
                request
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(name))
            };
            if named("content-length") && named("transfer-encoding") {
                HeadFraming::Conflicting
            } else {
                HeadFraming::Fine
            }
        }
        Err(_) => HeadFraming::Fine,
    }
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
        let valid = std::str::from_utf8(first.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some();
        if !valid {
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
    if let Some(authority) = req.uri().authority() {
        return Ok(Some(authority.clone()));
    }
    match host {
        Some(value) => Authority::try_from(value.as_bytes())
            .map(Some)
            .map_err(|_| bad("the Host header is not a valid host")),
        None if req.version() == Version::HTTP_11 => Err(bad("the Host header is required")),
        None => Ok(None),
    }
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
        assert_eq!(
            head_framing(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
            HeadFraming::Fine
        );
        assert_eq!(head_framing(b"\x16\x03\x01 not http"), HeadFraming::Fine);
    }
}
