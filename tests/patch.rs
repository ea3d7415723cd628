//! Patching: both rules against hand computations, the logistic fit against a brute-force
//! search, the threshold, AUROC, fixes/regressions and bootstrap against naive loops, the gate
//! with an oracle module and a noise module, and patched model folders.

mod common;

use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cnnsplitter::Model;
use cnnsplitter::choice::Choice;
use cnnsplitter::data::ImageSet;
use cnnsplitter::data::mix::DataSplits;
use cnnsplitter::data::pipeline::Normalization;
use cnnsplitter::eval::logits;
use cnnsplitter::eval::metrics::{Metrics, argmax_rows};
use cnnsplitter::model::description::ModelDescription;
use cnnsplitter::model::weights::Weights;
use cnnsplitter::patch::calibrated::{CalibratedRule, choose_threshold};
use cnnsplitter::patch::diagnostics::{auroc, bootstrap_changes, diagnose};
use cnnsplitter::patch::logistic;
use cnnsplitter::patch::metrics::tc_metrics;
use cnnsplitter::patch::{
    Calibration, Classifier, PatchReport, PatchRequest, PatchSpec, Rule, RuleKind, patch, patched_scores,
};

/// A small deterministic generator for test inputs.
fn lcg(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |m: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % m
    }
}

/// Softmax in f64.
fn softmax64(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn the_paper_rule_replaces_the_tc_probability_by_the_calibrated_module_score() {
    // Two images, a 3-class weak model, a 4-class module; TC is weak 1 = module 2.
    let weak = [1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0];
    let module = [0.0f32, 0.0, 4.0, 9.0, 1.0, 1.0, -2.0, 0.0];
    let rule = Rule::Paper(Calibration { min: -2.0, max: 6.0 });
    let spec = PatchSpec { tc_weak: 1, tc_strong: 2, rule, applied: true, gate: common::test_gate(false) };
    let got = patched_scores(&weak, 3, &module, 4, &spec);
    // By hand: softmax of each weak row in f64, then p[1] = (m[2] - (-2)) / (6 - (-2)).
    let mut want = softmax64(&[1.0, 2.0, 0.5]);
    want[1] = (4.0 + 2.0) / 8.0;
    let mut second = softmax64(&[-1.0, 0.0, 3.0]);
    second[1] = (-2.0 + 2.0) / 8.0;
    want.extend(second);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    assert_eq!(argmax_rows(&got, 3), vec![1, 2]);
    let low = [0.0f32, 0.0, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(argmax_rows(&patched_scores(&weak, 3, &low, 4, &spec), 3)[0], 0);
    // Not applied: the weak logits, untouched.
    let closed = PatchSpec { applied: false, ..spec };
    assert_eq!(patched_scores(&weak, 3, &module, 4, &closed), weak.to_vec());
}

#[test]
fn the_calibrated_rule_thresholds_a_logistic_score_over_log_probabilities_and_the_module_logit() {
    let rule = CalibratedRule {
        weights: vec![0.5, -1.0, 2.0, 0.75],
        bias: -0.25,
        threshold: 0.3,
        log_prob_floor: -30.0,
        l2: 1.0,
        fit_images: 10,
    };
    let spec = PatchSpec {
        tc_weak: 2,
        tc_strong: 0,
        rule: Rule::Calibrated(rule.clone()),
        applied: true,
        gate: common::test_gate(false),
    };
    let mut next = lcg(7);
    for _ in 0..200 {
        let weak: Vec<f32> = (0..3).map(|_| next(2000) as f32 / 100.0 - 10.0).collect();
        let module: Vec<f32> = (0..2).map(|_| next(2000) as f32 / 200.0 - 5.0).collect();
        let got = patched_scores(&weak, 3, &module, 2, &spec);
        // By hand: z = w · [log p_0, log p_1, log p_2, m_0] + b.
        let p = softmax64(&weak);
        let f = [p[0].ln().max(-30.0), p[1].ln().max(-30.0), p[2].ln().max(-30.0), module[0] as f64];
        let z = -0.25 + 0.5 * f[0] - 1.0 * f[1] + 2.0 * f[2] + 0.75 * f[3];
        let want = if z >= 0.3 {
            2
        } else if weak[0] >= weak[1] {
            0
        } else {
            1
        };
        assert_eq!(argmax_rows(&got, 3)[0] as usize, want, "weak {weak:?} module {module:?} z {z}");
        let q = 1.0 / (1.0 + (-z).exp());
        let tc = if z >= 0.3 { q + 2.0 } else { q - 2.0 };
        assert!((got[2] as f64 - tc).abs() < 1e-5 && (got[0] as f64 - p[0]).abs() < 1e-6, "{got:?}");
    }
}

#[test]
fn calibration_takes_the_range_and_guards_an_empty_one() {
    let c = Calibration::from_logits(&[3.0, -1.0, 2.5]).unwrap();
    assert_eq!((c.min, c.max), (-1.0, 3.0));
    assert_eq!(c.score(1.0), 0.5);
    assert_eq!(c.score(5.0), 1.5, "not clipped, as the original code");
    let flat = Calibration::from_logits(&[2.0, 2.0]).unwrap();
    assert_eq!(flat.score(2.5), 0.5, "max == min counts as a range of 1");
    assert!(Calibration::from_logits(&[]).is_err());
    assert!(Calibration::from_logits(&[1.0, f32::NAN]).is_err());
}

#[test]
fn tc_metrics_equal_naive_counts() {
    let mut next = lcg(12345);
    for round in 0..50 {
        let n = 1 + round * 7;
        let labels: Vec<u16> = (0..n).map(|_| next(5) as u16).collect();
        let preds: Vec<u16> = (0..n).map(|_| next(5) as u16).collect();
        let tc = (round % 5) as usize;
        let m = tc_metrics(&labels, &preds, tc);
        let names: Vec<String> = (0..5).map(|c| c.to_string()).collect();
        let full = Metrics::new(&labels, &preds, &names);
        let c = &full.per_class[tc];
        assert!((m.precision - c.precision).abs() < 1e-12 && (m.recall - c.recall).abs() < 1e-12);
        assert!((m.f1 - c.f1).abs() < 1e-12);
        let non_tc: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] as usize != tc).collect();
        let right = non_tc.iter().filter(|&&i| preds[i] == labels[i]).count();
        let want = if non_tc.is_empty() { 0.0 } else { right as f64 / non_tc.len() as f64 };
        assert!((m.non_tc_accuracy - want).abs() < 1e-12);
    }
}

/// The penalised objective of the logistic fit, written out independently: standardised L2.
fn objective(x: &[[f64; 2]], y: &[bool], lambda: f64, w: [f64; 2], b: f64) -> f64 {
    let n = x.len() as f64;
    let mut sd = [0.0; 2];
    for j in 0..2 {
        let mean = x.iter().map(|r| r[j]).sum::<f64>() / n;
        sd[j] = (x.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n).sqrt();
    }
    let mut nll = 0.0;
    for (r, &t) in x.iter().zip(y) {
        let p = 1.0 / (1.0 + (-(b + w[0] * r[0] + w[1] * r[1])).exp());
        nll -= if t { p.ln() } else { (1.0 - p).ln() };
    }
    nll + 0.5 * lambda * ((w[0] * sd[0]).powi(2) + (w[1] * sd[1]).powi(2))
}

/// Derivative-free minimisation: coordinate steps that halve when nothing improves.
fn brute_force(x: &[[f64; 2]], y: &[bool], lambda: f64) -> [f64; 3] {
    let mut p = [0.0f64; 3];
    let f = |p: &[f64; 3]| objective(x, y, lambda, [p[0], p[1]], p[2]);
    let mut best = f(&p);
    let mut step = 1.0;
    while step > 1e-9 {
        let mut improved = false;
        for k in 0..3 {
            for dir in [1.0, -1.0] {
                let mut q = p;
                q[k] += dir * step;
                let v = f(&q);
                if v < best {
                    (p, best, improved) = (q, v, true);
                }
            }
        }
        if !improved {
            step *= 0.5;
        }
    }
    p
}

#[test]
fn the_logistic_fit_matches_a_brute_force_search_of_its_objective() {
    for (seed, lambda, shift) in [(1u64, 1.0, 0.0), (2, 0.1, 3.0), (3, 5.0, -2.0)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<[f64; 2]> =
            (0..80).map(|_| [rng.random_range(-2.0..2.0) + shift, rng.random_range(-1.0..1.0) * 10.0]).collect();
        let y: Vec<bool> = x
            .iter()
            .map(|r| rng.random::<f64>() < 1.0 / (1.0 + (-(1.5 * (r[0] - shift) - 0.2 * r[1])).exp()))
            .collect();
        let flat: Vec<f64> = x.iter().flatten().copied().collect();
        let fit = logistic::fit(&flat, 2, &y, lambda).unwrap();
        let want = brute_force(&x, &y, lambda);
        for (got, want) in fit.weights.iter().chain([&fit.bias]).zip(want) {
            assert!((got - want).abs() < 1e-4, "seed {seed}: {:?} + {} vs {want:?}", fit.weights, fit.bias);
        }
    }
    // Perfectly separable data still gives finite weights (the penalty bounds them).
    let flat = [0.0, 1.0, 1.0, 1.0, 2.0, 1.0, 3.0, 1.0];
    let fit = logistic::fit(&flat, 2, &[false, false, true, true], 1.0).unwrap();
    assert!(fit.weights.iter().all(|w| w.is_finite()) && fit.weights[0] > 0.0, "{fit:?}");
    assert!(logistic::fit(&flat, 2, &[true; 4], 1.0).is_err(), "one label only");
    assert!(logistic::fit(&[f64::NAN, 1.0], 2, &[true], 1.0).is_err());
}

#[test]
fn the_threshold_is_the_best_over_every_cut_by_brute_force() {
    let mut next = lcg(99);
    for round in 0..200 {
        let n = 1 + round % 23;
        let z: Vec<f64> = (0..n).map(|_| next(9) as f64 - 4.0).collect();
        let is_tc: Vec<bool> = (0..n).map(|_| next(2) == 1).collect();
        let other_right: Vec<bool> = is_tc.iter().map(|&t| !t && next(3) > 0).collect();
        let accuracy = |t: f64| (0..n).filter(|&i| if z[i] >= t { is_tc[i] } else { other_right[i] }).count();
        let t = choose_threshold(&z, &is_tc, &other_right);
        // Every cut: below all, and just above each value.
        let best = std::iter::once(f64::NEG_INFINITY).chain(z.iter().map(|v| v + 0.5)).map(accuracy).max().unwrap();
        assert_eq!(accuracy(t), best, "z {z:?} tc {is_tc:?} right {other_right:?} -> {t}");
    }
}

#[test]
fn auroc_equals_a_count_over_all_pairs() {
    let mut next = lcg(3);
    for round in 0..100 {
        let n = 2 + round % 30;
        let scores: Vec<f32> = (0..n).map(|_| next(7) as f32 * 0.5).collect();
        let positive: Vec<bool> = (0..n).map(|_| next(3) == 0).collect();
        let (pos, neg): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| positive[i]);
        let got = auroc(&scores, &positive);
        if pos.is_empty() || neg.is_empty() {
            assert_eq!(got, None);
            continue;
        }
        let mut wins = 0.0;
        for &p in &pos {
            for &q in &neg {
                wins += if scores[p] > scores[q] {
                    1.0
                } else if scores[p] == scores[q] {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let want = wins / (pos.len() * neg.len()) as f64;
        assert!((got.unwrap() - want).abs() < 1e-12, "{got:?} vs {want}");
    }
}

#[test]
fn fixes_regressions_and_predicted_tc_counts_equal_a_naive_loop() {
    let mut next = lcg(5);
    for round in 0..50 {
        let n = 1 + round * 3;
        let labels: Vec<u16> = (0..n).map(|_| next(4) as u16).collect();
        let before: Vec<u16> = (0..n).map(|_| next(4) as u16).collect();
        let after: Vec<u16> = (0..n).map(|_| next(4) as u16).collect();
        let tc = round % 4;
        let d = diagnose(&labels, &before, &after, tc, 4);
        let (mut fix_tc, mut fix_other, mut reg_tc, mut reg_other) = (0, 0, 0, 0);
        let mut pred_tc_after = [0usize; 4];
        for i in 0..n {
            let is_tc = labels[i] as usize == tc;
            if before[i] != labels[i] && after[i] == labels[i] {
                if is_tc { fix_tc += 1 } else { fix_other += 1 }
            }
            if before[i] == labels[i] && after[i] != labels[i] {
                if is_tc { reg_tc += 1 } else { reg_other += 1 }
            }
            if after[i] as usize == tc {
                pred_tc_after[labels[i] as usize] += 1;
            }
        }
        assert_eq!(
            (d.fixes.tc, d.fixes.non_tc, d.regressions.tc, d.regressions.non_tc),
            (fix_tc, fix_other, reg_tc, reg_other)
        );
        assert_eq!(d.predicted_tc_after, pred_tc_after.to_vec());
        assert_eq!(d.after.tp, pred_tc_after[tc]);
        assert_eq!(d.after.fp, pred_tc_after.iter().sum::<usize>() - pred_tc_after[tc]);
        assert_eq!(d.after.fn_, labels.iter().filter(|&&l| l as usize == tc).count() - pred_tc_after[tc]);
        // Accuracy moves by exactly (fixes - regressions).
        let right = |p: &[u16]| (0..n).filter(|&i| p[i] == labels[i]).count() as i64;
        assert_eq!(right(&after) - right(&before), (fix_tc + fix_other) as i64 - (reg_tc + reg_other) as i64);
    }
}

#[test]
fn bootstrap_intervals_repeat_for_a_seed_and_cover_the_observed_change() {
    let mut next = lcg(11);
    let labels: Vec<u16> = (0..300).map(|_| next(5) as u16).collect();
    let before: Vec<u16> = labels.iter().map(|&l| if next(4) == 0 { next(5) as u16 } else { l }).collect();
    let after: Vec<u16> = labels.iter().map(|&l| if next(8) == 0 { next(5) as u16 } else { l }).collect();
    let a = bootstrap_changes(&labels, &before, &after, 2, 500, 7);
    assert_eq!(a, bootstrap_changes(&labels, &before, &after, 2, 500, 7), "same seed, same intervals");
    assert_ne!(a, bootstrap_changes(&labels, &before, &after, 2, 500, 8), "another seed draws other samples");
    let (mb, ma) = (tc_metrics(&labels, &before, 2), tc_metrics(&labels, &after, 2));
    for (iv, change) in
        [(a.recall, ma.recall - mb.recall), (a.non_tc_accuracy, ma.non_tc_accuracy - mb.non_tc_accuracy)]
    {
        assert!(iv[0] < change && change < iv[1], "{iv:?} should hold {change}");
    }
    // No change at all: a zero-width interval at 0.
    let same = bootstrap_changes(&labels, &before, &before, 2, 100, 1);
    assert_eq!(same.f1, [0.0, 0.0]);
}

/// A hand-made model: global average pooling, then a linear layer with the given rows
/// (`[classes][3]` weights over the three channel means) and biases.
fn handmade(rows: &[[f32; 3]], bias: &[f32]) -> Model {
    let json = format!(
        r#"{{"name": "handmade", "input": [3, 4, 4], "classes": {}, "layers": [
            {{"name": "gap", "type": "global_avg_pool"}},
            {{"name": "flat", "type": "flatten"}},
            {{"name": "fc", "type": "linear", "out_features": {}, "bias": true}}]}}"#,
        rows.len(),
        rows.len()
    );
    let description: ModelDescription = serde_json::from_str(&json).unwrap();
    let mut weights = Weights::init(&description, 0).unwrap();
    weights.tensors.get_mut("fc.weight").unwrap().data = rows.iter().flatten().copied().collect();
    weights.tensors.get_mut("fc.bias").unwrap().data = bias.to_vec();
    Model::new(description, weights).unwrap()
}

const TC_WEAK: u16 = 4;
const TC_STRONG: usize = 2;

/// Images of 5 classes (100 per class per split, TC = label 4), each channel constant: channel 0
/// codes the class (40 + 40·label, ± 27: neighbours overlap), channel 1 marks the TC (220 or 30,
/// ± 10), channel 2 is noise unrelated to the label.
fn weak_data(seed: u64) -> DataSplits {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = || {
        let mut set = ImageSet::empty([3, 4, 4]);
        for i in 0..500 {
            let label = (i % 5) as u16;
            // Odd offsets: no image lies exactly halfway between two class centres.
            let code = (40 + 40 * label as i32 + 2 * rng.random_range(-14..=13) + 1) as u8;
            let mark = (if label == TC_WEAK { 220 } else { 30 } + rng.random_range(-10..=10)) as u8;
            let noise: u8 = rng.random();
            for v in [code, mark, noise] {
                set.pixels.extend(std::iter::repeat_n(v, 16));
            }
            set.labels.push(label);
        }
        Arc::new(set)
    };
    let (train, val, test) = (split(), split(), split());
    DataSplits {
        name: "handmade-w".into(),
        class_names: (0..5).map(|c| c.to_string()).collect(),
        train,
        val,
        test,
        digits: false,
        normalization: Normalization { mean: vec![0.0; 3], std: vec![1.0; 3] },
        tc_label: Some(TC_WEAK as usize),
    }
}

/// The weak model: nearest class centre on channel 0 (logit_c = 2·μ_c·x − μ_c²), right for
/// most images, wrong where neighbours overlap.
fn weak_model() -> Model {
    let centre = |c: usize| (40.0 + 40.0 * c as f32) / 255.0;
    let rows: Vec<[f32; 3]> = (0..5).map(|c| [2.0 * centre(c), 0.0, 0.0]).collect();
    let bias: Vec<f32> = (0..5).map(|c| -centre(c) * centre(c)).collect();
    handmade(&rows, &bias)
}

/// A 6-class module whose TC logit (output 2) reads channel `channel` with weight 10.
fn module_reading(channel: usize) -> Model {
    let mut rows = vec![[0.0f32; 3]; 6];
    rows[TC_STRONG][channel] = 10.0;
    handmade(&rows, &[0.0; 6])
}

fn save(model: &Model, dir: &Path) -> std::path::PathBuf {
    model.save(dir).unwrap();
    dir.to_path_buf()
}

fn run_patch(tmp: &Path, module: &str, rule: RuleKind, data: &DataSplits) -> (PatchReport, std::path::PathBuf) {
    let weak = tmp.join("weak");
    let module_dir = tmp.join(module);
    let out = tmp.join(format!("{module}-{}", rule.name()));
    let request = PatchRequest {
        weak: &weak,
        module: &module_dir,
        strong: None,
        tc_weak: TC_WEAK as usize,
        tc_strong: TC_STRONG,
        rule,
        ungated: false,
    };
    (patch(&request, data, &common::burn_engine(), &out).unwrap(), out)
}

#[test]
fn an_oracle_module_opens_the_gate_and_a_noise_module_keeps_the_weak_models_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = weak_data(1);
    save(&weak_model(), &tmp.path().join("weak"));
    save(&module_reading(1), &tmp.path().join("oracle"));
    save(&module_reading(2), &tmp.path().join("noise"));
    let engine = common::burn_engine();
    let weak_logits = logits(&engine, &weak_model(), &data.test, &data.normalization).unwrap();
    let weak_pred = argmax_rows(&weak_logits, 5);
    let weak_tc = tc_metrics(&data.test.labels, &weak_pred, 4);
    assert!(weak_tc.recall < 0.97 && weak_tc.precision < 0.97, "the weak model leaves something to fix: {weak_tc:?}");

    // The oracle: the calibrated rule finds every TC image and nothing else, on validation and test.
    let (r, out) = run_patch(tmp.path(), "oracle", RuleKind::Calibrated, &data);
    assert!(r.spec.gate.open && r.spec.applied, "{}", r.spec.gate.reason);
    assert!(r.spec.gate.patched.accuracy > r.spec.gate.weak.accuracy);
    assert!(r.spec.gate.module_evidence.unwrap() > 5.0 * 10.83, "{:?}", r.spec.gate.module_evidence);
    assert_eq!((r.patched.precision, r.patched.recall), (1.0, 1.0), "{:?}", r.patched);
    assert_eq!((r.diagnostics.after.fp, r.diagnostics.after.fn_), (0, 0));
    assert_eq!(r.auroc.module, Some(1.0));
    let classifier = Classifier::load(&out).unwrap();
    let val_pred = argmax_rows(&classifier.scores(&engine, &data.val, &data.normalization).unwrap(), 5);
    let val_tc = tc_metrics(&data.val.labels, &val_pred, 4);
    assert_eq!((val_tc.precision, val_tc.recall), (1.0, 1.0));
    // The folder's predictions are the rule's formula, computed here from the stored parameters.
    let Rule::Calibrated(rule) = &r.spec.rule else { panic!("calibrated") };
    let test_pred = argmax_rows(&classifier.scores(&engine, &data.test, &data.normalization).unwrap(), 5);
    for (i, row) in weak_logits.chunks(5).enumerate() {
        let p = softmax64(row);
        let marker = data.test.image(i)[16] as f64 / 255.0;
        let mut z = rule.bias + rule.weights[5] * 10.0 * marker;
        for (w, p) in rule.weights.iter().zip(&p) {
            z += w * p.ln().max(-30.0);
        }
        let mut other = if row[0] >= row[1] { 0 } else { 1 };
        for c in 2..4 {
            if row[c] > row[other] {
                other = c;
            }
        }
        let want = if z >= rule.threshold { 4 } else { other };
        assert_eq!(test_pred[i] as usize, want, "image {i}: z {z}");
    }
    // The paper's rule: its gate follows the validation accuracies it reports.
    let (r, _) = run_patch(tmp.path(), "oracle", RuleKind::Paper, &data);
    assert_eq!(r.spec.gate.open, r.spec.gate.patched.accuracy > r.spec.gate.weak.accuracy, "{}", r.spec.gate.reason);

    // Noise: both rules' gates close, and the folders predict exactly as the weak model.
    for rule in [RuleKind::Calibrated, RuleKind::Paper] {
        let (r, out) = run_patch(tmp.path(), "noise", rule, &data);
        assert!(!r.spec.gate.open && !r.spec.applied, "{rule:?}: {}", r.spec.gate.reason);
        assert!(r.spec.gate.reason.starts_with("closed"), "{}", r.spec.gate.reason);
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("patch.json")).unwrap()).unwrap();
        assert_eq!(saved["applied"], false);
        let scores = Classifier::load(&out).unwrap().scores(&engine, &data.test, &data.normalization).unwrap();
        assert_eq!(argmax_rows(&scores, 5), weak_pred, "{rule:?}: image for image");
        assert_eq!(r.patched, weak_tc);
        assert_eq!(r.accuracy.patched, r.accuracy.weak);
        if rule == RuleKind::Calibrated {
            assert!(r.spec.gate.module_evidence.unwrap() < 10.83, "{:?}", r.spec.gate.module_evidence);
        }
    }
}

#[test]
fn a_patched_model_is_saved_reloaded_and_predicts_what_the_report_says() {
    let tmp = tempfile::tempdir().unwrap();
    let data = weak_data(2);
    let weak = save(&weak_model(), &tmp.path().join("weak"));
    let module_32 = save(&common::random_model("simcnn@0.125", [3, 32, 32], 6, 2), &tmp.path().join("big"));
    save(&module_reading(1), &tmp.path().join("oracle"));
    let engine = common::burn_engine();
    let (report, out) = run_patch(tmp.path(), "oracle", RuleKind::Paper, &data);

    // Calibration: the module's TC logit range over the TC's training images, by hand.
    let tc_train: Vec<f32> = (0..data.train.len())
        .filter(|&i| data.train.labels[i] == TC_WEAK)
        .map(|i| 10.0 * data.train.image(i)[16] as f32 / 255.0)
        .collect();
    assert_eq!(report.calibration_images, tc_train.len());
    let Rule::Paper(c) = report.spec.rule else { panic!("paper rule") };
    let (lo, hi) = tc_train.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    assert!((c.min - lo).abs() < 1e-5 && (c.max - hi).abs() < 1e-5, "{c:?} vs {lo} {hi}");

    // The folder reloads as a classifier whose predictions give the report's metrics, and those
    // are the replacement computed here by hand.
    let reloaded = Classifier::load(&out).unwrap();
    assert!(matches!(reloaded, Classifier::Patched(_)));
    let preds = argmax_rows(&reloaded.scores(&engine, &data.test, &data.normalization).unwrap(), 5);
    assert_eq!(tc_metrics(&data.test.labels, &preds, 4), report.patched);
    let w = logits(&engine, &weak_model(), &data.test, &data.normalization).unwrap();
    for (i, row) in w.chunks(5).enumerate() {
        let mut p = softmax64(row);
        p[4] = (10.0 * data.test.image(i)[16] as f64 / 255.0 - c.min as f64) / (c.max - c.min) as f64;
        let best = (0..5).fold(0, |b, k| if p[k] > p[b] { k } else { b });
        assert_eq!(preds[i] as usize, best, "image {i}");
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["weak", "ungated", "patched"] {
        assert!(saved[key]["f1"].is_number(), "{key}");
    }
    for key in ["tp", "fp", "fn"] {
        assert!(saved["diagnostics"]["after"][key].is_number(), "{key}");
    }
    assert!(saved["spec"]["gate"]["reason"].is_string() && saved["auroc"]["module"].is_number());

    // Bad requests fail clearly and leave nothing behind.
    let (oracle, nope) = (tmp.path().join("oracle"), tmp.path().join("nope"));
    let request = |module: &'static str, tc_strong: usize| PatchRequest {
        weak: &weak,
        module: match module {
            "oracle" => &oracle,
            "nope" => &nope,
            _ => &module_32,
        },
        strong: None,
        tc_weak: 4,
        tc_strong,
        rule: RuleKind::Calibrated,
        ungated: false,
    };
    let err = patch(&request("oracle", 2), &data, &engine, &out).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let other = tmp.path().join("other");
    let err = patch(&request("oracle", 6), &data, &engine, &other).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(!other.exists());
    let err = patch(&request("nope", 2), &data, &engine, &other).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = patch(&request("big", 2), &data, &engine, &other).unwrap_err();
    assert!(err.to_string().contains("32x32") || err.to_string().contains("4x4"), "{err}");
    assert!(!other.exists());
    // Just enough validation images of the TC (10) for the rule and its 5-fold cross-validation.
    let mut just_enough = data.clone();
    let mut kept_tc = 0;
    let mut few = ImageSet::empty(data.val.shape);
    for i in 0..data.val.len() {
        if data.val.labels[i] != TC_WEAK || kept_tc < 10 {
            kept_tc += usize::from(data.val.labels[i] == TC_WEAK);
            few.push_from(&data.val, i, data.val.labels[i]);
        }
    }
    just_enough.val = Arc::new(few);
    let r = patch(&request("oracle", 2), &just_enough, &engine, &tmp.path().join("few")).unwrap();
    assert_eq!(r.calibration_images, 410);
    // Too few validation images of the TC for the calibrated rule: a clear error.
    let mut scarce = data.clone();
    scarce.val = Arc::new(data.val.select(|l| l != TC_WEAK));
    let err = patch(&request("oracle", 2), &scarce, &engine, &other).unwrap_err();
    assert!(err.to_string().contains("validation images of the target class"), "{err}");
    assert!(!other.exists());
}
