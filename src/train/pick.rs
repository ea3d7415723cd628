//! Picks the poor-fit models from a run: the *overfitting* model (best validation epoch) and
//! the *underfitting* model (half that epoch).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::files::{write_dir_atomic, write_json};
use crate::folders::RunDir;
use crate::model::Model;
use crate::train::trainer::{load_state, underfit_epoch};

/// Which poor-fit model to pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// The best-validation epoch.
    Overfit,
    /// Half the best-validation epoch.
    Underfit,
}

/// What was picked (`pick.json` next to the model).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Picked {
    /// Which model.
    pub fit: Fit,
    /// Its epoch.
    pub epoch: usize,
    /// The best-validation epoch of the run.
    pub best_epoch: usize,
    /// Training accuracy at that epoch (as trained).
    pub train_accuracy: f64,
    /// Validation accuracy at that epoch.
    pub validation_accuracy: f64,
}

/// `pick.json` in the picked model's folder `model_dir`.
pub fn pick_file(model_dir: &Path) -> PathBuf {
    model_dir.join("pick.json")
}

/// Copies the chosen epoch's model from run `run_dir` to the model folder `out`.
pub fn pick(run_dir: &Path, fit: Fit, out: &Path) -> Result<Picked> {
    let _owned = crate::files::lock::OutputLock::acquire(out)?;
    if out.exists() {
        return Err(Error::file(out, "already exists: choose another output folder or remove it"));
    }
    let state = load_state(run_dir)?;
    if state.best_epoch == 0 {
        return Err(Error::file(run_dir, "has no finished epoch yet"));
    }
    let epoch = match fit {
        Fit::Overfit => state.best_epoch,
        Fit::Underfit => underfit_epoch(state.best_epoch),
    };
    let dir = RunDir::new(run_dir).epoch(epoch);
    if !dir.is_dir() {
        return Err(Error::file(
            run_dir,
            format!(
                "keeps no weights of epoch {epoch}: only runs trained with the poor-fit recipe keep per-epoch checkpoints"
            ),
        ));
    }
    let model = Model::load(&dir)?;
    let record = &state.history[epoch - 1];
    let picked = Picked {
        fit,
        epoch,
        best_epoch: state.best_epoch,
        train_accuracy: record.train_accuracy,
        validation_accuracy: record.validation_accuracy,
    };
    let source = RunDir::new(run_dir).source();
    write_dir_atomic(out, |tmp| {
        model.save(tmp)?;
        // The data the run was trained on, for `patch` to check its dataset against.
        if source.is_file() {
            let to = tmp.join("source.json");
            std::fs::copy(&source, &to).map_err(|e| Error::io(&to, e))?;
        }
        write_json(&pick_file(tmp), &picked)
    })?;
    Ok(picked)
}
