//! Plumbing shared by the experiment's three "next steps": compositional ablation
//! ([`super::compose`]), question → thought attention ([`super::routing`]) and the residual
//! stream decomposition ([`super::decompose`]).
//!
//! - The output layout of the seed (`results/` for JSON and tables, `figures/` for figures), under
//!   one directory per run ([`StepLayout`]); `<tag>` is `test` in test mode, else the problem count.
//! - A resumable per-problem loop ([`run_resumable`]) as `codi ablate` has: the settings sidecar
//!   refuses a rerun with other settings, finished problems are kept, failed ones are redone, and
//!   the results file is rewritten atomically after every problem.
//! - Saving figures as HTML, plus PNG/SVG when Chromium is present ([`save_step_figures`]).

use std::path::{Path, PathBuf};

use polars::prelude::{AnyValue, Column, CsvWriter, DataFrame, SerWriter};
use serde::{de::DeserializeOwned, Serialize};

use super::ablate::meta_path;
use super::dataset::{write_atomic, write_json_atomic, Problem};
use super::model::CodiModel;
use super::progress::{read_json_relaxed, RunMeta};
use crate::plot::{self, Figure, SaveFormat};
use crate::{Error, Result};

/// The seed's experiment folder (CODI README, "File Structure"): `<root>/results/` and
/// `<root>/figures/`, files tagged `_test` in test mode and `_100` (the problem count) otherwise:
/// `results/test_dataset_10.json` | `results/full_dataset_100.json`,
/// `results/token_ablation_results_<tag>.json`, `results/attention_weights_<tag>.json`,
/// `results/summary_statistics.json`, `figures/1_importance_by_position.{pdf,png}` … The next
/// steps write `results/<name>_<tag>.json` and `figures/<name>.*` in the same folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLayout {
    pub root: PathBuf,
    pub tag: String,
}

/// [`StepLayout`] under the name the seed's pipeline uses.
pub type ExperimentLayout = StepLayout;

/// The four figures of `3_analyze_and_visualize.py`, by file stem.
pub const SEED_FIGURES: [&str; 4] =
    ["1_importance_by_position", "2_importance_heatmap", "3_attention_vs_importance", "4_correlation_by_position"];

impl StepLayout {
    /// `tag` = `test` in test mode, else the number of problems (the seed's `_test` / `_100`).
    pub fn new(root: impl Into<PathBuf>, test_mode: bool, problems: usize) -> Self {
        let tag = if test_mode { "test".to_owned() } else { problems.to_string() };
        StepLayout { root: root.into(), tag }
    }
    /// The seed's names for its two runs: `_test` (10 problems) or `_100`.
    pub fn seed(root: impl Into<PathBuf>, test_mode: bool) -> Self {
        Self::new(root, test_mode, 100)
    }
    pub fn test_mode(&self) -> bool {
        self.tag == "test"
    }
    pub fn results_dir(&self) -> PathBuf {
        self.root.join("results")
    }
    pub fn figures_dir(&self) -> PathBuf {
        self.root.join("figures")
    }
    /// `results/<stem>_<tag>.<ext>`.
    pub fn result(&self, stem: &str, ext: &str) -> PathBuf {
        self.results_dir().join(format!("{stem}_{}.{ext}", self.tag))
    }
    /// `results/test_dataset_10.json` (test mode) or `results/full_dataset_<n>.json`.
    pub fn dataset(&self) -> PathBuf {
        let name = if self.test_mode() { "test_dataset_10.json".to_owned() } else { format!("full_dataset_{}.json", self.tag) };
        self.results_dir().join(name)
    }
    /// `results/token_ablation_results_<tag>.json`.
    pub fn ablation(&self) -> PathBuf {
        self.result("token_ablation_results", "json")
    }
    /// `results/attention_weights_<tag>.json`.
    pub fn attention(&self) -> PathBuf {
        self.result("attention_weights", "json")
    }
    /// `results/summary_statistics.json` (untagged, as the seed).
    pub fn summary(&self) -> PathBuf {
        self.results_dir().join("summary_statistics.json")
    }
    /// `results/joined_rows_<tag>.csv`: the rows behind the statistics (not in the seed).
    pub fn joined_rows(&self) -> PathBuf {
        self.result("joined_rows", "csv")
    }
}

/// A per-problem record of a resumable step.
pub trait ProblemRecord: Serialize + DeserializeOwned + Clone {
    fn problem_id(&self) -> &str;
    /// The error of a failed problem (redone on the next run).
    fn error(&self) -> Option<&str>;
    /// The record of a problem whose computation failed.
    fn failed(problem: &Problem, error: String) -> Self;
}

/// How a results file is written: indented like the seed's JSON, or compact (the attention and
/// decomposition records hold tens of thousands of numbers per problem; indented, one per line,
/// the 100-problem routing file would be ~60 MB and rewritten after every problem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    Pretty,
    Compact,
}

fn write_records<R: Serialize>(out: &Path, records: &[R], style: JsonStyle) -> Result<()> {
    match style {
        JsonStyle::Pretty => write_json_atomic(out, records),
        JsonStyle::Compact => write_atomic(out, serde_json::to_string(records)?.as_bytes()),
    }
}

/// Run `compute` on every problem not yet in `out` (JSON list), rewriting `out` after each one.
/// `settings` go into the `.meta.json` sidecar: an existing `out` written with other settings or
/// weights is refused, naming the field. Records of problems outside `problems` that the file
/// holds are kept after the requested ones.
pub fn run_resumable<R: ProblemRecord>(
    codi: &CodiModel,
    step: &str,
    settings: serde_json::Value,
    problems: &[Problem],
    out: &Path,
    style: JsonStyle,
    mut compute: impl FnMut(&Problem) -> Result<R>,
) -> Result<Vec<R>> {
    RunMeta::new(codi, step, settings).check_or_write(&meta_path(out), out)?;
    // Taken after the settings check, so a refused run leaves the folder as it was.
    let lock = super::progress::lock_results(out, step)?;
    let mut done: Vec<R> = if out.is_file() { read_json_relaxed(out)? } else { Vec::new() };
    done.retain(|r| r.error().is_none());

    let bar = crate::progress::progress(problems.len() as u64, step);
    let mut records: Vec<R> = Vec::with_capacity(problems.len());
    for problem in problems {
        if let Some(i) = done.iter().position(|r| r.problem_id() == problem.id) {
            records.push(done.swap_remove(i));
            bar.inc(1);
            continue;
        }
        bar.set_message(problem.id.clone());
        let record = compute(problem).unwrap_or_else(|e| {
            bar.println(format!("warning: {step} of {} failed: {e}", problem.id));
            R::failed(problem, e.to_string())
        });
        records.push(record);
        let mut all = records.clone();
        all.extend(done.iter().cloned());
        write_records(out, &all, style)?;
        bar.inc(1);
    }
    bar.finish();
    records.extend(done);
    write_records(out, &records, style)?;
    lock.finish()?;
    Ok(records)
}

/// Read a results file of a next step, naming the file on error.
pub fn read_records<R: DeserializeOwned>(path: &Path) -> Result<Vec<R>> {
    read_json_relaxed(path)
}

/// Write `figures` into `dir` as HTML, and PNG + SVG when `static_images` and Chromium is
/// present. Returns the files written and a note when the static images were skipped.
pub fn save_step_figures(dir: &Path, figures: &[(&str, &Figure)], static_images: bool) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut formats = vec![SaveFormat::Html];
    let mut notes = Vec::new();
    if static_images {
        if plot::static_export_available() {
            formats.extend([SaveFormat::Png, SaveFormat::Svg]);
        } else {
            notes.push(format!("PNG/SVG figures skipped: {}", plot::export::CHROMIUM_MISSING));
        }
    }
    let files = plot::save_figures(dir, figures, &formats)?;
    Ok((files, notes))
}

/// A table as Markdown: floats with 4 decimals, missing values `NaN`, `|` in text escaped.
pub fn markdown_table(df: &DataFrame) -> String {
    let columns = df.columns();
    let header: Vec<String> = columns.iter().map(|c| c.name().to_string()).collect();
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for i in 0..df.height() {
        let cells: Vec<String> = columns.iter().map(|c| c.get(i).map(|v| markdown_cell(&v)).unwrap_or_default()).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

fn markdown_cell(value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => "NaN".to_owned(),
        AnyValue::Float64(v) if v.is_finite() => format!("{v:.4}"),
        AnyValue::Float32(v) if v.is_finite() => format!("{v:.4}"),
        AnyValue::String(s) => s.replace('|', "\\|").replace('\n', "↵"),
        AnyValue::StringOwned(s) => s.replace('|', "\\|").replace('\n', "↵"),
        other => other.to_string(),
    }
}

/// Write `df` as `results/<stem>_<tag>.csv` and `.md` (atomically); returns both paths.
pub fn write_table(df: &mut DataFrame, layout: &StepLayout, stem: &str) -> Result<Vec<PathBuf>> {
    let csv_path = layout.result(stem, "csv");
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv).finish(df)?;
    write_atomic(&csv_path, &csv)?;
    let md_path = layout.result(stem, "md");
    write_atomic(&md_path, markdown_table(df).as_bytes())?;
    Ok(vec![csv_path, md_path])
}

/// A column of optional floats.
pub fn float_column(name: &str, values: impl IntoIterator<Item = Option<f64>>) -> Column {
    Column::new(name.into(), values.into_iter().map(|v| v.filter(|x| x.is_finite())).collect::<Vec<Option<f64>>>())
}

/// A column of text.
pub fn text_column(name: &str, values: impl IntoIterator<Item = String>) -> Column {
    Column::new(name.into(), values.into_iter().collect::<Vec<String>>())
}

/// A column of counts.
pub fn count_column(name: &str, values: impl IntoIterator<Item = usize>) -> Column {
    Column::new(name.into(), values.into_iter().map(|v| v as u32).collect::<Vec<u32>>())
}

/// Mean of the finite values (`None` when there is none).
pub fn finite_mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.into_iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Standard error of the mean of the finite values (std with ddof 1 over √n; `None` below 2).
pub fn finite_sem(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if values.len() < 2 {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((var / n).sqrt())
}

/// An error naming the field when a layer list does not fit the model.
pub fn check_layers(what: &str, layers: &[usize], num_layers: usize) -> Result<()> {
    if let Some(bad) = layers.iter().find(|&&l| l >= num_layers) {
        return Err(Error::invalid(format!(
            "{what}: layer {bad} out of range: the model has {num_layers} blocks (0..{})",
            num_layers - 1
        )));
    }
    Ok(())
}
