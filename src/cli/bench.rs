//! `cnnsplitter bench`: inference speed, mirroring ../shared/bench/torch_reference.py.

use cnnsplitter::Compute;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use cnnsplitter::Model;
use cnnsplitter::bench;
use cnnsplitter::decode::{decode, random_keep_masks};
use cnnsplitter::engine::EngineChoice;
use cnnsplitter::graph::channel_groups::ChannelGroups;

use super::data::DataArgs;
use super::progress_bar::Bars;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: BenchMode,
}

#[derive(Subcommand)]
enum BenchMode {
    /// Images/s of eval-mode forward passes over one batch of random 3x32x32 images.
    Infer(InferArgs),
    /// Images/s of training steps (forward, backward, Nesterov SGD) on random 3x32x32 images.
    Train(TrainArgs),
    /// Per-layer times of burn forward passes (which layer shapes are slow), optionally of a
    /// decoded random sub-network.
    Layers(LayersArgs),
    /// Images/s of the training input pipeline (shuffle, augment, normalise, batch), without a model.
    Pipeline(PipelineArgs),
    /// Seconds to run K decoded random sub-networks over V images each (one generation's
    /// forward work in the original genetic search).
    Modules(ModulesArgs),
    /// Seconds per generation of the genetic search on random weights and images (no training
    /// first), with modules keeping about half of every layer's kernels, and where the time goes.
    Search(SearchArgs),
}

#[derive(Args)]
struct InferArgs {
    /// Architecture, e.g. simcnn@0.25 or rescnn.
    #[arg(long)]
    arch: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Timed runs (the median is reported) after 3 warm-up runs.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Seed of the random weights and images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (images_per_s, median_s, ...).
    #[arg(long)]
    json: bool,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
}

#[derive(Args)]
struct TrainArgs {
    /// Architecture, e.g. simcnn@0.25.
    #[arg(long)]
    arch: String,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed steps (the median is reported) after 2 warm-up steps.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Seed of the random weights and images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (images_per_s, median_s, ...).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LayersArgs {
    /// Architecture, e.g. simcnn@0.25 or rescnn.
    #[arg(long)]
    arch: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Share of each layer's kernels kept (1 = the full network).
    #[arg(long, default_value_t = 1.0)]
    keep: f64,
    /// Timed runs (the median is reported) after 1 warm-up run.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Seed of the random weights, mask and images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PipelineArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Epochs to time.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Seed of shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (images_per_s, load_s, ...).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ModulesArgs {
    /// Architecture, e.g. simcnn@0.25 or rescnn.
    #[arg(long)]
    arch: String,
    /// Number of sub-networks (K).
    #[arg(long, default_value_t = 20)]
    modules: usize,
    /// Images per sub-network (V).
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Share of each layer's kernels kept (±10% per layer, at random).
    #[arg(long, default_value_t = 0.5)]
    keep: f64,
    /// Twice the number of timed runs (as in the PyTorch reference: max(1, iters/2)).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Sub-networks packed into one graph (one ONNX Runtime session); 1 = one session each.
    #[arg(long, default_value_t = 1)]
    pack: usize,
    /// Seed of the random weights, masks and images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (median_s, module_images_per_s, ...).
    #[arg(long)]
    json: bool,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
    /// Also write the sub-networks as model folders DIR/module_000, DIR/module_001, ... (so
    /// another tool can run the same ones: scripts/bench_modules_torch.py); DIR must be new.
    #[arg(long, value_name = "DIR")]
    save_modules: Option<PathBuf>,
    /// Replace DIR of --save-modules when it exists.
    #[arg(long, requires = "save_modules")]
    force: bool,
}

#[derive(Args)]
struct SearchArgs {
    /// Architecture, e.g. simcnn@0.25 or rescnn.
    #[arg(long)]
    arch: String,
    /// Classes (N): one population and one module per class.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Individuals per class (P; parents and elites scale as with `modularize --population`).
    #[arg(long, default_value_t = 30)]
    population: usize,
    /// Validation images every module runs over (V), random 3x32x32.
    #[arg(long, default_value_t = 2000)]
    images: usize,
    /// Generations to run; the first runs all N x P modules, later ones only the new children.
    /// The median is taken over the generations after the first.
    #[arg(long, default_value_t = 3)]
    generations: usize,
    /// Modules run at once, each on threads / J threads (default: as `modularize --module-jobs`).
    #[arg(long, value_name = "J")]
    jobs: Option<usize>,
    /// Images per forward pass (default with ONNX Runtime: 32 for models of at most 100 million
    /// MACs per image, else 256; with burn: 256).
    #[arg(long, value_name = "B")]
    batch: Option<usize>,
    /// Seed of the random weights, images, labels and populations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (seconds_per_generation, module_images_per_s, phase_shares, ...).
    #[arg(long)]
    json: bool,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_parser = super::choice::<EngineChoice>(), default_value = "auto")]
    engine: EngineChoice,
}

pub fn run(args: BenchArgs, compute: &Compute) -> Result<()> {
    match args.mode {
        BenchMode::Infer(a) => infer(a, compute),
        BenchMode::Train(a) => train(a, compute),
        BenchMode::Layers(a) => layers(a, compute),
        BenchMode::Pipeline(a) => pipeline(a, compute),
        BenchMode::Modules(a) => modules(a, compute),
        BenchMode::Search(a) => search(a, compute),
    }
}

/// Prints `r` as one JSON object, or as the line `line` makes of it.
fn report<T: serde::Serialize>(json: bool, r: &T, line: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!("{}", line(r));
    }
    Ok(())
}

fn infer(args: InferArgs, compute: &Compute) -> Result<()> {
    let InferArgs { arch, batch, iters, seed, json, engine } = args;
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let engine = super::engine(engine, compute)?;
    let r = bench::infer(engine.as_ref(), &arch, batch, iters, compute.threads(), seed)?;
    report(json, &r, |r| {
        format!(
            "{} infer on {} ({} threads, batch {}): {:.1} images/s, median {:.4} s, {:.1} GFLOP/s",
            r.arch, r.engine, r.threads, r.batch, r.images_per_s, r.median_s, r.gflops
        )
    })
}

fn train(args: TrainArgs, compute: &Compute) -> Result<()> {
    let TrainArgs { arch, batch, iters, seed, json } = args;
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let r = bench::train(&arch, batch, iters, compute, seed)?;
    report(json, &r, |r| {
        format!(
            "{} train on burn ({} threads, batch {}): {:.1} images/s, median step {:.4} s",
            r.arch, r.threads, r.batch, r.images_per_s, r.median_s
        )
    })
}

fn layers(args: LayersArgs, compute: &Compute) -> Result<()> {
    let LayersArgs { arch, batch, keep, iters, seed, json } = args;
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    anyhow::ensure!(keep > 0.0 && keep <= 1.0, "--keep must be in (0, 1]");
    let mut model = Model::init(&arch, [3, 32, 32], 10, seed)?;
    if keep < 1.0 {
        let groups = ChannelGroups::derive(&model.description)?;
        let masks = random_keep_masks(&groups, keep, &mut ChaCha8Rng::seed_from_u64(seed));
        model = decode(&model, &masks)?;
    }
    let times = bench::burn_layer_times(&model, batch, iters, seed, compute)?;
    if json {
        println!("{}", serde_json::to_string(&times)?);
    } else {
        let total: f64 = times.iter().map(|t| t.median_s).sum();
        println!(
            "{} on burn ({} threads, batch {batch}, keep {keep}): {total:.4} s per batch",
            arch,
            compute.threads()
        );
        println!(
            "{:<14} {:<12} {:>12} {:>12} {:>10} {:>7} {:>9}",
            "layer", "type", "input", "output", "ms", "share", "GFLOP/s"
        );
        for t in &times {
            let gflops = if t.gflops > 0.0 { format!("{:.1}", t.gflops) } else { String::new() };
            println!(
                "{:<14} {:<12} {:>12} {:>12} {:>10.2} {:>6.1}% {:>9}",
                t.name,
                t.kind,
                t.input,
                t.output,
                t.median_s * 1e3,
                100.0 * t.median_s / total,
                gflops
            );
        }
    }
    Ok(())
}

fn pipeline(args: PipelineArgs, compute: &Compute) -> Result<()> {
    let PipelineArgs { data, batch, epochs, seed, json } = args;
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let r = bench::pipeline(&data.selection(), batch, epochs, compute.threads(), seed)?;
    report(json, &r, |r| {
        format!(
            "{}: loaded in {:.2} s; input pipeline {:.0} images/s ({} training images x {} epochs, batch {}, {} threads)",
            r.dataset, r.load_s, r.images_per_s, r.images, r.epochs, r.batch, r.threads
        )
    })
}

fn modules(args: ModulesArgs, compute: &Compute) -> Result<()> {
    let ModulesArgs { arch, modules, images, keep, iters, pack, seed, json, engine, save_modules, force } = args;
    anyhow::ensure!(modules > 0 && images > 0, "--modules and --images must be at least 1");
    anyhow::ensure!(keep > 0.0 && keep <= 1.0, "--keep must be in (0, 1]");
    let save = save_modules.as_deref().map(|dir| super::NewOutput::check(dir, force)).transpose()?;
    let engine = super::engine(engine, compute)?;
    let random = bench::random_modules(&arch, modules, keep, seed, &Bars::default())?;
    if let Some(save) = save {
        save.write_dir(|dir| {
            random
                .modules
                .iter()
                .enumerate()
                .try_for_each(|(k, module)| module.save(&dir.join(format!("module_{k:03}"))))
        })?;
    }
    let r = bench::modules(engine.as_ref(), &random, images, iters, pack, compute.threads(), seed, &Bars::default())?;
    report(json, &r, |r| {
        format!(
            "{} modules on {} ({} threads, {} per graph): {} sub-networks x {} images in {:.3} s (median), \
         {:.1} module-images/s; mean MAC share {:.3}; building them took {:.3} s",
            r.arch,
            r.engine,
            r.threads,
            r.pack,
            r.modules,
            r.images,
            r.median_s,
            r.module_images_per_s,
            r.mean_mac_share,
            r.prepare_s
        )
    })
}

fn search(args: SearchArgs, compute: &Compute) -> Result<()> {
    let SearchArgs { arch, classes, population, images, generations, jobs, batch, seed, json, engine } = args;
    let engine = super::engine(engine, compute)?;
    let bench = bench::search::SearchBench { arch, classes, population, images, generations, jobs, batch, seed };
    let r = bench.run(engine.as_ref(), compute.threads(), &Bars::default())?;
    report(json, &r, |r| {
        let s = r.phase_shares;
        format!(
            "{} search on {} ({} threads, {} module(s) at once, batches of {}): N = {}, P = {}, V = {}: {:.2} s per generation \
             (median of generations 2..{}; first {:.2} s), {:.0} module-images/s; modules keep {:.0}% of the \
             kernels ({:.0}% of the MACs); time: decode {:.1}%, export {:.1}%, session {:.1}%, forward {:.1}%, \
             composition {:.1}%",
            r.arch,
            r.engine,
            r.threads,
            r.jobs,
            r.batch,
            r.classes,
            r.population,
            r.images,
            r.seconds_per_generation,
            r.generations,
            r.generation_seconds[0],
            r.module_images_per_s,
            100.0 * r.mean_kernel_share,
            100.0 * r.mean_mac_share,
            100.0 * s.decode,
            100.0 * s.export,
            100.0 * s.session,
            100.0 * s.forward,
            100.0 * s.composition
        )
    })
}
