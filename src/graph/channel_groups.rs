//! Channel dependency groups, derived from a model description alone.
//!
//! A convolution's output channels flow through BatchNorm, ReLU, pooling and dropout to the input
//! channels of the next convolution, or through a flatten to blocks of columns of the next linear
//! layer (channel-major: channel `c` owns columns `c·HW..(c+1)·HW`). A residual add joins the
//! channels of its two operands, so the convolutions feeding it form one group and share one
//! keep-mask. A depthwise convolution (groups = input channels = kernels) maps channel `c` to
//! channel `c`, so its input and output are one group: removing a channel removes it on both
//! sides. A grouped convolution with 1 < groups < channels must keep its groups equal in size;
//! its input and output channels stay out of the search ([`ChannelGroups::uncut`] says which). A
//! group is *cuttable* unless it contains the image channels, a linear layer's outputs, the logits,
//! a grouped convolution's channels or a channel concat's (a concat's inputs and output are left
//! out of the search for now, and named in [`ChannelGroups::uncut`]).

use crate::error::Result;
use crate::model::description::{LayerKind, ModelDescription, Source};
use crate::model::shape::{ActShape, LayerShape, infer_shapes};

/// One set of channels that must be kept or removed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    /// Number of channels (every producer's `out_channels`).
    pub width: usize,
    /// Convolution layers whose output channels are these channels, in layer order.
    pub producers: Vec<usize>,
    /// BatchNorm layers that normalise these channels.
    pub norms: Vec<usize>,
    /// Convolution layers that read these channels as input channels.
    pub conv_consumers: Vec<usize>,
    /// Linear layers that read these channels flattened, with the positions per channel (H·W).
    pub linear_consumers: Vec<(usize, usize)>,
}

/// How one layer's tensors relate to the cuttable groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerChannels {
    /// Cuttable group of the layer's input channels (for a linear layer: of the flattened map).
    pub input: Option<usize>,
    /// Cuttable group of the layer's output channels.
    pub output: Option<usize>,
    /// For a linear layer reading a flattened group: positions per channel (H·W).
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
    /// Grouped convolutions (1 < groups < channels) and channel concats whose channels stay out
    /// of the search, with why.
    pub uncut: Vec<(usize, String)>,
}

/// The channel identity of an activation: a union-find node, and H·W when flattened.
#[derive(Debug, Clone, Copy)]
struct Channels {
    node: usize,
    flat_positions: Option<usize>,
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
        let image = Channels { node: uf.add(true), flat_positions: None };
        let mut outputs: Vec<Channels> = Vec::with_capacity(desc.layers.len());
        let mut inputs: Vec<Channels> = Vec::with_capacity(desc.layers.len());
        let mut uncut = Vec::new();
        let depthwise: Vec<bool> = (0..desc.layers.len()).map(|i| is_depthwise(desc, &shapes, i)).collect();
        for (i, layer) in desc.layers.iter().enumerate() {
            let input = match desc.source(i).expect("validated") {
                Source::Image => image,
                Source::Layer(j) => outputs[j],
            };
            let output = match &layer.kind {
                LayerKind::Conv2d { groups: 1, .. } => Channels { node: uf.add(false), flat_positions: None },
                LayerKind::Conv2d { .. } if depthwise[i] => input,
                LayerKind::Conv2d { groups, .. } => {
                    uf.fix(input.node);
                    uncut.push((
                        i,
                        format!(
                            "grouped convolution ({groups} groups): its input and output channels are left out of \
                             the search, since removing them would make its groups unequal"
                        ),
                    ));
                    Channels { node: uf.add(true), flat_positions: None }
                }
                LayerKind::Linear { .. } => Channels { node: uf.add(true), flat_positions: None },
                LayerKind::Concat { .. } => {
                    // Not cut yet: its operands' channels and its output stay out of the search.
                    uf.fix(input.node);
                    for j in desc.concat_operands(i).expect("validated") {
                        uf.fix(outputs[j].node);
                    }
                    uncut.push((
                        i,
                        "channel concat: the channels it joins are left out of the search (cutting through a \
                         concat is not built yet)"
                            .to_string(),
                    ));
                    Channels { node: uf.add(true), flat_positions: None }
                }
                LayerKind::Flatten => {
                    let ActShape::Map([_, h, w]) = shapes[i].input else { unreachable!("validated") };
                    Channels { node: input.node, flat_positions: Some(h * w) }
                }
                LayerKind::Add { .. } => {
                    let other = outputs[desc.add_operand(i).expect("validated")];
                    uf.union(input.node, other.node);
                    if input.flat_positions != other.flat_positions {
                        uf.fix(input.node);
                    }
                    input
                }
                LayerKind::BatchNorm2d { .. }
                | LayerKind::Relu
                | LayerKind::Relu6
                | LayerKind::MaxPool2d { .. }
                | LayerKind::AvgPool2d { .. }
                | LayerKind::GlobalAvgPool
                | LayerKind::Dropout { .. } => input,
            };
            inputs.push(input);
            outputs.push(output);
        }
        // The logits are never cut.
        uf.fix(outputs[outputs.len() - 1].node);

        // Number the cuttable roots in order of their first producer.
        let mut index_of_root: Vec<Option<usize>> = vec![None; uf.parent.len()];
        let mut groups: Vec<ChannelGroup> = Vec::new();
        for (i, layer) in desc.layers.iter().enumerate() {
            if let LayerKind::Conv2d { out_channels, .. } = layer.kind {
                let root = uf.find(outputs[i].node);
                if !uf.fixed[root] && index_of_root[root].is_none() {
                    index_of_root[root] = Some(groups.len());
                    groups.push(ChannelGroup {
                        width: out_channels,
                        producers: Vec::new(),
                        norms: Vec::new(),
                        conv_consumers: Vec::new(),
                        linear_consumers: Vec::new(),
                    });
                }
            }
        }
        let mut group_of = |c: Channels| {
            let root = uf.find(c.node);
            index_of_root[root]
        };
        let mut layers = Vec::with_capacity(desc.layers.len());
        for (i, layer) in desc.layers.iter().enumerate() {
            let input = group_of(inputs[i]);
            let output = group_of(outputs[i]);
            let mut channels = LayerChannels::default();
            match &layer.kind {
                LayerKind::Conv2d { .. } if depthwise[i] => {
                    // Channel c in, channel c out: its kernels follow the group as a producer's
                    // do, and it reads no other channel to cut.
                    channels.output = output;
                    channels.depthwise = true;
                    if let Some(g) = output {
                        groups[g].producers.push(i);
                    }
                }
                LayerKind::Conv2d { .. } => {
                    channels.input = input;
                    channels.output = output;
                    if let Some(g) = output {
                        groups[g].producers.push(i);
                    }
                    if let Some(g) = input {
                        groups[g].conv_consumers.push(i);
                    }
                }
                LayerKind::BatchNorm2d { .. } => {
                    channels.input = input;
                    channels.output = input;
                    if let Some(g) = input {
                        groups[g].norms.push(i);
                    }
                }
                LayerKind::Linear { .. } => {
                    channels.input = input;
                    if let Some(g) = input {
                        let positions = inputs[i].flat_positions.expect("a linear layer reads a vector");
                        channels.flat_positions = Some(positions);
                        groups[g].linear_consumers.push((i, positions));
                    }
                }
                _ => {
                    channels.input = input;
                    channels.output = output;
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
