//! The genetic search over modules: all N classes evolve in lock-step because the fitness of a
//! module is the best fitness of a composed model it takes part in (paper sections 3.2.2-3.3.3).
//!
//! Each generation: own-class logit vectors of every individual on the validation images (cached),
//! the pruning-based composition search (with last generation's best combination forced alive),
//! fitness = w_acc·Acc + w_diff·Diff of each surviving composed model, module fitness = the best
//! composed model it is in, then the next populations. All randomness of generation g is drawn
//! from `(seed, g)`, so a resumed search ends exactly like an uninterrupted one.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::engine::phases::Phase;
use crate::error::{Error, Result};
use crate::modularize::bitset::{Bits, mean_pairwise_distance};
use crate::modularize::genetic::composition::{CompositionConfig, search as compose};
use crate::modularize::genetic::evaluator::Evaluator;
use crate::modularize::genetic::ga::{GaConfig, next_population};
use crate::modularize::genetic::grouping::Layout;
use crate::records::GenerationRecord;
use crate::seed::mix_seed;

/// Stopping rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopConfig {
    /// Generations at most.
    pub generations: usize,
    /// Stop after this many generations without a better best combination.
    pub patience: Option<usize>,
}

impl Default for StopConfig {
    /// 200 generations, no early stopping.
    fn default() -> Self {
        StopConfig { generations: 200, patience: None }
    }
}

impl StopConfig {
    /// Checks `generations >= 1` and `patience >= 1` where given.
    pub fn validate(&self) -> Result<()> {
        Error::check_at_least("generations", self.generations, 1)?;
        self.patience.map_or(Ok(()), |p| Error::check_at_least("patience", p, 1))
    }
}

/// The best composed model found so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestCombination {
    /// One genome per class.
    pub genomes: Vec<Bits>,
    /// Validation accuracy.
    pub accuracy: f64,
    /// Mean pairwise Jaccard distance of the modules' kernel sets.
    pub diff: f64,
    /// Fitness under the weights of the generation that scored it.
    pub fitness: f64,
    /// Generation (from 0) it was found in.
    pub generation: usize,
}

/// Everything needed to continue a search: saved after every generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    /// The next generation to run.
    pub generation: usize,
    /// The population of each class for that generation.
    pub populations: Vec<Vec<Bits>>,
    /// Best combination so far.
    pub best: Option<BestCombination>,
    /// Generations in a row without a better best combination.
    pub stale: usize,
    /// One record per finished generation.
    pub history: Vec<GenerationRecord>,
    /// Whether the search has ended (generation limit or patience).
    pub finished: bool,
}

impl SearchState {
    /// Checks that the state fits `classes` classes and genomes of `bits` bits (non-empty
    /// populations, every genome and the best combination of that length): a state from another
    /// model or grouping is refused.
    pub fn check(&self, classes: usize, bits: usize) -> std::result::Result<(), String> {
        let genomes_fit = |g: &[Bits]| g.iter().all(|b| b.len() == bits);
        if self.populations.len() != classes || self.populations.iter().any(|p| p.is_empty() || !genomes_fit(p)) {
            return Err(format!(
                "does not hold {classes} non-empty populations of {bits}-bit genomes: it belongs to another \
                 model or grouping"
            ));
        }
        if self.best.as_ref().is_some_and(|b| b.genomes.len() != classes || !genomes_fit(&b.genomes)) {
            return Err(format!("its best combination is not {classes} genomes of {bits} bits"));
        }
        Ok(())
    }
}

/// What the search needs from its surroundings.
pub struct SearchContext<'a, 'e> {
    /// Genome layout.
    pub layout: &'a Layout,
    /// Validation labels (the evaluator's images).
    pub labels: &'a [u16],
    /// Number of classes.
    pub classes: usize,
    /// GA settings.
    pub ga: &'a GaConfig,
    /// Composition pruning settings.
    pub composition: &'a CompositionConfig,
    /// Stopping.
    pub stop: &'a StopConfig,
    /// Seed.
    pub seed: u64,
    /// Runs and caches modules.
    pub evaluator: &'a mut Evaluator<'e>,
}

impl SearchContext<'_, '_> {
    /// Runs one generation on `state` and advances it.
    pub fn step(&mut self, state: &mut SearchState) -> Result<GenerationRecord> {
        let started = Instant::now();
        let (passes0, hits0) = (self.evaluator.forward_passes, self.evaluator.cache_hits);
        let g = state.generation;
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(self.seed, g as u64));
        let n = self.classes;

        // Own-class logit vectors (cached) and kernel sets of every individual.
        let requests: Vec<(usize, Bits)> =
            (0..n).flat_map(|c| state.populations[c].iter().map(move |g| (c, g.clone()))).collect();
        let mut flat = self.evaluator.own_logits_many(&requests)?.into_iter();
        let vectors: Vec<Vec<_>> = state.populations.iter().map(|p| flat.by_ref().take(p.len()).collect()).collect();
        let composition_started = Instant::now();
        let kernel_sets: Vec<Vec<Bits>> = (0..n)
            .into_par_iter()
            .map(|c| state.populations[c].iter().map(|genome| self.layout.kernel_set(c, genome)).collect())
            .collect();

        // The previous best combination sits at index 0 of every population (see below).
        let forced: Option<Vec<usize>> = state.best.as_ref().map(|_| vec![0; n]);
        let scores: Vec<Vec<&[f32]>> = vectors.iter().map(|row| row.iter().map(|v| v.as_slice()).collect()).collect();
        let survivors = compose(&scores, self.labels, self.composition, forced.as_deref(), &mut rng);

        let last_accuracy = state.best.as_ref().map(|b| b.accuracy);
        let (wa, wd) = self.ga.fitness.weights(last_accuracy.filter(|_| g > 0));
        let scored: Vec<(f64, f64, f64)> = survivors
            .par_iter()
            .map(|cm| {
                let sets: Vec<&Bits> = (0..n).map(|c| &kernel_sets[c][cm.members[c]]).collect();
                let diff = mean_pairwise_distance(&sets);
                (wa * cm.accuracy + wd * diff, cm.accuracy, diff)
            })
            .collect();
        let mut module_fitness: Vec<Vec<f64>> = (0..n).map(|c| vec![0.0; state.populations[c].len()]).collect();
        let mut best_index = 0;
        for (k, (cm, &(fitness, _, _))) in survivors.iter().zip(&scored).enumerate() {
            for c in 0..n {
                let f = &mut module_fitness[c][cm.members[c]];
                *f = f.max(fitness);
            }
            if fitness > scored[best_index].0 {
                best_index = k;
            }
        }
        let (fitness, accuracy, diff) = scored[best_index];
        let members = &survivors[best_index].members;
        // Improvement: better than the previous best scored with this generation's weights.
        let previous = state.best.as_ref().map(|b| wa * b.accuracy + wd * b.diff);
        let improved = previous.is_none_or(|p| fitness > p + 1e-12);
        if improved {
            state.best = Some(BestCombination {
                genomes: (0..n).map(|c| state.populations[c][members[c]].clone()).collect(),
                accuracy,
                diff,
                fitness,
                generation: g,
            });
            state.stale = 0;
        } else {
            state.stale += 1;
        }
        let best = state.best.clone().expect("set above");
        let kernels =
            (0..n).map(|c| self.layout.kernel_set(c, &best.genomes[c]).count() as f64).sum::<f64>() / n as f64;

        // Next populations: the best combination's member first, then elites and children.
        let next: Vec<Vec<Bits>> = (0..n)
            .map(|c| next_population(self.ga, &state.populations[c], &module_fitness[c], &best.genomes[c], &mut rng))
            .collect();
        let alive: Vec<(usize, Bits)> =
            next.iter().enumerate().flat_map(|(c, p)| p.iter().map(move |b| (c, b.clone()))).collect();
        self.evaluator.retain(&alive);
        state.populations = next;
        state.generation += 1;
        self.evaluator.clock.add(Phase::Composition, composition_started.elapsed());
        let record = GenerationRecord {
            generation: g,
            best_fitness: if improved { fitness } else { previous.unwrap_or(fitness) },
            accuracy: best.accuracy,
            diff: best.diff,
            kernels,
            accuracy_weight: wa,
            survivors: survivors.len(),
            forward_passes: self.evaluator.forward_passes - passes0,
            cache_hits: self.evaluator.cache_hits - hits0,
            seconds: started.elapsed().as_secs_f64(),
        };
        state.history.push(record.clone());
        let patience_over = self.stop.patience.is_some_and(|p| state.stale >= p);
        state.finished = state.generation >= self.stop.generations || patience_over;
        Ok(record)
    }
}

/// The state before the first generation: initial populations drawn from `seed`.
pub fn initial_state(populations: Vec<Vec<Bits>>) -> SearchState {
    SearchState { generation: 0, populations, best: None, stale: 0, history: Vec::new(), finished: false }
}
