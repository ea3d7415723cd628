//! What a plan costs on K machines: the critical path and a list schedule (each task on one
//! machine, a free machine takes the ready task with the longest remaining chain first), from
//! per-task durations (measured `tasks/<id>.json`, or a cost model's).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::experiment::plan::Plan;

/// The estimate for one machine count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Machines, each running one task at a time.
    pub machines: usize,
    /// Wall seconds of the list schedule.
    pub makespan: f64,
}

/// Per-task durations, in plan order, checked: every task has one, finite and not negative, and
/// their sum is finite.
pub fn durations(plan: &Plan, seconds: &HashMap<String, f64>) -> Result<Vec<f64>> {
    let secs: Vec<f64> = plan
        .tasks
        .iter()
        .map(|t| match seconds.get(&t.id) {
            Some(&s) if s.is_finite() && s >= 0.0 => Ok(s),
            Some(s) => Err(Error::Invalid(format!("task `{}`: duration {s} is not a number of seconds >= 0", t.id))),
            None => Err(Error::Invalid(format!("no duration for task `{}`", t.id))),
        })
        .collect::<Result<_>>()?;
    if !secs.iter().sum::<f64>().is_finite() {
        return Err(Error::Invalid(
            "the task durations add up to more seconds than a number holds: give durations in seconds".into(),
        ));
    }
    Ok(secs)
}

/// Dependencies as indices into the plan's tasks.
fn dep_indices(plan: &Plan) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = plan.tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    plan.tasks.iter().map(|t| t.deps.iter().map(|d| index[d.as_str()]).collect()).collect()
}

/// For every task, the longest chain of durations from its start to the end of the plan (its
/// own included).
fn remaining_chain(deps: &[Vec<usize>], seconds: &[f64]) -> Vec<f64> {
    let mut rest = seconds.to_vec();
    // Tasks come after their dependencies, so a reverse walk sees every dependent first.
    for i in (0..deps.len()).rev() {
        for &d in &deps[i] {
            rest[d] = rest[d].max(seconds[d] + rest[i]);
        }
    }
    rest
}

/// The longest chain of durations through the plan: no number of machines finishes sooner.
pub fn critical_path_seconds(plan: &Plan, seconds: &[f64]) -> f64 {
    remaining_chain(&dep_indices(plan), seconds).into_iter().fold(0.0, f64::max)
}

/// Simulates `machines` machines running the plan: whenever machines are free, they take the
/// ready tasks (every dependency finished) with the longest remaining chain first (plan order
/// among equals). `machines` must be at least 1.
pub fn list_schedule(plan: &Plan, seconds: &[f64], machines: usize) -> Estimate {
    assert!(machines >= 1, "at least one machine");
    let deps = dep_indices(plan);
    let priority = remaining_chain(&deps, seconds);
    let n = deps.len();
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut running: Vec<(f64, usize)> = Vec::new(); // (finish time, task)
    let (mut now, mut done) = (0.0f64, 0);
    while done < n {
        ready.sort_by(|&a, &b| priority[b].total_cmp(&priority[a]).then(a.cmp(&b)));
        while running.len() < machines && !ready.is_empty() {
            let t = ready.remove(0);
            running.push((now + seconds[t], t));
        }
        // The next task to finish (the earliest; plan order among equals).
        let next = (0..running.len())
            .min_by(|&a, &b| running[a].0.total_cmp(&running[b].0).then(running[a].1.cmp(&running[b].1)))
            .expect("a plan without cycles always has a running task here");
        let (finish, t) = running.swap_remove(next);
        now = finish;
        done += 1;
        for &d in &dependents[t] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    Estimate { machines, makespan: now }
}
