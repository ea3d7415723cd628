//! Dataset readers on small files in the real formats: made here byte by byte, and fixtures
//! written by Python's pickle and scipy (tests/fixtures/make_fixtures.py).

mod common;

use std::path::{Path, PathBuf};

use cnnsplitter::data::mat5::{self, MatArray, MatData};
use cnnsplitter::data::{self, Format, ImageSet, cifar, mnist, pickle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::formats::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn cifar10_binary_keeps_pixel_order_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10_binary(dir.path());
    assert_eq!(data::detect_format(dir.path()), Some(Format::Cifar10Binary));
    let raw = data::open(dir.path()).unwrap();
    let train = raw.split("train").unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.labels, vec![0, 5, 1, 6, 2, 7, 3, 8, 4, 9]);
    for k in 0..10 {
        assert_eq!(train.image(k), &expected_image(k)[..], "image {k}");
    }
    assert_eq!(raw.split("test").unwrap().labels, vec![9]);
    assert_eq!(raw.class_names[3], "cat");
}

#[test]
fn cifar100_binary_reads_fine_and_coarse_labels() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cifar-100-binary");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("train.bin"), cifar_records(&[&[19, 99], &[4, 0]], 0)).unwrap();
    std::fs::write(sub.join("test.bin"), cifar_records(&[&[2, 70]], 9)).unwrap();
    // Found through the sub-folder the archive unpacks to.
    let raw = data::open(dir.path()).unwrap();
    assert_eq!(raw.format, Format::Cifar100Binary);
    assert_eq!(raw.split("train").unwrap().labels, vec![99, 0]);
    assert_eq!(raw.coarse_labels[0].1, vec![19, 4]);
    assert_eq!(raw.split("test").unwrap().image(0), &expected_image(9)[..]);
    assert_eq!(raw.classes(), 100);
}

#[test]
fn cifar10_python_fixture_written_by_pythons_pickle() {
    let raw = data::open(&fixtures().join("cifar-10-batches-py")).unwrap();
    assert_eq!(raw.format, Format::Cifar10Python);
    let train = raw.split("train").unwrap();
    assert_eq!(train.len(), 10);
    let labels: Vec<u16> = (1..=5).flat_map(|i| [i % 10, (i + 3) % 10]).collect();
    assert_eq!(train.labels, labels);
    for k in 0..10 {
        assert_eq!(train.image(k), &expected_image(k)[..], "image {k}");
    }
    let test = raw.split("test").unwrap();
    assert_eq!(test.labels, vec![9, 0], "labels pickled as an int64 numpy array (protocol 4)");
    assert_eq!(test.image(1), &expected_image(101)[..]);
    assert_eq!(raw.class_names[9], "truck");
}

#[test]
fn cifar100_python_fixture_written_by_pythons_pickle() {
    let raw = data::open(&fixtures().join("cifar-100-python")).unwrap();
    assert_eq!(raw.format, Format::Cifar100Python);
    assert_eq!(raw.split("train").unwrap().labels, vec![99, 0, 70]);
    assert_eq!(raw.coarse_labels[0].1, vec![19, 4, 2]);
    assert_eq!(raw.split("test").unwrap().image(0), &expected_image(50)[..]);
    assert_eq!(raw.class_names[7], "c7");
}

/// A pickle as Python 2's cPickle writes CIFAR's dict (protocol 2, `str` keys and data).
fn python2_pickle(labels: &[u8], data: &[u8], n: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'q', 1, b'('];
    let short = |p: &mut Vec<u8>, s: &[u8]| {
        p.push(b'U');
        p.push(s.len() as u8);
        p.extend_from_slice(s);
    };
    short(&mut p, b"data");
    p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87R");
    p.extend_from_slice(b"(K\x01");
    p.extend_from_slice(&[b'M', n as u8, 0, b'M', 0x00, 0x0c, 0x86]); // (n, 3072)
    p.extend_from_slice(
        b"cnumpy\ndtype\nq\x04U\x02u1K\x00K\x01\x87Rq\x05(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89",
    );
    p.push(b'T');
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(data);
    p.extend_from_slice(b"tb");
    short(&mut p, b"labels");
    p.extend_from_slice(b"]q\x06(");
    for &l in labels {
        p.extend_from_slice(&[b'K', l]);
    }
    p.extend_from_slice(b"eu.");
    p
}

#[test]
fn python2_style_pickles_read_like_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    for b in 1..=5 {
        let data: Vec<u8> = (0..2).flat_map(|k| expected_image(2 * (b - 1) + k)).collect();
        std::fs::write(dir.path().join(format!("data_batch_{b}")), python2_pickle(&[b as u8, 0], &data, 2)).unwrap();
    }
    std::fs::write(dir.path().join("test_batch"), python2_pickle(&[7], &expected_image(42), 1)).unwrap();
    let raw = data::open(dir.path()).unwrap();
    let train = raw.split("train").unwrap();
    assert_eq!(train.labels, vec![1, 0, 2, 0, 3, 0, 4, 0, 5, 0]);
    assert_eq!(train.image(7), &expected_image(7)[..]);
    assert_eq!(raw.split("test").unwrap().labels, vec![7]);
    assert_eq!(raw.class_names, cifar::CIFAR10_CLASSES.map(String::from).to_vec(), "no batches.meta: built-in names");
}

#[test]
fn svhn_fixture_written_by_scipy() {
    let raw = data::open(&fixtures().join("svhn")).unwrap();
    assert_eq!(raw.format, Format::SvhnMat);
    let train = raw.split("train").unwrap();
    assert_eq!(train.labels, vec![0, 1, 9], "label 10 means digit 0");
    assert_eq!(train.shape, [3, 32, 32]);
    for k in 0..3 {
        assert_eq!(train.image(k), &expected_image(20 + k)[..], "image {k}: rows and columns transposed back");
    }
    assert_eq!(raw.split("test").unwrap().labels, vec![3, 0], "labels stored as double");
}

/// X as MATLAB stores it: [rows, cols, channels, n], column-major.
fn svhn_arrays(images: &[Vec<u8>], labels: &[f64]) -> Vec<MatArray> {
    let n = images.len();
    let mut x = vec![0u8; 3072 * n];
    for (k, img) in images.iter().enumerate() {
        for c in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    x[((k * 3 + c) * 32 + col) * 32 + row] = img[(c * 32 + row) * 32 + col];
                }
            }
        }
    }
    vec![
        MatArray { name: "X".into(), dims: vec![32, 32, 3, n], data: MatData::U8(x) },
        MatArray { name: "y".into(), dims: vec![n, 1], data: MatData::F64(labels.to_vec()) },
    ]
}

#[test]
fn svhn_mat_files_made_here_compressed_and_not() {
    for compress in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let images: Vec<Vec<u8>> = (0..4).map(expected_image).collect();
        let bytes = mat5::write(&svhn_arrays(&images, &[10.0, 2.0, 5.0, 9.0]), compress);
        std::fs::write(dir.path().join("test_32x32.mat"), bytes).unwrap();
        let raw = data::open(dir.path()).unwrap();
        let test = raw.split("test").unwrap();
        assert_eq!(test.labels, vec![0, 2, 5, 9]);
        assert_eq!(test.image(3), &images[3][..], "compress {compress}");
        assert!(raw.split("train").is_none());
    }
}

#[test]
fn mnist_idx_plain_and_gzip() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_mnist(dir.path(), 12, gz);
        let raw = data::open(dir.path()).unwrap();
        assert_eq!(raw.format, Format::MnistIdx);
        let test = raw.split("test").unwrap();
        assert_eq!(test.shape, [1, 28, 28]);
        assert_eq!(test.labels[11], 1);
        assert!(test.image(11).iter().all(|&p| p == 11));
        assert!(raw.split("train").is_none(), "the test set alone is enough");
    }
}

#[test]
fn padding_puts_the_image_in_the_middle() {
    let set = ImageSet { shape: [1, 2, 3], pixels: vec![1, 2, 3, 4, 5, 6], labels: vec![0] };
    let p = set.padded(1);
    assert_eq!(p.shape, [1, 4, 5]);
    assert_eq!(p.pixels, vec![0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 4, 5, 6, 0, 0, 0, 0, 0, 0]);
}

/// Errors, not panics: each case names the file and what was expected.
#[test]
fn bad_files_give_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let check = |expect: &[&str]| {
        let err = data::open(d).unwrap_err().to_string();
        for e in expect {
            assert!(err.contains(e), "`{err}` should mention `{e}`");
        }
    };
    // CIFAR-10 binary: truncated record, label out of range, missing training batch.
    write_cifar10_binary(d);
    let mut bytes = std::fs::read(d.join("test_batch.bin")).unwrap();
    bytes.pop();
    std::fs::write(d.join("test_batch.bin"), &bytes).unwrap();
    check(&["test_batch.bin", "3073"]);
    bytes.push(0);
    bytes[0] = 10;
    std::fs::write(d.join("test_batch.bin"), &bytes).unwrap();
    check(&["test_batch.bin", "label 10"]);
    std::fs::remove_file(d.join("data_batch_3.bin")).unwrap();
    check(&["data_batch_3.bin", "missing"]);
    for f in std::fs::read_dir(d).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }

    // MNIST: wrong magic, oversized file, mismatched counts.
    write_mnist(d, 3, false);
    let images = d.join("t10k-images-idx3-ubyte");
    let mut bytes = std::fs::read(&images).unwrap();
    bytes[2] = 9;
    std::fs::write(&images, &bytes).unwrap();
    check(&["t10k-images-idx3-ubyte", "magic"]);
    bytes[2] = 8;
    bytes.extend_from_slice(&[0; 10]);
    std::fs::write(&images, &bytes).unwrap();
    check(&["t10k-images-idx3-ubyte", "data bytes"]);
    write_mnist(d, 3, false);
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[2], &[0, 1])).unwrap();
    check(&["t10k-labels-idx1-ubyte", "2 labels"]);
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[3], &[0, 1, 12])).unwrap();
    check(&["t10k-labels-idx1-ubyte", "label 12"]);
    std::fs::write(d.join("t10k-images-idx3-ubyte"), &gzip(b"short")[..10]).unwrap();
    check(&["t10k-images-idx3-ubyte", "gzip"]);
    for f in std::fs::read_dir(d).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }

    // SVHN: not a MAT-file, and a label out of range.
    std::fs::write(d.join("train_32x32.mat"), b"MATLAB 4 or something else entirely, long enough?").unwrap();
    check(&["train_32x32.mat", "128-byte header"]);
    let bytes = mat5::write(&svhn_arrays(&[expected_image(0)], &[11.0]), true);
    std::fs::write(d.join("train_32x32.mat"), bytes).unwrap();
    check(&["train_32x32.mat", "label 0 is 11"]);

    // A folder with nothing known in it.
    std::fs::remove_file(d.join("train_32x32.mat")).unwrap();
    check(&["no known dataset"]);
}

/// Random and truncated bytes through every binary reader: errors or values, never a panic.
/// `CNNSPLITTER_FUZZ_ROUNDS=N` multiplies the random inputs (default 1, about 26,000 inputs).
#[test]
fn readers_survive_random_and_truncated_bytes() {
    let rounds: usize = std::env::var("CNNSPLITTER_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let path = Path::new("fuzz.bin");
    let mut valid: Vec<Vec<u8>> = vec![
        cifar_records(&[&[3], &[4]], 0),
        idx(&[2, 28, 28], &[7; 2 * 784]),
        mat5::write(&svhn_arrays(&[expected_image(1)], &[4.0]), false),
        mat5::write(&svhn_arrays(&[expected_image(1)], &[4.0]), true),
        python2_pickle(&[1, 2], &[5; 2 * 3072], 2),
    ];
    for entry in std::fs::read_dir(fixtures().join("cifar-10-batches-py")).unwrap() {
        valid.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let run = |bytes: &[u8]| {
        let _ = cifar::parse_binary(bytes, 1, 10, path);
        let _ = cifar::parse_binary(bytes, 2, 100, path);
        let _ = mnist::parse_idx(bytes, 3, path);
        let _ = mnist::parse_idx(bytes, 1, path);
        let _ = mat5::parse(bytes).map(|a| cnnsplitter::data::svhn::images_from_arrays(&a, path));
        let _ = pickle::load(bytes).map(|v| v.get("data").map(|d| d.ndarray()));
    };
    let mut tried = 0;
    for v in &valid {
        for cut in 0..v.len().min(4000) {
            run(&v[..cut]);
            tried += 1;
        }
        for _ in 0..300 * rounds {
            let mut m = v.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..m.len());
                m[i] = rng.random();
            }
            run(&m);
            tried += 1;
        }
    }
    for _ in 0..3000 * rounds {
        let n = rng.random_range(0..600);
        let mut bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        if n > 140 && rng.random::<bool>() {
            bytes[..19].copy_from_slice(b"MATLAB 5.0 MAT-file");
            bytes[126..128].copy_from_slice(b"IM");
        }
        run(&bytes);
        tried += 1;
    }
    assert!(tried > 20_000, "{tried} inputs");
    eprintln!("{tried} inputs tried");
}
