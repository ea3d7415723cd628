//! Patching a weak model with a strong model's module (paper §4), without retraining either.
//!
//! Two rules ([`RuleKind`]): the paper's (the module's TC logit, min-max calibrated on the TC's
//! training images, replaces the weak model's softmax probability of the TC) and a calibrated
//! rule beyond the paper ([`calibrated`]: a logistic model over the weak model's log-softmax and
//! the module's TC logit, fitted on the validation split). A gate ([`gate`]) decides on the
//! validation split whether the module patches at all; a closed gate keeps the weak model's
//! predictions and says why. The report ([`PatchReport`]) measures both models on the test split
//! with diagnostics ([`diagnostics`]).
//!
//! A patched model is a folder ([`folder`]): `patch.json`, `weak/` and `module/`.
//! [`Classifier`] loads it or a plain model folder alike.

pub mod calibrated;
pub mod calibration;
pub mod classifier;
pub mod diagnostics;
pub mod export;
pub mod folder;
pub mod gate;
pub mod logistic;
pub mod metrics;
pub mod rule;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::ImageSet;
use crate::data::mix::DataSplits;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::eval::logits;
use crate::eval::metrics::{accuracy, argmax_rows};
use crate::files::{read_json, write_dir_atomic, write_json};
use crate::folders::{ModularizeDir, PatchedDir};
use crate::model::Model;
use crate::modularize::ModularizeConfig;
use calibrated::{CalibratedRule, DEFAULT_L2, EVIDENCE_THRESHOLD, FOLDS, FitData};
pub use calibration::Calibration;
pub use classifier::Classifier;
use diagnostics::{Diagnostics, auroc, diagnose};
pub use folder::{PatchSpec, PatchedModel, patched_scores, rule_scores};
use gate::Gate;
use metrics::{TcMetrics, tc_metrics};
pub use rule::{Rule, RuleKind};

/// Seed of the calibrated rule's cross-validation folds.
pub const CROSS_VALIDATION_SEED: u64 = 0;

/// What to patch with what, and how.
#[derive(Debug, Clone, Copy)]
pub struct PatchRequest<'a> {
    /// The weak model folder.
    pub weak: &'a Path,
    /// The module folder.
    pub module: &'a Path,
    /// The strong model the module was cut from, for the AUROC of its TC logit; when `None`,
    /// the model named by the module's modularization folder is used if it is there.
    pub strong: Option<&'a Path>,
    /// The TC's index among the weak model's outputs.
    pub tc_weak: usize,
    /// The TC's index among the module's outputs.
    pub tc_strong: usize,
    /// The rule.
    pub rule: RuleKind,
    /// Apply the rule even when the gate is closed (the gate is still decided and reported).
    pub ungated: bool,
}

/// Test accuracy over all classes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracies {
    /// The weak model.
    pub weak: f64,
    /// The rule applied regardless of the gate.
    pub ungated: f64,
    /// The patched folder (the rule if the gate opened, else the weak model).
    pub patched: f64,
}

/// The calibrated rule without the module, on test: how much of a gain recalibrating the weak
/// model alone would give (see [`calibrated::fit_without_module`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// TC metrics.
    pub metrics: TcMetrics,
    /// Accuracy over all classes.
    pub accuracy: f64,
}

/// How well a TC score tells TC test images from the others (area under the ROC curve).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TcAuroc {
    /// The weak model's softmax probability of the TC.
    pub weak: Option<f64>,
    /// The module's TC logit.
    pub module: Option<f64>,
    /// The whole strong model's TC logit (when the strong model is known).
    pub strong: Option<f64>,
}

/// A patch measured on the weak data's test split (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchReport {
    /// The weak model folder.
    pub weak_model: PathBuf,
    /// The module folder.
    pub module: PathBuf,
    /// The strong model folder, when known.
    pub strong_model: Option<PathBuf>,
    /// Dataset of the weak model.
    pub dataset: String,
    /// Class mapping, rule, gate.
    pub spec: PatchSpec,
    /// Images the rule was calibrated on: the TC's training images (paper) or the validation
    /// split (calibrated).
    pub calibration_images: usize,
    /// Test images.
    pub test_images: usize,
    /// The weak model alone.
    pub weak: TcMetrics,
    /// The rule applied regardless of the gate.
    pub ungated: TcMetrics,
    /// The patched folder (equal to `ungated` when applied, to `weak` when not).
    pub patched: TcMetrics,
    /// Test accuracy over all classes.
    pub accuracy: Accuracies,
    /// The weak model recalibrated without the module (when the validation split allows a fit).
    pub control: Option<Control>,
    /// AUROC of the TC scores.
    pub auroc: TcAuroc,
    /// The rule's effect (ungated) against the weak model, image by image.
    pub diagnostics: Diagnostics,
}

/// Column `c` of a row-major `[n, classes]` matrix.
fn column(values: &[f32], classes: usize, c: usize) -> Vec<f32> {
    values.chunks(classes).map(|r| r[c]).collect()
}

/// The strong model folder named by the modularization folder that holds `module_dir`
/// (`<modularize>/modules/class_NN`), if it is there.
fn strong_of_module(module_dir: &Path) -> Option<PathBuf> {
    let config: ModularizeConfig = read_json(&ModularizeDir::holding(module_dir)?.config()).ok()?;
    config.model.join(crate::model::DESCRIPTION_FILE).is_file().then_some(config.model)
}

/// Checks `data` against the data the weak model in `weak` was trained on, where its folder
/// records it (`source.json` of a training run, or of a model picked from one): the same dataset
/// and target class, and the same images.
fn check_weak_data(weak: &Path, data: &DataSplits) -> Result<()> {
    let path = crate::folders::RunDir::new(weak).source();
    if !path.is_file() {
        return Ok(());
    }
    let recorded: crate::train::trainer::DataSource = read_json(&path)?;
    if recorded.dataset != data.name {
        return Err(Error::file(
            weak,
            format!(
                "was trained on {}, but the data given is {}: patch with the weak model's own dataset and target \
                 class (for a weak mix, its `--mix-tc`)",
                recorded.dataset, data.name
            ),
        ));
    }
    let digest = data.digest();
    if recorded.digest != digest {
        return Err(Error::file(
            weak,
            format!(
                "was trained on other images of {} than the data given holds (digest {} then, {digest} now): give \
                 the image limits it was trained with (--train-per-class and the like), or the data files it was \
                 trained on",
                data.name, recorded.digest
            ),
        ));
    }
    Ok(())
}

/// The models of a request, loaded and checked against each other and the data.
struct Loaded {
    weak: Model,
    module: Model,
    strong_dir: Option<PathBuf>,
    strong: Option<Model>,
}

impl Loaded {
    fn open(request: &PatchRequest, data: &DataSplits) -> Result<Self> {
        let (tc_weak, tc_strong) = (request.tc_weak, request.tc_strong);
        if let Some(label) = data.tc_label
            && label != tc_weak
        {
            return Err(Error::Invalid(format!(
                "target class {tc_weak}={tc_strong}: the weak dataset {} has its target class at label {label}, \
                 not {tc_weak}; give {label}={tc_strong}",
                data.name
            )));
        }
        check_weak_data(request.weak, data)?;
        let weak = Model::load(request.weak)?;
        let module = Model::load(request.module)?;
        let strong_dir = request.strong.map(Path::to_path_buf).or_else(|| strong_of_module(request.module));
        let strong = strong_dir.as_deref().map(Model::load).transpose()?;
        let (classes, module_classes) = (weak.description.classes, module.description.classes);
        if classes != data.classes() {
            return Err(Error::Invalid(format!(
                "weak model {} has {classes} classes, but dataset {} has {}",
                request.weak.display(),
                data.name,
                data.classes()
            )));
        }
        if tc_weak >= classes || tc_strong >= module_classes {
            return Err(Error::Invalid(format!(
                "target class {tc_weak}={tc_strong} is out of range: the weak model has {classes} classes, the \
                 module {module_classes}"
            )));
        }
        if let (Some(s), Some(dir)) = (&strong, &strong_dir)
            && (s.description.classes != module_classes || s.description.input != module.description.input)
        {
            return Err(Error::Invalid(format!(
                "strong model {} does not match the module: {} classes and input {:?}, the module {} and {:?}",
                dir.display(),
                s.description.classes,
                s.description.input,
                module_classes,
                module.description.input
            )));
        }
        Ok(Loaded { weak, module, strong_dir, strong })
    }
}

/// Both models' logits on one split: the weak model's `[n, classes]`, the module's
/// `[n, module_classes]`, and the module's TC column `[n]`.
struct SplitLogits<'a> {
    set: &'a ImageSet,
    weak: Vec<f32>,
    module: Vec<f32>,
    module_tc: Vec<f32>,
}

impl<'a> SplitLogits<'a> {
    fn of(
        request: &PatchRequest,
        models: &Loaded,
        set: &'a ImageSet,
        data: &DataSplits,
        engine: &dyn Engine,
    ) -> Result<Self> {
        let module = logits(engine, &models.module, set, &data.normalization)?;
        Ok(SplitLogits {
            set,
            weak: logits(engine, &models.weak, set, &data.normalization)?,
            module_tc: column(&module, models.module.description.classes, request.tc_strong),
            module,
        })
    }

    /// What the calibrated rule is fitted on.
    fn fit_data(&self, classes: usize, tc: usize) -> FitData<'_> {
        FitData { weak: &self.weak, classes, module_tc: &self.module_tc, labels: &self.set.labels, tc }
    }
}

/// Fits the requested rule and decides the gate on the validation split: the rule, the images it
/// was calibrated on, and the gate. `control` is the calibrated rule without the module, fitted
/// on the same split (`None` when it could not be).
fn fit_rule(
    request: &PatchRequest,
    models: &Loaded,
    val: &SplitLogits,
    control: Option<&CalibratedRule>,
    data: &DataSplits,
    engine: &dyn Engine,
) -> Result<(Rule, usize, Gate)> {
    let (tc_weak, tc_strong) = (request.tc_weak, request.tc_strong);
    let (classes, module_classes) = (models.weak.description.classes, models.module.description.classes);
    let labels = &data.val.labels;
    let weak_pred = argmax_rows(&val.weak, classes);
    match request.rule {
        RuleKind::Paper => {
            let tc_train = data.train.select(|label| label as usize == tc_weak);
            let tc_logits =
                column(&logits(engine, &models.module, &tc_train, &data.normalization)?, module_classes, tc_strong);
            let rule = Rule::Paper(Calibration::from_logits(&tc_logits)?);
            let scores = rule_scores(&val.weak, classes, &val.module, module_classes, tc_weak, tc_strong, &rule);
            let patched = argmax_rows(&scores, classes);
            let measured = "calibrated on training images";
            let gate = Gate::decide(labels, &weak_pred, &patched, tc_weak, None, None, measured);
            Ok((rule, tc_train.len(), gate))
        }
        RuleKind::Calibrated => {
            let fit_data = val.fit_data(classes, tc_weak);
            let rule: CalibratedRule = calibrated::fit(&fit_data, DEFAULT_L2)?;
            let Some(control) = control else {
                return Err(Error::Numeric("the calibrated rule without the module could not be fitted".into()));
            };
            let cross_validated = |with_module| {
                calibrated::cross_validated_predictions(
                    &fit_data,
                    DEFAULT_L2,
                    FOLDS,
                    CROSS_VALIDATION_SEED,
                    with_module,
                )
            };
            let (out_of_fold, control_out_of_fold) = (cross_validated(true)?, cross_validated(false)?);
            let evidence = Some((calibrated::module_evidence(&fit_data, &rule, control), EVIDENCE_THRESHOLD));
            let measured = format!("{FOLDS}-fold out-of-fold");
            let without_module = Some(control_out_of_fold.as_slice());
            let gate = Gate::decide(labels, &weak_pred, &out_of_fold, tc_weak, evidence, without_module, &measured);
            Ok((Rule::Calibrated(rule), data.val.len(), gate))
        }
    }
}

/// Measures the weak model, the rule (ungated), the folder (gated) and the control (the
/// calibrated rule without the module) on the test split.
fn measure(
    request: &PatchRequest,
    models: &Loaded,
    spec: PatchSpec,
    calibration_images: usize,
    control: Option<&CalibratedRule>,
    data: &DataSplits,
    engine: &dyn Engine,
) -> Result<PatchReport> {
    let (tc_weak, tc_strong) = (request.tc_weak, request.tc_strong);
    let (classes, module_classes) = (models.weak.description.classes, models.module.description.classes);
    let test = SplitLogits::of(request, models, &data.test, data, engine)?;
    let labels = &data.test.labels;
    let ungated_scores = rule_scores(&test.weak, classes, &test.module, module_classes, tc_weak, tc_strong, &spec.rule);
    let weak_pred = argmax_rows(&test.weak, classes);
    let ungated_pred = argmax_rows(&ungated_scores, classes);
    let patched_pred = if spec.applied { ungated_pred.clone() } else { weak_pred.clone() };

    let control = control.map(|rule| {
        let p: Vec<u16> = test.weak.chunks(classes).map(|row| rule.predict(row, 0.0, tc_weak) as u16).collect();
        Control { metrics: tc_metrics(labels, &p, tc_weak), accuracy: accuracy(labels, &p) }
    });

    let is_tc: Vec<bool> = labels.iter().map(|&l| l as usize == tc_weak).collect();
    let weak_prob: Vec<f32> = test.weak.chunks(classes).map(|r| rule::softmax(r)[tc_weak]).collect();
    let strong_auroc = match &models.strong {
        Some(s) => {
            auroc(&column(&logits(engine, s, &data.test, &data.normalization)?, module_classes, tc_strong), &is_tc)
        }
        None => None,
    };
    Ok(PatchReport {
        weak_model: request.weak.to_path_buf(),
        module: request.module.to_path_buf(),
        strong_model: models.strong_dir.clone(),
        dataset: data.name.clone(),
        spec,
        calibration_images,
        test_images: labels.len(),
        weak: tc_metrics(labels, &weak_pred, tc_weak),
        ungated: tc_metrics(labels, &ungated_pred, tc_weak),
        patched: tc_metrics(labels, &patched_pred, tc_weak),
        accuracy: Accuracies {
            weak: accuracy(labels, &weak_pred),
            ungated: accuracy(labels, &ungated_pred),
            patched: accuracy(labels, &patched_pred),
        },
        control,
        auroc: TcAuroc {
            weak: auroc(&weak_prob, &is_tc),
            module: auroc(&test.module_tc, &is_tc),
            strong: strong_auroc,
        },
        diagnostics: diagnose(labels, &weak_pred, &ungated_pred, tc_weak, classes),
    })
}

/// Patches the weak model with the module as `request` says, on `data` (the weak model's
/// dataset: the paper's rule calibrates on its training split's TC images, the calibrated rule
/// fits on its validation split, the gate decides on its validation split, the report measures
/// its test split). Writes the patched folder and `report.json` to `out`, which must not exist
/// yet; nothing is left there on an error.
pub fn patch(request: &PatchRequest, data: &DataSplits, engine: &dyn Engine, out: &Path) -> Result<PatchReport> {
    let _owned = crate::files::lock::OutputLock::acquire(out)?;
    if out.exists() {
        return Err(Error::file(out, "already exists: choose another output folder or remove it"));
    }
    let models = Loaded::open(request, data)?;
    let val = SplitLogits::of(request, &models, &data.val, data, engine)?;
    // The control, fitted once: the gate of the calibrated rule and the report both use it.
    let classes = models.weak.description.classes;
    let control = calibrated::fit_without_module(&val.fit_data(classes, request.tc_weak), DEFAULT_L2).ok();
    let (rule, calibration_images, gate) = fit_rule(request, &models, &val, control.as_ref(), data, engine)?;
    let applied = gate.open || request.ungated;
    let spec = PatchSpec { tc_weak: request.tc_weak, tc_strong: request.tc_strong, rule, applied, gate };
    let report = measure(request, &models, spec, calibration_images, control.as_ref(), data, engine)?;
    let Loaded { weak, module, .. } = models;
    let patched = PatchedModel { weak, module, spec: report.spec.clone() };
    write_folder(out, &patched, &report)?;
    Ok(report)
}

/// Writes the patched folder and its report, whole or not at all.
fn write_folder(out: &Path, patched: &PatchedModel, report: &PatchReport) -> Result<()> {
    write_dir_atomic(out, |tmp| {
        patched.save(tmp)?;
        write_json(&PatchedDir::new(tmp).report(), report)
    })
}
