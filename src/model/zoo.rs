//! Named architectures (the models of the paper's section 5.2 and its authors' code), built as
//! model descriptions.
//!
//! An architecture is named `NAME` or `NAME@WIDTH`, e.g. `simcnn@0.25`: every convolution and
//! hidden fully connected width is multiplied by `WIDTH` (rounded half to even, at least 1, as the
//! PyTorch reference does). The input shape and class count are parameters.

use crate::error::{Error, Result};
use crate::model::description::{Layer, LayerKind, ModelDescription};

/// The architectures this module builds, with a one-line description each.
pub const ARCHITECTURES: &[(&str, &str)] = &[
    ("simcnn", "VGG-style: 13 conv 3x3 + 3 FC, 5 max-pools, dropout 0.5 (4224 kernels at width 1)"),
    ("rescnn", "12 conv 3x3 blocks + 1 FC, residual adds 1->3, 5->7, 9->11 (4288 kernels)"),
    ("simcnn-weak", "overly simple SimCNN: 4 x [conv 64 + max-pool] + 1 FC"),
    ("rescnn-weak", "overly simple ResCNN: 4 conv blocks of 64, residual add 0->2, 1 FC"),
    ("simcnn-svhn-weak", "SVHN weak SimCNN: 2 conv 5x5 of 8 + max-pools + 1 FC"),
    ("rescnn-svhn-weak", "SVHN weak ResCNN: 3 conv 5x5 blocks of 8, residual add 0->2, 1 FC"),
    ("simcnn-nodrop", "SimCNN without dropout (for the poor-fit recipes)"),
    ("rescnn-nodrop", "ResCNN without dropout (for the poor-fit recipes)"),
    ("resnet8-bn", "small CIFAR ResNet with BatchNorm, projection shortcuts and global average pool"),
    ("vgg16-bn", "VGG-16 with BatchNorm, CIFAR variant: 13 conv-BN-ReLU, 5 max-pools, 1 FC (torchvision names)"),
    ("resnet18", "ResNet-18, CIFAR variant: 3x3 stem, no max-pool, 8 basic blocks (torchvision names)"),
    ("mobilenetv2", "MobileNetV2, CIFAR variant: stride-1 stem and first 24-channel stage (torchvision names)"),
];

/// An architecture name split into base name and width multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchSpec {
    /// Base name, one of [`ARCHITECTURES`].
    pub name: String,
    /// Width multiplier (1.0 when not given).
    pub width: f64,
}

impl ArchSpec {
    /// Parses `NAME` or `NAME@WIDTH`.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, width) = match text.split_once('@') {
            Some((n, w)) => {
                let width: f64 = w.parse().map_err(|_| {
                    Error::Invalid(format!("architecture `{text}`: width `{w}` is not a number (e.g. simcnn@0.25)"))
                })?;
                (n, width)
            }
            None => (text, 1.0),
        };
        if !(width > 0.0 && width <= MAX_WIDTH) {
            return Err(Error::Invalid(format!("architecture `{text}`: the width must lie in (0, {MAX_WIDTH}]")));
        }
        if !ARCHITECTURES.iter().any(|(n, _)| *n == name) {
            let known: Vec<&str> = ARCHITECTURES.iter().map(|(n, _)| *n).collect();
            return Err(Error::Invalid(format!(
                "unknown architecture `{}`; known: {}",
                crate::error::printable(name),
                known.join(", ")
            )));
        }
        Ok(ArchSpec { name: name.to_string(), width })
    }

    /// The canonical text, `NAME` at width 1 and `NAME@WIDTH` otherwise.
    pub fn label(&self) -> String {
        if self.width == 1.0 { self.name.clone() } else { format!("{}@{}", self.name, self.width) }
    }
}

/// The largest width multiplier (16x the paper's widths is far beyond any CPU's memory already).
pub const MAX_WIDTH: f64 = 16.0;

/// Builds the description of architecture `arch` (`NAME` or `NAME@WIDTH`) for images of shape
/// `input` = `[C, H, W]` and `classes` classes. Fails, naming the layer, when the input is too small.
pub fn build(arch: &str, input: [usize; 3], classes: usize) -> Result<ModelDescription> {
    let spec = ArchSpec::parse(arch)?;
    let w = |c: usize| scaled(c, spec.width);
    let mut b = Builder::default();
    match spec.name.as_str() {
        "simcnn" | "simcnn-nodrop" => simcnn(&mut b, &w, classes, spec.name == "simcnn"),
        "rescnn" | "rescnn-nodrop" => rescnn(&mut b, &w, classes, spec.name == "rescnn"),
        "simcnn-weak" => {
            for i in 0..4 {
                b.conv_relu(i, w(64), 3, 1);
                b.push(format!("pool_{i}"), LayerKind::max_pool(2));
            }
            b.push("flatten", LayerKind::Flatten);
            b.push("fc_4", LayerKind::linear(classes));
        }
        "rescnn-weak" => {
            residual_blocks(&mut b, &[(w(64), true), (w(64), false), (w(64), false), (w(64), true)], 3, 1, &[(0, 2)]);
            b.push("flatten", LayerKind::Flatten);
            b.push("dropout", LayerKind::Dropout { p: 0.4 });
            b.push("classifier", LayerKind::linear(classes));
        }
        "simcnn-svhn-weak" => {
            for i in 0..2 {
                b.conv_relu(i, w(8), 5, 0);
                b.push(format!("pool_{i}"), LayerKind::max_pool(2));
            }
            b.push("flatten", LayerKind::Flatten);
            b.push("fc_2", LayerKind::linear(classes));
        }
        "rescnn-svhn-weak" => {
            residual_blocks(&mut b, &[(w(8), true), (w(8), false), (w(8), false)], 5, 2, &[(0, 2)]);
            b.push("pool", LayerKind::max_pool(2));
            b.push("flatten", LayerKind::Flatten);
            b.push("classifier", LayerKind::linear(classes));
        }
        "resnet8-bn" => resnet8_bn(&mut b, &w, classes),
        "vgg16-bn" => vgg16_bn(&mut b, &w, classes),
        "resnet18" => resnet18(&mut b, &w, classes),
        "mobilenetv2" => mobilenetv2(&mut b, &w, classes),
        _ => unreachable!("ArchSpec::parse accepts only known names"),
    }
    let desc = ModelDescription { name: spec.label(), input, classes, layers: b.layers };
    desc.validate().map_err(|e| {
        let [c, h, w] = input;
        Error::Invalid(format!("architecture `{}` for {c}x{h}x{w} images and {classes} classes: {e}", spec.label()))
    })?;
    Ok(desc)
}

/// `round_half_even(c · width)`, at least 1: the PyTorch reference's `max(1, round(c * width))`.
pub fn scaled(c: usize, width: f64) -> usize {
    ((c as f64 * width).round_ties_even() as usize).max(1)
}

#[derive(Default)]
struct Builder {
    layers: Vec<Layer>,
}

impl Builder {
    fn push(&mut self, name: impl Into<String>, kind: LayerKind) -> String {
        let layer = Layer::new(name, kind);
        let name = layer.name.clone();
        self.layers.push(layer);
        name
    }

    fn push_from(&mut self, name: impl Into<String>, input: &str, kind: LayerKind) -> String {
        let name = self.push(name, kind);
        self.layers.last_mut().expect("just pushed").input = Some(input.to_string());
        name
    }

    fn last(&self) -> String {
        self.layers.last().map(|l| l.name.clone()).unwrap_or_default()
    }

    fn conv_relu(&mut self, i: usize, out: usize, k: usize, padding: usize) {
        self.push(format!("conv_{i}"), LayerKind::conv(out, k, padding));
        self.push(format!("relu_{i}"), LayerKind::Relu);
    }
}

fn simcnn(b: &mut Builder, w: &dyn Fn(usize) -> usize, classes: usize, dropout: bool) {
    const WIDTHS: [usize; 13] = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512];
    const POOL_AFTER: [usize; 5] = [1, 3, 6, 9, 12];
    for (i, &c) in WIDTHS.iter().enumerate() {
        b.conv_relu(i, w(c), 3, 1);
        if POOL_AFTER.contains(&i) {
            b.push(format!("pool_{i}"), LayerKind::max_pool(2));
        }
    }
    b.push("flatten", LayerKind::Flatten);
    for (i, fc) in [13, 14].into_iter().enumerate() {
        if dropout {
            b.push(format!("dropout_{i}"), LayerKind::Dropout { p: 0.5 });
        }
        b.push(format!("fc_{fc}"), LayerKind::linear(w(512)));
        b.push(format!("relu_{fc}"), LayerKind::Relu);
    }
    b.push("fc_15", LayerKind::linear(classes));
}

fn rescnn(b: &mut Builder, w: &dyn Fn(usize) -> usize, classes: usize, dropout: bool) {
    const BLOCKS: [(usize, bool); 12] = [
        (64, false),
        (128, true),
        (128, false),
        (128, false),
        (256, true),
        (512, true),
        (512, false),
        (512, false),
        (512, true),
        (512, true),
        (512, false),
        (512, false),
    ];
    let blocks: Vec<(usize, bool)> = BLOCKS.iter().map(|&(c, pool)| (w(c), pool)).collect();
    residual_blocks(b, &blocks, 3, 1, &[(1, 3), (5, 7), (9, 11)]);
    b.push("flatten", LayerKind::Flatten);
    if dropout {
        b.push("dropout", LayerKind::Dropout { p: 0.4 });
    }
    b.push("classifier", LayerKind::linear(classes));
}

/// Blocks of conv (k x k) + ReLU (+ 2x2 max-pool); for each pair `(a, b)` in `adds`, block a's
/// output is added to block b's output (no ReLU after the add).
fn residual_blocks(b: &mut Builder, blocks: &[(usize, bool)], k: usize, padding: usize, adds: &[(usize, usize)]) {
    let mut outputs: Vec<String> = Vec::new();
    for (i, &(c, pool)) in blocks.iter().enumerate() {
        b.conv_relu(i, c, k, padding);
        if pool {
            b.push(format!("pool_{i}"), LayerKind::max_pool(2));
        }
        if let Some(&(from, _)) = adds.iter().find(|&&(_, to)| to == i) {
            b.push(format!("add_{i}"), LayerKind::Add { from: outputs[from].clone() });
        }
        outputs.push(b.last());
    }
}

/// A CIFAR ResNet-8: stem conv 16 + BN + ReLU, three basic blocks (16, 32/2, 64/2) with 1x1
/// projection shortcuts where the shape changes, global average pool, one linear layer.
fn resnet8_bn(b: &mut Builder, w: &dyn Fn(usize) -> usize, classes: usize) {
    let conv = |out: usize, k: usize, stride: usize| LayerKind::Conv2d {
        out_channels: out,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        bias: false,
        groups: 1,
    };
    b.push("stem_conv", conv(w(16), 3, 1));
    b.push("stem_bn", LayerKind::batch_norm());
    let mut input = b.push("stem_relu", LayerKind::Relu);
    let mut channels = w(16);
    for (s, (c, stride)) in [(w(16), 1), (w(32), 2), (w(64), 2)].into_iter().enumerate() {
        b.push(format!("block{s}_conv1"), conv(c, 3, stride));
        b.push(format!("block{s}_bn1"), LayerKind::batch_norm());
        b.push(format!("block{s}_relu1"), LayerKind::Relu);
        b.push(format!("block{s}_conv2"), conv(c, 3, 1));
        let residual = b.push(format!("block{s}_bn2"), LayerKind::batch_norm());
        let shortcut = if stride != 1 || c != channels {
            b.push_from(format!("block{s}_shortcut_conv"), &input, conv(c, 1, stride));
            b.push(format!("block{s}_shortcut_bn"), LayerKind::batch_norm())
        } else {
            input.clone()
        };
        // The add takes the shortcut (previous layer or the block input) plus the residual branch.
        if shortcut == input {
            b.push_from(format!("block{s}_add"), &residual, LayerKind::Add { from: shortcut });
        } else {
            b.push(format!("block{s}_add"), LayerKind::Add { from: residual });
        }
        input = b.push(format!("block{s}_relu2"), LayerKind::Relu);
        channels = c;
    }
    b.push("pool", LayerKind::GlobalAvgPool);
    b.push("flatten", LayerKind::Flatten);
    b.push("fc", LayerKind::linear(classes));
}

/// A convolution without bias, `k`x`k` with padding `k / 2`, in `groups` groups.
fn conv_nobias(out: usize, k: usize, stride: usize, groups: usize) -> LayerKind {
    LayerKind::Conv2d {
        out_channels: out,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        bias: false,
        groups,
    }
}

/// VGG-16 with BatchNorm as torchvision's `vgg16_bn` names it (`features.N`), with the CIFAR
/// classifier the peers use: the 1x1x512 map flattened into one linear layer `classifier`.
fn vgg16_bn(b: &mut Builder, w: &dyn Fn(usize) -> usize, classes: usize) {
    const CFG: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
    let mut index = 0;
    for c in CFG {
        if c == 0 {
            b.push(format!("features.{index}"), LayerKind::max_pool(2));
            index += 1;
        } else {
            b.push(format!("features.{index}"), LayerKind::conv(w(c), 3, 1));
            b.push(format!("features.{}", index + 1), LayerKind::batch_norm());
            b.push(format!("features.{}", index + 2), LayerKind::Relu);
            index += 3;
        }
    }
    b.push("flatten", LayerKind::Flatten);
    b.push("classifier", LayerKind::linear(classes));
}

/// ResNet-18 as torchvision's `resnet18` names it (`conv1`, `layerL.B.conv1`,
/// `layerL.B.downsample.0`, `fc`), CIFAR variant: a 3x3 stride-1 stem and no max-pool.
fn resnet18(b: &mut Builder, w: &dyn Fn(usize) -> usize, classes: usize) {
    b.push("conv1", conv_nobias(w(64), 3, 1, 1));
    b.push("bn1", LayerKind::batch_norm());
    let mut input = b.push("relu", LayerKind::Relu);
    let mut channels = w(64);
    for (l, (planes, first_stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
        let planes = w(planes);
        for block in 0..2 {
            let stride = if block == 0 { first_stride } else { 1 };
            let p = format!("layer{}.{block}", l + 1);
            b.push(format!("{p}.conv1"), conv_nobias(planes, 3, stride, 1));
            b.push(format!("{p}.bn1"), LayerKind::batch_norm());
            b.push(format!("{p}.relu1"), LayerKind::Relu);
            b.push(format!("{p}.conv2"), conv_nobias(planes, 3, 1, 1));
            let residual = b.push(format!("{p}.bn2"), LayerKind::batch_norm());
            if stride != 1 || planes != channels {
                b.push_from(format!("{p}.downsample.0"), &input, conv_nobias(planes, 1, stride, 1));
                b.push(format!("{p}.downsample.1"), LayerKind::batch_norm());
                b.push(format!("{p}.add"), LayerKind::Add { from: residual });
            } else {
                b.push(format!("{p}.add"), LayerKind::Add { from: input.clone() });
            }
            input = b.push(format!("{p}.relu2"), LayerKind::Relu);
            channels = planes;
        }
    }
    b.push("avgpool", LayerKind::GlobalAvgPool);
    b.push("flatten", LayerKind::Flatten);
    b.push("fc", LayerKind::linear(classes));
}

/// MobileNetV2 as torchvision's `mobilenet_v2` names it (`features.I.conv.J.K`, `classifier.1`),
/// CIFAR variant: stride 1 in the stem and in the first 24-channel stage. Each inverted residual
/// block: 1x1 expansion (not for t = 1) + BN + ReLU6, depthwise 3x3 + BN + ReLU6, 1x1 projection
/// + BN, and a residual add where the stride is 1 and the width stays.
fn mobilenetv2(b: &mut Builder, w: &dyn Fn(usize) -> usize, classes: usize) {
    // (expansion t, output channels c, blocks n, first stride s)
    const SETTINGS: [(usize, usize, usize, usize); 7] =
        [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
    let mut channels = w(32);
    b.push("features.0.0", conv_nobias(channels, 3, 1, 1));
    b.push("features.0.1", LayerKind::batch_norm());
    let mut input = b.push("features.0.2", LayerKind::Relu6);
    let mut index = 1;
    for (t, c, n, s) in SETTINGS {
        let out = w(c);
        for block in 0..n {
            let stride = if block == 0 { s } else { 1 };
            let hidden = channels * t;
            let p = format!("features.{index}.conv");
            let mut j = 0;
            if t != 1 {
                b.push(format!("{p}.0.0"), conv_nobias(hidden, 1, 1, 1));
                b.push(format!("{p}.0.1"), LayerKind::batch_norm());
                b.push(format!("{p}.0.2"), LayerKind::Relu6);
                j = 1;
            }
            b.push(format!("{p}.{j}.0"), conv_nobias(hidden, 3, stride, hidden));
            b.push(format!("{p}.{j}.1"), LayerKind::batch_norm());
            b.push(format!("{p}.{j}.2"), LayerKind::Relu6);
            b.push(format!("{p}.{}", j + 1), conv_nobias(out, 1, 1, 1));
            let last = b.push(format!("{p}.{}", j + 2), LayerKind::batch_norm());
            input = if stride == 1 && channels == out {
                b.push(format!("features.{index}.add"), LayerKind::Add { from: input })
            } else {
                last
            };
            channels = out;
            index += 1;
        }
    }
    let last = w(1280);
    b.push(format!("features.{index}.0"), conv_nobias(last, 1, 1, 1));
    b.push(format!("features.{index}.1"), LayerKind::batch_norm());
    b.push(format!("features.{index}.2"), LayerKind::Relu6);
    b.push("avgpool", LayerKind::GlobalAvgPool);
    b.push("flatten", LayerKind::Flatten);
    b.push("classifier.0", LayerKind::Dropout { p: 0.2 });
    b.push("classifier.1", LayerKind::linear(classes));
}
