//! `codi analyze` (CoT_Exploration `3_analyze_and_visualize.py`): join ablation and attention results, compute upstream's
//! `summary_statistics.json`, draw the four figures, and compare two runs (faithful vs corrected)
//! side by side.
//!
//! Join as upstream: every ablation record without error whose baseline is correct contributes
//! one row per token, paired with the attention record of the same `problem_id` (by id, not by
//! list index). Problems whose attention is missing or failed are skipped and counted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ablation::{read_ablation, AblationRecord};
use super::eot_attention::{read_attention, AttentionRecord};
use super::figures;
use super::summary::{summary_statistics, JoinedRow, SummaryStatistics};
use crate::codi::runner::files::{incomplete_marker, meta_path, read_json_relaxed};
use crate::codi::runner::layout::ExperimentLayout;
use crate::codi::runner::meta::RunMeta;
use crate::io::{write_atomic, write_json as write_json_atomic};
use crate::plot::{self, Figure, SaveFormat};
use crate::{Context, Error, Result};

/// Which importance the analysis correlates with attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportanceKind {
    /// Upstream's 0/1 (baseline correct and ablated wrong).
    Binary,
    /// Drop in the gold answer's log-probability.
    Logprob,
}
crate::model::named_values!(ImportanceKind, "importance kind", { Binary => "binary", Logprob => "logprob" });

/// How the importance that is correlated with attention is chosen; one rule for the CLI, `run-all`
/// and the notebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportanceRule {
    /// The seed's binary importance over baseline-correct problems; when no baseline is correct
    /// (a CODI-shaped model that is not CODI rarely answers right) there is nothing to join, so
    /// the log-prob importance over all problems instead, with a note saying so.
    #[default]
    Auto,
    /// Always the seed's binary importance (an error when no baseline is correct).
    Binary,
    /// Always the drop in the gold answer's log-probability, over all problems.
    Logprob,
}
crate::model::named_values!(ImportanceRule, "importance rule", { Auto => "auto", Binary => "binary", Logprob => "logprob" });

impl ImportanceRule {
    /// The importance and baseline filter this rule gives for these ablation records, and a note
    /// when `Auto` fell back.
    pub fn resolve(self, ablation: &[AblationRecord]) -> (ImportanceKind, bool, Option<String>) {
        let correct = ablation.iter().filter(|r| r.error.is_none() && r.baseline.as_ref().is_some_and(|b| b.correct)).count();
        self.resolve_counts(correct, ablation.len())
    }

    /// [`ImportanceRule::resolve`] from the number of problems with a correct baseline.
    pub fn resolve_counts(self, correct: usize, problems: usize) -> (ImportanceKind, bool, Option<String>) {
        match self {
            ImportanceRule::Binary => (ImportanceKind::Binary, false, None),
            ImportanceRule::Logprob => (ImportanceKind::Logprob, true, None),
            ImportanceRule::Auto if correct > 0 => (ImportanceKind::Binary, false, None),
            ImportanceRule::Auto => {
                let note = format!(
                    "no baseline of the {problems} problems is correct, so the seed's binary importance has nothing to \
                     join: the figures and statistics use the log-prob importance over all problems (--importance)"
                );
                (ImportanceKind::Logprob, true, Some(note))
            }
        }
    }
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
    /// Problems left out because their token ablations do not cover every continuous token
    /// (an interrupted or edited run): joining them would weight problems unequally by position.
    pub skipped_incomplete_tokens: usize,
    /// One such problem, for the note: (problem id, tokens it has, tokens expected).
    pub first_incomplete: Option<(String, usize, usize)>,
    /// Input results files that a run was still writing or was stopped in (an
    /// `INCOMPLETE.<file>` marker beside them): they may lack problems. Recorded in the summary.
    pub incomplete_inputs: Vec<PathBuf>,
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
    // Every complete problem ablates each continuous token once: positions 0..tokens.
    let tokens = ablation
        .iter()
        .filter(|r| r.error.is_none() && r.baseline.is_some())
        .map(|r| r.token_ablations.len())
        .max()
        .unwrap_or(0);
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
        let mut positions: Vec<usize> = record.token_ablations.iter().map(|t| t.token_pos).collect();
        positions.sort_unstable();
        positions.dedup();
        if positions.len() != record.token_ablations.len() || positions != (0..tokens).collect::<Vec<_>>() {
            joined.skipped_incomplete_tokens += 1;
            if joined.first_incomplete.is_none() {
                joined.first_incomplete = Some((record.problem_id.clone(), positions.len(), tokens));
            }
            continue;
        }
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
    pub importance: ImportanceRule,
    /// Also write PDF, PNG and SVG (needs Chromium; skipped with a note when absent).
    pub static_images: bool,
    /// Appended to figure titles (e.g. the not-CODI warning).
    pub title_note: String,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions { importance: ImportanceRule::Auto, static_images: true, title_note: String::new() }
    }
}

/// What [`analyze`] wrote.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub summary: SummaryStatistics,
    pub joined: Joined,
    /// The measure the rows hold (what [`ImportanceRule`] chose).
    pub importance: ImportanceKind,
    pub files: Vec<PathBuf>,
    /// What was skipped or chosen (static images without Chromium, the importance fallback).
    pub notes: Vec<String>,
    /// The four figures, in the seed's order.
    pub figures: Vec<Figure>,
}

/// `3_analyze_and_visualize.py`: join the experiment's ablation and attention results, write
/// `results/summary_statistics.json` (+ `results/joined_rows_<tag>.csv`), the four figures in
/// `figures/` (HTML, and PDF/PNG/SVG when Chromium is there) and `index.html` in the folder.
///
/// A results file with an `INCOMPLETE.<file>` marker beside it (its run is still going, or was
/// killed) is analysed as it stands, with a one-line warning naming it on stderr; the summary
/// records it (`incomplete_inputs`).
pub fn analyze(layout: &ExperimentLayout, options: &AnalyzeOptions) -> Result<Analysis> {
    let (ablation_path, attention_path) = (layout.ablation(), layout.attention());
    let incomplete_inputs = warn_incomplete(&[&ablation_path, &attention_path]);
    let ablation = read_ablation(&ablation_path)?;
    let attention = read_attention(&attention_path)?;
    let provenance_note = check_same_run(&ablation_path, &attention_path, &attention)?;
    check_same_problems(&ablation, &attention, &attention_path)?;
    // The join is by id: a repeated id would pair one problem's tokens with another's attention.
    let ablation_ids = unique_ids(&ablation_path, ablation.iter().map(|r| r.problem_id.as_str()))?;
    let attention_ids = unique_ids(&attention_path, attention.iter().map(|r| r.problem_id.as_str()))?;
    let (importance, all_baselines, rule_note) = options.importance.resolve(&ablation);
    // Join errors name a problem and a field; the context names the two files.
    let joined = join(&ablation, &attention, importance, all_baselines).while_doing_with(|| {
        format!("joining {} with {}", ablation_path.display(), attention_path.display())
    })?;
    let matched = ablation_ids.intersection(&attention_ids).count();
    let id_note = (matched < ablation_ids.len() || matched < attention_ids.len()).then(|| {
        format!(
            "problem ids match partly: {matched} in both files, {} only in {}, {} only in {}",
            ablation_ids.len() - matched,
            ablation_path.display(),
            attention_ids.len() - matched,
            attention_path.display()
        )
    });
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
    let incomplete_note = joined.first_incomplete.as_ref().map(|(id, have, want)| {
        format!(
            "{} problem(s) left out because their token ablations are incomplete (e.g. problem {id}: {have} of {want} \
             continuous tokens in {}); rerun the ablation step to include them",
            joined.skipped_incomplete_tokens,
            ablation_path.display()
        )
    });
    let joined = Joined { incomplete_inputs, ..joined };
    let mut analysis = analyze_joined(joined, importance, layout, options)?;
    analysis.notes.extend(rule_note);
    analysis.notes.extend(id_note);
    analysis.notes.extend(incomplete_note);
    analysis.notes.extend(provenance_note);
    write_index(layout, &analysis, options)?;
    analysis.files.push(layout.root.join("index.html"));
    Ok(analysis)
}

/// The results files among `paths` with an `INCOMPLETE.<file>` marker beside them, each warned
/// about on one line of stderr (a warning, not a progress note: shown even when quiet).
fn warn_incomplete(paths: &[&Path]) -> Vec<PathBuf> {
    let incomplete: Vec<PathBuf> = paths.iter().filter(|p| incomplete_marker(p).exists()).map(|p| p.to_path_buf()).collect();
    for path in &incomplete {
        eprintln!(
            "warning: {} is incomplete ({} beside it: its run is still going or was stopped); analysing the problems it holds",
            path.display(),
            incomplete_marker(path).file_name().unwrap_or_default().to_string_lossy()
        );
    }
    incomplete
}

/// Ablation and attention results are joined only when they come from one checkpoint and one
/// set of loop settings: their settings sidecars (`x.meta.json`) must agree on the model, its
/// weights hash, whether it is a CODI model, the layout version and the shared settings, and the
/// attention file must hold the layers its sidecar names. A difference is an error naming both
/// values. Results without any sidecar (made by the upstream Python scripts) cannot be checked;
/// when only one of the two has one (one file from this project, one from elsewhere), a note
/// says the join is unchecked.
fn check_same_run(ablation_path: &Path, attention_path: &Path, attention: &[AttentionRecord]) -> Result<Option<String>> {
    let (ablation_meta, attention_meta) = (meta_path(ablation_path), meta_path(attention_path));
    let read = |path: &Path| -> Result<Option<RunMeta>> { if path.is_file() { read_json_relaxed(path).map(Some) } else { Ok(None) } };
    let (ab, at) = (read(&ablation_meta)?, read(&attention_meta)?);
    if ab.is_none() && at.is_none() {
        return Ok(None);
    }
    let (Some(ab), Some(at)) = (ab, at) else {
        let missing: Vec<String> =
            [&ablation_meta, &attention_meta].iter().filter(|p| !p.is_file()).map(|p| p.display().to_string()).collect();
        return Ok(Some(format!(
            "no settings file {}: that the ablation and attention results come from one checkpoint and one set of \
             settings is not checked",
            missing.join(" or ")
        )));
    };
    let refuse = |field: &str, a: String, b: String| {
        Error::invalid(format!(
            "refusing to join results of different runs: `{field}` is {a} in {} but {b} in {}",
            ablation_meta.display(),
            attention_meta.display()
        ))
    };
    if ab.weights_hash != at.weights_hash {
        return Err(refuse("weights_hash", ab.weights_hash, at.weights_hash));
    }
    if ab.model != at.model {
        return Err(refuse("model", ab.model, at.model));
    }
    if ab.real_codi != at.real_codi {
        return Err(refuse("real_codi", ab.real_codi.to_string(), at.real_codi.to_string()));
    }
    if ab.format_version != at.format_version {
        return Err(refuse("format_version", ab.format_version.to_string(), at.format_version.to_string()));
    }
    // Settings both steps have (the latent loop's mode, token budget, answer parser, logit slice).
    if let (Some(a), Some(b)) = (ab.settings.as_object(), at.settings.as_object()) {
        for (key, value) in a {
            if let Some(other) = b.get(key) {
                if value != other {
                    return Err(refuse(&format!("settings.{key}"), value.to_string(), other.to_string()));
                }
            }
        }
    }
    // The attention file's layers are the ones its sidecar says it was run with (in any order:
    // a JSON rewrite may sort the keys).
    if let Some(wanted) = at.settings.get("layers") {
        let sorted = |mut layers: Vec<usize>| {
            layers.sort_unstable();
            layers
        };
        let have = sorted(attention_layers(attention)?);
        let listed: Option<Vec<usize>> = wanted.as_array().and_then(|a| a.iter().map(|l| l.as_u64().map(|l| l as usize)).collect());
        if listed.map(sorted).as_ref() != Some(&have) {
            let have = serde_json::to_value(&have)?;
            return Err(Error::format(
                attention_path,
                format!("holds layers {have} but its settings file {} says layers {wanted}", attention_meta.display()),
            ));
        }
    }
    Ok(None)
}

/// A problem id must name the same problem in both files: the expected answers agree where the
/// attention file records one.
fn check_same_problems(ablation: &[AblationRecord], attention: &[AttentionRecord], attention_path: &Path) -> Result<()> {
    for a in attention {
        let Some(expected) = &a.expected_answer else { continue };
        if let Some(b) = ablation.iter().find(|b| b.problem_id == a.problem_id) {
            if b.expected_answer.as_f64() != expected.as_f64() {
                return Err(Error::format(
                    attention_path,
                    format!(
                        "problem {}: `expected_answer` is {expected} here but {} in the ablation results (different data sets)",
                        a.problem_id, b.expected_answer
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The set of `problem_id`s of a results file, or an error naming `path` and the first id that
/// occurs twice.
fn unique_ids<'a>(path: &std::path::Path, ids: impl Iterator<Item = &'a str>) -> Result<std::collections::HashSet<&'a str>> {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(Error::format(path, format!("field `problem_id`: `{id}` occurs more than once")));
        }
    }
    Ok(seen)
}

/// [`analyze`] on rows already joined (`importance` says which measure the rows hold).
pub(crate) fn analyze_joined(joined: Joined, importance: ImportanceKind, layout: &ExperimentLayout, options: &AnalyzeOptions) -> Result<Analysis> {
    let tokens = joined.rows.iter().map(|r| r.token_pos + 1).max().unwrap_or(0);
    let mut summary = summary_statistics(&joined.rows, &joined.layers, tokens)?;
    summary.incomplete_inputs =
        joined.incomplete_inputs.iter().map(|p| p.file_name().unwrap_or(p.as_os_str()).to_string_lossy().into_owned()).collect();
    let mut files = Vec::new();

    let summary_path = layout.summary();
    write_json_atomic(&summary_path, &summary)?;
    files.push(summary_path);

    let csv_path = layout.joined_rows();
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
            formats.extend([SaveFormat::Pdf, SaveFormat::Png, SaveFormat::Svg]);
        } else {
            notes.push(format!("PDF/PNG/SVG figures skipped: {}", plot::export::CHROMIUM_MISSING));
        }
    }
    let named: Vec<(&str, &Figure)> = figures.iter().map(|(name, fig)| (*name, fig)).collect();
    files.extend(plot::save_figures_sharing(layout.figures_dir(), &named, &formats, &layout.root)?);
    let figures = figures.into_iter().map(|(_, f)| f).collect();
    Ok(Analysis { summary, joined, importance, files, notes, figures })
}

/// `index.html` of an experiment folder: what was run, the statistics, the four figures (sharing
/// the folder's plotly.min.js) and links to every file.
fn write_index(layout: &ExperimentLayout, analysis: &Analysis, options: &AnalyzeOptions) -> Result<()> {
    // The folder's name (faithful, corrected) tells the variants apart in analysis/index.html.
    let folder = layout.root.file_name().map(|n| format!(": {}", n.to_string_lossy())).unwrap_or_default();
    let mut report = plot::Report::new(format!("CODI attention vs importance{folder}{}", options.title_note)).text(format!(
        "{} problems joined ({} baseline wrong, {} failed, {} without attention); importance: {:?}; layers {:?}.",
        analysis.joined.problems,
        analysis.joined.skipped_baseline_wrong,
        analysis.joined.skipped_errors,
        analysis.joined.skipped_no_attention,
        analysis.importance,
        analysis.joined.layers,
    ));
    for path in &analysis.joined.incomplete_inputs {
        report = report.text(format!("Warning: {} was incomplete (a run was still writing it, or was stopped).", path.display()));
    }
    for note in &analysis.notes {
        report = report.text(format!("Note: {note}"));
    }
    let summary = serde_json::to_string_pretty(&analysis.summary.overall_correlation)?;
    report = report
        .heading("Overall correlation (attention vs importance)")
        .html(format!("<pre>{}</pre>", crate::plot::html_escape(&summary)))
        .heading("Figures")
        .figures(analysis.figures.iter());
    let mut links = String::from("<ul>");
    for file in &analysis.files {
        if let Ok(relative) = file.strip_prefix(&layout.root) {
            let href = relative.to_string_lossy();
            links.push_str(&format!("<li><a href=\"{href}\">{href}</a></li>"));
        }
    }
    links.push_str("</ul>");
    report.heading("Files").html(links).write_html(layout.root.join("index.html"))
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
pub(crate) fn comparison_markdown(rows: &[ComparisonRow]) -> String {
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
