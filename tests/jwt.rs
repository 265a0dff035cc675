//! Tokens as identity providers issue them (RS/PS/ES/EdDSA from JWKS or static keys, HS from
//! the secret), the known forgeries (each 401, nothing at the upstream), and the JWKS cache:
//! rotation without restart, an outage survived, unknown `kid` floods bounded.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::idp::{issuer_toml, Idp, AUDIENCE, ISSUER};
use crate::support::keys::{self, claims, now, TestKey};
use crate::support::{client, closed_port, error_body, service, TestGateway, Upstream};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn config(up: &Upstream, issuers: &str) -> String {
    format!(
        "[server]\nmax_header_bytes = \"64KiB\"\n[auth]\nrequired = true\njwt_secret = \"{SECRET}\"\n\
         {issuers}{}",
        service("s", &[up.url()])
    )
}

async fn status(gw: &TestGateway, authorization: &str) -> u16 {
    client()
        .get(gw.url("/api/s/x"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn bearer(gw: &TestGateway, token: &str) -> u16 {
    status(gw, &format!("Bearer {token}")).await
}

#[tokio::test]
async fn tokens_from_jwks_and_static_keys_verify_with_every_asymmetric_algorithm() {
    let up = Upstream::ok().await;
    let (ec, ed) = (TestKey::ec("ec-1"), TestKey::ed("ed-1"));
    let idp = Idp::start(vec![
        keys::rsa(0).jwk.clone(),
        ec.jwk.clone(),
        ed.jwk.clone(),
    ])
    .await;
    // A static key pinned to PS256: the same RSA key signing RS256 is refused.
    let pinned = TestKey::rsa("pinned");
    let static_issuer = format!(
        "[[auth.issuers]]\nissuer = \"https://static.test/\"\naudiences = [\"api\"]\n\
         keys = [{{ kid = \"pinned\", algorithm = \"PS256\", pem = \"\"\"{}\"\"\" }}]\n",
        pinned.public_pem
    );
    let toml = config(&up, &(issuer_toml(&idp.jwks_url(), "10s") + &static_issuer));
    let gw = TestGateway::start(&toml, &[]).await;

    for key in [keys::rsa(0), &ec, &ed] {
        let token = key.sign(&claims(ISSUER, AUDIENCE, &format!("user-{}", key.kid)));
        assert_eq!(bearer(&gw, &token).await, 200, "{:?}", key.alg);
    }
    let static_claims =
        json!({"sub": "svc", "iss": "https://static.test/", "aud": "api", "exp": now() + 60});
    let mut ps256 = Header::new(Algorithm::PS256);
    ps256.kid = Some("pinned".into());
    assert_eq!(
        bearer(&gw, &pinned.sign_with(ps256, &static_claims)).await,
        200
    );
    assert_eq!(
        bearer(&gw, &pinned.sign(&static_claims)).await,
        401,
        "RS256 with a PS256 key"
    );
    // HS384 and HS512 with the secret.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = jsonwebtoken::encode(
            &Header::new(alg),
            &json!({"sub": "h", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(bearer(&gw, &token).await, 200, "{alg:?}");
    }
    let subjects: Vec<String> = up
        .received()
        .iter()
        .map(|r| r.headers["x-user-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        subjects,
        ["user-rsa-a", "user-ec-1", "user-ed-1", "svc", "h", "h"]
    );
}

#[tokio::test]
async fn forgeries_get_401_and_never_reach_the_upstream() {
    let up = Upstream::ok().await;
    let rsa = keys::rsa(0);
    let idp = Idp::start(vec![rsa.jwk.clone()]).await;
    let gw = TestGateway::start(&config(&up, &issuer_toml(&idp.jwks_url(), "10s")), &[]).await;
    let good = rsa.sign(&claims(ISSUER, AUDIENCE, "u"));
    assert_eq!(bearer(&gw, &good).await, 200);
    let before = up.count();

    let with = |patch: Value| {
        let mut c = claims(ISSUER, AUDIENCE, "u");
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        rsa.sign(&c)
    };
    let unsigned = |header: &str| {
        let body = keys::b64(claims(ISSUER, AUDIENCE, "admin").to_string().as_bytes());
        format!("{}.{body}.", keys::b64(header.as_bytes()))
    };
    // HS256 "signed" with the RSA public key, as if it were the shared secret.
    let confused = |secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(rsa.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims(ISSUER, AUDIENCE, "admin"),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    // One character changed mid-signature (the last one may only carry padding bits).
    let mut bad_signature = good.clone().into_bytes();
    let middle = good.rfind('.').unwrap() + 100;
    bad_signature[middle] = if bad_signature[middle] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let bad_signature = String::from_utf8(bad_signature).unwrap();
    let truncated = good.rsplit_once('.').unwrap().0.to_owned();
    let mut path_kid = Header::new(Algorithm::RS256);
    path_kid.kid = Some("../../../../etc/passwd".into());
    // Validly signed, so only the size limit can refuse it.
    let huge = with(json!({"padding": "A".repeat(16 * 1024)}));

    let forgeries: Vec<(&str, &str, String)> = vec![
        (
            "alg none",
            "malformed",
            unsigned(r#"{"alg":"none","typ":"JWT"}"#),
        ),
        (
            "alg None",
            "malformed",
            unsigned(r#"{"alg":"None","typ":"JWT","kid":"rsa-a"}"#),
        ),
        (
            "HS256 with the RSA public key (PEM)",
            "signature is invalid",
            confused(rsa.public_pem.as_bytes()),
        ),
        (
            "HS256 with the RSA modulus",
            "signature is invalid",
            confused(rsa.jwk["n"].as_str().unwrap().as_bytes()),
        ),
        ("expired", "expired", with(json!({"exp": now() - 3600}))),
        (
            "nbf in the future",
            "not valid yet",
            with(json!({"nbf": now() + 3600})),
        ),
        (
            "wrong iss",
            "issuer is not trusted",
            with(json!({"iss": "https://evil.test/"})),
        ),
        ("wrong aud", "audience", with(json!({"aud": "other-api"}))),
        ("no exp", "lacks a required claim", {
            let mut c = claims(ISSUER, AUDIENCE, "u");
            c.as_object_mut().unwrap().remove("exp");
            rsa.sign(&c)
        }),
        ("bad signature", "signature is invalid", bad_signature),
        ("truncated", "malformed", truncated),
        ("16 KiB", "too large", huge),
        (
            "kid with path characters",
            "key id is invalid",
            rsa.sign_with(path_kid, &claims(ISSUER, AUDIENCE, "u")),
        ),
        ("crit header", "critical header", {
            // Signed with the real secret: only the crit check can refuse it.
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(vec!["exp".into()]);
            jsonwebtoken::encode(
                &header,
                &json!({"sub": "u", "exp": now() + 60, "exp2": 1}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        }),
        ("garbage", "malformed", "not-a-token".to_owned()),
    ];
    for (name, expected, token) in &forgeries {
        let response = client()
            .post(gw.url("/api/s/x"))
            .bearer_auth(token)
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{name}");
        let body = error_body(response, "unauthorized").await;
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{name}: refused for {message:?}"
        );
    }
    // The right token in the wrong scheme.
    for scheme in ["Basic", "Token", "JWT", ""] {
        assert_eq!(
            status(&gw, &format!("{scheme} {good}")).await,
            401,
            "{scheme:?}"
        );
    }
    assert_eq!(status(&gw, &good).await, 401, "no scheme at all");
    assert_eq!(up.count(), before, "a forgery reached the upstream");
    // The shape checks come before any key lookup: the path-like kid and the oversized
    // token caused no JWKS fetch (the first request's fetch is the only one).
    assert_eq!(idp.fetches(), 1, "a forgery made the gateway fetch keys");
}

#[tokio::test]
async fn a_rotated_key_is_accepted_without_restart() {
    let up = Upstream::ok().await;
    let idp = Idp::start(vec![keys::rsa(0).jwk.clone()]).await;
    let gw = TestGateway::start(&config(&up, &issuer_toml(&idp.jwks_url(), "200ms")), &[]).await;
    let old = keys::rsa(0).sign(&claims(ISSUER, AUDIENCE, "old"));
    let new = keys::rsa(1).sign(&claims(ISSUER, AUDIENCE, "new"));
    assert_eq!(bearer(&gw, &old).await, 200);
    // The provider rotates: the new key is published, the old one withdrawn.
    idp.set_keys(vec![keys::rsa(1).jwk.clone()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bearer(&gw, &new).await,
        200,
        "the new kid fetched the new set"
    );
    assert_eq!(bearer(&gw, &old).await, 401, "the withdrawn key is gone");
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_jwks_server_is_down() {
    let up = Upstream::ok().await;
    let idp = Idp::start(vec![keys::rsa(0).jwk.clone()]).await;
    let gw = TestGateway::start(&config(&up, &issuer_toml(&idp.jwks_url(), "100ms")), &[]).await;
    let token = keys::rsa(0).sign(&claims(ISSUER, AUDIENCE, "u"));
    assert_eq!(bearer(&gw, &token).await, 200);
    // A set with nothing usable in it (here a symmetric key) is a failed fetch too.
    idp.set_keys(vec![json!({"kty": "oct", "kid": "rsa-a", "k": "c2VjcmV0"})]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let fetches = idp.fetches();
    let stranger = keys::rsa(1).sign(&claims(ISSUER, AUDIENCE, "x"));
    assert_eq!(bearer(&gw, &stranger).await, 401);
    assert_eq!(idp.fetches(), fetches + 1, "the unknown kid fetched");
    assert_eq!(bearer(&gw, &token).await, 200, "the cached key survived");
    idp.server.kill();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // An unknown kid makes the gateway try the dead server; the cached set survives that.
    assert_eq!(bearer(&gw, &stranger).await, 401);
    for _ in 0..3 {
        assert_eq!(bearer(&gw, &token).await, 200);
    }
}

#[tokio::test]
async fn an_identity_provider_down_at_startup_does_not_stop_the_gateway() {
    let up = Upstream::ok().await;
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/jwks");
    let gw = TestGateway::start(&config(&up, &issuer_toml(&url, "200ms")), &[]).await;
    let token = keys::rsa(0).sign(&claims(ISSUER, AUDIENCE, "u"));
    assert_eq!(bearer(&gw, &token).await, 401, "no keys yet");
    let hs = sluice::token::mint(SECRET, "u", Duration::from_secs(60), &[]).unwrap();
    assert_eq!(bearer(&gw, &hs).await, 200, "the secret still works");
    let _idp = Idp::start_on(
        format!("127.0.0.1:{port}").parse().unwrap(),
        vec![keys::rsa(0).jwk.clone()],
    )
    .await;
    // The refresher retries every min interval; a request may also trigger the fetch.
    let deadline = Instant::now() + Duration::from_secs(5);
    while bearer(&gw, &token).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the provider's keys never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_at_most_one_fetch_per_interval() {
    let up = Upstream::ok().await;
    let idp = Idp::start(vec![keys::rsa(0).jwk.clone()]).await;
    let gw = TestGateway::start(&config(&up, &issuer_toml(&idp.jwks_url(), "300ms")), &[]).await;
    let good = keys::rsa(0).sign(&claims(ISSUER, AUDIENCE, "u"));
    assert_eq!(bearer(&gw, &good).await, 200);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = idp.fetches();
    let started = Instant::now();
    let client = client();
    for batch in 0..20 {
        let requests = (0..50).map(|i| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(format!("unknown-{batch}-{i}"));
            let token = keys::rsa(0).sign_with(header, &claims(ISSUER, AUDIENCE, "u"));
            let request = client.get(gw.url("/api/s/x")).bearer_auth(token);
            async move { request.send().await.unwrap().status().as_u16() }
        });
        let statuses = futures_util::future::join_all(requests).await;
        assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = idp.fetches() - before;
    // The first unknown kid fetches at once; every later fetch waits out the interval.
    let allowed = 1 + (elapsed / 0.3).floor() as usize;
    assert!(
        (1..=allowed).contains(&fetches),
        "{fetches} fetches in {elapsed:.2}s for 1,000 unknown kids (expected 1 to {allowed})"
    );
    assert_eq!(
        up.count(),
        1,
        "only the one good request reached the upstream"
    );
}
