//! The CPU kernels under the decoder, kept apart so `decoder.rs` reads as a model file.
//!
//! - [`sgemm`]: the packed f32 GEMM, one kernel set per ISA (AVX-512F, AVX2 with FMA).
//! - `few_rows`: the one-pass products of decode steps (a few rows, each weight row read once
//!   for all of them), summed in f64 in an order that does not depend on the number of rows
//!   (their GGUF blocks converted by the weight store, in vector registers).
//! - `vector`: `e^x`, softmax rows and `silu(g) · u`, scalar and in SIMD (same arithmetic).
//! - `activations`: RMSNorm (alone or after the residual add) and the split into heads (with
//!   RoPE), one parallel pass each.
//! - `mlp`: the gated MLP in chunks of rows (gate, up, SiLU·up and down per chunk, in cache).
//! - `attention`: causal attention over query blocks (scores, softmax, the sink, `P·V`) and over
//!   a few decode rows.
//!
//! The decoder calls `linear`, `silu_mul`, `attend`, `scaled_causal_softmax` and the
//! activation passes (`rms_norm`, `add_rms_norm`, `split_heads`). Each takes the kernels
//! where they apply (f32 on a CPU with AVX2 and FMA or AVX-512F) and candle's ops (or the scalar
//! code) elsewhere (the activation passes return `None` there), so the crate runs on any
//! machine. Each also takes the model's [`Kernels`]: [`Kernels::portable`] forces the fallback.

mod activations;
mod attention;
pub mod blas;
mod few_rows;
mod mlp;
pub mod phases;
pub mod sgemm;
mod vector;

use candle_core::{DType, Tensor};

pub(crate) use activations::{add_rms_norm, rms_norm, split_heads};
pub(crate) use attention::{attend, non_finite_scores, scaled_causal_softmax};
pub(crate) use mlp::{gated_mlp, mlp_block};
use sgemm::MatRef;
pub use vector::add_widened;
pub(crate) use vector::silu_mul;

use super::stored::StoredMatrix;
#[cfg(test)]
pub(crate) use crate::isa::skip_hardware;
pub use crate::isa::avx512_enabled;
pub(crate) use crate::isa::{avx512_allowed, fix_avx512};
use crate::{Error, Result};

/// How a model's forward passes run on the CPU: which kernels, how stored weights are converted,
/// and whether the phases are timed. Part of [`Settings`](crate::Settings); a [`Model`](crate::Model)
/// holds its own ([`Model::set_kernels`](crate::Model::set_kernels)), so two models in one process
/// may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    /// candle's matmul and the scalar softmax and SiLU instead of this crate's SIMD kernels,
    /// whatever the CPU has: for telling a kernel bug from a model bug, and for testing the
    /// portable path on machines with the kernels.
    pub portable: bool,
    /// Bytes of f32 per band of a weight kept at its stored precision, converted for a product:
    /// about 8 MiB is cache-sized yet wide enough that the GEMM's packing is amortised (tests
    /// make bands narrow; results are the same for any size).
    pub band_bytes: usize,
    /// Time the forward's phases into [`phases`] (the forward bench's breakdown). Off: each timed
    /// site costs one branch and no clock read.
    pub phase_timing: bool,
}

impl Default for Kernels {
    fn default() -> Self {
        Kernels { portable: false, band_bytes: 8 << 20, phase_timing: false }
    }
}

/// Whether products with `x` take [`sgemm`]'s kernels: f32 on a CPU that has them (AVX-512F, or
/// AVX2 and FMA). Decode steps take the one-pass kernels ([`one_pass`]), everything else the
/// packed GEMM, whose packing those rows amortise.
fn kernels_apply(kernels: Kernels, x: &Tensor) -> bool {
    !kernels.portable && x.device().is_cpu() && x.dtype() == DType::F32 && sgemm::available()
}

/// Whether a product with `x` `[.., in]` (`rows` rows) takes the one-pass kernels: below
/// [`sgemm::FEW_ROWS`] rows, or one position per sequence (`[B, 1, in]`, a decode step over a
/// batch of any size). Their sums do not depend on the number of rows, so every sequence of a
/// batched decode step gets what it would alone.
fn one_pass(x: &Tensor, rows: usize) -> bool {
    rows < sgemm::FEW_ROWS || (x.rank() == 3 && x.dims()[1] == 1)
}

/// Run `f` on the f32 data of a contiguous CPU tensor.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Err(Error::invalid("expected a contiguous CPU tensor"));
    };
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}

/// `x · wᵀ (+ bias)` for `x` `[.., in]` and a weight `[out, in]`, as `candle_nn::Linear` computes it.
/// A weight kept at its stored precision is converted to f32 a band of rows at a time into a
/// reused buffer, and each band runs the same kernels as an f32 weight: results are bit for bit
/// those of converting at load.
pub(crate) fn linear(kernels: Kernels, x: &Tensor, weight: &StoredMatrix, bias: Option<&Tensor>) -> Result<Tensor> {
    let started = phases::start(kernels);
    let (out_dim, in_dim) = weight.dims();
    let rows = x.elem_count() / in_dim.max(1);
    // Decode steps (few rows) read the weights once for all rows: candle's matmul is
    // compute-bound there (a SmolLM2 decode step took 86 ms for one row and 237 ms for seven
    // through candle, 54 and 154 ms with the one-pass kernels and `attend_few_rows` on 2 AVX2 cores).
    let fast = rows > 0 && kernels_apply(kernels, x) && x.dim(x.rank() - 1)? == in_dim;
    let y = if fast {
        let x = x.contiguous()?;
        let mut out = vec![0f32; rows * out_dim];
        let product = |xs: &[f32], ws: &[f32], out: &mut [f32], n: usize| {
            let (a, b) = (MatRef::row_major(xs, in_dim), MatRef::transposed(ws, in_dim));
            sgemm::matmul(a, b, out, rows, n, in_dim, out_dim)
        };
        with_cpu_f32(&x, |xs| -> Result<()> {
            if one_pass(&x, rows) {
                return few_rows::linear_few_rows(xs, rows, weight, &mut out);
            }
            match weight.as_f32() {
                Some(w) => with_cpu_f32(w, |ws| product(xs, ws, &mut out, out_dim)),
                None => {
                    let band = stored_band_rows(kernels.band_bytes, in_dim, out_dim);
                    STORED_BAND.with(|buffer| -> Result<()> {
                        let mut buffer = buffer.borrow_mut();
                        for first in (0..out_dim).step_by(band) {
                            let n = band.min(out_dim - first);
                            buffer.resize(n * in_dim, 0.0);
                            convert_rows(weight, first, &mut buffer[..n * in_dim], in_dim)?;
                            product(xs, &buffer[..n * in_dim], &mut out[first..], n);
                        }
                        Ok(())
                    })
                }
            }
        })??;
        let mut shape = x.dims().to_vec();
        *shape.last_mut().expect("rank >= 1") = out_dim;
        Tensor::from_vec(out, shape, x.device())?
    } else {
        let w = weight.to_f32(x.device())?;
        x.broadcast_matmul(&w.t()?)?
    };
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    phases::record(phases::Site::Linear, started, 2 * (rows * out_dim * in_dim) as u64);
    Ok(y)
}

thread_local! {
    /// The f32 rows of a stored weight being multiplied (one band, reused across calls).
    static STORED_BAND: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows `first..` of `weight` into `rows` (whole rows of `in_dim`), split across rayon's threads:
/// the conversion is a few percent of the product, and on one thread it would leave the others idle.
fn convert_rows(weight: &StoredMatrix, first: usize, rows: &mut [f32], in_dim: usize) -> Result<()> {
    use rayon::prelude::*;
    const ROWS_PER_TASK: usize = 16;
    rows.par_chunks_mut(ROWS_PER_TASK * in_dim).enumerate().try_for_each(|(task, chunk)| {
        let start = first + task * ROWS_PER_TASK;
        weight.rows_f32(start..start + chunk.len() / in_dim, chunk)
    })
}

/// Rows of a stored weight converted per band: about `band_bytes` of f32 ([`Kernels::band_bytes`]),
/// a multiple of 64 rows.
fn stored_band_rows(band_bytes: usize, in_dim: usize, out_dim: usize) -> usize {
    let rows = band_bytes / (4 * in_dim.max(1));
    (rows / 64 * 64).max(64).min(out_dim.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The kernel path and candle's matmul give the same linear layer, for decode rows and for
    /// the packed GEMM, with a bias.
    #[test]
    fn linear_kernels_match_candle() {
        if !sgemm::available() {
            skip_hardware("linear_kernels_match_candle", "neither AVX-512F nor AVX2 with FMA on this CPU");
            return;
        }
        let (out_dim, in_dim) = (70, 130);
        let w: Vec<f32> = (0..out_dim * in_dim).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        let w = Tensor::from_vec(w, (out_dim, in_dim), &Device::Cpu).unwrap();
        let bias = Tensor::arange(0f32, out_dim as f32, &Device::Cpu).unwrap();
        // Bands of 64 rows: the 70 outputs take two.
        let kernels = Kernels { band_bytes: 1, ..Kernels::default() };
        for rows in [1, 5, sgemm::FEW_ROWS, 40] {
            let x: Vec<f32> = (0..rows * in_dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let x = Tensor::from_vec(x, (1, rows, in_dim), &Device::Cpu).unwrap();
            let want = x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&bias).unwrap();
            let got = linear(kernels, &x, &StoredMatrix::F32(w.clone()), Some(&bias)).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got.clone() - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{rows} rows: max difference {diff}");
            // Kept in bf16 and converted band by band, the product equals the f32 product of the converted weight bit for bit.
            let w_bf16 = w.to_dtype(DType::BF16).unwrap();
            let widened = StoredMatrix::F32(w_bf16.to_dtype(DType::F32).unwrap());
            let want = linear(kernels, &x, &widened, Some(&bias)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = linear(kernels, &x, &StoredMatrix::Half(w_bf16.clone()), Some(&bias)).unwrap();
            assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want, "{rows} rows, bf16");
        }
    }
}
