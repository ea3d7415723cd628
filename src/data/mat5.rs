//! A reader of MATLAB v5 MAT-files (little-endian), enough for numeric arrays: SVHN's
//! `train_32x32.mat` and `test_32x32.mat`.
//!
//! After a 128-byte header the file is a sequence of data elements, each an 8-byte tag
//! (type, byte count) and its data padded to 8 bytes; a "small" element packs a count of at
//! most 4 bytes and its data into the tag itself. A matrix (`miMATRIX`) holds sub-elements: array
//! flags, dimensions, name and the real part. `miCOMPRESSED` elements are zlib streams holding
//! one element.

use std::io::Read;

use crate::error::{Error, Result};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// A numeric variable: name, dimensions (column-major, as MATLAB stores them) and values.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// The variable's name.
    pub name: String,
    /// Dimensions, first one fastest-varying.
    pub dims: Vec<usize>,
    /// The real part, in column-major order.
    pub data: MatData,
}

/// Values of a numeric array in the type they are stored in.
#[derive(Debug, Clone, PartialEq)]
pub enum MatData {
    /// Stored as unsigned bytes (MATLAB stores small integers compactly, even for doubles).
    U8(Vec<u8>),
    /// Any other numeric storage type, widened to f64.
    F64(Vec<f64>),
}

impl MatData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as f64.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            MatData::U8(v) => v[i] as f64,
            MatData::F64(v) => v[i],
        }
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(format!("not a valid MATLAB v5 file: {}", msg.into()))
}

struct Element<'a> {
    kind: u32,
    data: &'a [u8],
}

/// Splits `bytes` into the data elements it holds.
fn elements(bytes: &[u8]) -> Result<Vec<Element<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes.len() - pos < 8 {
            return Err(bad(format!("truncated element tag at offset {pos}")));
        }
        let word = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
        if word >> 16 != 0 {
            // Small data element: count in the upper half, type in the lower, data in the tag.
            let (kind, n) = (word & 0xffff, (word >> 16) as usize);
            if n > 4 {
                return Err(bad(format!("small element of {n} bytes at offset {pos}")));
            }
            out.push(Element { kind, data: &bytes[pos + 4..pos + 4 + n] });
            pos += 8;
            continue;
        }
        let n = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let start = pos + 8;
        if n > bytes.len() - start {
            return Err(bad(format!(
                "element at offset {pos} claims {n} bytes, but only {} remain",
                bytes.len() - start
            )));
        }
        out.push(Element { kind: word, data: &bytes[start..start + n] });
        // Compressed elements are not padded; all others are padded to 8 bytes.
        pos = if word == MI_COMPRESSED { start + n } else { (start + n).div_ceil(8) * 8 };
    }
    Ok(out)
}

fn numbers(e: &Element<'_>) -> Result<MatData> {
    macro_rules! widen {
        ($t:ty, $w:expr) => {
            MatData::F64(
                e.data.chunks_exact($w).map(|b| <$t>::from_le_bytes(b.try_into().expect("width")) as f64).collect(),
            )
        };
    }
    Ok(match e.kind {
        MI_UINT8 => MatData::U8(e.data.to_vec()),
        MI_INT8 => MatData::F64(e.data.iter().map(|&b| b as i8 as f64).collect()),
        MI_INT16 => widen!(i16, 2),
        MI_UINT16 => widen!(u16, 2),
        MI_INT32 => widen!(i32, 4),
        MI_UINT32 => widen!(u32, 4),
        MI_SINGLE => widen!(f32, 4),
        MI_DOUBLE => widen!(f64, 8),
        MI_INT64 => widen!(i64, 8),
        MI_UINT64 => widen!(u64, 8),
        other => return Err(bad(format!("unsupported numeric storage type {other}"))),
    })
}

fn matrix(data: &[u8]) -> Result<Option<MatArray>> {
    let parts = elements(data)?;
    let [flags, dims, name, real, ..] = parts.as_slice() else {
        return Ok(None); // empty or non-numeric matrix
    };
    if flags.kind != MI_UINT32 || flags.data.len() < 4 {
        return Err(bad("matrix without array flags"));
    }
    let class = flags.data[0];
    let complex = flags.data[1] & 0x08 != 0;
    // Numeric classes are 6 (double) to 15 (uint64); cells, structs, chars and sparse are skipped.
    if !(6..=15).contains(&class) {
        return Ok(None);
    }
    if complex {
        return Err(bad("complex arrays are not supported"));
    }
    if dims.kind != MI_INT32 {
        return Err(bad("matrix dimensions are not int32"));
    }
    let dims: Vec<usize> = dims
        .data
        .chunks_exact(4)
        .map(|b| {
            usize::try_from(i32::from_le_bytes(b.try_into().expect("4 bytes"))).map_err(|_| bad("negative dimension"))
        })
        .collect::<Result<_>>()?;
    let name = String::from_utf8_lossy(name.data).into_owned();
    let data = numbers(real)?;
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        return Err(bad(format!("variable `{name}` has dimensions {dims:?} but {} values", data.len())));
    }
    Ok(Some(MatArray { name, dims, data }))
}

/// Reads every numeric variable of a MAT-file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Vec<MatArray>> {
    if bytes.len() < 128 {
        return Err(bad(format!("{} bytes is shorter than the 128-byte header", bytes.len())));
    }
    if !bytes.starts_with(b"MATLAB 5.0 MAT-file") {
        return Err(bad("the header does not start with `MATLAB 5.0 MAT-file`"));
    }
    match &bytes[126..128] {
        b"IM" => {}
        b"MI" => return Err(bad("big-endian MAT-files are not supported")),
        _ => return Err(bad("unknown endian indicator")),
    }
    let mut arrays = Vec::new();
    for e in elements(&bytes[128..])? {
        let inflated;
        let (kind, data) = if e.kind == MI_COMPRESSED {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(e.data)
                .read_to_end(&mut out)
                .map_err(|err| bad(format!("a compressed element does not inflate: {err}")))?;
            inflated = out;
            let inner = elements(&inflated)?;
            let Some(first) = inner.into_iter().next() else {
                continue;
            };
            (first.kind, first.data)
        } else {
            (e.kind, e.data)
        };
        if kind == MI_MATRIX
            && let Some(a) = matrix(data)?
        {
            arrays.push(a);
        }
    }
    Ok(arrays)
}

/// Writes numeric variables as a MAT-file (uncompressed, or each variable zlib-compressed);
/// `u8` data is stored as a uint8 array, `f64` as double. Used to make test files.
pub fn write(arrays: &[MatArray], compress: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut header = b"MATLAB 5.0 MAT-file, written by cnnsplitter".to_vec();
    header.resize(116, b' ');
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&0x0100u16.to_le_bytes());
    header.extend_from_slice(b"IM");
    out.extend(header);
    for a in arrays {
        let mut m = Vec::new();
        let class: u32 = if matches!(a.data, MatData::U8(_)) { 9 } else { 6 };
        push_element(&mut m, MI_UINT32, &[class.to_le_bytes(), 0u32.to_le_bytes()].concat());
        let dims: Vec<u8> = a.dims.iter().flat_map(|&d| (d as i32).to_le_bytes()).collect();
        push_element(&mut m, MI_INT32, &dims);
        push_element(&mut m, MI_INT8, a.name.as_bytes());
        match &a.data {
            MatData::U8(v) => push_element(&mut m, MI_UINT8, v),
            MatData::F64(v) => {
                push_element(&mut m, MI_DOUBLE, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
            }
        }
        let mut element = Vec::new();
        push_element(&mut element, MI_MATRIX, &m);
        if compress {
            use std::io::Write;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&element).expect("in-memory write");
            let z = z.finish().expect("in-memory write");
            out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            out.extend(z);
        } else {
            out.extend(element);
        }
    }
    out
}

fn push_element(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    if data.len() <= 4 && !data.is_empty() && kind != MI_MATRIX {
        out.extend_from_slice(&(((data.len() as u32) << 16) | kind).to_le_bytes());
        let mut padded = data.to_vec();
        padded.resize(4, 0);
        out.extend(padded);
        return;
    }
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
}
