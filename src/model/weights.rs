//! Weights as plain host arrays, their expected shapes, initialisation and safetensors files.
//!
//! Tensor names mirror the description: `<layer>.weight`, `<layer>.bias`, and for BatchNorm also
//! `<layer>.running_mean` and `<layer>.running_var`, in PyTorch layouts (conv
//! `[out, in, kh, kw]`, linear `[out, in]`).

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::error::{Error, Result};
use crate::model::description::{LayerKind, ModelDescription};
use crate::model::shape::{LayerShape, infer_shapes};

/// A dense row-major f32 array.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// An array of the given shape filled with `value`.
    pub fn full(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        HostTensor { shape, data: vec![value; n] }
    }
}

/// What a tensor is for, which decides how it is initialised and cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// Convolution kernel weights `[out, in, kh, kw]`.
    ConvWeight,
    /// Linear weights `[out, in]`.
    LinearWeight,
    /// A bias `[out]`.
    Bias,
    /// BatchNorm scale `[channels]` (initially 1).
    NormWeight,
    /// BatchNorm shift `[channels]` (initially 0).
    NormBias,
    /// BatchNorm running mean `[channels]` (initially 0).
    RunningMean,
    /// BatchNorm running variance `[channels]` (initially 1).
    RunningVar,
}

impl ParamRole {
    /// Whether the tensor is trained (as opposed to a running statistic).
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

/// A tensor the description requires.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Index of the layer that owns it.
    pub layer: usize,
    /// Full name, `<layer>.<suffix>`.
    pub name: String,
    /// What it is.
    pub role: ParamRole,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// Every tensor the description requires, in layer order.
pub fn param_specs(desc: &ModelDescription, shapes: &[LayerShape]) -> Vec<ParamSpec> {
    let mut specs = Vec::new();
    for (i, (layer, shape)) in desc.layers.iter().zip(shapes).enumerate() {
        let mut add = |suffix: &str, role: ParamRole, dims: Vec<usize>| {
            specs.push(ParamSpec { layer: i, name: format!("{}.{suffix}", layer.name), role, shape: dims })
        };
        match &layer.kind {
            LayerKind::Conv2d { out_channels, kernel, bias, groups, .. } => {
                let cin = shape.input.channels() / groups;
                add("weight", ParamRole::ConvWeight, vec![*out_channels, cin, kernel[0], kernel[1]]);
                if *bias {
                    add("bias", ParamRole::Bias, vec![*out_channels]);
                }
            }
            LayerKind::BatchNorm2d { .. } => {
                let c = shape.input.channels();
                add("weight", ParamRole::NormWeight, vec![c]);
                add("bias", ParamRole::NormBias, vec![c]);
                add("running_mean", ParamRole::RunningMean, vec![c]);
                add("running_var", ParamRole::RunningVar, vec![c]);
            }
            LayerKind::Linear { out_features, bias } => {
                add("weight", ParamRole::LinearWeight, vec![*out_features, shape.input.numel()]);
                if *bias {
                    add("bias", ParamRole::Bias, vec![*out_features]);
                }
            }
            _ => {}
        }
    }
    specs
}

/// All tensors of a model, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    /// The tensors, keyed by `<layer>.<param>`.
    pub tensors: BTreeMap<String, HostTensor>,
}

impl Weights {
    /// The tensor called `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&HostTensor> {
        self.tensors.get(name).ok_or_else(|| Error::Invalid(format!("tensor `{name}` is missing from the weights")))
    }

    /// Fresh weights for `desc`, deterministic from `seed`: convolutions
    /// `N(0, sqrt(2 / (kh·kw·out)))` with zero bias (as the authors' code initialises them), linear layers
    /// `U(±1/sqrt(in))` for weight and bias (PyTorch's default), BatchNorm scale 1 and shift 0.
    pub fn init(desc: &ModelDescription, seed: u64) -> Result<Self> {
        let shapes = infer_shapes(desc)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = BTreeMap::new();
        for spec in param_specs(desc, &shapes) {
            let n: usize = spec.shape.iter().product();
            let data: Vec<f32> = match spec.role {
                ParamRole::ConvWeight => {
                    let fan_out = (spec.shape[0] * spec.shape[2] * spec.shape[3]) as f32;
                    let normal = Normal::new(0.0, (2.0 / fan_out).sqrt()).expect("positive std");
                    (0..n).map(|_| normal.sample(&mut rng)).collect()
                }
                ParamRole::LinearWeight => {
                    let bound = 1.0 / (spec.shape[1] as f32).sqrt();
                    let uniform = Uniform::new_inclusive(-bound, bound).expect("valid bounds");
                    (0..n).map(|_| uniform.sample(&mut rng)).collect()
                }
                ParamRole::Bias => match desc.layers[spec.layer].kind {
                    LayerKind::Linear { .. } => {
                        let fan_in = shapes[spec.layer].input.numel() as f32;
                        let bound = 1.0 / fan_in.sqrt();
                        (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
                    }
                    _ => vec![0.0; n],
                },
                ParamRole::NormWeight | ParamRole::RunningVar => vec![1.0; n],
                ParamRole::NormBias | ParamRole::RunningMean => vec![0.0; n],
            };
            tensors.insert(spec.name, HostTensor { shape: spec.shape, data });
        }
        Ok(Weights { tensors })
    }

    /// Checks that the weights hold exactly the tensors `desc` requires, with the right shapes.
    /// Names the first missing, extra or mis-shaped tensor.
    pub fn check(&self, desc: &ModelDescription) -> Result<()> {
        let shapes = infer_shapes(desc)?;
        let specs = param_specs(desc, &shapes);
        for spec in &specs {
            let tensor = self.tensors.get(&spec.name).ok_or_else(|| {
                Error::Invalid(format!("tensor `{}` (shape {:?}) is missing from the weights", spec.name, spec.shape))
            })?;
            if tensor.shape != spec.shape {
                return Err(Error::TensorShape {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: tensor.shape.clone(),
                });
            }
            if tensor.data.len() != spec.shape.iter().product::<usize>() {
                return Err(Error::Invalid(format!("tensor `{}` has the wrong number of values", spec.name)));
            }
        }
        if let Some(extra) = self.tensors.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
            return Err(Error::Invalid(format!(
                "tensor `{extra}` in the weights belongs to no layer of the model description"
            )));
        }
        Ok(())
    }

    /// Refuses weights holding a NaN or an infinity (a model that computes nothing usable); names
    /// the first such tensor, its first bad value and how many there are.
    pub fn check_finite(&self) -> Result<()> {
        for (name, t) in &self.tensors {
            let bad = t.data.iter().filter(|v| !v.is_finite()).count();
            if let Some((i, v)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::Numeric(format!(
                    "tensor `{name}` holds {bad} non-finite values (the first, at index {i}, is {v}): the model \
                     computes nothing usable; retrain or re-export it"
                )));
            }
        }
        Ok(())
    }

    /// Serializes to safetensors bytes (f32, little-endian).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let bytes: &[u8] = bytemuck::cast_slice(&t.data);
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes)
                    .expect("shape and byte length agree");
                (name.clone(), view)
            })
            .collect();
        safetensors::serialize(views, None).map_err(|e| Error::Serialize(format!("safetensors: {e}")))
    }

    /// Parses safetensors bytes; every tensor must be f32 (f64 and f16 are converted).
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Invalid(format!("not a valid safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = decode_floats(&name, view.dtype(), view.data())?;
            tensors.insert(name, HostTensor { shape: view.shape().to_vec(), data });
        }
        Ok(Weights { tensors })
    }

    /// Reads a safetensors file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_safetensors(&bytes).map_err(|e| e.in_file(path))
    }
}

/// The values of a floating-point safetensors tensor as f32; an error naming it for other dtypes.
pub(crate) fn decode_floats(name: &str, dtype: safetensors::Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    use safetensors::Dtype;
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => {
            bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
        }
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => {
            return Err(Error::Invalid(format!(
                "tensor `{name}` has dtype {other:?}; expected a floating-point tensor (F32, F64, F16 or BF16)"
            )));
        }
    })
}
