//! The `Runtime`: everything the request path needs, built once from a validated `Config`
//! and never mutated afterwards. The server holds it in an `ArcSwap` so a reload can replace
//! it whole (one atomic load per request, no locks); requests already running keep the
//! snapshot they started with.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::auth::Auth;
use crate::cache::ResponseCache;
use crate::config::Config;
use crate::observe::metrics::Metrics;
use crate::observe::Live;
use crate::pressure::Pressure;
use crate::ratelimit::Limiter;
use crate::router::Router;
use crate::upstream::Service;

pub struct Runtime {
    pub config: Arc<Config>,
    pub router: Router,
    pub services: BTreeMap<String, Arc<Service>>,
    pub auth: Auth,
    pub limiter: Limiter,
    pub access_log: bool,
    pub max_request_body: u64,
    pub max_header_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    /// Ops endpoints live on their own listener, not on the public one.
    pub admin_separate: bool,
    pub live: Arc<Live>,
    /// Gateway-wide request figures (routes and endpoints hold their own).
    pub metrics: Arc<Metrics>,
    pub pressure: Arc<Pressure>,
    /// The response cache, when any route caches.
    pub cache: Option<Arc<ResponseCache>>,
    /// How many configurations this process has loaded (1 until reloads exist).
    pub config_version: u64,
}

/// The handle the server shares between connections.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

impl Runtime {
    pub fn build(config: Arc<Config>) -> Result<Runtime, String> {
        let services = config
            .services
            .iter()
            .map(|(name, service)| Ok((name.clone(), Arc::new(Service::new(service)?))))
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let router = Router::new(&config, &services)?;
        let cache = router
            .policies()
            .iter()
            .any(|p| p.cache.is_some())
            .then(|| Arc::new(ResponseCache::new(&config.cache)));
        Ok(Runtime {
            router,
            services,
            auth: Auth::new(&config.auth)?,
            limiter: Limiter::new(&config.rate_limit)?,
            access_log: config.log.access_log && config.log.level.shows_info(),
            max_request_body: config.server.max_request_body,
            max_header_bytes: config.server.max_header_bytes,
            trusted_proxies: config.server.trusted_proxies.clone(),
            admin_separate: config.server.admin_listen.is_some(),
            live: Arc::new(Live::new()),
            metrics: Arc::new(Metrics::new(config.metrics.enabled)),
            pressure: Arc::new(Pressure::new(&config.pressure)),
            cache,
            config_version: 1,
            config,
        })
    }

    pub fn shared(self) -> SharedRuntime {
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// Ready when every service has at least one endpoint in service.
    pub fn is_ready(&self) -> bool {
        self.services.values().all(|s| s.is_ready())
    }
}
