//! Slurm: a `submit.sh` that submits every task of a plan that is not done as one `sbatch` job,
//! chained by `--dependency=afterok:` and sized by the plan's resource hints.

use std::path::PathBuf;

use crate::error::Result;
use crate::experiment::plan::{Plan, Task};
use crate::files::write_atomic;

/// Site-specific `sbatch` settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--time` (a job's wall-time limit, e.g. `24:00:00`).
    pub time: Option<String>,
    /// Further `sbatch` arguments given to every job (e.g. `--qos=long`).
    pub extra: Vec<String>,
}

/// The script's file name in the experiment folder.
pub const SCRIPT_FILE: &str = "submit.sh";

/// What [`write_script`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The script's path.
    pub path: PathBuf,
    /// Jobs it submits.
    pub jobs: usize,
    /// Tasks left out because they are done.
    pub done: usize,
}

/// Writes `DIR/submit.sh` for the tasks of `plan` that are not done (replacing an earlier one:
/// it is derived from the plan and the done files alone).
pub fn write_script(plan: &Plan, options: &SlurmOptions) -> Result<Script> {
    let pending = plan.pending();
    let path = plan.dir.join(SCRIPT_FILE);
    write_atomic(&path, script(plan, &pending, options).as_bytes())?;
    set_executable(&path);
    Ok(Script { path, jobs: pending.len(), done: plan.tasks.len() - pending.len() })
}

#[cfg(unix)]
fn set_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
}

#[cfg(not(unix))]
fn set_executable(_: &std::path::Path) {}

/// The script: one `sbatch --parsable` per pending task, in plan order (every job after the jobs
/// it depends on), with `--dependency=afterok:` on the pending dependencies only.
fn script(plan: &Plan, pending: &[&Task], options: &SlurmOptions) -> String {
    // In comments, the folder with control characters escaped (a newline would end the comment);
    // in commands, every word quoted.
    let dir = crate::error::printable_path(&plan.dir);
    let mut s = format!(
        "#!/bin/sh\n\
         # Submits the {} tasks of the experiment in {dir} that were not done when this script was\n\
         # written ({} were), one Slurm job each, chained with --dependency=afterok.\n\
         # Written by `cnnsplitter experiment submit --slurm`; write it again after failures: it then\n\
         # submits only what is still not done.\n\
         set -eu\n\
         mkdir -p {}\n\
         submit() {{ id=$(sbatch --parsable \"$@\"); echo \"${{id%%;*}}\"; }}\n",
        pending.len(),
        plan.tasks.len() - pending.len(),
        quote(&plan.dir.join("logs").to_string_lossy()),
    );
    let mut site: Vec<String> = Vec::new();
    for (flag, value) in
        [("--partition", &options.partition), ("--account", &options.account), ("--time", &options.time)]
    {
        if let Some(v) = value {
            site.push(quote(&format!("{flag}={v}")));
        }
    }
    site.extend(options.extra.iter().map(|a| quote(a)));
    for (i, (t, deps)) in pending.iter().zip(Plan::pending_deps(pending)).enumerate() {
        let mut args = vec![
            quote(&format!("--job-name=cnnsplitter:{}", t.id)),
            format!("--cpus-per-task={}", t.resources.cores),
            format!("--mem={}M", t.resources.memory_mib),
            quote(&format!("--output={}", plan.dir.join(&t.logs[0]).to_string_lossy())),
            quote(&format!("--error={}", plan.dir.join(&t.logs[1]).to_string_lossy())),
        ];
        let deps: Vec<String> = deps.iter().map(|j| format!("$j{j}")).collect();
        if !deps.is_empty() {
            args.push(format!("--dependency=afterok:{}", deps.join(":")));
        }
        args.extend(site.iter().cloned());
        let command: Vec<String> = t.command.iter().map(|a| quote(a)).collect();
        args.push(format!("--wrap={}", quote(&command.join(" "))));
        s += &format!("# {}\nj{i}=$(submit {})\n", crate::error::printable(&t.id), args.join(" "));
    }
    let done = format!("submitted {} jobs; follow them with: squeue --me; logs in", pending.len());
    s += &format!("echo {} {}\n", quote(&done), quote(&plan.dir.join("logs").to_string_lossy()));
    s
}

/// `text` as one POSIX shell word (single-quoted unless it needs no quotes).
pub fn quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_round_trips_through_the_shell() {
        for text in ["plain", "with space", "it's", "$HOME", "a\"b", "", "x;rm -rf y"] {
            let out =
                std::process::Command::new("sh").arg("-c").arg(format!("printf %s {}", quote(text))).output().unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), text, "{}", quote(text));
        }
    }
}
