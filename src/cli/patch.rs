//! `cnnsplitter patch`: patch a weak model's target class with a strong model's module.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use cnnsplitter::data::presets::DataSelection;
use cnnsplitter::engine::EngineChoice;
use cnnsplitter::patch::metrics::TcMetrics;
use cnnsplitter::patch::patch;

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
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineChoice,
    /// Folder for the patched model (runnable by `eval`) and report.json; must not exist.
    #[arg(long)]
    out: PathBuf,
}

fn parse_mapping(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('=').and_then(|(w, s)| Some((w.trim().parse().ok()?, s.trim().parse().ok()?)));
    parsed.ok_or_else(|| format!("`{text}` is not WEAK_INDEX=STRONG_INDEX, e.g. 4=3"))
}

pub fn run(args: PatchArgs, threads: usize) -> Result<()> {
    let (tc_weak, tc_strong) = args.tc;
    let mut selection =
        DataSelection { dataset: args.dataset.clone(), tc: args.mix_tc, data_dir: args.data_dir.clone() };
    if selection.tc.is_none() && selection.spec()?.needs_tc() {
        selection.tc = Some(tc_strong);
    }
    let data = selection.load()?;
    let engine = super::engine(args.engine, threads)?;
    if args.out.exists() {
        bail!("{} already exists: choose another --out or remove it", args.out.display());
    }
    let r = patch(&args.weak, &args.module, tc_weak, tc_strong, &data, engine.as_ref(), &args.out)?;
    println!(
        "calibrated on {} training images of class {} (module logit range {:.3} .. {:.3}); tested on {} images of {}",
        r.calibration_images, tc_weak, r.spec.calibration.min, r.spec.calibration.max, r.test_images, r.dataset
    );
    println!("{:<8} {:>9} {:>9} {:>9} {:>11}", "model", "precision", "recall", "f1", "non-TC acc");
    let line = |name: &str, m: &TcMetrics| {
        println!("{name:<8} {:>9.4} {:>9.4} {:>9.4} {:>11.4}", m.precision, m.recall, m.f1, m.non_tc_accuracy)
    };
    line("weak", &r.weak);
    line("patched", &r.patched);
    println!("patched model and report.json in {}", args.out.display());
    Ok(())
}
