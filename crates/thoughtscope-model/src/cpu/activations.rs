//! The decoder's element-wise passes over activations on the CPU, each one parallel pass:
//! RMSNorm (alone or fused with the residual add before it) and the split into heads (fused with
//! RoPE for q and k). candle's versions take one pass per step, and its strided copy for the
//! head split runs on one thread: together 0.28 s of a 3k-token SmolLM2 forward on 2 cores.
//!
//! The arithmetic is candle's, spelled out in the source (the RMSNorm sum in index order and a
//! division by the root, RoPE as `x·cos − y·sin`), so every pass gives the bits candle's ops
//! gave, with AVX-512, AVX2 or none.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::{with_cpu_f32, Kernels};
use crate::Result;

/// Whether these passes apply to `x`: f32 on the CPU, the portable path not forced.
fn applies(kernels: Kernels, x: &Tensor) -> bool {
    !kernels.portable && x.device().is_cpu() && x.dtype() == DType::F32
}

/// Rows per rayon task: about 64 KiB of output, so a pass over a few MiB splits evenly.
fn rows_per_task(row_len: usize) -> usize {
    (16 * 1024 / row_len.max(1)).max(1)
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension (HF's `LlamaRMSNorm` in f32).
/// `None` where these passes do not apply.
pub(crate) fn rms_norm(kernels: Kernels, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let applies = |t: &Tensor| applies(kernels, t);
    if !applies(x) || !applies(weight) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let n = x.dim(x.rank() - 1)?;
    let mut out = vec![0f32; x.elem_count()];
    with_cpu_f32(&x, |xs| {
        with_cpu_f32(weight, |w| {
            out.par_chunks_mut(rows_per_task(n) * n).zip(xs.par_chunks(rows_per_task(n) * n)).for_each(|(y, x)| {
                let _all_finite = dispatch_norm_rows(x, w, eps, y);
            })
        })
    })??;
    Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
}

/// `s = x + delta` and `rms_norm(s)` in one pass (a residual add and the next pre-norm), and
/// whether every value of `s` is finite. `None` where these passes do not apply.
pub(crate) fn add_rms_norm(kernels: Kernels, x: &Tensor, delta: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<(Tensor, Tensor, bool)>> {
    let applies = |t: &Tensor| applies(kernels, t);
    if !applies(x) || !applies(delta) || !applies(weight) || x.shape() != delta.shape() {
        return Ok(None);
    }
    let (x, delta) = (x.contiguous()?, delta.contiguous()?);
    let n = x.dim(x.rank() - 1)?;
    let (mut sum, mut normed) = (vec![0f32; x.elem_count()], vec![0f32; x.elem_count()]);
    let chunk = rows_per_task(n) * n;
    let finite = with_cpu_f32(&x, |xs| {
        with_cpu_f32(&delta, |ds| {
            with_cpu_f32(weight, |w| {
                sum.par_chunks_mut(chunk)
                    .zip(normed.par_chunks_mut(chunk))
                    .zip(xs.par_chunks(chunk).zip(ds.par_chunks(chunk)))
                    .map(|((s, y), (x, d))| add_norm_rows(x, d, w, eps, s, y))
                    .reduce(|| true, |a, b| a & b)
            })
        })
    })???;
    let (sum, normed) = (Tensor::from_vec(sum, x.shape(), x.device())?, Tensor::from_vec(normed, x.shape(), x.device())?);
    Ok(Some((sum, normed, finite)))
}

/// [`add_rms_norm`] on whole rows of slices, on the calling thread: `s = x + delta`, `y` the
/// RMSNorm of `s` with weight `w`; returns whether every value of `s` is finite.
pub(super) fn add_norm_rows(x: &[f32], delta: &[f32], w: &[f32], eps: f32, s: &mut [f32], y: &mut [f32]) -> bool {
    for ((s, &x), &d) in s.iter_mut().zip(x).zip(delta) {
        *s = x + d;
    }
    // A non-finite value makes a sum of squares non-finite; the converse (squares overflowing)
    // is told apart by a second look.
    dispatch_norm_rows(s, w, eps, y) || s.iter().all(|v| v.is_finite())
}

/// Rows of RMSNorm (`x` holds whole rows of `w.len()`) on the widest vector unit; returns
/// whether every row's sum of squares is finite.
fn dispatch_norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx512_enabled() {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { norm_rows_avx512(x, w, eps, y) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { norm_rows_avx2(x, w, eps, y) };
        }
    }
    norm_rows(x, w, eps, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn norm_rows_avx512(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) -> bool {
    norm_rows(x, w, eps, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn norm_rows_avx2(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) -> bool {
    norm_rows(x, w, eps, y)
}

/// [`norm_row`] over whole rows, eight at a time: each row's sum of squares is still one
/// in-order chain (candle's bits), but eight chains run side by side instead of one add's
/// latency per element (the sums were most of RMSNorm's time).
#[inline(always)]
fn norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) -> bool {
    const R: usize = 8;
    let n = w.len();
    let mut finite = true;
    let (mut xs, mut ys) = (x.chunks_exact(R * n), y.chunks_exact_mut(R * n));
    for (x, y) in (&mut xs).zip(&mut ys) {
        let rows: [&[f32]; R] = std::array::from_fn(|r| &x[r * n..(r + 1) * n]);
        let mut sums = [0f32; R];
        for i in 0..n {
            for (sum, row) in sums.iter_mut().zip(&rows) {
                *sum += row[i] * row[i];
            }
        }
        for ((x, y), sum2) in rows.iter().zip(y.chunks_exact_mut(n)).zip(sums) {
            finite &= sum2.is_finite();
            scale_row(x, w, eps, sum2, y);
        }
    }
    for (x, y) in xs.remainder().chunks_exact(n).zip(ys.into_remainder().chunks_exact_mut(n)) {
        finite &= norm_row(x, w, eps, y).is_finite();
    }
    finite
}

/// One row of RMSNorm: `x / sqrt(mean(x²) + eps) · w`, candle's arithmetic to the bit: the sum
/// of squares in index order, then a division by the root. The tiny CODI fixtures' logits sit
/// within 1e-5 of PyTorch's only just: a 16-lane sum, or multiplying by the inverse root as
/// HF's code reads, each pushed one of them past it (1.05e-5, 1.2e-5). Returns the sum of squares.
#[inline(always)]
fn norm_row(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) -> f32 {
    let sum2 = x.iter().map(|&v| v * v).sum::<f32>();
    scale_row(x, w, eps, sum2, y);
    sum2
}

/// `y = x / sqrt(sum2 / n + eps) · w`: the rest of [`norm_row`] once the sum of squares is known.
#[inline(always)]
fn scale_row(x: &[f32], w: &[f32], eps: f32, sum2: f32, y: &mut [f32]) {
    let root = (sum2 / x.len() as f32 + eps).sqrt();
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = x / root * w;
    }
}

/// `[B, L, H·d]` → `[B, H, L, d]`, on the way normalising each head's vector when `norm` gives
/// a per-head RMSNorm weight `[d]` and its epsilon (Qwen3's q/k norm, [`rms_norm`]'s arithmetic),
/// then rotating it by RoPE when `rope` gives the cos and sin tables `[L, d/2]` (rotate-half
/// convention, candle's arithmetic: `x₁·cos − x₂·sin`, `x₁·sin + x₂·cos`). One parallel pass
/// instead of a strided copy on one thread, a norm and a rotation. `None` where these passes do
/// not apply.
pub(crate) fn split_heads(
    kernels: Kernels,
    x: &Tensor,
    heads: usize,
    head_dim: usize,
    norm: Option<(&Tensor, f32)>,
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<Option<Tensor>> {
    let applies = |t: &Tensor| applies(kernels, t);
    if !applies(x) || rope.is_some_and(|(c, s)| !applies(c) || !applies(s)) || head_dim % 2 != 0 {
        return Ok(None);
    }
    if norm.is_some_and(|(w, _)| !applies(w) || w.elem_count() != head_dim) {
        return Ok(None);
    }
    let (b, seq, width) = x.dims3()?;
    if width != heads * head_dim || rope.is_some_and(|(c, _)| c.elem_count() != seq * head_dim / 2) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let half = head_dim / 2;
    let band = rows_per_task(head_dim);
    let mut out = vec![0f32; x.elem_count()];
    let mut run = |xs: &[f32], weight: &[f32], cos: &[f32], sin: &[f32]| {
        // Tasks: (sequence, head), then bands of rows of that head's `[L, d]`.
        out.par_chunks_mut(seq * head_dim).enumerate().for_each(|(bh, per_head)| {
            let (bi, head) = (bh / heads, bh % heads);
            per_head.par_chunks_mut(band * head_dim).enumerate().for_each(|(i, dst)| {
                let mut normed = vec![0f32; if weight.is_empty() { 0 } else { head_dim }];
                for (r, dst) in dst.chunks_mut(head_dim).enumerate() {
                    let t = i * band + r;
                    let mut src = &xs[(bi * seq + t) * width + head * head_dim..][..head_dim];
                    if let Some((_, eps)) = norm {
                        let _all_finite = dispatch_norm_rows(src, weight, eps, &mut normed);
                        src = &normed;
                    }
                    if cos.is_empty() {
                        dst.copy_from_slice(src);
                        continue;
                    }
                    let (c, s) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                    let (x1, x2) = src.split_at(half);
                    let (d1, d2) = dst.split_at_mut(half);
                    for i in 0..half {
                        d1[i] = x1[i] * c[i] - x2[i] * s[i];
                        d2[i] = x1[i] * s[i] + x2[i] * c[i];
                    }
                }
            })
        })
    };
    let weight = match norm {
        Some((w, _)) => w.contiguous()?,
        None => Tensor::zeros(0, DType::F32, x.device())?,
    };
    match rope {
        Some((cos, sin)) => {
            let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
            with_cpu_f32(&x, |xs| {
                with_cpu_f32(&weight, |w| with_cpu_f32(&cos, |c| with_cpu_f32(&sin, |s| run(xs, w, c, s))))
            })????
        }
        None => with_cpu_f32(&x, |xs| with_cpu_f32(&weight, |w| run(xs, w, &[], &[])))??,
    }
    Ok(Some(Tensor::from_vec(out, (b, heads, seq, head_dim), x.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(shape: &[usize], seed: usize) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 500.0 - 2.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The split into heads equals candle's reshape + transpose, and with RoPE candle's
    /// `rope` on the result, bit for bit (the same arithmetic), for several batch rows and a
    /// length that is not a multiple of the task's band.
    #[test]
    fn split_heads_equals_transpose_norm_then_candle_rope_bit_for_bit() {
        let (b, seq, heads, hd) = (2, 523, 3, 8);
        let x = tensor(&[b, seq, heads * hd], 1);
        let (cos, sin) = (tensor(&[seq, hd / 2], 2).cos().unwrap(), tensor(&[seq, hd / 2], 3).sin().unwrap());
        let want = x.reshape((b, seq, heads, hd)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let got = split_heads(Kernels::default(), &x, heads, hd, None, None).unwrap().expect("f32 on the CPU");
        assert_eq!(got.dims(), want.dims());
        assert_eq!(values(&got), values(&want));
        let rotated = candle_nn::rotary_emb::rope(&want, &cos, &sin).unwrap();
        let got = split_heads(Kernels::default(), &x, heads, hd, None, Some((&cos, &sin))).unwrap().expect("f32 on the CPU");
        assert_eq!(values(&got), values(&rotated));
        // With Qwen3's per-head norm first: the same as the norm pass, then candle's rope.
        let w = tensor(&[hd], 7);
        let normed = rms_norm(Kernels::default(), &want, &w, 1e-6).unwrap().unwrap();
        let rotated = candle_nn::rotary_emb::rope(&normed, &cos, &sin).unwrap();
        let got = split_heads(Kernels::default(), &x, heads, hd, Some((&w, 1e-6)), Some((&cos, &sin))).unwrap().unwrap();
        assert_eq!(values(&got), values(&rotated));
    }

    /// RMSNorm matches an f64 reference to f32 rounding and candle's op bit for bit, alone and
    /// after the residual add, whose sum is exact; a non-finite value in the sum is reported.
    /// 37 rows: four groups of eight rows summed side by side and five rows alone.
    #[test]
    fn rms_norm_and_fused_add_match_f64() {
        let (rows, n, eps) = (37, 83, 1e-5f32);
        let (x, delta, w) = (tensor(&[1, rows, n], 4), tensor(&[1, rows, n], 5), tensor(&[n], 6));
        let reference = |x: &[f32], w: &[f32]| -> Vec<f64> {
            x.chunks(n)
                .flat_map(|row| {
                    let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
                    let inv = 1.0 / (ms + eps as f64).sqrt();
                    row.iter().zip(w).map(move |(&v, &w)| v as f64 * inv * w as f64).collect::<Vec<_>>()
                })
                .collect()
        };
        let close = |got: &[f32], want: &[f64]| {
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert!((g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "element {i}: {g} vs {w}");
            }
        };
        let wv = values(&w);
        let normed = rms_norm(Kernels::default(), &x, &w, eps).unwrap().expect("f32 on the CPU");
        close(&values(&normed), &reference(&values(&x), &wv));
        // And candle's op, bit for bit.
        assert_eq!(values(&normed), values(&candle_nn::ops::rms_norm(&x, &w, eps).unwrap()));
        let (sum, normed, finite) = add_rms_norm(Kernels::default(), &x, &delta, &w, eps).unwrap().expect("f32 on the CPU");
        assert!(finite);
        assert_eq!(values(&sum), values(&(&x + &delta).unwrap()));
        close(&values(&normed), &reference(&values(&sum), &wv));
        assert_eq!(values(&normed), values(&candle_nn::ops::rms_norm(&sum, &w, eps).unwrap()));
        // A non-finite value in a row summed eight at a time, and in one of the rows left over.
        for at in [3 * n + 1, rows * n - 2] {
            let mut bad = values(&delta);
            bad[at] = f32::INFINITY;
            let bad = Tensor::from_vec(bad, (1, rows, n), &Device::Cpu).unwrap();
            assert!(!add_rms_norm(Kernels::default(), &x, &bad, &w, eps).unwrap().unwrap().2, "infinity at {at}");
        }
    }
}
