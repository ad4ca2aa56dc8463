//! The gated MLP, `down(silu(gate(x)) · up(x))`, in chunks of rows: each chunk's gate and up
//! products, SiLU·up and down product run back to back on one thread while the chunk's
//! intermediates are in its core's cache; `mlp_block` also takes the residual add and norm
//! before the MLP and after it into the chunk. Unchunked, a 3k-token SmolLM2 layer writes 55 MB
//! of MLP intermediates (gate, up, their product) and 28 MB of residual sums and norms to memory
//! and reads them back. The weights are packed once per call, in the depth blocks
//! [`linear`](super::linear) uses, and the adds and norms are [`add_rms_norm`](super::add_rms_norm)'s
//! arithmetic, so every value is the unchunked path's to the bit.

use candle_core::Tensor;
use rayon::prelude::*;

use super::activations::add_norm_rows;
use super::phases::{self, Site};
use super::sgemm::{self, MatRef, PackedB};
use super::vector::silu_mul_row;
use super::{convert_rows, kernels_apply, with_cpu_f32, Kernels};
use crate::stored::StoredMatrix;
use crate::Result;

/// Largest packed MLP weights (the three together, f32) for the chunked path. Every chunk reads
/// all three, so they must stay in L3 (32 MiB per Zen 5 CCD, shared with the VM's neighbours):
/// SmolLM2's 10.6 MB do; Qwen3-4B's 299 MB streamed from memory for every chunk and took its
/// 3k-token forward from 72 s to 98 s. Larger models keep the unchunked path, where each packed
/// band of a weight serves all rows at once.
const MAX_PACKED_BYTES: usize = 16 << 20;

/// Rows per chunk: the chunk's intermediates (`3 × rows × intermediate` floats: 1.8 MB for
/// SmolLM2) stay in L2/L3, and each packed weight panel read from L3 serves eight row tiles.
/// 48, 96 and 192 measured alike on a 3k-token SmolLM2 forward (two Zen 5 cores).
const CHUNK_ROWS: usize = 96;

/// One chunk's intermediates, reused by the next chunk on the same thread.
#[derive(Default)]
struct Scratch {
    /// Gate, up and SiLU·up.
    mlp: Vec<f32>,
    /// [`mlp_block`]'s residual sum before the MLP, its norm and the MLP's output.
    mid: Vec<f32>,
    normed: Vec<f32>,
    mlp_out: Vec<f32>,
}

std::thread_local! {
    static CHUNK: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The gate, up and down weights packed for the kernels.
struct PackedMlp {
    gate: PackedB,
    up: PackedB,
    down: PackedB,
    d: usize,
    inter: usize,
    kernels: Kernels,
}

impl PackedMlp {
    /// `None` where the chunked path does not apply: the kernels do not (see
    /// [`linear`](super::linear)), the shapes disagree, the packed weights would not stay in
    /// cache ([`MAX_PACKED_BYTES`]), or there are fewer rows than `d` (decode steps and short
    /// prompts, where the three packed weights would hold more memory than the unchunked
    /// intermediates).
    fn for_input(kernels: Kernels, x: &Tensor, (gate, up, down): (&StoredMatrix, &StoredMatrix, &StoredMatrix)) -> Result<Option<Self>> {
        let (inter, d) = gate.dims();
        let rows = x.elem_count() / d.max(1);
        let fits = 3 * 4 * inter * d <= MAX_PACKED_BYTES;
        if !fits || up.dims() != (inter, d) || down.dims() != (d, inter) || !kernels_apply(kernels, x) || x.dim(x.rank() - 1)? != d || rows < d || super::one_pass(x, rows) {
            return Ok(None);
        }
        Ok(Some(PackedMlp { gate: pack(gate)?, up: pack(up)?, down: pack(down)?, d, inter, kernels }))
    }

    /// The MLP of `xs` (whole rows of `d`) into `out`, on the calling thread; `scratch` is
    /// resized to the chunk's intermediates.
    fn rows(&self, xs: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        let (d, inter) = (self.d, self.inter);
        let m = xs.len() / d;
        scratch.resize(3 * m * inter, 0.0);
        let (g, rest) = scratch.split_at_mut(m * inter);
        let (u, act) = rest.split_at_mut(m * inter);
        let a = MatRef::row_major(xs, d);
        sgemm::matmul_packed(a, &self.gate, g, m, inter, d, inter);
        sgemm::matmul_packed(a, &self.up, u, m, inter, d, inter);
        silu_mul_row(self.kernels, g, u, act);
        sgemm::matmul_packed(MatRef::row_major(act, inter), &self.down, out, m, d, inter, d);
    }

    fn flop(&self, rows: usize) -> u64 {
        (2 * rows * 3 * self.inter * self.d) as u64
    }
}

/// The MLP of `x` `[.., d]` with weights `gate`, `up` `[inter, d]` and `down` `[d, inter]` (no
/// biases), or `None` where the chunked path does not apply ([`PackedMlp::for_input`]).
pub(crate) fn gated_mlp(kernels: Kernels, x: &Tensor, gate: &StoredMatrix, up: &StoredMatrix, down: &StoredMatrix) -> Result<Option<Tensor>> {
    let started = phases::start(kernels);
    let Some(mlp) = PackedMlp::for_input(kernels, x, (gate, up, down))? else { return Ok(None) };
    let x = x.contiguous()?;
    let d = mlp.d;
    let mut out = vec![0f32; x.elem_count()];
    with_cpu_f32(&x, |xs| {
        out.par_chunks_mut(CHUNK_ROWS * d).zip(xs.par_chunks(CHUNK_ROWS * d)).for_each(|(out, xs)| {
            CHUNK.with_borrow_mut(|scratch| mlp.rows(xs, out, &mut scratch.mlp))
        })
    })?;
    let y = Tensor::from_vec(out, x.shape(), x.device())?;
    // SiLU·up runs inside this section: counted with the linear layers.
    phases::record(Site::Linear, started, mlp.flop(x.elem_count() / d));
    Ok(Some(y))
}

/// The rest of a pre-norm layer after its attention output `attn`, in chunks of rows:
/// `mid = x + attn`, `out = mid + mlp(post_norm(mid))` and `next = next_norm(out)`.
pub(crate) struct MlpBlock {
    /// The residual stream after the layer.
    pub out: Tensor,
    /// `next_norm(out)`: the next layer's input norm, or the final norm.
    pub next: Tensor,
    /// Whether every value of `mid` is finite.
    pub mid_finite: bool,
    /// Whether every value of `out` is finite.
    pub out_finite: bool,
}

/// [`MlpBlock`] for residual stream `x` and attention output `attn` (`[.., d]` each), norm
/// weights `post_norm` and `next_norm` `[d]` with epsilon `eps`, and the MLP's weights (no
/// biases); `None` where the chunked path does not apply ([`PackedMlp::for_input`], or a norm
/// weight not f32 on the CPU).
pub(crate) fn mlp_block(
    kernels: Kernels,
    x: &Tensor,
    attn: &Tensor,
    post_norm: &Tensor,
    weights: (&StoredMatrix, &StoredMatrix, &StoredMatrix),
    next_norm: &Tensor,
    eps: f32,
) -> Result<Option<MlpBlock>> {
    let started = phases::start(kernels);
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    // Every check before `for_input`, which packs the weights.
    let d = weights.0.dims().1;
    let norms_fit = post_norm.elem_count() == d && next_norm.elem_count() == d;
    if !norms_fit || x.shape() != attn.shape() || !f32_cpu(attn) || !f32_cpu(post_norm) || !f32_cpu(next_norm) {
        return Ok(None);
    }
    let Some(mlp) = PackedMlp::for_input(kernels, x, weights)? else { return Ok(None) };
    let (x, attn, post_norm, next_norm) = (x.contiguous()?, attn.contiguous()?, post_norm.contiguous()?, next_norm.contiguous()?);
    let n = x.elem_count();
    let (mut out, mut next) = (vec![0f32; n], vec![0f32; n]);
    let chunk = CHUNK_ROWS * d;
    let (mid_finite, out_finite) = with_cpu_f32(&x, |xs| {
        with_cpu_f32(&attn, |attn| {
            with_cpu_f32(&post_norm, |post_w| {
                with_cpu_f32(&next_norm, |next_w| {
                    out.par_chunks_mut(chunk)
                        .zip(next.par_chunks_mut(chunk))
                        .zip(xs.par_chunks(chunk).zip(attn.par_chunks(chunk)))
                        .map(|((out, next), (xs, attn))| {
                            CHUNK.with_borrow_mut(|scratch| {
                                let Scratch { mlp: mlp_scratch, mid, normed, mlp_out } = scratch;
                                for buffer in [&mut *mid, &mut *normed, &mut *mlp_out] {
                                    buffer.resize(xs.len(), 0.0);
                                }
                                let mid_finite = add_norm_rows(xs, attn, post_w, eps, mid, normed);
                                mlp.rows(normed, mlp_out, mlp_scratch);
                                (mid_finite, add_norm_rows(mid, mlp_out, next_w, eps, out, next))
                            })
                        })
                        .reduce(|| (true, true), |a, b| (a.0 && b.0, a.1 && b.1))
                })
            })
        })
    })????;
    let (out, next) = (Tensor::from_vec(out, x.shape(), x.device())?, Tensor::from_vec(next, x.shape(), x.device())?);
    // The adds, norms and SiLU·up run inside this section: counted with the linear layers.
    phases::record(Site::Linear, started, mlp.flop(n / d));
    Ok(Some(MlpBlock { out, next, mid_finite, out_finite }))
}

/// `wᵀ` of a weight `[out, in]`, converted to f32 if stored otherwise, packed for the kernels.
fn pack(w: &StoredMatrix) -> Result<PackedB> {
    let (out_dim, in_dim) = w.dims();
    match w.as_f32() {
        Some(t) => with_cpu_f32(&t.contiguous()?, |ws| sgemm::pack_like_matmul(MatRef::transposed(ws, in_dim), in_dim, out_dim)),
        None => {
            let mut rows = vec![0f32; out_dim * in_dim];
            convert_rows(w, 0, &mut rows, in_dim)?;
            Ok(sgemm::pack_like_matmul(MatRef::transposed(&rows, in_dim), in_dim, out_dim))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{linear, silu_mul};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Device;

    fn matrix(rows: usize, cols: usize, seed: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 4000.0 - 0.25).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    /// The chunked MLP gives the unchunked path's bits (gate and up products, SiLU·up, down
    /// product, each over all rows), with f32 weights and with GGUF blocks as stored, over
    /// several chunks and a partial last one; below `d` rows it declines.
    #[test]
    fn chunked_mlp_equals_the_unchunked_path_bit_for_bit() {
        if !sgemm::available() {
            super::super::skip_hardware("chunked_mlp_equals_the_unchunked_path_bit_for_bit", sgemm::NO_KERNELS);
            return;
        }
        // Depth 1056 for the down product: two depth blocks, as 1536 has in SmolLM2.
        let (d, inter, rows) = (64, 1056, 2 * CHUNK_ROWS + 37);
        let x = matrix(rows, d, 1).reshape((1, rows, d)).unwrap();
        let weights = [matrix(inter, d, 2), matrix(inter, d, 3), matrix(d, inter, 4)];
        let f32_weights = weights.clone().map(StoredMatrix::F32);
        let quantized = weights.map(|w| StoredMatrix::Quantized(std::sync::Arc::new(QTensor::quantize(&w, GgmlDType::Q4_1).unwrap())));
        for (name, [gate, up, down]) in [("f32", &f32_weights), ("q4_1", &quantized)] {
            let got = gated_mlp(Kernels::default(), &x, gate, up, down).unwrap().expect("the chunked path applies");
            let act = silu_mul(Kernels::default(), &linear(Kernels::default(), &x, gate, None).unwrap(), &linear(Kernels::default(), &x, up, None).unwrap()).unwrap();
            let want = linear(Kernels::default(), &act, down, None).unwrap();
            assert_eq!(got.dims(), want.dims());
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{name} weights");
            let short = x.narrow(1, 0, d - 1).unwrap();
            assert!(gated_mlp(Kernels::default(), &short, gate, up, down).unwrap().is_none(), "{name}: fewer rows than d");
        }
        // Weights too large to stay in cache while every chunk reads them: declined.
        let wide = MAX_PACKED_BYTES / (3 * 4 * d) + 1;
        let zeros = |r: usize, c: usize| StoredMatrix::F32(Tensor::zeros((r, c), candle_core::DType::F32, &Device::Cpu).unwrap());
        assert!(gated_mlp(Kernels::default(), &x, &zeros(wide, d), &zeros(wide, d), &zeros(d, wide)).unwrap().is_none(), "packed weights past the cache budget");
    }

    /// The rest of a layer in chunks (`mlp_block`) gives the unchunked sequence's bits: the
    /// residual add with its norm, the MLP, the second add with the next norm; a non-finite
    /// value in either sum is reported as such.
    #[test]
    fn chunked_block_equals_add_norm_mlp_add_norm_bit_for_bit() {
        if !sgemm::available() {
            super::super::skip_hardware("chunked_block_equals_add_norm_mlp_add_norm_bit_for_bit", sgemm::NO_KERNELS);
            return;
        }
        let (d, inter, rows, eps) = (64, 160, CHUNK_ROWS + 70, 1e-5f32);
        let x = matrix(rows, d, 1).reshape((1, rows, d)).unwrap();
        let attn = matrix(rows, d, 5).reshape((1, rows, d)).unwrap();
        let (post_w, next_w) = (matrix(1, d, 6).flatten_all().unwrap(), matrix(1, d, 7).flatten_all().unwrap());
        let weights = [matrix(inter, d, 2), matrix(inter, d, 3), matrix(d, inter, 4)].map(StoredMatrix::F32);
        let [gate, up, down] = &weights;
        let block = mlp_block(Kernels::default(), &x, &attn, &post_w, (gate, up, down), &next_w, eps).unwrap().expect("the chunked path applies");
        assert!(block.mid_finite && block.out_finite);
        let (mid, normed, finite) = crate::cpu::add_rms_norm(Kernels::default(), &x, &attn, &post_w, eps).unwrap().unwrap();
        assert!(finite);
        let act = silu_mul(Kernels::default(), &linear(Kernels::default(), &normed, gate, None).unwrap(), &linear(Kernels::default(), &normed, up, None).unwrap()).unwrap();
        let (out, next, _) = crate::cpu::add_rms_norm(Kernels::default(), &mid, &linear(Kernels::default(), &act, down, None).unwrap(), &next_w, eps).unwrap().unwrap();
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(&block.out), bits(&out), "residual stream");
        assert_eq!(bits(&block.next), bits(&next), "next norm");
        // An infinity in the attention output makes the first sum non-finite (and the second).
        let mut bad = attn.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        bad[(CHUNK_ROWS + 3) * d + 5] = f32::INFINITY;
        let bad = Tensor::from_vec(bad, (1, rows, d), &Device::Cpu).unwrap();
        let block = mlp_block(Kernels::default(), &x, &bad, &post_w, (gate, up, down), &next_w, eps).unwrap().unwrap();
        assert!(!block.mid_finite);
    }
}
