use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    headers
}

#[test]
fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
    let mut headers = map(&[
        ("connection", "keep-alive, x-secret"),
        ("connection", "X-Other"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("x-other", "2"),
        ("te", "gzip"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
        ("proxy-authenticate", "Basic realm=\"proxy\""),
        ("x-kept", "yes"),
    ]);
    remove_hop_by_hop(&mut headers);
    let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["x-kept"]);
}

#[test]
fn te_trailers_survives_for_grpc() {
    let mut headers = map(&[("te", "trailers")]);
    remove_hop_by_hop(&mut headers);
    assert_eq!(headers.get("te").unwrap(), "trailers");
}

#[test]
fn connection_cannot_strip_the_request_id() {
    let mut headers = map(&[("connection", "x-request-id"), ("x-request-id", "abc")]);
    remove_hop_by_hop(&mut headers);
    assert_eq!(headers.get("x-request-id").unwrap(), "abc");
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_replaced() {
    let mut headers = map(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
    ]);
    let (peer, port) = (
        HeaderValue::from_static("127.0.0.1"),
        HeaderValue::from(8080u16),
    );
    let fwd = Forwarded {
        peer: &peer,
        peer_trusted: false,
        proto: "http",
        host: None,
        port: &port,
    };
    set_forwarded(&mut headers, &fwd);
    assert_eq!(headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(headers.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(headers.get("x-forwarded-port").unwrap(), "8080");
}

#[test]
fn forwarded_for_from_a_trusted_peer_is_appended() {
    let mut headers = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
    ]);
    let (peer, port) = (
        HeaderValue::from_static("10.0.0.5"),
        HeaderValue::from(8080u16),
    );
    let fwd = Forwarded {
        peer: &peer,
        peer_trusted: true,
        proto: "http",
        host: None,
        port: &port,
    };
    set_forwarded(&mut headers, &fwd);
    assert_eq!(headers.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.5");
    assert_eq!(headers.get("x-forwarded-proto").unwrap(), "https");
}

#[test]
fn client_ip_walks_past_trusted_hops_only() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let headers = map(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
    let peer: IpAddr = "10.0.0.5".parse().unwrap();
    assert_eq!(
        client_ip(peer, true, &headers, &trusted),
        "1.2.3.4".parse::<IpAddr>().unwrap()
    );
    assert_eq!(client_ip(peer, false, &headers, &trusted), peer);
    let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
    assert!(is_trusted(mapped, &trusted));
}

#[test]
fn forwarded_hops_with_ports_are_read_and_unreadable_ones_make_the_client_unknown() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let peer: IpAddr = "10.0.0.5".parse().unwrap();
    let client = |xff: &str| client_ip(peer, true, &map(&[("x-forwarded-for", xff)]), &trusted);
    assert_eq!(client("1.2.3.4:5678"), "1.2.3.4".parse::<IpAddr>().unwrap());
    assert_eq!(
        client("[2001:db8::1]:443"),
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
    // Never the trusted proxy's own address, which an allow list may admit.
    assert_eq!(client("unknown"), "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(
        client("1.2.3.4, garbage"),
        "0.0.0.0".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn request_ids_are_kept_only_when_valid() {
    assert!(is_valid_request_id(b"abc-123"));
    assert!(is_valid_request_id(&[b'a'; 128]));
    assert!(!is_valid_request_id(&[b'a'; 129]));
    assert!(!is_valid_request_id(b""));
    assert!(!is_valid_request_id(b"tab\there"));
    let kept = request_id(&map(&[("x-request-id", "client-id-1")]));
    assert_eq!(kept, "client-id-1");
    let fresh = request_id(&map(&[("x-request-id", &"z".repeat(200))]));
    assert_eq!(fresh.len(), 36);
}

#[test]
fn traceparent_validation_follows_the_spec() {
    assert!(is_valid_traceparent(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ));
    assert!(!is_valid_traceparent(
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    ));
    assert!(!is_valid_traceparent(
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ));
    assert!(!is_valid_traceparent(b"00-xyz-00f067aa0ba902b7-01"));
    let fresh = new_traceparent();
    assert!(is_valid_traceparent(fresh.as_bytes()));
    let other = new_traceparent();
    assert_ne!(fresh.as_bytes()[36..52], other.as_bytes()[36..52]);
}

#[test]
fn a_content_length_is_digits_only() {
    assert_eq!(content_length_value(b"42"), Some(42));
    assert_eq!(content_length_value(b" 7 "), Some(7));
    for bad in [
        &b""[..],
        b" ",
        b"+4",
        b"-4",
        b"4 4",
        b"0x10",
        b"99999999999999999999",
    ] {
        assert_eq!(
            content_length_value(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn split_cookies_are_joined_and_a_single_one_left_alone() {
    let mut headers = map(&[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2")]);
    join_cookies(&mut headers);
    let cookies: Vec<_> = headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
    let mut headers = map(&[("cookie", "a=1; b=2")]);
    join_cookies(&mut headers);
    assert_eq!(
        headers.get_all("cookie").iter().collect::<Vec<_>>(),
        ["a=1; b=2"]
    );
}
