//! The paper's experiments end to end (paper section 5): train the strong models (RQ1–RQ3),
//! modularize them (RQ1, RQ2), train the weak models and patch them (RQ2), and the grouping ×
//! initialisation ablation (RQ3); then the reports.
//!
//! Every stage writes its own folder under the experiment folder and counts as done once its
//! final file exists; a stopped experiment continues where it stopped and redoes nothing:
//! `strong/<model>/` (training run), `modules/<model>/` (modularization),
//! `weak/<model>/tc<K>/{simple,poor-fit,underfit,overfit}/`, `patched/<model>/tc<K>/<kind>/<rule>/`,
//! `rq3/<model>/<grouping>-<init>/`, and `reports/`.

pub mod config;
pub mod dir;
pub mod plots;
pub mod report;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::data::presets::DataSelection;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::files::read_json;
use crate::modularize::{self, ModularizeConfig, ModularizeDir, Summary};
use crate::patch::{PatchReport, PatchRequest, patch};
use crate::progress::{Event, Progress};
use crate::train::config::{Recipe, TrainConfig};
use crate::train::pick::{Fit, pick, pick_file};
use crate::train::run_dir::RunDir;
use crate::train::trainer;
use config::{ExperimentConfig, ModelConfig, WeakKind};
pub use dir::ExperimentDir;
use report::{Reports, Rq1Row, Rq2Row, Rq3Row};

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

/// Runs the stages, counting those it starts; `stop_after` stops the session (as if killed)
/// before the stage that would exceed it.
struct Runner<'a> {
    config: &'a ExperimentConfig,
    dir: ExperimentDir,
    engine: &'a dyn Engine,
    progress: &'a dyn Progress,
    stop_after: Option<usize>,
    started: usize,
    threads: usize,
}

type Step<T> = std::result::Result<T, StepError>;

/// Why the runner stopped early.
enum StepError {
    /// `stop_after` stages have run.
    Stopped,
    /// A stage failed.
    Failed(Error),
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError::Failed(e)
    }
}

impl Runner<'_> {
    /// Runs `work` unless `done`; announces it as `label`.
    fn stage(&mut self, done: bool, label: &str, work: impl FnOnce(&Self) -> Result<()>) -> Step<()> {
        if done {
            return Ok(());
        }
        if self.stop_after.is_some_and(|s| self.started >= s) {
            return Err(StepError::Stopped);
        }
        self.started += 1;
        self.progress.event(&Event::Stage { label });
        work(self)?;
        Ok(())
    }

    fn data(&self, dataset: &str, tc: Option<usize>) -> DataSelection {
        DataSelection {
            dataset: dataset.to_string(),
            tc,
            data_dir: self.config.data_dir.clone(),
            limits: Default::default(),
        }
    }

    /// Trains (or resumes) the run `run` unless it has finished.
    fn train(&mut self, label: &str, run: &RunDir, make: impl FnOnce() -> Result<TrainConfig>) -> Step<()> {
        self.stage(run.report().exists(), label, |r| {
            if run.config().exists() {
                trainer::resume(&run.root, r.threads, None, r.engine, r.progress)?;
            } else {
                trainer::start(make()?, &run.root, None, r.engine, r.progress)?;
            }
            Ok(())
        })
    }

    /// Modularizes (or resumes) into `dir` unless it has finished.
    fn modularize(&mut self, label: &str, dir: &ModularizeDir, config: ModularizeConfig) -> Step<()> {
        self.stage(dir.summary().exists(), label, |r| {
            let config = if dir.config().exists() { None } else { Some(config) };
            modularize::run(config, &dir.root, r.engine, None, r.progress)?;
            Ok(())
        })
    }

    fn search_config(&self, model: &ModelConfig) -> ModularizeConfig {
        let data = self.data(&self.config.strong.dataset, None);
        self.config.modularize.modularize_config(self.dir.strong(&model.name).root, data, self.config.seed)
    }

    fn train_strong(&mut self, model: &ModelConfig) -> Step<()> {
        let c = self.config;
        let data = self.data(&c.strong.dataset, None);
        let overrides = c.strong.overrides(model);
        let (seed, threads, recipe) = (c.seed, self.threads, c.strong.recipe);
        let label = format!("training strong model {} ({}) on {}", model.name, model.arch, c.strong.dataset);
        self.train(&label, &self.dir.strong(&model.name), || {
            TrainConfig::new(&model.arch, recipe, &data, &overrides, seed, threads)
        })
    }

    fn strong(&mut self, model: &ModelConfig) -> Step<()> {
        self.train_strong(model)?;
        let label = format!("modularizing {}", model.name);
        let search = self.search_config(model);
        self.modularize(&label, &self.dir.modules(&model.name), search)
    }

    fn weak(&mut self, model: &ModelConfig) -> Step<()> {
        let c = self.config;
        let w = c.weak.as_ref().expect("checked by `run`");
        let (seed, threads) = (c.seed, self.threads);
        for (i, &tc) in w.tcs.iter().enumerate() {
            let data = DataSelection { limits: w.limits(), ..self.data(&w.dataset, Some(tc)) };
            if w.kinds.contains(&WeakKind::Simple) {
                let label = format!("training simple weak model {} ({}) for TC {tc}", model.name, model.weak_arch);
                self.train(&label, &self.dir.weak_run(&model.name, tc, WeakKind::Simple), || {
                    TrainConfig::new(&model.weak_arch, Recipe::Simple, &data, &w.simple.overrides(), seed, threads)
                })?;
            }
            if w.kinds.iter().any(|k| *k != WeakKind::Simple) {
                let arch = model.poor_fit_arch.as_deref().unwrap_or(&model.arch);
                let label = format!("training poor-fit model {} ({arch}) for TC {tc}", model.name);
                let run = self.dir.poor_fit_run(&model.name, tc);
                self.train(&label, &run, || {
                    TrainConfig::new(arch, Recipe::PoorFit, &data, &w.poor_fit.overrides(), seed, threads)
                })?;
                for (kind, fit) in [(WeakKind::Underfit, Fit::Underfit), (WeakKind::Overfit, Fit::Overfit)] {
                    let out = self.dir.weak(&model.name, tc, kind);
                    if w.kinds.contains(&kind) {
                        let label = format!("picking the {} model {} for TC {tc}", kind.name(), model.name);
                        self.stage(pick_file(&out).exists(), &label, |_| pick(&run.root, fit, &out).map(|_| ()))?;
                    }
                }
            }
            let mut loaded = None;
            let strong = self.dir.strong(&model.name).root;
            let module = self.dir.modules(&model.name).module(w.strong_label(i));
            for &kind in &w.kinds {
                let weak_dir = self.dir.weak(&model.name, tc, kind);
                for &rule in &w.rules {
                    let out = self.dir.patched(&model.name, tc, kind, rule);
                    let label =
                        format!("patching the {} model {} for TC {tc} ({} rule)", kind.name(), model.name, rule.name());
                    let request = PatchRequest {
                        weak: &weak_dir,
                        module: &module,
                        strong: Some(&strong),
                        tc_weak: w.tc_label,
                        tc_strong: w.strong_label(i),
                        rule,
                        ungated: false,
                    };
                    self.stage(out.report().exists(), &label, |r| {
                        let splits = match loaded.take() {
                            Some(d) => d,
                            None => data.load()?,
                        };
                        let done = patch(&request, &splits, r.engine, &out.root);
                        loaded = Some(splits);
                        done.map(|_| ())
                    })?;
                }
            }
        }
        Ok(())
    }

    fn ablation(&mut self, model: &ModelConfig) -> Step<()> {
        let c = self.config;
        for &grouping in &c.rq3.groupings {
            for &init in &c.rq3.inits {
                let mut search = self.search_config(model);
                search.grouping.kind = grouping;
                search.ga.init = init;
                if let Some(g) = c.rq3.generations {
                    search.stop.generations = g;
                }
                let label = format!("RQ3: {} with {} grouping, {} init", model.name, grouping.name(), init.name());
                self.modularize(&label, &self.dir.ablation(&model.name, grouping, init), search)?;
            }
        }
        Ok(())
    }

    fn run(&mut self, rq: Rq) -> Step<()> {
        for model in &self.config.models {
            match rq {
                Rq::Rq1 => self.strong(model)?,
                Rq::Rq2 => {
                    self.strong(model)?;
                    self.weak(model)?;
                }
                Rq::Rq3 => {
                    self.train_strong(model)?;
                    self.ablation(model)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs research question `rq` of `config` in `dir` (a new folder, or one holding the same
/// config: then finished stages are kept and the rest continue), and writes the reports to
/// `dir/reports`. With `stop_after = Some(n)` the session stops after starting `n` stages and
/// returns `None` (for checks of resuming).
pub fn run(
    rq: Rq,
    config: &ExperimentConfig,
    dir: &Path,
    engine: &dyn Engine,
    stop_after: Option<usize>,
    progress: &dyn Progress,
) -> Result<Option<Reports>> {
    if rq == Rq::Rq2 && config.weak.is_none() {
        return Err(Error::Invalid(
            "rq2 needs a [weak] section in the experiment config (dataset, tcs, tc_label, kinds)".into(),
        ));
    }
    config.check().map_err(|m| Error::Invalid(format!("experiment config: {m}")))?;
    let out = ExperimentDir::new(dir);
    let text =
        toml::to_string(config).map_err(|e| Error::Serialize(format!("cannot write the config as TOML: {e}")))?;
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
    let threads = rayon::current_num_threads();
    let mut runner = Runner { config, dir: out, engine, progress, stop_after, started: 0, threads };
    match runner.run(rq) {
        Ok(()) => {}
        Err(StepError::Stopped) => return Ok(None),
        Err(StepError::Failed(e)) => return Err(e),
    }
    let reports = collect(rq, config, &runner.dir)?;
    reports.write(&runner.dir, progress)?;
    Ok(Some(reports))
}

/// Reads the finished stages' results into the report tables.
fn collect(rq: Rq, config: &ExperimentConfig, dir: &ExperimentDir) -> Result<Reports> {
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
