//! Forward passes of modules over the validation images, cached: each individual's own-class
//! logit vector is computed once per (class, genome), so elites and duplicates never run twice.
//! The modules of a request run one after the other on all threads, or several at once (each on
//! its share of the threads, see [`Evaluator::with_runs`]); the logits are the same either way.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::decode::{Decoder, KeepMasks};
use crate::engine::phases::{Phase, PhaseClock};
use crate::engine::{DEFAULT_BATCH, Engine};
use crate::error::{Error, Result};
use crate::graph::channel_groups::ChannelGroups;
use crate::model::{Model, split};
use crate::modularize::bitset::Bits;
use crate::modularize::genetic::grouping::Layout;

/// How modules run: `jobs` at once, each on threads / `jobs` threads, over the images in batches
/// of `batch`. The logits do not depend on it (tested to the bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleRuns {
    /// Modules run at once.
    pub jobs: usize,
    /// Images per forward pass.
    pub batch: usize,
}

impl ModuleRuns {
    /// One module at a time on all threads, [`DEFAULT_BATCH`] images per pass.
    pub const SERIAL: ModuleRuns = ModuleRuns { jobs: 1, batch: DEFAULT_BATCH };

    /// Models up to this many MACs per image count as small (measured: simcnn@0.25 and
    /// rescnn@0.25, 20 and 27 million, are; simcnn, 314 million, is not).
    pub const SMALL_MACS: u64 = 100_000_000;

    /// The measured best for modules of `model` on `engine` with `threads` threads (README,
    /// Performance). ONNX Runtime: for a small model, one module per thread over batches of 32
    /// images (a batch's activations then stay in a core's cache: 1.25-1.3x one module on all
    /// threads over batches of 256 for simcnn@0.25 on 2 cores); for a larger one, one module on
    /// all threads over batches of 256 (simcnn: 1.13x two modules at once). Other engines (not
    /// measured): [`ModuleRuns::SERIAL`].
    pub fn for_model(model: &Model, engine: &dyn Engine, threads: usize) -> Result<Self> {
        let macs = crate::model::count::count(&model.description)?.macs;
        let small = engine.small_models_per_thread() && macs <= Self::SMALL_MACS;
        Ok(if small { ModuleRuns { jobs: threads.max(1), batch: 32 } } else { Self::SERIAL })
    }
}

/// Runs modules of one model over fixed images and remembers their own-class logits.
pub struct Evaluator<'a> {
    engine: &'a dyn Engine,
    model: &'a Model,
    /// Set by [`Evaluator::with_runs`]: the engine set up for concurrent modules and the threads
    /// that run them.
    parallel: Option<(Box<dyn Engine>, rayon::ThreadPool)>,
    /// Images per forward pass.
    batch: usize,
    decoder: Decoder<'a>,
    layout: &'a Layout,
    images: &'a [f32],
    n: usize,
    cache: HashMap<(usize, Bits), Arc<Vec<f32>>>,
    /// Modules run so far.
    pub forward_passes: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
    /// Time per phase of the modules run so far.
    pub clock: PhaseClock,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `model`'s modules (genomes laid out by `layout`) on `n` normalised images
    /// `[n, C, H, W]`, running one module at a time.
    pub fn new(
        engine: &'a dyn Engine,
        model: &'a Model,
        layout: &'a Layout,
        images: &'a [f32],
        n: usize,
    ) -> Result<Self> {
        let decoder = Decoder::new(model)?;
        Ok(Evaluator {
            engine,
            model,
            parallel: None,
            batch: DEFAULT_BATCH,
            decoder,
            layout,
            images,
            n,
            cache: HashMap::new(),
            forward_passes: 0,
            cache_hits: 0,
            clock: PhaseClock::default(),
        })
    }

    /// Runs modules as `runs` says (by default: [`ModuleRuns::SERIAL`]).
    pub fn with_runs(mut self, runs: ModuleRuns) -> Result<Self> {
        let ModuleRuns { jobs, batch } = runs;
        Error::check_at_least("module jobs", jobs, 1)?;
        Error::check_at_least("module batch", batch, 1)?;
        self.batch = batch;
        self.parallel = if jobs > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(jobs)
                .thread_name(|i| format!("module-{i}"))
                .build()
                .map_err(|e| Error::Engine(format!("cannot start {jobs} module threads: {e}")))?;
            Some((self.engine.concurrent(jobs), pool))
        } else {
            None
        };
        Ok(self)
    }

    /// Number of images.
    pub fn images(&self) -> usize {
        self.n
    }

    /// `masks` checked against the model ([`Decoder::keep_masks`]).
    pub fn keep_masks(&self, masks: Vec<Vec<bool>>) -> Result<KeepMasks> {
        self.decoder.keep_masks(masks)
    }

    /// Logit `class` of class `class`'s module for `genome`, for every image (cached).
    pub fn own_logits(&mut self, class: usize, genome: &Bits) -> Result<Arc<Vec<f32>>> {
        let mut out = self.own_logits_many(&[(class, genome.clone())])?;
        Ok(out.remove(0))
    }

    /// [`Evaluator::own_logits`] of every `(class, genome)` request, in request order. Requests not
    /// in the cache run once each (a repeat within `requests` counts as a cache hit), several at
    /// once after [`Evaluator::with_runs`].
    pub fn own_logits_many(&mut self, requests: &[(usize, Bits)]) -> Result<Vec<Arc<Vec<f32>>>> {
        let mut missing: Vec<&(usize, Bits)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for key in requests {
            if !self.cache.contains_key(key) && seen.insert(key) {
                missing.push(key);
            }
        }
        let masks = missing
            .iter()
            .map(|(class, genome)| self.keep_masks(self.layout.masks(*class, genome)).map(|m| (*class, m)))
            .collect::<Result<Vec<_>>>()?;
        let vectors = self.run_many(&masks)?;
        self.forward_passes += missing.len() as u64;
        self.cache_hits += (requests.len() - missing.len()) as u64;
        for (key, v) in missing.into_iter().zip(vectors) {
            self.cache.insert(key.clone(), Arc::new(v));
        }
        Ok(requests.iter().map(|key| self.cache[key].clone()).collect())
    }

    /// Runs the module of each `(class, masks)` without the cache; its logit `class` per image.
    pub fn run_many(&self, modules: &[(usize, KeepMasks)]) -> Result<Vec<Vec<f32>>> {
        self.run_from(0, self.images, self.n, modules)
    }

    /// Runs the layers from `cut` on (a usable cut, see [`crate::model::split`]) of the module of
    /// each `(class, masks)` over `inputs`: `n` activations entering layer `cut` (the images when
    /// `cut` is 0), `[n, C, H, W]`. Returns each module's logit `class` per input. The masks must
    /// leave the layers before `cut` as they are.
    pub fn run_from(
        &self,
        cut: usize,
        inputs: &[f32],
        n: usize,
        modules: &[(usize, KeepMasks)],
    ) -> Result<Vec<Vec<f32>>> {
        let run = |engine: &dyn Engine, (class, masks): &(usize, KeepMasks)| -> Result<Vec<f32>> {
            let module = self.clock.time(Phase::Decode, || {
                let module = self.decoder.decode(masks)?;
                if cut == 0 { Ok(module) } else { split::suffix(&module, cut) }
            })?;
            let classes = module.description.classes;
            let prepared = engine.prepare_timed(&module, &self.clock)?;
            let logits = self.clock.time(Phase::Forward, || prepared.logits(inputs, n, self.batch))?;
            Ok(logits.chunks(classes).map(|row| row[*class]).collect())
        };
        match &self.parallel {
            None => modules.iter().map(|m| run(self.engine, m)).collect(),
            Some((engine, pool)) => pool.install(|| modules.par_iter().map(|m| run(engine.as_ref(), m)).collect()),
        }
    }

    /// The model's activations entering layer `cut` (a usable cut; for 0 the images themselves)
    /// for images `start..start + len`: `[len, C, H, W]`.
    pub fn activations(&self, cut: usize, start: usize, len: usize) -> Result<Vec<f32>> {
        let per = self.images.len() / self.n.max(1);
        if cut == 0 {
            return Ok(self.images[start * per..(start + len) * per].to_vec());
        }
        let prefix = split::prefix(self.model, cut)?;
        let prepared = self.engine.prepare_timed(&prefix, &self.clock)?;
        let images = &self.images[start * per..(start + len) * per];
        self.clock.time(Phase::Forward, || prepared.logits(images, len, self.batch))
    }

    /// The whole model's logits `[n, classes]` on the images.
    pub fn model_logits(&self) -> Result<Vec<f32>> {
        let prepared = self.engine.prepare_timed(self.model, &self.clock)?;
        self.clock.time(Phase::Forward, || prepared.logits(self.images, self.n, self.batch))
    }

    /// The model.
    pub fn model(&self) -> &Model {
        self.model
    }

    /// The model's channel groups (one per genome segment).
    pub fn channel_groups(&self) -> &ChannelGroups {
        self.decoder.groups()
    }

    /// Runs the module of `masks` without the cache and returns its logit `class` per image.
    pub fn run(&mut self, class: usize, masks: &KeepMasks) -> Result<Vec<f32>> {
        self.forward_passes += 1;
        let mut out = self.run_many(&[(class, masks.clone())])?;
        Ok(out.remove(0))
    }

    /// Drops cached vectors of modules not in `keep` (to bound memory between generations).
    pub fn retain(&mut self, keep: &[(usize, Bits)]) {
        let keep: std::collections::HashSet<&(usize, Bits)> = keep.iter().collect();
        self.cache.retain(|k, _| keep.contains(k));
    }
}
