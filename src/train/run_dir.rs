//! Typed paths of a training run folder.
//!
//! ```text
//! RUN_DIR/config.json                     the run's configuration
//! RUN_DIR/model.json, model.safetensors   the kept (best-validation) model
//! RUN_DIR/train.jsonl                     one line per finished epoch
//! RUN_DIR/report.json                     final metrics of the kept model
//! RUN_DIR/checkpoint/last/                weights, optimizer state and progress after the last epoch
//! RUN_DIR/checkpoint/epochs/epoch_0007/   per-epoch weights kept for `pick` (poor-fit)
//! ```

use std::path::{Path, PathBuf};

/// The paths of one run folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir {
    /// The folder.
    pub root: PathBuf,
}

impl RunDir {
    /// The run folder at `root`.
    pub fn new(root: &Path) -> Self {
        RunDir { root: root.to_path_buf() }
    }

    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `train.jsonl`.
    pub fn log(&self) -> PathBuf {
        self.root.join("train.jsonl")
    }

    /// `report.json`.
    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }

    /// The last checkpoint's folder.
    pub fn last(&self) -> PathBuf {
        self.root.join("checkpoint").join("last")
    }

    /// The folder of epoch `epoch`'s kept weights (1-based).
    pub fn epoch(&self, epoch: usize) -> PathBuf {
        self.root.join("checkpoint").join("epochs").join(format!("epoch_{epoch:04}"))
    }
}
