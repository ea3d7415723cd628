//! Subcommands, one file each; `run` parses the arguments and dispatches.

mod bench;
mod data;
mod demo;
mod experiment;
mod export;
mod import;
mod init;
mod inspect;
mod modularize;
mod patch;
mod progress_bar;
mod train;

use anyhow::{Context, Result, bail};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use cnnsplitter::Compute;
use cnnsplitter::choice::Choice;
use cnnsplitter::error::printable_path;
use cnnsplitter::files::lock::OutputLock;

/// A value parser offering the values of a library [`Choice`] with their help.
pub fn choice<T: Choice + Clone>() -> impl TypedValueParser<Value = T> {
    let values = T::ALL.iter().map(|(_, name, help)| {
        let aliases = T::ALIASES.iter().filter(|(_, n)| n == name).map(|(alias, _)| *alias);
        PossibleValue::new(*name).help(*help).aliases(aliases)
    });
    PossibleValuesParser::new(values).map(|name| T::parse(&name).expect("clap offers only listed names"))
}

/// Split trained CNNs into per-class modules by removing convolution kernels, recompose them,
/// and patch weak models with them.
#[derive(Parser)]
#[command(name = "cnnsplitter", version, about, long_about = None)]
struct Cli {
    /// Compute threads (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// Also append every progress event (stages, epochs, generations, the sensitivity table,
    /// notes) to FILE as JSON Lines, each with `event` (its kind) and `at_s` (seconds since start).
    #[arg(long, global = true, value_name = "FILE")]
    log_json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The paper's RQ1 and RQ2 end to end on built-in synthetic data: train, modularize, patch.
    Demo(demo::DemoArgs),
    /// Create a model folder with freshly initialised weights for an architecture.
    Init(init::InitArgs),
    /// Bring in a model: a PyTorch state_dict (safetensors) for a named architecture, or any
    /// supported network as an ONNX file (checked against the file).
    Import(import::ImportArgs),
    /// Print a model's layers with kernels, parameters and multiply-accumulates.
    Inspect(inspect::InspectArgs),
    /// Train a model with one of the paper's recipes (strong, simple, poor-fit); resumable.
    Train(train::TrainArgs),
    /// Accuracy, per-class precision / recall / F1 and the confusion matrix of a model on a split.
    Eval(train::EvalArgs),
    /// Pick the overfitting or underfitting model from a poor-fit run.
    Pick(train::PickArgs),
    /// Split a trained model into one module per class (kernel importance, layer sensitivity,
    /// genetic search with pruning-based evaluation); resumable.
    Modularize(modularize::ModularizeArgs),
    /// Patch a weak model's target class with a strong model's module (no retraining), and
    /// report TC precision, recall, F1 and non-TC accuracy before and after.
    Patch(patch::PatchArgs),
    /// Run the paper's experiments (RQ1, RQ2, RQ3) end to end from a TOML config, in this process
    /// or as a task graph on HyperQueue or Slurm; resumable.
    Experiment(experiment::ExperimentArgs),
    /// Export a model folder (a model, a module) to ONNX.
    Export(export::ExportArgs),
    /// Fetch the published datasets and describe datasets and presets.
    Data(data::DataCommand),
    /// Measure inference speed (figures comparable with ../shared/bench/torch_reference.py).
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `experiment plan` only writes the threads into the tasks, which run on other machines.
    let plans_only = matches!(&cli.command, Command::Experiment(e) if e.plans_only());
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    if threads > 8 * cores && !plans_only {
        bail!("--threads must lie in 1..={} (8x this machine's {cores} cores); it is {threads}", 8 * cores);
    }
    if let Some(path) = &cli.log_json {
        progress_bar::log_events_to(path)?;
    }
    let pool = if plans_only { threads.min(cores) } else { threads };
    rayon::ThreadPoolBuilder::new().num_threads(pool).build_global().context("could not start the thread pool")?;
    // The one place the compute is chosen: burn's flex CPU backend.
    let compute = &Compute::new(burn::tensor::Device::flex(), threads);
    match cli.command {
        Command::Demo(args) => demo::run_demo(args, compute),
        Command::Init(args) => init::run(args),
        Command::Import(args) => import::run(args, compute),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args, compute),
        Command::Data(cmd) => data::run(cmd),
        Command::Export(args) => export::run(args),
        Command::Experiment(args) => experiment::run_cmd(args, compute),
        Command::Modularize(args) => modularize::run_cmd(args, compute),
        Command::Patch(args) => patch::run(args, compute),
        Command::Train(args) => train::train(args, compute),
        Command::Eval(args) => train::eval(args, compute),
        Command::Pick(args) => train::pick_cmd(args),
    }
}

/// An output a command is about to create, owned by this process from the check on
/// ([`OutputLock`]): refused when it overlaps an input, when another process is writing it, or
/// when something is already there unless `--force` was given. With `--force` the old output is
/// replaced: by [`NewOutput::clear`] right before a command that writes in place, or by
/// [`NewOutput::write_dir`] once the new folder is complete.
pub struct NewOutput<'a> {
    path: &'a std::path::Path,
    force: bool,
    _lock: OutputLock,
}

impl<'a> NewOutput<'a> {
    /// Checks `path` (`--out`, before any work), with no inputs to keep apart from it.
    pub fn check(path: &'a std::path::Path, force: bool) -> Result<Self> {
        Self::check_apart(path, force, "--out", &[])
    }

    /// Checks `path`, given with `flag`: it must neither be, lie inside nor contain any of
    /// `inputs`; then takes its lock, and refuses what is there unless `force`.
    pub fn check_apart(
        path: &'a std::path::Path,
        force: bool,
        flag: &str,
        inputs: &[&std::path::Path],
    ) -> Result<Self> {
        cnnsplitter::files::check_outside_inputs(flag, path, inputs)?;
        let lock = OutputLock::acquire(path)?;
        if let Some(dead) = lock.taken_over() {
            eprintln!("note: took over the lock of {}, which is no longer running", dead.describe());
        }
        if path.symlink_metadata().is_ok() && !force {
            let what = match cnnsplitter::folders::Artifact::open(path) {
                Ok(cnnsplitter::folders::Artifact::TrainingRun(_)) => {
                    "a training run; continue it with `train --resume`, or".to_string()
                }
                Ok(cnnsplitter::folders::Artifact::Modularization(_)) => {
                    "a modularization; continue it with `modularize --resume`, or".to_string()
                }
                Ok(a) => format!("a {} folder;", a.kind()),
                Err(_) if path.is_dir() => "a folder;".into(),
                Err(_) => "a file;".into(),
            };
            bail!(
                "{} already exists ({what} choose another output, or add --force to replace it)",
                printable_path(path)
            );
        }
        Ok(NewOutput { path, force, _lock: lock })
    }

    /// Removes the old output when `--force` was given (call right before a command that
    /// writes into the output as it goes).
    pub fn clear(&self) -> Result<()> {
        if self.force {
            cnnsplitter::files::remove_output(self.path)?;
        }
        Ok(())
    }

    /// Writes the output folder whole: `fill` writes a temporary sibling folder, which then
    /// replaces any old output; nothing is left behind when `fill` fails (a full disk).
    pub fn write_dir(&self, fill: impl FnOnce(&std::path::Path) -> cnnsplitter::Result<()>) -> Result<()> {
        Ok(cnnsplitter::files::replace_dir_atomic(self.path, fill)?)
    }
}

/// Parses an image shape written `CxHxW`, e.g. `3x32x32`.
pub fn parse_shape(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = text.split('x').collect();
    let dims: Option<Vec<usize>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
    match dims.as_deref() {
        Some(&[c, h, w]) if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
        _ => Err(format!("`{text}` is not an image shape; write CxHxW with positive numbers, e.g. 3x32x32")),
    }
}

/// The inference engine for `choice`; prints the fallback hint (one line) when there is one.
pub fn engine(
    choice: cnnsplitter::engine::EngineChoice,
    compute: &Compute,
) -> Result<Box<dyn cnnsplitter::engine::Engine>> {
    let selected = cnnsplitter::engine::select(choice, compute)?;
    if let Some(note) = selected.note {
        eprintln!("{note}");
    }
    Ok(selected.engine)
}
