//! The decoder: one implementation for the Llama family (Llama-3.x with llama3 RoPE scaling,
//! SmolLM2, R1-Distill-Llama) and Qwen2/Qwen3 (q/k/v bias, per-head q/k RMSNorm before RoPE,
//! explicit head_dim), matching HF transformers' eager attention (spec `runtime-candle.md` §3).
//!
//! Laid out like candle-transformers' model files (rotary → MLP → attention → layer → model), with
//! two deliberate differences: `forward(&self, ..)` takes an explicit [`KvCache`] and a
//! [`Hooks`] value, and it returns logits and final-norm hidden states for every position.
//!
//! Attention is computed in query blocks: each block's probabilities are handed to the hooks'
//! [`AttentionSink`](super::AttentionSink) and dropped, so peak memory is
//! `O(heads × block × T)` instead of `O(layers × heads × T²)`; the numbers are the same as the
//! full computation because softmax is per row.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;

use super::config::{Architecture, Config};
use super::hooks::{HookPoint, Hooks};
use super::sgemm::{self, MatRef, PackedB};
use super::AttentionBlock;
use crate::{Error, Result};

/// Input of a forward call: token ids, or input embeddings `[B, L, d]` (CODI feeds projected
/// hidden states; `B > 1` runs equal-length sequences in lockstep, e.g. batched greedy decoding
/// over a [`KvCache::stack`]ed cache).
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Ids(&'a [u32]),
    Embeds(&'a Tensor),
}

/// Which logits a forward call computes (the LM head over a long trace is large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    All,
    Last,
    None,
}

/// Output of a forward call.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// `[B, L, vocab]` f32 (`[B, 1, vocab]` with [`Logits::Last`], `None` with [`Logits::None`]);
    /// `B` is 1 except for batched embeddings input.
    pub logits: Option<Tensor>,
    /// `[B, L, d]` post-final-norm hidden states (HF `hidden_states[-1]`).
    pub hidden: Tensor,
}

impl ForwardOutput {
    /// The logits; an error if they were not computed.
    pub fn logits(&self) -> Result<&Tensor> {
        self.logits.as_ref().ok_or_else(|| Error::invalid("forward was run without logits"))
    }
}

/// Key/value cache: per layer `[B, H_kv, T, d_head]` keys (after RoPE) and values, `B = 1` for
/// one sequence. Cloning is cheap (tensors are shared), so a prefix can be reused by several
/// continuations.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(model: &Model) -> Self {
        Self { layers: vec![None; model.config.num_hidden_layers], len: 0 }
    }
    /// Positions already cached; the next forward call continues after them.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Keep only the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for kv in self.layers.iter_mut().flatten() {
            *kv = (kv.0.narrow(2, 0, len)?, kv.1.narrow(2, 0, len)?);
        }
        self.len = len;
        Ok(())
    }

    /// One cache of batch `B` from `B` caches of equal length (rows in the order given), so
    /// continuations of several runs can be decoded in one forward per step: the weights are
    /// read once per step instead of once per run.
    pub fn stack(caches: &[&KvCache]) -> Result<KvCache> {
        let first = caches.first().ok_or_else(|| Error::invalid("KvCache::stack of no caches"))?;
        if let Some(other) = caches.iter().find(|c| c.len != first.len || c.layers.len() != first.layers.len()) {
            return Err(Error::invalid(format!(
                "KvCache::stack needs caches of one length and model, got {} and {} positions",
                first.len, other.len
            )));
        }
        let mut layers = Vec::with_capacity(first.layers.len());
        for l in 0..first.layers.len() {
            let kvs: Option<Vec<&(Tensor, Tensor)>> = caches.iter().map(|c| c.layers[l].as_ref()).collect();
            layers.push(match kvs {
                Some(kvs) => {
                    let ks: Vec<&Tensor> = kvs.iter().map(|kv| &kv.0).collect();
                    let vs: Vec<&Tensor> = kvs.iter().map(|kv| &kv.1).collect();
                    Some((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
                }
                None => None,
            });
        }
        Ok(KvCache { layers, len: first.len })
    }

    /// Keep only batch rows `rows` (in that order), e.g. to drop finished sequences.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for kv in &self.layers {
            layers.push(match kv {
                Some((k, v)) => {
                    let idx = Tensor::from_iter(rows.iter().map(|&r| r as u32), k.device())?;
                    Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))
                }
                None => None,
            });
        }
        Ok(KvCache { layers, len: self.len })
    }
}

/// Rotary embedding: inverse frequencies (with llama3 scaling) computed in f32 as HF does; the
/// cos/sin tables are built per call for the positions it covers.
#[derive(Debug, Clone)]
struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    fn new(cfg: &Config) -> Self {
        let dim = cfg.head_dim();
        let base = cfg.rope_theta as f32;
        let mut inv_freq: Vec<f32> = (0..dim).step_by(2).map(|i| 1.0f32 / base.powf(i as f32 / dim as f32)).collect();
        let scaling = cfg.rope_scaling.as_ref().filter(|r| r.rope_type == "llama3");
        if let Some(rs) = scaling.filter(|_| cfg.rope_freq_divisors.is_none()) {
            let factor = rs.factor as f32;
            let low = rs.low_freq_factor as f32;
            let high = rs.high_freq_factor as f32;
            let orig = rs.original_max_position_embeddings as f32;
            let low_wavelen = orig / low;
            let high_wavelen = orig / high;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                // Same three bands as HF `_compute_llama3_parameters`.
                let scaled = if wavelen > low_wavelen { *f / factor } else { *f };
                let smooth = (orig / wavelen - low) / (high - low);
                let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                *f = if medium { (1.0 - smooth) * scaled / factor + smooth * scaled } else { scaled };
            }
        }
        if let Some(div) = &cfg.rope_freq_divisors {
            for (f, d) in inv_freq.iter_mut().zip(div) {
                *f /= d;
            }
        }
        Self { inv_freq }
    }

    /// cos and sin tables `[len, d_head/2]` for positions `offset..offset+len`.
    fn tables(&self, offset: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in offset..offset + len {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((Tensor::from_vec(cos, (len, half), device)?, Tensor::from_vec(sin, (len, half), device)?))
    }
}

/// Run a hook point: only when the hooks want it; a returned replacement must keep the shape.
fn hook(hooks: &mut dyn Hooks, point: HookPoint, value: Tensor) -> Result<Tensor> {
    if !hooks.wants(&point) {
        return Ok(value);
    }
    match hooks.on(&point, &value)? {
        Some(new) if new.shape() != value.shape() => {
            Err(Error::invalid(format!("hook at {point} returned shape {:?}, expected {:?}", new.dims(), value.dims())))
        }
        Some(new) => Ok(new),
        None => Ok(value),
    }
}

/// Run `f` on the f32 data of a contiguous CPU tensor.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Err(Error::invalid("expected a contiguous CPU tensor"));
    };
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}

/// Whether products with `x` take [`sgemm`]'s kernels: f32 on a CPU that has them (AVX-512F, or
/// AVX2 and FMA). Below [`sgemm::FEW_ROWS`] rows (decode steps) the one-pass kernels, from there
/// on the packed GEMM, whose packing those rows amortise.
fn use_sgemm(x: &Tensor) -> bool {
    !portable() && x.device().is_cpu() && x.dtype() == DType::F32 && sgemm::available()
}

/// Whether the portable path is forced: candle's matmul and the scalar softmax and SiLU instead of
/// this crate's SIMD kernels, whatever the CPU has. Off unless `THOUGHTSCOPE_PORTABLE` is set (to
/// anything but `0`) when the first forward pass runs, or [`set_portable`] is called. For telling a
/// kernel bug from a model bug, and for testing the portable path on machines with the kernels.
pub fn portable() -> bool {
    PORTABLE_FROM_ENV.call_once(|| {
        let on = std::env::var("THOUGHTSCOPE_PORTABLE").is_ok_and(|v| !v.is_empty() && v != "0");
        if on {
            PORTABLE.store(true, Ordering::Relaxed);
        }
    });
    PORTABLE.load(Ordering::Relaxed)
}

/// Force (or stop forcing) the portable path for every later forward pass in this process.
pub fn set_portable(on: bool) {
    PORTABLE_FROM_ENV.call_once(|| {});
    PORTABLE.store(on, Ordering::Relaxed);
}

static PORTABLE: AtomicBool = AtomicBool::new(false);
static PORTABLE_FROM_ENV: Once = Once::new();

/// Causal attention `[B, H, L, d]` for a few query rows (decode steps, any batch) against the
/// cached keys: per (sequence, head) task, dot products, softmax, weighted sum of values. For
/// these tiny products candle's matmul spends more on starting its threads than on arithmetic.
fn attend_few_rows(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize) -> Result<Tensor> {
    use rayon::prelude::*;
    let (b, h, seq, hd) = q.dims4()?;
    let (h_kv, total) = (k.dim(1)?, k.dim(2)?);
    let n_rep = h / h_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let mut out = vec![0f32; b * h * seq * hd];
    with_cpu_f32(&q, |qs| {
        with_cpu_f32(&k, |ks| {
            with_cpu_f32(&v, |vs| {
                out.par_chunks_mut(seq * hd).enumerate().for_each(|(task, out_bh)| {
                    let (bi, hi) = (task / h, task % h);
                    let kv = (bi * h_kv + hi / n_rep) * total * hd;
                    let mut scores = Vec::with_capacity(total);
                    for (r, out_row) in out_bh.chunks_mut(hd).enumerate() {
                        let q_row = &qs[(task * seq + r) * hd..(task * seq + r + 1) * hd];
                        let visible = (offset + r + 1).min(total);
                        scores.clear();
                        scores.extend((0..visible).map(|t| sgemm::dot(q_row, &ks[kv + t * hd..kv + (t + 1) * hd])));
                        softmax_row(&mut scores, scale);
                        for (t, &p) in scores.iter().enumerate() {
                            for (o, &x) in out_row.iter_mut().zip(&vs[kv + t * hd..kv + (t + 1) * hd]) {
                                *o += p * x;
                            }
                        }
                    }
                });
            })
        })
    })???;
    Ok(Tensor::from_vec(out, (b, h, seq, hd), q.device())?)
}

/// `x · wᵀ (+ bias)` for `x` `[.., in]` and a weight `[out, in]`, as `candle_nn::Linear` computes it.
fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    // Decode steps (few rows) read the weights once for all rows: candle's matmul is
    // compute-bound there (a SmolLM2 decode step took 86 ms for one row and 237 ms for seven
    // through candle, 54 and 154 ms with `linear_few_rows` and `attend_few_rows` on 2 AVX2 cores).
    let few_rows = rows < sgemm::FEW_ROWS;
    let fast = rows > 0 && use_sgemm(x) && weight.dtype() == DType::F32 && x.dim(x.rank() - 1)? == in_dim;
    let y = if fast {
        let x = x.contiguous()?;
        let mut out = vec![0f32; rows * out_dim];
        with_cpu_f32(&x, |xs| {
            with_cpu_f32(weight, |ws| {
                if few_rows {
                    sgemm::linear_few_rows(xs, ws, &mut out, rows, out_dim, in_dim)
                } else {
                    let (a, b) = (MatRef::row_major(xs, in_dim), MatRef::transposed(ws, in_dim));
                    sgemm::matmul(a, b, &mut out, rows, out_dim, in_dim, out_dim)
                }
            })
        })??;
        let mut shape = x.dims().to_vec();
        *shape.last_mut().expect("rank >= 1") = out_dim;
        Tensor::from_vec(out, shape, x.device())?
    } else {
        x.broadcast_matmul(&weight.t()?)?
    };
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

fn project(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    linear(x, lin.weight(), lin.bias())
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?)
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = (project(&self.gate_proj, x)?, project(&self.up_proj, x)?);
        project(&self.down_proj, &silu_mul(&gate, &up)?)
    }
}

/// `silu(gate) · up`, on the CPU in one vectorised pass over f32 data ([`silu_mul_row`]). candle's
/// silu calls libm's `expf` one lane at a time and its multiply is a second pass: together 0.3 s
/// of a 3k-token SmolLM2 forward on 2 AVX2 cores, about twice this pass.
fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    if !(gate.device().is_cpu() && gate.dtype() == DType::F32 && up.dtype() == DType::F32 && gate.shape() == up.shape()) {
        return Ok((candle_nn::ops::silu(gate)? * up)?);
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let mut out = vec![0f32; gate.elem_count()];
    with_cpu_f32(&gate, |g| {
        with_cpu_f32(&up, |u| {
            out.par_chunks_mut(1 << 14).enumerate().for_each(|(c, chunk)| {
                let start = c << 14;
                silu_mul_row(&g[start..start + chunk.len()], &u[start..start + chunk.len()], chunk);
            })
        })
    })??;
    Ok(Tensor::from_vec(out, gate.shape(), gate.device())?)
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Qwen3's per-head RMSNorm weights for q and k.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    rms_norm_eps: f64,
}

/// Query rows per attention block: about 8 MiB of probabilities per block (measured fastest at
/// 3k tokens among 4, 8 and 32 MiB: the block stays in L3 between softmax, sink and `P·V`).
fn query_block_rows(heads: usize, keys: usize, rows: usize) -> usize {
    let budget = 8 * 1024 * 1024 / 4;
    (budget / (heads * keys).max(1)).clamp(16, rows.max(16))
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        offset: usize,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
        hooks: &mut dyn Hooks,
        block_rows: Option<usize>,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let (h, h_kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);

        // 1. Project.
        let q = project(&self.q_proj, x)?;
        let k = project(&self.k_proj, x)?;
        let v = project(&self.v_proj, x)?;

        // 2. Split heads: [b, L, H*hd] -> [b, H, L, hd].
        let q = q.reshape((b, seq, h, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, seq, h_kv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, seq, h_kv, hd))?.transpose(1, 2)?.contiguous()?;

        // 3. Qwen3: RMSNorm over each head's vector, before RoPE.
        let q = match &self.q_norm {
            Some(w) => rms_norm(&q, w, self.rms_norm_eps)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(w) => rms_norm(&k, w, self.rms_norm_eps)?,
            None => k,
        };

        // 4. RoPE (rotate-half convention; GGUF llama weights were un-permuted at load). As in
        // TransformerLens, `hook_q`/`hook_k` see q and k before the rotation, `hook_rot_q`/
        // `hook_rot_k` after it.
        let q = hook(hooks, HookPoint::AttnQ(layer), q)?;
        let k = hook(hooks, HookPoint::AttnK(layer), k)?;
        let v = hook(hooks, HookPoint::AttnV(layer), v)?;
        let q = candle_nn::rotary_emb::rope(&q.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k.contiguous()?, cos, sin)?;
        let q = hook(hooks, HookPoint::AttnRotQ(layer), q)?;
        let k = hook(hooks, HookPoint::AttnRotK(layer), k)?;

        // 5. Append to the KV cache.
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total_keys = k.dim(2)?;

        // 6. Attention in query blocks. Grouped-query heads are handled without copying K/V:
        //    query head `kv * n_rep + r` uses KV head `kv` (HF `repeat_kv` order).
        let n_rep = h / h_kv;
        let scale = 1.0 / (hd as f64).sqrt();
        let full = hooks.wants(&HookPoint::AttnScores(layer)) || hooks.wants(&HookPoint::AttnPattern(layer));
        let stream = hooks.attention_sink().map(|s| s.wants_layer(layer)).unwrap_or(false);
        if stream && b != 1 {
            return Err(Error::invalid("streamed attention capture needs batch 1"));
        }
        let block = if full { seq } else { block_rows.unwrap_or_else(|| query_block_rows(h, total_keys, seq)) };
        if !full && !stream && seq < sgemm::FEW_ROWS && use_sgemm(&q) {
            let attn = attend_few_rows(&q, &k, &v, offset)?;
            let z = hook(hooks, HookPoint::AttnZ(layer), attn.transpose(1, 2)?.contiguous()?)?;
            return project(&self.o_proj, &z.reshape((b, seq, h * hd))?);
        }
        if !full && b == 1 && seq >= sgemm::FEW_ROWS && use_sgemm(&q) {
            let z = self.attend_cpu(&q, &k, &v, layer, offset, block, stream, hooks)?;
            let z = hook(hooks, HookPoint::AttnZ(layer), z)?;
            return project(&self.o_proj, &z.reshape((b, seq, h * hd))?);
        }
        let mut outputs = Vec::with_capacity(seq.div_ceil(block));
        let mut q0 = 0;
        while q0 < seq {
            let rows = block.min(seq - q0);
            // Causal: no row of this block sees keys past `visible` (full blocks keep all keys).
            let visible = if full { total_keys } else { offset + q0 + rows };
            let qb = q.narrow(2, q0, rows)?.contiguous()?.reshape((b, h_kv, n_rep * rows, hd))?;
            let kb = k.narrow(2, 0, visible)?;
            let vb = v.narrow(2, 0, visible)?;
            let scores = qb.matmul(&kb.t()?)?.reshape((b, h, rows, visible))?;
            let probs = if full || !x.device().is_cpu() {
                let scores = (scores * scale)?;
                let scores = match causal_mask(offset + q0, rows, visible, x.device())? {
                    Some(mask) => scores.broadcast_add(&mask)?,
                    None => scores,
                };
                let scores = if full { hook(hooks, HookPoint::AttnScores(layer), scores)? } else { scores };
                let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
                if full {
                    hook(hooks, HookPoint::AttnPattern(layer), probs)?
                } else {
                    probs
                }
            } else {
                scaled_causal_softmax(&scores, scale as f32, offset + q0)?
            };
            if stream {
                send_block(hooks, layer, offset + q0, h, rows, visible, total_keys, &probs)?;
            }
            let out = probs
                .to_dtype(v.dtype())?
                .reshape((b, h_kv, n_rep * rows, visible))?
                .matmul(&vb.contiguous()?)?
                .reshape((b, h, rows, hd))?;
            outputs.push(out);
            q0 += rows;
        }
        let attn = if outputs.len() == 1 { outputs.pop().unwrap() } else { Tensor::cat(&outputs, 2)? };

        // 7. Merge heads and project out.
        let z = hook(hooks, HookPoint::AttnZ(layer), attn.transpose(1, 2)?.contiguous()?)?;
        project(&self.o_proj, &z.reshape((b, seq, h * hd))?)
    }
}

impl Attention {
    /// Steps 6–7 on the CPU fast path (batch 1, f32, AVX-512 or AVX2): per query block and head, scores
    /// `Q·Kᵀ` into one reused buffer, softmax in place, hand the block to the sink, then `P·V`
    /// written straight into the merged-heads layout `[1, L, H, d_head]`. Nothing is packed per
    /// block: Q and P are read in place, K and V are packed once per layer.
    #[allow(clippy::too_many_arguments)]
    fn attend_cpu(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        layer: usize,
        offset: usize,
        block: usize,
        stream: bool,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        use rayon::prelude::*;
        let (h, hd) = (self.num_heads, self.head_dim);
        let n_rep = h / self.num_kv_heads;
        let (seq, total_keys) = (q.dim(2)?, k.dim(2)?);
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let mut z = vec![0f32; seq * h * hd];
        let mut probs: Vec<f32> = Vec::new();
        with_cpu_f32(&q, |qs| {
            with_cpu_f32(&k, |ks| {
                with_cpu_f32(&v, |vs| -> Result<()> {
                    // Kᵀ and V of each KV head packed once per layer; every block and every query
                    // head sharing them reads a leading corner (causal: keys < `visible`).
                    let per_head = total_keys * hd;
                    let keys: Vec<PackedB> = (0..self.num_kv_heads)
                        .map(|kv| PackedB::new(MatRef::transposed(&ks[kv * per_head..], hd), hd, total_keys))
                        .collect();
                    let values: Vec<PackedB> = (0..self.num_kv_heads)
                        .map(|kv| PackedB::new(MatRef::row_major(&vs[kv * per_head..], hd), total_keys, hd))
                        .collect();
                    let mut head_out: Vec<f32> = Vec::new();
                    let mut q0 = 0;
                    while q0 < seq {
                        let rows = block.min(seq - q0);
                        let visible = offset + q0 + rows;
                        let size = rows * visible;
                        probs.resize(h * size, 0.0);
                        // Tasks of (head, band of rows), balanced over the threads by rayon; each
                        // band's softmax runs while its scores are still in L2.
                        let band = (rows / 2).div_ceil(12).max(1) * 12;
                        probs.par_chunks_mut(size).enumerate().for_each(|(head, scores)| {
                            scores.par_chunks_mut(band * visible).enumerate().for_each(|(i, scores)| {
                                let (r0, n_rows) = (i * band, band.min(rows - i * band));
                                // Query head `kv * n_rep + r` reads KV head `kv` (HF `repeat_kv`).
                                let a = MatRef::row_major(&qs[(head * seq + q0 + r0) * hd..], hd);
                                sgemm::matmul_packed(a, &keys[head / n_rep], scores, n_rows, visible, hd, visible);
                                for (r, row) in scores.chunks_mut(visible).enumerate() {
                                    let valid = offset + q0 + r0 + r + 1;
                                    softmax_row(&mut row[..valid], scale);
                                    row[valid..].fill(0.0);
                                }
                            });
                        });
                        if stream {
                            if let Some(sink) = hooks.attention_sink() {
                                let q_start = offset + q0;
                                let heads = h;
                                let kv_len = visible;
                                sink.consume(AttentionBlock { layer, q_start, heads, rows, kv_len, total_keys, probs: &probs })?;
                            }
                        }
                        head_out.resize(h * rows * hd, 0.0);
                        head_out.par_chunks_mut(rows * hd).enumerate().for_each(|(head, out)| {
                            out.par_chunks_mut(band * hd).enumerate().for_each(|(i, out)| {
                                let (r0, n_rows) = (i * band, band.min(rows - i * band));
                                let p = MatRef::row_major(&probs[head * size + r0 * visible..], visible);
                                sgemm::matmul_packed(p, &values[head / n_rep], out, n_rows, hd, visible, hd);
                            });
                        });
                        // [H, rows, d_head] → rows of the merged-heads layout.
                        for (head, out) in head_out.chunks(rows * hd).enumerate() {
                            for (r, src) in out.chunks(hd).enumerate() {
                                let dst = ((q0 + r) * h + head) * hd;
                                z[dst..dst + hd].copy_from_slice(src);
                            }
                        }
                        q0 += rows;
                    }
                    Ok(())
                })
            })
        })????;
        Ok(Tensor::from_vec(z, (1, seq, h, hd), q.device())?)
    }
}

/// Additive causal mask `[rows, visible]` for query rows starting at absolute position `first`:
/// `-inf` where the key comes after the query. `None` when no entry is masked.
fn causal_mask(first: usize, rows: usize, visible: usize, device: &Device) -> Result<Option<Tensor>> {
    // Row 0 sees keys up to `first`; later rows see more, so nothing is masked past this test.
    if first + 1 >= visible {
        return Ok(None);
    }
    let mut mask = vec![0f32; rows * visible];
    for r in 0..rows {
        for kk in (first + r + 1).min(visible)..visible {
            mask[r * visible + kk] = f32::NEG_INFINITY;
        }
    }
    Ok(Some(Tensor::from_vec(mask, (rows, visible), device)?))
}

/// Softmax of `scale · scores` over the keys each query may see, in one pass per row on CPU
/// (the same arithmetic as HF eager: scale, mask, subtract the row max, exp, divide by the sum).
/// `scores` is `[1, H, rows, visible]`; row `r` is absolute position `first + r`.
fn scaled_causal_softmax(scores: &Tensor, scale: f32, first: usize) -> Result<Tensor> {
    use rayon::prelude::*;
    let scores = scores.contiguous()?;
    let visible = scores.dim(3)?;
    let rows = scores.dim(2)?;
    let n = scores.elem_count();
    let mut out = vec![0f32; n];
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
            softmax_row(&mut dst[..valid], scale);
        });
    }
    Ok(Tensor::from_vec(out, scores.shape(), scores.device())?)
}

/// `e^x` for `x <= 0` (softmax arguments after subtracting the row max), branch-free so the loop
/// vectorises: `x = n·ln2 + r` with a two-part ln2 (Cody–Waite), a degree-6 polynomial for `e^r` on
/// `|r| <= ln2/2`, and `2^n` put into the exponent bits. Relative error below 3e-7 (tested against
/// `f32::exp`); arguments below -87 are clamped (`e^-87` ≈ 1.6e-38 instead of a subnormal).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer with plain adds; `f32::round`
    // would be a libm call per element on baseline x86-64 and stop the loop from vectorising.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor-like coefficients of e^r refined for the interval (minimax).
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    er * scale
}

/// `y = silu(g) · u = g / (1 + e^-g) · u`, candle's and PyTorch's expression, with `e^-g` from
/// [`exp_nonpositive`]'s polynomial (exact to a few ulp for arguments up to 88, where `-g` is
/// clamped: beyond it `y` is below 1e-36 either way). Vector and scalar lanes do the same
/// arithmetic: a value does not depend on where it sits in the slice.
fn silu_mul_row(g: &[f32], u: &[f32], y: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if !portable() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            done = unsafe { simd::silu_mul_avx2(g, u, y) };
        }
    }
    for ((y, &g), &u) in y[done..].iter_mut().zip(&g[done..]).zip(&u[done..]) {
        *y = g / (1.0 + exp_nonpositive((-g).min(88.0))) * u;
    }
}

/// `dst = softmax(scale · src)` with the widest vector unit the CPU has. Every path does the same
/// per-element arithmetic as [`exp_nonpositive`] (no FMA contraction); only the order in which the
/// row sum is accumulated differs (relative differences of order 1e-7). Like PyTorch's CPU
/// softmax, rows are normalised by multiplying with `1 / sum` (a division per element cost
/// measurably more).
fn softmax_row(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if !portable() {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { simd::softmax_row_avx512(row, scale) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { simd::softmax_row_avx2(row, scale) };
        }
    }
    softmax_row_portable(row, scale)
}

/// Explicit vector versions of the softmax row: the compiler does not vectorise the saturating
/// float→int conversion of the scalar `exp`, so left to itself the loop runs one lane at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::exp_nonpositive;
    use std::arch::x86_64::*;

    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    const POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let round = _mm512_set1_ps(ROUND);
        let n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)), round), round);
        let r = _mm512_sub_ps(
            _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(LN2_HI))),
            _mm512_mul_ps(n, _mm512_set1_ps(LN2_LO)),
        );
        let mut p = _mm512_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(*c));
        }
        let one = _mm512_set1_ps(1.0);
        let er = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), one);
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
        _mm512_mul_ps(er, _mm512_castsi512_ps(bits))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn softmax_row_avx512(row: &mut [f32], scale: f32) {
        const W: usize = 16;
        let n = row.len();
        let body = n - n % W;
        let d = row.as_mut_ptr();
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            vmax = _mm512_max_ps(vmax, unsafe { _mm512_loadu_ps(d.add(i)) });
        }
        let max = row[body..].iter().fold(_mm512_reduce_max_ps(vmax), |m, &x| if x > m { x } else { m });
        let (vscale, vmax) = (_mm512_set1_ps(scale), _mm512_set1_ps(max * scale));
        let mut vsum = _mm512_setzero_ps();
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            let x = unsafe { _mm512_loadu_ps(d.add(i)) };
            let e = exp16(_mm512_sub_ps(_mm512_mul_ps(x, vscale), vmax));
            vsum = _mm512_add_ps(vsum, e);
            unsafe { _mm512_storeu_ps(d.add(i), e) };
        }
        let mut sum = _mm512_reduce_add_ps(vsum);
        for x in &mut row[body..] {
            *x = exp_nonpositive(*x * scale - max * scale);
            sum += *x;
        }
        let inv = 1.0 / sum;
        let vinv = _mm512_set1_ps(inv);
        for i in (0..body).step_by(W) {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(d.add(i), _mm512_mul_ps(_mm512_loadu_ps(d.add(i)), vinv)) };
        }
        for x in &mut row[body..] {
            *x *= inv;
        }
    }

    #[target_feature(enable = "avx2")]
    fn exp8(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let round = _mm256_set1_ps(ROUND);
        let n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)), round), round);
        let r = _mm256_sub_ps(
            _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI))),
            _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
        );
        let mut p = _mm256_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(*c));
        }
        let one = _mm256_set1_ps(1.0);
        let er = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r), one);
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(er, _mm256_castsi256_ps(bits))
    }

    /// [`super::silu_mul_row`] over the longest multiple of eight elements; returns how many it did.
    #[target_feature(enable = "avx2")]
    pub(super) fn silu_mul_avx2(g: &[f32], u: &[f32], y: &mut [f32]) -> usize {
        let n = y.len().min(g.len()).min(u.len());
        let body = n - n % 8;
        let (one, sign, max_arg) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0), _mm256_set1_ps(88.0));
        for i in (0..body).step_by(8) {
            // SAFETY: i + 8 <= body <= the length of each slice.
            let (gv, uv) = unsafe { (_mm256_loadu_ps(g.as_ptr().add(i)), _mm256_loadu_ps(u.as_ptr().add(i))) };
            let e = exp8(_mm256_min_ps(_mm256_xor_ps(gv, sign), max_arg));
            let out = _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), uv);
            unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(i), out) };
        }
        body
    }

    #[target_feature(enable = "avx2")]
    fn hmax8(v: __m256) -> f32 {
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats into an 8-float array.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn softmax_row_avx2(row: &mut [f32], scale: f32) {
        const W: usize = 8;
        let n = row.len();
        let body = n - n % W;
        let d = row.as_mut_ptr();
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            vmax = _mm256_max_ps(vmax, unsafe { _mm256_loadu_ps(d.add(i)) });
        }
        let max = row[body..].iter().fold(hmax8(vmax), |m, &x| if x > m { x } else { m });
        let (vscale, vmax) = (_mm256_set1_ps(scale), _mm256_set1_ps(max * scale));
        let mut vsum = _mm256_setzero_ps();
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            let x = unsafe { _mm256_loadu_ps(d.add(i)) };
            let e = exp8(_mm256_sub_ps(_mm256_mul_ps(x, vscale), vmax));
            vsum = _mm256_add_ps(vsum, e);
            unsafe { _mm256_storeu_ps(d.add(i), e) };
        }
        let mut lanes = [0f32; W];
        // SAFETY: 8 floats into an 8-float array.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vsum) };
        let mut sum: f32 = lanes.iter().sum();
        for x in &mut row[body..] {
            *x = exp_nonpositive(*x * scale - max * scale);
            sum += *x;
        }
        let inv = 1.0 / sum;
        let vinv = _mm256_set1_ps(inv);
        for i in (0..body).step_by(W) {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(d.add(i), _mm256_mul_ps(_mm256_loadu_ps(d.add(i)), vinv)) };
        }
        for x in &mut row[body..] {
            *x *= inv;
        }
    }
}

/// Scalar fallback; independent lanes let the max and the sum vectorise where the compiler can.
fn softmax_row_portable(row: &mut [f32], scale: f32) {
    const LANES: usize = 16;
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lane_max.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut max = tail.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for m in lane_max {
        max = if m > max { m } else { max };
    }
    // scale > 0, so the max of the scaled row is the scaled max.
    let max = max * scale;
    for x in row.iter_mut() {
        *x = exp_nonpositive(*x * scale - max);
    }
    let mut lane_sum = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let mut sum: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (s, &x) in lane_sum.iter_mut().zip(c) {
            *s += x;
        }
    }
    sum += lane_sum.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Hand one block of probabilities `[1, H, rows, visible]` to the hooks' sink, without a copy on
/// CPU.
#[allow(clippy::too_many_arguments)]
fn send_block(
    hooks: &mut dyn Hooks,
    layer: usize,
    q_start: usize,
    heads: usize,
    rows: usize,
    visible: usize,
    total_keys: usize,
    probs: &Tensor,
) -> Result<()> {
    let Some(sink) = hooks.attention_sink() else {
        return Ok(());
    };
    let probs = probs.contiguous()?;
    let n = heads * rows * visible;
    let block = AttentionBlock { layer, q_start, heads, rows, kv_len: visible, total_keys, probs: &[] };
    {
        let (storage, layout) = probs.storage_and_layout();
        if let candle_core::Storage::Cpu(cpu) = &*storage {
            let start = layout.start_offset();
            let data = &cpu.as_slice::<f32>()?[start..start + n];
            let result = sink.consume(AttentionBlock { probs: data, ..block });
            return result;
        }
    }
    // Other devices: one copy of the block to the host.
    let host = probs.flatten_all()?.to_vec1::<f32>()?;
    sink.consume(AttentionBlock { probs: &host, ..block })
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
}

/// A loaded decoder-only language model (f32 weights).
#[derive(Debug, Clone)]
pub struct Model {
    config: Config,
    architecture: Architecture,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Tensor,
    rotary: Rotary,
    device: Device,
    /// Query rows per attention block; `None` picks about 32 MiB of probabilities per block.
    block_rows: Option<usize>,
}

/// Tensors by HF name, consumed as the model is built; errors name the missing key.
struct TensorStore {
    tensors: HashMap<String, Tensor>,
    device: Device,
}

impl TensorStore {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.remove(name).ok_or_else(|| Error::invalid(format!("missing tensor `{name}`")))?;
        if t.dims() != shape {
            return Err(Error::invalid(format!(
                "tensor `{name}` has shape {:?}, config implies {:?}",
                t.dims(),
                shape
            )));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(&self.device)?)
    }
    fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.tensors.contains_key(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let w = self.take(&format!("{prefix}.weight"), &[out, inp])?;
        let b = if bias {
            Some(self.take(&format!("{prefix}.bias"), &[out])?)
        } else {
            self.take_opt(&format!("{prefix}.bias"), &[out])?
        };
        Ok(Linear::new(w, b))
    }
}

impl Model {
    /// Build a model from tensors named as in HF checkpoints (`model.embed_tokens.weight`,
    /// `model.layers.{i}.self_attn.q_proj.weight`, ..., `model.norm.weight`, `lm_head.weight`
    /// unless tied). Every tensor is converted to f32 on `device`.
    pub fn from_tensors(config: Config, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Model> {
        let architecture = config.architecture().map_err(Error::Invalid)?;
        config.validate().map_err(Error::Invalid)?;
        let mut store = TensorStore { tensors, device: device.clone() };
        let (d, hd) = (config.hidden_size, config.head_dim());
        let (h, h_kv) = (config.num_attention_heads, config.num_kv_heads());
        let embed_tokens = store.take("model.embed_tokens.weight", &[config.vocab_size, d])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qk_norm = architecture == Architecture::Qwen3;
            let self_attn = Attention {
                q_proj: store.linear(&format!("{p}.self_attn.q_proj"), h * hd, d, config.qkv_bias())?,
                k_proj: store.linear(&format!("{p}.self_attn.k_proj"), h_kv * hd, d, config.qkv_bias())?,
                v_proj: store.linear(&format!("{p}.self_attn.v_proj"), h_kv * hd, d, config.qkv_bias())?,
                o_proj: store.linear(&format!("{p}.self_attn.o_proj"), d, h * hd, config.o_bias())?,
                q_norm: if qk_norm { Some(store.take(&format!("{p}.self_attn.q_norm.weight"), &[hd])?) } else { None },
                k_norm: if qk_norm { Some(store.take(&format!("{p}.self_attn.k_norm.weight"), &[hd])?) } else { None },
                num_heads: h,
                num_kv_heads: h_kv,
                head_dim: hd,
                rms_norm_eps: config.rms_norm_eps,
            };
            let i_size = config.intermediate_size;
            let mlp = Mlp {
                gate_proj: store.linear(&format!("{p}.mlp.gate_proj"), i_size, d, false)?,
                up_proj: store.linear(&format!("{p}.mlp.up_proj"), i_size, d, false)?,
                down_proj: store.linear(&format!("{p}.mlp.down_proj"), d, i_size, false)?,
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: store.take(&format!("{p}.input_layernorm.weight"), &[d])?,
                post_attention_layernorm: store.take(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
            });
        }
        let norm = store.take("model.norm.weight", &[d])?;
        let lm_head = match store.take_opt("lm_head.weight", &[config.vocab_size, d])? {
            Some(w) if !config.tie_word_embeddings => w,
            _ => embed_tokens.clone(),
        };
        let rotary = Rotary::new(&config);
        Ok(Model {
            config,
            architecture,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
            device: device.clone(),
            block_rows: None,
        })
    }

    /// Fix the number of query rows per attention block (memory/speed trade-off; results are
    /// identical for any value). `None` restores the automatic choice.
    pub fn set_attention_block_rows(&mut self, rows: Option<usize>) {
        self.block_rows = rows.map(|r| r.max(1));
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    pub fn num_heads(&self) -> usize {
        self.config.num_attention_heads
    }
    /// The `[vocab, d]` input embedding matrix.
    pub fn embedding_matrix(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// Rows of the embedding matrix for `ids`, as `[1, L, d]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let vocab = self.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(format!("token id {bad} out of range (vocab size {vocab})")));
        }
        let idx = Tensor::new(ids, &self.device)?;
        Ok(self.embed_tokens.index_select(&idx, 0)?.unsqueeze(0)?)
    }

    /// Apply the LM head to hidden states `[.., d]`.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        linear(hidden, &self.lm_head, None)
    }

    // --- Added for the CODI residual decomposition (issue 13, `codi::decompose`): direct logit
    // --- attribution and the logit lens read the final norm and the unembedding.
    /// The final RMSNorm's weight `γ` `[d]` (`model.norm.weight`, TransformerLens `ln_final.w`).
    pub fn final_norm_weight(&self) -> &Tensor {
        &self.norm
    }
    /// The final RMSNorm applied to residual-stream vectors `[.., d]` (as at the end of the forward).
    pub fn final_norm(&self, residual: &Tensor) -> Result<Tensor> {
        rms_norm(residual, &self.norm, self.config.rms_norm_eps)
    }
    /// The `[vocab, d]` unembedding (`lm_head.weight`, or the embedding when tied).
    pub fn unembedding_matrix(&self) -> &Tensor {
        &self.lm_head
    }
    // --- end of the decomposition accessors.

    /// Forward pass over new positions, continuing after what `cache` holds; logits for every
    /// position.
    pub fn forward(&self, input: Input<'_>, cache: &mut KvCache, hooks: &mut dyn Hooks) -> Result<ForwardOutput> {
        self.forward_with(input, cache, hooks, Logits::All)
    }

    /// Forward pass choosing which logits to compute.
    pub fn forward_with(
        &self,
        input: Input<'_>,
        cache: &mut KvCache,
        hooks: &mut dyn Hooks,
        logits: Logits,
    ) -> Result<ForwardOutput> {
        let offset = cache.len;
        if cache.layers.len() != self.layers.len() {
            return Err(Error::invalid("KV cache was made for a different model"));
        }
        let x = match input {
            Input::Ids(ids) => {
                if ids.is_empty() {
                    return Err(Error::invalid("forward called with no tokens"));
                }
                self.embed(ids)?
            }
            Input::Embeds(e) => {
                let e = if e.rank() == 2 { e.unsqueeze(0)? } else { e.clone() };
                let (b, l, d) = e.dims3()?;
                if b == 0 || d != self.config.hidden_size || l == 0 {
                    return Err(Error::invalid(format!(
                        "input embeddings must be [B, L, {}], got {:?}",
                        self.config.hidden_size,
                        e.dims()
                    )));
                }
                e.to_dtype(DType::F32)?.to_device(&self.device)?
            }
        };
        let (batch, seq) = (x.dim(0)?, x.dim(1)?);
        if let Some((k, _)) = cache.layers.iter().flatten().next() {
            if k.dim(0)? != batch {
                return Err(Error::invalid(format!(
                    "KV cache holds {} sequences, the input {batch}",
                    k.dim(0)?
                )));
            }
        }
        if offset + seq > self.config.max_position_embeddings {
            return Err(Error::invalid(format!(
                "sequence of {} positions exceeds the model's context of {} (max_position_embeddings)",
                offset + seq,
                self.config.max_position_embeddings
            )));
        }
        hooks.begin(offset, seq);
        let (cos, sin) = self.rotary.tables(offset, seq, &self.device)?;
        let mut x = hook(hooks, HookPoint::Embed, x)?;
        let eps = self.config.rms_norm_eps;
        for (i, layer) in self.layers.iter().enumerate() {
            x = hook(hooks, HookPoint::ResidPre(i), x)?;
            let h = rms_norm(&x, &layer.input_layernorm, eps)?;
            let attn =
                layer.self_attn.forward(&h, i, offset, &cos, &sin, &mut cache.layers[i], hooks, self.block_rows)?;
            let attn = hook(hooks, HookPoint::AttnOut(i), attn)?;
            x = hook(hooks, HookPoint::ResidMid(i), (x + attn)?)?;
            let h = rms_norm(&x, &layer.post_attention_layernorm, eps)?;
            let mlp = hook(hooks, HookPoint::MlpOut(i), layer.mlp.forward(&h)?)?;
            x = hook(hooks, HookPoint::ResidPost(i), (x + mlp)?)?;
        }
        cache.len = offset + seq;
        let hidden = hook(hooks, HookPoint::FinalNorm, rms_norm(&x, &self.norm, eps)?)?;
        let logits = match logits {
            Logits::All => Some(self.lm_head(&hidden)?),
            Logits::Last => Some(self.lm_head(&hidden.narrow(1, seq - 1, 1)?)?),
            Logits::None => None,
        };
        Ok(ForwardOutput { logits, hidden })
    }
}

/// Shorthand used by tests and callers: last-position logits as a `Vec<f32>`.
pub fn last_logits(out: &ForwardOutput) -> Result<Vec<f32>> {
    let logits = out.logits()?;
    let l = logits.dim(1)?;
    Ok(logits.narrow(1, l - 1, 1)?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_silu_mul_matches_f64_reference_everywhere_in_the_slice() {
        let n = 3 * (1 << 14) + 5;
        let mut gate: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 37.0).collect();
        gate[..6].copy_from_slice(&[0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30]);
        let up: Vec<f32> = (0..n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 91.0).collect();
        let (g, u) = (Tensor::from_vec(gate.clone(), (1, n), &Device::Cpu).unwrap(), Tensor::from_vec(up.clone(), (1, n), &Device::Cpu).unwrap());
        let fused = silu_mul(&g, &u).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for ((&y, &g), &u) in fused.iter().zip(&gate).zip(&up) {
            let want = g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64;
            assert!((y as f64 - want).abs() <= 1e-6 * want.abs() + 1e-35, "silu({g}) · {u}: {y} vs {want}");
        }
        // The same value gives the same result in a vector lane and in the scalar tail.
        let mut tail = [0f32; 9];
        silu_mul_row(&[gate[7]; 9], &[up[7]; 9], &mut tail);
        assert!(tail.iter().all(|y| y.to_bits() == tail[0].to_bits()));
    }

    #[test]
    fn causal_mask_masks_future_keys_only() {
        let m = causal_mask(2, 3, 5, &Device::Cpu).unwrap().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0][..3], [0.0, 0.0, 0.0]);
        assert!(m[0][3].is_infinite() && m[0][4].is_infinite());
        assert!(m[1][4].is_infinite() && m[1][3] == 0.0);
        assert!(m[2].iter().all(|&x| x == 0.0));
        assert!(causal_mask(4, 1, 5, &Device::Cpu).unwrap().is_none());
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f32;
        for i in 0..200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (a, b) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e4) < 2e-38);
    }

    #[test]
    fn block_rows_respect_budget() {
        assert_eq!(query_block_rows(9, 3000, 3000), 77);
        assert_eq!(query_block_rows(9, 10, 5), 16);
    }
}
