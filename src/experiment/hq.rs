//! HyperQueue: submits every task of a plan that is not done as one HyperQueue job (its
//! dependencies and core requests included) through HyperQueue's Python API (the `hyperqueue`
//! package on PyPI), which works against a cluster's server and, with `--local-workers`, starts
//! a local server with one-core workers for the job's duration.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::experiment::plan::{Plan, Task};
use crate::files::{write_atomic, write_json};
use crate::progress::Progress;

/// The driver script, written to `DIR/hq/submit.py` and run with the chosen Python.
const DRIVER: &str = include_str!("hq_submit.py");

/// How to reach HyperQueue.
#[derive(Debug, Clone, PartialEq)]
pub struct HqOptions {
    /// The Python that has the `hyperqueue` package.
    pub python: PathBuf,
    /// The server's directory (default: HyperQueue's own, `~/.hq-server`).
    pub server_dir: Option<PathBuf>,
    /// Start a local server with this many one-core workers, run the job, and stop it.
    pub local_workers: Option<usize>,
    /// Follow the job until it ends (always with `local_workers`).
    pub wait: bool,
}

/// A task that failed in HyperQueue.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedTask {
    /// The plan's task id.
    pub id: String,
    /// HyperQueue's error message.
    pub error: String,
    /// The task's standard output and error logs.
    pub logs: [PathBuf; 2],
}

/// What [`submit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum HqOutcome {
    /// Every task is done already; nothing was submitted.
    NothingToDo,
    /// The job was submitted (and not followed).
    Submitted {
        /// HyperQueue's job id.
        job: u64,
        /// Its tasks.
        tasks: usize,
    },
    /// The job was followed to its end.
    Finished {
        /// HyperQueue's job id.
        job: u64,
        /// Its tasks.
        tasks: usize,
        /// The tasks that failed (those that depend on them were cancelled).
        failed: Vec<FailedTask>,
    },
}

/// One task of the job file the driver reads.
#[derive(Serialize)]
struct JobTask<'a> {
    id: &'a str,
    args: &'a [String],
    /// Indices into the job's tasks (pending dependencies only).
    deps: Vec<usize>,
    cpus: usize,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// A line the driver reports.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum DriverEvent {
    Missing { error: String, python: String },
    Submitted { job: u64, tasks: usize },
    Progress { finished: u64 },
    Failed { tasks: Vec<DriverFailure> },
    Finished,
}

#[derive(Deserialize)]
struct DriverFailure {
    index: usize,
    error: String,
}

/// Submits the tasks of `plan` that are not done as one HyperQueue job.
pub fn submit(plan: &Plan, options: &HqOptions, progress: &dyn Progress) -> Result<HqOutcome> {
    let pending = plan.pending();
    if pending.is_empty() {
        return Ok(HqOutcome::NothingToDo);
    }
    if options.local_workers == Some(0) {
        return Err(Error::Invalid("--local-workers must be at least 1".into()));
    }
    if options.local_workers.is_some()
        && let Some(t) = pending.iter().find(|t| t.resources.cores > 1)
    {
        return Err(Error::Invalid(format!(
            "task `{}` asks for {} cores, but --local-workers starts one-core workers: plan the experiment \
             with `cnnsplitter --threads 1 experiment plan ...`",
            t.id, t.resources.cores
        )));
    }
    let tasks: Vec<JobTask> = pending
        .iter()
        .zip(Plan::pending_deps(&pending))
        .map(|(t, deps)| JobTask {
            id: &t.id,
            args: &t.command,
            deps,
            cpus: t.resources.cores,
            stdout: plan.dir.join(&t.logs[0]),
            stderr: plan.dir.join(&t.logs[1]),
        })
        .collect();
    let hq = plan.dir.join("hq");
    let logs = plan.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let job_file = hq.join("job.json");
    let name = format!("cnnsplitter {}", plan.dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into()));
    write_json(&job_file, &serde_json::json!({ "name": name, "tasks": tasks }))?;
    let driver = hq.join("submit.py");
    write_atomic(&driver, DRIVER.as_bytes())?;
    run_driver(plan, &pending, options, &driver, &job_file, progress)
}

/// Runs the driver and follows its reports; `pending` are the job's tasks, in its order.
fn run_driver(
    plan: &Plan,
    pending: &[&Task],
    options: &HqOptions,
    driver: &Path,
    job: &Path,
    progress: &dyn Progress,
) -> Result<HqOutcome> {
    let log_path = plan.dir.join("hq").join("submit.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let mut command = Command::new(&options.python);
    command.arg(driver).arg(job);
    if let Some(dir) = &options.server_dir {
        command.arg("--server-dir").arg(dir);
    }
    if let Some(k) = options.local_workers {
        command.arg("--local-workers").arg(k.to_string());
    }
    if options.wait || options.local_workers.is_some() {
        command.arg("--wait");
    }
    // A local cluster puts its server folder (unless --server-dir) and its workers' sockets in
    // the temporary folder and leaves them there: give it one of ours, removed when it ends.
    let scratch = match options.local_workers {
        Some(_) => {
            let dir = tempfile::Builder::new()
                .prefix("cnnsplitter-hq-")
                .tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), e))?;
            command.env("TMPDIR", dir.path());
            Some(dir)
        }
        None => None,
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot run {} (--python): {e}", options.python.display())))?;
    let stdout = child.stdout.take().expect("piped");
    let (mut job_id, mut tasks, mut failed, mut finished) = (None, 0, Vec::new(), false);
    let mut shown = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| Error::io(driver, e))?;
        let Ok(event) = serde_json::from_str::<DriverEvent>(&line) else { continue };
        match event {
            DriverEvent::Missing { error, python } => {
                let _ = child.wait();
                return Err(Error::Invalid(format!(
                    "HyperQueue's Python package is missing from {python} ({error}): install it with \
                     `{python} -m pip install hyperqueue`, or name a Python that has it with --python"
                )));
            }
            DriverEvent::Submitted { job, tasks: n } => {
                job_id = Some(job);
                tasks = n;
                progress.note(&format!("submitted HyperQueue job {job} with {n} tasks"));
                progress.start("HyperQueue job", n as u64);
            }
            DriverEvent::Progress { finished: n, .. } => {
                if n > shown {
                    progress.advance(n - shown);
                    shown = n;
                }
            }
            DriverEvent::Failed { tasks: list } => {
                failed = list
                    .into_iter()
                    .filter_map(|f| {
                        pending.get(f.index).map(|t| FailedTask {
                            id: t.id.clone(),
                            error: f.error,
                            logs: t.logs.clone().map(|l| plan.dir.join(l)),
                        })
                    })
                    .collect();
            }
            DriverEvent::Finished => finished = true,
        }
    }
    let status = child.wait().map_err(|e| Error::io(driver, e))?;
    drop(scratch);
    if job_id.is_some() && (finished || !options.wait) {
        progress.finish();
    }
    match job_id {
        Some(job) if status.success() && finished => Ok(HqOutcome::Finished { job, tasks, failed }),
        Some(job) if status.success() => Ok(HqOutcome::Submitted { job, tasks }),
        _ => {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            Err(Error::file(
                &log_path,
                format!("HyperQueue's submission failed ({status}); the end of its log:\n{}", tail.join("\n")),
            ))
        }
    }
}
