//! Benchmarks that mirror `../shared/bench/torch_reference.py` (same networks, sizes and
//! timing rule: median of timed runs after warm-up), with random weights and inputs.

pub mod search;

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::compute::Compute;
use crate::decode::{decode, random_keep_masks};
use crate::engine::{DEFAULT_BATCH, Engine, random_images};
use crate::error::Result;
use crate::graph::channel_groups::ChannelGroups;
use crate::model::Model;
use crate::model::count::count;
use crate::progress::Progress;

/// Result of `bench infer`.
#[derive(Debug, Clone, Serialize)]
pub struct InferReport {
    /// Always `cnnsplitter`.
    pub tool: &'static str,
    /// Always `infer`.
    pub mode: &'static str,
    /// Engine name.
    pub engine: &'static str,
    /// Architecture, e.g. `simcnn@0.25`.
    pub arch: String,
    /// Compute threads.
    pub threads: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Median seconds of one forward pass.
    pub median_s: f64,
    /// `batch / median_s`.
    pub images_per_s: f64,
    /// Achieved GFLOP/s (2 FLOPs per MAC).
    pub gflops: f64,
}

/// Result of `bench modules`.
#[derive(Debug, Clone, Serialize)]
pub struct ModulesReport {
    /// Always `cnnsplitter`.
    pub tool: &'static str,
    /// Always `modules`.
    pub mode: &'static str,
    /// Engine name.
    pub engine: &'static str,
    /// Architecture, e.g. `simcnn@0.25`.
    pub arch: String,
    /// Compute threads.
    pub threads: usize,
    /// Number of decoded sub-networks.
    pub modules: usize,
    /// Images each sub-network runs over.
    pub images: usize,
    /// Target share of kernels kept per layer.
    pub keep: f64,
    /// Sub-networks packed into one prepared model (1: each on its own).
    pub pack: usize,
    /// Mean share of the full model's MACs that a sub-network costs.
    pub mean_mac_share: f64,
    /// Median seconds to run all sub-networks over all images (model preparation excluded).
    pub median_s: f64,
    /// Seconds to prepare (build) all sub-networks once.
    pub prepare_s: f64,
    /// `modules · images / median_s`.
    pub module_images_per_s: f64,
}

/// Median of `iters` timed calls of `f` after `warmup` untimed calls.
pub fn median_time(mut f: impl FnMut() -> Result<()>, iters: usize, warmup: usize) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// The median of `values` (the mean of the middle two for an even count; 0 for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let m = values.len();
    match m {
        0 => 0.0,
        _ if m % 2 == 1 => values[m / 2],
        _ => (values[m / 2 - 1] + values[m / 2]) / 2.0,
    }
}

/// Eval-mode forward passes of `arch` over a batch of `batch` random 3x32x32 images
/// (10 classes), timed as the median of `iters` runs after 3 warm-up runs.
pub fn infer(
    engine: &dyn Engine,
    arch: &str,
    batch: usize,
    iters: usize,
    threads: usize,
    seed: u64,
) -> Result<InferReport> {
    let model = Model::init(arch, [3, 32, 32], 10, seed)?;
    let macs = count(&model.description)?.macs;
    let prepared = engine.prepare(&model)?;
    let images = random_images(batch, model.description.input, seed);
    let median_s = median_time(|| prepared.logits(&images, batch, batch).map(|_| ()), iters, 3)?;
    Ok(InferReport {
        tool: "cnnsplitter",
        mode: "infer",
        engine: engine.name(),
        arch: model.description.name.clone(),
        threads,
        batch,
        median_s,
        images_per_s: batch as f64 / median_s,
        gflops: 2.0 * macs as f64 * batch as f64 / median_s / 1e9,
    })
}

/// Random sub-networks of one model, as `bench modules` runs them.
pub struct RandomModules {
    /// The full model (random weights).
    pub model: Model,
    /// The decoded sub-networks.
    pub modules: Vec<Model>,
    /// Target share of kernels kept per layer.
    pub keep: f64,
    /// Mean share of the full model's MACs that a sub-network costs.
    pub mean_mac_share: f64,
}

/// Decodes `n` random sub-networks of `arch` (3x32x32 input, 10 classes, random weights),
/// each keeping about `keep` of every channel group's kernels ([`random_keep_masks`]).
pub fn random_modules(arch: &str, n: usize, keep: f64, seed: u64, progress: &dyn Progress) -> Result<RandomModules> {
    let model = Model::init(arch, [3, 32, 32], 10, seed)?;
    let full_macs = count(&model.description)?.macs as f64;
    let groups = ChannelGroups::derive(&model.description)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    progress.start("decoding sub-networks", n as u64);
    let mut modules = Vec::with_capacity(n);
    let mut mac_share = 0.0;
    for _ in 0..n {
        let masks = random_keep_masks(&groups, keep, &mut rng);
        let module = decode(&model, &masks)?;
        mac_share += count(&module.description)?.macs as f64 / full_macs;
        modules.push(module);
        progress.advance(1);
    }
    progress.finish();
    Ok(RandomModules { model, modules, keep, mean_mac_share: mac_share / n.max(1) as f64 })
}

/// Runs the sub-networks of `random` over `images` random images each, in chunks of 256: the
/// forward work of one generation of the original genetic search. Timed as the median of
/// `max(1, iters / 2)` runs after one warm-up. `pack` sub-networks share one prepared model (one
/// ONNX Runtime session).
#[allow(clippy::too_many_arguments)]
pub fn modules(
    engine: &dyn Engine,
    random: &RandomModules,
    images: usize,
    iters: usize,
    pack: usize,
    threads: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<ModulesReport> {
    let RandomModules { model, modules: decoded, keep, mean_mac_share } = random;
    let modules = decoded.len();
    let pack = pack.max(1);
    let t = Instant::now();
    let prepared = decoded
        .chunks(pack)
        .map(|group| if pack == 1 { engine.prepare(&group[0]) } else { engine.prepare_many(group) })
        .collect::<Result<Vec<_>>>()?;
    let prepare_s = t.elapsed().as_secs_f64();
    let data = random_images(images, model.description.input, seed);
    let runs = (iters / 2).max(1);
    progress.start("running sub-networks", (runs + 1) as u64);
    let median_s = median_time(
        || {
            for p in &prepared {
                p.logits(&data, images, DEFAULT_BATCH)?;
            }
            progress.advance(1);
            Ok(())
        },
        runs,
        1,
    )?;
    progress.finish();
    Ok(ModulesReport {
        tool: "cnnsplitter",
        mode: "modules",
        engine: engine.name(),
        arch: model.description.name.clone(),
        threads,
        modules,
        images,
        keep: *keep,
        pack,
        mean_mac_share: *mean_mac_share,
        median_s,
        prepare_s,
        module_images_per_s: (modules * images) as f64 / median_s,
    })
}

/// Time spent in one layer of a burn forward pass.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTime {
    /// Layer name.
    pub name: String,
    /// Layer kind.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Input shape per image.
    pub input: String,
    /// Output shape per image.
    pub output: String,
    /// Median seconds per batch.
    pub median_s: f64,
    /// Achieved GFLOP/s of the layer (2 FLOPs per MAC; 0 for layers without MACs).
    pub gflops: f64,
}

/// Per-layer median times of burn eval-mode forward passes of `model` over `batch` random
/// images on `compute`'s device: shows which layer shapes the backend handles slowly.
pub fn burn_layer_times(
    model: &Model,
    batch: usize,
    iters: usize,
    seed: u64,
    compute: &Compute,
) -> Result<Vec<LayerTime>> {
    use burn::module::Module;

    use crate::model::net::{Net, images_tensor};
    use crate::model::shape::infer_shapes;

    let device = compute.device().clone();
    let net = Net::new(model, &device)?.valid();
    let [c, h, w] = model.description.input;
    let images = random_images(batch, model.description.input, seed);
    let n = model.description.layers.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    for run in 0..iters.max(1) + 1 {
        let x = images_tensor(&images, [batch, c, h, w], &device)?;
        let mut last = Instant::now();
        net.forward_observed(x, |i, _| {
            let now = Instant::now();
            if run > 0 {
                samples[i].push((now - last).as_secs_f64());
            }
            last = now;
        });
    }
    let counts = count(&model.description)?;
    let shapes = infer_shapes(&model.description)?;
    Ok(samples
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            s.sort_by(f64::total_cmp);
            let median_s = s[s.len() / 2];
            let layer = &counts.layers[i];
            LayerTime {
                name: layer.name.clone(),
                kind: layer.kind,
                input: shapes[i].input.to_string(),
                output: layer.output.clone(),
                median_s,
                gflops: 2.0 * layer.macs as f64 * batch as f64 / median_s / 1e9,
            }
        })
        .collect())
}

/// Result of `bench pipeline`.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Always `cnnsplitter`.
    pub tool: &'static str,
    /// Always `pipeline`.
    pub mode: &'static str,
    /// Dataset name.
    pub dataset: String,
    /// Compute threads.
    pub threads: usize,
    /// Images per batch.
    pub batch: usize,
    /// Seconds to read (or generate) and split the dataset.
    pub load_s: f64,
    /// Training images per epoch.
    pub images: usize,
    /// Epochs timed.
    pub epochs: usize,
    /// Training-input images per second (shuffle + augment + normalise + batch).
    pub images_per_s: f64,
}

/// Times the training input pipeline: `epochs` epochs of augmented, shuffled batches of the
/// training split, consumed without a model.
pub fn pipeline(
    selection: &crate::data::presets::DataSelection,
    batch: usize,
    epochs: usize,
    threads: usize,
    seed: u64,
) -> Result<PipelineReport> {
    use crate::data::pipeline::{Augmentation, Batcher};
    let t = Instant::now();
    let data = selection.load()?;
    let load_s = t.elapsed().as_secs_f64();
    let batcher = Batcher {
        set: data.train.clone(),
        batch_size: batch,
        shuffle: true,
        augmentation: Some(Augmentation::standard(data.digits)),
        normalization: data.normalization.clone(),
        seed,
    };
    let t = Instant::now();
    let mut seen = 0usize;
    for epoch in 0..epochs.max(1) {
        for b in batcher.epoch(epoch as u64, 2) {
            seen += b.len();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(PipelineReport {
        tool: "cnnsplitter",
        mode: "pipeline",
        dataset: data.name,
        threads,
        batch,
        load_s,
        images: data.train.len(),
        epochs: epochs.max(1),
        images_per_s: seen as f64 / secs,
    })
}

/// Result of `bench train`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    /// Always `cnnsplitter`.
    pub tool: &'static str,
    /// Always `train`.
    pub mode: &'static str,
    /// Architecture.
    pub arch: String,
    /// Compute threads.
    pub threads: usize,
    /// Images per step.
    pub batch: usize,
    /// Median seconds of one step (forward, backward, SGD update).
    pub median_s: f64,
    /// `batch / median_s`.
    pub images_per_s: f64,
}

/// Training steps (forward + backward + Nesterov SGD with weight decay) of `arch` in train mode
/// on a batch of random 3x32x32 images with labels `i % 10`, as `torch_reference.py train`, on
/// `compute`.
pub fn train(arch: &str, batch: usize, iters: usize, compute: &Compute, seed: u64) -> Result<TrainBenchReport> {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Int, Tensor, TensorData};

    use crate::model::net::{Net, images_tensor};
    use crate::train::sgd::{Sgd, SgdSettings};

    let model = Model::init(arch, [3, 32, 32], 10, seed)?;
    let threads = compute.threads();
    let device = compute.device().clone().autodiff();
    let mut net = Net::new(&model, &device)?;
    let mut sgd = Sgd::new(SgdSettings { momentum: 0.9, nesterov: true, weight_decay: 1e-4 });
    let images = random_images(batch, [3, 32, 32], seed);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut dropout_rng = ChaCha8Rng::seed_from_u64(seed);
    let median_s = median_time(
        || {
            let x = images_tensor(&images, [batch, 3, 32, 32], &device)?;
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [batch]), &device);
            let loss = loss_fn.forward(net.forward_train(x, &mut dropout_rng), y);
            let grads = loss.backward();
            sgd.step(&mut net, &grads, 0.01);
            Ok(())
        },
        iters,
        2,
    )?;
    Ok(TrainBenchReport {
        tool: "cnnsplitter",
        mode: "train",
        arch: model.description.name.clone(),
        threads,
        batch,
        median_s,
        images_per_s: batch as f64 / median_s,
    })
}
