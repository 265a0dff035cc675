//! Routes: service routes, config routes, methods, strip/rewrite, and path safety.

use crate::support::{client, error_body, service, TestGateway, Upstream};

#[tokio::test]
async fn service_route_appends_rest_and_raw_query_to_the_base_path() {
    let up = Upstream::ok().await;
    let toml = service("users", &[format!("{}/base", up.url())]);
    let gw = TestGateway::start(&toml, &[]).await;
    let response = client()
        .get(gw.url("/api/users/a/b?x=1&y=%20z&x=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok from upstream");
    assert_eq!(up.only().uri.to_string(), "/base/a/b?x=1&y=%20z&x=2");
}

#[tokio::test]
async fn env_upstreams_define_services_like_the_seeds() {
    let up = Upstream::ok().await;
    let upstreams = format!(r#"{{"billing":["{}"]}}"#, up.url());
    let gw = TestGateway::start("", &[("UPSTREAMS", &upstreams)]).await;
    let response = client()
        .get(gw.url("/api/billing/invoices"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(up.only().uri.path(), "/invoices");
}

#[tokio::test]
async fn unknown_service_and_unknown_route_are_json_404s() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(&service("users", &[up.url()]), &[]).await;
    let response = client().get(gw.url("/api/nope/x")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    error_body(response, "unknown_service").await;
    let response = client().get(gw.url("/elsewhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    error_body(response, "route_not_found").await;
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn config_routes_forward_the_full_path_and_enforce_methods() {
    let up = Upstream::ok().await;
    let toml = format!(
        r#"{}
        [[routes]]
        path = "/users"
        service = "users"
        methods = ["GET", "POST"]
        [[routes]]
        path = "/status"
        match = "exact"
        service = "users"
    "#,
        service("users", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    assert_eq!(
        c.get(gw.url("/users/7")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.post(gw.url("/users"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = c.delete(gw.url("/users/7")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, POST");
    error_body(response, "method_not_allowed").await;
    assert_eq!(c.get(gw.url("/status")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(gw.url("/status/")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(gw.url("/status/x")).send().await.unwrap().status(),
        404
    );
    assert_eq!(c.get(gw.url("/usersx")).send().await.unwrap().status(), 404);
    let paths: Vec<String> = up
        .received()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    assert_eq!(paths, vec!["/users/7", "/users", "/status", "/status/"]);
}

#[tokio::test]
async fn strip_prefix_and_rewrite_shape_the_forwarded_path() {
    let up = Upstream::ok().await;
    let toml = format!(
        r#"{}
        [[routes]]
        path = "/legacy"
        service = "users"
        strip_prefix = true
        rewrite = {{ pattern = "^/v1/(.*)$", replace = "/v2/$1" }}
    "#,
        service("users", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let c = client();
    c.get(gw.url("/legacy/v1/items?q=1")).send().await.unwrap();
    c.get(gw.url("/legacy")).send().await.unwrap();
    let uris: Vec<String> = up.received().iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(uris, vec!["/v2/items?q=1", "/"]);
}

#[tokio::test]
async fn ambiguous_paths_are_refused_before_any_upstream_sees_them() {
    let up = Upstream::ok().await;
    let toml = format!(
        r#"{}
        [[routes]]
        path = "/public"
        service = "users"
    "#,
        service("users", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    // reqwest would normalise some of these itself, so they go out on a raw socket.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/public/%2fadmin",
        "/public/a%5cb",
        "/public/a%00b",
        "/public/a\\..\\admin",
        "/api/users/./x",
        "/public/%zz",
        "/public/..;/admin",
        "/public;x/admin",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let response = crate::support::raw::answer(gw.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        assert!(
            response.contains("\"error\":\"bad_request\""),
            "{path}: {response}"
        );
    }
    assert_eq!(up.count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn a_path_never_becomes_an_authority() {
    let up = Upstream::ok().await;
    let decoy = Upstream::ok().await;
    let gw = TestGateway::start(&service("svc", &[up.url()]), &[]).await;
    let request = format!(
        "GET /api/svc//{}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        decoy.addr
    );
    let response = crate::support::raw::answer(gw.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(decoy.count(), 0, "the decoy host was never contacted");
    assert_eq!(up.only().uri.path(), format!("/{}/x", decoy.addr));
}

#[tokio::test]
async fn encoded_unreserved_characters_match_like_their_plain_form() {
    let up = Upstream::ok().await;
    let toml = format!(
        r#"{}
        [[routes]]
        path = "/users"
        service = "users"
        methods = ["GET"]
    "#,
        service("users", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    // `%75sers` is `users`: it must meet the /users route's policy (405 here), not slip past it.
    let request = "DELETE /%75sers/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let response = crate::support::raw::answer(gw.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn one_authority_per_request_for_routing_and_forwarding() {
    let up = Upstream::ok().await;
    let toml = format!(
        r#"{}
        [[routes]]
        path = "/h"
        host = "good.example"
        service = "users"
        preserve_host = true
        [[routes]]
        path = "/fq"
        host = "fq.example."
        service = "users"
    "#,
        service("users", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    // Absolute-form: the target's authority overrides Host (RFC 9112 §3.2.2), everywhere.
    let request =
        "GET http://good.example/h/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let response = crate::support::raw::answer(gw.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = up.only();
    assert_eq!(seen.headers["host"], "good.example");
    assert_eq!(seen.headers["x-forwarded-host"], "good.example");
    // A fully qualified name (the root's dot) and any case are the same host, in requests
    // and in the config alike.
    for (path, host) in [
        ("/h/y", "GOOD.example."),
        ("/fq/y", "fq.example"),
        ("/fq/y", "fq.example."),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = crate::support::raw::answer(gw.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{host}: {response}");
    }
}

#[tokio::test]
async fn http11_requests_need_exactly_one_host() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(&service("users", &[up.url()]), &[]).await;
    for request in [
        "GET /api/users/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /api/users/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "GET /api/users/x HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        // User info is no part of a host (it would reach the upstream's Host and logs), nor
        // is a port past 65535; an absolute-form target does not excuse a missing Host.
        "GET /api/users/x HTTP/1.1\r\nHost: user:secret@a\r\nConnection: close\r\n\r\n",
        "GET /api/users/x HTTP/1.1\r\nHost: a:99999\r\nConnection: close\r\n\r\n",
        "GET /api/users/x HTTP/1.1\r\nHost: a:+80\r\nConnection: close\r\n\r\n",
        "GET http://user:secret@a/api/users/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET http://a/api/users/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let response = crate::support::raw::answer(gw.addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{request:?}: {response}"
        );
        assert!(response.contains("\"error\":\"bad_request\""), "{response}");
    }
    assert_eq!(up.count(), 0);
    // A port, an empty port and an IPv6 literal are hosts.
    for host in ["a:8080", "a:", "[::1]:8080"] {
        let request =
            format!("GET /api/users/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = crate::support::raw::answer(gw.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{host}: {response}");
    }
    // HTTP/1.0 may omit it.
    let response = crate::support::raw::answer(gw.addr, b"GET /api/users/x HTTP/1.0\r\n\r\n").await;
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
}
