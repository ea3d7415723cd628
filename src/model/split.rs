//! Splitting a model at a *cut* between two layers into a prefix and a suffix that, run one after
//! the other, compute what the whole model computes. The sensitivity table uses it to run the
//! layers that a segment's kernel removal leaves unchanged once, not once per module.
//!
//! A cut before layer `j` is usable when exactly one tensor crosses it: every layer from `j` on
//! reads only tensors made from layer `j − 1` on (the image when `j = 0`). Layer `j − 1`'s output
//! then is the suffix's input image; an identity layer carrying its name stands first in the suffix,
//! so a residual add or branch that names it still finds it.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::description::{Layer, LayerKind, ModelDescription, Source};
use crate::model::shape::{ActShape, infer_shapes};
use crate::model::weights::Weights;

/// The latest usable cut at or before layer `limit` (0, before the first layer, always is).
pub fn latest_cut(desc: &ModelDescription, limit: usize) -> usize {
    let limit = limit.min(desc.layers.len().saturating_sub(1));
    let shapes = infer_shapes(desc).ok();
    (1..=limit).rev().find(|&j| crosses_one_map(desc, shapes.as_deref(), j)).unwrap_or(0)
}

/// Whether only layer `j − 1`'s output, a feature map, crosses the cut before layer `j`.
fn crosses_one_map(desc: &ModelDescription, shapes: Option<&[crate::model::shape::LayerShape]>, j: usize) -> bool {
    let is_map = shapes.is_some_and(|s| matches!(s[j - 1].output, ActShape::Map(_)));
    let reads_before = |i: usize| {
        let source = match desc.source(i) {
            Some(Source::Layer(k)) => k < j - 1,
            Some(Source::Image) | None => true,
        };
        source
            || desc.add_operand(i).is_some_and(|k| k < j - 1)
            || desc.concat_operands(i).is_some_and(|ks| ks.iter().any(|&k| k < j - 1))
    };
    is_map && !(j..desc.layers.len()).any(reads_before)
}

/// Layers `0..cut` of `model` followed by a flatten: its `[n, C·H·W]` "logits" are the activations
/// entering layer `cut`, row-major `[n, C, H, W]`. `cut` must be usable and at least 1.
pub fn prefix(model: &Model, cut: usize) -> Result<Model> {
    let desc = &model.description;
    let [c, h, w] = cut_shape(desc, cut)?;
    let mut layers = desc.layers[..cut].to_vec();
    layers.push(Layer::new(unused_name(desc, "cut_flatten"), LayerKind::Flatten));
    let description = ModelDescription {
        name: format!("{} (layers before {})", desc.name, desc.layers[cut].name),
        input: desc.input,
        classes: c * h * w,
        layers,
    };
    Model::new(description, weights_of(model, &desc.layers[..cut]))
}

/// Layers `cut..` of `model`, taking the activation entering layer `cut` (the output of layer
/// `cut − 1`, `[C, H, W]`) as its input image. `cut` must be usable and at least 1.
pub fn suffix(model: &Model, cut: usize) -> Result<Model> {
    let desc = &model.description;
    let input = cut_shape(desc, cut)?;
    let mut layers = vec![Layer::new(desc.layers[cut - 1].name.clone(), LayerKind::Dropout { p: 0.0 })];
    layers.extend_from_slice(&desc.layers[cut..]);
    let description = ModelDescription {
        name: format!("{} (from {})", desc.name, desc.layers[cut].name),
        input,
        classes: desc.classes,
        layers,
    };
    Model::new(description, weights_of(model, &desc.layers[cut..]))
}

/// The shape of the activation crossing the cut before layer `cut`; an error unless the cut is
/// usable and at least 1.
fn cut_shape(desc: &ModelDescription, cut: usize) -> Result<[usize; 3]> {
    let shapes = infer_shapes(desc)?;
    match shapes.get(cut.wrapping_sub(1)).map(|s| s.output) {
        Some(ActShape::Map(shape)) if cut < desc.layers.len() && crosses_one_map(desc, Some(&shapes), cut) => Ok(shape),
        _ => Err(Error::Invalid(format!(
            "model `{}` cannot be split before layer {cut}: more than one tensor crosses there",
            desc.name
        ))),
    }
}

/// The tensors of `layers`.
fn weights_of(model: &Model, layers: &[Layer]) -> Weights {
    let names: std::collections::HashSet<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    let tensors = model
        .weights
        .tensors
        .iter()
        .filter(|(key, _)| key.rsplit_once('.').is_some_and(|(layer, _)| names.contains(layer)))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    Weights { tensors }
}

/// `base`, or `base` with underscores appended until no layer of `desc` has the name.
fn unused_name(desc: &ModelDescription, base: &str) -> String {
    let mut name = base.to_string();
    while desc.layers.iter().any(|l| l.name == name) {
        name.push('_');
    }
    name
}
