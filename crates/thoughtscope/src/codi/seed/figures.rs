//! The four figures of upstream `3_analyze_and_visualize.py` (CoT_Exploration), as plotly
//! figures: (1) mean importance per token with SEM error bars, (2) problems × tokens importance
//! heatmap (RdYlGn, 0–1, problems sorted lexically as pandas' pivot does), (3) attention vs
//! importance scatter with a least-squares line and r/p in the title, (4) the same per token in
//! a 2 × 3 grid (y in [−0.1, 1.1]). Sizes are upstream's (inches × 100); saved with
//! [`crate::plot::save_figures`] (HTML, and PNG/SVG when Chromium is present).

use std::collections::BTreeMap;

use plotly::common::{Anchor, DashType, ErrorData, ErrorType, Line, Marker, Mode, Title};
use plotly::layout::{Annotation, Axis, AxisRange, GridPattern, Layout, LayoutGrid};
use plotly::{Bar, HeatMap, Plot, Scatter};

use super::summary::JoinedRow;
use crate::scores::stats::{least_squares, mean, pearson, sem, LinearFit};
use crate::plot::Figure;
use crate::Result;

/// The four figures of `3_analyze_and_visualize.py`, by file stem.
pub const SEED_FIGURES: [&str; 4] =
    ["1_importance_by_position", "2_importance_heatmap", "3_attention_vs_importance", "4_correlation_by_position"];

/// Axis label of the continuous (log-prob) importance.
const CONTINUOUS_LABEL: &str = "Importance (drop in gold-answer log-prob)";

/// matplotlib's `steelblue`, upstream's marker and bar colour.
const STEELBLUE: &str = "#4682b4";

/// matplotlib's RdYlGn, sampled at 11 points.
const RD_YL_GN: [&str; 11] = [
    "#a50026", "#d73027", "#f46d43", "#fdae61", "#fee08b", "#ffffbf", "#d9ef8b", "#a6d96a", "#66bd63", "#1a9850",
    "#006837",
];

fn token_label(k: usize) -> String {
    format!("Token {k}")
}

fn tokens_in(rows: &[JoinedRow]) -> usize {
    rows.iter().map(|r| r.token_pos + 1).max().unwrap_or(0)
}

/// Whether importance is 0/1 (fixed 0–1 axes then, as upstream).
fn binary(rows: &[JoinedRow]) -> bool {
    rows.iter().all(|r| r.importance == 0.0 || r.importance == 1.0)
}

/// Python's `f"{v:.{digits}e}"` (exponent with sign and at least two digits: `3.814e-06`).
fn sci(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return "nan".to_owned();
    }
    let text = format!("{v:.digits$e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

fn pearson_title(prefix: &str, x: &[f64], y: &[f64]) -> Result<String> {
    let p = pearson(x, y)?;
    Ok(format!("{prefix} (r={:.3}, p={})", p.r, sci(p.p, 2)))
}

/// Figure 1: mean importance by token position, SEM error bars, value labels above the bars.
pub(crate) fn importance_by_position(rows: &[JoinedRow], title_note: &str) -> Figure {
    let n = tokens_in(rows);
    let mut means = Vec::with_capacity(n);
    let mut sems = Vec::with_capacity(n);
    for k in 0..n {
        let values: Vec<f64> = rows.iter().filter(|r| r.token_pos == k).map(|r| r.importance).collect();
        means.push(mean(&values));
        let s = sem(&values);
        sems.push(if s.is_finite() { s } else { 0.0 });
    }
    let labels: Vec<String> = (0..n).map(token_label).collect();
    let bar = Bar::new(labels.clone(), means.clone())
        .error_y(ErrorData::new(ErrorType::Data).array(sems.clone()).width(5))
        .marker(Marker::new().color(STEELBLUE).opacity(0.7))
        .name("mean importance");
    // Upstream writes each mean just above its error bar.
    let annotations: Vec<Annotation> = labels
        .iter()
        .zip(means.iter().zip(&sems))
        .map(|(label, (m, s))| {
            Annotation::new()
                .text(format!("{m:.2}"))
                .x(label.as_str())
                .y(m + s + 0.02)
                .y_anchor(Anchor::Bottom)
                .show_arrow(false)
        })
        .collect();
    let label = if binary(rows) { "Importance Score (Fraction causing failure)" } else { CONTINUOUS_LABEL };
    let mut y_axis = Axis::new().title(Title::with_text(label));
    if binary(rows) {
        y_axis = y_axis.range(AxisRange::new(0.0, 1.0));
    }
    let mut plot = Plot::new();
    plot.add_trace(bar);
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!("Continuous Thought Token Importance{title_note}")))
            .x_axis(Axis::new().title(Title::with_text("Token Position")))
            .y_axis(y_axis)
            .annotations(annotations),
    );
    Figure::from(plot).with_size(1000, 600)
}

/// Figure 2: importance heatmap, problems (sorted by id as text, first at the top as seaborn
/// draws a pandas pivot) × tokens.
pub(crate) fn importance_heatmap(rows: &[JoinedRow], title_note: &str) -> Figure {
    let n = tokens_in(rows);
    let mut by_problem: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for r in rows {
        by_problem.entry(&r.problem_id).or_insert_with(|| vec![None; n])[r.token_pos] = Some(r.importance);
    }
    let problems: Vec<String> = by_problem.keys().map(|s| s.to_string()).collect();
    let z: Vec<Vec<Option<f64>>> = by_problem.into_values().collect();
    let scale: Vec<plotly::common::ColorScaleElement> = RD_YL_GN
        .iter()
        .enumerate()
        .map(|(i, c)| plotly::common::ColorScaleElement(i as f64 / 10.0, c.to_string()))
        .collect();
    let mut heat = HeatMap::new((0..n).map(|k| format!("T{k}")).collect(), problems, z)
        .color_scale(plotly::common::ColorScale::Vector(scale))
        .x_gap(1.0)
        .y_gap(1.0);
    if binary(rows) {
        heat = heat.zmin(0.0).zmax(1.0).zmid(0.5);
    }
    let mut plot = Plot::new();
    plot.add_trace(heat);
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!("Token Importance Matrix (Problems × Tokens){title_note}")))
            .x_axis(Axis::new().title(Title::with_text("Token Position")))
            .y_axis(Axis::new().title(Title::with_text("Problem ID")).auto_margin(true)),
    );
    Figure::from(plot).with_size(1000, 800).with_layout(serde_json::json!({"yaxis": {"autorange": "reversed"}}))
}

fn scatter_with_fit(x: &[f64], y: &[f64], axis: Option<(&str, &str)>, show_legend: bool) -> Vec<Box<dyn plotly::Trace>> {
    let mut points = Scatter::new(x.to_vec(), y.to_vec())
        .mode(Mode::Markers)
        .marker(Marker::new().size(7).opacity(0.6).color(STEELBLUE).line(Line::new().color("black").width(0.5)))
        .name("problem × token")
        .show_legend(show_legend);
    if let Some((xa, ya)) = axis {
        points = points.x_axis(xa).y_axis(ya);
    }
    let mut traces: Vec<Box<dyn plotly::Trace>> = vec![points];
    if let Some(LinearFit { slope, intercept }) = least_squares(x, y) {
        let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut line = Scatter::new(vec![lo, hi], vec![slope * lo + intercept, slope * hi + intercept])
            .mode(Mode::Lines)
            .line(Line::new().color("red").width(2.0).dash(DashType::Dash))
            .name("least-squares fit")
            .show_legend(show_legend);
        if let Some((xa, ya)) = axis {
            line = line.x_axis(xa).y_axis(ya);
        }
        traces.push(line);
    }
    traces
}

/// Figure 3: attention at `layer` vs importance over all rows, with the fit line.
pub(crate) fn attention_vs_importance(rows: &[JoinedRow], layer: usize, title_note: &str) -> Result<Figure> {
    let x: Vec<f64> = rows.iter().map(|r| r.attention.get(&layer).copied().unwrap_or(f64::NAN)).collect();
    let y: Vec<f64> = rows.iter().map(|r| r.importance).collect();
    let p = pearson(&x, &y)?;
    let title = format!("Attention vs Importance (r={:.3}, p={})", p.r, sci(p.p, 3));
    let mut plot = Plot::new();
    plot.add_traces(scatter_with_fit(&x, &y, None, true));
    let label = if binary(rows) { "Importance Score" } else { CONTINUOUS_LABEL };
    let mut y_axis = Axis::new().title(Title::with_text(label));
    if binary(rows) {
        y_axis = y_axis.range(AxisRange::new(-0.1, 1.1));
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!("{title}{title_note}")))
            .x_axis(Axis::new().title(Title::with_text(format!("Attention Weight (Layer {layer})"))))
            .y_axis(y_axis),
    );
    Ok(Figure::from(plot).with_size(800, 600))
}

/// Figure 4: one scatter + fit per token in a 2 × 3 grid, r/p in each subplot's title.
pub(crate) fn correlation_by_position(rows: &[JoinedRow], layer: usize, title_note: &str) -> Result<Figure> {
    let n = tokens_in(rows).min(6);
    let mut plot = Plot::new();
    let mut annotations = Vec::new();
    let mut layout = Layout::new()
        .title(Title::with_text(format!("Attention (Layer {layer}) vs Importance by Token{title_note}")))
        .grid(LayoutGrid::new().rows(2).columns(3).pattern(GridPattern::Independent))
        .height(1000);
    for k in 0..n {
        let selected: Vec<&JoinedRow> = rows.iter().filter(|r| r.token_pos == k).collect();
        let x: Vec<f64> = selected.iter().map(|r| r.attention.get(&layer).copied().unwrap_or(f64::NAN)).collect();
        let y: Vec<f64> = selected.iter().map(|r| r.importance).collect();
        let suffix = if k == 0 { String::new() } else { (k + 1).to_string() };
        let (xa, ya) = (format!("x{suffix}"), format!("y{suffix}"));
        plot.add_traces(scatter_with_fit(&x, &y, Some((&xa, &ya)), k == 0));
        annotations.push(
            Annotation::new()
                .text(pearson_title(&token_label(k), &x, &y)?)
                .x_ref(format!("x{suffix} domain"))
                .y_ref(format!("y{suffix} domain"))
                .x(0.5)
                .y(1.12)
                .x_anchor(Anchor::Center)
                .show_arrow(false),
        );
        let y_axis = if binary(rows) { Axis::new().range(AxisRange::new(-0.1, 1.1)) } else { Axis::new() };
        layout = match k {
            0 => layout.y_axis(y_axis),
            1 => layout.y_axis2(y_axis),
            2 => layout.y_axis3(y_axis),
            3 => layout.y_axis4(y_axis),
            4 => layout.y_axis5(y_axis),
            _ => layout.y_axis6(y_axis),
        };
    }
    plot.set_layout(layout.annotations(annotations));
    Ok(Figure::from(plot).with_size(1500, 1000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sci_matches_python_format() {
        assert_eq!(super::sci(3.8143e-6, 3), "3.814e-06");
        assert_eq!(super::sci(0.022051, 2), "2.21e-02");
        assert_eq!(super::sci(1.5, 2), "1.50e+00");
    }
}
