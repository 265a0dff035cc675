use super::decode::Chunk;
use super::*;

fn parsed(raw: &[u8], head_request: bool) -> (Head, BytesMut) {
    let mut buf = BytesMut::from(raw);
    let head = parse_head(
        &mut buf,
        if head_request {
            &Method::HEAD
        } else {
            &Method::GET
        },
    )
    .expect("valid head")
    .expect("complete head");
    (head, buf)
}

fn invalid(raw: &[u8]) -> &'static str {
    let mut buf = BytesMut::from(raw);
    match parse_head(&mut buf, &Method::GET) {
        Err(InvalidResponse(why)) => why,
        Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(raw)),
    }
}

/// Decodes all of `raw` as a body with `framing`, one byte at a time (the worst split).
fn decode_bytewise(
    mut framing: Framing,
    raw: &[u8],
) -> Result<(Vec<u8>, Option<HeaderMap>), &'static str> {
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut rest = raw.iter();
    loop {
        match decode(&mut framing, &mut buf).map_err(|e| e.0)? {
            Decoded::Data(bytes) => data.extend_from_slice(&bytes),
            Decoded::Trailers(trailers) => return Ok((data, Some(trailers))),
            Decoded::End => return Ok((data, None)),
            Decoded::More => match rest.next() {
                Some(byte) => buf.extend_from_slice(&[*byte]),
                None => return Err("ran out of input"),
            },
        }
    }
}

#[test]
fn a_head_is_parsed_and_removed_leaving_the_body() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello";
    let (head, buf) = parsed(raw, false);
    assert_eq!(head.response.status(), 200);
    assert_eq!(head.response.version(), Version::HTTP_11);
    let values: Vec<_> = head.response.headers().get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(head.framing, Framing::Length(5));
    assert!(head.reusable);
    assert_eq!(&buf[..], b"hello");
    assert!(head
        .response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .is_none());
}

#[test]
fn a_partial_head_waits_for_more() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
    assert!(parse_head(&mut buf, &Method::GET)
        .expect("valid so far")
        .is_none());
    assert_eq!(buf.len(), 27, "nothing consumed");
}

#[test]
fn interim_responses_are_skipped() {
    let raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let (head, buf) = parsed(raw, false);
    assert_eq!(head.response.status(), 204);
    assert!(head.response.headers().get("link").is_none());
    assert!(buf.is_empty());
    assert_eq!(head.framing, Framing::Length(0));
}

#[test]
fn a_custom_reason_phrase_is_kept() {
    let (head, _) = parsed(b"HTTP/1.1 200 Alright\r\nContent-Length: 0\r\n\r\n", false);
    let reason = head.response.extensions().get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Alright"[..]));
}

#[test]
fn bodiless_responses_have_no_body_whatever_they_declare() {
    for (raw, head_request) in [
        (&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..], true),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        ),
    ] {
        let (head, _) = parsed(raw, head_request);
        assert_eq!(head.framing, Framing::Length(0));
        assert!(head.reusable);
    }
}

#[test]
fn framing_and_reuse_follow_the_headers() {
    let cases: [(&[u8], Framing, bool); 6] = [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
            Framing::Chunked(Chunk::Size),
            true,
        ),
        // Transfer-Encoding wins over Content-Length, and such a connection is not trusted again.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Framing::Chunked(Chunk::Size),
            false,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nConnection: close\r\n\r\n",
            Framing::Length(4),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n",
            Framing::Length(4),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: Keep-Alive\r\n\r\n",
            Framing::Length(4),
            true,
        ),
    ];
    for (raw, framing, reusable) in cases {
        let (head, _) = parsed(raw, false);
        let text = String::from_utf8_lossy(raw);
        assert_eq!(head.framing, framing, "{text}");
        assert_eq!(head.reusable, reusable, "{text}");
    }
    let (head, _) = parsed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert!(head.response.headers().get(CONTENT_LENGTH).is_none());
}

#[test]
fn a_tunnel_accepted_has_no_body_and_is_never_reused() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 Connection Established\r\ncontent-length: 5\r\n\r\n"[..]);
    let head = parse_head(&mut buf, &Method::CONNECT)
        .expect("valid")
        .expect("complete");
    assert_eq!(head.framing, Framing::Length(0));
    assert!(!head.reusable);
}

#[test]
fn a_switch_of_protocols_is_returned_but_never_reused() {
    let (head, _) = parsed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        false,
    );
    assert_eq!(head.response.status(), 101);
    assert!(!head.reusable);
}

#[test]
fn broken_heads_are_invalid() {
    assert_eq!(
        invalid(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        "differing Content-Length values"
    );
    assert_eq!(
        invalid(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n"),
        "differing Content-Length values"
    );
    assert_eq!(
        invalid(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n"),
        "invalid Content-Length"
    );
    assert_eq!(
        invalid(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        "invalid Content-Length"
    );
    assert_eq!(
        invalid(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "Transfer-Encoding in an HTTP/1.0 response"
    );
    assert_eq!(invalid(b"SMTP ready\r\n\r\n"), "malformed response head");
    // Codings the proxy would take off without decoding: the client would get them still
    // applied and no longer named.
    for coding in ["gzip, chunked", "chunked, gzip", "gzip", "chunked, chunked"] {
        let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n");
        assert_eq!(
            invalid(raw.as_bytes()),
            "a transfer coding other than chunked",
            "{coding}"
        );
    }
    let split = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(invalid(split), "a transfer coding other than chunked");
    // So is the number of fields: a header map holds some 24,000 before it panics.
    let mut many = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec();
    for _ in 0..MAX_FIELDS {
        many.extend_from_slice(b"a: b\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(invalid(&many), "too many header fields");
    let mut at_most = b"HTTP/1.1 200 OK\r\n".to_vec();
    for _ in 0..MAX_FIELDS - 1 {
        at_most.extend_from_slice(b"a: b\r\n");
    }
    at_most.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let (head, _) = parsed(&at_most, false);
    assert_eq!(head.response.headers().len(), MAX_FIELDS);
    // The size of a head is limited, even when all of it came in one read.
    let mut large = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec();
    while large.len() <= MAX_HEAD {
        large.extend_from_slice(format!("x-filler: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    large.extend_from_slice(b"\r\n");
    assert_eq!(invalid(&large), "response head too large");
}

#[test]
fn a_head_with_many_fields_is_parsed_whole() {
    // More fields than fit the parser's first try (a page setting many cookies).
    let mut raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
    for i in 0..(3 * STACK_HEADERS) {
        raw.extend_from_slice(format!("Set-Cookie: c{i}=v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\nok");
    let (head, buf) = parsed(&raw, false);
    let cookies = head.response.headers().get_all("set-cookie").iter().count();
    assert_eq!(cookies, 3 * STACK_HEADERS);
    assert_eq!(head.framing, Framing::Length(2));
    assert_eq!(&buf[..], b"ok");
    // Incomplete, it still waits for the rest.
    let mut partial = BytesMut::from(&raw[..raw.len() - 6]);
    assert!(parse_head(&mut partial, &Method::GET)
        .expect("valid so far")
        .is_none());
}

#[test]
fn a_trailer_section_with_many_fields_is_decoded_whole() {
    let mut raw = b"1\r\na\r\n0\r\n".to_vec();
    for i in 0..(2 * STACK_HEADERS) {
        raw.extend_from_slice(format!("x-t{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let mut framing = Framing::Chunked(Chunk::Size);
    let mut buf = BytesMut::from(&raw[..]);
    // The trailers end the body.
    let trailers = loop {
        match decode(&mut framing, &mut buf).expect("valid body") {
            Decoded::Trailers(fields) => break fields,
            Decoded::Data(_) => {}
            Decoded::End | Decoded::More => panic!("no trailers"),
        }
    };
    assert_eq!(trailers.len(), 2 * STACK_HEADERS);
    assert!(buf.is_empty());
    let mut raw = b"0\r\n".to_vec();
    for _ in 0..=MAX_FIELDS {
        raw.extend_from_slice(b"a: b\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    let mut framing = Framing::Chunked(Chunk::Size);
    let mut buf = BytesMut::from(&raw[..]);
    let error = loop {
        match decode(&mut framing, &mut buf) {
            Err(error) => break error.0,
            Ok(Decoded::More | Decoded::End | Decoded::Trailers(_)) => panic!("accepted"),
            Ok(Decoded::Data(_)) => {}
        }
    };
    assert_eq!(error, "too many trailer fields");
}

fn encoded(headers: &HeaderMap, body: Option<SizeHint>) -> (String, bool) {
    let request = Request {
        method: &Method::POST,
        target: "/p?q=1",
        headers,
        default_host: &HeaderValue::from_static("default:80"),
    };
    let mut out = vec![b'x'; 3];
    let chunked = encode_head(&mut out, &request, body);
    (String::from_utf8_lossy(&out).into_owned(), chunked)
}

#[test]
fn a_request_head_is_written_as_given() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("up:8080"));
    headers.append("x-a", HeaderValue::from_static("1"));
    headers.append("x-a", HeaderValue::from_static("2"));
    assert_eq!(
        encoded(&headers, None),
        (
            "POST /p?q=1 HTTP/1.1\r\nhost: up:8080\r\nx-a: 1\r\nx-a: 2\r\n\r\n".into(),
            false
        )
    );
}

#[test]
fn a_request_without_host_gets_the_default_first() {
    let mut headers = HeaderMap::new();
    headers.insert("x-a", HeaderValue::from_static("1"));
    let (head, _) = encoded(&headers, None);
    assert_eq!(
        head,
        "POST /p?q=1 HTTP/1.1\r\nhost: default:80\r\nx-a: 1\r\n\r\n"
    );
}

#[test]
fn a_body_gets_exactly_one_framing_header() {
    let mut declared = HeaderMap::new();
    declared.insert("content-length", HeaderValue::from_static("5"));
    let (head, chunked) = encoded(&declared, Some(SizeHint::with_exact(5)));
    assert!(!chunked);
    assert_eq!(head.matches("content-length").count(), 1, "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");

    let mut chunked_declared = HeaderMap::new();
    chunked_declared.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let (head, chunked) = encoded(&chunked_declared, Some(SizeHint::new()));
    assert!(chunked);
    assert_eq!(head.matches("transfer-encoding").count(), 1, "{head}");
    assert!(!head.contains("content-length"), "{head}");

    let none = HeaderMap::new();
    let (head, chunked) = encoded(&none, Some(SizeHint::with_exact(7)));
    assert!(!chunked);
    assert!(head.contains("\r\ncontent-length: 7\r\n"), "{head}");
    let (head, chunked) = encoded(&none, Some(SizeHint::new()));
    assert!(chunked);
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(!head.contains("content-length"), "{head}");
}

#[test]
fn lengths_stop_exactly_at_the_declared_end() {
    let (data, trailers) = decode_bytewise(Framing::Length(5), b"hello").expect("whole");
    assert_eq!(data, b"hello");
    assert!(trailers.is_none());
    let mut framing = Framing::Length(3);
    let mut buf = BytesMut::from(&b"abcdef"[..]);
    let Ok(Decoded::Data(first)) = decode(&mut framing, &mut buf) else {
        panic!("data")
    };
    assert_eq!(&first[..], b"abc");
    assert!(matches!(decode(&mut framing, &mut buf), Ok(Decoded::End)));
    assert_eq!(
        &buf[..],
        b"def",
        "bytes past the end are left (and the connection not reused)"
    );
}

#[test]
fn chunked_bodies_decode_across_any_split_with_extensions_and_trailers() {
    let raw = b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Checksum: abc\r\n\r\n";
    let (data, trailers) = decode_bytewise(Framing::Chunked(Chunk::Size), raw).expect("whole");
    assert_eq!(data, b"hello 0123456789");
    let trailers = trailers.expect("trailers");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"abc"[..])
    );

    let (data, trailers) =
        decode_bytewise(Framing::Chunked(Chunk::Size), b"3\r\nabc\r\n0\r\n\r\n").expect("whole");
    assert_eq!(data, b"abc");
    assert!(trailers.is_none());
}

#[test]
fn broken_chunked_bodies_are_invalid() {
    for (raw, why) in [
        (&b"zz\r\n"[..], "invalid chunk size"),
        (b"3\r\nabcd\r\n", "chunk data longer than its size"),
        (b"ffffffffffffffffff\r\n", "invalid chunk size"),
        // No digits at all is not a last chunk (httparse alone would read size 0).
        (b"3\r\nabc\r\n\r\n\r\n", "invalid chunk size"),
        (b";ext\r\n\r\n", "invalid chunk size"),
    ] {
        let result = decode_bytewise(Framing::Chunked(Chunk::Size), raw);
        assert_eq!(result.err(), Some(why), "{}", String::from_utf8_lossy(raw));
    }
}
