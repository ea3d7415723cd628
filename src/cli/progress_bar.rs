//! The indicatif implementation of the library's progress trait: one bar per stage (labelled
//! with the stage), the library's events formatted as lines, and, with `--log-json FILE`, every
//! event appended to FILE as one JSON object per line.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use cnnsplitter::progress::{Event, Progress};

/// The `--log-json` file, when one was given, and when logging began.
static LOG: OnceLock<(Mutex<File>, Instant)> = OnceLock::new();

/// Appends every event of this process to `path` as JSON Lines (`{"at_s": .., "event": .., ..}`).
pub fn log_events_to(path: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the event log {} (--log-json)", path.display()))?;
    let _ = LOG.set((Mutex::new(file), Instant::now()));
    Ok(())
}

fn log(event: &Event<'_>) {
    let Some((file, since)) = LOG.get() else { return };
    let mut value = serde_json::to_value(event).expect("events serialize");
    value["at_s"] = serde_json::json!(since.elapsed().as_secs_f64());
    let mut file = file.lock().expect("log lock");
    // A log that cannot be written must not stop the work; the bar still shows progress.
    let _ = writeln!(file, "{value}");
}

/// The lines an event shows as.
pub fn format(event: &Event<'_>) -> String {
    match event {
        Event::Stage { label } => format!("== {label}"),
        Event::EpochDone { epochs, record: r } => format!(
            "epoch {:>3}/{epochs}  lr {:.4}  loss {:.4}  train acc {:.4}  val acc {:.4}  {:.0} img/s  {:.1} s",
            r.epoch, r.lr, r.loss, r.train_accuracy, r.validation_accuracy, r.images_per_s, r.seconds
        ),
        Event::GenerationDone { generations, record: r } => format!(
            "generation {:>3}/{generations}  fitness {:.4}  acc {:.4}  diff {:.4}  kernels {:.0}  survivors {}  runs {}  cached {}  {:.1} s",
            r.generation + 1,
            r.best_fitness,
            r.accuracy,
            r.diff,
            r.kernels,
            r.survivors,
            r.forward_passes,
            r.cache_hits,
            r.seconds
        ),
        Event::SensitivityTable { table } => table.table(),
        Event::Note { message } => message.to_string(),
    }
}

/// Shows one progress bar per stage on standard error.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, stage: &str, total: u64) {
        let bar = if total > 0 { ProgressBar::new(total) } else { ProgressBar::new_spinner() };
        let template = if total > 0 {
            "{prefix:24} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}"
        } else {
            "{prefix:24} {spinner} {elapsed_precise} {msg}"
        };
        let style = ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &*self.bar.lock().expect("progress lock") {
            bar.inc(n);
        }
    }

    fn status(&self, message: &str) {
        if let Some(bar) = &*self.bar.lock().expect("progress lock") {
            bar.set_message(message.to_string());
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }

    fn event(&self, event: &Event<'_>) {
        log(event);
        let text = format(event);
        match &*self.bar.lock().expect("progress lock") {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}
