//! The protected admin surface: the stats need a token or API key when auth is on, and the
//! dashboard stays usable from a real browser through the login form and its cookie.

use std::time::Duration;

use crate::support::browser::Browser;
use crate::support::{client, error_body, service, TestGateway, Upstream};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

async fn protected_gateway(up: &Upstream) -> TestGateway {
    TestGateway::start(
        &service("s", &[up.url()]),
        &[("AUTH_REQUIRED", "true"), ("JWT_SECRET", SECRET)],
    )
    .await
}

fn token() -> String {
    sluice::token::mint(SECRET, "ops", Duration::from_secs(600), &[]).unwrap()
}

#[tokio::test]
async fn admin_endpoints_need_a_token_and_the_login_sets_a_strict_cookie() {
    let up = Upstream::ok().await;
    let gw = protected_gateway(&up).await;
    let stats = client().get(gw.url("/admin/stats")).send().await.unwrap();
    assert_eq!(stats.status(), 401);
    error_body(stats, "unauthorized").await;
    let page = client().get(gw.url("/admin")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    // Relative, so it also works behind a proxy that serves the gateway under a prefix.
    assert_eq!(page.headers()["location"], "admin/login");
    let with_token = client()
        .get(gw.url("/admin/stats"))
        .bearer_auth(token())
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);

    let login = client()
        .post(gw.url("/admin/login"))
        .form(&[("token", token())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "../admin");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    // No Path: the browser scopes it to the login page's directory (`/admin`, or
    // `<prefix>/admin` behind a proxy).
    assert!(!cookie.contains("Path="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let stats = client()
        .get(gw.url("/admin/stats"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200, "the cookie authenticates the stats");

    // Refused: a bad token, and a good one posted from another site.
    let bad = client()
        .post(gw.url("/admin/login"))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.headers()["location"], "login?failed=1");
    assert!(bad.headers().get("set-cookie").is_none());
    let cross_site = client()
        .post(gw.url("/admin/login"))
        .header("origin", "https://evil.example")
        .form(&[("token", token())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.headers()["location"], "login?failed=1");
    assert!(cross_site.headers().get("set-cookie").is_none());
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_dashboard_login_works_in_a_real_browser() {
    let up = Upstream::ok().await;
    let gw = protected_gateway(&up).await;
    let mut browser = Browser::launch().await;
    // The error capture itself works (else the check at the end could never fail).
    browser.eval("console.error('probe')").await;
    browser.eval("1").await;
    assert!(
        browser.errors.iter().any(|e| e.contains("probe")),
        "{:?}",
        browser.errors
    );
    browser.errors.clear();

    browser.navigate(&gw.url("/admin")).await;
    browser
        .wait_for(
            "location.pathname === '/admin/login' && !!document.getElementById('token')",
            "the login form",
        )
        .await;
    // A wrong token first: the form says so, and no cookie is set.
    browser
        .eval("document.getElementById('token').focus()")
        .await;
    browser.type_text("not-a-token").await;
    browser
        .eval("document.querySelector('button[type=submit]').click()")
        .await;
    browser
        .wait_for("location.search === '?failed=1' && document.getElementById('error').textContent.includes('not accepted')", "the refusal")
        .await;

    browser
        .eval("document.getElementById('token').focus()")
        .await;
    browser.type_text(&token()).await;
    browser
        .eval("document.querySelector('button[type=submit]').click()")
        .await;
    browser
        .wait_for(
            "location.pathname === '/admin' && !!document.querySelector('tr[data-service=s]')",
            "the dashboard with the service",
        )
        .await;
    let row = browser
        .eval("document.querySelector('tr[data-service=s]').textContent")
        .await;
    assert!(row.as_str().unwrap().contains("1/1"), "{row}");
    // Live: the page refreshes itself (the uptime moves on).
    let meta = browser
        .eval("document.getElementById('meta').textContent")
        .await;
    browser
        .wait_for(
            &format!("document.getElementById('meta').textContent !== {meta}"),
            "a refresh",
        )
        .await;
    assert_eq!(
        browser.eval("document.cookie").await,
        "",
        "the cookie is HttpOnly"
    );

    // Signing out clears the cookie: the dashboard sends the browser back to the form.
    browser
        .eval("document.querySelector('#logout button').click()")
        .await;
    browser
        .wait_for(
            "location.pathname === '/admin/login'",
            "the login form after sign-out",
        )
        .await;
    browser.navigate(&gw.url("/admin")).await;
    browser
        .wait_for(
            "location.pathname === '/admin/login'",
            "the redirect to the form",
        )
        .await;
    assert!(
        browser.errors.is_empty(),
        "the pages reported errors: {:?}",
        browser.errors
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_api_key_logs_in_and_admin_claims_are_enforced() {
    let up = Upstream::ok().await;
    // printf %s ops-key | sha256sum
    let toml = format!(
        "[auth]\nrequired = true\njwt_secret = \"{SECRET}\"\nadmin_require_scopes = [\"ops\"]\n\
         [[auth.api_keys]]\nid = \"oncall\"\nsha256 = \"{}\"\nscopes = [\"ops\"]\n{}",
        sha256_hex("ops-key"),
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let login = client()
        .post(gw.url("/admin/login"))
        .form(&[("token", "ops-key")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.headers()["location"], "../admin");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("Max-Age=28800"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = client()
        .get(gw.url("/admin"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the API key cookie opens the dashboard");
    // A valid token without the ops scope may not read the stats.
    let stats = client()
        .get(gw.url("/admin/stats"))
        .bearer_auth(token())
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 403);
    error_body(stats, "forbidden").await;
    let scoped = sluice::token::mint(
        SECRET,
        "ops",
        Duration::from_secs(60),
        &["scope=ops".into()],
    )
    .unwrap();
    let stats = client()
        .get(gw.url("/admin/stats"))
        .bearer_auth(scoped)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
}

fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
