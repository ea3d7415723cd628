//! `cnnsplitter export`: a model folder to ONNX.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cnnsplitter::Model;
use cnnsplitter::export::onnx::{INPUT, OPSET, OUTPUT, export};

#[derive(Args)]
pub struct ExportArgs {
    /// A model folder (a run folder, a module, a patched model).
    model: PathBuf,
    /// ONNX file to write (input `input` [batch, C, H, W], output `logits` [batch, classes]).
    #[arg(long)]
    onnx: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    export(&model, &args.onnx)?;
    let [c, h, w] = model.description.input;
    println!(
        "wrote {} (opset {OPSET}): input `{INPUT}` [batch, {c}, {h}, {w}] -> output `{OUTPUT}` [batch, {}]",
        args.onnx.display(),
        model.description.classes
    );
    Ok(())
}
