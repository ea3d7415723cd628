//! Decode (kernel removal): a description, its weights and one keep-mask per channel group give
//! a physically smaller model with sliced weights (paper section 3.3.2).
//!
//! For each cuttable group ([`ChannelGroups`]) the kept channels are selected, in their original
//! order, from the output rows of its producer convolutions, the BatchNorm parameters, the input
//! channels of the consuming convolutions and the matching column blocks of consuming linear
//! layers. The image channels and the logits are never cut.

use crate::error::{Error, Result};
use crate::graph::channel_groups::ChannelGroups;
use crate::model::Model;
use crate::model::description::{LayerKind, ModelDescription};
use crate::model::shape::infer_shapes;
use crate::model::weights::{HostTensor, ParamRole, ParamSpec, Weights, param_specs};

/// One keep-mask per channel group of a model (`true` keeps the channel), checked: one mask per
/// group, each of the group's width, each keeping at least one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepMasks {
    masks: Vec<Vec<bool>>,
}

impl KeepMasks {
    /// Checks `masks` against `groups` of `desc`; the error names the group's producer layers.
    pub fn new(desc: &ModelDescription, groups: &ChannelGroups, masks: Vec<Vec<bool>>) -> Result<Self> {
        if masks.len() != groups.groups.len() {
            return Err(Error::Invalid(format!(
                "model `{}` has {} channel groups, but {} keep-masks were given",
                desc.name,
                groups.groups.len(),
                masks.len()
            )));
        }
        for (g, (group, mask)) in groups.groups.iter().zip(&masks).enumerate() {
            let label = groups.group_label(desc, g);
            if mask.len() != group.width {
                return Err(Error::layer(
                    label,
                    format!("keep-mask has {} entries, but the layer has {} kernels", mask.len(), group.width),
                ));
            }
            if !mask.iter().any(|&k| k) {
                return Err(Error::layer(
                    label,
                    "keep-mask removes every kernel: a layer must keep at least one kernel",
                ));
            }
        }
        Ok(KeepMasks { masks })
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Group `g`'s mask.
    pub fn group(&self, g: usize) -> &[bool] {
        &self.masks[g]
    }

    /// The channels group `g` keeps, in order.
    pub fn kept(&self, g: usize) -> Vec<usize> {
        self.masks[g].iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect()
    }

    /// Whether these masks were made for `groups` (same count and widths).
    fn fits(&self, groups: &ChannelGroups) -> bool {
        self.masks.len() == groups.groups.len()
            && self.masks.iter().zip(&groups.groups).all(|(m, g)| m.len() == g.width)
    }
}

/// Kernel removal for one model: its channel groups and parameter specs derived once, then any
/// number of keep-masks decoded (the search decodes thousands of modules of one model).
pub struct Decoder<'a> {
    model: &'a Model,
    groups: ChannelGroups,
    specs: Vec<ParamSpec>,
}

impl<'a> Decoder<'a> {
    /// The decoder of `model`.
    pub fn new(model: &'a Model) -> Result<Self> {
        let groups = ChannelGroups::derive(&model.description)?;
        let specs = param_specs(&model.description, &infer_shapes(&model.description)?);
        Ok(Decoder { model, groups, specs })
    }

    /// The model's channel groups.
    pub fn groups(&self) -> &ChannelGroups {
        &self.groups
    }

    /// `masks` checked against this model ([`KeepMasks::new`]).
    pub fn keep_masks(&self, masks: Vec<Vec<bool>>) -> Result<KeepMasks> {
        KeepMasks::new(&self.model.description, &self.groups, masks)
    }

    fn check(&self, masks: &KeepMasks) -> Result<()> {
        if masks.fits(&self.groups) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "keep-masks were made for another model than `{}`",
                self.model.description.name
            )))
        }
    }

    /// The smaller model that keeps, for group `g`, the channels `masks` keeps.
    pub fn decode(&self, masks: &KeepMasks) -> Result<Model> {
        self.check(masks)?;
        let desc = &self.model.description;
        let kept: Vec<Vec<usize>> = (0..masks.len()).map(|g| masks.kept(g)).collect();
        let new_desc = with_group_widths(desc, &self.groups, |g| kept[g].len());
        let mut weights = Weights::default();
        for spec in &self.specs {
            let tensor = self.model.weights.get(&spec.name)?;
            let channels = self.groups.layers[spec.layer];
            let rows = channels.output.map(|g| kept[g].as_slice());
            let cols = channels.input.map(|g| kept[g].as_slice());
            let sliced = match spec.role {
                ParamRole::ConvWeight => select_axes(tensor, rows, cols, 1),
                ParamRole::LinearWeight => select_axes(tensor, None, cols, channels.flat_positions.unwrap_or(1)),
                // A BatchNorm's parameters follow its input channels; a bias follows the output rows.
                ParamRole::NormWeight | ParamRole::NormBias | ParamRole::RunningMean | ParamRole::RunningVar => {
                    select_axes(tensor, cols, None, 1)
                }
                ParamRole::Bias => select_axes(tensor, rows, None, 1),
            };
            weights.tensors.insert(spec.name.clone(), sliced);
        }
        Model::new(new_desc, weights)
    }

    /// The reference that [`Decoder::decode`] must agree with: the original, full-size network in
    /// which every removed channel is zeroed at each consumer's input (the matching input slices
    /// of consuming convolutions and column blocks of consuming linear layers are set to zero).
    pub fn zero_removed_inputs(&self, masks: &KeepMasks) -> Result<Model> {
        self.check(masks)?;
        let desc = &self.model.description;
        let mut weights = self.model.weights.clone();
        for (g, group) in self.groups.groups.iter().enumerate() {
            let removed = masks.group(g).iter().enumerate().filter(|(_, k)| !**k).map(|(c, _)| c);
            for c in removed {
                let consumers =
                    group.conv_consumers.iter().map(|&l| (l, 1)).chain(group.linear_consumers.iter().copied());
                for (layer, block) in consumers {
                    let name = format!("{}.weight", desc.layers[layer].name);
                    let t = weights
                        .tensors
                        .get_mut(&name)
                        .ok_or_else(|| Error::layer(&desc.layers[layer].name, "has no weight tensor"))?;
                    let d1 = t.shape[1];
                    let inner: usize = t.shape.iter().skip(2).product();
                    for row in t.data.chunks_mut(d1 * inner) {
                        row[c * block * inner..(c + 1) * block * inner].fill(0.0);
                    }
                }
            }
        }
        Model::new(desc.clone(), weights)
    }
}

/// Builds the smaller model that keeps, for group `g`, the channels where `masks[g]` is true
/// (a one-off [`Decoder`]; masks checked as [`KeepMasks::new`] says).
pub fn decode(model: &Model, masks: &[Vec<bool>]) -> Result<Model> {
    let decoder = Decoder::new(model)?;
    decoder.decode(&decoder.keep_masks(masks.to_vec())?)
}

/// [`Decoder::zero_removed_inputs`] for one set of masks.
pub fn zero_removed_inputs(model: &Model, masks: &[Vec<bool>]) -> Result<Model> {
    let decoder = Decoder::new(model)?;
    decoder.zero_removed_inputs(&decoder.keep_masks(masks.to_vec())?)
}

/// Random keep-masks like the PyTorch reference's pruned networks: each group keeps
/// `round(width · (keep + (u − 0.5) · 0.2))` channels (`u` uniform in [0, 1), at least 1,
/// at most all), chosen uniformly at random.
pub fn random_keep_masks(groups: &ChannelGroups, keep: f64, rng: &mut impl rand::Rng) -> Vec<Vec<bool>> {
    use rand::seq::index::sample;
    groups
        .groups
        .iter()
        .map(|g| {
            let u: f64 = rng.random();
            let k = ((g.width as f64 * (keep + (u - 0.5) * 0.2)).round() as usize).clamp(1, g.width);
            let mut mask = vec![false; g.width];
            for i in sample(rng, g.width, k) {
                mask[i] = true;
            }
            mask
        })
        .collect()
}

/// Selects rows (axis 0) and blocks of `block` consecutive entries along axis 1 of `t`.
/// A 4-D conv weight is treated as `[out, in, kh·kw]` with `block` = 1 and the kernel kept whole.
fn select_axes(t: &HostTensor, rows: Option<&[usize]>, cols: Option<&[usize]>, block: usize) -> HostTensor {
    let d0 = t.shape[0];
    let d1 = t.shape.get(1).copied().unwrap_or(1);
    let inner: usize = t.shape.iter().skip(2).product();
    let all_rows: Vec<usize>;
    let rows = match rows {
        Some(r) => r,
        None => {
            all_rows = (0..d0).collect();
            &all_rows
        }
    };
    // Columns expressed as indices along axis 1, each a block of `block` entries.
    let col_indices: Vec<usize> = match cols {
        Some(c) => c.iter().flat_map(|&c| c * block..(c + 1) * block).collect(),
        None => (0..d1).collect(),
    };
    let mut data = Vec::with_capacity(rows.len() * col_indices.len() * inner);
    for &r in rows {
        let row = &t.data[r * d1 * inner..(r + 1) * d1 * inner];
        for &c in &col_indices {
            data.extend_from_slice(&row[c * inner..(c + 1) * inner]);
        }
    }
    let mut shape = t.shape.clone();
    shape[0] = rows.len();
    if shape.len() > 1 {
        shape[1] = col_indices.len();
    }
    HostTensor { shape, data }
}

/// Widens every cuttable channel group to a multiple of `multiple` channels with inert
/// channels: zero kernels and bias in the producers, BatchNorm scale and shift 0, and zero
/// weights in every consumer. The outputs are unchanged; ONNX Runtime runs convolutions whose
/// channel counts are multiples of 8 about twice as fast as odd ones (measured on decoded modules).
pub fn pad_channels(model: &Model, multiple: usize) -> Result<Model> {
    let desc = &model.description;
    let groups = ChannelGroups::derive(desc)?;
    let multiple = multiple.max(1);
    let widths: Vec<(usize, usize)> =
        groups.groups.iter().map(|g| (g.width, g.width.div_ceil(multiple) * multiple)).collect();
    if widths.iter().all(|(w, p)| w == p) {
        return Ok(model.clone());
    }
    let new_desc = with_group_widths(desc, &groups, |g| widths[g].1);
    let shapes = infer_shapes(desc)?;
    let mut weights = Weights::default();
    for spec in param_specs(desc, &shapes) {
        let t = model.weights.get(&spec.name)?;
        let channels = groups.layers[spec.layer];
        let rows = channels.output.map(|g| widths[g]);
        let cols = channels.input.map(|g| widths[g]);
        let padded = match spec.role {
            ParamRole::ConvWeight => widen(t, rows, cols, 1, 0.0),
            ParamRole::LinearWeight => widen(t, None, cols, channels.flat_positions.unwrap_or(1), 0.0),
            ParamRole::RunningVar => widen(t, cols, None, 1, 1.0),
            ParamRole::NormWeight | ParamRole::NormBias | ParamRole::RunningMean => widen(t, cols, None, 1, 0.0),
            ParamRole::Bias => widen(t, rows, None, 1, 0.0),
        };
        weights.tensors.insert(spec.name, padded);
    }
    Model::new(new_desc, weights)
}

/// `desc` with every convolution's output channels (and a depthwise one's groups) set to
/// `width(group)` of its channel group.
fn with_group_widths(
    desc: &ModelDescription,
    groups: &ChannelGroups,
    width: impl Fn(usize) -> usize,
) -> ModelDescription {
    let mut new_desc = desc.clone();
    for (i, layer) in new_desc.layers.iter_mut().enumerate() {
        if let (LayerKind::Conv2d { out_channels, groups: conv_groups, .. }, Some(g)) =
            (&mut layer.kind, groups.layers[i].output)
        {
            *out_channels = width(g);
            if groups.layers[i].depthwise {
                *conv_groups = width(g);
            }
        }
    }
    new_desc
}

/// Widens axis 0 from `rows.0` to `rows.1` entries and axis 1 from `cols.0` to `cols.1` blocks of
/// `block` entries, filling new entries with `fill`.
fn widen(
    t: &HostTensor,
    rows: Option<(usize, usize)>,
    cols: Option<(usize, usize)>,
    block: usize,
    fill: f32,
) -> HostTensor {
    let d0 = t.shape[0];
    let d1 = t.shape.get(1).copied().unwrap_or(1);
    let inner: usize = t.shape.iter().skip(2).product();
    let new_d0 = rows.map_or(d0, |(_, p)| p);
    let new_d1 = cols.map_or(d1, |(_, p)| p * block);
    let mut data = vec![fill; new_d0 * new_d1 * inner];
    for r in 0..d0 {
        let src = &t.data[r * d1 * inner..(r + 1) * d1 * inner];
        data[r * new_d1 * inner..r * new_d1 * inner + d1 * inner].copy_from_slice(src);
    }
    let mut shape = t.shape.clone();
    shape[0] = new_d0;
    if shape.len() > 1 {
        shape[1] = new_d1;
    }
    HostTensor { shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_axes_picks_rows_and_column_blocks() {
        // 2 x 6 matrix; columns are 3 channels of 2 positions each.
        let t = HostTensor { shape: vec![2, 6], data: (0..12).map(|v| v as f32).collect() };
        let out = select_axes(&t, Some(&[1]), Some(&[0, 2]), 2);
        assert_eq!(out.shape, vec![1, 4]);
        assert_eq!(out.data, vec![6.0, 7.0, 10.0, 11.0]);
    }

    #[test]
    fn select_axes_keeps_conv_kernels_whole() {
        // [out 2, in 3, 1, 2]
        let t = HostTensor { shape: vec![2, 3, 1, 2], data: (0..12).map(|v| v as f32).collect() };
        let out = select_axes(&t, Some(&[0, 1]), Some(&[2]), 1);
        assert_eq!(out.shape, vec![2, 1, 1, 2]);
        assert_eq!(out.data, vec![4.0, 5.0, 10.0, 11.0]);
    }
}
