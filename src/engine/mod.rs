//! Inference engines: run a model's forward pass in eval mode over batches of images.
//!
//! The genetic search runs many small networks over the same images, so an engine first
//! *prepares* a model (builds its graph once) and then runs batches through it.

pub mod burn;
pub mod import_check;
pub mod ort;
pub mod phases;

use crate::compute::Compute;
use crate::error::Result;
use crate::model::Model;
use phases::{Phase, PhaseClock};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of images an engine runs at once by default.
pub const DEFAULT_BATCH: usize = 256;

/// Something that turns a model into a runnable form.
pub trait Engine: Send + Sync {
    /// Short name, e.g. `burn`.
    fn name(&self) -> &'static str;
    /// Builds the runnable form of `model`.
    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>>;

    /// [`Engine::prepare`], its time added to `clock` ([`Phase::Export`] for turning the model
    /// into the engine's input where the engine has such a step, [`Phase::Session`] for the rest).
    fn prepare_timed(&self, model: &Model, clock: &PhaseClock) -> Result<Box<dyn PreparedModel>> {
        clock.time(Phase::Session, || self.prepare(model))
    }

    /// The same engine set up for `jobs` models running at once on different threads, each with
    /// its share of the compute threads (at least one). Outputs are the same as this engine's.
    fn concurrent(&self, jobs: usize) -> Box<dyn Engine>;

    /// Whether many small models run fastest one per thread, each over small batches, rather
    /// than one at a time on all threads (measured for ONNX Runtime; see
    /// `ModuleRuns::for_model`).
    fn small_models_per_thread(&self) -> bool {
        false
    }

    /// Builds one runnable form of several models that take the same input: its logits are
    /// `[n, Σ classes]`, model k's in its own block of columns. By default each model is prepared
    /// on its own and the outputs are interleaved per image.
    fn prepare_many(&self, models: &[Model]) -> Result<Box<dyn PreparedModel>> {
        let parts = models.iter().map(|m| self.prepare(m)).collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Stacked(parts)))
    }
}

/// Several prepared models run one after the other, their logits side by side.
struct Stacked(Vec<Box<dyn PreparedModel>>);

impl PreparedModel for Stacked {
    fn logits(&self, images: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
        let outputs = self.0.iter().map(|p| p.logits(images, n, batch)).collect::<Result<Vec<_>>>()?;
        let total = self.classes();
        let mut out = vec![0f32; n * total];
        let mut offset = 0;
        for (p, o) in self.0.iter().zip(&outputs) {
            let k = p.classes();
            for (i, row) in o.chunks(k).enumerate() {
                out[i * total + offset..i * total + offset + k].copy_from_slice(row);
            }
            offset += k;
        }
        Ok(out)
    }

    fn classes(&self) -> usize {
        self.0.iter().map(|p| p.classes()).sum()
    }
}

/// A model ready to run on one engine.
pub trait PreparedModel: Send {
    /// Logits `[n, classes]` (row-major) for `n` images given row-major as `[n, C, H, W]`,
    /// with `C, H, W` the model's input shape. Runs in chunks of at most `batch` images.
    fn logits(&self, images: &[f32], n: usize, batch: usize) -> Result<Vec<f32>>;
    /// Number of classes (the width of the logits).
    fn classes(&self) -> usize;
}

/// Which engine a command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// ONNX Runtime when its library is found, else burn (with a one-line hint).
    #[default]
    Auto,
    /// burn's pure-Rust CPU backend (always available).
    Burn,
    /// ONNX Runtime (an error when its library is not found).
    Ort,
}

/// An engine picked for a command, with a note to show the user when the choice fell back.
pub struct Selected {
    /// The engine.
    pub engine: Box<dyn Engine>,
    /// One line for the user, e.g. how to get the faster engine.
    pub note: Option<String>,
}

/// Picks the engine for `choice` on `compute` (its device for burn, its threads for ONNX
/// Runtime).
pub fn select(choice: EngineChoice, compute: &Compute) -> Result<Selected> {
    let threads = compute.threads();
    match choice {
        EngineChoice::Burn => Ok(Selected { engine: Box::new(burn::BurnEngine::new(compute)), note: None }),
        EngineChoice::Ort => Ok(Selected { engine: Box::new(ort::OrtEngine::new(threads)?), note: None }),
        EngineChoice::Auto => match ort::OrtEngine::new(threads) {
            Ok(e) => Ok(Selected { engine: Box::new(e), note: None }),
            Err(e) => Ok(Selected {
                engine: Box::new(burn::BurnEngine::new(compute)),
                note: Some(format!(
                    "note: using the pure-Rust engine ({e}); for 3-6x faster inference run \
                     `pip install onnxruntime` for the python3 on PATH, or set {} to libonnxruntime",
                    ort::DYLIB_ENV
                )),
            }),
        },
    }
}

impl crate::choice::Choice for EngineChoice {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (EngineChoice::Auto, "auto", "ONNX Runtime when its library is found, else burn (with a one-line hint)"),
        (EngineChoice::Burn, "burn", "burn's pure-Rust CPU backend (always available)"),
        (EngineChoice::Ort, "ort", "ONNX Runtime (an error when its library is not found)"),
    ];
}

/// Random standard-normal images `[n, C, H, W]`.
pub fn random_images(n: usize, input: [usize; 3], seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    (0..n * input.iter().product::<usize>()).map(|_| rng.sample::<f32, _>(normal)).collect()
}
