//! Weight matrices kept at the precision the checkpoint stores them in: f32, bf16 or
//! f16 tensors from safetensors, and GGUF's quantised blocks. A 4B-parameter model is 16 GB in f32
//! and 8 GB in bf16; a 14B model in Q8_0 is 15 GB, so converting at load decides whether the
//! seeds' models fit on a 24 GB machine at all.
//!
//! Rows are converted to f32 where they are used (`StoredMatrix::rows_f32`), by the same
//! conversion functions a load-time conversion runs (`half`'s exact widening, candle's
//! `GgmlType::to_float` per block), and the arithmetic stays f32: results equal the
//! dequantise-at-load path bit for bit.

use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QTensor};
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

use crate::{Error, Result};

/// How a checkpoint's weight matrices are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightPrecision {
    /// As stored: bf16/f16 stay 2 bytes per weight, GGUF blocks stay quantised (CPU only; on a
    /// GPU every weight is converted to f32 at load).
    #[default]
    Stored,
    /// Every weight converted to f32 at load (the older path; 4 bytes per weight).
    F32,
}
crate::named_values!(WeightPrecision, "weight precision", { Stored => "stored", F32 => "f32" });

/// GGUF block types kept quantised. Others (Q8_1, Q8_K: llama.cpp's activation formats) are
/// refused by name.
pub(crate) const KEPT_GGUF_TYPES: &[GgmlDType] = &[
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// A weight matrix `[out, in]` (one row per output feature), as stored.
#[derive(Debug, Clone)]
pub enum StoredMatrix {
    /// f32 on the model's device.
    F32(Tensor),
    /// bf16 or f16, on the CPU.
    Half(Tensor),
    /// GGUF blocks (each row a whole number of blocks), on the CPU.
    Quantized(Arc<QTensor>),
    /// bf16 or f16 rows in a memory-mapped safetensors file.
    Mapped(Arc<MappedHalf>),
}

/// A bf16/f16 matrix `[out, in]` read in place from a memory-mapped safetensors file: nothing is
/// copied at load, and processes mapping one file share its pages (tasks of a batch job on one
/// node hold one copy of the weights).
#[derive(Debug)]
pub struct MappedHalf {
    map: Arc<memmap2::Mmap>,
    /// Byte range of the matrix in the file.
    start: usize,
    dtype: DType,
    dims: (usize, usize),
}

impl MappedHalf {
    /// Every rank-2 bf16/f16 tensor of the safetensors `file`, by name, mapped (the header is
    /// checked: offsets inside the file, sizes matching shapes).
    pub(crate) fn map_file(file: &std::path::Path) -> Result<std::collections::HashMap<String, Arc<MappedHalf>>> {
        let handle = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        // SAFETY: the map is read-only; a file truncated or rewritten while mapped is the same
        // hazard candle's own loader (which maps too) accepts.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| Error::io(file, e))?);
        let (data_start, tensors) = super::safetensors_header::parse_safetensors_header(&map, file)?;
        let mut matrices = std::collections::HashMap::new();
        for tensor in tensors {
            let dtype = match tensor.dtype.as_str() {
                "BF16" => DType::BF16,
                "F16" => DType::F16,
                _ => continue,
            };
            let [out, inp] = tensor.shape[..] else { continue };
            let name = &tensor.name;
            let Some((begin, end)) = tensor.offsets else {
                return Err(Error::format(file, format!("tensor `{name}`: field `data_offsets` is not two offsets")));
            };
            let bytes = out.checked_mul(inp).and_then(|n| n.checked_mul(2));
            if bytes != end.checked_sub(begin) || data_start + end > map.len() {
                return Err(Error::format(
                    file,
                    format!("tensor `{name}`: field `data_offsets` [{begin}, {end}] does not hold [{out}, {inp}] {dtype:?} inside the file"),
                ));
            }
            matrices.insert(name.clone(), Arc::new(MappedHalf { map: map.clone(), start: data_start + begin, dtype, dims: (out, inp) }));
        }
        Ok(matrices)
    }

    fn rows_f32(&self, rows: Range<usize>, out: &mut [f32]) {
        let n_in = self.dims.1;
        let bytes = &self.map[self.start + rows.start * n_in * 2..self.start + rows.end * n_in * 2];
        let widen: fn(u16) -> f32 = match self.dtype {
            DType::BF16 => |bits| bf16::from_bits(bits).to_f32(),
            _ => |bits| f16::from_bits(bits).to_f32(),
        };
        for (y, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *y = widen(u16::from_le_bytes([pair[0], pair[1]]));
        }
    }
}

impl StoredMatrix {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        let dims = match self {
            StoredMatrix::F32(t) | StoredMatrix::Half(t) => t.dims(),
            StoredMatrix::Quantized(q) => q.shape().dims(),
            StoredMatrix::Mapped(m) => return m.dims,
        };
        (dims[0], dims[1])
    }

    /// The stored element type: `f32`, `bf16`, `f16`, `q4_1`, `q8_0`, `q4_k`, ...
    pub(crate) fn dtype_name(&self) -> String {
        match self {
            StoredMatrix::F32(_) => "f32".into(),
            StoredMatrix::Half(t) => t.dtype().as_str().into(),
            StoredMatrix::Quantized(q) => ggml_name(q.dtype()),
            StoredMatrix::Mapped(m) => format!("{} (mapped)", m.dtype.as_str()),
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match self {
            StoredMatrix::F32(t) | StoredMatrix::Half(t) => t.elem_count() * t.dtype().size_in_bytes(),
            StoredMatrix::Quantized(q) => q.storage_size_in_bytes(),
            StoredMatrix::Mapped(m) => m.dims.0 * m.dims.1 * 2,
        }
    }

    /// Whether both share one storage (a tied LM head).
    pub(crate) fn shares_storage_with(&self, other: &StoredMatrix) -> bool {
        match (self, other) {
            (StoredMatrix::F32(a), StoredMatrix::F32(b)) | (StoredMatrix::Half(a), StoredMatrix::Half(b)) => a.id() == b.id(),
            (StoredMatrix::Quantized(a), StoredMatrix::Quantized(b)) => Arc::ptr_eq(a, b),
            (StoredMatrix::Mapped(a), StoredMatrix::Mapped(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The f32 tensor when the matrix is stored in f32.
    pub(crate) fn as_f32(&self) -> Option<&Tensor> {
        match self {
            StoredMatrix::F32(t) => Some(t),
            _ => None,
        }
    }

    /// Rows `rows` converted to f32 into `out` (`rows.len() × in`, row-major).
    pub(crate) fn rows_f32(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        let (n_out, n_in) = self.dims();
        if rows.end > n_out || out.len() != rows.len() * n_in {
            return Err(Error::invalid(format!(
                "stored matrix [{n_out}, {n_in}]: rows {rows:?} into a buffer of {} values",
                out.len()
            )));
        }
        match self {
            StoredMatrix::F32(t) => {
                let t = t.narrow(0, rows.start, rows.len())?.flatten_all()?.to_device(&Device::Cpu)?;
                out.copy_from_slice(&t.to_vec1::<f32>()?);
            }
            StoredMatrix::Half(t) => {
                let (storage, layout) = t.storage_and_layout();
                let (candle_core::Storage::Cpu(cpu), Some((start, _))) = (&*storage, layout.contiguous_offsets())
                else {
                    return Err(Error::invalid("stored matrix: expected a contiguous CPU tensor"));
                };
                let (from, to) = (start + rows.start * n_in, start + rows.end * n_in);
                match t.dtype() {
                    DType::BF16 => widen(&cpu.as_slice::<bf16>()?[from..to], out, bf16::to_f32),
                    DType::F16 => widen(&cpu.as_slice::<f16>()?[from..to], out, f16::to_f32),
                    other => return Err(Error::invalid(format!("stored matrix: unexpected dtype {other:?}"))),
                }
            }
            StoredMatrix::Mapped(m) => m.rows_f32(rows, out),
            StoredMatrix::Quantized(q) => {
                let data = q.data()?;
                let row_bytes = n_in / q.dtype().block_size() * q.dtype().type_size();
                let bytes = &data[rows.start * row_bytes..rows.end * row_bytes];
                // Q4_1 and Q8_0 in vector registers (the same values), other types by candle.
                if !crate::dequant::blocks_to_f32(q.dtype(), bytes, out) {
                    dequantize_blocks(q.dtype(), bytes, out)?;
                }
            }
        }
        Ok(())
    }

    /// The whole matrix as an f32 tensor on `device` (for the paths without this crate's kernels,
    /// and for readers of the embedding or unembedding).
    pub fn to_f32(&self, device: &Device) -> Result<Tensor> {
        if let StoredMatrix::F32(t) = self {
            return Ok(t.to_device(device)?);
        }
        let (n_out, n_in) = self.dims();
        let mut values = vec![0f32; n_out * n_in];
        self.rows_f32(0..n_out, &mut values)?;
        Ok(Tensor::from_vec(values, (n_out, n_in), &Device::Cpu)?.to_device(device)?)
    }

    /// Rows `ids` as an f32 tensor `[ids.len(), in]` on `device` (an embedding lookup).
    pub fn select_rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        if let StoredMatrix::F32(t) = self {
            let idx = Tensor::new(ids, t.device())?;
            return Ok(t.index_select(&idx, 0)?.to_device(device)?);
        }
        let n_in = self.dims().1;
        let mut values = vec![0f32; ids.len() * n_in];
        for (row, &id) in values.chunks_mut(n_in.max(1)).zip(ids) {
            self.rows_f32(id as usize..id as usize + 1, row)?;
        }
        Ok(Tensor::from_vec(values, (ids.len(), n_in), &Device::Cpu)?.to_device(device)?)
    }
}

fn widen<T: Copy>(from: &[T], to: &mut [f32], convert: fn(T) -> f32) {
    for (y, &x) in to.iter_mut().zip(from) {
        *y = convert(x);
    }
}

/// Decode GGUF blocks of type `dtype` in `bytes` to `out` with candle's own `to_float`.
fn dequantize_blocks(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    fn run<T: GgmlType>(bytes: &[u8], out: &mut [f32]) -> Result<()> {
        let size = std::mem::size_of::<T>();
        if bytes.len() % size != 0 || bytes.as_ptr() as usize % std::mem::align_of::<T>() != 0 {
            return Err(Error::invalid("quantised rows: misaligned block data"));
        }
        if bytes.len() / size * T::BLCK_SIZE != out.len() {
            return Err(Error::invalid("quantised rows: block count does not match the row length"));
        }
        // SAFETY: the bytes are a `QTensor`'s typed block vector (or a slice of whole blocks of
        // it), alignment and length checked above; every bit pattern is a valid block (plain
        // integers and f16 scales).
        let blocks = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) };
        T::to_float(blocks, out);
        Ok(())
    }
    match dtype {
        GgmlDType::F16 => run::<f16>(bytes, out),
        GgmlDType::BF16 => run::<bf16>(bytes, out),
        GgmlDType::Q4_0 => run::<BlockQ4_0>(bytes, out),
        GgmlDType::Q4_1 => run::<BlockQ4_1>(bytes, out),
        GgmlDType::Q5_0 => run::<BlockQ5_0>(bytes, out),
        GgmlDType::Q5_1 => run::<BlockQ5_1>(bytes, out),
        GgmlDType::Q8_0 => run::<BlockQ8_0>(bytes, out),
        GgmlDType::Q2K => run::<BlockQ2K>(bytes, out),
        GgmlDType::Q3K => run::<BlockQ3K>(bytes, out),
        GgmlDType::Q4K => run::<BlockQ4K>(bytes, out),
        GgmlDType::Q5K => run::<BlockQ5K>(bytes, out),
        GgmlDType::Q6K => run::<BlockQ6K>(bytes, out),
        other => Err(Error::invalid(format!("GGUF type {} is not kept quantised", ggml_name(other)))),
    }
}

/// llama.cpp's lower-case name of a GGUF type (`q4_k`, `q8_0`, `bf16`).
pub(crate) fn ggml_name(dtype: GgmlDType) -> String {
    let name = format!("{dtype:?}").to_ascii_lowercase();
    match name.strip_suffix('k') {
        Some(stem) if stem.starts_with('q') && !stem.ends_with('_') => format!("{stem}_k"),
        _ => name,
    }
}

/// Reorder the rows of a quantised matrix (`order[i]` = the source row of row `i`), moving whole
/// rows of blocks: used to undo llama.cpp's Q/K permutation without dequantising.
pub(crate) fn permute_quantized_rows(q: &QTensor, order: &[usize]) -> Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let (n_out, n_in) = (dims[0], dims[1]);
    if order.len() != n_out {
        return Err(Error::invalid(format!("row order of {} for {n_out} rows", order.len())));
    }
    let row_bytes = n_in / q.dtype().block_size() * q.dtype().type_size();
    let data = q.data()?;
    let mut permuted = Vec::with_capacity(data.len());
    for &source in order {
        permuted.extend_from_slice(&data[source * row_bytes..(source + 1) * row_bytes]);
    }
    let storage = candle_core::quantized::QStorage::from_data(std::borrow::Cow::Owned(permuted), &Device::Cpu, q.dtype())?;
    Ok(QTensor::new(storage, dims)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_names_are_llama_cpp_s() {
        assert_eq!(ggml_name(GgmlDType::Q4K), "q4_k");
        assert_eq!(ggml_name(GgmlDType::Q8_0), "q8_0");
        assert_eq!(ggml_name(GgmlDType::Q4_1), "q4_1");
        assert_eq!(ggml_name(GgmlDType::BF16), "bf16");
        assert_eq!(ggml_name(GgmlDType::F16), "f16");
    }

    #[test]
    fn quantised_rows_equal_candle_dequantize_and_permute_moves_rows() {
        let (n_out, n_in) = (6, 256);
        let values: Vec<f32> = (0..n_out * n_in).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1).collect();
        let dense = Tensor::from_vec(values, (n_out, n_in), &Device::Cpu).unwrap();
        for dtype in KEPT_GGUF_TYPES {
            let q = QTensor::quantize(&dense, *dtype).unwrap();
            let expected = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            let stored = StoredMatrix::Quantized(Arc::new(q));
            let mut rows = vec![0f32; 2 * n_in];
            stored.rows_f32(3..5, &mut rows).unwrap();
            assert_eq!(rows[..n_in], expected[3][..], "{dtype:?}");
            assert_eq!(rows[n_in..], expected[4][..], "{dtype:?}");
            let StoredMatrix::Quantized(q) = &stored else { unreachable!() };
            let order = [5, 4, 3, 2, 1, 0];
            let permuted = permute_quantized_rows(q, &order).unwrap().dequantize(&Device::Cpu).unwrap();
            let permuted = permuted.to_vec2::<f32>().unwrap();
            for (i, &source) in order.iter().enumerate() {
                assert_eq!(permuted[i], expected[source], "{dtype:?} row {i}");
            }
        }
    }

    #[test]
    fn half_rows_widen_exactly() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 2.0).collect();
        let t = Tensor::from_vec(values, (3, 4), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
        let expected = t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        let stored = StoredMatrix::Half(t);
        let mut row = vec![0f32; 4];
        stored.rows_f32(1..2, &mut row).unwrap();
        assert_eq!(row, expected[1]);
        assert_eq!(stored.to_f32(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap(), expected);
        assert_eq!(stored.bytes(), 24);
    }
}
