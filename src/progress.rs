//! Progress reporting: the library reports through this trait and never prints; the binary
//! shows progress bars and formats the [`Event`]s (and can log them as JSON Lines).

use serde::Serialize;

use crate::records::EpochRecord;
use crate::records::GenerationRecord;
use crate::records::Sensitivity;

/// Something that happened in long-running work, typed so a front end can show it or log it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A stage of an experiment begins (e.g. "training strong model ...").
    Stage {
        /// What the stage does.
        label: &'a str,
    },
    /// A training epoch finished.
    EpochDone {
        /// Epochs of the run.
        epochs: usize,
        /// The epoch's figures (as in `train.jsonl`).
        record: &'a EpochRecord,
    },
    /// A generation of the genetic search finished.
    GenerationDone {
        /// Generations at most.
        generations: usize,
        /// The generation's figures (as in `search/generations.jsonl`).
        record: &'a GenerationRecord,
    },
    /// The layer sensitivity table was measured.
    SensitivityTable {
        /// The table (as in `sensitivity.json`).
        table: &'a Sensitivity,
    },
    /// A note in words (e.g. a resumed run's thread count, an archive being unpacked).
    Note {
        /// The note.
        message: &'a str,
    },
}

/// Receives progress of long-running work.
pub trait Progress: Sync {
    /// A new stage begins with `total` steps (0 when unknown).
    fn start(&self, _stage: &str, _total: u64) {}
    /// `n` more steps of the current stage are done.
    fn advance(&self, _n: u64) {}
    /// A short status of the current stage (e.g. loss and accuracy so far).
    fn status(&self, _message: &str) {}
    /// The current stage is done.
    fn finish(&self) {}
    /// Something happened (see [`Event`]).
    fn event(&self, _event: &Event<'_>) {}
    /// A one-line note for the user: [`Event::Note`].
    fn note(&self, message: &str) {
        self.event(&Event::Note { message });
    }
}

/// Ignores all progress (for tests and library callers that do not care).
pub struct Silent;

impl Progress for Silent {}
