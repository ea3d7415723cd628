//! The paper's search method: kernel importance groups the kernels of each layer, layer
//! sensitivity sets how the first populations are drawn, and a genetic search evolves one genome
//! per class ([`search`]), scoring modules by the composed models they take part in on the
//! validation images ([`composition`]).

pub mod composition;
pub mod evaluator;
pub mod ga;
pub mod grouping;
pub mod search;
pub mod sensitivity;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::files::{read_json, write_json, write_jsonl};
use crate::folders::ModularizeDir;
use crate::modularize::{FoundModule, ModularizeConfig, SearchInputs, SearchOutcome, SearchStats};
use crate::progress::{Event, Progress};
use crate::records::Sensitivity;
use crate::seed::mix_seed;
use evaluator::{Evaluator, ModuleRuns};
use ga::initial_population;
use grouping::Layout;
use search::{SearchContext, SearchState, initial_state};

/// Runs (or continues) the genetic method on `inputs`: importance, sensitivity, then the search
/// until it finishes (or stops early, then `None`); the modules of the best combination.
pub fn search(inputs: &SearchInputs<'_>) -> Result<Option<SearchOutcome>> {
    let SearchInputs { out, config, model, data, compute, engine, options, progress, .. } = *inputs;
    let mut runs = ModuleRuns::for_model(model, engine, compute.threads())?;
    runs.jobs = options.jobs.unwrap_or(runs.jobs);
    let importance = inputs.importance()?;
    let layout = Layout::new(&model.description, &importance, &config.grouping);
    // Validation images: the search scores on the first `search_images`, the sensitivity table
    // on the first `sensitivity_images`.
    let val = &data.val;
    let images = data.normalization.images(val);
    let sensitivity = sensitivity(inputs, runs, &layout, &images)?;
    let sensitive: Vec<bool> = sensitivity.segments.iter().map(|r| r.sensitive).collect();
    let m = config.search_images.map_or(val.len(), |n| n.min(val.len()));
    let mut evaluator = Evaluator::new(engine, model, &layout, &images[..m * val.image_size()], m)?.with_runs(runs)?;
    let classes = model.description.classes;
    let search = Search { out, config, layout: &layout, labels: &val.labels[..m], classes };
    let Some(state) = search.run(&sensitive, &mut evaluator, options.stop_after, progress)? else {
        return Ok(None);
    };
    let best = state.best.clone().ok_or_else(|| Error::Invalid("the search ran no generation".into()))?;
    let decoder = Decoder::new(model)?;
    let modules = best
        .genomes
        .iter()
        .enumerate()
        .map(|(c, genome)| {
            Ok(FoundModule {
                masks: layout.keep_masks(&decoder, c, genome)?,
                genome: Some((0..genome.len()).map(|i| if genome.get(i) { '1' } else { '0' }).collect()),
            })
        })
        .collect::<Result<_>>()?;
    let history = &state.history;
    let stats = SearchStats {
        generations: history.len(),
        best_generation: best.generation,
        seconds_per_generation: history.iter().map(|r| r.seconds).sum::<f64>() / history.len().max(1) as f64,
        forward_passes: history.iter().map(|r| r.forward_passes).sum(),
        cache_hits: history.iter().map(|r| r.cache_hits).sum(),
    };
    Ok(Some(SearchOutcome { modules, stats }))
}

/// Stage 2: layer sensitivity on the first `sensitivity_images` validation images (`images`:
/// all of them normalised, `[n, C, H, W]`), read back, and checked against the run, when done.
fn sensitivity(inputs: &SearchInputs<'_>, runs: ModuleRuns, layout: &Layout, images: &[f32]) -> Result<Sensitivity> {
    let SearchInputs { out, config, model, data, groups, engine, progress, .. } = *inputs;
    let val = &data.val;
    let k = config.sensitivity_images.min(val.len());
    if out.sensitivity().exists() {
        let s: Sensitivity = read_json(&out.sensitivity())?;
        s.check(layout).map_err(|m| Error::file(out.sensitivity(), m))?;
        if s.threshold != config.sensitivity_threshold || s.images != k {
            return Err(Error::file(
                out.sensitivity(),
                format!(
                    "was measured with threshold {} on {} images, but this run's are {} and {k}: it belongs to \
                     another run",
                    s.threshold, s.images, config.sensitivity_threshold
                ),
            ));
        }
        return Ok(s);
    }
    let segment_labels: Vec<String> =
        (0..groups.groups.len()).map(|g| groups.group_label(&model.description, g)).collect();
    let mut evaluator = Evaluator::new(engine, model, layout, &images[..k * val.image_size()], k)?.with_runs(runs)?;
    let s = sensitivity::measure(
        layout,
        &segment_labels,
        &mut evaluator,
        &val.labels[..k],
        model.description.classes,
        config.sensitivity_threshold,
        progress,
    )?;
    progress.event(&Event::SensitivityTable { table: &s });
    write_json(&out.sensitivity(), &s)?;
    Ok(s)
}

/// The genetic search, saved after every generation.
struct Search<'a> {
    out: &'a ModularizeDir,
    config: &'a ModularizeConfig,
    layout: &'a Layout,
    /// Labels of the images the evaluator scores on.
    labels: &'a [u16],
    /// Number of classes (one population each).
    classes: usize,
}

impl Search<'_> {
    /// Runs (or continues) the search until it finishes, or for `stop_after` generations of this
    /// session (then `None`).
    fn run(
        &self,
        sensitive: &[bool],
        evaluator: &mut Evaluator<'_>,
        stop_after: Option<usize>,
        progress: &dyn Progress,
    ) -> Result<Option<SearchState>> {
        let (config, out) = (self.config, self.out);
        let n = self.classes;
        let mut state: SearchState = if out.state().exists() {
            let state: SearchState = read_json(&out.state())?;
            state.check(n, self.layout.bits).map_err(|m| Error::file(out.state(), m))?;
            // The log may be a line short (a kill after the state, before the log).
            write_jsonl(&out.generations(), &state.history)?;
            state
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(config.seed, u64::MAX - 1));
            let pops = (0..n)
                .map(|_| initial_population(self.layout, sensitive, config.ga.init, config.ga.population, &mut rng))
                .collect();
            initial_state(pops)
        };
        let mut ctx = SearchContext {
            layout: self.layout,
            labels: self.labels,
            classes: n,
            ga: &config.ga,
            composition: &config.composition,
            stop: &config.stop,
            seed: config.seed,
            evaluator,
        };
        let mut ran = 0;
        while !state.finished {
            if stop_after.is_some_and(|s| ran >= s) {
                return Ok(None);
            }
            progress.start(&format!("generation {}/{}", state.generation + 1, config.stop.generations), 0);
            let record = ctx.step(&mut state)?;
            progress.finish();
            progress.event(&Event::GenerationDone { generations: config.stop.generations, record: &record });
            write_json(&out.state(), &state)?;
            write_jsonl(&out.generations(), &state.history)?;
            ran += 1;
        }
        Ok(Some(state))
    }
}
