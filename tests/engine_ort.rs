//! The ONNX Runtime engine and ONNX export against burn, and the exported files in Python's
//! onnxruntime. Without a runtime these tests fail under `CI=true` and say loudly that they
//! skipped elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use cnnsplitter::Model;
use cnnsplitter::decode::{decode, random_keep_masks};
use cnnsplitter::engine::Engine;
use cnnsplitter::engine::ort::{OrtEngine, environment};
use cnnsplitter::eval::metrics::argmax_rows;
use cnnsplitter::export::composite::to_onnx_composed;
use cnnsplitter::export::onnx::{export, write_file};
use cnnsplitter::graph::channel_groups::ChannelGroups;
use cnnsplitter::patch::calibrated::CalibratedRule;
use cnnsplitter::patch::export::to_onnx_patched;
use cnnsplitter::patch::{Calibration, PatchSpec, PatchedModel, Rule, patched_scores};
use common::*;

fn ort_engine() -> Option<OrtEngine> {
    match environment() {
        Ok(_) => Some(OrtEngine::new(2).unwrap()),
        Err(e) => {
            missing_runtime("ONNX Runtime", &format!("{e}; set ORT_DYLIB_PATH or `pip install onnxruntime`"));
            None
        }
    }
}

/// A model and a decoded module of it, for each kind of network.
fn models() -> Vec<(String, Model)> {
    let mut out = Vec::new();
    for (arch, input) in [
        ("simcnn@0.25", [3, 32, 32]),
        ("rescnn@0.25", [3, 32, 32]),
        ("resnet8-bn@0.5", [3, 32, 32]),
        ("simcnn-svhn-weak", [1, 28, 28]),
        ("mobilenetv2@0.25", [3, 32, 32]),
        ("resnet18@0.125", [3, 32, 32]),
        ("vgg16-bn@0.125", [3, 32, 32]),
    ] {
        let model = random_model(arch, input, 10, 3);
        let groups = ChannelGroups::derive(&model.description).unwrap();
        let masks = random_keep_masks(&groups, 0.5, &mut ChaCha8Rng::seed_from_u64(4));
        let module = decode(&model, &masks).unwrap();
        out.push((arch.to_string(), model));
        out.push((format!("{arch} module"), module));
    }
    // Depthwise and grouped convolutions, ReLU6, padded pooling.
    let model = random_model_of(depthwise_net(), 3);
    let groups = ChannelGroups::derive(&model.description).unwrap();
    let masks = random_keep_masks(&groups, 0.5, &mut ChaCha8Rng::seed_from_u64(4));
    out.push(("depthwise-net module".into(), decode(&model, &masks).unwrap()));
    out.push(("depthwise-net".into(), model));
    out.push(("concat-net".into(), random_model_of(concat_net(), 3)));
    out
}

#[test]
fn ort_outputs_equal_burn_outputs() {
    let Some(ort) = ort_engine() else { return };
    for (name, model) in models() {
        let n = 37; // not a multiple of the batch: the last chunk is short
        let images = random_images(n, model.description.input, 9);
        let want = burn_logits(&model, &images, n);
        let got = ort.prepare(&model).unwrap().logits(&images, n, 16).unwrap();
        let err = relative_error(&got, &want);
        assert!(err <= 1e-4, "{name}: ORT vs burn relative error {err}");
    }
}

/// The Python that has onnxruntime: `CNNSPLITTER_PYTHON`, else `python3`.
fn python_with_onnxruntime() -> Option<String> {
    let python = std::env::var("CNNSPLITTER_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python).args(["-c", "import onnxruntime, numpy"]).output().map(|o| o.status.success());
    if ok.unwrap_or(false) {
        Some(python)
    } else {
        missing_runtime(
            "Python's onnxruntime",
            &format!("`{python}` cannot import onnxruntime and numpy; set CNNSPLITTER_PYTHON"),
        );
        None
    }
}

const RUN_IN_PYTHON: &str = r#"
import sys, numpy as np, onnxruntime as ort
path, inputs, outputs, n, c, h, w = sys.argv[1:8]
x = np.fromfile(inputs, dtype=np.float32).reshape(int(n), int(c), int(h), int(w))
s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
assert [i.name for i in s.get_inputs()] == ["input"] and [o.name for o in s.get_outputs()] == ["logits"]
s.run(None, {"input": x})[0].astype(np.float32).tofile(outputs)
"#;

/// Runs the ONNX file `onnx` on `images` (`[n, C, H, W]`) in Python's onnxruntime.
fn run_in_python(python: &str, onnx: &Path, images: &[f32], n: usize, [c, h, w]: [usize; 3]) -> Vec<f32> {
    let dir = onnx.parent().unwrap();
    let (inp, out) = (dir.join("x.bin"), dir.join("y.bin"));
    std::fs::write(&inp, bytemuck::cast_slice::<f32, u8>(images)).unwrap();
    let status = Command::new(python)
        .args(["-c", RUN_IN_PYTHON, onnx.to_str().unwrap(), inp.to_str().unwrap(), out.to_str().unwrap()])
        .args([n, c, h, w].map(|v| v.to_string()))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    std::fs::read(&out).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn exported_files_run_in_pythons_onnxruntime_with_the_same_outputs() {
    let Some(python) = python_with_onnxruntime() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (name, model) in models() {
        let onnx: PathBuf = dir.path().join("m.onnx");
        export(&model, &onnx).unwrap();
        let n = 5;
        let images = random_images(n, model.description.input, 2);
        let got = run_in_python(&python, &onnx, &images, n, model.description.input);
        let err = relative_error(&got, &burn_logits(&model, &images, n));
        assert!(err <= 1e-4, "{name}: Python onnxruntime vs cnnsplitter relative error {err}");
    }
}

#[test]
fn composed_and_patched_exports_give_cnnsplitters_scores_in_python() {
    let Some(python) = python_with_onnxruntime() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = [3, 32, 32];
    let (n, images_n) = (4, 6);
    let images = random_images(images_n, input, 5);

    // Composed: random modules of one model; column c is module c's logit c.
    let model = random_model("rescnn@0.125", input, n, 1);
    let groups = ChannelGroups::derive(&model.description).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let modules: Vec<Model> =
        (0..n).map(|_| decode(&model, &random_keep_masks(&groups, 0.5, &mut rng)).unwrap()).collect();
    let mut want = vec![0f32; images_n * n];
    for (c, m) in modules.iter().enumerate() {
        for (i, row) in burn_logits(m, &images, images_n).chunks(n).enumerate() {
            want[i * n + c] = row[c];
        }
    }
    let onnx = dir.path().join("composed.onnx");
    write_file(&to_onnx_composed(&modules).unwrap(), &onnx).unwrap();
    let got = run_in_python(&python, &onnx, &images, images_n, input);
    assert!(relative_error(&got, &want) <= 1e-4, "composed: {}", relative_error(&got, &want));

    // Patched, each rule and a closed gate: cnnsplitter's patched scores, in ONNX operators.
    let weak = random_model("simcnn-weak@0.25", input, 5, 2);
    let module = random_model("simcnn@0.125", input, 10, 3);
    let (weak_logits, module_logits) = (burn_logits(&weak, &images, images_n), burn_logits(&module, &images, images_n));
    let mut calibrated = CalibratedRule {
        weights: vec![0.4, -0.7, 0.2, 0.1, 1.3, 2.5],
        bias: -0.5,
        threshold: 0.0,
        log_prob_floor: -30.0,
        l2: 1.0,
        fit_images: 1,
    };
    // A threshold between the images' middle scores, so that both branches are exercised.
    let mut z: Vec<f64> =
        weak_logits.chunks(5).zip(module_logits.chunks(10)).map(|(w, m)| calibrated.logit(w, m[7])).collect();
    z.sort_by(f64::total_cmp);
    calibrated.threshold = 0.5 * (z[images_n / 2 - 1] + z[images_n / 2]);
    let gate = common::test_gate(true);
    let rules = [
        (Rule::Paper(Calibration { min: -0.3, max: 0.9 }), true),
        (Rule::Calibrated(calibrated), true),
        (Rule::Paper(Calibration { min: -0.3, max: 0.9 }), false),
    ];
    for (rule, applied) in rules {
        let spec = PatchSpec { tc_weak: 4, tc_strong: 7, rule, applied, gate: gate.clone() };
        let want = patched_scores(&weak_logits, 5, &module_logits, 10, &spec);
        let patched = PatchedModel { weak: weak.clone(), module: module.clone(), spec };
        let onnx = dir.path().join("patched.onnx");
        write_file(&to_onnx_patched(&patched).unwrap(), &onnx).unwrap();
        let got = run_in_python(&python, &onnx, &images, images_n, input);
        let what = format!("{:?} applied {applied}", patched.spec.rule.kind());
        assert!(relative_error(&got, &want) <= 1e-4, "{what}: {}", relative_error(&got, &want));
        assert_eq!(argmax_rows(&got, 5), argmax_rows(&want, 5), "{what}");
        if !applied {
            assert_eq!(argmax_rows(&got, 5), argmax_rows(&weak_logits, 5), "a closed gate exports the weak model");
        }
    }
}

fn run_cli(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnsplitter")).envs(env.iter().copied()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_missing_or_broken_runtime_falls_back_to_burn_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("libonnxruntime.so");
    std::fs::write(&broken, b"not a library").unwrap();
    let args = ["--threads", "2", "bench", "infer", "--arch", "simcnn@0.125", "--batch", "4", "--iters", "1"];
    for path in [broken.to_str().unwrap(), "/nonexistent/libonnxruntime.so"] {
        let (ok, stderr) = run_cli(&[("ORT_DYLIB_PATH", path)], &args);
        assert!(ok, "{stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.contains("pip install onnxruntime")).count(),
            1,
            "one hint line: {stderr}"
        );
        let mut explicit = args.to_vec();
        explicit.extend(["--engine", "ort"]);
        let (ok, stderr) = run_cli(&[("ORT_DYLIB_PATH", path)], &explicit);
        assert!(!ok && stderr.contains("ONNX Runtime is not available"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // No python3 and no ORT_DYLIB_PATH.
    let out = Command::new(env!("CARGO_BIN_EXE_cnnsplitter"))
        .env_remove("ORT_DYLIB_PATH")
        .env("PATH", dir.path())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("no python3"), "{stderr}");
}

/// A random model, a genome layout over it and random images with labels, for search tests.
fn search_setup(
    classes: usize,
    n: usize,
) -> (Model, cnnsplitter::modularize::genetic::grouping::Layout, Vec<f32>, Vec<u16>) {
    use cnnsplitter::modularize::genetic::grouping::{GroupingConfig, Layout};
    let model = random_model("simcnn@0.25", [3, 32, 32], classes, 5);
    let importance = cnnsplitter::bench::search::random_importance(&model, &mut ChaCha8Rng::seed_from_u64(6)).unwrap();
    let layout = Layout::new(&model.description, &importance, &GroupingConfig::default());
    let images = random_images(n, [3, 32, 32], 7);
    let labels = (0..n).map(|i| (i % classes) as u16).collect();
    (model, layout, images, labels)
}

#[test]
fn ort_modules_run_in_parallel_give_the_same_logits_and_generations() {
    use cnnsplitter::modularize::genetic::composition::CompositionConfig;
    use cnnsplitter::modularize::genetic::evaluator::{Evaluator, ModuleRuns};
    use cnnsplitter::modularize::genetic::ga::{GaConfig, InitKind, Preset, initial_population};
    use cnnsplitter::modularize::genetic::search::{SearchContext, SearchState, StopConfig, initial_state};
    use cnnsplitter::records::GenerationRecord;
    let Some(ort) = ort_engine() else { return };
    let (classes, n) = (4, 48);
    let (model, layout, images, labels) = search_setup(classes, n);
    let ga = GaConfig { init: InitKind::Random, ..GaConfig::preset(Preset::ReferenceCode) }.with_population(6);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let populations: Vec<_> =
        (0..classes).map(|_| initial_population(&layout, &[], ga.init, ga.population, &mut rng)).collect();
    let composition = CompositionConfig::default();
    let stop = StopConfig { generations: 3, patience: None };
    let search = |runs: ModuleRuns| -> (SearchState, Vec<Vec<f32>>) {
        let mut evaluator = Evaluator::new(&ort, &model, &layout, &images, n).unwrap().with_runs(runs).unwrap();
        let requests: Vec<_> = (0..classes).flat_map(|c| populations[c].iter().map(move |g| (c, g.clone()))).collect();
        let first: Vec<Vec<f32>> =
            evaluator.own_logits_many(&requests).unwrap().iter().map(|v| v.as_ref().clone()).collect();
        let mut state = initial_state(populations.clone());
        let mut ctx = SearchContext {
            layout: &layout,
            labels: &labels,
            classes,
            ga: &ga,
            composition: &composition,
            stop: &stop,
            seed: 3,
            evaluator: &mut evaluator,
        };
        while !state.finished {
            ctx.step(&mut state).unwrap();
        }
        state.history = state.history.into_iter().map(|r| GenerationRecord { seconds: 0.0, ..r }).collect();
        (state, first)
    };
    let (one, one_logits) = search(ModuleRuns::SERIAL);
    let (two, two_logits) = search(ModuleRuns { jobs: 2, batch: 5 });
    assert_eq!(
        one_logits, two_logits,
        "one module on two threads over batches of 256, two on one thread each over batches of 5: the same bits"
    );
    assert_eq!(one, two, "the same generations");
    assert!(one.history.iter().all(|r| r.survivors > 0));
}

#[test]
fn ort_sensitivity_from_shared_prefixes_equals_running_every_module_whole() {
    use cnnsplitter::modularize::genetic::evaluator::Evaluator;
    use cnnsplitter::modularize::genetic::sensitivity::{SegmentPlan, segment_logits};
    let Some(ort) = ort_engine() else { return };
    let (classes, n) = (3, 40);
    let (model, layout, images, _) = search_setup(classes, n);
    let mut evaluator = Evaluator::new(&ort, &model, &layout, &images, n).unwrap();
    let mut shared_cuts = 0;
    for s in 0..layout.segments.len() {
        let plan = SegmentPlan::new(&evaluator, s).unwrap();
        shared_cuts += usize::from(plan.cut > 0);
        let shared = segment_logits(&evaluator, &layout, s, &plan, classes, &cnnsplitter::progress::Silent).unwrap();
        let whole = sensitivity_logits_run_whole(&mut evaluator, &layout, s, classes);
        for (r, (a, b)) in shared.iter().zip(&whole).enumerate() {
            for (c, (x, y)) in a.iter().zip(b).enumerate() {
                let err = relative_error(x, y);
                assert!(err <= 1e-6, "segment {s} (cut {}), ratio {r}, class {c}: relative error {err}", plan.cut);
            }
        }
    }
    assert!(shared_cuts >= 10, "only {shared_cuts} segments share a prefix");
}
