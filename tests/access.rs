//! Per-route access: auth modes, required claims and scopes (403), API keys, token sources,
//! identity headers stripped on every route, CORS answered by the gateway, IP lists.

use std::time::Duration;

use crate::support::{client, error_body, service, TestGateway, Upstream};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
/// `printf %s key-for-batch-jobs | sha256sum`
const BATCH_KEY: &str = "key-for-batch-jobs";
const BATCH_KEY_SHA256: &str = "711792dc7a0796d5bf64a17717d969db3cf4a50997e09030f0c54393a74fb7cd";

fn token(sub: &str, extra: &[&str]) -> String {
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    sluice::token::mint(SECRET, sub, Duration::from_secs(60), &extra).unwrap()
}

async fn gateway(up: &Upstream, routes: &str) -> TestGateway {
    let toml = format!(
        "[auth]\nrequired = false\njwt_secret = \"{SECRET}\"\n\
         [[auth.api_keys]]\nid = \"batch\"\nsha256 = \"{BATCH_KEY_SHA256}\"\nscopes = [\"reports:read\"]\n\
         {}{routes}",
        service("s", &[up.url()])
    );
    TestGateway::start(&toml, &[]).await
}

#[test]
fn the_api_key_fixture_hash_is_its_sha256() {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, BATCH_KEY.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, BATCH_KEY_SHA256);
}

#[tokio::test]
async fn routes_choose_required_optional_or_no_auth() {
    let up = Upstream::ok().await;
    let routes = r#"
[[routes]]
path = "/private"
service = "s"
auth = true
[[routes]]
path = "/maybe"
service = "s"
auth = "optional"
[[routes]]
path = "/public"
service = "s"
auth = false
"#;
    let gw = gateway(&up, routes).await;
    let get = |path: &str, auth: Option<String>| {
        let mut request = client().get(gw.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.unwrap() }
    };
    let good = || Some(format!("Bearer {}", token("u7", &[])));
    let bad = || Some("Bearer not.a.token".to_owned());

    let refused = get("/private/x", None).await;
    assert_eq!(refused.status(), 401);
    error_body(refused, "unauthorized").await;
    assert_eq!(get("/private/x", bad()).await.status(), 401);
    assert_eq!(get("/private/x", good()).await.status(), 200);
    assert_eq!(get("/maybe/x", None).await.status(), 200);
    assert_eq!(
        get("/maybe/x", bad()).await.status(),
        401,
        "optional still refuses a bad one"
    );
    assert_eq!(get("/maybe/x", good()).await.status(), 200);
    assert_eq!(get("/public/x", bad()).await.status(), 200, "not looked at");
    // /api/s/private/x would reach /private/x unguarded: the service routes are closed.
    let closed = get("/api/s/private/x", None).await;
    assert_eq!(closed.status(), 404);
    error_body(closed, "route_not_found").await;

    let users: Vec<Option<String>> = up
        .received()
        .iter()
        .map(|r| {
            r.headers
                .get("x-user-id")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    let u7 = Some("u7".to_owned());
    assert_eq!(users, [u7.clone(), None, u7, None]);
}

#[tokio::test]
async fn required_claims_and_scopes_answer_403() {
    let up = Upstream::ok().await;
    let routes = r#"
[[routes]]
path = "/admin-api"
service = "s"
auth = true
require_claims = { role = "admin" }
[[routes]]
path = "/reports"
service = "s"
auth = true
require_scopes = ["reports:read"]
"#;
    let gw = gateway(&up, routes).await;
    let call = |path: &str, token: String| {
        let request = client().get(gw.url(path)).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let user = call("/admin-api", token("u", &["role=user"])).await;
    assert_eq!(user.status(), 403);
    error_body(user, "forbidden").await;
    assert_eq!(
        call("/admin-api", token("u", &["role=admin"]))
            .await
            .status(),
        200
    );
    assert_eq!(call("/reports", token("u", &[])).await.status(), 403);
    assert_eq!(
        call(
            "/reports",
            token("u", &["scope=reports:write reports:read"])
        )
        .await
        .status(),
        200
    );
    // An API key's scopes count too.
    let response = client()
        .get(gw.url("/reports"))
        .header("x-api-key", BATCH_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn api_keys_identify_by_id_and_never_reach_the_upstream() {
    let up = Upstream::ok().await;
    let gw = gateway(
        &up,
        "[[routes]]\npath = \"/jobs\"\nservice = \"s\"\nauth = true\n",
    )
    .await;
    let response = client()
        .get(gw.url("/jobs/run"))
        .header("x-api-key", BATCH_KEY)
        .header("x-user-id", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = up.only();
    assert_eq!(seen.headers["x-user-id"], "batch");
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "the key was forwarded"
    );
    for wrong in ["key-for-batch-job", "", "KEY-FOR-BATCH-JOBS"] {
        let response = client()
            .get(gw.url("/jobs/run"))
            .header("x-api-key", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{wrong:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_client_sent_identity_never_reaches_an_upstream_on_any_route() {
    let up = Upstream::ok().await;
    let routes = "[[routes]]\npath = \"/open\"\nservice = \"s\"\nauth = false\n\
                  [[routes]]\npath = \"/maybe\"\nservice = \"s\"\nauth = \"optional\"\n";
    let gw = gateway(&up, routes).await;
    for path in ["/open/x", "/maybe/x", "/api/s/x", "/sse/s/x"] {
        let response = client()
            .get(gw.url(path))
            .header("x-user-id", "admin")
            .header("X-User-Id", "root")
            .header("x_user_id", "wsgi-admin")
            .header("x-api_key", "k")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(up.count(), 4);
    for seen in up.received() {
        for name in ["x-user-id", "x_user_id", "x-api_key"] {
            assert!(
                seen.headers.get(name).is_none(),
                "{name} reached the upstream"
            );
        }
    }
}

#[tokio::test]
async fn token_sources_are_per_route_and_query_tokens_stay_at_the_gateway() {
    let up = Upstream::ok().await;
    let routes = r#"
[[routes]]
path = "/events"
service = "s"
auth = true
token_query = true
[[routes]]
path = "/app"
service = "s"
auth = true
token_cookie = "session"
strip_authorization = true
[[routes]]
path = "/strict"
service = "s"
auth = true
"#;
    let gw = gateway(&up, routes).await;
    let t = token("q", &[]);
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    let c = client();
    assert_eq!(
        status(c.get(gw.url(&format!("/events/x?a=1&access_token={t}&b=2")))).await,
        200
    );
    assert_eq!(
        status(c.get(gw.url(&format!("/strict/x?access_token={t}")))).await,
        401
    );
    assert_eq!(
        status(
            c.get(gw.url("/app/x"))
                .header("cookie", format!("theme=dark; session={t}"))
        )
        .await,
        200
    );
    assert_eq!(
        status(
            c.get(gw.url("/strict/x"))
                .header("cookie", format!("session={t}"))
        )
        .await,
        401
    );
    assert_eq!(status(c.get(gw.url("/app/x")).bearer_auth(&t)).await, 200);
    let seen = up.received();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].uri, "/events/x?a=1&b=2",
        "the query token went upstream"
    );
    assert!(
        seen[2].headers.get("authorization").is_none(),
        "strip_authorization"
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_gateway() {
    let up = Upstream::start(|_| {
        crate::support::Reply::ok("hi").header("access-control-allow-origin", "*")
    })
    .await;
    let routes = r#"
[[routes]]
path = "/web"
service = "s"
auth = true
cors = { allow_origins = ["https://app.example.com", "https://*.example.org"], allow_credentials = true, allow_headers = ["authorization", "content-type", "x-trace"], expose_headers = ["x-request-id"], max_age = "1h" }
"#;
    let gw = gateway(&up, routes).await;
    let preflight = |origin: &str, method: &str, headers: &str| {
        client()
            .request(reqwest::Method::OPTIONS, gw.url("/web/items"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let ok = preflight("https://app.example.com", "PUT", "Authorization, X-Trace")
        .await
        .unwrap();
    assert_eq!(ok.status(), 204, "no credential needed for a preflight");
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "3600");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("PUT"));
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    let sub = preflight("https://a.b.example.org", "GET", "")
        .await
        .unwrap();
    assert_eq!(sub.status(), 204);
    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", ""),
        ("https://example.org", "GET", ""),
        ("https://app.example.com", "TRACE", ""),
        ("https://app.example.com", "GET", "x-secret"),
    ] {
        let refused = preflight(origin, method, headers).await.unwrap();
        assert_eq!(refused.status(), 403, "{origin} {method} {headers}");
        assert!(refused
            .headers()
            .get("access-control-allow-origin")
            .is_none());
    }
    assert_eq!(up.count(), 0, "preflights never reach the upstream");

    // Actual requests: our headers replace the upstream's, errors carry them too.
    let t = token("u", &[]);
    let allowed = client()
        .get(gw.url("/web/items"))
        .header("origin", "https://app.example.com")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        allowed.headers()["access-control-expose-headers"],
        "x-request-id"
    );
    let unauthorized = client()
        .get(gw.url("/web/items"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(
        unauthorized.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let stranger = client()
        .get(gw.url("/web/items"))
        .header("origin", "https://evil.example.com")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 200);
    assert!(
        stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "upstream's * removed"
    );
    assert!(stranger.headers()["vary"]
        .to_str()
        .unwrap()
        .contains("Origin"));
}

#[tokio::test]
async fn ip_lists_use_the_client_address_through_trusted_proxies() {
    let up = Upstream::ok().await;
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{}\
         [[routes]]\npath = \"/internal\"\nservice = \"s\"\nallow_ips = [\"10.0.0.0/8\"]\ndeny_ips = [\"10.6.6.6\"]\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let from = |xff: Option<&str>| {
        let mut request = client().post(gw.url("/internal/x")).body("data");
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        async move { request.send().await.unwrap() }
    };
    assert_eq!(from(Some("10.1.2.3")).await.status(), 200);
    let denied = from(Some("10.6.6.6")).await;
    assert_eq!(denied.status(), 403);
    error_body(denied, "forbidden").await;
    assert_eq!(from(Some("192.168.1.1")).await.status(), 403);
    assert_eq!(
        from(None).await.status(),
        403,
        "the proxy itself is not in the list"
    );
    // A spoofed hop before the trusted one does not help: the nearest untrusted address counts.
    assert_eq!(from(Some("10.1.2.3, 192.168.1.1")).await.status(), 403);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn service_routes_close_when_config_routes_guard_the_service_unless_opened() {
    let up = Upstream::ok().await;
    let other = Upstream::ok().await;
    let toml = format!(
        "[auth]\njwt_secret = \"{SECRET}\"\n{}{}\
         [[routes]]\npath = \"/internal\"\nservice = \"s\"\nallow_ips = [\"10.0.0.0/8\"]\n\
         [[routes]]\npath = \"/reports\"\nservice = \"t\"\nauth = true\n",
        service("s", &[up.url()]),
        service("t", &[other.url()]),
    );
    let gw = TestGateway::start(&toml, &[]).await;
    for path in [
        "/api/s/internal/x",
        "/sse/s/internal",
        "/api/t/reports",
        "/internal/x",
    ] {
        let response = client().get(gw.url(path)).send().await.unwrap();
        assert!(
            [403, 404].contains(&response.status().as_u16()),
            "{path}: {}",
            response.status()
        );
    }
    assert_eq!(up.count() + other.count(), 0, "a guarded path was reached");
    // An operator who wants them back says so, per service.
    let opened = toml.replace("[services.t]\n", "[services.t]\nservice_routes = true\n");
    assert_ne!(opened, toml);
    let gw = TestGateway::start(&opened, &[]).await;
    let response = client().get(gw.url("/api/t/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn x_user_id_is_removed_even_when_the_claims_map_elsewhere() {
    let up = Upstream::ok().await;
    let toml = format!(
        "[auth]\nrequired = true\njwt_secret = \"{SECRET}\"\nclaims_to_headers = {{ email = \"x-user-email\" }}\n{}",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let response = client()
        .get(gw.url("/api/s/x"))
        .bearer_auth(token("u1", &["email=u1@example.com"]))
        .header("x-user-id", "admin")
        .header("x-user-email", "admin@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = up.only();
    assert!(seen.headers.get("x-user-id").is_none());
    assert_eq!(seen.headers["x-user-email"], "u1@example.com");
}

#[tokio::test]
async fn cookie_tokens_count_only_for_same_origin_reads_and_stay_at_the_gateway() {
    let up = Upstream::ok().await;
    let routes =
        "[[routes]]\npath = \"/app\"\nservice = \"s\"\nauth = true\ntoken_cookie = \"session\"\n";
    let gw = gateway(&up, routes).await;
    let cookie = format!("theme=dark; session={}; sluice_admin=x", token("c", &[]));
    let own_origin = format!("http://{}", gw.addr);
    let send = |method: reqwest::Method, origin: Option<&str>| {
        let mut request = client()
            .request(method, gw.url("/app/x"))
            .header("cookie", &cookie);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(reqwest::Method::GET, None).await, 200);
    assert_eq!(send(reqwest::Method::GET, Some(&own_origin)).await, 200);
    assert_eq!(
        send(reqwest::Method::GET, Some("https://evil.example")).await,
        401,
        "cross-site read"
    );
    assert_eq!(
        send(reqwest::Method::POST, None).await,
        401,
        "a cookie never authorises a write"
    );
    assert_eq!(send(reqwest::Method::POST, Some(&own_origin)).await, 401);
    let seen = up.received();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(
            request.headers["cookie"], "theme=dark",
            "credential cookies went upstream"
        );
    }
}

#[tokio::test]
async fn ambiguous_or_unforwardable_credentials_are_refused() {
    let up = Upstream::ok().await;
    let gw = gateway(
        &up,
        "[[routes]]\npath = \"/p\"\nservice = \"s\"\nauth = true\n",
    )
    .await;
    // Two Authorization headers: which one the upstream would read is not its call.
    let mut headers = reqwest::header::HeaderMap::new();
    for t in [token("alice", &[]), token("admin", &[])] {
        headers.append("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let twice = client()
        .get(gw.url("/p/x"))
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 401);
    error_body(twice, "unauthorized").await;
    // A subject that cannot be a header value would go upstream as nobody.
    let newline = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "a\nb", "exp": 9_999_999_999u64}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let response = client()
        .get(gw.url("/p/x"))
        .bearer_auth(newline)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let empty = client()
        .get(gw.url("/p/x"))
        .header("x-api-key", "")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 401);
    assert_eq!(up.count(), 0);
}
