//! Typed paths of a patched-model folder.

use std::path::{Path, PathBuf};

/// The paths of a patched-model folder.
///
/// ```text
/// DIR/patch.json   class mapping, rule and gate (PatchSpec)
/// DIR/weak/        the weak model (a model folder)
/// DIR/module/      the strong model's module for the TC (a model folder)
/// DIR/report.json  the patching report (written by `patch`)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PatchedDir {
    /// The folder.
    pub root: PathBuf,
}

impl PatchedDir {
    /// The patched-model folder at `root`.
    pub fn new(root: &Path) -> Self {
        PatchedDir { root: root.to_path_buf() }
    }
    /// Whether `dir` holds a patched model (`patch.json`).
    pub fn is_patched(dir: &Path) -> bool {
        PatchedDir::new(dir).spec().is_file()
    }
    /// `patch.json`.
    pub fn spec(&self) -> PathBuf {
        self.root.join("patch.json")
    }
    /// `weak/`.
    pub fn weak(&self) -> PathBuf {
        self.root.join("weak")
    }
    /// `module/`.
    pub fn module(&self) -> PathBuf {
        self.root.join("module")
    }
    /// `report.json`.
    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }
}
