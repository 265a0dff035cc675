//! The per-request cost of authentication, as the proxy pays it: `Auth::authenticate` on a
//! route that requires a token, from the `Authorization` header to the verified identity.
//! Issue #5's targets: HS256 at most 5 µs, RS256 (2048-bit) at most 40 µs per request;
//! `BENCHMARKS.md` keeps the figures (`bench/auth` writes them).
//!
//! Keys are made fresh (rcgen); the config goes through the public loader, as the gateway's.

// A bench with a broken setup has nothing to measure: stopping loudly is the right answer.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_RSA_SHA256};
use serde_json::json;
use sluice::auth::{Auth, TokenSources};
use sluice::config::{Config, Env, RouteAccess};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const ISSUER: &str = "https://idp.bench/";

fn verify(c: &mut Criterion) {
    let rsa = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
    // The cache off: this measures verification itself; "cached" below measures a repeat.
    let toml = format!(
        "[auth]\nrequired = true\ncache_verified_tokens = false\njwt_secret = \"{SECRET}\"\n\
         [[auth.issuers]]\nissuer = \"{ISSUER}\"\n\
         audiences = [\"api\"]\nkeys = [{{ kid = \"k1\", algorithm = \"RS256\", pem = \"\"\"{}\"\"\" }}]\n",
        rsa.public_key_pem()
    );
    let config = Config::from_sources(Some(&toml), &Env::from_pairs([]))
        .unwrap_or_else(|e| panic!("bench config is invalid: {e}"));
    let auth = Auth::new(&config.auth).unwrap();
    let access = RouteAccess::default();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;

    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "user-42", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut rs_header = Header::new(Algorithm::RS256);
    rs_header.kid = Some("k1".into());
    let rs256 = jsonwebtoken::encode(
        &rs_header,
        &json!({"sub": "user-42", "iss": ISSUER, "aud": "api", "exp": exp}),
        &EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();

    let mut group = c.benchmark_group("authenticate");
    for (name, token) in [("HS256", &hs256), ("RS256", &rs256)] {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(http::header::AUTHORIZATION, value);
        // With the key at hand nothing awaits: one poll finishes the future.
        let identity = auth
            .authenticate(&access, &headers, TokenSources::default())
            .now_or_never()
            .expect("verification did not finish in one poll");
        assert!(matches!(identity, Ok(Some(_))), "{name} token refused");
        group.bench_function(name, |b| {
            b.iter(|| {
                let result = auth
                    .authenticate(
                        black_box(&access),
                        black_box(&headers),
                        TokenSources::default(),
                    )
                    .now_or_never();
                black_box(result)
            })
        });
    }
    let mut cached_config = config.auth.clone();
    cached_config.cache_verified_tokens = true;
    let cached = Auth::new(&cached_config).unwrap();
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {hs256}")).unwrap();
    headers.insert(http::header::AUTHORIZATION, value);
    group.bench_function("cached", |b| {
        b.iter(|| {
            let result = cached
                .authenticate(
                    black_box(&access),
                    black_box(&headers),
                    TokenSources::default(),
                )
                .now_or_never();
            black_box(result)
        })
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
