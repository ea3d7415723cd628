//! Forward passes of modules over the validation images, cached: each individual's own-class
//! logit vector is computed once per (class, genome), so elites and duplicates never run twice.

use std::collections::HashMap;
use std::sync::Arc;

use crate::decode::decode;
use crate::engine::{DEFAULT_BATCH, Engine};
use crate::error::Result;
use crate::model::Model;
use crate::modularize::bitset::Bits;

/// Runs modules of one model over fixed images and remembers their own-class logits.
pub struct Evaluator<'a> {
    engine: &'a dyn Engine,
    model: &'a Model,
    images: &'a [f32],
    n: usize,
    cache: HashMap<(usize, Bits), Arc<Vec<f32>>>,
    /// Modules run so far.
    pub forward_passes: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `model`'s modules on `n` normalised images `[n, C, H, W]`.
    pub fn new(engine: &'a dyn Engine, model: &'a Model, images: &'a [f32], n: usize) -> Self {
        Evaluator { engine, model, images, n, cache: HashMap::new(), forward_passes: 0, cache_hits: 0 }
    }

    /// Number of images.
    pub fn images(&self) -> usize {
        self.n
    }

    /// Logit `class` of the module that keeps `masks` (one per channel group), for every image;
    /// `key` identifies the module in the cache.
    pub fn own_logits(&mut self, class: usize, key: &Bits, masks: &[Vec<bool>]) -> Result<Arc<Vec<f32>>> {
        if let Some(v) = self.cache.get(&(class, key.clone())) {
            self.cache_hits += 1;
            return Ok(v.clone());
        }
        let v = Arc::new(self.run(class, masks)?);
        self.cache.insert((class, key.clone()), v.clone());
        Ok(v)
    }

    /// Runs the module of `masks` without the cache and returns its logit `class` per image.
    pub fn run(&mut self, class: usize, masks: &[Vec<bool>]) -> Result<Vec<f32>> {
        let module = decode(self.model, masks)?;
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
