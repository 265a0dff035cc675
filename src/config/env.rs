//! The environment as configuration: the seeds' variable names, read into a plain map so that
//! validation never touches process-wide state (tests build an [`Env`] from a slice).
//!
//! `.env` in the working directory is read as npm's dotenv reads it ([`super::dotenv`]): a
//! variable already set in the real environment wins over the file, and the file never
//! changes the process environment.

use std::collections::HashMap;
use std::path::Path;

/// A snapshot of the variables sluice reads.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// Every variable sluice understands, so `sluice check` can say which ones it saw.
pub const KNOWN_VARS: &[&str] = &[
    "HOST",
    "PORT",
    "NODE_ENV",
    "SLUICE_ENV",
    "LOG_LEVEL",
    "UPSTREAMS",
    "AUTH_REQUIRED",
    "JWT_SECRET",
    "HTTP_PROXY_TIMEOUT_MS",
    "RATE_LIMIT_MAX",
    "RATE_LIMIT_WINDOW_MS",
    "REDIS_URL",
    "CACHE_ENABLED",
    "CACHE_DEFAULT_TTL_MS",
    "CACHE_MAX_BODY_BYTES",
    "WS_MAX_BUFFERED_BYTES",
    "WS_PING_INTERVAL_MS",
    "UNDER_PRESSURE_MAX_EVENT_LOOP_DELAY_MS",
    "UNDER_PRESSURE_MAX_RSS_BYTES",
    "SLUICE_CONFIG",
    "SLUICE_TRUSTED_PROXIES",
    "SLUICE_ADMIN_LISTEN",
];

impl Env {
    /// The process environment, with `dotenv_file` (if it exists) filling in what is unset.
    /// A `.env` that exists but cannot be parsed is an error naming the file and line.
    pub fn from_process(dotenv_file: &Path) -> Result<Env, String> {
        let mut vars: HashMap<String, String> = HashMap::new();
        if dotenv_file.exists() {
            let text = std::fs::read_to_string(dotenv_file)
                .map_err(|e| format!("{}: {e}", dotenv_file.display()))?;
            let entries = super::dotenv::parse(&text)
                .map_err(|e| format!("{}: {e}", dotenv_file.display()))?;
            vars.extend(entries);
        }
        for (key, value) in std::env::vars_os() {
            if let (Some(key), Some(value)) = (key.to_str(), value.to_str()) {
                if KNOWN_VARS.contains(&key) {
                    vars.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        vars.retain(|key, _| KNOWN_VARS.contains(&key.as_str()));
        Ok(Env { vars })
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The value of `name`, or `None` when unset. An empty value counts as unset, as the seeds'
    /// `process.env.X || default` did.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}
