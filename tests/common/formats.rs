//! Writers of small datasets in the published formats, for tests.

use std::io::Write;
use std::path::Path;

/// The fixtures' pixel rule: image k, channel c, row y, column x.
pub fn pixel(k: usize, c: usize, y: usize, x: usize) -> u8 {
    ((7 * k + 50 * c + 3 * y + x) % 256) as u8
}

pub fn expected_image(k: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(3072);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                v.push(pixel(k, c, y, x));
            }
        }
    }
    v
}

/// CIFAR binary records: label byte(s) then the image bytes (already [C, H, W]).
pub fn cifar_records(labels: &[&[u8]], first_image: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        out.extend_from_slice(l);
        out.extend(expected_image(first_image + i));
    }
    out
}

/// Writes a small CIFAR-10 binary dataset: batch b holds images 2b, 2b+1 with labels b, b+5.
pub fn write_cifar10_binary(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 0..5u8 {
        let bytes = cifar_records(&[&[b], &[b + 5]], 2 * b as usize);
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_records(&[&[9]], 50)).unwrap();
}

/// An idx file of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// MNIST-like test split: `n` 28x28 digits, image k filled with value k, label k % 10.
pub fn write_mnist(dir: &Path, n: usize, gz: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let pixels: Vec<u8> = (0..n).flat_map(|k| vec![k as u8; 784]).collect();
    let labels: Vec<u8> = (0..n).map(|k| (k % 10) as u8).collect();
    let (images, labels) = (idx(&[n as u32, 28, 28], &pixels), idx(&[n as u32], &labels));
    let (suffix, images, labels) = if gz { (".gz", gzip(&images), gzip(&labels)) } else { ("", images, labels) };
    std::fs::write(dir.join(format!("t10k-images-idx3-ubyte{suffix}")), images).unwrap();
    std::fs::write(dir.join(format!("t10k-labels-idx1-ubyte{suffix}")), labels).unwrap();
}

/// A 3x32x32 image whose first bytes identify it: source id, source label, index (2 bytes).
pub fn tagged_image(source: u8, label: u8, index: usize) -> Vec<u8> {
    let mut v = vec![0u8; 3072];
    v[0] = source;
    v[1] = label;
    v[2] = (index % 256) as u8;
    v[3] = (index / 256) as u8;
    v
}

/// CIFAR-10 binary files with the given labels (train spread over the 5 batches), tagged images.
pub fn write_cifar10_tagged(dir: &Path, train: &[u8], test: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let record = |l: u8, i: usize| [vec![l], tagged_image(10, l, i)].concat();
    let per = train.len().div_ceil(5);
    for b in 0..5 {
        let bytes: Vec<u8> =
            train.iter().enumerate().skip(b * per).take(per).flat_map(|(i, &l)| record(l, i)).collect();
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), bytes).unwrap();
    }
    let bytes: Vec<u8> = test.iter().enumerate().flat_map(|(i, &l)| record(l, 10_000 + i)).collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}

/// CIFAR-100 binary files (coarse label = fine / 5) with tagged images.
pub fn write_cifar100_tagged(dir: &Path, train: &[u8], test: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let records = |labels: &[u8], base: usize| -> Vec<u8> {
        labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| [vec![l / 5, l], tagged_image(100, l, base + i)].concat())
            .collect()
    };
    std::fs::write(dir.join("train.bin"), records(train, 0)).unwrap();
    std::fs::write(dir.join("test.bin"), records(test, 10_000)).unwrap();
}

/// An MNIST test split of tagged 28x28 digits (pixel 0 = label, pixels 1-2 = index).
pub fn write_mnist_tagged(dir: &Path, labels: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let pixels: Vec<u8> = labels
        .iter()
        .enumerate()
        .flat_map(|(i, &l)| {
            let mut v = vec![0u8; 784];
            v[0] = l;
            v[1] = (i % 256) as u8;
            v[2] = (i / 256) as u8;
            v
        })
        .collect();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx(&[labels.len() as u32, 28, 28], &pixels)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[labels.len() as u32], labels)).unwrap();
}
