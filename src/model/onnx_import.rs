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

use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::dimension;
use onnx_protobuf::type_proto::Value as TypeValue;
use onnx_protobuf::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};

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
    names: std::collections::HashSet<String>,
    /// The image's shape.
    image: ActShape,
    /// Files of external tensor data, read once.
    external_files: std::cell::RefCell<HashMap<std::path::PathBuf, Vec<u8>>>,
}

/// Reads the ONNX file at `path`; `input` gives `[C, H, W]` where the file leaves it symbolic.
pub fn import_onnx(path: &Path, input: Option<[usize; 3]>) -> Result<OnnxImport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_onnx_bytes(&bytes, path, input)
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
        Error::file(self.path, format!("node `{}` ({}): {what}", node.name, node.op_type))
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
        let mut name = base.clone();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
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
        let mut layer = Layer::new(name.clone(), kind);
        layer.input = input;
        self.layers.push(layer);
        let shape = self.shape_of(index, node)?;
        self.shapes.push(shape);
        self.names.insert(name);
        self.bind(node, Value::Act(Some(index), shape));
        Ok(index)
    }

    /// The output shape of the layer just pushed, from its input shape.
    fn shape_of(&self, index: usize, node: &NodeProto) -> Result<ActShape> {
        let layer = &self.layers[index];
        let input_shape = match &layer.input {
            Some(n) => self.shapes[self.layers.iter().position(|l| &l.name == n).expect("named earlier")],
            None if index == 0 => self.image,
            None => self.shapes[index - 1],
        };
        crate::model::shape::layer_output(&layer.name, &layer.kind, input_shape, |from| {
            self.layers[..index].iter().position(|l| l.name == from).map(|i| self.shapes[i])
        })
        .map_err(|e| self.fail(node, e))
    }

    fn bind(&mut self, node: &NodeProto, value: Value) {
        if let Some(out) = node.output.first() {
            self.values.insert(out.clone(), value);
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        match node.op_type.as_str() {
            "Constant" => {
                let t = attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| self.unsupported(node, "a Constant without a tensor `value`"))?;
                let v = self.tensor(t)?;
                self.bind(node, v);
            }
            "Identity" | "Dropout" => {
                let v = self.input(node, 0)?.clone();
                self.dropped.push(format!("{} ({})", node.name, node.op_type));
                self.bind(node, v);
            }
            "Conv" => self.conv(node)?,
            "BatchNormalization" => {
                let (src, _) = self.act(node, 0)?;
                if attr_int(node, "training_mode", 0) != 0 || node.output.len() > 1 {
                    return Err(self.unsupported(node, "BatchNormalization in training mode"));
                }
                let eps = attr(node, "epsilon").map_or(1e-5, |a| decimal(a.f));
                // ONNX's momentum weighs the old running value: PyTorch's is 1 - it.
                let momentum = attr(node, "momentum").map_or(0.1, |a| ((1.0 - decimal(a.f)) * 1e9).round() / 1e9);
                let name = self.layer_name(node, Some(1));
                let mut tensors = Vec::new();
                for (k, suffix) in [(1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var")] {
                    tensors.push((format!("{name}.{suffix}"), self.constant(node, k)?.0));
                }
                self.push(node, name, src, LayerKind::BatchNorm2d { eps, momentum: momentum.clamp(0.0, 1.0) })?;
                self.weights.tensors.extend(tensors);
            }
            "Relu" => {
                let (src, _) = self.act(node, 0)?;
                let name = self.layer_name(node, None);
                self.push(node, name, src, LayerKind::Relu)?;
            }
            "Clip" => {
                let (src, _) = self.act(node, 0)?;
                let bound = |k: usize, key: &str, default: f32| -> Result<f32> {
                    if node.input.get(k).is_some_and(|n| !n.is_empty()) {
                        let (t, _) = self.constant(node, k)?;
                        t.data.first().copied().ok_or_else(|| self.fail(node, format!("empty {key} bound")))
                    } else {
                        Ok(attr(node, key).map_or(default, |a| a.f))
                    }
                };
                let (lo, hi) = (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?);
                let kind = match (lo, hi) {
                    (0.0, 6.0) => LayerKind::Relu6,
                    (0.0, h) if h == f32::INFINITY => LayerKind::Relu,
                    _ => {
                        return Err(
                            self.unsupported(node, format!("Clip({lo}, {hi}); only Clip(0, 6) and Clip(0, inf)"))
                        );
                    }
                };
                let name = self.layer_name(node, None);
                self.push(node, name, src, kind)?;
            }
            "MaxPool" | "AveragePool" => self.pool(node)?,
            "GlobalAveragePool" => {
                let (src, _) = self.act(node, 0)?;
                let name = self.layer_name(node, None);
                self.push(node, name, src, LayerKind::GlobalAvgPool)?;
            }
            "ReduceMean" => {
                let (src, _) = self.act(node, 0)?;
                let axes = match attr_ints(node, "axes") {
                    Some(a) => a,
                    None if node.input.len() > 1 => self.constant(node, 1)?.1,
                    None => Vec::new(),
                };
                let mut axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
                axes.sort();
                if axes != [2, 3] {
                    return Err(
                        self.unsupported(node, format!("ReduceMean over axes {axes:?}; only over H and W (2, 3)"))
                    );
                }
                let name = self.layer_name(node, None);
                let pooled = self.push(node, name.clone(), src, LayerKind::GlobalAvgPool)?;
                if attr_int(node, "keepdims", 1) == 0 {
                    let flat = self.layer_name(node, None);
                    self.push(node, flat, Some(pooled), LayerKind::Flatten)?;
                }
            }
            "Flatten" => {
                let (src, shape) = self.act(node, 0)?;
                if attr_int(node, "axis", 1) != 1 {
                    return Err(self.unsupported(node, "Flatten with axis other than 1"));
                }
                self.flatten(node, src, shape)?;
            }
            "Reshape" => {
                let (src, shape) = self.act(node, 0)?;
                let (_, target) = self.constant(node, 1)?;
                let features = shape.numel() as i64;
                let two_d = target.len() == 2
                    && (target[0] == -1 || target[0] == 0 || target[0] == 1 || target[0] > 0)
                    && (target[1] == -1 || target[1] == features);
                if !two_d {
                    return Err(self.unsupported(node, format!("Reshape to {target:?}; only to [batch, {features}]")));
                }
                self.flatten(node, src, shape)?;
            }
            "Gemm" => self.gemm(node)?,
            "MatMul" => {
                let (src, _) = self.act(node, 0)?;
                let (w, _) = self.constant(node, 1)?;
                if w.shape.len() != 2 {
                    return Err(self.unsupported(node, format!("MatMul by a {}-D weight", w.shape.len())));
                }
                let name = self.layer_name(node, Some(1));
                let weight = transpose(&w);
                let kind = LayerKind::Linear { out_features: w.shape[1], bias: false };
                self.push(node, name.clone(), src, kind)?;
                self.weights.tensors.insert(format!("{name}.weight"), weight);
            }
            "Add" => self.add(node)?,
            "Concat" => {
                let axis = attr_int(node, "axis", 1);
                if axis != 1 && axis != -3 {
                    return Err(self.unsupported(node, format!("Concat over axis {axis}; only over channels (1)")));
                }
                let mut sources = Vec::new();
                for k in 0..node.input.len() {
                    match self.act(node, k)? {
                        (Some(l), ActShape::Map(_)) => sources.push(l),
                        _ => return Err(self.unsupported(node, "Concat of the image or of vectors")),
                    }
                }
                let Some((&first, rest)) = sources.split_first() else {
                    return Err(self.fail(node, "has no inputs"));
                };
                let from = rest.iter().map(|&l| self.layers[l].name.clone()).collect();
                let name = self.layer_name(node, None);
                self.push(node, name, Some(first), LayerKind::Concat { from })?;
            }
            other => {
                return Err(self.unsupported(node, format!("op `{other}` has no counterpart in the model description")));
            }
        }
        Ok(())
    }

    fn flatten(&mut self, node: &NodeProto, src: Option<usize>, shape: ActShape) -> Result<()> {
        if let ActShape::Flat(_) = shape {
            let v = self.input(node, 0)?.clone();
            self.bind(node, v);
            return Ok(());
        }
        let name = self.layer_name(node, None);
        self.push(node, name, src, LayerKind::Flatten)?;
        Ok(())
    }

    fn conv(&mut self, node: &NodeProto) -> Result<()> {
        let (src, _) = self.act(node, 0)?;
        let (w, _) = self.constant(node, 1)?;
        if w.shape.len() != 4 {
            return Err(
                self.unsupported(node, format!("a {}-D convolution weight; only 2-D convolutions", w.shape.len()))
            );
        }
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(self.unsupported(node, "a dilated convolution"));
        }
        if attr(node, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
            return Err(self.unsupported(node, "auto_pad; only explicit pads"));
        }
        let kernel = [w.shape[2], w.shape[3]];
        let stride = pair(self, node, "strides", 1)?;
        let padding = pads(self, node)?;
        let groups = attr_int(node, "group", 1).max(1) as usize;
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => Some(self.constant(node, 2)?.0),
            None => None,
        };
        let name = self.layer_name(node, Some(1));
        let kind =
            LayerKind::Conv2d { out_channels: w.shape[0], kernel, stride, padding, bias: bias.is_some(), groups };
        self.push(node, name.clone(), src, kind)?;
        self.weights.tensors.insert(format!("{name}.weight"), w);
        if let Some(b) = bias {
            self.weights.tensors.insert(format!("{name}.bias"), b);
        }
        Ok(())
    }

    fn pool(&mut self, node: &NodeProto) -> Result<()> {
        let (src, _) = self.act(node, 0)?;
        if attr_int(node, "ceil_mode", 0) != 0 {
            return Err(self.unsupported(node, "ceil_mode = 1; only floor mode"));
        }
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) || node.output.len() > 1 {
            return Err(self.unsupported(node, "dilated pooling or pooling indices"));
        }
        let kernel = attr_ints(node, "kernel_shape")
            .filter(|k| k.len() == 2 && k.iter().all(|&v| v > 0))
            .map(|k| [k[0] as usize, k[1] as usize])
            .ok_or_else(|| self.fail(node, "needs a 2-D kernel_shape"))?;
        let stride = pair(self, node, "strides", 1)?;
        let padding = pads(self, node)?;
        let kind = if node.op_type == "MaxPool" {
            LayerKind::MaxPool2d { kernel, stride, padding }
        } else {
            if padding != [0, 0] && attr_int(node, "count_include_pad", 0) == 0 {
                return Err(self.unsupported(
                    node,
                    "AveragePool with padding that does not count in the average (count_include_pad = 0)",
                ));
            }
            LayerKind::AvgPool2d { kernel, stride, padding }
        };
        let name = self.layer_name(node, None);
        self.push(node, name, src, kind)?;
        Ok(())
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<()> {
        let (src, _) = self.act(node, 0)?;
        let (b, _) = self.constant(node, 1)?;
        let alpha = attr(node, "alpha").map_or(1.0, |a| a.f);
        let beta = attr(node, "beta").map_or(1.0, |a| a.f);
        if attr_int(node, "transA", 0) != 0 || b.shape.len() != 2 {
            return Err(self.unsupported(node, "Gemm with transA or a weight that is not 2-D"));
        }
        let mut weight = if attr_int(node, "transB", 0) != 0 { b } else { transpose(&b) };
        weight.data.iter_mut().for_each(|v| *v *= alpha);
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => {
                let (mut c, _) = self.constant(node, 2)?;
                if c.data.len() != weight.shape[0] {
                    return Err(self.unsupported(node, format!("a Gemm bias of shape {:?}", c.shape)));
                }
                c.data.iter_mut().for_each(|v| *v *= beta);
                c.shape = vec![weight.shape[0]];
                Some(c)
            }
            None => None,
        };
        let name = self.layer_name(node, Some(1));
        self.push(node, name.clone(), src, LayerKind::Linear { out_features: weight.shape[0], bias: bias.is_some() })?;
        self.weights.tensors.insert(format!("{name}.weight"), weight);
        if let Some(c) = bias {
            self.weights.tensors.insert(format!("{name}.bias"), c);
        }
        Ok(())
    }

    fn add(&mut self, node: &NodeProto) -> Result<()> {
        let (a, b) = (self.input(node, 0)?.clone(), self.input(node, 1)?.clone());
        match (a, b) {
            (Value::Act(Some(x), sx), Value::Act(Some(y), sy)) => {
                if sx != sy {
                    return Err(self.fail(node, format!("adds shapes {sx} and {sy}")));
                }
                let (first, second) = (x.max(y), x.min(y));
                let name = self.layer_name(node, None);
                let from = self.layers[second].name.clone();
                self.push(node, name, Some(first), LayerKind::Add { from })?;
            }
            (Value::Act(Some(x), shape), Value::Const(c, _)) | (Value::Const(c, _), Value::Act(Some(x), shape)) => {
                // A bias after MatMul (or a bias-less Linear / Conv) that nothing else read.
                let last = x + 1 == self.layers.len();
                let channels = match shape {
                    ActShape::Flat(n) => n,
                    ActShape::Map([ch, ..]) => ch,
                };
                let fits = c.data.len() == channels;
                let layer = &mut self.layers[x];
                let bias_slot = match &mut layer.kind {
                    LayerKind::Linear { bias, .. } if !*bias => Some(bias),
                    _ => None,
                };
                match (bias_slot, last && fits) {
                    (Some(bias), true) => {
                        *bias = true;
                        let name = format!("{}.bias", layer.name);
                        self.weights.tensors.insert(name, HostTensor { shape: vec![channels], data: c.data });
                        self.bind(node, Value::Act(Some(x), shape));
                    }
                    _ => {
                        return Err(self.unsupported(
                            node,
                            "Add of a constant that is not the bias of the linear layer just before it",
                        ));
                    }
                }
            }
            _ => return Err(self.unsupported(node, "Add of two constants or of the image")),
        }
        Ok(())
    }
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location.value() == onnx_protobuf::tensor_proto::DataLocation::EXTERNAL as i32
}

/// The bytes of a tensor stored outside the model file at `path` (`location`, `offset`,
/// `length`), as PyTorch's default exporter writes its weights: a file next to the model.
/// `cache` keeps the files read.
fn external_bytes(path: &Path, t: &TensorProto, cache: &mut HashMap<std::path::PathBuf, Vec<u8>>) -> Result<Vec<u8>> {
    let bad = |what: String| Error::file(path, format!("tensor `{}`: {what}", t.name));
    let entry = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let location = entry("location").ok_or_else(|| bad("is stored externally without a location".into()))?;
    let relative = Path::new(location);
    if relative.is_absolute() || relative.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(bad(format!("external data `{location}` must be a file next to the model")));
    }
    let number = |key: &str| -> Result<Option<usize>> {
        entry(key)
            .map(|v| v.parse::<usize>().map_err(|_| bad(format!("external data {key} `{v}` is not a number"))))
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let file = path.parent().unwrap_or(Path::new(".")).join(relative);
    if !cache.contains_key(&file) {
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        cache.insert(file.clone(), bytes);
    }
    let bytes = &cache[&file];
    let end = length.map_or(bytes.len(), |l| offset.saturating_add(l));
    bytes.get(offset..end).map(<[u8]>::to_vec).ok_or_else(|| {
        bad(format!("external data {offset}..{end} lies beyond the {} bytes of {}", bytes.len(), file.display()))
    })
}

/// The ONNX model `bytes` (read from `path`) with every externally stored tensor moved into the
/// model, so that it runs from memory.
pub fn with_inline_data(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::file(path, format!("is not an ONNX model (truncated or another format): {e}")))?;
    let mut cache = HashMap::new();
    let mut changed = false;
    if let Some(graph) = model.graph.as_mut() {
        for t in graph.initializer.iter_mut().filter(|t| is_external(t)) {
            t.raw_data = external_bytes(path, t, &mut cache)?;
            t.external_data.clear();
            t.data_location = onnx_protobuf::tensor_proto::DataLocation::DEFAULT.into();
            changed = true;
        }
    }
    if !changed {
        return Ok(bytes.to_vec());
    }
    model.write_to_bytes().map_err(|e| Error::Serialize(format!("ONNX: {e}")))
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

/// The check after an import: the largest difference between the imported model (on burn) and
/// the ONNX file itself (on ONNX Runtime) over the same random images, relative to the largest
/// logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImportCheck {
    /// Images compared.
    pub images: usize,
    /// Largest absolute difference of a logit.
    pub max_abs: f32,
    /// `max_abs` over the largest absolute logit of the file.
    pub relative: f32,
}

/// The relative difference beyond which an import is refused.
pub const MAX_RELATIVE_ERROR: f32 = 1e-4;

/// Runs `imported` and the ONNX `bytes` it came from on the same random images; `Ok(None)` when
/// ONNX Runtime is not available (the check cannot run).
pub fn check_against_file(imported: &OnnxImport, bytes: &[u8], threads: usize) -> Result<Option<ImportCheck>> {
    use crate::engine::Engine;
    use crate::engine::PreparedModel;
    use crate::engine::burn::BurnEngine;
    use crate::engine::ort::{OrtEngine, OrtModel};
    if crate::engine::ort::environment().is_err() {
        return Ok(None);
    }
    let desc = &imported.model.description;
    // A file exported with a fixed batch runs in batches of that size.
    let batch = imported.file_input[0].unwrap_or(8);
    let n = batch * 8usize.div_ceil(batch);
    let images = crate::bench::random_images(n, desc.input, 1);
    let ort = OrtEngine::new(threads)?;
    let file = OrtModel::new(ort.session(bytes)?, desc.input, desc.classes);
    let want = file.logits(&images, n, batch)?;
    let got = BurnEngine::default().prepare(&imported.model)?.logits(&images, n, batch)?;
    let max_abs = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    Ok(Some(ImportCheck { images: n, max_abs, relative: max_abs / scale }))
}
