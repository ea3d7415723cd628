//! `cnnsplitter train`, `eval` and `pick`.

use cnnsplitter::Compute;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use cnnsplitter::choice::Choice;
use cnnsplitter::data::mix::Split;
use cnnsplitter::engine::EngineChoice;
use cnnsplitter::eval::metrics::{Metrics, argmax_rows};
use cnnsplitter::patch::Classifier;
use cnnsplitter::train::config::{Overrides, Recipe, TrainConfig};
use cnnsplitter::train::pick::{Fit, pick};
use cnnsplitter::train::trainer::{self, TrainReport};

use super::data::DataArgs;
use super::progress_bar::Bars;

#[derive(Args)]
pub struct TrainArgs {
    /// Architecture (e.g. simcnn@0.25, rescnn, simcnn-weak); the input shape and class count
    /// come from the data.
    #[arg(long, required_unless_present = "resume")]
    arch: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// strong: Nesterov SGD, wd 1e-4, LR x0.1 at 30%/60% of the epochs, augmentation, best-val
    /// model. simple: SGD momentum 0.9, wd 1e-4, constant LR, augmentation (for weak nets).
    /// poor-fit: no dropout, plain SGD, no wd, no augmentation, keeps epochs for `pick`.
    #[arg(long, value_parser = super::choice::<Recipe>(), default_value = "strong")]
    recipe: Recipe,
    /// Epochs (default: strong 200, simple 100, poor-fit 100).
    #[arg(long)]
    epochs: Option<usize>,
    /// Initial learning rate (default: 0.01; 0.1 for residual nets with the strong recipe).
    #[arg(long)]
    lr: Option<f64>,
    /// Batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Seed of weights, data order, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run folder to write (model, train.jsonl, report.json, checkpoints); must not exist (see
    /// --force).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Replace --out if it exists (it is deleted first).
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Engine of the final evaluation: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
    /// Stop after this many epochs of this session (continue later with --resume).
    #[arg(long, value_name = "N")]
    stop_after: Option<usize>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["arch", "out"])]
    resume: Option<PathBuf>,
}

pub fn train(args: TrainArgs, compute: &Compute) -> Result<()> {
    let bars = Bars::default();
    let (report, dir): (Option<TrainReport>, PathBuf) = match (args.resume, args.arch, args.out) {
        (Some(dir), _, _) => {
            let engine = super::engine(args.engine, compute)?;
            (trainer::resume(&dir, compute, args.stop_after, engine.as_ref(), &bars)?, dir)
        }
        (None, Some(arch), Some(out)) => {
            let inputs: Vec<&std::path::Path> = args.data.dataset_file().into_iter().collect();
            let output = super::NewOutput::check_apart(&out, args.force, "--out", &inputs)?;
            let overrides = Overrides { epochs: args.epochs, lr: args.lr, batch: args.batch };
            let config =
                TrainConfig::new(&arch, args.recipe, &args.data.selection(), &overrides, args.seed, compute.threads())?;
            let engine = super::engine(args.engine, compute)?;
            output.clear()?;
            (trainer::start(config, &out, args.stop_after, compute, engine.as_ref(), &bars)?, out)
        }
        _ => bail!("give --arch and --out for a new run, or --resume RUN_DIR"),
    };
    let Some(report) = report else {
        println!("stopped as asked; continue with: cnnsplitter train --resume {}", dir.display());
        return Ok(());
    };
    println!(
        "{} on {}: best epoch {} of {}; accuracy train {:.4}, validation {:.4}, test {:.4} ({:.0} s of training)",
        report.arch,
        report.dataset,
        report.best_epoch,
        report.epochs,
        report.train_accuracy,
        report.validation_accuracy,
        report.test_accuracy,
        report.train_seconds
    );
    println!("model and report in {}", dir.display());
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// A model folder (a run folder, a module, a patched model).
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Split to evaluate.
    #[arg(long, value_parser = super::choice::<Split>(), default_value = "test")]
    split: Split,
    /// Print one JSON object (accuracy, per_class, confusion).
    #[arg(long)]
    json: bool,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
}

pub fn eval(args: EvalArgs, compute: &Compute) -> Result<()> {
    let model = Classifier::load(&args.model)?;
    let data = args.data.selection().load()?;
    if data.classes() != model.classes() {
        bail!(
            "model {} has {} classes, but dataset {} has {}",
            args.model.display(),
            model.classes(),
            data.name,
            data.classes()
        );
    }
    let set = data.split(args.split);
    let engine = super::engine(args.engine, compute)?;
    let scores = model.scores(engine.as_ref(), set, &data.normalization)?;
    let m = Metrics::new(&set.labels, &argmax_rows(&scores, model.classes()), &data.class_names);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} split, {} images): accuracy {:.4}",
        args.model.display(),
        data.name,
        args.split.name(),
        m.count,
        m.accuracy
    );
    println!("{:<16} {:>9} {:>9} {:>9} {:>8}", "class", "precision", "recall", "f1", "support");
    for c in &m.per_class {
        println!(
            "{:<16} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            format!("{} {}", c.class, c.name),
            c.precision,
            c.recall,
            c.f1,
            c.support
        );
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    for row in &m.confusion {
        println!("  {}", row.iter().map(|v| format!("{v:>5}")).collect::<String>());
    }
    Ok(())
}

#[derive(Args)]
pub struct PickArgs {
    /// A run trained with --recipe poor-fit.
    run: PathBuf,
    /// The best-validation epoch's model.
    #[arg(long, conflicts_with = "underfit", required_unless_present = "underfit")]
    overfit: bool,
    /// The model of half the best-validation epoch.
    #[arg(long)]
    underfit: bool,
    /// Model folder to write; must not exist (see --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists (it is deleted first).
    #[arg(long)]
    force: bool,
}

pub fn pick_cmd(args: PickArgs) -> Result<()> {
    let fit = if args.overfit { Fit::Overfit } else { Fit::Underfit };
    let out = super::NewOutput::check_apart(&args.out, args.force, "--out", &[&args.run])?;
    out.clear()?;
    let p = pick(&args.run, fit, &args.out)?;
    println!(
        "picked the {} model: epoch {} (best validation epoch {}), train accuracy {:.4}, validation accuracy {:.4}; written to {}",
        if args.overfit { "overfitting" } else { "underfitting" },
        p.epoch,
        p.best_epoch,
        p.train_accuracy,
        p.validation_accuracy,
        args.out.display()
    );
    Ok(())
}
