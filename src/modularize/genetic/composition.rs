//! Composed models and the pruning-based search over them (paper section 3.3.3).
//!
//! A composed model CM takes one module per class; module n contributes its own logit, and the CM
//! predicts the class whose module's logit is largest (the lowest class on ties). Evaluating all
//! NI^N combinations is out of reach, so classes are shuffled and merged pairwise, level by level:
//! CM(2) from single classes, then CM(4), CM(8), … up to CM(N) (a class or group left over at a
//! level waits for the next). At each level a merge scores every pair of surviving candidates on
//! the validation images of its classes and keeps the best `Ntop`: the number of candidates with
//! accuracy ≥ the level's threshold, clamped to `[ntop_min, ntop_max]`. Only cached logit vectors
//! are used, never a new forward pass.

use crate::error::{Error, Result};
use crate::modularize::modules::composed_accuracy;
use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Pruning settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositionConfig {
    /// Fewest candidates kept per merge.
    pub ntop_min: usize,
    /// Most candidates kept per merge.
    pub ntop_max: usize,
    /// Accuracy threshold of each merge level (the last one applies to deeper levels).
    pub thresholds: Vec<f64>,
}

impl Default for CompositionConfig {
    fn default() -> Self {
        CompositionConfig { ntop_min: 50, ntop_max: 500, thresholds: vec![0.95, 0.95, 0.85, 0.8] }
    }
}

impl CompositionConfig {
    /// Checks `1 <= ntop_min <= ntop_max` and at least one threshold, each in [0, 1].
    pub fn validate(&self) -> Result<()> {
        Error::check_at_least("ntop_min", self.ntop_min, 1)?;
        if self.ntop_min > self.ntop_max {
            return Err(Error::Invalid(format!(
                "`ntop_min` ({}) must not exceed `ntop_max` ({})",
                self.ntop_min, self.ntop_max
            )));
        }
        if self.thresholds.is_empty() {
            return Err(Error::Invalid("`thresholds` needs at least one accuracy threshold".into()));
        }
        self.thresholds.iter().try_for_each(|&t| Error::check_range("thresholds", t, 0.0, 1.0))
    }
}

/// One composed model: the individual chosen for each class, and its accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Combination {
    /// `members[n]`: index of class n's module in the population.
    pub members: Vec<usize>,
    /// Accuracy on the validation images.
    pub accuracy: f64,
}

/// The own-class logit vectors of every individual: `scores[n][i][s]` for class n, individual i,
/// validation image s.
pub type Scores<'a> = [Vec<&'a [f32]>];

/// Best combination by exhaustive enumeration (for checks on tiny populations): highest accuracy,
/// the lexicographically smallest members on ties.
pub fn exhaustive(scores: &Scores<'_>, labels: &[u16]) -> Combination {
    let n = scores.len();
    let mut members = vec![0usize; n];
    let mut best = Combination { members: members.clone(), accuracy: -1.0 };
    loop {
        let vectors: Vec<&[f32]> = (0..n).map(|c| scores[c][members[c]]).collect();
        let acc = composed_accuracy(&vectors, labels);
        if acc > best.accuracy {
            best = Combination { members: members.clone(), accuracy: acc };
        }
        // Next combination (odometer, last class fastest).
        let mut c = n;
        loop {
            if c == 0 {
                return best;
            }
            c -= 1;
            members[c] += 1;
            if members[c] < scores[c].len() {
                break;
            }
            members[c] = 0;
        }
    }
}

/// A set of classes with its surviving candidates.
struct Group {
    classes: Vec<usize>,
    /// Each candidate: the member of each class in `classes` (same order).
    candidates: Vec<Vec<usize>>,
}

/// The per-image maximum of a candidate's logits over its classes, on the images `samples`.
fn maxima(group: &Group, members: &[usize], scores: &Scores<'_>, samples: &[usize]) -> (Vec<f32>, Vec<u16>) {
    let mut best = vec![f32::NEG_INFINITY; samples.len()];
    let mut class = vec![u16::MAX; samples.len()];
    // Classes ascending, so that ties keep the lowest class.
    let mut pairs: Vec<(usize, usize)> = group.classes.iter().copied().zip(members.iter().copied()).collect();
    pairs.sort();
    for (c, i) in pairs {
        let v = scores[c][i];
        for (k, &s) in samples.iter().enumerate() {
            if v[s] > best[k] {
                best[k] = v[s];
                class[k] = c as u16;
            }
        }
    }
    (best, class)
}

/// Merges two groups: scores every pair of candidates on the images of their classes and keeps
/// the best by the Ntop rule (plus `forced`, a pair of candidate indices that must survive).
fn merge(
    a: &Group,
    b: &Group,
    scores: &Scores<'_>,
    labels: &[u16],
    threshold: f64,
    config: &CompositionConfig,
    forced: Option<(usize, usize)>,
) -> (Group, Vec<f64>) {
    let mut in_merge = vec![false; scores.len()];
    for &c in a.classes.iter().chain(&b.classes) {
        in_merge[c] = true;
    }
    let samples: Vec<usize> = (0..labels.len()).filter(|&s| in_merge[labels[s] as usize]).collect();
    let local: Vec<u16> = samples.iter().map(|&s| labels[s]).collect();
    let prep = |g: &Group| -> Vec<(Vec<f32>, Vec<u16>)> {
        g.candidates.par_iter().map(|m| maxima(g, m, scores, &samples)).collect()
    };
    let (ma, mb) = (prep(a), prep(b));
    // For candidate a, only images it classifies right can be right after the merge.
    let right = |m: &[(Vec<f32>, Vec<u16>)]| -> Vec<Vec<u32>> {
        m.iter().map(|(_, cls)| (0..local.len()).filter(|&k| cls[k] == local[k]).map(|k| k as u32).collect()).collect()
    };
    let (ra, rb) = (right(&ma), right(&mb));
    let total = samples.len().max(1) as f64;
    let (mb, rb) = (&mb, &rb);
    let mut scored: Vec<(u32, usize, usize)> = (0..ma.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let (sa, ca) = &ma[i];
            let ra_i = &ra[i];
            (0..mb.len()).map(move |j| {
                let (sb, cb) = (&mb[j].0, &mb[j].1);
                let mut correct = 0u32;
                for &k in ra_i {
                    let k = k as usize;
                    if sa[k] > sb[k] || (sa[k] == sb[k] && ca[k] < cb[k]) {
                        correct += 1;
                    }
                }
                for &k in &rb[j] {
                    let k = k as usize;
                    if sb[k] > sa[k] || (sa[k] == sb[k] && cb[k] < ca[k]) {
                        correct += 1;
                    }
                }
                (correct, i, j)
            })
        })
        .collect();
    scored.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let passing = scored.iter().take_while(|s| s.0 as f64 / total >= threshold).count();
    let keep = passing.clamp(config.ntop_min.max(1), config.ntop_max.max(1)).min(scored.len());
    let mut kept: Vec<(u32, usize, usize)> = scored[..keep].to_vec();
    if let Some((fi, fj)) = forced
        && !kept.iter().any(|&(_, i, j)| i == fi && j == fj)
        && let Some(s) = scored.iter().find(|&&(_, i, j)| i == fi && j == fj)
    {
        kept.push(*s);
    }
    let classes: Vec<usize> = a.classes.iter().chain(&b.classes).copied().collect();
    let accuracies = kept.iter().map(|&(c, _, _)| c as f64 / total).collect();
    let candidates =
        kept.iter().map(|&(_, i, j)| [a.candidates[i].clone(), b.candidates[j].clone()].concat()).collect();
    (Group { classes, candidates }, accuracies)
}

/// Runs the pruning-based search and returns the final candidates (all classes), best first.
/// `forced` (one member per class) is kept alive through every level, so last generation's best
/// combination can never be lost. The class order is shuffled with `rng`.
pub fn search(
    scores: &Scores<'_>,
    labels: &[u16],
    config: &CompositionConfig,
    forced: Option<&[usize]>,
    rng: &mut impl Rng,
) -> Vec<Combination> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut groups: Vec<Group> = order
        .iter()
        .map(|&c| Group { classes: vec![c], candidates: (0..scores[c].len()).map(|i| vec![i]).collect() })
        .collect();
    let mut accuracies: Vec<f64> = Vec::new();
    let mut level = 0;
    while groups.len() > 1 {
        let threshold = config.thresholds.get(level).or(config.thresholds.last()).copied().unwrap_or(0.0);
        let mut next = Vec::with_capacity(groups.len().div_ceil(2));
        let mut it = groups.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => {
                    let find = |g: &Group| {
                        forced.and_then(|f| {
                            let want: Vec<usize> = g.classes.iter().map(|&c| f[c]).collect();
                            g.candidates.iter().position(|m| *m == want)
                        })
                    };
                    let pair = find(&a).zip(find(&b));
                    let (g, acc) = merge(&a, &b, scores, labels, threshold, config, pair);
                    accuracies = acc;
                    next.push(g);
                }
                None => next.push(a),
            }
        }
        groups = next;
        level += 1;
    }
    let group = groups.pop().expect("at least one class");
    if n == 1 {
        return group.candidates.iter().map(|m| Combination { members: m.clone(), accuracy: 1.0 }).collect();
    }
    group
        .candidates
        .into_iter()
        .zip(accuracies)
        .map(|(m, accuracy)| {
            let mut members = vec![0; n];
            for (&c, &i) in group.classes.iter().zip(&m) {
                members[c] = i;
            }
            Combination { members, accuracy }
        })
        .collect()
}
