//! `codi analyze` (spec `codi.md` §5): join ablation and attention results, compute upstream's
//! `summary_statistics.json`, draw the four figures, and compare two runs (faithful vs corrected)
//! side by side.
//!
//! Join as upstream: every ablation record without error whose baseline is correct contributes
//! one row per token, paired with the attention record of the same `problem_id` (by id, not by
//! list index). Problems whose attention is missing or failed are skipped and counted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ablate::{read_ablation, AblationRecord};
use super::attention::{read_attention, AttentionRecord};
use super::dataset::{write_atomic, write_json_atomic};
use super::figures;
use crate::analysis::codi_stats::{summary_statistics, JoinedRow, SummaryStatistics};
use crate::plot::{self, Figure, SaveFormat};
use crate::{Error, Result};

/// Which importance the analysis correlates with attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ImportanceKind {
    /// Upstream's 0/1 (baseline correct and ablated wrong).
    Binary,
    /// Drop in the gold answer's log-probability.
    Logprob,
}

/// The joined rows plus what was left out.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub rows: Vec<JoinedRow>,
    /// Attention layers found (in the attention file's order).
    pub layers: Vec<usize>,
    pub problems: usize,
    pub skipped_baseline_wrong: usize,
    pub skipped_errors: usize,
    pub skipped_no_attention: usize,
}

/// The attention layers of a results file, from its first complete record.
fn attention_layers(attention: &[AttentionRecord]) -> Result<Vec<usize>> {
    let first = attention
        .iter()
        .find_map(|r| r.attention_by_layer.as_ref())
        .ok_or_else(|| Error::invalid("the attention results hold no successful record"))?;
    first
        .keys()
        .map(|k| {
            k.strip_prefix("layer_")
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| Error::invalid(format!("attention key `{k}` is not `layer_<n>`")))
        })
        .collect()
}

/// Upstream's join (`all_baselines` also keeps problems whose baseline is wrong, where only the
/// continuous importance means something).
pub fn join(
    ablation: &[AblationRecord],
    attention: &[AttentionRecord],
    importance: ImportanceKind,
    all_baselines: bool,
) -> Result<Joined> {
    let layers = attention_layers(attention)?;
    let mut joined = Joined { layers: layers.clone(), ..Default::default() };
    for record in ablation {
        if record.error.is_some() {
            joined.skipped_errors += 1;
            continue;
        }
        let Some(baseline) = &record.baseline else {
            joined.skipped_errors += 1;
            continue;
        };
        if !baseline.correct && !all_baselines {
            joined.skipped_baseline_wrong += 1;
            continue;
        }
        let Some(attn) = attention.iter().find(|a| a.problem_id == record.problem_id && a.error.is_none()) else {
            joined.skipped_no_attention += 1;
            continue;
        };
        joined.problems += 1;
        for t in &record.token_ablations {
            let value = match importance {
                ImportanceKind::Binary => t.importance as f64,
                ImportanceKind::Logprob => t.logprob_importance.ok_or_else(|| {
                    Error::invalid(format!(
                        "problem {} token {}: no `logprob_importance` (ablation run without the continuous variant)",
                        record.problem_id, t.token_pos
                    ))
                })?,
            };
            let mut attention_by_layer = std::collections::BTreeMap::new();
            for &layer in &layers {
                let a = attn.token_attention(layer, t.token_pos).ok_or_else(|| {
                    Error::invalid(format!(
                        "problem {}: attention has no value for layer {layer} token {}",
                        record.problem_id, t.token_pos
                    ))
                })?;
                attention_by_layer.insert(layer, a);
            }
            joined.rows.push(JoinedRow {
                problem_id: record.problem_id.clone(),
                difficulty: record.difficulty.clone(),
                token_pos: t.token_pos,
                importance: value,
                attention: attention_by_layer,
            });
        }
    }
    Ok(joined)
}

/// Options of [`analyze`].
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub importance: ImportanceKind,
    /// Also write PNG/SVG (needs Chromium; skipped with a note when absent).
    pub static_images: bool,
    /// Appended to figure titles (e.g. the not-CODI warning).
    pub title_note: String,
    /// Keep problems whose baseline is wrong (not upstream; for the log-prob importance).
    pub all_baselines: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            importance: ImportanceKind::Binary,
            static_images: true,
            title_note: String::new(),
            all_baselines: false,
        }
    }
}

/// What [`analyze`] wrote.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub summary: SummaryStatistics,
    pub joined: Joined,
    pub files: Vec<PathBuf>,
    /// What was skipped (static images without Chromium).
    pub notes: Vec<String>,
}

/// Join two result files, write `summary_statistics.json`, `joined_rows.csv` and the figures to
/// `out_dir`.
pub fn analyze(ablation_path: &Path, attention_path: &Path, out_dir: &Path, options: &AnalyzeOptions) -> Result<Analysis> {
    let ablation = read_ablation(ablation_path)?;
    let attention = read_attention(attention_path)?;
    let joined = join(&ablation, &attention, options.importance, options.all_baselines)?;
    if joined.rows.is_empty() {
        return Err(Error::invalid(format!(
            "nothing to analyse: no problem of {} has a correct baseline and attention in {} \
             ({} baseline wrong, {} errors, {} without attention)",
            ablation_path.display(),
            attention_path.display(),
            joined.skipped_baseline_wrong,
            joined.skipped_errors,
            joined.skipped_no_attention
        )));
    }
    analyze_joined(joined, out_dir, options)
}

/// [`analyze`] on rows already joined.
pub fn analyze_joined(joined: Joined, out_dir: &Path, options: &AnalyzeOptions) -> Result<Analysis> {
    let tokens = joined.rows.iter().map(|r| r.token_pos + 1).max().unwrap_or(0);
    let summary = summary_statistics(&joined.rows, &joined.layers, tokens)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut files = Vec::new();

    let summary_path = out_dir.join("summary_statistics.json");
    write_json_atomic(&summary_path, &summary)?;
    files.push(summary_path);

    let csv_path = out_dir.join("joined_rows.csv");
    write_atomic(&csv_path, joined_csv(&joined).as_bytes())?;
    files.push(csv_path);

    let primary = *joined.layers.iter().max().expect("join found layers");
    let note = &options.title_note;
    let figures = [
        ("1_importance_by_position", figures::importance_by_position(&joined.rows, note)),
        ("2_importance_heatmap", figures::importance_heatmap(&joined.rows, note)),
        ("3_attention_vs_importance", figures::attention_vs_importance(&joined.rows, primary, note)?),
        ("4_correlation_by_position", figures::correlation_by_position(&joined.rows, primary, note)?),
    ];
    let mut formats = vec![SaveFormat::Html];
    let mut notes = Vec::new();
    if options.static_images {
        if plot::static_export_available() {
            formats.extend([SaveFormat::Png, SaveFormat::Svg]);
        } else {
            notes.push(format!("PNG/SVG figures skipped: {}", plot::export::CHROMIUM_MISSING));
        }
    }
    let named: Vec<(&str, &Figure)> = figures.iter().map(|(name, fig)| (*name, fig)).collect();
    files.extend(plot::save_figures(out_dir, &named, &formats)?);
    Ok(Analysis { summary, joined, files, notes })
}

fn joined_csv(joined: &Joined) -> String {
    let mut out = String::from("problem_id,difficulty,token_pos,importance");
    for layer in &joined.layers {
        let _ = write!(out, ",attention_layer_{layer}");
    }
    out.push('\n');
    for r in &joined.rows {
        let _ = write!(out, "{},{},{},{}", r.problem_id, r.difficulty, r.token_pos, r.importance);
        for layer in &joined.layers {
            let _ = write!(out, ",{}", r.attention[layer]);
        }
        out.push('\n');
    }
    out
}

/// One line of the faithful-vs-corrected table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub statistic: String,
    pub faithful: Option<f64>,
    pub corrected: Option<f64>,
}

/// Side-by-side statistics of two analyses (any statistic present in either).
pub fn comparison_table(faithful: &SummaryStatistics, corrected: &SummaryStatistics) -> Vec<ComparisonRow> {
    fn flatten(s: &SummaryStatistics) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (layer, p) in s.overall_correlation.iter() {
            out.push((format!("overall {layer} r"), p.r));
            out.push((format!("overall {layer} p"), p.p));
        }
        for (token, t) in s.per_token.iter() {
            out.push((format!("{token} importance mean"), t.importance_mean));
            out.push((format!("{token} attention mean"), t.attention_mean));
            out.push((format!("{token} r"), t.correlation));
            out.push((format!("{token} p"), t.p_value));
        }
        for (difficulty, d) in s.by_difficulty.iter() {
            out.push((format!("{difficulty} mean importance"), d.mean_importance));
            out.push((format!("{difficulty} r"), d.correlation));
        }
        out
    }
    let f = flatten(faithful);
    let c = flatten(corrected);
    let mut names: Vec<String> = f.iter().map(|(n, _)| n.clone()).collect();
    for (n, _) in &c {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let finite = |v: f64| v.is_finite().then_some(v);
    names
        .into_iter()
        .map(|name| ComparisonRow {
            faithful: f.iter().find(|(n, _)| *n == name).and_then(|(_, v)| finite(*v)),
            corrected: c.iter().find(|(n, _)| *n == name).and_then(|(_, v)| finite(*v)),
            statistic: name,
        })
        .collect()
}

/// The comparison as a Markdown table.
pub fn comparison_markdown(rows: &[ComparisonRow]) -> String {
    let cell = |v: Option<f64>| match v {
        Some(v) if v != 0.0 && v.abs() < 1e-3 => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
        None => "NaN".to_owned(),
    };
    let mut out = String::from("| statistic | faithful | corrected |\n|---|---:|---:|\n");
    for r in rows {
        let _ = writeln!(out, "| {} | {} | {} |", r.statistic, cell(r.faithful), cell(r.corrected));
    }
    out
}

/// Write `comparison.json` and `comparison.md` into `out_dir`.
pub fn write_comparison(faithful: &SummaryStatistics, corrected: &SummaryStatistics, out_dir: &Path, preamble: &str) -> Result<Vec<ComparisonRow>> {
    let rows = comparison_table(faithful, corrected);
    write_json_atomic(&out_dir.join("comparison.json"), &rows)?;
    let md = format!("{preamble}{}", comparison_markdown(&rows));
    write_atomic(&out_dir.join("comparison.md"), md.as_bytes())?;
    Ok(rows)
}
