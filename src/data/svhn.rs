//! SVHN cropped digits: `train_32x32.mat` and `test_32x32.mat` (MATLAB v5), each holding `X`
//! (32 x 32 x 3 x N uint8, column-major: row fastest, then column, channel, image) and `y`
//! (N x 1, digit labels with 10 meaning digit 0).

use std::path::Path;

use crate::data::mat5::{self, MatArray};
use crate::data::{Format, ImageSet, RawDataset, read_file};
use crate::error::{Error, Result};

/// Converts the `X` and `y` variables of one SVHN file into images `[3, 32, 32]` (row-major)
/// with labels 0-9.
pub fn images_from_arrays(arrays: &[MatArray], path: &Path) -> Result<ImageSet> {
    let find = |name: &str| {
        arrays
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| Error::file(path, format!("has no variable `{name}` (expected X and y)")))
    };
    let (x, y) = (find("X")?, find("y")?);
    let [h, w, c, n] = x.dims[..] else {
        return Err(Error::file(path, format!("`X` has dimensions {:?}; expected [H, W, C, N]", x.dims)));
    };
    let labels_n: usize = y.dims.iter().product();
    if labels_n != n {
        return Err(Error::file(path, format!("`y` has {labels_n} labels for {n} images")));
    }
    let mat5::MatData::U8(values) = &x.data else {
        return Err(Error::file(path, "`X` is not stored as uint8"));
    };
    let per = h.checked_mul(w).and_then(|hw| hw.checked_mul(c)).filter(|&p| p > 0);
    let total = per.and_then(|p| p.checked_mul(n)).filter(|&t| t == values.len());
    let (Some(per), Some(total)) = (per, total) else {
        return Err(Error::file(
            path,
            format!(
                "`X` has dimensions {:?} and {} values; expected [H, W, C, N], none 0, H·W·C·N values",
                x.dims,
                values.len()
            ),
        ));
    };
    let mut pixels = vec![0u8; total];
    for (img, out) in pixels.chunks_mut(per).enumerate() {
        let src = &values[img * per..(img + 1) * per];
        for ch in 0..c {
            for col in 0..w {
                for row in 0..h {
                    out[(ch * h + row) * w + col] = src[(ch * w + col) * h + row];
                }
            }
        }
    }
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let v = y.data.get(i);
        let digit = match v {
            10.0 => 0,
            v if (0.0..=9.0).contains(&v) && v.fract() == 0.0 => v as u16,
            v => {
                return Err(Error::file(path, format!("label {i} is {v}; SVHN labels are 1-10 (10 means digit 0)")));
            }
        };
        labels.push(digit);
    }
    Ok(ImageSet { shape: [c, h, w], pixels, labels })
}

/// Reads the SVHN files present in `dir`.
pub fn read(dir: &Path) -> Result<RawDataset> {
    let mut splits = Vec::new();
    for (split, file) in [("train", "train_32x32.mat"), ("test", "test_32x32.mat")] {
        let path = dir.join(file);
        if path.is_file() {
            let arrays = mat5::parse(&read_file(&path)?).map_err(|e| e.in_file(&path))?;
            splits.push((split.to_string(), images_from_arrays(&arrays, &path)?));
        }
    }
    if splits.is_empty() {
        return Err(Error::file(dir, "holds neither train_32x32.mat nor test_32x32.mat"));
    }
    Ok(RawDataset {
        format: Format::SvhnMat,
        dir: dir.to_path_buf(),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        splits,
        coarse_labels: Vec::new(),
    })
}
