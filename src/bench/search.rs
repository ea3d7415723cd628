//! `bench search`: generations of the real genetic search loop on random weights and random
//! images, with modules that keep about half of every layer's kernels (every genome bit a fair
//! coin), so the forward work matches `bench modules --keep 0.5` and the PyTorch reference.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bench::median;
use crate::decode::Decoder;
use crate::engine::Engine;
use crate::engine::phases::PhaseSeconds;
use crate::engine::random_images;
use crate::error::{Error, Result};
use crate::graph::channel_groups::ChannelGroups;
use crate::model::Model;
use crate::model::count::count;
use crate::modularize::genetic::composition::CompositionConfig;
use crate::modularize::genetic::evaluator::{Evaluator, ModuleRuns};
use crate::modularize::genetic::ga::{GaConfig, InitKind, Preset, initial_population};
use crate::modularize::genetic::grouping::{GroupingConfig, Layout};
use crate::modularize::genetic::search::{SearchContext, StopConfig, initial_state};
use crate::modularize::importance::{GroupImportance, Importance};
use crate::progress::Progress;

/// What `bench search` runs.
#[derive(Debug, Clone)]
pub struct SearchBench {
    /// Architecture, e.g. `simcnn@0.25`.
    pub arch: String,
    /// Classes (N): one population each.
    pub classes: usize,
    /// Individuals per class (P).
    pub population: usize,
    /// Validation images (V), 3x32x32.
    pub images: usize,
    /// Generations to run (G).
    pub generations: usize,
    /// Modules run at once (`None`: [`ModuleRuns::for_model`]'s choice).
    pub jobs: Option<usize>,
    /// Images per forward pass (`None`: [`ModuleRuns::for_model`]'s choice).
    pub batch: Option<usize>,
    /// Seed of the weights, images, labels and populations.
    pub seed: u64,
}

/// Result of `bench search`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    /// Always `cnnsplitter`.
    pub tool: &'static str,
    /// Always `search`.
    pub mode: &'static str,
    /// Engine name.
    pub engine: &'static str,
    /// Architecture.
    pub arch: String,
    /// Compute threads.
    pub threads: usize,
    /// Modules run at once.
    pub jobs: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Classes (N).
    pub classes: usize,
    /// Individuals per class (P).
    pub population: usize,
    /// Validation images (V).
    pub images: usize,
    /// Generations run.
    pub generations: usize,
    /// Mean share of the model's kernels a first-generation module keeps.
    pub mean_kernel_share: f64,
    /// Mean share of the model's MACs a first-generation module costs.
    pub mean_mac_share: f64,
    /// Wall seconds of each generation.
    pub generation_seconds: Vec<f64>,
    /// Modules run in each generation (the rest came from the cache).
    pub generation_modules: Vec<u64>,
    /// Median wall seconds of the generations after the first (the first when only one ran).
    pub seconds_per_generation: f64,
    /// Modules run × images / wall seconds, over the generations after the first (the first when
    /// only one ran).
    pub module_images_per_s: f64,
    /// Seconds per phase over those generations, summed over the threads running modules.
    pub phase_seconds: PhaseSeconds,
    /// Each phase's share of `phase_seconds`.
    pub phase_shares: PhaseSeconds,
}

impl SearchBench {
    /// Checks that every count is at least its minimum (population 2, the others 1).
    pub fn validate(&self) -> Result<()> {
        Error::check_at_least("classes", self.classes, 2)?;
        Error::check_at_least("population", self.population, 2)?;
        Error::check_at_least("images", self.images, 1)?;
        Error::check_at_least("generations", self.generations, 1)?;
        Error::check_at_least("jobs", self.jobs.unwrap_or(1), 1)?;
        Error::check_at_least("batch", self.batch.unwrap_or(1), 1)
    }

    /// Runs the generations with `engine` on `threads` compute threads.
    pub fn run(&self, engine: &dyn Engine, threads: usize, progress: &dyn Progress) -> Result<SearchReport> {
        self.validate()?;
        let model = Model::init(&self.arch, [3, 32, 32], self.classes, self.seed)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let importance = random_importance(&model, &mut rng)?;
        let layout = Layout::new(&model.description, &importance, &GroupingConfig::default());
        let ga = GaConfig { init: InitKind::Random, ..GaConfig::preset(Preset::ReferenceCode) }
            .with_population(self.population);
        let populations: Vec<_> =
            (0..self.classes).map(|_| initial_population(&layout, &[], ga.init, ga.population, &mut rng)).collect();
        let (mean_kernel_share, mean_mac_share) = module_shares(&model, &layout, &populations)?;
        let images = random_images(self.images, model.description.input, self.seed);
        let labels: Vec<u16> = (0..self.images).map(|_| rng.random_range(0..self.classes) as u16).collect();
        let chosen = ModuleRuns::for_model(&model, engine, threads)?;
        let runs = ModuleRuns { jobs: self.jobs.unwrap_or(chosen.jobs), batch: self.batch.unwrap_or(chosen.batch) };
        let mut evaluator = Evaluator::new(engine, &model, &layout, &images, self.images)?.with_runs(runs)?;
        let composition = CompositionConfig::default();
        let stop = StopConfig { generations: self.generations, patience: None };
        let mut state = initial_state(populations);
        let mut seconds = Vec::new();
        let mut modules = Vec::new();
        let mut phases = Vec::new();
        progress.start("search generations", self.generations as u64);
        for _ in 0..self.generations {
            let before = evaluator.clock.seconds();
            let mut ctx = SearchContext {
                layout: &layout,
                labels: &labels,
                classes: self.classes,
                ga: &ga,
                composition: &composition,
                stop: &stop,
                seed: self.seed,
                evaluator: &mut evaluator,
            };
            let record = ctx.step(&mut state)?;
            seconds.push(record.seconds);
            modules.push(record.forward_passes);
            phases.push(evaluator.clock.seconds().since(&before));
            progress.advance(1);
        }
        progress.finish();
        let later = if self.generations > 1 { 1 } else { 0 };
        let seconds_per_generation = median(seconds[later..].to_vec());
        let run: u64 = modules[later..].iter().sum();
        let wall: f64 = seconds[later..].iter().sum();
        let phase_seconds = phases[later..].iter().fold(PhaseSeconds::default(), |a, p| a.plus(p));
        Ok(SearchReport {
            tool: "cnnsplitter",
            mode: "search",
            engine: engine.name(),
            arch: model.description.name.clone(),
            threads,
            jobs: runs.jobs,
            batch: runs.batch,
            classes: self.classes,
            population: self.population,
            images: self.images,
            generations: self.generations,
            mean_kernel_share,
            mean_mac_share,
            generation_seconds: seconds,
            generation_modules: modules,
            seconds_per_generation,
            module_images_per_s: run as f64 * self.images as f64 / wall,
            phase_seconds,
            phase_shares: phase_seconds.shares(),
        })
    }
}

/// Importance drawn uniformly at random per class and kernel (the grouping needs an order; a
/// random model has no meaningful one).
pub fn random_importance(model: &Model, rng: &mut impl Rng) -> Result<Importance> {
    let groups = ChannelGroups::derive(&model.description)?;
    let classes = model.description.classes;
    Ok(Importance {
        confidence: 0.0,
        samples_per_class: vec![0; classes],
        fallback_classes: Vec::new(),
        groups: (0..groups.groups.len())
            .map(|g| GroupImportance {
                layers: groups.group_label(&model.description, g),
                measured_at: String::new(),
                per_class: (0..classes)
                    .map(|_| (0..groups.groups[g].width).map(|_| rng.random::<f64>()).collect())
                    .collect(),
            })
            .collect(),
    })
}

/// Mean kernel share and MAC share of the modules of `populations`.
fn module_shares(
    model: &Model,
    layout: &Layout,
    populations: &[Vec<crate::modularize::bitset::Bits>],
) -> Result<(f64, f64)> {
    let decoder = Decoder::new(model)?;
    let full = count(&model.description)?;
    let (mut kernels, mut macs, mut k) = (0.0, 0.0, 0usize);
    for (class, population) in populations.iter().enumerate() {
        for genome in population {
            let module = decoder.decode(&layout.keep_masks(&decoder, class, genome)?)?;
            let counted = count(&module.description)?;
            kernels += counted.kernels as f64 / full.kernels as f64;
            macs += counted.macs as f64 / full.macs as f64;
            k += 1;
        }
    }
    Ok((kernels / k.max(1) as f64, macs / k.max(1) as f64))
}
