//! Active health checks: for a service with `health_check`, one task GETs the check path on
//! every endpoint each `interval` (all endpoints concurrently, each bounded by `timeout`).
//! A 2xx or 3xx passes; anything else, a timeout or a connection error fails. After
//! `unhealthy_after` failures in a row an endpoint gets no traffic; after `healthy_after`
//! passes in a row it is back. Endpoints start healthy, so a gateway starting next to a
//! healthy fleet serves at once; `/readyz` follows the checks.
//!
//! Health is separate from the breaker: the breaker judges real traffic, the checks judge an
//! endpoint that may be getting none. Either one can keep traffic away.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use tokio_util::sync::CancellationToken;

use super::{Endpoint, Service};
use crate::config::HealthCheckConfig;
use crate::proxy::client::{self, Client};

/// A health check response body beyond this is not read (the status has already decided).
const MAX_CHECK_BODY: usize = 64 * 1024;

/// Starts the service's health checks, until `shutdown` is cancelled. Does nothing for a
/// service without `health_check`.
pub fn spawn(service: Arc<Service>, shutdown: CancellationToken) {
    let Some(config) = service.health_check.clone() else {
        return;
    };
    let client = match client::build::<Empty<Bytes>>(service.connect_timeout, true) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(service = &*service.name, error = %e, "health checks cannot start");
            return;
        }
    };
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let checks = service
                .pool
                .endpoints()
                .iter()
                .map(|endpoint| check(&service, endpoint, &client, &config));
            futures_util::future::join_all(checks).await;
        }
    });
}

async fn check(
    service: &Service,
    endpoint: &Endpoint,
    client: &Client<Empty<Bytes>>,
    config: &HealthCheckConfig,
) {
    let passed = match probe(endpoint, client, config).await {
        Ok(()) => true,
        Err(why) => {
            tracing::debug!(
                service = &*service.name,
                upstream = &*endpoint.label,
                why,
                "health check failed"
            );
            false
        }
    };
    match endpoint.observe_health(passed, config.healthy_after, config.unhealthy_after) {
        Some(true) => tracing::info!(
            service = &*service.name,
            upstream = &*endpoint.label,
            "upstream is healthy again"
        ),
        Some(false) => tracing::warn!(
            service = &*service.name,
            upstream = &*endpoint.label,
            checks_failed = config.unhealthy_after,
            "upstream is unhealthy: no traffic until its checks pass"
        ),
        None => {}
    }
}

async fn probe(
    endpoint: &Endpoint,
    client: &Client<Empty<Bytes>>,
    config: &HealthCheckConfig,
) -> Result<(), String> {
    let uri = endpoint
        .url
        .target(&config.path, None)
        .ok_or_else(|| format!("cannot form a URI from the path {:?}", config.path))?;
    let request = Request::get(uri)
        .header(http::header::USER_AGENT, "sluice-health-check")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let checked = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the (small) body so the connection can be reused for the next check.
        let _ = Limited::new(response.into_body(), MAX_CHECK_BODY)
            .collect()
            .await;
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    tokio::time::timeout(config.timeout, checked)
        .await
        .map_err(|_| format!("no answer within {:?}", config.timeout))?
}
