//! Why a finished modularization's composed modules fall short of the model, when they do: the
//! tool says so rather than leave a user with modules that do not recompose.

use std::path::Path;

use crate::choice::Choice;
use crate::error::Result;
use crate::files::{read_json, read_jsonl};
use crate::folders::ModularizeDir;
use crate::modularize::genetic::ga::InitKind;
use crate::modularize::{ModularizeConfig, Summary};
use crate::records::GenerationRecord;

/// A composed validation accuracy more than the run's sensitivity threshold below the model's,
/// with the likely cause and what to try; `None` when the modules compose within it.
pub fn shortfall(dir: &Path, summary: &Summary) -> Result<Option<String>> {
    let out = ModularizeDir::new(dir);
    let config: ModularizeConfig = read_json(&out.config())?;
    let model = summary.model_accuracy.validation;
    let composed = summary.composed_accuracy.validation;
    if composed >= model - config.sensitivity_threshold {
        return Ok(None);
    }
    let records: Vec<GenerationRecord> = read_jsonl(&out.generations())?;
    let first = records.first().map_or(composed, |r| r.accuracy);
    let chance = 1.0 / summary.kernels_per_module.len().max(1) as f64;
    let head = format!(
        "the modules compose to {composed:.3} on validation, {:.3} below the model's {model:.3} (chance is \
         {chance:.3}); the first generation's best was {first:.3}",
        model - composed
    );
    let near_chance = first < chance + 0.25 * (model - chance);
    let advice = match (near_chance, config.ga.init) {
        (true, InitKind::Graded) => {
            "Even the first modules, some keeping nearly the whole model, composed near chance: check that the \
             model itself classifies every class (its accuracy per class), or try a larger --population"
                .to_string()
        }
        (true, init) => format!(
            "The first modules were already near chance: the initial drops (--init {}), compounded over the \
             network's many channel groups, remove too much of this network. Start a new run with --init graded \
             (`init = \"graded\"` under an experiment config's [modularize]; individuals from the paper's drops \
             down to nearly the whole model)",
            init.name()
        ),
        (false, _) => format!(
            "The search went from {first:.3} to {composed:.3} in {} generations: more generations or a larger \
             --population may close more of the gap",
            summary.generations
        ),
    };
    Ok(Some(format!("{head}. {advice}.")))
}
