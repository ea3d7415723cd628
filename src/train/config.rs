//! Training recipes and the full configuration of a run (saved as `config.json`).

use serde::{Deserialize, Serialize};

use crate::data::presets::DataSelection;
use crate::error::{Error, Result};
use crate::model::zoo::ArchSpec;
use crate::train::schedule::StepSchedule;

/// The paper's training recipes (paper section 5.2 and the authors' code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// SGD, Nesterov momentum 0.9, weight decay 1e-4, LR x0.1 at 30% and 60% of the epochs,
    /// augmentation; keeps the best-validation checkpoint.
    Strong,
    /// For overly simple weak models: SGD, momentum 0.9, weight decay 1e-4, constant LR,
    /// augmentation; keeps the best-validation checkpoint.
    Simple,
    /// The full architecture without dropout, plain SGD, no weight decay, no augmentation; keeps
    /// the checkpoints from which `pick` takes the overfitting and underfitting models.
    PoorFit,
}

/// Values the user may set on the command line; the recipe fills in the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Number of epochs.
    pub epochs: Option<usize>,
    /// Initial learning rate.
    pub lr: Option<f64>,
    /// Batch size.
    pub batch: Option<usize>,
}

/// Everything that decides a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Architecture, e.g. `simcnn@0.25`.
    pub arch: String,
    /// The recipe the settings came from.
    pub recipe: Recipe,
    /// The data: its keys (`dataset`, `tc`, `data_dir`, `limits`: caps on training and
    /// validation images per class, for scarce weak-model data) sit at the top of config.json.
    #[serde(flatten)]
    pub data: DataSelection,
    /// Number of epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate per epoch.
    pub schedule: StepSchedule,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Random crop and flip augmentation.
    pub augment: bool,
    /// Keep dropout layers (false: their probability is set to 0).
    pub dropout: bool,
    /// Keep per-epoch checkpoints for `pick` (poor-fit).
    pub keep_epochs: bool,
    /// Seed of weights, data order, augmentation and dropout.
    pub seed: u64,
    /// Compute threads (a resumed run must use the same count to end bit-identical).
    pub threads: usize,
}

impl TrainConfig {
    /// The configuration of `recipe` for `arch` on `data`, with the user's overrides.
    pub fn new(
        arch: &str,
        recipe: Recipe,
        data: &DataSelection,
        o: &Overrides,
        seed: u64,
        threads: usize,
    ) -> Result<Self> {
        let spec = ArchSpec::parse(arch)?;
        let residual = spec.name.starts_with("rescnn") || spec.name.starts_with("resnet");
        let (epochs, lr) = match recipe {
            Recipe::Strong => (200, if residual { 0.1 } else { 0.01 }),
            Recipe::Simple => (100, 0.01),
            Recipe::PoorFit => (100, 0.01),
        };
        let epochs = o.epochs.unwrap_or(epochs);
        let lr = o.lr.unwrap_or(lr);
        let batch = o.batch.unwrap_or(128);
        let strong = recipe == Recipe::Strong;
        let poor = recipe == Recipe::PoorFit;
        let config = TrainConfig {
            arch: spec.label(),
            recipe,
            data: data.clone(),
            epochs,
            batch,
            schedule: if strong { StepSchedule::paper(lr, epochs) } else { StepSchedule::constant(lr) },
            momentum: if poor { 0.0 } else { 0.9 },
            nesterov: strong,
            weight_decay: if poor { 0.0 } else { 1e-4 },
            augment: !poor,
            dropout: !poor,
            keep_epochs: poor,
            seed,
            threads,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the ranges (`epochs`, `batch` at least 1; learning rates positive and finite;
    /// momentum and weight decay in [0, 1)); also run on the `config.json` of a resumed run.
    pub fn validate(&self) -> Result<()> {
        Error::check_at_least("epochs", self.epochs, 1)?;
        Error::check_at_least("batch", self.batch, 1)?;
        let s = &self.schedule;
        if !(s.base > 0.0 && s.base.is_finite() && s.gamma > 0.0 && s.gamma.is_finite()) {
            return Err(Error::Invalid(format!(
                "`lr` must be positive and finite (it is {}; schedule factor {})",
                s.base, s.gamma
            )));
        }
        Error::check_range("momentum", self.momentum, 0.0, 0.999_999)?;
        Error::check_range("weight_decay", self.weight_decay, 0.0, 0.999_999)?;
        Error::check_at_least("threads", self.threads, 1)
    }
}

impl crate::choice::Choice for Recipe {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            Recipe::Strong,
            "strong",
            "SGD, Nesterov momentum 0.9, weight decay 1e-4, LR x0.1 at 30% and 60% of the epochs, augmentation; keeps the best-validation checkpoint",
        ),
        (
            Recipe::Simple,
            "simple",
            "for overly simple weak models: SGD, momentum 0.9, weight decay 1e-4, constant LR, augmentation; keeps the best-validation checkpoint",
        ),
        (
            Recipe::PoorFit,
            "poor-fit",
            "the full architecture without dropout, plain SGD, no weight decay, no augmentation; keeps the checkpoints `pick` takes the overfitting and underfitting models from",
        ),
    ];
}
