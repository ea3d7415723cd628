//! `cnnsplitter export`: a model, a patched model or a whole set of modules to ONNX.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cnnsplitter::export::composite::to_onnx_composed;
use cnnsplitter::export::onnx::{INPUT, OPSET, OUTPUT, to_onnx, write_file};
use cnnsplitter::folders::Artifact;
use cnnsplitter::patch::PatchedModel;
use cnnsplitter::patch::export::to_onnx_patched;

#[derive(Args)]
pub struct ExportArgs {
    /// A model folder (a run folder, a module), a patched-model folder (from `patch`: exports
    /// the patched scores), or a `modularize` folder (exports the composed model: one branch
    /// per module, each keeping its own-class logit).
    model: PathBuf,
    /// ONNX file to write (input `input` [batch, C, H, W], output `logits` [batch, classes]).
    #[arg(long)]
    onnx: PathBuf,
    /// Replace the --onnx file if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let out = super::NewOutput::check_apart(&args.onnx, args.force, "--onnx", &[&args.model])?;
    let (bytes, what, input, classes) = match Artifact::open(&args.model)? {
        Artifact::Patched(dir) => {
            let p = PatchedModel::load(&dir.root)?;
            (to_onnx_patched(&p)?, "patched model", p.weak.description.input, p.weak.description.classes)
        }
        Artifact::Modularization(dir) => {
            let modules = dir.load_modules()?;
            let input = modules[0].description.input;
            (to_onnx_composed(&modules)?, "composed model", input, modules.len())
        }
        single => {
            let m = single.load_model()?;
            (to_onnx(&m)?, "model", m.description.input, m.description.classes)
        }
    };
    if args.onnx.is_dir() {
        out.clear()?;
    }
    // Written under a temporary name and renamed over any old file.
    write_file(&bytes, &args.onnx)?;
    let [c, h, w] = input;
    println!(
        "wrote the {what} to {} (opset {OPSET}): input `{INPUT}` [batch, {c}, {h}, {w}] -> output `{OUTPUT}` [batch, {classes}]",
        args.onnx.display()
    );
    Ok(())
}
