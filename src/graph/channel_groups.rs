//! Channel dependency groups, derived from a model description alone.
//!
//! A convolution's output channels flow through BatchNorm, ReLU, pooling and dropout to the input
//! channels of the next convolution, or through a flatten to blocks of columns of the next linear
//! layer (channel-major: channel `c` owns columns `c·HW..(c+1)·HW`). A residual add joins the
//! channels of its two operands, so the convolutions feeding it form one group and share one
//! keep-mask. A depthwise convolution (groups = input channels = kernels) maps channel `c` to
//! channel `c`, so its input and output are one group: removing a channel removes it on both
//! sides. A channel concat lays its operands' channels side by side: each keeps its group, at
//! its own range of the output ([`ChannelLayout`]), so a consumer after a concat reads several
//! groups at their offsets. A grouped convolution with 1 < groups < channels must keep its groups
//! equal in size; its input and output channels stay out of the search, as do the channels of a
//! residual add whose two sides are joined differently ([`ChannelGroups::uncut`] names both). A
//! group is *cuttable* unless it contains the image channels, a linear layer's outputs, the logits
//! or channels left out as above.

use crate::error::Result;
use crate::model::description::{LayerKind, ModelDescription, Source};
use crate::model::shape::{ActShape, LayerShape, infer_shapes};

/// One set of channels that must be kept or removed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    /// Number of channels.
    pub width: usize,
    /// Convolution layers whose output channels include these channels, in layer order (a
    /// depthwise convolution over a concat produces a span of several groups).
    pub producers: Vec<usize>,
}

/// A run of consecutive channels along a tensor's channel axis (or, flattened, of column blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSpan {
    /// The cuttable group these channels are, or `None` when they are never cut.
    pub group: Option<usize>,
    /// Number of channels.
    pub width: usize,
}

/// The channel axis of one activation as spans in order: one span for a convolution's output,
/// one per operand after a channel concat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelLayout {
    /// The spans, in channel order.
    pub spans: Vec<ChannelSpan>,
}

impl ChannelLayout {
    /// The group when the whole axis is one cuttable group.
    pub fn single_group(&self) -> Option<usize> {
        match self.spans.as_slice() {
            [span] => span.group,
            _ => None,
        }
    }

    /// Whether any span is cuttable.
    pub fn has_cuttable(&self) -> bool {
        self.spans.iter().any(|s| s.group.is_some())
    }

    /// Total number of channels.
    pub fn width(&self) -> usize {
        self.spans.iter().map(|s| s.width).sum()
    }

    /// The channels kept when group `g` keeps the channels `kept[g]` (ascending), in order.
    pub fn kept(&self, kept: &[Vec<usize>]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.width());
        let mut offset = 0;
        for span in &self.spans {
            match span.group {
                Some(g) => out.extend(kept[g].iter().map(|&c| offset + c)),
                None => out.extend(offset..offset + span.width),
            }
            offset += span.width;
        }
        out
    }

    /// The channels removed when group `g` keeps the channels where `masks[g]` is true.
    pub fn removed(&self, masks: &[Vec<bool>]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut offset = 0;
        for span in &self.spans {
            if let Some(g) = span.group {
                out.extend((0..span.width).filter(|&c| !masks[g][c]).map(|c| offset + c));
            }
            offset += span.width;
        }
        out
    }
}

/// How one layer's tensors relate to the cuttable groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerChannels {
    /// The layer's input channels (for a linear layer: the flattened map's channels).
    pub input: ChannelLayout,
    /// The layer's output channels (a linear layer's outputs: one uncut span).
    pub output: ChannelLayout,
    /// For a linear layer reading a flattened map: positions per channel (H·W).
    pub flat_positions: Option<usize>,
    /// A depthwise convolution: its weight `[C, 1, kh, kw]` follows `output` along axis 0 only.
    pub depthwise: bool,
}

/// The cuttable channel groups of a description and each layer's place in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroups {
    /// The cuttable groups, ordered by their first producer.
    pub groups: Vec<ChannelGroup>,
    /// One entry per layer of the description.
    pub layers: Vec<LayerChannels>,
    /// Layers whose channels stay out of the search (grouped convolutions with
    /// 1 < groups < channels, residual adds of differently joined channels), with why.
    pub uncut: Vec<(usize, String)>,
}

/// The channel identity of an activation: union-find nodes with their widths, in channel order,
/// and H·W when flattened.
#[derive(Debug, Clone)]
struct Channels {
    spans: Vec<(usize, usize)>,
    flat_positions: Option<usize>,
}

impl Channels {
    fn new(node: usize, width: usize) -> Self {
        Channels { spans: vec![(node, width)], flat_positions: None }
    }
}

struct UnionFind {
    parent: Vec<usize>,
    fixed: Vec<bool>,
}

impl UnionFind {
    fn add(&mut self, fixed: bool) -> usize {
        self.parent.push(self.parent.len());
        self.fixed.push(fixed);
        self.parent.len() - 1
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi] = lo;
            self.fixed[lo] |= self.fixed[hi];
        }
    }

    fn fix(&mut self, a: usize) {
        let r = self.find(a);
        self.fixed[r] = true;
    }

    fn fix_all(&mut self, c: &Channels) {
        for &(node, _) in &c.spans {
            self.fix(node);
        }
    }
}

/// Whether layer `i` is a depthwise convolution: groups = input channels = kernels > 1.
fn is_depthwise(desc: &ModelDescription, shapes: &[LayerShape], i: usize) -> bool {
    match desc.layers[i].kind {
        LayerKind::Conv2d { groups, out_channels, .. } => {
            groups > 1 && groups == out_channels && groups == shapes[i].input.channels()
        }
        _ => false,
    }
}

impl ChannelGroups {
    /// Derives the groups of `desc` (which must be valid).
    pub fn derive(desc: &ModelDescription) -> Result<Self> {
        let shapes = infer_shapes(desc)?;
        let mut uf = UnionFind { parent: Vec::new(), fixed: Vec::new() };
        let image = Channels::new(uf.add(true), desc.input[0]);
        let mut outputs: Vec<Channels> = Vec::with_capacity(desc.layers.len());
        let mut inputs: Vec<Channels> = Vec::with_capacity(desc.layers.len());
        let mut uncut = Vec::new();
        let depthwise: Vec<bool> = (0..desc.layers.len()).map(|i| is_depthwise(desc, &shapes, i)).collect();
        for (i, layer) in desc.layers.iter().enumerate() {
            let input = match desc.source(i).expect("validated") {
                Source::Image => image.clone(),
                Source::Layer(j) => outputs[j].clone(),
            };
            let output = match &layer.kind {
                LayerKind::Conv2d { groups: 1, out_channels, .. } => Channels::new(uf.add(false), *out_channels),
                // Channel c in, channel c out: the same spans.
                LayerKind::Conv2d { .. } if depthwise[i] => input.clone(),
                LayerKind::Conv2d { groups, out_channels, .. } => {
                    uf.fix_all(&input);
                    uncut.push((
                        i,
                        format!(
                            "grouped convolution ({groups} groups): its input and output channels are left out of \
                             the search, since removing them would make its groups unequal"
                        ),
                    ));
                    Channels::new(uf.add(true), *out_channels)
                }
                LayerKind::Linear { out_features, .. } => Channels::new(uf.add(true), *out_features),
                LayerKind::Concat { .. } => {
                    // Each operand's spans keep their groups, at their own range of the output.
                    let mut joined = input.clone();
                    for j in desc.concat_operands(i).expect("validated") {
                        joined.spans.extend(outputs[j].spans.iter().copied());
                    }
                    joined
                }
                LayerKind::Flatten => {
                    let ActShape::Map([_, h, w]) = shapes[i].input else { unreachable!("validated") };
                    Channels { spans: input.spans.clone(), flat_positions: Some(h * w) }
                }
                LayerKind::Add { .. } => {
                    let other = &outputs[desc.add_operand(i).expect("validated")];
                    let same_spans = input.spans.len() == other.spans.len()
                        && input.spans.iter().zip(&other.spans).all(|(a, b)| a.1 == b.1)
                        && input.flat_positions == other.flat_positions;
                    if same_spans {
                        for (a, b) in input.spans.iter().zip(&other.spans) {
                            uf.union(a.0, b.0);
                        }
                    } else {
                        uf.fix_all(&input);
                        uf.fix_all(other);
                        uncut.push((
                            i,
                            "residual add of channels joined differently on its two sides: they are left out of \
                             the search"
                                .to_string(),
                        ));
                    }
                    input.clone()
                }
                LayerKind::BatchNorm2d { .. }
                | LayerKind::Relu
                | LayerKind::Relu6
                | LayerKind::MaxPool2d { .. }
                | LayerKind::AvgPool2d { .. }
                | LayerKind::GlobalAvgPool
                | LayerKind::Dropout { .. } => input.clone(),
            };
            inputs.push(input);
            outputs.push(output);
        }
        // The logits are never cut.
        uf.fix_all(&outputs[outputs.len() - 1]);

        // Number the cuttable roots in order of their first producer.
        let mut index_of_root: Vec<Option<usize>> = vec![None; uf.parent.len()];
        let mut groups: Vec<ChannelGroup> = Vec::new();
        for (i, layer) in desc.layers.iter().enumerate() {
            if matches!(layer.kind, LayerKind::Conv2d { .. }) {
                for &(node, width) in &outputs[i].spans {
                    let root = uf.find(node);
                    if !uf.fixed[root] && index_of_root[root].is_none() {
                        index_of_root[root] = Some(groups.len());
                        groups.push(ChannelGroup { width, producers: Vec::new() });
                    }
                }
            }
        }
        let mut layout_of = |c: &Channels| ChannelLayout {
            spans: c
                .spans
                .iter()
                .map(|&(node, width)| ChannelSpan { group: index_of_root[uf.find(node)], width })
                .collect(),
        };
        let mut layers = Vec::with_capacity(desc.layers.len());
        for (i, layer) in desc.layers.iter().enumerate() {
            let channels = LayerChannels {
                input: layout_of(&inputs[i]),
                output: layout_of(&outputs[i]),
                flat_positions: match layer.kind {
                    LayerKind::Linear { .. } => inputs[i].flat_positions,
                    _ => None,
                },
                depthwise: depthwise[i],
            };
            if matches!(layer.kind, LayerKind::Conv2d { .. }) {
                for span in &channels.output.spans {
                    if let Some(g) = span.group {
                        groups[g].producers.push(i);
                    }
                }
            }
            layers.push(channels);
        }
        Ok(ChannelGroups { groups, layers, uncut })
    }

    /// Names of a group's producer layers, joined by `+` (e.g. `conv_1+conv_3`).
    pub fn group_label(&self, desc: &ModelDescription, group: usize) -> String {
        self.groups[group].producers.iter().map(|&p| desc.layers[p].name.as_str()).collect::<Vec<_>>().join("+")
    }

    /// One all-ones keep-mask per group (decoding it gives the original network).
    pub fn keep_all(&self) -> Vec<Vec<bool>> {
        self.groups.iter().map(|g| vec![true; g.width]).collect()
    }
}
