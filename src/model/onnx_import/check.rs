//! The check after an import: the imported model against the file itself.

use super::OnnxImport;
use crate::error::Result;

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
