//! Models: a description (layers) plus weights, saved as a folder of `model.json` and
//! `model.safetensors`.

pub mod count;
pub mod description;
pub mod import;
pub mod net;
pub mod onnx_import;
pub mod shape;
pub mod split;
pub mod weights;
pub mod zoo;

use std::path::Path;

use crate::error::{Error, Result};
use crate::files::write_atomic;
use description::ModelDescription;
use weights::Weights;

/// File name of the description inside a model folder.
pub const DESCRIPTION_FILE: &str = "model.json";
/// File name of the weights inside a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// A description with weights that match it (checked on construction).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The layers.
    pub description: ModelDescription,
    /// The tensors, named after the layers.
    pub weights: Weights,
}

impl Model {
    /// Pairs a description with weights, checking every tensor's presence and shape.
    pub fn new(description: ModelDescription, weights: Weights) -> Result<Self> {
        description.validate()?;
        weights.check(&description)?;
        Ok(Model { description, weights })
    }

    /// A model of architecture `arch` (e.g. `simcnn@0.25`) with fresh weights from `seed`.
    pub fn init(arch: &str, input: [usize; 3], classes: usize, seed: u64) -> Result<Self> {
        let description = zoo::build(arch, input, classes)?;
        let params = count::count(&description)?.params;
        check_memory(params.saturating_mul(4), &format!("the weights of `{arch}` ({params} parameters)"))?;
        let weights = Weights::init(&description, seed)?;
        Model::new(description, weights)
    }

    /// Loads `dir/model.json` and `dir/model.safetensors`; errors name the file and tensor.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "is not a model folder (expected a folder holding model.json and model.safetensors)",
            ));
        }
        let desc_path = dir.join(DESCRIPTION_FILE);
        let description = ModelDescription::load(&desc_path)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights = Weights::load(&weights_path)?;
        weights.check(&description).map_err(|e| e.in_file(&weights_path))?;
        weights.check_finite().map_err(|e| e.in_file(&weights_path))?;
        Ok(Model { description, weights })
    }

    /// Writes the model folder (created if needed). Each file is written under a temporary name
    /// and renamed, so an interrupted save never leaves a truncated file behind.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(&dir.join(WEIGHTS_FILE), &self.weights.to_safetensors()?)?;
        write_atomic(&dir.join(DESCRIPTION_FILE), self.description.to_json().as_bytes())?;
        Ok(())
    }
}

/// An error when `bytes` (for `what`) exceed the memory this machine has available now
/// (`MemAvailable` of /proc/meminfo; no check where that cannot be read).
pub fn check_memory(bytes: usize, what: &str) -> Result<()> {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<usize>().ok().map(|kib| kib.saturating_mul(1024))
    });
    match available {
        Some(available) if bytes > available => Err(Error::Invalid(format!(
            "{what} need {:.1} GiB, but this machine has {:.1} GiB of memory available",
            bytes as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        ))),
        _ => Ok(()),
    }
}
