//! Shape inference and checks: every layer's input and output shape for one image.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::description::{LayerKind, ModelDescription, Source};

/// Checked descriptions: one is accepted only when its shapes infer (the checks live here, with
/// the shape inference they run).
impl ModelDescription {
    /// Parses a description from JSON text and checks it (unique names, shapes, class count).
    pub fn from_json(text: &str) -> Result<Self> {
        let desc: ModelDescription =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("invalid model description: {e}")))?;
        desc.validate()?;
        Ok(desc)
    }

    /// Reads and checks a description JSON file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| e.in_file(path))
    }

    /// Checks names, layer parameters, shapes and the class count.
    pub fn validate(&self) -> Result<()> {
        infer_shapes(self).map(|_| ())
    }
}

/// The shape of one image's activation between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ActShape {
    /// A feature map `[channels, height, width]`.
    Map([usize; 3]),
    /// A feature vector of this length.
    Flat(usize),
}

impl ActShape {
    /// Number of values per image.
    pub fn numel(&self) -> usize {
        match *self {
            ActShape::Map([c, h, w]) => c * h * w,
            ActShape::Flat(n) => n,
        }
    }

    /// Channel count of a map, or the length of a vector.
    pub fn channels(&self) -> usize {
        match *self {
            ActShape::Map([c, _, _]) => c,
            ActShape::Flat(n) => n,
        }
    }
}

impl std::fmt::Display for ActShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActShape::Map([c, h, w]) => write!(f, "{c}x{h}x{w}"),
            ActShape::Flat(n) => write!(f, "{n}"),
        }
    }
}

/// Input and output shape of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Shape of the input (for an add: of the previous layer's output).
    pub input: ActShape,
    /// Shape of the output.
    pub output: ActShape,
}

/// The largest image side, kernel, stride, padding, channel or feature count a description may
/// give (far beyond any real CNN; sizes read from files stay clear of overflow).
pub const MAX_SIZE: usize = 1 << 16;

/// The most values one activation of one image may hold.
pub const MAX_ACTIVATION: usize = 1 << 30;

fn check_size(layer: &str, what: &str, value: usize) -> Result<()> {
    if value > MAX_SIZE {
        return Err(Error::layer(layer, format!("{what} {value} is larger than {MAX_SIZE}")));
    }
    Ok(())
}

fn window_out(layer: &str, what: &str, size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize> {
    if kernel == 0 || stride == 0 {
        return Err(Error::layer(layer, format!("{what} kernel and stride must be at least 1")));
    }
    for (name, v) in [("kernel", kernel), ("stride", stride), ("padding", padding)] {
        check_size(layer, &format!("{what} {name}"), v)?;
    }
    let padded = size + 2 * padding;
    if padded < kernel {
        return Err(Error::layer(
            layer,
            format!(
                "{what} window {kernel} does not fit an input of size {size} (padding {padding}): \
                 the output would be empty; the input image is too small for this network"
            ),
        ));
    }
    Ok((padded - kernel) / stride + 1)
}

fn expect_map(layer: &str, kind: &LayerKind, shape: ActShape) -> Result<[usize; 3]> {
    match shape {
        ActShape::Map(m) => Ok(m),
        ActShape::Flat(n) => Err(Error::layer(
            layer,
            format!("{} needs a feature map [C,H,W] as input, but gets a vector of {n} features", kind.type_name()),
        )),
    }
}

/// Infers every layer's shapes and checks the description: unique non-empty names, positive
/// sizes, `Add` references to earlier layers with equal shapes, and logits of `classes` width.
/// The error names the first layer at fault.
pub fn infer_shapes(desc: &ModelDescription) -> Result<Vec<LayerShape>> {
    let [c, h, w] = desc.input;
    if c == 0 || h == 0 || w == 0 || c > MAX_SIZE || h > MAX_SIZE || w > MAX_SIZE {
        return Err(Error::Invalid(format!(
            "model `{}`: input shape {c}x{h}x{w} needs every dimension in 1..={MAX_SIZE}",
            desc.name
        )));
    }
    if desc.classes < 2 {
        return Err(Error::Invalid(format!("model `{}`: needs at least 2 classes, got {}", desc.name, desc.classes)));
    }
    if desc.layers.is_empty() {
        return Err(Error::Invalid(format!("model `{}` has no layers", desc.name)));
    }
    let mut names = HashSet::new();
    let mut shapes: Vec<LayerShape> = Vec::with_capacity(desc.layers.len());
    for (index, layer) in desc.layers.iter().enumerate() {
        let name = layer.name.as_str();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Error::layer(name, "layer names must be non-empty without spaces"));
        }
        if !names.insert(name) {
            return Err(Error::layer(name, "the name is used by two layers"));
        }
        let current = match desc.source(index) {
            Some(Source::Image) => ActShape::Map(desc.input),
            Some(Source::Layer(i)) => shapes[i].output,
            None => {
                let input = layer.input.as_deref().unwrap_or_default();
                return Err(Error::layer(
                    name,
                    format!("takes the output of `{input}`, which is not an earlier layer"),
                ));
            }
        };
        let output = layer_output(name, &layer.kind, current, |from| {
            desc.layers[..index].iter().position(|l| l.name == from).map(|i| shapes[i].output)
        })?;
        let values = match output {
            ActShape::Map([c, h, w]) => c.checked_mul(h).and_then(|ch| ch.checked_mul(w)),
            ActShape::Flat(n) => Some(n),
        };
        if values.is_none_or(|v| v > MAX_ACTIVATION) {
            return Err(Error::layer(
                name,
                format!("its output {output} holds more than {MAX_ACTIVATION} values per image"),
            ));
        }
        shapes.push(LayerShape { input: current, output });
    }
    let current = shapes[shapes.len() - 1].output;
    if current != ActShape::Flat(desc.classes) {
        let last = &desc.layers[desc.layers.len() - 1].name;
        return Err(Error::layer(
            last.as_str(),
            format!(
                "the network ends with shape {current}, but the logits must be a vector of {} classes",
                desc.classes
            ),
        ));
    }
    Ok(shapes)
}

/// The output shape of one layer `name` of kind `kind` for an input of shape `current`;
/// `earlier(name)` gives the output shape of an earlier layer (for an add's operand). Checks the
/// layer's sizes; the error names the layer.
pub fn layer_output(
    name: &str,
    kind: &LayerKind,
    current: ActShape,
    earlier: impl Fn(&str) -> Option<ActShape>,
) -> Result<ActShape> {
    let output = match kind {
        LayerKind::Conv2d { out_channels, kernel, stride, padding, groups, .. } => {
            let [c, h, w] = expect_map(name, kind, current)?;
            if *out_channels == 0 {
                return Err(Error::layer(name, "a convolution needs at least one kernel"));
            }
            if *groups == 0 || c % groups != 0 || out_channels % groups != 0 {
                return Err(Error::layer(
                    name,
                    format!("groups = {groups} must divide both its {c} input channels and its {out_channels} kernels"),
                ));
            }
            check_size(name, "out_channels", *out_channels)?;
            let oh = window_out(name, "convolution", h, kernel[0], stride[0], padding[0])?;
            let ow = window_out(name, "convolution", w, kernel[1], stride[1], padding[1])?;
            ActShape::Map([*out_channels, oh, ow])
        }
        LayerKind::BatchNorm2d { eps, momentum } => {
            expect_map(name, kind, current)?;
            if eps.is_nan() || *eps <= 0.0 || !(0.0..=1.0).contains(momentum) {
                return Err(Error::layer(name, "needs eps > 0 and momentum in [0, 1]"));
            }
            current
        }
        LayerKind::Relu | LayerKind::Relu6 => current,
        LayerKind::MaxPool2d { kernel, stride, padding } | LayerKind::AvgPool2d { kernel, stride, padding } => {
            let [c, h, w] = expect_map(name, kind, current)?;
            if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
                return Err(Error::layer(
                    name,
                    format!("pooling padding {padding:?} must be at most half of its window {kernel:?}"),
                ));
            }
            let oh = window_out(name, "pooling", h, kernel[0], stride[0], padding[0])?;
            let ow = window_out(name, "pooling", w, kernel[1], stride[1], padding[1])?;
            ActShape::Map([c, oh, ow])
        }
        LayerKind::GlobalAvgPool => {
            let [c, _, _] = expect_map(name, kind, current)?;
            ActShape::Map([c, 1, 1])
        }
        LayerKind::Flatten => ActShape::Flat(expect_map(name, kind, current)?.iter().product()),
        LayerKind::Linear { out_features, .. } => {
            if let ActShape::Map(m) = current {
                return Err(Error::layer(
                    name,
                    format!(
                        "linear needs a feature vector, but gets a {}x{}x{} map: add a flatten layer before it",
                        m[0], m[1], m[2]
                    ),
                ));
            }
            if *out_features == 0 {
                return Err(Error::layer(name, "a linear layer needs at least one output"));
            }
            check_size(name, "out_features", *out_features)?;
            ActShape::Flat(*out_features)
        }
        LayerKind::Dropout { p } => {
            if !(0.0..1.0).contains(p) {
                return Err(Error::layer(name, format!("dropout probability {p} is not in [0, 1)")));
            }
            current
        }
        LayerKind::Concat { from } => {
            let [mut channels, h, w] = expect_map(name, kind, current)?;
            if from.is_empty() {
                return Err(Error::layer(name, "a concat needs at least one earlier layer in `from`"));
            }
            for f in from {
                match earlier(f) {
                    Some(ActShape::Map([c, fh, fw])) if (fh, fw) == (h, w) => channels += c,
                    Some(other) => {
                        return Err(Error::layer(
                            name,
                            format!(
                                "concatenates `{f}` of shape {other} to an input of shape {current}: maps of the same height and width needed"
                            ),
                        ));
                    }
                    None => {
                        return Err(Error::layer(name, format!("concatenates `{f}`, which is not an earlier layer")));
                    }
                }
            }
            check_size(name, "concatenated channels", channels)?;
            ActShape::Map([channels, h, w])
        }
        LayerKind::Add { from } => {
            let Some(other) = earlier(from) else {
                return Err(Error::layer(name, format!("adds the output of `{from}`, which is not an earlier layer")));
            };
            if other != current {
                return Err(Error::layer(
                    name,
                    format!("adds `{from}` of shape {other} to an input of shape {current}: shapes differ"),
                ));
            }
            current
        }
    };
    Ok(output)
}
