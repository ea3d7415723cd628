//! The paper's rule: the module's TC logit, min-max calibrated on the TC's training images,
//! replaces the weak model's softmax probability of the TC.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The range of the module's TC logit over the TC's training images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Smallest TC logit.
    pub min: f32,
    /// Largest TC logit.
    pub max: f32,
}

impl Calibration {
    /// The range of `tc_logits`; an error when there are none or one is not finite.
    pub fn from_logits(tc_logits: &[f32]) -> Result<Self> {
        if tc_logits.is_empty() {
            return Err(Error::Invalid("no training images of the target class to calibrate the module on".into()));
        }
        if tc_logits.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numeric("the module gives a non-finite target-class logit".into()));
        }
        let min = tc_logits.iter().copied().fold(f32::INFINITY, f32::min);
        let max = tc_logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Ok(Calibration { min, max })
    }

    /// `(logit - min) / (max - min)`, not clipped (as the original code); when every
    /// calibration logit was the same (`max == min`) the range counts as 1.
    pub fn score(&self, logit: f32) -> f32 {
        (logit - self.min) / self.range()
    }

    /// `max − min`, or 1 when that is not positive.
    pub fn range(&self) -> f32 {
        let range = self.max - self.min;
        if range > 0.0 { range } else { 1.0 }
    }
}
