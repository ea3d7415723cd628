//! Tensors stored outside the model file, as PyTorch's default exporter writes its weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use onnx_protobuf::{Message, ModelProto, TensorProto};

use crate::error::{Error, Result};

pub(super) fn is_external(t: &TensorProto) -> bool {
    t.data_location.value() == onnx_protobuf::tensor_proto::DataLocation::EXTERNAL as i32
}

/// The external data files of one model, opened once each (by their resolved path).
pub(super) type ExternalFiles = HashMap<PathBuf, std::fs::File>;

/// The bytes of a tensor stored outside the model file at `path` (`location`, `offset`,
/// `length`), as PyTorch's default exporter writes its weights: a file next to the model.
///
/// The location is resolved (links included) and must be a regular file inside the model's
/// folder that holds `offset + length` bytes: a link to a file elsewhere, a device or a FIFO is
/// refused before anything is read, and only the tensor's own bytes are read.
pub(super) fn external_bytes(path: &Path, t: &TensorProto, files: &mut ExternalFiles) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |what: String| Error::file(path, format!("tensor `{}`: {what}", crate::error::printable(&t.name)));
    let entry = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let location = entry("location").ok_or_else(|| bad("is stored externally without a location".into()))?;
    let shown = crate::error::printable(location);
    let relative = Path::new(location);
    if relative.is_absolute() || relative.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(bad(format!("external data `{shown}` must be a file next to the model")));
    }
    let number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("external data {key} `{}` is not a number", crate::error::printable(v))))
            })
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let folder = std::fs::canonicalize(folder).map_err(|e| Error::io(folder, e))?;
    let named = folder.join(relative);
    let file_path = std::fs::canonicalize(&named).map_err(|e| Error::io(&named, e))?;
    if !file_path.starts_with(&folder) {
        return Err(bad(format!(
            "external data `{shown}` resolves to {}, outside the model's folder {}: only files in the model's \
             folder are read",
            crate::error::printable_path(&file_path),
            crate::error::printable_path(&folder)
        )));
    }
    let meta = std::fs::metadata(&file_path).map_err(|e| Error::io(&file_path, e))?;
    if !meta.is_file() {
        return Err(bad(format!("external data `{shown}` is not a regular file (a device, FIFO or folder)")));
    }
    let size = meta.len();
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(size.max(offset)),
    };
    let end = end.filter(|&e| e <= size).ok_or_else(|| {
        bad(format!(
            "external data `{shown}` at offset {offset}, length {}, lies beyond the {size} bytes of the file",
            length.map_or("(to the end)".to_string(), |l| l.to_string())
        ))
    })?;
    let count = usize::try_from(end - offset).map_err(|_| bad("external data is too large to hold".into()))?;
    crate::model::check_memory(count, &format!("external data of tensor `{}`", crate::error::printable(&t.name)))?;
    if !files.contains_key(&file_path) {
        let file = std::fs::File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
        files.insert(file_path.clone(), file);
    }
    let file = files.get_mut(&file_path).expect("inserted above");
    let mut bytes = vec![0u8; count];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| Error::io(&file_path, e))?;
    Ok(bytes)
}

/// The ONNX model `bytes` (read from `path`) with every externally stored tensor moved into the
/// model, so that it runs from memory.
pub fn with_inline_data(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::file(path, format!("is not an ONNX model (truncated or another format): {e}")))?;
    let mut cache = ExternalFiles::new();
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
