//! The per-request cost of choosing an endpoint: `Pool::pick` (usable set, balancer, breaker
//! admission, in-flight increment) plus recording the outcome and dropping the lease (EWMA,
//! stats window, breaker record, in-flight decrement). Issue #3's target is under 100 ns for
//! pick + breaker check; `BENCHMARKS.md` keeps the figures.
//!
//! The pools are built from TOML through the public config loader, as the gateway builds them.

// A bench with a broken setup has nothing to measure: stopping loudly is the right answer.
#![allow(clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fastrand::Rng;
use sluice::config::{Config, Env};
use sluice::upstream::{Candidates, Outcome, Pool};

fn pool(endpoints: usize, balancer: &str) -> Pool {
    let upstreams = (0..endpoints)
        .map(|i| format!("\"http://127.0.0.1:{}\"", 3000 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let hash_key = if balancer == "hash" {
        "hash_key = \"header:x-user-id\"\n"
    } else {
        ""
    };
    let toml = format!(
        "[services.bench]\nupstreams = [{upstreams}]\nbalancer = \"{balancer}\"\n{hash_key}"
    );
    let config = match Config::from_sources(Some(&toml), &Env::from_pairs([])) {
        Ok(config) => config,
        Err(errors) => panic!("bench config is invalid: {errors}"),
    };
    Pool::new(&config.services["bench"])
}

fn pick_and_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for (balancer, endpoints) in [
        ("p2c_ewma", 3),
        ("p2c_ewma", 32),
        ("round_robin", 3),
        ("least_request", 3),
        ("random", 3),
        ("hash", 3),
    ] {
        let pool = pool(endpoints, balancer);
        let mut rng = Rng::with_seed(7);
        let tried = Candidates::default();
        // Every endpoint has a latency estimate (a never-measured one costs 0 and skips the
        // decay): 1 ms, 2 ms, ... stamped at the start, so each pick below decays them.
        for (i, endpoint) in pool.endpoints().iter().enumerate() {
            if let Some(mut lease) = endpoint.lease(0) {
                lease.record(Outcome::Success, 1000 * (i as u64 + 1));
            }
        }
        // A clock that moves 250 µs per request, as under 4000 req/s.
        let mut now_us = 1_000_000u64;
        let id = BenchmarkId::new(balancer, endpoints);
        group.bench_function(id.clone(), |b| {
            b.iter(|| {
                now_us += 250;
                let lease = pool.pick(black_box(now_us), Some(now_us), &tried, &mut rng);
                black_box(lease)
            })
        });
        let id = BenchmarkId::new(format!("{balancer}+record"), endpoints);
        group.bench_function(id, |b| {
            b.iter(|| {
                // Picked, answered 200 µs later; the clock only moves forward.
                now_us += 250;
                if let Ok(mut lease) = pool.pick(black_box(now_us), Some(now_us), &tried, &mut rng)
                {
                    now_us += 200;
                    lease.record(Outcome::Success, now_us);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick_and_record);
criterion_main!(benches);
