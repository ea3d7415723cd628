//! ONNX import: an ONNX graph (as PyTorch's exporters write it, opset 17 and newer) read into a
//! model description and its weights.
//!
//! Nodes are mapped one by one in graph order: `Conv` (any stride, symmetric padding, groups,
//! dilation 1), `BatchNormalization`, `Relu`, `Clip(0, 6)` (ReLU6; `Clip(0, +inf)` is a ReLU),
//! `MaxPool` / `AveragePool` (symmetric padding, floor mode), `GlobalAveragePool`, `ReduceMean`
//! over H and W, `Flatten` and `Reshape` to `[batch, features]`, `Gemm` and `MatMul` (+ `Add` of a
//! constant, folded into the bias), `Add` of two activations (a residual add), `Concat` over
//! channels, `Dropout` and `Identity` (left out), `Constant`. Weights come from initializers or `Constant` nodes. A layer
//! takes its name from its weight (`layer1.0.conv1.weight` gives `layer1.0.conv1`), else from its
//! node. Any other node is an error that names it, its op type and what is supported.

mod external;
mod ops;

pub use external::with_inline_data;

use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::dimension;
use onnx_protobuf::type_proto::Value as TypeValue;
use onnx_protobuf::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};

use external::{external_bytes, is_external};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::description::{Layer, LayerKind, ModelDescription};
use crate::model::shape::{ActShape, infer_shapes};
use crate::model::weights::{HostTensor, Weights};

/// The ops the importer maps, for error messages.
pub const SUPPORTED: &str = "Conv, BatchNormalization, Relu, Clip(0, 6), MaxPool, AveragePool, GlobalAveragePool, \
     ReduceMean over H and W, Flatten, Reshape to 2-D, Gemm, MatMul (+ Add of a constant), Add, Concat over channels, Dropout, Identity, \
     Constant";

/// An ONNX file read as a model, with what the importer did not keep.
#[derive(Debug, Clone)]
pub struct OnnxImport {
    /// The model.
    pub model: Model,
    /// Nodes left out because they compute nothing at inference (Dropout, Identity).
    pub dropped: Vec<String>,
    /// The graph's input shape `[batch, C, H, W]` as the file gives it (`None`: symbolic).
    pub file_input: [Option<usize>; 4],
}

/// What a tensor name stands for while the graph is read.
#[derive(Debug, Clone)]
enum Value {
    /// The output of layer `index` (`None`: the image), of this shape.
    Act(Option<usize>, ActShape),
    /// A constant tensor (float data, or integers such as a shape).
    Const(HostTensor, Vec<i64>),
}

struct Reader<'a> {
    path: &'a Path,
    values: HashMap<String, Value>,
    layers: Vec<Layer>,
    shapes: Vec<ActShape>,
    weights: Weights,
    dropped: Vec<String>,
    /// Each layer's index by name.
    names: HashMap<String, usize>,
    /// The image's shape.
    image: ActShape,
    /// Files of external tensor data, opened once.
    external_files: std::cell::RefCell<external::ExternalFiles>,
    /// The next suffix to try for each layer name base (so that many nodes of one name are
    /// named in linear time).
    next_suffix: std::cell::RefCell<HashMap<String, usize>>,
}

/// Reads ONNX `bytes` (`path` names them in errors).
pub fn from_onnx_bytes(bytes: &[u8], path: &Path, input: Option<[usize; 3]>) -> Result<OnnxImport> {
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::file(path, format!("is not an ONNX model (truncated or another format): {e}")))?;
    let graph = model.graph.as_ref().ok_or_else(|| Error::file(path, "holds no graph"))?;
    let mut r = Reader {
        path,
        values: HashMap::new(),
        layers: Vec::new(),
        shapes: Vec::new(),
        weights: Weights::default(),
        dropped: Vec::new(),
        names: Default::default(),
        image: ActShape::Map([1, 1, 1]),
        external_files: Default::default(),
        next_suffix: Default::default(),
    };
    for t in &graph.initializer {
        let value = r.tensor(t)?;
        r.values.insert(t.name.clone(), value);
    }
    let inputs: Vec<_> = graph.input.iter().filter(|i| !r.values.contains_key(&i.name)).collect();
    let [image] = inputs.as_slice() else {
        return Err(Error::file(
            path,
            format!("has {} graph inputs besides its weights; an image classifier has one", inputs.len()),
        ));
    };
    let file_input = input_dims(image);
    let chw = match (file_input, input) {
        ([_, Some(c), Some(h), Some(w)], Some(given)) if given != [c, h, w] => {
            return Err(Error::file(
                path,
                format!("takes {c}x{h}x{w} images, but --input says {}x{}x{}", given[0], given[1], given[2]),
            ));
        }
        (_, Some(given)) => given,
        ([_, Some(c), Some(h), Some(w)], None) => [c, h, w],
        _ => {
            return Err(Error::file(
                path,
                format!("leaves the input `{}` shape {file_input:?} open: give it with --input CxHxW", image.name),
            ));
        }
    };
    r.image = ActShape::Map(chw);
    r.values.insert(image.name.clone(), Value::Act(None, r.image));
    for node in &graph.node {
        r.node(node)?;
    }
    let output = graph.output.first().ok_or_else(|| Error::file(path, "declares no graph output"))?;
    let Some(Value::Act(Some(last), shape)) = r.values.get(&output.name).cloned() else {
        return Err(Error::file(path, format!("its output `{}` is not computed by an imported layer", output.name)));
    };
    let ActShape::Flat(classes) = shape else {
        return Err(Error::file(
            path,
            format!("its output `{}` has shape {shape}; logits [batch, classes] expected", output.name),
        ));
    };
    if last + 1 != r.layers.len() {
        return Err(Error::file(path, "computes layers after its output that the output does not use"));
    }
    let name = path.file_stem().map_or_else(|| "onnx".to_string(), |s| s.to_string_lossy().into_owned());
    let desc = ModelDescription { name, input: chw, classes, layers: r.layers };
    infer_shapes(&desc).map_err(|e| Error::file(path, format!("gives an invalid model: {e}")))?;
    r.weights.check_finite().map_err(|e| Error::file(path, e.to_string()))?;
    let model = Model::new(desc, r.weights).map_err(|e| Error::file(path, e.to_string()))?;
    Ok(OnnxImport { model, dropped: r.dropped, file_input })
}

fn input_dims(v: &onnx_protobuf::ValueInfoProto) -> [Option<usize>; 4] {
    let mut dims = [None; 4];
    if let Some(TypeValue::TensorType(t)) = v.type_.as_ref().and_then(|t| t.value.clone())
        && let Some(shape) = t.shape.as_ref()
    {
        for (d, dim) in dims.iter_mut().zip(&shape.dim) {
            if let Some(dimension::Value::DimValue(n)) = dim.value
                && n > 0
            {
                *d = Some(n as usize);
            }
        }
    }
    dims
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

impl Reader<'_> {
    fn fail(&self, node: &NodeProto, what: impl std::fmt::Display) -> Error {
        let (name, op) = (crate::error::printable(&node.name), crate::error::printable(&node.op_type));
        Error::file(self.path, format!("node `{name}` ({op}): {what}"))
    }

    fn unsupported(&self, node: &NodeProto, what: impl std::fmt::Display) -> Error {
        self.fail(node, format!("{what}; the importer supports {SUPPORTED}"))
    }

    /// A tensor initializer or constant: floats as f32, integers kept as i64 too.
    fn tensor(&self, t: &TensorProto) -> Result<Value> {
        let bad = |what: &str| Error::file(self.path, format!("tensor `{}`: {what}", t.name));
        if t.dims.iter().any(|&d| d < 0) {
            return Err(bad(&format!("has a negative dimension in {:?}", t.dims)));
        }
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= isize::MAX as usize / 8)
            .ok_or_else(|| bad(&format!("shape {shape:?} is too large")))?;
        let external;
        let raw: &[u8] = if is_external(t) {
            external = external_bytes(self.path, t, &mut self.external_files.borrow_mut())?;
            &external
        } else {
            &t.raw_data
        };
        let (floats, ints): (Vec<f32>, Vec<i64>) = match protobuf::Enum::from_i32(t.data_type) {
            Some(DataType::FLOAT) => {
                let f: Vec<f32> = if !raw.is_empty() {
                    if raw.len() != n * 4 {
                        return Err(bad(&format!("holds {} bytes for shape {shape:?} of floats", raw.len())));
                    }
                    raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
                } else {
                    t.float_data.clone()
                };
                (f, Vec::new())
            }
            Some(DataType::INT64) => {
                let i: Vec<i64> = if !raw.is_empty() {
                    if raw.len() != n * 8 {
                        return Err(bad(&format!("holds {} bytes for shape {shape:?} of int64", raw.len())));
                    }
                    raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
                } else {
                    t.int64_data.clone()
                };
                (i.iter().map(|&v| v as f32).collect(), i)
            }
            _ => return Err(bad(&format!("data type {} is not float32 or int64", t.data_type))),
        };
        if floats.len() != n {
            return Err(bad(&format!("holds {} values for shape {shape:?}", floats.len())));
        }
        Ok(Value::Const(HostTensor { shape, data: floats }, ints))
    }

    fn input(&self, node: &NodeProto, k: usize) -> Result<&Value> {
        let name =
            node.input.get(k).filter(|n| !n.is_empty()).ok_or_else(|| self.fail(node, format!("needs input {k}")))?;
        self.values.get(name).ok_or_else(|| self.fail(node, format!("reads `{name}`, which no earlier node computes")))
    }

    fn act(&self, node: &NodeProto, k: usize) -> Result<(Option<usize>, ActShape)> {
        match self.input(node, k)? {
            Value::Act(l, s) => Ok((*l, *s)),
            Value::Const(..) => {
                Err(self.unsupported(node, format!("input {k} is a constant where an activation is expected")))
            }
        }
    }

    fn constant(&self, node: &NodeProto, k: usize) -> Result<(HostTensor, Vec<i64>)> {
        match self.input(node, k)? {
            Value::Const(t, i) => Ok((t.clone(), i.clone())),
            Value::Act(..) => Err(self.unsupported(node, format!("input {k} must be a constant (a weight)"))),
        }
    }

    /// Optional input `k` as a constant (a bias, a bound), or `None` when the node leaves it out.
    fn optional_constant(&self, node: &NodeProto, k: usize) -> Result<Option<HostTensor>> {
        match node.input.get(k).filter(|n| !n.is_empty()) {
            Some(_) => Ok(Some(self.constant(node, k)?.0)),
            None => Ok(None),
        }
    }

    /// A unique layer name: the weight's name without `.weight`, else the node's (or its output).
    fn layer_name(&self, node: &NodeProto, weight: Option<usize>) -> String {
        let from_weight = weight
            .and_then(|k| node.input.get(k))
            .and_then(|w| w.strip_suffix(".weight"))
            .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
        let base = match from_weight {
            Some(n) => n.to_string(),
            None => {
                let n = if node.name.is_empty() {
                    node.output.first().cloned().unwrap_or_default()
                } else {
                    node.name.clone()
                };
                let n: String = n.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
                if n.is_empty() { node.op_type.to_lowercase() } else { n }
            }
        };
        if !self.names.contains_key(&base) {
            return base;
        }
        let mut next = self.next_suffix.borrow_mut();
        let k = next.entry(base.clone()).or_insert(1);
        loop {
            let name = format!("{base}_{k}");
            *k += 1;
            if !self.names.contains_key(&name) {
                return name;
            }
        }
    }

    /// Adds a layer reading `source`, binds the node's first output to it.
    fn push(&mut self, node: &NodeProto, name: String, source: Option<usize>, kind: LayerKind) -> Result<usize> {
        let index = self.layers.len();
        let input = match source {
            Some(s) if s + 1 == index => None,
            Some(s) => Some(self.layers[s].name.clone()),
            None if index == 0 => None,
            None => {
                return Err(
                    self.unsupported(node, "reads the image after the first layer (a second branch from the input)")
                );
            }
        };
        let input_shape = source.map_or(self.image, |s| self.shapes[s]);
        let shape = crate::model::shape::layer_output(&name, &kind, input_shape, |from| {
            self.names.get(from).map(|&i| self.shapes[i])
        })
        .map_err(|e| self.fail(node, e))?;
        let mut layer = Layer::new(name.clone(), kind);
        layer.input = input;
        self.layers.push(layer);
        self.shapes.push(shape);
        self.names.insert(name, index);
        self.bind(node, Value::Act(Some(index), shape));
        Ok(index)
    }

    fn bind(&mut self, node: &NodeProto, value: Value) {
        if let Some(out) = node.output.first() {
            self.values.insert(out.clone(), value);
        }
    }
}

fn pair(r: &Reader, node: &NodeProto, key: &str, default: usize) -> Result<[usize; 2]> {
    match attr_ints(node, key) {
        None => Ok([default, default]),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => Ok([v[0] as usize, v[1] as usize]),
        Some(v) => Err(r.unsupported(node, format!("{key} {v:?}; two positive values expected"))),
    }
}

/// ONNX `pads` `[top, left, bottom, right]`, which must be symmetric.
fn pads(r: &Reader, node: &NodeProto) -> Result<[usize; 2]> {
    match attr_ints(node, "pads") {
        None => Ok([0, 0]),
        Some(p) if p.len() == 4 && p.iter().all(|&v| v >= 0) && p[0] == p[2] && p[1] == p[3] => {
            Ok([p[0] as usize, p[1] as usize])
        }
        Some(p) => Err(r.unsupported(node, format!("pads {p:?}; only symmetric padding"))),
    }
}

/// An f32 attribute as the f64 its shortest decimal form names (`1e-5f32` gives `1e-5`).
fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

fn transpose(t: &HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut data = vec![0f32; t.data.len()];
    for i in 0..rows {
        for j in 0..cols {
            data[j * rows + i] = t.data[i * cols + j];
        }
    }
    HostTensor { shape: vec![cols, rows], data }
}
