//! Modularization: split a trained N-class model into N per-class modules (paper section 3).
//!
//! A run lives in its folder ([`ModularizeDir`]); every stage is saved there and not redone on
//! resume. The model and its data are checked and recorded first ([`source`]), then the run's
//! search method ([`SearchMethod`], `method` in `config.json`) finds one [`KeepMasks`] per class
//! from [`SearchInputs`], and [`modules`] writes what every method ends with: one model folder
//! per module (`modules/class_NN/`, with `keep.json`) and `summary.json`, measured the same way
//! whichever method found the masks.
//!
//! The genetic method ([`genetic`], the paper's): kernel importance (`importance.json`, shared by
//! [`SearchInputs::importance`]), layer sensitivity (`sensitivity.json`), and the genetic search
//! (`search/state.json` after every generation, `search/generations.jsonl`).
//!
//! To add a method: a new file or folder beside `genetic/` with a function
//! `search(&SearchInputs) -> Result<Option<SearchOutcome>>` (`None` when the session stopped
//! early, see [`RunOptions::stop_after`]) that saves its own state under the run folder and
//! picks its result on images it did not fit; a variant of [`SearchMethod`] with its `Choice`
//! name; and its arm in the `match` of [`run_with`]. Its settings go into [`ModularizeConfig`]
//! with a serde default, so that older `config.json` files still read.

pub mod bitset;
pub mod config;
pub mod genetic;
pub mod importance;
pub mod modules;
pub mod shortfall;
pub mod source;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compute::Compute;
use crate::data::mix::DataSplits;
use crate::decode::KeepMasks;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::folders::ModularizeDir;
use crate::graph::channel_groups::ChannelGroups;
use crate::model::Model;
use crate::progress::Progress;
use bitset::Bits;
pub use config::ModularizeConfig;
pub use genetic::evaluator::ModuleRuns;
use importance::Importance;
pub use modules::{KeepRecord, SplitAccuracy, Summary, composed_accuracy};
pub use source::ModelSource;

/// How a run searches its modules (`method` in `config.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMethod {
    /// The paper's genetic search over groups of kernels ([`genetic`]).
    #[default]
    Genetic,
}

impl crate::choice::Choice for SearchMethod {
    const ALL: &'static [(Self, &'static str, &'static str)] =
        &[(SearchMethod::Genetic, "genetic", "the paper's genetic search over groups of kernels")];
}

/// What a search method is given: the run's folder and settings, the model it splits with its
/// channel groups, the data, the engine that runs modules, the session's options and where to
/// report progress.
pub struct SearchInputs<'a> {
    /// The run's folder (a method keeps its state there).
    pub out: &'a ModularizeDir,
    /// The run's settings.
    pub config: &'a ModularizeConfig,
    /// The model to split.
    pub model: &'a Model,
    /// Its data (the search fits on training or validation images; the summary reports test).
    pub data: &'a DataSplits,
    /// The model's channel groups: one keep-mask each.
    pub groups: &'a ChannelGroups,
    /// Where importance (and a method's own burn work) computes.
    pub compute: &'a Compute,
    /// Runs modules.
    pub engine: &'a dyn Engine,
    /// The session's options.
    pub options: &'a RunOptions,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
}

impl SearchInputs<'_> {
    /// Stage 1: kernel importance (read back, and checked against the run, when done).
    pub fn importance(&self) -> Result<Importance> {
        let SearchInputs { out, config, model, data, .. } = *self;
        if out.importance().exists() {
            let i = Importance::load(&out.importance())?;
            i.check(self.groups, model.description.classes).map_err(|m| Error::file(out.importance(), m))?;
            if i.confidence != config.confidence {
                return Err(Error::file(
                    out.importance(),
                    format!(
                        "was measured with confidence {}, but this run's is {}: it belongs to another run",
                        i.confidence, config.confidence
                    ),
                ));
            }
            return Ok(i);
        }
        let i = importance::compute(
            model,
            &data.train,
            &data.normalization,
            config.confidence,
            self.compute,
            self.progress,
        )?;
        write_json(&out.importance(), &i)?;
        Ok(i)
    }
}

/// What a search method hands over: one module per class, in class order, and its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// Module `c` is class `c`'s.
    pub modules: Vec<FoundModule>,
    /// What the search cost.
    pub stats: SearchStats,
}

/// One module a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundModule {
    /// The channels it keeps, checked against the model.
    pub masks: KeepMasks,
    /// The genetic method's genome (`keep.json`'s `genome`), as 0s and 1s.
    pub genome: Option<String>,
}

/// What a search cost, as the summary reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchStats {
    /// Generations (or steps) run.
    pub generations: usize,
    /// The generation (or step) the result comes from, from 0.
    pub best_generation: usize,
    /// Mean wall seconds per generation.
    pub seconds_per_generation: f64,
    /// Modules run.
    pub forward_passes: u64,
    /// Module runs answered from a cache.
    pub cache_hits: u64,
}

/// The set of kernels (layer, index) `masks` keeps, over every producing layer of each channel
/// group (a group shared by a residual add counts once per producing convolution): the sets
/// whose Jaccard distances give a summary's `diff`.
pub fn kernel_set(masks: &KeepMasks, groups: &ChannelGroups) -> Bits {
    let slots = groups.groups.iter().map(|g| g.width * g.producers.len()).sum();
    let mut set = Bits::zeros(slots);
    let mut base = 0;
    for (g, group) in groups.groups.iter().enumerate() {
        let mask = masks.group(g);
        for p in 0..group.producers.len() {
            for (k, &keep) in mask.iter().enumerate() {
                if keep {
                    set.set(base + p * group.width + k, true);
                }
            }
        }
        base += group.width * group.producers.len();
    }
    set
}

/// How a session of a modularization runs; not part of the run's configuration, because its
/// results do not depend on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Stop after this many generations of this session (as if killed).
    pub stop_after: Option<usize>,
    /// Modules run at once, each on its share of the threads (`None`: as
    /// [`ModuleRuns::for_model`] picks for the model).
    pub jobs: Option<usize>,
    /// Where the model is now, when a resumed run moved together with it (an experiment folder
    /// copied or moved): replaces the recorded folder in `config.json`. The model's files must
    /// still be the ones the run started from (`source.json`'s digest).
    pub model_at: Option<PathBuf>,
}

/// Starts (`config` given) or resumes (`None`) the run in `dir`. With `stop_after = Some(g)` the
/// session stops after g generations (as if killed) and returns `None`.
pub fn run(
    config: Option<ModularizeConfig>,
    dir: &Path,
    compute: &Compute,
    engine: &dyn Engine,
    stop_after: Option<usize>,
    progress: &dyn Progress,
) -> Result<Option<Summary>> {
    run_with(config, dir, compute, engine, RunOptions { stop_after, ..RunOptions::default() }, progress)
}

/// [`run`] with every option of the session.
pub fn run_with(
    config: Option<ModularizeConfig>,
    dir: &Path,
    compute: &Compute,
    engine: &dyn Engine,
    options: RunOptions,
    progress: &dyn Progress,
) -> Result<Option<Summary>> {
    if let Some(jobs) = options.jobs {
        Error::check_at_least("module jobs", jobs, 1)?;
    }
    let _owned = crate::files::lock::OutputLock::acquire(dir)?;
    let out = ModularizeDir::new(dir);
    let mut config = open_config(config, &out)?;
    if let Some(now) = options.model_at.clone().filter(|now| *now != config.model)
        && out.config().exists()
    {
        config.model = now;
        write_json(&out.config(), &config)?;
    }
    let (model, data) = source::load_inputs(&config)?;
    if !out.config().exists() {
        write_json(&out.config(), &config)?;
    }
    source::check_source(&out, &config, &data)?;
    let groups = ChannelGroups::derive(&model.description)?;
    for (layer, why) in &groups.uncut {
        progress.note(&format!("note: layer `{}`: {why}", model.description.layers[*layer].name));
    }
    let inputs = SearchInputs {
        out: &out,
        config: &config,
        model: &model,
        data: &data,
        groups: &groups,
        compute,
        engine,
        options: &options,
        progress,
    };
    let outcome = match config.method {
        SearchMethod::Genetic => genetic::search(&inputs)?,
    };
    let Some(outcome) = outcome else {
        return Ok(None);
    };
    Ok(Some(modules::write_modules(&out, &model, &data, &outcome, engine)?))
}

/// The configuration of a new run (checked; `out` must hold no run) or of the run in `out`.
fn open_config(config: Option<ModularizeConfig>, out: &ModularizeDir) -> Result<ModularizeConfig> {
    match config {
        Some(c) => {
            if out.config().exists() {
                return Err(Error::file(
                    &out.root,
                    "already holds a modularization run: resume it, or choose another output folder (`out`)",
                ));
            }
            c.validate()?;
            Ok(c)
        }
        None => {
            let c: ModularizeConfig = read_json(&out.config())?;
            c.validate().map_err(|e| Error::file(out.config(), e.to_string()))?;
            Ok(c)
        }
    }
}
