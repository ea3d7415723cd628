//! Stochastic gradient descent with momentum (PyTorch's semantics, no dampening) and L2 weight
//! decay, with its state kept by parameter name so that it can be saved and restored exactly.
//!
//! Per parameter `p` with gradient `g`: `d = g + wd·p`; with momentum `buf = μ·buf + d` (the
//! first step sets `buf = d`), then `d = d + μ·buf` (Nesterov) or `d = buf`; finally
//! `p = p − lr·d`.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::Gradients;
use burn::tensor::{Device, Tensor, TensorData};

use crate::model::net::{Net, ParamVisitor};
use crate::model::weights::HostTensor;

/// SGD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdSettings {
    /// Momentum μ (0 = plain SGD).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f64,
}

/// The optimizer: settings plus one momentum buffer per parameter name.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Settings.
    pub settings: SgdSettings,
    /// Momentum buffers by parameter name, flattened (inner, non-autodiff tensors).
    buffers: BTreeMap<String, (Tensor<1>, Vec<usize>)>,
}

impl Sgd {
    /// A fresh optimizer.
    pub fn new(settings: SgdSettings) -> Self {
        Sgd { settings, buffers: BTreeMap::new() }
    }

    /// Applies one step with learning rate `lr` and the gradients of `grads` to `net`.
    pub fn step(&mut self, net: &mut Net, grads: &Gradients, lr: f64) {
        let mut stepper = Stepper { sgd: self, grads, lr };
        net.visit_params_mut(&mut stepper);
    }

    /// The momentum buffers as host arrays, by parameter name (burn layouts).
    pub fn state(&self) -> BTreeMap<String, HostTensor> {
        self.buffers
            .iter()
            .map(|(name, (t, shape))| {
                let data = t.to_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data");
                (name.clone(), HostTensor { shape: shape.clone(), data })
            })
            .collect()
    }

    /// Restores momentum buffers saved with [`Sgd::state`] onto `device` (a plain device).
    pub fn restore(&mut self, state: &BTreeMap<String, HostTensor>, device: &Device) {
        self.buffers = state
            .iter()
            .map(|(name, t)| {
                let flat = Tensor::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device);
                (name.clone(), (flat, t.shape.clone()))
            })
            .collect();
    }
}

struct Stepper<'a> {
    sgd: &'a mut Sgd,
    grads: &'a Gradients,
    lr: f64,
}

impl ParamVisitor for Stepper<'_> {
    fn visit<const D: usize>(&mut self, name: &str, param: &mut Param<Tensor<D>>) {
        let value = param.val();
        let Some(grad) = value.grad(self.grads) else {
            return;
        };
        let p = value.inner();
        let s = self.sgd.settings;
        let mut d = grad;
        if s.weight_decay != 0.0 {
            d = d + p.clone().mul_scalar(s.weight_decay);
        }
        if s.momentum != 0.0 {
            let dims = p.dims();
            let buf: Tensor<D> = match self.sgd.buffers.get(name) {
                Some((b, shape)) if shape.as_slice() == dims.as_slice() => {
                    b.clone().reshape(dims).mul_scalar(s.momentum) + d.clone()
                }
                _ => d.clone(),
            };
            d = if s.nesterov { d + buf.clone().mul_scalar(s.momentum) } else { buf.clone() };
            let numel = dims.iter().product::<usize>();
            self.sgd.buffers.insert(name.to_string(), (buf.reshape([numel]), dims.to_vec()));
        }
        let updated = p - d.mul_scalar(self.lr);
        *param = Param::from_tensor(Tensor::from_inner(updated));
    }
}
