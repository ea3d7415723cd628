//! The calibrated rule, beyond the paper: a logistic model of "is the TC" over the weak model's
//! log-softmax and the module's TC logit, fitted on the weak data's validation split, with a
//! decision threshold chosen there for accuracy over all classes.
//!
//! An image is predicted as the TC when `w·f + b >= threshold`, where `f` holds the weak model's
//! log-probabilities (one per weak class, floored at [`LOG_PROB_FLOOR`]) and then the module's TC
//! logit; otherwise as the weak model's most likely class other than the TC. Neither model is
//! retrained. Unlike min-max calibration, the fit sees the weak data's other classes, so a module
//! that fires on images its strong model never saw gets a small weight, and the weak model's own
//! confidence enters the decision.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::patch::logistic;

/// Log-probabilities below this are raised to it (keeps the features finite).
pub const LOG_PROB_FLOOR: f32 = -30.0;
/// L2 weight of the fit on standardised features.
pub const DEFAULT_L2: f64 = 1.0;
/// Folds of the cross-validation that measures the rule for the gate.
pub const FOLDS: usize = 5;
/// Likelihood-ratio statistic the module's feature must reach to count as evidence about the TC
/// beyond the weak model: the chi-square quantile for 1 degree of freedom at p = 0.001.
pub const EVIDENCE_THRESHOLD: f64 = 10.83;
/// Fewest TC and fewest non-TC validation images the fit accepts (every cross-validation fold
/// then trains on at least 8 of each).
pub const MIN_IMAGES_PER_SIDE: usize = 2 * FOLDS;

/// A fitted calibrated rule (stored in `patch.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedRule {
    /// One weight per feature: the weak model's log-probabilities, then the module's TC logit.
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
    /// The rule predicts the TC when `w·f + b >= threshold`.
    pub threshold: f64,
    /// Floor of the log-probability features.
    pub log_prob_floor: f32,
    /// L2 weight of the fit.
    pub l2: f64,
    /// Images the rule was fitted on.
    pub fit_images: usize,
}

/// Appends the features of one image to `out`: `log_softmax(weak_row)` floored at `floor`, then
/// `module_tc`.
pub fn push_features(weak_row: &[f32], module_tc: f32, floor: f32, out: &mut Vec<f64>) {
    let max = weak_row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = weak_row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    out.extend(weak_row.iter().map(|&v| (v as f64 - max - log_sum).max(floor as f64)));
    out.push(module_tc as f64);
}

/// The weak model's most likely class other than `tc` (the first on ties).
pub fn best_other(weak_row: &[f32], tc: usize) -> usize {
    let mut best = if tc == 0 { 1 } else { 0 };
    for (c, &v) in weak_row.iter().enumerate() {
        if c != tc && v > weak_row[best] {
            best = c;
        }
    }
    best
}

impl CalibratedRule {
    /// `w·f + b` of one image.
    pub fn logit(&self, weak_row: &[f32], module_tc: f32) -> f64 {
        let mut f = Vec::with_capacity(weak_row.len() + 1);
        push_features(weak_row, module_tc, self.log_prob_floor, &mut f);
        self.bias + self.weights.iter().zip(&f).map(|(w, x)| w * x).sum::<f64>()
    }

    /// The predicted class of one image (`tc` is the TC's index among the weak outputs).
    pub fn predict(&self, weak_row: &[f32], module_tc: f32, tc: usize) -> usize {
        if self.logit(weak_row, module_tc) >= self.threshold { tc } else { best_other(weak_row, tc) }
    }
}

/// What a calibrated rule is fitted on: the weak model's logits and the module's TC logit of the
/// same images, and their labels.
#[derive(Debug, Clone, Copy)]
pub struct FitData<'a> {
    /// Weak logits `[n, classes]`.
    pub weak: &'a [f32],
    /// Weak classes.
    pub classes: usize,
    /// The module's TC logit, `[n]`.
    pub module_tc: &'a [f32],
    /// Labels `[n]`.
    pub labels: &'a [u16],
    /// The TC's index among the weak outputs.
    pub tc: usize,
}

impl FitData<'_> {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn subset<'b>(&self, rows: &[usize], store: &'b mut (Vec<f32>, Vec<f32>, Vec<u16>)) -> FitData<'b> {
        store.0 =
            rows.iter().flat_map(|&i| self.weak[i * self.classes..(i + 1) * self.classes].iter().copied()).collect();
        store.1 = rows.iter().map(|&i| self.module_tc[i]).collect();
        store.2 = rows.iter().map(|&i| self.labels[i]).collect();
        FitData { weak: &store.0, classes: self.classes, module_tc: &store.1, labels: &store.2, tc: self.tc }
    }

    /// Feature rows `[n, classes + 1]` (`with_module = false`: without the module's column).
    fn design(&self, with_module: bool) -> (Vec<f64>, usize) {
        let d = self.classes + usize::from(with_module);
        let mut x = Vec::with_capacity(self.len() * (self.classes + 1));
        for (row, &m) in self.weak.chunks(self.classes).zip(self.module_tc) {
            push_features(row, m, LOG_PROB_FLOOR, &mut x);
            if !with_module {
                x.pop();
            }
        }
        (x, d)
    }

    fn is_tc(&self) -> Vec<bool> {
        self.labels.iter().map(|&l| l as usize == self.tc).collect()
    }

    fn check(&self) -> Result<()> {
        let tc = self.labels.iter().filter(|&&l| l as usize == self.tc).count();
        let other = self.len() - tc;
        if tc < MIN_IMAGES_PER_SIDE || other < MIN_IMAGES_PER_SIDE {
            return Err(Error::Invalid(format!(
                "the calibrated rule needs at least {MIN_IMAGES_PER_SIDE} validation images of the target class and \
                 {MIN_IMAGES_PER_SIDE} of other classes; the validation split has {tc} and {other}"
            )));
        }
        Ok(())
    }
}

/// The threshold on `z` that maximises the rule's accuracy over all images, where image `i` is
/// right when `z[i] >= t` and it is a TC image, or `z[i] < t` and `other_right[i]` (the weak
/// model's best non-TC class is its label). Thresholds lie halfway between neighbouring distinct
/// values (or 1 beyond the extremes); ties go to the threshold nearest 0 (probability 1/2).
pub fn choose_threshold(z: &[f64], is_tc: &[bool], other_right: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[a].total_cmp(&z[b]));
    if order.is_empty() {
        return 0.0;
    }
    // Threshold below everything: every image predicted TC.
    let mut right = is_tc.iter().filter(|&&t| t).count() as i64;
    let mut best = (right, z[order[0]] - 1.0);
    let better = |right: i64, t: f64, best: &(i64, f64)| right > best.0 || (right == best.0 && t.abs() < best.1.abs());
    for (k, &i) in order.iter().enumerate() {
        right += i64::from(other_right[i]) - i64::from(is_tc[i]);
        let next = order.get(k + 1).map(|&j| z[j]);
        let t = match next {
            Some(v) if v == z[i] => continue,
            Some(v) => 0.5 * (z[i] + v),
            None => z[i] + 1.0,
        };
        if better(right, t, &best) {
            best = (right, t);
        }
    }
    best.1
}

/// Fits the rule (logistic model and threshold) on all of `data`.
pub fn fit(data: &FitData, l2: f64) -> Result<CalibratedRule> {
    data.check()?;
    fit_features(data, true, l2)
}

/// The control of the calibrated rule: the same fit and threshold on the weak model's
/// log-probabilities alone (the module's weight is 0). What it gains needs no module.
pub fn fit_without_module(data: &FitData, l2: f64) -> Result<CalibratedRule> {
    data.check()?;
    fit_features(data, false, l2)
}

/// The fit of [`fit`] without the size check (the cross-validation's folds are smaller).
fn fit_features(data: &FitData, with_module: bool, l2: f64) -> Result<CalibratedRule> {
    let (x, d) = data.design(with_module);
    let model = logistic::fit(&x, d, &data.is_tc(), l2)?;
    let z: Vec<f64> = x.chunks(d).map(|row| model.logit(row)).collect();
    let mut weights = model.weights;
    weights.resize(data.classes + 1, 0.0);
    let other_right: Vec<bool> = data
        .weak
        .chunks(data.classes)
        .zip(data.labels)
        .map(|(row, &l)| best_other(row, data.tc) == l as usize)
        .collect();
    let threshold = choose_threshold(&z, &data.is_tc(), &other_right);
    Ok(CalibratedRule {
        weights,
        bias: model.bias,
        threshold,
        log_prob_floor: LOG_PROB_FLOOR,
        l2,
        fit_images: data.len(),
    })
}

/// Out-of-fold predictions: the images are dealt into `folds` folds (TC and non-TC images
/// separately, in a seeded random order) and each fold is predicted by a rule fitted on the
/// others (`with_module = false`: the control, without the module's feature).
pub fn cross_validated_predictions(
    data: &FitData,
    l2: f64,
    folds: usize,
    seed: u64,
    with_module: bool,
) -> Result<Vec<u16>> {
    data.check()?;
    let mut fold_of = vec![0usize; data.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for side in [true, false] {
        let mut members: Vec<usize> =
            (0..data.len()).filter(|&i| (data.labels[i] as usize == data.tc) == side).collect();
        members.shuffle(&mut rng);
        for (rank, &i) in members.iter().enumerate() {
            fold_of[i] = rank % folds;
        }
    }
    let mut predictions = vec![0u16; data.len()];
    let mut store = Default::default();
    for fold in 0..folds {
        let train: Vec<usize> = (0..data.len()).filter(|&i| fold_of[i] != fold).collect();
        let rule = fit_features(&data.subset(&train, &mut store), with_module, l2)?;
        for i in (0..data.len()).filter(|&i| fold_of[i] == fold) {
            let row = &data.weak[i * data.classes..(i + 1) * data.classes];
            predictions[i] = rule.predict(row, data.module_tc[i], data.tc) as u16;
        }
    }
    Ok(predictions)
}

/// How much the module's TC logit adds to the weak model's log-probabilities in explaining which
/// images are the TC: the likelihood-ratio statistic `2·(ℓ_with − ℓ_without)` of the rules
/// [`fit`] and [`fit_without_module`] gave on `data`. Around 1 for a module that carries no
/// information (chi-square, 1 df).
pub fn module_evidence(data: &FitData, with: &CalibratedRule, without: &CalibratedRule) -> f64 {
    let is_tc = data.is_tc();
    let log_likelihood = |rule: &CalibratedRule| {
        let eta: Vec<f64> =
            data.weak.chunks(data.classes).zip(data.module_tc).map(|(row, &m)| rule.logit(row, m)).collect();
        logistic::log_likelihood(&eta, &is_tc)
    };
    2.0 * (log_likelihood(with) - log_likelihood(without))
}
