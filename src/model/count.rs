//! Counting: kernels, parameters and multiply-accumulates, per layer and in total.
//!
//! MACs follow fvcore's convention (the paper's Table 2): a convolution costs
//! `out_channels · out_H · out_W · (in_channels / groups) · kh · kw`, a linear layer `in · out`; bias,
//! BatchNorm, activations, pooling and adds are not counted. Parameters are the trainable tensors
//! (BatchNorm running statistics are buffers, as in PyTorch, and not counted).

use serde::Serialize;

use crate::error::Result;
use crate::model::description::{LayerKind, ModelDescription};
use crate::model::shape::{ActShape, infer_shapes};
use crate::model::weights::param_specs;

/// Counts for one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCount {
    /// The layer's name.
    pub name: String,
    /// The layer kind as written in JSON.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Output shape for one image, e.g. `64x32x32` or `10`.
    pub output: String,
    /// Convolution kernels (output channels); 0 for other layers.
    pub kernels: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates for one image.
    pub macs: u64,
}

/// Counts for a whole model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCount {
    /// The model's name.
    pub model: String,
    /// Input shape `[C, H, W]`.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Total convolution kernels.
    pub kernels: usize,
    /// Total trainable parameters.
    pub params: usize,
    /// Total multiply-accumulates for one image.
    pub macs: u64,
    /// Per-layer counts, in layer order.
    pub layers: Vec<LayerCount>,
}

/// Counts kernels, parameters and MACs of `desc`.
pub fn count(desc: &ModelDescription) -> Result<ModelCount> {
    let shapes = infer_shapes(desc)?;
    let specs = param_specs(desc, &shapes);
    let mut layers = Vec::with_capacity(desc.layers.len());
    for (i, (layer, shape)) in desc.layers.iter().zip(&shapes).enumerate() {
        let params = specs
            .iter()
            .filter(|s| s.layer == i && s.role.is_trainable())
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        let (kernels, macs) = match (&layer.kind, shape.output) {
            (LayerKind::Conv2d { out_channels, kernel, groups, .. }, ActShape::Map([c, h, w])) => {
                // Each kernel reads `in / groups` channels (fvcore counts grouped convs so too).
                let cin = (shape.input.channels() / groups) as u64;
                (*out_channels, (c * h * w) as u64 * cin * (kernel[0] * kernel[1]) as u64)
            }
            (LayerKind::Linear { out_features, .. }, _) => (0, (shape.input.numel() * out_features) as u64),
            _ => (0, 0),
        };
        layers.push(LayerCount {
            name: layer.name.clone(),
            kind: layer.kind.type_name(),
            output: shape.output.to_string(),
            kernels,
            params,
            macs,
        });
    }
    Ok(ModelCount {
        model: desc.name.clone(),
        input: desc.input,
        classes: desc.classes,
        kernels: layers.iter().map(|l| l.kernels).sum(),
        params: layers.iter().map(|l| l.params).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        layers,
    })
}
