//! Hook points with TransformerLens names, and the `Hooks` interface the decoder calls at each of
//! them: capture an activation, or return a replacement (intervention). The model code never learns
//! about a particular experiment; all variation lives in a small hooks value.
//!
//! Shapes at the hook points (`B` runs decoded together, usually 1):
//! - `hook_embed`, `blocks.{l}.hook_resid_pre|mid|post`, `hook_attn_out`, `hook_mlp_out`,
//!   `ln_final.hook_normalized`: `[B, L, d_model]` for the `L` positions of this forward call;
//! - `blocks.{l}.attn.hook_q`: `[B, H, L, d_head]` before RoPE (after Qwen3's q-norm), as in
//!   TransformerLens; `hook_rot_q` the same after RoPE;
//! - `hook_k`/`hook_v`: `[B, H_kv, L, d_head]` (the new positions only; k before RoPE),
//!   `hook_rot_k` after RoPE;
//! - `blocks.{l}.attn.hook_attn_scores`: `[B, H, L, L_k]` scaled, masked (future = -inf) logits;
//! - `blocks.{l}.attn.hook_pattern`: `[B, H, L, L_k]` probabilities;
//! - `blocks.{l}.attn.hook_z`: `[B, L, H, d_head]` per-head outputs before `o_proj`.
//!
//! Positions given to interventions are absolute sequence positions (a KV-cached prefix counts).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

use super::AttentionSink;
use crate::{Error, Result};

/// A named activation site, spelled as in TransformerLens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    Embed,
    ResidPre(usize),
    AttnQ(usize),
    AttnK(usize),
    AttnV(usize),
    /// q after RoPE (TransformerLens `hook_rot_q`).
    AttnRotQ(usize),
    /// k after RoPE (TransformerLens `hook_rot_k`).
    AttnRotK(usize),
    AttnScores(usize),
    AttnPattern(usize),
    AttnZ(usize),
    AttnOut(usize),
    ResidMid(usize),
    MlpOut(usize),
    ResidPost(usize),
    FinalNorm,
}

impl HookPoint {
    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            Embed | FinalNorm => None,
            ResidPre(l) | AttnQ(l) | AttnK(l) | AttnV(l) | AttnRotQ(l) | AttnRotK(l) | AttnScores(l)
            | AttnPattern(l) | AttnZ(l)
            | AttnOut(l) | ResidMid(l) | MlpOut(l) | ResidPost(l) => Some(l),
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HookPoint::*;
        match self {
            Embed => write!(f, "hook_embed"),
            ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            AttnQ(l) => write!(f, "blocks.{l}.attn.hook_q"),
            AttnK(l) => write!(f, "blocks.{l}.attn.hook_k"),
            AttnV(l) => write!(f, "blocks.{l}.attn.hook_v"),
            AttnRotQ(l) => write!(f, "blocks.{l}.attn.hook_rot_q"),
            AttnRotK(l) => write!(f, "blocks.{l}.attn.hook_rot_k"),
            AttnScores(l) => write!(f, "blocks.{l}.attn.hook_attn_scores"),
            AttnPattern(l) => write!(f, "blocks.{l}.attn.hook_pattern"),
            AttnZ(l) => write!(f, "blocks.{l}.attn.hook_z"),
            AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            FinalNorm => write!(f, "ln_final.hook_normalized"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        use HookPoint::*;
        match s {
            "hook_embed" => return Ok(Embed),
            "ln_final.hook_normalized" => return Ok(FinalNorm),
            _ => {}
        }
        let bad = || Error::invalid(format!("unknown hook point `{s}` (expected e.g. blocks.3.attn.hook_pattern)"));
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (layer, name) = rest.split_once('.').ok_or_else(bad)?;
        let l: usize = layer.parse().map_err(|_| bad())?;
        Ok(match name {
            "hook_resid_pre" => ResidPre(l),
            "attn.hook_q" => AttnQ(l),
            "attn.hook_k" => AttnK(l),
            "attn.hook_v" => AttnV(l),
            "attn.hook_rot_q" => AttnRotQ(l),
            "attn.hook_rot_k" => AttnRotK(l),
            "attn.hook_attn_scores" => AttnScores(l),
            "attn.hook_pattern" => AttnPattern(l),
            "attn.hook_z" => AttnZ(l),
            "hook_attn_out" => AttnOut(l),
            "hook_resid_mid" => ResidMid(l),
            "hook_mlp_out" => MlpOut(l),
            "hook_resid_post" => ResidPost(l),
            _ => return Err(bad()),
        })
    }
}

/// Called by the decoder at every hook point. `wants` must be cheap: when it returns false the
/// decoder neither clones nor calls `on`, so a model run with [`NoHooks`] pays nothing.
pub trait Hooks {
    /// Called once at the start of every forward call: `offset` = positions already in the KV
    /// cache, `len` = positions in this call.
    fn begin(&mut self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
    fn wants(&self, point: &HookPoint) -> bool;
    /// Observe `value`; return `Some(new)` to replace it (same shape).
    fn on(&mut self, point: &HookPoint, value: &Tensor) -> Result<Option<Tensor>>;
    /// A sink that receives attention probabilities block by block (see
    /// [`AttentionSink`]); `None` (default) skips producing them.
    fn attention_sink(&mut self) -> Option<&mut dyn AttentionSink> {
        None
    }
    /// Key ranges to suppress in `layer` when that is *all* these hooks do at its scores and
    /// pattern ([`Intervention::SuppressKeys`] / [`Intervention::SuppressKeysPerRow`] and nothing
    /// else): the CPU kernels then apply it inside their softmax instead of the decoder
    /// materialising every score for the hook. The decoder still calls the hook (`wants` stays
    /// true) wherever the kernels do not apply. One list applies to every batch row; `B` lists
    /// are one per batch row.
    fn key_suppression(&self, layer: usize) -> Option<Vec<Vec<(usize, usize)>>> {
        let _ = layer;
        None
    }
}

/// No hooks: the plain forward pass.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn wants(&self, _: &HookPoint) -> bool {
        false
    }
    fn on(&mut self, _: &HookPoint, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Hooks that only stream attention to a sink.
pub struct SinkHooks<'a>(pub &'a mut dyn AttentionSink);

impl Hooks for SinkHooks<'_> {
    fn wants(&self, _: &HookPoint) -> bool {
        false
    }
    fn on(&mut self, _: &HookPoint, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    fn attention_sink(&mut self) -> Option<&mut dyn AttentionSink> {
        Some(self.0)
    }
}

/// An edit applied at a hook point.
#[derive(Debug, Clone)]
pub enum Intervention {
    /// Set the activation to zero, at the given absolute positions or everywhere.
    Zero { positions: Option<Vec<usize>> },
    /// Replace the activation at the given absolute positions (or everywhere) by `value`, which
    /// broadcasts against one position (e.g. `[d]` or `[1, 1, d]`) or matches the full shape.
    Replace { positions: Option<Vec<usize>>, value: Tensor },
    /// Add `value` (broadcast) at the given positions or everywhere.
    Add { positions: Option<Vec<usize>>, value: Tensor },
    /// Multiply by a factor at the given positions or everywhere.
    Scale { positions: Option<Vec<usize>>, factor: f64 },
    /// Attention-score knockout: set the pre-softmax scores of the given absolute key ranges
    /// (half-open) to -inf for every head and query, so they get zero probability.
    /// Only meaningful at `hook_attn_scores`.
    KnockoutKeys { ranges: Vec<(usize, usize)> },
    /// Attention suppression as thought-anchors does it: the pre-softmax scores of the given
    /// absolute key ranges (half-open) are set to the dtype minimum (`torch.finfo.min`) for every
    /// head and query, where the key is visible; future keys stay `-inf`. Equal to
    /// [`Intervention::KnockoutKeys`] wherever a query keeps one unsuppressed key; a query whose
    /// every visible key is suppressed (a sentence holding BOS) then spreads its attention evenly
    /// over those keys instead of giving NaN. Only meaningful at `hook_attn_scores`.
    SuppressKeys { ranges: Vec<(usize, usize)> },
    /// [`Intervention::SuppressKeys`] with its own key ranges for each batch row: `ranges[b]` for
    /// row `b` (several suppressed runs of one prefix decoded together). The batch must have
    /// `ranges.len()` rows.
    SuppressKeysPerRow { ranges: Vec<Vec<(usize, usize)>> },
    /// [`Intervention::SuppressKeys`] in the listed heads only (query heads, 0-based); `ranges`
    /// holds one list for every batch row or one per batch row, as for
    /// [`Intervention::SuppressKeysPerRow`]. Applied at the scores hook (the CPU kernels'
    /// in-softmax suppression covers every head, so this takes the hook path).
    SuppressKeysInHeads { ranges: Vec<Vec<(usize, usize)>>, heads: Vec<usize> },
}

/// The usual hooks value: capture some points, intervene at others, optionally stream attention.
#[derive(Default)]
pub struct HookSet<'a> {
    captures: Vec<HookPoint>,
    interventions: Vec<(HookPoint, Intervention)>,
    captured: HashMap<HookPoint, Vec<Tensor>>,
    sink: Option<&'a mut dyn AttentionSink>,
    offset: usize,
}

impl<'a> HookSet<'a> {
    pub fn new() -> Self {
        Self::default()
    }
    /// Record the activation at `point` (one tensor per forward call).
    pub fn capture(mut self, point: HookPoint) -> Self {
        self.captures.push(point);
        self
    }
    pub fn intervene(mut self, point: HookPoint, intervention: Intervention) -> Self {
        self.interventions.push((point, intervention));
        self
    }
    pub fn with_sink(mut self, sink: &'a mut dyn AttentionSink) -> Self {
        self.sink = Some(sink);
        self
    }
    /// The activation captured at `point` by the most recent forward call.
    pub fn captured(&self, point: &HookPoint) -> Option<&Tensor> {
        self.captured.get(point).and_then(|v| v.last())
    }
    /// Every capture at `point`, one per forward call, oldest first.
    pub fn captured_all(&self, point: &HookPoint) -> &[Tensor] {
        self.captured.get(point).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

impl Hooks for HookSet<'_> {
    fn begin(&mut self, offset: usize, _len: usize) {
        self.offset = offset;
    }
    fn wants(&self, point: &HookPoint) -> bool {
        self.captures.contains(point) || self.interventions.iter().any(|(p, _)| p == point)
    }
    fn on(&mut self, point: &HookPoint, value: &Tensor) -> Result<Option<Tensor>> {
        let mut current: Option<Tensor> = None;
        for (p, iv) in &self.interventions {
            if p == point {
                let input = current.as_ref().unwrap_or(value);
                current = Some(apply_intervention(point, input, iv, self.offset)?);
            }
        }
        if self.captures.contains(point) {
            let t = current.clone().unwrap_or_else(|| value.clone());
            self.captured.entry(*point).or_default().push(t);
        }
        Ok(current)
    }
    fn attention_sink(&mut self) -> Option<&mut dyn AttentionSink> {
        match &mut self.sink {
            Some(s) => Some(&mut **s),
            None => None,
        }
    }
    fn key_suppression(&self, layer: usize) -> Option<Vec<Vec<(usize, usize)>>> {
        let (scores, pattern) = (HookPoint::AttnScores(layer), HookPoint::AttnPattern(layer));
        if self.captures.iter().any(|p| *p == scores || *p == pattern) {
            return None;
        }
        // Ranges of every row, then each row's own; the union per row.
        let mut shared = Vec::new();
        let mut per_row: Option<Vec<Vec<(usize, usize)>>> = None;
        for (p, iv) in &self.interventions {
            match (p, iv) {
                (p, Intervention::SuppressKeys { ranges: r }) if *p == scores => shared.extend_from_slice(r),
                (p, Intervention::SuppressKeysPerRow { ranges: r }) if *p == scores => match &mut per_row {
                    None => per_row = Some(r.clone()),
                    Some(rows) if rows.len() == r.len() => rows.iter_mut().zip(r).for_each(|(a, b)| a.extend_from_slice(b)),
                    // Rows that disagree: the hook path reports the mismatch.
                    Some(_) => return None,
                },
                (p, _) if *p == scores || *p == pattern => return None,
                _ => {}
            }
        }
        match per_row {
            Some(mut rows) => {
                rows.iter_mut().for_each(|row| row.extend_from_slice(&shared));
                rows.iter().any(|row| !row.is_empty()).then_some(rows)
            }
            None => (!shared.is_empty()).then(|| vec![shared]),
        }
    }
}

/// The axis that indexes positions at a hook point, and its length must match the call.
fn position_axis(point: &HookPoint) -> usize {
    match point {
        HookPoint::AttnQ(_) | HookPoint::AttnK(_) | HookPoint::AttnV(_) | HookPoint::AttnRotQ(_) | HookPoint::AttnRotK(_) => 2,
        HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => 2, // query positions
        _ => 1,
    }
}

/// A 0/1 mask over the position axis (1 = selected), broadcastable against `value`.
fn position_mask(value: &Tensor, axis: usize, positions: &[usize], offset: usize) -> Result<Tensor> {
    let len = value.dim(axis)?;
    let mut m = vec![0f32; len];
    for &p in positions {
        if p >= offset && p < offset + len {
            m[p - offset] = 1.0;
        }
    }
    let mut shape = vec![1usize; value.rank()];
    shape[axis] = len;
    Ok(Tensor::from_vec(m, shape, value.device())?.to_dtype(value.dtype())?)
}

/// Apply one intervention to an activation (`offset` = absolute position of index 0).
pub(crate) fn apply_intervention(point: &HookPoint, value: &Tensor, iv: &Intervention, offset: usize) -> Result<Tensor> {
    let axis = position_axis(point);
    let select = |positions: &Option<Vec<usize>>| -> Result<Option<Tensor>> {
        positions.as_ref().map(|p| position_mask(value, axis, p, offset)).transpose()
    };
    Ok(match iv {
        Intervention::Zero { positions } => match select(positions)? {
            None => value.zeros_like()?,
            Some(m) => value.broadcast_mul(&(1.0 - m)?)?,
        },
        Intervention::Scale { positions, factor } => match select(positions)? {
            None => value.affine(*factor, 0.0)?,
            Some(m) => value.broadcast_mul(&((m * (*factor - 1.0))? + 1.0)?)?,
        },
        Intervention::Add { positions, value: add } => {
            let add = add.to_dtype(value.dtype())?;
            match select(positions)? {
                None => value.broadcast_add(&add)?,
                Some(m) => value.broadcast_add(&add.broadcast_mul(&m)?)?,
            }
        }
        Intervention::Replace { positions, value: new } => {
            let new = new.to_dtype(value.dtype())?.broadcast_as(value.shape())?;
            match select(positions)? {
                None => new.contiguous()?,
                Some(m) => {
                    let keep = (1.0 - &m)?;
                    (value.broadcast_mul(&keep)? + new.broadcast_mul(&m)?)?
                }
            }
        }
        Intervention::KnockoutKeys { ranges } => {
            let lk = value.dim(value.rank() - 1)?;
            let mut m = vec![0f32; lk];
            for &(a, b) in ranges {
                for x in m.iter_mut().take(b.min(lk)).skip(a) {
                    *x = f32::NEG_INFINITY;
                }
            }
            let mut shape = vec![1usize; value.rank()];
            shape[value.rank() - 1] = lk;
            let mask = Tensor::from_vec(m, shape, value.device())?.to_dtype(DType::F32)?;
            value.to_dtype(DType::F32)?.broadcast_add(&mask)?.to_dtype(value.dtype())?
        }
        Intervention::SuppressKeys { ranges } => suppress_keys(value, std::slice::from_ref(ranges), None)?,
        Intervention::SuppressKeysPerRow { ranges } => {
            let batch = value.dim(0)?;
            if ranges.len() != batch {
                return Err(Error::invalid(format!(
                    "key suppression per batch row at {point}: {} rows of ranges for a batch of {batch}",
                    ranges.len()
                )));
            }
            suppress_keys(value, ranges, None)?
        }
        Intervention::SuppressKeysInHeads { ranges, heads } => {
            let batch = value.dim(0)?;
            if ranges.len() != 1 && ranges.len() != batch {
                return Err(Error::invalid(format!(
                    "key suppression in heads at {point}: {} rows of ranges for a batch of {batch}",
                    ranges.len()
                )));
            }
            suppress_keys(value, ranges, Some(heads))?
        }
    })
}

/// Scores `[B, H, L_q, L_k]` (or `[B, …, L_k]` when `heads` is `None`) with the given key ranges
/// set to `f32::MIN` where visible: `rows` holds one list for every batch row, or one list per
/// batch row; `heads`, when given, limits it to those heads (axis 1).
fn suppress_keys(value: &Tensor, rows: &[Vec<(usize, usize)>], heads: Option<&[usize]>) -> Result<Tensor> {
    let rank = value.rank();
    let lk = value.dim(rank - 1)?;
    let head_count = match heads {
        Some(heads) => {
            let h = value.dim(1)?;
            if let Some(bad) = heads.iter().find(|&&x| x >= h) {
                return Err(Error::invalid(format!("key suppression: head {bad} does not exist ({h} heads)")));
            }
            h
        }
        None => 1,
    };
    let mut columns = vec![0u8; rows.len() * head_count * lk];
    for (row, ranges) in columns.chunks_mut(head_count * lk).zip(rows) {
        for (h, head_row) in row.chunks_mut(lk).enumerate() {
            if heads.is_some_and(|heads| !heads.contains(&h)) {
                continue;
            }
            for &(a, b) in ranges {
                for x in head_row.iter_mut().take(b.min(lk)).skip(a) {
                    *x = 1;
                }
            }
        }
    }
    // [rows, heads or 1, 1, …, L_k]: broadcast over queries (over heads without a head list, and
    // over the batch for one row).
    let mut shape = vec![1usize; rank];
    shape[0] = rows.len();
    if heads.is_some() {
        shape[1] = head_count;
    }
    shape[rank - 1] = lk;
    let columns = Tensor::from_vec(columns, shape, value.device())?;
    let scores = value.to_dtype(DType::F32)?;
    // Future keys (the causal mask's -inf) are left alone, so they stay invisible.
    let visible = scores.broadcast_ne(&Tensor::new(f32::NEG_INFINITY, value.device())?)?;
    let suppress = visible.broadcast_mul(&columns)?;
    let minimum = Tensor::new(f32::MIN, value.device())?.broadcast_as(scores.shape())?;
    Ok(suppress.where_cond(&minimum, &scores)?.to_dtype(value.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let points = [
            HookPoint::Embed,
            HookPoint::ResidPre(0),
            HookPoint::AttnQ(3),
            HookPoint::AttnK(3),
            HookPoint::AttnV(3),
            HookPoint::AttnRotQ(3),
            HookPoint::AttnRotK(0),
            HookPoint::AttnScores(2),
            HookPoint::AttnPattern(29),
            HookPoint::AttnZ(1),
            HookPoint::AttnOut(1),
            HookPoint::ResidMid(4),
            HookPoint::MlpOut(4),
            HookPoint::ResidPost(7),
            HookPoint::FinalNorm,
        ];
        for p in points {
            assert_eq!(p.to_string().parse::<HookPoint>().unwrap(), p);
        }
        assert_eq!(HookPoint::AttnPattern(5).to_string(), "blocks.5.attn.hook_pattern");
        assert!("blocks.x.hook_resid_post".parse::<HookPoint>().is_err());
    }
}
