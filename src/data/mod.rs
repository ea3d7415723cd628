//! Data: readers for the published dataset formats, the paper's splits and class mixes,
//! the input pipeline, and a built-in synthetic dataset.
//!
//! Images are kept as `u8` pixels in `[C, H, W]` order per image; the pipeline turns them into
//! normalised `f32` batches.

pub mod cifar;
pub mod fetch;
pub mod mat5;
pub mod mix;
pub mod mnist;
pub mod pickle;
pub mod pipeline;
pub mod presets;
pub mod svhn;
pub mod synthetic;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::error::{Error, Result};

/// Images of one shape with their class labels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageSet {
    /// Image shape `[C, H, W]`.
    pub shape: [usize; 3],
    /// Pixels, `len() · C·H·W` bytes, each image in `[C, H, W]` order.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u16>,
}

impl ImageSet {
    /// An empty set of images of `shape`.
    pub fn empty(shape: [usize; 3]) -> Self {
        ImageSet { shape, pixels: Vec::new(), labels: Vec::new() }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (`C·H·W`).
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Pixels of image `i`, `[C, H, W]`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Appends image `i` of `other` (same shape) with label `label`.
    pub fn push_from(&mut self, other: &ImageSet, i: usize, label: u16) {
        self.pixels.extend_from_slice(other.image(i));
        self.labels.push(label);
    }

    /// The images whose label satisfies `keep`, in order.
    pub fn select(&self, keep: impl Fn(u16) -> bool) -> ImageSet {
        let mut out = ImageSet::empty(self.shape);
        for (i, &label) in self.labels.iter().enumerate() {
            if keep(label) {
                out.push_from(self, i, label);
            }
        }
        out
    }

    /// Number of images per class, for `classes` classes.
    pub fn per_class(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            if (l as usize) < classes {
                counts[l as usize] += 1;
            }
        }
        counts
    }

    /// The images padded by `pad` pixels of value 0 on every side.
    pub fn padded(&self, pad: usize) -> ImageSet {
        if pad == 0 {
            return self.clone();
        }
        let [c, h, w] = self.shape;
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut pixels = vec![0u8; self.len() * c * ph * pw];
        for (i, out) in pixels.chunks_mut(c * ph * pw).enumerate() {
            let img = self.image(i);
            for ch in 0..c {
                for y in 0..h {
                    let src = &img[(ch * h + y) * w..(ch * h + y + 1) * w];
                    let start = (ch * ph + y + pad) * pw + pad;
                    out[start..start + w].copy_from_slice(src);
                }
            }
        }
        ImageSet { shape: [c, ph, pw], pixels, labels: self.labels.clone() }
    }

    /// Checks that every label is below `classes`; names `file` on failure.
    pub fn check_labels(&self, classes: usize, file: &Path) -> Result<()> {
        match self.labels.iter().position(|&l| l as usize >= classes) {
            Some(i) => Err(Error::file(
                file,
                format!("image {i} has label {}, but labels must be below {classes}", self.labels[i]),
            )),
            None => Ok(()),
        }
    }
}

/// A published dataset format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// CIFAR-10 binary version (`data_batch_1.bin` .. `test_batch.bin`).
    Cifar10Binary,
    /// CIFAR-10 python version (pickled `data_batch_1` .. `test_batch`).
    Cifar10Python,
    /// CIFAR-100 binary version (`train.bin`, `test.bin`).
    Cifar100Binary,
    /// CIFAR-100 python version (pickled `train`, `test`).
    Cifar100Python,
    /// SVHN cropped digits (`train_32x32.mat`, `test_32x32.mat`).
    SvhnMat,
    /// MNIST idx files, plain or gzip.
    MnistIdx,
    /// The built-in synthetic dataset.
    Synthetic,
}

impl Format {
    /// The dataset this format holds.
    pub fn dataset(self) -> Source {
        match self {
            Format::Cifar10Binary | Format::Cifar10Python => Source::Cifar10,
            Format::Cifar100Binary | Format::Cifar100Python => Source::Cifar100,
            Format::SvhnMat => Source::Svhn,
            Format::MnistIdx => Source::Mnist,
            Format::Synthetic => Source::Synthetic,
        }
    }
}

/// A source dataset a mix takes images from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// CIFAR-10.
    Cifar10,
    /// CIFAR-100 (fine labels, or the 20 coarse ones).
    Cifar100,
    /// SVHN cropped digits.
    Svhn,
    /// MNIST.
    Mnist,
    /// The built-in synthetic shapes (generated, never read).
    Synthetic,
}

impl Choice for Source {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (Source::Cifar10, "cifar10", "CIFAR-10"),
        (Source::Cifar100, "cifar100", "CIFAR-100"),
        (Source::Svhn, "svhn", "SVHN cropped digits"),
        (Source::Mnist, "mnist", "MNIST"),
        (Source::Synthetic, "synthetic", "the built-in synthetic shapes"),
    ];
}

impl Source {
    /// Classes of the published dataset (CIFAR-100: fine labels; the coarse ones are 20).
    pub fn classes(self) -> usize {
        match self {
            Source::Cifar100 => 100,
            Source::Cifar10 | Source::Svhn | Source::Mnist => 10,
            Source::Synthetic => synthetic::CLASS_NAMES.len(),
        }
    }

    /// Images of the published dataset, training and test splits together (synthetic: 0, its
    /// sizes are the mix's own).
    pub fn published_images(self) -> usize {
        match self {
            Source::Cifar10 | Source::Cifar100 => 60_000,
            Source::Svhn => 99_289,
            Source::Mnist => 70_000,
            Source::Synthetic => 0,
        }
    }

    /// Image shape `[C, H, W]` of the published dataset.
    pub fn shape(self) -> [usize; 3] {
        match self {
            Source::Mnist => [1, 28, 28],
            _ => [3, 32, 32],
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dataset as published: its format, class names and official splits (`train`, `test`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawDataset {
    /// The format the files were read from.
    pub format: Format,
    /// The folder the files were read from.
    pub dir: PathBuf,
    /// Class names, one per class.
    pub class_names: Vec<String>,
    /// Official splits by name, in the order train, test (either may be missing).
    pub splits: Vec<(String, ImageSet)>,
    /// CIFAR-100's coarse labels for each split, where present.
    pub coarse_labels: Vec<(String, Vec<u16>)>,
}

impl RawDataset {
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// The official split called `name`.
    pub fn split(&self, name: &str) -> Option<&ImageSet> {
        self.splits.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

/// Sub-folder names the published archives unpack to, searched below a data folder.
const KNOWN_SUBDIRS: &[&str] = &[
    "cifar-10-batches-bin",
    "cifar-10-batches-py",
    "cifar-100-binary",
    "cifar-100-python",
    "svhn",
    "mnist",
    "MNIST/raw",
];

/// The format of the files directly in `dir`, if any is recognised.
pub fn detect_format(dir: &Path) -> Option<Format> {
    let has = |name: &str| dir.join(name).is_file();
    if has("data_batch_1.bin") || has("test_batch.bin") {
        Some(Format::Cifar10Binary)
    } else if has("data_batch_1") || has("test_batch") {
        Some(Format::Cifar10Python)
    } else if has("train.bin") || has("test.bin") {
        Some(Format::Cifar100Binary)
    } else if (has("train") || has("test")) && has("meta") {
        Some(Format::Cifar100Python)
    } else if has("train_32x32.mat") || has("test_32x32.mat") {
        Some(Format::SvhnMat)
    } else if mnist::find_files(dir).is_some() {
        Some(Format::MnistIdx)
    } else {
        None
    }
}

/// Finds the folder holding `dataset`: `dir` itself or one of the sub-folders the published
/// archives unpack to.
pub fn locate(dataset: Source, dir: &Path) -> Result<(PathBuf, Format)> {
    let candidates = std::iter::once(dir.to_path_buf()).chain(KNOWN_SUBDIRS.iter().map(|s| dir.join(s)));
    for candidate in candidates {
        if let Some(format) = detect_format(&candidate)
            && format.dataset() == dataset
        {
            return Ok((candidate, format));
        }
    }
    Err(Error::file(
        dir,
        format!(
            "no {dataset} files found here or in its usual sub-folders; expected {}. \
             `cnnsplitter data fetch {dataset} --dir {}` downloads them",
            expected_files(dataset),
            dir.display()
        ),
    ))
}

fn expected_files(dataset: Source) -> &'static str {
    match dataset {
        Source::Cifar10 => "data_batch_1..5.bin + test_batch.bin (binary) or data_batch_1..5 + test_batch (python)",
        Source::Cifar100 => "train.bin + test.bin (binary) or train + test + meta (python)",
        Source::Svhn => "train_32x32.mat and test_32x32.mat",
        Source::Mnist => {
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or .gz)"
        }
        Source::Synthetic => "nothing: the synthetic dataset is generated",
    }
}

/// Reads the dataset in `dir` (or a known sub-folder), detecting its format.
pub fn open(dir: &Path) -> Result<RawDataset> {
    let candidates = std::iter::once(dir.to_path_buf()).chain(KNOWN_SUBDIRS.iter().map(|s| dir.join(s)));
    for candidate in candidates {
        if let Some(format) = detect_format(&candidate) {
            return read(&candidate, format);
        }
    }
    if !dir.is_dir() {
        return Err(Error::file(dir, "is not a folder"));
    }
    Err(Error::file(
        dir,
        "holds no known dataset: expected CIFAR-10/100 (binary or python), SVHN .mat or MNIST idx files",
    ))
}

/// Reads the dataset of `format` from the files directly in `dir`.
pub fn read(dir: &Path, format: Format) -> Result<RawDataset> {
    match format {
        Format::Cifar10Binary => cifar::read_cifar10_binary(dir),
        Format::Cifar10Python => cifar::read_cifar10_python(dir),
        Format::Cifar100Binary => cifar::read_cifar100_binary(dir),
        Format::Cifar100Python => cifar::read_cifar100_python(dir),
        Format::SvhnMat => svhn::read(dir),
        Format::MnistIdx => mnist::read(dir),
        Format::Synthetic => Err(Error::Invalid("the synthetic dataset is generated, not read".into())),
    }
}

/// Reads a whole file, naming it on failure.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads a file, decompressing it when it is gzip (by magic bytes).
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(path)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path, format!("is not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}
