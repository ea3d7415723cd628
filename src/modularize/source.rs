//! The model and data a modularization splits: checked against each other when a run starts,
//! recorded (`source.json`) and checked again on every resume.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::mix::DataSplits;
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::folders::ModularizeDir;
use crate::model::Model;
use crate::modularize::ModularizeConfig;

/// The model a modularization splits, recorded when it starts (`source.json`) and checked on
/// every resume: a model folder changed since (retrained, replaced) is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSource {
    /// The model folder.
    pub model: PathBuf,
    /// MD5 of `model.json` followed by `model.safetensors`.
    pub digest: String,
    /// MD5 of the data's splits ([`DataSplits::digest`]; absent in runs started before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
}

impl ModelSource {
    /// The source record of the model in `dir`.
    pub fn of(dir: &Path) -> Result<Self> {
        use md5::{Digest, Md5};
        let mut hasher = Md5::new();
        for file in [crate::model::DESCRIPTION_FILE, crate::model::WEIGHTS_FILE] {
            let path = dir.join(file);
            hasher.update(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
        }
        Ok(ModelSource { model: dir.to_path_buf(), digest: format!("{:x}", hasher.finalize()), data_digest: None })
    }
}

/// Records the model a new run splits, or checks that a resumed run's model is the one it
/// started from (runs started before `source.json` existed are recorded now).
pub(crate) fn check_source(out: &ModularizeDir, config: &ModularizeConfig, data: &DataSplits) -> Result<()> {
    let now = ModelSource { data_digest: Some(data.digest()), ..ModelSource::of(&config.model)? };
    if out.source().exists() {
        let recorded: ModelSource = read_json(&out.source())?;
        if recorded.digest != now.digest {
            return Err(Error::file(
                &config.model,
                format!(
                    "has changed since the modularization in {} started (its files' digest was {}, is {}): \
                     resume only with the model it started from, or start a new run",
                    out.root.display(),
                    recorded.digest,
                    now.digest
                ),
            ));
        }
        if recorded.data_digest.as_ref().is_some_and(|d| Some(d) != now.data_digest.as_ref()) {
            return Err(Error::file(
                &out.root,
                format!(
                    "was started on other data than `{}` gives now: the dataset's file or its source files \
                     changed; resume with the data it started on, or start a new run",
                    data.name
                ),
            ));
        }
        return Ok(());
    }
    write_json(&out.source(), &now)
}

/// The model to split and its data, checked against each other.
pub(crate) fn load_inputs(config: &ModularizeConfig) -> Result<(Model, DataSplits)> {
    let model = crate::folders::Artifact::open(&config.model)?.load_model()?;
    let data = config.data.load()?;
    if data.classes() != model.description.classes || data.shape() != model.description.input {
        return Err(Error::Invalid(format!(
            "model {} ({} classes, input {:?}) does not fit dataset {} ({} classes, images {:?})",
            config.model.display(),
            model.description.classes,
            model.description.input,
            data.name,
            data.classes(),
            data.shape()
        )));
    }
    Ok((model, data))
}
