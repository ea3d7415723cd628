//! Test helpers: a naive forward pass with plain loops (an independent computation to check the
//! burn net and decode against), random weights with non-trivial BatchNorm statistics, and
//! comparisons.

#![allow(dead_code)]

pub mod formats;

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cnnsplitter::Model;
use cnnsplitter::engine::Engine;
use cnnsplitter::engine::burn::BurnEngine;
use cnnsplitter::model::description::{LayerKind, ModelDescription, Source};
use cnnsplitter::model::weights::Weights;

/// A model of `arch` with random weights; BatchNorm statistics and affine parameters are drawn
/// away from their identity values so that slicing them wrongly shows.
pub fn random_model(arch: &str, input: [usize; 3], classes: usize, seed: u64) -> Model {
    randomized(Model::init(arch, input, classes, seed).expect("architecture builds"), seed)
}

/// A model of the description `desc` with random weights, as [`random_model`].
pub fn random_model_of(desc: ModelDescription, seed: u64) -> Model {
    let weights = Weights::init(&desc, seed).expect("the description is valid");
    randomized(Model::new(desc, weights).expect("fresh weights fit"), seed)
}

/// `model` with BatchNorm statistics, affine parameters and biases drawn at random.
fn randomized(model: Model, seed: u64) -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut weights = model.weights.clone();
    for (name, t) in weights.tensors.iter_mut() {
        let randomize = name.ends_with(".running_mean")
            || name.ends_with(".running_var")
            || (is_norm(&model.description, name) && (name.ends_with(".weight") || name.ends_with(".bias")))
            || name.ends_with(".bias");
        if randomize {
            for v in t.data.iter_mut() {
                *v = if name.ends_with(".running_var") || name.ends_with(".weight") {
                    rng.random_range(0.5..1.5)
                } else {
                    rng.random_range(-0.2..0.2)
                };
            }
        }
    }
    Model::new(model.description, weights).expect("same shapes")
}

fn is_norm(desc: &ModelDescription, tensor: &str) -> bool {
    let layer = tensor.rsplit_once('.').map(|(l, _)| l).unwrap_or(tensor);
    desc.layers.iter().any(|l| l.name == layer && matches!(l.kind, LayerKind::BatchNorm2d { .. }))
}

/// Random standard-normal-ish images `[n, C, H, W]`.
pub fn random_images(n: usize, input: [usize; 3], seed: u64) -> Vec<f32> {
    cnnsplitter::engine::random_images(n, input, seed)
}

/// The compute the tests run on: burn's flex CPU backend with rayon's threads (as the binary
/// chooses it).
pub fn compute() -> cnnsplitter::Compute {
    compute_with(rayon::current_num_threads())
}

/// [`compute`] with `threads` compute threads.
pub fn compute_with(threads: usize) -> cnnsplitter::Compute {
    cnnsplitter::Compute::new(burn::tensor::Device::flex(), threads)
}

/// The burn engine on [`compute`].
pub fn burn_engine() -> BurnEngine {
    BurnEngine::new(&compute())
}

/// Logits of `model` on the burn engine.
pub fn burn_logits(model: &Model, images: &[f32], n: usize) -> Vec<f32> {
    burn_engine().prepare(model).expect("prepares").logits(images, n, 256).expect("runs")
}

/// Largest `|a - b| / max(1e-3, max|b|)` over all entries: error relative to the output's scale.
pub fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "outputs differ in length");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// A naive eval-mode forward pass over one image with plain loops. `zero_inputs[layer]` lists
/// input channels (of a convolution) or flattened channel blocks (of a linear layer: channel `c`
/// covers features `c·hw..(c+1)·hw`) to treat as zero.
pub fn naive_forward(
    desc: &ModelDescription,
    w: &Weights,
    image: &[f32],
    zero_inputs: &HashMap<usize, (Vec<usize>, usize)>,
) -> Vec<f32> {
    naive_layers(desc, w, image, zero_inputs).pop().unwrap().0
}

/// Every layer's output of [`naive_forward`], with its shape `[c, h, w]`.
pub fn naive_layers(
    desc: &ModelDescription,
    w: &Weights,
    image: &[f32],
    zero_inputs: &HashMap<usize, (Vec<usize>, usize)>,
) -> Vec<(Vec<f32>, [usize; 3])> {
    // An activation: data plus [c, h, w] (a vector is [n, 1, 1]).
    let mut outputs: Vec<(Vec<f32>, [usize; 3])> = Vec::new();
    for (i, layer) in desc.layers.iter().enumerate() {
        let (mut x, [c, h, wd]) = match desc.source(i).unwrap() {
            Source::Image => (image.to_vec(), desc.input),
            Source::Layer(j) => outputs[j].clone(),
        };
        if let Some((channels, block)) = zero_inputs.get(&i) {
            let per = match layer.kind {
                LayerKind::Linear { .. } => *block,
                _ => h * wd,
            };
            for &ch in channels {
                x[ch * per..(ch + 1) * per].fill(0.0);
            }
        }
        let get = |s: &str| &w.tensors[&format!("{}.{s}", layer.name)];
        let out = match &layer.kind {
            LayerKind::Conv2d { out_channels, kernel, stride, padding, bias, groups } => {
                let wt = get("weight");
                // Kernel o reads input channels g·cg..(g+1)·cg of its group g.
                let (cg, og) = (c / groups, out_channels / groups);
                let oh = (h + 2 * padding[0] - kernel[0]) / stride[0] + 1;
                let ow = (wd + 2 * padding[1] - kernel[1]) / stride[1] + 1;
                let mut y = vec![0f32; out_channels * oh * ow];
                for o in 0..*out_channels {
                    let b = if *bias { get("bias").data[o] } else { 0.0 };
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = b as f64;
                            for k in 0..cg {
                                let ci = (o / og) * cg + k;
                                for ky in 0..kernel[0] {
                                    for kx in 0..kernel[1] {
                                        let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                                        let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                            continue;
                                        }
                                        let xv = x[(ci * h + iy as usize) * wd + ix as usize];
                                        let wv = wt.data[((o * cg + k) * kernel[0] + ky) * kernel[1] + kx];
                                        acc += (xv * wv) as f64;
                                    }
                                }
                            }
                            y[(o * oh + oy) * ow + ox] = acc as f32;
                        }
                    }
                }
                (y, [*out_channels, oh, ow])
            }
            LayerKind::BatchNorm2d { eps, .. } => {
                let (g, b, m, v) = (get("weight"), get("bias"), get("running_mean"), get("running_var"));
                for ch in 0..c {
                    let scale = g.data[ch] / (v.data[ch] + *eps as f32).sqrt();
                    for p in &mut x[ch * h * wd..(ch + 1) * h * wd] {
                        *p = (*p - m.data[ch]) * scale + b.data[ch];
                    }
                }
                (x, [c, h, wd])
            }
            LayerKind::Relu => (x.into_iter().map(|v| v.max(0.0)).collect(), [c, h, wd]),
            LayerKind::Relu6 => (x.into_iter().map(|v| v.clamp(0.0, 6.0)).collect(), [c, h, wd]),
            LayerKind::MaxPool2d { kernel, stride, padding } | LayerKind::AvgPool2d { kernel, stride, padding } => {
                let is_max = matches!(layer.kind, LayerKind::MaxPool2d { .. });
                let oh = (h + 2 * padding[0] - kernel[0]) / stride[0] + 1;
                let ow = (wd + 2 * padding[1] - kernel[1]) / stride[1] + 1;
                let mut y = vec![0f32; c * oh * ow];
                for ch in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            // Padded positions: skipped by max, zeros in the average.
                            let mut acc = if is_max { f32::NEG_INFINITY } else { 0.0 };
                            for ky in 0..kernel[0] {
                                for kx in 0..kernel[1] {
                                    let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                                    let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let v = x[(ch * h + iy as usize) * wd + ix as usize];
                                    acc = if is_max { acc.max(v) } else { acc + v };
                                }
                            }
                            if !is_max {
                                acc /= (kernel[0] * kernel[1]) as f32;
                            }
                            y[(ch * oh + oy) * ow + ox] = acc;
                        }
                    }
                }
                (y, [c, oh, ow])
            }
            LayerKind::GlobalAvgPool => {
                let y = (0..c).map(|ch| x[ch * h * wd..(ch + 1) * h * wd].iter().sum::<f32>() / (h * wd) as f32);
                (y.collect(), [c, 1, 1])
            }
            LayerKind::Flatten => (x, [c * h * wd, 1, 1]),
            LayerKind::Linear { out_features, bias } => {
                let wt = get("weight");
                let n_in = c * h * wd;
                let y = (0..*out_features)
                    .map(|o| {
                        let b = if *bias { get("bias").data[o] as f64 } else { 0.0 };
                        b + (0..n_in).map(|k| (wt.data[o * n_in + k] * x[k]) as f64).sum::<f64>()
                    })
                    .map(|v| v as f32)
                    .collect();
                (y, [*out_features, 1, 1])
            }
            LayerKind::Dropout { .. } => (x, [c, h, wd]),
            LayerKind::Concat { .. } => {
                // Channel-major maps: concatenating channels appends the data.
                let mut channels = c;
                for j in desc.concat_operands(i).unwrap() {
                    let (more, [mc, ..]) = &outputs[j];
                    x.extend_from_slice(more);
                    channels += mc;
                }
                (x, [channels, h, wd])
            }
            LayerKind::Add { .. } => {
                let (other, _) = &outputs[desc.add_operand(i).unwrap()];
                (x.iter().zip(other).map(|(a, b)| a + b).collect(), [c, h, wd])
            }
        };
        outputs.push(out);
    }
    outputs
}

/// Naive logits for `n` images.
pub fn naive_logits(
    desc: &ModelDescription,
    w: &Weights,
    images: &[f32],
    n: usize,
    zero_inputs: &HashMap<usize, (Vec<usize>, usize)>,
) -> Vec<f32> {
    let per: usize = desc.input.iter().product();
    (0..n).flat_map(|i| naive_forward(desc, w, &images[i * per..(i + 1) * per], zero_inputs)).collect()
}

/// A gate that saw nothing (for patch specs built by hand; only `open` matters to scoring).
pub fn test_gate(open: bool) -> cnnsplitter::patch::gate::Gate {
    use cnnsplitter::patch::gate::{Gate, SplitScore};
    Gate {
        open,
        reason: "test".into(),
        images: 0,
        weak: SplitScore::default(),
        patched: SplitScore::default(),
        without_module: None,
        module_evidence: None,
    }
}

/// A test that needs an optional runtime (ONNX Runtime, Python's onnxruntime) and cannot find
/// it: under `CI=true` (where `.ci/run` installs it) the test fails; elsewhere it says loudly
/// that it skipped, and the caller returns.
pub fn missing_runtime(what: &str, fix: &str) {
    use std::io::Write;
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is missing under CI=true, where .ci/run installs it: {fix}");
    }
    // Written to stderr directly, past the test harness's capture, so that it shows.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {what} is missing ({fix}); this test did not run ***\n");
}

/// Copies the folder `from` (files and sub-folders) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The sensitivity table's own-class logits `[ratio][class][image]` for segment `s`, computed the
/// way the table was before prefixes were shared: every module decoded and run whole.
pub fn sensitivity_logits_run_whole(
    evaluator: &mut cnnsplitter::modularize::genetic::evaluator::Evaluator<'_>,
    layout: &cnnsplitter::modularize::genetic::grouping::Layout,
    s: usize,
    classes: usize,
) -> Vec<Vec<Vec<f32>>> {
    use cnnsplitter::modularize::genetic::sensitivity::{RATIOS, drop_masks};
    RATIOS
        .iter()
        .map(|&ratio| {
            (0..classes)
                .map(|c| {
                    let masks = evaluator.keep_masks(drop_masks(layout, s, ratio, c)).unwrap();
                    evaluator.run(c, &masks).unwrap()
                })
                .collect()
        })
        .collect()
}

/// A small network with what MobileNet-style models need: ReLU6, an inverted residual block
/// (1x1 expansion, depthwise 3x3, 1x1 projection, residual add), a grouped convolution, padded
/// max and average pooling, and a depthwise convolution after a plain one.
pub fn depthwise_net() -> ModelDescription {
    use cnnsplitter::model::description::Layer;
    let conv = |out: usize, k: usize, stride: usize, groups: usize| LayerKind::Conv2d {
        out_channels: out,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        bias: groups > 1,
        groups,
    };
    let bn = LayerKind::batch_norm;
    let l = Layer::new;
    let layers = vec![
        l("stem", conv(16, 3, 1, 1)),
        l("stem_bn", bn()),
        l("stem_act", LayerKind::Relu6),
        l("expand", conv(24, 1, 1, 1)),
        l("expand_bn", bn()),
        l("expand_act", LayerKind::Relu6),
        l("dw", conv(24, 3, 1, 24)),
        l("dw_bn", bn()),
        l("dw_act", LayerKind::Relu6),
        l("project", conv(16, 1, 1, 1)),
        l("project_bn", bn()),
        l("add", LayerKind::Add { from: "stem_act".into() }),
        l("widen", conv(32, 1, 1, 1)),
        l("grouped", conv(32, 3, 1, 4)),
        l("grouped_act", LayerKind::Relu),
        l("max", LayerKind::MaxPool2d { kernel: [3, 3], stride: [2, 2], padding: [1, 1] }),
        l("narrow", conv(24, 3, 1, 1)),
        l("narrow_bn", bn()),
        l("narrow_act", LayerKind::Relu6),
        l("avg", LayerKind::AvgPool2d { kernel: [3, 3], stride: [2, 2], padding: [1, 1] }),
        l("dw2", conv(24, 3, 1, 24)),
        l("gap", LayerKind::GlobalAvgPool),
        l("flat", LayerKind::Flatten),
        l("fc", LayerKind::linear(5)),
    ];
    ModelDescription { name: "depthwise-net".into(), input: [3, 12, 12], classes: 5, layers }
}

/// DenseNet-style joins: a conv's output concatenated with the stem's, normalised, run through
/// a depthwise conv and a residual add over the joined channels, read by a 1x1 conv, joined again
/// twice (a concat of concats) and flattened into the classifier.
pub fn concat_net() -> ModelDescription {
    use cnnsplitter::model::description::Layer;
    let l = Layer::new;
    let depthwise = |c: usize| LayerKind::Conv2d {
        out_channels: c,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        bias: true,
        groups: c,
    };
    let layers = vec![
        l("stem", LayerKind::conv(8, 3, 1)),
        l("stem_bn", LayerKind::batch_norm()),
        l("stem_act", LayerKind::Relu),
        l("grow", LayerKind::conv(6, 3, 1)),
        l("grow_act", LayerKind::Relu),
        // [grow 6, stem 8]
        l("join", LayerKind::Concat { from: vec!["stem_act".into()] }),
        l("join_bn", LayerKind::batch_norm()),
        l("join_act", LayerKind::Relu6),
        l("dw", depthwise(14)),
        l("res", LayerKind::Add { from: "join_act".into() }),
        l("mix", LayerKind::conv(10, 1, 0)),
        l("mix_act", LayerKind::Relu),
        // [mix 10, grow 6, stem 8]
        l("join2", LayerKind::Concat { from: vec!["res".into()] }),
        l("pool", LayerKind::MaxPool2d { kernel: [3, 3], stride: [2, 2], padding: [1, 1] }),
        l("head", LayerKind::conv(12, 3, 1)),
        l("head_act", LayerKind::Relu),
        // [head 12, mix 10, grow 6, stem 8] at 5x5
        l("join3", LayerKind::Concat { from: vec!["pool".into()] }),
        l("flat", LayerKind::Flatten),
        l("fc", LayerKind::linear(4)),
    ];
    ModelDescription { name: "concat-net".into(), input: [3, 10, 10], classes: 4, layers }
}
