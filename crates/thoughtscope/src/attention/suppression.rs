//! Attention suppression: thought-anchors' causal sentence × sentence matrix
//! (`whitebox-analyses/attention_analysis/attn_supp_funcs.py`, `get_suppression_KL_matrix`: the
//! attention-suppression code of thought-anchors).
//!
//! For each source sentence `s` the model is run again with the pre-softmax scores of `s`'s key
//! tokens set to `f32::MIN` (`torch.finfo.min`) in every head of every layer (or of chosen
//! layers). Each position's next-token logits, in both runs, are compressed as upstream does
//! (softmax at temperature 0.6, top-p 0.9999, at most 100 tokens, the kept *raw* logits rounded to
//! f16), and `KL(unsuppressed ‖ suppressed)` is taken over the union of the kept tokens (a token
//! missing on one side gets logit `-1e9`), at temperature 0.6. Per token `log(KL + 1e-9)`,
//! averaged over each target sentence's tokens, gives `matrix[target][source]` (upstream's
//! orientation: row = target, column = source).
//!
//! Faithful: the boundaries (the attention cache's [`TokenBounds`]), the compression, the KL
//! direction, the `-1e9` fill, negative KL clipped to 0, the log and the orientation; every entry
//! is filled as upstream fills it, so a target wholly before its source holds `log(1e-9)` (its
//! logits are unchanged: KL = 0; upstream's separate unhooked baseline adds kernel noise there),
//! and a sentence with no tokens gives a NaN row.
//! Corrected: the head size is the model's own (`head_dim`, Qwen3), where upstream's hook uses
//! `hidden / heads`; the KL sums in f64 (upstream: f32, whose rounding is of the order of the
//! smallest KLs); a query whose every visible key is suppressed (the sentence holding BOS) spreads
//! its attention over those keys only, where upstream's hook also leaks it onto future tokens;
//! upstream's call itself raises a `TypeError` at HEAD (`epsilon=` passed to a function without
//! that parameter).
//!
//! Cost: the positions before `s` are identical in both runs, so each suppressed run starts from
//! the unsuppressed run's KV cache truncated to `s`'s first token: N passes over the suffixes,
//! about `T·N/2` positions instead of `T·N`; and the CPU kernels apply the suppression inside
//! their softmax ([`crate::model::Hooks::key_suppression`]), where the hook path would
//! materialise every score (about 4× slower at 4k tokens). `batch_sources` decodes several
//! sources' passes as one batch from the first one's start (fewer, larger passes; more positions).

use candle_core::{DType, Tensor};

use super::{BoundaryMode, Sentences, TokenBounds};
use crate::model::{HookPoint, HookSet, Input, Intervention, KvCache, Loaded, Logits, Model, NoHooks};
use crate::progress::progress_detail;
use crate::{Error, Result};

/// What is suppressed and how next-token distributions are compressed and compared.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionOptions {
    /// Layers whose attention is suppressed; `None` = every layer (upstream).
    pub layers: Option<Vec<usize>>,
    /// Query heads whose attention is suppressed (in every suppressed layer); `None` = every
    /// head (upstream). A head list runs on the hook path (scores materialised), the CPU
    /// kernels' in-softmax suppression covering every head.
    pub heads: Option<Vec<usize>>,
    pub boundary_mode: BoundaryMode,
    /// Nucleus mass kept per position (upstream 0.9999); 1 keeps `max_tokens` (with
    /// `max_tokens >= vocab` and no f16 rounding: the KL of the full distributions).
    pub top_p: f64,
    /// At most this many tokens kept per position (upstream 100).
    pub max_tokens: usize,
    /// Softmax temperature of the compression and of the KL (upstream 0.6).
    pub temperature: f64,
    /// Round the kept logits to f16 as upstream stores them.
    pub f16_logits: bool,
    /// Added to the KL before the log (upstream 1e-9).
    pub log_epsilon: f64,
    /// Suppressed runs decoded together (1 = one pass per source). `B > 1` groups consecutive
    /// sources `B` at a time: one batched pass per group over the suffix from the group's first
    /// source, each batch row suppressing its own source (the rows' positions before their
    /// source are run but not compared). The results are those of `B = 1` up to f32 noise; the
    /// positions run grow (each row runs the group's longest suffix), and peak memory is `B ×
    /// suffix × vocab` f32 logits (SmolLM2, 49k tokens: 0.8 GB per row at a 4k-token suffix).
    /// Pays off where a pass is bound by kernel launches (GPUs), not on CPU prefills.
    pub batch_sources: usize,
}

impl Default for SuppressionOptions {
    fn default() -> Self {
        SuppressionOptions {
            layers: None,
            heads: None,
            boundary_mode: BoundaryMode::Prefix,
            top_p: 0.9999,
            max_tokens: 100,
            temperature: 0.6,
            f16_logits: true,
            log_epsilon: 1e-9,
            batch_sources: 1,
        }
    }
}

/// The result of [`suppression_matrix`].
#[derive(Debug, Clone)]
pub struct SuppressionMatrix {
    /// Sentences N.
    pub n: usize,
    /// Row-major `N × N`, `values[target * n + source]` = mean `log(KL + ε)` over the target's
    /// tokens (NaN for a sentence with no tokens).
    pub values: Vec<f64>,
    /// `kl[source][position]`: the per-token KL (before the log), `T` values per source.
    pub kl: Vec<Vec<f64>>,
    pub bounds: TokenBounds,
    /// Layers suppressed (every layer when the options named none).
    pub layers: Vec<usize>,
    /// Token positions run through the model, unsuppressed pass included.
    pub positions_run: usize,
}

impl SuppressionMatrix {
    pub fn get(&self, target: usize, source: usize) -> f64 {
        self.values[target * self.n + source]
    }
}

/// One position's compressed next-token distribution: kept token ids and their raw logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

/// Upstream `compress_logits_top_p` for one position: sort by probability at `temperature`,
/// keep the smallest prefix whose cumulative probability reaches `top_p` (at most `max_tokens`,
/// at least 1), with the raw logits (rounded to f16 when asked).
pub(crate) fn compress_logits(logits: &[f32], options: &SuppressionOptions) -> Compressed {
    let inv_t = 1.0 / options.temperature as f32;
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x * inv_t));
    let total: f64 = logits.iter().map(|&x| ((x * inv_t - max) as f64).exp()).sum();
    let keep_max = options.max_tokens.clamp(1, logits.len().max(1));
    // Only the first `max_tokens` of the sort can be kept: select them, then sort those.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit_desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if keep_max < order.len() {
        order.select_nth_unstable_by(keep_max - 1, by_logit_desc);
        order.truncate(keep_max);
    }
    order.sort_by(by_logit_desc);
    let mut cumulative = 0f64;
    let mut keep = keep_max;
    for (i, &id) in order.iter().enumerate() {
        cumulative += ((logits[id as usize] * inv_t - max) as f64).exp() / total;
        if options.top_p < 1.0 && cumulative >= options.top_p {
            keep = i + 1;
            break;
        }
    }
    order.truncate(keep.max(1));
    let logits = order
        .iter()
        .map(|&id| {
            let x = logits[id as usize];
            if options.f16_logits {
                half::f16::from_f32(x).to_f32()
            } else {
                x
            }
        })
        .collect();
    Compressed { ids: order, logits }
}

/// Upstream `calculate_kl_divergence_sparse`: `KL(P ‖ Q)` at `temperature` over the union of the
/// kept tokens, a token missing on one side at logit `-1e9`; negative results clipped to 0.
/// Summed in f64.
pub(crate) fn sparse_kl(p: &Compressed, q: &Compressed, temperature: f64) -> f64 {
    const MISSING: f64 = -1e9;
    let sorted = |c: &Compressed| -> Vec<(u32, f64)> {
        let mut pairs: Vec<(u32, f64)> = c.ids.iter().zip(&c.logits).map(|(&id, &x)| (id, x as f64)).collect();
        pairs.sort_unstable_by_key(|&(id, _)| id);
        pairs
    };
    let (ps, qs) = (sorted(p), sorted(q));
    // Merge by token id: the union, each side's logit or MISSING, at `temperature`.
    let (mut xp, mut xq) = (Vec::with_capacity(ps.len() + qs.len()), Vec::with_capacity(ps.len() + qs.len()));
    let (mut i, mut j) = (0, 0);
    while i < ps.len() || j < qs.len() {
        let (a, b) = match (ps.get(i), qs.get(j)) {
            (Some(&(ip, lp)), Some(&(iq, lq))) if ip == iq => {
                i += 1;
                j += 1;
                (lp, lq)
            }
            (Some(&(ip, lp)), Some(&(iq, _))) if ip < iq => {
                i += 1;
                (lp, MISSING)
            }
            (Some(&(_, lp)), None) => {
                i += 1;
                (lp, MISSING)
            }
            (_, Some(&(_, lq))) => {
                j += 1;
                (MISSING, lq)
            }
            (None, None) => unreachable!(),
        };
        xp.push(a / temperature);
        xq.push(b / temperature);
    }
    let log_softmax = |x: Vec<f64>| -> Vec<f64> {
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        x.into_iter().map(|v| v - lse).collect()
    };
    let (log_p, log_q) = (log_softmax(xp), log_softmax(xq));
    let kl: f64 = log_p
        .iter()
        .zip(&log_q)
        .map(|(&lp, &lq)| {
            let prob = lp.exp();
            if prob == 0.0 {
                0.0
            } else {
                prob * (lp - lq)
            }
        })
        .sum();
    kl.max(0.0)
}

/// Compressed distributions of every position of `logits` `[1, L, V]`.
fn compress_rows(logits: &Tensor, options: &SuppressionOptions) -> Result<Vec<Compressed>> {
    use rayon::prelude::*;
    let rows = logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows.par_iter().map(|row| compress_logits(row, options)).collect())
}

/// Mean of the non-NaN values (NaN when there are none), as `np.nanmean`.
fn nanmean(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    }
}

/// The suppression matrix of `sentences` under `loaded` (tokenised with the attention cache's
/// boundaries), through [`suppression_kl`] and [`sentence_means`].
pub fn suppression_matrix(loaded: &Loaded, sentences: &Sentences, options: &SuppressionOptions) -> Result<SuppressionMatrix> {
    let ids = super::compute::encode_within_context(loaded, &sentences.text)?;
    let bounds = TokenBounds::of_ids(&loaded.tokenizer, sentences, options.boundary_mode, &ids)?;
    let (kl, layers, positions_run) = suppression_kl(&loaded.model, &ids, &bounds.ranges, options)?;
    let values = sentence_means(&kl, &bounds.ranges, options.log_epsilon);
    Ok(SuppressionMatrix { n: bounds.len(), values, kl, bounds, layers, positions_run })
}

/// The per-token KL of every suppressed range of `ids`: `kl[source][position]`, with the layers
/// suppressed and the positions run. One unsuppressed pass, then one pass per range from the KV
/// cache of the positions before it (those positions' logits are unchanged: KL 0), or one
/// batched pass per [`SuppressionOptions::batch_sources`] consecutive ranges.
impl SuppressionOptions {
    /// The options a run can use: top-p in (0, 1], at least one token kept per position, a
    /// positive finite temperature. Checked before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!("suppression: top-p must be in (0, 1], got {}", self.top_p)));
        }
        if self.max_tokens == 0 {
            return Err(Error::invalid("suppression: max-tokens must be at least 1 (tokens kept per position for the KL)"));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid(format!("suppression: temperature must be > 0, got {}", self.temperature)));
        }
        Ok(())
    }
}

pub fn suppression_kl(
    model: &Model,
    ids: &[u32],
    ranges: &[(usize, usize)],
    options: &SuppressionOptions,
) -> Result<(Vec<Vec<f64>>, Vec<usize>, usize)> {
    options.validate()?;
    if ids.is_empty() {
        return Err(Error::invalid("suppression: no tokens"));
    }
    let layers = checked_selection(options.layers.as_deref(), model.num_layers(), "layer")?
        .unwrap_or_else(|| (0..model.num_layers()).collect());
    let heads = checked_selection(options.heads.as_deref(), model.num_heads(), "head")?;
    // Which intervention suppresses the rows' ranges (one list for every row, or one per row).
    let intervention = |rows: Vec<Vec<(usize, usize)>>| match &heads {
        Some(heads) => Intervention::SuppressKeysInHeads { ranges: rows, heads: heads.clone() },
        None if rows.len() == 1 => Intervention::SuppressKeys { ranges: rows.into_iter().next().expect("one row") },
        None => Intervention::SuppressKeysPerRow { ranges: rows },
    };
    let t = ids.len();
    // A sentence with no tokens, or one past the end, suppresses nothing: KL 0 everywhere. The
    // `sentences × tokens` matrix is allocated fallibly, before any pass.
    let what = format!("the suppression KL matrix ({} sentences × {t} tokens float64)", ranges.len());
    crate::model::memory::check_allocatable((ranges.len() as u64).saturating_mul(t as u64 * 8), &what)?;
    let mut kl = Vec::new();
    for _ in ranges {
        kl.push(crate::model::memory::try_vec(t, 0f64, &what)?);
    }
    let bar = progress_detail(ranges.len() as u64 + 1, &format!("suppression {} sentences, {t} tokens", ranges.len()));

    let mut full_cache = KvCache::new(model);
    let baseline = model.forward_with(Input::Ids(ids), &mut full_cache, &mut NoHooks, Logits::All)?;
    let baseline = compress_rows(baseline.logits()?, options)?;
    let mut positions_run = t;
    bar.inc(1);

    let runs: Vec<usize> = (0..ranges.len()).filter(|&s| ranges[s].0 < ranges[s].1.min(t)).collect();
    let group_size = options.batch_sources.max(1);
    bar.inc((ranges.len() - runs.len()) as u64);
    // Consecutive sources `group_size` at a time; each group runs the suffix from its first
    // source (the earliest start, as the ranges are in order), one batch row per source.
    for group in runs.chunks(group_size) {
        let start = group.iter().map(|&s| ranges[s].0).min().expect("a group has a source");
        let mut prefix = if start == 0 { KvCache::new(model) } else { full_cache.clone() };
        prefix.truncate(start)?;
        let suffix = &ids[start..];
        let rows: Vec<Vec<(usize, usize)>> = group.iter().map(|&s| vec![(ranges[s].0, ranges[s].1)]).collect();
        let mut hooks = HookSet::new();
        let out = if let [_] = group {
            for &l in &layers {
                hooks = hooks.intervene(HookPoint::AttnScores(l), intervention(vec![rows[0].clone()]));
            }
            model.forward_with(Input::Ids(suffix), &mut prefix, &mut hooks, Logits::All)?
        } else {
            for &l in &layers {
                hooks = hooks.intervene(HookPoint::AttnScores(l), intervention(rows.clone()));
            }
            let mut cache = if start == 0 { KvCache::new(model) } else { KvCache::stack(&vec![&prefix; group.len()])? };
            let embeds = model.embed(suffix)?;
            let embeds = Tensor::cat(&vec![&embeds; group.len()], 0)?;
            model.forward_with(Input::Embeds(&embeds), &mut cache, &mut hooks, Logits::All)?
        };
        positions_run += group.len() * suffix.len();
        let logits = out.logits()?;
        for (row, &source) in group.iter().enumerate() {
            // Row `row`'s positions before its source are unsuppressed: compared from the source on.
            let from = ranges[source].0;
            let row_logits = logits.narrow(0, row, 1)?.narrow(1, from - start, t - from)?;
            let suppressed = compress_rows(&row_logits, options)?;
            for (i, q) in suppressed.iter().enumerate() {
                kl[source][from + i] = sparse_kl(&baseline[from + i], q, options.temperature);
            }
            bar.inc(1);
        }
    }
    bar.finish();
    Ok((kl, layers, positions_run))
}

/// A chosen set of layers or heads, sorted and without repeats (`None`: all of them, left to the
/// caller); an index `>= count` is an error naming it.
pub(crate) fn checked_selection(chosen: Option<&[usize]>, count: usize, what: &str) -> Result<Option<Vec<usize>>> {
    let Some(chosen) = chosen else { return Ok(None) };
    if let Some(bad) = chosen.iter().find(|&&i| i >= count) {
        return Err(Error::invalid(format!("suppression: {what} {bad} does not exist (the model has {count} {what}s)")));
    }
    let mut sorted = chosen.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(Some(sorted))
}

/// `values[target * n + source]` = `nanmean(log(kl[source][p] + epsilon))` over the target's
/// positions `p` (clamped to the text), NaN for a target with none (upstream's loop).
pub fn sentence_means(kl: &[Vec<f64>], ranges: &[(usize, usize)], epsilon: f64) -> Vec<f64> {
    let n = ranges.len();
    let mut values = vec![f64::NAN; n * n];
    for (source, per_token) in kl.iter().enumerate() {
        let t = per_token.len();
        let logs: Vec<f64> = per_token.iter().map(|&k| (k + epsilon).ln()).collect();
        for (target, &(start, end)) in ranges.iter().enumerate() {
            let (start, end) = (start.min(t), end.min(t));
            if start < end {
                values[target * n + source] = nanmean(&logs[start..end]);
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_keeps_the_nucleus() {
        let options = SuppressionOptions { top_p: 0.9, f16_logits: false, ..Default::default() };
        let c = compress_logits(&[0.0, 5.0, 4.9, -3.0], &options);
        assert_eq!(c.ids, vec![1, 2]);
        assert_eq!(c.logits, vec![5.0, 4.9]);
        let few = SuppressionOptions { max_tokens: 1, ..Default::default() };
        assert_eq!(compress_logits(&[0.0, 5.0, 4.9], &few).ids, vec![1]);
    }

    #[test]
    fn kl_is_zero_for_equal_and_huge_for_a_missing_token() {
        let p = Compressed { ids: vec![1, 2], logits: vec![2.0, 1.0] };
        assert_eq!(sparse_kl(&p, &p, 0.6), 0.0);
        let q = Compressed { ids: vec![1], logits: vec![2.0] };
        // p(token 2) = σ(-1/0.6) ≈ 0.159, times ≈ 1e9/0.6.
        assert!(sparse_kl(&p, &q, 0.6) > 1e8);
        assert_eq!(sparse_kl(&q, &p, 0.6), sparse_kl(&q, &p, 0.6).max(0.0));
    }
}

/// One source sentence in `step_importance_supp.json` (and the website's `step_importance.json`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct StepImportance {
    pub source_chunk_idx: usize,
    pub source_chunk_text: String,
    pub target_impacts: Vec<TargetImpact>,
}

#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct TargetImpact {
    pub target_chunk_idx: usize,
    pub importance_score: f64,
}

/// The website's records of a row-major `[target][source]` matrix of `texts.len()` sentences:
/// per source, every later target with a finite score.
pub fn step_importance_records(values: &[f64], texts: &[String]) -> Vec<StepImportance> {
    let n = texts.len();
    (0..n)
        .map(|source| StepImportance {
            source_chunk_idx: source,
            source_chunk_text: texts[source].clone(),
            target_impacts: (source + 1..n)
                .filter(|&target| values[target * n + source].is_finite())
                .map(|target| TargetImpact { target_chunk_idx: target, importance_score: values[target * n + source] })
                .collect(),
        })
        .collect()
}

