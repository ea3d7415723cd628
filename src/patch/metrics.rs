//! The paper's patching metrics: precision, recall and F1 of the target class, and accuracy on
//! the samples of the other classes.

use serde::{Deserialize, Serialize};

/// Metrics of one model for one target class (TC).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TcMetrics {
    /// Share of the samples predicted as TC that are TC (0 when none is).
    pub precision: f64,
    /// Share of the TC's samples predicted as TC.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Accuracy on the samples whose label is not the TC (a prediction of TC counts as wrong).
    pub non_tc_accuracy: f64,
}

/// [`TcMetrics`] of `predictions` against `labels` for class `tc`.
pub fn tc_metrics(labels: &[u16], predictions: &[u16], tc: usize) -> TcMetrics {
    let (mut tp, mut predicted, mut actual, mut non_tc, mut non_tc_right) = (0usize, 0usize, 0usize, 0usize, 0usize);
    for (&l, &p) in labels.iter().zip(predictions) {
        let (l, p) = (l as usize, p as usize);
        predicted += usize::from(p == tc);
        if l == tc {
            actual += 1;
            tp += usize::from(p == tc);
        } else {
            non_tc += 1;
            non_tc_right += usize::from(p == l);
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (ratio(tp, predicted), ratio(tp, actual));
    let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    TcMetrics { precision, recall, f1, non_tc_accuracy: ratio(non_tc_right, non_tc) }
}
