//! Tensors stored outside the model file, as PyTorch's default exporter writes its weights.

use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::{Message, ModelProto, TensorProto};

use crate::error::{Error, Result};

pub(super) fn is_external(t: &TensorProto) -> bool {
    t.data_location.value() == onnx_protobuf::tensor_proto::DataLocation::EXTERNAL as i32
}

/// The bytes of a tensor stored outside the model file at `path` (`location`, `offset`,
/// `length`), as PyTorch's default exporter writes its weights: a file next to the model.
/// `cache` keeps the files read.
pub(super) fn external_bytes(
    path: &Path,
    t: &TensorProto,
    cache: &mut HashMap<std::path::PathBuf, Vec<u8>>,
) -> Result<Vec<u8>> {
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
