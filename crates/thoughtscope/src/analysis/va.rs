//! The VA attention analysis of the VA seed notebook (Qwen3-4B-Thinking, problem 9), step by step,
//! computing exactly what the seed's cells compute. Each step is a function, so the notebook
//! (`notebooks/va_attention.ipynb`) mirrors the seed cell by cell and [`run_va`](super::va_pipeline::run_va) (`thoughtscope
//! va`) composes the same functions:
//!
//! 1. [`representative_layers`]: `sorted(set([max(0, int(0.10·(L−1))), int(0.50·(L−1)),
//!    int(0.90·(L−1))]))` (SmolLM2, 30 layers: 2, 14, 26; Qwen3-4B: 3, 17, 31);
//! 2. [`discover_rollouts`]: directories under a root whose
//!    names start with a prefix, sorted;
//! 3. [`load_chunks_and_tag_mask`]: the seed's `load_chunks_and_va_mask` — sentences =
//!    `chunks.json` chunks, text = the chunks joined by `"\n"`, tag mask from
//!    `chunks_labeled.json` truncated to the sentence count and read **by index**; a label whose
//!    text differs from its chunk is counted ([`TaggedRollout::label_mismatches`]), not skipped;
//! 4. [`AttentionSource`]: the seed's `get_avg_attention_matrix` (the first request for a text
//!    fills the cache for every layer and head; the model is loaded once, on the first miss);
//! 5. [`head_rows`]: per layer and head, the `[1:-1]` trim when N ≥ 3
//!    ([`trim_ends`]) and [`compute_va_stats_for_head`] — one [`HeadRow`] per (rollout, layer,
//!    head) with the seed's columns;
//! 6. [`best_per_layer`]: per (rollout, layer) the head with the largest `|delta_va_vert|`,
//!    reproducing pandas' `df.sort_values('abs_delta_va_vert', ascending=False)
//!    .groupby(['rollout_id', 'layer'], as_index=False).first()` (see [`best_per_layer`] for ties
//!    and NaN);
//! 7. [`distinctiveness`]: `distinctiveness_score` = the SUM over the representative layers of the
//!    best `|delta_va_vert|` (pandas' NaN-skipping sum: a rollout whose deltas are all NaN scores
//!    0); `rank_by_score` sorts by score, descending, and the first is the most distinctive;
//! 8. `summary_row` / `rollout_meta`: the seed's `summary.csv` row and `meta.json`
//!    (untrimmed sentence counts, as the seed writes them), figures of every rollout's best heads
//!    ([`super::va_report`]), all written by [`super::va_pipeline`].
//!
//! Beyond the seed (named options or extra columns, the seed's rule staying the default):
//! [`HeadRule::Signed`] (largest signed delta) and [`LayerAggregate::Mean`] (mean over layers);
//! vertical-score settings, trim and sentence mode as options; a `status` column and label-mismatch
//! counts; the cache provenance (`thought-anchors (unverified)` for a Python-made cache entry);
//! and permutation p-values ([`permutation_test`]): the tag mask is shuffled within the rollout
//! (seeded) and each layer's statistic — the **maximum over the scanned heads** of `|delta|`, the
//! same rule that picks the head — and the summed score are recomputed, `p = (1 + #{perm ≥
//! observed}) / (1 + B)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::tag_stats::{compute_va_stats_for_head, delta_from_scores, seed_vertical_options, trim_ends, VaHeadStats};
use crate::attention::{AttentionSource, BoundaryMode, CacheOutcome, SentenceMode, Sentences};
use crate::io::shard::{Shard, ShardRun};
use crate::model::Settings;
use crate::rollout::{discover_rollouts, misaligned_labels, read_chunks_file, read_labels_file, ChunkLabel, Rollout};
use crate::scores::{ScoreType, VerticalOptions};
use crate::{Error, Result};

/// The seed's tag: `verbalized_evaluation_awareness`.
pub const VA_TAG: &str = "verbalized_evaluation_awareness";

/// Which head is "best" in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadRule {
    /// The largest `|delta_va_vert|` (the seed).
    #[default]
    Abs,
    /// The largest signed `delta_va_vert` (tagged sentences receive MORE).
    Signed,
}
crate::model::named_values!(HeadRule, "head rule", { Abs => "abs", Signed => "signed" });

/// How a rollout's best per-layer values make its `distinctiveness_score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerAggregate {
    /// Sum over layers, NaN skipped (the seed; all NaN gives 0).
    #[default]
    Sum,
    /// Mean over layers, NaN skipped (all NaN gives NaN).
    Mean,
}
crate::model::named_values!(LayerAggregate, "layer aggregate", { Sum => "sum", Mean => "mean" });

/// Settings of the VA pipeline (the notebook's config cell).
#[derive(Debug, Clone, Serialize)]
pub struct VaConfig {
    pub root: PathBuf,
    pub prefix: String,
    /// Registry name, GGUF file, HF directory or hub id; also the cache directory name.
    pub model: String,
    pub tag: String,
    pub sentence_mode: SentenceMode,
    pub boundary_mode: BoundaryMode,
    /// Representative layers; `None`: [`representative_layers`].
    pub layers: Option<Vec<usize>>,
    /// Heads scanned at each layer; `None`: all (the seed's `HEADS_TO_SCAN`).
    pub heads: Option<Vec<usize>>,
    /// Vertical-score settings (seed: `proximity_ignore = 4`, depth control, mean).
    pub proximity_ignore: usize,
    pub control_depth: bool,
    pub score_type: ScoreType,
    /// The seed's `[1:-1]` trim (when N ≥ 3); `false` analyses every sentence.
    pub trim: bool,
    pub head_rule: HeadRule,
    pub layer_aggregate: LayerAggregate,
    /// The seed's `RUN_ATTENTION`: `false` is the dry run (tag counts only, no model).
    pub run_attention: bool,
    /// Permutations of the tag mask per rollout (0: no p-values).
    pub permutations: usize,
    pub seed: u64,
    pub cache_dir: PathBuf,
    /// Output directory; `None`: `analysis/va_attention/<root folder name>/`.
    pub out: Option<PathBuf>,
    /// Write the heatmap and vertical-score figure of every rollout's best heads.
    pub figures: bool,
    /// Also PNG (needs Chromium; skipped with a note when absent).
    pub static_images: bool,
    /// Heads of the token view in each rollout's `explorer.html`: a cache miss stores their
    /// token pairs in the entry, from the same pass (0: none stored, no token view).
    pub token_heads: usize,
    /// Tokens kept per sentence on each side of a token-view pair.
    pub token_max: usize,
    /// How the model is loaded on a cache miss (device, weights, kernels) and the cache read; not
    /// part of what the run records.
    #[serde(skip)]
    pub settings: Settings,
}

impl Default for VaConfig {
    fn default() -> Self {
        VaConfig {
            root: PathBuf::from("rollouts/apple_boxes"),
            prefix: "rollout_".into(),
            model: "smollm2-135m".into(),
            tag: VA_TAG.into(),
            sentence_mode: SentenceMode::Chunks,
            boundary_mode: BoundaryMode::Prefix,
            layers: None,
            heads: None,
            proximity_ignore: 4,
            control_depth: true,
            score_type: ScoreType::Mean,
            trim: true,
            head_rule: HeadRule::Abs,
            layer_aggregate: LayerAggregate::Sum,
            run_attention: true,
            permutations: 1000,
            seed: 0,
            cache_dir: PathBuf::from("attn_cache"),
            out: None,
            figures: true,
            static_images: true,
            token_heads: 4,
            token_max: 16,
            settings: Settings::default(),
        }
    }
}

/// The analysis settings of one head's statistics and the head selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VaOptions {
    pub vertical: VerticalOptions,
    pub trim: bool,
    pub head_rule: HeadRule,
    pub layer_aggregate: LayerAggregate,
}

impl Default for VaOptions {
    /// The seed's: `p = 4`, depth control, mean, trim, largest `|delta|`, sum over layers.
    fn default() -> Self {
        VaOptions {
            vertical: seed_vertical_options(),
            trim: true,
            head_rule: HeadRule::Abs,
            layer_aggregate: LayerAggregate::Sum,
        }
    }
}

impl VaConfig {
    pub fn options(&self) -> VaOptions {
        VaOptions {
            vertical: VerticalOptions {
                proximity_ignore: self.proximity_ignore,
                control_depth: self.control_depth,
                score_type: self.score_type,
            },
            trim: self.trim,
            head_rule: self.head_rule,
            layer_aggregate: self.layer_aggregate,
        }
    }

    /// The output directory this config writes to.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let problem = self.root.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "rollouts".into());
            PathBuf::from("analysis/va_attention").join(problem)
        })
    }

    /// The attention source of this config (model loaded on the first cache miss, with
    /// [`VaConfig::settings`]); a miss also stores the token pairs of each rollout's explorer
    /// page ([`VaConfig::explorer_options`]) in the entry.
    pub fn attention_source(&self) -> AttentionSource {
        AttentionSource::new(&self.model, &self.cache_dir, self.boundary_mode)
            .with_settings(self.settings.clone())
            .with_token_pairs(self.explorer_options().token_pairs_to_store())
    }

    /// The options of each rollout's `explorer.html` (the attention cache read, no forward pass).
    pub fn explorer_options(&self) -> crate::plot::ExplorerOptions {
        crate::plot::ExplorerOptions {
            model: Some(self.model.clone()),
            cache_dir: self.cache_dir.clone(),
            mode: self.sentence_mode,
            va_tag: self.tag.clone(),
            boundary_mode: self.boundary_mode,
            token_heads: self.token_heads,
            token_max: self.token_max,
            ..Default::default()
        }
    }
}

/// The seed's representative layers: `sorted(set([max(0, int(0.10·(L−1))), int(0.50·(L−1)),
/// int(0.90·(L−1))]))`.
pub fn representative_layers(num_layers: usize) -> Vec<usize> {
    let last = num_layers.saturating_sub(1) as f64;
    let mut layers: Vec<usize> = [0.10, 0.50, 0.90].iter().map(|f| (f * last) as usize).collect();
    layers.sort_unstable();
    layers.dedup();
    layers
}

/// Sorted, deduplicated layers or heads, each checked against the model's count.
pub(crate) fn checked_indices(given: &[usize], count: usize, what: &str, model: &str) -> Result<Vec<usize>> {
    let mut sorted = given.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if let Some(bad) = sorted.iter().find(|&&x| x >= count) {
        return Err(Error::invalid(format!("{what} {bad} out of range: {model} has {count} {what}s")));
    }
    if sorted.is_empty() {
        return Err(Error::invalid(format!("no {what}s to scan")));
    }
    Ok(sorted)
}

/// One rollout's sentences and tag mask (the seed's `load_chunks_and_va_mask`).
#[derive(Debug, Clone)]
pub struct TaggedRollout {
    pub rollout_id: String,
    pub dir: PathBuf,
    pub tag: String,
    /// Text and sentences (`chunks`: the chunks joined by `"\n"`).
    pub sentences: Sentences,
    /// `mask[k]`: sentence k carries the tag (length N, untrimmed).
    pub mask: Vec<bool>,
    /// `chunks_labeled.json` entries truncated to N (the seed's `labeled[:n]`); empty when the
    /// file is missing.
    pub labels: Vec<ChunkLabel>,
    /// Whether `chunks_labeled.json` exists.
    pub has_labels: bool,
    /// Entries in `chunks_labeled.json` before the truncation to N (0 without the file): the
    /// status says when labels were dropped or sentences left without one.
    pub label_entries: usize,
    /// Label entries whose `chunk` text differs from their sentence (whitespace runs collapsed):
    /// a warning, the mask still reads labels by index.
    pub label_mismatches: Vec<usize>,
    /// Where the chunks came from: `chunks.json`, or `chunks_labeled.json` when there is no
    /// `chunks.json` (same strings in the published data), or `base_solution.json` (full-cot).
    pub chunks_source: &'static str,
}

impl TaggedRollout {
    /// N, the untrimmed sentence count.
    pub fn n_sentences(&self) -> usize {
        self.sentences.len()
    }

    /// Tagged sentences (untrimmed).
    pub fn n_tagged(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    /// Indices of the tagged sentences (the seed's `va_idxs`, untrimmed).
    pub fn tagged_indices(&self) -> Vec<usize> {
        self.mask.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i).collect()
    }

    /// The mask the statistics see: `mask[1:-1]` when trimming and N ≥ 3.
    pub fn analysed_mask(&self, trim: bool) -> Vec<bool> {
        let n = self.mask.len();
        if trim && n >= 3 { self.mask[1..n - 1].to_vec() } else { self.mask.clone() }
    }
}

/// The seed's `load_chunks_and_va_mask(rollout_dir)` for tag `tag`, with the sentence mode as an
/// option (`chunks`: the seed; `full-cot`: thought-anchors' segmentation of
/// `base_solution.full_cot`, N = chunks − 1). A label entry tags sentence k when its
/// `function_tags` contain `tag` (labelling-error records, which carry `categories`, tag
/// nothing, as in the seed).
pub fn load_chunks_and_tag_mask(dir: impl AsRef<Path>, tag: &str, mode: SentenceMode) -> Result<TaggedRollout> {
    let dir = dir.as_ref();
    let labels_file = read_labels_file(&dir.join("chunks_labeled.json"))?;
    let has_labels = labels_file.is_some();
    let all_labels = labels_file.unwrap_or_default();
    let label_entries = all_labels.len();
    let (sentences, chunks_source) = match mode {
        SentenceMode::Chunks => match read_chunks_file(&dir.join("chunks.json"))? {
            Some(chunks) => (Sentences::from_chunks(&chunks), "chunks.json"),
            None if has_labels => {
                let chunks: Vec<String> = all_labels.iter().map(|l| l.chunk.clone()).collect();
                (Sentences::from_chunks(&chunks), "chunks_labeled.json")
            }
            None => {
                return Err(Error::format(dir, "neither chunks.json nor chunks_labeled.json is present (needed for chunks mode)"))
            }
        },
        SentenceMode::FullCot => (Rollout::open(dir)?.sentences(SentenceMode::FullCot)?, "base_solution.json"),
    };
    let n = sentences.len();
    let labels: Vec<ChunkLabel> = all_labels.into_iter().take(n).collect();
    let mut mask = vec![false; n];
    for (k, label) in labels.iter().enumerate() {
        mask[k] = !label.labelling_error && label.tags.iter().any(|t| t == tag);
    }
    let label_mismatches = misaligned_labels(&labels, &sentences);
    let rollout_id = dir.file_name().map_or_else(|| dir.display().to_string(), |s| s.to_string_lossy().into_owned());
    Ok(TaggedRollout {
        rollout_id,
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        sentences,
        mask,
        labels,
        has_labels,
        label_entries,
        label_mismatches,
        chunks_source,
    })
}

/// One (rollout, layer, head) row of the seed's per-head table `df`.
#[derive(Debug, Clone, Serialize)]
pub struct HeadRow {
    pub rollout_id: String,
    pub layer: usize,
    pub head: usize,
    /// Sentences analysed (after the trim).
    pub n_sentences: usize,
    /// Tagged sentences among them.
    pub n_va: usize,
    /// `n_va / max(1, n_sentences)`.
    pub va_rate: f64,
    #[serde(flatten)]
    pub stats: VaHeadStats,
}

impl HeadRow {
    pub fn abs_delta_va_vert(&self) -> f64 {
        self.stats.delta_va_vert.abs()
    }
}

/// The seed's per-head step on one matrix: the trim when `options.trim` and N ≥ 3, then
/// [`compute_va_stats_for_head`].
pub(crate) fn head_row(rollout_id: &str, layer: usize, head: usize, matrix: &[f32], n: usize, mask: &[bool], options: &VaOptions) -> Result<HeadRow> {
    let (matrix, n, mask) = if options.trim { trim_ends(matrix, n, mask)? } else { (matrix.to_vec(), n, mask.to_vec()) };
    let stats = compute_va_stats_for_head(&matrix, n, &mask, &options.vertical)?;
    let n_va = mask.iter().filter(|&&m| m).count();
    Ok(HeadRow {
        rollout_id: rollout_id.to_string(),
        layer,
        head,
        n_sentences: n,
        n_va,
        va_rate: n_va as f64 / n.max(1) as f64,
        stats,
    })
}

/// Step 1 for one rollout: every `layers × heads` row (layer-major, as the seed's loops), the
/// matrices from `source` (one forward pass on a cache miss).
pub fn head_rows(
    source: &mut AttentionSource,
    rollout: &TaggedRollout,
    layers: &[usize],
    heads: &[usize],
    options: &VaOptions,
) -> Result<Vec<HeadRow>> {
    let n = rollout.n_sentences();
    let mut rows = Vec::with_capacity(layers.len() * heads.len());
    for &layer in layers {
        for &head in heads {
            let matrix = source.matrix(&rollout.sentences, layer, head)?;
            rows.push(head_row(&rollout.rollout_id, layer, head, &matrix, n, &rollout.mask, options)?);
        }
    }
    Ok(rows)
}

/// One row of the seed's `best_per_layer` (pandas `groupby(['rollout_id', 'layer']).first()`
/// after sorting by `abs_delta_va_vert`): every column is the FIRST NON-NaN value of its column
/// in the group's sorted order, so with NaN present the columns may come from different rows
/// ([`BestHead::mixed_rows`]).
#[derive(Debug, Clone, Serialize)]
pub struct BestHead {
    pub rollout_id: String,
    pub layer: usize,
    pub head: usize,
    pub n_sentences: usize,
    pub n_va: usize,
    pub va_rate: f64,
    pub delta_va_vert: f64,
    pub mean_va_vert: f64,
    pub mean_nonva_vert: f64,
    pub lift_in_va: f64,
    pub mean_in_va: f64,
    pub mean_in_nonva: f64,
    pub mean_out_va: f64,
    pub mean_va_to_va: f64,
    pub abs_delta_va_vert: f64,
    /// Some column came from a later row than `head`'s, because `head`'s value was NaN (pandas'
    /// `first()` skips NaN per column).
    pub mixed_rows: bool,
    /// Other heads whose sort key equals `head`'s exactly (a tie; see [`best_per_layer`]).
    pub tied_heads: Vec<usize>,
}

impl BestHead {
    /// The per-layer value the score aggregates: `|delta|` (seed) or the signed delta.
    pub(crate) fn score_value(&self, rule: HeadRule) -> f64 {
        match rule {
            HeadRule::Abs => self.abs_delta_va_vert,
            HeadRule::Signed => self.delta_va_vert,
        }
    }
}

/// Sort key of a row under `rule` (descending; NaN last).
fn sort_key(row: &HeadRow, rule: HeadRule) -> f64 {
    match rule {
        HeadRule::Abs => row.abs_delta_va_vert(),
        HeadRule::Signed => row.stats.delta_va_vert,
    }
}

/// The seed's best head per (rollout, layer):
/// `df.sort_values('abs_delta_va_vert', ascending=False).groupby(['rollout_id', 'layer'],
/// as_index=False).first()` ([`HeadRule::Signed`]: sorted by `delta_va_vert`). Groups come out
/// sorted by (rollout_id, layer), as pandas' groupby sorts its keys.
///
/// What pandas does, and what this does:
/// - **NaN sorts last** (`na_position='last'`), in the rows' original order;
/// - `first()` takes, **per column, the first non-NaN value** (`skipna=True`): `head`, `layer` and
///   the counts come from the top row, but when the top row's `lift_in_va` (say) is NaN the
///   column takes the next row's value; [`BestHead::mixed_rows`] flags such groups. A group whose
///   deltas are all NaN gets the first head scanned and NaN deltas;
/// - **exact ties** of the sort key: pandas' default `quicksort` is not stable, and numpy
///   dispatches it to AVX-512 / AVX2 sorting networks where the CPU has them, so which tied row
///   comes first depends on the machine and on the size of the whole table. Here the tied row
///   scanned first (lowest head) wins — pandas' order with `kind='stable'`. Ties are real with
///   depth control on short texts (two heads with the same rank pattern); they never change the
///   score, only which of the tied heads is reported, and [`BestHead::tied_heads`] lists them.
pub fn best_per_layer(rows: &[HeadRow], rule: HeadRule) -> Vec<BestHead> {
    let mut groups: BTreeMap<(&str, usize), Vec<usize>> = BTreeMap::new();
    for (index, row) in rows.iter().enumerate() {
        groups.entry((row.rollout_id.as_str(), row.layer)).or_default().push(index);
    }
    groups
        .into_iter()
        .map(|((rollout_id, layer), members)| {
            let (mut order, nans): (Vec<usize>, Vec<usize>) = members.into_iter().partition(|&i| !sort_key(&rows[i], rule).is_nan());
            // Stable: equal keys keep the scan order.
            order.sort_by(|&a, &b| sort_key(&rows[b], rule).total_cmp(&sort_key(&rows[a], rule)));
            let top_key = order.first().map(|&i| sort_key(&rows[i], rule));
            let tied_heads = order
                .iter()
                .skip(1)
                .filter(|&&i| Some(sort_key(&rows[i], rule)) == top_key)
                .map(|&i| rows[i].head)
                .collect();
            order.extend(nans);
            let top = &rows[order[0]];
            let mut mixed = false;
            let mut first = |get: &dyn Fn(&HeadRow) -> f64| -> f64 {
                let own = get(top);
                if !own.is_nan() {
                    return own;
                }
                match order.iter().map(|&i| get(&rows[i])).find(|v| !v.is_nan()) {
                    Some(v) => {
                        mixed = true;
                        v
                    }
                    None => f64::NAN,
                }
            };
            let delta_va_vert = first(&|r| r.stats.delta_va_vert);
            let mean_va_vert = first(&|r| r.stats.mean_va_vert);
            let mean_nonva_vert = first(&|r| r.stats.mean_nonva_vert);
            let lift_in_va = first(&|r| r.stats.lift_in_va);
            let mean_in_va = first(&|r| r.stats.mean_in_va);
            let mean_in_nonva = first(&|r| r.stats.mean_in_nonva);
            let mean_out_va = first(&|r| r.stats.mean_out_va);
            let mean_va_to_va = first(&|r| r.stats.mean_va_to_va);
            let abs_delta_va_vert = first(&|r| r.abs_delta_va_vert());
            let va_rate = first(&|r| r.va_rate);
            BestHead {
                rollout_id: rollout_id.to_string(),
                layer,
                head: top.head,
                n_sentences: top.n_sentences,
                n_va: top.n_va,
                va_rate,
                delta_va_vert,
                mean_va_vert,
                mean_nonva_vert,
                lift_in_va,
                mean_in_va,
                mean_in_nonva,
                mean_out_va,
                mean_va_to_va,
                abs_delta_va_vert,
                mixed_rows: mixed,
                tied_heads,
            }
        })
        .collect()
}

/// NaN-skipping sum (pandas `Series.sum`: 0 when nothing is left) or mean (NaN then), in order.
pub(crate) fn aggregate_layers(values: &[f64], aggregate: LayerAggregate) -> f64 {
    let kept: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let sum = kept.iter().fold(0.0, |acc, v| acc + v);
    match aggregate {
        LayerAggregate::Sum => sum,
        LayerAggregate::Mean if kept.is_empty() => f64::NAN,
        LayerAggregate::Mean => sum / kept.len() as f64,
    }
}

/// One row of the seed's `agg` table (Step 1's ranking): the score and the counts of the first
/// best row (trimmed counts, as in the seed's `agg`).
#[derive(Debug, Clone, Serialize)]
pub struct RolloutScore {
    pub rollout_id: String,
    pub distinctiveness_score: f64,
    pub n_va: usize,
    pub n_sentences: usize,
    /// `n_va / max(n_sentences, 1)`.
    pub va_rate: f64,
}

/// The seed's `agg`: per rollout (sorted by id, as groupby), `distinctiveness_score` = the
/// aggregate over its layers (in layer order) of each best head's `|delta|` (seed: sum).
pub fn distinctiveness(best: &[BestHead], options: &VaOptions) -> Vec<RolloutScore> {
    let mut groups: BTreeMap<&str, Vec<&BestHead>> = BTreeMap::new();
    for b in best {
        groups.entry(b.rollout_id.as_str()).or_default().push(b);
    }
    groups
        .into_iter()
        .map(|(rollout_id, mut rows)| {
            rows.sort_by_key(|b| b.layer);
            let values: Vec<f64> = rows.iter().map(|b| b.score_value(options.head_rule)).collect();
            let (n_va, n_sentences) = (rows[0].n_va, rows[0].n_sentences);
            RolloutScore {
                rollout_id: rollout_id.to_string(),
                distinctiveness_score: aggregate_layers(&values, options.layer_aggregate),
                n_va,
                n_sentences,
                va_rate: n_va as f64 / n_sentences.max(1) as f64,
            }
        })
        .collect()
}

/// Indices of `scores` sorted by score, descending, NaN last; ties keep their order (see
/// [`best_per_layer`] on pandas' unstable sort).
pub(crate) fn rank_by_score(scores: &[f64]) -> Vec<usize> {
    let (mut order, nans): (Vec<usize>, Vec<usize>) = (0..scores.len()).partition(|&i| !scores[i].is_nan());
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.extend(nans);
    order
}

/// The seed's `agg.sort_values('distinctiveness_score', ascending=False)` (ties keep their order).
pub fn rank_scores(scores: &[RolloutScore]) -> Vec<RolloutScore> {
    let values: Vec<f64> = scores.iter().map(|s| s.distinctiveness_score).collect();
    rank_by_score(&values).into_iter().map(|i| scores[i].clone()).collect()
}

/// The seed's `best_rollout_id`: the first of `agg` sorted by score, descending.
pub fn most_distinctive(scores: &[RolloutScore]) -> Option<String> {
    let values: Vec<f64> = scores.iter().map(|s| s.distinctiveness_score).collect();
    rank_by_score(&values).first().map(|&i| scores[i].rollout_id.clone())
}

/// Permutation p-values of one rollout (beyond the seed).
#[derive(Debug, Clone, Serialize)]
pub struct PermutationTest {
    /// `(layer, p)`: the layer's max over heads of `|delta|` against its permutation distribution.
    pub by_layer: Vec<(usize, f64)>,
    /// The distinctiveness score against its permutation distribution.
    pub score: f64,
    pub permutations: usize,
}

fn rollout_stream(rollout_id: &str) -> u64 {
    // FNV-1a: a stable per-rollout stream, so a rollout's p-values do not depend on the others.
    rollout_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Permutation test of one rollout's rows (all its layers × heads, with their vertical scores):
/// the analysed tag mask is shuffled `permutations` times (ChaCha8 seeded by `seed`, stream by
/// rollout id); per layer the statistic is the maximum over the scanned heads of the head rule's
/// value (`|delta|`), the rollout's is `aggregate_layers` of those; `p = (1 + #{perm ≥
/// observed}) / (1 + B)`, NaN when the observed value is NaN.
pub fn permutation_test(rows: &[HeadRow], analysed_mask: &[bool], options: &VaOptions, permutations: usize, seed: u64) -> PermutationTest {
    let mut layers: BTreeMap<usize, Vec<&[f64]>> = BTreeMap::new();
    for row in rows {
        layers.entry(row.layer).or_default().push(&row.stats.vert_scores);
    }
    let layer_ids: Vec<usize> = layers.keys().copied().collect();
    let statistic = |mask: &[bool]| -> Vec<f64> {
        layers
            .values()
            .map(|heads| {
                heads
                    .iter()
                    .map(|scores| {
                        let (delta, _, _) = delta_from_scores(scores, mask);
                        match options.head_rule {
                            HeadRule::Abs => delta.abs(),
                            HeadRule::Signed => delta,
                        }
                    })
                    .filter(|v| !v.is_nan())
                    .fold(f64::NAN, |best, v| if best.is_nan() || v > best { v } else { best })
            })
            .collect()
    };
    let observed = statistic(analysed_mask);
    let observed_score = aggregate_layers(&observed, options.layer_aggregate);
    let mut exceed = vec![0usize; observed.len()];
    let mut exceed_score = 0usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(rollout_stream(rows.first().map_or("", |r| r.rollout_id.as_str())));
    let mut permuted = analysed_mask.to_vec();
    for _ in 0..permutations {
        permuted.shuffle(&mut rng);
        let values = statistic(&permuted);
        for (k, v) in values.iter().enumerate() {
            if *v >= observed[k] {
                exceed[k] += 1;
            }
        }
        if aggregate_layers(&values, options.layer_aggregate) >= observed_score {
            exceed_score += 1;
        }
    }
    let p = |observed: f64, exceed: usize| {
        if observed.is_nan() || permutations == 0 { f64::NAN } else { (1 + exceed) as f64 / (1 + permutations) as f64 }
    };
    let all_nan = observed.iter().all(|v| v.is_nan());
    PermutationTest {
        by_layer: layer_ids.iter().zip(&observed).zip(&exceed).map(|((&l, &o), &e)| (l, p(o, e))).collect(),
        score: if all_nan { f64::NAN } else { p(observed_score, exceed_score) },
        permutations,
    }
}

/// Python's `f"{x:.{digits}f}"`: `nan`, `inf`, `-inf` spelled as Python does.
pub(crate) fn py_fixed(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{x:.digits$}")
    }
}

/// One row of the seed's `summary.csv` (first nine fields, the seed's columns and string
/// formats), then this project's additions.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub rollout_id: String,
    /// Untrimmed, as the seed's summary.
    pub n_sentences: usize,
    pub n_va: usize,
    pub va_rate: f64,
    pub distinctiveness_score: f64,
    /// `"2,14,26"`.
    pub layers: String,
    pub heads: String,
    /// `{:.4f}` per layer, comma-joined.
    pub delta_va_vert_by_layer: String,
    /// `{:.3f}` per layer (`nan` when not finite), comma-joined.
    pub lift_in_va_by_layer: String,
    // Beyond the seed.
    /// `ok`, or what makes the numbers degenerate / why the rollout was not analysed.
    pub status: String,
    /// Permutation p-value of the score.
    pub p_value: f64,
    /// Per layer, `{:.4f}` comma-joined.
    pub p_value_by_layer: String,
    pub most_distinctive: bool,
    /// Label entries whose text differs from their sentence.
    pub label_mismatches: usize,
    /// Cache provenance: `hit`, `computed`, `thought-anchors (unverified)`.
    pub cache: String,
    pub text_id: String,
}

/// The seed's summary row of one rollout from its best heads (`best`, any order; the rollout's
/// rows only), with the additions.
pub(crate) fn summary_row(rollout: &TaggedRollout, best: &[BestHead], options: &VaOptions) -> SummaryRow {
    let mut sel: Vec<&BestHead> = best.iter().filter(|b| b.rollout_id == rollout.rollout_id).collect();
    sel.sort_by_key(|b| b.layer);
    let join = |f: &dyn Fn(&BestHead) -> String| sel.iter().map(|b| f(b)).collect::<Vec<_>>().join(",");
    let values: Vec<f64> = sel.iter().map(|b| b.score_value(options.head_rule)).collect();
    let n = rollout.n_sentences();
    let n_va = rollout.n_tagged();
    SummaryRow {
        rollout_id: rollout.rollout_id.clone(),
        n_sentences: n,
        n_va,
        va_rate: n_va as f64 / n.max(1) as f64,
        distinctiveness_score: aggregate_layers(&values, options.layer_aggregate),
        layers: join(&|b| b.layer.to_string()),
        heads: join(&|b| b.head.to_string()),
        delta_va_vert_by_layer: join(&|b| py_fixed(b.delta_va_vert, 4)),
        // The seed writes `nan` for any non-finite lift (inf included).
        lift_in_va_by_layer: join(&|b| if b.lift_in_va.is_finite() { py_fixed(b.lift_in_va, 3) } else { "nan".into() }),
        status: match rollout_status(rollout, options) {
            // Nothing about the rollout explains NaN deltas: the attention itself was NaN.
            status if status == "ok" && !values.is_empty() && values.iter().all(|v| v.is_nan()) => {
                "every best head's delta is NaN (NaN attention): the score 0 measures nothing".to_owned()
            }
            status => status,
        },
        p_value: f64::NAN,
        p_value_by_layer: String::new(),
        most_distinctive: false,
        label_mismatches: rollout.label_mismatches.len(),
        cache: String::new(),
        text_id: rollout.sentences.text_id(),
    }
}

/// The seed's `summary_df`: `summary_row` of every rollout that has best heads, with the
/// permutation p-values of `tests` (`(rollout_id, test)`), sorted by score, descending (ties keep
/// rollout order), `most_distinctive` set on the first.
pub fn summary_rows(rollouts: &[&TaggedRollout], best: &[BestHead], options: &VaOptions, tests: &[(String, PermutationTest)]) -> Vec<SummaryRow> {
    let rows: Vec<SummaryRow> = rollouts
        .iter()
        .filter(|r| best.iter().any(|b| b.rollout_id == r.rollout_id))
        .map(|rollout| {
            let mut row = summary_row(rollout, best, options);
            if let Some((_, test)) = tests.iter().find(|(id, _)| *id == row.rollout_id) {
                row.p_value = test.score;
                row.p_value_by_layer = test.by_layer.iter().map(|(_, p)| py_fixed(*p, 4)).collect::<Vec<_>>().join(",");
            }
            row
        })
        .collect();
    let order = rank_by_score(&rows.iter().map(|s| s.distinctiveness_score).collect::<Vec<_>>());
    let mut sorted: Vec<SummaryRow> = order.into_iter().map(|i| rows[i].clone()).collect();
    if let Some(first) = sorted.first_mut() {
        first.most_distinctive = true;
    }
    sorted
}

/// `ok`, or why the rollout's deltas are NaN (its score is then 0 under the seed's sum).
pub fn rollout_status(rollout: &TaggedRollout, options: &VaOptions) -> String {
    let mask = rollout.analysed_mask(options.trim);
    let tagged = mask.iter().filter(|&&m| m).count();
    let mut notes = Vec::new();
    if !rollout.has_labels {
        notes.push("no chunks_labeled.json".to_string());
    }
    if mask.len() <= options.vertical.proximity_ignore {
        notes.push(format!(
            "{} analysed sentences ≤ proximity_ignore {}: every vertical score is NaN",
            mask.len(),
            options.vertical.proximity_ignore
        ));
    } else if tagged == 0 {
        notes.push("no tagged sentence analysed: deltas are NaN".into());
    } else if tagged == mask.len() {
        notes.push("every analysed sentence tagged: deltas are NaN".into());
    }
    let n = rollout.n_sentences();
    if rollout.has_labels && rollout.label_entries < n {
        notes.push(format!(
            "{} of {n} sentences have no label entry (chunks_labeled.json has {}): counted untagged",
            n - rollout.label_entries,
            rollout.label_entries
        ));
    }
    // Full-cot drops the final chunk by design (the seed's `labeled[:n]`); more is worth a word.
    let expected_excess = usize::from(rollout.chunks_source == "base_solution.json");
    if rollout.label_entries > n + expected_excess {
        notes.push(format!(
            "{} label entries beyond the {n} sentences ignored (the seed's labeled[:n])",
            rollout.label_entries - n
        ));
    }
    if !rollout.label_mismatches.is_empty() {
        notes.push(format!(
            "{} label texts differ from their sentences (first at {}); labels read by index",
            rollout.label_mismatches.len(),
            rollout.label_mismatches[0]
        ));
    }
    if notes.is_empty() { "ok".into() } else { notes.join("; ") }
}

/// The seed's `meta.json` of one rollout (`rollout_id, n_sentences, n_va, va_idxs, layers,
/// heads`: untrimmed counts, best heads in layer order) plus this project's fields.
pub(crate) fn rollout_meta(rollout: &TaggedRollout, best: &[BestHead], summary: Option<&SummaryRow>, config: &VaConfig) -> serde_json::Value {
    let mut sel: Vec<&BestHead> = best.iter().filter(|b| b.rollout_id == rollout.rollout_id).collect();
    sel.sort_by_key(|b| b.layer);
    let number = |x: f64| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null };
    serde_json::json!({
        "rollout_id": rollout.rollout_id,
        "n_sentences": rollout.n_sentences(),
        "n_va": rollout.n_tagged(),
        "va_idxs": rollout.tagged_indices(),
        "layers": sel.iter().map(|b| b.layer).collect::<Vec<_>>(),
        "heads": sel.iter().map(|b| b.head).collect::<Vec<_>>(),
        "tag": rollout.tag,
        "sentence_mode": rollout.sentences.mode,
        "chunks_source": rollout.chunks_source,
        "text_id": rollout.sentences.text_id(),
        "trimmed": config.trim && rollout.n_sentences() >= 3,
        "delta_va_vert_by_layer": sel.iter().map(|b| number(b.delta_va_vert)).collect::<Vec<_>>(),
        "lift_in_va_by_layer": sel.iter().map(|b| number(b.lift_in_va)).collect::<Vec<_>>(),
        "label_mismatches": rollout.label_mismatches,
        "status": summary.map(|s| s.status.clone()),
        "distinctiveness_score": summary.map(|s| number(s.distinctiveness_score)),
        "p_value": summary.map(|s| number(s.p_value)),
        "cache": summary.map(|s| s.cache.clone()),
    })
}

/// One rollout of a run: its input, how its attention was obtained, its p-values.
#[derive(Debug, Clone)]
pub struct RolloutRun {
    pub rollout_id: String,
    pub dir: PathBuf,
    /// `None` when the rollout could not be read (see `error`).
    pub rollout: Option<TaggedRollout>,
    /// Why the rollout was not analysed.
    pub error: Option<String>,
    pub cache: Option<CacheOutcome>,
    pub permutation: Option<PermutationTest>,
}

/// Result of [`run_va`](super::va_pipeline::run_va).
#[derive(Debug)]
pub struct VaResult {
    pub config: VaConfig,
    pub model: String,
    pub layers: Vec<usize>,
    pub heads: Vec<usize>,
    pub rollouts: Vec<RolloutRun>,
    /// The seed's `df`: every (rollout, layer, head), in scan order.
    pub rows: Vec<HeadRow>,
    /// The seed's `best_per_layer`.
    pub best: Vec<BestHead>,
    /// The seed's `agg` (sorted by rollout id; `VaResult::ranked_scores` sorts by score).
    pub scores: Vec<RolloutScore>,
    /// The seed's `summary_df`, sorted by score descending; rollouts that could not be analysed
    /// at the end.
    pub summary: Vec<SummaryRow>,
    /// The most distinctive rollout.
    pub chosen: Option<String>,
    pub forward_passes: usize,
    /// Whether the model had to be loaded (a cache miss).
    pub model_loaded: bool,
    pub out_dir: PathBuf,
    pub notes: Vec<String>,
}

impl VaResult {
    /// `agg` sorted by score, descending (the seed's Step 1 display).
    pub(crate) fn ranked_scores(&self) -> Vec<RolloutScore> {
        rank_scores(&self.scores)
    }

    /// The line the CLI prints about forward passes and the chosen rollout.
    pub fn headline(&self) -> String {
        if !self.config.run_attention {
            return format!("dry run (RUN_ATTENTION = false): tag counts of {} rollouts, no model; outputs in {}", self.rollouts.len(), self.out_dir.display());
        }
        let passes = if self.forward_passes == 0 {
            format!("no forward pass ({} rollouts from the attention cache)", self.rollouts.iter().filter(|r| r.cache.is_some()).count())
        } else {
            format!("{} forward passes", self.forward_passes)
        };
        let chosen = match self.chosen.as_ref().and_then(|id| self.summary.iter().find(|s| &s.rollout_id == id)) {
            Some(s) => format!(
                "most distinctive rollout {}: score {:.4} (layers {}, heads {}), permutation p = {}",
                s.rollout_id,
                s.distinctiveness_score,
                s.layers,
                s.heads,
                py_fixed(s.p_value, 4)
            ),
            None => "no rollout could be analysed (see summary.csv status)".into(),
        };
        format!("{passes}; {chosen}; outputs in {}", self.out_dir.display())
    }
}

/// One task of a sharded run (a Slurm array task): fill the attention cache for the rollouts
/// `shard` owns and write nothing else. A rollout belongs to the shard of its text id (the cache
/// entry's name, so two rollouts with one text fall to one task); one that cannot be read, to
/// the shard of its folder name, where it is listed as failed. Every shared file (tables,
/// figures, `meta.json`) is the merge's: [`run_va`](super::va_pipeline::run_va) without a shard over the filled cache, which
/// runs no forward pass and writes what a single process would.
pub fn fill_cache_shard(config: &VaConfig, source: &mut AttentionSource, shard: Shard) -> Result<ShardRun> {
    if !config.run_attention {
        return Err(Error::invalid("va --dry-run runs no model and fills no cache: there is nothing to shard (drop --shard)"));
    }
    crate::io::check_folder_or_absent(&config.cache_dir)?;
    let dirs = discover_rollouts(&config.root, &config.prefix)?;
    let mut run = ShardRun { shard: Some(shard), total: dirs.len(), ..ShardRun::default() };
    let mut mine = Vec::new();
    for dir in &dirs {
        let rollout_id = dir.file_name().map_or_else(|| dir.display().to_string(), |s| s.to_string_lossy().into_owned());
        match load_chunks_and_tag_mask(dir, &config.tag, config.sentence_mode) {
            Ok(rollout) if rollout.n_sentences() > 0 => {
                if shard.owns(&rollout.sentences.text_id()) {
                    mine.push((rollout_id, rollout));
                }
            }
            Ok(_) if shard.owns(&rollout_id) => run.failed.push((rollout_id, "no sentences".into())),
            Err(e) if shard.owns(&rollout_id) => run.failed.push((rollout_id, e.to_string())),
            _ => {}
        }
    }
    run.taken = mine.len() + run.failed.len();
    let bar = crate::progress::progress(mine.len() as u64, "rollouts");
    for (rollout_id, rollout) in &mine {
        bar.set_message(rollout_id.clone());
        let outcome = source.prepare(&rollout.sentences);
        bar.inc(1);
        match outcome {
            Ok(CacheOutcome::Computed) => run.computed += 1,
            Ok(_) => run.cached += 1,
            Err(e) if e.is_environmental() => return Err(e.context(format!("rollout {rollout_id}"))),
            Err(e) => run.failed.push((rollout_id.clone(), e.to_string())),
        }
    }
    bar.finish();
    Ok(run)
}
