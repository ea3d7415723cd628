//! Runs one planned task: the one place that knows what each [`Stage`] does, used alike by the
//! in-process runner and by `cnnsplitter experiment task` (one task per process on a cluster).

use crate::compute::Compute;
use crate::data::mix::DataSplits;
use crate::data::presets::DataSelection;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::experiment::config::{ExperimentConfig, ModelConfig, WeakConfig, WeakKind};
use crate::experiment::dir::ExperimentDir;
use crate::experiment::plan::{Plan, Stage, Task};
use crate::experiment::{Rq, collect};
use crate::folders::RunDir;
use crate::modularize::{self, ModularizeConfig};
use crate::patch::{PatchRequest, patch};
use crate::progress::Progress;
use crate::train::config::{Recipe, TrainConfig};
use crate::train::pick::{Fit, pick};
use crate::train::trainer;

/// What every task of one experiment shares: its config, folder, engine and threads, and the
/// last dataset loaded (consecutive patches of one TC read it once).
pub struct StageRunner<'a> {
    /// The experiment's configuration.
    pub config: &'a ExperimentConfig,
    /// The experiment folder.
    pub dir: ExperimentDir,
    /// The research question planned.
    pub rq: Rq,
    /// Where training and importance compute.
    pub compute: &'a Compute,
    /// The inference engine.
    pub engine: &'a dyn Engine,
    /// Compute threads of training runs (part of their configuration).
    pub threads: usize,
    /// Receives progress.
    pub progress: &'a dyn Progress,
    loaded: Option<(DataSelection, DataSplits)>,
}

impl<'a> StageRunner<'a> {
    /// A runner for the tasks of `plan`.
    pub fn new(
        config: &'a ExperimentConfig,
        plan: &Plan,
        compute: &'a Compute,
        engine: &'a dyn Engine,
        threads: usize,
        progress: &'a dyn Progress,
    ) -> Self {
        let dir = ExperimentDir::new(&plan.dir);
        StageRunner { config, dir, rq: plan.rq, compute, engine, threads, progress, loaded: None }
    }

    /// Runs `task` (its dependencies must be done). A stage that was stopped part-way continues
    /// from its last checkpoint; nothing it leaves before its done file is trusted.
    pub fn run(&mut self, task: &Task) -> Result<()> {
        match &task.stage {
            Stage::TrainStrong { model } => {
                let m = self.model(model)?;
                let c = self.config;
                let data = self.data(&c.strong.dataset, None);
                let (arch, recipe, overrides) = (m.arch.clone(), c.strong.recipe, c.strong.overrides(m));
                self.train(&self.dir.strong(model), || {
                    TrainConfig::new(&arch, recipe, &data, &overrides, c.seed, self.threads)
                })
            }
            Stage::Modularize { model } => {
                let search = self.search_config(model);
                let dir = self.dir.modules(model);
                if let Some(summary) = self.modularize(&dir, search)?
                    && let Some(why) = modularize::shortfall::shortfall(&dir.root, &summary)?
                {
                    self.progress.note(&format!("note: the modules of {model}: {why}"));
                }
                Ok(())
            }
            Stage::TrainSimple { model, tc } => {
                let (m, w) = (self.model(model)?, self.weak()?);
                let data = self.weak_data(w, *tc);
                let run = self.dir.weak_run(model, *tc, WeakKind::Simple);
                self.train(&run, || {
                    TrainConfig::new(
                        &m.weak_arch,
                        Recipe::Simple,
                        &data,
                        &w.simple.overrides(),
                        self.config.seed,
                        self.threads,
                    )
                })
            }
            Stage::TrainPoorFit { model, tc } => {
                let (m, w) = (self.model(model)?, self.weak()?);
                let data = self.weak_data(w, *tc);
                let arch = m.poor_fit_arch.as_deref().unwrap_or(&m.arch);
                self.train(&self.dir.poor_fit_run(model, *tc), || {
                    TrainConfig::new(
                        arch,
                        Recipe::PoorFit,
                        &data,
                        &w.poor_fit.overrides(),
                        self.config.seed,
                        self.threads,
                    )
                })
            }
            Stage::Pick { model, tc, weak } => {
                let fit = if *weak == WeakKind::Underfit { Fit::Underfit } else { Fit::Overfit };
                let run = self.dir.poor_fit_run(model, *tc);
                pick(&run.root, fit, &self.dir.weak(model, *tc, *weak)).map(|_| ())
            }
            Stage::Patch { model, tc, weak, rule } => self.patch(model, *tc, *weak, *rule),
            Stage::Ablation { model, grouping, init } => {
                let mut search = self.search_config(model);
                search.grouping.kind = *grouping;
                search.ga.init = *init;
                if let Some(g) = self.config.rq3.generations {
                    search.stop.generations = g;
                }
                self.modularize(&self.dir.ablation(model, *grouping, *init), search).map(|_| ())
            }
            Stage::Reports => collect(self.rq, self.config, &self.dir)?.write(&self.dir, self.progress),
        }
    }

    fn model(&self, name: &str) -> Result<&'a ModelConfig> {
        self.config
            .models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::Invalid(format!("the experiment config has no [[models]] named `{name}`")))
    }

    fn weak(&self) -> Result<&'a WeakConfig> {
        self.config.weak.as_ref().ok_or_else(|| Error::Invalid("the experiment config has no [weak] section".into()))
    }

    fn data(&self, dataset: &str, tc: Option<usize>) -> DataSelection {
        DataSelection {
            dataset: dataset.to_string(),
            tc,
            data_dir: self.config.data_dir.clone(),
            limits: Default::default(),
        }
    }

    fn weak_data(&self, w: &WeakConfig, tc: usize) -> DataSelection {
        DataSelection { limits: w.limits(), ..self.data(&w.dataset, Some(tc)) }
    }

    fn search_config(&self, model: &str) -> ModularizeConfig {
        let data = self.data(&self.config.strong.dataset, None);
        self.config.modularize.modularize_config(self.dir.strong(model).root, data, self.config.seed)
    }

    /// Trains the run `run`, or resumes it when it has started.
    fn train(&self, run: &RunDir, make: impl FnOnce() -> Result<TrainConfig>) -> Result<()> {
        if run.config().exists() {
            trainer::resume(&run.root, self.compute, None, self.engine, self.progress)?;
        } else {
            trainer::start(make()?, &run.root, None, self.compute, self.engine, self.progress)?;
        }
        Ok(())
    }

    /// Modularizes into `dir`, or resumes it when it has started; the run's summary.
    fn modularize(
        &self,
        dir: &crate::folders::ModularizeDir,
        config: ModularizeConfig,
    ) -> Result<Option<modularize::Summary>> {
        // A run started before the experiment folder was copied or moved names the strong model
        // where it was then; it is where the plan's folder says now (its digest is checked).
        let options = modularize::RunOptions { model_at: Some(config.model.clone()), ..Default::default() };
        let config = if dir.config().exists() { None } else { Some(config) };
        modularize::run_with(config, &dir.root, self.compute, self.engine, options, self.progress)
    }

    fn patch(&mut self, model: &str, tc: usize, kind: WeakKind, rule: crate::patch::RuleKind) -> Result<()> {
        let w = self.weak()?;
        let i = w.tcs.iter().position(|&t| t == tc).ok_or_else(|| {
            Error::Invalid(format!("the experiment config's [weak] `tcs` does not list the TC {tc} of this task"))
        })?;
        let data = self.weak_data(w, tc);
        let splits = match self.loaded.take() {
            Some((d, splits)) if d == data => splits,
            _ => data.load()?,
        };
        let (weak_dir, strong) = (self.dir.weak(model, tc, kind), self.dir.strong(model).root);
        let module = self.dir.modules(model).module(w.strong_label(i));
        let request = PatchRequest {
            weak: &weak_dir,
            module: &module,
            strong: Some(&strong),
            tc_weak: w.tc_label,
            tc_strong: w.strong_label(i),
            rule,
            ungated: false,
        };
        let out = self.dir.patched(model, tc, kind, rule);
        let done = patch(&request, &splits, self.engine, &out.root);
        self.loaded = Some((data, splits));
        done.map(|_| ())
    }
}
