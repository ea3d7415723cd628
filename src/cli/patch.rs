//! `cnnsplitter patch`: patch a weak model's target class with a strong model's module.

use cnnsplitter::Compute;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cnnsplitter::data::presets::DataSelection;
use cnnsplitter::engine::EngineChoice;
use cnnsplitter::patch::metrics::TcMetrics;
use cnnsplitter::patch::{PatchReport, PatchRequest, Rule, RuleKind, patch};

use super::data::LimitArgs;

#[derive(Args)]
pub struct PatchArgs {
    /// The weak model folder (a training run or model folder).
    #[arg(long)]
    weak: PathBuf,
    /// The strong model's module for the target class (e.g. MODULES/modules/class_03).
    #[arg(long)]
    module: PathBuf,
    /// Target class as WEAK_INDEX=STRONG_INDEX: its output index in the weak model and in the
    /// module (e.g. 4=3 for MNIST-W(3), where digit 3 is label 4, patched from MNIST-S).
    #[arg(long, value_name = "W=S", value_parser = parse_mapping)]
    tc: (usize, usize),
    /// The weak model's dataset: a preset (e.g. mnist-w, svhn-w, cifar10-w, synthetic-w) or a
    /// .toml mix. Calibration uses its training split, the report its test split.
    #[arg(long)]
    dataset: String,
    /// Target class of a weak mix (the `--tc K` of `train`); default: the strong index.
    #[arg(long, value_name = "K")]
    mix_tc: Option<usize>,
    /// Folder holding the source datasets (default: $CNNSPLITTER_DATA_DIR, else ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The same image limits the weak model was trained with (the paper's rule calibrates on the
    /// training split's TC images; the calibrated rule and the gate use the validation split).
    #[command(flatten)]
    limits: LimitArgs,
    /// calibrated (default): a logistic model over the weak model's log-softmax and the module's
    /// TC logit, fitted on the validation split, threshold chosen there for overall accuracy.
    /// paper: the module's TC logit, min-max calibrated on the TC's training images, replaces
    /// the weak model's TC probability.
    #[arg(long, value_parser = super::choice::<RuleKind>(), default_value = "calibrated")]
    rule: RuleKind,
    /// Apply the rule even when the gate is closed (the gate, decided on the validation split,
    /// is still reported). Without it, a closed gate keeps the weak model's predictions.
    #[arg(long)]
    ungated: bool,
    /// The strong model the module was cut from, for the AUROC of its TC logit (default: the
    /// model named by the module's modularization folder, when it is there).
    #[arg(long, value_name = "DIR")]
    strong: Option<PathBuf>,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
    /// Folder for the patched model (runnable by `eval`) and report.json; must not exist (see
    /// --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists (it is deleted before patching starts).
    #[arg(long)]
    force: bool,
}

fn parse_mapping(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('=').and_then(|(w, s)| Some((w.trim().parse().ok()?, s.trim().parse().ok()?)));
    parsed.ok_or_else(|| format!("`{text}` is not WEAK_INDEX=STRONG_INDEX, e.g. 4=3"))
}

pub fn run(args: PatchArgs, compute: &Compute) -> Result<()> {
    let mut inputs = vec![args.weak.as_path(), args.module.as_path()];
    inputs.extend(args.strong.as_deref());
    inputs.extend(super::data::dataset_file(&args.dataset));
    let out = super::NewOutput::check_apart(&args.out, args.force, "--out", &inputs)?;
    let (tc_weak, tc_strong) = args.tc;
    let mut selection = DataSelection {
        dataset: args.dataset.clone(),
        tc: args.mix_tc,
        data_dir: args.data_dir.clone(),
        limits: args.limits.limits(),
    };
    if selection.tc.is_none() && selection.spec()?.needs_tc() {
        selection.tc = Some(tc_strong);
    }
    let data = selection.load()?;
    let engine = super::engine(args.engine, compute)?;
    out.clear()?;
    let request = PatchRequest {
        weak: &args.weak,
        module: &args.module,
        strong: args.strong.as_deref(),
        tc_weak,
        tc_strong,
        rule: args.rule,
        ungated: args.ungated,
    };
    let r = patch(&request, &data, engine.as_ref(), &args.out)?;
    print_report(&r);
    println!("patched model and report.json in {}", args.out.display());
    Ok(())
}

/// Prints what the rule was fitted on, the gate's decision and the test metrics.
fn print_report(r: &PatchReport) {
    match &r.spec.rule {
        Rule::Paper(c) => println!(
            "paper rule: module TC logit range {:.3} .. {:.3} over {} training images of the TC",
            c.min, c.max, r.calibration_images
        ),
        Rule::Calibrated(c) => println!(
            "calibrated rule: fitted on {} validation images (threshold {:.3} on the logistic score)",
            c.fit_images, c.threshold
        ),
    }
    let gate = &r.spec.gate;
    println!("gate {}", gate.reason);
    if !gate.open && r.spec.applied {
        println!("applied anyway (--ungated)");
    }
    println!("test split of {}: {} images", r.dataset, r.test_images);
    println!("{:<9} {:>9} {:>9} {:>9} {:>11} {:>9}", "model", "precision", "recall", "f1", "non-TC acc", "accuracy");
    let line = |name: &str, m: &TcMetrics, acc: f64| {
        println!(
            "{name:<9} {:>9.4} {:>9.4} {:>9.4} {:>11.4} {:>9.4}",
            m.precision, m.recall, m.f1, m.non_tc_accuracy, acc
        )
    };
    line("weak", &r.weak, r.accuracy.weak);
    line(if r.spec.applied { "patched" } else { "rule" }, &r.ungated, r.accuracy.ungated);
    let d = &r.diagnostics;
    println!(
        "the rule against the weak model: fixes {} TC + {} non-TC, regressions {} TC + {} non-TC; \
         F1 change 95% interval [{:+.2}, {:+.2}] points",
        d.fixes.tc,
        d.fixes.non_tc,
        d.regressions.tc,
        d.regressions.non_tc,
        100.0 * d.change_intervals.f1[0],
        100.0 * d.change_intervals.f1[1]
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    println!(
        "TC score AUROC on test: weak model {}, module {}, strong model {}",
        fmt(r.auroc.weak),
        fmt(r.auroc.module),
        fmt(r.auroc.strong)
    );
    if !r.spec.applied {
        println!("the patched folder predicts exactly as the weak model (gate closed)");
    }
}
