//! The breaker's state machine, one row per step: every transition of the diagram in
//! `breaker.rs`, and the non-transitions that matter (4xx-like successes, stale outcomes,
//! cancelled probes).

use std::time::Duration;

use super::*;

/// One step of a scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Admit a request at this time and record this outcome for it.
    Request(u64, Outcome),
    /// Admit a request and drop its admission unrecorded (client went away).
    Cancelled(u64),
    /// Admit and expect a refusal.
    Refused(u64),
    /// Admit two at once (both admitted), then record the first's outcome, then the second's.
    Overlapping(u64, Outcome, Outcome),
}

fn config(consecutive: u32, probes: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: consecutive,
        open_for: Duration::from_secs(10),
        half_open_probes: probes,
        ..BreakerConfig::default()
    }
}

fn run(breaker: &Breaker, steps: &[Step]) -> Vec<State> {
    let mut states = Vec::new();
    for step in steps {
        match *step {
            Step::Request(now, outcome) => {
                let (admission, _) = breaker.admit(now);
                let admission = admission.unwrap_or_else(|| panic!("refused at {now}: {step:?}"));
                breaker.record(admission, outcome, now);
            }
            Step::Cancelled(now) => {
                let (admission, _) = breaker.admit(now);
                breaker.release(admission.unwrap_or_else(|| panic!("refused at {now}")));
            }
            Step::Refused(now) => {
                assert!(!breaker.is_available(now), "available at {now}");
                assert!(breaker.admit(now).0.is_none(), "admitted at {now}");
            }
            Step::Overlapping(now, first, second) => {
                let a = breaker
                    .admit(now)
                    .0
                    .unwrap_or_else(|| panic!("first refused"));
                let b = breaker
                    .admit(now)
                    .0
                    .unwrap_or_else(|| panic!("second refused"));
                breaker.record(a, first, now);
                breaker.record(b, second, now);
            }
        }
        states.push(breaker.state());
    }
    states
}

use Outcome::{Failure as F, Success as S};
use State::{Closed, HalfOpen, Open};

#[test]
fn state_machine_table() {
    let open = |until_ms| Open { until_ms };
    let table: &[(&str, BreakerConfig, &[Step], &[State])] = &[
        (
            "closed stays closed on success",
            config(3, 1),
            &[Step::Request(0, S), Step::Request(1, S)],
            &[Closed, Closed],
        ),
        (
            "failures below the threshold keep it closed; a success resets the count",
            config(3, 1),
            &[
                Step::Request(0, F),
                Step::Request(1, F),
                Step::Request(2, S),
                Step::Request(3, F),
                Step::Request(4, F),
            ],
            &[Closed, Closed, Closed, Closed, Closed],
        ),
        (
            "closed -> open after consecutive failures",
            config(3, 1),
            &[
                Step::Request(0, F),
                Step::Request(1, F),
                Step::Request(2, F),
            ],
            &[Closed, Closed, open(10_002)],
        ),
        (
            "open refuses until open_for has passed, then half-open admits a probe",
            config(1, 1),
            &[
                Step::Request(0, F),
                Step::Refused(5),
                Step::Refused(9_999),
                Step::Cancelled(10_000),
            ],
            &[open(10_000), open(10_000), open(10_000), HalfOpen],
        ),
        (
            "half-open -> closed when the probe succeeds",
            config(1, 1),
            &[
                Step::Request(0, F),
                Step::Request(10_000, S),
                Step::Request(10_001, S),
            ],
            &[open(10_000), Closed, Closed],
        ),
        (
            "half-open -> open again when the probe fails",
            config(1, 1),
            &[
                Step::Request(0, F),
                Step::Request(10_000, F),
                Step::Refused(15_000),
            ],
            &[open(10_000), open(20_000), open(20_000)],
        ),
        (
            "a cancelled probe frees its slot: the breaker does not wedge half-open",
            config(1, 1),
            &[
                Step::Request(0, F),
                Step::Cancelled(10_000),
                Step::Cancelled(10_001),
                Step::Cancelled(10_002),
                Step::Request(10_003, S),
            ],
            &[open(10_000), HalfOpen, HalfOpen, HalfOpen, Closed],
        ),
        (
            "half-open admits only half_open_probes at once",
            config(1, 2),
            &[Step::Request(0, F), Step::Overlapping(10_000, S, S)],
            &[open(10_000), Closed],
        ),
        (
            "with two probes, the first failure reopens and the late success is ignored",
            config(1, 2),
            &[
                Step::Request(0, F),
                Step::Overlapping(10_000, F, S),
                Step::Refused(10_001),
            ],
            &[open(10_000), open(20_000), open(20_000)],
        ),
    ];
    for (name, config, steps, expected) in table {
        let breaker = Breaker::new(config.clone());
        let states = run(&breaker, steps);
        assert_eq!(&states, expected, "{name}");
    }
}

#[test]
fn probe_slots_are_counted() {
    let breaker = Breaker::new(config(1, 2));
    let (first, _) = breaker.admit(0);
    let _ = breaker.record(first.unwrap_or_else(|| panic!()), F, 0);
    let (a, transition) = breaker.admit(10_000);
    assert_eq!(
        transition,
        Some(Transition {
            from: Open { until_ms: 10_000 },
            to: HalfOpen
        })
    );
    let (b, _) = breaker.admit(10_000);
    assert!(a.is_some() && b.is_some());
    assert!(!breaker.is_available(10_000), "both probe slots are taken");
    assert!(breaker.admit(10_000).0.is_none());
    breaker.release(b.unwrap_or_else(|| panic!()));
    assert!(
        breaker.is_available(10_000),
        "a released slot is free again"
    );
    breaker.release(a.unwrap_or_else(|| panic!()));
    assert_eq!(breaker.state(), HalfOpen);
}

#[test]
fn outcomes_of_requests_admitted_before_opening_are_ignored() {
    let breaker = Breaker::new(config(2, 1));
    let early = breaker.admit(0).0.unwrap_or_else(|| panic!());
    for now in [1, 2] {
        let a = breaker.admit(now).0.unwrap_or_else(|| panic!());
        breaker.record(a, F, now);
    }
    assert_eq!(breaker.state(), Open { until_ms: 10_002 });
    // A slow request from before the opening comes back fine: it does not close the breaker.
    assert_eq!(breaker.record(early, S, 3), None);
    assert_eq!(breaker.state(), Open { until_ms: 10_002 });
    assert_eq!(breaker.opened_total(), 1);
}

#[test]
fn a_probe_from_an_earlier_half_open_period_decides_nothing() {
    let breaker = Breaker::new(config(1, 2));
    let first = breaker.admit(0).0.unwrap_or_else(|| panic!());
    let _ = breaker.record(first, F, 0);
    // Period 1: probe A (slow) and probe B; B fails and reopens the breaker.
    let slow_a = breaker.admit(10_000).0.unwrap_or_else(|| panic!());
    let b = breaker.admit(10_000).0.unwrap_or_else(|| panic!());
    let _ = breaker.record(b, F, 10_001);
    assert_eq!(breaker.state(), Open { until_ms: 20_001 });
    // Period 2: probe C is in flight when A finally succeeds: A must not close the breaker.
    let c = breaker.admit(20_001).0.unwrap_or_else(|| panic!());
    assert_eq!(breaker.record(slow_a, S, 20_002), None);
    assert_eq!(breaker.state(), HalfOpen);
    // Nor may a cancelled stale probe free a slot it does not hold: C plus one new probe
    // fill the two slots.
    let stale = {
        let _ = breaker.record(c, F, 20_003);
        let d = breaker.admit(30_003).0.unwrap_or_else(|| panic!());
        let e = breaker.admit(30_003).0.unwrap_or_else(|| panic!());
        let _ = breaker.record(d, F, 30_004);
        e // from period 3, while period 4 begins
    };
    let f = breaker.admit(40_004).0.unwrap_or_else(|| panic!());
    let g = breaker.admit(40_004).0.unwrap_or_else(|| panic!());
    breaker.release(stale);
    assert!(breaker.admit(40_004).0.is_none(), "both slots still taken");
    assert_eq!(breaker.half_opened_total(), 4);
    let _ = breaker.record(f, S, 40_005);
    assert_eq!(breaker.state(), Closed);
    assert_eq!(breaker.closed_total(), 1);
    breaker.release(g);
}

#[test]
fn failure_ratio_opens_only_with_enough_requests() {
    let config = BreakerConfig {
        consecutive_failures: 100,
        failure_ratio: Some(0.5),
        min_requests: 10,
        ..BreakerConfig::default()
    };
    let breaker = Breaker::new(config);
    // Alternating: never 100 in a row, but half of them fail.
    for i in 0..9u64 {
        let a = breaker.admit(i).0.unwrap_or_else(|| panic!());
        breaker.record(a, if i % 2 == 0 { F } else { S }, i);
    }
    assert_eq!(breaker.state(), Closed, "9 requests are below min_requests");
    let a = breaker.admit(9).0.unwrap_or_else(|| panic!());
    breaker.record(a, F, 9);
    assert!(matches!(breaker.state(), Open { .. }), "6 of 10 failed");
}
