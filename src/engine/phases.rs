//! Where the time of module runs goes: seconds per phase, summed over the threads that run
//! modules at once (so the sum can exceed wall time when modules run in parallel).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A phase of running a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Removing kernels: the module's description and weights from keep-masks.
    Decode,
    /// Turning the module into the engine's input (ONNX bytes for ONNX Runtime).
    Export,
    /// Building the runnable form (an ONNX Runtime session, a burn network).
    Session,
    /// Forward passes over the images.
    Forward,
    /// The search's own work on the logits (composition pruning, fitness, next populations).
    Composition,
}

const PHASES: usize = 5;

/// Nanoseconds spent per [`Phase`], safe to add to from several threads.
#[derive(Debug, Default)]
pub struct PhaseClock {
    nanos: [AtomicU64; PHASES],
}

impl PhaseClock {
    /// Runs `f` and adds its wall time to `phase`.
    pub fn time<T>(&self, phase: Phase, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.add(phase, started.elapsed());
        out
    }

    /// Adds `elapsed` to `phase`.
    pub fn add(&self, phase: Phase, elapsed: std::time::Duration) {
        self.nanos[phase as usize].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Seconds per phase so far.
    pub fn seconds(&self) -> PhaseSeconds {
        PhaseSeconds::from_values(std::array::from_fn(|p| self.nanos[p].load(Ordering::Relaxed) as f64 / 1e9))
    }
}

/// Seconds per [`Phase`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// [`Phase::Decode`].
    pub decode: f64,
    /// [`Phase::Export`].
    pub export: f64,
    /// [`Phase::Session`].
    pub session: f64,
    /// [`Phase::Forward`].
    pub forward: f64,
    /// [`Phase::Composition`].
    pub composition: f64,
}

impl PhaseSeconds {
    /// The five values in [`Phase`] order.
    pub fn values(&self) -> [f64; PHASES] {
        [self.decode, self.export, self.session, self.forward, self.composition]
    }

    /// The seconds of five values in [`Phase`] order.
    pub fn from_values([decode, export, session, forward, composition]: [f64; PHASES]) -> Self {
        PhaseSeconds { decode, export, session, forward, composition }
    }

    /// `f` of the two readings' values, phase by phase.
    fn zip(&self, other: &PhaseSeconds, f: impl Fn(f64, f64) -> f64) -> PhaseSeconds {
        let (a, b) = (self.values(), other.values());
        PhaseSeconds::from_values(std::array::from_fn(|p| f(a[p], b[p])))
    }

    /// `self − earlier`, phase by phase (the time between two readings).
    pub fn since(&self, earlier: &PhaseSeconds) -> PhaseSeconds {
        self.zip(earlier, |a, b| a - b)
    }

    /// `self + other`, phase by phase.
    pub fn plus(&self, other: &PhaseSeconds) -> PhaseSeconds {
        self.zip(other, |a, b| a + b)
    }

    /// Each phase's share of their sum (all 0 when nothing was timed).
    pub fn shares(&self) -> PhaseSeconds {
        let total: f64 = self.values().iter().sum();
        self.zip(self, |v, _| if total > 0.0 { v / total } else { 0.0 })
    }
}
