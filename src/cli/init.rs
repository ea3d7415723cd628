//! `cnnsplitter init`: a model folder with fresh weights.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cnnsplitter::Model;
use cnnsplitter::model::count::count;

#[derive(Args)]
pub struct InitArgs {
    /// Architecture, optionally with a width multiplier: simcnn, rescnn, simcnn-weak,
    /// rescnn-weak, simcnn-svhn-weak, rescnn-svhn-weak, simcnn-nodrop, rescnn-nodrop, resnet8-bn
    /// (e.g. simcnn@0.25).
    #[arg(long)]
    arch: String,
    /// Input image shape CxHxW.
    #[arg(long, default_value = "3x32x32", value_parser = super::parse_shape)]
    input: [usize; 3],
    /// Number of classes.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Seed of the weight initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model folder to write (model.json + model.safetensors); must not exist (see --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists (once the new folder is complete; kept when the command fails).
    #[arg(long)]
    force: bool,
}

pub fn run(args: InitArgs) -> Result<()> {
    let out = super::NewOutput::check(&args.out, args.force)?;
    let model = Model::init(&args.arch, args.input, args.classes, args.seed)?;
    out.write_dir(|tmp| model.save(tmp))?;
    let c = count(&model.description)?;
    println!(
        "wrote {} ({} kernels, {} parameters, seed {}) to {}",
        model.description.name,
        c.kernels,
        c.params,
        args.seed,
        args.out.display()
    );
    Ok(())
}
