//! The training loop: epochs of SGD steps over augmented batches, validation after each epoch,
//! the best-validation model kept, and a checkpoint after every epoch so that a stopped run
//! resumes to the same weights as an uninterrupted one.
//!
//! Determinism: weights come from the seed; the data order, augmentation and dropout masks of
//! epoch `e` from `(seed, e)` (dropout masks are drawn on the host, not from the backend's
//! process-wide generator). With the same thread count the arithmetic is the same, so resuming
//! after epoch `e` continues exactly where the uninterrupted run would be.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::compute::Compute;
use crate::data::mix::DataSplits;
use crate::data::pipeline::{Augmentation, Batcher};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::eval::metrics::{Metrics, argmax_rows};
use crate::eval::{check_fit, evaluate};
use crate::files::lock::OutputLock;
use crate::files::{read_json, write_atomic, write_json, write_jsonl};
use crate::folders::RunDir;
use crate::model::Model;
use crate::model::description::LayerKind;
use crate::model::net::{Net, images_tensor, to_host_2d};
use crate::model::weights::Weights;
use crate::progress::{Event, Progress};
use crate::records::EpochRecord;
use crate::seed::mix_seed;
use crate::train::config::TrainConfig;
use crate::train::sgd::{Sgd, SgdSettings};

/// Progress of a run, saved with every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Finished epochs.
    pub epochs_done: usize,
    /// Epoch (from 1) of the best validation accuracy so far; 0 before the first.
    pub best_epoch: usize,
    /// Best validation accuracy so far.
    pub best_validation: f64,
    /// One record per finished epoch.
    pub history: Vec<EpochRecord>,
    /// Epochs whose weights are kept under `checkpoint/epochs/` (poor-fit).
    pub kept_epochs: Vec<usize>,
}

/// The final report of a run (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Architecture.
    pub arch: String,
    /// Dataset name.
    pub dataset: String,
    /// Epoch of the kept model.
    pub best_epoch: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Accuracy of the kept model on the training split (eval mode, no augmentation).
    pub train_accuracy: f64,
    /// Accuracy on the validation split.
    pub validation_accuracy: f64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Per-class precision / recall / F1 on the test split.
    pub per_class: Vec<crate::eval::metrics::ClassMetrics>,
    /// Full test metrics (with the confusion matrix).
    pub test: Metrics,
    /// Wall seconds of training (all sessions of the run).
    pub train_seconds: f64,
}

/// The model a run trains: the architecture for the data's image shape and class count,
/// with dropout switched off when the recipe says so.
pub fn initial_model(config: &TrainConfig, data: &DataSplits) -> Result<Model> {
    let mut model = Model::init(&config.arch, data.shape(), data.classes(), config.seed)?;
    if !config.dropout {
        for layer in &mut model.description.layers {
            if let LayerKind::Dropout { p } = &mut layer.kind {
                *p = 0.0;
            }
        }
    }
    Ok(model)
}

/// Starts a new run in `dir` (which must not hold another run). With `stop_after = Some(n)`
/// the session stops after `n` epochs (as if killed), to be continued with [`resume`]; it then
/// returns `None`.
pub fn start(
    config: TrainConfig,
    dir: &Path,
    stop_after: Option<usize>,
    compute: &Compute,
    engine: &dyn Engine,
    progress: &dyn Progress,
) -> Result<Option<TrainReport>> {
    let _owned = OutputLock::acquire(dir)?;
    let run = RunDir::new(dir);
    if run.config().exists() {
        return Err(Error::file(
            dir,
            "already holds a training run: resume it, or choose another output folder (`out`)",
        ));
    }
    // Load and check the data before anything is written.
    config.validate()?;
    let data = config.data.load()?;
    check_validation(&data)?;
    let model = initial_model(&config, &data)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_json(&run.config(), &config)?;
    check_data_source(&run, &data)?;
    let session = Session { config: &config, run: &run, data: &data, stop_after, compute, engine };
    session.run_epochs(model, Sgd::new(settings(&config)), TrainState::default(), progress)
}

/// Continues the run in `dir` from its last checkpoint on `compute` (see [`start`] for
/// `stop_after`).
pub fn resume(
    dir: &Path,
    compute: &Compute,
    stop_after: Option<usize>,
    engine: &dyn Engine,
    progress: &dyn Progress,
) -> Result<Option<TrainReport>> {
    let _owned = OutputLock::acquire(dir)?;
    let run = RunDir::new(dir);
    let config: TrainConfig = read_json(&run.config())?;
    config.validate().map_err(|e| Error::file(run.config(), e.to_string()))?;
    let threads = compute.threads();
    if threads != config.threads {
        progress.note(&format!(
            "note: this run started with {} threads and continues with {threads}; the weights may differ \
             in the last bits from an uninterrupted run",
            config.threads
        ));
    }
    let data = config.data.load()?;
    check_validation(&data)?;
    check_data_source(&run, &data)?;
    recover_checkpoint(&run)?;
    let last = run.last();
    let (model, sgd, state) = if last.state().exists() {
        let model = Model::load(&last.root)?;
        let fresh = initial_model(&config, &data)?;
        if model.description != fresh.description {
            return Err(Error::file(
                &last.root,
                format!(
                    "holds a model of another architecture than this run's (`{}` on {}): the checkpoint \
                     belongs to another run; start a new run instead",
                    config.arch, data.name
                ),
            ));
        }
        let mut sgd = Sgd::new(settings(&config));
        let buffers = Weights::load(&last.optimizer())?;
        for (name, t) in &buffers.tensors {
            // Same name and size (burn holds linear weights transposed).
            if model.weights.tensors.get(name).is_none_or(|w| w.data.len() != t.data.len()) {
                return Err(Error::file(
                    last.optimizer(),
                    format!("holds momentum for `{name}` {:?}, which the checkpoint's model does not have", t.shape),
                ));
            }
        }
        sgd.restore(&buffers.tensors, compute.device());
        (model, sgd, read_json::<TrainState>(&last.state())?)
    } else {
        (initial_model(&config, &data)?, Sgd::new(settings(&config)), TrainState::default())
    };
    // The log may be a line short (a kill after the checkpoint, before the log): rewrite it from
    // the checkpoint.
    write_jsonl(&run.log(), &state.history)?;
    let session = Session { config: &config, run: &run, data: &data, stop_after, compute, engine };
    session.run_epochs(model, sgd, state, progress)
}

/// The data a run trains on, recorded when it starts (`source.json`) and checked on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    /// The dataset's name (with its target class).
    pub dataset: String,
    /// MD5 of every split ([`DataSplits::digest`]).
    pub digest: String,
}

/// Records the data of a new run, or checks that a resumed run's data is what it started on
/// (runs started before `source.json` existed are recorded now).
fn check_data_source(run: &RunDir, data: &DataSplits) -> Result<()> {
    let now = DataSource { dataset: data.name.clone(), digest: data.digest() };
    if run.source().exists() {
        let recorded: DataSource = read_json(&run.source())?;
        if recorded != now {
            return Err(Error::file(
                &run.root,
                format!(
                    "was trained on other data than `{}` gives now (digest {} then, {} now): the dataset's \
                     file or its source files changed; resume with the data it started on, or start a new run",
                    now.dataset, recorded.digest, now.digest
                ),
            ));
        }
        return Ok(());
    }
    write_json(&run.source(), &now)
}

/// Training keeps the best-validation epoch: a dataset without validation images cannot choose.
fn check_validation(data: &DataSplits) -> Result<()> {
    if data.val.is_empty() {
        return Err(Error::Invalid(format!(
            "dataset {} has no validation images (its split's `val` is 0): training keeps the \
             best-validation epoch and needs some",
            data.name
        )));
    }
    Ok(())
}

/// Brings `checkpoint/` back to one complete `last` after a kill at any point of the rotation
/// in [`save_checkpoint`] (`last.partial` written whole, `last` renamed to `last.old`,
/// `last.partial` renamed to `last`, `last.old` removed): a complete `last` wins, else a complete
/// `last.partial` (killed between the renames), else `last.old`; the leftovers are removed.
pub fn recover_checkpoint(run: &RunDir) -> Result<()> {
    let last = run.last();
    let (partial, old) = (last.sibling("partial"), last.sibling("old"));
    // `state.json` is written last: a folder that holds it is complete.
    if !last.state().exists() {
        for candidate in [&partial, &old] {
            if candidate.state().exists() {
                if last.root.exists() {
                    std::fs::remove_dir_all(&last.root).map_err(|e| Error::io(&last.root, e))?;
                }
                std::fs::rename(&candidate.root, &last.root).map_err(|e| Error::io(&last.root, e))?;
                break;
            }
        }
    }
    for leftover in [&partial, &old] {
        if leftover.root.exists() {
            std::fs::remove_dir_all(&leftover.root).map_err(|e| Error::io(&leftover.root, e))?;
        }
    }
    Ok(())
}

fn settings(config: &TrainConfig) -> SgdSettings {
    SgdSettings { momentum: config.momentum, nesterov: config.nesterov, weight_decay: config.weight_decay }
}

/// One session of a run: from its current state to the end (or `stop_after` epochs).
struct Session<'a> {
    config: &'a TrainConfig,
    run: &'a RunDir,
    data: &'a DataSplits,
    stop_after: Option<usize>,
    compute: &'a Compute,
    engine: &'a dyn Engine,
}

/// What the epochs of one session work on.
struct Training {
    /// The network being trained (on the autodiff device).
    net: Net,
    sgd: Sgd,
    batcher: Batcher,
    /// Normalised validation images `[n, C, H, W]`.
    val_images: Vec<f32>,
    /// The autodiff device.
    device: Device,
}

impl Session<'_> {
    fn run_epochs(
        &self,
        model: Model,
        sgd: Sgd,
        mut state: TrainState,
        progress: &dyn Progress,
    ) -> Result<Option<TrainReport>> {
        let Session { config, run, data, stop_after, engine, .. } = *self;
        check_fit(&model, &data.train)?;
        let device = self.compute.device().clone().autodiff();
        let mut training = Training {
            net: Net::new(&model, &device)?,
            sgd,
            batcher: Batcher {
                set: data.train.clone(),
                batch_size: config.batch,
                shuffle: true,
                augmentation: config.augment.then(|| Augmentation::standard(data.digits)),
                normalization: data.normalization.clone(),
                seed: config.seed,
            },
            val_images: data.normalization.images(&data.val),
            device,
        };
        let last_epoch = match stop_after {
            Some(n) => (state.epochs_done + n).min(config.epochs),
            None => config.epochs,
        };
        for epoch in state.epochs_done..last_epoch {
            let record = self.train_epoch(epoch, &mut training, state.epochs_done, progress)?;
            progress.event(&Event::EpochDone { epochs: config.epochs, record: &record });
            self.keep_epoch(record, &training, &mut state)?;
        }
        if state.epochs_done < config.epochs {
            return Ok(None);
        }
        finish(config, run, data, &state, engine).map(Some)
    }

    /// Epoch `epoch` (0-based) over the training batches, then the validation accuracy; `done`
    /// epochs are saved (named in the error of a diverging loss).
    fn train_epoch(
        &self,
        epoch: usize,
        training: &mut Training,
        done: usize,
        progress: &dyn Progress,
    ) -> Result<EpochRecord> {
        let Session { config, run, data, .. } = *self;
        let Training { net, sgd, batcher, val_images, device } = training;
        let [c, h, w] = data.shape();
        let classes = data.classes();
        let loss_fn = CrossEntropyLossConfig::new().init(device);
        let started = Instant::now();
        let lr = config.schedule.lr(epoch);
        let mut dropout_rng = ChaCha8Rng::seed_from_u64(mix_seed(config.seed ^ 0xD20F, epoch as u64));
        progress.start(&format!("epoch {}/{}", epoch + 1, config.epochs), batcher.batches_per_epoch() as u64);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, batch) in batcher.epoch(epoch as u64, 2).enumerate() {
            let n = batch.len();
            let x = images_tensor(&batch.images, [n, c, h, w], device)?;
            let targets: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &*device);
            let logits = net.forward_train(x, &mut dropout_rng);
            let loss = loss_fn.forward(logits.clone(), y);
            let loss_value = loss.clone().into_scalar::<f32>() as f64;
            if !loss_value.is_finite() {
                return Err(Error::Numeric(format!(
                    "the loss became {loss_value} at epoch {} batch {}; training stopped. The last good \
                     checkpoint (after epoch {done}) is kept in {}: try a lower learning rate (`lr`)",
                    epoch + 1,
                    b + 1,
                    run.root.display()
                )));
            }
            let predictions = argmax_rows(&to_host_2d(logits.inner()), classes);
            correct += predictions.iter().zip(&batch.labels).filter(|(p, l)| p == l).count();
            seen += n;
            loss_sum += loss_value * n as f64;
            let grads = loss.backward();
            sgd.step(net, &grads, lr);
            progress.advance(1);
            progress.status(&format!(
                "loss {:.4} acc {:.4} {:.0} img/s",
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                seen as f64 / started.elapsed().as_secs_f64()
            ));
        }
        let train_s = started.elapsed().as_secs_f64();
        let val_predictions =
            predict(&net.valid(), val_images, data.val.len(), [c, h, w], classes, self.compute.device())?;
        let val_metrics = Metrics::new(&data.val.labels, &val_predictions, &data.class_names);
        progress.finish();
        Ok(EpochRecord {
            epoch: epoch + 1,
            lr,
            loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            validation_accuracy: val_metrics.accuracy,
            seconds: started.elapsed().as_secs_f64(),
            images_per_s: seen as f64 / train_s,
        })
    }

    /// Keeps a finished epoch: the model when it is the best so far, its weights when the recipe
    /// keeps every epoch (pruned to those `pick` can still want), the checkpoint and the log.
    fn keep_epoch(&self, record: EpochRecord, training: &Training, state: &mut TrainState) -> Result<()> {
        let Session { config, run, .. } = *self;
        let current = training.net.to_model()?;
        if record.validation_accuracy > state.best_validation || state.best_epoch == 0 {
            state.best_validation = record.validation_accuracy;
            state.best_epoch = record.epoch;
            current.save(&run.root)?;
        }
        if config.keep_epochs {
            current.save(&run.epoch(record.epoch))?;
            state.kept_epochs.push(record.epoch);
            prune_epochs(run, state, record.epoch)?;
        }
        state.epochs_done = record.epoch;
        state.history.push(record);
        save_checkpoint(run, &current, &training.sgd, state)?;
        write_jsonl(&run.log(), &state.history)
    }
}

/// Eval-mode predictions of `net` (on a plain device) for normalised images.
fn predict(
    net: &Net,
    images: &[f32],
    n: usize,
    shape: [usize; 3],
    classes: usize,
    device: &Device,
) -> Result<Vec<u16>> {
    let per: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(256) {
        let m = 256.min(n - start);
        let x = images_tensor(&images[start * per..(start + m) * per], [m, shape[0], shape[1], shape[2]], device)?;
        out.extend(argmax_rows(&to_host_2d(net.forward(x)), classes));
    }
    Ok(out)
}

/// Keeps only the epoch checkpoints that can still be picked: the best epoch so far, half of it,
/// and every epoch from half of the next one on (a later best epoch b needs epoch b/2).
fn prune_epochs(run: &RunDir, state: &mut TrainState, done: usize) -> Result<()> {
    let best = state.best_epoch;
    let keep = |e: usize| e == best || e == underfit_epoch(best) || e >= underfit_epoch(done + 1);
    for &e in state.kept_epochs.iter().filter(|&&e| !keep(e)) {
        let dir = run.epoch(e);
        std::fs::remove_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;
    }
    state.kept_epochs.retain(|&e| keep(e));
    Ok(())
}

/// The underfitting epoch for best epoch `best`: half of it, at least 1.
pub fn underfit_epoch(best: usize) -> usize {
    (best / 2).max(1)
}

fn save_checkpoint(run: &RunDir, model: &Model, sgd: &Sgd, state: &TrainState) -> Result<()> {
    let last = run.last();
    let partial = last.sibling("partial");
    if partial.root.exists() {
        std::fs::remove_dir_all(&partial.root).map_err(|e| Error::io(&partial.root, e))?;
    }
    model.save(&partial.root)?;
    let buffers = Weights { tensors: sgd.state() };
    write_atomic(&partial.optimizer(), &buffers.to_safetensors()?)?;
    write_json(&partial.state(), state)?;
    let old = last.sibling("old");
    if last.root.exists() {
        std::fs::rename(&last.root, &old.root).map_err(|e| Error::io(&last.root, e))?;
    }
    std::fs::rename(&partial.root, &last.root).map_err(|e| Error::io(&last.root, e))?;
    if old.root.exists() {
        std::fs::remove_dir_all(&old.root).map_err(|e| Error::io(&old.root, e))?;
    }
    Ok(())
}

/// Evaluates the kept model on all splits and writes `report.json`.
fn finish(
    config: &TrainConfig,
    run: &RunDir,
    data: &DataSplits,
    state: &TrainState,
    engine: &dyn Engine,
) -> Result<TrainReport> {
    let model = Model::load(&run.root)?;
    let eval = |set| evaluate(engine, &model, set, &data.normalization, &data.class_names);
    let (train, val, test) = (eval(&data.train)?, eval(&data.val)?, eval(&data.test)?);
    let report = TrainReport {
        arch: config.arch.clone(),
        dataset: data.name.clone(),
        best_epoch: state.best_epoch,
        epochs: state.epochs_done,
        train_accuracy: train.accuracy,
        validation_accuracy: val.accuracy,
        test_accuracy: test.accuracy,
        per_class: test.per_class.clone(),
        test,
        train_seconds: state.history.iter().map(|r| r.seconds).sum(),
    };
    write_json(&run.report(), &report)?;
    Ok(report)
}

/// The progress of the run in `dir` (from its last checkpoint).
pub fn load_state(dir: &Path) -> Result<TrainState> {
    read_json(&RunDir::new(dir).last().state())
}

/// The configuration of the run in `dir`.
pub fn load_config(dir: &Path) -> Result<TrainConfig> {
    read_json(&RunDir::new(dir).config())
}

/// Momentum buffers, for tests: the optimizer state saved in the last checkpoint.
pub fn load_optimizer_state(dir: &Path) -> Result<BTreeMap<String, crate::model::weights::HostTensor>> {
    Ok(Weights::load(&RunDir::new(dir).last().optimizer())?.tensors)
}
