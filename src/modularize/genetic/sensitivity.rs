//! Layer sensitivity (paper section 3.2.1): for each segment and drop ratio 10%..90%, the
//! composed accuracy of the N modules that drop that share of the segment's least important
//! kernels (everything else kept). A segment is insensitive when dropping 90% loses at most
//! `threshold` accuracy.

use crate::error::Result;
use crate::model::shape::infer_shapes;
use crate::model::split::latest_cut;
use crate::modularize::genetic::evaluator::Evaluator;
use crate::modularize::genetic::grouping::Layout;
use crate::modularize::modules::composed_accuracy;
use crate::progress::Progress;
use crate::records::{Sensitivity, SensitivityRow};

/// The drop ratios measured.
pub const RATIOS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Activation bytes the table holds at once; beyond it the images go through in chunks.
pub const CUT_BYTES: usize = 1 << 30;

/// Measures the table with the evaluator's images and `labels`.
///
/// Dropping kernels of a segment changes no layer before the segment's first producing
/// convolution, so the model runs once up to the latest usable cut before it
/// ([`crate::model::split`]) and every (class, ratio) module runs only from there on.
pub fn measure(
    layout: &Layout,
    labels_of_segments: &[String],
    evaluator: &mut Evaluator<'_>,
    labels: &[u16],
    classes: usize,
    threshold: f64,
    progress: &dyn Progress,
) -> Result<Sensitivity> {
    let base_logits = evaluator.model_logits()?;
    let base_vectors: Vec<Vec<f32>> =
        (0..classes).map(|c| base_logits.chunks(classes).map(|row| row[c]).collect()).collect();
    let base_accuracy = composed_accuracy(&as_refs(&base_vectors), labels);
    let plans = (0..layout.segments.len()).map(|s| SegmentPlan::new(evaluator, s)).collect::<Result<Vec<_>>>()?;
    let total: usize = plans.iter().map(|p| RATIOS.len() * p.chunks(evaluator.images())).sum();
    progress.start("layer sensitivity", total as u64);
    let mut rows = Vec::with_capacity(layout.segments.len());
    for (s, plan) in plans.iter().enumerate() {
        let vectors = segment_logits(evaluator, layout, s, plan, classes, progress)?;
        let accuracy: Vec<f64> = vectors.iter().map(|v| composed_accuracy(&as_refs(v), labels)).collect();
        let sensitive = accuracy[RATIOS.len() - 1] < base_accuracy - threshold;
        rows.push(SensitivityRow { layers: labels_of_segments[s].clone(), accuracy, sensitive });
    }
    progress.finish();
    Ok(Sensitivity { threshold, base_accuracy, images: labels.len(), segments: rows })
}

/// Where the modules of one segment start, and how many images go through at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlan {
    /// The latest usable cut before the segment's first producing convolution (0: none).
    pub cut: usize,
    /// Images per chunk, so that a chunk's activations stay within [`CUT_BYTES`].
    pub chunk: usize,
}

impl SegmentPlan {
    /// The plan of segment (channel group) `s` of the evaluator's model.
    pub fn new(evaluator: &Evaluator<'_>, s: usize) -> Result<Self> {
        let desc = &evaluator.model().description;
        let groups = evaluator.channel_groups();
        let first = groups.groups[s].producers.iter().copied().min().unwrap_or(0);
        let cut = latest_cut(desc, first);
        let per = if cut == 0 { desc.input.iter().product() } else { infer_shapes(desc)?[cut - 1].output.numel() };
        Ok(SegmentPlan { cut, chunk: (CUT_BYTES / (4 * per.max(1))).clamp(1, evaluator.images().max(1)) })
    }

    fn chunks(&self, images: usize) -> usize {
        images.div_ceil(self.chunk)
    }
}

/// The keep-masks of the module for class `n` that drops the share `ratio` of segment `s`'s
/// least important kernels (for class `n`; at least one kept) and keeps everything else.
pub fn drop_masks(layout: &Layout, s: usize, ratio: f64, n: usize) -> Vec<Vec<bool>> {
    let segment = &layout.segments[s];
    let keep = ((segment.width as f64 * (1.0 - ratio)).round() as usize).clamp(1, segment.width);
    let mut masks: Vec<Vec<bool>> = layout.segments.iter().map(|s| vec![true; s.width]).collect();
    masks[s] = vec![false; segment.width];
    for &k in &segment.importance_order[n][..keep] {
        masks[s][k] = true;
    }
    masks
}

/// Own-class logits `[ratio][class][image]` of the modules that drop each of [`RATIOS`] of
/// segment `s`'s least important kernels (per class), run from `plan.cut` on.
pub fn segment_logits(
    evaluator: &Evaluator<'_>,
    layout: &Layout,
    s: usize,
    plan: &SegmentPlan,
    classes: usize,
    progress: &dyn Progress,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let modules = RATIOS
        .iter()
        .map(|&ratio| {
            (0..classes)
                .map(|n| evaluator.keep_masks(drop_masks(layout, s, ratio, n)).map(|m| (n, m)))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let n_images = evaluator.images();
    let mut vectors: Vec<Vec<Vec<f32>>> = vec![vec![Vec::with_capacity(n_images); classes]; RATIOS.len()];
    for start in (0..n_images).step_by(plan.chunk) {
        let len = plan.chunk.min(n_images - start);
        let inputs = evaluator.activations(plan.cut, start, len)?;
        for (r, ratio_modules) in modules.iter().enumerate() {
            for (n, v) in evaluator.run_from(plan.cut, &inputs, len, ratio_modules)?.into_iter().enumerate() {
                vectors[r][n].extend(v);
            }
            progress.advance(1);
        }
    }
    Ok(vectors)
}

fn as_refs(vectors: &[Vec<f32>]) -> Vec<&[f32]> {
    vectors.iter().map(|v| v.as_slice()).collect()
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
