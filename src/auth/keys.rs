//! An issuer's verification keys: the static ones from the config, plus the set fetched
//! from its JWKS URL. Every key is pinned to the algorithms it may verify — its JWK `alg`,
//! or what its type allows (an RSA key RS*/PS*, a P-256 key ES256, an Ed25519 key EdDSA),
//! always within the issuer's `algorithms`. Symmetric (`oct`) and encryption keys in a JWKS
//! are ignored: an HMAC key published by an identity provider is the HS/RS confusion attack.
//!
//! Fetching: one background task fetches at startup and every `jwks_refresh`; a token with
//! an unknown `kid` asks for a fetch too. All fetches go through one lock and are at least
//! `jwks_min_interval` apart, so a flood of made-up `kid`s costs at most one fetch per
//! interval (the requests behind the lock then see the fresh set). A failed fetch keeps the
//! cached set; an identity provider down at startup only means its tokens get 401 until a
//! fetch succeeds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{IssuerConfig, JwksConfig};
use crate::proxy::client::{self, Client};

/// A JWKS document beyond this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Connect plus the whole response.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key and the algorithms it may verify (its own, within the issuer's).
pub struct VerifyKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

pub struct KeyStore {
    pub issuer: String,
    /// Bumped whenever a fetched set replaces the keys (shared by all issuers).
    generation: Arc<AtomicU64>,
    pub audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    static_keys: Vec<Arc<VerifyKey>>,
    jwks: Option<Jwks>,
}

struct Jwks {
    config: JwksConfig,
    client: Client<Empty<Bytes>>,
    keys: ArcSwap<Vec<Arc<VerifyKey>>>,
    /// Held while a fetch runs (single flight).
    fetched: Mutex<FetchTimes>,
    fetches: AtomicU64,
    failures: AtomicU64,
    /// Of the last set stored.
    fingerprint: AtomicU64,
}

#[derive(Default)]
struct FetchTimes {
    started: Option<Instant>,
    finished: Option<Instant>,
}

/// Who asks for a fetch.
#[derive(Clone, Copy)]
enum Asker {
    /// The refresher: always fetches.
    Schedule,
    /// A request with an unknown `kid`, arrived at this instant: it waits for a fetch in
    /// progress and then looks again, or starts one when the last is `jwks_min_interval` old.
    Request(Instant),
}

/// What `/admin/stats` shows of a key store.
pub struct KeyStoreStats {
    pub issuer: String,
    pub static_keys: usize,
    pub jwks_keys: usize,
    pub fetches: u64,
    pub failures: u64,
}

impl KeyStore {
    pub fn new(config: &IssuerConfig, generation: Arc<AtomicU64>) -> Result<KeyStore, String> {
        let mut store = KeyStore {
            generation,
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            algorithms: config.algorithms.clone(),
            static_keys: Vec::new(),
            jwks: None,
        };
        store.static_keys = config
            .keys
            .iter()
            .map(|k| Arc::new(store.verify_key(k.kid.clone(), k.key.clone(), &[k.algorithm])))
            .collect();
        if let Some(jwks) = &config.jwks {
            store.jwks = Some(Jwks {
                config: jwks.clone(),
                client: client::build(FETCH_TIMEOUT, true)?,
                keys: ArcSwap::from_pointee(Vec::new()),
                fetched: Mutex::new(FetchTimes::default()),
                fetches: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                fingerprint: AtomicU64::new(0),
            });
        }
        Ok(store)
    }

    fn verify_key(&self, kid: Option<String>, key: DecodingKey, algs: &[Algorithm]) -> VerifyKey {
        VerifyKey {
            kid,
            key,
            algorithms: algs
                .iter()
                .copied()
                .filter(|a| self.algorithms.contains(a))
                .collect(),
        }
    }

    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The keys that may verify a token with this `kid` and `alg`. An unknown `kid` asks for
    /// a JWKS fetch (at most one per `jwks_min_interval`) and looks again.
    pub async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<VerifyKey>> {
        let found = self.lookup(kid, alg);
        match (&self.jwks, kid) {
            (Some(jwks), Some(_)) if found.is_empty() => {
                self.fetch(jwks, Asker::Request(Instant::now())).await;
                self.lookup(kid, alg)
            }
            _ => found,
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<VerifyKey>> {
        let fetched = self.jwks.as_ref().map(|j| j.keys.load_full());
        self.static_keys
            .iter()
            .chain(fetched.iter().flat_map(|keys| keys.iter()))
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.algorithms.contains(&alg))
            .cloned()
            .collect()
    }

    /// Fetches the JWKS now, unless a request asks and either a fetch finished while it
    /// waited for the lock or the last one started less than `jwks_min_interval` ago (so
    /// requests queued behind a slow fetch share it rather than each starting another).
    /// Returns whether this fetch succeeded.
    async fn fetch(&self, jwks: &Jwks, asker: Asker) -> bool {
        let mut times = jwks.fetched.lock().await;
        if let Asker::Request(arrived) = asker {
            let shared = times.finished.is_some_and(|done| done >= arrived);
            let recent = times
                .started
                .is_some_and(|at| at.elapsed() < jwks.config.min_interval);
            if shared || recent {
                return false;
            }
        }
        times.started = Some(Instant::now());
        let usable = self.download_and_store(jwks).await;
        times.finished = Some(Instant::now());
        usable
    }

    async fn download_and_store(&self, jwks: &Jwks) -> bool {
        jwks.fetches.fetch_add(1, Ordering::Relaxed);
        let url = &jwks.config.url;
        match tokio::time::timeout(FETCH_TIMEOUT, self.download(jwks)).await {
            Ok(Ok((keys, fingerprint))) => {
                tracing::debug!(issuer = %self.issuer, %url, keys = keys.len(), "JWKS fetched");
                jwks.keys.store(Arc::new(keys));
                // Tokens verified with the old set are verified again, if it changed.
                if jwks.fingerprint.swap(fingerprint, Ordering::AcqRel) != fingerprint {
                    self.generation.fetch_add(1, Ordering::Release);
                }
                true
            }
            Ok(Err(e)) => {
                jwks.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, %url, error = %e, "JWKS fetch failed; keeping the cached keys");
                false
            }
            Err(_) => {
                jwks.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, %url, "JWKS fetch timed out; keeping the cached keys");
                false
            }
        }
    }

    /// The usable keys, and a fingerprint of the set as published.
    async fn download(&self, jwks: &Jwks) -> Result<(Vec<Arc<VerifyKey>>, u64), String> {
        let request = Request::get(jwks.config.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = jwks
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let keys = document
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("no \"keys\" array")?;
        // One unusable key (an unknown type, an encryption key) must not cost the others; a
        // set with none usable is a failed fetch, not a reason to forget the cached keys.
        let usable: Vec<Arc<VerifyKey>> = keys
            .iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value.clone()).ok())
            .filter_map(|jwk| self.jwk_key(&jwk))
            .map(Arc::new)
            .collect();
        if usable.is_empty() {
            return Err(format!("none of its {} keys can verify tokens", keys.len()));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest.as_ref()[..8]);
        Ok((usable, u64::from_le_bytes(fingerprint)))
    }

    fn jwk_key(&self, jwk: &Jwk) -> Option<VerifyKey> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let family: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms(),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                &[Algorithm::EdDSA]
            }
            _ => return None,
        };
        let pinned: Vec<Algorithm> = match jwk.common.key_algorithm {
            None => family.to_vec(),
            Some(declared) => {
                let alg = signing_algorithm(declared)?;
                family.contains(&alg).then(|| vec![alg])?
            }
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        let key = self.verify_key(jwk.common.key_id.clone(), key, &pinned);
        (!key.algorithms.is_empty()).then_some(key)
    }

    /// Keeps the JWKS fresh until `stop`: at once, then every `jwks_refresh`; after a failure,
    /// again after `jwks_min_interval`, doubling with each further failure up to
    /// `jwks_refresh` (a provider that is down is not hammered, nor the log flooded).
    pub fn spawn_refresher(self: &Arc<Self>, stop: CancellationToken) {
        if self.jwks.is_none() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let Some(jwks) = &store.jwks else { return };
            let mut failures = 0u32;
            loop {
                let wait = if store.fetch(jwks, Asker::Schedule).await {
                    failures = 0;
                    jwks.config.refresh
                } else {
                    let backoff = jwks.config.min_interval * 2u32.saturating_pow(failures.min(16));
                    failures += 1;
                    backoff.min(jwks.config.refresh)
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    pub fn stats(&self) -> KeyStoreStats {
        let jwks = self.jwks.as_ref();
        KeyStoreStats {
            issuer: self.issuer.clone(),
            static_keys: self.static_keys.len(),
            jwks_keys: jwks.map_or(0, |j| j.keys.load().len()),
            fetches: jwks.map_or(0, |j| j.fetches.load(Ordering::Relaxed)),
            failures: jwks.map_or(0, |j| j.failures.load(Ordering::Relaxed)),
        }
    }
}

/// A JWK's `alg`, when it is one an issuer may sign with.
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
