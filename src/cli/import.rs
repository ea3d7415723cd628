//! `cnnsplitter import`: a PyTorch state_dict (safetensors) for a named architecture, or any
//! supported network as an ONNX file, as a model folder.

use cnnsplitter::Compute;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use cnnsplitter::engine::import_check::{MAX_RELATIVE_ERROR, check_against_file};
use cnnsplitter::model::import::import;
use cnnsplitter::model::onnx_import::{from_onnx_bytes, with_inline_data};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["weights", "onnx"]))]
pub struct ImportArgs {
    /// Architecture the weights belong to, with its width (e.g. simcnn, rescnn@0.25,
    /// resnet18): the description the tensors are checked against (with --weights).
    #[arg(long, requires = "weights")]
    arch: Option<String>,
    /// A PyTorch state_dict saved with safetensors (`safetensors.torch.save_file(model.state_dict(), F)`),
    /// with --arch. Names as in the original CNNSplitter code (SimCNN `conv_{i}`, `fc_13..15`; ResCNN
    /// `conv_{i}.0`, `classifier.2`), torchvision's (resnet18, mobilenetv2, vgg16-bn), as
    /// cnnsplitter writes them, or a plain nn.Sequential's numbered modules.
    #[arg(long, requires = "arch")]
    weights: Option<PathBuf>,
    /// An ONNX file of any network the model description can express (`torch.onnx.export`,
    /// either exporter, opset 17 or newer). After reading it, the imported model and the file
    /// are run on the same random images (ONNX Runtime, when found) and the import is refused
    /// when they differ by more than 1e-4 relative.
    #[arg(long, conflicts_with_all = ["arch", "weights", "classes"])]
    onnx: Option<PathBuf>,
    /// Input image shape CxHxW (default 3x32x32 with --arch; with --onnx, the file's own unless
    /// it leaves it open).
    #[arg(long, value_parser = super::parse_shape)]
    input: Option<[usize; 3]>,
    /// Number of classes (with --arch; default: the output count of the file's last linear layer).
    #[arg(long)]
    classes: Option<usize>,
    /// Model folder to write; must not exist (see --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists (once the new folder is complete; kept when the command fails).
    #[arg(long)]
    force: bool,
    /// Print every tensor's mapping (with --weights) or every imported layer (with --onnx).
    #[arg(long)]
    verbose: bool,
}

pub fn run(args: ImportArgs, compute: &Compute) -> Result<()> {
    let inputs: Vec<&std::path::Path> = args.onnx.iter().chain(&args.weights).map(PathBuf::as_path).collect();
    let out = super::NewOutput::check_apart(&args.out, args.force, "--out", &inputs)?;
    if let Some(onnx) = &args.onnx {
        return run_onnx(&args, onnx, out, compute);
    }
    let (Some(arch), Some(weights)) = (&args.arch, &args.weights) else {
        bail!("give --arch and --weights, or --onnx")
    };
    let imported = import(arch, args.input.unwrap_or([3, 32, 32]), args.classes, weights)?;
    let renamed = imported.mapping.iter().filter(|(ours, theirs)| ours != theirs).count();
    if args.verbose {
        for (ours, theirs) in &imported.mapping {
            println!("{ours:<28} <- {theirs}");
        }
    }
    out.write_dir(|tmp| imported.model.save(tmp))?;
    println!(
        "imported {} tensors ({renamed} renamed, {} skipped) from {} as {} ({} classes) into {}",
        imported.mapping.len(),
        imported.skipped.len(),
        weights.display(),
        imported.model.description.name,
        imported.model.description.classes,
        args.out.display()
    );
    Ok(())
}

fn run_onnx(args: &ImportArgs, onnx: &std::path::Path, out: super::NewOutput, compute: &Compute) -> Result<()> {
    let bytes = std::fs::read(onnx).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", onnx.display()))?;
    let imported = from_onnx_bytes(&bytes, onnx, args.input)?;
    let desc = &imported.model.description;
    if args.verbose {
        for l in &desc.layers {
            println!("{:<40} {}", l.name, l.kind.type_name());
        }
    }
    let runnable = with_inline_data(&bytes, onnx)?;
    match check_against_file(&imported, &runnable, compute)? {
        None => eprintln!(
            "note: ONNX Runtime was not found, so the imported model was not compared with the file \
             (set ORT_DYLIB_PATH to check it)"
        ),
        Some(c) if c.non_finite > 0 => bail!(
            "{}: on {} random images, {} logits of the file or of the imported model are NaN or infinite, so \
             the import cannot be checked (look for infinite or huge constants, e.g. a Gemm alpha); nothing was \
             written",
            onnx.display(),
            c.images,
            c.non_finite
        ),
        Some(c) if c.relative > MAX_RELATIVE_ERROR => bail!(
            "{} does not compute what the file computes: on {} random images the logits differ by up to {:.3e} \
             ({:.2e} relative, more than {MAX_RELATIVE_ERROR:.0e}); nothing was written",
            onnx.display(),
            c.images,
            c.max_abs,
            c.relative
        ),
        Some(c) => {
            if let Some(b) = c.fixed_batch_replaced {
                println!(
                    "note: the file fixes its batch at {b} images; it was checked as a copy with an open batch \
                     (the imported model takes any batch)"
                );
            }
            println!(
                "checked against the file on {} random images (ONNX Runtime): max difference {:.2e} ({:.2e} relative)",
                c.images, c.max_abs, c.relative
            )
        }
    }
    out.write_dir(|tmp| imported.model.save(tmp))?;
    let count = cnnsplitter::model::count::count(desc)?;
    println!(
        "imported {} layers ({} kernels, {} parameters; nodes left out: {}) from {} ({}x{}x{} input, {} classes) into {}",
        desc.layers.len(),
        count.kernels,
        count.params,
        if imported.dropped.is_empty() { "none".to_string() } else { imported.dropped.join(", ") },
        onnx.display(),
        desc.input[0],
        desc.input[1],
        desc.input[2],
        desc.classes,
        args.out.display()
    );
    Ok(())
}
