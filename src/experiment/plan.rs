//! An experiment as a task graph: `DIR/plan.json` lists every stage of a research question as a
//! task with a stable id (its output folder, e.g. `strong/ResCNN`,
//! `patched/ResCNN/tc3/overfit/paper`), the exact command that runs it, the tasks it depends on,
//! its "done" file and a resource hint. The in-process runner walks this list in order; the
//! cluster engines (HyperQueue, Slurm) run the same commands in dependency order.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::data::presets::DataSelection;
use crate::engine::EngineChoice;
use crate::error::{Error, Result};
use crate::experiment::Rq;
use crate::experiment::config::{ExperimentConfig, ModelConfig, WeakKind};
use crate::experiment::dir::ExperimentDir;
use crate::files::{read_json, write_json};
use crate::modularize::genetic::ga::InitKind;
use crate::modularize::genetic::grouping::GroupingKind;
use crate::patch::RuleKind;
use crate::train::pick::pick_file;

/// What one task does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stage {
    /// Train the strong model `model`.
    TrainStrong {
        /// The model's name in the config.
        model: String,
    },
    /// Modularize the strong model `model`.
    Modularize {
        /// The model's name in the config.
        model: String,
    },
    /// Train the overly simple weak model of `model` for target class `tc`.
    TrainSimple {
        /// The model's name in the config.
        model: String,
        /// The target class.
        tc: usize,
    },
    /// Train the poor-fit run the underfit and overfit models of `model` for `tc` come from.
    TrainPoorFit {
        /// The model's name in the config.
        model: String,
        /// The target class.
        tc: usize,
    },
    /// Pick the underfit or overfit model from the poor-fit run.
    Pick {
        /// The model's name in the config.
        model: String,
        /// The target class.
        tc: usize,
        /// Underfit or overfit.
        weak: WeakKind,
    },
    /// Patch a weak model with the strong model's module of its target class.
    Patch {
        /// The model's name in the config.
        model: String,
        /// The target class.
        tc: usize,
        /// The weak model's kind.
        weak: WeakKind,
        /// The patching rule.
        rule: RuleKind,
    },
    /// One cell of the RQ3 ablation: modularize with this grouping and initialisation.
    Ablation {
        /// The model's name in the config.
        model: String,
        /// The kernel grouping.
        grouping: GroupingKind,
        /// The initialisation.
        init: InitKind,
    },
    /// Collect the finished stages into `reports/`.
    Reports,
}

/// What a task asks of the machine that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Cores (the task's compute threads).
    pub cores: usize,
    /// A rough upper estimate of its peak memory, in MiB.
    pub memory_mib: u64,
}

/// One stage of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Stable id: the output folder relative to the experiment folder (`reports` for the last).
    pub id: String,
    /// What it does, in words (the progress line).
    pub label: String,
    /// What it does, typed.
    pub stage: Stage,
    /// The command that runs it (program and arguments).
    pub command: Vec<String>,
    /// Ids of the tasks that must be done first.
    pub deps: Vec<String>,
    /// Its output folder, relative to the experiment folder.
    pub out: PathBuf,
    /// The file whose existence means the task is done, relative to the experiment folder.
    pub done: PathBuf,
    /// Its log files (standard output, standard error) on a cluster, relative to the
    /// experiment folder.
    pub logs: [PathBuf; 2],
    /// What it asks of the machine.
    pub resources: Resources,
}

impl Task {
    /// Whether its done file exists in the experiment folder `dir`.
    pub fn is_done(&self, dir: &Path) -> bool {
        dir.join(&self.done).exists()
    }

    /// The id as one file name (`/` becomes `__`), for logs and timing records.
    pub fn file_stem(&self) -> String {
        file_stem(&self.id)
    }
}

/// How a task's command starts the tool: the program, its compute threads and its engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The `cnnsplitter` program (an absolute path, so that any worker finds it).
    pub program: PathBuf,
    /// Compute threads of every task (`--threads`); also each task's `cores`. Training results
    /// depend on it, so every path that must give the same bits uses the same count.
    pub threads: usize,
    /// The inference engine of every task.
    pub engine: EngineChoice,
}

/// The task graph of one research question of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The research question.
    pub rq: Rq,
    /// The experiment folder (absolute) the plan was made for; a plan found in another folder
    /// (the experiment copied or moved) is refused by [`Plan::load`] until it is planned again.
    pub dir: PathBuf,
    /// MD5 of `config.toml` as planned: a task refuses to run a config edited since (absent in
    /// plans written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// The tasks, every one after its dependencies (the in-process runner's order).
    pub tasks: Vec<Task>,
}

/// The file name of the plan in an experiment folder.
pub const PLAN_FILE: &str = "plan.json";

impl Plan {
    /// Plans research question `rq` of `config` in the experiment folder `dir` (made absolute).
    /// `config` must be checked; `rq2` needs its `[weak]` section.
    pub fn build(rq: Rq, config: &ExperimentConfig, dir: &Path, launch: &Launch) -> Result<Plan> {
        let dir = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
        let mut b = Builder { config, dir: ExperimentDir::new(&dir), launch, tasks: Vec::new() };
        for model in &config.models {
            match rq {
                Rq::Rq1 => b.strong(model),
                Rq::Rq2 => {
                    b.strong(model);
                    b.weak(model)?;
                }
                Rq::Rq3 => {
                    b.train_strong(model);
                    b.ablation(model);
                }
            }
        }
        let collected = b
            .tasks
            .iter()
            .filter(|t| matches!(t.stage, Stage::Modularize { .. } | Stage::Patch { .. } | Stage::Ablation { .. }))
            .map(|t| t.id.clone())
            .collect();
        let reports = b.dir.reports();
        let done = reports.join(format!("{}.json", rq.name()));
        let label = "writing the reports".to_string();
        b.push(&reports, &done, label, Stage::Reports, collected, estimate::BASE_MIB as u64);
        let plan = Plan { rq, dir, config_digest: None, tasks: b.tasks };
        plan.check()?;
        Ok(plan)
    }

    /// The task called `id`.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// Checks that ids are unique, every dependency names an earlier task (so there is no
    /// cycle), and every command is non-empty.
    pub fn check(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for t in &self.tasks {
            check_id(&t.id)?;
            for path in [&t.out, &t.done, &t.logs[0], &t.logs[1]] {
                if path.is_absolute() || path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                    return Err(Error::Invalid(format!(
                        "plan: task `{}`: {} must lie inside the experiment folder (a relative path without . or ..)",
                        t.id,
                        crate::error::printable_path(path)
                    )));
                }
            }
            if t.command.is_empty() {
                return Err(Error::Invalid(format!("plan: task `{}` has no command", t.id)));
            }
            if let Some(d) = t.deps.iter().find(|d| !seen.contains(d.as_str())) {
                return Err(Error::Invalid(format!(
                    "plan: task `{}` depends on `{d}`, which is not an earlier task",
                    t.id
                )));
            }
            if !seen.insert(t.id.as_str()) {
                return Err(Error::Invalid(format!("plan: two tasks have the id `{}`", t.id)));
            }
        }
        Ok(())
    }

    /// The tasks whose done file does not exist yet, in plan order.
    pub fn pending(&self) -> Vec<&Task> {
        self.tasks.iter().filter(|t| !t.is_done(&self.dir)).collect()
    }

    /// For each of `pending` (from [`Plan::pending`]), the positions in `pending` of its
    /// dependencies that are pending too (done ones need no waiting).
    pub fn pending_deps(pending: &[&Task]) -> Vec<Vec<usize>> {
        let index: HashMap<&str, usize> = pending.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
        pending.iter().map(|t| t.deps.iter().filter_map(|d| index.get(d.as_str()).copied()).collect()).collect()
    }

    /// Writes `DIR/plan.json`.
    pub fn write(&self) -> Result<()> {
        write_json(&self.dir.join(PLAN_FILE), self)
    }

    /// Reads and checks the plan of the experiment folder `dir`; refuses a plan made for another
    /// folder (this one a copy, or moved), whose tasks would write into that folder.
    pub fn load(dir: &Path) -> Result<Plan> {
        let plan = Plan::load_anywhere(dir)?;
        if !plan.made_for(dir)? {
            return Err(Error::file(
                dir.join(PLAN_FILE),
                format!(
                    "was made for the experiment folder {}, not this one (was the folder copied or moved?): plan \
                     again here (`cnnsplitter experiment plan --config {} --out {}`); the finished stages are kept",
                    crate::error::printable_path(&plan.dir),
                    crate::error::printable_path(&ExperimentDir::new(dir).config()),
                    crate::error::printable_path(dir)
                ),
            ));
        }
        Ok(plan)
    }

    /// [`Plan::load`] without the check that the plan was made for `dir`.
    pub fn load_anywhere(dir: &Path) -> Result<Plan> {
        let path = dir.join(PLAN_FILE);
        if !path.is_file() {
            return Err(Error::file(
                dir,
                "holds no plan.json: plan the experiment first (`cnnsplitter experiment plan --config F.toml --out DIR`)",
            ));
        }
        let plan: Plan = read_json(&path)?;
        plan.check().map_err(|e| Error::file(&path, e.to_string()))?;
        Ok(plan)
    }

    /// Whether the plan was made for the folder `dir` (links and `..` resolved).
    pub fn made_for(&self, dir: &Path) -> Result<bool> {
        Ok(crate::files::resolved(&self.dir)? == crate::files::resolved(dir)?)
    }

    /// Checks that the experiment's `config.toml` is the one planned (its digest).
    pub fn check_config(&self) -> Result<()> {
        let path = ExperimentDir::new(&self.dir).config();
        let Some(planned) = &self.config_digest else { return Ok(()) };
        let now = config_digest(&path)?;
        if &now != planned {
            return Err(Error::file(
                &path,
                format!(
                    "has changed since the experiment was planned (digest {planned} then, {now} now): a task runs \
                     with the config it was planned with; restore it, or plan a new experiment folder with the \
                     edited config"
                ),
            ));
        }
        Ok(())
    }

    /// The number of tasks on the longest dependency chain (the critical path, in tasks).
    pub fn critical_path_tasks(&self) -> usize {
        let mut depth: HashMap<&str, usize> = HashMap::new();
        for t in &self.tasks {
            let d = 1 + t.deps.iter().map(|d| depth[d.as_str()]).max().unwrap_or(0);
            depth.insert(&t.id, d);
        }
        depth.values().copied().max().unwrap_or(0)
    }
}

/// Builds the task list in the order the stages run in process.
struct Builder<'a> {
    config: &'a ExperimentConfig,
    dir: ExperimentDir,
    launch: &'a Launch,
    tasks: Vec<Task>,
}

impl Builder<'_> {
    /// The id of the stage writing `out`: its path inside the experiment folder.
    fn id(&self, out: &Path) -> String {
        self.rel(out).to_string_lossy().into_owned()
    }

    /// Relative path of `path` inside the experiment folder.
    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.dir.root).expect("every stage writes inside the experiment folder").to_path_buf()
    }

    /// Adds the task writing `out` (done once `done` exists); returns its id.
    fn push(
        &mut self,
        out: &Path,
        done: &Path,
        label: String,
        stage: Stage,
        deps: Vec<String>,
        memory_mib: u64,
    ) -> String {
        let id = self.id(out);
        let stem = file_stem(&id);
        let logs = [format!("{stem}.out"), format!("{stem}.err")].map(|f| Path::new("logs").join(f));
        let l = self.launch;
        let command = [
            l.program.to_string_lossy().into_owned(),
            "--threads".into(),
            l.threads.to_string(),
            "experiment".into(),
            "task".into(),
            "--out".into(),
            self.dir.root.to_string_lossy().into_owned(),
            "--id".into(),
            id.clone(),
            "--engine".into(),
            l.engine.name().into(),
        ]
        .into();
        let resources = Resources { cores: l.threads, memory_mib };
        let (out, done) = (self.rel(out), self.rel(done));
        self.tasks.push(Task { id: id.clone(), label, stage, command, deps, out, done, logs, resources });
        id
    }

    fn strong_data(&self) -> DataSelection {
        DataSelection::named(&self.config.strong.dataset)
    }

    fn train_strong(&mut self, m: &ModelConfig) {
        let run = self.dir.strong(&m.name);
        let memory = estimate::training(&m.arch, &self.strong_data(), self.config.strong.batch);
        let label = format!("training strong model {} ({}) on {}", m.name, m.arch, self.config.strong.dataset);
        let stage = Stage::TrainStrong { model: m.name.clone() };
        self.push(&run.root, &run.report(), label, stage, vec![], memory);
    }

    fn strong_id(&self, m: &ModelConfig) -> String {
        self.id(&self.dir.strong(&m.name).root)
    }

    fn modules_id(&self, m: &ModelConfig) -> String {
        self.id(&self.dir.modules(&m.name).root)
    }

    fn strong(&mut self, m: &ModelConfig) {
        self.train_strong(m);
        let dir = self.dir.modules(&m.name);
        let memory = estimate::search(&m.arch, &self.strong_data(), self.config.modularize.population);
        let stage = Stage::Modularize { model: m.name.clone() };
        let deps = vec![self.strong_id(m)];
        self.push(&dir.root, &dir.summary(), format!("modularizing {}", m.name), stage, deps, memory);
    }

    fn weak(&mut self, m: &ModelConfig) -> Result<()> {
        let w = self.config.weak.as_ref().ok_or_else(|| {
            Error::Invalid("rq2 needs a [weak] section in the experiment config (dataset, tcs, tc_label, kinds)".into())
        })?;
        for &tc in &w.tcs {
            let data = DataSelection { tc: Some(tc), ..DataSelection::named(&w.dataset) };
            let name = m.name.clone();
            if w.kinds.contains(&WeakKind::Simple) {
                let run = self.dir.weak_run(&m.name, tc, WeakKind::Simple);
                let label = format!("training simple weak model {} ({}) for TC {tc}", m.name, m.weak_arch);
                let memory = estimate::training(&m.weak_arch, &data, w.simple.batch);
                let stage = Stage::TrainSimple { model: name.clone(), tc };
                self.push(&run.root, &run.report(), label, stage, vec![], memory);
            }
            if w.kinds.iter().any(|k| *k != WeakKind::Simple) {
                let arch = m.poor_fit_arch.as_deref().unwrap_or(&m.arch);
                let run = self.dir.poor_fit_run(&m.name, tc);
                let label = format!("training poor-fit model {} ({arch}) for TC {tc}", m.name);
                let memory = estimate::training(arch, &data, w.poor_fit.batch);
                let stage = Stage::TrainPoorFit { model: name.clone(), tc };
                let run_id = self.push(&run.root, &run.report(), label, stage, vec![], memory);
                for kind in [WeakKind::Underfit, WeakKind::Overfit] {
                    if w.kinds.contains(&kind) {
                        let out = self.dir.weak(&m.name, tc, kind);
                        let label = format!("picking the {} model {} for TC {tc}", kind.name(), m.name);
                        let stage = Stage::Pick { model: name.clone(), tc, weak: kind };
                        let memory = estimate::BASE_MIB as u64;
                        self.push(&out, &pick_file(&out), label, stage, vec![run_id.clone()], memory);
                    }
                }
            }
            let memory = estimate::patch(&m.arch, &data);
            for &kind in &w.kinds {
                let weak_id = self.id(&self.dir.weak(&m.name, tc, kind));
                for &rule in &w.rules {
                    let out = self.dir.patched(&m.name, tc, kind, rule);
                    let label =
                        format!("patching the {} model {} for TC {tc} ({} rule)", kind.name(), m.name, rule.name());
                    let deps = vec![self.strong_id(m), self.modules_id(m), weak_id.clone()];
                    let stage = Stage::Patch { model: name.clone(), tc, weak: kind, rule };
                    self.push(&out.root, &out.report(), label, stage, deps, memory);
                }
            }
        }
        Ok(())
    }

    fn ablation(&mut self, m: &ModelConfig) {
        let c = self.config;
        let memory = estimate::search(&m.arch, &self.strong_data(), c.modularize.population);
        for &grouping in &c.rq3.groupings {
            for &init in &c.rq3.inits {
                let dir = self.dir.ablation(&m.name, grouping, init);
                let label = format!("RQ3: {} with {} grouping, {} init", m.name, grouping.name(), init.name());
                let stage = Stage::Ablation { model: m.name.clone(), grouping, init };
                self.push(&dir.root, &dir.summary(), label, stage, vec![self.strong_id(m)], memory);
            }
        }
    }
}

/// Checks a task id: a relative folder inside the experiment folder, of names without control
/// characters (ids end up in shell scripts, job names and file names).
fn check_id(id: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("plan: task id `{}` {why}", crate::error::printable(id))));
    if id.is_empty() {
        return bad("is empty");
    }
    if id.chars().any(char::is_control) {
        return bad("holds control characters");
    }
    let path = Path::new(id);
    if path.is_absolute() || path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return bad("must be a folder inside the experiment folder (no leading /, no . or ..)");
    }
    Ok(())
}

/// MD5 of the file at `path` (an experiment's `config.toml`).
pub fn config_digest(path: &Path) -> Result<String> {
    use md5::{Digest, Md5};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", Md5::digest(&bytes)))
}

/// A task id as one file name: `/` becomes `__`.
fn file_stem(id: &str) -> String {
    id.replace('/', "__")
}

/// Rough upper estimates of a task's peak memory, from the model's size and its dataset's.
mod estimate {
    use crate::data::presets::DataSelection;
    use crate::model::shape::infer_shapes;
    use crate::model::{count::count, zoo};

    const MIB: f64 = 1024.0 * 1024.0;
    /// The process, its libraries and the engine's arenas.
    pub const BASE_MIB: f64 = 300.0;

    /// Images of the data's sources as published (an upper bound of any mix of them), and the
    /// floats of one image.
    fn data_floats(data: &DataSelection) -> (f64, f64, [usize; 3], usize) {
        let Ok(spec) = data.spec() else { return (0.0, 0.0, [3, 32, 32], 10) };
        let (classes, shape) = spec.outline(data.tc).unwrap_or((10, [3, 32, 32]));
        let images: usize = spec.published_images();
        let per_image = (shape[0] * shape[1] * shape[2]) as f64;
        (images as f64, per_image, shape, classes)
    }

    /// The model's trainable floats and the floats of its activations for one image.
    fn model_floats(arch: &str, shape: [usize; 3], classes: usize) -> (f64, f64) {
        let Ok(desc) = zoo::build(arch, shape, classes) else { return (0.0, 0.0) };
        let params = count(&desc).map_or(0, |c| c.params) as f64;
        let acts = infer_shapes(&desc).map_or(0, |s| s.iter().map(|l| l.output.numel()).sum::<usize>()) as f64;
        (params, acts)
    }

    /// A training run: the data as floats, weights with their gradients and momentum, and a
    /// batch's activations kept for the backward pass.
    pub fn training(arch: &str, data: &DataSelection, batch: Option<usize>) -> u64 {
        let (images, per_image, shape, classes) = data_floats(data);
        let (params, acts) = model_floats(arch, shape, classes);
        let batch = batch.unwrap_or(128) as f64;
        let floats = images * per_image + 4.0 * params + 3.0 * batch * acts;
        (BASE_MIB + 4.0 * floats / MIB).ceil() as u64
    }

    /// A genetic search: the data, a population of module copies, and batches of 256 images.
    pub fn search(arch: &str, data: &DataSelection, population: Option<usize>) -> u64 {
        let (images, per_image, shape, classes) = data_floats(data);
        let (params, acts) = model_floats(arch, shape, classes);
        let modules = (population.unwrap_or(100) * classes) as f64;
        let floats = images * per_image + (2.0 + modules / 10.0) * params + 2.0 * 256.0 * acts;
        (BASE_MIB + 4.0 * floats / MIB).ceil() as u64
    }

    /// A patch: the weak data, the weak model, the strong model and its module.
    pub fn patch(arch: &str, data: &DataSelection) -> u64 {
        let (images, per_image, shape, classes) = data_floats(data);
        let (params, acts) = model_floats(arch, shape, classes);
        let floats = images * per_image + 3.0 * params + 2.0 * 256.0 * acts;
        (BASE_MIB + 4.0 * floats / MIB).ceil() as u64
    }
}
