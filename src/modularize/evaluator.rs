//! Forward passes of modules over the validation images, cached: each individual's own-class
//! logit vector is computed once per (class, genome), so elites and duplicates never run twice.

use std::collections::HashMap;
use std::sync::Arc;

use crate::decode::{Decoder, KeepMasks};
use crate::engine::{DEFAULT_BATCH, Engine};
use crate::error::Result;
use crate::model::Model;
use crate::modularize::bitset::Bits;
use crate::modularize::grouping::Layout;

/// Runs modules of one model over fixed images and remembers their own-class logits.
pub struct Evaluator<'a> {
    engine: &'a dyn Engine,
    decoder: Decoder<'a>,
    layout: &'a Layout,
    images: &'a [f32],
    n: usize,
    cache: HashMap<(usize, Bits), Arc<Vec<f32>>>,
    /// Modules run so far.
    pub forward_passes: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `model`'s modules (genomes laid out by `layout`) on `n` normalised images
    /// `[n, C, H, W]`.
    pub fn new(
        engine: &'a dyn Engine,
        model: &'a Model,
        layout: &'a Layout,
        images: &'a [f32],
        n: usize,
    ) -> Result<Self> {
        let decoder = Decoder::new(model)?;
        Ok(Evaluator { engine, decoder, layout, images, n, cache: HashMap::new(), forward_passes: 0, cache_hits: 0 })
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
        if let Some(v) = self.cache.get(&(class, genome.clone())) {
            self.cache_hits += 1;
            return Ok(v.clone());
        }
        let masks = self.keep_masks(self.layout.masks(class, genome))?;
        let v = Arc::new(self.run(class, &masks)?);
        self.cache.insert((class, genome.clone()), v.clone());
        Ok(v)
    }

    /// Runs the module of `masks` without the cache and returns its logit `class` per image.
    pub fn run(&mut self, class: usize, masks: &KeepMasks) -> Result<Vec<f32>> {
        let module = self.decoder.decode(masks)?;
        let classes = module.description.classes;
        let logits = self.engine.prepare(&module)?.logits(self.images, self.n, DEFAULT_BATCH)?;
        self.forward_passes += 1;
        Ok(logits.chunks(classes).map(|row| row[class]).collect())
    }

    /// Drops cached vectors of modules not in `keep` (to bound memory between generations).
    pub fn retain(&mut self, keep: &[(usize, Bits)]) {
        let keep: std::collections::HashSet<&(usize, Bits)> = keep.iter().collect();
        self.cache.retain(|k, _| keep.contains(k));
    }
}
