//! What every search method ends with, whatever found the masks: the module folders
//! (`modules/class_NN/` with `keep.json`), their composed accuracy and `summary.json`.

use serde::{Deserialize, Serialize};

use crate::data::ImageSet;
use crate::data::mix::DataSplits;
use crate::decode::Decoder;
use crate::engine::{DEFAULT_BATCH, Engine};
use crate::error::Result;
use crate::eval::metrics::{self, argmax_rows};
use crate::files::write_json;
use crate::folders::ModularizeDir;
use crate::model::Model;
use crate::model::count::count;
use crate::modularize::bitset::{self, Bits};
use crate::modularize::{SearchOutcome, kernel_set};

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
    /// The genetic method's genome bits as a string of 0 and 1 (absent for other methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genome: Option<String>,
    /// Kept kernel indices of each convolution layer of the model.
    pub kept: Vec<(String, Vec<usize>)>,
}

/// Accuracy of the composed model of `vectors` (one own-class logit vector per class, each over
/// the same images) on `labels`: each image goes to the class whose module scores it highest.
pub fn composed_accuracy(vectors: &[&[f32]], labels: &[u16]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let correct = (0..labels.len())
        .filter(|&s| {
            let mut best = 0;
            for c in 1..vectors.len() {
                if vectors[c][s] > vectors[best][s] {
                    best = c;
                }
            }
            best == labels[s] as usize
        })
        .count();
    correct as f64 / labels.len() as f64
}

/// Writes the modules `outcome` found (one per class) as model folders with their `keep.json`,
/// measures them beside `model` on the validation and test splits of `data`, and writes and
/// returns the summary.
pub(crate) fn write_modules(
    out: &ModularizeDir,
    model: &Model,
    data: &DataSplits,
    outcome: &SearchOutcome,
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
    for (c, found) in outcome.modules.iter().enumerate() {
        let masks = &found.masks;
        let module = decoder.decode(masks)?;
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
        let record = KeepRecord { class: c, genome: found.genome.clone(), kept };
        write_json(&out.keep(c), &record)?;
    }
    let accuracy = |vectors: &[Vec<f32>], labels: &[u16]| {
        let r: Vec<&[f32]> = vectors.iter().map(|v| v.as_slice()).collect();
        composed_accuracy(&r, labels)
    };
    let full = engine.prepare(model)?;
    let model_acc = |images: &[f32], set: &ImageSet| -> Result<f64> {
        let logits = full.logits(images, set.len(), DEFAULT_BATCH)?;
        Ok(metrics::accuracy(&set.labels, &argmax_rows(&logits, n)))
    };
    let sets: Vec<Bits> = outcome.modules.iter().map(|m| kernel_set(&m.masks, decoder.groups())).collect();
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
        generations: outcome.stats.generations,
        best_generation: outcome.stats.best_generation,
        seconds_per_generation: outcome.stats.seconds_per_generation,
        forward_passes: outcome.stats.forward_passes,
        cache_hits: outcome.stats.cache_hits,
        engine: engine.name().to_string(),
    };
    write_json(&out.summary(), &summary)?;
    Ok(summary)
}
