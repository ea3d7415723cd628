//! The input pipeline: normalisation, augmentation (random crop with zero padding, horizontal
//! flip), seeded shuffling and batching, with batches decoded in parallel on a background thread
//! so that training does not wait for data.
//!
//! Every random choice derives from `(seed, epoch, position)`, so an epoch's batches are the same
//! whatever the thread count, and a resumed run sees the same data as an uninterrupted one.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::seed::mix_seed;

/// ImageNet's per-channel mean (R, G, B), the original code's normalisation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (R, G, B).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-channel normalisation: `x = (pixel / 255 − mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean per channel, on the 0-1 scale.
    pub mean: Vec<f32>,
    /// Standard deviation per channel, on the 0-1 scale.
    pub std: Vec<f32>,
}

impl Normalization {
    /// The given mean/std, or ImageNet's (for one channel: the average of ImageNet's three).
    pub fn for_channels(channels: usize, mean: Option<Vec<f32>>, std: Option<Vec<f32>>) -> Result<Self> {
        let default = |values: [f32; 3]| {
            if channels == 3 { values.to_vec() } else { vec![values.iter().sum::<f32>() / 3.0; channels] }
        };
        let n = Normalization {
            mean: mean.unwrap_or_else(|| default(IMAGENET_MEAN)),
            std: std.unwrap_or_else(|| default(IMAGENET_STD)),
        };
        if n.mean.len() != channels
            || n.std.len() != channels
            || n.std.iter().any(|&s| !(s > 0.0 && s.is_finite()))
            || n.mean.iter().any(|m| !m.is_finite())
        {
            return Err(Error::Invalid(format!(
                "normalisation needs {channels} finite means (`mean`) and {channels} positive, finite standard \
                 deviations (`std`)"
            )));
        }
        Ok(n)
    }

    /// Normalises one `[C, H, W]` image of bytes into `out`.
    pub fn apply(&self, pixels: &[u8], out: &mut [f32]) {
        let plane = pixels.len() / self.mean.len();
        for (c, (src, dst)) in pixels.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
            let scale = 1.0 / (255.0 * self.std[c]);
            let shift = self.mean[c] / self.std[c];
            for (d, &p) in dst.iter_mut().zip(src) {
                *d = p as f32 * scale - shift;
            }
        }
    }

    /// Normalised images `[n, C, H, W]` of a whole set, in order.
    pub fn images(&self, set: &ImageSet) -> Vec<f32> {
        let size = set.image_size();
        let mut out = vec![0f32; set.len() * size];
        out.par_chunks_mut(size).enumerate().for_each(|(i, o)| self.apply(set.image(i), o));
        out
    }
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Zero padding before a random crop back to the original size (4 in the paper's code).
    pub crop_padding: usize,
    /// Random horizontal flip with probability 0.5 (off for digits).
    pub flip: bool,
}

impl Augmentation {
    /// The paper's augmentation: 4-pixel padded random crop, plus flips unless the data are digits.
    pub fn standard(digits: bool) -> Self {
        Augmentation { crop_padding: 4, flip: !digits }
    }

    /// Crops and flips one `[C, H, W]` image into `out` (same shape), with `rng`'s choices.
    pub fn apply(&self, shape: [usize; 3], pixels: &[u8], rng: &mut impl Rng, out: &mut [u8]) {
        let [c, h, w] = shape;
        let p = self.crop_padding as i64;
        let dy = if p > 0 { rng.random_range(0..=2 * p) - p } else { 0 } as isize;
        let dx = if p > 0 { rng.random_range(0..=2 * p) - p } else { 0 } as isize;
        let flip = self.flip && rng.random::<bool>();
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    out[(ch * h + y) * w + x] = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                        0
                    } else {
                        pixels[(ch * h + sy as usize) * w + sx as usize]
                    };
                }
            }
        }
    }
}

/// A batch: images `[len, C, H, W]` (normalised) and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Normalised images, row-major.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u16>,
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// How one split is turned into batches.
#[derive(Debug, Clone)]
pub struct Batcher {
    /// The images.
    pub set: Arc<ImageSet>,
    /// Images per batch.
    pub batch_size: usize,
    /// Shuffle every epoch.
    pub shuffle: bool,
    /// Augment (training only).
    pub augmentation: Option<Augmentation>,
    /// Normalisation.
    pub normalization: Normalization,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
}

impl Batcher {
    /// Number of batches per epoch (the last one may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.set.len().div_ceil(self.batch_size.max(1))
    }

    /// The image order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.set.len()).collect();
        if self.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(self.seed, epoch)));
        }
        order
    }

    /// Builds the batch of images `indices` (positions `start..` of the epoch), in parallel.
    pub fn make_batch(&self, epoch: u64, start: usize, indices: &[usize]) -> Batch {
        let size = self.set.image_size();
        let mut images = vec![0f32; indices.len() * size];
        let epoch_seed = mix_seed(self.seed ^ 0xA5A5_A5A5, epoch);
        images.par_chunks_mut(size).zip(indices.par_iter()).enumerate().for_each_init(
            || vec![0u8; size],
            |scratch, (k, (out, &i))| match &self.augmentation {
                Some(aug) => {
                    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(epoch_seed, (start + k) as u64));
                    aug.apply(self.set.shape, self.set.image(i), &mut rng, scratch);
                    self.normalization.apply(scratch, out);
                }
                None => self.normalization.apply(self.set.image(i), out),
            },
        );
        Batch { images, labels: indices.iter().map(|&i| self.set.labels[i]).collect() }
    }

    /// The batches of `epoch`, produced `prefetch` ahead on a background thread.
    pub fn epoch(&self, epoch: u64, prefetch: usize) -> Batches {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let me = self.clone();
        let handle = std::thread::spawn(move || {
            let order = me.order(epoch);
            for (b, chunk) in order.chunks(me.batch_size.max(1)).enumerate() {
                let batch = me.make_batch(epoch, b * me.batch_size, chunk);
                if tx.send(batch).is_err() {
                    break; // the consumer stopped early
                }
            }
        });
        Batches { rx: Some(rx), handle: Some(handle) }
    }
}

/// Iterator over an epoch's batches, built ahead on a background thread.
pub struct Batches {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.rx.take(); // unblocks the producer
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
