//! Layer sensitivity (paper section 3.2.1): for each segment and drop ratio 10%..90%, the
//! composed accuracy of the N modules that drop that share of the segment's least important
//! kernels (everything else kept). A segment is insensitive when dropping 90% loses at most
//! `threshold` accuracy.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::modularize::composition::composed_accuracy;
use crate::modularize::evaluator::Evaluator;
use crate::modularize::grouping::Layout;
use crate::progress::Progress;

/// The drop ratios measured.
pub const RATIOS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Sensitivity of every segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// Accuracy loss at 90% drop that still counts as insensitive.
    pub threshold: f64,
    /// Composed accuracy with nothing dropped.
    pub base_accuracy: f64,
    /// Images the table was measured on.
    pub images: usize,
    /// One row per segment.
    pub segments: Vec<SensitivityRow>,
}

/// One segment's row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    /// The segment's layers, e.g. `conv_1+conv_3`.
    pub layers: String,
    /// Composed accuracy at each of [`RATIOS`].
    pub accuracy: Vec<f64>,
    /// Whether dropping 90% loses more than the threshold.
    pub sensitive: bool,
}

/// Measures the table with the evaluator's images and `labels`.
pub fn measure(
    layout: &Layout,
    labels_of_segments: &[String],
    evaluator: &mut Evaluator<'_>,
    labels: &[u16],
    classes: usize,
    threshold: f64,
    progress: &dyn Progress,
) -> Result<Sensitivity> {
    let full: Vec<Vec<bool>> = layout.segments.iter().map(|s| vec![true; s.width]).collect();
    let keep_all = evaluator.keep_masks(full.clone())?;
    let base_vectors = (0..classes).map(|n| evaluator.run(n, &keep_all)).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&[f32]> = base_vectors.iter().map(|v| v.as_slice()).collect();
    let base_accuracy = composed_accuracy(&refs, labels);
    progress.start("layer sensitivity", (layout.segments.len() * RATIOS.len()) as u64);
    let mut rows = Vec::with_capacity(layout.segments.len());
    for (s, segment) in layout.segments.iter().enumerate() {
        let mut accuracy = Vec::with_capacity(RATIOS.len());
        for ratio in RATIOS {
            let keep = ((segment.width as f64 * (1.0 - ratio)).round() as usize).clamp(1, segment.width);
            let mut vectors = Vec::with_capacity(classes);
            for n in 0..classes {
                let mut masks = full.clone();
                masks[s] = vec![false; segment.width];
                for &k in &segment.importance_order[n][..keep] {
                    masks[s][k] = true;
                }
                let masks = evaluator.keep_masks(masks)?;
                vectors.push(evaluator.run(n, &masks)?);
            }
            let refs: Vec<&[f32]> = vectors.iter().map(|v| v.as_slice()).collect();
            accuracy.push(composed_accuracy(&refs, labels));
            progress.advance(1);
        }
        let sensitive = accuracy[RATIOS.len() - 1] < base_accuracy - threshold;
        rows.push(SensitivityRow { layers: labels_of_segments[s].clone(), accuracy, sensitive });
    }
    progress.finish();
    Ok(Sensitivity { threshold, base_accuracy, images: labels.len(), segments: rows })
}

impl Sensitivity {
    /// Checks that the table has one row per segment of `layout`, each with one accuracy per
    /// drop ratio: a table from another model is refused.
    pub fn check(&self, layout: &Layout) -> std::result::Result<(), String> {
        if self.segments.len() != layout.segments.len()
            || self.segments.iter().any(|r| r.accuracy.len() != RATIOS.len())
        {
            return Err(format!(
                "has {} segments, but the model has {} (with {} drop ratios each): it belongs to another model",
                self.segments.len(),
                layout.segments.len(),
                RATIOS.len()
            ));
        }
        Ok(())
    }

    /// The table as text: one row per segment, one column per drop ratio.
    pub fn table(&self) -> String {
        let mut out = format!("{:<24}", "segment \\ drop");
        for r in RATIOS {
            out += &format!(" {:>5.0}%", r * 100.0);
        }
        out += "  sensitive\n";
        for row in &self.segments {
            out += &format!("{:<24}", row.layers);
            for a in &row.accuracy {
                out += &format!(" {a:>6.3}");
            }
            out += &format!("  {}\n", if row.sensitive { "yes" } else { "no" });
        }
        out + &format!(
            "composed accuracy with nothing dropped: {:.4}; sensitive = loses more than {} at 90% drop\n",
            self.base_accuracy, self.threshold
        )
    }
}
