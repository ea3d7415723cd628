//! Typed paths of an experiment folder.
//!
//! ```text
//! DIR/config.toml                                the configuration the experiment runs with
//! DIR/strong/<model>/                            training run of the strong model
//! DIR/modules/<model>/                           its modularization
//! DIR/weak/<model>/tc<K>/{simple,poor-fit}/      training runs of the weak models
//! DIR/weak/<model>/tc<K>/{underfit,overfit}/     models picked from the poor-fit run
//! DIR/patched/<model>/tc<K>/<kind>/<rule>/       patched models
//! DIR/rq3/<model>/<grouping>-<init>/             RQ3 ablation modularizations
//! DIR/plan.json                                  the task graph
//! DIR/tasks/<id>.json                            what each task cost
//! DIR/reports/                                   Markdown, JSON, CSV and plots
//! ```

use std::path::{Path, PathBuf};

use crate::choice::Choice;
use crate::experiment::config::WeakKind;
use crate::folders::ModularizeDir;
use crate::folders::PatchedDir;
use crate::folders::RunDir;
use crate::modularize::genetic::ga::InitKind;
use crate::modularize::genetic::grouping::GroupingKind;
use crate::patch::RuleKind;

/// The paths of an experiment folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentDir {
    /// The folder.
    pub root: PathBuf,
}

impl ExperimentDir {
    /// The experiment folder at `root`.
    pub fn new(root: &Path) -> Self {
        ExperimentDir { root: root.to_path_buf() }
    }
    /// `config.toml`: the configuration the experiment runs with.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// The strong model's training run.
    pub fn strong(&self, model: &str) -> RunDir {
        RunDir::new(&self.root.join("strong").join(model))
    }
    /// The strong model's modularization.
    pub fn modules(&self, model: &str) -> ModularizeDir {
        ModularizeDir::new(&self.root.join("modules").join(model))
    }
    fn weak_root(&self, model: &str, tc: usize) -> PathBuf {
        self.root.join("weak").join(model).join(format!("tc{tc}"))
    }
    /// A weak model's folder: a training run (simple) or a picked model folder (underfit,
    /// overfit).
    pub fn weak(&self, model: &str, tc: usize, kind: WeakKind) -> PathBuf {
        self.weak_root(model, tc).join(kind.name())
    }
    /// The training run of a weak model trained as such (simple).
    pub fn weak_run(&self, model: &str, tc: usize, kind: WeakKind) -> RunDir {
        RunDir::new(&self.weak(model, tc, kind))
    }
    /// The poor-fit training run the underfit and overfit models are picked from.
    pub fn poor_fit_run(&self, model: &str, tc: usize) -> RunDir {
        RunDir::new(&self.weak_root(model, tc).join("poor-fit"))
    }
    /// A patched model's folder.
    pub fn patched(&self, model: &str, tc: usize, kind: WeakKind, rule: RuleKind) -> PatchedDir {
        PatchedDir::new(
            &self.root.join("patched").join(model).join(format!("tc{tc}")).join(kind.name()).join(rule.name()),
        )
    }
    /// An RQ3 ablation run.
    pub fn ablation(&self, model: &str, grouping: GroupingKind, init: InitKind) -> ModularizeDir {
        ModularizeDir::new(&self.root.join("rq3").join(model).join(format!("{}-{}", grouping.name(), init.name())))
    }
    /// `tasks/<stem>.json`: what the task with file stem `stem` cost ([`crate::experiment::TaskTiming`]).
    pub fn task_timing(&self, stem: &str) -> PathBuf {
        self.root.join("tasks").join(format!("{stem}.json"))
    }
    /// `reports/`.
    pub fn reports(&self) -> PathBuf {
        self.root.join("reports")
    }
}
