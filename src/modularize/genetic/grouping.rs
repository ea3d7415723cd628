//! Kernel grouping (paper section 3.1) and the genome layout: one bit per kernel group.
//!
//! Each channel group of the model (a *segment*: one layer, or the layers a residual add pairs)
//! orders its kernels per class (by importance, at random, or — without grouping — by importance
//! with one bit per kernel) and cuts the order into contiguous groups: 10 groups below 256
//! kernels, else 100 (the threshold and counts are settings), with sizes differing by at most one.
//! A module's genome holds one bit per group: 1 keeps the group's kernels.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::decode::{Decoder, KeepMasks};
use crate::error::{Error, Result};
use crate::graph::channel_groups::ChannelGroups;
use crate::model::description::ModelDescription;
use crate::modularize::bitset::Bits;
use crate::modularize::importance::Importance;

/// How kernels are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupingKind {
    /// Contiguous groups of the importance order (the paper's).
    Importance,
    /// Contiguous groups of a random order (ablation).
    Random,
    /// One bit per kernel (ablation).
    None,
}

/// Grouping settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupingConfig {
    /// Kind of grouping.
    pub kind: GroupingKind,
    /// Segments with fewer kernels than this get `small_groups` groups, others `large_groups`.
    pub threshold: usize,
    /// Groups of a small segment.
    pub small_groups: usize,
    /// Groups of a large segment.
    pub large_groups: usize,
    /// Seed of the random grouping.
    pub seed: u64,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        GroupingConfig { kind: GroupingKind::Importance, threshold: 256, small_groups: 10, large_groups: 100, seed: 0 }
    }
}

impl GroupingConfig {
    /// Checks that the threshold and both group counts are at least 1.
    pub fn validate(&self) -> Result<()> {
        Error::check_at_least("group threshold", self.threshold, 1)?;
        Error::check_at_least("small_groups", self.small_groups, 1)?;
        Error::check_at_least("large_groups", self.large_groups, 1)
    }
}

/// One segment of the genome.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Kernels in the segment.
    pub width: usize,
    /// Producing convolutions (2 for a residual pair).
    pub producers: usize,
    /// First genome bit of the segment.
    pub offset: usize,
    /// Groups (bits) of the segment.
    pub groups: usize,
    /// `order[n]`: the segment's kernels for class n, in grouping order (group j holds positions
    /// `bounds(j)` of it); with importance grouping the most important come first.
    pub order: Vec<Vec<usize>>,
    /// `importance_order[n]`: kernels most important first (for sensitivity and empty segments).
    pub importance_order: Vec<Vec<usize>>,
}

impl Segment {
    /// Positions `start..end` of group `j` in `order`.
    pub fn bounds(&self, j: usize) -> std::ops::Range<usize> {
        (j * self.width / self.groups)..((j + 1) * self.width / self.groups)
    }
}

/// The genome layout of a model: its segments and their kernel groups per class.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Segments, in channel-group order.
    pub segments: Vec<Segment>,
    /// Genome length in bits.
    pub bits: usize,
    /// Length of a kernel set (Σ width × producers).
    pub kernel_slots: usize,
}

impl Layout {
    /// The layout for `desc` with `importance` and `config`.
    pub fn new(desc: &ModelDescription, importance: &Importance, config: &GroupingConfig) -> Self {
        let groups = ChannelGroups::derive(desc).expect("a valid description");
        let classes = desc.classes;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut offset = 0;
        let mut kernel_slots = 0;
        let segments = groups
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let width = group.width;
                let n_groups = match config.kind {
                    GroupingKind::None => width,
                    _ if width < config.threshold => config.small_groups.min(width).max(1),
                    _ => config.large_groups.min(width).max(1),
                };
                let importance_order: Vec<Vec<usize>> = (0..classes).map(|n| importance.order(g, n)).collect();
                let order = match config.kind {
                    GroupingKind::Importance | GroupingKind::None => importance_order.clone(),
                    GroupingKind::Random => (0..classes)
                        .map(|_| {
                            let mut o: Vec<usize> = (0..width).collect();
                            o.shuffle(&mut rng);
                            o
                        })
                        .collect(),
                };
                let s = Segment {
                    width,
                    producers: group.producers.len(),
                    offset,
                    groups: n_groups,
                    order,
                    importance_order,
                };
                offset += n_groups;
                kernel_slots += width * group.producers.len();
                s
            })
            .collect();
        Layout { segments, bits: offset, kernel_slots }
    }

    /// Class `n`'s genome as the checked keep-masks of `decoder`'s model (one per channel group).
    pub fn keep_masks(&self, decoder: &Decoder<'_>, n: usize, genome: &Bits) -> Result<KeepMasks> {
        decoder.keep_masks(self.masks(n, genome))
    }

    /// The keep-mask of every channel group for class `n`'s genome, unchecked (see
    /// [`Layout::keep_masks`]). A segment without any kept group keeps its most important
    /// kernel, so no layer is ever empty.
    pub(crate) fn masks(&self, n: usize, genome: &Bits) -> Vec<Vec<bool>> {
        self.segments
            .iter()
            .map(|s| {
                let mut mask = vec![false; s.width];
                for j in 0..s.groups {
                    if genome.get(s.offset + j) {
                        for &k in &s.order[n][s.bounds(j)] {
                            mask[k] = true;
                        }
                    }
                }
                if !mask.iter().any(|&k| k) {
                    mask[s.importance_order[n][0]] = true;
                }
                mask
            })
            .collect()
    }

    /// The set of kernels (layer, index) kept by class `n`'s genome; a paired segment counts
    /// once per producing layer.
    pub fn kernel_set(&self, n: usize, genome: &Bits) -> Bits {
        let mut set = Bits::zeros(self.kernel_slots);
        let mut base = 0;
        for (s, mask) in self.segments.iter().zip(self.masks(n, genome)) {
            for p in 0..s.producers {
                for (k, &keep) in mask.iter().enumerate() {
                    if keep {
                        set.set(base + p * s.width + k, true);
                    }
                }
            }
            base += s.width * s.producers;
        }
        set
    }

    /// A genome keeping everything.
    pub fn full(&self) -> Bits {
        let mut b = Bits::zeros(self.bits);
        for i in 0..self.bits {
            b.set(i, true);
        }
        b
    }
}

impl crate::choice::Choice for GroupingKind {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (GroupingKind::Importance, "importance", "contiguous groups of the importance order (the paper's)"),
        (GroupingKind::Random, "random", "contiguous groups of a random order (ablation)"),
        (GroupingKind::None, "none", "one bit per kernel (ablation)"),
    ];
}
