//! MNIST idx files (plain or gzip): `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`.
//!
//! An idx file starts with two zero bytes, a type byte (0x08 = unsigned byte), the number of
//! dimensions, then each dimension as a big-endian u32, then the data.

use std::path::{Path, PathBuf};

use crate::data::{Format, ImageSet, RawDataset, read_maybe_gz};
use crate::error::{Error, Result};

/// Parses an idx file of unsigned bytes with `dims` dimensions; returns the dimensions and data.
pub fn parse_idx(bytes: &[u8], dims: usize, path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(Error::file(
            path,
            format!("has {} bytes, shorter than an idx header ({header} bytes)", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != dims {
        return Err(Error::file(
            path,
            format!(
                "wrong magic number {:02x}{:02x}{:02x}{:02x}: expected 000008{dims:02x} (unsigned bytes, {dims} dimensions)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize)
        .collect();
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(bytes.len() - header) {
        return Err(Error::file(
            path,
            format!(
                "dimensions {shape:?} need {} data bytes, but the file has {}",
                count.map_or("too many".to_string(), |c| c.to_string()),
                bytes.len() - header
            ),
        ));
    }
    Ok((shape, bytes[header..].to_vec()))
}

/// Reads one split from its images and labels files.
pub fn read_split(images: &Path, labels: &Path) -> Result<ImageSet> {
    let (shape, pixels) = parse_idx(&read_maybe_gz(images)?, 3, images)?;
    let (lshape, label_bytes) = parse_idx(&read_maybe_gz(labels)?, 1, labels)?;
    if lshape[0] != shape[0] {
        return Err(Error::file(
            labels,
            format!("has {} labels, but {} has {} images", lshape[0], images.display(), shape[0]),
        ));
    }
    if shape[1] == 0 || shape[2] == 0 {
        return Err(Error::file(images, "has images of zero size"));
    }
    let set =
        ImageSet { shape: [1, shape[1], shape[2]], pixels, labels: label_bytes.into_iter().map(u16::from).collect() };
    set.check_labels(10, labels)?;
    Ok(set)
}

/// The (images, labels) files of each split present in `dir`, as `(split, images, labels)`.
pub fn find_files(dir: &Path) -> Option<Vec<(&'static str, PathBuf, PathBuf)>> {
    let find =
        |stem: &str| [stem.to_string(), format!("{stem}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file());
    let mut found = Vec::new();
    for (split, prefix) in [("train", "train"), ("test", "t10k")] {
        let images = find(&format!("{prefix}-images-idx3-ubyte"));
        let labels = find(&format!("{prefix}-labels-idx1-ubyte"));
        if let (Some(i), Some(l)) = (images, labels) {
            found.push((split, i, l));
        }
    }
    (!found.is_empty()).then_some(found)
}

/// Reads the MNIST splits present in `dir` (the test set alone is enough).
pub fn read(dir: &Path) -> Result<RawDataset> {
    let files = find_files(dir).ok_or_else(|| {
        Error::file(dir, "holds no MNIST idx pair (e.g. t10k-images-idx3-ubyte.gz + t10k-labels-idx1-ubyte.gz)")
    })?;
    let splits = files
        .into_iter()
        .map(|(split, images, labels)| Ok((split.to_string(), read_split(&images, &labels)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(RawDataset {
        format: Format::MnistIdx,
        dir: dir.to_path_buf(),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        splits,
        coarse_labels: Vec::new(),
    })
}
