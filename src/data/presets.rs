//! The shipped datasets: the paper's splits and mixes as declarative TOML descriptions
//! (`src/data/presets/*.toml`), and how a command selects data (`--dataset NAME [--tc K]
//! [--data-dir DIR]`, where NAME may also be a path to a TOML file).

use std::path::{Path, PathBuf};

use crate::data::mix::{DataSplits, MixSpec, SplitLimits};
use crate::error::{Error, Result};

/// Name and TOML text of every preset.
pub const PRESETS: &[(&str, &str)] = &[
    ("synthetic", include_str!("presets/synthetic.toml")),
    ("synthetic-s", include_str!("presets/synthetic-s.toml")),
    ("synthetic-w", include_str!("presets/synthetic-w.toml")),
    ("synthetic-s-tiny", include_str!("presets/synthetic-s-tiny.toml")),
    ("synthetic-w-tiny", include_str!("presets/synthetic-w-tiny.toml")),
    ("cifar10", include_str!("presets/cifar10.toml")),
    ("cifar100", include_str!("presets/cifar100.toml")),
    ("cifar10-w", include_str!("presets/cifar10-w.toml")),
    ("svhn", include_str!("presets/svhn.toml")),
    ("svhn-s", include_str!("presets/svhn-s.toml")),
    ("svhn-w", include_str!("presets/svhn-w.toml")),
    ("mnist", include_str!("presets/mnist.toml")),
    ("mnist-s", include_str!("presets/mnist-s.toml")),
    ("mnist-w", include_str!("presets/mnist-w.toml")),
];

/// Environment variable naming the default data folder.
pub const DATA_DIR_ENV: &str = "CNNSPLITTER_DATA_DIR";

/// How a command selects its data (embedded, flattened, in the training and modularization
/// configs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSelection {
    /// A preset name or a path to a TOML description.
    pub dataset: String,
    /// The target class, for mixes that name `"tc"`.
    pub tc: Option<usize>,
    /// Where the source datasets are (default: `$CNNSPLITTER_DATA_DIR`, else `data`).
    pub data_dir: Option<PathBuf>,
    /// Caps on images per class of the training and validation splits (over the mix's own).
    #[serde(default, skip_serializing_if = "SplitLimits::is_none")]
    pub limits: SplitLimits,
}

impl DataSelection {
    /// A selection of a preset or file without target class or data folder.
    pub fn named(dataset: &str) -> Self {
        DataSelection { dataset: dataset.to_string(), tc: None, data_dir: None, limits: SplitLimits::default() }
    }

    /// The description this selection names.
    pub fn spec(&self) -> Result<MixSpec> {
        preset_or_file(&self.dataset)
    }

    /// The data folder in effect.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("data"))
    }

    /// Reads the sources and builds the splits.
    pub fn load(&self) -> Result<DataSplits> {
        let spec = self.spec()?;
        if self.tc.is_some() && !spec.needs_tc() {
            return Err(Error::Invalid(format!(
                "dataset `{}` has no target class; give none (`tc`: the -w presets take one)",
                spec.name
            )));
        }
        spec.build(&self.data_dir(), self.tc, self.limits)
    }
}

/// The description of preset `name`, or of the TOML file at path `name`.
pub fn preset_or_file(name: &str) -> Result<MixSpec> {
    if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) {
        return MixSpec::from_toml(text);
    }
    let path = Path::new(name);
    if path.extension().is_some_and(|e| e == "toml") || path.is_file() {
        return MixSpec::load(path);
    }
    let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
    Err(Error::Invalid(format!(
        "unknown dataset `{name}`; expected a preset ({}) or a path to a .toml description",
        names.join(", ")
    )))
}
