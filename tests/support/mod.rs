//! Test support: fake upstreams on loopback that record what reached them, the gateway
//! started in-process on port 0, and a raw-socket client for inputs no polite client sends.

pub mod browser;
pub mod idp;
pub mod keys;
pub mod process;
pub mod raw;
pub mod redis;
pub mod upstream;

use std::net::SocketAddr;

use sluice::config::{Config, Env};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use upstream::{Reply, Upstream};

/// A running gateway; stopped (gracefully) when dropped or by [`TestGateway::begin_stop`].
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Starts sluice with `toml` and `env`, listening on a free loopback port.
    pub async fn start(toml: &str, env: &[(&str, &str)]) -> TestGateway {
        let mut config = Config::from_sources(Some(toml), &Env::from_pairs(env.iter().copied()))
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        Self::start_config(config).await
    }

    pub async fn start_config(config: Config) -> TestGateway {
        let gateway = sluice::Gateway::bind(config).await.expect("bind gateway");
        let addr = gateway.local_addr();
        let admin_addr = gateway.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(async move {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// sluice in front of `up` as service `s` (so `/api/s/...` reaches it).
    pub async fn in_front_of(up: &Upstream) -> TestGateway {
        TestGateway::start(&service("s", &[up.url()]), &[]).await
    }

    /// Like [`TestGateway::in_front_of`], with `server` as the body of a `[server]` section.
    pub async fn with_server(up: &Upstream, server: &str) -> TestGateway {
        TestGateway::start(
            &format!("[server]\n{server}\n{}", service("s", &[up.url()])),
            &[],
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and returns the serving task, which ends once draining is done.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("gateway already stopped")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TOML snippet declaring `name` with the given upstream base URLs.
pub fn service(name: &str, urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!("[services.{name}]\nupstreams = [{}]\n", list.join(", "))
}

/// A reqwest builder that ignores proxy env vars. reqwest is built without a default TLS
/// provider (sluice uses aws-lc-rs only), so the test process installs aws-lc-rs once here.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

/// A plain HTTP/1.1 client that never follows redirects and ignores proxy env vars.
pub fn client() -> reqwest::Client {
    client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .build()
        .unwrap()
}

/// The JSON body of a gateway error, checked for the documented shape.
pub async fn error_body(response: reqwest::Response, code: &str) -> serde_json::Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "gateway errors are JSON"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// `GET /admin/stats` as JSON.
pub async fn admin_stats(gw: &TestGateway) -> serde_json::Value {
    client()
        .get(gw.url("/admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
