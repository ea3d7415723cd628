//! Decode (kernel removal): a description, its weights and one keep-mask per channel group give
//! a physically smaller model with sliced weights (paper section 3.3.2).
//!
//! For each cuttable group ([`ChannelGroups`]) the kept channels are selected, in their original
//! order, from the output rows of its producer convolutions, the BatchNorm parameters, the input
//! channels of the consuming convolutions and the matching column blocks of consuming linear
//! layers. After a channel concat, each span of the joined channels is sliced by its own group
//! ([`ChannelLayout`]). The image channels and the logits are never cut.

use crate::error::{Error, Result};
use crate::graph::channel_groups::{ChannelGroups, ChannelLayout, LayerChannels};
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

    /// The channels each group keeps, in order (one list per group).
    pub fn kept_per_group(&self) -> Vec<Vec<usize>> {
        (0..self.masks.len()).map(|g| self.kept(g)).collect()
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
        let kept = masks.kept_per_group();
        let new_desc = with_group_widths(desc, &self.groups, |g| kept[g].len());
        let select = |layout: &ChannelLayout| -> AxisMap {
            layout.has_cuttable().then(|| layout.kept(&kept).into_iter().map(Some).collect())
        };
        let axes: Vec<(AxisMap, AxisMap)> =
            self.groups.layers.iter().map(|l| (select(&l.input), select(&l.output))).collect();
        let mut weights = Weights::default();
        for spec in &self.specs {
            let tensor = self.model.weights.get(&spec.name)?;
            let (input, output) = &axes[spec.layer];
            let sliced = slice_param(tensor, spec.role, &self.groups.layers[spec.layer], input, output, 0.0);
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
        let masks = &masks.masks;
        let mut weights = self.model.weights.clone();
        for (i, layer) in desc.layers.iter().enumerate() {
            let channels = &self.groups.layers[i];
            let block = match layer.kind {
                LayerKind::Conv2d { .. } if !channels.depthwise => 1,
                LayerKind::Linear { .. } => channels.flat_positions.unwrap_or(1),
                _ => continue,
            };
            let removed = channels.input.removed(masks);
            if removed.is_empty() {
                continue;
            }
            let name = format!("{}.weight", layer.name);
            let t = weights.tensors.get_mut(&name).ok_or_else(|| Error::layer(&layer.name, "has no weight tensor"))?;
            let d1 = t.shape[1];
            let inner: usize = t.shape.iter().skip(2).product();
            for row in t.data.chunks_mut(d1 * inner) {
                for &c in &removed {
                    row[c * block * inner..(c + 1) * block * inner].fill(0.0);
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

/// A new channel axis: new channel `i` takes old channel `map[i]` (`None`: a filled channel);
/// `None` for the whole map leaves the axis as it is.
type AxisMap = Option<Vec<Option<usize>>>;

/// One parameter of a layer with its channel axes gathered: rows (axis 0) follow the layer's
/// output channels, columns its input channels (a linear layer's in blocks of H·W), a
/// BatchNorm's parameters its input and a bias its output. `None` leaves an axis as it is. Filled
/// entries are 0, except a running variance's, which are `var_fill`.
fn slice_param(
    t: &HostTensor,
    role: ParamRole,
    channels: &LayerChannels,
    input: &AxisMap,
    output: &AxisMap,
    var_fill: f32,
) -> HostTensor {
    let (input, output) = (input.as_deref(), output.as_deref());
    match role {
        // A depthwise kernel reads one channel: its axis 1 has one entry.
        ParamRole::ConvWeight => gather(t, output, input.filter(|_| !channels.depthwise), 1, 0.0),
        ParamRole::LinearWeight => gather(t, None, input, channels.flat_positions.unwrap_or(1), 0.0),
        ParamRole::RunningVar => gather(t, input, None, 1, var_fill),
        ParamRole::NormWeight | ParamRole::NormBias | ParamRole::RunningMean => gather(t, input, None, 1, 0.0),
        ParamRole::Bias => gather(t, output, None, 1, 0.0),
    }
}

/// Gathers rows (axis 0) and blocks of `block` consecutive entries along axis 1 of `t`: new row
/// `i` is old row `rows[i]`, or `fill` where that is `None` (likewise for column blocks). A 4-D
/// conv weight is treated as `[out, in, kh·kw]` with the kernel kept whole.
fn gather(
    t: &HostTensor,
    rows: Option<&[Option<usize>]>,
    cols: Option<&[Option<usize>]>,
    block: usize,
    fill: f32,
) -> HostTensor {
    let d0 = t.shape[0];
    let d1 = t.shape.get(1).copied().unwrap_or(1);
    let inner: usize = t.shape.iter().skip(2).product();
    let all_rows: Vec<Option<usize>>;
    let rows = match rows {
        Some(r) => r,
        None => {
            all_rows = (0..d0).map(Some).collect();
            &all_rows
        }
    };
    // Columns as indices along axis 1, each a block of `block` entries.
    let col_indices: Vec<Option<usize>> = match cols {
        Some(c) => c.iter().flat_map(|&c| (0..block).map(move |k| c.map(|c| c * block + k))).collect(),
        None => (0..d1).map(Some).collect(),
    };
    let mut data = Vec::with_capacity(rows.len() * col_indices.len() * inner);
    for &r in rows {
        match r {
            Some(r) => {
                let row = &t.data[r * d1 * inner..(r + 1) * d1 * inner];
                for &c in &col_indices {
                    match c {
                        Some(c) => data.extend_from_slice(&row[c * inner..(c + 1) * inner]),
                        None => data.extend(std::iter::repeat_n(fill, inner)),
                    }
                }
            }
            None => data.extend(std::iter::repeat_n(fill, col_indices.len() * inner)),
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
    let padded: Vec<usize> = groups.groups.iter().map(|g| g.width.div_ceil(multiple) * multiple).collect();
    if groups.groups.iter().zip(&padded).all(|(g, &p)| g.width == p) {
        return Ok(model.clone());
    }
    let new_desc = with_group_widths(desc, &groups, |g| padded[g]);
    // New channel i of a span takes old channel i, and the padding after it takes nothing.
    let spread = |layout: &ChannelLayout| -> AxisMap {
        layout.has_cuttable().then(|| {
            let mut out = Vec::new();
            let mut offset = 0;
            for span in &layout.spans {
                out.extend((offset..offset + span.width).map(Some));
                if let Some(g) = span.group {
                    out.extend(std::iter::repeat_n(None, padded[g] - span.width));
                }
                offset += span.width;
            }
            out
        })
    };
    let mut weights = Weights::default();
    for spec in param_specs(desc, &infer_shapes(desc)?) {
        let t = model.weights.get(&spec.name)?;
        let channels = &groups.layers[spec.layer];
        // Padded BatchNorm channels get variance 1 (scale and shift 0 make them output 0).
        let sliced = slice_param(t, spec.role, channels, &spread(&channels.input), &spread(&channels.output), 1.0);
        weights.tensors.insert(spec.name, sliced);
    }
    Model::new(new_desc, weights)
}

/// `desc` with every convolution's output channels (and a depthwise one's groups) set to the
/// sum over its output spans of `width(group)` (an uncut span keeps its width).
fn with_group_widths(
    desc: &ModelDescription,
    groups: &ChannelGroups,
    width: impl Fn(usize) -> usize,
) -> ModelDescription {
    let mut new_desc = desc.clone();
    for (i, layer) in new_desc.layers.iter_mut().enumerate() {
        let channels = &groups.layers[i];
        if let LayerKind::Conv2d { out_channels, groups: conv_groups, .. } = &mut layer.kind
            && channels.output.has_cuttable()
        {
            *out_channels = channels.output.spans.iter().map(|s| s.group.map_or(s.width, &width)).sum();
            if channels.depthwise {
                *conv_groups = *out_channels;
            }
        }
    }
    new_desc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_picks_rows_and_column_blocks() {
        // 2 x 6 matrix; columns are 3 channels of 2 positions each.
        let t = HostTensor { shape: vec![2, 6], data: (0..12).map(|v| v as f32).collect() };
        let out = gather(&t, Some(&[Some(1)]), Some(&[Some(0), Some(2)]), 2, 0.0);
        assert_eq!(out.shape, vec![1, 4]);
        assert_eq!(out.data, vec![6.0, 7.0, 10.0, 11.0]);
    }

    #[test]
    fn gather_keeps_conv_kernels_whole() {
        // [out 2, in 3, 1, 2]
        let t = HostTensor { shape: vec![2, 3, 1, 2], data: (0..12).map(|v| v as f32).collect() };
        let out = gather(&t, Some(&[Some(0), Some(1)]), Some(&[Some(2)]), 1, 0.0);
        assert_eq!(out.shape, vec![2, 1, 1, 2]);
        assert_eq!(out.data, vec![4.0, 5.0, 10.0, 11.0]);
    }

    #[test]
    fn gather_fills_the_entries_it_has_no_source_for() {
        // 2 x 2 matrix, widened to 3 x 3: a new row and a new column of `fill`.
        let t = HostTensor { shape: vec![2, 2], data: vec![1.0, 2.0, 3.0, 4.0] };
        let out = gather(&t, Some(&[Some(0), None, Some(1)]), Some(&[Some(0), Some(1), None]), 1, 9.0);
        assert_eq!(out.shape, vec![3, 3]);
        assert_eq!(out.data, vec![1.0, 2.0, 9.0, 9.0, 9.0, 9.0, 3.0, 4.0, 9.0]);
    }
}
