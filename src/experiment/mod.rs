//! The paper's experiments end to end (paper section 5): train the strong models (RQ1–RQ3),
//! modularize them (RQ1, RQ2), train the weak models and patch them (RQ2), and the grouping ×
//! initialisation ablation (RQ3); then the reports.
//!
//! An experiment is planned as a task graph ([`plan`], `DIR/plan.json`); the in-process runner
//! ([`run`]) walks it in order, and a cluster runs its tasks one per process
//! (`cnnsplitter experiment task`, [`run_task`]) through HyperQueue ([`hq`]) or Slurm
//! ([`slurm`]). Every stage writes its own folder under the experiment folder and counts as done
//! once its final file exists; a stopped experiment continues where it stopped and redoes nothing:
//! `strong/<model>/` (training run), `modules/<model>/` (modularization),
//! `weak/<model>/tc<K>/{simple,poor-fit,underfit,overfit}/`, `patched/<model>/tc<K>/<kind>/<rule>/`,
//! `rq3/<model>/<grouping>-<init>/`, and `reports/`.

pub mod config;
pub mod dir;
pub mod hq;
pub mod plan;
pub mod plots;
pub mod report;
pub mod schedule;
pub mod slurm;
pub mod stage;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::compute::Compute;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::files::read_json;
use crate::modularize::Summary;
use crate::patch::PatchReport;
use crate::progress::{Event, Progress};
use config::ExperimentConfig;
pub use dir::ExperimentDir;
pub use plan::{Launch, Plan, Task};
use report::{Reports, Rq1Row, Rq2Row, Rq3Row};
use stage::StageRunner;

/// Which research question to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rq {
    /// Modularization: model vs. composed accuracy, Diff, kernels and MACs (Tables 1, 2).
    Rq1,
    /// Patching: weak vs. patched TC precision, recall, F1 and non-TC accuracy (Tables 3-6);
    /// includes RQ1's stages and report.
    Rq2,
    /// Grouping × initialisation: generation of the best modules, composed accuracy (Table 7).
    Rq3,
}

/// Checks `config` for `rq`, makes `dir` its experiment folder (a new or empty folder, or one
/// holding the same config: then its finished stages are kept), and writes `DIR/config.toml`
/// and the task graph `DIR/plan.json` (a plan already there with other commands is replaced, with
/// a note). Nothing is written when a check fails.
pub fn prepare(
    rq: Rq,
    config: &ExperimentConfig,
    dir: &Path,
    launch: &Launch,
    progress: &dyn Progress,
) -> Result<Plan> {
    if rq == Rq::Rq2 && config.weak.is_none() {
        return Err(Error::Invalid(
            "rq2 needs a [weak] section in the experiment config (dataset, tcs, tc_label, kinds)".into(),
        ));
    }
    config.check().map_err(|m| Error::Invalid(format!("experiment config: {m}")))?;
    let out = ExperimentDir::new(dir);
    let text =
        toml::to_string(config).map_err(|e| Error::Serialize(format!("cannot write the config as TOML: {e}")))?;
    let plan = Plan::build(rq, config, dir, launch)?;
    if out.config().exists() {
        let saved = ExperimentConfig::load(&out.config())?;
        if &saved != config {
            return Err(Error::file(
                dir,
                "holds an experiment with another configuration: choose another experiment folder (`out`), or give the same config to continue it",
            ));
        }
    } else {
        if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(Error::file(
                dir,
                "is not empty and holds no experiment: choose another experiment folder (`out`)",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::files::write_atomic(&out.config(), text.as_bytes())?;
    }
    let plan = Plan { config_digest: Some(plan::config_digest(&out.config())?), ..plan };
    if let Ok(old) = Plan::load_anywhere(dir) {
        if !old.made_for(dir)? {
            progress.note(&format!(
                "note: {} is replaced: it was made for the experiment folder {} (this one is a copy, or was \
                 moved); the finished stages here are kept",
                dir.join(plan::PLAN_FILE).display(),
                old.dir.display()
            ));
        } else if old.tasks != plan.tasks || old.rq != plan.rq {
            progress.note(&format!(
                "note: {} is replaced: it planned {} with other commands (threads, engine or program); the \
                 finished stages are kept",
                dir.join(plan::PLAN_FILE).display(),
                crate::choice::Choice::name(old.rq)
            ));
        }
    }
    plan.write()?;
    Ok(plan)
}

/// Runs research question `rq` of `config` in `dir` in this process: plans it ([`prepare`]),
/// then runs every task of the plan that is not done, in plan order, as `experiment task` would
/// one by one, and returns the reports (written to `dir/reports` by the plan's last task). With
/// `stop_after = Some(n)` the session stops after starting `n` tasks and returns `None` (for
/// checks of resuming).
#[allow(clippy::too_many_arguments)] // each is a separate choice of the caller
pub fn run(
    rq: Rq,
    config: &ExperimentConfig,
    dir: &Path,
    compute: &Compute,
    engine: &dyn Engine,
    launch: &Launch,
    stop_after: Option<usize>,
    progress: &dyn Progress,
) -> Result<Option<Reports>> {
    let plan = prepare(rq, config, dir, launch, progress)?;
    let mut runner = StageRunner::new(config, &plan, compute, engine, launch.threads, progress);
    for (started, task) in plan.pending().into_iter().enumerate() {
        if stop_after.is_some_and(|s| started >= s) {
            return Ok(None);
        }
        run_timed(&mut runner, task)?;
    }
    collect(rq, config, &runner.dir).map(Some)
}

/// What `experiment task` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The task ran and is done now.
    Ran,
    /// It was done already; nothing ran.
    AlreadyDone,
}

/// Runs the task `id` of the experiment planned in `dir` (one stage, in this process, on
/// `compute`): returns at once when it is done, refuses to start when one of its dependencies is
/// not done.
pub fn run_task(
    dir: &Path,
    id: &str,
    compute: &Compute,
    engine: &dyn Engine,
    progress: &dyn Progress,
) -> Result<TaskOutcome> {
    let threads = compute.threads();
    let plan = Plan::load(dir)?;
    plan.check_config()?;
    let config = ExperimentConfig::load(&ExperimentDir::new(dir).config())?;
    let task = plan.task(id).ok_or_else(|| {
        let ids: Vec<&str> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
        Error::file(plan.dir.join(plan::PLAN_FILE), format!("has no task `{id}`; its tasks: {}", ids.join(", ")))
    })?;
    if task.is_done(&plan.dir) {
        return Ok(TaskOutcome::AlreadyDone);
    }
    if let Some(dep) = task.deps.iter().filter_map(|d| plan.task(d)).find(|d| !d.is_done(&plan.dir)) {
        return Err(Error::Invalid(format!(
            "task `{id}` needs task `{}` first, which is not done ({} does not exist): run it first \
             (`cnnsplitter experiment task --out {} --id {}`)",
            dep.id,
            plan.dir.join(&dep.done).display(),
            plan.dir.display(),
            dep.id
        )));
    }
    if threads != task.resources.cores {
        progress.note(&format!(
            "note: the plan gives task `{id}` {} threads and it runs with {threads}; training results may \
             differ in the last bits from the in-process run",
            task.resources.cores
        ));
    }
    let mut runner = StageRunner::new(&config, &plan, compute, engine, threads, progress);
    run_timed(&mut runner, task)?;
    Ok(TaskOutcome::Ran)
}

/// Runs `task`, announced as a stage, and records its wall time in `DIR/tasks/<id>.json`.
fn run_timed(runner: &mut StageRunner, task: &Task) -> Result<()> {
    // The task owns its output folder while it runs: a second process on the same task (a job
    // submitted twice) is refused with who holds it.
    let _owned = crate::files::lock::OutputLock::acquire(&runner.dir.root.join(&task.out))?;
    if task.is_done(&runner.dir.root) {
        // Another process finished it while this one waited to start.
        return Ok(());
    }
    runner.progress.event(&Event::Stage { label: &task.label });
    let started = std::time::Instant::now();
    runner.run(task)?;
    let record = TaskTiming {
        id: task.id.clone(),
        seconds: started.elapsed().as_secs_f64(),
        process_peak_rss_mib: peak_rss_mib(),
    };
    crate::files::write_json(&runner.dir.task_timing(&task.file_stem()), &record)
}

/// The recorded wall seconds of every task of `plan` that has run, by id.
pub fn measured_seconds(plan: &Plan) -> Result<std::collections::HashMap<String, f64>> {
    let dir = ExperimentDir::new(&plan.dir);
    let mut seconds = std::collections::HashMap::new();
    for t in &plan.tasks {
        let path = dir.task_timing(&t.file_stem());
        if path.is_file() {
            seconds.insert(t.id.clone(), read_json::<TaskTiming>(&path)?.seconds);
        }
    }
    Ok(seconds)
}

/// The measured cost of one task (`DIR/tasks/<id>.json`; not part of the reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTiming {
    /// The task's id.
    pub id: String,
    /// Wall seconds it ran.
    pub seconds: f64,
    /// The peak resident memory of the process so far, in MiB (one task per process on a
    /// cluster; the whole session in process), where the system tells it.
    pub process_peak_rss_mib: Option<f64>,
}

/// `VmHWM` of /proc/self/status (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Reads the finished stages' results into the report tables.
pub(crate) fn collect(rq: Rq, config: &ExperimentConfig, dir: &ExperimentDir) -> Result<Reports> {
    let dataset = &config.strong.dataset;
    let mut reports = Reports { name: config.name.clone(), ..Reports::default() };
    for model in &config.models {
        if matches!(rq, Rq::Rq1 | Rq::Rq2) {
            let modules = dir.modules(&model.name);
            let summary: Summary = read_json(&modules.summary())?;
            reports.rq1.push(Rq1Row::new(&model.name, dataset, &summary));
            reports.searches.push((model.name.clone(), modules.generations()));
        }
        if rq == Rq::Rq2 {
            let w = config.weak.as_ref().expect("checked by the runner");
            for &tc in &w.tcs {
                for &kind in &w.kinds {
                    for &rule in &w.rules {
                        let r: PatchReport = read_json(&dir.patched(&model.name, tc, kind, rule).report())?;
                        reports.rq2.push(Rq2Row::new(&model.name, tc, kind, &r));
                    }
                }
            }
        }
        if rq == Rq::Rq3 {
            for &grouping in &config.rq3.groupings {
                for &init in &config.rq3.inits {
                    let s: Summary = read_json(&dir.ablation(&model.name, grouping, init).summary())?;
                    reports.rq3.push(Rq3Row::new(&model.name, grouping, init, &s));
                }
            }
        }
    }
    Ok(reports)
}

impl crate::choice::Choice for Rq {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (Rq::Rq1, "rq1", "modularization: model vs. composed accuracy, Diff, kernels and MACs (Tables 1, 2)"),
        (
            Rq::Rq2,
            "rq2",
            "patching: weak vs. patched TC precision, recall, F1 and non-TC accuracy (Tables 3-6); includes RQ1's stages and report",
        ),
        (Rq::Rq3, "rq3", "grouping × initialisation: generation of the best modules, composed accuracy (Table 7)"),
    ];
}
