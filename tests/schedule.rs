//! The plan's cost on K machines: the critical path against every path enumerated, and the list
//! schedule against hand-worked cases and Graham's bound on random graphs.

use std::path::PathBuf;

use cnnsplitter::experiment::Rq;
use cnnsplitter::experiment::plan::{Plan, Resources, Stage, Task};
use cnnsplitter::experiment::schedule::{critical_path_seconds, list_schedule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A plan of `deps.len()` tasks named t0, t1, ... with these dependencies (indices).
fn plan(deps: &[Vec<usize>]) -> Plan {
    let tasks = deps
        .iter()
        .enumerate()
        .map(|(i, ds)| Task {
            id: format!("t{i}"),
            label: String::new(),
            stage: Stage::Reports,
            command: vec!["true".into()],
            deps: ds.iter().map(|d| format!("t{d}")).collect(),
            out: PathBuf::new(),
            done: PathBuf::new(),
            logs: [PathBuf::new(), PathBuf::new()],
            resources: Resources { cores: 1, memory_mib: 1 },
        })
        .collect();
    let plan = Plan { rq: Rq::Rq1, dir: PathBuf::from("/x"), config_digest: None, tasks };
    plan.check().unwrap();
    plan
}

/// The longest path, by trying every path that ends at each task.
fn longest_path_brute(deps: &[Vec<usize>], s: &[f64]) -> f64 {
    fn ending_at(i: usize, deps: &[Vec<usize>], s: &[f64]) -> f64 {
        s[i] + deps[i].iter().map(|&d| ending_at(d, deps, s)).fold(0.0, f64::max)
    }
    (0..deps.len()).map(|i| ending_at(i, deps, s)).fold(0.0, f64::max)
}

fn random_dag(rng: &mut ChaCha8Rng, n: usize) -> (Vec<Vec<usize>>, Vec<f64>) {
    let deps = (0..n).map(|i| (0..i).filter(|_| rng.random_bool(0.3)).collect()).collect();
    let seconds = (0..n).map(|_| rng.random_range(1..20) as f64).collect();
    (deps, seconds)
}

#[test]
fn the_critical_path_is_the_longest_of_all_paths() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..200 {
        let n = rng.random_range(1..9);
        let (deps, s) = random_dag(&mut rng, n);
        assert_eq!(critical_path_seconds(&plan(&deps), &s), longest_path_brute(&deps, &s), "{deps:?} {s:?}");
    }
}

#[test]
fn the_list_schedule_keeps_within_its_bounds_and_matches_hand_worked_cases() {
    // Independent tasks 3,3,2,2,2 on 2 machines, longest first: 3|3, then 2|2, then 2 -> 7
    // (the optimum, 3+3 | 2+2+2 = 6, is not a longest-first schedule).
    let independent = vec![vec![]; 5];
    let s = [3.0, 3.0, 2.0, 2.0, 2.0];
    assert_eq!(list_schedule(&plan(&independent), &s, 2).makespan, 7.0);
    assert_eq!(list_schedule(&plan(&independent), &s, 1).makespan, 12.0);
    assert_eq!(list_schedule(&plan(&independent), &s, 5).makespan, 3.0);
    // A chain 0 -> 1 -> 2 (1 + 1 + 1) beside one long task (2.5): the chain's head goes first
    // (remaining chain 3 > 2.5), so 2 machines finish at 3, not 3.5.
    let mixed = vec![vec![], vec![0], vec![1], vec![]];
    assert_eq!(list_schedule(&plan(&mixed), &[1.0, 1.0, 1.0, 2.5], 2).makespan, 3.0);
    assert_eq!(list_schedule(&plan(&mixed), &[1.0, 1.0, 1.0, 2.5], 1).makespan, 5.5);

    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..300 {
        let n = rng.random_range(1..12);
        let (deps, s) = random_dag(&mut rng, n);
        let p = plan(&deps);
        let total: f64 = s.iter().sum();
        let cp = longest_path_brute(&deps, &s);
        for k in [1, 2, 3, 8] {
            let m = list_schedule(&p, &s, k).makespan;
            let kf = k as f64;
            // No schedule beats the critical path or the work spread evenly; Graham's bound
            // holds for every list schedule; one machine runs everything in turn; as many
            // machines as tasks start every task as soon as it may.
            assert!(m >= cp - 1e-9 && m >= total / kf - 1e-9, "{deps:?} {s:?} k={k}: {m}");
            assert!(m <= total / kf + (1.0 - 1.0 / kf) * cp + 1e-9, "{deps:?} {s:?} k={k}: {m}");
            if k == 1 {
                assert_eq!(m, total);
            }
            if k >= n {
                assert_eq!(m, cp);
            }
        }
    }
}
