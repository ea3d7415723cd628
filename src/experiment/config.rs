//! An experiment's configuration (TOML): the strong models, the weak models and the search
//! settings of the paper's protocols, at any scale.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::mix::SplitLimits;
use crate::data::presets::DataSelection;
use crate::error::{Error, Result};
use crate::model::zoo;
use crate::modularize::ModularizeConfig;
use crate::modularize::genetic::ga::{InitKind, Preset};
use crate::modularize::genetic::grouping::GroupingKind;
use crate::modularize::genetic::search::StopConfig;
use crate::patch::RuleKind;
use crate::train::config::{Overrides, Recipe, TrainConfig};

/// A whole experiment (see `experiments/*.toml` for examples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Name shown in the reports.
    pub name: String,
    /// Folder of the source datasets (default: $CNNSPLITTER_DATA_DIR, else ./data).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Seed of every training run and search.
    #[serde(default)]
    pub seed: u64,
    /// The strong models' data and training.
    pub strong: StrongConfig,
    /// The models: each a strong architecture with its weak family.
    pub models: Vec<ModelConfig>,
    /// The weak models (RQ2).
    #[serde(default)]
    pub weak: Option<WeakConfig>,
    /// The genetic search.
    #[serde(default)]
    pub modularize: SearchSettings,
    /// The ablation of RQ3.
    #[serde(default)]
    pub rq3: Rq3Settings,
}

/// Epochs, learning rate and batch of a training run (the recipe's defaults where absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Epochs.
    pub epochs: Option<usize>,
    /// Initial learning rate.
    pub lr: Option<f64>,
    /// Batch size.
    pub batch: Option<usize>,
}

impl TrainSettings {
    /// As the trainer's overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides { epochs: self.epochs, lr: self.lr, batch: self.batch }
    }
}

/// The strong models' dataset and training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrongConfig {
    /// Dataset preset or .toml mix (e.g. cifar10, svhn-s, mnist-s, synthetic-s).
    pub dataset: String,
    /// Training recipe (default `strong`; `simple` keeps the learning rate constant, which
    /// suits short runs).
    #[serde(default = "strong_recipe")]
    pub recipe: Recipe,
    /// Epochs.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Initial learning rate.
    #[serde(default)]
    pub lr: Option<f64>,
    /// Batch size.
    #[serde(default)]
    pub batch: Option<usize>,
}

fn strong_recipe() -> Recipe {
    Recipe::Strong
}

impl StrongConfig {
    /// The training overrides (`lr` replaced by the model's own when it has one).
    pub fn overrides(&self, model: &ModelConfig) -> Overrides {
        Overrides { epochs: self.epochs, lr: model.lr.or(self.lr), batch: self.batch }
    }
}

/// One strong model and its weak family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name in the reports and folders (e.g. SimCNN).
    pub name: String,
    /// Strong architecture (e.g. simcnn@0.25).
    pub arch: String,
    /// Learning rate of the strong model (overrides `strong.lr`).
    #[serde(default)]
    pub lr: Option<f64>,
    /// The overly simple weak architecture (e.g. simcnn-weak).
    pub weak_arch: String,
    /// Architecture of the poor-fit weak models (default: `arch`, trained without dropout).
    #[serde(default)]
    pub poor_fit_arch: Option<String>,
}

/// Kinds of weak model (paper section 5.2: overly simple, underfitting, overfitting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeakKind {
    /// An overly simple architecture.
    Simple,
    /// The poor-fit run's checkpoint at half its best-validation epoch.
    Underfit,
    /// The poor-fit run's best-validation checkpoint.
    Overfit,
}

impl WeakKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            WeakKind::Simple => "simple",
            WeakKind::Underfit => "underfit",
            WeakKind::Overfit => "overfit",
        }
    }
}

/// The weak models: one per target class (TC) and kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeakConfig {
    /// Dataset preset or .toml mix taking a TC (e.g. cifar10-w, svhn-w, mnist-w, synthetic-w).
    pub dataset: String,
    /// The TCs (the mix's `--tc` values).
    pub tcs: Vec<usize>,
    /// The TC's output index in the weak models (4 for the -w digit mixes, 9 for cifar10-w).
    pub tc_label: usize,
    /// The TC's output index in the strong model, per TC (default: the TC itself).
    #[serde(default)]
    pub strong_labels: Option<Vec<usize>>,
    /// Kinds of weak model.
    pub kinds: Vec<WeakKind>,
    /// Training of the simple weak models (simple recipe).
    #[serde(default)]
    pub simple: TrainSettings,
    /// Training of the poor-fit runs (poor-fit recipe).
    #[serde(default)]
    pub poor_fit: TrainSettings,
    /// At most this many training images of every class (scarce weak data; default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_per_class: Option<usize>,
    /// At most this many training images of the TC (default: `train_per_class`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc_train_images: Option<usize>,
    /// At most this many validation images of every class (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_per_class: Option<usize>,
    /// At most this many validation images of the TC (default: `val_per_class`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc_val_images: Option<usize>,
    /// Patching rules, each reported gated and ungated (default: both).
    #[serde(default = "all_rules")]
    pub rules: Vec<RuleKind>,
}

fn all_rules() -> Vec<RuleKind> {
    vec![RuleKind::Paper, RuleKind::Calibrated]
}

impl WeakConfig {
    /// The strong model's index of the `i`-th TC.
    pub fn strong_label(&self, i: usize) -> usize {
        self.strong_labels.as_ref().map_or(self.tcs[i], |l| l[i])
    }

    /// The image limits of the weak data.
    pub fn limits(&self) -> SplitLimits {
        SplitLimits::new(self.train_per_class, self.tc_train_images, self.val_per_class, self.tc_val_images)
    }
}

/// The genetic search's settings (the `modularize` defaults where absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// GA preset.
    #[serde(default = "default_preset")]
    pub preset: Preset,
    /// Individuals per class.
    #[serde(default)]
    pub population: Option<usize>,
    /// Generations at most.
    #[serde(default = "default_generations")]
    pub generations: usize,
    /// Early stopping.
    #[serde(default)]
    pub patience: Option<usize>,
    /// Validation images the search scores on (default: all).
    #[serde(default)]
    pub search_images: Option<usize>,
    /// Validation images of the sensitivity table (default 2,000).
    #[serde(default)]
    pub sensitivity_images: Option<usize>,
    /// Initialisation of the first population (default: the preset's, `sensitivity`; `graded`
    /// for networks such as MobileNetV2). The RQ3 ablation sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitKind>,
}

fn default_preset() -> Preset {
    Preset::ReferenceCode
}

fn default_generations() -> usize {
    StopConfig::default().generations
}

impl SearchSettings {
    /// The modularization of the strong model in `model` on `data`: the library's defaults
    /// ([`ModularizeConfig::new`]) with these settings over them.
    pub fn modularize_config(&self, model: PathBuf, data: DataSelection, seed: u64) -> ModularizeConfig {
        let mut c = ModularizeConfig::new(model, data, self.preset, seed);
        if let Some(p) = self.population {
            c.ga = c.ga.with_population(p);
        }
        c.stop.generations = self.generations;
        c.stop.patience = self.patience;
        if self.search_images.is_some() {
            c.search_images = self.search_images;
        }
        if let Some(n) = self.sensitivity_images {
            c.sensitivity_images = n;
        }
        if let Some(init) = self.init {
            c.ga.init = init;
        }
        c
    }
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            preset: default_preset(),
            population: None,
            generations: default_generations(),
            patience: None,
            search_images: None,
            sensitivity_images: None,
            init: None,
        }
    }
}

/// RQ3: which groupings and initialisations to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rq3Settings {
    /// Groupings.
    #[serde(default = "all_groupings")]
    pub groupings: Vec<GroupingKind>,
    /// Initialisations.
    #[serde(default = "all_inits")]
    pub inits: Vec<InitKind>,
    /// Generations of each ablation run (default: `modularize.generations`).
    #[serde(default)]
    pub generations: Option<usize>,
}

fn all_groupings() -> Vec<GroupingKind> {
    vec![GroupingKind::None, GroupingKind::Random, GroupingKind::Importance]
}

fn all_inits() -> Vec<InitKind> {
    vec![InitKind::Random, InitKind::Sensitivity]
}

impl Default for Rq3Settings {
    fn default() -> Self {
        Rq3Settings { groupings: all_groupings(), inits: all_inits(), generations: None }
    }
}

impl ExperimentConfig {
    /// Parses and checks a TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let config: ExperimentConfig =
            toml::from_str(text).map_err(|e| Error::file(origin, format!("is not an experiment config: {e}")))?;
        config.check().map_err(|m| Error::file(origin, m))?;
        Ok(config)
    }

    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Checks every key and builds (without data) what the runner will build; the message names
    /// the key.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.models.is_empty() {
            return Err("lists no [[models]]".into());
        }
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() != self.models.len() {
            return Err("gives two [[models]] the same name".into());
        }
        if let Some(bad) = self.models.iter().find(|m| m.name.is_empty() || !m.name.chars().all(is_name_char)) {
            return Err(format!("model name `{}` may hold only letters, digits, - and _", bad.name));
        }
        if let Some(w) = &self.weak {
            if w.tcs.is_empty() || w.kinds.is_empty() {
                return Err("[weak] needs at least one of `tcs` and of `kinds`".into());
            }
            if w.strong_labels.as_ref().is_some_and(|l| l.len() != w.tcs.len()) {
                return Err("[weak] `strong_labels` needs one entry per TC in `tcs`".into());
            }
            if w.rules.is_empty() {
                return Err("[weak] `rules` needs at least one of \"paper\" and \"calibrated\"".into());
            }
            let limits = [
                ("train_per_class", w.train_per_class),
                ("tc_train_images", w.tc_train_images),
                ("val_per_class", w.val_per_class),
                ("tc_val_images", w.tc_val_images),
            ];
            if let Some((key, _)) = limits.iter().find(|(_, v)| *v == Some(0)) {
                return Err(format!("[weak] `{key}` must be at least 1 (leave it out to keep every image)"));
            }
        }
        self.check_buildable()?;
        // The search's settings as the runner will use them, checked by the library's one check.
        let data = DataSelection {
            dataset: self.strong.dataset.clone(),
            tc: None,
            data_dir: None,
            limits: Default::default(),
        };
        let mut search = self.modularize.modularize_config(PathBuf::new(), data, self.seed);
        search.validate().map_err(|e| format!("[modularize] {e}"))?;
        if let Some(g) = self.rq3.generations {
            search.stop.generations = g;
            search.validate().map_err(|e| format!("[rq3] {e}"))?;
        }
        Ok(())
    }
}

impl ExperimentConfig {
    /// Builds now, without reading data, everything the runner will build from this config
    /// (datasets, every training configuration, every architecture on its data's images and
    /// classes, the class indices): a mistake is reported before any stage runs.
    fn check_buildable(&self) -> std::result::Result<(), String> {
        let strong_data = DataSelection::named(&self.strong.dataset);
        let outline = |key: &str, data: &DataSelection, tc| {
            data.spec().and_then(|s| s.outline(tc)).map_err(|e| format!("{key}: {e}"))
        };
        let (classes, shape) = outline("[strong] `dataset`", &strong_data, None)?;
        // The architecture's mistakes are the model's key's; the training settings' are their
        // section's (`section`).
        let buildable =
            |key: &str, section: &str, arch: &str, recipe, data: &DataSelection, o: &Overrides, shape, classes| {
                zoo::build(arch, shape, classes).map_err(|e| format!("{key}: {e}"))?;
                TrainConfig::new(arch, recipe, data, o, self.seed, 1).map(|_| ()).map_err(|e| format!("{section}: {e}"))
            };
        for m in &self.models {
            let key = format!("[[models]] `{}` `arch`", m.name);
            let section = if m.lr.is_some() {
                format!("[strong] (with [[models]] `{}` `lr`)", m.name)
            } else {
                "[strong]".into()
            };
            let overrides = self.strong.overrides(m);
            buildable(&key, &section, &m.arch, self.strong.recipe, &strong_data, &overrides, shape, classes)?;
        }
        let Some(w) = &self.weak else { return Ok(()) };
        let weak_data = DataSelection::named(&w.dataset);
        let mut weak_outline = None;
        for &tc in &w.tcs {
            weak_outline =
                Some(outline("[weak] `tcs`", &DataSelection { tc: Some(tc), ..weak_data.clone() }, Some(tc))?);
        }
        let (weak_classes, weak_shape) = weak_outline.expect("checked: tcs is not empty");
        if w.tc_label >= weak_classes {
            return Err(format!(
                "[weak] `tc_label` is {}, but dataset `{}` has {weak_classes} classes (labels 0 to {weak_classes} - 1)",
                w.tc_label, w.dataset
            ));
        }
        if let Some(i) = (0..w.tcs.len()).find(|&i| w.strong_label(i) >= classes) {
            return Err(format!(
                "[weak] the TC {}'s strong label is {}, but the strong dataset `{}` has {classes} classes \
                 (set `strong_labels`)",
                w.tcs[i],
                w.strong_label(i),
                self.strong.dataset
            ));
        }
        let weak_data = DataSelection { tc: w.tcs.first().copied(), ..weak_data };
        for m in &self.models {
            let simple = w.simple.overrides();
            let key = format!("[[models]] `{}` `weak_arch`", m.name);
            buildable(
                &key,
                "[weak.simple]",
                &m.weak_arch,
                Recipe::Simple,
                &weak_data,
                &simple,
                weak_shape,
                weak_classes,
            )?;
            let (key, arch) = match &m.poor_fit_arch {
                Some(a) => (format!("[[models]] `{}` `poor_fit_arch`", m.name), a.as_str()),
                None => (format!("[[models]] `{}` `arch` (the poor-fit models')", m.name), m.arch.as_str()),
            };
            let poor_fit = w.poor_fit.overrides();
            buildable(&key, "[weak.poor_fit]", arch, Recipe::PoorFit, &weak_data, &poor_fit, weak_shape, weak_classes)?;
        }
        Ok(())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}
