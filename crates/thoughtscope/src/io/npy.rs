//! `.npy` files (NumPy format 1.0–3.0) for the attention cache and the CLI.
//!
//! Writing produces exactly what `np.save` writes for a C-order `<f4` array: version 1.0, the
//! header dict `{'descr': '<f4', 'fortran_order': False, 'shape': (…), }` with numpy's spare
//! space for growing the first axis, padded so the data starts at a multiple of 64 bytes.
//! Reading accepts `<f4`/`>f4`/`<f8`/`>f8`, either memory order, and versions 1–3.

use std::path::Path;

use super::write_atomic;
use crate::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy `GROWTH_AXIS_MAX_DIGITS`: header space reserved so the first axis can grow in place.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
const ARRAY_ALIGN: usize = 64;

/// Values of an `.npy` file, in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// An array read from an `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

impl NpyArray {
    /// The values as f32 (f64 files are rounded).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// numpy's dtype name of the data (`float32` or `float64`).
    pub fn dtype(&self) -> &'static str {
        match self.data {
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
        }
    }
}

/// The `.npy` bytes `np.save` writes for a C-order float32 array of `shape` (the buffer is
/// allocated fallibly: an [`Error::OutOfMemory`] when it cannot be had).
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Result<Vec<u8>> {
    let mut bytes = encode_header(shape, "<f4", values.len() * 4)?;
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(bytes)
}

/// The `.npy` bytes `np.save` writes for a C-order float64 array of `shape` (allocated fallibly).
pub fn encode_f64(shape: &[usize], values: &[f64]) -> Result<Vec<u8>> {
    let mut bytes = encode_header(shape, "<f8", values.len() * 8)?;
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(bytes)
}

fn encode_header(shape: &[usize], descr: &str, data_bytes: usize) -> Result<Vec<u8>> {
    let shape_repr = match shape {
        [one] => format!("({one},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = shape.first() {
        header.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.to_string().len())));
    }
    // magic (6) + version (2) + header length (2) + header + '\n', padded to ARRAY_ALIGN.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    let pad = ARRAY_ALIGN - unpadded % ARRAY_ALIGN;
    let header_len = header.len() + pad + 1;
    let what = format!("the bytes of a {shape:?} .npy array");
    let mut bytes = crate::model::memory::try_with_capacity(unpadded + pad + data_bytes, &what)?;
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header_len as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(b' ', pad));
    bytes.push(b'\n');
    Ok(bytes)
}

/// Write `values` (C order, `shape`) as a float32 `.npy` file, atomically (temporary file in
/// the same directory, fsync, rename).
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    if shape.iter().product::<usize>() != values.len() {
        return Err(Error::invalid(format!(
            "{}: {} values for shape {shape:?}",
            path.display(),
            values.len()
        )));
    }
    write_atomic(path, &encode_f32(shape, values)?)
}

/// Write `values` (C order, `shape`) as a float64 `.npy` file, atomically.
pub fn write_f64(path: &Path, shape: &[usize], values: &[f64]) -> Result<()> {
    if shape.iter().product::<usize>() != values.len() {
        return Err(Error::invalid(format!(
            "{}: {} values for shape {shape:?}",
            path.display(),
            values.len()
        )));
    }
    write_atomic(path, &encode_f64(shape, values)?)
}

/// Read an `.npy` file of float32 or float64 values.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = super::read_bounded(path, super::INPUT_LIMIT)?;
    decode(&bytes).map_err(|what| Error::format(path, what))
}

/// Parse `.npy` bytes; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an .npy file (missing the \\x93NUMPY magic)".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy format version {v}.{}", bytes[7])),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .ok_or_else(|| "truncated .npy header".to_string())?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text".to_string())?;
    let descr = header_value(header, "descr").ok_or("the .npy header has no 'descr'")?;
    let fortran = header_value(header, "fortran_order").ok_or("the .npy header has no 'fortran_order'")?;
    let shape = header_value(header, "shape").ok_or("the .npy header has no 'shape'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = match fortran {
        "False" => false,
        "True" => true,
        other => return Err(format!("bad fortran_order {other}")),
    };
    let shape: Vec<usize> = shape
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| format!("bad shape entry `{s}`")))
        .collect::<std::result::Result<_, _>>()?;
    // Shapes come from the file: a product that overflows is an error, not a wrapped count.
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more elements than memory can address"))?;
    let payload = &bytes[data_start..];
    let (width, little) = match descr {
        "<f4" | "=f4" => (4, true),
        ">f4" => (4, false),
        "<f8" | "=f8" => (8, true),
        ">f8" => (8, false),
        other => return Err(format!("dtype `{other}` is not supported (expected float32 or float64)")),
    };
    let needed = count.checked_mul(width).ok_or_else(|| format!("shape {shape:?} of {descr} overflows the byte count"))?;
    if payload.len() != needed {
        return Err(format!("data has {} bytes, shape {shape:?} of {descr} needs {needed}", payload.len()));
    }
    // The values' buffer is allocated fallibly: an entry too large for the memory left is an
    // error with its size, not an abort.
    let what = format!("the values of a {shape:?} {descr} array");
    let data = if width == 4 {
        let mut values: Vec<f32> = crate::model::memory::try_with_capacity(count, &what).map_err(|e| e.to_string())?;
        values.extend(payload.chunks_exact(4).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            if little { f32::from_le_bytes(b) } else { f32::from_be_bytes(b) }
        }));
        NpyData::F32(if fortran { fortran_to_c(&values, &shape) } else { values })
    } else {
        let mut values: Vec<f64> = crate::model::memory::try_with_capacity(count, &what).map_err(|e| e.to_string())?;
        values.extend(payload.chunks_exact(8).map(|b| {
            let b: [u8; 8] = b.try_into().expect("chunk of 8");
            if little { f64::from_le_bytes(b) } else { f64::from_be_bytes(b) }
        }));
        NpyData::F64(if fortran { fortran_to_c(&values, &shape) } else { values })
    };
    Ok(NpyArray { shape, data })
}

/// The raw text of `key`'s value in a numpy header dict (`{'descr': '<f4', ...}`).
fn header_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Reorder column-major values of `shape` into row-major order.
fn fortran_to_c<T: Copy + Default>(values: &[T], shape: &[usize]) -> Vec<T> {
    let mut out = vec![T::default(); values.len()];
    let mut index = vec![0usize; shape.len()];
    for slot in out.iter_mut() {
        // Column-major offset of the current row-major multi-index.
        let mut offset = 0;
        let mut stride = 1;
        for (&i, &d) in index.iter().zip(shape) {
            offset += i * stride;
            stride *= d;
        }
        *slot = values[offset];
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_like_numpy() {
        let bytes = encode_f32(&[144, 144], &vec![0.0; 144 * 144]).unwrap();
        assert_eq!(bytes.len() - 144 * 144 * 4, 128, "np.save header for N=144 is 128 bytes");
        let back = decode(&bytes).unwrap();
        assert_eq!(back.shape, vec![144, 144]);
    }

    #[test]
    fn fortran_order_is_transposed_back() {
        // 2×3 matrix [[1,2,3],[4,5,6]] stored column-major.
        let c = fortran_to_c(&[1, 4, 2, 5, 3, 6], &[2, 3]);
        assert_eq!(c, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_shape_whose_element_count_overflows_is_an_error() {
        // 2^32 · 2^32 wraps to 0 in 64 bits: with no data bytes the sizes would "match".
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(err.contains("4294967296"), "{err}");
    }
}
