//! Patching a weak model with a strong model's module (SPEC §6): the module's target-class (TC)
//! score, min-max calibrated on the TC's training images, replaces the weak model's softmax
//! probability of the TC.
//!
//! A patched model is a folder: `patch.json` (class mapping and calibration), `weak/` and
//! `module/` (model folders). [`Classifier`] loads it or a plain model folder alike.

pub mod classifier;
pub mod metrics;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::mix::DataSplits;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::json::{read_json, write_json};
use crate::model::Model;
use crate::train::evaluate::logits;
use crate::train::metrics::argmax_rows;
pub use classifier::Classifier;
use metrics::{TcMetrics, tc_metrics};

/// File of a patched-model folder that holds its [`PatchSpec`].
pub const PATCH_FILE: &str = "patch.json";

/// The range of the module's TC logit over the TC's training images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Smallest TC logit.
    pub min: f32,
    /// Largest TC logit.
    pub max: f32,
}

impl Calibration {
    /// The range of `tc_logits`; an error when there are none or one is not finite.
    pub fn from_logits(tc_logits: &[f32]) -> Result<Self> {
        if tc_logits.is_empty() {
            return Err(Error::Invalid("no training images of the target class to calibrate the module on".into()));
        }
        if tc_logits.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("the module gives a non-finite target-class logit".into()));
        }
        let min = tc_logits.iter().copied().fold(f32::INFINITY, f32::min);
        let max = tc_logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Ok(Calibration { min, max })
    }

    /// `(logit - min) / (max - min)`, not clipped (as the original code); when every
    /// calibration logit was the same (`max == min`) the range counts as 1.
    pub fn score(&self, logit: f32) -> f32 {
        let range = self.max - self.min;
        (logit - self.min) / if range > 0.0 { range } else { 1.0 }
    }
}

/// How a module patches a weak model (`patch.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PatchSpec {
    /// The TC's index in the weak model's outputs.
    pub tc_weak: usize,
    /// The TC's index in the module's (strong model's) outputs.
    pub tc_strong: usize,
    /// The module's TC logit range on the TC's training images.
    pub calibration: Calibration,
}

/// Patched scores `[n, weak_classes]`: the softmax of each weak row with the TC's probability
/// replaced by the module's calibrated TC score. `weak` is `[n, weak_classes]`, `module`
/// is `[n, module_classes]`.
pub fn patched_scores(
    weak: &[f32],
    weak_classes: usize,
    module: &[f32],
    module_classes: usize,
    spec: &PatchSpec,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(weak.len());
    for (row, m) in weak.chunks(weak_classes).zip(module.chunks(module_classes)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let start = out.len();
        out.extend(exp.iter().map(|e| e / sum));
        out[start + spec.tc_weak] = spec.calibration.score(m[spec.tc_strong]);
    }
    out
}

/// Weak and patched metrics for the TC on the weak data's test split (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchReport {
    /// The weak model folder.
    pub weak_model: PathBuf,
    /// The module folder.
    pub module: PathBuf,
    /// Dataset of the weak model.
    pub dataset: String,
    /// Class mapping and calibration.
    pub spec: PatchSpec,
    /// TC training images the calibration saw.
    pub calibration_images: usize,
    /// Test images.
    pub test_images: usize,
    /// The weak model alone.
    pub weak: TcMetrics,
    /// The patched model.
    pub patched: TcMetrics,
}

/// Patches the weak model in `weak_dir` with the module in `module_dir` (TC `tc_weak` in the
/// weak model is `tc_strong` in the module), calibrating on `data.train`'s TC images and
/// measuring on `data.test`. Writes the patched model and `report.json` to `out`, which must
/// not exist yet; nothing is left there on an error.
pub fn patch(
    weak_dir: &Path,
    module_dir: &Path,
    tc_weak: usize,
    tc_strong: usize,
    data: &DataSplits,
    engine: &dyn Engine,
    out: &Path,
) -> Result<PatchReport> {
    if out.exists() {
        return Err(Error::file(out, "already exists: choose another --out or remove it"));
    }
    let weak = Model::load(weak_dir)?;
    let module = Model::load(module_dir)?;
    if weak.description.classes != data.classes() {
        return Err(Error::Invalid(format!(
            "weak model {} has {} classes, but dataset {} has {}",
            weak_dir.display(),
            weak.description.classes,
            data.name,
            data.classes()
        )));
    }
    if tc_weak >= weak.description.classes || tc_strong >= module.description.classes {
        return Err(Error::Invalid(format!(
            "--tc {tc_weak}={tc_strong} is out of range: the weak model has {} classes, the module {}",
            weak.description.classes, module.description.classes
        )));
    }
    let tc_train = data.train.select(|label| label as usize == tc_weak);
    let module_train = logits(engine, &module, &tc_train, &data.normalization)?;
    let calibration = Calibration::from_logits(
        &module_train.chunks(module.description.classes).map(|r| r[tc_strong]).collect::<Vec<_>>(),
    )?;
    let spec = PatchSpec { tc_weak, tc_strong, calibration };
    let patched = PatchedModel { weak, module, spec };

    let classes = patched.weak.description.classes;
    let weak_logits = logits(engine, &patched.weak, &data.test, &data.normalization)?;
    let module_logits = logits(engine, &patched.module, &data.test, &data.normalization)?;
    let scores = patched_scores(&weak_logits, classes, &module_logits, patched.module.description.classes, &spec);
    let (weak_pred, patched_pred) = (argmax_rows(&weak_logits, classes), argmax_rows(&scores, classes));
    let report = PatchReport {
        weak_model: weak_dir.to_path_buf(),
        module: module_dir.to_path_buf(),
        dataset: data.name.clone(),
        spec,
        calibration_images: tc_train.len(),
        test_images: data.test.len(),
        weak: tc_metrics(&data.test.labels, &weak_pred, tc_weak),
        patched: tc_metrics(&data.test.labels, &patched_pred, tc_weak),
    };

    // Write into a sibling temporary folder, then move it into place.
    let mut tmp = out.to_path_buf();
    tmp.as_mut_os_string().push(".partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = patched.save(&tmp).and_then(|_| write_json(&tmp.join("report.json"), &report));
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(report)
}

/// A weak model patched with a module.
#[derive(Debug, Clone)]
pub struct PatchedModel {
    /// The weak model.
    pub weak: Model,
    /// The strong model's module for the TC.
    pub module: Model,
    /// Class mapping and calibration.
    pub spec: PatchSpec,
}

impl PatchedModel {
    /// Whether `dir` holds a patched model.
    pub fn is_patched(dir: &Path) -> bool {
        dir.join(PATCH_FILE).is_file()
    }

    /// Loads a patched-model folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let spec: PatchSpec = read_json(&dir.join(PATCH_FILE))?;
        let weak = Model::load(&dir.join("weak"))?;
        let module = Model::load(&dir.join("module"))?;
        if weak.description.input != module.description.input
            || spec.tc_weak >= weak.description.classes
            || spec.tc_strong >= module.description.classes
        {
            return Err(Error::file(dir.join(PATCH_FILE), "does not fit the weak model and module beside it"));
        }
        Ok(PatchedModel { weak, module, spec })
    }

    /// Saves the folder (see the module docs).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.weak.save(&dir.join("weak"))?;
        self.module.save(&dir.join("module"))?;
        write_json(&dir.join(PATCH_FILE), &self.spec)
    }

    /// Patched scores `[n, weak_classes]` of every image of `set` (see [`patched_scores`]).
    pub fn scores(
        &self,
        engine: &dyn Engine,
        set: &crate::data::ImageSet,
        normalization: &crate::data::pipeline::Normalization,
    ) -> Result<Vec<f32>> {
        let weak = logits(engine, &self.weak, set, normalization)?;
        let module = logits(engine, &self.module, set, normalization)?;
        Ok(patched_scores(&weak, self.weak.description.classes, &module, self.module.description.classes, &self.spec))
    }
}
