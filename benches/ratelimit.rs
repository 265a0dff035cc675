//! The per-request cost of a local rate-limit check: `Limiter::check` with the memory store
//! (hash the key, lock a shard, run the algorithm, store the state) for a client seen
//! before, as the proxy pays it. Issue #6's target: at most 200 ns. `BENCHMARKS.md` keeps the
//! figures (`bench/ratelimit` writes them).

// A bench with a broken setup has nothing to measure: stopping loudly is the right answer.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use sluice::config::{Config, Env};
use sluice::ratelimit::{ClientKey, Limiter, NamedPolicy};

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    for algorithm in ["sliding_window", "gcra", "fixed_window"] {
        let toml = format!(
            "[rate_limit]\nmax = 1000000000\nwindow = \"1m\"\nalgorithm = \"{algorithm}\"\n"
        );
        let config = Config::from_sources(Some(&toml), &Env::from_pairs([]))
            .unwrap_or_else(|e| panic!("bench config is invalid: {e}"));
        let limiter = Limiter::new(&config.rate_limit).unwrap();
        let policy = Arc::new(NamedPolicy::new(
            "default",
            config.rate_limit.policy.clone(),
        ));
        // 1,000 clients, as a busy gateway sees them: the shards hold more than one key.
        let clients: Vec<IpAddr> = (0..1000u32)
            .map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .collect();
        let mut next = 0;
        group.bench_function(algorithm, |b| {
            b.iter(|| {
                next = (next + 1) % clients.len();
                let decision = limiter
                    .check(black_box(&policy), ClientKey::Ip(clients[next]))
                    .now_or_never()
                    .expect("a memory check never waits");
                black_box(decision.allowed())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, check);
criterion_main!(benches);
