//! Patching: the score replacement, the TC metrics, calibration, and patched model folders.

mod common;

use std::path::Path;

use cnnsplitter::Model;
use cnnsplitter::data::presets::DataSelection;
use cnnsplitter::engine::burn::BurnEngine;
use cnnsplitter::patch::metrics::tc_metrics;
use cnnsplitter::patch::{Calibration, Classifier, PatchSpec, patch, patched_scores};
use cnnsplitter::train::metrics::{Metrics, argmax_rows};

#[test]
fn patched_scores_replace_the_tc_probability_by_the_calibrated_module_score() {
    // Two images, a 3-class weak model, a 4-class module; TC is weak 1 = module 2.
    let weak = [1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0];
    let module = [0.0f32, 0.0, 4.0, 9.0, 1.0, 1.0, -2.0, 0.0];
    let spec = PatchSpec { tc_weak: 1, tc_strong: 2, calibration: Calibration { min: -2.0, max: 6.0 } };
    let got = patched_scores(&weak, 3, &module, 4, &spec);
    // By hand: softmax of each weak row in f64, then p[1] = (m[2] - (-2)) / (6 - (-2)).
    let softmax = |r: &[f64]| -> Vec<f64> {
        let s: f64 = r.iter().map(|v| v.exp()).sum();
        r.iter().map(|v| v.exp() / s).collect()
    };
    let mut want = softmax(&[1.0, 2.0, 0.5]);
    want[1] = (4.0 + 2.0) / 8.0;
    let mut second = softmax(&[-1.0, 0.0, 3.0]);
    second[1] = (-2.0 + 2.0) / 8.0;
    want.extend(second);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    // Image 0: weak predicts 1 (logit 2.0); patched the TC score 0.75 still wins over p[0]≈0.23.
    // Image 1: weak predicts 2; patched TC score 0, class 2 stays.
    assert_eq!(argmax_rows(&got, 3), vec![1, 2]);
    // A low module score moves image 0 away from the TC.
    let low = [0.0f32, 0.0, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(argmax_rows(&patched_scores(&weak, 3, &low, 4, &spec), 3)[0], 0);
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
    let mut state = 12345u64;
    let mut next = |m: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % m) as u16
    };
    for round in 0..50 {
        let n = 1 + round * 7;
        let labels: Vec<u16> = (0..n).map(|_| next(5)).collect();
        let preds: Vec<u16> = (0..n).map(|_| next(5)).collect();
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

fn tiny_weak_data(dir: &Path) -> DataSelection {
    let path = dir.join("weak.toml");
    std::fs::write(
        &path,
        "name = \"tiny-w\"\n[synthetic]\ntrain = 600\ntest = 300\nseed = 5\n[[part]]\nsource = \"synthetic\"\n\
         classes = [6, 7, 8, 9, \"tc\"]\n[split]\nmode = \"official\"\nval = 0.2\nseed = 0\n",
    )
    .unwrap();
    DataSelection { dataset: path.to_string_lossy().into_owned(), tc: Some(2), data_dir: None }
}

#[test]
fn a_patched_model_is_saved_reloaded_and_predicts_what_the_report_says() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_weak_data(tmp.path()).load().unwrap();
    let weak = Model::init("simcnn-weak@0.25", data.shape(), 5, 1).unwrap();
    let module = Model::init("simcnn@0.125", data.shape(), 10, 2).unwrap();
    weak.save(&tmp.path().join("weak")).unwrap();
    module.save(&tmp.path().join("module")).unwrap();
    let engine = BurnEngine::default();
    let out = tmp.path().join("patched");
    let report = patch(&tmp.path().join("weak"), &tmp.path().join("module"), 4, 2, &data, &engine, &out).unwrap();

    // Calibration: the module's class-2 logit range over the TC's training images.
    let tc_train = data.train.select(|l| l == 4);
    assert_eq!(report.calibration_images, tc_train.len());
    let logits = cnnsplitter::train::evaluate::logits(&engine, &module, &tc_train, &data.normalization).unwrap();
    let tc_logits: Vec<f32> = logits.chunks(10).map(|r| r[2]).collect();
    assert_eq!(report.spec.calibration, Calibration::from_logits(&tc_logits).unwrap());

    // The folder reloads as a classifier whose predictions give the report's metrics.
    let reloaded = Classifier::load(&out).unwrap();
    assert!(matches!(reloaded, Classifier::Patched(_)));
    let scores = reloaded.scores(&engine, &data.test, &data.normalization).unwrap();
    let preds = argmax_rows(&scores, 5);
    assert_eq!(tc_metrics(&data.test.labels, &preds, 4), report.patched);
    // And those scores are the hand replacement of the two models' outputs.
    let w = cnnsplitter::train::evaluate::logits(&engine, &weak, &data.test, &data.normalization).unwrap();
    let m = cnnsplitter::train::evaluate::logits(&engine, &module, &data.test, &data.normalization).unwrap();
    assert_eq!(scores, patched_scores(&w, 5, &m, 10, &report.spec));
    assert_eq!(tc_metrics(&data.test.labels, &argmax_rows(&w, 5), 4), report.weak);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["precision", "recall", "f1", "non_tc_accuracy"] {
        assert!(saved["weak"][key].is_number() && saved["patched"][key].is_number(), "{key}");
    }

    // Bad requests fail clearly and leave nothing behind.
    let err = patch(&tmp.path().join("weak"), &tmp.path().join("module"), 4, 2, &data, &engine, &out).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let other = tmp.path().join("other");
    let err = patch(&tmp.path().join("weak"), &tmp.path().join("module"), 4, 10, &data, &engine, &other).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(!other.exists());
    let err = patch(&tmp.path().join("nope"), &tmp.path().join("module"), 4, 2, &data, &engine, &other).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!other.exists());
}
