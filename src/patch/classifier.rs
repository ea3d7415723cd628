//! A model folder or a patched-model folder, evaluated alike.

use std::path::Path;

use crate::data::ImageSet;
use crate::data::pipeline::Normalization;
use crate::engine::Engine;
use crate::error::Result;
use crate::eval::logits;
use crate::folders::Artifact;
use crate::model::Model;
use crate::patch::PatchedModel;

/// Anything that scores images: a plain model or a patched one.
#[derive(Debug, Clone)]
pub enum Classifier {
    /// A model folder.
    Plain(Model),
    /// A patched-model folder.
    Patched(Box<PatchedModel>),
}

impl Classifier {
    /// Loads `dir` as a patched model when it is one ([`Artifact::open`]), else as a model.
    pub fn load(dir: &Path) -> Result<Self> {
        match Artifact::open(dir)? {
            Artifact::Patched(p) => Ok(Classifier::Patched(Box::new(PatchedModel::load(&p.root)?))),
            other => Ok(Classifier::Plain(other.load_model()?)),
        }
    }

    /// The model whose outputs are scored (the weak model of a patched one).
    pub fn base(&self) -> &Model {
        match self {
            Classifier::Plain(m) => m,
            Classifier::Patched(p) => &p.weak,
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.base().description.classes
    }

    /// Scores `[n, classes]` of every image of `set` (logits, or patched probabilities); the
    /// prediction is each row's argmax.
    pub fn scores(&self, engine: &dyn Engine, set: &ImageSet, normalization: &Normalization) -> Result<Vec<f32>> {
        match self {
            Classifier::Plain(m) => logits(engine, m, set, normalization),
            Classifier::Patched(p) => p.scores(engine, set, normalization),
        }
    }
}
