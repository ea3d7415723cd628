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
        let s = |p: Phase| self.nanos[p as usize].load(Ordering::Relaxed) as f64 / 1e9;
        PhaseSeconds {
            decode: s(Phase::Decode),
            export: s(Phase::Export),
            session: s(Phase::Session),
            forward: s(Phase::Forward),
            composition: s(Phase::Composition),
        }
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
    /// The five values in phase order.
    pub fn values(&self) -> [f64; PHASES] {
        [self.decode, self.export, self.session, self.forward, self.composition]
    }

    /// `self − earlier`, phase by phase (the time between two readings).
    pub fn since(&self, earlier: &PhaseSeconds) -> PhaseSeconds {
        let [a, b, c, d, e] = self.values();
        let [a0, b0, c0, d0, e0] = earlier.values();
        PhaseSeconds { decode: a - a0, export: b - b0, session: c - c0, forward: d - d0, composition: e - e0 }
    }

    /// `self + other`, phase by phase.
    pub fn plus(&self, other: &PhaseSeconds) -> PhaseSeconds {
        let [a, b, c, d, e] = self.values();
        let [a1, b1, c1, d1, e1] = other.values();
        PhaseSeconds { decode: a + a1, export: b + b1, session: c + c1, forward: d + d1, composition: e + e1 }
    }

    /// Each phase's share of their sum (all 0 when nothing was timed).
    pub fn shares(&self) -> PhaseSeconds {
        let total: f64 = self.values().iter().sum();
        let f = |v: f64| if total > 0.0 { v / total } else { 0.0 };
        PhaseSeconds {
            decode: f(self.decode),
            export: f(self.export),
            session: f(self.session),
            forward: f(self.forward),
            composition: f(self.composition),
        }
    }
}
