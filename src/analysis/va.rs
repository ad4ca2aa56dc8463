//! The tagged-sentence ("VA": `verbalized_evaluation_awareness` by default) attention pipeline of
//! the VA seed notebook, as one library call used by `thoughtscope va`, the notebook and tests:
//!
//! 1. discover rollout directories under a root by name prefix (sorted);
//! 2. per rollout: sentences (`chunks` mode by default), the tag mask, one forward pass into the
//!    attention cache (or a cache hit: no forward pass at all);
//! 3. per representative layer (10/50/90 % of depth by default) and head: the statistics of
//!    [`super::tag_stats`] (`delta_va_vert`, `mean_in_va`, `lift`, ...);
//! 4. per rollout and layer the head with the largest `delta_va_vert`; the rollout's
//!    `distinctiveness_score` = mean over the representative layers of that best delta; the most
//!    distinctive rollout is the one with the largest score;
//! 5. beyond the seed: a permutation test that shuffles the tag mask within each rollout
//!    (seeded). A selected head's p-value compares its delta with the **maximum over the scanned
//!    heads** of the same layer under each permutation (max-over-heads correction); the rollout's
//!    p-value compares its distinctiveness score with the score recomputed under each permutation.
//!    Both are `(1 + #{perm ≥ observed}) / (1 + N)`.
//!
//! Rollouts that cannot be analysed (no tagged sentences, too few sentences for the trim and
//! proximity band, labels that do not line up with the chunks) get a status in the summary
//! instead of failing the run.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::tag_stats::{tag_stats, TagStats, TagStatsOptions};
use crate::attention::{cached_sentence_attention, AttnCache, BoundaryMode, CacheLayout, CacheOutcome, SentenceAttention, SentenceMode};
use crate::model::{Loaded, Model};
use crate::plot::{self, ColorLimits, HeatmapOptions, LineOptions, SaveFormat, Series};
use crate::rollout::{discover_rollouts, misaligned_labels, tag_mask, Rollout};
use crate::scores::{vertical_scores, ScoreType, VerticalOptions};
use crate::{Error, Result};

/// Settings of the VA pipeline (the notebook's config cell).
#[derive(Debug, Clone, Serialize)]
pub struct VaConfig {
    pub root: PathBuf,
    pub prefix: String,
    pub model: String,
    pub tag: String,
    pub sentence_mode: SentenceMode,
    pub boundary_mode: BoundaryMode,
    /// Representative layers; `None`: 10 %, 50 % and 90 % of depth.
    pub layers: Option<Vec<usize>>,
    /// Heads scanned at each layer; `None`: all.
    pub heads: Option<Vec<usize>>,
    pub proximity_ignore: usize,
    pub control_depth: bool,
    pub score_type: ScoreType,
    /// The notebook's `[1:-1]` trim of first and last sentence.
    pub trim: bool,
    pub permutations: usize,
    pub seed: u64,
    pub cache_dir: PathBuf,
    /// Output directory; `None`: `analysis/va_attention/<root folder name>/`.
    pub out: Option<PathBuf>,
    /// Write heatmaps and vertical-score plots for every rollout and selected head.
    pub figures: bool,
    /// Also PNG and SVG (needs Chromium; skipped with a note when absent).
    pub static_images: bool,
}

impl Default for VaConfig {
    fn default() -> Self {
        VaConfig {
            root: PathBuf::from("rollouts/apple_boxes"),
            prefix: "rollout_".into(),
            model: "smollm2-135m".into(),
            tag: "verbalized_evaluation_awareness".into(),
            sentence_mode: SentenceMode::Chunks,
            boundary_mode: BoundaryMode::Prefix,
            layers: None,
            heads: None,
            proximity_ignore: 4,
            control_depth: true,
            score_type: ScoreType::Mean,
            trim: true,
            permutations: 1000,
            seed: 0,
            cache_dir: PathBuf::from("attn_cache"),
            out: None,
            figures: true,
            static_images: true,
        }
    }
}

impl VaConfig {
    fn tag_options(&self) -> TagStatsOptions {
        TagStatsOptions {
            vertical: VerticalOptions {
                proximity_ignore: self.proximity_ignore,
                control_depth: self.control_depth,
                score_type: self.score_type,
            },
            trim: self.trim,
        }
    }

    /// The output directory this config writes to.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let problem = self.root.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "rollouts".into());
            PathBuf::from("analysis/va_attention").join(problem)
        })
    }
}

/// Representative layers: 10 %, 50 % and 90 % of depth (`floor(f · L)`, deduplicated).
pub fn default_layers(num_layers: usize) -> Vec<usize> {
    let mut layers: Vec<usize> =
        [0.1, 0.5, 0.9].iter().map(|f| ((f * num_layers as f64).floor() as usize).min(num_layers - 1)).collect();
    layers.dedup();
    layers
}

/// The head chosen at one layer of one rollout.
#[derive(Debug, Clone, Serialize)]
pub struct BestHead {
    pub layer: usize,
    pub head: usize,
    pub delta_va_vert: f64,
    /// Max-over-heads permutation p-value.
    pub p_value: f64,
}

/// Everything computed for one rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutVa {
    pub rollout_id: String,
    pub dir: PathBuf,
    /// `ok`, or why the rollout was not analysed.
    pub status: String,
    pub n_sentences: usize,
    pub n_tagged: usize,
    pub tagged: Vec<usize>,
    /// Statistics per (layer, head) scanned, in layer-major order.
    pub heads: Vec<(usize, usize, TagStats)>,
    pub best: Vec<BestHead>,
    pub distinctiveness_score: f64,
    pub p_value: f64,
    pub cache: String,
    #[serde(skip)]
    pub attention: Option<SentenceAttention>,
}

/// Result of [`run_va`].
#[derive(Debug)]
pub struct VaResult {
    pub config: VaConfig,
    pub model: String,
    pub layers: Vec<usize>,
    pub heads: Vec<usize>,
    pub rollouts: Vec<RolloutVa>,
    /// `rollout_id` of the most distinctive analysable rollout.
    pub chosen: Option<String>,
    pub forward_passes: usize,
    pub cache_hits: usize,
    pub out_dir: PathBuf,
    pub notes: Vec<String>,
}

/// `delta_va_vert` from a head's (trimmed) vertical scores and a mask: mean over tagged minus
/// mean over untagged sentences, NaN scores skipped (as [`tag_stats`]).
fn delta_from_scores(scores: &[f64], mask: &[bool]) -> f64 {
    let (mut a, mut na, mut b, mut nb) = (0.0, 0usize, 0.0, 0usize);
    for (&v, &m) in scores.iter().zip(mask) {
        if v.is_nan() {
            continue;
        }
        if m {
            a += v;
            na += 1;
        } else {
            b += v;
            nb += 1;
        }
    }
    a / na as f64 - b / nb as f64
}

/// Vertical scores of the (optionally trimmed) matrix, as `tag_stats` computes them.
fn trimmed_scores(matrix: &[f32], n: usize, options: &TagStatsOptions) -> Result<Vec<f64>> {
    let (m, k) = if options.trim {
        let k = n.saturating_sub(2);
        let mut trimmed = Vec::with_capacity(k * k);
        for i in 1..=k {
            trimmed.extend_from_slice(&matrix[i * n + 1..i * n + 1 + k]);
        }
        (trimmed, k)
    } else {
        (matrix.to_vec(), n)
    };
    Ok(vertical_scores(&m, k, &options.vertical)?.values)
}

fn nan_mean(values: &[f64]) -> f64 {
    let kept: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if kept.is_empty() {
        f64::NAN
    } else {
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}

/// Statistics, best heads and permutation p-values of one rollout's attention.
fn analyse(
    attention: &SentenceAttention,
    mask: &[bool],
    layers: &[usize],
    heads: &[usize],
    config: &VaConfig,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<(usize, usize, TagStats)>, Vec<BestHead>, f64, f64)> {
    let options = config.tag_options();
    let n = attention.n();
    let mut stats = Vec::new();
    // Per layer: the scanned heads' vertical scores (mask-independent, computed once).
    let mut scores: Vec<Vec<Vec<f64>>> = Vec::new();
    for &l in layers {
        let mut per_head = Vec::new();
        for &h in heads {
            let matrix = attention.matrix(l, h);
            stats.push((l, h, tag_stats(matrix, n, mask, &options)?));
            per_head.push(trimmed_scores(matrix, n, &options)?);
        }
        scores.push(per_head);
    }
    let analysed_mask: Vec<bool> = if config.trim { mask[1..n - 1].to_vec() } else { mask.to_vec() };
    let layer_best = |mask: &[bool]| -> Vec<(usize, f64)> {
        scores
            .iter()
            .map(|per_head| {
                per_head.iter().map(|s| delta_from_scores(s, mask)).enumerate().fold((0, f64::NAN), |best, (i, d)| {
                    if !d.is_nan() && (best.1.is_nan() || d > best.1) { (i, d) } else { best }
                })
            })
            .collect()
    };
    let observed = layer_best(&analysed_mask);
    let distinctiveness = nan_mean(&observed.iter().map(|b| b.1).collect::<Vec<_>>());

    let mut exceed_layer = vec![0usize; layers.len()];
    let mut exceed_score = 0usize;
    let mut permuted = analysed_mask.clone();
    for _ in 0..config.permutations {
        permuted.shuffle(rng);
        let best = layer_best(&permuted);
        for (k, b) in best.iter().enumerate() {
            if b.1 >= observed[k].1 {
                exceed_layer[k] += 1;
            }
        }
        if nan_mean(&best.iter().map(|b| b.1).collect::<Vec<_>>()) >= distinctiveness {
            exceed_score += 1;
        }
    }
    let p = |exceed: usize| (1 + exceed) as f64 / (1 + config.permutations) as f64;
    let best = layers
        .iter()
        .zip(&observed)
        .zip(&exceed_layer)
        .map(|((&layer, &(i, delta)), &ex)| BestHead {
            layer,
            head: heads[i],
            delta_va_vert: delta,
            p_value: if delta.is_nan() { f64::NAN } else { p(ex) },
        })
        .collect();
    let p_score = if distinctiveness.is_nan() { f64::NAN } else { p(exceed_score) };
    Ok((stats, best, distinctiveness, p_score))
}

/// Run the whole pipeline and write its outputs (see the module doc).
pub fn run_va(config: &VaConfig) -> Result<VaResult> {
    let loaded = Model::load(&config.model, &candle_core::Device::Cpu)?;
    run_va_with(config, &loaded)
}

/// [`run_va`] with an already loaded model.
pub fn run_va_with(config: &VaConfig, loaded: &Loaded) -> Result<VaResult> {
    let dirs = discover_rollouts(&config.root, &config.prefix)?;
    if dirs.is_empty() {
        return Err(Error::invalid(format!(
            "no rollout directories starting with `{}` under {}",
            config.prefix,
            config.root.display()
        )));
    }
    let num_layers = loaded.model.num_layers();
    let num_heads = loaded.model.num_heads();
    let layers = config.layers.clone().unwrap_or_else(|| default_layers(num_layers));
    let heads = config.heads.clone().unwrap_or_else(|| (0..num_heads).collect());
    if let Some(bad) = layers.iter().find(|&&l| l >= num_layers) {
        return Err(Error::invalid(format!("layer {bad} out of range: {} has {num_layers} layers", loaded.name)));
    }
    if let Some(bad) = heads.iter().find(|&&h| h >= num_heads) {
        return Err(Error::invalid(format!("head {bad} out of range: {} has {num_heads} heads", loaded.name)));
    }
    let cache = AttnCache::new(&config.cache_dir);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut rollouts = Vec::new();
    let (mut forward_passes, mut cache_hits) = (0, 0);
    // Enough sentences for at least one vertical score after the trim.
    let min_sentences = config.proximity_ignore + 1 + if config.trim { 2 } else { 0 };

    for dir in &dirs {
        let rollout = Rollout::open(dir)?;
        let rollout_id = rollout.name();
        let mut entry = RolloutVa {
            rollout_id: rollout_id.clone(),
            dir: dir.clone(),
            status: "ok".into(),
            n_sentences: 0,
            n_tagged: 0,
            tagged: vec![],
            heads: vec![],
            best: vec![],
            distinctiveness_score: f64::NAN,
            p_value: f64::NAN,
            cache: String::new(),
            attention: None,
        };
        let sentences = match rollout.sentences(config.sentence_mode) {
            Ok(s) => s,
            Err(e) => {
                entry.status = format!("no sentences: {e}");
                rollouts.push(entry);
                continue;
            }
        };
        entry.n_sentences = sentences.len();
        let labels = rollout.labels().map(|l| l.to_vec()).unwrap_or_default();
        let mask = tag_mask(&labels, &config.tag, sentences.len());
        entry.tagged = mask.indices();
        entry.n_tagged = mask.count();
        let misaligned = misaligned_labels(&labels, &sentences);
        let analysed_tagged = if config.trim && sentences.len() >= 2 {
            mask.mask[1..sentences.len() - 1].iter().filter(|&&m| m).count()
        } else {
            entry.n_tagged
        };
        if sentences.len() < min_sentences {
            entry.status = format!("too few sentences ({} < {min_sentences} for trim and proximity)", sentences.len());
        } else if labels.is_empty() {
            entry.status = "no chunks_labeled.json".into();
        } else if !misaligned.is_empty() {
            entry.status = format!("labels do not line up with chunks ({} entries differ, first {})", misaligned.len(), misaligned[0]);
        } else if analysed_tagged == 0 {
            entry.status = "no tagged sentences".into();
        } else if analysed_tagged == sentences.len() - if config.trim { 2 } else { 0 } {
            entry.status = "every sentence tagged".into();
        }
        if sentences.len() >= 2 {
            let (attention, outcome, _) =
                cached_sentence_attention(&cache, loaded, &sentences, config.boundary_mode, CacheLayout::Native)?;
            match outcome {
                CacheOutcome::Hit => cache_hits += 1,
                CacheOutcome::Computed => forward_passes += 1,
            }
            entry.cache = if outcome == CacheOutcome::Hit { "hit".into() } else { "computed".into() };
            if entry.status == "ok" {
                let (stats, best, score, p) = analyse(&attention, &mask.mask, &layers, &heads, config, &mut rng)?;
                entry.heads = stats;
                entry.best = best;
                entry.distinctiveness_score = score;
                entry.p_value = p;
            }
            entry.attention = Some(attention);
        }
        rollouts.push(entry);
    }
    let chosen = rollouts
        .iter()
        .filter(|r| r.status == "ok" && !r.distinctiveness_score.is_nan())
        .max_by(|a, b| a.distinctiveness_score.total_cmp(&b.distinctiveness_score))
        .map(|r| r.rollout_id.clone());
    let mut result = VaResult {
        config: config.clone(),
        model: loaded.name.clone(),
        layers,
        heads,
        rollouts,
        chosen,
        forward_passes,
        cache_hits,
        out_dir: config.out_dir(),
        notes: vec![],
    };
    write_outputs(&mut result)?;
    Ok(result)
}

impl VaResult {
    /// Per-(rollout, layer, head) statistics (`heads.csv`).
    pub fn heads_table(&self) -> Result<DataFrame> {
        let mut rows: Vec<(&RolloutVa, usize, usize, &TagStats)> = Vec::new();
        for r in &self.rollouts {
            for (l, h, s) in &r.heads {
                rows.push((r, *l, *h, s));
            }
        }
        let best_p = |r: &RolloutVa, l: usize, h: usize| {
            r.best.iter().find(|b| b.layer == l && b.head == h).map(|b| b.p_value)
        };
        let f = |name: &str, get: &dyn Fn(&TagStats) -> f64| Column::new(name.into(), rows.iter().map(|x| get(x.3)).collect::<Vec<f64>>());
        let df = DataFrame::new_infer_height(vec![
            Column::new("rollout_id".into(), rows.iter().map(|x| x.0.rollout_id.clone()).collect::<Vec<String>>()),
            Column::new("layer".into(), rows.iter().map(|x| x.1 as u32).collect::<Vec<u32>>()),
            Column::new("head".into(), rows.iter().map(|x| x.2 as u32).collect::<Vec<u32>>()),
            Column::new("n_sentences".into(), rows.iter().map(|x| x.3.n_sentences as u32).collect::<Vec<u32>>()),
            Column::new("n_va".into(), rows.iter().map(|x| x.3.n_va as u32).collect::<Vec<u32>>()),
            f("delta_va_vert", &|s| s.delta_va_vert),
            f("vert_va", &|s| s.vert_va),
            f("vert_nonva", &|s| s.vert_nonva),
            f("mean_in_va", &|s| s.mean_in_va),
            f("mean_in_nonva", &|s| s.mean_in_nonva),
            f("lift", &|s| s.lift),
            f("mean_out_va", &|s| s.mean_out_va),
            f("mean_va_to_va", &|s| s.mean_va_to_va),
            Column::new("is_best_in_layer".into(), rows.iter().map(|x| best_p(x.0, x.1, x.2).is_some()).collect::<Vec<bool>>()),
            Column::new(
                "p_value_max_over_heads".into(),
                rows.iter().map(|x| best_p(x.0, x.1, x.2)).collect::<Vec<Option<f64>>>(),
            ),
        ])?;
        Ok(df)
    }

    /// The best head per (rollout, layer) (`best_heads.csv`).
    pub fn best_heads_table(&self) -> Result<DataFrame> {
        let rows: Vec<(&str, &BestHead)> =
            self.rollouts.iter().flat_map(|r| r.best.iter().map(move |b| (r.rollout_id.as_str(), b))).collect();
        Ok(DataFrame::new_infer_height(vec![
            Column::new("rollout_id".into(), rows.iter().map(|x| x.0.to_string()).collect::<Vec<String>>()),
            Column::new("layer".into(), rows.iter().map(|x| x.1.layer as u32).collect::<Vec<u32>>()),
            Column::new("head".into(), rows.iter().map(|x| x.1.head as u32).collect::<Vec<u32>>()),
            Column::new("delta_va_vert".into(), rows.iter().map(|x| x.1.delta_va_vert).collect::<Vec<f64>>()),
            Column::new("p_value_max_over_heads".into(), rows.iter().map(|x| x.1.p_value).collect::<Vec<f64>>()),
        ])?)
    }

    /// One row per rollout (`summary.csv`).
    pub fn summary_table(&self) -> Result<DataFrame> {
        let r = &self.rollouts;
        let best_str = |x: &RolloutVa| x.best.iter().map(|b| format!("L{}H{}", b.layer, b.head)).collect::<Vec<_>>().join(" ");
        Ok(DataFrame::new_infer_height(vec![
            Column::new("rollout_id".into(), r.iter().map(|x| x.rollout_id.clone()).collect::<Vec<String>>()),
            Column::new("status".into(), r.iter().map(|x| x.status.clone()).collect::<Vec<String>>()),
            Column::new("n_sentences".into(), r.iter().map(|x| x.n_sentences as u32).collect::<Vec<u32>>()),
            Column::new("n_tagged".into(), r.iter().map(|x| x.n_tagged as u32).collect::<Vec<u32>>()),
            Column::new("distinctiveness_score".into(), r.iter().map(|x| x.distinctiveness_score).collect::<Vec<f64>>()),
            Column::new("p_value".into(), r.iter().map(|x| x.p_value).collect::<Vec<f64>>()),
            Column::new("best_heads".into(), r.iter().map(best_str).collect::<Vec<String>>()),
            Column::new(
                "most_distinctive".into(),
                r.iter().map(|x| self.chosen.as_deref() == Some(x.rollout_id.as_str())).collect::<Vec<bool>>(),
            ),
            Column::new("cache".into(), r.iter().map(|x| x.cache.clone()).collect::<Vec<String>>()),
        ])?)
    }

    /// The line the CLI prints about forward passes and the chosen rollout.
    pub fn headline(&self) -> String {
        let passes = if self.forward_passes == 0 {
            format!("no forward pass (all {} rollouts from the attention cache)", self.cache_hits)
        } else {
            format!("{} forward passes, {} cache hits", self.forward_passes, self.cache_hits)
        };
        let chosen = match &self.chosen {
            Some(id) => {
                let r = self.rollouts.iter().find(|r| &r.rollout_id == id).expect("chosen rollout exists");
                format!(
                    "most distinctive rollout {id}: score {:.4}, permutation p = {:.4} ({} permutations, max over heads)",
                    r.distinctiveness_score, r.p_value, self.config.permutations
                )
            }
            None => "no rollout could be analysed (see summary.csv status)".into(),
        };
        format!("{passes}; {chosen}; outputs in {}", self.out_dir.display())
    }
}

fn write_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    CsvWriter::new(&mut file).finish(df)?;
    Ok(())
}

fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    ParquetWriter::new(file).finish(df)?;
    Ok(())
}

fn write_json(value: &impl Serialize, path: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(value)?;
    std::fs::write(path, json).map_err(|e| Error::io(path, e))
}

/// Heatmap (tagged rows and columns outlined, colour limit at the 0.99 quantile of the lower
/// triangle) and vertical-score curve of one head of one rollout.
pub fn head_figures(r: &RolloutVa, layer: usize, head: usize, config: &VaConfig) -> Result<(plot::Figure, plot::Figure)> {
    let attention = r.attention.as_ref().ok_or_else(|| Error::invalid(format!("{}: no attention", r.rollout_id)))?;
    let n = attention.n();
    let matrix = attention.matrix(layer, head);
    let heat = plot::heatmap(
        matrix,
        n,
        &HeatmapOptions {
            title: format!("{} — layer {layer}, head {head}", r.rollout_id),
            highlight: r.tagged.clone(),
            color_limits: ColorLimits::LowerTriangleQuantile { min: 0.0, q: 0.99 },
            ..Default::default()
        },
    )?;
    let options = config.tag_options();
    let scores = vertical_scores(matrix, n, &options.vertical)?.values;
    let line = plot::line_scores(
        &[Series::new(format!("L{layer}H{head}"), scores)],
        &LineOptions {
            title: format!("{} — vertical scores, layer {layer}, head {head}", r.rollout_id),
            highlight: r.tagged.clone(),
            highlight_name: config.tag.clone(),
            ..Default::default()
        },
    )?;
    Ok((heat, line))
}

fn write_outputs(result: &mut VaResult) -> Result<()> {
    let out = result.out_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    write_csv(&mut result.heads_table()?, &out.join("heads.csv"))?;
    write_parquet(&mut result.heads_table()?, &out.join("heads.parquet"))?;
    write_csv(&mut result.best_heads_table()?, &out.join("best_heads.csv"))?;
    write_csv(&mut result.summary_table()?, &out.join("summary.csv"))?;
    write_parquet(&mut result.summary_table()?, &out.join("summary.parquet"))?;
    write_json(
        &serde_json::json!({
            "chosen_rollout": result.chosen,
            "model": result.model,
            "layers": result.layers,
            "heads": result.heads,
            "config": result.config,
            "headline": result.headline(),
        }),
        &out.join("chosen_rollout.json"),
    )?;
    let mut formats = vec![SaveFormat::Html];
    if result.config.static_images {
        if plot::static_export_available() {
            formats.extend([SaveFormat::Png, SaveFormat::Svg]);
        } else {
            result.notes.push("PNG/SVG skipped: static export needs Chromium (apt-get install chromium)".into());
        }
    }
    for r in &result.rollouts {
        let dir = out.join(&r.rollout_id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        write_json(r, &dir.join("meta.json"))?;
        if !result.config.figures || r.attention.is_none() {
            continue;
        }
        // Selected heads; rollouts that were not analysed still get their layers' head 0.
        let selected: Vec<(usize, usize)> = if r.best.is_empty() {
            result.layers.iter().map(|&l| (l, result.heads[0])).collect()
        } else {
            r.best.iter().map(|b| (b.layer, b.head)).collect()
        };
        let mut figures = Vec::new();
        for (l, h) in selected {
            let (heat, line) = head_figures(r, l, h, &result.config)?;
            figures.push((format!("heatmap_L{l}_H{h}"), heat));
            figures.push((format!("vertical_scores_L{l}_H{h}"), line));
        }
        let named: Vec<(&str, &plot::Figure)> = figures.iter().map(|(s, f)| (s.as_str(), f)).collect();
        plot::save_figures(&dir, &named, &formats)?;
    }
    Ok(())
}

/// `thoughtscope va`: the VA pipeline from the command line (defaults as the notebook's config).
#[derive(Debug, clap::Args)]
pub struct VaArgs {
    /// Folder holding the rollout directories.
    #[arg(long, default_value = "rollouts/apple_boxes")]
    pub root: PathBuf,
    /// Rollout directories are those whose names start with this.
    #[arg(long, default_value = "rollout_")]
    pub prefix: String,
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Output directory (default `analysis/va_attention/<root folder name>/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "verbalized_evaluation_awareness")]
    pub tag: String,
    #[arg(long, value_enum, default_value_t = SentenceMode::Chunks)]
    pub mode: SentenceMode,
    #[arg(long, value_enum, default_value_t = BoundaryMode::Prefix)]
    pub boundaries: BoundaryMode,
    /// Representative layers (comma-separated; default 10/50/90 % of depth).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Heads scanned (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub heads: Option<Vec<usize>>,
    #[arg(long, default_value_t = 4)]
    pub proximity_ignore: usize,
    /// Turn off depth control (rank normalisation per row).
    #[arg(long)]
    pub no_control_depth: bool,
    #[arg(long, value_enum, default_value_t = ScoreType::Mean)]
    pub score_type: ScoreType,
    /// Keep the first and last sentence (the notebook trims them: `[1:-1]`).
    #[arg(long)]
    pub no_trim: bool,
    #[arg(long, default_value_t = 1000)]
    pub permutations: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "attn_cache")]
    pub cache_dir: PathBuf,
    /// Skip the figures.
    #[arg(long)]
    pub no_figures: bool,
    /// HTML figures only (no PNG/SVG through Chromium).
    #[arg(long)]
    pub html_only: bool,
}

impl From<&VaArgs> for VaConfig {
    fn from(a: &VaArgs) -> Self {
        VaConfig {
            root: a.root.clone(),
            prefix: a.prefix.clone(),
            model: a.model.clone(),
            tag: a.tag.clone(),
            sentence_mode: a.mode,
            boundary_mode: a.boundaries,
            layers: a.layers.clone(),
            heads: a.heads.clone(),
            proximity_ignore: a.proximity_ignore,
            control_depth: !a.no_control_depth,
            score_type: a.score_type,
            trim: !a.no_trim,
            permutations: a.permutations,
            seed: a.seed,
            cache_dir: a.cache_dir.clone(),
            out: a.out.clone(),
            figures: !a.no_figures,
            static_images: !a.html_only,
        }
    }
}

/// Run `thoughtscope va`; returns the summary lines to print.
pub fn va_command(args: &VaArgs) -> Result<String> {
    let result = run_va(&VaConfig::from(args))?;
    let mut lines = vec![result.headline()];
    for r in &result.rollouts {
        if r.status != "ok" {
            lines.push(format!("  {}: {}", r.rollout_id, r.status));
        }
    }
    lines.extend(result.notes.iter().map(|n| format!("  note: {n}")));
    Ok(lines.join("\n"))
}
