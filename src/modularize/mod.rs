//! Modularization: split a trained N-class model into N per-class modules (paper section 3).
//!
//! Stages, each saved in the output folder and not redone on `--resume`: kernel importance
//! (`importance.json`), layer sensitivity (`sensitivity.json`), the genetic search
//! (`search/state.json` after every generation, `search/generations.jsonl`), and the result:
//! one model folder per module (`modules/class_NN/`, with `keep.json`) and `summary.json`.

pub mod bitset;
pub mod composition;
pub mod evaluator;
pub mod ga;
pub mod grouping;
pub mod importance;
pub mod search;
pub mod sensitivity;
pub mod shortfall;

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::mix::{DataSplits, SplitLimits};
use crate::data::presets::DataSelection;
use crate::decode::Decoder;
use crate::engine::{DEFAULT_BATCH, Engine};
use crate::error::{Error, Result};
use crate::eval::metrics::{self, argmax_rows};
use crate::files::{read_json, write_json, write_jsonl};
use crate::folders::ModularizeDir;
use crate::graph::channel_groups::ChannelGroups;
use crate::model::Model;
use crate::model::count::count;
use crate::progress::{Event, Progress};
use crate::records::Sensitivity;
use crate::seed::mix_seed;
use bitset::Bits;
use composition::{CompositionConfig, composed_accuracy};
use evaluator::Evaluator;
pub use evaluator::ModuleRuns;
use ga::{GaConfig, initial_population};
use grouping::{GroupingConfig, Layout};
use importance::Importance;
use search::{SearchContext, SearchState, StopConfig, initial_state};

/// Everything that decides a modularization run (saved as `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModularizeConfig {
    /// The model folder (or training run folder) to split.
    pub model: PathBuf,
    /// Dataset preset or TOML path.
    pub dataset: String,
    /// Target class of a weak mix.
    pub tc: Option<usize>,
    /// Folder of the source datasets.
    pub data_dir: Option<PathBuf>,
    /// Caps on training and validation images per class.
    #[serde(default, skip_serializing_if = "SplitLimits::is_none")]
    pub limits: SplitLimits,
    /// Probability a training image needs to count for kernel importance.
    pub confidence: f64,
    /// Kernel grouping.
    pub grouping: GroupingConfig,
    /// Accuracy loss at 90% drop that still counts as insensitive.
    pub sensitivity_threshold: f64,
    /// Validation images used for the sensitivity table (all when larger than the split).
    pub sensitivity_images: usize,
    /// Genetic algorithm.
    pub ga: GaConfig,
    /// Composition pruning.
    pub composition: CompositionConfig,
    /// Stopping.
    pub stop: StopConfig,
    /// Validation images the search scores modules on (`None`, written `null`: all; all too when
    /// larger than the split).
    pub search_images: Option<usize>,
    /// Seed of grouping, initialisation and search.
    pub seed: u64,
}

impl ModularizeConfig {
    /// Default probability a training image needs to count for kernel importance.
    pub const CONFIDENCE: f64 = 0.9;
    /// Default accuracy loss at 90% drop up to which a layer counts as insensitive.
    pub const SENSITIVITY_THRESHOLD: f64 = 0.05;
    /// Default number of validation images of the sensitivity table.
    pub const SENSITIVITY_IMAGES: usize = 2000;

    /// Checks every setting's range (the one place: the CLI, experiment configs and resumed
    /// runs all pass here); the error names the setting.
    pub fn validate(&self) -> Result<()> {
        Error::check_range("confidence", self.confidence, 0.0, 1.0)?;
        Error::check_range("sensitivity_threshold", self.sensitivity_threshold, 0.0, 1.0)?;
        Error::check_at_least("sensitivity_images", self.sensitivity_images, 1)?;
        if let Some(n) = self.search_images {
            Error::check_at_least("search_images", n, 1)?;
        }
        self.grouping.validate()?;
        self.ga.validate()?;
        self.composition.validate()?;
        self.stop.validate()
    }

    /// The default settings (those of `cnnsplitter modularize` without flags) for `model` on
    /// `data` with GA preset `preset`: importance grouping (10/100 groups, threshold 256),
    /// sensitivity threshold 0.05 on 2,000 images, confidence 0.9, Ntop 50..500, thresholds
    /// 0.95, 0.95, 0.85, 0.8, 200 generations, every validation image.
    pub fn new(model: PathBuf, data: DataSelection, preset: ga::Preset, seed: u64) -> Self {
        ModularizeConfig {
            model,
            dataset: data.dataset,
            tc: data.tc,
            data_dir: data.data_dir,
            limits: data.limits,
            confidence: Self::CONFIDENCE,
            grouping: GroupingConfig { seed, ..GroupingConfig::default() },
            sensitivity_threshold: Self::SENSITIVITY_THRESHOLD,
            sensitivity_images: Self::SENSITIVITY_IMAGES,
            ga: GaConfig::preset(preset),
            composition: CompositionConfig::default(),
            stop: StopConfig::default(),
            search_images: None,
            seed,
        }
    }

    /// The data selection.
    pub fn data(&self) -> DataSelection {
        DataSelection {
            dataset: self.dataset.clone(),
            tc: self.tc,
            data_dir: self.data_dir.clone(),
            limits: self.limits,
        }
    }
}

/// Accuracy on the validation and test splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitAccuracy {
    /// Validation split.
    pub validation: f64,
    /// Test split.
    pub test: f64,
}

/// The result of a run (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Dataset name.
    pub dataset: String,
    /// Accuracy of the model.
    pub model_accuracy: SplitAccuracy,
    /// Accuracy of the composed modules.
    pub composed_accuracy: SplitAccuracy,
    /// Mean pairwise Jaccard distance of the modules' kernel sets.
    pub diff: f64,
    /// Kernels of each module.
    pub kernels_per_module: Vec<usize>,
    /// MACs per image of each module.
    pub macs_per_module: Vec<u64>,
    /// Mean kernels per module.
    pub mean_kernels: f64,
    /// Mean MACs per module.
    pub mean_macs: f64,
    /// Kernels of the model.
    pub model_kernels: usize,
    /// MACs per image of the model.
    pub model_macs: u64,
    /// `1 − mean_kernels / model_kernels`.
    pub kernel_reduction: f64,
    /// `1 − mean_macs / model_macs`.
    pub mac_reduction: f64,
    /// Generations run.
    pub generations: usize,
    /// Generation of the best combination (from 0).
    pub best_generation: usize,
    /// Mean wall seconds per generation.
    pub seconds_per_generation: f64,
    /// Modules run during the search.
    pub forward_passes: u64,
    /// Module requests answered from the cache.
    pub cache_hits: u64,
    /// Engine used.
    pub engine: String,
}

/// What a module folder's `keep.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepRecord {
    /// The module's class.
    pub class: usize,
    /// Genome bits as a string of 0 and 1.
    pub genome: String,
    /// Kept kernel indices of each convolution layer of the model.
    pub kept: Vec<(String, Vec<usize>)>,
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
    engine: &dyn Engine,
    stop_after: Option<usize>,
    progress: &dyn Progress,
) -> Result<Option<Summary>> {
    run_with(config, dir, engine, RunOptions { stop_after, ..RunOptions::default() }, progress)
}

/// [`run`] with every option of the session.
pub fn run_with(
    config: Option<ModularizeConfig>,
    dir: &Path,
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
    if let Some(now) = options.model_at.filter(|now| *now != config.model)
        && out.config().exists()
    {
        config.model = now;
        write_json(&out.config(), &config)?;
    }
    let (model, data) = load_inputs(&config)?;
    if !out.config().exists() {
        write_json(&out.config(), &config)?;
    }
    check_source(&out, &config, &data)?;
    let mut runs = ModuleRuns::for_model(&model, engine, rayon::current_num_threads())?;
    runs.jobs = options.jobs.unwrap_or(runs.jobs);
    let groups = ChannelGroups::derive(&model.description)?;
    for (layer, why) in &groups.uncut {
        progress.note(&format!("note: layer `{}`: {why}", model.description.layers[*layer].name));
    }
    let stages = Stages { out: &out, config: &config, model: &model, data: &data, groups, engine, runs, progress };
    let importance = stages.importance()?;
    let layout = Layout::new(&model.description, &importance, &config.grouping);
    // Validation images: the search scores on the first `search_images`, the sensitivity table
    // on the first `sensitivity_images`.
    let val = &data.val;
    let images = data.normalization.images(val);
    let sensitivity = stages.sensitivity(&layout, &images)?;
    let sensitive: Vec<bool> = sensitivity.segments.iter().map(|r| r.sensitive).collect();
    let m = config.search_images.map_or(val.len(), |n| n.min(val.len()));
    let mut evaluator = Evaluator::new(engine, &model, &layout, &images[..m * val.image_size()], m)?.with_runs(runs)?;
    let classes = model.description.classes;
    let search = Search { out: &out, config: &config, layout: &layout, labels: &val.labels[..m], classes };
    let Some(state) = search.run(&sensitive, &mut evaluator, options.stop_after, progress)? else {
        return Ok(None);
    };
    // The modules of the best combination, and the summary.
    let best = state.best.clone().ok_or_else(|| Error::Invalid("the search ran no generation".into()))?;
    let summary = finish(&out, &model, &data, &layout, &best.genomes, &state, engine)?;
    Ok(Some(summary))
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

/// The model a modularization splits, recorded when it starts (`source.json`) and checked on
/// every resume: a model folder changed since (retrained, replaced) is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSource {
    /// The model folder.
    pub model: PathBuf,
    /// MD5 of `model.json` followed by `model.safetensors`.
    pub digest: String,
    /// MD5 of the data's splits ([`DataSplits::digest`]; absent in runs started before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
}

impl ModelSource {
    /// The source record of the model in `dir`.
    pub fn of(dir: &Path) -> Result<Self> {
        use md5::{Digest, Md5};
        let mut hasher = Md5::new();
        for file in [crate::model::DESCRIPTION_FILE, crate::model::WEIGHTS_FILE] {
            let path = dir.join(file);
            hasher.update(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
        }
        Ok(ModelSource { model: dir.to_path_buf(), digest: format!("{:x}", hasher.finalize()), data_digest: None })
    }
}

/// Records the model a new run splits, or checks that a resumed run's model is the one it
/// started from (runs started before `source.json` existed are recorded now).
fn check_source(out: &ModularizeDir, config: &ModularizeConfig, data: &DataSplits) -> Result<()> {
    let now = ModelSource { data_digest: Some(data.digest()), ..ModelSource::of(&config.model)? };
    if out.source().exists() {
        let recorded: ModelSource = read_json(&out.source())?;
        if recorded.digest != now.digest {
            return Err(Error::file(
                &config.model,
                format!(
                    "has changed since the modularization in {} started (its files' digest was {}, is {}): \
                     resume only with the model it started from, or start a new run",
                    out.root.display(),
                    recorded.digest,
                    now.digest
                ),
            ));
        }
        if recorded.data_digest.as_ref().is_some_and(|d| Some(d) != now.data_digest.as_ref()) {
            return Err(Error::file(
                &out.root,
                format!(
                    "was started on other data than `{}` gives now: the dataset's file or its source files \
                     changed; resume with the data it started on, or start a new run",
                    data.name
                ),
            ));
        }
        return Ok(());
    }
    write_json(&out.source(), &now)
}

/// The model to split and its data, checked against each other.
fn load_inputs(config: &ModularizeConfig) -> Result<(Model, DataSplits)> {
    let model = crate::folders::Artifact::open(&config.model)?.load_model()?;
    let data = config.data().load()?;
    if data.classes() != model.description.classes || data.shape() != model.description.input {
        return Err(Error::Invalid(format!(
            "model {} ({} classes, input {:?}) does not fit dataset {} ({} classes, images {:?})",
            config.model.display(),
            model.description.classes,
            model.description.input,
            data.name,
            data.classes(),
            data.shape()
        )));
    }
    Ok((model, data))
}

/// What the importance and sensitivity stages of one modularization read.
struct Stages<'a> {
    out: &'a ModularizeDir,
    config: &'a ModularizeConfig,
    model: &'a Model,
    data: &'a DataSplits,
    /// The model's channel groups.
    groups: ChannelGroups,
    engine: &'a dyn Engine,
    /// How modules run.
    runs: ModuleRuns,
    progress: &'a dyn Progress,
}

impl Stages<'_> {
    /// Stage 1: kernel importance (read back, and checked against the run, when done).
    fn importance(&self) -> Result<Importance> {
        let Stages { out, config, model, data, .. } = *self;
        if out.importance().exists() {
            let i = Importance::load(&out.importance())?;
            i.check(&self.groups, model.description.classes).map_err(|m| Error::file(out.importance(), m))?;
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
        let i = importance::compute(model, &data.train, &data.normalization, config.confidence, self.progress)?;
        write_json(&out.importance(), &i)?;
        Ok(i)
    }

    /// Stage 2: layer sensitivity on the first `sensitivity_images` validation images (`images`:
    /// all of them normalised, `[n, C, H, W]`), read back, and checked against the run, when done.
    fn sensitivity(&self, layout: &Layout, images: &[f32]) -> Result<Sensitivity> {
        let Stages { out, config, model, data, .. } = *self;
        let val = &data.val;
        let k = config.sensitivity_images.min(val.len());
        if out.sensitivity().exists() {
            let s: Sensitivity = read_json(&out.sensitivity())?;
            s.check(layout).map_err(|m| Error::file(out.sensitivity(), m))?;
            if s.threshold != config.sensitivity_threshold || s.images != k {
                return Err(Error::file(
                    out.sensitivity(),
                    format!(
                        "was measured with threshold {} on {} images, but this run's are {} and {k}: it belongs to \
                         another run",
                        s.threshold, s.images, config.sensitivity_threshold
                    ),
                ));
            }
            return Ok(s);
        }
        let segment_labels: Vec<String> =
            (0..self.groups.groups.len()).map(|g| self.groups.group_label(&model.description, g)).collect();
        let mut evaluator =
            Evaluator::new(self.engine, model, layout, &images[..k * val.image_size()], k)?.with_runs(self.runs)?;
        let s = sensitivity::measure(
            layout,
            &segment_labels,
            &mut evaluator,
            &val.labels[..k],
            model.description.classes,
            config.sensitivity_threshold,
            self.progress,
        )?;
        self.progress.event(&Event::SensitivityTable { table: &s });
        write_json(&out.sensitivity(), &s)?;
        Ok(s)
    }
}

/// Stage 3: the genetic search, saved after every generation.
struct Search<'a> {
    out: &'a ModularizeDir,
    config: &'a ModularizeConfig,
    layout: &'a Layout,
    /// Labels of the images the evaluator scores on.
    labels: &'a [u16],
    /// Number of classes (one population each).
    classes: usize,
}

impl Search<'_> {
    /// Runs (or continues) the search until it finishes, or for `stop_after` generations of this
    /// session (then `None`).
    fn run(
        &self,
        sensitive: &[bool],
        evaluator: &mut Evaluator<'_>,
        stop_after: Option<usize>,
        progress: &dyn Progress,
    ) -> Result<Option<SearchState>> {
        let (config, out) = (self.config, self.out);
        let n = self.classes;
        let mut state: SearchState = if out.state().exists() {
            let state: SearchState = read_json(&out.state())?;
            state.check(n, self.layout.bits).map_err(|m| Error::file(out.state(), m))?;
            // The log may be a line short (a kill after the state, before the log).
            write_jsonl(&out.generations(), &state.history)?;
            state
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(config.seed, u64::MAX - 1));
            let pops = (0..n)
                .map(|_| initial_population(self.layout, sensitive, config.ga.init, config.ga.population, &mut rng))
                .collect();
            initial_state(pops)
        };
        let mut ctx = SearchContext {
            layout: self.layout,
            labels: self.labels,
            classes: n,
            ga: &config.ga,
            composition: &config.composition,
            stop: &config.stop,
            seed: config.seed,
            evaluator,
        };
        let mut ran = 0;
        while !state.finished {
            if stop_after.is_some_and(|s| ran >= s) {
                return Ok(None);
            }
            progress.start(&format!("generation {}/{}", state.generation + 1, config.stop.generations), 0);
            let record = ctx.step(&mut state)?;
            progress.finish();
            progress.event(&Event::GenerationDone { generations: config.stop.generations, record: &record });
            write_json(&out.state(), &state)?;
            write_jsonl(&out.generations(), &state.history)?;
            ran += 1;
        }
        Ok(Some(state))
    }
}

fn finish(
    out: &ModularizeDir,
    model: &Model,
    data: &DataSplits,
    layout: &Layout,
    genomes: &[Bits],
    state: &SearchState,
    engine: &dyn Engine,
) -> Result<Summary> {
    let n = model.description.classes;
    let model_count = count(&model.description)?;
    let val_images = data.normalization.images(&data.val);
    let test_images = data.normalization.images(&data.test);
    let mut kernels = Vec::with_capacity(n);
    let mut macs = Vec::with_capacity(n);
    let mut val_vectors = Vec::with_capacity(n);
    let mut test_vectors = Vec::with_capacity(n);
    let conv_names: Vec<(usize, String)> =
        model.description.conv_indices().into_iter().map(|i| (i, model.description.layers[i].name.clone())).collect();
    let decoder = Decoder::new(model)?;
    for (c, genome) in genomes.iter().enumerate() {
        let masks = decoder.keep_masks(layout.masks(c, genome))?;
        let module = decoder.decode(&masks)?;
        let counted = count(&module.description)?;
        kernels.push(counted.kernels);
        macs.push(counted.macs);
        let prepared = engine.prepare(&module)?;
        let own = |images: &[f32], len: usize| -> Result<Vec<f32>> {
            Ok(prepared.logits(images, len, DEFAULT_BATCH)?.chunks(n).map(|r| r[c]).collect())
        };
        val_vectors.push(own(&val_images, data.val.len())?);
        test_vectors.push(own(&test_images, data.test.len())?);
        let dir = out.module(c);
        module.save(&dir)?;
        let kept_per_group = masks.kept_per_group();
        let kept = conv_names
            .iter()
            .map(|(i, name)| (name.clone(), decoder.groups().layers[*i].output.kept(&kept_per_group)))
            .collect();
        let record = KeepRecord {
            class: c,
            genome: (0..genome.len()).map(|i| if genome.get(i) { '1' } else { '0' }).collect(),
            kept,
        };
        write_json(&out.keep(c), &record)?;
    }
    let accuracy = |vectors: &[Vec<f32>], labels: &[u16]| {
        let r: Vec<&[f32]> = vectors.iter().map(|v| v.as_slice()).collect();
        composed_accuracy(&r, labels)
    };
    let full = engine.prepare(model)?;
    let model_acc = |images: &[f32], set: &crate::data::ImageSet| -> Result<f64> {
        let logits = full.logits(images, set.len(), DEFAULT_BATCH)?;
        Ok(metrics::accuracy(&set.labels, &argmax_rows(&logits, n)))
    };
    let sets: Vec<Bits> = genomes.iter().enumerate().map(|(c, g)| layout.kernel_set(c, g)).collect();
    let set_refs: Vec<&Bits> = sets.iter().collect();
    let mean_kernels = kernels.iter().sum::<usize>() as f64 / n as f64;
    let mean_macs = macs.iter().sum::<u64>() as f64 / n as f64;
    let summary = Summary {
        model: model.description.name.clone(),
        dataset: data.name.clone(),
        model_accuracy: SplitAccuracy {
            validation: model_acc(&val_images, &data.val)?,
            test: model_acc(&test_images, &data.test)?,
        },
        composed_accuracy: SplitAccuracy {
            validation: accuracy(&val_vectors, &data.val.labels),
            test: accuracy(&test_vectors, &data.test.labels),
        },
        diff: bitset::mean_pairwise_distance(&set_refs),
        kernels_per_module: kernels,
        macs_per_module: macs,
        mean_kernels,
        mean_macs,
        model_kernels: model_count.kernels,
        model_macs: model_count.macs,
        kernel_reduction: 1.0 - mean_kernels / model_count.kernels as f64,
        mac_reduction: 1.0 - mean_macs / model_count.macs as f64,
        generations: state.history.len(),
        best_generation: state.best.as_ref().map_or(0, |b| b.generation),
        seconds_per_generation: state.history.iter().map(|r| r.seconds).sum::<f64>()
            / state.history.len().max(1) as f64,
        forward_passes: state.history.iter().map(|r| r.forward_passes).sum(),
        cache_hits: state.history.iter().map(|r| r.cache_hits).sum(),
        engine: engine.name().to_string(),
    };
    write_json(&out.summary(), &summary)?;
    Ok(summary)
}
