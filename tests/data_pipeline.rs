//! The input pipeline and the synthetic dataset.

use std::collections::BTreeSet;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use cnnsplitter::data::ImageSet;
use cnnsplitter::data::pipeline::{Augmentation, Batcher, Normalization};
use cnnsplitter::data::synthetic;

#[test]
fn normalisation_uses_imagenet_statistics_by_default() {
    let n = Normalization::for_channels(3, None, None).unwrap();
    let mut out = [0f32; 3];
    n.apply(&[255, 0, 128], &mut out);
    assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
    assert!((out[1] - (0.0 - 0.456) / 0.224).abs() < 1e-6);
    assert!((out[2] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-5);
    let gray = Normalization::for_channels(1, None, None).unwrap();
    assert!((gray.mean[0] - 0.449).abs() < 1e-6);
    assert!(Normalization::for_channels(3, Some(vec![0.5]), None).is_err());
}

/// Finds the shift and flip that explain an augmented image (brute force over all choices).
fn explain(src: &[u8], out: &[u8], shape: [usize; 3], pad: isize) -> Vec<(isize, isize, bool)> {
    let [c, h, w] = shape;
    let mut found = Vec::new();
    for dy in -pad..=pad {
        for dx in -pad..=pad {
            for flip in [false, true] {
                let ok = (0..c).all(|ch| {
                    (0..h).all(|y| {
                        (0..w).all(|x| {
                            let xx = if flip { w - 1 - x } else { x } as isize + dx;
                            let yy = y as isize + dy;
                            let want = if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                                0
                            } else {
                                src[(ch * h + yy as usize) * w + xx as usize]
                            };
                            out[(ch * h + y) * w + x] == want
                        })
                    })
                });
                if ok {
                    found.push((dy, dx, flip));
                }
            }
        }
    }
    found
}

#[test]
fn augmentation_is_a_padded_random_crop_and_flip() {
    let shape = [2, 8, 8];
    let src: Vec<u8> = (0..128).map(|v| (v + 1) as u8).collect(); // no zeros, no symmetry
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut out = vec![0u8; 128];
    let mut flips = 0;
    let mut shifts = BTreeSet::new();
    for _ in 0..200 {
        Augmentation { crop_padding: 2, flip: true }.apply(shape, &src, &mut rng, &mut out);
        let found = explain(&src, &out, shape, 2);
        assert_eq!(found.len(), 1, "exactly one crop/flip explains the output");
        let (dy, dx, flip) = found[0];
        flips += flip as usize;
        shifts.insert((dy, dx));
    }
    assert!((60..140).contains(&flips), "flips happen about half the time: {flips}");
    assert_eq!(shifts.len(), 25, "every offset in [-2, 2]^2 occurs");
    for _ in 0..50 {
        Augmentation::standard(true).apply(shape, &src, &mut rng, &mut out);
        assert!(!explain(&src, &out, shape, 4)[0].2, "digits are never flipped");
    }
}

fn batcher(n: usize, shuffle: bool, augment: bool) -> Batcher {
    let set = ImageSet {
        shape: [1, 4, 4],
        pixels: (0..n).flat_map(|i| vec![i as u8; 16]).collect(),
        labels: (0..n).map(|i| i as u16).collect(),
    };
    Batcher {
        set: Arc::new(set),
        batch_size: 7,
        shuffle,
        augmentation: augment.then_some(Augmentation { crop_padding: 1, flip: true }),
        normalization: Normalization { mean: vec![0.0], std: vec![1.0 / 255.0] },
        seed: 11,
    }
}

#[test]
fn an_epoch_visits_every_image_once_in_a_seeded_order() {
    let b = batcher(50, true, false);
    let batches: Vec<_> = b.epoch(0, 2).collect();
    assert_eq!(batches.len(), 8);
    assert_eq!(batches.iter().map(|x| x.len()).sum::<usize>(), 50);
    let mut seen: Vec<u16> = batches.iter().flat_map(|x| x.labels.clone()).collect();
    let order = seen.clone();
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<u16>>());
    // Pixels and labels travel together (pixel value = index, normalised to itself).
    for batch in &batches {
        for (k, &l) in batch.labels.iter().enumerate() {
            assert!(batch.images[k * 16..(k + 1) * 16].iter().all(|&v| (v - l as f32).abs() < 1e-3));
        }
    }
    let again: Vec<u16> = b.epoch(0, 2).flat_map(|x| x.labels).collect();
    assert_eq!(again, order, "same seed and epoch, same order");
    let next: Vec<u16> = b.epoch(1, 2).flat_map(|x| x.labels).collect();
    assert_ne!(next, order, "another epoch, another order");
    let plain: Vec<u16> = batcher(50, false, false).epoch(0, 2).flat_map(|x| x.labels).collect();
    assert_eq!(plain, (0..50).collect::<Vec<u16>>());
}

#[test]
fn augmented_batches_do_not_depend_on_the_thread_count() {
    let b = batcher(40, true, true);
    let many: Vec<_> = b.epoch(3, 2).collect();
    let one =
        rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| b.epoch(3, 2).collect::<Vec<_>>());
    assert_eq!(many, one);
}

#[test]
fn stopping_an_epoch_early_does_not_hang() {
    let b = batcher(200, true, true);
    let mut it = b.epoch(0, 1);
    assert!(it.next().is_some());
    drop(it);
}

#[test]
fn synthetic_images_are_deterministic_and_balanced() {
    let a = synthetic::generate(200, 1);
    assert_eq!(a, synthetic::generate(200, 1));
    assert_ne!(a.pixels, synthetic::generate(200, 2).pixels);
    assert_eq!(a.per_class(10), vec![20; 10]);
    assert_eq!(a.shape, [3, 32, 32]);
}

/// Colour alone does not separate the classes: a nearest-class-mean classifier on each image's
/// mean colour is near chance.
#[test]
fn colour_alone_does_not_tell_the_class() {
    let train = synthetic::generate(3000, 5);
    let test = synthetic::generate(1000, 6);
    let mean_rgb = |set: &ImageSet, i: usize| -> [f64; 3] {
        let img = set.image(i);
        [0, 1, 2].map(|c| img[c * 1024..(c + 1) * 1024].iter().map(|&p| p as f64).sum::<f64>() / 1024.0)
    };
    let mut centroid = [[0f64; 3]; 10];
    for i in 0..train.len() {
        let m = mean_rgb(&train, i);
        for c in 0..3 {
            centroid[train.labels[i] as usize][c] += m[c] / 300.0;
        }
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let m = mean_rgb(&test, i);
            let dist = |k: usize| (0..3).map(|c| (m[c] - centroid[k][c]).powi(2)).sum::<f64>();
            let best = (0..10).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap();
            best == test.labels[i] as usize
        })
        .count();
    let accuracy = correct as f64 / test.len() as f64;
    assert!(accuracy < 0.2, "mean colour predicts the class with accuracy {accuracy}");
}
