//! ONNX export of any model description with its weights (opset 17, dynamic batch).
//!
//! The graph takes `input` `[batch, C, H, W]` (float) and returns `logits` `[batch, classes]`.
//! Convolutions become `Conv`, BatchNorm `BatchNormalization`, linear layers `Gemm` with
//! `transB = 1` (weights stay in PyTorch's `[out, in]` layout), pooling `MaxPool` / `AveragePool`
//! / `GlobalAveragePool`, residual adds `Add`, flatten `Flatten`; dropout is left out (eval mode).

use std::path::Path;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::{self, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::Model;
use crate::model::description::{LayerKind, Source};

/// The ONNX opset the exporter writes.
pub const OPSET: i64 = 17;
/// Name of the graph input.
pub const INPUT: &str = "input";
/// Name of the graph output.
pub const OUTPUT: &str = "logits";

/// Builds an ONNX graph node by node.
#[derive(Default)]
pub struct GraphBuilder {
    /// The graph so far.
    pub graph: GraphProto,
}

/// An attribute value for [`GraphBuilder::node`].
pub enum Attr {
    /// One integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// One float.
    Float(f32),
}

impl GraphBuilder {
    /// Adds a float initializer (a constant tensor) called `name`.
    pub fn initializer(&mut self, name: &str, shape: &[usize], data: &[f32]) {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.dims = shape.iter().map(|&d| d as i64).collect();
        t.data_type = DataType::FLOAT as i32;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(t);
    }

    /// Adds an int64 initializer (e.g. a shape for `Reshape`).
    pub fn initializer_i64(&mut self, name: &str, shape: &[usize], data: &[i64]) {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.dims = shape.iter().map(|&d| d as i64).collect();
        t.data_type = DataType::INT64 as i32;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(t);
    }

    /// Adds a node `op_type(inputs) -> outputs` with attributes.
    pub fn node(&mut self, name: &str, op_type: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) {
        let mut n = NodeProto::new();
        n.name = name.to_string();
        n.op_type = op_type.to_string();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = outputs.iter().map(|s| s.to_string()).collect();
        for (key, value) in attrs {
            let mut a = AttributeProto::new();
            a.name = key.to_string();
            match value {
                Attr::Int(i) => {
                    a.type_ = AttributeType::INT.into();
                    a.i = i;
                }
                Attr::Ints(v) => {
                    a.type_ = AttributeType::INTS.into();
                    a.ints = v;
                }
                Attr::Float(f) => {
                    a.type_ = AttributeType::FLOAT.into();
                    a.f = f;
                }
            }
            n.attribute.push(a);
        }
        self.graph.node.push(n);
    }

    /// Declares a float graph input or output `name` with dims (`None` = the dynamic batch).
    pub fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
        let mut shape = TensorShapeProto::new();
        for d in dims {
            let mut dim = Dimension::new();
            dim.value = Some(match d {
                Some(v) => dimension::Value::DimValue(*v as i64),
                None => dimension::Value::DimParam("batch".to_string()),
            });
            shape.dim.push(dim);
        }
        let mut tensor = type_proto::Tensor::new();
        tensor.elem_type = DataType::FLOAT as i32;
        tensor.shape = Some(shape).into();
        let mut t = TypeProto::new();
        t.value = Some(TypeValue::TensorType(tensor));
        let mut v = ValueInfoProto::new();
        v.name = name.to_string();
        v.type_ = Some(t).into();
        v
    }

    /// Wraps the graph into a model (opset [`OPSET`]) and serializes it.
    pub fn finish(mut self, name: &str) -> Result<Vec<u8>> {
        self.graph.name = name.to_string();
        let mut model = ModelProto::new();
        model.ir_version = 8;
        model.producer_name = "cnnsplitter".to_string();
        model.producer_version = env!("CARGO_PKG_VERSION").to_string();
        let mut opset = OperatorSetIdProto::new();
        opset.version = OPSET;
        model.opset_import.push(opset);
        model.graph = Some(self.graph).into();
        model.write_to_bytes().map_err(|e| Error::Serialize(format!("cannot serialize the ONNX model: {e}")))
    }
}

/// Adds the nodes of `model` to `g`, reading from tensor `input` and prefixing every name with
/// `prefix` (so several models can share one graph). Returns the name of the logits tensor.
pub fn add_model(g: &mut GraphBuilder, model: &Model, input: &str, prefix: &str) -> Result<String> {
    let desc = &model.description;
    let w = &model.weights;
    let mut outputs: Vec<String> = Vec::with_capacity(desc.layers.len());
    for (i, layer) in desc.layers.iter().enumerate() {
        let src = match desc.source(i).expect("validated") {
            Source::Image => input.to_string(),
            Source::Layer(j) => outputs[j].clone(),
        };
        let name = format!("{prefix}{}", layer.name);
        let param = |suffix: &str| -> Result<(String, &crate::model::weights::HostTensor)> {
            let key = format!("{}.{suffix}", layer.name);
            Ok((format!("{prefix}{key}"), w.get(&key)?))
        };
        let out = match &layer.kind {
            LayerKind::Dropout { .. } => {
                outputs.push(src);
                continue;
            }
            LayerKind::Conv2d { kernel, stride, padding, bias, groups, .. } => {
                let mut inputs = vec![src.clone()];
                for suffix in if *bias { &["weight", "bias"][..] } else { &["weight"][..] } {
                    let (n, t) = param(suffix)?;
                    g.initializer(&n, &t.shape, &t.data);
                    inputs.push(n);
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let [ph, pw] = padding.map(|p| p as i64);
                g.node(
                    &name,
                    "Conv",
                    &refs,
                    &[&name],
                    vec![
                        ("kernel_shape", Attr::Ints(kernel.iter().map(|&k| k as i64).collect())),
                        ("strides", Attr::Ints(stride.iter().map(|&s| s as i64).collect())),
                        ("pads", Attr::Ints(vec![ph, pw, ph, pw])),
                        ("group", Attr::Int(*groups as i64)),
                    ],
                );
                name
            }
            LayerKind::BatchNorm2d { eps, .. } => {
                let mut inputs = vec![src.clone()];
                for suffix in ["weight", "bias", "running_mean", "running_var"] {
                    let (n, t) = param(suffix)?;
                    g.initializer(&n, &t.shape, &t.data);
                    inputs.push(n);
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                g.node(&name, "BatchNormalization", &refs, &[&name], vec![("epsilon", Attr::Float(*eps as f32))]);
                name
            }
            LayerKind::Relu => {
                g.node(&name, "Relu", &[&src], &[&name], vec![]);
                name
            }
            LayerKind::Relu6 => {
                let (lo, hi) = (format!("{name}.min"), format!("{name}.max"));
                g.initializer(&lo, &[], &[0.0]);
                g.initializer(&hi, &[], &[6.0]);
                g.node(&name, "Clip", &[&src, &lo, &hi], &[&name], vec![]);
                name
            }
            LayerKind::MaxPool2d { kernel, stride, padding } | LayerKind::AvgPool2d { kernel, stride, padding } => {
                let is_max = matches!(layer.kind, LayerKind::MaxPool2d { .. });
                let [ph, pw] = padding.map(|p| p as i64);
                let mut attrs = vec![
                    ("kernel_shape", Attr::Ints(kernel.iter().map(|&k| k as i64).collect())),
                    ("strides", Attr::Ints(stride.iter().map(|&s| s as i64).collect())),
                    ("pads", Attr::Ints(vec![ph, pw, ph, pw])),
                ];
                if !is_max {
                    // Padded positions count as zeros in the average, as in the description.
                    attrs.push(("count_include_pad", Attr::Int(1)));
                }
                g.node(&name, if is_max { "MaxPool" } else { "AveragePool" }, &[&src], &[&name], attrs);
                name
            }
            LayerKind::GlobalAvgPool => {
                g.node(&name, "GlobalAveragePool", &[&src], &[&name], vec![]);
                name
            }
            LayerKind::Flatten => {
                g.node(&name, "Flatten", &[&src], &[&name], vec![("axis", Attr::Int(1))]);
                name
            }
            LayerKind::Linear { bias, .. } => {
                let mut inputs = vec![src.clone()];
                for suffix in if *bias { &["weight", "bias"][..] } else { &["weight"][..] } {
                    let (n, t) = param(suffix)?;
                    g.initializer(&n, &t.shape, &t.data);
                    inputs.push(n);
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                g.node(&name, "Gemm", &refs, &[&name], vec![("transB", Attr::Int(1))]);
                name
            }
            LayerKind::Concat { .. } => {
                let mut inputs = vec![src.clone()];
                inputs.extend(desc.concat_operands(i).expect("validated").into_iter().map(|j| outputs[j].clone()));
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                g.node(&name, "Concat", &refs, &[&name], vec![("axis", Attr::Int(1))]);
                name
            }
            LayerKind::Add { .. } => {
                let other = outputs[desc.add_operand(i).expect("validated")].clone();
                g.node(&name, "Add", &[&src, &other], &[&name], vec![]);
                name
            }
        };
        outputs.push(out);
    }
    Ok(outputs.pop().expect("a model has layers"))
}

/// The ONNX bytes of `model`: input `input` `[batch, C, H, W]`, output `logits` `[batch, classes]`.
pub fn to_onnx(model: &Model) -> Result<Vec<u8>> {
    let mut g = GraphBuilder::default();
    let [c, h, w] = model.description.input;
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(c), Some(h), Some(w)]));
    let logits = add_model(&mut g, model, INPUT, "")?;
    g.node("output", "Identity", &[&logits], &[OUTPUT], vec![]);
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(model.description.classes)]));
    g.finish(&model.description.name)
}

/// One graph running several models on the same input: output `logits` is `[batch, K·classes]`,
/// model k's logits in columns `k·classes..(k+1)·classes`. All models must take the same input.
pub fn to_onnx_packed(models: &[Model]) -> Result<Vec<u8>> {
    let first = models.first().ok_or_else(|| Error::Invalid("no models to pack".into()))?;
    let [c, h, w] = first.description.input;
    let mut g = GraphBuilder::default();
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(c), Some(h), Some(w)]));
    let mut outputs = Vec::with_capacity(models.len());
    let mut classes = 0;
    for (k, m) in models.iter().enumerate() {
        if m.description.input != first.description.input {
            return Err(Error::Invalid(format!(
                "cannot pack model `{}`: its input shape differs from `{}`'s",
                m.description.name, first.description.name
            )));
        }
        outputs.push(add_model(&mut g, m, INPUT, &format!("m{k}/"))?);
        classes += m.description.classes;
    }
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    g.node("concat", "Concat", &refs, &[OUTPUT], vec![("axis", Attr::Int(1))]);
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(classes)]));
    g.finish("packed")
}

/// Writes `model` as an ONNX file.
pub fn export(model: &Model, path: &Path) -> Result<()> {
    write_file(&to_onnx(model)?, path)
}

/// Writes ONNX bytes to `path` (creating its folder) through a temporary file.
pub fn write_file(bytes: &[u8], path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, bytes)
}
