//! The genetic algorithm (paper sections 3.2 and 3.3.1): initial populations, fitness weights,
//! selection, crossover and mutation, in the two presets the project offers.

use rand::Rng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::modularize::bitset::Bits;
use crate::modularize::genetic::grouping::Layout;

/// A named set of GA settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// What produced the published numbers: truncation selection of 50, 20 elites, 80 children of
    /// rank-adjacent parents, 5% of positions reset to a random bit, the dynamic accuracy weight.
    ReferenceCode,
    /// The paper's text: 50 parents chosen in proportion to fitness, children of random parent
    /// pairs, each bit flipped with probability 0.1, fitness 0.9·Acc + 0.1·Diff.
    Paper,
}

/// How parents are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The `parents` fittest.
    Truncation,
    /// `parents` draws in proportion to fitness.
    Roulette,
}

/// How two parents are paired for a child.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pairing {
    /// Child k of parents k and k+1 in rank order.
    RankAdjacent,
    /// Two parents at random.
    Random,
}

/// How children mutate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mutation {
    /// This share of positions is set to a random bit.
    Reset {
        /// Share of positions.
        share: f64,
    },
    /// Each bit is flipped with this probability.
    Flip {
        /// Probability per bit.
        probability: f64,
    },
}

/// How a composed model is scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FitnessRule {
    /// `alpha·Acc + (1 − alpha)·Diff`.
    Fixed {
        /// Weight of the accuracy.
        alpha: f64,
    },
    /// `(0.9 + max(0, gamma − best Acc of the last generation))·Acc + diff_weight·Diff`.
    Dynamic {
        /// Target accuracy.
        gamma: f64,
        /// Weight of Diff.
        diff_weight: f64,
    },
}

impl FitnessRule {
    /// `(accuracy weight, diff weight)` given the last generation's best accuracy.
    pub fn weights(&self, last_best_accuracy: Option<f64>) -> (f64, f64) {
        match *self {
            FitnessRule::Fixed { alpha } => (alpha, 1.0 - alpha),
            FitnessRule::Dynamic { gamma, diff_weight } => {
                (0.9 + last_best_accuracy.map_or(0.0, |a| (gamma - a).max(0.0)), diff_weight)
            }
        }
    }
}

/// How the first population is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// Per segment, drop a share drawn from [0.1, 0.5] (sensitive) or [0.5, 0.9] (insensitive),
    /// keeping important groups more often.
    Sensitivity,
    /// Every bit a fair coin.
    Random,
    /// As `Sensitivity`, with individual `i` of `NI` dropping only `(NI − i) / NI` of the share
    /// drawn: a ladder from the paper's drops down to nearly the whole model, so the search has
    /// working modules to start from on networks where the paper's drops, compounded over many
    /// layers, leave every first module at chance (MobileNetV2).
    Graded,
}

/// Every setting of the genetic search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaConfig {
    /// The preset the settings started from.
    pub preset: Preset,
    /// Individuals per class (NI).
    pub population: usize,
    /// Parents per generation (NP).
    pub parents: usize,
    /// Individuals carried over unchanged (always including last generation's best combination).
    pub elites: usize,
    /// Parent selection.
    pub selection: Selection,
    /// Parent pairing.
    pub pairing: Pairing,
    /// Mutation.
    pub mutation: Mutation,
    /// Fitness of a composed model.
    pub fitness: FitnessRule,
    /// Initialisation.
    pub init: InitKind,
}

impl GaConfig {
    /// The settings of `preset`.
    pub fn preset(preset: Preset) -> Self {
        match preset {
            Preset::ReferenceCode => GaConfig {
                preset,
                population: 100,
                parents: 50,
                elites: 20,
                selection: Selection::Truncation,
                pairing: Pairing::RankAdjacent,
                mutation: Mutation::Reset { share: 0.05 },
                fitness: FitnessRule::Dynamic { gamma: 0.9, diff_weight: 0.1 },
                init: InitKind::Sensitivity,
            },
            Preset::Paper => GaConfig {
                preset,
                population: 100,
                parents: 50,
                elites: 1,
                selection: Selection::Roulette,
                pairing: Pairing::Random,
                mutation: Mutation::Flip { probability: 0.1 },
                fitness: FitnessRule::Fixed { alpha: 0.9 },
                init: InitKind::Sensitivity,
            },
        }
    }
}

impl GaConfig {
    /// The same settings for `population` individuals: parents and elites keep the preset's
    /// shares of the population (reference-code: 50% and 20%; paper: 50% and 1), with at least
    /// one parent and at least one child per generation.
    pub fn with_population(mut self, population: usize) -> Self {
        let base = GaConfig::preset(self.preset);
        let share = |v: usize| (v as f64 * population as f64 / base.population as f64).round() as usize;
        self.population = population;
        self.parents = share(base.parents).max(1);
        self.elites = if base.elites <= 1 { base.elites } else { share(base.elites) };
        self.elites = self.elites.min(population.saturating_sub(1));
        self
    }
}

impl GaConfig {
    /// Checks `population >= 2`, `1 <= parents <= population`, `elites <= population`, the
    /// mutation's share or probability and the fitness weights in [0, 1].
    pub fn validate(&self) -> Result<()> {
        Error::check_at_least("population", self.population, 2)?;
        Error::check_at_least("parents", self.parents, 1)?;
        if self.parents > self.population || self.elites > self.population {
            return Err(Error::Invalid(format!(
                "`parents` ({}) and `elites` ({}) must not exceed `population` ({})",
                self.parents, self.elites, self.population
            )));
        }
        match self.mutation {
            Mutation::Reset { share } => Error::check_range("reset share", share, 0.0, 1.0)?,
            Mutation::Flip { probability } => Error::check_range("flip probability", probability, 0.0, 1.0)?,
        }
        match self.fitness {
            FitnessRule::Fixed { alpha } => Error::check_range("alpha", alpha, 0.0, 1.0),
            FitnessRule::Dynamic { gamma, diff_weight } => {
                Error::check_range("gamma", gamma, 0.0, 1.0)?;
                Error::check_range("diff_weight", diff_weight, 0.0, 1.0)
            }
        }
    }
}

/// The first population of class `n`: `size` genomes.
pub fn initial_population(
    layout: &Layout,
    sensitive: &[bool],
    kind: InitKind,
    size: usize,
    rng: &mut impl Rng,
) -> Vec<Bits> {
    (0..size)
        .map(|i| {
            let strength = match kind {
                InitKind::Graded => (size - i) as f64 / size as f64,
                _ => 1.0,
            };
            let mut g = Bits::zeros(layout.bits);
            for (s, seg) in layout.segments.iter().enumerate() {
                match kind {
                    InitKind::Random => {
                        for j in 0..seg.groups {
                            g.set(seg.offset + j, rng.random::<bool>());
                        }
                    }
                    InitKind::Sensitivity | InitKind::Graded => {
                        let drop = if sensitive.get(s).copied().unwrap_or(true) {
                            rng.random_range(0.1..=0.5)
                        } else {
                            rng.random_range(0.5..=0.9)
                        } * strength;
                        let keep = ((seg.groups as f64 * (1.0 - drop)).round() as usize).clamp(1, seg.groups);
                        for j in weighted_sample(seg.groups, keep, rng) {
                            g.set(seg.offset + j, true);
                        }
                    }
                }
            }
            g
        })
        .collect()
}

/// `k` distinct groups of `n`, group of rank i drawn with weight `exp((n − 1 − i) / 10)` (the most
/// important groups are kept more often).
fn weighted_sample(n: usize, k: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut weights: Vec<f64> = (0..n).map(|i| ((n - 1 - i) as f64 / 10.0 - (n - 1) as f64 / 10.0).exp()).collect();
    let mut chosen = Vec::with_capacity(k);
    for _ in 0..k {
        let total: f64 = weights.iter().sum();
        let mut x = rng.random::<f64>() * total;
        let mut pick = n - 1;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 && x < w {
                pick = i;
                break;
            }
            x -= w;
        }
        while weights[pick] == 0.0 {
            pick = (pick + 1) % n;
        }
        weights[pick] = 0.0;
        chosen.push(pick);
    }
    chosen
}

/// The next population of one class: `keep` (last generation's best combination's member) first,
/// then the elites, then children of selected parents, crossed over at one point and mutated.
pub fn next_population(
    config: &GaConfig,
    population: &[Bits],
    fitness: &[f64],
    keep: &Bits,
    rng: &mut impl Rng,
) -> Vec<Bits> {
    let size = config.population;
    let mut ranked: Vec<usize> = (0..population.len()).collect();
    ranked.sort_by(|&a, &b| fitness[b].total_cmp(&fitness[a]).then(a.cmp(&b)));
    let mut next = vec![keep.clone()];
    for &i in &ranked {
        if next.len() >= config.elites.max(1).min(size) {
            break;
        }
        if population[i] != *keep {
            next.push(population[i].clone());
        }
    }
    let np = config.parents.clamp(1, population.len());
    let parents: Vec<usize> = match config.selection {
        Selection::Truncation => ranked[..np].to_vec(),
        Selection::Roulette => {
            let total: f64 = fitness.iter().map(|f| f.max(0.0) + 1e-9).sum();
            (0..np)
                .map(|_| {
                    let mut x = rng.random::<f64>() * total;
                    for &i in &ranked {
                        let w = fitness[i].max(0.0) + 1e-9;
                        if x < w {
                            return i;
                        }
                        x -= w;
                    }
                    ranked[ranked.len() - 1]
                })
                .collect()
        }
    };
    let mut k = 0;
    while next.len() < size {
        let (p1, p2) = match config.pairing {
            Pairing::RankAdjacent => (parents[k % np], parents[(k + 1) % np]),
            Pairing::Random => (parents[rng.random_range(0..np)], parents[rng.random_range(0..np)]),
        };
        let mut child = crossover(&population[p1], &population[p2], rng);
        mutate(&mut child, config.mutation, rng);
        next.push(child);
        k += 1;
    }
    next
}

/// Single-point crossover: the first part of `a`, the rest of `b`.
pub fn crossover(a: &Bits, b: &Bits, rng: &mut impl Rng) -> Bits {
    let len = a.len();
    if len < 2 {
        return a.clone();
    }
    let cut = rng.random_range(1..len);
    let mut child = a.clone();
    for i in cut..len {
        child.set(i, b.get(i));
    }
    child
}

/// Applies `mutation` to `g`.
pub fn mutate(g: &mut Bits, mutation: Mutation, rng: &mut impl Rng) {
    let len = g.len();
    match mutation {
        Mutation::Reset { share } => {
            let m = ((len as f64 * share).round() as usize).min(len);
            for i in sample(rng, len, m) {
                g.set(i, rng.random::<bool>());
            }
        }
        Mutation::Flip { probability } => {
            for i in 0..len {
                if rng.random::<f64>() < probability {
                    g.set(i, !g.get(i));
                }
            }
        }
    }
}

impl crate::choice::Choice for Preset {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            Preset::ReferenceCode,
            "reference-code",
            "what produced the published numbers: truncation selection, 20% elites, rank-adjacent parents, 5% of positions reset, the dynamic accuracy weight",
        ),
        (
            Preset::Paper,
            "paper",
            "the paper's text: fitness-proportional parents, random pairs, each bit flipped with probability 0.1, fitness 0.9·Acc + 0.1·Diff",
        ),
    ];
}

impl crate::choice::Choice for InitKind {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            InitKind::Sensitivity,
            "sensitivity",
            "per segment, drop a share drawn from [0.1, 0.5] (sensitive) or [0.5, 0.9] (insensitive), keeping important groups more often",
        ),
        (InitKind::Random, "random", "every bit a fair coin"),
        (
            InitKind::Graded,
            "graded",
            "as sensitivity, individual i of NI dropping only (NI - i) / NI of the share drawn: from the paper's drops down to nearly the whole model (for networks such as MobileNetV2 where the paper's drops leave every first module at chance)",
        ),
    ];
}
