//! Writing a step's tables and figures into the experiment folder, and the few statistics the
//! next steps' summaries need.
//!
//! - Tables as `results/<stem>_<tag>.csv` and `.md` (`write_table`); the Markdown has floats
//!   with 4 decimals and missing values as `NaN` ([`markdown_table`]).
//! - Figures as HTML, plus PNG/SVG when Chromium is present (`save_step_figures`).

use std::path::{Path, PathBuf};

use polars::prelude::{AnyValue, Column, CsvWriter, DataFrame, SerWriter};

use super::layout::StepLayout;
use crate::io::write_atomic;
use crate::plot::{self, Figure, SaveFormat};
use crate::Result;

/// Write `figures` into `dir` as HTML, and PNG + SVG when `static_images` and Chromium is
/// present. Returns the files written and a note when the static images were skipped.
pub(crate) fn save_step_figures(dir: &Path, figures: &[(&str, &Figure)], static_images: bool) -> Result<(Vec<PathBuf>, Vec<String>)> {
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
pub(crate) fn write_table(df: &mut DataFrame, layout: &StepLayout, stem: &str) -> Result<Vec<PathBuf>> {
    let csv_path = layout.result(stem, "csv");
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv).finish(df)?;
    write_atomic(&csv_path, &csv)?;
    let md_path = layout.result(stem, "md");
    write_atomic(&md_path, markdown_table(df).as_bytes())?;
    Ok(vec![csv_path, md_path])
}

/// A column of optional floats.
pub(crate) fn float_column(name: &str, values: impl IntoIterator<Item = Option<f64>>) -> Column {
    Column::new(name.into(), values.into_iter().map(|v| v.filter(|x| x.is_finite())).collect::<Vec<Option<f64>>>())
}

/// A column of text.
pub(crate) fn text_column(name: &str, values: impl IntoIterator<Item = String>) -> Column {
    Column::new(name.into(), values.into_iter().collect::<Vec<String>>())
}

/// A column of counts.
pub(crate) fn count_column(name: &str, values: impl IntoIterator<Item = usize>) -> Column {
    Column::new(name.into(), values.into_iter().map(|v| v as u32).collect::<Vec<u32>>())
}

/// Mean of the finite values (`None` when there is none).
pub(crate) fn finite_mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.into_iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Standard error of the mean of the finite values (std with ddof 1 over √n; `None` below 2).
pub(crate) fn finite_sem(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if values.len() < 2 {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((var / n).sqrt())
}
