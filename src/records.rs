//! The rows that progress events carry and that the stages write to their logs and reports
//! (`train.jsonl`, `search/generations.jsonl`, `sensitivity.json`). They sit on the ground floor
//! so that [`crate::progress`] can carry them without importing the stages that produce them.

use serde::{Deserialize, Serialize};

/// One finished epoch, as written to `train.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Accuracy on the training batches as trained (with augmentation and dropout).
    pub train_accuracy: f64,
    /// Accuracy on the validation split (eval mode).
    pub validation_accuracy: f64,
    /// Wall seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Training images per second.
    pub images_per_s: f64,
}

/// One generation's line of `generations.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// Generation, from 0.
    pub generation: usize,
    /// Fitness of the best composed model.
    pub best_fitness: f64,
    /// Its validation accuracy.
    pub accuracy: f64,
    /// Its Diff.
    pub diff: f64,
    /// Mean kernels per module of it.
    pub kernels: f64,
    /// Accuracy weight in effect.
    pub accuracy_weight: f64,
    /// Composed models that survived the pruning.
    pub survivors: usize,
    /// Modules run this generation.
    pub forward_passes: u64,
    /// Module requests answered from the cache this generation.
    pub cache_hits: u64,
    /// Wall seconds.
    pub seconds: f64,
}

/// Sensitivity of every segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// Accuracy loss at 90% drop that still counts as insensitive.
    pub threshold: f64,
    /// Composed accuracy with nothing dropped.
    pub base_accuracy: f64,
    /// Images the table was measured on.
    pub images: usize,
    /// One row per segment.
    pub segments: Vec<SensitivityRow>,
}

/// One segment's row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    /// The segment's layers, e.g. `conv_1+conv_3`.
    pub layers: String,
    /// Composed accuracy at each of [`crate::modularize::genetic::sensitivity::RATIOS`].
    pub accuracy: Vec<f64>,
    /// Whether dropping 90% loses more than the threshold.
    pub sensitive: bool,
}
