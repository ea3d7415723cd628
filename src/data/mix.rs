//! Splits and class mixes from a small declarative description (TOML).
//!
//! A mix takes *parts*: each selects classes of one source dataset (`cifar10`, `cifar100`,
//! `svhn`, `mnist`, `synthetic`), optionally only the first K images per class, and gives them
//! new labels. The parts are merged. Before any class is selected, every image of a source is
//! assigned to train, validation or test with a seeded shuffle, so mixes that share a source and
//! a seed (e.g. MNIST-S and MNIST-W) partition it the same way:
//!
//! - `mode = "official"`: the official test split is the test split; `val` of the official
//!   training images (chosen at random) are held out for validation;
//! - `mode = "pool"`: all images (training then test, as published) are shuffled and cut by
//!   `ratios` (e.g. 8:1:1).
//!
//! A weak user's data is scarce: `[limit]` keeps a seeded random subset of at most K training
//! (or validation) images per class, with a separate cap for the target class, after the split
//! is drawn (so the held-out images stay held out).
//!
//! ```toml
//! name = "svhn-w"
//! digits = true                     # no horizontal flips
//! [[part]]
//! source = "svhn"
//! classes = [6, 7, 8, 9, "tc"]      # relabelled 0..4 in this order; "tc" is --tc
//! [split]
//! mode = "official"
//! val = 0.2
//! seed = 0
//! [limit]
//! train = { per_class = 100, tc = 20 }   # optional: scarce weak-model data
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::data::pipeline::Normalization;
use crate::data::{ImageSet, RawDataset, Source, locate, read, synthetic};
use crate::error::{Error, Result};

/// A declarative dataset: parts, split rule, and input handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixSpec {
    /// Name of the resulting dataset.
    pub name: String,
    /// One line saying what it is.
    #[serde(default)]
    pub description: String,
    /// Digits: horizontal flips are not used for augmentation.
    #[serde(default)]
    pub digits: bool,
    /// Pixels of background (0) added on every side (e.g. 2 makes 28x28 digits 32x32).
    #[serde(default)]
    pub pad: usize,
    /// The parts, merged in order.
    #[serde(rename = "part")]
    pub parts: Vec<PartSpec>,
    /// How images are assigned to train / validation / test.
    pub split: SplitSpec,
    /// Sizes of the synthetic source, when a part uses it.
    #[serde(default)]
    pub synthetic: SyntheticSpec,
    /// Per-channel mean of the normalisation (default: ImageNet's; 1 channel: their average).
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation of the normalisation (default: ImageNet's).
    #[serde(default)]
    pub std: Option<Vec<f32>>,
    /// Caps on the images per class of the training and validation splits.
    #[serde(default)]
    pub limit: SplitLimits,
}

/// At most how many images of each class a split keeps (a seeded random subset, in split order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLimit {
    /// At most this many images of every class but the target class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_class: Option<usize>,
    /// At most this many images of the target class (the mix's `"tc"`); default `per_class`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<usize>,
}

impl ClassLimit {
    /// This limit, with `fallback`'s value wherever this one sets none.
    pub fn or(self, fallback: ClassLimit) -> ClassLimit {
        ClassLimit { per_class: self.per_class.or(fallback.per_class), tc: self.tc.or(fallback.tc) }
    }

    /// Whether it limits nothing.
    pub fn is_none(&self) -> bool {
        self.per_class.is_none() && self.tc.is_none()
    }

    /// The cap of images with label `label` (`tc_label`: the target class's label, if any).
    fn cap(&self, label: u16, tc_label: Option<u16>) -> Option<usize> {
        if tc_label == Some(label) { self.tc.or(self.per_class) } else { self.per_class }
    }

    /// The images of `set` kept under this limit: for each class over its cap, a random subset
    /// drawn from `seed` and the label; the kept images stay in their order.
    pub fn apply(&self, set: &ImageSet, tc_label: Option<u16>, seed: u64) -> ImageSet {
        if self.is_none() {
            return set.clone();
        }
        let classes = set.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        let mut keep = vec![true; set.len()];
        for label in 0..classes as u16 {
            let Some(cap) = self.cap(label, tc_label) else { continue };
            let mut members: Vec<usize> = (0..set.len()).filter(|&i| set.labels[i] == label).collect();
            if members.len() <= cap {
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(label as u64 + 1)));
            members.shuffle(&mut rng);
            for &i in &members[cap..] {
                keep[i] = false;
            }
        }
        let mut out = ImageSet::empty(set.shape);
        for (i, &label) in set.labels.iter().enumerate() {
            if keep[i] {
                out.push_from(set, i, label);
            }
        }
        out
    }
}

/// [`ClassLimit`]s of the training and validation splits (the test split is never limited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitLimits {
    /// Training split.
    #[serde(default, skip_serializing_if = "ClassLimit::is_none")]
    pub train: ClassLimit,
    /// Validation split.
    #[serde(default, skip_serializing_if = "ClassLimit::is_none")]
    pub val: ClassLimit,
}

impl SplitLimits {
    /// At most `train_per_class` training images of each class and `tc_train` of the target
    /// class; the same for validation.
    pub fn new(
        train_per_class: Option<usize>,
        tc_train: Option<usize>,
        val_per_class: Option<usize>,
        tc_val: Option<usize>,
    ) -> Self {
        SplitLimits {
            train: ClassLimit { per_class: train_per_class, tc: tc_train },
            val: ClassLimit { per_class: val_per_class, tc: tc_val },
        }
    }

    /// These limits, with `fallback`'s values wherever these set none.
    pub fn or(self, fallback: SplitLimits) -> SplitLimits {
        SplitLimits { train: self.train.or(fallback.train), val: self.val.or(fallback.val) }
    }

    /// Whether they limit nothing.
    pub fn is_none(&self) -> bool {
        self.train.is_none() && self.val.is_none()
    }
}

/// One part of a mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// Source dataset: `cifar10`, `cifar100`, `svhn`, `mnist` or `synthetic`.
    pub source: Source,
    /// Classes to keep, by index, by name, or `"tc"` (the `--tc` value); all when absent.
    #[serde(default)]
    pub classes: Option<Vec<ClassRef>>,
    /// New labels, one per kept class; default: consecutive after the previous parts' labels.
    #[serde(default)]
    pub labels: Option<Vec<usize>>,
    /// Keep only the first K official training images of each kept class.
    #[serde(default)]
    pub take_train: Option<usize>,
    /// Keep only the first K official test images of each kept class.
    #[serde(default)]
    pub take_test: Option<usize>,
    /// Use CIFAR-100's 20 coarse labels instead of the 100 fine ones.
    #[serde(default)]
    pub coarse: bool,
}

/// A class by index, by name, or the target class (`"tc"` in TOML).
#[derive(Debug, Clone, PartialEq)]
pub enum ClassRef {
    /// A class index of the source.
    Index(usize),
    /// The target class, given when the mix is built (`tc`).
    Tc,
    /// A class name of the source.
    Name(String),
}

/// How a [`ClassRef`] is written: an index or a string.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ClassRefText {
    Index(usize),
    Name(String),
}

impl Serialize for ClassRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ClassRef::Index(i) => ClassRefText::Index(*i),
            ClassRef::Tc => ClassRefText::Name("tc".into()),
            ClassRef::Name(n) => ClassRefText::Name(n.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClassRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match ClassRefText::deserialize(d)? {
            ClassRefText::Index(i) => ClassRef::Index(i),
            ClassRefText::Name(n) if n == "tc" => ClassRef::Tc,
            ClassRefText::Name(n) => ClassRef::Name(n),
        })
    }
}

/// How images are assigned to splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// `official` (official test set; validation cut from the official training set) or
    /// `pool` (all images shuffled and cut by `ratios`).
    pub mode: SplitMode,
    /// `official`: share of the official training images held out for validation.
    #[serde(default = "default_val")]
    pub val: f64,
    /// `pool`: train : validation : test proportions.
    #[serde(default = "default_ratios")]
    pub ratios: [f64; 3],
    /// Seed of the shuffle.
    #[serde(default)]
    pub seed: u64,
}

fn default_val() -> f64 {
    0.2
}

fn default_ratios() -> [f64; 3] {
    [8.0, 1.0, 1.0]
}

/// See [`SplitSpec::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// Official test set, validation cut from the official training set.
    Official,
    /// Everything pooled and cut by ratios.
    Pool,
}

/// Sizes and seed of the generated synthetic source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Images in the synthetic "official training" split.
    #[serde(default = "default_synthetic_train")]
    pub train: usize,
    /// Images in the synthetic "official test" split.
    #[serde(default = "default_synthetic_test")]
    pub test: usize,
    /// Seed of the drawing.
    #[serde(default)]
    pub seed: u64,
}

fn default_synthetic_train() -> usize {
    10_000
}

fn default_synthetic_test() -> usize {
    2_000
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec { train: default_synthetic_train(), test: default_synthetic_test(), seed: 0 }
    }
}

/// One split of a built dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training images.
    Train,
    /// Validation images (held out of training).
    Val,
    /// Test images.
    Test,
}

impl Choice for Split {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (Split::Train, "train", "the training split"),
        (Split::Val, "val", "the validation split (held out of training)"),
        (Split::Test, "test", "the test split"),
    ];
    const ALIASES: &'static [(&'static str, &'static str)] = &[("validation", "val")];
}

/// A dataset ready for training and evaluation.
#[derive(Debug, Clone)]
pub struct DataSplits {
    /// Name (with the target class, e.g. `svhn-w(tc=3)`).
    pub name: String,
    /// Class names, one per label.
    pub class_names: Vec<String>,
    /// Training images.
    pub train: Arc<ImageSet>,
    /// Validation images.
    pub val: Arc<ImageSet>,
    /// Test images.
    pub test: Arc<ImageSet>,
    /// Digits: no horizontal flips in augmentation.
    pub digits: bool,
    /// Input normalisation.
    pub normalization: Normalization,
    /// The label the target class has in this data (a weak mix's `"tc"` part), if any.
    pub tc_label: Option<usize>,
}

impl DataSplits {
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image shape `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        self.train.shape
    }

    /// MD5 of every split's shape, labels and pixels: a run records it and refuses to resume on
    /// other data (a mix file edited, a source folder replaced).
    pub fn digest(&self) -> String {
        use md5::{Digest, Md5};
        let mut hasher = Md5::new();
        for set in [&self.train, &self.val, &self.test] {
            for d in set.shape {
                hasher.update((d as u64).to_le_bytes());
            }
            hasher.update((set.len() as u64).to_le_bytes());
            hasher.update(set.labels.iter().flat_map(|l| l.to_le_bytes()).collect::<Vec<u8>>());
            hasher.update(&set.pixels);
        }
        format!("{:x}", hasher.finalize())
    }

    /// One split.
    pub fn split(&self, split: Split) -> &Arc<ImageSet> {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }
}

impl MixSpec {
    /// Parses a TOML description; the error names what is wrong.
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: MixSpec =
            toml::from_str(text).map_err(|e| Error::Invalid(format!("invalid dataset description: {e}")))?;
        spec.check()?;
        Ok(spec)
    }

    /// Reads a TOML description file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text).map_err(|e| e.in_file(path))
    }

    /// An upper bound of the images this mix holds: every source's published images, the
    /// synthetic source at its configured sizes (for memory estimates; reads nothing).
    pub fn published_images(&self) -> usize {
        let mut sources: Vec<Source> = self.parts.iter().map(|p| p.source).collect();
        sources.sort();
        sources.dedup();
        sources
            .iter()
            .map(|s| match s {
                Source::Synthetic => self.synthetic.train + self.synthetic.test,
                s => s.published_images(),
            })
            .sum()
    }

    /// The classes and image shape `[C, H, W]` the mix will have, from the description alone (no
    /// data read), with the target class `tc` checked against its source: what an experiment
    /// checks its models and class indices against before it starts.
    pub fn outline(&self, tc: Option<usize>) -> Result<(usize, [usize; 3])> {
        let mut next_label = 0usize;
        let mut classes = 0usize;
        for part in &self.parts {
            let source_classes = if part.coarse { 20 } else { part.source.classes() };
            if let (Some(t), Some(list)) = (tc, &part.classes)
                && list.contains(&ClassRef::Tc)
                && t >= source_classes
            {
                return Err(Error::Invalid(format!(
                    "dataset `{}`: target class {t} does not exist; source `{}` has classes 0..{}",
                    self.name,
                    part.source,
                    source_classes - 1
                )));
            }
            let kept = part.classes.as_ref().map_or(source_classes, Vec::len);
            let labels: Vec<usize> = part.labels.clone().unwrap_or_else(|| (next_label..next_label + kept).collect());
            next_label = labels.iter().max().map_or(next_label, |m| m + 1);
            classes = classes.max(next_label);
        }
        let [c, h, w] = self.parts.first().map_or([3, 32, 32], |p| p.source.shape());
        Ok((classes, [c, h + 2 * self.pad, w + 2 * self.pad]))
    }

    /// Whether any part refers to the target class.
    pub fn needs_tc(&self) -> bool {
        self.parts.iter().flat_map(|p| p.classes.iter().flatten()).any(|c| *c == ClassRef::Tc)
    }

    fn check(&self) -> Result<()> {
        if self.parts.is_empty() {
            return Err(Error::Invalid(format!("dataset `{}` has no [[part]]", self.name)));
        }
        for p in &self.parts {
            if let (Some(c), Some(l)) = (&p.classes, &p.labels)
                && c.len() != l.len()
            {
                return Err(Error::Invalid(format!(
                    "dataset `{}`: a part lists {} classes but {} labels",
                    self.name,
                    c.len(),
                    l.len()
                )));
            }
        }
        if self.pad > 1024 {
            return Err(Error::Invalid(format!(
                "dataset `{}`: `pad` must be at most 1024 (it is {})",
                self.name, self.pad
            )));
        }
        let finite = |v: &Option<Vec<f32>>| v.iter().flatten().all(|x| x.is_finite());
        if !finite(&self.mean) || !finite(&self.std) || self.std.iter().flatten().any(|&s| s <= 0.0) {
            return Err(Error::Invalid(format!(
                "dataset `{}`: `mean` must be finite and `std` finite and positive",
                self.name
            )));
        }
        let tc_limited = self.limit.train.tc.is_some() || self.limit.val.tc.is_some();
        if tc_limited && !self.needs_tc() {
            return Err(Error::Invalid(format!(
                "dataset `{}`: [limit] caps the target class, but no part names \"tc\"",
                self.name
            )));
        }
        let s = &self.split;
        let ok = match s.mode {
            SplitMode::Official => (0.0..1.0).contains(&s.val),
            SplitMode::Pool => s.ratios.iter().all(|&r| r >= 0.0) && s.ratios.iter().sum::<f64>() > 0.0,
        };
        if !ok {
            return Err(Error::Invalid(format!(
                "dataset `{}`: split needs 0 <= val < 1 (official) or non-negative ratios (pool)",
                self.name
            )));
        }
        Ok(())
    }

    /// Builds the splits, reading sources below `data_dir` (each in the folder itself or a
    /// sub-folder its archive unpacks to). `tc` is required when a part names `"tc"`. `limits`
    /// override the mix's own `[limit]`, field by field.
    pub fn build(&self, data_dir: &Path, tc: Option<usize>, limits: SplitLimits) -> Result<DataSplits> {
        let limits = limits.or(self.limit);
        let caps = [limits.train.per_class, limits.train.tc, limits.val.per_class, limits.val.tc];
        if caps.contains(&Some(0)) {
            return Err(Error::Invalid(format!(
                "dataset `{}`: an image limit of 0 would empty a class; limits must be at least 1",
                self.name
            )));
        }
        if (limits.train.tc.is_some() || limits.val.tc.is_some()) && !self.needs_tc() {
            return Err(Error::Invalid(format!(
                "dataset `{}` has no target class to limit; drop the target-class image limits",
                self.name
            )));
        }
        if self.needs_tc() && tc.is_none() {
            return Err(Error::Invalid(format!("dataset `{}` needs the target class: give `tc`, e.g. 3", self.name)));
        }
        let mut sources: BTreeMap<Source, RawDataset> = BTreeMap::new();
        for p in &self.parts {
            if let std::collections::btree_map::Entry::Vacant(slot) = sources.entry(p.source) {
                slot.insert(self.load_source(p.source, data_dir)?);
            }
        }
        let shape = sources.values().next().and_then(|s| s.splits.first()).map(|(_, s)| s.shape).unwrap_or([3, 32, 32]);
        if let Some((name, _)) = sources.iter().find(|(_, s)| s.splits.iter().any(|(_, set)| set.shape != shape)) {
            return Err(Error::Invalid(format!(
                "dataset `{}`: source `{name}` has another image shape than the others",
                self.name
            )));
        }
        let mut outputs = [ImageSet::empty(shape), ImageSet::empty(shape), ImageSet::empty(shape)];
        let mut class_names: BTreeMap<usize, String> = BTreeMap::new();
        let mut next_label = 0usize;
        let mut tc_label = None;
        for part in &self.parts {
            let source = &sources[&part.source];
            let assignment = self.assign(source);
            let names = if part.coarse { coarse_names(source)? } else { source.class_names.clone() };
            let kept: Vec<usize> = match &part.classes {
                None => (0..names.len()).collect(),
                Some(list) => list.iter().map(|c| resolve_class(c, &names, tc, part.source)).collect::<Result<_>>()?,
            };
            let labels: Vec<usize> =
                part.labels.clone().unwrap_or_else(|| (next_label..next_label + kept.len()).collect());
            next_label = labels.iter().max().map_or(next_label, |m| m + 1);
            if let Some(at) = part.classes.iter().flatten().position(|c| *c == ClassRef::Tc) {
                tc_label = Some(labels[at] as u16);
            }
            for (&k, &l) in kept.iter().zip(&labels) {
                class_names.entry(l).or_insert_with(|| names[k].clone());
            }
            let mut new_label = vec![None; names.len()];
            for (&k, &l) in kept.iter().zip(&labels) {
                new_label[k] = Some(l as u16);
            }
            for (s, (split_name, set)) in source.splits.iter().enumerate() {
                let limit = if split_name == "train" { part.take_train } else { part.take_test };
                let source_labels = if part.coarse { coarse_labels(source, split_name)? } else { &set.labels };
                let mut taken = vec![0usize; names.len()];
                for (i, &label) in source_labels.iter().enumerate() {
                    let Some(l) = new_label.get(label as usize).copied().flatten() else {
                        continue;
                    };
                    if limit.is_some_and(|k| taken[label as usize] >= k) {
                        continue;
                    }
                    taken[label as usize] += 1;
                    outputs[assignment[s][i] as usize].push_from(set, i, l);
                }
            }
        }
        let classes = class_names.keys().max().map_or(0, |m| m + 1);
        if let Some(missing) = (0..classes).find(|l| !class_names.contains_key(l)) {
            return Err(Error::Invalid(format!("dataset `{}`: label {missing} is given to no class", self.name)));
        }
        let [train, val, test] = outputs;
        let train = limits.train.apply(&train, tc_label, self.split.seed ^ 0x7472_6169_6e00);
        let val = limits.val.apply(&val, tc_label, self.split.seed ^ 0x7661_6c00);
        let [train, val, test] = [train, val, test].map(|s| s.padded(self.pad));
        for (name, set) in [("train", &train), ("test", &test)] {
            if set.is_empty() {
                return Err(Error::Invalid(format!("dataset `{}`: the {name} split is empty", self.name)));
            }
        }
        let channels = train.shape[0];
        let normalization = Normalization::for_channels(channels, self.mean.clone(), self.std.clone())?;
        let name = match tc.filter(|_| self.needs_tc()) {
            Some(t) => format!("{}(tc={t})", self.name),
            None => self.name.clone(),
        };
        Ok(DataSplits {
            name,
            class_names: class_names.into_values().collect(),
            train: Arc::new(train),
            val: Arc::new(val),
            test: Arc::new(test),
            digits: self.digits,
            normalization,
            tc_label: tc_label.filter(|_| tc.is_some()).map(usize::from),
        })
    }

    fn load_source(&self, source: Source, data_dir: &Path) -> Result<RawDataset> {
        if source == Source::Synthetic {
            let s = &self.synthetic;
            let [c, h, w] = Source::Synthetic.shape();
            let bytes = s.train.saturating_add(s.test).saturating_mul(c * h * w);
            crate::model::check_memory(bytes, &format!("dataset `{}`: the synthetic images", self.name))?;
            return Ok(RawDataset {
                format: crate::data::Format::Synthetic,
                dir: PathBuf::new(),
                class_names: synthetic::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
                splits: vec![
                    ("train".into(), synthetic::generate(s.train, s.seed)),
                    ("test".into(), synthetic::generate(s.test, crate::seed::mix_seed(s.seed, u64::MAX))),
                ],
                coarse_labels: Vec::new(),
            });
        }
        let (dir, format) = locate(source, data_dir)?;
        read(&dir, format)
    }

    /// For each official split of `source` and each image: 0 train, 1 validation, 2 test.
    fn assign(&self, source: &RawDataset) -> Vec<Vec<u8>> {
        let s = &self.split;
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
        match s.mode {
            SplitMode::Official => source
                .splits
                .iter()
                .map(|(name, set)| {
                    if name != "train" {
                        return vec![2; set.len()];
                    }
                    let mut order: Vec<usize> = (0..set.len()).collect();
                    order.shuffle(&mut rng);
                    let n_val = (set.len() as f64 * s.val).round() as usize;
                    let mut a = vec![0u8; set.len()];
                    for &i in &order[set.len() - n_val..] {
                        a[i] = 1;
                    }
                    a
                })
                .collect(),
            SplitMode::Pool => {
                let total: usize = source.splits.iter().map(|(_, s)| s.len()).sum();
                let mut order: Vec<usize> = (0..total).collect();
                order.shuffle(&mut rng);
                let sum: f64 = s.ratios.iter().sum();
                let n_train = (total as f64 * s.ratios[0] / sum).round() as usize;
                let n_val =
                    ((total as f64 * (s.ratios[0] + s.ratios[1]) / sum).round() as usize).saturating_sub(n_train);
                let mut flat = vec![2u8; total];
                for (rank, &i) in order.iter().enumerate() {
                    flat[i] = if rank < n_train {
                        0
                    } else if rank < n_train + n_val {
                        1
                    } else {
                        2
                    };
                }
                let mut out = Vec::new();
                let mut start = 0;
                for (_, set) in &source.splits {
                    out.push(flat[start..start + set.len()].to_vec());
                    start += set.len();
                }
                out
            }
        }
    }
}

fn resolve_class(c: &ClassRef, names: &[String], tc: Option<usize>, source: Source) -> Result<usize> {
    let index = match c {
        ClassRef::Index(i) => *i,
        ClassRef::Tc => {
            tc.ok_or_else(|| Error::Invalid(format!("source `{source}`: the target class \"tc\" needs `tc`")))?
        }
        ClassRef::Name(n) => names
            .iter()
            .position(|x| x == n)
            .ok_or_else(|| Error::Invalid(format!("source `{source}` has no class named `{n}`")))?,
    };
    if index >= names.len() {
        return Err(Error::Invalid(format!(
            "source `{source}` has {} classes; class {index} does not exist",
            names.len()
        )));
    }
    Ok(index)
}

fn coarse_labels<'a>(source: &'a RawDataset, split: &str) -> Result<&'a Vec<u16>> {
    source
        .coarse_labels
        .iter()
        .find(|(n, _)| n == split)
        .map(|(_, l)| l)
        .ok_or_else(|| Error::Invalid(format!("source `{}` has no coarse labels", source.format.dataset())))
}

fn coarse_names(source: &RawDataset) -> Result<Vec<String>> {
    coarse_labels(source, "train").or_else(|_| coarse_labels(source, "test"))?;
    Ok((0..20).map(|i| format!("coarse_{i}")).collect())
}
