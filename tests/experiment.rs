//! Experiments end to end: the demo's tiny configuration, resuming, and config errors.

mod common;

use std::path::Path;

use cnnsplitter::engine::{EngineChoice, select};
use cnnsplitter::experiment::config::ExperimentConfig;
use cnnsplitter::experiment::{Launch, Rq, run};
use cnnsplitter::progress::{Event, Progress, Silent};

const TINY: &str = include_str!("../experiments/demo-tiny.toml");

/// Keeps the labels of the stage events.
struct Stages(std::sync::Mutex<Vec<String>>);

impl Progress for Stages {
    fn event(&self, event: &Event<'_>) {
        if let Event::Stage { label } = event {
            self.0.lock().unwrap().push(label.to_string());
        }
    }
}

/// Tasks started by this test binary's runs: the tool's binary, this process's threads.
fn launch() -> Launch {
    Launch {
        program: env!("CARGO_BIN_EXE_cnnsplitter").into(),
        threads: rayon::current_num_threads(),
        engine: EngineChoice::Auto,
    }
}

fn tiny() -> ExperimentConfig {
    ExperimentConfig::from_toml(TINY, Path::new("experiments/demo-tiny.toml")).unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_tiny_demo_runs_end_to_end_and_a_resumed_run_gives_the_same_tables() {
    let engine = select(EngineChoice::Auto, &common::compute()).unwrap().engine;
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny();
    let straight = tmp.path().join("straight");
    let reports = run(Rq::Rq2, &config, &straight, &common::compute(), engine.as_ref(), &launch(), None, &Silent)
        .unwrap()
        .unwrap();

    // Every TC x kind was patched, RQ1 has its model, and the files are there.
    let w = config.weak.as_ref().unwrap();
    assert_eq!(reports.rq1.len(), 1);
    assert_eq!(reports.rq2.len(), w.tcs.len() * w.kinds.len() * w.rules.len());
    let r1 = &reports.rq1[0];
    assert!(r1.module_kernels < r1.model_kernels as f64 && r1.kernel_reduction > 0.0, "{r1:?}");
    assert!((r1.accuracy_loss - (r1.model_accuracy - r1.composed_accuracy)).abs() < 1e-12, "{r1:?}");
    assert!((r1.kernel_reduction - (1.0 - r1.module_kernels / r1.model_kernels as f64)).abs() < 1e-12, "{r1:?}");
    for r in &reports.rq2 {
        // Gated: the rule's result where the gate opened, the weak model's where it closed.
        assert_eq!(r.patched, if r.gate_open { r.ungated } else { r.weak }, "{r:?}");
        // The gate compared validation accuracies, and opened only on a gain.
        assert!(!r.gate_open || r.gate_patched.accuracy > r.gate_weak.accuracy, "{r:?}");
    }
    let rep = straight.join("reports");
    for name in ["rq1.md", "rq1.json", "rq1.csv", "rq2.md", "rq2.json", "rq2.csv"] {
        assert!(rep.join(name).is_file(), "{name}");
    }
    let md = read(&rep.join("rq2.md"));
    assert!(
        md.contains("| 3 | overfit |") && md.contains("| calibrated | gated |") && md.contains("| paper | ungated |"),
        "{md}"
    );
    let csv = read(&rep.join("rq2.csv"));
    assert_eq!(csv.lines().count(), 1 + reports.rq2.len());
    let columns = csv.lines().next().unwrap().split(',').count();
    assert!(csv.lines().all(|l| l.split(',').count() == columns), "every row has the header's columns:\n{csv}");
    assert!(
        csv.starts_with("model,tc,kind,rule,gate_open,")
            && csv.contains("diagnostics_change_intervals_f1_1")
            && csv.contains("diagnostics_after_fp"),
        "{csv}"
    );
    let json: serde_json::Value = serde_json::from_str(&read(&rep.join("rq2.json"))).unwrap();
    let summary = json["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2 * w.rules.len() + 1, "ungated and gated per rule, and the control");
    for s in summary.iter().filter(|s| s["patching"] != "without_module") {
        let counts = ["non_tc_better", "non_tc_tie", "non_tc_worse"].map(|k| s[k].as_u64().unwrap());
        assert_eq!(counts.iter().sum::<u64>(), s["models"].as_u64().unwrap(), "{s}");
        // The mean change, recomputed here from the rows.
        let rule = s["rule"].as_str().unwrap();
        let rows: Vec<_> = reports.rq2.iter().filter(|r| format!("{:?}", r.rule).to_lowercase() == rule).collect();
        let gated = s["patching"] == "gated";
        let after = |r: &&cnnsplitter::experiment::report::Rq2Row| if gated { r.patched.f1 } else { r.ungated.f1 };
        let mean = rows.iter().map(|r| after(r) - r.weak.f1).sum::<f64>() / rows.len() as f64;
        assert!((s["f1"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{s}");
        let f1 = &s["f1"];
        assert!(f1["interval"][0].as_f64() <= f1["mean"].as_f64() && f1["mean"].as_f64() <= f1["interval"][1].as_f64());
    }
    if Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
        for plot in ["search_Tiny.svg", "search_Tiny.png", "patch_Tiny_paper.svg", "patch_Tiny_calibrated.png"] {
            let bytes = std::fs::read(rep.join("plots").join(plot)).unwrap();
            assert!(bytes.len() > 1000, "{plot}");
        }
        assert!(std::fs::read(rep.join("plots/patch_Tiny_paper.png")).unwrap().starts_with(b"\x89PNG"));
    }
    // The patched models are runnable folders.
    assert!(straight.join("patched/Tiny/tc3/simple/calibrated/patch.json").is_file());

    // Stopped after 4 stages (announced as 4 stage events), then continued: the same tables, and
    // nothing redone.
    let resumed = tmp.path().join("resumed");
    let stages = Stages(Default::default());
    assert!(
        run(Rq::Rq2, &config, &resumed, &common::compute(), engine.as_ref(), &launch(), Some(4), &stages)
            .unwrap()
            .is_none()
    );
    let labels = stages.0.lock().unwrap().clone();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(
        labels[0].starts_with("training strong model Tiny") && labels[1].starts_with("modularizing Tiny"),
        "{labels:?}"
    );
    assert!(resumed.join("strong/Tiny/report.json").is_file());
    assert!(!resumed.join("reports").exists());
    let strong_weights = std::fs::read(resumed.join("strong/Tiny/model.safetensors")).unwrap();
    run(Rq::Rq2, &config, &resumed, &common::compute(), engine.as_ref(), &launch(), None, &Silent).unwrap().unwrap();
    assert_eq!(std::fs::read(resumed.join("strong/Tiny/model.safetensors")).unwrap(), strong_weights);
    for name in ["rq1.md", "rq2.md", "rq2.csv"] {
        assert_eq!(read(&rep.join(name)), read(&resumed.join("reports").join(name)), "{name}");
    }

    // Another config in the same folder is refused.
    let mut other = config.clone();
    other.seed = 1;
    let err =
        run(Rq::Rq2, &other, &resumed, &common::compute(), engine.as_ref(), &launch(), None, &Silent).unwrap_err();
    assert!(err.to_string().contains("another configuration"), "{err}");
}

#[test]
fn bad_configs_and_folders_are_clear_errors() {
    let origin = Path::new("my.toml");
    let err = ExperimentConfig::from_toml("name = 1", origin).unwrap_err().to_string();
    assert!(err.contains("my.toml") && err.contains("experiment config"), "{err}");
    let no_models = "name = \"x\"\nmodels = []\n[strong]\ndataset = \"synthetic-s\"\n";
    assert!(ExperimentConfig::from_toml(no_models, origin).unwrap_err().to_string().contains("[[models]]"));
    let unknown = TINY.replace("[strong]\n", "[strong]\ncolour = 1\n");
    assert!(ExperimentConfig::from_toml(&unknown, origin).unwrap_err().to_string().contains("colour"));
    let typo = TINY.replace("tc_label", "tc_lable");
    assert!(ExperimentConfig::from_toml(&typo, origin).unwrap_err().to_string().contains("tc_lable"));
    let mismatch = TINY.replace("tc_label = 4", "tc_label = 4\nstrong_labels = [1]");
    assert!(ExperimentConfig::from_toml(&mismatch, origin).unwrap_err().to_string().contains("strong_labels"));
    // Everything the runner will build is built at load (no data read), so these fail before a
    // stage runs or config.toml is written; the message names the TOML key.
    for (from, to, says) in [
        ("epochs = 1\nlr = 0.01", "epochs = 0\nlr = 0.01", "[strong]: `epochs` must be at least 1"),
        ("epochs = 1\nlr = 0.01", "epochs = 1\nlr = -0.5", "`lr`"),
        ("epochs = 1\nlr = 0.01", "epochs = 1\nlr = nan", "`lr`"),
        ("arch = \"rescnn-weak@0.25\"", "arch = \"nosuchnet\"", "[[models]] `Tiny` `arch`: unknown architecture"),
        ("dataset = \"synthetic-s-tiny\"", "dataset = \"nosuchdata\"", "[strong] `dataset`"),
        ("tcs = [0, 3]", "tcs = [0, 17]", "[weak] `tcs`: dataset `synthetic-w-tiny`: target class 17"),
        ("tc_label = 4", "tc_label = 40", "[weak] `tc_label` is 40"),
        ("weak_arch = \"simcnn-weak@0.125\"", "weak_arch = \"simcnn-weak@0\"", "`weak_arch`"),
    ] {
        assert!(TINY.contains(from), "{from}");
        let err = ExperimentConfig::from_toml(&TINY.replace(from, to), origin).unwrap_err().to_string();
        assert!(err.contains("my.toml") && err.contains(says), "{to}: {err}");
    }
    // The search's settings pass the library's one check at load, before any stage runs.
    for (from, to, says) in [
        ("population = 4", "population = 1", "[modularize] `population` must be at least 2"),
        ("generations = 2", "generations = 0", "[modularize] `generations` must be at least 1"),
        ("search_images = 200", "search_images = 0", "[modularize] `search_images` must be at least 1"),
        ("sensitivity_images = 200", "sensitivity_images = 200\n[rq3]\ngenerations = 0", "[rq3] `generations`"),
    ] {
        assert!(TINY.contains(from), "{from}");
        let err = ExperimentConfig::from_toml(&TINY.replace(from, to), origin).unwrap_err().to_string();
        assert!(err.contains("my.toml") && err.contains(says), "{to}: {err}");
    }

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("something.txt"), "x").unwrap();
    let engine = select(EngineChoice::Burn, &common::compute_with(1)).unwrap().engine;
    let err =
        run(Rq::Rq1, &tiny(), tmp.path(), &common::compute(), engine.as_ref(), &launch(), None, &Silent).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let mut rq2_without_weak = tiny();
    rq2_without_weak.weak = None;
    let dir = tmp.path().join("x");
    let err = run(Rq::Rq2, &rq2_without_weak, &dir, &common::compute(), engine.as_ref(), &launch(), None, &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("[weak]"), "{err}");
    assert!(!dir.exists(), "nothing written");
}

#[test]
fn the_strong_models_search_takes_its_initialisation_from_the_config() {
    use cnnsplitter::data::presets::DataSelection;
    use cnnsplitter::modularize::genetic::ga::InitKind;
    let origin = Path::new("my.toml");
    let search = |text: &str| {
        let config = ExperimentConfig::from_toml(text, origin).unwrap();
        config.modularize.modularize_config("m".into(), DataSelection::named("synthetic-s-tiny"), 0)
    };
    assert_eq!(search(TINY).ga.init, InitKind::Sensitivity, "the preset's by default");
    let graded = TINY.replace("population = 4", "population = 4\ninit = \"graded\"");
    assert_eq!(search(&graded).ga.init, InitKind::Graded);
    let typo = TINY.replace("population = 4", "population = 4\ninit = \"grade\"");
    let err = ExperimentConfig::from_toml(&typo, origin).unwrap_err().to_string();
    assert!(err.contains("my.toml") && err.contains("grade") && err.contains("graded"), "{err}");
}

#[test]
fn the_shipped_configs_parse_and_name_known_datasets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let c = ExperimentConfig::load(&path).unwrap();
            let mut datasets = vec![c.strong.dataset.clone()];
            datasets.extend(c.weak.iter().map(|w| w.dataset.clone()));
            for d in datasets {
                cnnsplitter::data::presets::preset_or_file(&d).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            seen += 1;
        }
    }
    assert!(seen >= 6, "demo, demo-tiny, mnist, cifar10, svhn, synthetic");
}

#[test]
fn rq3_compares_groupings_and_initialisations() {
    use cnnsplitter::modularize::genetic::ga::InitKind;
    use cnnsplitter::modularize::genetic::grouping::GroupingKind;
    let engine = select(EngineChoice::Auto, &common::compute()).unwrap().engine;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny();
    config.rq3.groupings = vec![GroupingKind::None, GroupingKind::Importance];
    config.rq3.inits = vec![InitKind::Random];
    config.rq3.generations = Some(3);
    let reports = run(Rq::Rq3, &config, tmp.path(), &common::compute(), engine.as_ref(), &launch(), None, &Silent)
        .unwrap()
        .unwrap();
    assert!(reports.rq1.is_empty() && reports.rq2.is_empty());
    let rows: Vec<_> = reports.rq3.iter().map(|r| (r.grouping, r.init)).collect();
    assert_eq!(rows, vec![(GroupingKind::None, InitKind::Random), (GroupingKind::Importance, InitKind::Random)]);
    // The generation of the best modules: the last one (from 1) whose best combination changed,
    // read off the search log.
    for (row, dir) in reports.rq3.iter().zip(["none-random", "importance-random"]) {
        let log = read(&tmp.path().join("rq3/Tiny").join(dir).join("search/generations.jsonl"));
        let best: Vec<(f64, f64)> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["accuracy"].as_f64().unwrap(), v["diff"].as_f64().unwrap()))
            .collect();
        assert_eq!(best.len(), 3);
        let changed = (1..best.len()).filter(|&g| best[g] != best[g - 1]).max().map_or(0, |g| g);
        assert_eq!(row.best_generation, changed + 1, "{dir}: {best:?}");
    }
    // Each ablation run was configured as its row says.
    for (dir, grouping) in [("none-random", "none"), ("importance-random", "importance")] {
        let c: serde_json::Value =
            serde_json::from_str(&read(&tmp.path().join("rq3/Tiny").join(dir).join("config.json"))).unwrap();
        assert_eq!((c["grouping"]["kind"].as_str(), c["ga"]["init"].as_str()), (Some(grouping), Some("random")));
    }
    let md = read(&tmp.path().join("reports/rq3.md"));
    for r in &reports.rq3 {
        let grouping = format!("{:?}", r.grouping).to_lowercase();
        assert!(md.contains(&format!("| Tiny | {grouping} | random | {} |", r.best_generation)), "{md}");
    }
}

#[test]
fn csv_rows_quote_what_needs_it_and_keep_columns_when_values_are_absent() {
    use cnnsplitter::experiment::report::csv;
    #[derive(serde::Serialize)]
    struct Row {
        name: &'static str,
        interval: [f64; 2],
        extra: Option<f64>,
    }
    let rows = [
        Row { name: "plain", interval: [0.5, 1.0], extra: None },
        Row { name: "a, \"b\"", interval: [-1.0, 2.0], extra: Some(3.0) },
    ];
    assert_eq!(csv(&rows), "name,interval_0,interval_1,extra\nplain,0.5,1.0,\n\"a, \"\"b\"\"\",-1.0,2.0,3.0\n");
}

#[test]
fn the_standard_families_train_modularize_and_patch_end_to_end() {
    // MobileNetV2 as the strong model (depthwise groups), ResNet-18 as the simple weak model,
    // VGG16-BN as the poor-fit one (picked overfit), on the tiny synthetic data.
    let text = TINY
        .replace("arch = \"rescnn-weak@0.25\"", "arch = \"mobilenetv2@0.25\"")
        .replace("weak_arch = \"simcnn-weak@0.125\"", "weak_arch = \"resnet18@0.125\"")
        .replace("poor_fit_arch = \"simcnn-weak@0.125\"", "poor_fit_arch = \"vgg16-bn@0.125\"")
        .replace("tcs = [0, 3]", "tcs = [3]")
        .replace("kinds = [\"simple\", \"underfit\", \"overfit\"]", "kinds = [\"simple\", \"overfit\"]");
    assert!(text.contains("mobilenetv2@0.25") && text.contains("resnet18") && text.contains("vgg16-bn"));
    let config = ExperimentConfig::from_toml(&text, Path::new("families.toml")).unwrap();
    let engine = select(EngineChoice::Auto, &common::compute()).unwrap().engine;
    let tmp = tempfile::tempdir().unwrap();
    let reports = run(Rq::Rq2, &config, tmp.path(), &common::compute(), engine.as_ref(), &launch(), None, &Silent)
        .unwrap()
        .unwrap();
    let r1 = &reports.rq1[0];
    assert!(r1.module_kernels < r1.model_kernels as f64, "{r1:?}");
    assert_eq!(reports.rq2.len(), 2 * 2, "2 kinds x 2 rules");
    // A saved module keeps the strong model's depthwise convolutions depthwise at their kept
    // width (groups = kernels, 1 included).
    use cnnsplitter::model::description::LayerKind;
    let conv = |l: &cnnsplitter::model::description::Layer| match l.kind {
        LayerKind::Conv2d { out_channels, groups, .. } => Some((out_channels, groups)),
        _ => None,
    };
    let strong = cnnsplitter::Model::load(&tmp.path().join("strong/Tiny")).unwrap();
    let module = cnnsplitter::Model::load(&tmp.path().join("modules/Tiny/modules/class_03")).unwrap();
    let depthwise: Vec<&str> = strong
        .description
        .layers
        .iter()
        .filter(|l| conv(l).is_some_and(|(_, g)| g > 1))
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(depthwise.len(), 17, "MobileNetV2 has 17 depthwise convolutions");
    for name in depthwise {
        let l = &module.description.layers[module.description.layer_index(name).unwrap()];
        let (out, groups) = conv(l).unwrap();
        assert_eq!(groups, out, "{name}");
    }
    assert!(tmp.path().join("patched/Tiny/tc3/overfit/calibrated/report.json").is_file());
}
