//! Classification metrics from labels and predictions: accuracy, confusion matrix, and
//! per-class precision, recall and F1 (0 where undefined, as scikit-learn's default).

use serde::{Deserialize, Serialize};

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: String,
    /// True positives / predicted positives.
    pub precision: f64,
    /// True positives / actual positives.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Number of samples of the class.
    pub support: usize,
}

/// Metrics of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Number of samples.
    pub count: usize,
    /// Per-class metrics.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

impl Metrics {
    /// Computes the metrics of `predictions` against `labels` for the given class names.
    pub fn new(labels: &[u16], predictions: &[u16], class_names: &[String]) -> Self {
        let classes = class_names.len();
        let mut confusion = vec![vec![0usize; classes]; classes];
        for (&l, &p) in labels.iter().zip(predictions) {
            if (l as usize) < classes && (p as usize) < classes {
                confusion[l as usize][p as usize] += 1;
            }
        }
        let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
        let per_class = (0..classes)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let predicted: usize = (0..classes).map(|t| confusion[t][c]).sum();
                let support: usize = confusion[c].iter().sum();
                let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
                let recall = if support > 0 { tp / support as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassMetrics { class: c, name: class_names[c].clone(), precision, recall, f1, support }
            })
            .collect();
        Metrics {
            accuracy: if labels.is_empty() { 0.0 } else { correct as f64 / labels.len() as f64 },
            count: labels.len(),
            per_class,
            confusion,
        }
    }
}

/// Index of the largest value of each row of `logits` (`[n, classes]`, row-major).
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<u16> {
    logits
        .chunks(classes)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u16
        })
        .collect()
}

/// Accuracy of `predictions` against `labels` (0 when there are none).
pub fn accuracy(labels: &[u16], predictions: &[u16]) -> f64 {
    let right = labels.iter().zip(predictions).filter(|(l, p)| l == p).count();
    if labels.is_empty() { 0.0 } else { right as f64 / labels.len() as f64 }
}
