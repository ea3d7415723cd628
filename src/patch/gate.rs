//! The gate (paper §4: "if the candidate model's accuracy exceeds that of the weak model, it can
//! be used as a patch"), decided on the weak data's validation split, never on test.

use serde::{Deserialize, Serialize};

use crate::eval::metrics::accuracy;
use crate::patch::metrics::tc_metrics;

/// Accuracy over all classes, TC F1 and non-TC accuracy of some predictions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitScore {
    /// Accuracy over all classes.
    pub accuracy: f64,
    /// F1 of the TC.
    pub tc_f1: f64,
    /// Accuracy on the images of other classes.
    pub non_tc_accuracy: f64,
}

impl SplitScore {
    /// The scores of `predictions` against `labels` for class `tc`.
    pub fn of(labels: &[u16], predictions: &[u16], tc: usize) -> Self {
        let m = tc_metrics(labels, predictions, tc);
        SplitScore { accuracy: accuracy(labels, predictions), tc_f1: m.f1, non_tc_accuracy: m.non_tc_accuracy }
    }
}

/// The gate's decision and what it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// Whether the module may patch: the patched model is more accurate than the weak model on
    /// the validation split (ties: no), and, for the calibrated rule, the module adds evidence.
    pub open: bool,
    /// Why, in one sentence.
    pub reason: String,
    /// Validation images.
    pub images: usize,
    /// The weak model on them.
    pub weak: SplitScore,
    /// The patched model on them (for the calibrated rule: out-of-fold predictions of a
    /// cross-validation, since the rule is fitted on these images).
    pub patched: SplitScore,
    /// Calibrated rule: the same cross-validation without the module (the weak model
    /// recalibrated alone), to show how much of the gain the module brings.
    pub without_module: Option<SplitScore>,
    /// Calibrated rule: the likelihood-ratio statistic of the module's TC logit beyond the weak
    /// model's log-probabilities (see [`crate::patch::calibrated::module_evidence`]).
    pub module_evidence: Option<f64>,
}

impl Gate {
    /// Decides on the validation labels and the weak and patched predictions of those images;
    /// for the calibrated rule, `evidence` (statistic, threshold) must reach its threshold too,
    /// and `without_module` (the control's predictions) is reported beside.
    pub fn decide(
        labels: &[u16],
        weak: &[u16],
        patched: &[u16],
        tc: usize,
        evidence: Option<(f64, f64)>,
        without_module: Option<&[u16]>,
        measured: &str,
    ) -> Gate {
        let (w, p) = (SplitScore::of(labels, weak, tc), SplitScore::of(labels, patched, tc));
        let control = without_module.map(|c| SplitScore::of(labels, c, tc));
        let pct = |v: f64| format!("{:.2}%", 100.0 * v);
        let (open, reason) = if labels.is_empty() {
            (false, "closed: the weak data has no validation images to decide on".to_string())
        } else if p.accuracy <= w.accuracy {
            (
                false,
                format!(
                    "closed: the patched model's validation accuracy ({measured}) {} is not above the weak model's {}",
                    pct(p.accuracy),
                    pct(w.accuracy)
                ),
            )
        } else if let Some((e, threshold)) = evidence.filter(|(e, t)| e < t) {
            (
                false,
                format!(
                    "closed: the module's TC logit adds no evidence about the TC beyond the weak model \
                     (likelihood ratio {e:.2} < {threshold:.2}); the validation gain ({} -> {}) would come from \
                     recalibrating the weak model alone",
                    pct(w.accuracy),
                    pct(p.accuracy)
                ),
            )
        } else {
            let control = control.map_or(String::new(), |c| format!(" (without the module: {})", pct(c.accuracy)));
            (
                true,
                format!(
                    "open: validation accuracy ({measured}) {} -> {}{control}, TC F1 {} -> {}, non-TC accuracy {} -> {}",
                    pct(w.accuracy),
                    pct(p.accuracy),
                    pct(w.tc_f1),
                    pct(p.tc_f1),
                    pct(w.non_tc_accuracy),
                    pct(p.non_tc_accuracy)
                ),
            )
        };
        Gate {
            open,
            reason,
            images: labels.len(),
            weak: w,
            patched: p,
            without_module: control,
            module_evidence: evidence.map(|(e, _)| e),
        }
    }
}
