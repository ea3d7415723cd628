//! `cnnsplitter demo`: runs the pipeline that exists so far and says what it did.
//!
//! For now (before data, training and the search exist): builds a model, decodes one random
//! module per class, checks each against the masked original network, and saves them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use cnnsplitter::Model;
use cnnsplitter::bench::random_images;
use cnnsplitter::decode::{decode, random_keep_masks, zero_removed_inputs};
use cnnsplitter::engine::{DEFAULT_BATCH, EngineChoice};
use cnnsplitter::graph::channel_groups::ChannelGroups;
use cnnsplitter::model::count::count;
use cnnsplitter::progress::Progress;

use super::inspect::thousands;
use super::progress_bar::Bars;

#[derive(Args)]
pub struct DemoArgs {
    /// Architecture of the model to split.
    #[arg(long, default_value = "simcnn@0.25")]
    arch: String,
    /// Number of classes (one module each).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Share of each layer's kernels a module keeps (±10% per layer, at random).
    #[arg(long, default_value_t = 0.5)]
    keep: f64,
    /// Random images each module is checked on.
    #[arg(long, default_value_t = 64)]
    images: usize,
    /// Seed of the weights, masks and images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Inference engine: auto (ONNX Runtime when found, else burn), burn or ort.
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineChoice,
    /// Folder to write the model and its modules to.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
}

pub fn run(args: DemoArgs, threads: usize) -> Result<()> {
    anyhow::ensure!(args.keep > 0.0 && args.keep <= 1.0, "--keep must be in (0, 1]");
    let started = Instant::now();
    let bars = Bars::default();
    let model = Model::init(&args.arch, [3, 32, 32], args.classes, args.seed)?;
    let full = count(&model.description)?;
    let groups = ChannelGroups::derive(&model.description)?;
    println!(
        "model {}: {} kernels in {} channel groups, {} parameters, {} MACs per image (random weights, seed {})",
        model.description.name,
        full.kernels,
        groups.groups.len(),
        thousands(full.params as u64),
        thousands(full.macs),
        args.seed
    );
    model.save(&args.out.join("model"))?;

    let engine = super::engine(args.engine, threads)?;
    let images = random_images(args.images, model.description.input, args.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut rows = vec![format!(
        "{:<10} {:>8} {:>8} {:>14} {:>9} {:>22}",
        "module", "kernels", "share", "MACs", "MAC share", "max |module - masked|"
    )];
    bars.start("decoding and checking modules", args.classes as u64);
    let mut worst: f32 = 0.0;
    for class in 0..args.classes {
        let masks = random_keep_masks(&groups, args.keep, &mut rng);
        let module = decode(&model, &masks)?;
        let reference = zero_removed_inputs(&model, &masks)?;
        let got = engine.prepare(&module)?.logits(&images, args.images, DEFAULT_BATCH)?;
        let want = engine.prepare(&reference)?.logits(&images, args.images, DEFAULT_BATCH)?;
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        worst = worst.max(diff);
        let c = count(&module.description)?;
        module.save(&args.out.join(format!("modules/class_{class:02}")))?;
        rows.push(format!(
            "{:<10} {:>8} {:>7.1}% {:>14} {:>8.1}% {:>22.2e}",
            format!("class {class}"),
            c.kernels,
            100.0 * c.kernels as f64 / full.kernels as f64,
            thousands(c.macs),
            100.0 * c.macs as f64 / full.macs as f64,
            diff
        ));
        bars.advance(1);
    }
    bars.finish();
    for row in rows {
        println!("{row}");
    }
    println!(
        "decoded {} modules by physically removing kernels; each equals the full network with the \
         removed channels zeroed (largest logit difference {worst:.2e} over {} random images)",
        args.classes, args.images
    );
    println!(
        "wrote the model and modules to {} in {:.1} s. Next stages (data, training, search, patching) come with later issues.",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
