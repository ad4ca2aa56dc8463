//! Tables, figures and files of the VA analysis ([`super::va`]), as the seed notebook displays and
//! writes them:
//!
//! - polars DataFrames of the seed's pandas tables, the seed's columns first and in its order:
//!   [`head_table`] (`df`), [`best_heads_table`] (`best_per_layer`), [`scores_table`] (`agg`),
//!   [`summary_table`] (`summary_df`), [`counts_table`] (the dry run); additions after them;
//! - the seed's two figures: `attention_heatmap` (the trimmed matrix, `vmin = 0`, `vmax` = the
//!   0.99 nanquantile of `np.tril(A)` over all N² cells, Blues, tagged rows and columns overlaid
//!   in red at alpha 0.18) and `vertical_scores_plot` (a line, grey untagged and red tagged
//!   points), with the seed's titles ([`heatmap_title`], [`vertical_title`]);
//! - files: `summary.csv` (+ parquet), `heads.csv` (+ parquet), `best_heads.csv`, `scores.csv`
//!   (the seed's `agg`, ranked), `chosen_rollout.json`, per rollout `meta.json` and `attn_layerLL_headHH.{html,png}` /
//!   `vert_layerLL_headHH.{html,png}` and `explorer.html` (the trace explorer, [`crate::plot::Explorer`]),
//!   and `index.html` (one self-contained report).
//!
//! Writes are atomic (temporary file + rename).

use std::path::Path;

use plotly::common::{ColorScale, ColorScaleElement, Line, Marker, Mode, Title};
use plotly::layout::{Axis, Layout};
use plotly::{Plot, Scatter};
use polars::prelude::*;
use serde_json::json;

use super::tag_stats::VaHeadStats;
use super::va::{head_row, py_fixed, BestHead, HeadRow, RolloutScore, SummaryRow, TaggedRollout, VaConfig, VaOptions, VaResult, VA_TAG};
use crate::io::write_atomic;
use crate::attention::AttentionSource;
use crate::plot::TableOptions;
use crate::plot::{self, html_escape, ColorLimits, Figure, HeatmapOptions, Report, SaveFormat};
use crate::{Context, Error, Result};

fn strings(name: &str, values: impl Iterator<Item = String>) -> Column {
    Column::new(name.into(), values.collect::<Vec<String>>())
}

fn counts(name: &str, values: impl Iterator<Item = usize>) -> Column {
    Column::new(name.into(), values.map(|v| v as u32).collect::<Vec<u32>>())
}

fn floats(name: &str, values: impl Iterator<Item = f64>) -> Column {
    Column::new(name.into(), values.collect::<Vec<f64>>())
}

fn stat_columns<'a, T: 'a>(items: &'a [T], stats: impl Fn(&T) -> [f64; 8]) -> Vec<Column> {
    let names = [
        "delta_va_vert",
        "mean_va_vert",
        "mean_nonva_vert",
        "lift_in_va",
        "mean_in_va",
        "mean_in_nonva",
        "mean_out_va",
        "mean_va_to_va",
    ];
    names.iter().enumerate().map(|(k, name)| floats(name, items.iter().map(|x| stats(x)[k]))).collect()
}

fn stats_array(s: &VaHeadStats) -> [f64; 8] {
    [s.delta_va_vert, s.mean_va_vert, s.mean_nonva_vert, s.lift_in_va, s.mean_in_va, s.mean_in_nonva, s.mean_out_va, s.mean_va_to_va]
}

/// The seed's per-head table `df` (`rollout_id, layer, head, n_sentences, n_va, va_rate,
/// delta_va_vert, mean_va_vert, mean_nonva_vert, lift_in_va, mean_in_va, mean_in_nonva,
/// mean_out_va, mean_va_to_va`), then `abs_delta_va_vert` (the seed adds it before sorting) and
/// `is_best_in_layer`.
pub fn head_table(rows: &[HeadRow], best: &[BestHead]) -> Result<DataFrame> {
    let mut columns = vec![
        strings("rollout_id", rows.iter().map(|r| r.rollout_id.clone())),
        counts("layer", rows.iter().map(|r| r.layer)),
        counts("head", rows.iter().map(|r| r.head)),
        counts("n_sentences", rows.iter().map(|r| r.n_sentences)),
        counts("n_va", rows.iter().map(|r| r.n_va)),
        floats("va_rate", rows.iter().map(|r| r.va_rate)),
    ];
    columns.extend(stat_columns(rows, |r| stats_array(&r.stats)));
    columns.push(floats("abs_delta_va_vert", rows.iter().map(|r| r.abs_delta_va_vert())));
    let is_best = |r: &HeadRow| best.iter().any(|b| b.rollout_id == r.rollout_id && b.layer == r.layer && b.head == r.head);
    columns.push(Column::new("is_best_in_layer".into(), rows.iter().map(is_best).collect::<Vec<bool>>()));
    DataFrame::new_infer_height(columns).while_doing("the per-head table")
}

/// The seed's `best_per_layer` (the groupby's columns: `rollout_id, layer, head, n_sentences,
/// n_va, va_rate, delta_va_vert, …, mean_va_to_va, abs_delta_va_vert`), then the permutation
/// p-value of the layer (max over heads; `p_values`: `(rollout_id, layer, p)`), `mixed_rows` and
/// `tied_heads`.
pub fn best_heads_table(best: &[BestHead], p_values: &[(String, usize, f64)]) -> Result<DataFrame> {
    let mut columns = vec![
        strings("rollout_id", best.iter().map(|b| b.rollout_id.clone())),
        counts("layer", best.iter().map(|b| b.layer)),
        counts("head", best.iter().map(|b| b.head)),
        counts("n_sentences", best.iter().map(|b| b.n_sentences)),
        counts("n_va", best.iter().map(|b| b.n_va)),
        floats("va_rate", best.iter().map(|b| b.va_rate)),
    ];
    columns.extend(stat_columns(best, |b| {
        [b.delta_va_vert, b.mean_va_vert, b.mean_nonva_vert, b.lift_in_va, b.mean_in_va, b.mean_in_nonva, b.mean_out_va, b.mean_va_to_va]
    }));
    columns.push(floats("abs_delta_va_vert", best.iter().map(|b| b.abs_delta_va_vert)));
    let p = |b: &BestHead| {
        p_values.iter().find(|(id, l, _)| *id == b.rollout_id && *l == b.layer).map_or(f64::NAN, |x| x.2)
    };
    columns.push(floats("p_value_max_over_heads", best.iter().map(p)));
    columns.push(Column::new("mixed_rows".into(), best.iter().map(|b| b.mixed_rows).collect::<Vec<bool>>()));
    columns.push(strings(
        "tied_heads",
        best.iter().map(|b| b.tied_heads.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(",")),
    ));
    DataFrame::new_infer_height(columns).while_doing("the best-heads table")
}

/// The seed's `agg` table: `rollout_id, distinctiveness_score, n_va, n_sentences, va_rate` (in
/// the order given; `VaResult::ranked_scores` sorts it as the seed displays it).
pub fn scores_table(scores: &[RolloutScore]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        strings("rollout_id", scores.iter().map(|s| s.rollout_id.clone())),
        floats("distinctiveness_score", scores.iter().map(|s| s.distinctiveness_score)),
        counts("n_va", scores.iter().map(|s| s.n_va)),
        counts("n_sentences", scores.iter().map(|s| s.n_sentences)),
        floats("va_rate", scores.iter().map(|s| s.va_rate)),
    ])?)
}

/// The seed's `summary_df` columns (`rollout_id, n_sentences, n_va, va_rate,
/// distinctiveness_score, layers, heads, delta_va_vert_by_layer, lift_in_va_by_layer`), then
/// `status, p_value, p_value_by_layer, most_distinctive, label_mismatches, cache, text_id`.
pub fn summary_table(summary: &[SummaryRow]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        strings("rollout_id", summary.iter().map(|s| s.rollout_id.clone())),
        counts("n_sentences", summary.iter().map(|s| s.n_sentences)),
        counts("n_va", summary.iter().map(|s| s.n_va)),
        floats("va_rate", summary.iter().map(|s| s.va_rate)),
        floats("distinctiveness_score", summary.iter().map(|s| s.distinctiveness_score)),
        strings("layers", summary.iter().map(|s| s.layers.clone())),
        strings("heads", summary.iter().map(|s| s.heads.clone())),
        strings("delta_va_vert_by_layer", summary.iter().map(|s| s.delta_va_vert_by_layer.clone())),
        strings("lift_in_va_by_layer", summary.iter().map(|s| s.lift_in_va_by_layer.clone())),
        strings("status", summary.iter().map(|s| s.status.clone())),
        floats("p_value", summary.iter().map(|s| s.p_value)),
        strings("p_value_by_layer", summary.iter().map(|s| s.p_value_by_layer.clone())),
        Column::new("most_distinctive".into(), summary.iter().map(|s| s.most_distinctive).collect::<Vec<bool>>()),
        counts("label_mismatches", summary.iter().map(|s| s.label_mismatches)),
        strings("cache", summary.iter().map(|s| s.cache.clone())),
        strings("text_id", summary.iter().map(|s| s.text_id.clone())),
    ])?)
}

/// The dry run's table (`RUN_ATTENTION = False`): `rollout_id, n_sentences, n_va, va_rate`
/// (untrimmed), sorted as the seed displays it: `n_va` then `n_sentences`, descending (a stable
/// multi-key sort, as pandas' lexsort), then `label_mismatches`.
pub fn counts_table(rollouts: &[&TaggedRollout]) -> Result<DataFrame> {
    let mut order: Vec<&TaggedRollout> = rollouts.to_vec();
    order.sort_by_key(|r| std::cmp::Reverse((r.n_tagged(), r.n_sentences())));
    Ok(DataFrame::new_infer_height(vec![
        strings("rollout_id", order.iter().map(|r| r.rollout_id.clone())),
        counts("n_sentences", order.iter().map(|r| r.n_sentences())),
        counts("n_va", order.iter().map(|r| r.n_tagged())),
        floats("va_rate", order.iter().map(|r| if r.n_sentences() == 0 { f64::NAN } else { r.n_tagged() as f64 / r.n_sentences() as f64 })),
        counts("label_mismatches", order.iter().map(|r| r.label_mismatches.len())),
    ])?)
}

/// matplotlib's `Blues` (the ColorBrewer ramp it interpolates), white to dark blue.
pub(crate) fn matplotlib_blues() -> ColorScale {
    let ramp = ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"];
    ColorScale::Vector(ramp.iter().enumerate().map(|(k, c)| ColorScaleElement(k as f64 / 8.0, c.to_string())).collect())
}

/// The seed's heatmap colour limit: `np.nanquantile(np.tril(A), 0.99)`, or 1.0 when nothing is
/// finite.
pub(crate) fn heatmap_vmax(matrix: &[f32], n: usize) -> Result<f64> {
    let q = plot::tril_quantile(matrix, n, 0.99)?;
    Ok(if q.is_finite() { q } else { 1.0 })
}

/// The seed's heatmap title: `"{rollout_id} | layer={layer} head={head} |
/// delta_va_vert={delta:.4f} lift_in_va={lift:.3f}"`.
pub fn heatmap_title(rollout_id: &str, layer: usize, head: usize, delta_va_vert: f64, lift_in_va: f64) -> String {
    format!(
        "{rollout_id} | layer={layer} head={head} | delta_va_vert={} lift_in_va={}",
        py_fixed(delta_va_vert, 4),
        py_fixed(lift_in_va, 3)
    )
}

/// The seed's vertical-score title: `"Vertical scores | {rollout_id} | layer={layer} head={head}"`.
pub fn vertical_title(rollout_id: &str, layer: usize, head: usize) -> String {
    format!("Vertical scores | {rollout_id} | layer={layer} head={head}")
}

/// The seed's `plot_attn_heatmap(avg_mat, va_mask, title)`: the (trimmed) matrix, row 0 at the
/// top, `vmin = 0`, `vmax` = [`heatmap_vmax`], Blues, every tagged row and column overlaid in red
/// at alpha 0.18 (`axhspan` / `axvspan`), axes "Sentence position".
pub(crate) fn attention_heatmap(matrix: &[f32], n: usize, mask: &[bool], title: &str) -> Result<Figure> {
    if mask.len() != n {
        return Err(Error::invalid(format!("attention heatmap: a mask of {} for {n} sentences", mask.len())));
    }
    let vmax = heatmap_vmax(matrix, n)?;
    let figure = plot::heatmap(
        matrix,
        n,
        &HeatmapOptions {
            title: title.to_string(),
            x_title: "Sentence position".into(),
            y_title: "Sentence position".into(),
            color_limits: ColorLimits::Fixed { min: 0.0, max: vmax },
            color_scale: matplotlib_blues(),
            ..Default::default()
        },
    )?;
    let band = |horizontal: bool, k: usize| {
        let (lo, hi) = (k as f64 - 0.5, k as f64 + 0.5);
        let mut shape = json!({
            "type": "rect", "layer": "above", "fillcolor": "red", "opacity": 0.18, "line": {"width": 0},
        });
        if horizontal {
            shape.as_object_mut().expect("object").extend(
                json!({"xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": lo, "y1": hi}).as_object().expect("object").clone(),
            );
        } else {
            shape.as_object_mut().expect("object").extend(
                json!({"xref": "x", "yref": "y domain", "x0": lo, "x1": hi, "y0": 0, "y1": 1}).as_object().expect("object").clone(),
            );
        }
        shape
    };
    let shapes: Vec<serde_json::Value> =
        mask.iter().enumerate().filter(|(_, &m)| m).flat_map(|(k, _)| [band(true, k), band(false, k)]).collect();
    // 7 × 6 inches in the seed.
    Ok(figure.with_size(700, 600).with_layout(json!({"shapes": shapes, "title": {"font": {"size": 13}}})))
}

/// The seed's `plot_vertical_scores(vert_scores, va_mask, title)`: the scores as a dark line (NaN
/// as gaps), untagged sentences as grey points, tagged ones as red points, legend top right.
/// Legend names are `non-VA` / `VA` for the VA tag, else `other` / the tag.
pub(crate) fn vertical_scores_plot(scores: &[f64], mask: &[bool], title: &str, tag: &str) -> Result<Figure> {
    if mask.len() != scores.len() {
        return Err(Error::invalid(format!("vertical-score plot: a mask of {} for {} scores", mask.len(), scores.len())));
    }
    let (tagged_name, other_name) = if tag == VA_TAG { ("VA".to_string(), "non-VA".to_string()) } else { (tag.to_string(), "other".to_string()) };
    let x: Vec<f64> = (0..scores.len()).map(|k| k as f64).collect();
    let pick = |want: bool| -> (Vec<f64>, Vec<f64>) {
        x.iter().zip(scores).zip(mask).filter(|(_, &m)| m == want).map(|((&x, &y), _)| (x, y)).unzip()
    };
    let mut plot = Plot::new();
    plot.add_trace(
        Scatter::new(x.clone(), scores.to_vec())
            .mode(Mode::Lines)
            .line(Line::new().color("#0f172a").width(1.0))
            .show_legend(false)
            .name("vertical score"),
    );
    let (ox, oy) = pick(false);
    plot.add_trace(Scatter::new(ox, oy).mode(Mode::Markers).marker(Marker::new().size(5).color("#94a3b8").opacity(0.8)).name(&other_name));
    let (tx, ty) = pick(true);
    plot.add_trace(Scatter::new(tx, ty).mode(Mode::Markers).marker(Marker::new().size(8).color("#ef4444").opacity(0.95)).name(&tagged_name));
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(title))
            .x_axis(Axis::new().title(Title::with_text("Sentence idx")).zero_line(false))
            .y_axis(Axis::new().title(Title::with_text("Vertical score"))),
    );
    // 10 × 2.5 inches in the seed (a little taller here for the title and axis labels).
    Ok(Figure::new(title, plot).with_size(1000, 300).with_layout(json!({
        "legend": {"x": 1, "xanchor": "right", "y": 1, "yanchor": "top", "bgcolor": "rgba(255,255,255,0.7)"},
        "title": {"font": {"size": 13}},
        "margin": {"t": 40, "b": 45},
    })))
}

/// File stems of the seed's figures: `attn_layer{LL:02}_head{HH:02}` and `vert_layer…`.
pub(crate) fn figure_stems(layer: usize, head: usize) -> (String, String) {
    (format!("attn_layer{layer:02}_head{head:02}"), format!("vert_layer{layer:02}_head{head:02}"))
}

/// The seed's plotting step for one rollout and head: the matrix (from `source`), the trim, the
/// statistics recomputed, and both figures with the seed's titles. Returns (heatmap, vertical
/// scores, the head's row).
pub fn head_figures(
    source: &mut AttentionSource,
    rollout: &TaggedRollout,
    layer: usize,
    head: usize,
    options: &VaOptions,
) -> Result<(Figure, Figure, HeadRow)> {
    let matrix = source.matrix(&rollout.sentences, layer, head)?;
    let n = rollout.n_sentences();
    let row = head_row(&rollout.rollout_id, layer, head, &matrix, n, &rollout.mask, options)?;
    let (matrix, n, mask) = if options.trim {
        super::tag_stats::trim_ends(&matrix, n, &rollout.mask)?
    } else {
        (matrix, n, rollout.mask.clone())
    };
    let heat = attention_heatmap(&matrix, n, &mask, &heatmap_title(&rollout.rollout_id, layer, head, row.stats.delta_va_vert, row.stats.lift_in_va))?;
    let vert = vertical_scores_plot(&row.stats.vert_scores, &mask, &vertical_title(&rollout.rollout_id, layer, head), &rollout.tag)?;
    Ok((heat, vert, row))
}

/// `df` as CSV at `path` (atomically).
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    CsvWriter::new(&mut bytes).finish(&mut df.clone()).while_doing_with(|| format!("writing {}", path.display()))?;
    write_atomic(path, &bytes)
}

fn write_parquet(df: &DataFrame, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes).finish(&mut df.clone()).while_doing_with(|| format!("writing {}", path.display()))?;
    write_atomic(path, &bytes)
}

fn write_json(value: &serde_json::Value, path: &Path) -> Result<()> {
    crate::io::write_json(path, value)
}

fn config_json(config: &VaConfig) -> serde_json::Value {
    serde_json::to_value(config).unwrap_or(serde_json::Value::Null)
}

/// The dry run's outputs: `va_counts.csv` and `index.html`, written into `out` (the staging
/// folder that becomes `result.out_dir`).
pub(crate) fn write_dry_run(result: &mut VaResult, out: &Path) -> Result<()> {
    let out = out.to_path_buf();
    let loaded: Vec<&TaggedRollout> = result.rollouts.iter().filter_map(|r| r.rollout.as_ref()).collect();
    let table = counts_table(&loaded)?;
    write_csv(&table, &out.join("va_counts.csv"))?;
    let mut report = Report::new(format!("VA counts (dry run): {}", result.config.root.display()))
        .text(format!("Tag `{}`, sentence mode {}. No model was loaded (RUN_ATTENTION = false).", result.config.tag, result.config.sentence_mode))
        .table_with(&table, &TableOptions { max_rows: usize::MAX, ..Default::default() });
    let failed: Vec<String> =
        result.rollouts.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.rollout_id))).collect();
    if !failed.is_empty() {
        report = report.heading("Not read").text(failed.join("\n"));
    }
    report.write_html(out.join("index.html"))
}

/// `<out>/<rollout>/explorer.html`: the rollout in the interactive trace explorer (the attention
/// cache read, no forward pass; the token view from the token pairs the entry stores).
fn write_rollout_explorer(rollout: &TaggedRollout, config: &VaConfig, out: &Path) -> Result<std::path::PathBuf> {
    let path = out.join(&rollout.rollout_id).join("explorer.html");
    plot::Explorer::from_problem_dir(&rollout.dir, &config.explorer_options())?.write_html(&path)?;
    Ok(path)
}

/// Every output of a run (see the module doc), written into `out` (the staging folder that
/// becomes `result.out_dir`).
pub(crate) fn write_outputs(result: &mut VaResult, source: &mut AttentionSource, out: &Path) -> Result<()> {
    let out = out.to_path_buf();
    let config = result.config.clone();
    let p_values: Vec<(String, usize, f64)> = result
        .rollouts
        .iter()
        .filter_map(|r| r.permutation.as_ref().map(|t| (r, t)))
        .flat_map(|(r, t)| t.by_layer.iter().map(move |&(l, p)| (r.rollout_id.clone(), l, p)))
        .collect();
    let heads = head_table(&result.rows, &result.best)?;
    let best = best_heads_table(&result.best, &p_values)?;
    let summary = summary_table(&result.summary)?;
    write_csv(&heads, &out.join("heads.csv"))?;
    write_parquet(&heads, &out.join("heads.parquet"))?;
    write_csv(&best, &out.join("best_heads.csv"))?;
    write_csv(&summary, &out.join("summary.csv"))?;
    write_parquet(&summary, &out.join("summary.parquet"))?;
    write_csv(&scores_table(&result.ranked_scores())?, &out.join("scores.csv"))?;
    write_json(
        &json!({
            "chosen_rollout": result.chosen,
            "model": result.model,
            "layers": result.layers,
            "heads": result.heads,
            "forward_passes": result.forward_passes,
            "model_loaded": result.model_loaded,
            "config": config_json(&config),
            "notes": result.notes,
            "headline": result.headline(),
        }),
        &out.join("chosen_rollout.json"),
    )?;

    let (formats, note) = figure_formats(&config);
    result.notes.extend(note);
    // Per rollout: meta.json and the figures of its best heads; the chosen rollout's figures
    // also go into index.html.
    let mut chosen_figures: Vec<(String, Figure, Figure)> = Vec::new();
    let mut links: Vec<(String, Vec<String>)> = Vec::new();
    let mut explorer_notes: Vec<String> = Vec::new();
    for run in &result.rollouts {
        let Some(rollout) = &run.rollout else { continue };
        if run.error.is_some() {
            continue;
        }
        let summary_row = result.summary.iter().find(|s| s.rollout_id == rollout.rollout_id);
        let formats: &[SaveFormat] = if config.figures { &formats } else { &[] };
        let mut saved = save_rollout_outputs(source, rollout, &result.best, summary_row, &config, &out, formats)?;
        if config.figures && config.run_attention {
            // The explorer is an extra view: a trace it cannot read is a note, not a failed run.
            match write_rollout_explorer(rollout, &config, &out) {
                Ok(path) => saved.files.push(path),
                Err(e) => explorer_notes.push(format!("{}: explorer.html not written: {e}", rollout.rollout_id)),
            }
        }
        if result.chosen.as_deref() == Some(rollout.rollout_id.as_str()) {
            chosen_figures = saved.figures;
        }
        if !saved.files.is_empty() {
            let files = saved.files.iter().filter_map(|p| p.strip_prefix(&out).ok()).map(|p| p.to_string_lossy().replace('\\', "/")).collect();
            links.push((rollout.rollout_id.clone(), files));
        }
    }
    result.notes.extend(explorer_notes);
    index_report(result, &summary, &best, &chosen_figures, &links)?.write_html(out.join("index.html"))
}

/// The figure formats of `config` (HTML, plus PNG as the seed saves and SVG when asked for and
/// Chromium is present) and a note when they were asked for but cannot be made.
pub(crate) fn figure_formats(config: &VaConfig) -> (Vec<SaveFormat>, Option<String>) {
    let mut formats = vec![SaveFormat::Html];
    if config.figures && config.static_images {
        if plot::static_export_available() {
            formats.extend([SaveFormat::Png, SaveFormat::Svg]);
        } else {
            return (formats, Some(format!("PNG/SVG figures skipped: {}", plot::export::CHROMIUM_MISSING)));
        }
    }
    (formats, None)
}

/// What [`save_rollout_outputs`] wrote.
#[derive(Debug, Default)]
pub struct SavedRollout {
    /// `meta.json` and the figure files, in order.
    pub files: Vec<std::path::PathBuf>,
    /// `("layer L, head H", heatmap, vertical scores)` per best head, in layer order.
    pub figures: Vec<(String, Figure, Figure)>,
}

/// The seed's Step 2 for one rollout: `<out>/<rollout_id>/meta.json` (`super::va::rollout_meta`)
/// and, for each of its best heads (layer order), the heatmap and vertical-score figure as
/// `attn_layer{LL:02}_head{HH:02}.*` / `vert_layer{LL:02}_head{HH:02}.*` in `formats` (none: no
/// figures are made).
pub fn save_rollout_outputs(
    source: &mut AttentionSource,
    rollout: &TaggedRollout,
    best: &[BestHead],
    summary: Option<&SummaryRow>,
    config: &VaConfig,
    out: &Path,
    formats: &[SaveFormat],
) -> Result<SavedRollout> {
    let dir = out.join(&rollout.rollout_id);
    let meta_path = dir.join("meta.json");
    write_json(&super::va::rollout_meta(rollout, best, summary, config), &meta_path)?;
    let mut saved = SavedRollout { files: vec![meta_path], figures: vec![] };
    if formats.is_empty() {
        return Ok(saved);
    }
    let mut sel: Vec<&BestHead> = best.iter().filter(|b| b.rollout_id == rollout.rollout_id).collect();
    sel.sort_by_key(|b| b.layer);
    let options = config.options();
    let mut named: Vec<(String, Figure)> = Vec::new();
    for b in sel {
        let (heat, vert, _) = head_figures(source, rollout, b.layer, b.head, &options)?;
        let (heat_stem, vert_stem) = figure_stems(b.layer, b.head);
        saved.figures.push((format!("layer {}, head {}", b.layer, b.head), heat.clone(), vert.clone()));
        named.push((heat_stem, heat));
        named.push((vert_stem, vert));
    }
    let refs: Vec<(&str, &Figure)> = named.iter().map(|(s, f)| (s.as_str(), f)).collect();
    // One plotly.min.js at the output folder's root serves every rollout's pages.
    saved.files.extend(plot::save_figures_sharing(&dir, &refs, formats, out)?);
    Ok(saved)
}

/// `index.html`: the run's summary, best heads per layer, the chosen rollout's figures and
/// links to every figure file (relative to the output folder).
fn index_report(
    result: &VaResult,
    summary: &DataFrame,
    best: &DataFrame,
    chosen_figures: &[(String, Figure, Figure)],
    links: &[(String, Vec<String>)],
) -> Result<Report> {
    let all = TableOptions { max_rows: 400, ..Default::default() };
    let config = &result.config;
    let head_rule = match config.head_rule {
        super::va::HeadRule::Abs => "largest |delta_va_vert| (the seed)",
        super::va::HeadRule::Signed => "largest signed delta_va_vert",
    };
    let aggregate = match config.layer_aggregate {
        super::va::LayerAggregate::Sum => "sum over layers (the seed)",
        super::va::LayerAggregate::Mean => "mean over layers",
    };
    let mut report = Report::new(format!("VA attention: {}", config.root.display())).text(format!(
        "Model {}, tag `{}`, sentence mode {}, layers {:?}, {} heads scanned per layer. Vertical scores: proximity_ignore {}, \
         control_depth {}, {}; trim [1:-1] {}. Best head: {head_rule}; distinctiveness score: {aggregate}; {} permutations.\n\n{}",
        result.model,
        config.tag,
        config.sentence_mode,
        result.layers,
        result.heads.len(),
        config.proximity_ignore,
        config.control_depth,
        if config.score_type == crate::scores::ScoreType::Mean { "mean" } else { "median" },
        if config.trim { "on" } else { "off" },
        config.permutations,
        result.headline(),
    ));
    if !result.notes.is_empty() {
        report = report.heading("Notes").text(result.notes.join("\n\n"));
    }
    report = report
        .heading("Summary (summary.csv)")
        .table_with(summary, &all)
        .heading("Best head per layer (best_heads.csv; every head in heads.csv)")
        .table_with(best, &all);
    if let Some(chosen) = &result.chosen {
        report = report.heading(format!("Most distinctive rollout: {chosen}"));
        for (label, heat, vert) in chosen_figures {
            report = report.subheading(label.clone()).figure(heat).figure(vert);
        }
    }
    let explorers: Vec<String> = links
        .iter()
        .flat_map(|(rollout_id, files)| files.iter().filter(|f| f.ends_with("explorer.html")).map(move |f| (rollout_id, f)))
        .map(|(rollout_id, f)| format!("<a href=\"{}\">{}</a>", html_escape(f), html_escape(rollout_id)))
        .collect();
    if !explorers.is_empty() {
        report = report
            .heading("Trace explorer")
            .html(format!(
                "<p>Each rollout in the interactive trace explorer (text coloured by receiver score or tag, attention, heatmap, and the token \
                 view of each sentence and its top source where the cache entry stores token pairs): {}</p>\n",
                explorers.join(" · ")
            ));
    }
    if !links.is_empty() {
        let mut html = String::from("<ul>\n");
        for (rollout_id, files) in links {
            let items: Vec<String> = files
                .iter()
                .filter(|f| !f.ends_with("meta.json")).map(|f| format!("<a href=\"{}\">{}</a>", html_escape(f), html_escape(f.rsplit('/').next().unwrap_or(f)))).collect();
            html.push_str(&format!("<li><b>{}</b>: {}</li>\n", html_escape(rollout_id), items.join(" · ")));
        }
        html.push_str("</ul>\n");
        report = report.heading("Figures of every rollout").html(html);
    }
    Ok(report)
}
