use fastrand::Rng;
use proptest::prelude::*;

use super::*;

fn all(n: usize) -> Candidates {
    let mut c = Candidates::default();
    for i in 0..n {
        c.insert(i);
    }
    c
}

fn even(_: usize) -> Load {
    Load {
        cost_us: 10_000.0,
        in_flight: 0,
        weight: 1,
        seed: 0,
    }
}

#[test]
fn candidates_is_a_set() {
    let mut c = Candidates::default();
    assert!(c.is_empty());
    for i in [0, 63, 64, 200, 255] {
        c.insert(i);
    }
    c.remove(63);
    assert_eq!(c.iter().collect::<Vec<_>>(), vec![0, 64, 200, 255]);
    assert_eq!(c.len(), 4);
    assert!(c.contains(200) && !c.contains(63) && !c.contains(300));
}

#[test]
fn smooth_weighted_round_robin_interleaves() {
    let balancer = Balancer::new(&BalancerKind::RoundRobin, 3);
    let weights = [5u32, 1, 1];
    let load = |i: usize| Load {
        weight: weights[i],
        ..even(i)
    };
    let mut rng = Rng::with_seed(1);
    let picks: Vec<usize> = (0..7)
        .filter_map(|_| balancer.choose(&all(3), load, None, &mut rng))
        .collect();
    assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn round_robin_skips_what_is_not_a_candidate() {
    let balancer = Balancer::new(&BalancerKind::RoundRobin, 3);
    let mut candidates = all(3);
    candidates.remove(1);
    let mut rng = Rng::with_seed(1);
    let picks: Vec<usize> = (0..4)
        .filter_map(|_| balancer.choose(&candidates, even, None, &mut rng))
        .collect();
    assert_eq!(picks, vec![0, 2, 0, 2]);
}

#[test]
fn p2c_prefers_the_less_loaded_of_its_two() {
    let balancer = Balancer::new(&BalancerKind::P2cEwma, 2);
    let load = |i: usize| Load {
        in_flight: if i == 0 { 5 } else { 0 },
        ..even(i)
    };
    let mut rng = Rng::with_seed(9);
    for _ in 0..50 {
        assert_eq!(balancer.choose(&all(2), load, None, &mut rng), Some(1));
    }
}

#[test]
fn least_request_breaks_ties_at_random() {
    let balancer = Balancer::new(&BalancerKind::LeastRequest, 3);
    let mut rng = Rng::with_seed(5);
    let mut counts = [0; 3];
    for _ in 0..3000 {
        if let Some(i) = balancer.choose(&all(3), even, None, &mut rng) {
            counts[i] += 1;
        }
    }
    assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    let busy = |i: usize| Load {
        in_flight: if i == 2 { 0 } else { 3 },
        ..even(i)
    };
    assert_eq!(balancer.choose(&all(3), busy, None, &mut rng), Some(2));
}

#[test]
fn random_follows_weights() {
    let balancer = Balancer::new(&BalancerKind::Random, 2);
    let load = |i: usize| Load {
        weight: if i == 0 { 3 } else { 1 },
        ..even(i)
    };
    let mut rng = Rng::with_seed(11);
    let first = (0..4000)
        .filter(|_| balancer.choose(&all(2), load, None, &mut rng) == Some(0))
        .count();
    assert!((2800..3200).contains(&first), "{first}");
}

#[test]
fn hashing_is_sticky_and_moves_only_the_keys_of_a_lost_endpoint() {
    let balancer = Balancer::new(&BalancerKind::Hash(crate::config::HashKey::ClientIp), 4);
    let load = |i: usize| Load {
        seed: hash_bytes(format!("endpoint-{i}").as_bytes()),
        ..even(i)
    };
    let mut rng = Rng::with_seed(1);
    let keys: Vec<u64> = (0..1000)
        .map(|k: u32| hash_bytes(&k.to_le_bytes()))
        .collect();
    let before: Vec<Option<usize>> = keys
        .iter()
        .map(|k| balancer.choose(&all(4), load, Some(*k), &mut rng))
        .collect();
    let again: Vec<Option<usize>> = keys
        .iter()
        .map(|k| balancer.choose(&all(4), load, Some(*k), &mut rng))
        .collect();
    assert!(before == again, "the same key maps to the same endpoint");
    let mut without_3 = all(4);
    without_3.remove(3);
    for (key, was) in keys.iter().zip(&before) {
        let now = balancer.choose(&without_3, load, Some(*key), &mut rng);
        if *was != Some(3) {
            assert_eq!(now, *was, "a key not on the lost endpoint stays put");
        }
    }
    let on_each = (0..4).map(|i| before.iter().filter(|b| **b == Some(i)).count());
    assert!(
        on_each.clone().all(|n| (150..350).contains(&n)),
        "{:?}",
        on_each.collect::<Vec<_>>()
    );
}

proptest! {
    #[test]
    fn every_balancer_picks_only_candidates(
        mask in any::<u16>(),
        seed in any::<u64>(),
        kind in 0usize..5,
        key in any::<Option<u64>>(),
    ) {
        let kinds = [
            BalancerKind::P2cEwma,
            BalancerKind::RoundRobin,
            BalancerKind::LeastRequest,
            BalancerKind::Random,
            BalancerKind::Hash(crate::config::HashKey::ClientIp),
        ];
        let balancer = Balancer::new(&kinds[kind], 16);
        let mut candidates = Candidates::default();
        for i in 0..16 {
            if mask & (1 << i) != 0 {
                candidates.insert(i);
            }
        }
        let load = |i: usize| Load { cost_us: (i * 1000) as f64, in_flight: (i % 3) as u32, weight: 1 + (i % 2) as u32, seed: i as u64 };
        let mut rng = Rng::with_seed(seed);
        for _ in 0..8 {
            match balancer.choose(&candidates, load, key, &mut rng) {
                Some(i) => prop_assert!(candidates.contains(i)),
                None => prop_assert!(candidates.is_empty()),
            }
        }
    }
}
