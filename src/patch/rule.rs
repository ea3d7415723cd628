//! The two patching rules and the scores of a patched model.

use serde::{Deserialize, Serialize};

use crate::patch::calibrated::CalibratedRule;
use crate::patch::calibration::Calibration;
use crate::patch::logistic::sigmoid;

/// Which rule combines the weak model and the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// The paper's: the module's TC logit, min-max calibrated on the TC's training images,
    /// replaces the weak model's softmax probability of the TC.
    Paper,
    /// Beyond the paper: a logistic model of "is the TC" over the weak model's log-softmax and
    /// the module's TC logit, fitted on the validation split, thresholded for overall accuracy.
    Calibrated,
}

/// A fitted rule (in `patch.json`, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Rule {
    /// The paper's min-max calibration.
    Paper(Calibration),
    /// The calibrated rule.
    Calibrated(CalibratedRule),
}

impl Rule {
    /// Which rule this is.
    pub fn kind(&self) -> RuleKind {
        match self {
            Rule::Paper(_) => RuleKind::Paper,
            Rule::Calibrated(_) => RuleKind::Calibrated,
        }
    }

    /// The patched score of the TC for one image, to stand in the weak model's softmax row:
    /// the paper's calibrated module score, or for the calibrated rule `q + 2` when it predicts
    /// the TC and `q − 2` when not (`q = σ(w·f + b)`), so that the row's argmax is the rule's
    /// prediction.
    pub fn tc_score(&self, weak_row: &[f32], module_tc: f32) -> f32 {
        match self {
            Rule::Paper(c) => c.score(module_tc),
            Rule::Calibrated(r) => {
                let z = r.logit(weak_row, module_tc);
                let q = sigmoid(z) as f32;
                if z >= r.threshold { q + 2.0 } else { q - 2.0 }
            }
        }
    }
}

/// Softmax of one row of logits.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

impl crate::choice::Choice for RuleKind {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            RuleKind::Paper,
            "paper",
            "the paper's: the module's TC logit, min-max calibrated on the TC's training images, replaces the weak model's TC probability",
        ),
        (
            RuleKind::Calibrated,
            "calibrated",
            "a logistic model over the weak log-softmax and the module's TC logit, fitted on validation, thresholded for overall accuracy",
        ),
    ];
}
