//! Response body framing (RFC 9112 §6.3) and decoding: how a response from an upstream is
//! delimited, decided from its head, and the state machine that takes body bytes, chunks
//! and trailers off the front of the connection's read buffer as they arrive.
//!
//! Kept apart from the exchange in [`super`], which owns the socket and decides when to
//! read: everything here works on the head or the buffered bytes alone, so every
//! framing can be tested without a connection (`h1/tests.rs` feeds bodies one byte at a
//! time, the worst split).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::{room_for_fields, InvalidResponse, MAX_HEAD, STACK_HEADERS};
use crate::proxy::headers::content_length_value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section and the final CRLF.
    Trailers,
}

/// What decoding the buffered bytes gave.
pub(super) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended.
    End,
    /// More bytes must be read.
    More,
}

/// How the body is delimited, and whether the framing lets the connection be reused.
pub(super) fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), InvalidResponse> {
    if method == Method::CONNECT && status.is_success() {
        // A tunnel from here on, which this client does not carry: no body, no reuse.
        return Ok((Framing::Length(0), false));
    }
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(InvalidResponse("Transfer-Encoding in an HTTP/1.0 response"));
        }
        // The proxy takes the transfer coding off and the client's connection puts its own
        // on: a coding other than chunked (`gzip, chunked`) would reach the client still
        // applied but no longer named, a corrupt body. None is decoded here: refused.
        if !only_chunked(headers) {
            return Err(InvalidResponse("a transfer coding other than chunked"));
        }
        // Transfer-Encoding overrides Content-Length; what the client sees matches.
        let had_length = headers.remove(CONTENT_LENGTH).is_some();
        return Ok((Framing::Chunked(Chunk::Size), !had_length));
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let parsed =
                content_length_value(item).ok_or(InvalidResponse("invalid Content-Length"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(InvalidResponse("differing Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(length) => (Framing::Length(length), true),
        None => (Framing::UntilClose, false),
    })
}

/// Whether chunked is the one transfer coding named (in one field or several).
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    codings
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// Whether chunked is the last transfer coding named.
pub(super) fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|value| value.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Takes what it can of the body from the front of `buf`.
pub(super) fn decode(
    framing: &mut Framing,
    buf: &mut BytesMut,
) -> Result<Decoded, InvalidResponse> {
    match framing {
        Framing::Length(0) => Ok(Decoded::End),
        Framing::Length(left) => {
            if buf.is_empty() {
                return Ok(Decoded::More);
            }
            Ok(Decoded::Data(take(left, buf)))
        }
        Framing::UntilClose if buf.is_empty() => Ok(Decoded::More),
        Framing::UntilClose => Ok(Decoded::Data(buf.split().freeze())),
        Framing::Chunked(chunk) => decode_chunked(chunk, buf),
    }
}

fn decode_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Decoded, InvalidResponse> {
    loop {
        match chunk {
            // httparse reads a line without digits as size 0, the last chunk; RFC 9112 wants
            // at least one (as hyper's decoder does), so a cut body is not taken as whole.
            Chunk::Size if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                return Err(InvalidResponse("invalid chunk size"));
            }
            Chunk::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((len, 0))) => {
                    buf.advance(len);
                    *chunk = Chunk::Trailers;
                }
                Ok(httparse::Status::Complete((len, size))) => {
                    buf.advance(len);
                    *chunk = Chunk::Data(size);
                }
                Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                Err(_) => return Err(InvalidResponse("invalid chunk size")),
            },
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let data = take(left, buf);
                if *left == 0 {
                    *chunk = Chunk::DataEnd;
                }
                return Ok(Decoded::Data(data));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(InvalidResponse("chunk data longer than its size"));
                }
                buf.advance(2);
                *chunk = Chunk::Size;
            }
            Chunk::Trailers => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(Decoded::End);
                }
                let mut slots = [httparse::EMPTY_HEADER; STACK_HEADERS];
                let mut more_slots = Vec::new();
                let mut result = httparse::parse_headers(buf, &mut slots);
                if let Err(httparse::Error::TooManyHeaders) = result {
                    more_slots.resize(room_for_fields(buf), httparse::EMPTY_HEADER);
                    result = httparse::parse_headers(buf, &mut more_slots);
                }
                return match result {
                    Ok(httparse::Status::Complete((len, _))) if len > MAX_HEAD => {
                        Err(InvalidResponse("trailer section too large"))
                    }
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for field in fields {
                            let name = HeaderName::from_bytes(field.name.as_bytes());
                            let value = HeaderValue::from_bytes(field.value);
                            match (name, value) {
                                (Ok(name), Ok(value)) => drop(trailers.append(name, value)),
                                _ => return Err(InvalidResponse("invalid trailer field")),
                            }
                        }
                        buf.advance(len);
                        Ok(Decoded::Trailers(trailers))
                    }
                    Ok(httparse::Status::Partial) => Ok(Decoded::More),
                    Err(httparse::Error::TooManyHeaders) => {
                        Err(InvalidResponse("too many trailer fields"))
                    }
                    Err(_) => Err(InvalidResponse("malformed trailers")),
                };
            }
        }
    }
}

/// Up to `left` of the buffered bytes, counted off `left`.
fn take(left: &mut u64, buf: &mut BytesMut) -> Bytes {
    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
    *left -= n as u64;
    buf.split_to(n).freeze()
}
