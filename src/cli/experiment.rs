//! `cnnsplitter experiment rq1|rq2|rq3 | plan | task | submit`: the paper's protocols end to
//! end from a TOML config, in this process or as a task graph on a cluster.

use cnnsplitter::Compute;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use cnnsplitter::engine::EngineChoice;
use cnnsplitter::experiment::config::ExperimentConfig;
use cnnsplitter::experiment::hq::{self, HqOptions, HqOutcome};
use cnnsplitter::experiment::report::Reports;
use cnnsplitter::experiment::slurm::{self, SlurmOptions};
use cnnsplitter::experiment::{Launch, Plan, Rq, TaskOutcome, prepare, run, run_task};

use super::progress_bar::Bars;

#[derive(Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    command: ExperimentCommand,
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// Modularize the strong models (Tables 1, 2), in this process.
    Rq1(RunArgs),
    /// Also train the weak models and patch them (Tables 3-6, with RQ1's tables), in this process.
    Rq2(RunArgs),
    /// Grouping x initialisation (Table 7), in this process.
    Rq3(RunArgs),
    /// Write the experiment's task graph (DIR/plan.json): one task per stage with its command,
    /// dependencies, done file and resource hint. Compute threads per task: the global --threads.
    Plan(PlanArgs),
    /// Run one task of a planned experiment (what a cluster job runs); returns at once when it
    /// is done, and refuses to start before its dependencies are done.
    Task(TaskArgs),
    /// Submit the planned tasks that are not done to HyperQueue (--hq) or write a Slurm script
    /// (--slurm); run again after failures to submit only what is left.
    Submit(SubmitArgs),
    /// Estimate the plan's wall time on K machines (one task at a time each) from per-task
    /// seconds: measured (DIR/tasks/*.json, written by every task that ran) or given (--times).
    Estimate(EstimateArgs),
}

#[derive(Args)]
struct EstimateArgs {
    /// Experiment folder (planned with `experiment plan`).
    #[arg(long)]
    out: PathBuf,
    /// Per-task seconds as JSON (`{"strong/ResCNN": 3600, ...}`, every task of the plan);
    /// default: the times measured in DIR/tasks/.
    #[arg(long, value_name = "FILE")]
    times: Option<PathBuf>,
    /// Machine counts to estimate, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    machines: Vec<usize>,
}

/// The experiment's config and folder.
#[derive(Args)]
struct ExperimentFiles {
    /// Experiment config (TOML): see experiments/*.toml (cifar10, svhn, mnist, synthetic, demo).
    #[arg(long)]
    config: PathBuf,
    /// Experiment folder. Run again with the same config and --out to continue a stopped
    /// experiment: finished stages are kept.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    files: ExperimentFiles,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
    /// Stop after starting this many stages, as if killed (to try resuming).
    #[arg(long, value_name = "N", hide = true)]
    stop_after: Option<usize>,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    files: ExperimentFiles,
    /// The research question to plan (rq2 includes rq1's stages).
    #[arg(long, value_parser = super::choice::<Rq>(), default_value = "rq2")]
    rq: Rq,
    /// Inference engine of every task: auto, burn or ort (auto decides on the machine that runs it).
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
    /// The cnnsplitter program the tasks run (default: this one); give the path every cluster
    /// node sees.
    #[arg(long, value_name = "PATH")]
    program: Option<PathBuf>,
}

#[derive(Args)]
struct TaskArgs {
    /// Experiment folder (planned with `experiment plan`).
    #[arg(long)]
    out: PathBuf,
    /// The task's id, as in plan.json (e.g. strong/ResCNN, patched/ResCNN/tc3/overfit/paper).
    #[arg(long)]
    id: String,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("engine").required(true).args(["hq", "slurm"]))]
struct SubmitArgs {
    /// Experiment folder (planned with `experiment plan`).
    #[arg(long)]
    out: PathBuf,
    /// Submit to HyperQueue as one job (through its Python API: `pip install hyperqueue`).
    #[arg(long)]
    hq: bool,
    /// Write DIR/submit.sh: one `sbatch` job per task, chained with --dependency=afterok.
    #[arg(long)]
    slurm: bool,
    /// HyperQueue: the server's directory (default: HyperQueue's, ~/.hq-server).
    #[arg(long, value_name = "DIR", requires = "hq")]
    server_dir: Option<PathBuf>,
    /// HyperQueue: start a local server with K one-core workers, run the job, then stop it
    /// (implies --wait; plan with `--threads 1`).
    #[arg(long, value_name = "K", requires = "hq")]
    local_workers: Option<usize>,
    /// HyperQueue: follow the job to its end with a progress bar, and list failed tasks.
    #[arg(long, requires = "hq")]
    wait: bool,
    /// HyperQueue: the Python that has the `hyperqueue` package (default: $CNNSPLITTER_PYTHON,
    /// else python3).
    #[arg(long, value_name = "PATH", requires = "hq")]
    python: Option<PathBuf>,
    /// Slurm: --partition of every job.
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// Slurm: --account of every job.
    #[arg(long, requires = "slurm")]
    account: Option<String>,
    /// Slurm: --time (wall-time limit) of every job, e.g. 24:00:00.
    #[arg(long, requires = "slurm")]
    time: Option<String>,
    /// Slurm: a further sbatch argument for every job (repeatable), e.g. --sbatch-arg=--qos=long.
    #[arg(long, value_name = "ARG", requires = "slurm", allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
}

impl ExperimentArgs {
    /// Whether the command only plans (its threads are those of tasks run elsewhere).
    pub fn plans_only(&self) -> bool {
        matches!(self.command, ExperimentCommand::Plan(_))
    }
}

pub fn run_cmd(args: ExperimentArgs, compute: &Compute) -> Result<()> {
    match args.command {
        ExperimentCommand::Rq1(a) => run_in_process(Rq::Rq1, a, compute),
        ExperimentCommand::Rq2(a) => run_in_process(Rq::Rq2, a, compute),
        ExperimentCommand::Rq3(a) => run_in_process(Rq::Rq3, a, compute),
        ExperimentCommand::Plan(a) => plan(a, compute),
        ExperimentCommand::Task(a) => task(a, compute),
        ExperimentCommand::Submit(a) => submit(a),
        ExperimentCommand::Estimate(a) => estimate(a),
    }
}

/// How tasks start: this program (or `program`), `threads` threads, `engine`.
pub fn launch(program: Option<PathBuf>, threads: usize, engine: EngineChoice) -> Result<Launch> {
    let program = match program {
        Some(p) => std::path::absolute(&p).with_context(|| format!("--program {}", p.display()))?,
        None => std::env::current_exe().context("cannot tell where this program is; give --program")?,
    };
    Ok(Launch { program, threads, engine })
}

fn run_in_process(rq: Rq, args: RunArgs, compute: &Compute) -> Result<()> {
    let config = ExperimentConfig::load(&args.files.config)?;
    let engine = super::engine(args.engine, compute)?;
    let bars = Bars::default();
    let launch = launch(None, compute.threads(), args.engine)?;
    match run(rq, &config, &args.files.out, compute, engine.as_ref(), &launch, args.stop_after, &bars)? {
        None => println!(
            "stopped as asked; continue with the same command (finished stages in {} are kept)",
            args.files.out.display()
        ),
        Some(reports) => print_reports(&reports, &args.files.out),
    }
    Ok(())
}

fn plan(args: PlanArgs, compute: &Compute) -> Result<()> {
    let config = ExperimentConfig::load(&args.files.config)?;
    let launch = launch(args.program, compute.threads(), args.engine)?;
    let threads = compute.threads();
    if !launch.program.is_file() {
        eprintln!(
            "note: --program {} is not a file on this machine; the tasks will run it as given",
            launch.program.display()
        );
    }
    let plan = prepare(args.rq, &config, &args.files.out, &launch, &super::progress_bar::Bars::default())?;
    let pending = plan.pending().len();
    println!(
        "planned {} tasks ({pending} not done; the longest dependency chain has {} tasks), each on {} compute threads: {}",
        plan.tasks.len(),
        plan.critical_path_tasks(),
        threads,
        plan.dir.join(cnnsplitter::experiment::plan::PLAN_FILE).display()
    );
    let out = plan.dir.display();
    println!("run them with one of:");
    println!("  cnnsplitter experiment submit --out {out} --hq --wait          (a running HyperQueue server)");
    println!("  cnnsplitter experiment submit --out {out} --hq --local-workers 2  (a local one, one-core workers)");
    println!("  cnnsplitter experiment submit --out {out} --slurm             (writes submit.sh for sbatch)");
    println!(
        "  cnnsplitter --threads {threads} experiment {} --config {} --out {out}  (in this process)",
        cnnsplitter::choice::Choice::name(args.rq),
        args.files.config.display()
    );
    Ok(())
}

fn task(args: TaskArgs, compute: &Compute) -> Result<()> {
    let engine = super::engine(args.engine, compute)?;
    let bars = Bars::default();
    match run_task(&args.out, &args.id, compute, engine.as_ref(), &bars)? {
        TaskOutcome::AlreadyDone => println!("task {} is done already; nothing to do", args.id),
        TaskOutcome::Ran => println!("task {} done", args.id),
    }
    Ok(())
}

fn submit(args: SubmitArgs) -> Result<()> {
    let plan = Plan::load(&args.out)?;
    if args.slurm {
        let options =
            SlurmOptions { partition: args.partition, account: args.account, time: args.time, extra: args.sbatch_arg };
        let script = slurm::write_script(&plan, &options)?;
        println!(
            "wrote {} ({} jobs; {} tasks are done and left out); submit them with: sh {}",
            script.path.display(),
            script.jobs,
            script.done,
            script.path.display()
        );
        return Ok(());
    }
    let python = args
        .python
        .or_else(|| std::env::var_os("CNNSPLITTER_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let options = HqOptions { python, server_dir: args.server_dir, local_workers: args.local_workers, wait: args.wait };
    let bars = Bars::default();
    match hq::submit(&plan, &options, &bars)? {
        HqOutcome::NothingToDo => println!("every task of {} is done; nothing submitted", plan.dir.display()),
        HqOutcome::Submitted { job, tasks } => {
            println!("submitted HyperQueue job {job} ({tasks} tasks); follow it with: hq job progress {job}")
        }
        HqOutcome::Finished { job, tasks, failed } => {
            if failed.is_empty() {
                println!("HyperQueue job {job}: all {tasks} tasks finished");
                print_written_reports(&plan.dir);
            } else {
                for f in &failed {
                    eprintln!(
                        "task {} failed: {}\n  logs: {} {}",
                        f.id,
                        f.error.trim(),
                        f.logs[0].display(),
                        f.logs[1].display()
                    );
                }
                bail!(
                    "HyperQueue job {job}: {} of {tasks} tasks failed (those depending on them did not run); \
                     fix the cause and submit again: only what is not done is submitted",
                    failed.len()
                );
            }
        }
    }
    Ok(())
}

fn estimate(args: EstimateArgs) -> Result<()> {
    use cnnsplitter::experiment::schedule::{critical_path_seconds, durations, list_schedule};
    if args.machines.contains(&0) {
        bail!("--machines: every count must be at least 1");
    }
    let plan = Plan::load(&args.out)?;
    let seconds: std::collections::HashMap<String, f64> = match &args.times {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON object of task ids and seconds", file.display()))?
        }
        None => cnnsplitter::experiment::measured_seconds(&plan)?,
    };
    let secs = durations(&plan, &seconds).map_err(|e| {
        anyhow::anyhow!(
            "{e}: run every task first (its time lands in {}/tasks), or give --times FILE",
            plan.dir.display()
        )
    })?;
    let total: f64 = secs.iter().sum();
    println!(
        "{} tasks, {} of work; critical path: {} tasks, {}",
        plan.tasks.len(),
        duration(total),
        plan.critical_path_tasks(),
        duration(critical_path_seconds(&plan, &secs))
    );
    println!("\n| machines | wall time | speed-up |\n|---:|---:|---:|");
    for k in args.machines {
        let e = list_schedule(&plan, &secs, k);
        let speed_up = if e.makespan > 0.0 { format!("{:.1}x", total / e.makespan) } else { "-".to_string() };
        println!("| {k} | {} | {speed_up} |", duration(e.makespan));
    }
    Ok(())
}

/// Seconds as `1.2 s`, `3.4 min`, `5.6 h` or `7.8 days`.
fn duration(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s if s < 3.0 * 86400.0 => format!("{:.1} h", s / 3600.0),
        s if s < 1e9 => format!("{:.1} days", s / 86400.0),
        s => format!("{:.3e} days", s / 86400.0),
    }
}

fn print_written_reports(dir: &Path) {
    println!("reports in {}", cnnsplitter::experiment::ExperimentDir::new(dir).reports().display());
}

/// Prints the tables that have rows, and where the files are.
pub fn print_reports(reports: &Reports, out: &Path) {
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
