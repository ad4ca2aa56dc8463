//! The decoder: one implementation for the Llama family (Llama-3.x with llama3 RoPE scaling,
//! SmolLM2, R1-Distill-Llama) and Qwen2/Qwen3 (q/k/v bias, per-head q/k RMSNorm before RoPE,
//! explicit head_dim), matching HF transformers' eager attention (`modeling_llama.py`, `modeling_qwen3.py`).
//!
//! Laid out like candle-transformers' model files (rotary → MLP → attention → layer → model; the
//! rotary tables in [`rotary`], the non-finite guards in [`finite`], loading in [`load`], the KV
//! cache in [`kv_cache`]), with two deliberate differences: `forward(&self, ..)` takes an
//! explicit [`KvCache`] and a [`Hooks`] value, and it returns logits and final-norm hidden states
//! for every position.
//!
//! Attention is computed in query blocks: each block's probabilities are handed to the hooks'
//! [`AttentionSink`](super::AttentionSink) and dropped, so peak memory is
//! `O(heads × block × T)` instead of `O(layers × heads × T²)`; the numbers are the same as the
//! full computation because softmax is per row.
//!
//! The arithmetic-heavy steps (linear layers, `silu(gate) · up`, attention over query blocks)
//! call [`super::cpu`], which runs this crate's SIMD kernels where they apply and candle's ops
//! elsewhere; the step lists below read the same either way.

use candle_core::{DType, Device, Tensor};

use super::config::{Architecture, Config};
use super::cpu::{self, linear, silu_mul, Kernels};
use super::hooks::{HookPoint, Hooks};
use super::stored::StoredMatrix;
use super::AttentionBlock;
use crate::{Error, Result};

mod finite;
mod kv_cache;
mod load;
mod pass_memory;
mod rotary;
mod weight_memory;

use finite::{ensure_finite, ensure_finite_probabilities, non_finite};
use rotary::Rotary;

pub use kv_cache::KvCache;
use kv_cache::LayerKv;
pub use weight_memory::WeightMemory;

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

/// A linear layer `x · Wᵀ + b` whose weight is kept as the checkpoint stores it.
#[derive(Debug, Clone)]
struct Linear {
    weight: StoredMatrix,
    bias: Option<Tensor>,
}

fn project(k: Kernels, lin: &Linear, x: &Tensor) -> Result<Tensor> {
    linear(k, x, &lin.weight, lin.bias.as_ref())
}

fn rms_norm(k: Kernels, x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    elementwise(k, || match cpu::rms_norm(k, x, weight, eps as f32)? {
        Some(y) => Ok(y),
        None => Ok(candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?),
    })
}

/// `[b, L, n·d]` → `[b, n, L, d]`, each head's vector normalised by `norm` (weight, epsilon)
/// and then rotated by RoPE when `rope` has the tables.
fn split_heads(k: Kernels, x: &Tensor, n: usize, head_dim: usize, norm: Option<(&Tensor, f64)>, rope: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
    elementwise(k, || match cpu::split_heads(k, x, n, head_dim, norm.map(|(w, eps)| (w, eps as f32)), rope)? {
        Some(y) => Ok(y),
        None => {
            let (b, seq, _) = x.dims3()?;
            let y = x.reshape((b, seq, n, head_dim))?.transpose(1, 2)?.contiguous()?;
            let y = match norm {
                Some((w, eps)) => rms_norm(k, &y, w, eps)?,
                None => y,
            };
            match rope {
                Some((cos, sin)) => Ok(candle_nn::rotary_emb::rope(&y, cos, sin)?),
                None => Ok(y),
            }
        }
    })
}

/// Run one element-wise pass over activations, timed as [`cpu::phases::Site::Elementwise`] (work:
/// bytes of its output).
fn elementwise(k: Kernels, f: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    let started = cpu::phases::start(k);
    let y = f()?;
    cpu::phases::record(cpu::phases::Site::Elementwise, started, (y.elem_count() * y.dtype().size_in_bytes()) as u64);
    Ok(y)
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    /// Whether no projection has a bias (the chunked kernels take none).
    fn unbiased(&self) -> bool {
        [&self.gate_proj, &self.up_proj, &self.down_proj].iter().all(|l| l.bias.is_none())
    }

    fn forward(&self, k: Kernels, x: &Tensor) -> Result<Tensor> {
        if self.unbiased() {
            if let Some(y) = cpu::gated_mlp(k, x, &self.gate_proj.weight, &self.up_proj.weight, &self.down_proj.weight)? {
                return Ok(y);
            }
        }
        let (gate, up) = (project(k, &self.gate_proj, x)?, project(k, &self.up_proj, x)?);
        let act = elementwise(k, || silu_mul(k, &gate, &up))?;
        // Not held through the down projection: the MLP is the layer's peak of memory.
        drop((gate, up));
        project(k, &self.down_proj, &act)
    }
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
        kernels: Kernels,
        x: &Tensor,
        layer: usize,
        offset: usize,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut Option<LayerKv>,
        hooks: &mut dyn Hooks,
        block_rows: Option<usize>,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let (h, h_kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);

        // 1–4. Project; split heads [b, L, H*hd] -> [b, H, L, hd]; Qwen3's RMSNorm over each
        //    head's vector; RoPE (rotate-half convention; GGUF llama weights were un-permuted at
        //    load). Unless a hook must see q and k before the rotation (TransformerLens's
        //    `hook_q`/`hook_k`; `hook_rot_q`/`hook_rot_k` see them after it), the split, the norm
        //    and the rotation are one pass; the projections are freed as soon as they are split.
        let rotate_now = !hooks.wants(&HookPoint::AttnQ(layer)) && !hooks.wants(&HookPoint::AttnK(layer));
        let eps = self.rms_norm_eps;
        let rope = rotate_now.then_some((cos, sin));
        let q = split_heads(kernels, &project(kernels, &self.q_proj, x)?, h, hd, self.q_norm.as_ref().map(|w| (w, eps)), rope)?;
        let k = split_heads(kernels, &project(kernels, &self.k_proj, x)?, h_kv, hd, self.k_norm.as_ref().map(|w| (w, eps)), rope)?;
        let (q, k) = if rotate_now {
            (q, k)
        } else {
            let q = hook(hooks, HookPoint::AttnQ(layer), q)?;
            let k = hook(hooks, HookPoint::AttnK(layer), k)?;
            let q = elementwise(kernels, || Ok(candle_nn::rotary_emb::rope(&q.contiguous()?, cos, sin)?))?;
            let k = elementwise(kernels, || Ok(candle_nn::rotary_emb::rope(&k.contiguous()?, cos, sin)?))?;
            (q, k)
        };
        let v = split_heads(kernels, &project(kernels, &self.v_proj, x)?, h_kv, hd, None, None)?;
        let v = hook(hooks, HookPoint::AttnV(layer), v)?;
        let q = hook(hooks, HookPoint::AttnRotQ(layer), q)?;
        let k = hook(hooks, HookPoint::AttnRotK(layer), k)?;

        // 5. Append to the KV cache.
        //    In place where the layer's buffers have room (`KvCache::reserve`).
        let (k, v) = match cache {
            Some(layer) => {
                layer.append(&k, &v)?;
                layer.keys_values()?
            }
            None => {
                *cache = Some(LayerKv::new(k.clone(), v.clone())?);
                (k, v)
            }
        };
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
        // Attention suppression alone at this layer's scores: the kernels apply it in their
        // softmax; where they do not apply, the full path below calls the hook.
        let suppressed = if full { hooks.key_suppression(layer) } else { None };
        let kernel_block = block_rows.unwrap_or_else(|| query_block_rows(h, total_keys, seq));
        if !full || suppressed.is_some() {
            let sink = if stream { hooks.attention_sink() } else { None };
            let ranges = suppressed.as_deref().unwrap_or(&[]);
            if let Some(z) = cpu::attend(kernels, &q, &k, &v, layer, offset, kernel_block, sink, ranges)? {
                let z = hook(hooks, HookPoint::AttnZ(layer), z)?;
                return project(kernels, &self.o_proj, &z.reshape((b, seq, h * hd))?);
            }
        }
        let block = if full { seq } else { kernel_block };
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
                ensure_finite_probabilities(&probs, layer, offset + q0)?;
                if full {
                    hook(hooks, HookPoint::AttnPattern(layer), probs)?
                } else {
                    probs
                }
            } else {
                cpu::scaled_causal_softmax(kernels, &scores, scale as f32, offset + q0, layer)?
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
        project(kernels, &self.o_proj, &z.reshape((b, seq, h * hd))?)
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
    // Other devices: the sink reduces the block there if it can (only its small result is
    // copied back), else one copy of the block to the host.
    if sink.consume_on_device(layer, q_start, total_keys, &probs.reshape((heads, rows, visible))?)? {
        return Ok(());
    }
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

/// `x + delta` and RMSNorm of the sum with `weight` in one pass, unless `hooked` (a hook may
/// replace the sum, so the norm must follow the hook): `None` then, or where the CPU pass does
/// not apply. `point` names the sum in the error raised for a non-finite value.
fn add_and_norm(k: Kernels, x: &Tensor, delta: &Tensor, weight: &Tensor, eps: f64, hooked: bool, point: HookPoint) -> Result<Option<(Tensor, Tensor)>> {
    if hooked {
        return Ok(None);
    }
    let started = cpu::phases::start(k);
    let fused = cpu::add_rms_norm(k, x, delta, weight, eps as f32)?;
    cpu::phases::record(cpu::phases::Site::Elementwise, started, (8 * x.elem_count()) as u64);
    match fused {
        Some((_, _, false)) => Err(non_finite(point)),
        Some((sum, normed, true)) => Ok(Some((sum, normed))),
        None => Ok(None),
    }
}

impl DecoderLayer {
    /// One pre-norm block: `x + attn(norm(x))`, then `+ mlp(norm(·))`, with the residual hooks.
    /// `normed` is `input_layernorm(x)` when the previous layer's last add computed it;
    /// `next_norm` is the norm that follows this layer (the next layer's `input_layernorm`, or
    /// the final norm), applied in the same pass as the last residual add when no hook sits
    /// between them. Returns the residual stream and, when so computed, its next norm.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        k: Kernels,
        x: Tensor,
        normed: Option<Tensor>,
        (next_norm, next_hooked): (&Tensor, bool),
        layer: usize,
        offset: usize,
        (cos, sin): (&Tensor, &Tensor),
        cache: &mut Option<LayerKv>,
        hooks: &mut dyn Hooks,
        eps: f64,
        block_rows: Option<usize>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (x, h) = match normed {
            Some(h) => (x, h),
            None => {
                let x = hook(hooks, HookPoint::ResidPre(layer), x)?;
                let h = rms_norm(k, &x, &self.input_layernorm, eps)?;
                (x, h)
            }
        };
        let attn = self.self_attn.forward(k, &h, layer, offset, cos, sin, cache, hooks, block_rows)?;
        drop(h);
        let attn = hook(hooks, HookPoint::AttnOut(layer), attn)?;
        let mid = HookPoint::ResidMid(layer);
        let post = HookPoint::ResidPost(layer);
        // With no hook from the residual add to the next norm, the rest of the layer runs in
        // chunks of rows (`cpu::mlp_block`: the same bits, its intermediates kept in cache).
        let hooked_after_attention = [mid, HookPoint::MlpOut(layer), post].iter().any(|p| hooks.wants(p)) || next_hooked;
        if !hooked_after_attention && self.mlp.unbiased() {
            let weights = (&self.mlp.gate_proj.weight, &self.mlp.up_proj.weight, &self.mlp.down_proj.weight);
            if let Some(block) = cpu::mlp_block(k, &x, &attn, &self.post_attention_layernorm, weights, next_norm, eps as f32)? {
                if !block.mid_finite {
                    return Err(non_finite(mid));
                }
                if !block.out_finite {
                    return Err(non_finite(post));
                }
                return Ok((block.out, Some(block.next)));
            }
        }
        // Each sum replaces its terms at once (shadowing would keep them alive to the end of the
        // layer, through the MLP's peak).
        let (x, h) = match add_and_norm(k, &x, &attn, &self.post_attention_layernorm, eps, hooks.wants(&mid), mid)? {
            Some(pair) => {
                drop((x, attn));
                pair
            }
            None => {
                let x = hook(hooks, mid, elementwise(k, || Ok((x + attn)?))?)?;
                let h = rms_norm(k, &x, &self.post_attention_layernorm, eps)?;
                (x, h)
            }
        };
        let mlp = hook(hooks, HookPoint::MlpOut(layer), self.mlp.forward(k, &h)?)?;
        drop(h);
        let hooked = next_hooked || hooks.wants(&post);
        match add_and_norm(k, &x, &mlp, next_norm, eps, hooked, post)? {
            Some(pair) => {
                drop((x, mlp));
                Ok((pair.0, Some(pair.1)))
            }
            None => {
                let x = hook(hooks, post, elementwise(k, || Ok((x + mlp)?))?)?;
                ensure_finite(&x, post)?;
                Ok((x, None))
            }
        }
    }
}

/// A loaded decoder-only language model: weight matrices as stored (f32, bf16/f16 or GGUF
/// blocks; see [`WeightPrecision`](crate::WeightPrecision)), norms, biases and all arithmetic in f32.
#[derive(Debug, Clone)]
pub struct Model {
    config: Config,
    architecture: Architecture,
    embed_tokens: StoredMatrix,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: StoredMatrix,
    rotary: Rotary,
    device: Device,
    /// Query rows per attention block; `None` picks about 32 MiB of probabilities per block.
    block_rows: Option<usize>,
    /// Which CPU kernels its forward passes take (from the settings it was loaded with).
    kernels: Kernels,
}

impl Model {
    /// Fix the number of query rows per attention block (memory/speed trade-off; results are
    /// identical for any value). `None` restores the automatic choice.
    pub fn set_attention_block_rows(&mut self, rows: Option<usize>) {
        self.block_rows = rows.map(|r| r.max(1));
    }

    /// The CPU kernels its forward passes take ([`Settings::kernels`](crate::Settings::kernels) at load).
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Take other kernels from the next forward pass on (e.g. the portable path for one run).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
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
    /// The `[vocab, d]` input embedding matrix, in f32 (a converted copy when kept otherwise).
    pub fn embedding_matrix(&self) -> Result<Tensor> {
        self.embed_tokens.to_f32(&self.device)
    }

    /// Rows of the embedding matrix for `ids`, as `[1, L, d]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let vocab = self.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(format!("token id {bad} out of range (vocab size {vocab})")));
        }
        Ok(self.embed_tokens.select_rows(ids, &self.device)?.unsqueeze(0)?)
    }

    /// Apply the LM head to hidden states `[.., d]`.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        linear(self.kernels, hidden, &self.lm_head, None)
    }

    // --- Added for the CODI residual decomposition (`codi::decompose`): direct logit
    // --- attribution and the logit lens read the final norm and the unembedding.
    /// The final RMSNorm's weight `γ` `[d]` (`model.norm.weight`, TransformerLens `ln_final.w`).
    pub fn final_norm_weight(&self) -> &Tensor {
        &self.norm
    }
    /// The final RMSNorm applied to residual-stream vectors `[.., d]` (as at the end of the forward).
    pub fn final_norm(&self, residual: &Tensor) -> Result<Tensor> {
        rms_norm(self.kernels, residual, &self.norm, self.config.rms_norm_eps)
    }
    /// The `[vocab, d]` unembedding (`lm_head.weight`, or the embedding when tied), in f32.
    pub fn unembedding_matrix(&self) -> Result<Tensor> {
        self.lm_head.to_f32(&self.device)
    }
    /// Rows `ids` of the unembedding, `[ids.len(), d]` in f32 (without converting the rest).
    pub fn unembedding_rows(&self, ids: &[u32]) -> Result<Tensor> {
        let vocab = self.lm_head.dims().0;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(format!("token id {bad} out of range (vocab size {vocab})")));
        }
        self.lm_head.select_rows(ids, &self.device)
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
        if cache.discard && offset > 0 {
            return Err(Error::invalid("a KvCache::discarding cache kept no keys or values: the pass cannot be continued"));
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
        if let Some(layer) = cache.layers.iter().flatten().next() {
            if layer.rows() != batch {
                return Err(Error::invalid(format!("KV cache holds {} sequences, the input {batch}", layer.rows())));
            }
        }
        if offset + seq > self.config.max_position_embeddings {
            return Err(Error::invalid(format!(
                "sequence of {} positions exceeds the model's context of {} (max_position_embeddings)",
                offset + seq,
                self.config.max_position_embeddings
            )));
        }
        if self.device.is_cpu() {
            self.check_pass_fits(batch, offset, seq, !cache.discard, logits)?;
        }
        hooks.begin(offset, seq);
        let (cos, sin) = self.rotary.tables(offset, seq, &self.device)?;
        let mut x = hook(hooks, HookPoint::Embed, x)?;
        let eps = self.config.rms_norm_eps;
        // Each layer's last residual add also computes the norm that follows it (the next
        // layer's `input_layernorm`, or the final norm), unless the next layer's `hook_resid_pre`
        // may replace the stream in between.
        let mut normed = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let next_norm = match self.layers.get(i + 1) {
                Some(next) => (&next.input_layernorm, hooks.wants(&HookPoint::ResidPre(i + 1))),
                None => (&self.norm, false),
            };
            let k = self.kernels;
            (x, normed) = layer.forward(k, x, normed, next_norm, i, offset, (&cos, &sin), &mut cache.layers[i], hooks, eps, self.block_rows)?;
            if cache.discard {
                cache.layers[i] = None;
            }
        }
        cache.len = offset + seq;
        let hidden = match normed {
            Some(hidden) => hidden,
            None => rms_norm(self.kernels, &x, &self.norm, eps)?,
        };
        let hidden = hook(hooks, HookPoint::FinalNorm, hidden)?;
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
    fn causal_mask_masks_future_keys_only() {
        let m = causal_mask(2, 3, 5, &Device::Cpu).unwrap().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0][..3], [0.0, 0.0, 0.0]);
        assert!(m[0][3].is_infinite() && m[0][4].is_infinite());
        assert!(m[1][4].is_infinite() && m[1][3] == 0.0);
        assert!(m[2].iter().all(|&x| x == 0.0));
        assert!(causal_mask(4, 1, 5, &Device::Cpu).unwrap().is_none());
    }

    #[test]
    fn block_rows_respect_budget() {
        assert_eq!(query_block_rows(9, 3000, 3000), 77);
        assert_eq!(query_block_rows(9, 10, 5), 16);
    }
}
