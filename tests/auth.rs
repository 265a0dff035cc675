//! Bearer-token auth as the seeds did it (HS256 with JWT_SECRET): rejected requests never
//! reach an upstream; verified identities are forwarded; client copies are stripped.

use std::time::Duration;

use crate::support::{client, error_body, service, TestGateway, Upstream};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

async fn gateway(up: &Upstream) -> TestGateway {
    TestGateway::start(
        &service("s", &[up.url()]),
        &[("AUTH_REQUIRED", "yes"), ("JWT_SECRET", SECRET)],
    )
    .await
}

#[tokio::test]
async fn missing_or_bad_tokens_get_401_and_never_reach_the_upstream() {
    let up = Upstream::ok().await;
    let gw = gateway(&up).await;
    let wrong_secret =
        sluice::token::mint(&"w".repeat(40), "u1", Duration::from_secs(60), &[]).unwrap();
    // alg "none": header {"alg":"none","typ":"JWT"}, claims {"sub":"admin","exp":9999999999}
    let alg_none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0.";
    for auth in [
        None,
        Some("Bearer".to_owned()),
        Some(format!("Bearer {wrong_secret}")),
        Some(format!("Bearer {alg_none}")),
    ] {
        let mut request = client().post(gw.url("/api/s/x")).body("payload");
        if let Some(auth) = &auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        error_body(response, "unauthorized").await;
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    let up = Upstream::ok().await;
    let gw = gateway(&up).await;
    let expired =
        sluice::token::mint(SECRET, "u1", Duration::ZERO, &["exp=1000".to_owned()]).unwrap();
    let response = client()
        .get(gw.url("/api/s/x"))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_valid_token_forwards_the_identity_and_replaces_client_copies() {
    let up = Upstream::ok().await;
    let gw = gateway(&up).await;
    let token = sluice::token::mint(SECRET, "user-42", Duration::from_secs(60), &[]).unwrap();
    let response = client()
        .get(gw.url("/api/s/me"))
        .bearer_auth(&token)
        .header("x-user-id", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = up.only();
    assert_eq!(seen.headers["x-user-id"], "user-42");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {token}").as_str()
    );
}

#[tokio::test]
async fn ops_endpoints_stay_open_when_auth_is_required() {
    let up = Upstream::ok().await;
    let gw = gateway(&up).await;
    assert_eq!(
        client()
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn not_yet_valid_tokens_are_rejected_and_the_scheme_is_case_insensitive() {
    let up = Upstream::ok().await;
    let gw = gateway(&up).await;
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let early = sluice::token::mint(
        SECRET,
        "u1",
        Duration::from_secs(7200),
        &[format!("nbf={in_an_hour}")],
    )
    .unwrap();
    let response = client()
        .get(gw.url("/api/s/x"))
        .bearer_auth(early)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(up.count(), 0);
    let token = sluice::token::mint(SECRET, "u1", Duration::from_secs(60), &[]).unwrap();
    let response = client()
        .get(gw.url("/api/s/x"))
        .header("authorization", format!("BEARER {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_token_verified_once_still_expires_on_time() {
    let up = Upstream::ok().await;
    let toml = format!("[auth]\nleeway = \"0s\"\n{}", service("s", &[up.url()]));
    let gw = TestGateway::start(&toml, &[("AUTH_REQUIRED", "yes"), ("JWT_SECRET", SECRET)]).await;
    let token = sluice::token::mint(SECRET, "brief", Duration::from_secs(2), &[]).unwrap();
    let status = || async {
        client()
            .get(gw.url("/api/s/x"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // The second is answered from the verified-token cache.
    assert_eq!([status().await, status().await], [200, 200]);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(status().await, 401, "the cache must not outlive exp");
    assert_eq!(up.count(), 2);
}
