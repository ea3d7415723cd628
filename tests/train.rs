//! Training: learning, determinism, resume, schedules, SGD, metrics, poor-fit picking, errors.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn::tensor::{Int, Tensor, TensorData};

use cnnsplitter::Model;
use cnnsplitter::data::presets::DataSelection;
use cnnsplitter::engine::burn::BurnEngine;
use cnnsplitter::eval::metrics::{Metrics, argmax_rows};
use cnnsplitter::model::net::{Net, ParamVisitor, images_tensor};
use cnnsplitter::progress::Silent;
use cnnsplitter::train::config::{Overrides, Recipe, TrainConfig};
use cnnsplitter::train::pick::{Fit, pick};
use cnnsplitter::train::schedule::StepSchedule;
use cnnsplitter::train::sgd::{Sgd, SgdSettings};
use cnnsplitter::train::trainer::{self, load_state};

/// A small synthetic dataset described in TOML (in `dir`).
fn tiny_data(dir: &Path, train: usize, classes: &str) -> DataSelection {
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"tiny\"\n[synthetic]\ntrain = {train}\ntest = 200\nseed = 3\n[[part]]\nsource = \"synthetic\"\n\
             classes = {classes}\n[split]\nmode = \"official\"\nval = 0.2\nseed = 0\n"
        ),
    )
    .unwrap();
    DataSelection { dataset: path.to_string_lossy().into_owned(), tc: None, data_dir: None, limits: Default::default() }
}

fn config(arch: &str, recipe: Recipe, data: &DataSelection, epochs: usize, lr: Option<f64>) -> TrainConfig {
    let o = Overrides { epochs: Some(epochs), lr, batch: Some(32) };
    TrainConfig::new(arch, recipe, data, &o, 7, rayon::current_num_threads()).unwrap()
}

fn weights_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn a_small_model_learns_the_synthetic_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 1500, "[0, 1, 2, 3, 6, 7, 8]");
    let c = config("simcnn-weak@0.25", Recipe::Simple, &data, 4, Some(0.02));
    let out = tmp.path().join("run");
    let report = trainer::start(c, &out, None, &common::compute(), &engine(), &Silent).unwrap().unwrap();
    assert!(report.validation_accuracy > 0.5, "7 classes, chance 0.14: {report:?}");
    assert!(report.test_accuracy > 0.5);
    // The run folder holds the model, the per-epoch log and the report.
    let log = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    let report_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["train_accuracy", "validation_accuracy", "test_accuracy"] {
        assert!(report_json[key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert_eq!(report_json["per_class"].as_array().unwrap().len(), 7);
    assert!(report_json["per_class"][0]["f1"].as_f64().is_some());
    // The kept model is the best validation epoch's.
    let state = load_state(&out).unwrap();
    let best = state.history.iter().map(|r| r.validation_accuracy).fold(0.0, f64::max);
    assert_eq!(state.history[state.best_epoch - 1].validation_accuracy, best);
    assert!((report.validation_accuracy - best).abs() < 1e-12);
}

/// Runs a 3-epoch strong run straight, and the same run stopped after epoch 1 and resumed.
fn straight_and_resumed(arch: &str) -> (PathBuf, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 300, "[0, 1, 2, 3, 4]");
    let straight = tmp.path().join("straight");
    let stopped = tmp.path().join("stopped");
    let c = config(arch, Recipe::Strong, &data, 3, Some(0.02));
    trainer::start(c.clone(), &straight, None, &common::compute(), &engine(), &Silent).unwrap().unwrap();
    assert!(trainer::start(c, &stopped, Some(1), &common::compute(), &engine(), &Silent).unwrap().is_none());
    assert_eq!(load_state(&stopped).unwrap().epochs_done, 1);
    assert!(!stopped.join("report.json").exists());
    trainer::resume(&stopped, &common::compute(), None, &engine(), &Silent).unwrap().unwrap();
    (straight, stopped, tmp)
}

#[test]
fn resume_ends_with_the_same_weights_as_an_uninterrupted_run() {
    // rescnn-weak has dropout (re-seeded per epoch); resnet8-bn has BatchNorm statistics.
    for arch in ["rescnn-weak@0.25", "resnet8-bn@0.25"] {
        let (straight, resumed, _tmp) = straight_and_resumed(arch);
        assert_eq!(weights_bytes(&straight), weights_bytes(&resumed), "{arch}: best model");
        assert_eq!(
            weights_bytes(&straight.join("checkpoint/last")),
            weights_bytes(&resumed.join("checkpoint/last")),
            "{arch}: last weights"
        );
        assert_eq!(
            trainer::load_optimizer_state(&straight).unwrap(),
            trainer::load_optimizer_state(&resumed).unwrap(),
            "{arch}: momentum buffers"
        );
        let log = |d: &Path| std::fs::read_to_string(d.join("train.jsonl")).unwrap();
        let strip =
            |s: String| s.lines().map(|l| l.split("\"seconds\"").next().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(strip(log(&straight)), strip(log(&resumed)), "{arch}: per-epoch records");
        // The strong schedule over 3 epochs: x0.1 at round(0.9) = 1 and round(1.8) = 2.
        let lrs: Vec<f64> = load_state(&straight).unwrap().history.iter().map(|r| r.lr).collect();
        assert!(
            (lrs[0] - 0.02).abs() < 1e-12 && (lrs[1] - 0.002).abs() < 1e-12 && (lrs[2] - 0.0002).abs() < 1e-12,
            "{lrs:?}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_weights_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 200, "[0, 1, 2]");
    let run = |seed: u64, name: &str| {
        let mut c = config("rescnn-weak@0.25", Recipe::Strong, &data, 1, None);
        c.seed = seed;
        let out = tmp.path().join(name);
        trainer::start(c, &out, None, &common::compute(), &engine(), &Silent).unwrap();
        weights_bytes(&out)
    };
    assert_eq!(run(1, "a"), run(1, "b"));
    assert_ne!(run(1, "c"), run(2, "d"));
}

#[test]
fn schedules_change_the_learning_rate_at_the_milestones() {
    let s = StepSchedule::paper(0.01, 200);
    assert_eq!(s.milestones, vec![60, 120]);
    for (epoch, lr) in [(0, 0.01), (59, 0.01), (60, 0.001), (119, 0.001), (120, 0.0001), (199, 0.0001)] {
        assert!((s.lr(epoch) - lr).abs() < 1e-15, "epoch {epoch}: {} vs {lr}", s.lr(epoch));
    }
    let data = DataSelection::named("synthetic");
    let strong = TrainConfig::new("rescnn", Recipe::Strong, &data, &Overrides::default(), 0, 2).unwrap();
    assert_eq!((strong.epochs, strong.schedule.base, strong.nesterov), (200, 0.1, true));
    let simple = TrainConfig::new("simcnn-weak", Recipe::Simple, &data, &Overrides::default(), 0, 2).unwrap();
    assert_eq!(simple.schedule, StepSchedule::constant(0.01));
    assert!(!simple.nesterov && simple.momentum == 0.9 && simple.weight_decay == 1e-4 && simple.augment);
    let poor = TrainConfig::new("simcnn", Recipe::PoorFit, &data, &Overrides::default(), 0, 2).unwrap();
    assert!(poor.momentum == 0.0 && poor.weight_decay == 0.0 && !poor.augment && !poor.dropout && poor.keep_epochs);
}

/// Records every parameter's value (the update is checked against a host computation).
struct Snapshot(Vec<(String, Vec<f32>)>);

impl ParamVisitor for Snapshot {
    fn visit<const D: usize>(&mut self, name: &str, param: &mut burn::module::Param<Tensor<D>>) {
        let data = param.val().inner().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        self.0.push((name.to_string(), data));
    }
}

struct Grads<'a>(&'a burn::tensor::Gradients, Vec<(String, Vec<f32>)>);

impl ParamVisitor for Grads<'_> {
    fn visit<const D: usize>(&mut self, name: &str, param: &mut burn::module::Param<Tensor<D>>) {
        let g = param.val().grad(self.0).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        self.1.push((name.to_string(), g));
    }
}

#[test]
fn sgd_steps_follow_the_nesterov_formula() {
    let model = common::random_model("simcnn-svhn-weak", [1, 16, 16], 3, 1);
    let device = Device::flex().autodiff();
    let mut net = Net::new(&model, &device).unwrap();
    let (mu, wd, lr) = (0.9, 1e-3, 0.1);
    let mut sgd = Sgd::new(SgdSettings { momentum: mu, nesterov: true, weight_decay: wd });
    let images = common::random_images(4, [1, 16, 16], 2);
    let mut buffers: Vec<Vec<f64>> = Vec::new();
    for step in 0..3 {
        let mut before = Snapshot(Vec::new());
        net.visit_params_mut(&mut before);
        let x = images_tensor(&images, [4, 1, 16, 16], &device).unwrap();
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &device);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&device).forward(net.forward(x), y);
        let grads = loss.backward();
        let mut g = Grads(&grads, Vec::new());
        net.visit_params_mut(&mut g);
        sgd.step(&mut net, &grads, lr);
        let mut after = Snapshot(Vec::new());
        net.visit_params_mut(&mut after);
        for (k, ((name, p), (_, g))) in before.0.iter().zip(&g.1).enumerate() {
            if step == 0 {
                buffers.push(vec![0.0; p.len()]);
            }
            for i in 0..p.len() {
                let d = g[i] as f64 + wd * p[i] as f64;
                buffers[k][i] = if step == 0 { d } else { mu * buffers[k][i] + d };
                let want = p[i] as f64 - lr * (d + mu * buffers[k][i]);
                let got = after.0[k].1[i] as f64;
                assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "step {step} {name}[{i}]: {got} vs {want}");
            }
        }
    }
    assert_eq!(sgd.state().len(), 6, "one buffer per parameter (2 convs, 1 linear, with biases)");
}

#[test]
fn metrics_match_a_naive_count_on_a_hand_made_case() {
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let labels = [0u16, 0, 0, 1, 1, 2, 2, 2, 2];
    let preds = [0u16, 1, 0, 1, 2, 2, 2, 0, 2];
    let m = Metrics::new(&labels, &preds, &names);
    assert_eq!(m.confusion, vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 3]]);
    assert!((m.accuracy - 6.0 / 9.0).abs() < 1e-12);
    // Class a: predicted a 3 times, 2 right; 3 actual a. Class b: 2 predicted, 1 right; 2 actual.
    // Class c: 4 predicted, 3 right; 4 actual.
    let expect = [(2.0 / 3.0, 2.0 / 3.0), (0.5, 0.5), (0.75, 0.75)];
    for (c, (p, r)) in expect.iter().enumerate() {
        let pc = &m.per_class[c];
        assert!((pc.precision - p).abs() < 1e-12 && (pc.recall - r).abs() < 1e-12);
        assert!((pc.f1 - 2.0 * p * r / (p + r)).abs() < 1e-12);
    }
    assert_eq!(m.per_class[2].support, 4);
    // A class never predicted has precision 0, not NaN.
    let m = Metrics::new(&[0, 1], &[0, 0], &names[..2]);
    assert_eq!((m.per_class[1].precision, m.per_class[1].f1), (0.0, 0.0));
    assert_eq!(argmax_rows(&[0.1, 0.7, 0.2, 5.0, -1.0, 4.0], 3), vec![1, 0]);
}

#[test]
fn poor_fit_runs_keep_what_pick_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 300, "[0, 1, 2]");
    let out = tmp.path().join("poor");
    let c = config("simcnn-weak@0.25", Recipe::PoorFit, &data, 6, Some(0.05));
    trainer::start(c, &out, None, &common::compute(), &engine(), &Silent).unwrap();
    let state = load_state(&out).unwrap();
    let best = state.best_epoch;
    let under = (best / 2).max(1);
    let over = pick(&out, Fit::Overfit, &tmp.path().join("over")).unwrap();
    assert_eq!(over.epoch, best);
    let underfit = pick(&out, Fit::Underfit, &tmp.path().join("under")).unwrap();
    assert_eq!(underfit.epoch, under);
    assert_eq!(
        Model::load(&tmp.path().join("over")).unwrap(),
        Model::load(&out).unwrap(),
        "the overfit model is the kept one"
    );
    // Only epochs that a later best could need are kept on disk.
    for e in 1..=6 {
        let kept = out.join(format!("checkpoint/epochs/epoch_{e:04}")).exists();
        let needed = e == best || e == under || e >= 3;
        assert_eq!(kept, needed, "epoch {e} (best {best})");
    }
    // A poor-fit model has no active dropout.
    let model = Model::load(&out).unwrap();
    assert!(
        model
            .description
            .layers
            .iter()
            .all(|l| !matches!(l.kind, cnnsplitter::model::description::LayerKind::Dropout { p } if p > 0.0))
    );
}

#[test]
fn bad_runs_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // SimCNN's pooling needs 32x32: 28x28 digits without padding do not fit.
    let path = tmp.path().join("digits.toml");
    std::fs::write(&path, "name = \"d\"\n[[part]]\nsource = \"mnist\"\n[split]\nmode = \"pool\"\n").unwrap();
    let mnist = tmp.path().join("mnist");
    common::formats::write_mnist(&mnist, 50, false);
    let data = DataSelection {
        dataset: path.to_string_lossy().into_owned(),
        tc: None,
        data_dir: Some(mnist),
        limits: Default::default(),
    };
    let out = tmp.path().join("never");
    let err = trainer::start(
        config("simcnn", Recipe::Strong, &data, 1, None),
        &out,
        None,
        &common::compute(),
        &engine(),
        &Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("1x28x28"), "{err}");
    assert!(!out.exists(), "nothing written");

    // A run folder is not overwritten.
    let data = tiny_data(tmp.path(), 100, "[0, 1]");
    let out = tmp.path().join("run");
    trainer::start(
        config("simcnn-weak@0.125", Recipe::Simple, &data, 1, None),
        &out,
        None,
        &common::compute(),
        &engine(),
        &Silent,
    )
    .unwrap();
    let err = trainer::start(
        config("simcnn-weak@0.125", Recipe::Simple, &data, 1, None),
        &out,
        None,
        &common::compute(),
        &engine(),
        &Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("already holds a training run: resume it"), "{err}");

    // An unwritable folder.
    let err = trainer::start(
        config("simcnn-weak@0.125", Recipe::Simple, &data, 1, None),
        Path::new("/proc/nope/run"),
        None,
        &common::compute(),
        &engine(),
        &Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("/proc/nope/run"), "{err}");
}

#[test]
fn a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 200, "[0, 1, 2]");
    let out = tmp.path().join("run");
    let mut c = config("simcnn-weak@0.25", Recipe::Simple, &data, 3, Some(0.01));
    trainer::start(c.clone(), &out, Some(1), &common::compute(), &engine(), &Silent).unwrap();
    let good = std::fs::read(out.join("checkpoint/last/model.safetensors")).unwrap();
    // Continue the same run with an absurd learning rate.
    c.schedule = StepSchedule::constant(1e12);
    std::fs::write(out.join("config.json"), serde_json::to_string(&c).unwrap()).unwrap();
    let err = trainer::resume(&out, &common::compute(), None, &engine(), &Silent).unwrap_err().to_string();
    assert!(err.contains("epoch 2 batch") && err.contains("after epoch 1"), "{err}");
    assert_eq!(std::fs::read(out.join("checkpoint/last/model.safetensors")).unwrap(), good);
}

/// The pure-Rust engine evaluates each epoch, so these tests do not depend on ONNX Runtime.
fn engine() -> BurnEngine {
    common::burn_engine()
}

#[test]
fn a_diverging_loss_is_a_numeric_error_that_names_the_epoch_and_keeps_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 300, "[0, 1, 2]");
    // A learning rate this large sends the loss to infinity or NaN within the first epochs.
    let c = config("simcnn-weak@0.125", Recipe::PoorFit, &data, 3, Some(1e12));
    let out = tmp.path().join("run");
    let err = trainer::start(c, &out, None, &common::compute(), &engine(), &Silent).unwrap_err();
    assert!(matches!(err, cnnsplitter::Error::Numeric(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("the loss became") && text.contains("epoch") && text.contains("`lr`"), "{text}");
    assert!(out.join("config.json").is_file(), "the run folder stays for a resume with another setting");
}

/// The states a kill leaves during the checkpoint rotation and before the log is written: each
/// resumes to what an uninterrupted run gives.
#[test]
fn every_kill_window_of_the_checkpoint_rotation_resumes_to_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 300, "[0, 1, 2]");
    let c = config("simcnn-weak@0.125", Recipe::Simple, &data, 3, Some(0.02));
    let straight = tmp.path().join("straight");
    trainer::start(c.clone(), &straight, None, &common::compute(), &engine(), &Silent).unwrap().unwrap();
    let log = |d: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(d.join("train.jsonl")).unwrap();
        text.lines().map(|l| l.split("\"seconds\"").next().unwrap().to_string()).collect()
    };
    let checkpoint = |d: &Path| d.join("checkpoint");
    // After epoch 1, a kill (a) between the two renames: only `last.partial`, complete; (b) with
    // only `last.old` left; (c) after the checkpoint with the log one line short and a stale
    // `last.old`.
    type Kill = fn(&Path);
    let kills: [(&str, Kill); 3] = [
        ("between the renames", |ck| std::fs::rename(ck.join("last"), ck.join("last.partial")).unwrap()),
        ("only last.old", |ck| std::fs::rename(ck.join("last"), ck.join("last.old")).unwrap()),
        ("log short, stale old", |ck| {
            common::copy_tree(&ck.join("last"), &ck.join("last.old"));
            std::fs::write(ck.parent().unwrap().join("train.jsonl"), "").unwrap();
        }),
    ];
    for (name, kill) in kills {
        let run = tmp.path().join(name.replace(' ', "-"));
        assert!(trainer::start(c.clone(), &run, Some(1), &common::compute(), &engine(), &Silent).unwrap().is_none());
        kill(&checkpoint(&run));
        trainer::resume(&run, &common::compute(), None, &engine(), &Silent).unwrap().unwrap();
        assert_eq!(load_state(&run).unwrap().epochs_done, 3, "{name}: resumed at epoch 2, not 1");
        assert_eq!(weights_bytes(&run), weights_bytes(&straight), "{name}: best model");
        assert_eq!(log(&run), log(&straight), "{name}: log");
        let left: Vec<_> = std::fs::read_dir(checkpoint(&run)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("last")], "{name}: no leftovers");
    }
    // Killed after the last checkpoint, before the log and the report: the log is whole again.
    let done = tmp.path().join("done");
    trainer::start(c, &done, None, &common::compute(), &engine(), &Silent).unwrap().unwrap();
    std::fs::remove_file(done.join("report.json")).unwrap();
    let text = std::fs::read_to_string(done.join("train.jsonl")).unwrap();
    std::fs::write(done.join("train.jsonl"), text.lines().take(2).map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    trainer::resume(&done, &common::compute(), None, &engine(), &Silent).unwrap().unwrap();
    assert_eq!(log(&done), log(&straight));
    assert!(done.join("report.json").is_file());
}

/// `train --resume` refuses a checkpoint of another architecture (naming it) instead of
/// continuing with it.
#[test]
fn resume_refuses_a_checkpoint_of_another_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path(), 200, "[0, 1, 2]");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let narrow = config("simcnn-weak@0.125", Recipe::Simple, &data, 3, Some(0.02));
    let wide = config("simcnn-weak@0.25", Recipe::Simple, &data, 3, Some(0.02));
    assert!(trainer::start(narrow, &a, Some(1), &common::compute(), &engine(), &Silent).unwrap().is_none());
    assert!(trainer::start(wide, &b, Some(1), &common::compute(), &engine(), &Silent).unwrap().is_none());
    let last = a.join("checkpoint/last");
    std::fs::remove_dir_all(&last).unwrap();
    common::copy_tree(&b.join("checkpoint/last"), &last);
    let err = trainer::resume(&a, &common::compute(), None, &engine(), &Silent).unwrap_err().to_string();
    assert!(err.contains("checkpoint/last") && err.contains("another architecture"), "{err}");

    // The dataset's file edited after the run started (other synthetic images): refused.
    let toml = std::path::PathBuf::from(&data.dataset);
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("seed = 3", "seed = 4")).unwrap();
    let err = trainer::resume(&b, &common::compute(), None, &engine(), &Silent).unwrap_err().to_string();
    assert!(err.contains("other data"), "{err}");
}
