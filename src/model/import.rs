//! Import of PyTorch `state_dict`s saved with safetensors, through a name mapping.
//!
//! Each tensor the description needs (`<layer>.<param>`) is looked up in the file under these
//! names, the first present wins:
//! 1. `<layer>.<param>`: the same name (cnnsplitter's own files; the original SimCNN's
//!    `conv_{i}`, `fc_13`..`fc_15`);
//! 2. `<layer>.<k>.<param>` for exactly one index `k`: the layer wrapped in an `nn.Sequential`
//!    (the original ResCNN's `conv_{i}.0`, `classifier.2`);
//! 3. `<i>.<param>`, with `i` the layer's position in the description: a plain
//!    `torch.nn.Sequential` whose modules are the description's layers in order.
//!
//! Every tensor of the file must be used (BatchNorm's integer `num_batches_tracked` is skipped),
//! and every shape must match; errors name both names and both shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::description::{LayerKind, ModelDescription};
use crate::model::shape::infer_shapes;
use crate::model::weights::{HostTensor, Weights, decode_floats, param_specs};
use crate::model::{Model, zoo};

/// The tensors of a safetensors file: float tensors as f32, integer ones by shape only.
struct FileTensors {
    floats: BTreeMap<String, HostTensor>,
    skipped: Vec<String>,
}

fn read_file(bytes: &[u8], path: &Path) -> Result<FileTensors> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, format!("is not a safetensors file: {e}")))?;
    let mut floats = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, view) in st.tensors() {
        if name.ends_with("num_batches_tracked") {
            skipped.push(name);
            continue;
        }
        let data = decode_floats(&name, view.dtype(), view.data()).map_err(|e| e.in_file(path))?;
        floats.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok(FileTensors { floats, skipped })
}

/// The file name of each tensor of `desc` (pairs `(ours, theirs)`), by the rules of the module
/// docs.
pub fn map_names(desc: &ModelDescription, file_names: &BTreeSet<String>) -> Result<Vec<(String, String)>> {
    let shapes = infer_shapes(desc)?;
    let mut pairs = Vec::new();
    for spec in param_specs(desc, &shapes) {
        let layer = &desc.layers[spec.layer].name;
        let param = &spec.name[layer.len() + 1..];
        let wrapped: Vec<&String> = file_names
            .iter()
            .filter(|n| {
                n.strip_prefix(layer.as_str())
                    .and_then(|r| r.strip_prefix('.'))
                    .and_then(|r| r.strip_suffix(param))
                    .and_then(|r| r.strip_suffix('.'))
                    .is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        let positional = format!("{}.{param}", spec.layer);
        let found = if file_names.contains(&spec.name) {
            Some(spec.name.clone())
        } else if wrapped.len() == 1 {
            Some(wrapped[0].clone())
        } else if file_names.contains(&positional) {
            Some(positional.clone())
        } else {
            None
        };
        let Some(theirs) = found else {
            let sample: Vec<&str> = file_names.iter().take(6).map(|s| s.as_str()).collect();
            return Err(Error::Invalid(format!(
                "no tensor for `{}` (shape {:?}): looked for `{}`, `{layer}.<k>.{param}` and `{positional}`; \
                 the file has e.g. {}",
                spec.name,
                spec.shape,
                spec.name,
                sample.join(", ")
            )));
        };
        pairs.push((spec.name, theirs));
    }
    Ok(pairs)
}

/// What an import made.
#[derive(Debug)]
pub struct Imported {
    /// The model.
    pub model: Model,
    /// `(ours, theirs)` for every tensor.
    pub mapping: Vec<(String, String)>,
    /// Tensors of the file that were skipped (`num_batches_tracked`).
    pub skipped: Vec<String>,
}

/// Imports the safetensors file at `path` as architecture `arch` on `input` images. The class
/// count is `classes`, or when `None` the output count of the file's last linear layer.
pub fn import(arch: &str, input: [usize; 3], classes: Option<usize>, path: &Path) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = read_file(&bytes, path)?;
    let names: BTreeSet<String> = file.floats.keys().cloned().collect();
    let mut desc = zoo::build(arch, input, classes.unwrap_or(10))?;
    if classes.is_none() {
        // The logits layer's weight in the file says how many classes there are.
        let last = desc.layers.iter().rposition(|l| matches!(l.kind, LayerKind::Linear { .. }));
        if let Some(i) = last {
            let want = format!("{}.weight", desc.layers[i].name);
            let mapping = map_names(&desc, &names).map_err(|e| e.in_file(path))?;
            if let Some((_, theirs)) = mapping.iter().find(|(ours, _)| *ours == want) {
                let n = file.floats[theirs].shape[0];
                if n != desc.classes {
                    desc = zoo::build(arch, input, n)?;
                }
            }
        }
    }
    let mapping = map_names(&desc, &names).map_err(|e| e.in_file(path))?;
    let shapes = infer_shapes(&desc)?;
    let specs = param_specs(&desc, &shapes);
    let mut used = BTreeSet::new();
    let mut tensors = BTreeMap::new();
    for (spec, (ours, theirs)) in specs.iter().zip(&mapping) {
        let t = &file.floats[theirs];
        if t.shape != spec.shape {
            return Err(Error::file(
                path,
                format!(
                    "tensor `{theirs}` has shape {:?}, but `{ours}` of {arch} needs {:?} (check the architecture, input shape and class count)",
                    t.shape, spec.shape
                ),
            ));
        }
        if !used.insert(theirs.clone()) {
            return Err(Error::file(path, format!("tensor `{theirs}` would fill two tensors of {arch}")));
        }
        tensors.insert(ours.clone(), t.clone());
    }
    if let Some(extra) = names.iter().find(|n| !used.contains(*n)) {
        return Err(Error::file(
            path,
            format!("tensor `{extra}` matches no layer of {arch}: is it the right architecture and width?"),
        ));
    }
    let weights = Weights { tensors };
    weights.check_finite().map_err(|e| e.in_file(path))?;
    let model = Model::new(desc, weights)?;
    Ok(Imported { model, mapping, skipped: file.skipped })
}
