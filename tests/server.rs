//! The server around the proxy: TLS with ALPN, ops endpoints, the admin listener, graceful
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::support::upstream::ReplyBody;
use crate::support::{client, service, Reply, TestGateway, Upstream};

#[tokio::test]
async fn tls_serves_http2_and_http1_by_alpn() {
    let up = Upstream::ok().await;
    let dir = tempdir();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let toml = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n{}",
        cert_path.display().to_string(),
        key_path.display().to_string(),
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let url = format!("https://localhost:{}/api/s/tls", gw.addr.port());
    for (alpn, version) in [
        (
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            reqwest::Version::HTTP_2,
        ),
        (vec![b"http/1.1".to_vec()], reqwest::Version::HTTP_11),
    ] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = alpn;
        let https = crate::support::client_builder()
            .resolve("localhost", gw.addr)
            .use_preconfigured_tls(tls)
            .build()
            .unwrap();
        let response = https.get(&url).send().await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok from upstream");
    }
    let seen = up.received();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn healthz_and_readyz_answer_with_json() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(&service("users", &[up.url()]), &[]).await;
    let c = client();
    let health = c.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
    let ready = c.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["services"]["users"]["endpoints"], 1);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn ops_endpoints_refuse_other_methods_in_the_error_shape() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(&service("users", &[up.url()]), &[]).await;
    let response = client().post(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    crate::support::error_body(response, "method_not_allowed").await;
}

#[tokio::test]
async fn admin_listen_moves_ops_endpoints_off_the_public_port() {
    let up = Upstream::ok().await;
    let gw = TestGateway::with_server(&up, "admin_listen = \"127.0.0.1:0\"").await;
    let admin = gw.admin_addr.expect("admin listener bound");
    let c = client();
    assert_eq!(
        c.get(format!("http://{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("http://{admin}/api/s/x"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(gw.url("/healthz")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.get(gw.url("/api/s/x")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let up = Upstream::start(|_| Reply::ok("finished").delay(Duration::from_millis(800))).await;
    let mut gw = TestGateway::with_server(&up, "shutdown_grace = \"5s\"").await;
    let url = gw.url("/api/s/slow");
    let in_flight = tokio::spawn(async move { client().get(url).send().await?.text().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let serving = gw.begin_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = tokio::net::TcpStream::connect(gw.addr).await;
    assert!(refused.is_err(), "no new connections once shutdown began");
    assert_eq!(in_flight.await.unwrap().unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_grace_bounds_how_long_streams_are_waited_for() {
    let up = Upstream::start(|_| Reply::ok("").body(ReplyBody::Stall)).await;
    let mut gw = TestGateway::with_server(&up, "shutdown_grace = \"300ms\"").await;
    let response = client().get(gw.url("/api/s/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let started = std::time::Instant::now();
    let serving = gw.begin_stop();
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    // The stalled stream really is closed once the grace period is over.
    let ended = tokio::time::timeout(Duration::from_secs(2), response.bytes()).await;
    assert!(ended.is_ok(), "the stream was still open after shutdown");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
