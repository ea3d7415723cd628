//! CIFAR-10 and CIFAR-100 readers, binary and python-pickle versions.
//!
//! Binary records are `label (1 byte) + 3072 pixel bytes` (CIFAR-10) or `coarse label + fine
//! label + 3072 bytes` (CIFAR-100); the pixels are 1024 red, 1024 green, 1024 blue values in
//! row-major order, i.e. already `[C, H, W]`. The python version pickles a dict with `data`
//! (a `uint8` array `[N, 3072]` in the same order) and `labels` / `fine_labels` / `coarse_labels`.

use std::path::Path;

use crate::data::pickle;
use crate::data::{Format, ImageSet, RawDataset, read_file};
use crate::error::{Error, Result};

const SHAPE: [usize; 3] = [3, 32, 32];
const IMAGE: usize = 3 * 32 * 32;

/// CIFAR-10's class names (used when `batches.meta.txt` is absent).
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Parses binary records of `label_bytes` label bytes + 3072 pixels. Returns the images (with
/// the last label byte as label) and the first label byte of each record.
pub fn parse_binary(bytes: &[u8], label_bytes: usize, classes: usize, path: &Path) -> Result<(ImageSet, Vec<u16>)> {
    let record = label_bytes + IMAGE;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(Error::file(
            path,
            format!(
                "has {} bytes; a CIFAR binary file holds whole records of {record} bytes \
                 ({label_bytes} label byte(s) + 3072 pixels)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut set = ImageSet { shape: SHAPE, pixels: Vec::with_capacity(n * IMAGE), labels: Vec::with_capacity(n) };
    let mut first = Vec::with_capacity(n);
    for r in bytes.chunks_exact(record) {
        first.push(r[0] as u16);
        set.labels.push(r[label_bytes - 1] as u16);
        set.pixels.extend_from_slice(&r[label_bytes..]);
    }
    set.check_labels(classes, path)?;
    if label_bytes == 2
        && let Some(i) = first.iter().position(|&c| c >= 20)
    {
        return Err(Error::file(path, format!("record {i} has coarse label {}, expected below 20", first[i])));
    }
    Ok((set, first))
}

fn concat(parts: Vec<ImageSet>) -> ImageSet {
    let mut all = ImageSet::empty(SHAPE);
    for p in parts {
        all.pixels.extend(p.pixels);
        all.labels.extend(p.labels);
    }
    all
}

fn names_from_text(dir: &Path, file: &str, fallback: &[&str]) -> Vec<String> {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(text) => {
            let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if names.len() == fallback.len() || fallback.is_empty() { names } else { fallback_names(fallback) }
        }
        Err(_) => fallback_names(fallback),
    }
}

fn fallback_names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class_{i}")).collect()
}

/// Which of `files` exist in `dir`; at least one must.
fn present<'a>(dir: &Path, files: &[&'a str], what: &str) -> Result<Vec<&'a str>> {
    let found: Vec<&str> = files.iter().copied().filter(|f| dir.join(f).is_file()).collect();
    if found.is_empty() {
        return Err(Error::file(dir, format!("holds none of the {what} files ({})", files.join(", "))));
    }
    Ok(found)
}

/// Reads CIFAR-10's binary version from `dir`.
pub fn read_cifar10_binary(dir: &Path) -> Result<RawDataset> {
    let train_files =
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
    let mut splits = Vec::new();
    let train: Vec<&str> = train_files.iter().copied().filter(|f| dir.join(f).is_file()).collect();
    if !train.is_empty() {
        if train.len() != train_files.len() {
            let missing: Vec<&str> = train_files.iter().copied().filter(|f| !train.contains(f)).collect();
            return Err(Error::file(dir, format!("CIFAR-10 training files missing: {}", missing.join(", "))));
        }
        let parts = train
            .iter()
            .map(|f| {
                let p = dir.join(f);
                parse_binary(&read_file(&p)?, 1, 10, &p).map(|(s, _)| s)
            })
            .collect::<Result<Vec<_>>>()?;
        splits.push(("train".to_string(), concat(parts)));
    }
    let test = dir.join("test_batch.bin");
    if test.is_file() {
        splits.push(("test".to_string(), parse_binary(&read_file(&test)?, 1, 10, &test)?.0));
    }
    present(dir, &["data_batch_1.bin", "test_batch.bin"], "CIFAR-10 binary")?;
    Ok(RawDataset {
        format: Format::Cifar10Binary,
        dir: dir.to_path_buf(),
        class_names: names_from_text(dir, "batches.meta.txt", &CIFAR10_CLASSES),
        splits,
        coarse_labels: Vec::new(),
    })
}

/// Reads CIFAR-100's binary version from `dir` (fine labels; coarse labels kept aside).
pub fn read_cifar100_binary(dir: &Path) -> Result<RawDataset> {
    let mut splits = Vec::new();
    let mut coarse = Vec::new();
    for name in present(dir, &["train.bin", "test.bin"], "CIFAR-100 binary")? {
        let p = dir.join(name);
        let (set, c) = parse_binary(&read_file(&p)?, 2, 100, &p)?;
        let split = name.trim_end_matches(".bin").to_string();
        splits.push((split.clone(), set));
        coarse.push((split, c));
    }
    let names = names_from_text(dir, "fine_label_names.txt", &[]);
    Ok(RawDataset {
        format: Format::Cifar100Binary,
        dir: dir.to_path_buf(),
        class_names: if names.len() == 100 { names } else { numbered(100) },
        splits,
        coarse_labels: coarse,
    })
}

/// The images and labels of one pickled CIFAR batch.
fn pickled_batch(path: &Path, label_keys: &[&str], classes: usize) -> Result<(ImageSet, Vec<Vec<u16>>)> {
    let value = pickle::load(&read_file(path)?).map_err(|e| e.in_file(path))?;
    let data = value
        .get("data")
        .ok_or_else(|| Error::file(path, "the pickled dict has no `data` entry"))?
        .ndarray()
        .map_err(|e| e.in_file(path))?;
    if data.dtype != "u1" || data.shape.len() != 2 || data.shape[1] != IMAGE {
        return Err(Error::file(
            path,
            format!("`data` is a {} array of shape {:?}; expected uint8 [N, 3072]", data.dtype, data.shape),
        ));
    }
    let n = data.shape[0];
    let mut labels = Vec::new();
    for key in label_keys {
        let l = value
            .get(key)
            .ok_or_else(|| Error::file(path, format!("the pickled dict has no `{key}` entry")))?
            .int_list()
            .map_err(|e| e.in_file(path))?;
        if l.len() != n {
            return Err(Error::file(path, format!("`{key}` has {} labels for {n} images", l.len())));
        }
        let l: Vec<u16> = l
            .iter()
            .map(|&v| u16::try_from(v).map_err(|_| Error::file(path, format!("`{key}` holds the label {v}"))))
            .collect::<Result<_>>()?;
        labels.push(l);
    }
    let set = ImageSet { shape: SHAPE, pixels: data.data, labels: labels.last().cloned().unwrap_or_default() };
    set.check_labels(classes, path)?;
    Ok((set, labels))
}

fn pickled_names(path: &Path, key: &str, count: usize) -> Vec<String> {
    let names = read_file(path)
        .ok()
        .and_then(|b| pickle::load(&b).ok())
        .and_then(|v| v.get(key).cloned())
        .and_then(|v| v.string_list().ok());
    match names {
        Some(n) if n.len() == count => n,
        _ => numbered(count),
    }
}

/// Reads CIFAR-10's python version from `dir`, without Python.
pub fn read_cifar10_python(dir: &Path) -> Result<RawDataset> {
    let train_files = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"];
    present(dir, &["data_batch_1", "test_batch"], "CIFAR-10 python")?;
    let mut splits = Vec::new();
    if dir.join("data_batch_1").is_file() {
        let parts = train_files
            .iter()
            .map(|f| pickled_batch(&dir.join(f), &["labels"], 10).map(|(s, _)| s))
            .collect::<Result<Vec<_>>>()?;
        splits.push(("train".to_string(), concat(parts)));
    }
    if dir.join("test_batch").is_file() {
        splits.push(("test".to_string(), pickled_batch(&dir.join("test_batch"), &["labels"], 10)?.0));
    }
    let mut class_names = pickled_names(&dir.join("batches.meta"), "label_names", 10);
    if class_names[0] == "class_0" {
        class_names = fallback_names(&CIFAR10_CLASSES);
    }
    Ok(RawDataset {
        format: Format::Cifar10Python,
        dir: dir.to_path_buf(),
        class_names,
        splits,
        coarse_labels: Vec::new(),
    })
}

/// Reads CIFAR-100's python version from `dir`, without Python.
pub fn read_cifar100_python(dir: &Path) -> Result<RawDataset> {
    let mut splits = Vec::new();
    let mut coarse = Vec::new();
    for name in present(dir, &["train", "test"], "CIFAR-100 python")? {
        let (set, mut labels) = pickled_batch(&dir.join(name), &["coarse_labels", "fine_labels"], 100)?;
        splits.push((name.to_string(), set));
        coarse.push((name.to_string(), labels.swap_remove(0)));
    }
    Ok(RawDataset {
        format: Format::Cifar100Python,
        dir: dir.to_path_buf(),
        class_names: pickled_names(&dir.join("meta"), "fine_label_names", 100),
        splits,
        coarse_labels: coarse,
    })
}
