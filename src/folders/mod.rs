//! The run folders: each kind is a type that owns its file names ([`RunDir`], [`ModularizeDir`],
//! [`PatchedDir`]), and [`Artifact`] says which kind a folder is, by the files each kind owns.

use std::path::{Path, PathBuf};

mod modularization;
mod patched;
mod run;

pub use modularization::ModularizeDir;
pub use patched::PatchedDir;
pub use run::{Checkpoint, RunDir};

use crate::error::{Error, Result};
use crate::model::{DESCRIPTION_FILE, Model};

/// A folder the tool wrote (or a model folder from `import` or elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub enum Artifact {
    /// A model folder (`model.json`, `model.safetensors`): a module, a picked or imported model.
    Model(PathBuf),
    /// A training run folder (it also holds the kept model once an epoch has finished).
    TrainingRun(RunDir),
    /// A modularization folder (modules under `modules/`).
    Modularization(ModularizeDir),
    /// A patched-model folder.
    Patched(PatchedDir),
}

impl Artifact {
    /// Says what `dir` holds; an error when it does not exist or holds none of the above.
    pub fn open(dir: &Path) -> Result<Artifact> {
        if !dir.exists() {
            return Err(Error::file(dir, "does not exist"));
        }
        if !dir.is_dir() {
            return Err(Error::file(dir, "is not a folder (give the folder that holds model.json)"));
        }
        Ok(if PatchedDir::is_patched(dir) {
            Artifact::Patched(PatchedDir::new(dir))
        } else if RunDir::is_run(dir) {
            Artifact::TrainingRun(RunDir::new(dir))
        } else if ModularizeDir::is_modularization(dir) {
            Artifact::Modularization(ModularizeDir::new(dir))
        } else if dir.join(DESCRIPTION_FILE).is_file() {
            Artifact::Model(dir.to_path_buf())
        } else {
            return Err(Error::file(
                dir,
                "is not a model, training run, modularization or patched-model folder (it holds none of \
                 model.json, train.jsonl, importance.json, modules/ or patch.json)",
            ));
        })
    }

    /// What it is, in words.
    pub fn kind(&self) -> &'static str {
        match self {
            Artifact::Model(_) => "model",
            Artifact::TrainingRun(_) => "training run",
            Artifact::Modularization(_) => "modularization",
            Artifact::Patched(_) => "patched model",
        }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        match self {
            Artifact::Model(root) => root,
            Artifact::TrainingRun(d) => &d.root,
            Artifact::Modularization(d) => &d.root,
            Artifact::Patched(d) => &d.root,
        }
    }

    /// The single model it holds (a training run's kept model); an error that says what to give
    /// instead for a modularization or a patched model.
    pub fn load_model(&self) -> Result<Model> {
        match self {
            Artifact::Model(root) => Model::load(root),
            Artifact::TrainingRun(run) if !run.root.join(DESCRIPTION_FILE).is_file() => {
                Err(Error::file(&run.root, "holds a training run with no finished epoch yet: no model to use"))
            }
            Artifact::TrainingRun(run) => Model::load(&run.root),
            Artifact::Modularization(d) => Err(Error::file(
                &d.root,
                format!(
                    "is a modularization folder, not a single model: give one of its modules ({})",
                    d.module(0).display()
                ),
            )),
            Artifact::Patched(d) => Err(Error::file(
                &d.root,
                format!(
                    "is a patched-model folder, not a single model: give its weak model ({}) or module ({})",
                    d.weak().display(),
                    d.module().display()
                ),
            )),
        }
    }
}
