//! `cnnsplitter import`: a PyTorch state_dict (safetensors) as a model folder.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cnnsplitter::model::import::import;

#[derive(Args)]
pub struct ImportArgs {
    /// Architecture the weights belong to, with its width (e.g. simcnn, rescnn@0.25,
    /// simcnn-weak): the description the tensors are checked against.
    #[arg(long)]
    arch: String,
    /// A PyTorch state_dict saved with safetensors (`safetensors.torch.save_file(model.state_dict(), F)`).
    /// Names as in the original CNNSplitter code (SimCNN `conv_{i}`, `fc_13..15`; ResCNN
    /// `conv_{i}.0`, `classifier.2`), as cnnsplitter writes them, or a plain nn.Sequential's
    /// numbered modules.
    #[arg(long)]
    weights: PathBuf,
    /// Input image shape CxHxW.
    #[arg(long, default_value = "3x32x32", value_parser = super::parse_shape)]
    input: [usize; 3],
    /// Number of classes (default: the output count of the file's last linear layer).
    #[arg(long)]
    classes: Option<usize>,
    /// Model folder to write; must not exist (see --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists (it is deleted first).
    #[arg(long)]
    force: bool,
    /// Print every tensor's mapping.
    #[arg(long)]
    verbose: bool,
}

pub fn run(args: ImportArgs) -> Result<()> {
    let out = super::NewOutput::check(&args.out, args.force)?;
    let imported = import(&args.arch, args.input, args.classes, &args.weights)?;
    out.clear()?;
    let renamed = imported.mapping.iter().filter(|(ours, theirs)| ours != theirs).count();
    if args.verbose {
        for (ours, theirs) in &imported.mapping {
            println!("{ours:<28} <- {theirs}");
        }
    }
    imported.model.save(&args.out)?;
    println!(
        "imported {} tensors ({renamed} renamed, {} skipped) from {} as {} ({} classes) into {}",
        imported.mapping.len(),
        imported.skipped.len(),
        args.weights.display(),
        imported.model.description.name,
        imported.model.description.classes,
        args.out.display()
    );
    Ok(())
}
