//! The settings of a modularization run (`config.json`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::presets::DataSelection;
use crate::error::{Error, Result};
use crate::modularize::SearchMethod;
use crate::modularize::genetic::composition::CompositionConfig;
use crate::modularize::genetic::ga::{self, GaConfig};
use crate::modularize::genetic::grouping::GroupingConfig;
use crate::modularize::genetic::search::StopConfig;

/// Everything that decides a modularization run (saved as `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModularizeConfig {
    /// The model folder (or training run folder) to split.
    pub model: PathBuf,
    /// The data: its keys (`dataset`, `tc`, `data_dir`, `limits`) sit at the top of
    /// config.json.
    #[serde(flatten)]
    pub data: DataSelection,
    /// How the modules are searched (absent in files written before there was a choice: the
    /// genetic search).
    #[serde(default)]
    pub method: SearchMethod,
    /// Probability a training image needs to count for kernel importance.
    pub confidence: f64,
    /// Kernel grouping.
    pub grouping: GroupingConfig,
    /// Accuracy loss at 90% drop that still counts as insensitive.
    pub sensitivity_threshold: f64,
    /// Validation images used for the sensitivity table (all when larger than the split).
    pub sensitivity_images: usize,
    /// Genetic algorithm (the genetic method's).
    pub ga: GaConfig,
    /// Composition pruning (the genetic method's).
    pub composition: CompositionConfig,
    /// Stopping (the genetic method's).
    pub stop: StopConfig,
    /// Validation images the search scores modules on (`None`, written `null`: all; all too when
    /// larger than the split).
    pub search_images: Option<usize>,
    /// Seed of grouping, initialisation and search.
    pub seed: u64,
}

impl ModularizeConfig {
    /// Default probability a training image needs to count for kernel importance.
    pub const CONFIDENCE: f64 = 0.9;
    /// Default accuracy loss at 90% drop up to which a layer counts as insensitive.
    pub const SENSITIVITY_THRESHOLD: f64 = 0.05;
    /// Default number of validation images of the sensitivity table.
    pub const SENSITIVITY_IMAGES: usize = 2000;

    /// Checks every setting's range (the one place: the CLI, experiment configs and resumed
    /// runs all pass here); the error names the setting.
    pub fn validate(&self) -> Result<()> {
        Error::check_range("confidence", self.confidence, 0.0, 1.0)?;
        Error::check_range("sensitivity_threshold", self.sensitivity_threshold, 0.0, 1.0)?;
        Error::check_at_least("sensitivity_images", self.sensitivity_images, 1)?;
        if let Some(n) = self.search_images {
            Error::check_at_least("search_images", n, 1)?;
        }
        self.grouping.validate()?;
        self.ga.validate()?;
        self.composition.validate()?;
        self.stop.validate()
    }

    /// The default settings (those of `cnnsplitter modularize` without flags) for `model` on
    /// `data` with GA preset `preset`: importance grouping (10/100 groups, threshold 256),
    /// sensitivity threshold 0.05 on 2,000 images, confidence 0.9, Ntop 50..500, thresholds
    /// 0.95, 0.95, 0.85, 0.8, 200 generations, every validation image.
    pub fn new(model: PathBuf, data: DataSelection, preset: ga::Preset, seed: u64) -> Self {
        ModularizeConfig {
            model,
            data,
            method: SearchMethod::Genetic,
            confidence: Self::CONFIDENCE,
            grouping: GroupingConfig { seed, ..GroupingConfig::default() },
            sensitivity_threshold: Self::SENSITIVITY_THRESHOLD,
            sensitivity_images: Self::SENSITIVITY_IMAGES,
            ga: GaConfig::preset(preset),
            composition: CompositionConfig::default(),
            stop: StopConfig::default(),
            search_images: None,
            seed,
        }
    }
}
