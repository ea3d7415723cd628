//! Typed paths of a modularization folder.
//!
//! ```text
//! DIR/config.json              the run's configuration (ModularizeConfig)
//! DIR/source.json              the model it splits: path and digest of its files
//! DIR/importance.json          kernel importance
//! DIR/sensitivity.json         layer sensitivity
//! DIR/search/state.json        the search after its last generation
//! DIR/search/generations.jsonl one line per generation
//! DIR/modules/class_NN/        module NN: a model folder plus keep.json
//! DIR/summary.json             the finished run's figures
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Model;

/// The paths of a modularization folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModularizeDir {
    /// The folder.
    pub root: PathBuf,
}

impl ModularizeDir {
    /// The modularization folder at `root`.
    pub fn new(root: &Path) -> Self {
        ModularizeDir { root: root.to_path_buf() }
    }
    /// Whether `dir` looks like a modularization folder (it holds `importance.json`,
    /// `search/` or `modules/`, and no model of its own).
    pub fn is_modularization(dir: &Path) -> bool {
        let d = ModularizeDir::new(dir);
        !dir.join(crate::model::DESCRIPTION_FILE).exists()
            && (d.importance().is_file() || d.root.join("search").is_dir() || d.modules().is_dir())
    }
    /// The modularization folder that holds the module folder `module_dir`
    /// (`<modularization>/modules/class_NN`), if it is one.
    pub fn holding(module_dir: &Path) -> Option<ModularizeDir> {
        let modules = module_dir.parent()?;
        let d = ModularizeDir::new(modules.parent()?);
        (d.modules() == modules && ModularizeDir::is_modularization(&d.root)).then_some(d)
    }
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `source.json`: the model the run was started from ([`crate::modularize::ModelSource`]).
    pub fn source(&self) -> PathBuf {
        self.root.join("source.json")
    }
    /// `importance.json`.
    pub fn importance(&self) -> PathBuf {
        self.root.join("importance.json")
    }
    /// `sensitivity.json`.
    pub fn sensitivity(&self) -> PathBuf {
        self.root.join("sensitivity.json")
    }
    /// `search/state.json`.
    pub fn state(&self) -> PathBuf {
        self.root.join("search").join("state.json")
    }
    /// `search/generations.jsonl`.
    pub fn generations(&self) -> PathBuf {
        self.root.join("search").join("generations.jsonl")
    }
    /// `modules/`.
    pub fn modules(&self) -> PathBuf {
        self.root.join("modules")
    }
    /// `modules/class_NN`: the module of class `class` (a model folder).
    pub fn module(&self, class: usize) -> PathBuf {
        self.modules().join(format!("class_{class:02}"))
    }
    /// `modules/class_NN/keep.json`: the kernels module `class` keeps.
    pub fn keep(&self, class: usize) -> PathBuf {
        self.module(class).join("keep.json")
    }
    /// `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// The modules (`modules/class_NN`), in class order.
    pub fn load_modules(&self) -> Result<Vec<Model>> {
        let mut modules = Vec::new();
        while self.module(modules.len()).is_dir() {
            modules.push(Model::load(&self.module(modules.len()))?);
        }
        if modules.is_empty() {
            return Err(Error::file(&self.root, "holds no modules/class_00: is it a finished `modularize` folder?"));
        }
        Ok(modules)
    }
}
