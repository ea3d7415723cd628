//! Progress reporting: the library reports through this trait and never prints; the binary
//! implements it with progress bars.

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
    /// A one-line note for the user (e.g. which engine was chosen).
    fn note(&self, _message: &str) {}
}

/// Ignores all progress (for tests and library callers that do not care).
pub struct Silent;

impl Progress for Silent {}
