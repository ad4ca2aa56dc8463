//! Causal attention on the CPU kernels: per query block and head, `Q·Kᵀ` into one reused
//! buffer, the causal softmax in place, the rows handed to the sink (per head while they are in
//! cache, when the sink splits by head), then `P·V`; and, for
//! decode steps, a few query rows against the cached keys.

use candle_core::Tensor;

use super::sgemm::{self, MatRef, PackedB};
use super::phases::{self, Site};
use super::vector::softmax_row;
use super::{kernels_apply, with_cpu_f32, Kernels};
use crate::sink::{AttentionBlock, AttentionSink, HeadConsumer};
use crate::{Error, Result};

/// Steps 6–7 of the decoder's attention (scores, causal softmax, the sink, `P·V`) on this CPU's
/// kernels, for `q` `[B, H, L, d]` and the cached `k`, `v` `[B, H_kv, T, d]` (query head
/// `kv * n_rep + r` reads KV head `kv`, HF's `repeat_kv` order). Returns the heads' outputs in the
/// merged layout `[B, L, H, d]`, or `None` where the kernels do not apply (portable path, another
/// device or dtype, several sequences at once over many rows, or a sink on a decode step): the
/// caller then takes candle's ops. `block` is the number of query rows per block; every block's
/// probabilities go to `sink` when one is given. `suppressed`: absolute key ranges (half-open)
/// whose scores are set to `f32::MIN` before the softmax wherever visible (attention
/// suppression, [`crate::Intervention::SuppressKeys`]), one list for every batch row or
/// one list per batch row ([`crate::Intervention::SuppressKeysPerRow`]: then each row runs
/// the batch-1 blocks with its own ranges); only on query blocks (`None` on decode rows, so the
/// caller takes the hook path).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    kernels: Kernels,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    layer: usize,
    offset: usize,
    block: usize,
    sink: Option<&mut dyn AttentionSink>,
    suppressed: &[Vec<(usize, usize)>],
) -> Result<Option<Tensor>> {
    let (b, _, seq, _) = q.dims4()?;
    if suppressed.len() > 1 && suppressed.len() != b {
        return Err(Error::invalid(format!(
            "key suppression per batch row in layer {layer}: {} rows of ranges for a batch of {b}",
            suppressed.len()
        )));
    }
    if !kernels_apply(kernels, q) {
        return Ok(None);
    }
    let any_suppressed = suppressed.iter().any(|r| !r.is_empty());
    if seq < sgemm::FEW_ROWS {
        if sink.is_some() || any_suppressed {
            return Ok(None);
        }
        return Ok(Some(attend_few_rows(kernels, q, k, v, layer, offset)?.transpose(1, 2)?.contiguous()?));
    }
    let row_ranges = |row: usize| -> &[(usize, usize)] {
        match suppressed {
            [] => &[],
            [all] => all,
            rows => &rows[row],
        }
    };
    if b == 1 {
        return attend_blocks(kernels, q, k, v, layer, offset, block, sink, row_ranges(0)).map(Some);
    }
    // Several sequences: only suppressed runs (no sink) go through the kernels, one row at a time
    // with the batch-1 arithmetic, so each row equals its run alone.
    if !any_suppressed || sink.is_some() {
        return Ok(None);
    }
    let rows = (0..b)
        .map(|row| {
            let (q, k, v) = (q.narrow(0, row, 1)?, k.narrow(0, row, 1)?, v.narrow(0, row, 1)?);
            attend_blocks(kernels, &q, &k, &v, layer, offset, block, None, row_ranges(row))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Tensor::cat(&rows, 0)?))
}

/// Causal attention `[B, H, L, d]` for a few query rows (decode steps, any batch) against the
/// cached keys: one task per (sequence, KV head), which serves the query heads sharing that KV
/// head (each key and value row read once for all of them): dot products, softmax, weighted sum
/// of values. For these tiny products candle's matmul spends more on starting its threads than
/// on arithmetic.
fn attend_few_rows(kernels: Kernels, q: &Tensor, k: &Tensor, v: &Tensor, layer: usize, offset: usize) -> Result<Tensor> {
    use rayon::prelude::*;
    let (b, h, seq, hd) = q.dims4()?;
    let first_bad = FirstBadRow::new(offset + seq);
    let (h_kv, total) = (k.dim(1)?, k.dim(2)?);
    let n_rep = h / h_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let q = q.contiguous()?;
    // The cache's keys and values are views of buffers with room for more positions: read in
    // place, each (sequence, KV head) block of `total` rows where the view's strides put it.
    let (k, v) = (rows_in_place(k)?, rows_in_place(v)?);
    let mut out = vec![0f32; b * h * seq * hd];
    let shape = FewRows { n_rep, seq, hd, total, offset, scale };
    with_cpu_f32(&q, |qs| {
        with_cpu_rows(&k, |ks, (kb, kh)| {
            with_cpu_rows(&v, |vs, (vb, vh)| {
                out.par_chunks_mut(n_rep * seq * hd).enumerate().for_each(|(task, out)| {
                    let (bi, kv) = (task / h_kv, task % h_kv);
                    let (keys, values) = (&ks[bi * kb + kv * kh..][..total * hd], &vs[bi * vb + kv * vh..][..total * hd]);
                    let queries = &qs[task * n_rep * seq * hd..][..n_rep * seq * hd];
                    let bad = SCORES.with_borrow_mut(|scores| few_rows_task(kernels, &shape, queries, keys, values, out, scores));
                    if let Some((rep, r)) = bad {
                        first_bad.note(kv * n_rep + rep, offset + r);
                    }
                });
            })
        })
    })???;
    first_bad.check(layer)?;
    Ok(Tensor::from_vec(out, (b, h, seq, hd), q.device())?)
}

/// The shape of one [`attend_few_rows`] task.
struct FewRows {
    n_rep: usize,
    seq: usize,
    hd: usize,
    total: usize,
    offset: usize,
    scale: f32,
}

/// One (sequence, KV head) task of [`attend_few_rows`]: `queries` `[n_rep, seq, d]`, `keys` and
/// `values` `[total, d]`, `out` `[n_rep, seq, d]`; `scores` is scratch. Returns the first (query
/// head among the shared ones, row) whose softmax saw a non-finite score. Compiled for the vector
/// unit the kernels use (its loops hold no closure, which would not inherit the features); the
/// arithmetic per value (the same `dot`, softmax, then `o += p · v` as a multiply and an add) is
/// that of the scalar loop, so every path gives the same bits.
#[allow(clippy::too_many_arguments)]
fn few_rows_task(
    kernels: Kernels,
    shape: &FewRows,
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    out: &mut [f32],
    scores: &mut Vec<f32>,
) -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx512_enabled() {
            // SAFETY: the CPU has AVX-512F (and with it AVX2 and FMA).
            return unsafe { few_rows_task_avx512(kernels, shape, queries, keys, values, out, scores) };
        }
        // SAFETY: the kernels apply (checked by `attend`): AVX2 and FMA.
        unsafe { few_rows_task_avx2(kernels, shape, queries, keys, values, out, scores) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    few_rows_task_body(kernels, shape, queries, keys, values, out, scores, sgemm::dot, weighted_sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn few_rows_task_avx512(
    kernels: Kernels,
    shape: &FewRows,
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    out: &mut [f32],
    scores: &mut Vec<f32>,
) -> Option<(usize, usize)> {
    // SAFETY: this function runs only on a CPU with AVX-512F.
    // SAFETY (both closures): as above; the slices hold their shapes (the callers' tasks).
    few_rows_task_body(kernels, shape, queries, keys, values, out, scores, |a, b| unsafe { sgemm::avx512::dot(a, b) }, |p, v, o| unsafe {
        weighted_sum_avx512(p, v, o)
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn few_rows_task_avx2(
    kernels: Kernels,
    shape: &FewRows,
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    out: &mut [f32],
    scores: &mut Vec<f32>,
) -> Option<(usize, usize)> {
    // SAFETY: this function runs only on a CPU with AVX2 and FMA.
    few_rows_task_body(kernels, shape, queries, keys, values, out, scores, |a, b| unsafe { sgemm::avx2::dot(a, b) }, weighted_sum)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn few_rows_task_body(
    kernels: Kernels,
    shape: &FewRows,
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    out: &mut [f32],
    scores: &mut Vec<f32>,
    dot: impl Fn(&[f32], &[f32]) -> f32,
    sum: impl Fn(&[f32], &[f32], &mut [f32]),
) -> Option<(usize, usize)> {
    let FewRows { n_rep, seq, hd, total, offset, scale } = *shape;
    let mut bad = None;
    for rep in 0..n_rep {
        for r in 0..seq {
            let row = rep * seq + r;
            let q_row = &queries[row * hd..(row + 1) * hd];
            let visible = (offset + r + 1).min(total);
            scores.clear();
            for k_row in keys[..visible * hd].chunks_exact(hd) {
                scores.push(dot(q_row, k_row));
            }
            if !softmax_row(kernels, scores, scale).is_finite() && bad.is_none() {
                bad = Some((rep, r));
            }
            sum(scores, values, &mut out[row * hd..(row + 1) * hd]);
        }
    }
    bad
}

/// `out += Σ_t p[t] · values[t]`, a multiply then an add per key, in key order (the scalar loop).
#[inline(always)]
fn weighted_sum(probs: &[f32], values: &[f32], out: &mut [f32]) {
    let hd = out.len();
    for (&p, v_row) in probs.iter().zip(values.chunks_exact(hd)) {
        for (o, &x) in out.iter_mut().zip(v_row) {
            *o += p * x;
        }
    }
}

/// [`weighted_sum`] with 64 output lanes held in four registers over all the keys (the row is
/// not loaded and stored back at every key); each value's arithmetic is the same, so are its bits.
/// Rows whose length is not a multiple of 64 take the loop.
///
/// # Safety
/// The CPU must support AVX-512F; `values` must hold `probs.len()` rows of `out.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_sum_avx512(probs: &[f32], values: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let hd = out.len();
    if hd % 64 != 0 {
        return weighted_sum(probs, values, out);
    }
    assert!(values.len() >= probs.len() * hd);
    for c in (0..hd).step_by(64) {
        // SAFETY: lanes c..c + 64 lie in `out` and in every row of `values` (asserted above).
        unsafe {
            let o = out.as_mut_ptr().add(c);
            let (mut a0, mut a1, mut a2, mut a3) = (_mm512_loadu_ps(o), _mm512_loadu_ps(o.add(16)), _mm512_loadu_ps(o.add(32)), _mm512_loadu_ps(o.add(48)));
            for (t, &p) in probs.iter().enumerate() {
                let (p, v) = (_mm512_set1_ps(p), values.as_ptr().add(t * hd + c));
                a0 = _mm512_add_ps(a0, _mm512_mul_ps(p, _mm512_loadu_ps(v)));
                a1 = _mm512_add_ps(a1, _mm512_mul_ps(p, _mm512_loadu_ps(v.add(16))));
                a2 = _mm512_add_ps(a2, _mm512_mul_ps(p, _mm512_loadu_ps(v.add(32))));
                a3 = _mm512_add_ps(a3, _mm512_mul_ps(p, _mm512_loadu_ps(v.add(48))));
            }
            _mm512_storeu_ps(o, a0);
            _mm512_storeu_ps(o.add(16), a1);
            _mm512_storeu_ps(o.add(32), a2);
            _mm512_storeu_ps(o.add(48), a3);
        }
    }
}

thread_local! {
    /// One query row's scores, then probabilities (reused across tasks).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `t` `[B, H, T, d]` as it is when each (b, h) block of `T × d` is contiguous (a view of a
/// larger buffer along `T`, as the KV cache hands out), else a contiguous copy.
fn rows_in_place(t: &Tensor) -> Result<Tensor> {
    let (_, _, _, d) = t.dims4()?;
    let stride = t.layout().stride();
    Ok(if stride[3] == 1 && stride[2] == d { t.clone() } else { t.contiguous()? })
}

/// Run `f` on the f32 data of a CPU tensor `[B, H, T, d]` whose (b, h) blocks are contiguous
/// ([`rows_in_place`]), with the distances between blocks of consecutive `b` and `h`.
fn with_cpu_rows<R>(t: &Tensor, f: impl FnOnce(&[f32], (usize, usize)) -> R) -> Result<R> {
    let (b, h, rows, d) = t.dims4()?;
    let (storage, layout) = t.storage_and_layout();
    let stride = layout.stride();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(Error::invalid("expected a CPU tensor"));
    };
    if stride[3] != 1 || stride[2] != d {
        return Err(Error::invalid("expected contiguous rows"));
    }
    let data = &cpu.as_slice::<f32>()?[layout.start_offset()..];
    let last = if b * h * rows * d == 0 { 0 } else { (b - 1) * stride[0] + (h - 1) * stride[1] + rows * d };
    if last > data.len() {
        return Err(Error::invalid("a strided tensor outside its storage"));
    }
    Ok(f(&data[..last], (stride[0], stride[1])))
}

/// The first (head, query row) whose softmax saw a NaN or infinite score, noted from inside the
/// parallel loops (an atomic minimum: nothing is locked on the path that finds none).
pub(crate) struct FirstBadRow {
    code: std::sync::atomic::AtomicUsize,
    positions: usize,
}

impl FirstBadRow {
    /// For query rows at absolute positions below `positions`.
    pub(crate) fn new(positions: usize) -> Self {
        FirstBadRow { code: std::sync::atomic::AtomicUsize::new(usize::MAX), positions: positions.max(1) }
    }

    pub(crate) fn note(&self, head: usize, row: usize) {
        self.code.fetch_min(head * self.positions + row, std::sync::atomic::Ordering::Relaxed);
    }

    /// The error naming the layer, head and query row, if one was noted.
    pub(crate) fn check(&self, layer: usize) -> Result<()> {
        match self.code.load(std::sync::atomic::Ordering::Relaxed) {
            usize::MAX => Ok(()),
            code => Err(non_finite_scores(layer, code / self.positions, code % self.positions)),
        }
    }
}

/// The error for a NaN or infinite attention score: the softmax would have turned it into a flat
/// or NaN row of probabilities, a wrong result that looks like one.
pub(crate) fn non_finite_scores(layer: usize, head: usize, row: usize) -> Error {
    Error::invalid(format!(
        "non-finite attention scores (NaN or infinity) in layer {layer}, head {head}, query position {row}: \
         the query/key weights (q_proj, k_proj, their norms or block scales) or the config values are corrupt"
    ))
}

/// Attention over query blocks on the kernels (batch 1, f32, AVX-512 or AVX2): per query block and head, scores
/// `Q·Kᵀ` into one reused buffer, softmax in place, hand the block to the sink, then `P·V`
/// written straight into the merged-heads layout `[1, L, H, d_head]`. Nothing is packed per
/// block: Q and P are read in place, K and V are packed once per layer.
#[allow(clippy::too_many_arguments)]
fn attend_blocks(
    kernels: Kernels,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    layer: usize,
    offset: usize,
    block: usize,
    mut sink: Option<&mut dyn AttentionSink>,
    suppressed: &[(usize, usize)],
) -> Result<Tensor> {
    use rayon::prelude::*;
    let (h, hd, num_kv_heads) = (q.dim(1)?, q.dim(3)?, k.dim(1)?);
    let n_rep = h / num_kv_heads;
    let (seq, total_keys) = (q.dim(2)?, k.dim(2)?);
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let mut z = vec![0f32; seq * h * hd];
    let mut probs: Vec<f32> = Vec::new();
    let first_bad = FirstBadRow::new(offset + seq);
    with_cpu_f32(&q, |qs| {
        with_cpu_f32(&k, |ks| {
            with_cpu_f32(&v, |vs| -> Result<()> {
                // Kᵀ and V of each KV head packed once per layer; every block and every query
                // head sharing them reads a leading corner (causal: keys < `visible`).
                let packing = phases::start(kernels);
                let per_head = total_keys * hd;
                let keys: Vec<PackedB> = (0..num_kv_heads)
                    .map(|kv| PackedB::new(MatRef::transposed(&ks[kv * per_head..], hd), hd, total_keys))
                    .collect();
                let values: Vec<PackedB> = (0..num_kv_heads)
                    .map(|kv| PackedB::new(MatRef::row_major(&vs[kv * per_head..], hd), total_keys, hd))
                    .collect();
                phases::record(Site::Layout, packing, (2 * per_head * num_kv_heads * 4) as u64);
                let mut head_out: Vec<f32> = Vec::new();
                let mut q0 = 0;
                while q0 < seq {
                    let rows = block.min(seq - q0);
                    let visible = offset + q0 + rows;
                    let size = rows * visible;
                    probs.resize(h * size, 0.0);
                    // A sink that splits by head takes each head's rows inside the parallel
                    // section, right after their softmax; any other gets the block after it.
                    let (q_start, kv_len) = (offset + q0, visible);
                    let shape = AttentionBlock { layer, q_start, heads: h, rows, kv_len, total_keys, probs: &[] };
                    let mut consumers: Vec<Option<HeadConsumer<'_>>> = match sink.as_deref_mut() {
                        Some(sink) => match sink.per_head(shape)? {
                            Some(heads) if heads.len() != h => {
                                return Err(Error::invalid(format!("attention sink: {} head consumers for {h} heads", heads.len())))
                            }
                            Some(heads) => heads.into_iter().map(Some).collect(),
                            None => (0..h).map(|_| None).collect(),
                        },
                        None => (0..h).map(|_| None).collect(),
                    };
                    let split = consumers.iter().any(Option::is_some);
                    // Tasks of (head, band of rows), balanced over the threads by rayon; each
                    // band's softmax runs while its scores are still in L2.
                    let band = (rows / 2).div_ceil(12).max(1) * 12;
                    let section = phases::start(kernels);
                    probs.par_chunks_mut(size).zip(consumers.par_iter_mut()).enumerate().for_each(|(head, (scores, consumer))| {
                        scores.par_chunks_mut(band * visible).enumerate().for_each(|(i, scores)| {
                            let (r0, n_rows) = (i * band, band.min(rows - i * band));
                            // Query head `kv * n_rep + r` reads KV head `kv` (HF `repeat_kv`).
                            let a = MatRef::row_major(&qs[(head * seq + q0 + r0) * hd..], hd);
                            let started = phases::start(kernels);
                            sgemm::matmul_packed(a, &keys[head / n_rep], scores, n_rows, visible, hd, visible);
                            phases::record(Site::ScoresThread, started, 2 * (n_rows * visible * hd) as u64);
                            let started = phases::start(kernels);
                            let mut computed = 0;
                            for (r, row) in scores.chunks_mut(visible).enumerate() {
                                let valid = offset + q0 + r0 + r + 1;
                                // f32::MIN · scale still underflows to probability 0 beside any
                                // kept key; a row with every visible key suppressed is uniform.
                                for &(a, b) in suppressed {
                                    row[a.min(valid)..b.min(valid)].fill(f32::MIN);
                                }
                                if !softmax_row(kernels, &mut row[..valid], scale).is_finite() {
                                    first_bad.note(head, valid - 1);
                                }
                                row[valid..].fill(0.0);
                                computed += valid;
                            }
                            phases::record(Site::SoftmaxThread, started, computed as u64);
                        });
                        if let Some(consume) = consumer {
                            let started = phases::start(kernels);
                            consume(scores);
                            phases::record(Site::SinkThread, started, (4 * scores.len()) as u64);
                        }
                    });
                    drop(consumers);
                    phases::record(Site::ScoresAndSoftmax, section, 0);
                    // Before the sink keeps anything of a block with a corrupt score.
                    first_bad.check(layer)?;
                    if let (Some(sink), false) = (sink.as_deref_mut(), split) {
                        let started = phases::start(kernels);
                        sink.consume(AttentionBlock { probs: &probs, ..shape })?;
                        phases::record(Site::Sink, started, (4 * h * size) as u64);
                    }
                    let started = phases::start(kernels);
                    head_out.resize(h * rows * hd, 0.0);
                    head_out.par_chunks_mut(rows * hd).enumerate().for_each(|(head, out)| {
                        out.par_chunks_mut(band * hd).enumerate().for_each(|(i, out)| {
                            let (r0, n_rows) = (i * band, band.min(rows - i * band));
                            let p = MatRef::row_major(&probs[head * size + r0 * visible..], visible);
                            sgemm::matmul_packed(p, &values[head / n_rep], out, n_rows, hd, visible, hd);
                        });
                    });
                    phases::record(Site::Values, started, 2 * (h * rows * visible * hd) as u64);
                    // [H, rows, d_head] → rows of the merged-heads layout.
                    let merging = phases::start(kernels);
                    for (head, out) in head_out.chunks(rows * hd).enumerate() {
                        for (r, src) in out.chunks(hd).enumerate() {
                            let dst = ((q0 + r) * h + head) * hd;
                            z[dst..dst + hd].copy_from_slice(src);
                        }
                    }
                    phases::record(Site::Layout, merging, (4 * h * rows * hd) as u64);
                    q0 += rows;
                }
                Ok(())
            })
        })
    })????;
    Ok(Tensor::from_vec(z, (1, seq, h, hd), q.device())?)
}

/// Softmax of `scale · scores` over the keys each query may see, in one pass per row on CPU
/// (the same arithmetic as HF eager: scale, mask, subtract the row max, exp, divide by the sum).
/// `scores` is `[1, H, rows, visible]`; row `r` is absolute position `first + r`.
/// A NaN or infinite score fails with the layer, head and query position.
pub(crate) fn scaled_causal_softmax(kernels: Kernels, scores: &Tensor, scale: f32, first: usize, layer: usize) -> Result<Tensor> {
    use rayon::prelude::*;
    let scores = scores.contiguous()?;
    let visible = scores.dim(3)?;
    let rows = scores.dim(2)?;
    let scores_heads = scores.dim(1)?;
    let n = scores.elem_count();
    let mut out = vec![0f32; n];
    let first_bad = FirstBadRow::new(first + rows);
    {
        let (storage, layout) = scores.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(Error::invalid("scaled_causal_softmax needs CPU tensors"));
        };
        let start = layout.start_offset();
        let src = &cpu.as_slice::<f32>()?[start..start + n];
        out.par_chunks_mut(visible).zip(src.par_chunks(visible)).enumerate().for_each(|(i, (dst, row))| {
            let valid = (first + i % rows + 1).min(visible);
            dst[..valid].copy_from_slice(&row[..valid]);
            if !softmax_row(kernels, &mut dst[..valid], scale).is_finite() {
                first_bad.note(i / rows % scores_heads, first + i % rows);
            }
        });
    }
    first_bad.check(layer)?;
    Ok(Tensor::from_vec(out, scores.shape(), scores.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::FullAttentionCapture;
    use candle_core::Device;

    /// Causal attention in f64, `[H, L, d]` out and `[H, L, T]` probabilities, for `q` rows at
    /// absolute positions `offset..offset + L` (query head `h` reads KV head `h / n_rep`).
    fn naive(q: &[f32], k: &[f32], v: &[f32], h: usize, h_kv: usize, seq: usize, total: usize, hd: usize) -> (Vec<f64>, Vec<f64>) {
        let offset = total - seq;
        let scale = 1.0 / (hd as f64).sqrt();
        let (mut out, mut probs) = (vec![0f64; h * seq * hd], vec![0f64; h * seq * total]);
        for head in 0..h {
            let kv = head / (h / h_kv);
            for r in 0..seq {
                let visible = offset + r + 1;
                let qr = &q[(head * seq + r) * hd..][..hd];
                let s: Vec<f64> = (0..visible)
                    .map(|t| qr.iter().zip(&k[(kv * total + t) * hd..][..hd]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale)
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
                for (t, x) in s.iter().enumerate() {
                    let p = (x - max).exp() / sum;
                    probs[(head * seq + r) * total + t] = p;
                    for d in 0..hd {
                        out[(head * seq + r) * hd + d] += p * v[(kv * total + t) * hd + d] as f64;
                    }
                }
            }
        }
        (out, probs)
    }

    /// A sink that splits by head (as the analysis library's sentence averager does): per head,
    /// each query row it was handed, in order, with the keys it was given.
    #[derive(Default)]
    struct RowsByHead {
        heads: Vec<Vec<(usize, Vec<f32>)>>,
    }

    impl AttentionSink for RowsByHead {
        fn consume(&mut self, _: AttentionBlock<'_>) -> Result<()> {
            Err(Error::invalid("RowsByHead only takes blocks split by head"))
        }
        fn per_head(&mut self, block: AttentionBlock<'_>) -> Result<Option<Vec<HeadConsumer<'_>>>> {
            self.heads.resize_with(block.heads, Vec::new);
            let (q_start, kv_len) = (block.q_start, block.kv_len.max(1));
            Ok(Some(
                self.heads
                    .iter_mut()
                    .map(|rows| {
                        Box::new(move |probs: &[f32]| {
                            rows.extend(probs.chunks(kv_len).enumerate().map(|(r, row)| (q_start + r, row.to_vec())))
                        }) as HeadConsumer<'_>
                    })
                    .collect(),
            ))
        }
    }

    /// A sink that splits by head gets, inside the kernels' parallel section, exactly the rows
    /// the full matrices hold: every head, every row once and in order, bit for bit, over several
    /// query blocks.
    #[test]
    fn a_sink_split_by_head_sees_every_head_in_order() {
        if !sgemm::available() {
            super::super::skip_hardware("a_sink_split_by_head_sees_every_head_in_order", sgemm::NO_KERNELS);
            return;
        }
        let (h, h_kv, hd, seq) = (6, 2, 16, 61);
        let value = |i: usize, m: usize| ((i * m % 211) as f32 - 105.0) / 60.0;
        let q: Vec<f32> = (0..h * seq * hd).map(|i| value(i, 7919)).collect();
        let k: Vec<f32> = (0..h_kv * seq * hd).map(|i| value(i, 104729)).collect();
        let v: Vec<f32> = (0..h_kv * seq * hd).map(|i| value(i, 1299709)).collect();
        let tensor = |data: &[f32], heads| Tensor::from_slice(data, (1, heads, seq, hd), &Device::Cpu).unwrap();
        let mut by_head = RowsByHead::default();
        let mut capture = FullAttentionCapture::default();
        for sink in [&mut by_head as &mut dyn AttentionSink, &mut capture] {
            attend(Kernels::default(), &tensor(&q, h), &tensor(&k, h_kv), &tensor(&v, h_kv), 0, 0, 16, Some(sink), &[]).unwrap().expect("kernels apply");
        }
        let full = capture.layer(0).unwrap();
        assert_eq!(by_head.heads.len(), h);
        for (head, rows) in by_head.heads.iter().enumerate() {
            let positions: Vec<usize> = rows.iter().map(|(q, _)| *q).collect();
            assert_eq!(positions, (0..seq).collect::<Vec<_>>(), "head {head}: rows once each, in order");
            for (q, row) in rows {
                let want = &full[(head * seq + q) * seq..][..seq];
                assert_eq!(row.as_slice(), &want[..row.len()], "head {head} row {q}");
                assert!(want[row.len()..].iter().all(|&p| p == 0.0), "head {head} row {q}: keys cut off are masked");
            }
        }
    }

    /// The AVX-512 weighted sum of decode rows gives the scalar loop's bits (64 and 128 lanes,
    /// and a length that takes the loop itself).
    #[test]
    fn vector_weighted_sum_equals_the_scalar_loop_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let value = |i: usize, m: usize| ((i * m % 211) as f32 - 105.0) / 60.0;
            for (keys, hd) in [(1, 64), (37, 64), (300, 128), (5, 48)] {
                let probs: Vec<f32> = (0..keys).map(|t| value(t, 7919).abs() / 2.0).collect();
                let values: Vec<f32> = (0..keys * hd).map(|i| value(i, 104729)).collect();
                let (mut want, mut got) = (vec![0.5f32; hd], vec![0.5f32; hd]);
                weighted_sum(&probs, &values, &mut want);
                // SAFETY: AVX-512F checked above; `values` holds `keys` rows of `hd`.
                unsafe { weighted_sum_avx512(&probs, &values, &mut got) };
                assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{keys} keys × {hd}");
            }
            return;
        }
        super::super::skip_hardware("vector_weighted_sum_equals_the_scalar_loop_bit_for_bit", "no AVX-512F on this CPU");
    }

    #[test]
    fn attend_matches_f64_on_decode_rows_and_query_blocks() {
        if !sgemm::available() {
            super::super::skip_hardware("attend_matches_f64_on_decode_rows_and_query_blocks", sgemm::NO_KERNELS);
            return;
        }
        let (h, h_kv, hd) = (6, 2, 16);
        let value = |i: usize, m: usize| ((i * m % 211) as f32 - 105.0) / 60.0;
        // (query rows, cached prefix, rows per block): decode steps, one block, several blocks.
        for (seq, prefix, block) in [(1, 9, 16), (5, 0, 16), (40, 0, 64), (50, 7, 16)] {
            let total = prefix + seq;
            let q: Vec<f32> = (0..h * seq * hd).map(|i| value(i, 7919)).collect();
            let k: Vec<f32> = (0..h_kv * total * hd).map(|i| value(i, 104729)).collect();
            let v: Vec<f32> = (0..h_kv * total * hd).map(|i| value(i, 1299709)).collect();
            let tensor = |data: &[f32], heads, rows| Tensor::from_slice(data, (1, heads, rows, hd), &Device::Cpu).unwrap();
            let mut capture = FullAttentionCapture::default();
            let sink: Option<&mut dyn AttentionSink> = if seq >= sgemm::FEW_ROWS { Some(&mut capture) } else { None };
            let z = attend(Kernels::default(), &tensor(&q, h, seq), &tensor(&k, h_kv, total), &tensor(&v, h_kv, total), 0, prefix, block, sink, &[])
                .unwrap()
                .expect("the kernels apply to f32 on this CPU");
            assert_eq!(z.dims(), [1, seq, h, hd]);
            let z = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (want, want_probs) = naive(&q, &k, &v, h, h_kv, seq, total, hd);
            for head in 0..h {
                for r in 0..seq {
                    for d in 0..hd {
                        let (got, want) = (z[(r * h + head) * hd + d] as f64, want[(head * seq + r) * hd + d]);
                        assert!((got - want).abs() < 1e-5, "seq {seq} prefix {prefix}: head {head} row {r} dim {d}: {got} vs {want}");
                    }
                }
            }
            if seq >= sgemm::FEW_ROWS {
                let captured = capture.layer(0).expect("the sink saw layer 0");
                for head in 0..h {
                    for r in 0..seq {
                        for t in 0..total {
                            let got = captured[(head * total + prefix + r) * total + t] as f64;
                            let want = want_probs[(head * seq + r) * total + t];
                            assert!((got - want).abs() < 1e-6, "probability head {head} row {r} key {t}: {got} vs {want}");
                        }
                    }
                }
            }
        }
    }
}
