//! The indicatif implementation of the library's progress trait.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use cnnsplitter::progress::Progress;

/// Shows one progress bar per stage on standard error.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, stage: &str, total: u64) {
        let bar = if total > 0 { ProgressBar::new(total) } else { ProgressBar::new_spinner() };
        let style = ProgressStyle::with_template("{msg:30} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> ");
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

    fn note(&self, message: &str) {
        match &*self.bar.lock().expect("progress lock") {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }
}
