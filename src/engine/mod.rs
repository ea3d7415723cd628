//! Inference engines: run a model's forward pass in eval mode over batches of images.
//!
//! The genetic search runs many small networks over the same images, so an engine first
//! *prepares* a model (builds its graph once) and then runs batches through it.

pub mod burn;

use crate::error::Result;
use crate::model::Model;

/// Number of images an engine runs at once by default.
pub const DEFAULT_BATCH: usize = 256;

/// Something that turns a model into a runnable form.
pub trait Engine: Send + Sync {
    /// Short name, e.g. `burn`.
    fn name(&self) -> &'static str;
    /// Builds the runnable form of `model`.
    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>>;
}

/// A model ready to run on one engine.
pub trait PreparedModel: Send {
    /// Logits `[n, classes]` (row-major) for `n` images given row-major as `[n, C, H, W]`,
    /// with `C, H, W` the model's input shape. Runs in chunks of at most `batch` images.
    fn logits(&self, images: &[f32], n: usize, batch: usize) -> Result<Vec<f32>>;
    /// Number of classes (the width of the logits).
    fn classes(&self) -> usize;
}
