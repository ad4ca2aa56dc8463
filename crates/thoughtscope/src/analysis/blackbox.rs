//! White-box against black-box importance on the same sentences of one trace: does where attention
//! goes (receiver heads, attention suppression) agree with what changes the *answer*
//! (counterfactual importance from resampling, `thoughtscope importance`)? Upstream
//! (interp-reasoning/thought-anchors) reports each measure on its own and never these checks.
//!
//! - [`read_importance`]: the per-chunk metrics of a `chunks_labeled.json` written by
//!   `thoughtscope importance` (or upstream's `analyze_rollouts.py`), with tags.
//! - [`bootstrap_spearman`]: Spearman's rho ([`crate::scores::spearman`]) with a percentile
//!   bootstrap confidence interval (sentences resampled with replacement, seeded).
//! - [`incoming_importance`] beside [`crate::analysis::anchors::outgoing_importance`]: a
//!   suppression matrix's row means (how much a sentence is moved by suppressing earlier ones).
//! - [`matched_control`]: random sentence sets with the same length and position distribution as
//!   a chosen set, the statistic of the chosen set against those of the controls.
//! - [`tagged_difference`]: mean importance of tagged sentences minus the rest, with a one-sided
//!   permutation p-value (the VA analysis's recipe: shuffle the tag mask, ChaCha8, `(1 + #)/(1 + B)`).
//! - [`run_blackbox`]: all of it for one trace (`thoughtscope blackbox`), JSON + CSV out.
//!
//! NaN rule: a sentence where either value is undefined (no rollouts, no vertical score, no later
//! target) is left out of a correlation and counted; a constant side gives rho NaN with a note,
//! never a panic.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use super::anchors::{corpus_receivers, load_trace, load_traces, outgoing_importance, Trace};
use super::suppression::cached_suppression;
use crate::attention::{cached_sentence_attention, AttnCache, BoundaryMode, CacheLayout, SentenceMode, SuppressionMatrix, SuppressionOptions};
use crate::model::{Loaded, Model, Settings};
use crate::scores::stats::{average_ranks, mean, nan_as_null, pearson};
use crate::scores::{head_vertical_scores, receiver_scores, split_half_reliability, ReceiverOptions};
use crate::{Context, Error, Result};

/// The importance field correlated by default.
pub const COUNTERFACTUAL: &str = "counterfactual_importance_accuracy";

/// One chunk of an importance file.
#[derive(Debug, Clone, Serialize)]
pub struct ImportanceRow {
    pub chunk_idx: usize,
    pub chunk: String,
    pub function_tags: Vec<String>,
    /// The requested metric; NaN where the entry has none (a chunk without rollouts).
    #[serde(with = "nan_as_null")]
    pub value: f64,
    /// `accuracy` of the chunk's rollouts; NaN where absent.
    #[serde(with = "nan_as_null")]
    pub accuracy: f64,
}

/// The `field` metric of every entry of `path` (a `chunks_labeled.json`-shaped array of objects
/// with `chunk_idx`, `chunk` and optionally `function_tags`, `accuracy`), sorted by `chunk_idx`.
/// A missing or `null` metric is NaN; a metric that is neither a number nor null is an error
/// naming the file, the entry and the field.
pub fn read_importance(path: &Path, field: &str) -> Result<Vec<ImportanceRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not JSON: {e}")))?;
    let entries = json.as_array().ok_or_else(|| Error::format(path, "expected an array of chunk entries"))?;
    let number = |entry: &Value, i: usize, key: &str| -> Result<f64> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(f64::NAN),
            Some(v) => v.as_f64().ok_or_else(|| Error::format(path, format!("entry {i}: `{key}` is not a number ({v})"))),
        }
    };
    let mut rows = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let chunk_idx = entry
            .get("chunk_idx")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::format(path, format!("entry {i}: `chunk_idx` missing or not a non-negative integer")))?
            as usize;
        let chunk = match entry.get("chunk") {
            Some(Value::String(s)) => s.clone(),
            None => String::new(),
            Some(v) => return Err(Error::format(path, format!("entry {i}: `chunk` is not a string ({v})"))),
        };
        let function_tags = match entry.get("function_tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tags)) => tags
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::format(path, format!("entry {i}: `function_tags` holds a non-string")))?,
            Some(v) => return Err(Error::format(path, format!("entry {i}: `function_tags` is not an array ({v})"))),
        };
        rows.push(ImportanceRow { chunk_idx, chunk, function_tags, value: number(entry, i, field)?, accuracy: number(entry, i, "accuracy")? });
    }
    rows.sort_by_key(|r| r.chunk_idx);
    if let Some(w) = rows.windows(2).find(|w| w[0].chunk_idx == w[1].chunk_idx) {
        return Err(Error::format(path, format!("`chunk_idx` {} appears twice", w[0].chunk_idx)));
    }
    Ok(rows)
}

/// The metric of `rows` laid out by sentence index over `n` sentences (NaN where no entry).
pub fn by_sentence(rows: &[ImportanceRow], n: usize) -> Vec<f64> {
    let mut values = vec![f64::NAN; n];
    for row in rows.iter().filter(|r| r.chunk_idx < n) {
        values[row.chunk_idx] = row.value;
    }
    values
}

/// The metric of `rows` by sentence ([`by_sentence`]), with the last chunk that has an entry set
/// to NaN when `field` is one of upstream's importances (`*_importance_*`): each is this chunk's
/// value against the next one's, and upstream writes 0.0 where there is no next chunk, a filler
/// that would count as a measured "no effect" in every statistic. Other fields (`accuracy`,
/// `different_trajectories_fraction`, ...) are kept whole.
pub fn measured_importance(rows: &[ImportanceRow], n: usize, field: &str) -> Vec<f64> {
    let mut values = by_sentence(rows, n);
    if field.contains("_importance_") {
        if let Some(last) = rows.iter().map(|r| r.chunk_idx).filter(|&i| i < n).max() {
            values[last] = f64::NAN;
        }
    }
    values
}

/// Per target sentence `t`: the mean of `M[t][s]` over the earlier sources `s < t` with a defined
/// entry; NaN for the first sentence (the row-wise twin of `outgoing_importance`).
pub fn incoming_importance(matrix: &SuppressionMatrix) -> Vec<f64> {
    (0..matrix.n)
        .map(|target| {
            let earlier: Vec<f64> = (0..target).map(|s| matrix.get(target, s)).filter(|v| v.is_finite()).collect();
            if earlier.is_empty() { f64::NAN } else { earlier.iter().sum::<f64>() / earlier.len() as f64 }
        })
        .collect()
}

/// `np.percentile(values, q)` with numpy's default linear interpolation; NaN for no values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q / 100.0 * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    let fraction = position - low as f64;
    sorted[low] + (sorted[high] - sorted[low]) * fraction
}

/// Spearman's rho of `x`, `y` (Pearson r of average ranks, `scipy.stats.spearmanr`); NaN with
/// fewer than 3 values or a constant side.
pub(crate) fn spearman_rho(x: &[f64], y: &[f64]) -> f64 {
    if x.len() < 3 || x.len() != y.len() {
        return f64::NAN;
    }
    pearson(&average_ranks(x), &average_ranks(y)).map_or(f64::NAN, |p| p.r)
}

/// Spearman's rho with a percentile bootstrap confidence interval.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapCorrelation {
    #[serde(with = "nan_as_null")]
    pub rho: f64,
    /// `scipy.stats.spearmanr`'s two-sided p.
    #[serde(with = "nan_as_null")]
    pub p_asymptotic: f64,
    #[serde(with = "nan_as_null")]
    pub ci_low: f64,
    #[serde(with = "nan_as_null")]
    pub ci_high: f64,
    /// Pairs where both values are finite.
    pub n: usize,
    /// Pairs left out (either value undefined).
    pub left_out: usize,
    pub draws: usize,
    /// Draws whose rho is defined (a draw that picks one value over and over has none).
    pub valid_draws: usize,
    pub confidence: f64,
    pub seed: u64,
    /// Why rho or the interval is NaN, or empty.
    pub note: String,
}

/// [`BootstrapCorrelation`] over explicit resamples: `resamples[b]` lists the indices (into the
/// finite pairs) of draw `b`. The interval is `np.percentile` of the defined draws' rho at
/// `(1 − confidence)/2` and `(1 + confidence)/2`.
pub fn bootstrap_spearman_with(x: &[f64], y: &[f64], resamples: &[Vec<usize>], confidence: f64, seed: u64) -> Result<BootstrapCorrelation> {
    if x.len() != y.len() {
        return Err(Error::invalid(format!("bootstrap spearman: the two samples differ in length ({} vs {})", x.len(), y.len())));
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = x.iter().zip(y).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| (*a, *b)).unzip();
    let n = xs.len();
    let observed = crate::scores::spearman(&xs, &ys, 0, seed)?;
    let mut rhos = Vec::with_capacity(resamples.len());
    for draw in resamples {
        if let Some(&bad) = draw.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(format!("bootstrap spearman: resample index {bad} out of range for {n} pairs")));
        }
        let bx: Vec<f64> = draw.iter().map(|&i| xs[i]).collect();
        let by: Vec<f64> = draw.iter().map(|&i| ys[i]).collect();
        let rho = spearman_rho(&bx, &by);
        if rho.is_finite() {
            rhos.push(rho);
        }
    }
    let tail = (1.0 - confidence) / 2.0 * 100.0;
    let mut note = String::new();
    if n < 3 {
        note = format!("rho undefined: {n} sentence(s) with both values (3 needed)");
    } else if observed.rho.is_nan() {
        note = "rho undefined: one side is constant over the sentences".into();
    } else if rhos.is_empty() && !resamples.is_empty() {
        note = "interval undefined: every bootstrap draw has a constant side".into();
    }
    let (ci_low, ci_high) = if observed.rho.is_nan() || rhos.is_empty() { (f64::NAN, f64::NAN) } else { (percentile(&rhos, tail), percentile(&rhos, 100.0 - tail)) };
    Ok(BootstrapCorrelation {
        rho: observed.rho,
        p_asymptotic: observed.p_asymptotic,
        ci_low,
        ci_high,
        n,
        left_out: x.len() - n,
        draws: resamples.len(),
        valid_draws: rhos.len(),
        confidence,
        seed,
        note,
    })
}

/// [`bootstrap_spearman_with`] over `draws` resamples of the finite pairs with replacement
/// (ChaCha8 seeded by `seed`).
pub fn bootstrap_spearman(x: &[f64], y: &[f64], draws: usize, confidence: f64, seed: u64) -> Result<BootstrapCorrelation> {
    let n = x.iter().zip(y).filter(|(a, b)| a.is_finite() && b.is_finite()).count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let resamples: Vec<Vec<usize>> =
        if n == 0 { Vec::new() } else { (0..draws).map(|_| (0..n).map(|_| rng.random_range(0..n)).collect()).collect() };
    bootstrap_spearman_with(x, y, &resamples, confidence, seed)
}

/// A chosen sentence set against random sets matched on length and position.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedControl {
    /// Mean importance over the chosen sentences (finite values only).
    #[serde(with = "nan_as_null")]
    pub chosen_mean: f64,
    pub chosen: usize,
    /// Mean over draws of the control sets' mean importance.
    #[serde(with = "nan_as_null")]
    pub control_mean: f64,
    /// 95 % percentile range of the control means.
    #[serde(with = "nan_as_null")]
    pub control_low: f64,
    #[serde(with = "nan_as_null")]
    pub control_high: f64,
    /// One-sided: `(1 + #{control mean ≥ chosen mean}) / (1 + draws)`.
    #[serde(with = "nan_as_null")]
    pub p_greater: f64,
    pub draws: usize,
    /// Mean |length difference| (characters) and |position difference| (fraction of the trace)
    /// between a chosen sentence and its control, over every draw: how good the matching was.
    pub mean_length_gap: f64,
    pub mean_position_gap: f64,
    pub seed: u64,
    pub note: String,
}

/// Random control sets for `chosen` among the other sentences with a finite `values` entry: for
/// each chosen sentence, a candidate drawn uniformly among the `pool` unused candidates nearest
/// to it in (length in characters / the trace's largest length, position / number of sentences)
/// (Euclidean), so each control set has about the chosen set's length and position
/// distribution. `lengths[i]` is sentence `i`'s trimmed length in characters.
pub fn matched_control(values: &[f64], lengths: &[usize], chosen: &[usize], draws: usize, pool: usize, seed: u64) -> Result<MatchedControl> {
    let n = values.len();
    if lengths.len() != n {
        return Err(Error::invalid(format!("matched control: {} lengths for {n} sentences", lengths.len())));
    }
    if let Some(&bad) = chosen.iter().find(|&&i| i >= n) {
        return Err(Error::invalid(format!("matched control: chosen sentence {bad} out of range ({n} sentences)")));
    }
    let chosen: Vec<usize> = chosen.iter().copied().filter(|&i| values[i].is_finite()).collect();
    let candidates: Vec<usize> = (0..n).filter(|i| values[*i].is_finite() && !chosen.contains(i)).collect();
    let chosen_mean = mean(&chosen.iter().map(|&i| values[i]).collect::<Vec<_>>());
    let longest = lengths.iter().copied().max().unwrap_or(1).max(1) as f64;
    let feature = |i: usize| (lengths[i] as f64 / longest, i as f64 / n.max(1) as f64);
    let mut note = String::new();
    if chosen.is_empty() {
        note = "no chosen sentence has a defined value".into();
    } else if candidates.len() < chosen.len() {
        note = format!("only {} candidate sentences for {} chosen: no control", candidates.len(), chosen.len());
    }
    let mut control_means = Vec::new();
    let (mut length_gap, mut position_gap, mut pairs) = (0.0, 0.0, 0usize);
    if note.is_empty() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..draws {
            let mut used = vec![false; n];
            let mut order = chosen.clone();
            order.shuffle(&mut rng);
            let mut picked = Vec::with_capacity(order.len());
            for &c in &order {
                let (cl, cp) = feature(c);
                let mut near: Vec<(f64, usize)> = candidates
                    .iter()
                    .filter(|&&j| !used[j])
                    .map(|&j| {
                        let (l, p) = feature(j);
                        (((l - cl).powi(2) + (p - cp).powi(2)).sqrt(), j)
                    })
                    .collect();
                near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                near.truncate(pool.max(1));
                let j = near[rng.random_range(0..near.len())].1;
                used[j] = true;
                length_gap += (lengths[j] as f64 - lengths[c] as f64).abs();
                position_gap += (j as f64 - c as f64).abs() / n as f64;
                pairs += 1;
                picked.push(values[j]);
            }
            control_means.push(mean(&picked));
        }
    }
    let reached = control_means.iter().filter(|&&m| m >= chosen_mean - 1e-12).count();
    let defined = !control_means.is_empty();
    Ok(MatchedControl {
        chosen_mean,
        chosen: chosen.len(),
        control_mean: if defined { mean(&control_means) } else { f64::NAN },
        control_low: percentile(&control_means, 2.5),
        control_high: percentile(&control_means, 97.5),
        p_greater: if defined { (1 + reached) as f64 / (1 + control_means.len()) as f64 } else { f64::NAN },
        draws: control_means.len(),
        mean_length_gap: if pairs > 0 { length_gap / pairs as f64 } else { f64::NAN },
        mean_position_gap: if pairs > 0 { position_gap / pairs as f64 } else { f64::NAN },
        seed,
        note,
    })
}

/// Tagged sentences against the rest.
#[derive(Debug, Clone, Serialize)]
pub struct TaggedDifference {
    pub tag: String,
    pub tagged: usize,
    pub rest: usize,
    #[serde(with = "nan_as_null")]
    pub tagged_mean: f64,
    #[serde(with = "nan_as_null")]
    pub rest_mean: f64,
    /// `tagged_mean − rest_mean`.
    #[serde(with = "nan_as_null")]
    pub difference: f64,
    /// One-sided (tagged larger): `(1 + #{permuted difference ≥ observed}) / (1 + B)`.
    #[serde(with = "nan_as_null")]
    pub p_greater: f64,
    /// Two-sided: the same with `|difference|`.
    #[serde(with = "nan_as_null")]
    pub p_two_sided: f64,
    pub permutations: usize,
    pub seed: u64,
    pub note: String,
}

/// Difference of mean `values` between the sentences where `mask` is true and the others, over
/// the sentences with a finite value, with permutation p-values: the mask is shuffled among those
/// sentences `permutations` times (ChaCha8 seeded by `seed`), as the VA analysis's permutation test.
pub fn tagged_difference(tag: &str, values: &[f64], mask: &[bool], permutations: usize, seed: u64) -> Result<TaggedDifference> {
    if values.len() != mask.len() {
        return Err(Error::invalid(format!("tagged difference: {} values for {} mask entries", values.len(), mask.len())));
    }
    let (vals, flags): (Vec<f64>, Vec<bool>) = values.iter().zip(mask).filter(|(v, _)| v.is_finite()).map(|(v, m)| (*v, *m)).unzip();
    let difference_of = |flags: &[bool]| {
        let tagged: Vec<f64> = vals.iter().zip(flags).filter(|(_, f)| **f).map(|(v, _)| *v).collect();
        let rest: Vec<f64> = vals.iter().zip(flags).filter(|(_, f)| !**f).map(|(v, _)| *v).collect();
        (mean(&tagged), mean(&rest))
    };
    let (tagged_mean, rest_mean) = difference_of(&flags);
    let difference = tagged_mean - rest_mean;
    let tagged = flags.iter().filter(|f| **f).count();
    let rest = flags.len() - tagged;
    let note = if tagged == 0 || rest == 0 {
        format!("undefined: {tagged} tagged and {rest} other sentences with a value")
    } else if vals.iter().all(|&v| v == vals[0]) {
        "every sentence has the same value: no difference to test".into()
    } else {
        String::new()
    };
    let (mut greater, mut either) = (0usize, 0usize);
    let testable = difference.is_finite() && permutations > 0;
    if testable {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut permuted = flags.clone();
        for _ in 0..permutations {
            permuted.shuffle(&mut rng);
            let (t, r) = difference_of(&permuted);
            let d = t - r;
            // Within 1e-12 counts as reaching the observed value (sums in another order round differently).
            if d >= difference - 1e-12 {
                greater += 1;
            }
            if d.abs() >= difference.abs() - 1e-12 {
                either += 1;
            }
        }
    }
    let p = |count: usize| if testable { (1 + count) as f64 / (1 + permutations) as f64 } else { f64::NAN };
    Ok(TaggedDifference {
        tag: tag.to_owned(),
        tagged,
        rest,
        tagged_mean,
        rest_mean,
        difference,
        p_greater: p(greater),
        p_two_sided: p(either),
        permutations,
        seed,
        note,
    })
}

/// Mean importance per function tag (a sentence counts once for each of its tags).
#[derive(Debug, Clone, Serialize)]
pub struct TagImportance {
    pub tag: String,
    pub sentences: usize,
    #[serde(with = "nan_as_null")]
    pub mean: f64,
}

/// [`TagImportance`] of every tag in `rows` (rows without a finite value left out), by tag name.
pub fn importance_by_tag(rows: &[ImportanceRow]) -> Vec<TagImportance> {
    let mut by_tag: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for row in rows.iter().filter(|r| r.value.is_finite()) {
        for tag in &row.function_tags {
            by_tag.entry(tag).or_default().push(row.value);
        }
    }
    by_tag.into_iter().map(|(tag, v)| TagImportance { tag: tag.to_owned(), sentences: v.len(), mean: mean(&v) }).collect()
}

/// What `thoughtscope blackbox` compares.
#[derive(Debug, Clone)]
pub struct BlackboxConfig {
    /// The trace (a folder with `base_solution.json`, `chunks.json`, `chunks_labeled.json`).
    pub problem_dir: PathBuf,
    /// `chunks_labeled.json` written by `thoughtscope importance` for this trace.
    pub importance: PathBuf,
    pub field: String,
    pub model: String,
    /// Traces whose receiver heads are selected (any depth); the trace is then scored with those
    /// heads. Default: the trace alone (no split-half reliability then).
    pub heads_from: Option<PathBuf>,
    pub receiver: ReceiverOptions,
    pub cache_dir: PathBuf,
    /// Where the trace's suppression run is stored (computed there when absent); `None`: no
    /// suppression comparison.
    pub suppression_dir: Option<PathBuf>,
    pub suppression: SuppressionOptions,
    /// The tag of the tagged-vs-rest test and of the matched control's chosen set.
    pub tag: String,
    pub bootstrap_draws: usize,
    pub permutations: usize,
    pub control_draws: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// How the model is loaded (device, weights, kernels) and the cache read.
    pub settings: Settings,
}

impl BlackboxConfig {
    pub fn new(problem_dir: impl Into<PathBuf>, importance: impl Into<PathBuf>, out: impl Into<PathBuf>) -> BlackboxConfig {
        BlackboxConfig {
            problem_dir: problem_dir.into(),
            importance: importance.into(),
            field: COUNTERFACTUAL.into(),
            model: "smollm2-135m".into(),
            heads_from: None,
            receiver: ReceiverOptions::default(),
            cache_dir: PathBuf::from("attn_cache"),
            suppression_dir: None,
            suppression: SuppressionOptions::default(),
            tag: "verbalized_evaluation_awareness".into(),
            bootstrap_draws: 1000,
            permutations: 1000,
            control_draws: 1000,
            seed: 0,
            out: out.into(),
            settings: Settings::default(),
        }
    }
}

/// One sentence with every measure.
#[derive(Debug, Clone, Serialize)]
pub struct BlackboxSentence {
    pub sentence: usize,
    #[serde(with = "nan_as_null")]
    pub importance: f64,
    #[serde(with = "nan_as_null")]
    pub accuracy: f64,
    #[serde(with = "nan_as_null")]
    pub receiver_score: f64,
    #[serde(with = "nan_as_null")]
    pub suppression_outgoing: f64,
    #[serde(with = "nan_as_null")]
    pub suppression_incoming: f64,
    pub length_chars: usize,
    pub tags: String,
}

/// One named correlation of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub against: String,
    #[serde(flatten)]
    pub correlation: BootstrapCorrelation,
}

/// Everything [`run_blackbox`] found.
#[derive(Debug, Clone, Serialize)]
pub struct BlackboxResult {
    pub trace: String,
    pub field: String,
    pub comparisons: Vec<Comparison>,
    /// Pearson r of the two halves' mean head kurtoses (`None` with fewer than 2 traces).
    pub split_half: Option<crate::scores::stats::Pearson>,
    pub heads_from: Vec<String>,
    pub tagged: TaggedDifference,
    /// The tagged sentences against sentences of matched length (characters) and position.
    pub tag_control: MatchedControl,
    /// The top-5 sentences by receiver score against matched controls, on the importance.
    pub receiver_top_control: Option<MatchedControl>,
    pub by_tag: Vec<TagImportance>,
    pub sentences: Vec<BlackboxSentence>,
    pub json: PathBuf,
    pub csv: PathBuf,
}

impl BlackboxResult {
    pub fn headline(&self) -> String {
        let parts: Vec<String> = self
            .comparisons
            .iter()
            .map(|c| format!("{}: rho {:.3} [{:.3}, {:.3}] (n {})", c.against, c.correlation.rho, c.correlation.ci_low, c.correlation.ci_high, c.correlation.n))
            .collect();
        format!(
            "{} vs {}; {}: {:+.4} (p {:.3}); wrote {}",
            self.field,
            parts.join(", "),
            self.tagged.tag,
            self.tagged.difference,
            self.tagged.p_greater,
            self.json.display()
        )
    }
}

/// The sentences' measures as CSV (NaN as an empty field).
pub fn sentences_csv(sentences: &[BlackboxSentence]) -> String {
    let cell = |v: f64| if v.is_finite() { format!("{v}") } else { String::new() };
    let mut out = String::from("sentence,importance,accuracy,receiver_score,suppression_outgoing,suppression_incoming,length_chars,tags\n");
    for s in sentences {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},\"{}\"\n",
            s.sentence,
            cell(s.importance),
            cell(s.accuracy),
            cell(s.receiver_score),
            cell(s.suppression_outgoing),
            cell(s.suppression_incoming),
            s.length_chars,
            s.tags.replace('"', "\"\"")
        ));
    }
    out
}

/// The caches a run fills, which must survive its output folder being replaced.
fn output_folder_inside(config: &BlackboxConfig) -> Vec<&Path> {
    std::iter::once(config.cache_dir.as_path()).chain(config.suppression_dir.as_deref()).collect()
}

/// Loads the model and runs [`run_blackbox_with`].
pub fn run_blackbox(config: &BlackboxConfig) -> Result<BlackboxResult> {
    crate::io::check_output_folder(&config.out, &output_folder_inside(config))?;
    let loaded = Model::load(&config.model, &config.settings)?;
    run_blackbox_with(config, &loaded)
}

/// Receiver scores (heads from `heads_from`, cached attention), optionally suppression, and every
/// statistic above on one trace; writes `blackbox.json` and `blackbox_sentences.csv` into `out`.
pub fn run_blackbox_with(config: &BlackboxConfig, loaded: &Loaded) -> Result<BlackboxResult> {
    // A file or a folder of other files at --out fails now, not after the passes.
    crate::io::check_output_folder(&config.out, &output_folder_inside(config))?;
    let problem_dir = &config.problem_dir;
    let root = problem_dir.parent().unwrap_or(problem_dir);
    let trace = load_trace(root, problem_dir, SentenceMode::Chunks)?;
    let n = trace.sentences.len();
    let rows = read_importance(&config.importance, &config.field)?;
    if let Some(row) = rows.iter().find(|r| r.chunk_idx >= n) {
        return Err(Error::format(&config.importance, format!("`chunk_idx` {} but the trace {} has {n} chunks", row.chunk_idx, problem_dir.display())));
    }
    let importance = measured_importance(&rows, n, &config.field);
    let accuracy = {
        let mut a = vec![f64::NAN; n];
        rows.iter().for_each(|r| a[r.chunk_idx] = r.accuracy);
        a
    };

    // Receiver heads chosen over `heads_from` (or over the trace itself), then this trace's
    // receiver scores under those heads (a short trace is scored, not allowed to pick the heads).
    let mut corpus: Vec<Trace> = match &config.heads_from {
        Some(dir) => load_traces(dir, SentenceMode::Chunks)?,
        None => vec![trace.clone()],
    };
    let token_pairs = crate::plot::ExplorerOptions::default().token_pairs_to_store();
    let receivers = corpus_receivers(loaded, &config.cache_dir, &mut corpus, BoundaryMode::Prefix, &config.receiver, 0, token_pairs)?;
    let cache = AttnCache::new(&config.cache_dir)
        .strict(loaded.settings.strict_cache)
        .with_token_pairs(crate::plot::ExplorerOptions::default().token_pairs_to_store());
    let (attention, _, _) = cached_sentence_attention(&cache, loaded, &trace.sentences, BoundaryMode::Prefix, CacheLayout::Native)
        .while_doing_with(|| format!("sentence attention of {}", problem_dir.display()))?;
    let receiver = receiver_scores(&head_vertical_scores(&attention, &config.receiver.vertical), &receivers.heads.top_k_heads)?;
    let split_half = if receivers.heads.kurtosis.len() >= 2 { Some(split_half_reliability(&receivers.heads.kurtosis)?) } else { None };

    let (outgoing, incoming) = match &config.suppression_dir {
        Some(dir) => {
            let options = SuppressionOptions { boundary_mode: BoundaryMode::Prefix, ..config.suppression.clone() };
            let (matrix, _, _) = cached_suppression(dir, loaded, &trace.sentences, &options)?;
            (outgoing_importance(&matrix), incoming_importance(&matrix))
        }
        None => (vec![f64::NAN; n], vec![f64::NAN; n]),
    };

    let seed = config.seed;
    let mut comparisons = vec![Comparison { against: "receiver_score".into(), correlation: bootstrap_spearman(&importance, &receiver, config.bootstrap_draws, 0.95, seed)? }];
    if config.suppression_dir.is_some() {
        comparisons.push(Comparison { against: "suppression_outgoing".into(), correlation: bootstrap_spearman(&importance, &outgoing, config.bootstrap_draws, 0.95, seed)? });
        comparisons.push(Comparison { against: "suppression_incoming".into(), correlation: bootstrap_spearman(&importance, &incoming, config.bootstrap_draws, 0.95, seed)? });
    }
    let lengths: Vec<usize> = trace.sentences.sentences.iter().map(|s| s.trim().chars().count()).collect();
    let mask: Vec<bool> = trace.tags.iter().map(|t| t.iter().any(|x| x == &config.tag)).collect();
    let tagged = tagged_difference(&config.tag, &importance, &mask, config.permutations, seed)?;
    let chosen: Vec<usize> = (0..n).filter(|&i| mask[i]).collect();
    let tag_control = matched_control(&importance, &lengths, &chosen, config.control_draws, 3, seed)?;
    let receiver_top_control = {
        let mut order: Vec<usize> = (0..n).filter(|&i| receiver[i].is_finite()).collect();
        order.sort_by(|&a, &b| receiver[b].total_cmp(&receiver[a]).then(a.cmp(&b)));
        order.truncate(5);
        (!order.is_empty()).then(|| matched_control(&importance, &lengths, &order, config.control_draws, 3, seed)).transpose()?
    };
    let sentences: Vec<BlackboxSentence> = (0..n)
        .map(|i| BlackboxSentence {
            sentence: i,
            importance: importance[i],
            accuracy: accuracy[i],
            receiver_score: receiver.get(i).copied().unwrap_or(f64::NAN),
            suppression_outgoing: outgoing[i],
            suppression_incoming: incoming[i],
            length_chars: lengths[i],
            tags: trace.tags[i].join(";"),
        })
        .collect();
    let json = config.out.join("blackbox.json");
    let csv = config.out.join("blackbox_sentences.csv");
    let result = BlackboxResult {
        trace: trace.name.clone(),
        field: config.field.clone(),
        comparisons,
        split_half,
        heads_from: receivers.heads.responses.clone(),
        tagged,
        tag_control,
        receiver_top_control,
        by_tag: importance_by_tag(&rows),
        sentences,
        json: json.clone(),
        csv: csv.clone(),
    };
    // The folder as a whole (unless a cache the run fills lies inside it).
    crate::io::write_output_folder(&config.out, &output_folder_inside(config), |dir| {
        crate::io::write_json(dir.join("blackbox.json"), &result)?;
        crate::io::write_atomic(dir.join("blackbox_sentences.csv"), sentences_csv(&result.sentences).as_bytes())
    })?;
    Ok(result)
}

/// Accuracy and the accuracy importances (counterfactual, resampling, forced) per chunk of an
/// importance file (one line each; NaN as gaps: no rollouts, or no forced run), the chunks
/// tagged `tag` marked.
pub fn accuracy_figure(path: &Path, tag: &str, title: &str) -> Result<crate::plot::Figure> {
    let field = |name: &str| -> Result<Vec<f64>> {
        let rows = read_importance(path, name)?;
        let n = rows.last().map_or(0, |r| r.chunk_idx + 1);
        Ok(by_sentence(&rows, n))
    };
    let rows = read_importance(path, COUNTERFACTUAL)?;
    let n = rows.last().map_or(0, |r| r.chunk_idx + 1);
    let mut accuracy = vec![f64::NAN; n];
    rows.iter().for_each(|r| accuracy[r.chunk_idx] = r.accuracy);
    let highlight = rows.iter().filter(|r| r.function_tags.iter().any(|t| t == tag)).map(|r| r.chunk_idx).collect();
    crate::plot::line_scores(
        &[
            crate::plot::Series::new("accuracy", accuracy),
            crate::plot::Series::new("counterfactual_importance_accuracy", field(COUNTERFACTUAL)?),
            crate::plot::Series::new("resampling_importance_accuracy", field("resampling_importance_accuracy")?),
            crate::plot::Series::new("forced_importance_accuracy", field("forced_importance_accuracy")?),
        ],
        &crate::plot::LineOptions {
            title: title.to_owned(),
            x_title: "chunk (the one removed and resampled)".into(),
            y_title: "accuracy / importance".into(),
            highlight,
            highlight_name: tag.to_owned(),
            ..Default::default()
        },
    )
}

/// Mean importance per function tag as bars (± SEM over the tag's sentences).
pub fn tag_figure(rows: &[ImportanceRow], title: &str) -> Result<crate::plot::Figure> {
    let tags = importance_by_tag(rows);
    let sem: Vec<f64> = tags
        .iter()
        .map(|t| {
            let v: Vec<f64> = rows.iter().filter(|r| r.value.is_finite() && r.function_tags.contains(&t.tag)).map(|r| r.value).collect();
            crate::scores::stats::sem(&v)
        })
        .collect();
    crate::plot::bar_with_error(
        &tags.iter().map(|t| format!("{} (n={})", t.tag, t.sentences)).collect::<Vec<_>>(),
        &tags.iter().map(|t| t.mean).collect::<Vec<_>>(),
        &sem,
        &crate::plot::BarOptions { title: title.to_owned(), x_title: "function tag".into(), y_title: "mean importance".into(), ..Default::default() },
    )
}

/// The correlations as a table: `against, rho, ci_low, ci_high, p_asymptotic, n, left_out,
/// valid_draws, note`.
pub fn comparison_table(comparisons: &[Comparison]) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let f = |g: fn(&BootstrapCorrelation) -> f64| comparisons.iter().map(|c| g(&c.correlation)).collect::<Vec<f64>>();
    Ok(DataFrame::new_infer_height(vec![
        Column::new("against".into(), comparisons.iter().map(|c| c.against.clone()).collect::<Vec<_>>()),
        Column::new("rho".into(), f(|c| c.rho)),
        Column::new("ci_low".into(), f(|c| c.ci_low)),
        Column::new("ci_high".into(), f(|c| c.ci_high)),
        Column::new("p_asymptotic".into(), f(|c| c.p_asymptotic)),
        Column::new("n".into(), comparisons.iter().map(|c| c.correlation.n as u32).collect::<Vec<_>>()),
        Column::new("left_out".into(), comparisons.iter().map(|c| c.correlation.left_out as u32).collect::<Vec<_>>()),
        Column::new("valid_draws".into(), comparisons.iter().map(|c| c.correlation.valid_draws as u32).collect::<Vec<_>>()),
        Column::new("note".into(), comparisons.iter().map(|c| c.correlation.note.clone()).collect::<Vec<_>>()),
    ])?)
}
