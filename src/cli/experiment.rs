//! `cnnsplitter experiment rq1|rq2|rq3`: the paper's protocols end to end from a TOML config.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cnnsplitter::engine::EngineChoice;
use cnnsplitter::experiment::config::ExperimentConfig;
use cnnsplitter::experiment::report::Reports;
use cnnsplitter::experiment::{Rq, run};

use super::progress_bar::Bars;

#[derive(Args)]
pub struct ExperimentArgs {
    /// rq1: modularize the strong models (Tables 1, 2). rq2: also train the weak models and
    /// patch them (Tables 3-6, with RQ1's tables). rq3: grouping x initialisation (Table 7).
    #[arg(value_parser = super::choice::<Rq>())]
    rq: Rq,
    /// Experiment config (TOML): see experiments/*.toml (cifar10, svhn, mnist, synthetic, demo).
    #[arg(long)]
    config: PathBuf,
    /// Experiment folder. Run again with the same config and --out to continue a stopped
    /// experiment: finished stages are kept.
    #[arg(long)]
    out: PathBuf,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
    /// Stop after starting this many stages, as if killed (to try resuming).
    #[arg(long, value_name = "N", hide = true)]
    stop_after: Option<usize>,
}

pub fn run_cmd(args: ExperimentArgs, threads: usize) -> Result<()> {
    let config = ExperimentConfig::load(&args.config)?;
    let engine = super::engine(args.engine, threads)?;
    let bars = Bars::default();
    match run(args.rq, &config, &args.out, engine.as_ref(), args.stop_after, &bars)? {
        None => println!(
            "stopped as asked; continue with the same command (finished stages in {} are kept)",
            args.out.display()
        ),
        Some(reports) => print_reports(&reports, &args.out),
    }
    Ok(())
}

/// Prints the tables that have rows, and where the files are.
pub fn print_reports(reports: &Reports, out: &std::path::Path) {
    if !reports.rq1.is_empty() {
        println!("\n{}", reports.rq1_markdown());
    }
    if !reports.rq2.is_empty() {
        println!("\n{}", reports.rq2_markdown());
    }
    if !reports.rq3.is_empty() {
        println!("\n{}", reports.rq3_markdown());
    }
    println!(
        "reports (Markdown, JSON, CSV, plots) in {}",
        cnnsplitter::experiment::ExperimentDir::new(out).reports().display()
    );
}
