//! The command line, run as a user would.

use std::process::Command;

fn cnnsplitter(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnsplitter"))
        .args(args)
        .args(["--threads", "2"])
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_json_reports_counts_and_layers() {
    let (ok, stdout, stderr) = cnnsplitter(&["inspect", "rescnn", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["kernels"], 4288);
    assert_eq!(v["macs"], 431_166_464u64);
    assert!(v["params"].as_u64().unwrap() > 0);
    let layers = v["layers"].as_array().unwrap();
    let macs: u64 = layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum();
    assert_eq!(macs, 431_166_464);
    assert_eq!(v["channel_groups"].as_array().unwrap().len(), 9);
}

#[test]
fn init_then_inspect_a_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let (ok, _, stderr) = cnnsplitter(&[
        "init",
        "--arch",
        "simcnn-svhn-weak",
        "--input",
        "1x28x28",
        "--classes",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = cnnsplitter(&["inspect", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("input 1x28x28") && stdout.contains("5 classes"), "{stdout}");
    assert!(stdout.contains("fc_2"), "{stdout}");
}

#[test]
fn bad_input_gives_a_one_line_error_and_a_failure_code() {
    let (ok, _, stderr) = cnnsplitter(&["inspect", "simcnn", "--input", "3x32"]);
    assert!(!ok);
    assert!(stderr.contains("CxHxW"), "{stderr}");
    let (ok, _, stderr) = cnnsplitter(&["inspect", "simcnn", "--input", "1x28x28"]);
    assert!(!ok);
    assert!(stderr.contains("pool_12"), "{stderr}");
    let (ok, _, stderr) = cnnsplitter(&["inspect", "nosuchnet"]);
    assert!(!ok);
    assert!(stderr.contains("unknown architecture"), "{stderr}");
}

/// `w · [max(log_softmax(weak), floor), module_tc] + b >= threshold`: the calibrated rule's
/// prediction written out from `patch.json`'s parameters.
fn calibrated_by_hand(rule: &serde_json::Value, weak: &[f32], module_tc: f32, tc: usize) -> usize {
    let w: Vec<f64> = rule["weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let floor = rule["log_prob_floor"].as_f64().unwrap();
    let max = weak.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = weak.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    let mut z = rule["bias"].as_f64().unwrap() + w[weak.len()] * module_tc as f64;
    for (c, &v) in weak.iter().enumerate() {
        z += w[c] * (v as f64 - max - log_sum).max(floor);
    }
    if z >= rule["threshold"].as_f64().unwrap() {
        return tc;
    }
    (0..weak.len())
        .filter(|&c| c != tc)
        .fold(usize::MAX, |b, c| if b == usize::MAX || weak[c] > weak[b] { c } else { b })
}

#[test]
fn patch_then_eval_the_patched_model_and_experiment_errors() {
    use cnnsplitter::Model;
    use cnnsplitter::data::presets::DataSelection;
    use cnnsplitter::engine::burn::BurnEngine;
    use cnnsplitter::eval::logits;

    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    std::fs::write(
        dir.path().join("w.toml"),
        "name = \"w\"\n[synthetic]\ntrain = 600\ntest = 100\n[[part]]\nsource = \"synthetic\"\n\
         classes = [6, 7, 8, 9, \"tc\"]\n[split]\nmode = \"official\"\nval = 0.2\nseed = 0\n",
    )
    .unwrap();
    let init = |arch: &str, classes: &str, out: &str| {
        let (ok, _, stderr) = cnnsplitter(&["init", "--arch", arch, "--classes", classes, "--out", out]);
        assert!(ok, "{stderr}");
    };
    init("simcnn-weak@0.25", "5", &p("weak"));
    init("rescnn@0.125", "5", &p("strong"));
    let args = ["patch", "--weak", &p("weak"), "--module", &p("strong"), "--dataset", &p("w.toml"), "--engine", "burn"];
    let (ok, _, stderr) = cnnsplitter(&[&args[..], &["--tc", "4", "--out", &p("x")]].concat());
    assert!(!ok && stderr.contains("WEAK_INDEX=STRONG_INDEX"), "{stderr}");
    // Gated (the default): the gate's decision is printed; random models leave it closed or open.
    let (ok, stdout, stderr) = cnnsplitter(&[&args[..], &["--tc", "4=2", "--out", &p("gated")]].concat());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("gate open") || stdout.contains("gate closed"), "{stdout}");
    assert!(stdout.contains("non-TC acc") && stdout.contains("AUROC"), "{stdout}");
    // Ungated: the rule applies, and `eval` of the folder predicts what the rule's formula says.
    let (ok, _, stderr) = cnnsplitter(&[&args[..], &["--tc", "4=2", "--ungated", "--out", &p("patched")]].concat());
    assert!(ok, "{stderr}");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("patched/patch.json")).unwrap()).unwrap();
    assert_eq!((spec["applied"].as_bool(), spec["rule"]["kind"].as_str()), (Some(true), Some("calibrated")));
    let (ok, stdout, stderr) =
        cnnsplitter(&["eval", &p("patched"), "--dataset", &p("w.toml"), "--tc", "2", "--engine", "burn", "--json"]);
    assert!(ok, "{stderr}");
    let m: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let data = DataSelection { tc: Some(2), ..DataSelection::named(&p("w.toml")) }.load().unwrap();
    let engine = BurnEngine::new(&cnnsplitter::Compute::new(burn::tensor::Device::flex(), 1));
    let weak =
        logits(&engine, &Model::load(&dir.path().join("weak")).unwrap(), &data.test, &data.normalization).unwrap();
    let module =
        logits(&engine, &Model::load(&dir.path().join("strong")).unwrap(), &data.test, &data.normalization).unwrap();
    let preds: Vec<usize> =
        weak.chunks(5).zip(module.chunks(5)).map(|(w, m)| calibrated_by_hand(&spec["rule"], w, m[2], 4)).collect();
    let labels = &data.test.labels;
    let tc_images = labels.iter().filter(|&&l| l == 4).count();
    let tp = preds.iter().zip(labels).filter(|(p, l)| **p == 4 && **l == 4).count();
    assert_eq!(
        m["per_class"][4]["recall"].as_f64().unwrap(),
        tp as f64 / tc_images as f64,
        "eval runs the patched model"
    );
    let right = preds.iter().zip(labels).filter(|(p, l)| **p == **l as usize).count();
    assert!((m["accuracy"].as_f64().unwrap() - right as f64 / labels.len() as f64).abs() < 1e-12, "{m}");
    let (ok, stdout, stderr) = cnnsplitter(&["export", &p("patched"), "--onnx", &p("patched.onnx")]);
    assert!(ok && stdout.contains("patched model") && stdout.contains("[batch, 5]"), "{stderr}");
    assert!(std::fs::metadata(dir.path().join("patched.onnx")).unwrap().len() > 1000);

    std::fs::write(dir.path().join("bad.toml"), "name = \"x\"\n").unwrap();
    let (ok, _, stderr) = cnnsplitter(&["experiment", "rq1", "--config", &p("bad.toml"), "--out", &p("e")]);
    assert!(!ok && stderr.contains("bad.toml") && stderr.contains("experiment config"), "{stderr}");
    assert!(!dir.path().join("e").exists());
}

#[test]
fn bench_infer_json_prints_images_per_second() {
    let (ok, stdout, stderr) =
        cnnsplitter(&["bench", "infer", "--arch", "simcnn@0.125", "--batch", "8", "--iters", "1", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
    let (ok, stdout, stderr) = cnnsplitter(&[
        "bench",
        "modules",
        "--arch",
        "rescnn@0.125",
        "--modules",
        "2",
        "--images",
        "8",
        "--iters",
        "1",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["median_s"].as_f64().unwrap() > 0.0 && v["module_images_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn data_info_json_reports_format_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200u32;
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend(vec![0u8; 200 * 784]);
    let mut labels = vec![0, 0, 8, 1];
    labels.extend(n.to_be_bytes());
    labels.extend((0..200).map(|i| (i % 4) as u8));
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), labels).unwrap();
    let (ok, stdout, stderr) = cnnsplitter(&["data", "info", dir.path().to_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["format"], "mnist-idx");
    assert_eq!(v["splits"]["test"]["count"], 200);
    assert_eq!(v["splits"]["test"]["per_class"], serde_json::json!([50, 50, 50, 50, 0, 0, 0, 0, 0, 0]));

    let (ok, stdout, stderr) = cnnsplitter(&[
        "data",
        "info",
        "--dataset",
        "mnist-w",
        "--tc",
        "1",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["dataset"], "mnist-w(tc=1)");
    let total: u64 = ["train", "val", "test"].iter().map(|s| v["splits"][s]["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 50, "only digit 1 of {{6, 7, 8, 9, 1}} is present");

    let (ok, _, stderr) =
        cnnsplitter(&["data", "info", "--dataset", "svhn-w", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("needs the target class: give `tc`"), "{stderr}");
}

#[test]
fn train_eval_and_pick_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tiny.toml");
    std::fs::write(
        &toml,
        "name = \"tiny\"\n[synthetic]\ntrain = 200\ntest = 100\n[[part]]\nsource = \"synthetic\"\nclasses = [0, 1, 2]\n\
         [split]\nmode = \"official\"\nval = 0.2\n",
    )
    .unwrap();
    let (toml, run) = (toml.to_str().unwrap(), dir.path().join("run"));
    let run_s = run.to_str().unwrap();
    let (ok, stdout, stderr) = cnnsplitter(&[
        "train",
        "--arch",
        "simcnn-weak@0.125",
        "--recipe",
        "poor-fit",
        "--dataset",
        toml,
        "--epochs",
        "3",
        "--stop-after",
        "2",
        "--out",
        run_s,
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("--resume"), "{stdout}");
    let log = dir.path().join("events.jsonl");
    let (ok, stdout, stderr) = cnnsplitter(&["train", "--resume", run_s, "--log-json", log.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("test"), "{stdout}");
    assert!(stderr.contains("epoch   3/3"), "the epoch event shows as a line: {stderr}");
    // --log-json: the resumed session's epoch event, with the figures train.jsonl holds for it.
    let events: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let epochs: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "epoch_done").collect();
    assert_eq!(epochs.len(), 1, "{events:?}");
    assert_eq!(epochs[0]["epochs"], 3);
    assert!(epochs[0]["at_s"].as_f64().is_some_and(|t| t >= 0.0));
    let logged = std::fs::read_to_string(run.join("train.jsonl")).unwrap();
    let third: serde_json::Value = serde_json::from_str(logged.lines().nth(2).unwrap()).unwrap();
    assert_eq!(epochs[0]["record"], third);
    let (ok, stdout, stderr) = cnnsplitter(&["eval", run_s, "--dataset", toml, "--split", "val", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["accuracy"].as_f64().is_some());
    assert_eq!(v["per_class"].as_array().unwrap().len(), 3);
    let out = dir.path().join("under");
    let (ok, stdout, stderr) = cnnsplitter(&["pick", run_s, "--underfit", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("underfitting"), "{stdout}");
    assert!(out.join("model.safetensors").exists() && out.join("pick.json").exists());
    // Data that does not fit the model: a clear error.
    let (ok, _, stderr) = cnnsplitter(&["eval", run_s, "--dataset", "synthetic"]);
    assert!(!ok && stderr.contains("3 classes"), "{stderr}");
}

/// A closed standard output ends the command by SIGPIPE (or success), never a panic.
#[cfg(unix)]
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnsplitter"))
        .args(["inspect", "simcnn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    drop(child.stdout.take()); // the reader goes away before the first line is written
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success() || out.status.signal() == Some(13), "{:?}: {stderr}", out.status);
}

/// init, pick, train, modularize and export refuse an existing output unless --force; with it,
/// the output is replaced.
#[test]
fn existing_outputs_are_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    let m_s = m.to_str().unwrap();
    let init = |seed: &str, force: bool| {
        let mut args = vec!["init", "--arch", "resnet8-bn@0.25", "--classes", "5", "--seed", seed, "--out", m_s];
        if force {
            args.push("--force");
        }
        cnnsplitter(&args)
    };
    let (ok, _, stderr) = init("7", false);
    assert!(ok, "{stderr}");
    let weights = std::fs::read(m.join("model.safetensors")).unwrap();
    let (ok, _, stderr) = init("8", false);
    assert!(!ok && stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(m.join("model.safetensors")).unwrap(), weights, "untouched");
    let (ok, _, stderr) = init("8", true);
    assert!(ok, "{stderr}");
    assert_ne!(std::fs::read(m.join("model.safetensors")).unwrap(), weights, "replaced with --force");

    // train onto a model folder, pick and export onto existing outputs: refused, nothing changed.
    let (ok, _, stderr) =
        cnnsplitter(&["train", "--arch", "simcnn-weak@0.125", "--dataset", "synthetic", "--out", m_s]);
    assert!(!ok && stderr.contains("already exists (a model folder"), "{stderr}");
    let (ok, _, stderr) = cnnsplitter(&["pick", m_s, "--overfit", "--out", m_s]);
    assert!(!ok && stderr.contains("--out") && stderr.contains("is the input"), "{stderr}");
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (ok, _, stderr) = cnnsplitter(&["pick", m_s, "--overfit", "--out", other.to_str().unwrap()]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let onnx = dir.path().join("m.onnx");
    std::fs::write(&onnx, b"mine").unwrap();
    let (ok, _, stderr) = cnnsplitter(&["export", m_s, "--onnx", onnx.to_str().unwrap()]);
    assert!(!ok && stderr.contains("already exists (a file"), "{stderr}");
    assert_eq!(std::fs::read(&onnx).unwrap(), b"mine");
    let (ok, _, stderr) = cnnsplitter(&["export", m_s, "--onnx", onnx.to_str().unwrap(), "--force"]);
    assert!(ok, "{stderr}");
    assert_ne!(std::fs::read(&onnx).unwrap(), b"mine");
    let (ok, _, stderr) = cnnsplitter(&["modularize", "--model", m_s, "--dataset", "synthetic", "--out", m_s]);
    assert!(!ok && stderr.contains("is the input"), "{stderr}");
    let (ok, _, stderr) =
        cnnsplitter(&["modularize", "--model", m_s, "--dataset", "synthetic", "--out", other.to_str().unwrap()]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    assert_ne!(std::fs::read(m.join("model.safetensors")).unwrap(), weights);
}

/// Meaningless numbers are refused up front with the setting's name, and nothing is written.
#[test]
fn meaningless_numbers_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    let (ok, _, stderr) =
        cnnsplitter(&["init", "--arch", "simcnn-weak@0.125", "--classes", "10", "--out", m.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let out = dir.path().join("out");
    let base = ["modularize", "--model", m.to_str().unwrap(), "--dataset", "synthetic", "--out", out.to_str().unwrap()];
    for (flag, value, says) in [
        ("--generations", "0", "`generations`"),
        ("--search-images", "0", "`search_images`"),
        ("--sensitivity-images", "0", "`sensitivity_images`"),
        ("--alpha", "nan", "`alpha`"),
        ("--confidence", "2", "`confidence`"),
        ("--reset", "2", "`reset share`"),
        ("--thresholds", "2,2", "`thresholds`"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        let (ok, _, stderr) = cnnsplitter(&args);
        assert!(!ok && stderr.contains(says), "{flag} {value}: {stderr}");
        assert!(!out.exists(), "{flag} {value}: nothing written");
    }
    let (ok, _, stderr) = cnnsplitter(&["inspect", "simcnn@1e20"]);
    assert!(!ok && stderr.contains("width must lie in"), "{stderr}");
    let (ok, _, stderr) = cnnsplitter(&["init", "--arch", "simcnn@100", "--out", out.to_str().unwrap()]);
    assert!(!ok && stderr.contains("width must lie in"), "{stderr}");
    let too_many =
        Command::new(env!("CARGO_BIN_EXE_cnnsplitter")).args(["data", "presets", "--threads", "20000"]).output();
    let too_many = too_many.unwrap();
    let stderr = String::from_utf8_lossy(&too_many.stderr);
    assert!(!too_many.status.success() && stderr.contains("--threads must lie in"), "{stderr}");
    // A mix without validation images, and one with a NaN standard deviation.
    let no_val = dir.path().join("noval.toml");
    std::fs::write(
        &no_val,
        "name = \"noval\"\n[synthetic]\ntrain = 100\ntest = 50\n[[part]]\nsource = \"synthetic\"\n[split]\nmode = \"official\"\nval = 0.0\n",
    )
    .unwrap();
    let (ok, _, stderr) = cnnsplitter(&[
        "train",
        "--arch",
        "simcnn-weak@0.125",
        "--dataset",
        no_val.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("no validation images"), "{stderr}");
    assert!(!out.exists());
    let nan_std = dir.path().join("nanstd.toml");
    std::fs::write(
        &nan_std,
        "name = \"nanstd\"\nstd = [nan, 1.0, 1.0]\n[[part]]\nsource = \"synthetic\"\n[split]\nmode = \"pool\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = cnnsplitter(&["data", "info", "--dataset", nan_std.to_str().unwrap()]);
    assert!(!ok && stderr.contains("`std`"), "{stderr}");
}

#[test]
fn errors_print_the_os_text_once_and_escape_control_characters() {
    let (ok, _, stderr) = cnnsplitter(&[
        "init",
        "--arch",
        "simcnn-weak@0.125",
        "--input",
        "3x32x32",
        "--classes",
        "3",
        "--out",
        "/proc/nope/x",
    ]);
    assert!(!ok && stderr.matches("os error 2").count() == 1, "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
    // A name holding an escape sequence (it would recolour the terminal) is shown escaped.
    let (ok, _, stderr) = cnnsplitter(&["inspect", "bad\u{1b}[31mname\nnext"]);
    assert!(!ok && stderr.contains("bad\\u{1b}[31mname\\nnext"), "{stderr}");
    assert!(!stderr.contains('\u{1b}') && stderr.trim_end().lines().count() == 1, "{stderr:?}");
}
