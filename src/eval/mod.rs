//! Evaluation, shared by training, modularization and patching: batched logits of a model on
//! an image set through an inference engine, predictions (argmax) and metrics.

pub mod metrics;

use crate::data::ImageSet;
use crate::data::pipeline::Normalization;
use crate::engine::{DEFAULT_BATCH, Engine};
use crate::error::{Error, Result};
use crate::model::Model;
use metrics::{Metrics, argmax_rows};

/// Logits `[n, classes]` of `model` on every image of `set`, normalised with `normalization`
/// (none for an empty set).
pub fn logits(engine: &dyn Engine, model: &Model, set: &ImageSet, normalization: &Normalization) -> Result<Vec<f32>> {
    check_fit(model, set)?;
    if set.is_empty() {
        return Ok(Vec::new());
    }
    let images = normalization.images(set);
    engine.prepare(model)?.logits(&images, set.len(), DEFAULT_BATCH)
}

/// Metrics of `model` on `set`.
pub fn evaluate(
    engine: &dyn Engine,
    model: &Model,
    set: &ImageSet,
    normalization: &Normalization,
    class_names: &[String],
) -> Result<Metrics> {
    let logits = logits(engine, model, set, normalization)?;
    let predictions = argmax_rows(&logits, model.description.classes);
    Ok(Metrics::new(&set.labels, &predictions, class_names))
}

/// Checks that the images fit the model's input shape.
pub fn check_fit(model: &Model, set: &ImageSet) -> Result<()> {
    if set.shape != model.description.input {
        let [c, h, w] = set.shape;
        let [mc, mh, mw] = model.description.input;
        return Err(Error::Invalid(format!(
            "the data's images are {c}x{h}x{w}, but model `{}` takes {mc}x{mh}x{mw}",
            model.description.name
        )));
    }
    Ok(())
}
