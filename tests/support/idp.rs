//! A fake identity provider: a loopback server answering every GET with its current JWKS,
//! counting the fetches. Keys can be swapped (rotation) and the server killed (an outage).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{Reply, Upstream};

pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "api";

pub struct Idp {
    pub server: Upstream,
    keys: Arc<Mutex<Vec<Value>>>,
}

impl Idp {
    pub async fn start(keys: Vec<Value>) -> Idp {
        Idp::start_on("127.0.0.1:0".parse().unwrap(), keys).await
    }

    pub async fn start_on(addr: SocketAddr, keys: Vec<Value>) -> Idp {
        let keys = Arc::new(Mutex::new(keys));
        let served = keys.clone();
        let server = Upstream::start_on(addr, move |_| {
            let body = json!({ "keys": *served.lock().unwrap() }).to_string();
            Reply::ok(&body)
        })
        .await;
        Idp { server, keys }
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.server.url())
    }

    pub fn fetches(&self) -> usize {
        self.server.count()
    }
}

/// An `[[auth.issuers]]` table for the fake provider.
pub fn issuer_toml(jwks_url: &str, min_interval: &str) -> String {
    format!(
        "[[auth.issuers]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\
         jwks_url = \"{jwks_url}\"\njwks_min_interval = \"{min_interval}\"\n"
    )
}
