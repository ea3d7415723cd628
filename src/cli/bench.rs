//! `cnnsplitter bench`: inference speed, mirroring ../shared/bench/torch_reference.py.

use anyhow::Result;
use clap::{Args, Subcommand};

use cnnsplitter::bench;
use cnnsplitter::engine::burn::BurnEngine;

use super::progress_bar::Bars;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: BenchMode,
}

#[derive(Subcommand)]
enum BenchMode {
    /// Images/s of eval-mode forward passes over one batch of random 3x32x32 images.
    Infer {
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
    },
    /// Seconds to run K decoded random sub-networks over V images each (one generation's
    /// forward work in the original genetic search).
    Modules {
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
        /// Seed of the random weights, masks and images.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object (median_s, module_images_per_s, ...).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: BenchArgs, threads: usize) -> Result<()> {
    let engine = BurnEngine::default();
    match args.mode {
        BenchMode::Infer {
            arch,
            batch,
            iters,
            seed,
            json,
        } => {
            anyhow::ensure!(batch > 0, "--batch must be at least 1");
            let r = bench::infer(&engine, &arch, batch, iters, threads, seed)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} infer on {} ({} threads, batch {}): {:.1} images/s, median {:.4} s, {:.1} GFLOP/s",
                    r.arch, r.engine, r.threads, r.batch, r.images_per_s, r.median_s, r.gflops
                );
            }
        }
        BenchMode::Modules {
            arch,
            modules,
            images,
            keep,
            iters,
            seed,
            json,
        } => {
            anyhow::ensure!(
                modules > 0 && images > 0,
                "--modules and --images must be at least 1"
            );
            anyhow::ensure!(keep > 0.0 && keep <= 1.0, "--keep must be in (0, 1]");
            let r = bench::modules(
                &engine,
                &arch,
                modules,
                images,
                keep,
                iters,
                threads,
                seed,
                &Bars::default(),
            )?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} modules on {} ({} threads): {} sub-networks x {} images in {:.3} s (median), \
                     {:.1} module-images/s; mean MAC share {:.3}; building them took {:.3} s",
                    r.arch,
                    r.engine,
                    r.threads,
                    r.modules,
                    r.images,
                    r.median_s,
                    r.module_images_per_s,
                    r.mean_mac_share,
                    r.prepare_s
                );
            }
        }
    }
    Ok(())
}
