//! Request smuggling defences: ambiguous framing is refused with 400 and the connection
//! closed, and the upstream never sees such a request.

use std::time::Duration;

use crate::support::raw::exchange;
use crate::support::{TestGateway, Upstream};

const WAIT: Duration = Duration::from_secs(5);

async fn refused(request: &str) {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let (response, closed) = exchange(gw.addr, request.as_bytes(), WAIT).await;
    assert!(
        response.starts_with("HTTP/1.1 400"),
        "{request:?} → {response}"
    );
    assert!(
        closed,
        "the connection is closed after an ambiguous request: {request:?}"
    );
    assert_eq!(
        response.matches("HTTP/1.1").count(),
        1,
        "no smuggled second request was answered: {response}"
    );
    assert_eq!(
        up.count(),
        0,
        "nothing reached the upstream for {request:?}"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    // Both orders; the smuggled request behind the body must never be answered or forwarded.
    for request in [
        "POST /api/s/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET /api/s/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST /api/s/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\
         0\r\n\r\nGET /api/s/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        // An extension method (hyper takes `post` as one), an empty line first, bare LFs.
        "post /api/s/x HTTP/1.1\r\nHost: t\r\ncontent-length: 4\r\nTRANSFER-ENCODING: chunked\r\n\r\n\
         0\r\n\r\nGET /api/s/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        "\r\nPOST /api/s/x HTTP/1.1\nHost: t\nContent-Length: 4\nTransfer-Encoding: chunked\n\n\
         0\r\n\r\nGET /api/s/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        refused(request).await;
    }
}

#[tokio::test]
async fn a_conflicting_head_pipelined_behind_another_request_is_refused() {
    // The scan reads on past the first head (and past its body, of known length or chunked): the
    // connection is refused and closed before anything is forwarded.
    let conflicting = "POST /api/s/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
                       0\r\n\r\nGET /api/s/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    for first in [
        "GET /api/s/a HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST /api/s/b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        // The same length twice is one length (hyper takes it).
        "POST /api/s/b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        // A chunked body, with an extension and a trailer, is followed chunk by chunk.
        "POST /api/s/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;x=1\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
    ] {
        refused(&format!("{first}{conflicting}")).await;
    }
}

#[tokio::test]
async fn a_conflicting_head_begun_while_another_request_was_in_flight_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let first = "GET /api/s/a HTTP/1.1\r\nHost: t\r\n\r\n";
    let conflicting = "POST /api/s/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
                       0\r\n\r\nGET /api/s/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    // The conflicting head starts behind the first request and ends after its answer.
    let (start, rest) = conflicting.split_at(40);
    let mut stream = crate::support::raw::send(gw.addr, format!("{first}{start}").as_bytes()).await;
    // The first answer whole (and a moment for the gateway to finish with it), then the rest.
    let mut answered = Vec::new();
    while !String::from_utf8_lossy(&answered).ends_with("ok from upstream") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("the first request is answered")
            .unwrap();
        assert!(
            n > 0,
            "closed early: {}",
            String::from_utf8_lossy(&answered)
        );
        answered.extend_from_slice(&chunk[..n]);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let (response, closed) = crate::support::raw::read_until_close(&mut stream, WAIT).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response}");
    assert!(closed);
    assert_eq!(up.count(), 1, "only the first request reached the upstream");
}

#[tokio::test]
async fn requests_pipelined_behind_a_chunked_body_are_answered() {
    // The scan must end each body where hyper does, skipping chunk data by count: the
    // first chunk here looks like a conflicting head, and read as one it would get a 400.
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let lookalike = "POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
    let requests = format!(
        "POST /api/s/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{lookalike}\r\n5;x=1\r\nhello\r\n000\r\nX-Sum: 1\r\n\r\n\
         POST /api/s/b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         A \t\r\n0123456789\r\n0\r\n\r\n\
         GET /api/s/c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        lookalike.len()
    );
    let (response, closed) = exchange(gw.addr, requests.as_bytes(), WAIT).await;
    assert_eq!(response.matches("HTTP/1.1 200").count(), 3, "{response}");
    assert!(closed);
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn empty_lines_before_a_conflicting_head_do_not_hide_it() {
    // hyper skips them (its buffer holds 32 KiB by default); so does the scan.
    let flood = "\n".repeat(17_000);
    refused(&format!(
        "{flood}POST /api/s/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ))
    .await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_when_the_head_comes_in_pieces() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let head = "POST /api/s/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    // Cut inside the request line, inside a name, between CR and LF, and just before the end.
    for cuts in [[5, 40, 51], [20, 61, 80], [1, 2, 3]] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let mut from = 0;
        for cut in cuts.into_iter().chain([head.len()]) {
            stream.write_all(&head.as_bytes()[from..cut]).await.unwrap();
            from = cut;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("the connection is closed")
            .unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 400"), "{cuts:?}: {response}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn differing_content_lengths_are_refused() {
    refused(
        "POST /api/s/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
}

#[tokio::test]
async fn obfuscated_transfer_encoding_is_refused() {
    for te in [
        "xchunked",
        "chunked, identity",
        " chunked\u{0b}",
        "identity",
    ] {
        refused(&format!(
            "POST /api/s/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n"
        ))
        .await;
    }
}

#[tokio::test]
async fn upstream_sees_exactly_one_framing_header() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let request =
        "POST /api/s/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (response, _) = exchange(gw.addr, request.as_bytes(), WAIT).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = up.only();
    assert_eq!(seen.headers.get_all("content-length").iter().count(), 1);
    assert!(seen.headers.get("transfer-encoding").is_none());
    assert_eq!(&seen.body[..], b"hello");
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let request = "POST /api/s/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                   ffffffffffffffffff\r\nhello\r\n0\r\n\r\n";
    let (response, closed) = exchange(gw.addr, request.as_bytes(), WAIT).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("\"error\":\"bad_request\""), "{response}");
    assert!(closed);
    assert!(
        up.received().iter().all(|r| !r.body_complete),
        "no complete body reached the upstream"
    );
}
