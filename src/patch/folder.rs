//! A patched model ([`PatchedModel`]): the spec in `patch.json` ([`PatchSpec`]) with its weak
//! model and module, loaded from a [`PatchedDir`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::ImageSet;
use crate::data::pipeline::Normalization;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::eval::logits;
use crate::files::{read_json, write_json};
use crate::folders::PatchedDir;
use crate::model::Model;
use crate::patch::gate::Gate;
use crate::patch::rule::{Rule, softmax};

/// How a module patches a weak model (`patch.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchSpec {
    /// The TC's index in the weak model's outputs.
    pub tc_weak: usize,
    /// The TC's index in the module's (strong model's) outputs.
    pub tc_strong: usize,
    /// The rule and its fitted parameters.
    pub rule: Rule,
    /// Whether the folder applies the rule; when not, it predicts exactly as the weak model.
    pub applied: bool,
    /// The gate's decision on the validation split (`applied` follows it unless patching was
    /// forced with `--ungated`).
    pub gate: Gate,
}

/// Patched scores `[n, weak_classes]` from the weak model's logits `weak` (`[n, weak_classes]`)
/// and the module's `module` (`[n, module_classes]`): each weak row's softmax with the TC's entry
/// replaced by the rule's TC score ([`Rule::tc_score`]); the row's argmax is the prediction. A
/// spec that is not applied gives the weak logits themselves.
pub fn patched_scores(
    weak: &[f32],
    weak_classes: usize,
    module: &[f32],
    module_classes: usize,
    spec: &PatchSpec,
) -> Vec<f32> {
    if !spec.applied {
        return weak.to_vec();
    }
    rule_scores(weak, weak_classes, module, module_classes, spec.tc_weak, spec.tc_strong, &spec.rule)
}

/// The scores of [`patched_scores`] as if the rule were applied.
pub fn rule_scores(
    weak: &[f32],
    weak_classes: usize,
    module: &[f32],
    module_classes: usize,
    tc_weak: usize,
    tc_strong: usize,
    rule: &Rule,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(weak.len());
    for (row, m) in weak.chunks(weak_classes).zip(module.chunks(module_classes)) {
        let start = out.len();
        out.extend(softmax(row));
        out[start + tc_weak] = rule.tc_score(row, m[tc_strong]);
    }
    out
}

/// A weak model patched with a module.
#[derive(Debug, Clone)]
pub struct PatchedModel {
    /// The weak model.
    pub weak: Model,
    /// The strong model's module for the TC.
    pub module: Model,
    /// Class mapping, rule and gate.
    pub spec: PatchSpec,
}

impl PatchedModel {
    /// Loads a patched-model folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let paths = PatchedDir::new(dir);
        let spec: PatchSpec = read_json(&paths.spec())?;
        let weak = Model::load(&paths.weak())?;
        let module = Model::load(&paths.module())?;
        let rule_fits = match &spec.rule {
            Rule::Paper(_) => true,
            Rule::Calibrated(r) => r.weights.len() == weak.description.classes + 1,
        };
        if weak.description.input != module.description.input
            || spec.tc_weak >= weak.description.classes
            || spec.tc_strong >= module.description.classes
            || !rule_fits
        {
            return Err(Error::file(paths.spec(), "does not fit the weak model and module beside it"));
        }
        Ok(PatchedModel { weak, module, spec })
    }

    /// Saves the folder (see the module docs).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let paths = PatchedDir::new(dir);
        self.weak.save(&paths.weak())?;
        self.module.save(&paths.module())?;
        write_json(&paths.spec(), &self.spec)
    }

    /// Patched scores `[n, weak_classes]` of every image of `set` (see [`patched_scores`]).
    pub fn scores(&self, engine: &dyn Engine, set: &ImageSet, normalization: &Normalization) -> Result<Vec<f32>> {
        let weak = logits(engine, &self.weak, set, normalization)?;
        if !self.spec.applied {
            return Ok(weak);
        }
        let module = logits(engine, &self.module, set, normalization)?;
        Ok(patched_scores(&weak, self.weak.description.classes, &module, self.module.description.classes, &self.spec))
    }
}
