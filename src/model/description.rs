//! The model description: one data structure for any sequential or residual CNN.
//!
//! A description is an ordered list of named layers. Each layer takes the previous layer's output;
//! an [`LayerKind::Add`] also takes the output of an earlier, named layer (a residual connection).
//! Channel and feature counts of inputs are not stored: they are inferred from the input shape
//! (see [`crate::model::shape`]), so removing kernels only changes `out_channels` of convolutions.

use serde::{Deserialize, Serialize};

/// A whole network: input shape, class count and layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDescription {
    /// A human-readable name, e.g. `simcnn@0.25`.
    pub name: String,
    /// Input shape `[channels, height, width]`.
    pub input: [usize; 3],
    /// Number of classes: the width of the logits the last layer must produce.
    pub classes: usize,
    /// The layers, in execution order.
    pub layers: Vec<Layer>,
}

/// One named layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Unique name; tensors of this layer are stored as `<name>.weight`, `<name>.bias`, ...
    pub name: String,
    /// Name of the earlier layer whose output this layer takes; `None` (the default) takes the
    /// previous layer's output, or the image for the first layer. Lets a branch such as a
    /// ResNet projection shortcut start from an earlier tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// What the layer computes.
    #[serde(flatten)]
    pub kind: LayerKind,
}

/// The operation of a layer. Serialized with a `type` tag, e.g. `{"type": "relu"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerKind {
    /// 2-D convolution; input channels come from the previous layer.
    /// Weight `[out_channels, in_channels, kernel[0], kernel[1]]`, bias `[out_channels]`.
    Conv2d {
        /// Number of kernels (output channels).
        out_channels: usize,
        /// Kernel size `[height, width]`.
        kernel: [usize; 2],
        /// Stride `[height, width]`.
        stride: [usize; 2],
        /// Zero padding on each side `[height, width]`.
        padding: [usize; 2],
        /// Whether the layer has a bias.
        bias: bool,
        /// Channel groups: every kernel sees `in_channels / groups` input channels (weight
        /// `[out_channels, in_channels / groups, kh, kw]`). 1 (the default): all of them; equal
        /// to the input and output channel counts: a depthwise convolution, whose output channel
        /// `c` reads only input channel `c`.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: usize,
    },
    /// Batch normalisation over channels, with `weight`, `bias`, `running_mean`, `running_var`
    /// (each `[channels]`).
    BatchNorm2d {
        /// Added to the variance for numerical stability.
        eps: f64,
        /// Weight of the new batch statistic in the running averages (PyTorch convention).
        momentum: f64,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet's ReLU6).
    Relu6,
    /// Max pooling (floor mode); padded positions never win.
    MaxPool2d {
        /// Window `[height, width]`.
        kernel: [usize; 2],
        /// Stride `[height, width]`.
        stride: [usize; 2],
        /// Padding on each side `[height, width]` (default none).
        #[serde(default, skip_serializing_if = "is_zero")]
        padding: [usize; 2],
    },
    /// Average pooling (floor mode); padded positions count as zeros in the average (PyTorch's
    /// default, `count_include_pad`).
    AvgPool2d {
        /// Window `[height, width]`.
        kernel: [usize; 2],
        /// Stride `[height, width]`.
        stride: [usize; 2],
        /// Padding on each side `[height, width]` (default none).
        #[serde(default, skip_serializing_if = "is_zero")]
        padding: [usize; 2],
    },
    /// Average over all positions: `[C, H, W]` to `[C, 1, 1]`.
    GlobalAvgPool,
    /// `[C, H, W]` to `[C·H·W]`, channel-major (channel `c` owns features `c·H·W..(c+1)·H·W`).
    Flatten,
    /// Fully connected layer; input features come from the previous layer.
    /// Weight `[out_features, in_features]` (PyTorch layout), bias `[out_features]`.
    Linear {
        /// Number of outputs.
        out_features: usize,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// Dropout with drop probability `p` (identity in eval mode).
    Dropout {
        /// Probability of zeroing an element during training.
        p: f64,
    },
    /// Residual add: the previous layer's output plus the output of the earlier layer `from`.
    Add {
        /// Name of the earlier layer whose output is added.
        from: String,
    },
    /// Channel concatenation (a DenseNet / Inception join): the previous layer's channels, then
    /// those of each earlier layer in `from`, in order; every map of the same height and width.
    Concat {
        /// Names of the earlier layers whose outputs follow the input's channels.
        from: Vec<String>,
    },
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn is_zero(v: &[usize; 2]) -> bool {
    *v == [0, 0]
}

/// Where a layer's (first) input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The network's input image.
    Image,
    /// The output of the layer with this index.
    Layer(usize),
}

impl Layer {
    /// A layer called `name` that takes the previous layer's output.
    pub fn new(name: impl Into<String>, kind: LayerKind) -> Self {
        Layer { name: name.into(), input: None, kind }
    }
}

impl LayerKind {
    /// The name of the layer kind as written in JSON (`conv2d`, `relu`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerKind::Conv2d { .. } => "conv2d",
            LayerKind::BatchNorm2d { .. } => "batch_norm2d",
            LayerKind::Relu => "relu",
            LayerKind::Relu6 => "relu6",
            LayerKind::MaxPool2d { .. } => "max_pool2d",
            LayerKind::AvgPool2d { .. } => "avg_pool2d",
            LayerKind::GlobalAvgPool => "global_avg_pool",
            LayerKind::Flatten => "flatten",
            LayerKind::Linear { .. } => "linear",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Add { .. } => "add",
            LayerKind::Concat { .. } => "concat",
        }
    }

    /// A 3x3 (or `k`x`k`) convolution with bias, stride 1 and the given padding.
    pub fn conv(out_channels: usize, k: usize, padding: usize) -> Self {
        LayerKind::Conv2d {
            out_channels,
            kernel: [k, k],
            stride: [1, 1],
            padding: [padding, padding],
            bias: true,
            groups: 1,
        }
    }

    /// A `k`x`k` max pooling with stride `k`.
    pub fn max_pool(k: usize) -> Self {
        LayerKind::MaxPool2d { kernel: [k, k], stride: [k, k], padding: [0, 0] }
    }

    /// A linear layer with bias.
    pub fn linear(out_features: usize) -> Self {
        LayerKind::Linear { out_features, bias: true }
    }

    /// Batch normalisation with PyTorch's defaults (eps 1e-5, momentum 0.1).
    pub fn batch_norm() -> Self {
        LayerKind::BatchNorm2d { eps: 1e-5, momentum: 0.1 }
    }
}

impl ModelDescription {
    /// Index of the layer called `name`.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// Indices of the convolution layers, in order.
    pub fn conv_indices(&self) -> Vec<usize> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l.kind, LayerKind::Conv2d { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    /// Where layer `index` takes its input from; `None` when its `input` names no earlier layer.
    pub fn source(&self, index: usize) -> Option<Source> {
        match &self.layers[index].input {
            None if index == 0 => Some(Source::Image),
            None => Some(Source::Layer(index - 1)),
            Some(name) => self.layers[..index].iter().position(|l| &l.name == name).map(Source::Layer),
        }
    }

    /// Index of the earlier layer an `Add` at `index` adds; `None` for other layers.
    pub fn add_operand(&self, index: usize) -> Option<usize> {
        match &self.layers[index].kind {
            LayerKind::Add { from } => self.layers[..index].iter().position(|l| &l.name == from),
            _ => None,
        }
    }

    /// Indices of the earlier layers a `Concat` at `index` appends, in order (`None` for other
    /// layers, or when one names no earlier layer).
    pub fn concat_operands(&self, index: usize) -> Option<Vec<usize>> {
        match &self.layers[index].kind {
            LayerKind::Concat { from } => {
                from.iter().map(|f| self.layers[..index].iter().position(|l| &l.name == f)).collect()
            }
            _ => None,
        }
    }

    /// Pretty JSON text of the description.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a description always serializes")
    }
}
