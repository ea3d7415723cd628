//! Runs a model description on burn: small layer structs built from explicit tensors, plus a
//! plan of the stateless steps, so any description (sequential, residual, with BatchNorm) runs.
//!
//! Train mode (dropout active, BatchNorm on batch statistics) is in effect when the net lives on
//! an autodiff device and has not been switched with [`Module::valid`]; otherwise eval mode.

use std::sync::Arc;

use burn::module::{Module, Param, RunningState};
use burn::nn::BatchNorm;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, conv2d, linear, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData, activation::relu};
use rand::Rng;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::description::{LayerKind, ModelDescription, Source};
use crate::model::shape::infer_shapes;
use crate::model::weights::{HostTensor, Weights};

/// A convolution: weight `[out, in / groups, kh, kw]`, optional bias `[out]`.
#[derive(Module, Debug)]
pub struct ConvLayer {
    /// Kernel weights `[out, in / groups, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    /// Bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    options: ConvOptions<2>,
}

/// A fully connected layer stored as burn expects it: weight `[in, out]`, bias `[out]`.
#[derive(Module, Debug)]
pub struct LinearLayer {
    /// Weights `[in, out]` (the transpose of the PyTorch layout in the weights file).
    pub weight: Param<Tensor<2>>,
    /// Bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

/// A layer with state.
#[derive(Module, Debug)]
pub enum StateLayer {
    /// Convolution.
    Conv(ConvLayer),
    /// Batch normalisation (burn's own, with running statistics).
    Norm(BatchNorm),
    /// Fully connected.
    Linear(LinearLayer),
}

/// One step of the forward pass.
#[derive(Debug, Clone)]
enum Op {
    State(usize),
    Relu,
    Relu6,
    MaxPool(MaxPoolOptions<2>),
    AvgPool(AvgPoolOptions<2>),
    GlobalAvgPool,
    Flatten,
    Add(usize),
    Concat(Vec<usize>),
    Dropout(f64),
}

#[derive(Debug, Clone)]
struct Plan {
    ops: Vec<Op>,
    sources: Vec<Source>,
    /// Whether a later layer reads this layer's output out of order (so it must be kept).
    kept: Vec<bool>,
    description: ModelDescription,
}

/// An activation tensor for a batch: a map `[N, C, H, W]` or vectors `[N, F]`.
#[derive(Debug, Clone)]
pub enum Activation {
    /// Feature maps `[N, C, H, W]`.
    Map(Tensor<4>),
    /// Feature vectors `[N, F]`.
    Flat(Tensor<2>),
}

impl Activation {
    fn map(self) -> Tensor<4> {
        match self {
            Activation::Map(t) => t,
            Activation::Flat(_) => unreachable!("shapes are checked when the net is built"),
        }
    }

    fn flat(self) -> Tensor<2> {
        match self {
            Activation::Flat(t) => t,
            Activation::Map(_) => unreachable!("shapes are checked when the net is built"),
        }
    }
}

/// A model ready to run on a burn device.
#[derive(Module, Debug)]
pub struct Net {
    /// The layers with state, in layer order.
    pub layers: Vec<StateLayer>,
    #[module(skip)]
    plan: Arc<Plan>,
}

fn tensor<const D: usize>(t: &HostTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn host<const D: usize>(t: Tensor<D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data");
    HostTensor { shape, data }
}

impl Net {
    /// Builds the net of `model` on `device` (an autodiff device for training).
    pub fn new(model: &Model, device: &Device) -> Result<Self> {
        let desc = &model.description;
        let shapes = infer_shapes(desc)?;
        let w = &model.weights;
        let param = |layer: &str, suffix: &str| w.get(&format!("{layer}.{suffix}"));
        let mut layers = Vec::new();
        let mut ops = Vec::with_capacity(desc.layers.len());
        let mut kept = vec![false; desc.layers.len()];
        let mut sources = Vec::with_capacity(desc.layers.len());
        for (i, layer) in desc.layers.iter().enumerate() {
            let source = desc.source(i).expect("validated");
            if let Source::Layer(j) = source
                && j + 1 != i
            {
                kept[j] = true;
            }
            sources.push(source);
            let name = layer.name.as_str();
            let op = match &layer.kind {
                LayerKind::Conv2d { stride, padding, bias, groups, .. } => {
                    layers.push(StateLayer::Conv(ConvLayer {
                        weight: Param::from_tensor(tensor(param(name, "weight")?, device)),
                        bias: if *bias { Some(Param::from_tensor(tensor(param(name, "bias")?, device))) } else { None },
                        options: ConvOptions::new(*stride, *padding, [1, 1], *groups),
                    }));
                    Op::State(layers.len() - 1)
                }
                LayerKind::BatchNorm2d { eps, momentum } => {
                    let c = shapes[i].input.channels();
                    let mut bn =
                        burn::nn::BatchNormConfig::new(c).with_epsilon(*eps).with_momentum(*momentum).init(device);
                    bn.gamma = Param::from_tensor(tensor(param(name, "weight")?, device));
                    bn.beta = Param::from_tensor(tensor(param(name, "bias")?, device));
                    bn.running_mean = RunningState::new(tensor(param(name, "running_mean")?, device));
                    bn.running_var = RunningState::new(tensor(param(name, "running_var")?, device));
                    layers.push(StateLayer::Norm(bn));
                    Op::State(layers.len() - 1)
                }
                LayerKind::Linear { bias, .. } => {
                    // Transposed on the host, so the weight is contiguous in burn's layout and
                    // a net built from saved weights runs exactly as the one that saved them.
                    let w = param(name, "weight")?;
                    let (rows, cols) = (w.shape[0], w.shape[1]);
                    let mut t = vec![0f32; w.data.len()];
                    for r in 0..rows {
                        for c in 0..cols {
                            t[c * rows + r] = w.data[r * cols + c];
                        }
                    }
                    let weight = HostTensor { shape: vec![cols, rows], data: t };
                    layers.push(StateLayer::Linear(LinearLayer {
                        weight: Param::from_tensor(tensor(&weight, device)),
                        bias: if *bias { Some(Param::from_tensor(tensor(param(name, "bias")?, device))) } else { None },
                    }));
                    Op::State(layers.len() - 1)
                }
                LayerKind::Dropout { p } => Op::Dropout(*p),
                LayerKind::Relu => Op::Relu,
                LayerKind::Relu6 => Op::Relu6,
                LayerKind::MaxPool2d { kernel, stride, padding } => {
                    let mut o = MaxPoolOptions::new(*kernel);
                    o.stride = *stride;
                    o.padding = padding.map(|p| (p, p));
                    Op::MaxPool(o)
                }
                LayerKind::AvgPool2d { kernel, stride, padding } => {
                    Op::AvgPool(AvgPoolOptions::new(*kernel).with_stride(*stride).with_padding(*padding))
                }
                LayerKind::GlobalAvgPool => Op::GlobalAvgPool,
                LayerKind::Flatten => Op::Flatten,
                LayerKind::Add { .. } => {
                    let j = desc.add_operand(i).expect("validated");
                    kept[j] = true;
                    Op::Add(j)
                }
                LayerKind::Concat { .. } => {
                    let from = desc.concat_operands(i).expect("validated");
                    for &j in &from {
                        kept[j] = true;
                    }
                    Op::Concat(from)
                }
            };
            ops.push(op);
        }
        let plan = Plan { ops, sources, kept, description: desc.clone() };
        Ok(Net { layers, plan: Arc::new(plan) })
    }

    /// The description this net runs.
    pub fn description(&self) -> &ModelDescription {
        &self.plan.description
    }

    /// Logits `[N, classes]` for images `[N, C, H, W]`, with dropout off (eval mode; BatchNorm
    /// follows burn's rule: batch statistics on an autodiff device unless the net is `valid()`).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.run(images, None, &mut |_, _| {})
    }

    /// Logits in train mode: dropout masks drawn from `rng`, so that training is reproducible
    /// whatever else runs in the process.
    pub fn forward_train(&self, images: Tensor<4>, rng: &mut dyn rand::RngCore) -> Tensor<2> {
        self.run(images, Some(rng), &mut |_, _| {})
    }

    /// Like [`Net::forward`], calling `observe(layer_index, output)` after every layer.
    pub fn forward_observed(&self, images: Tensor<4>, mut observe: impl FnMut(usize, &Activation)) -> Tensor<2> {
        self.run(images, None, &mut observe)
    }

    fn run(
        &self,
        images: Tensor<4>,
        mut dropout_rng: Option<&mut dyn rand::RngCore>,
        observe: &mut dyn FnMut(usize, &Activation),
    ) -> Tensor<2> {
        let plan = &*self.plan;
        let n = plan.ops.len();
        let mut saved: Vec<Option<Activation>> = vec![None; n];
        let mut previous = Some(Activation::Map(images.clone()));
        for i in 0..n {
            let input = match plan.sources[i] {
                Source::Image => previous.take().unwrap_or_else(|| Activation::Map(images.clone())),
                Source::Layer(j) if j + 1 == i => previous.take().expect("previous output"),
                Source::Layer(j) => saved[j].clone().expect("kept output"),
            };
            let output = match &plan.ops[i] {
                Op::State(k) => match &self.layers[*k] {
                    StateLayer::Conv(c) => Activation::Map(conv2d(
                        input.map(),
                        c.weight.val(),
                        c.bias.as_ref().map(|b| b.val()),
                        c.options.clone(),
                    )),
                    StateLayer::Norm(bn) => Activation::Map(bn.forward(input.map())),
                    StateLayer::Linear(l) => {
                        Activation::Flat(linear(input.flat(), l.weight.val(), l.bias.as_ref().map(|b| b.val())))
                    }
                },
                Op::Relu => match input {
                    Activation::Map(t) => Activation::Map(relu(t)),
                    Activation::Flat(t) => Activation::Flat(relu(t)),
                },
                Op::Relu6 => match input {
                    Activation::Map(t) => Activation::Map(t.clamp(0.0, 6.0)),
                    Activation::Flat(t) => Activation::Flat(t.clamp(0.0, 6.0)),
                },
                Op::MaxPool(o) => Activation::Map(max_pool(input.map(), o)),
                Op::AvgPool(o) => Activation::Map(avg_pool2d(input.map(), o.clone())),
                Op::GlobalAvgPool => Activation::Map(adaptive_avg_pool2d(input.map(), [1, 1])),
                Op::Flatten => Activation::Flat(input.map().flatten(1, 3)),
                Op::Dropout(p) => match dropout_rng.as_deref_mut() {
                    Some(rng) if *p > 0.0 => match input {
                        Activation::Map(t) => Activation::Map(dropout(t, *p, rng)),
                        Activation::Flat(t) => Activation::Flat(dropout(t, *p, rng)),
                    },
                    _ => input,
                },
                Op::Add(j) => match (input, saved[*j].clone().expect("kept output")) {
                    (Activation::Map(a), Activation::Map(b)) => Activation::Map(a + b),
                    (Activation::Flat(a), Activation::Flat(b)) => Activation::Flat(a + b),
                    _ => unreachable!("shapes are checked when the net is built"),
                },
                Op::Concat(from) => {
                    let mut parts = vec![input.map()];
                    parts.extend(from.iter().map(|j| saved[*j].clone().expect("kept output").map()));
                    Activation::Map(Tensor::cat(parts, 1))
                }
            };
            observe(i, &output);
            if plan.kept[i] {
                saved[i] = Some(output.clone());
            }
            previous = Some(output);
        }
        previous.expect("at least one layer").flat()
    }

    /// The current weights as host arrays, in the file layout (linear weights `[out, in]`).
    pub fn weights(&self) -> Weights {
        let mut weights = Weights::default();
        let mut insert = |name: String, t: HostTensor| {
            weights.tensors.insert(name, t);
        };
        let plan = &*self.plan;
        for (layer, op) in plan.description.layers.iter().zip(&plan.ops) {
            let Op::State(k) = op else { continue };
            let name = &layer.name;
            match &self.layers[*k] {
                StateLayer::Conv(c) => {
                    insert(format!("{name}.weight"), host(c.weight.val()));
                    if let Some(b) = &c.bias {
                        insert(format!("{name}.bias"), host(b.val()));
                    }
                }
                StateLayer::Norm(bn) => {
                    insert(format!("{name}.weight"), host(bn.gamma.val()));
                    insert(format!("{name}.bias"), host(bn.beta.val()));
                    insert(format!("{name}.running_mean"), host(bn.running_mean.value_sync()));
                    insert(format!("{name}.running_var"), host(bn.running_var.value_sync()));
                }
                StateLayer::Linear(l) => {
                    insert(format!("{name}.weight"), host(l.weight.val().transpose()));
                    if let Some(b) = &l.bias {
                        insert(format!("{name}.bias"), host(b.val()));
                    }
                }
            }
        }
        weights
    }

    /// Calls `visitor` with every trainable parameter and its name (`<layer>.weight`, ...), in
    /// layer order; the visitor may replace the parameter (an optimizer step does).
    pub fn visit_params_mut(&mut self, visitor: &mut impl ParamVisitor) {
        let plan = self.plan.clone();
        for (layer, op) in plan.description.layers.iter().zip(&plan.ops) {
            let Op::State(k) = op else { continue };
            let name = &layer.name;
            match &mut self.layers[*k] {
                StateLayer::Conv(c) => {
                    visitor.visit(&format!("{name}.weight"), &mut c.weight);
                    if let Some(b) = &mut c.bias {
                        visitor.visit(&format!("{name}.bias"), b);
                    }
                }
                StateLayer::Norm(bn) => {
                    visitor.visit(&format!("{name}.weight"), &mut bn.gamma);
                    visitor.visit(&format!("{name}.bias"), &mut bn.beta);
                }
                StateLayer::Linear(l) => {
                    visitor.visit(&format!("{name}.weight"), &mut l.weight);
                    if let Some(b) = &mut l.bias {
                        visitor.visit(&format!("{name}.bias"), b);
                    }
                }
            }
        }
    }

    /// The net's description and current weights as a [`Model`].
    pub fn to_model(&self) -> Result<Model> {
        Model::new(self.plan.description.clone(), self.weights())
    }
}

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by
/// `1 / (1 − p)`, with the mask drawn from `rng` on the host.
fn dropout<const D: usize>(x: Tensor<D>, p: f64, rng: &mut dyn rand::RngCore) -> Tensor<D> {
    let dims = x.dims();
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> =
        (0..dims.iter().product::<usize>()).map(|_| if rng.random::<f64>() < keep { scale } else { 0.0 }).collect();
    let mask = Tensor::<D>::from_data(TensorData::new(mask, dims.to_vec()), &x.device());
    x * mask
}

/// Max pooling. Non-overlapping windows (stride = kernel) are computed as a reshape and two
/// `max_dim` reductions: on burn's flex backend about 1.5x faster than its `max_pool2d`, which
/// also computes argmax indices.
fn max_pool(x: Tensor<4>, o: &MaxPoolOptions<2>) -> Tensor<4> {
    let [kh, kw] = o.kernel_size;
    if o.stride != o.kernel_size || o.padding != [(0, 0); 2] || o.dilation != [1, 1] {
        return max_pool2d(x, o.clone());
    }
    let [n, c, h, w] = x.dims();
    let (oh, ow) = (h / kh, w / kw);
    let x = if oh * kh != h || ow * kw != w { x.slice([0..n, 0..c, 0..oh * kh, 0..ow * kw]) } else { x };
    x.reshape([n, c, oh, kh, ow, kw]).max_dim(5).max_dim(3).reshape([n, c, oh, ow])
}

/// Receives the trainable parameters of a [`Net`] by name (a linear layer's weight is in burn's
/// `[in, out]` layout here).
pub trait ParamVisitor {
    /// Visits (and may replace) one parameter.
    fn visit<const D: usize>(&mut self, name: &str, param: &mut Param<Tensor<D>>);
}

/// Images `[N, C, H, W]` from row-major host data, checking the length.
pub fn images_tensor(data: &[f32], shape: [usize; 4], device: &Device) -> Result<Tensor<4>> {
    if data.len() != shape.iter().product::<usize>() {
        return Err(Error::Invalid(format!(
            "an image batch of shape {shape:?} needs {} values, got {}",
            shape.iter().product::<usize>(),
            data.len()
        )));
    }
    Ok(Tensor::from_data(TensorData::new(data.to_vec(), shape.to_vec()), device))
}

/// Row-major host values of a 2-D tensor (e.g. logits `[N, classes]`).
pub fn to_host_2d(t: Tensor<2>) -> Vec<f32> {
    host(t).data
}
