//! The check after an import: the imported model (on burn) against the ONNX file itself (on ONNX
//! Runtime). It lives with the engines because it runs both.

use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::Value as TypeValue;
use onnx_protobuf::{Message, ModelProto};

use crate::compute::Compute;
use crate::error::{Error, Result};
use crate::model::onnx_import::OnnxImport;

/// The check after an import: the largest difference between the imported model (on burn) and
/// the ONNX file itself (on ONNX Runtime) over the same random images, relative to the largest
/// logit. A NaN or an infinity on either side counts as an infinite difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImportCheck {
    /// Images compared.
    pub images: usize,
    /// Largest absolute difference of a logit (infinite when a logit is not finite).
    pub max_abs: f32,
    /// `max_abs` over the largest absolute logit of the file.
    pub relative: f32,
    /// Logits that are NaN or infinite, in either model.
    pub non_finite: usize,
    /// The batch the file fixes, when it was too large to run and the check ran a copy of the
    /// file with an open batch instead.
    pub fixed_batch_replaced: Option<usize>,
}

/// The relative difference beyond which an import is refused.
pub const MAX_RELATIVE_ERROR: f32 = 1e-4;

/// Images the check compares.
pub const CHECK_IMAGES: usize = 8;

/// The largest batch a file may fix and still be run as it is (beyond it, the check runs a copy
/// with an open batch).
pub const MAX_FIXED_BATCH: usize = 64;

/// Runs `imported` and the ONNX `bytes` it came from on the same random images; `Ok(None)` when
/// ONNX Runtime is not available (the check cannot run). A file that fixes its batch at more than
/// [`MAX_FIXED_BATCH`] images runs as a copy with an open batch (refused, with the reason, when
/// that copy does not run).
pub fn check_against_file(imported: &OnnxImport, bytes: &[u8], compute: &Compute) -> Result<Option<ImportCheck>> {
    let threads = compute.threads();
    use crate::engine::Engine;
    use crate::engine::PreparedModel;
    use crate::engine::burn::BurnEngine;
    use crate::engine::ort::{OrtEngine, OrtModel};
    if crate::engine::ort::environment().is_err() {
        return Ok(None);
    }
    let desc = &imported.model.description;
    let (runnable, batch, replaced) = match imported.file_input[0] {
        None => (std::borrow::Cow::Borrowed(bytes), CHECK_IMAGES, None),
        Some(b) if b <= MAX_FIXED_BATCH => (std::borrow::Cow::Borrowed(bytes), b, None),
        Some(b) => (std::borrow::Cow::Owned(with_open_batch(bytes)?), CHECK_IMAGES, Some(b)),
    };
    // A file with a small fixed batch runs in batches of that size.
    let n = batch * CHECK_IMAGES.div_ceil(batch);
    let floats =
        desc.input.iter().try_fold(n, |a, &d| a.checked_mul(d)).filter(|&f| f <= isize::MAX as usize / 4).ok_or_else(
            || Error::Invalid(format!("the check's {n} images of shape {:?} are too large to hold", desc.input)),
        )?;
    crate::model::check_memory(floats * 4, &format!("the check's {n} random images of shape {:?}", desc.input))?;
    let images = crate::engine::random_images(n, desc.input, 1);
    let ort = OrtEngine::new(threads)?;
    let file = OrtModel::new(ort.session(&runnable)?, desc.input, desc.classes);
    let want = file.logits(&images, n, batch).map_err(|e| match replaced {
        Some(b) => Error::Engine(format!(
            "the file fixes its batch at {b} images, too many to check it ({CHECK_IMAGES} random images are \
             compared), and a copy with an open batch does not run ({e}): export it with an open batch \
             (`dynamic_axes={{'input': {{0: 'batch'}}}}`) or a batch of at most {MAX_FIXED_BATCH}"
        )),
        None => e,
    })?;
    let got = BurnEngine::new(compute).prepare(&imported.model)?.logits(&images, n, batch)?;
    Ok(Some(compare(&got, &want, n, replaced)))
}

/// The difference of the imported model's logits `got` from the file's `want`.
fn compare(got: &[f32], want: &[f32], images: usize, fixed_batch_replaced: Option<usize>) -> ImportCheck {
    let non_finite = got.iter().chain(want).filter(|v| !v.is_finite()).count();
    let max_abs = if non_finite > 0 || got.len() != want.len() {
        f32::INFINITY
    } else {
        got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max)
    };
    let scale = want.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    ImportCheck { images, max_abs, relative: max_abs / scale, non_finite, fixed_batch_replaced }
}

/// The ONNX `bytes` with the batch dimension of the graph's inputs and outputs left open (named
/// `batch`) and the intermediate shapes dropped, so that the file runs on any batch.
fn with_open_batch(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut model = ModelProto::parse_from_bytes(bytes).map_err(|e| Error::Serialize(format!("ONNX: {e}")))?;
    if let Some(graph) = model.graph.as_mut() {
        for v in graph.input.iter_mut().chain(graph.output.iter_mut()) {
            if let Some(TypeValue::TensorType(t)) = v.type_.as_mut().and_then(|t| t.value.as_mut())
                && let Some(first) = t.shape.as_mut().and_then(|s| s.dim.first_mut())
            {
                *first = Dimension { value: Some(dimension::Value::DimParam("batch".into())), ..Dimension::default() };
            }
        }
        graph.value_info.clear();
    }
    model.write_to_bytes().map_err(|e| Error::Serialize(format!("ONNX: {e}")))
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn a_nan_or_an_infinity_is_an_infinite_difference() {
        let exact = compare(&[1.0, 2.0], &[1.0, 2.5], 1, None);
        assert_eq!((exact.max_abs, exact.non_finite), (0.5, 0));
        assert_eq!(exact.relative, 0.2);
        for (got, want) in [([f32::NAN, 1.0], [f32::INFINITY, 1.0]), ([f32::NAN, 1.0], [f32::NAN, 1.0])] {
            let c = compare(&got, &want, 1, None);
            assert!(c.max_abs.is_infinite() && c.relative.is_infinite(), "{c:?}");
            assert!(c.non_finite >= 1);
        }
        let both_inf = compare(&[f32::INFINITY], &[f32::INFINITY], 1, None);
        assert!(both_inf.relative > super::MAX_RELATIVE_ERROR);
    }
}
