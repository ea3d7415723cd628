//! Typed paths of a training run folder.
//!
//! ```text
//! RUN_DIR/config.json                     the run's configuration
//! RUN_DIR/model.json, model.safetensors   the kept (best-validation) model
//! RUN_DIR/train.jsonl                     one line per finished epoch
//! RUN_DIR/report.json                     final metrics of the kept model
//! RUN_DIR/checkpoint/last/                model.json, model.safetensors, optimizer.safetensors and
//!                                         state.json after the last epoch
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

    /// `source.json`: the data the run trains on ([`crate::train::trainer::DataSource`]).
    pub fn source(&self) -> PathBuf {
        self.root.join("source.json")
    }

    /// `train.jsonl`.
    pub fn log(&self) -> PathBuf {
        self.root.join("train.jsonl")
    }

    /// `report.json`.
    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }

    /// The last checkpoint (after the last finished epoch).
    pub fn last(&self) -> Checkpoint {
        Checkpoint { root: self.root.join("checkpoint").join("last") }
    }

    /// Whether `dir` looks like a training run folder (it holds `config.json` and `train.jsonl`
    /// or a checkpoint).
    pub fn is_run(dir: &Path) -> bool {
        let run = RunDir::new(dir);
        run.config().is_file() && (run.log().is_file() || run.root.join("checkpoint").is_dir())
    }

    /// The folder of epoch `epoch`'s kept weights (1-based).
    pub fn epoch(&self, epoch: usize) -> PathBuf {
        self.root.join("checkpoint").join("epochs").join(format!("epoch_{epoch:04}"))
    }
}

/// A checkpoint folder: a model folder plus the optimizer state and the run's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The folder (it is also a model folder).
    pub root: PathBuf,
}

impl Checkpoint {
    /// `state.json`: the run's progress ([`crate::train::trainer::TrainState`]).
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// `optimizer.safetensors`: the momentum buffers.
    pub fn optimizer(&self) -> PathBuf {
        self.root.join("optimizer.safetensors")
    }

    /// The same checkpoint in the sibling folder `last.<extension>` (written before the swap).
    pub fn sibling(&self, extension: &str) -> Checkpoint {
        Checkpoint { root: self.root.with_extension(extension) }
    }
}
