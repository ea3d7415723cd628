//! What a patch changed on the test split, image by image: TC counts, fixes and regressions,
//! false positives by true class, the TC score's AUROC, and bootstrap intervals of the changes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::patch::metrics::tc_metrics;

/// Resamples of the bootstrap intervals.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
/// Seed of the bootstrap intervals (fixed: the same predictions give the same intervals).
pub const BOOTSTRAP_SEED: u64 = 0;

/// True positives, false positives and false negatives of the TC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcCounts {
    /// TC images predicted as the TC.
    pub tp: usize,
    /// Other images predicted as the TC.
    pub fp: usize,
    /// TC images predicted as something else.
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl TcCounts {
    /// The counts of `predictions` against `labels` for class `tc`.
    pub fn of(labels: &[u16], predictions: &[u16], tc: usize) -> Self {
        let mut c = TcCounts::default();
        for (&l, &p) in labels.iter().zip(predictions) {
            match (l as usize == tc, p as usize == tc) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => {}
            }
        }
        c
    }
}

/// Images whose prediction changed one way, split by whether their label is the TC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// TC images.
    pub tc: usize,
    /// Images of other classes.
    pub non_tc: usize,
}

impl Changed {
    /// TC and non-TC images together.
    pub fn total(&self) -> usize {
        self.tc + self.non_tc
    }
}

/// A 95% interval `[low, high]`.
pub type Interval = [f64; 2];

/// Bootstrap 95% intervals (percentile method) of `after − before` for each TC metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeIntervals {
    /// Precision change.
    pub precision: Interval,
    /// Recall change.
    pub recall: Interval,
    /// F1 change.
    pub f1: Interval,
    /// Non-TC accuracy change.
    pub non_tc_accuracy: Interval,
}

/// Everything [`diagnose`] measures of a before/after pair of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// TC counts before.
    pub before: TcCounts,
    /// TC counts after.
    pub after: TcCounts,
    /// Images wrong before and right after.
    pub fixes: Changed,
    /// Images right before and wrong after.
    pub regressions: Changed,
    /// Images predicted as the TC, by true class, before (the TC's own entry: its true positives).
    pub predicted_tc_before: Vec<usize>,
    /// The same after.
    pub predicted_tc_after: Vec<usize>,
    /// Bootstrap intervals of the metric changes.
    pub change_intervals: ChangeIntervals,
}

/// Compares `before` and `after` predictions of the same images (`labels`, `classes` classes).
pub fn diagnose(labels: &[u16], before: &[u16], after: &[u16], tc: usize, classes: usize) -> Diagnostics {
    let mut fixes = Changed::default();
    let mut regressions = Changed::default();
    let mut predicted_tc_before = vec![0; classes];
    let mut predicted_tc_after = vec![0; classes];
    for ((&l, &b), &a) in labels.iter().zip(before).zip(after) {
        let side = |c: &mut Changed| if l as usize == tc { c.tc += 1 } else { c.non_tc += 1 };
        match (b == l, a == l) {
            (false, true) => side(&mut fixes),
            (true, false) => side(&mut regressions),
            _ => {}
        }
        if b as usize == tc && (l as usize) < classes {
            predicted_tc_before[l as usize] += 1;
        }
        if a as usize == tc && (l as usize) < classes {
            predicted_tc_after[l as usize] += 1;
        }
    }
    Diagnostics {
        before: TcCounts::of(labels, before, tc),
        after: TcCounts::of(labels, after, tc),
        fixes,
        regressions,
        predicted_tc_before,
        predicted_tc_after,
        change_intervals: bootstrap_changes(labels, before, after, tc, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED),
    }
}

/// The 2.5% and 97.5% percentiles of `values` (sorted in place).
pub fn percentile_interval(values: &mut [f64]) -> Interval {
    if values.is_empty() {
        return [0.0, 0.0];
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    [at(0.025), at(0.975)]
}

/// Bootstrap intervals of the TC metric changes: `resamples` draws of the images with
/// replacement from `seed`, the change of each metric per draw, its 2.5% and 97.5% percentiles.
pub fn bootstrap_changes(
    labels: &[u16],
    before: &[u16],
    after: &[u16],
    tc: usize,
    resamples: usize,
    seed: u64,
) -> ChangeIntervals {
    let n = labels.len();
    if n == 0 || resamples == 0 {
        return ChangeIntervals::default();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut changes: [Vec<f64>; 4] = Default::default();
    let (mut l, mut b, mut a) = (vec![0u16; n], vec![0u16; n], vec![0u16; n]);
    for _ in 0..resamples {
        for k in 0..n {
            let i = rng.random_range(0..n);
            (l[k], b[k], a[k]) = (labels[i], before[i], after[i]);
        }
        let (mb, ma) = (tc_metrics(&l, &b, tc), tc_metrics(&l, &a, tc));
        changes[0].push(ma.precision - mb.precision);
        changes[1].push(ma.recall - mb.recall);
        changes[2].push(ma.f1 - mb.f1);
        changes[3].push(ma.non_tc_accuracy - mb.non_tc_accuracy);
    }
    let [p, r, f, o] = changes.map(|mut v| percentile_interval(&mut v));
    ChangeIntervals { precision: p, recall: r, f1: f, non_tc_accuracy: o }
}

/// Area under the ROC curve of `scores` for telling `positive` images from the others: the
/// probability that a random positive scores above a random negative, ties counting one half.
/// `None` when either side is empty.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann-Whitney: the sum of the positives' (tie-averaged) ranks.
    let mut rank_sum = 0.0;
    let mut k = 0;
    while k < order.len() {
        let mut end = k + 1;
        while end < order.len() && scores[order[end]] == scores[order[k]] {
            end += 1;
        }
        let mean_rank = (k + 1 + end) as f64 / 2.0;
        rank_sum += mean_rank * order[k..end].iter().filter(|&&i| positive[i]).count() as f64;
        k = end;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64))
}
