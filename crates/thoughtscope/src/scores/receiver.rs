//! Receiver heads (upstream `receiver_head_funcs.py` and
//! `eval_receiver_head_reliability.py`).
//!
//! Per response r: the vertical scores `V_r[l,h,:]` of every head ([`head_vertical_scores`]);
//! their kurtosis `K_r[l,h]` ([`kurtosis`]: scipy `kurtosis(fisher=True, bias=True,
//! nan_policy="omit")`); the plain mean over responses ([`mean_kurtosis`], NaN spreads); the `k`
//! heads of largest mean kurtosis in flat order `l·H + h` ([`top_k_heads`]); per sentence the
//! receiver score = mean of `V_r` over those heads ([`receiver_scores`]); and the split-half
//! reliability of the kurtoses ([`split_half_reliability`]).
//!
//! Reproduced: kurtosis is computed in float32 for float32 scores (scipy 1.17) and is NaN when
//! `m2 ≤ (eps · mean)²` (constant vectors, n ≤ 1); layer 0 is *not* excluded from head
//! selection (HEAD's `get_top_k_receiver_heads`), but is excluded from the reliability (the
//! script sets it to NaN). Ties in the top-k order, arbitrary upstream (unstable argsort), are
//! broken by the lower flat index here.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::numpy::{divide_by_count, np_mean, NpFloat};
use super::vertical::{vertical_scores_generic, Dtype, NumpyValue, VerticalOptions};
use crate::attention::cache::{is_temporary_name, read_manifest, MANIFEST_FILE};
use crate::attention::{read_entry_dir, Manifest, SentenceAttention};
use crate::{Error, Result};

/// Vertical scores of every head of one response, `[layers, heads, n]` (upstream `(L, H, N)`).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    pub layers: usize,
    pub heads: usize,
    pub n: usize,
    /// Row-major `[layers, heads, n]`; exact float32 values when `dtype` is `Float32`.
    pub values: Vec<f64>,
    pub dtype: Dtype,
}

impl HeadScores {
    /// Vertical scores of head `(layer, head)`, length n.
    pub fn head(&self, layer: usize, head: usize) -> &[f64] {
        let start = (layer * self.heads + head) * self.n;
        &self.values[start..start + self.n]
    }
}

/// Vertical scores of every head of `attention` (upstream `get_all_heads_vert_scores`).
pub fn head_vertical_scores(attention: &SentenceAttention, options: &VerticalOptions) -> HeadScores {
    let (layers, heads, n) = (attention.layers(), attention.heads(), attention.n());
    let per_head: Vec<_> = (0..layers * heads)
        .into_par_iter()
        .map(|index| vertical_scores_generic(attention.matrix(index / heads, index % heads), n, options))
        .collect();
    let dtype = per_head.first().map_or(if options.control_depth { Dtype::Float64 } else { Dtype::Float32 }, |s| s.dtype);
    let values = per_head.into_iter().flat_map(|s| s.values).collect();
    HeadScores { layers, heads, n, values, dtype }
}

/// One value per head, `[layers, heads]` row-major (flat index `l·H + h`).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadValues {
    pub layers: usize,
    pub heads: usize,
    /// Exact float32 values when `dtype` is `Float32`; NaN where undefined.
    pub values: Vec<f64>,
    pub dtype: Dtype,
}

impl HeadValues {
    pub fn get(&self, layer: usize, head: usize) -> f64 {
        self.values[layer * self.heads + head]
    }

    /// `[[per head] per layer]` with dtypes, for JSON output (NaN as `null`).
    pub fn nested(&self) -> Vec<Vec<NumpyValue>> {
        self.values
            .chunks(self.heads.max(1))
            .map(|row| row.iter().map(|&value| NumpyValue { value, dtype: self.dtype }).collect())
            .collect()
    }
}

/// scipy 1.17 `kurtosis(x, fisher=True, bias=True, nan_policy="omit")` in the dtype of `x`:
/// NaNs dropped, `m2`, `m4` central moments (numpy means), NaN when `m2 ≤ (eps·mean)²`.
pub(crate) fn kurtosis_generic<T: NpFloat>(x: &[T]) -> T {
    let kept: Vec<T> = x.iter().copied().filter(|v| !v.is_nan()).collect();
    let mean = np_mean(&kept);
    let deviations: Vec<T> = kept.iter().map(|&v| v.sub(mean)).collect();
    let squares: Vec<T> = deviations.iter().map(|&d| d.mul(d)).collect();
    let fourth: Vec<T> = squares.iter().map(|&s| s.mul(s)).collect();
    let m2 = np_mean(&squares);
    let m4 = np_mean(&fourth);
    let threshold = T::EPS.mul(mean);
    if m2 <= threshold.mul(threshold) {
        return T::NAN;
    }
    m4.div(m2.mul(m2)).sub(T::from_f64(3.0))
}

/// Kurtosis of scores stored as f64 with their numpy `dtype` (float32 is computed in float32).
pub fn kurtosis(values: &[f64], dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Float32 => {
            let narrow: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            f64::from(kurtosis_generic(&narrow))
        }
        Dtype::Float64 => kurtosis_generic(values),
    }
}

/// Kurtosis of every head's vertical scores (upstream `get_3d_ar_kurtosis`).
pub fn head_kurtosis(scores: &HeadScores) -> HeadValues {
    let values = (0..scores.layers * scores.heads)
        .map(|index| kurtosis(scores.head(index / scores.heads, index % scores.heads), scores.dtype))
        .collect();
    HeadValues { layers: scores.layers, heads: scores.heads, values, dtype: scores.dtype }
}

/// Plain mean over responses (`np.mean(axis=0)`: NaN spreads; float32 summed in float32).
pub fn mean_kurtosis(per_response: &[HeadValues]) -> Result<HeadValues> {
    let first = per_response.first().ok_or_else(|| Error::invalid("mean kurtosis: no responses"))?;
    if let Some(other) = per_response.iter().find(|k| (k.layers, k.heads, k.dtype) != (first.layers, first.heads, first.dtype)) {
        return Err(Error::invalid(format!(
            "mean kurtosis: responses disagree on shape or dtype ([{}, {}] {:?} vs [{}, {}] {:?})",
            first.layers, first.heads, first.dtype, other.layers, other.heads, other.dtype
        )));
    }
    let r = per_response.len();
    let values = (0..first.values.len())
        .map(|index| match first.dtype {
            Dtype::Float32 => {
                let sum = per_response.iter().fold(0f32, |acc, k| acc + k.values[index] as f32);
                f64::from(divide_by_count(sum, r))
            }
            Dtype::Float64 => divide_by_count(per_response.iter().fold(0f64, |acc, k| acc + k.values[index]), r),
        })
        .collect();
    Ok(HeadValues { layers: first.layers, heads: first.heads, values, dtype: first.dtype })
}

/// The `k` heads with the largest non-NaN values, largest first, as `(layer, head)`
/// (upstream `get_top_k_layer_head_kurts`; fewer than `k` when fewer are valid).
pub fn top_k_heads(values: &HeadValues, k: usize) -> Vec<(usize, usize)> {
    let mut valid: Vec<usize> = (0..values.values.len()).filter(|&i| !values.values[i].is_nan()).collect();
    valid.sort_by(|&a, &b| values.values[b].partial_cmp(&values.values[a]).expect("no NaN").then(a.cmp(&b)));
    valid.truncate(k);
    valid.into_iter().map(|i| (i / values.heads, i % values.heads)).collect()
}

/// Receiver score per sentence: mean of the selected heads' vertical scores (upstream
/// `get_receiver_head_scores`; NaN where any selected head is NaN).
pub fn receiver_scores(scores: &HeadScores, heads: &[(usize, usize)]) -> Result<Vec<f64>> {
    if let Some(&(l, h)) = heads.iter().find(|&&(l, h)| l >= scores.layers || h >= scores.heads) {
        return Err(Error::invalid(format!(
            "receiver scores: head ({l}, {h}) outside the [{}, {}] grid",
            scores.layers, scores.heads
        )));
    }
    if heads.is_empty() {
        return Ok(vec![f64::NAN; scores.n]);
    }
    Ok((0..scores.n)
        .map(|j| match scores.dtype {
            Dtype::Float32 => {
                let sum = heads.iter().fold(0f32, |acc, &(l, h)| acc + scores.head(l, h)[j] as f32);
                f64::from(divide_by_count(sum, heads.len()))
            }
            Dtype::Float64 => divide_by_count(heads.iter().fold(0f64, |acc, &(l, h)| acc + scores.head(l, h)[j]), heads.len()),
        })
        .collect())
}

/// Split-half reliability of head kurtoses (upstream `eval_receiver_head_reliability.py`): layer 0
/// ignored, responses split into even and odd positions, per head (layers ≥ 1) the mean kurtosis
/// of each half, Pearson r between the two halves.
pub fn split_half_reliability(per_response: &[HeadValues]) -> Result<super::stats::Pearson> {
    if per_response.len() < 2 {
        return Err(Error::invalid(format!("split-half reliability needs at least 2 responses, got {}", per_response.len())));
    }
    let first = &per_response[0];
    let half_mean = |parity: usize, index: usize| -> f64 {
        let values: Vec<f64> = per_response.iter().skip(parity).step_by(2).map(|k| k.values[index]).collect();
        match first.dtype {
            Dtype::Float32 => f64::from(np_mean(&values.iter().map(|&v| v as f32).collect::<Vec<_>>())),
            Dtype::Float64 => np_mean(&values),
        }
    };
    let heads: Vec<usize> = (first.heads..first.layers * first.heads).collect();
    let even: Vec<f64> = heads.iter().map(|&i| half_mean(0, i)).collect();
    let odd: Vec<f64> = heads.iter().map(|&i| half_mean(1, i)).collect();
    super::stats::pearson(&even, &odd)
}

/// Options of [`receiver_heads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverOptions {
    pub top_k: usize,
    pub vertical: VerticalOptions,
}

impl Default for ReceiverOptions {
    /// Released defaults: top 20, `p = 4`, no depth control, mean.
    fn default() -> Self {
        ReceiverOptions { top_k: 20, vertical: VerticalOptions::default() }
    }
}

/// Head selection over a set of responses.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverHeads {
    /// Where each response came from (entry directory, or its index as text).
    pub responses: Vec<String>,
    /// `K_r` per response.
    pub kurtosis: Vec<HeadValues>,
    /// Mean over responses.
    pub mean_kurtosis: HeadValues,
    /// Selected heads, largest mean kurtosis first.
    pub top_k_heads: Vec<(usize, usize)>,
    /// Responses left out, with why: one whose every head's kurtosis is NaN (too few sentences
    /// beyond the proximity band) would turn the plain mean NaN everywhere and select no head.
    pub skipped: Vec<(String, String)>,
}

impl ReceiverHeads {
    /// `{"mean_kurtosis": [[...] per layer], "top_k_heads": [[l, h], ...]}` (the CLI output;
    /// NaN as `null`, float32 values in shortest float32 form).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Output {
            mean_kurtosis: Vec<Vec<NumpyValue>>,
            top_k_heads: Vec<[usize; 2]>,
        }
        let output = Output {
            mean_kurtosis: self.mean_kurtosis.nested(),
            top_k_heads: self.top_k_heads.iter().map(|&(l, h)| [l, h]).collect(),
        };
        serde_json::to_string(&output).expect("plain data serialises")
    }
}

/// Receiver heads over responses given one by one (each reduced to kurtoses at once, so only one
/// response's matrices are alive at a time).
pub fn receiver_heads<I>(responses: I, options: &ReceiverOptions) -> Result<ReceiverHeads>
where
    I: IntoIterator<Item = Result<(String, SentenceAttention)>>,
{
    receiver_heads_from_scores(
        responses.into_iter().map(|response| {
            let (name, attention) = response?;
            Ok((name, head_vertical_scores(&attention, &options.vertical)))
        }),
        options.top_k,
    )
}

/// [`receiver_heads`] over responses already reduced to their vertical scores (a caller that
/// needs the scores again, for receiver scores per sentence, computes them once).
pub(crate) fn receiver_heads_from_scores<I, S>(responses: I, top_k: usize) -> Result<ReceiverHeads>
where
    I: IntoIterator<Item = Result<(String, S)>>,
    S: std::borrow::Borrow<HeadScores>,
{
    let mut names = Vec::new();
    let mut kurtosis = Vec::new();
    let mut skipped = Vec::new();
    for response in responses {
        let (name, scores) = response?;
        let scores: &HeadScores = scores.borrow();
        if let Some(first) = kurtosis.first() {
            let first: &HeadValues = first;
            if (first.layers, first.heads) != (scores.layers, scores.heads) {
                return Err(Error::invalid(format!(
                    "{name}: {} layers × {} heads, earlier responses have {} × {}",
                    scores.layers, scores.heads, first.layers, first.heads
                )));
            }
        }
        let values = head_kurtosis(scores);
        if values.values.iter().all(|v| v.is_nan()) {
            let reason = format!(
                "{} sentences leave too few vertical scores beyond the proximity band: every head's kurtosis is NaN",
                scores.n
            );
            skipped.push((name, reason));
            continue;
        }
        kurtosis.push(values);
        names.push(name);
    }
    if kurtosis.is_empty() {
        let why = skipped.first().map(|(name, reason)| format!(": {name}: {reason}")).unwrap_or_default();
        return Err(Error::invalid(format!("no response has a defined kurtosis to select heads from ({} skipped{why})", skipped.len())));
    }
    let mean = mean_kurtosis(&kurtosis)?;
    let top = top_k_heads(&mean, top_k);
    Ok(ReceiverHeads { responses: names, kurtosis, mean_kurtosis: mean, top_k_heads: top, skipped })
}

/// The response directories under a cache model directory (`<cache>/<model>/`): every
/// non-hidden subdirectory, sorted by name. Temporary directories of interrupted cache writes
/// (hidden) are never entries; when some are there, one line on stderr says so.
pub(crate) fn cache_entries(model_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(model_dir).map_err(|e| Error::io(model_dir, e))?;
    let mut dirs = Vec::new();
    let mut temporaries = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(model_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_dir();
        if is_temporary_name(&name) {
            temporaries += usize::from(is_dir);
        } else if !name.starts_with('.') && is_dir {
            dirs.push(entry.path());
        }
    }
    if temporaries > 0 {
        eprintln!(
            "note: ignoring {temporaries} temporary director{} of interrupted cache writes in {}",
            if temporaries == 1 { "y" } else { "ies" },
            model_dir.display()
        );
    }
    dirs.sort();
    if dirs.is_empty() {
        return Err(Error::format(model_dir, "no cache entries (expected `<text_id>/` subdirectories)"));
    }
    Ok(dirs)
}

/// Refuse to average entries whose manifests say they were made differently (another model or
/// weights, dtype, tokenizer, sentence or boundary mode, grid): the error names both entries and
/// the field. Upstream (Python) entries have no manifest and are taken as they are.
fn check_entries_agree(dirs: &[PathBuf]) -> Result<()> {
    let mut first: Option<(&PathBuf, Manifest)> = None;
    for dir in dirs {
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            continue;
        }
        let manifest = read_manifest(&manifest_path)?;
        match &first {
            None => first = Some((dir, manifest)),
            Some((first_dir, first_manifest)) => {
                if let Some((field, a, b)) = first_manifest.provenance_difference(&manifest) {
                    return Err(Error::invalid(format!(
                        "cache entries {} and {} differ in field `{field}` ({a} vs {b}): receiver heads average \
                         entries made one way only; move the others to another directory",
                        first_dir.display(),
                        dir.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Receiver heads over every entry of a cache model directory (upstream Python caches without a
/// manifest included). Entries with a manifest are sized by it and verified against their
/// checksums, and must all have been made the same way (`Manifest::provenance_difference`).
pub fn receiver_heads_from_cache_dir(model_dir: &Path, options: &ReceiverOptions) -> Result<ReceiverHeads> {
    let dirs = cache_entries(model_dir)?;
    check_entries_agree(&dirs)?;
    receiver_heads(dirs.into_iter().map(|dir| Ok((dir.display().to_string(), read_entry_dir(&dir)?))), options)
}
