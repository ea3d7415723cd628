//! `cnnsplitter modularize`: split a trained model into one module per class.

use cnnsplitter::Compute;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use cnnsplitter::engine::EngineChoice;
use cnnsplitter::modularize::genetic::composition::CompositionConfig;
use cnnsplitter::modularize::genetic::ga::{FitnessRule, GaConfig, InitKind, Mutation, Preset};
use cnnsplitter::modularize::genetic::grouping::{GroupingConfig, GroupingKind};
use cnnsplitter::modularize::genetic::search::StopConfig;
use cnnsplitter::modularize::{ModularizeConfig, RunOptions, SearchMethod, run_with};

use super::data::DataArgs;
use super::progress_bar::Bars;

#[derive(Args)]
pub struct ModularizeArgs {
    /// The trained model to split (a model folder or a training run folder).
    #[arg(long, required_unless_present = "resume")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// How the modules are searched: genetic (the paper's genetic search over groups of
    /// kernels; the flags below set it up).
    #[arg(long, value_parser = super::choice::<SearchMethod>(), default_value = "genetic")]
    method: SearchMethod,
    /// GA settings to start from: reference-code (what produced the published numbers) or paper.
    #[arg(long, value_parser = super::choice::<Preset>(), default_value = "reference-code")]
    preset: Preset,
    /// Generations at most (T).
    #[arg(long, default_value_t = StopConfig::default().generations)]
    generations: usize,
    /// Stop after this many generations without a better best combination.
    #[arg(long)]
    patience: Option<usize>,
    /// Individuals per class (NI; preset: 100). Parents and elites scale with it unless given
    /// (reference-code: 50% and 20% of it).
    #[arg(long)]
    population: Option<usize>,
    /// Parents per generation (NP; preset: 50% of --population).
    #[arg(long)]
    parents: Option<usize>,
    /// Individuals carried over unchanged (reference-code: 20% of --population; paper: 1, the
    /// best combination's).
    #[arg(long)]
    elites: Option<usize>,
    /// Share of positions (0 to 1) reset to a random bit (reference-code mutation; default 0.05).
    #[arg(long, conflicts_with = "flip")]
    reset: Option<f64>,
    /// Probability (0 to 1) of flipping each bit (paper mutation; default 0.1).
    #[arg(long)]
    flip: Option<f64>,
    /// Fixed accuracy weight alpha (0 to 1) of the fitness (paper: 0.9); replaces the dynamic
    /// weight.
    #[arg(long)]
    alpha: Option<f64>,
    /// Initialisation: sensitivity (default), random or graded.
    #[arg(long, value_parser = super::choice::<InitKind>())]
    init: Option<InitKind>,
    /// Kernel grouping: importance (default), random or none (one bit per kernel).
    #[arg(long, value_parser = super::choice::<GroupingKind>(), default_value = "importance")]
    grouping: GroupingKind,
    /// Segments with fewer kernels get 10 groups, others 100.
    #[arg(long, default_value_t = GroupingConfig::default().threshold)]
    group_threshold: usize,
    /// Accuracy loss at 90% drop up to which a layer counts as insensitive (0 to 1).
    #[arg(long, default_value_t = ModularizeConfig::SENSITIVITY_THRESHOLD)]
    sensitivity_threshold: f64,
    /// Validation images for the sensitivity table.
    #[arg(long, default_value_t = ModularizeConfig::SENSITIVITY_IMAGES)]
    sensitivity_images: usize,
    /// Validation images the search scores modules on (default: all).
    #[arg(long, value_name = "N")]
    search_images: Option<usize>,
    /// Probability a training image needs for kernel importance (0 to 1).
    #[arg(long, default_value_t = ModularizeConfig::CONFIDENCE)]
    confidence: f64,
    /// Fewest composed models kept per merge of the pruning-based evaluation.
    #[arg(long, default_value_t = CompositionConfig::default().ntop_min)]
    ntop_min: usize,
    /// Most composed models kept per merge.
    #[arg(long, default_value_t = CompositionConfig::default().ntop_max)]
    ntop_max: usize,
    /// Accuracy thresholds (0 to 1) of the merge levels CM(2), CM(4), CM(8), ... (comma-separated;
    /// the last applies to deeper levels).
    #[arg(long, value_delimiter = ',', default_values_t = CompositionConfig::default().thresholds)]
    thresholds: Vec<f64>,
    /// Seed of grouping, initialisation and search.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
    /// Stop after this many generations of this session (continue with --resume).
    #[arg(long, value_name = "G")]
    stop_after: Option<usize>,
    /// Modules run at once, each on threads / J threads (default with ONNX Runtime: one per thread
    /// for models of at most 100 million MACs per image, else 1, measured best on 2 cores; with
    /// burn: 1). The modules, tables and search log are the same for every J.
    #[arg(long, value_name = "J")]
    module_jobs: Option<usize>,
    /// Output folder (modules, tables, search log, summary.json).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Replace --out if it exists (it is deleted first).
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Continue the run in this folder.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["model", "out"])]
    resume: Option<PathBuf>,
}

fn config(args: &ModularizeArgs, model: PathBuf) -> Result<ModularizeConfig> {
    let mut ga = GaConfig::preset(args.preset);
    if let Some(v) = args.population {
        ga = ga.with_population(v);
    }
    if let Some(v) = args.parents {
        ga.parents = v;
    }
    if let Some(v) = args.elites {
        ga.elites = v;
    }
    if let Some(share) = args.reset {
        ga.mutation = Mutation::Reset { share };
    }
    if let Some(probability) = args.flip {
        ga.mutation = Mutation::Flip { probability };
    }
    if let Some(alpha) = args.alpha {
        ga.fitness = FitnessRule::Fixed { alpha };
    }
    if let Some(init) = args.init {
        ga.init = init;
    }
    Ok(ModularizeConfig {
        model,
        data: args.data.selection(),
        method: args.method,
        confidence: args.confidence,
        grouping: GroupingConfig {
            kind: args.grouping,
            threshold: args.group_threshold,
            seed: args.seed,
            ..GroupingConfig::default()
        },
        sensitivity_threshold: args.sensitivity_threshold,
        sensitivity_images: args.sensitivity_images,
        ga,
        composition: CompositionConfig {
            ntop_min: args.ntop_min,
            ntop_max: args.ntop_max,
            thresholds: args.thresholds.clone(),
        },
        stop: StopConfig { generations: args.generations, patience: args.patience },
        search_images: args.search_images,
        seed: args.seed,
    })
}

pub fn run_cmd(args: ModularizeArgs, compute: &Compute) -> Result<()> {
    let bars = Bars::default();
    let (cfg, dir) = match (&args.resume, &args.model, &args.out) {
        (Some(dir), _, _) => (None, dir.clone()),
        (None, Some(model), Some(out)) => {
            let mut inputs = vec![model.as_path()];
            inputs.extend(args.data.dataset_file());
            let output = super::NewOutput::check_apart(out, args.force, "--out", &inputs)?;
            let config = config(&args, model.clone())?;
            config.validate()?;
            output.clear()?;
            (Some(config), out.clone())
        }
        _ => bail!("give --model and --out for a new run, or --resume DIR"),
    };
    let engine = super::engine(args.engine, compute)?;
    let options = RunOptions { stop_after: args.stop_after, jobs: args.module_jobs, model_at: None };
    let Some(s) = run_with(cfg, &dir, compute, engine.as_ref(), options, &bars)? else {
        println!("stopped as asked; continue with: cnnsplitter modularize --resume {}", dir.display());
        return Ok(());
    };
    println!(
        "{} on {}: {} modules after {} generations ({:.1} s each, {} module runs, {} cached, engine {})",
        s.model,
        s.dataset,
        s.kernels_per_module.len(),
        s.generations,
        s.seconds_per_generation,
        s.forward_passes,
        s.cache_hits,
        s.engine
    );
    println!(
        "accuracy: model {:.4} / composed {:.4} (validation), model {:.4} / composed {:.4} (test); Diff {:.4}",
        s.model_accuracy.validation,
        s.composed_accuracy.validation,
        s.model_accuracy.test,
        s.composed_accuracy.test,
        s.diff
    );
    println!(
        "kernels per module {:.0} of {} (-{:.1}%), MACs per module {:.0} of {} (-{:.1}%)",
        s.mean_kernels,
        s.model_kernels,
        100.0 * s.kernel_reduction,
        s.mean_macs,
        s.model_macs,
        100.0 * s.mac_reduction
    );
    println!("modules and summary.json in {}", dir.display());
    if let Some(why) = cnnsplitter::modularize::shortfall::shortfall(&dir, &s)? {
        eprintln!("warning: {why}");
    }
    Ok(())
}
