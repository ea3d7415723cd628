//! `cnnsplitter demo`: the paper's RQ1 and RQ2 end to end on the built-in synthetic data.

use cnnsplitter::Compute;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use cnnsplitter::engine::EngineChoice;
use cnnsplitter::experiment::config::ExperimentConfig;
use cnnsplitter::experiment::{Rq, run};

use super::experiment::print_reports;
use super::progress_bar::Bars;

const DEMO: &str = include_str!("../../experiments/demo.toml");
const DEMO_TINY: &str = include_str!("../../experiments/demo-tiny.toml");

#[derive(Args)]
pub struct DemoArgs {
    /// Experiment folder (run again to continue a stopped demo; finished stages are kept).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// The smallest configuration (every stage in well under a minute; numbers mean nothing).
    #[arg(long)]
    tiny: bool,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
}

pub fn run_demo(args: DemoArgs, compute: &Compute) -> Result<()> {
    let started = Instant::now();
    let (text, name) =
        if args.tiny { (DEMO_TINY, "experiments/demo-tiny.toml") } else { (DEMO, "experiments/demo.toml") };
    let config = ExperimentConfig::from_toml(text, Path::new(name))?;
    println!(
        "demo: trains a strong model on synthetic classes 0-4, splits it into one module per class, trains weak \
         models on classes 6-9 plus a target class (TC), and patches each weak model with the TC's module \
         (config: {name}; output: {})",
        args.out.display()
    );
    let engine = super::engine(args.engine, compute)?;
    let bars = Bars::default();
    let launch = super::experiment::launch(None, compute.threads(), args.engine)?;
    let reports = run(Rq::Rq2, &config, &args.out, compute, engine.as_ref(), &launch, None, &bars)?
        .expect("the demo runs without a stop");
    print_reports(&reports, &args.out);
    println!("demo finished in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
