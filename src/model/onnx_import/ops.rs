//! The node-by-node mapping of ONNX ops to layers.

use onnx_protobuf::NodeProto;

use super::{Reader, Value, attr, attr_int, attr_ints, decimal, pads, pair, transpose};
use crate::error::Result;
use crate::model::description::LayerKind;
use crate::model::shape::ActShape;
use crate::model::weights::HostTensor;

impl Reader<'_> {
    /// Maps one node to layers (or binds its output to what it passes through).
    pub(super) fn node(&mut self, node: &NodeProto) -> Result<()> {
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
            "Relu" => self.unary(node, LayerKind::Relu)?,
            "Clip" => {
                let (src, _) = self.act(node, 0)?;
                let bound = |k: usize, key: &str, default: f32| -> Result<f32> {
                    match self.optional_constant(node, k)? {
                        Some(t) => t.data.first().copied().ok_or_else(|| self.fail(node, format!("empty {key} bound"))),
                        None => Ok(attr(node, key).map_or(default, |a| a.f)),
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
            "GlobalAveragePool" => self.unary(node, LayerKind::GlobalAvgPool)?,
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
                let two_d = target.len() == 2 && target[0] >= -1 && (target[1] == -1 || target[1] == features);
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

    /// A layer of `kind` reading the node's one activation.
    fn unary(&mut self, node: &NodeProto, kind: LayerKind) -> Result<()> {
        let (src, _) = self.act(node, 0)?;
        let name = self.layer_name(node, None);
        self.push(node, name, src, kind)?;
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
        let bias = self.optional_constant(node, 2)?;
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
        let bias = match self.optional_constant(node, 2)? {
            Some(mut c) => {
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
