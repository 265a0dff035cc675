//! The pool under simulated time and a seeded RNG: what the balancer and breakers do to
//! traffic over many requests, with no sleeping and no sockets.

use std::time::Duration;

use fastrand::Rng;
use proptest::prelude::*;

use super::*;
use crate::config::{BalancerKind, BreakerConfig, ServiceConfig, UpstreamUrl};
use crate::upstream::Outcome;

pub(crate) fn service_config(weights: &[u32], balancer: BalancerKind) -> ServiceConfig {
    ServiceConfig {
        name: "sim".to_owned(),
        upstreams: weights
            .iter()
            .enumerate()
            .map(|(i, weight)| UpstreamUrl {
                scheme: http::uri::Scheme::HTTP,
                authority: format!("127.0.0.1:{}", 3000 + i)
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                base_path: String::new(),
                weight: *weight,
            })
            .collect(),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        preserve_host: false,
        balancer,
        breaker: BreakerConfig {
            consecutive_failures: 3,
            open_for: Duration::from_secs(5),
            ..BreakerConfig::default()
        },
        health_check: None,
        max_retries: 2,
        max_in_flight_per_endpoint: None,
        service_routes: None,
    }
}

/// Sends requests one after another for `duration_ms` of simulated time (the pool's own
/// clock is in microseconds); endpoint `i` takes
/// `latency_ms(i)` to answer. Returns the count each endpoint got and the time reached.
fn sequential(
    pool: &Pool,
    rng: &mut Rng,
    start_ms: u64,
    duration_ms: u64,
    latency_ms: impl Fn(usize) -> u64,
) -> (Vec<u32>, u64) {
    let mut counts = vec![0; pool.endpoints().len()];
    let mut now = start_ms;
    while now < start_ms + duration_ms {
        let mut lease = pool
            .pick(now * 1000, None, &Candidates::default(), rng)
            .unwrap_or_else(|e| panic!("no endpoint at {now}: {e:?}"));
        let i = pool.index_of(lease.endpoint()).unwrap_or(usize::MAX);
        counts[i] += 1;
        now += latency_ms(i);
        lease.record(Outcome::Success, now * 1000);
    }
    (counts, now)
}

fn share(counts: &[u32], i: usize) -> f64 {
    f64::from(counts[i]) / f64::from(counts.iter().sum::<u32>())
}

#[test]
fn equal_endpoints_share_traffic_evenly() {
    let pool = Pool::new(&service_config(&[1, 1, 1], BalancerKind::P2cEwma));
    let mut rng = Rng::with_seed(7);
    let (counts, _) = sequential(&pool, &mut rng, 0, 120_000, |_| 10);
    for i in 0..3 {
        let s = share(&counts, i);
        assert!(
            (s - 1.0 / 3.0).abs() <= 0.1 / 3.0,
            "endpoint {i} got {s:.3}: {counts:?}"
        );
    }
}

#[test]
fn a_slow_endpoint_gets_little_and_regains_its_share_after_recovering() {
    let pool = Pool::new(&service_config(&[1, 1, 1], BalancerKind::P2cEwma));
    let mut rng = Rng::with_seed(42);
    // Endpoint 2 is 80 ms slower than the others.
    let (counts, now) = sequential(&pool, &mut rng, 0, 60_000, |i| if i == 2 { 90 } else { 10 });
    let slow = share(&counts, 2);
    assert!(
        slow <= 0.20,
        "the slow endpoint got {slow:.3} of sequential traffic: {counts:?}"
    );
    // It recovers: within 30 simulated seconds it is back to a fair share.
    let (_, now) = sequential(&pool, &mut rng, now, 20_000, |_| 10);
    let (counts, _) = sequential(&pool, &mut rng, now, 10_000, |_| 10);
    let recovered = share(&counts, 2);
    assert!(
        recovered >= 0.30,
        "recovered endpoint got {recovered:.3} in seconds 20-30: {counts:?}"
    );
}

#[test]
fn a_new_endpoint_is_probed_not_starved() {
    let pool = Pool::new(&service_config(&[1, 1], BalancerKind::P2cEwma));
    let mut rng = Rng::with_seed(3);
    // Endpoint 0 is measured; endpoint 1 never was. The first picks go to the unmeasured one.
    let mut lease = pool.endpoints()[0]
        .lease(0)
        .unwrap_or_else(|| unreachable!());
    lease.record(Outcome::Success, 20_000);
    drop(lease);
    let picked = pool.pick(20_000, None, &Candidates::default(), &mut rng);
    let index = picked
        .as_ref()
        .ok()
        .and_then(|l| pool.index_of(l.endpoint()));
    assert_eq!(index, Some(1));
}

#[test]
fn all_open_is_unavailable_with_the_earliest_half_open() {
    let pool = Pool::new(&service_config(&[1, 1], BalancerKind::P2cEwma));
    let mut rng = Rng::with_seed(1);
    // Endpoint 0 opens at t=0 (open until 5000), endpoint 1 at t=2000 (until 7000).
    for (i, at) in [(0, 0), (1, 2_000)] {
        for _ in 0..3 {
            let mut lease = pool.endpoints()[i]
                .lease(at * 1000)
                .unwrap_or_else(|| unreachable!());
            lease.record(Outcome::Failure, at * 1000);
        }
    }
    let result = pool.pick(3_100_000, None, &Candidates::default(), &mut rng);
    assert_eq!(
        result.err(),
        Some(Unavailable {
            retry_after_secs: 2
        })
    );
    // At 5000 endpoint 0 is due for a probe, and gets it.
    let probe = pool.pick(5_000_000, None, &Candidates::default(), &mut rng);
    assert_eq!(
        probe.ok().and_then(|l| pool.index_of(l.endpoint())),
        Some(0)
    );
}

#[test]
fn a_full_endpoint_is_skipped() {
    let mut config = service_config(&[1, 1], BalancerKind::RoundRobin);
    config.max_in_flight_per_endpoint = Some(1);
    let pool = Pool::new(&config);
    let mut rng = Rng::with_seed(1);
    let first = pool.pick(0, None, &Candidates::default(), &mut rng);
    let second = pool.pick(0, None, &Candidates::default(), &mut rng);
    let third = pool.pick(0, None, &Candidates::default(), &mut rng);
    let index =
        |l: &Result<Lease, Unavailable>| l.as_ref().ok().and_then(|l| pool.index_of(l.endpoint()));
    assert_ne!(index(&first), index(&second));
    assert!(third.is_err(), "both endpoints are at their cap");
    drop(first);
    assert!(pool.pick(0, None, &Candidates::default(), &mut rng).is_ok());
}

proptest! {
    /// Whatever the state of the pool, a pick is never an open or unhealthy endpoint, and
    /// there is a pick whenever some endpoint is usable.
    #[test]
    fn p2c_never_picks_an_open_or_unhealthy_endpoint(
        states in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..50_000), 1..12),
        seed in any::<u64>(),
        now in 0u64..20_000,
    ) {
        let weights = vec![1; states.len()];
        let pool = Pool::new(&service_config(&weights, BalancerKind::P2cEwma));
        for (endpoint, (open, unhealthy, latency)) in pool.endpoints().iter().zip(&states) {
            if *open {
                for _ in 0..3 {
                    let mut lease = endpoint.lease(now * 1000).unwrap_or_else(|| unreachable!());
                    lease.record(Outcome::Failure, now * 1000);
                }
            } else {
                let mut lease = endpoint.lease(0).unwrap_or_else(|| unreachable!());
                lease.record(Outcome::Success, *latency);
            }
            if *unhealthy {
                for _ in 0..3 {
                    endpoint.observe_health(false, 2, 3);
                }
            }
        }
        let mut rng = Rng::with_seed(seed);
        let any_usable = states.iter().any(|(open, unhealthy, _)| !open && !unhealthy);
        for _ in 0..20 {
            match pool.pick(now * 1000, None, &Candidates::default(), &mut rng) {
                Ok(lease) => {
                    let i = pool.index_of(lease.endpoint()).unwrap_or(usize::MAX);
                    let (open, unhealthy, _) = states[i];
                    prop_assert!(!open && !unhealthy, "picked endpoint {} in state {:?}", i, states[i]);
                }
                Err(_) => prop_assert!(!any_usable, "no pick although an endpoint is usable"),
            }
        }
    }
}
