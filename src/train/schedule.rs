//! Learning-rate schedules: a step schedule (×`gamma` at each milestone epoch), as PyTorch's
//! `MultiStepLR` with epochs counted from 0.

use serde::{Deserialize, Serialize};

/// Learning rate `base · gamma^k` where `k` is the number of milestones `m` with `m <= epoch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSchedule {
    /// Learning rate of the first epoch.
    pub base: f64,
    /// Epochs (0-based) from which the rate is multiplied by `gamma` once more.
    pub milestones: Vec<usize>,
    /// Factor applied at each milestone.
    pub gamma: f64,
}

impl StepSchedule {
    /// A constant learning rate.
    pub fn constant(base: f64) -> Self {
        StepSchedule { base, milestones: Vec::new(), gamma: 1.0 }
    }

    /// The paper's strong schedule: ×0.1 at 30% and 60% of `epochs` (60 and 120 of 200).
    pub fn paper(base: f64, epochs: usize) -> Self {
        let at = |share: f64| (epochs as f64 * share).round() as usize;
        StepSchedule { base, milestones: vec![at(0.3), at(0.6)], gamma: 0.1 }
    }

    /// The learning rate during `epoch` (0-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        let k = self.milestones.iter().filter(|&&m| m <= epoch).count();
        self.base * self.gamma.powi(k as i32)
    }
}
